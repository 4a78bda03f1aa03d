#[rivulet_sdk::aggregate]
fn count() -> u64 {
    0
}

fn main() {}

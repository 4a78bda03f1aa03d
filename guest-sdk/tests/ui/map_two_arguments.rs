#[rivulet_sdk::map]
fn map(a: String, b: String) -> String {
    a + &b
}

fn main() {}

#[rivulet_sdk::map]
async fn map(a: String) -> String {
    a
}

fn main() {}

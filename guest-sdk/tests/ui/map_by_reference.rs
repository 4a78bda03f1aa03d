#[rivulet_sdk::map]
fn map(a: &String) -> String {
    a.clone()
}

fn main() {}

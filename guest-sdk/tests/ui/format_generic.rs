#[rivulet_sdk::format]
fn format<T: ToString>(row: T) -> String {
    row.to_string()
}

fn main() {}

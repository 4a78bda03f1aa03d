struct Opaque;

#[rivulet_sdk::map]
fn map(_row: String) -> Opaque {
    Opaque
}

fn main() {}

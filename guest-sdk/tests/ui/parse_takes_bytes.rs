#[rivulet_sdk::parse]
fn parse(payload: &[u8]) -> Option<String> {
    std::str::from_utf8(payload).ok().map(str::to_owned)
}

fn main() {}

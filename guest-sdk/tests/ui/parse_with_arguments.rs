use rivulet_sdk::RawRecord;

#[rivulet_sdk::parse(strict)]
fn parse(rec: RawRecord) -> Option<String> {
    rec.payload_str().ok().map(str::to_owned)
}

fn main() {}

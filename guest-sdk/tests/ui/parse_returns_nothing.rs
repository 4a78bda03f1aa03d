use rivulet_sdk::RawRecord;

#[rivulet_sdk::parse]
fn parse(rec: RawRecord) {
    let _ = rec;
}

fn main() {}

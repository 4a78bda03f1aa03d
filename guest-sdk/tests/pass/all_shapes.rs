use rivulet_sdk::{Aggregate, Error, Payload, RawRecord, Window};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Order {
    status: String,
    amount: f64,
}

#[rivulet_sdk::parse]
fn parse(rec: RawRecord) -> Result<Option<Order>, Error> {
    Ok(serde_json::from_slice(rec.payload).ok())
}

mod many {
    #[rivulet_sdk::map]
    fn split(order: super::Order) -> Vec<super::Order> {
        vec![order]
    }
}

mod fallible {
    #[rivulet_sdk::format]
    fn format(order: super::Order) -> Result<rivulet_sdk::Payload, String> {
        Ok(rivulet_sdk::Payload::from(order.status))
    }
}

struct Count;

#[rivulet_sdk::aggregate]
impl Aggregate for Count {
    type Input = Order;
    type Acc = u64;
    type Output = u64;
    fn create() -> u64 {
        0
    }
    fn add(acc: &mut u64, _: Order) {
        *acc += 1
    }
    fn merge(a: u64, b: u64) -> u64 {
        a + b
    }
    fn finish(acc: u64, _: &Window) -> u64 {
        acc
    }
}

fn main() {
    let _ = Payload::from("x");
}

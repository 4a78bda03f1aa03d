use rivulet_sdk::{Aggregate, Window};

struct Count;

#[rivulet_sdk::aggregate]
impl Aggregate for Count {
    type Input = String;
    type Acc = u64;
    type Output = u64;
    fn create() -> u64 {
        0
    }
    fn add(acc: u64, _: String) -> u64 {
        acc + 1
    }
    fn merge(a: u64, b: u64) -> u64 {
        a + b
    }
    fn finish(acc: u64, _: &Window) -> u64 {
        acc
    }
}

fn main() {}

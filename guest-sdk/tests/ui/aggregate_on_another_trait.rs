struct Count;

#[rivulet_sdk::aggregate]
impl Default for Count {
    fn default() -> Self {
        Count
    }
}

fn main() {}

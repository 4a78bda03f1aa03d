//! `v4` changes the accumulator's type, which a `const` cannot: it is a `cfg`.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(swap_v4)");
    println!("cargo::rerun-if-env-changed=RIVULET_SWAP_VARIANT");
    if std::env::var("RIVULET_SWAP_VARIANT").as_deref() == Ok("v4") {
        println!("cargo::rustc-cfg=swap_v4");
    }
}

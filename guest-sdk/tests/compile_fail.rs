//! Wrong step signatures are refused at compile time, with the error on the offending span.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

#[test]
fn wrong_signatures_get_spanned_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

#[test]
fn right_signatures_compile() {
    let t = trybuild::TestCases::new();
    t.pass("tests/pass/*.rs");
}

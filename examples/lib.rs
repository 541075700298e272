//! Examples of broker in a Rust test suite: see the `[[example]]` targets of this package
//! (`cargo run -p broker-examples --example test_suite`).

//! Paths to the guest components the tests use, built once per test run by
//! this crate's build script (one nested `cargo build --target
//! wasm32-wasip2` of the guest workspace in `examples/`).

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

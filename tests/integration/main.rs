//! Weft's integration tests: the runtime and the real `weft` binary, driven
//! with real guest components built once per test run (see
//! `tests/artifacts`).
#![allow(clippy::unwrap_used, missing_docs)]

mod cache;
mod cli;
mod durable;
mod egress;
mod fairness;
mod ledger;
mod nats;
mod operators;
mod rate;
mod reuse;
mod sandbox;
mod support;
mod usage;
mod worker;

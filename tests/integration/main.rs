//! Weft's integration tests: the runtime and the real `weft` binary, driven
//! with real guest components built once per test run (see
//! `tests/artifacts`).
#![allow(clippy::unwrap_used, missing_docs)]

mod cache;
mod cli;
mod controller;
mod controller_ops;
mod durable;
mod egress;
mod fairness;
mod hosting;
mod ledger;
mod lifecycle;
mod nats;
mod operators;
mod rate;
mod reuse;
mod rollout;
mod sandbox;
mod support;
mod usage;
mod worker;

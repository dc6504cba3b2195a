//! Weft's integration tests: the runtime and the real `weft` binary, driven
//! with real guest components built once per test run (see
//! `tests/artifacts`).
#![allow(clippy::unwrap_used, missing_docs)]

mod buckets;
mod cache;
mod cli;
mod client_token;
mod controller;
mod controller_ops;
mod dashboard;
mod dashboard_http;
mod durable;
mod egress;
mod fabric;
mod fairness;
mod flood;
mod full_disk;
mod hosting;
mod in_process;
mod ledger;
mod lifecycle;
mod nats;
mod operators;
mod private_state;
mod queue_ops;
mod rate;
mod restore;
mod reuse;
mod rollout;
mod sandbox;
mod scratch_quota;
mod support;
mod traces;
mod usage;
mod worker;

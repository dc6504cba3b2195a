//! Starting guests in process: what one instantiation costs on a bare
//! wasmtime engine and in Weft's sandbox, and what a whole request costs in
//! process (no HTTP server), fresh and with reuse. One operation at a time,
//! in a loop; rounds interleaved.

use crate::bare::{Bare, Metering};
use crate::compute::{bench_role, call};
use crate::stats::{min_median_max, spread};
use bytes::Bytes;
use std::fmt::Write as _;
use std::time::Instant;
use weft_sandbox::{EngineConfig, Runtime, SandboxLimits};
use weft_test_artifacts::WSTD_HELLO;

/// Operations per round.
const OPERATIONS: u32 = 2000;

#[derive(Debug, Clone, Copy)]
enum Op {
    BareInstantiate,
    WeftInstantiate,
    BareRequest,
    WeftRequest,
    WeftReusedRequest,
}

impl Op {
    const ALL: [Op; 5] = [
        Op::BareInstantiate,
        Op::WeftInstantiate,
        Op::BareRequest,
        Op::WeftRequest,
        Op::WeftReusedRequest,
    ];

    fn label(self) -> &'static str {
        match self {
            Op::BareInstantiate => {
                "instantiate: bare wasmtime (Store + `ProxyPre::instantiate_async`, pooling)"
            }
            Op::WeftInstantiate => "instantiate: Weft's sandbox (`WebRole::instantiate_once`)",
            Op::BareRequest => "request in process: bare wasmtime, fresh instance",
            Op::WeftRequest => "request in process: Weft (`WebRole::handle`), fresh instance",
            Op::WeftReusedRequest => "request in process: Weft, requests-per-instance 1000",
        }
    }
}

/// Runs the figure; returns its Markdown and Weft's instantiation in µs.
pub async fn run(repeats: usize) -> anyhow::Result<(String, f64)> {
    let bare = Bare::new(WSTD_HELLO, Metering::None)?;
    let runtime = Runtime::new(EngineConfig {
        max_instances: 64,
        ..EngineConfig::default()
    })?;
    let fresh = bench_role(&runtime, WSTD_HELLO, SandboxLimits::default())?;
    let reused = bench_role(
        &runtime,
        WSTD_HELLO,
        SandboxLimits {
            requests_per_instance: 1000,
            ..SandboxLimits::default()
        },
    )?;
    let mut micros: Vec<Vec<f64>> = vec![Vec::new(); Op::ALL.len()];
    for round in 0..=repeats {
        for (i, op) in Op::ALL.iter().enumerate() {
            let started = Instant::now();
            for _ in 0..OPERATIONS {
                match op {
                    Op::BareInstantiate => bare.instantiate().await?,
                    Op::WeftInstantiate => fresh.instantiate_once().await?,
                    Op::BareRequest => {
                        anyhow::ensure!(bare.request("GET", "/", Bytes::new()).await? == 200);
                    }
                    Op::WeftRequest => {
                        anyhow::ensure!(call(&fresh, "GET", "/", Bytes::new()).await? == 200);
                    }
                    Op::WeftReusedRequest => {
                        anyhow::ensure!(call(&reused, "GET", "/", Bytes::new()).await? == 200);
                    }
                }
            }
            // Round 0 warms up (pool slots touched, code paged in).
            if round > 0 {
                micros[i].push(started.elapsed().as_secs_f64() * 1e6 / f64::from(OPERATIONS));
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "The `wstd-hello` component, one operation at a time in a loop of {OPERATIONS} on one task, after a warm-up round; µs per operation, median (min–max) of {repeats} interleaved rounds. The bare engine is wasmtime's pooling allocator at its defaults with WASI and `wasi:http` linked; Weft's is its own engine (fuel with yields, no epochs, pooling as configured in `runtime/sandbox/src/engine.rs`). A request in process is `GET /` handed to the handler and its body read whole: no sockets, no HTTP parsing.\n"
    );
    let _ = writeln!(out, "| operation | µs | ÷ bare wasmtime |\n|---|---:|---:|");
    let median = |i: usize| min_median_max(&micros[i]).1;
    for (i, op) in Op::ALL.iter().enumerate() {
        let base = match op {
            Op::BareInstantiate | Op::WeftInstantiate => median(0),
            _ => median(2),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} |",
            op.label(),
            spread(&micros[i], 1),
            median(i) / base
        );
    }
    Ok((out, median(1)))
}

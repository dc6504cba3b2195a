//! CPU-bound work natively, in wasm unmetered, in wasm with fuel alone, and
//! in Weft (fuel-metered, yielding every 2 million units, under the fair
//! CPU scheduler): the same loop (`burn-web`'s `/burn`, the `probe` guest's
//! source file, which the native run compiles too), one request at a time,
//! alone on the host.

#[path = "../../tests/guests/probe/src/burn.rs"]
mod burn;

use crate::bare::{Bare, Metering};
use crate::stats::{min_median_max, spread};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;
use weft_broker::MemoryBroker;
use weft_sandbox::{
    CpuShare, EngineConfig, Grants, RateLimits, RoleSpec, Runtime, SandboxLimits, WebRole,
};
use weft_test_artifacts::BURN_WEB;

/// Millions of rounds each run burns: about a fifth of a second natively.
const MILLIONS: u64 = 150;

/// A web role on `runtime` serving `component`, with fuel and a deadline
/// far beyond any run.
pub fn bench_role(
    runtime: &Runtime,
    component: &str,
    limits: SandboxLimits,
) -> anyhow::Result<WebRole> {
    let broker = std::sync::Arc::new(MemoryBroker::default());
    let spec = RoleSpec {
        grants: Grants {
            service: "bench".into(),
            role: "web".into(),
            ..Grants::default()
        },
        limits,
        rate_limits: RateLimits::default(),
        cpu: CpuShare::default(),
        queues: broker.clone(),
        kv: broker,
    };
    Ok(runtime.web_role(Path::new(component), spec)?)
}

/// Sends `method path` with `body` to a role in this process: the status.
pub async fn call(role: &WebRole, method: &str, path: &str, body: Bytes) -> anyhow::Result<u16> {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "bench")
        .body(Full::new(body))?;
    let response = role.handle(request).await;
    let status = response.status().as_u16();
    response.into_body().collect().await.ok();
    Ok(status)
}

/// The ways the loop runs.
#[derive(Debug, Clone, Copy)]
enum Way {
    Native,
    Unmetered,
    FuelOnly,
    FuelAndEpochs,
    Weft,
}

impl Way {
    const ALL: [Way; 5] = [
        Way::Native,
        Way::Unmetered,
        Way::FuelOnly,
        Way::FuelAndEpochs,
        Way::Weft,
    ];

    fn label(self) -> &'static str {
        match self {
            Way::Native => "native (the same Rust, compiled for the host)",
            Way::Unmetered => "wasm, bare wasmtime, unmetered",
            Way::FuelOnly => "wasm, bare wasmtime, fuel only (no yields)",
            Way::FuelAndEpochs => "wasm, bare wasmtime, fuel and epoch checks (no yields)",
            Way::Weft => "wasm in Weft: fuel, yields every 2M, fair scheduler",
        }
    }
}

/// Runs the figure; returns its Markdown section and the median ratio of
/// Weft to unmetered wasm (for the aims table).
pub async fn run(repeats: usize) -> anyhow::Result<(String, f64)> {
    let unmetered = Bare::new(BURN_WEB, Metering::None)?;
    let fuel_only = Bare::new(BURN_WEB, Metering::Fuel)?;
    let fuel_and_epochs = Bare::new(BURN_WEB, Metering::FuelAndEpochs)?;
    let runtime = Runtime::new(EngineConfig {
        max_instances: 64,
        ..EngineConfig::default()
    })?;
    let weft = bench_role(
        &runtime,
        BURN_WEB,
        SandboxLimits {
            fuel: u64::MAX / 2,
            deadline_ms: 600_000,
            ..SandboxLimits::default()
        },
    )?;
    let path = format!("/burn/{MILLIONS}");
    // Warm each once: compiled code paged in, pool slots touched.
    unmetered.request("GET", "/ok", Bytes::new()).await?;
    fuel_only.request("GET", "/ok", Bytes::new()).await?;
    fuel_and_epochs.request("GET", "/ok", Bytes::new()).await?;
    call(&weft, "GET", "/ok", Bytes::new()).await?;
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); Way::ALL.len()];
    for _ in 0..repeats {
        for (i, way) in Way::ALL.iter().enumerate() {
            let started = Instant::now();
            let status = match way {
                Way::Native => {
                    std::hint::black_box(burn::burn(std::hint::black_box(MILLIONS)));
                    200
                }
                Way::Unmetered => unmetered.request("GET", &path, Bytes::new()).await?,
                Way::FuelOnly => fuel_only.request("GET", &path, Bytes::new()).await?,
                Way::FuelAndEpochs => fuel_and_epochs.request("GET", &path, Bytes::new()).await?,
                Way::Weft => call(&weft, "GET", &path, Bytes::new()).await?,
            };
            anyhow::ensure!(status == 200, "{} answered {status}", way.label());
            seconds[i].push(started.elapsed().as_secs_f64());
        }
    }
    let base = min_median_max(&seconds[1]).1;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "One CPU-bound request, `GET /burn/{MILLIONS}` on the `burn-web` guest ({MILLIONS} million rounds of a multiply-add hash; the native row runs the same source, `tests/guests/probe/src/burn.rs`, in this process), alone on the host. The bare rows run the component on a wasmtime engine with the pooling allocator at its defaults and nothing else; the Weft row through `WebRole::handle` with the engine's defaults. Seconds, median (min–max) of {repeats} interleaved runs.\n"
    );
    let _ = writeln!(out, "| how | seconds | ÷ unmetered wasm |\n|---|---:|---:|");
    let mut weft_ratio = f64::NAN;
    for (i, way) in Way::ALL.iter().enumerate() {
        let median = min_median_max(&seconds[i]).1;
        let ratio = median / base;
        if matches!(way, Way::Weft) {
            weft_ratio = ratio;
        }
        let _ = writeln!(
            out,
            "| {} | {} | {ratio:.3} |",
            way.label(),
            spread(&seconds[i], 3)
        );
    }
    Ok((out, weft_ratio))
}

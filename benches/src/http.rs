//! HTTP figures: the same component under `weft up` (fresh instance per
//! request, and reusing instances), under `wasmtime serve` of each version
//! given (likewise; the first given is the one ratios are taken to), and
//! the same work in a native hyper server, loaded with `wrk` at several
//! connection counts. The WASIp3 workload adds instances that serve up to
//! [`P3_CONCURRENT`] requests at once, on both hosts. Each round starts
//! every server afresh, in turn, so the servers are interleaved; a round
//! measures every connection count on each.
//! Reported: requests/s, p50 and p99 latency (wrk's), and the server's CPU
//! time per request (from `/proc`, over the same wrk run).

use crate::process::{Server, cpu_seconds, free_port, wasmtime_version};
use crate::stats::{min_median_max, spread};
use crate::svg::{BarChart, Series};
use anyhow::{Context, bail};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What the servers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `GET /` on a hello-world component (`wstd-hello`).
    Hello,
    /// `POST /order` with a JSON order of 20 lines (`json-web`).
    Json,
    /// `GET /` on a WASIp3 hello world (`p3-hello`, a `wasi:http@0.3`
    /// handler built with plain wit-bindgen).
    P3Hello,
}

/// Requests one WASIp3 instance serves at once in the concurrent rows:
/// `wasmtime serve`'s default for WASIp3 components.
const P3_CONCURRENT: u32 = 16;

impl Workload {
    fn component(self) -> &'static str {
        match self {
            Workload::Hello => weft_test_artifacts::WSTD_HELLO,
            Workload::Json => weft_test_artifacts::JSON_WEB,
            Workload::P3Hello => weft_test_artifacts::P3_HELLO,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Workload::Hello => "hello world (`GET /`, `wstd-hello`)",
            Workload::Json => "real work (`POST /order`, a 20-line JSON order, `json-web`)",
            Workload::P3Hello => {
                "hello world over WASIp3 (`GET /`, `p3-hello`, a `wasi:http@0.3` handler built with plain wit-bindgen)"
            }
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Workload::Hello => "hello",
            Workload::Json => "json",
            Workload::P3Hello => "p3-hello",
        }
    }

    fn is_p3(self) -> bool {
        self == Workload::P3Hello
    }
}

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    /// Native hyper (`weft-bench native-server`).
    Native,
    /// `wasmtime serve` of the `binary`th baseline given, reusing an
    /// instance for up to `reuse` requests (1: a fresh instance per
    /// request), `concurrent` of them at once.
    Wasmtime {
        binary: usize,
        reuse: u32,
        concurrent: u32,
    },
    /// `weft up`, with `requests-per-instance` and
    /// `concurrent-requests-per-instance` set to these.
    Weft { reuse: u32, concurrent: u32 },
}

impl Contender {
    /// Its name in tables and charts; `versions` are the baselines'
    /// `wasmtime --version`s, in the order given.
    fn label(self, versions: &[String]) -> String {
        let reusing = |reuse: u32, concurrent: u32| match (reuse, concurrent) {
            (1, _) => String::new(),
            (n, 1) => format!(", reuse {n}"),
            (n, c) => format!(", reuse {n}, {c} at once"),
        };
        match self {
            Contender::Native => "native hyper".into(),
            Contender::Wasmtime {
                binary,
                reuse,
                concurrent,
            } => format!("{} serve{}", versions[binary], reusing(reuse, concurrent)),
            Contender::Weft { reuse, concurrent } => {
                format!("weft up{}", reusing(reuse, concurrent))
            }
        }
    }
}

/// Paths and settings of an HTTP run.
pub struct Setup {
    /// The `weft` binary.
    pub weft: PathBuf,
    /// The `wasmtime` binaries compared with, the newest first: ratios are
    /// taken to the first.
    pub wasmtime: Vec<PathBuf>,
    /// This binary (for the native server).
    pub me: PathBuf,
    /// A scratch folder for manifests, caches and logs.
    pub work: PathBuf,
    /// Seconds each wrk run lasts.
    pub seconds: u64,
    /// Rounds.
    pub repeats: usize,
    /// Connection counts.
    pub connections: Vec<u32>,
    /// Requests per instance for the reusing contenders.
    pub reuse: u32,
}

impl Setup {
    /// The servers a workload is measured on. A WASIp3 instance may serve
    /// several requests at once: its reusing rows do, on both hosts, and
    /// Weft's also as it does by default, one at a time.
    fn contenders(&self, workload: Workload) -> Vec<Contender> {
        let concurrent = if workload.is_p3() { P3_CONCURRENT } else { 1 };
        let wasmtime = (0..self.wasmtime.len()).flat_map(|binary| {
            [(1, 1), (self.reuse, concurrent)].map(|(reuse, concurrent)| Contender::Wasmtime {
                binary,
                reuse,
                concurrent,
            })
        });
        let mut weft = vec![
            Contender::Weft {
                reuse: 1,
                concurrent: 1,
            },
            Contender::Weft {
                reuse: self.reuse,
                concurrent: 1,
            },
        ];
        if concurrent > 1 {
            weft.push(Contender::Weft {
                reuse: self.reuse,
                concurrent,
            });
        }
        std::iter::once(Contender::Native)
            .chain(wasmtime)
            .chain(weft)
            .collect()
    }

    fn command(
        &self,
        who: Contender,
        workload: Workload,
        addr: SocketAddr,
    ) -> anyhow::Result<Command> {
        let component = workload.component();
        Ok(match who {
            Contender::Native => {
                let mut command = Command::new(&self.me);
                command.args(["native-server", "--addr", &addr.to_string()]);
                command
            }
            Contender::Wasmtime {
                binary,
                reuse,
                concurrent,
            } => {
                let mut command = Command::new(&self.wasmtime[binary]);
                command
                    .args(["serve", "--addr", &addr.to_string()])
                    .args(["-O", "pooling-allocator=y"])
                    .args(["--max-instance-reuse-count", &reuse.to_string()])
                    .args(["-S", "cli=y"]);
                if workload.is_p3() {
                    command.args(P3_WASMTIME_FLAGS).args([
                        "--max-instance-concurrent-reuse-count",
                        &concurrent.to_string(),
                    ]);
                }
                command.arg(component);
                command
            }
            Contender::Weft { reuse, concurrent } => {
                let dir = self
                    .work
                    .join(format!("weft-{}-{reuse}-{concurrent}", workload.slug()));
                std::fs::create_dir_all(&dir)?;
                let manifest = dir.join("weft.toml");
                std::fs::write(&manifest, manifest_text(component, addr, reuse, concurrent))?;
                let mut command = Command::new(&self.weft);
                command
                    .env("WEFT_LOG", "warn")
                    .args(["up", "--no-build", "--admin-addr", "127.0.0.1:0"])
                    .arg("--state-dir")
                    .arg(dir.join("state"))
                    .arg("--cache-dir")
                    .arg(self.work.join("weft-cache"))
                    .arg(&manifest);
                command
            }
        })
    }

    /// The command lines, for the report.
    fn describe(&self, who: Contender, versions: &[String]) -> String {
        match who {
            Contender::Native => "weft-bench native-server --addr ADDR".into(),
            Contender::Wasmtime {
                binary,
                reuse,
                concurrent: 1,
            } => format!(
                "wasmtime serve --addr ADDR -O pooling-allocator=y --max-instance-reuse-count {reuse} -S cli=y COMPONENT   # {}",
                versions[binary]
            ),
            Contender::Wasmtime {
                binary,
                reuse,
                concurrent,
            } => format!(
                "wasmtime serve --addr ADDR -O pooling-allocator=y --max-instance-reuse-count {reuse} -S cli=y {} --max-instance-concurrent-reuse-count {concurrent} COMPONENT   # {}",
                P3_WASMTIME_FLAGS.join(" "),
                versions[binary]
            ),
            Contender::Weft {
                reuse,
                concurrent: 1,
            } => format!(
                "weft up --no-build weft.toml   # requests-per-instance = {reuse}, http body rate unlimited"
            ),
            Contender::Weft { reuse, concurrent } => format!(
                "weft up --no-build weft.toml   # requests-per-instance = {reuse}, concurrent-requests-per-instance = {concurrent}, http body rate unlimited"
            ),
        }
    }
}

/// What `wasmtime serve` needs to serve the WASIp3 workload: WASIp3 and
/// the async component model, and `wasi:config` (which `p3-hello` imports
/// for a path the benchmark does not call).
const P3_WASMTIME_FLAGS: [&str; 6] = [
    "-S",
    "p3=y",
    "-S",
    "config=y",
    "-W",
    "component-model-async=y",
];

/// The manifest `weft up` runs: the component as one web role, its request
/// body rate unlimited (the native server has none), everything else default.
fn manifest_text(component: &str, addr: SocketAddr, reuse: u32, concurrent: u32) -> String {
    let concurrent = if concurrent > 1 {
        format!("concurrent-requests-per-instance = {concurrent}\n")
    } else {
        String::new()
    };
    format!(
        "[service]\nname = \"bench\"\n\n[roles.web]\nkind = \"web\"\ncomponent = {component:?}\nlisten = \"{addr}\"\n[roles.web.limits]\nrequests-per-instance = {reuse}\n{concurrent}[roles.web.rate-limits.http]\nbytes = {{ size = 0, refill-ms = 1000 }}\n"
    )
}

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
struct Run {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_request: f64,
    errors: u64,
}

fn wrk(
    addr: SocketAddr,
    workload: Workload,
    connections: u32,
    seconds: u64,
    script: &Path,
) -> anyhow::Result<(String, String)> {
    let threads = connections.min(2);
    let mut command = Command::new("wrk");
    command
        .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "--latency"]);
    let url = match workload {
        Workload::Hello | Workload::P3Hello => format!("http://{addr}/"),
        Workload::Json => {
            command.arg("-s").arg(script);
            format!("http://{addr}/order")
        }
    };
    command.arg(&url);
    let line = format!(
        "wrk -t {threads} -c {connections} -d {seconds}s --latency{} {}",
        if workload == Workload::Json {
            " -s order.lua"
        } else {
            ""
        },
        url.replace(&addr.to_string(), "ADDR")
    );
    let output = command
        .output()
        .context("cannot run wrk (apt-get install wrk)")?;
    if !output.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok((String::from_utf8_lossy(&output.stdout).into_owned(), line))
}

/// Reads requests/s, total requests, p50, p99 and errors from wrk's output.
pub(crate) fn parse_wrk(text: &str) -> anyhow::Result<(f64, f64, f64, f64, u64)> {
    let mut rate = None;
    let mut total = None;
    let (mut p50, mut p99) = (None, None);
    let mut errors = 0;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rate = v.trim().parse::<f64>().ok();
        } else if line.contains(" requests in ") {
            total = line
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok());
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = duration_ms(v.trim());
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = duration_ms(v.trim());
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            errors += v
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    match (rate, total, p50, p99) {
        (Some(rate), Some(total), Some(p50), Some(p99)) => Ok((rate, total, p50, p99, errors)),
        _ => bail!("cannot read wrk's output:\n{text}"),
    }
}

/// wrk's `186.00us`, `1.01ms`, `2.00s` in milliseconds.
pub(crate) fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => value / 1e3,
        "ms" => value,
        "s" => value * 1e3,
        "m" => value * 60e3,
        _ => return None,
    })
}

/// The hello-world ratios the aims are about, per connection count:
/// (connections, fresh Weft ÷ fresh `wasmtime serve` of the first baseline,
/// reusing Weft ÷ native).
pub type AimRatios = Vec<(u32, f64, f64)>;

/// Runs the HTTP figures for both workloads; returns the Markdown section
/// and the hello-world ratios, and writes one SVG chart per workload into
/// `charts` (named `http-hello.svg`, `http-json.svg`).
pub fn run(setup: &Setup, charts: &Path) -> anyhow::Result<(String, AimRatios)> {
    let mut aims = Vec::new();
    anyhow::ensure!(
        !setup.wasmtime.is_empty(),
        "give at least one wasmtime binary"
    );
    let versions = setup
        .wasmtime
        .iter()
        .map(|binary| wasmtime_version(binary))
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::fs::create_dir_all(&setup.work)?;
    let script = setup.work.join("order.lua");
    let order = crate::native::order::sample(20);
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = {order:?}\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Each round starts every server in turn on a free loopback port, warms it with 1 s of load, then runs wrk for {} s at each connection count (`-t 1` for one connection, `-t 2` otherwise); {} rounds. wrk runs on the same two cores as the server. Requests/s is the median (min–max) over rounds; latency percentiles are wrk's, median over rounds; CPU is the server process's user + system time over the wrk run (from `/proc/PID/stat`) divided by the requests it answered. The order body is {} bytes.\n",
        setup.seconds,
        setup.repeats,
        order.len()
    );
    let _ = writeln!(
        out,
        "Servers (ADDR a free loopback port, COMPONENT the workload's `.wasm`):\n"
    );
    let workloads = [Workload::Hello, Workload::Json, Workload::P3Hello];
    let mut listed = Vec::new();
    for who in workloads.iter().flat_map(|w| setup.contenders(*w)) {
        if listed.contains(&who) {
            continue;
        }
        listed.push(who);
        let _ = writeln!(
            out,
            "- {}: `{}`",
            who.label(&versions),
            setup.describe(who, &versions)
        );
    }
    let _ = writeln!(
        out,
        "\nFor the WASIp3 workload every `wasmtime serve` also gets `{}`.",
        P3_WASMTIME_FLAGS.join(" ")
    );
    let mut wrk_lines = Vec::new();
    for workload in workloads {
        let contenders = setup.contenders(workload);
        // results[contender][connection index] = runs
        let mut results = vec![vec![Vec::<Run>::new(); setup.connections.len()]; contenders.len()];
        for round in 0..setup.repeats {
            for (c, &who) in contenders.iter().enumerate() {
                let port = free_port()?;
                let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
                let log = setup
                    .work
                    .join(format!("{}-{c}-{round}.log", workload.slug()));
                let server = Server::start(
                    setup.command(who, workload, addr)?,
                    addr,
                    &log,
                    Duration::from_secs(120),
                )?;
                wrk(addr, workload, 16, 1, &script)?;
                for (k, &connections) in setup.connections.iter().enumerate() {
                    let before = cpu_seconds(server.pid())?;
                    let (text, line) = wrk(addr, workload, connections, setup.seconds, &script)?;
                    let after = cpu_seconds(server.pid())?;
                    let (rate, total, p50_ms, p99_ms, errors) = parse_wrk(&text)?;
                    if !wrk_lines.contains(&line) {
                        wrk_lines.push(line);
                    }
                    results[c][k].push(Run {
                        rate,
                        p50_ms,
                        p99_ms,
                        cpu_us_per_request: (after - before) * 1e6 / total.max(1.0),
                        errors,
                    });
                    eprintln!(
                        "http {} {} c={connections}: {rate:.0} req/s, p50 {p50_ms:.3} ms, p99 {p99_ms:.3} ms, errors {errors}",
                        workload.slug(),
                        who.label(&versions)
                    );
                }
                drop(server);
            }
        }
        let _ = writeln!(out, "\n### {}\n", capitalise(workload.name()));
        let _ = writeln!(
            out,
            "![requests/s by server and connections](benchmarks/http-{}.svg)\n",
            workload.slug()
        );
        // A ratio column per baseline, each to its fresh-instance server.
        let baseline_columns: String = versions.iter().map(|v| format!(" ÷ {v} serve |")).collect();
        let _ = writeln!(
            out,
            "| server | connections | requests/s | ÷ native |{baseline_columns} p50 ms | p99 ms | server CPU µs/request | non-2xx + socket errors |\n|---|---:|---:|---:|{}---:|---:|---:|---:|",
            "---:|".repeat(versions.len())
        );
        let median_rate = |c: usize, k: usize| {
            min_median_max(&results[c][k].iter().map(|r| r.rate).collect::<Vec<_>>()).1
        };
        let native = contenders.iter().position(|c| *c == Contender::Native);
        let fresh_wasmtime: Vec<Option<usize>> = (0..versions.len())
            .map(|binary| {
                contenders.iter().position(|c| {
                    *c == Contender::Wasmtime {
                        binary,
                        reuse: 1,
                        concurrent: 1,
                    }
                })
            })
            .collect();
        let wasmtime = fresh_wasmtime[0];
        let fresh = contenders.iter().position(|c| {
            *c == Contender::Weft {
                reuse: 1,
                concurrent: 1,
            }
        });
        let reusing = contenders.iter().position(|c| {
            *c == Contender::Weft {
                reuse: setup.reuse,
                concurrent: 1,
            }
        });
        if workload == Workload::Hello
            && let (Some(native), Some(wasmtime), Some(fresh), Some(reusing)) =
                (native, wasmtime, fresh, reusing)
        {
            for (k, &connections) in setup.connections.iter().enumerate() {
                aims.push((
                    connections,
                    median_rate(fresh, k) / median_rate(wasmtime, k),
                    median_rate(reusing, k) / median_rate(native, k),
                ));
            }
        }
        for (c, who) in contenders.iter().enumerate() {
            for (k, connections) in setup.connections.iter().enumerate() {
                let runs = &results[c][k];
                let pick = |f: fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<_>>();
                let ratio = |base: Option<usize>| {
                    base.map_or("—".into(), |b| {
                        format!("{:.2}", median_rate(c, k) / median_rate(b, k))
                    })
                };
                let to_baselines: String = fresh_wasmtime
                    .iter()
                    .map(|base| format!(" {} |", ratio(*base)))
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {connections} | {} | {} |{to_baselines} {:.3} | {:.3} | {} | {} |",
                    who.label(&versions),
                    spread(&pick(|r| r.rate), 0),
                    ratio(native),
                    min_median_max(&pick(|r| r.p50_ms)).1,
                    min_median_max(&pick(|r| r.p99_ms)).1,
                    spread(&pick(|r| r.cpu_us_per_request), 1),
                    runs.iter().map(|r| r.errors).sum::<u64>(),
                );
            }
        }
        let chart = BarChart {
            title: format!("HTTP, {}: requests/s (median, min–max)", workload.slug()),
            y_label: "requests/s".into(),
            groups: setup
                .connections
                .iter()
                .map(|c| format!("{c} connection{}", if *c == 1 { "" } else { "s" }))
                .collect(),
            series: contenders
                .iter()
                .enumerate()
                .map(|(c, who)| Series {
                    name: who.label(&versions),
                    values: (0..setup.connections.len())
                        .map(|k| {
                            min_median_max(
                                &results[c][k].iter().map(|r| r.rate).collect::<Vec<_>>(),
                            )
                        })
                        .collect(),
                })
                .collect(),
        };
        std::fs::write(
            charts.join(format!("http-{}.svg", workload.slug())),
            chart.render(),
        )?;
    }
    let _ = writeln!(
        out,
        "\nwrk commands (order.lua posts the order as JSON):\n\n```sh"
    );
    for line in wrk_lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "```");
    Ok((out, aims))
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 5s test @ http://127.0.0.1:1/\n  2 threads and 16 connections\n  Latency Distribution\n     50%  186.00us\n     75%  300.00us\n     90%  500.00us\n     99%    1.01ms\n  123456 requests in 5.00s, 12.34MB read\n  Non-2xx or 3xx responses: 5\n  Socket errors: connect 0, read 2, write 0, timeout 1\nRequests/sec:  24691.20\n";
        let (rate, total, p50, p99, errors) = parse_wrk(text).unwrap();
        assert_eq!((rate, total, errors), (24691.2, 123456.0, 8));
        assert!((p50 - 0.186).abs() < 1e-9 && (p99 - 1.01).abs() < 1e-9);
        assert!(parse_wrk("nonsense").is_err());
    }
}

//! Python and JavaScript web roles: hello-world components built with
//! componentize-py and componentize-js (`benches/guests/`, built by
//! `benches/polyglot.sh`), each under `weft serve` beside `wasmtime serve`
//! on the very same `.wasm`. They import only `wasi:http/proxy`, so both
//! hosts run them. Three figures per component: its size and the compiled
//! artifact each host caches; process start to the first `200`, with an
//! empty compile cache and with a warm one; and requests/s and latency under
//! wrk, with a fresh instance per request and reusing instances. Every
//! figure's configurations are interleaved, one run each per round, and
//! reported as the median (min–max) with Weft's ratio to each `wasmtime`.

mod markdown;

use crate::http::parse_wrk;
use crate::process::{Server, cpu_seconds, free_port, request, wasmtime_version};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The longest a server may take to its first answer: a JavaScript
/// component compiles in tens of seconds on a busy two-core machine.
const START_LIMIT: Duration = Duration::from_secs(600);

/// A component under test, given as `LABEL=PATH`.
#[derive(Debug, Clone)]
pub struct Guest {
    /// How the report names it (language and toolchain).
    pub label: String,
    /// The `.wasm` component.
    pub path: PathBuf,
}

impl FromStr for Guest {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('=') {
            Some((label, path)) if !label.is_empty() && !path.is_empty() => Ok(Self {
                label: label.to_owned(),
                path: PathBuf::from(path),
            }),
            _ => Err(format!("expected LABEL=COMPONENT, got {text:?}")),
        }
    }
}

/// Paths and settings of a polyglot run.
pub struct Setup {
    /// The `weft` binary (a release build).
    pub weft: PathBuf,
    /// The `wasmtime` binaries to compare with; Weft's ratio is given to each.
    pub wasmtime: Vec<PathBuf>,
    /// The components.
    pub guests: Vec<Guest>,
    /// A scratch folder for caches and logs.
    pub work: PathBuf,
    /// Starts with an empty cache per host and component (each compiles).
    pub compile_repeats: usize,
    /// Starts with a warm cache per host and component.
    pub start_repeats: usize,
    /// Seconds each wrk run lasts.
    pub seconds: u64,
    /// Rounds of wrk runs.
    pub repeats: usize,
    /// Connection counts.
    pub connections: Vec<u32>,
    /// Requests per instance for the reusing servers.
    pub reuse: u32,
    /// The port servers listen on, one at a time [default: a free one each start].
    pub port: Option<u16>,
    /// The port of `weft serve`'s admin listener [default: any].
    pub admin_port: Option<u16>,
}

/// A host: `weft serve`, or the `wasmtime` at this index of `Setup::wasmtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host {
    Weft,
    Wasmtime(usize),
}

/// The compile cache a server starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cache {
    /// An empty folder: the host compiles the component and writes it there.
    Empty,
    /// A folder an earlier start of the same host filled.
    Warm,
}

impl Cache {
    fn label(self) -> &'static str {
        match self {
            Cache::Empty => "empty cache (compiles)",
            Cache::Warm => "warm cache",
        }
    }
}

/// A server under wrk: a host, and how many requests an instance serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Contender {
    host: Host,
    requests_per_instance: u32,
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

impl Setup {
    fn hosts(&self) -> Vec<Host> {
        std::iter::once(Host::Weft)
            .chain((0..self.wasmtime.len()).map(Host::Wasmtime))
            .collect()
    }

    fn contenders(&self) -> Vec<Contender> {
        [1, self.reuse]
            .into_iter()
            .flat_map(|requests_per_instance| {
                self.hosts().into_iter().map(move |host| Contender {
                    host,
                    requests_per_instance,
                })
            })
            .collect()
    }

    fn host_label(&self, host: Host, versions: &[String]) -> String {
        match host {
            Host::Weft => "weft serve".into(),
            Host::Wasmtime(i) => format!("{} serve", versions[i]),
        }
    }

    fn addr(&self) -> anyhow::Result<SocketAddr> {
        let port = match self.port {
            Some(port) => port,
            None => free_port()?,
        };
        Ok(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// The cache folder a host keeps warm for a guest.
    fn warm_dir(&self, host: Host, guest: usize) -> PathBuf {
        self.work.join(format!("warm-{}-{guest}", slug(host)))
    }

    /// The command serving `guest` on `addr` with the cache in `cache_dir`.
    fn command(
        &self,
        host: Host,
        guest: &Guest,
        addr: SocketAddr,
        cache_dir: &Path,
        requests_per_instance: u32,
    ) -> anyhow::Result<Command> {
        let reuse = requests_per_instance.to_string();
        Ok(match host {
            Host::Weft => {
                let admin = format!("127.0.0.1:{}", self.admin_port.unwrap_or(0));
                let mut command = Command::new(&self.weft);
                command
                    .env("WEFT_LOG", "warn")
                    .args(["serve", "--addr", &addr.to_string()])
                    .args(["--admin-addr", &admin])
                    .arg("--cache-dir")
                    .arg(cache_dir)
                    .args(["--requests-per-instance", &reuse])
                    .arg(&guest.path);
                command
            }
            Host::Wasmtime(i) => {
                // wasmtime reads its cache's folder from a TOML file; one
                // file per folder, written beside it.
                let config = cache_dir.with_extension("toml");
                std::fs::write(
                    &config,
                    format!("[cache]\ndirectory = {:?}\n", cache_dir.to_string_lossy()),
                )?;
                let mut command = Command::new(&self.wasmtime[i]);
                command
                    .args(["serve", "--addr", &addr.to_string()])
                    .args(["-O", "pooling-allocator=y", "-S", "cli=y"])
                    .arg("-C")
                    .arg(format!("cache-config={}", config.to_string_lossy()))
                    .args(["--max-instance-reuse-count", &reuse])
                    .arg(&guest.path);
                command
            }
        })
    }

    /// The command lines, for the report.
    fn describe(&self, host: Host, versions: &[String]) -> String {
        match host {
            Host::Weft => "weft serve --addr ADDR --admin-addr 127.0.0.1:0 --cache-dir CACHE_DIR --requests-per-instance N COMPONENT".into(),
            Host::Wasmtime(i) => format!(
                "wasmtime serve --addr ADDR -O pooling-allocator=y -S cli=y -C cache-config=CACHE.toml --max-instance-reuse-count N COMPONENT   # {}",
                versions[i]
            ),
        }
    }
}

fn slug(host: Host) -> String {
    match host {
        Host::Weft => "weft".into(),
        Host::Wasmtime(i) => format!("wasmtime{i}"),
    }
}

/// Bytes of every file under `dir`.
fn folder_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += folder_bytes(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// Spawns `command`, polls `addr` until `GET /` answers 200, and returns the
/// milliseconds that took; then kills the server. (As `start.rs` measures.)
fn first_response(mut command: Command, addr: SocketAddr) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let took = loop {
        if let Ok(200) = request(addr, "GET", "/", "") {
            break started.elapsed();
        }
        if child.try_wait()?.is_some() || started.elapsed() > START_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{command:?} never answered 200");
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    Ok(took.as_secs_f64() * 1e3)
}

/// The first-start figure's results: `[guest][host][cache]` runs in ms, and
/// each host's compiled artifact per guest (bytes in its cache folder).
struct Starts {
    millis: Vec<Vec<[Vec<f64>; 2]>>,
    compiled: Vec<Vec<u64>>,
}

fn measure_starts(setup: &Setup) -> anyhow::Result<Starts> {
    let hosts = setup.hosts();
    let mut starts = Starts {
        millis: vec![vec![[Vec::new(), Vec::new()]; hosts.len()]; setup.guests.len()],
        compiled: vec![vec![0; hosts.len()]; setup.guests.len()],
    };
    let empty = setup.work.join("empty");
    for round in 0..setup.compile_repeats.max(setup.start_repeats) {
        for (g, guest) in setup.guests.iter().enumerate() {
            for (h, &host) in hosts.iter().enumerate() {
                if round < setup.compile_repeats {
                    let dir = empty.join(format!("{}-{g}-{round}", slug(host)));
                    let _ = std::fs::remove_dir_all(&dir);
                    std::fs::create_dir_all(&empty)?;
                    let addr = setup.addr()?;
                    let ms = first_response(setup.command(host, guest, addr, &dir, 1)?, addr)?;
                    eprintln!("polyglot start {} {host:?} empty: {ms:.0} ms", guest.label);
                    starts.millis[g][h][0].push(ms);
                    let warm = setup.warm_dir(host, g);
                    if round == 0 {
                        starts.compiled[g][h] = folder_bytes(&dir)?;
                        // The first compile's cache becomes the warm one;
                        // an unmeasured start makes sure it is complete.
                        let _ = std::fs::remove_dir_all(&warm);
                        std::fs::rename(&dir, &warm)?;
                        let addr = setup.addr()?;
                        first_response(setup.command(host, guest, addr, &warm, 1)?, addr)?;
                    } else {
                        std::fs::remove_dir_all(&dir)?;
                    }
                    let _ = std::fs::remove_file(dir.with_extension("toml"));
                }
                if round < setup.start_repeats {
                    let addr = setup.addr()?;
                    let warm = setup.warm_dir(host, g);
                    let ms = first_response(setup.command(host, guest, addr, &warm, 1)?, addr)?;
                    eprintln!("polyglot start {} {host:?} warm: {ms:.1} ms", guest.label);
                    starts.millis[g][h][1].push(ms);
                }
            }
        }
    }
    Ok(starts)
}

/// Whether an instance answers after its first request: two more `GET /`
/// on a server that answered one must both be 200 (wasmtime answers a
/// guest that never sets its response with a 500; a hang counts as a
/// failure after `request`'s 10 s read timeout).
fn answers_again(addr: SocketAddr) -> Result<(), String> {
    for nth in ["second", "third"] {
        let asked = Instant::now();
        match request(addr, "GET", "/", "") {
            Ok(200) => {}
            Ok(status) => return Err(format!("the {nth} request answered {status}")),
            Err(e) => {
                return Err(format!(
                    "the {nth} request got no answer in {:.0} s ({e})",
                    asked.elapsed().as_secs_f64()
                ));
            }
        }
    }
    Ok(())
}

/// wrk at `connections` for `seconds` on `GET /`; its output and its command
/// line (with `ADDR` for the address).
fn wrk(addr: SocketAddr, connections: u32, seconds: u64) -> anyhow::Result<(String, String)> {
    let threads = connections.min(2);
    let output = Command::new("wrk")
        .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "--latency"])
        .arg(format!("http://{addr}/"))
        .output()
        .context("cannot run wrk (apt-get install wrk)")?;
    if !output.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok((
        String::from_utf8_lossy(&output.stdout).into_owned(),
        format!("wrk -t {threads} -c {connections} -d {seconds}s --latency http://ADDR/"),
    ))
}

/// The throughput figure's results: `[guest][contender][connections]` runs,
/// and why a contender was left out for a guest, if it was.
struct Loads {
    runs: Vec<Vec<Vec<Vec<Run>>>>,
    left_out: Vec<Vec<Option<String>>>,
    wrk_lines: Vec<String>,
}

fn measure_loads(setup: &Setup) -> anyhow::Result<Loads> {
    let contenders = setup.contenders();
    let mut loads = Loads {
        runs: vec![
            vec![vec![Vec::new(); setup.connections.len()]; contenders.len()];
            setup.guests.len()
        ],
        left_out: vec![vec![None; contenders.len()]; setup.guests.len()],
        wrk_lines: Vec::new(),
    };
    for round in 0..setup.repeats {
        for (g, guest) in setup.guests.iter().enumerate() {
            for (c, who) in contenders.iter().enumerate() {
                if loads.left_out[g][c].is_some() {
                    continue;
                }
                let addr = setup.addr()?;
                let log = setup
                    .work
                    .join(format!("wrk-{g}-{}-{c}-{round}.log", slug(who.host)));
                let command = setup.command(
                    who.host,
                    guest,
                    addr,
                    &setup.warm_dir(who.host, g),
                    who.requests_per_instance,
                )?;
                let server = Server::start(command, addr, &log, START_LIMIT)?;
                if who.requests_per_instance > 1
                    && let Err(why) = answers_again(addr)
                {
                    eprintln!("polyglot wrk {} {who:?}: left out: {why}", guest.label);
                    loads.left_out[g][c] = Some(why);
                    continue;
                }
                wrk(addr, 16, 1)?;
                for (k, &connections) in setup.connections.iter().enumerate() {
                    let before = cpu_seconds(server.pid())?;
                    let (text, line) = wrk(addr, connections, setup.seconds)?;
                    let after = cpu_seconds(server.pid())?;
                    let (rate, total, p50_ms, p99_ms, errors) = parse_wrk(&text)?;
                    if !loads.wrk_lines.contains(&line) {
                        loads.wrk_lines.push(line);
                    }
                    eprintln!(
                        "polyglot wrk {} {who:?} c={connections}: {rate:.0} req/s, p99 {p99_ms:.2} ms, errors {errors}",
                        guest.label
                    );
                    loads.runs[g][c][k].push(Run {
                        rate,
                        p50_ms,
                        p99_ms,
                        cpu_us_per_request: (after - before) * 1e6 / total.max(1.0),
                        errors,
                    });
                }
                drop(server);
            }
        }
    }
    Ok(loads)
}

/// One aim's line: what it says, what was measured, whether it was met.
pub type AimLine = (String, String, bool);

/// Runs the figures; returns their Markdown and the aims' lines.
pub fn run(setup: &Setup) -> anyhow::Result<(String, Vec<AimLine>)> {
    anyhow::ensure!(
        setup.compile_repeats >= 1,
        "the warm caches come from the first compile: --compile-repeats must be at least 1"
    );
    std::fs::create_dir_all(&setup.work)?;
    let versions = setup
        .wasmtime
        .iter()
        .map(|w| wasmtime_version(w))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let starts = measure_starts(setup)?;
    let loads = measure_loads(setup)?;
    let aims = aims(setup, &loads);
    Ok((markdown::write(setup, &versions, &starts, &loads)?, aims))
}

/// Each guest's aims against the newest `wasmtime serve` (the first given):
/// a fresh instance per request ≥ 3× its requests/s, reuse ≥ 0.9×, at every
/// connection count.
fn aims(setup: &Setup, loads: &Loads) -> Vec<AimLine> {
    let contenders = setup.contenders();
    let find = |host: Host, requests_per_instance: u32| {
        contenders
            .iter()
            .position(|c| c.host == host && c.requests_per_instance == requests_per_instance)
    };
    let median = |runs: &[Run]| {
        let rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
        crate::stats::min_median_max(&rates).1
    };
    let mut lines = Vec::new();
    for (g, guest) in setup.guests.iter().enumerate() {
        for (setting, instances, floor) in [
            ("a fresh instance per request", 1, 3.0),
            ("reusing instances", setup.reuse, 0.9),
        ] {
            let aim = format!(
                "{}, {setting}: ≥ {floor}× the newest `wasmtime serve` req/s (connections as listed)",
                guest.label
            );
            let (Some(weft), Some(wasmtime)) = (
                find(Host::Weft, instances),
                find(Host::Wasmtime(0), instances),
            ) else {
                continue;
            };
            if let Some(why) = loads.left_out[g][weft]
                .as_ref()
                .or(loads.left_out[g][wasmtime].as_ref())
            {
                lines.push((aim, format!("not measured: {why}"), false));
                continue;
            }
            let ratios: Vec<(u32, f64)> = setup
                .connections
                .iter()
                .enumerate()
                .map(|(k, &connections)| {
                    let ours = median(&loads.runs[g][weft][k]);
                    let theirs = median(&loads.runs[g][wasmtime][k]);
                    (connections, ours / theirs)
                })
                .collect();
            let measured = ratios
                .iter()
                .map(|(connections, ratio)| format!("{ratio:.2}× at {connections}"))
                .collect::<Vec<_>>()
                .join(", ");
            let met = !ratios.is_empty() && ratios.iter().all(|(_, ratio)| *ratio >= floor);
            lines.push((aim, measured, met));
        }
    }
    lines
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn guests_are_label_equals_path() {
        let guest: Guest = "Python, componentize-py 0.25.1=/tmp/a=b.wasm"
            .parse()
            .unwrap();
        assert_eq!(guest.label, "Python, componentize-py 0.25.1");
        assert_eq!(guest.path, PathBuf::from("/tmp/a=b.wasm"));
        assert!("no-path".parse::<Guest>().is_err());
        assert!("=x.wasm".parse::<Guest>().is_err());
    }

    #[test]
    fn contenders_are_each_host_fresh_then_reusing() {
        let setup = Setup {
            weft: "weft".into(),
            wasmtime: vec!["a".into(), "b".into()],
            guests: Vec::new(),
            work: "w".into(),
            compile_repeats: 1,
            start_repeats: 1,
            seconds: 1,
            repeats: 1,
            connections: vec![1],
            reuse: 1000,
            port: None,
            admin_port: None,
        };
        let got: Vec<(Host, u32)> = setup
            .contenders()
            .iter()
            .map(|c| (c.host, c.requests_per_instance))
            .collect();
        assert_eq!(
            got,
            [
                (Host::Weft, 1),
                (Host::Wasmtime(0), 1),
                (Host::Wasmtime(1), 1),
                (Host::Weft, 1000),
                (Host::Wasmtime(0), 1000),
                (Host::Wasmtime(1), 1000),
            ]
        );
    }
}

//! Process start to first response: the time from spawning a server to its
//! first `200` on `GET /`, polled over TCP every 0.2 ms. Measured here
//! rather than with hyperfine, whose timing would include the server's
//! shutdown after the answer. Configurations are interleaved, one run each
//! per round; `wasmtime serve` runs in each of its configurations for every
//! `wasmtime` binary given.

use crate::process::{free_port, request, wasmtime_version};
use crate::stats::{min_median_max, spread};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weft_test_artifacts::WSTD_HELLO;

/// Paths for a start run.
pub struct Setup {
    /// The `weft` binary.
    pub weft: PathBuf,
    /// The `wasmtime` binaries compared with, the newest first.
    pub wasmtime: Vec<PathBuf>,
    /// This binary (for the native server).
    pub me: PathBuf,
    /// A scratch folder.
    pub work: PathBuf,
    /// Rounds.
    pub repeats: usize,
}

/// How `wasmtime serve` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WasmtimeStart {
    /// No cache: it compiles.
    Cold,
    /// Its cache, filled by an earlier start.
    Warm,
    /// A `.cwasm` made by `wasmtime compile`.
    Precompiled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Config {
    Native,
    WeftCold,
    WeftWarm,
    /// The `binary`th `wasmtime` given.
    Wasmtime {
        binary: usize,
        start: WasmtimeStart,
    },
}

impl Config {
    /// Every configuration, for `binaries` `wasmtime` binaries.
    fn all(binaries: usize) -> Vec<Config> {
        let wasmtime = (0..binaries).flat_map(|binary| {
            [
                WasmtimeStart::Cold,
                WasmtimeStart::Warm,
                WasmtimeStart::Precompiled,
            ]
            .map(|start| Config::Wasmtime { binary, start })
        });
        [Config::Native, Config::WeftCold, Config::WeftWarm]
            .into_iter()
            .chain(wasmtime)
            .collect()
    }

    /// Its name in the table; `versions` are the `wasmtime --version`s.
    fn label(self, versions: &[String]) -> String {
        match self {
            Config::Native => "native hyper".into(),
            Config::WeftCold => "weft serve, compiled-component cache cold (empty)".into(),
            Config::WeftWarm => "weft serve, cache warm".into(),
            Config::Wasmtime { binary, start } => {
                let how = match start {
                    WasmtimeStart::Cold => "no cache (compiles)",
                    WasmtimeStart::Warm => "its cache warm",
                    WasmtimeStart::Precompiled => "precompiled `.cwasm`",
                };
                format!("{} serve, {how}", versions[binary])
            }
        }
    }

    fn command_line(self) -> &'static str {
        match self {
            Config::Native => "weft-bench native-server --addr ADDR",
            Config::WeftCold => {
                "weft serve --addr ADDR --admin-addr 127.0.0.1:0 --cache-dir EMPTY_DIR wstd-hello.wasm"
            }
            Config::WeftWarm => {
                "weft serve --addr ADDR --admin-addr 127.0.0.1:0 --cache-dir WARM_DIR wstd-hello.wasm"
            }
            Config::Wasmtime { start, .. } => match start {
                WasmtimeStart::Cold => {
                    "wasmtime serve --addr ADDR -O pooling-allocator=y -S cli=y -C cache=n wstd-hello.wasm"
                }
                WasmtimeStart::Warm => {
                    "wasmtime serve --addr ADDR -O pooling-allocator=y -S cli=y -C cache-config=WARM.toml wstd-hello.wasm"
                }
                WasmtimeStart::Precompiled => {
                    "wasmtime serve --addr ADDR -O pooling-allocator=y -S cli=y --allow-precompiled wstd-hello.cwasm"
                }
            },
        }
    }
}

impl Setup {
    /// The cache configuration of the `binary`th `wasmtime`'s warm starts
    /// (each version a cache of its own).
    fn wasmtime_cache_config(&self, binary: usize) -> PathBuf {
        self.work.join(format!("wasmtime{binary}-cache.toml"))
    }

    /// The `.cwasm` the `binary`th `wasmtime` compiled.
    fn precompiled(&self, binary: usize) -> PathBuf {
        self.work.join(format!("wstd-hello-{binary}.cwasm"))
    }

    fn command(&self, config: Config, addr: SocketAddr, round: usize) -> anyhow::Result<Command> {
        let addr = addr.to_string();
        let weft = |cache: &Path| {
            let mut command = Command::new(&self.weft);
            command
                .env("WEFT_LOG", "warn")
                .args(["serve", "--addr", &addr, "--admin-addr", "127.0.0.1:0"])
                .arg("--cache-dir")
                .arg(cache)
                .arg(WSTD_HELLO);
            command
        };
        let wasmtime = |binary: usize, extra: &[&str], component: &Path| {
            let mut command = Command::new(&self.wasmtime[binary]);
            command
                .args([
                    "serve",
                    "--addr",
                    &addr,
                    "-O",
                    "pooling-allocator=y",
                    "-S",
                    "cli=y",
                ])
                .args(extra)
                .arg(component);
            command
        };
        Ok(match config {
            Config::Native => {
                let mut command = Command::new(&self.me);
                command.args(["native-server", "--addr", &addr]);
                command
            }
            Config::WeftCold => {
                let dir = self.work.join(format!("weft-cold-{round}"));
                let _ = std::fs::remove_dir_all(&dir);
                weft(&dir)
            }
            Config::WeftWarm => weft(&self.work.join("weft-warm")),
            Config::Wasmtime { binary, start } => match start {
                WasmtimeStart::Cold => wasmtime(binary, &["-C", "cache=n"], Path::new(WSTD_HELLO)),
                WasmtimeStart::Warm => {
                    let config = self.wasmtime_cache_config(binary);
                    let config = format!("cache-config={}", config.to_string_lossy());
                    wasmtime(
                        binary,
                        &["-C", "cache=y", "-C", &config],
                        Path::new(WSTD_HELLO),
                    )
                }
                WasmtimeStart::Precompiled => {
                    wasmtime(binary, &["--allow-precompiled"], &self.precompiled(binary))
                }
            },
        })
    }

    /// The cache folders and files the warm configurations start from.
    fn prepare(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.work)?;
        // One start each fills the warm caches.
        first_response(self.command(Config::WeftWarm, addr()?, 0)?)?;
        for (binary, wasmtime) in self.wasmtime.iter().enumerate() {
            let cache = self.work.join(format!("wasmtime{binary}-cache"));
            std::fs::write(
                self.wasmtime_cache_config(binary),
                format!("[cache]\ndirectory = {:?}\n", cache.to_string_lossy()),
            )?;
            let status = Command::new(wasmtime)
                .args(["compile", "-O", "pooling-allocator=y", "-o"])
                .arg(self.precompiled(binary))
                .arg(WSTD_HELLO)
                .status()?;
            anyhow::ensure!(status.success(), "{} compile failed", wasmtime.display());
            let warm = Config::Wasmtime {
                binary,
                start: WasmtimeStart::Warm,
            };
            first_response(self.command(warm, addr()?, 0)?)?;
        }
        Ok(())
    }
}

fn addr() -> anyhow::Result<SocketAddr> {
    Ok(format!("127.0.0.1:{}", free_port()?).parse()?)
}

/// Spawns `command` (which listens on the address it was given), polls
/// until `GET /` answers 200, and returns the milliseconds that took; then
/// kills the server and waits for it.
fn first_response(mut command: Command) -> anyhow::Result<f64> {
    let addr: SocketAddr = command
        .get_args()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|pair| pair[0] == "--addr")
        .and_then(|pair| pair[1].to_str()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("the command has no --addr"))?;
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let give_up = started + Duration::from_secs(120);
    let took = loop {
        if let Ok(200) = request(addr, "GET", "/", "") {
            break started.elapsed();
        }
        if child.try_wait()?.is_some() || Instant::now() > give_up {
            let _ = child.kill();
            anyhow::bail!("{command:?} never answered 200");
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    Ok(took.as_secs_f64() * 1e3)
}

/// Runs the figure; returns its Markdown and Weft's warm start ÷ native.
pub fn run(setup: &Setup) -> anyhow::Result<(String, f64)> {
    let versions = setup
        .wasmtime
        .iter()
        .map(|binary| wasmtime_version(binary))
        .collect::<anyhow::Result<Vec<_>>>()?;
    setup.prepare()?;
    let configs = Config::all(setup.wasmtime.len());
    let mut millis: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for round in 0..setup.repeats {
        for (i, &config) in configs.iter().enumerate() {
            let ms = first_response(setup.command(config, addr()?, round)?)?;
            millis[i].push(ms);
        }
    }
    let median = |i: usize| min_median_max(&millis[i]).1;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "From spawning the server process to its first `200` for `GET /` (polled over TCP every 0.2 ms by the harness, a new connection per try), the `wstd-hello` component; ms, median (min–max) of {} interleaved runs. *Cold* starts with an empty cache folder each run; *warm* with one an earlier start filled. `weft serve` runs the component as `weft up` runs a web role, without a manifest or a queue store.\n",
        setup.repeats
    );
    let _ = writeln!(
        out,
        "| server | command | ms to first response | ÷ native |\n|---|---|---:|---:|"
    );
    for (i, config) in configs.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {:.2} |",
            config.label(&versions),
            config.command_line(),
            spread(&millis[i], 2),
            median(i) / median(0)
        );
    }
    Ok((out, median(2) / median(0)))
}

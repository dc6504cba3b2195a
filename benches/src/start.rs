//! Process start to first response: the time from spawning a server to its
//! first `200` on `GET /`, polled over TCP every 0.2 ms. Measured here
//! rather than with hyperfine, whose timing would include the server's
//! shutdown after the answer. Configurations are interleaved, one run each
//! per round.

use crate::process::{free_port, request};
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
    /// The `wasmtime` binary.
    pub wasmtime: PathBuf,
    /// This binary (for the native server).
    pub me: PathBuf,
    /// A scratch folder.
    pub work: PathBuf,
    /// Rounds.
    pub repeats: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Config {
    Native,
    WeftCold,
    WeftWarm,
    WasmtimeCold,
    WasmtimeWarm,
    WasmtimePrecompiled,
}

impl Config {
    const ALL: [Config; 6] = [
        Config::Native,
        Config::WeftCold,
        Config::WeftWarm,
        Config::WasmtimeCold,
        Config::WasmtimeWarm,
        Config::WasmtimePrecompiled,
    ];

    fn label(self) -> &'static str {
        match self {
            Config::Native => "native hyper",
            Config::WeftCold => "weft serve, compiled-component cache cold (empty)",
            Config::WeftWarm => "weft serve, cache warm",
            Config::WasmtimeCold => "wasmtime serve, no cache (compiles)",
            Config::WasmtimeWarm => "wasmtime serve, its cache warm",
            Config::WasmtimePrecompiled => "wasmtime serve, precompiled `.cwasm`",
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
            Config::WasmtimeCold => {
                "wasmtime serve --addr ADDR -O pooling-allocator=y -S cli=y -C cache=n wstd-hello.wasm"
            }
            Config::WasmtimeWarm => {
                "wasmtime serve --addr ADDR -O pooling-allocator=y -S cli=y -C cache-config=WARM.toml wstd-hello.wasm"
            }
            Config::WasmtimePrecompiled => {
                "wasmtime serve --addr ADDR -O pooling-allocator=y -S cli=y --allow-precompiled wstd-hello.cwasm"
            }
        }
    }
}

impl Setup {
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
        let wasmtime = |extra: &[&str], component: &Path| {
            let mut command = Command::new(&self.wasmtime);
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
            Config::WasmtimeCold => wasmtime(&["-C", "cache=n"], Path::new(WSTD_HELLO)),
            Config::WasmtimeWarm => {
                let config = self.work.join("wasmtime-cache.toml");
                let config = format!("cache-config={}", config.to_string_lossy());
                wasmtime(&["-C", "cache=y", "-C", &config], Path::new(WSTD_HELLO))
            }
            Config::WasmtimePrecompiled => wasmtime(
                &["--allow-precompiled"],
                &self.work.join("wstd-hello.cwasm"),
            ),
        })
    }

    /// The cache folders and files the warm configurations start from.
    fn prepare(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.work)?;
        let cache = self.work.join("wasmtime-cache");
        std::fs::write(
            self.work.join("wasmtime-cache.toml"),
            format!("[cache]\ndirectory = {:?}\n", cache.to_string_lossy()),
        )?;
        let status = Command::new(&self.wasmtime)
            .args(["compile", "-O", "pooling-allocator=y", "-o"])
            .arg(self.work.join("wstd-hello.cwasm"))
            .arg(WSTD_HELLO)
            .status()?;
        anyhow::ensure!(status.success(), "wasmtime compile failed");
        // One start each fills the warm caches.
        first_response(self.command(Config::WeftWarm, addr()?, 0)?)?;
        first_response(self.command(Config::WasmtimeWarm, addr()?, 0)?)?;
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
    setup.prepare()?;
    let mut millis: Vec<Vec<f64>> = vec![Vec::new(); Config::ALL.len()];
    for round in 0..setup.repeats {
        for (i, &config) in Config::ALL.iter().enumerate() {
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
    for (i, config) in Config::ALL.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {:.2} |",
            config.label(),
            config.command_line(),
            spread(&millis[i], 2),
            median(i) / median(0)
        );
    }
    Ok((out, median(2) / median(0)))
}

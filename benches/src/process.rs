//! Servers under test as child processes: starting one, waiting for its
//! first answer, reading its CPU time and memory, and stopping it.

use anyhow::{Context, bail};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `/proc` counts CPU time in these ticks per second (Linux's fixed USER_HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// A free port on loopback (free when asked; servers bind it right after).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// One `GET path` (or `POST path` with `body`) over a new connection; the
/// status code, or an error if nothing answered.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    let text = String::from_utf8_lossy(&reply);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .context("no HTTP status line in the answer")?;
    Ok(status)
}

/// A server under test, killed when dropped; its output goes to `log`.
pub struct Server {
    child: Child,
}

impl Server {
    /// Starts `command`, which must listen on `addr`, and waits (up to
    /// `limit`) until `GET /` over TCP gets any HTTP answer.
    pub fn start(
        mut command: Command,
        addr: SocketAddr,
        log: &Path,
        limit: Duration,
    ) -> anyhow::Result<Self> {
        let out = std::fs::File::create(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        let mut server = Self { child };
        let give_up = Instant::now() + limit;
        loop {
            if request(addr, "GET", "/", "").is_ok() {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{command:?} exited ({status}) before answering; its log: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if Instant::now() > give_up {
                bail!("{command:?} did not answer within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system, all threads) a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (in parentheses, which may hold spaces):
    // state is field 3, utime field 14, stime field 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |field: usize| -> anyhow::Result<f64> {
        let value = fields.get(field - 3).context("short /proc stat")?;
        Ok(value.parse::<f64>()?)
    };
    Ok((ticks(14)? + ticks(15)?) / TICKS_PER_SECOND)
}

/// Resident memory of a process (`self` for this one), in bytes.
pub fn rss_bytes(pid: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .context("no VmRSS in /proc status")?;
    Ok(kib * 1024)
}

/// `wasmtime --version`'s first two words (`wasmtime 49.0.3`).
pub fn wasmtime_version(wasmtime: &Path) -> anyhow::Result<String> {
    let output = Command::new(wasmtime)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", wasmtime.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    if words.len() < 2 {
        bail!("{} --version said {text:?}", wasmtime.display());
    }
    Ok(words.join(" "))
}

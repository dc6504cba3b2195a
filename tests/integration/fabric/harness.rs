//! The fabric tests' machinery: a NATS JetStream server and `weft host`s
//! on 127.0.0.2, .3 and .4 (fault domains a, b, c) joined to it as one
//! fabric, the operator's key pair, and the `weft` CLI pointed at the
//! fabric (its JSON read by [`super::reports`]).
//!
//! Only one fabric runs at a time ([`Fabric::start`] takes a lock): three
//! hosts and a server are as much as a small machine runs without timing
//! out the others.

use super::reports::{self, ready, ready_by_host};
use crate::hosting::{Host, token_file};
use crate::nats::{NatsServer, free_port};
use crate::support::{cache_dir, eventually, weft_command};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use weft_fabric::ops::hosts::FabricHosts;
use weft_fabric::ops::status::FabricStatus;
use weft_test_artifacts::{PIPELINE_WEB, PIPELINE_WORKER};

/// One fabric at a time in this test process.
static FABRIC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a silent host stays a member (`--fabric-down-after`).
pub const DOWN_AFTER_SECS: u64 = 4;

/// The hosts' addresses and fault domains.
pub const PLACES: [(&str, &str); 3] = [("127.0.0.2", "a"), ("127.0.0.3", "b"), ("127.0.0.4", "c")];

/// A member of the test fabric.
pub struct Member {
    /// `h-a`, `h-b`, `h-c`.
    pub id: String,
    /// The running `weft host`.
    pub host: Host,
}

/// A fabric: a NATS server, members, and the operator's keys. Dropping it
/// kills the hosts (SIGKILL), then the server.
pub struct Fabric {
    /// The members still running, by index into [`PLACES`].
    pub members: Vec<Option<Member>>,
    pub nats: NatsServer,
    pub dir: tempfile::TempDir,
    /// `keys/fabric.key` and `keys/fabric.pub`.
    pub keys: PathBuf,
    pub token: PathBuf,
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
}

/// What `weft` printed.
#[derive(Debug)]
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `weft ARGS`.
pub fn weft(args: &[&str]) -> Output {
    let output = weft_command()
        .args(args)
        .env("WEFT_LOG", "warn")
        .output()
        .unwrap();
    Output {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `weft ARGS`, killing it if it has not exited after `limit`
/// (then `ok` is false and stderr says so).
pub fn run_limited(args: &[&str], limit: Duration) -> Output {
    use std::io::Read as _;
    let mut child = weft_command()
        .args(args)
        .env("WEFT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let give_up = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > give_up {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    if timed_out {
        stderr.push_str(&format!("(still running after {limit:?}: killed)\n"));
    }
    Output {
        ok: status.success() && !timed_out,
        stdout,
        stderr,
    }
}

/// Sets the value after `flag` in `args`.
pub fn set_flag(args: &mut [String], flag: &str, value: &str) {
    let at = args.iter().position(|a| a == flag).unwrap();
    args[at + 1] = value.to_owned();
}

/// A port free on every address in [`PLACES`] (and on 127.0.0.1).
pub fn port_free_everywhere() -> u16 {
    loop {
        let port = free_port();
        let free = PLACES
            .iter()
            .all(|(ip, _)| TcpListener::bind((*ip, port)).is_ok());
        if free {
            return port;
        }
    }
}

/// A free port on `ip`.
fn free_port_on(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Fabric {
    /// A NATS server and a key pair; no member yet.
    pub async fn empty() -> Self {
        let one_at_a_time = FABRIC.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let nats = NatsServer::start(free_port(), &dir.path().join("nats"));
        let keys = dir.path().join("keys");
        let made = weft(&["fabric", "keygen", "--out", keys.to_str().unwrap()]);
        assert!(made.ok, "{made:?}");
        let token = token_file(dir.path());
        Self {
            members: Vec::new(),
            nats,
            dir,
            keys,
            token,
            _one_at_a_time: one_at_a_time,
        }
    }

    /// A fabric of `count` members (on the first `count` [`PLACES`]), all
    /// ready, with a leader.
    pub async fn start(count: usize) -> Self {
        let mut fabric = Self::empty().await;
        for index in 0..count {
            let member = fabric.join(index, &[]);
            fabric.members.push(Some(member));
        }
        fabric.until_ready(count).await;
        fabric
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        self.nats.url()
    }

    /// The operator's private key.
    pub fn key(&self) -> String {
        self.keys.join("fabric.key").display().to_string()
    }

    /// The `weft host` arguments of member `index` (its own state folder
    /// and admin address), with `extra` after them.
    pub fn host_args(&self, index: usize, extra: &[&str]) -> Vec<String> {
        let (ip, domain) = PLACES[index];
        let mut args: Vec<String> = [
            "--admin-addr",
            &format!("{ip}:{}", free_port_on(ip)),
            "--fabric",
            &self.url(),
            "--host-id",
            &format!("h-{domain}"),
            "--advertise",
            ip,
            "--fault-domain",
            domain,
            "--fabric-trust",
            self.keys.join("fabric.pub").to_str().unwrap(),
            "--fabric-down-after",
            &DOWN_AFTER_SECS.to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    /// Starts member `index`; it is ready when this returns.
    pub fn join(&self, index: usize, extra: &[&str]) -> Member {
        let domain = PLACES[index].1;
        let args = self.host_args(index, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let host = Host::start_with(&self.state_dir(index), &self.token, &args);
        Member {
            id: format!("h-{domain}"),
            host,
        }
    }

    /// Member `index`'s state folder.
    pub fn state_dir(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("state-{}", PLACES[index].1))
    }

    /// Runs `weft host` in `state` with `args` (member arguments, see
    /// [`Fabric::host_args`]), expecting it to exit within `limit` (it is
    /// killed then).
    pub fn host_that_exits(&self, state: &Path, args: &[String], limit: Duration) -> Output {
        let cache = cache_arg();
        let mut all: Vec<&str> = vec![
            "host",
            "--state-dir",
            state.to_str().unwrap(),
            "--token-file",
            self.token.to_str().unwrap(),
            "--cache-dir",
            &cache,
        ];
        all.extend(args.iter().map(String::as_str));
        run_limited(&all, limit)
    }

    /// The member with id `id`, if it still runs.
    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().flatten().find(|m| m.id == id)
    }

    /// Kills member `id` with SIGKILL (no goodbye to the fabric).
    pub fn kill(&mut self, id: &str) {
        let slot = self
            .members
            .iter_mut()
            .find(|m| m.as_ref().is_some_and(|m| m.id == id))
            .unwrap();
        drop(slot.take());
    }

    /// Every running member's log, for a failing assertion.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for member in self.members.iter().flatten() {
            all.push_str(&format!(
                "--- {} ---\n{}",
                member.id,
                member.host.weft.log()
            ));
        }
        all
    }

    /// What the fabric's JetStream holds (assignments and beats) and the
    /// hosts' logs, for a failing assertion's message.
    pub async fn dump(&self) -> String {
        use weft_fabric::store::{Bucket, ConnectOptions, FabricStore};
        let Ok(store) = FabricStore::connect(&ConnectOptions::new(&self.url())).await else {
            return self.logs();
        };
        let mut text = String::new();
        for (bucket, prefix) in [(Bucket::State, "assign."), (Bucket::Beats, "beat.")] {
            let entries = store
                .list::<Value>(bucket, prefix)
                .await
                .unwrap_or_default();
            for (key, entry) in entries {
                text.push_str(&format!("{prefix}{key}: {}\n", entry.value));
            }
        }
        format!("{text}{}", self.logs())
    }

    /// `weft ARGS --fabric URL`.
    pub fn cli(&self, args: &[&str]) -> Output {
        let url = self.url();
        let mut all = args.to_vec();
        all.extend(["--fabric", url.as_str()]);
        weft(&all)
    }

    /// `weft ARGS --fabric URL --fabric-key KEY` (what an operator signs).
    pub fn signed_cli(&self, args: &[&str]) -> Output {
        let key = self.key();
        let mut all = args.to_vec();
        all.extend(["--fabric-key", key.as_str()]);
        self.cli(&all)
    }

    /// `weft fabric hosts --json`.
    pub fn hosts(&self) -> FabricHosts {
        reports::parse(&self.cli(&["fabric", "hosts", "--json"]))
    }

    /// Waits until `count` members are ready and one of them leads.
    pub async fn until_ready(&self, count: usize) -> FabricHosts {
        eventually(
            Duration::from_secs(60),
            "the members to be ready with a leader",
            || async {
                let hosts = self.hosts();
                (ready(&hosts).len() == count && hosts.leader.is_some()).then_some(hosts)
            },
        )
        .await
    }

    /// `weft status --json`, over the whole fabric.
    pub fn status(&self) -> FabricStatus {
        reports::parse(&self.cli(&["status", "--json"]))
    }

    /// Waits until `service`'s role `role` has `count` instances ready
    /// (by host, as [`ready_by_host`] reads them), none of them on a host
    /// in `without`, within `limit`.
    pub async fn until_role_ready(
        &self,
        (service, role): (&str, &str),
        count: u32,
        without: &[&str],
        limit: Duration,
    ) -> BTreeMap<String, u32> {
        let what = format!("{count} ready instances of {service}/{role}, none on {without:?}");
        eventually(limit, &what, || async {
            let by_host = ready_by_host(&self.status(), service, role);
            let placed = by_host.values().sum::<u32>() == count
                && !without.iter().any(|id| by_host.contains_key(*id));
            placed.then_some(by_host)
        })
        .await
    }

    /// `weft endpoints SERVICE/ROLE`: the base URLs.
    pub fn endpoints(&self, role: &str) -> Vec<String> {
        let out = self.cli(&["endpoints", role]);
        assert!(out.ok, "{out:?}");
        out.stdout
            .split_whitespace()
            .map(|address| {
                if address.starts_with("http") {
                    address.to_owned()
                } else {
                    format!("http://{address}")
                }
            })
            .collect()
    }

    /// The services member `id` runs, by its own admin API.
    pub async fn services_on(&self, id: &str) -> Vec<String> {
        let member = self.member(id).unwrap();
        let host = reports::services_of(member, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{id} does not answer"));
        host.services.into_iter().map(|s| s.name).collect()
    }
}

/// The services' `[queues]` table: NATS with no `url`, which in a fabric
/// is the fabric's own JetStream server; a killed worker's messages come
/// back after 3 s instead of the default 30.
const QUEUES: &str = "[queues]\nbackend = \"nats\"\nack-wait-ms = 3000\n";

/// Writes the pipeline service `name` into `dir`: web on `port` on
/// `web_hosts` hosts, `workers` workers, queues in the fabric's JetStream,
/// and `extra` TOML appended (after the worker role's table).
pub fn pipeline_dir(dir: &Path, name: &str, port: u16, web_hosts: u32, workers: u32, extra: &str) {
    pipeline_dir_with(
        dir,
        name,
        port,
        (PIPELINE_WEB, PIPELINE_WORKER),
        web_hosts,
        workers,
        extra,
    );
}

/// [`pipeline_dir`] with these components (web, worker).
pub fn pipeline_dir_with(
    dir: &Path,
    name: &str,
    port: u16,
    (web, worker): (&str, &str),
    web_hosts: u32,
    workers: u32,
    extra: &str,
) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("weft.toml"),
        format!(
            r#"
[service]
name = "{name}"

[roles.web]
kind = "web"
component = "{web}"
listen = "127.0.0.1:{port}"
instances = {web_hosts}
queues = ["jobs"]
buckets = ["jobs"]

[roles.worker]
kind = "worker"
component = "{worker}"
instances = {workers}
queues = ["jobs"]
buckets = ["jobs"]
{extra}
{QUEUES}
"#
        ),
    )
    .unwrap();
}

/// The shared compiled-component cache, as an argument.
pub fn cache_arg() -> String {
    cache_dir().display().to_string()
}

/// HAProxy in front of a web role's hosts, with the backend `weft
/// endpoints ROLE --haproxy web` writes; killed on drop.
pub struct Haproxy {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl Haproxy {
    /// Starts HAProxy on a free port of 127.0.0.1 for `role` (SERVICE/ROLE),
    /// and waits until it accepts connections.
    pub fn start(fabric: &Fabric, role: &str) -> Self {
        let out = fabric.cli(&["endpoints", role, "--haproxy", "web"]);
        assert!(out.ok, "{out:?}");
        let port = free_port();
        let config = format!(
            "global\n    maxconn 512\n\n\
             defaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n    \
             timeout server 30s\n    retries 3\n    option redispatch\n    \
             retry-on conn-failure empty-response\n\n\
             frontend clients\n    bind 127.0.0.1:{port}\n    default_backend web\n\n{}\n",
            out.stdout
        );
        let path = fabric.dir.path().join("haproxy.cfg");
        std::fs::write(&path, &config).unwrap();
        let log = fabric.dir.path().join("haproxy.log");
        let child = std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .expect("haproxy is not installed: `apt-get install haproxy` (.ci/run does)");
        let give_up = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < give_up, "haproxy did not start:\n{config}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port, log }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What it printed.
    pub fn log(&self) -> String {
        let out = std::fs::read_to_string(&self.log).unwrap_or_default();
        let err = std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default();
        format!("{out}{err}")
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Shared test machinery: one runtime per test process, an HTTP client, and
//! a `weft` child process whose output is shown when a test fails.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use weft_broker::MemoryBroker;
use weft_sandbox::{
    CpuShare, EngineConfig, Grants, RateLimits, RoleSpec, Runtime, SandboxLimits, WebRole,
};

/// Where compiled components are cached across test processes, so each
/// guest is compiled once per test run.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weft-component-cache")
}

/// The one runtime of this test process.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(EngineConfig {
            cache_dir: Some(cache_dir()),
            ..EngineConfig::default()
        })
        .expect("the test runtime builds")
    })
}

/// A role spec with these grants and limits, over a fresh in-memory broker.
pub fn spec(
    role: &str,
    queues: &[&str],
    buckets: &[&str],
    limits: SandboxLimits,
) -> (RoleSpec, Arc<MemoryBroker>) {
    spec_on(
        Arc::new(MemoryBroker::default()),
        role,
        queues,
        buckets,
        limits,
    )
}

/// A role spec over an existing broker (to share queues between roles).
pub fn spec_on(
    broker: Arc<MemoryBroker>,
    role: &str,
    queues: &[&str],
    buckets: &[&str],
    limits: SandboxLimits,
) -> (RoleSpec, Arc<MemoryBroker>) {
    let grants = Grants {
        service: "test".into(),
        role: role.into(),
        queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        buckets: buckets.iter().map(|b| (*b).to_owned()).collect(),
        ..Grants::default()
    };
    (
        RoleSpec {
            grants,
            limits,
            rate_limits: RateLimits::default(),
            cpu: CpuShare::default(),
            queues: broker.clone(),
            kv: broker.clone(),
        },
        broker,
    )
}

/// A web role from a guest, with default grants and these limits.
pub fn web_role(guest: &str, limits: SandboxLimits) -> WebRole {
    let (spec, _) = spec("web", &["tasks"], &["results"], limits);
    runtime()
        .web_role(Path::new(guest), spec)
        .expect("the guest loads")
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// Sends `method path` with `body` to a web role in this process.
pub async fn call(role: &WebRole, method: &str, path: &str, body: &str) -> Reply {
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://localhost{path}"))
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a valid request");
    let response = role.handle(request).await;
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Sends one HTTP/1.1 request over TCP (a new connection each time).
pub async fn http(method: &str, url: &str, body: &str) -> anyhow::Result<Reply> {
    http_as(None, method, url, body).await
}

/// [`http`], with `Authorization: Bearer TOKEN` when a token is given.
pub async fn http_as(
    token: Option<&str>,
    method: &str,
    url: &str,
    body: &str,
) -> anyhow::Result<Reply> {
    http_bytes(token, method, url, body.as_bytes().to_vec()).await
}

/// [`http_as`] with a body of any bytes.
pub async fn http_bytes(
    token: Option<&str>,
    method: &str,
    url: &str,
    body: Vec<u8>,
) -> anyhow::Result<Reply> {
    let authorization = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|value| ("authorization", value.as_str()))
        .collect();
    http_with(method, url, &headers, body).await
}

/// Sends one HTTP/1.1 request with these headers (besides `host`) over TCP.
pub async fn http_with(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> anyhow::Result<Reply> {
    let uri: http::Uri = url.parse()?;
    let authority = uri.authority().context("url without host")?.clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header("host", authority.as_str());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running `weft` process. Stopped on drop; its stderr (the host log,
/// with captured guest output) is printed if the test is failing.
pub struct Weft {
    child: Child,
    /// `listening NAME URL` lines: role name → base URL.
    pub urls: Vec<(String, String)>,
    /// The admin address's base URL (`admin URL`).
    pub admin: Option<String>,
    log: Arc<Mutex<String>>,
}

/// The `weft` binary built for these tests.
pub fn weft_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weft"))
}

/// Runs `weft ARGS` to its end; returns whether it succeeded, and its
/// stderr.
pub fn run_weft(args: &[&str]) -> (bool, String) {
    let output = weft_command().args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The one `weft: error:` line of `stderr` (there must be exactly one).
pub fn error_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("weft: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line in:\n{stderr}");
    lines[0]
}

/// How long [`Weft::start`] waits for the `ready` line.
const READY_WITHIN: Duration = Duration::from_secs(120);

impl Weft {
    /// Starts `weft ARGS` and waits for its `ready` line. `up`, `serve` and
    /// `host` get an admin address of `127.0.0.1:0` unless ARGS name one, so
    /// that tests running at once never clash.
    pub fn start(args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(args, &[])
    }

    /// [`Weft::start`] with these environment variables set.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut command = weft_command();
        command.envs(env.iter().copied());
        Self::spawn(command, args, READY_WITHIN)
    }

    /// [`Weft::start`] that waits up to `limit` for the `ready` line: for a
    /// `weft up` that builds its components first (Python and JavaScript
    /// builds, then compiles of ~18 MB components, take minutes on a busy
    /// machine).
    pub fn start_within(args: &[&str], limit: Duration) -> anyhow::Result<Self> {
        Self::spawn(weft_command(), args, limit)
    }

    /// [`Weft::start`] run by `wrapper`, a command that execs the rest of
    /// its arguments (`prlimit --nofile=512:512 --`, say).
    pub fn start_wrapped(wrapper: &[&str], args: &[&str]) -> anyhow::Result<Self> {
        let (program, wrapper_args) = wrapper.split_first().context("an empty wrapper")?;
        let mut command = Command::new(program);
        command.args(wrapper_args).arg(env!("CARGO_BIN_EXE_weft"));
        Self::spawn(command, args, READY_WITHIN)
    }

    fn spawn(mut command: Command, args: &[&str], limit: Duration) -> anyhow::Result<Self> {
        command.args(args);
        let runs = matches!(args.first(), Some(&"up" | &"serve" | &"host"));
        if runs && !args.contains(&"--admin-addr") {
            command.args(["--admin-addr", "127.0.0.1:0"]);
        }
        // `WEFT_TEST_HOST_LOG=info,weft_fabric=debug` (say) to see more of
        // a failing test's hosts.
        let log = std::env::var("WEFT_TEST_HOST_LOG").unwrap_or_else(|_| "info".into());
        let mut child = command
            .env("WEFT_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start weft")?;
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().context("stderr")?;
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut weft = Self {
            child,
            urls: Vec::new(),
            admin: None,
            log,
        };
        let give_up = Instant::now() + limit;
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line == "ready" => break,
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("admin ") {
                        weft.admin = Some(url.to_owned());
                    }
                    if let Some((name, url)) = line
                        .strip_prefix("listening ")
                        .and_then(|rest| rest.split_once(' '))
                    {
                        weft.urls.push((name.to_owned(), url.to_owned()));
                    }
                }
                Err(_) => bail!("weft did not become ready; its log:\n{}", weft.log()),
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Ok(weft)
    }

    /// The base URL of web role `name`.
    pub fn url(&self, name: &str) -> String {
        self.urls
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, u)| u.clone())
            .expect("role is listening")
    }

    /// The process id, to read its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the host logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the process is still running.
    pub fn child_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: kill(2) with a pid we spawned and still own (not yet
        // reaped); it has no memory-safety preconditions.
        #[allow(unsafe_code)]
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        anyhow::ensure!(sent == 0, "cannot signal weft");
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(Instant::now() < give_up, "weft did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Weft {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- weft log ---\n{}--- end of weft log ---", self.log());
        }
    }
}

/// Runs `weft up` on a manifest, with the shared component cache and a
/// state folder of its own beside the manifest.
pub fn up(manifest: &Path) -> Weft {
    up_with(manifest, &[])
}

/// [`up`] with `extra` flags before the manifest.
pub fn up_with(manifest: &Path, extra: &[&str]) -> Weft {
    let cache = cache_dir().display().to_string();
    // Each host its own state folder: two tests' services of the same name
    // must not share (and lock each other out of) one queue store.
    let state = manifest.with_file_name("state");
    let mut args = vec![
        "up",
        "--no-build",
        "--cache-dir",
        cache.as_str(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(manifest.to_str().unwrap());
    Weft::start(&args).unwrap()
}

/// The pipeline example's manifest for service `name`, with the components
/// tests/artifacts built: a web role sending to `jobs`, two workers
/// receiving, both granted bucket `jobs`. `service_extra` goes under
/// `[service]`; `tail` (more tables) after the roles.
pub fn pipeline_manifest(name: &str, service_extra: &str, tail: &str) -> String {
    use weft_test_artifacts::{PIPELINE_WEB, PIPELINE_WORKER};
    format!(
        r#"
[service]
name = "{name}"
{service_extra}

[roles.web]
kind = "web"
component = "{PIPELINE_WEB}"
listen = "127.0.0.1:0"
queues = ["jobs"]
buckets = ["jobs"]

[roles.worker]
kind = "worker"
component = "{PIPELINE_WORKER}"
instances = 2
queues = ["jobs"]
buckets = ["jobs"]
{tail}"#
    )
}

/// `weft serve` on `component` with the shared compile cache and `extra`
/// flags before it.
pub fn serve(component: &str, extra: &[&str]) -> Weft {
    let cache = cache_dir().display().to_string();
    let mut args = vec![
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--cache-dir",
        cache.as_str(),
    ];
    args.extend_from_slice(extra);
    args.push(component);
    Weft::start(&args).unwrap()
}

/// Writes `text` as `dir`'s `weft.toml`, creating `dir`.
pub fn write_manifest(dir: &Path, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("weft.toml"), text).unwrap();
}

/// Where `program` is on `PATH`, if it is (as `weft up` looks for a role's
/// build tool).
pub fn on_path(program: &str) -> Option<PathBuf> {
    weft_host::builder::find_on_path(program, std::env::var_os("PATH").as_deref())
}

/// A local HTTP server that answers `hello` and counts connections.
pub struct Upstream {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    /// Listens on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                        "hello",
                    ))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Self { addr, connections }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

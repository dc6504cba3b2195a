//! A real browser for the dashboard's test: Debian's headless Chromium,
//! driven over WebDriver (fantoccini) through Debian's chromedriver.
//!
//! [`Browser::start`] starts chromedriver on a free loopback port, in a
//! process group of its own so that the Chromium it launches goes with it
//! when the [`Browser`] is dropped (a failing test included), and opens a
//! session with a fresh profile. Its waits are bounded polls of what a
//! script reads from the page; when one gives up it names what it expected,
//! shows what the page showed and saves a screenshot beside the test's.

use crate::support::http;
use anyhow::{Context as _, bail};
use fantoccini::{Client, ClientBuilder, error::CmdError};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to install when a program is missing; tests/run.sh and .ci/run
/// install it.
const INSTALL: &str = "the dashboard test needs Chromium and chromedriver: \
    apt-get install chromium chromium-driver (tests/run.sh installs them)";

/// Chromium's flags. The background-networking ones matter on test
/// machines without Internet access: without them Chromium keeps opening
/// connections to Google's services, and their refusals crowd the log
/// (and, on some machines, the sockets).
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,800",
];

/// The page's size (its viewport, what a screenshot holds): the size
/// issue 16 asks the dashboard to read well at. `--window-size` sets the
/// window's, which Chromium's frame makes taller than the page, so
/// [`Browser::start`] grows the window until the page has this size.
pub const VIEWPORT: (u32, u32) = (1280, 800);

/// How often a wait looks at the page again.
const POLL: Duration = Duration::from_millis(200);

/// Where the dashboard test's screenshots go: `target/test-artefacts`.
/// CI (.ci/run) lists this folder after the tests so that its runner can
/// keep what is in it.
pub fn artefacts_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("test-artefacts")
}

/// chromedriver and the Chromium it started; both stopped when dropped.
struct Driver {
    child: Child,
    log: PathBuf,
    /// The browser's profile and the driver's log; removed last.
    dir: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and every Chromium process it
        // started (they never leave the group it was started in).
        if let Ok(group) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group of the child this test
            // started and has not yet reaped; no memory is involved.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- chromedriver log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
            eprintln!("--- end of chromedriver log ---");
        }
    }
}

/// A WebDriver session with headless Chromium.
pub struct Browser {
    pub client: Client,
    _driver: Driver,
}

impl Browser {
    /// Starts chromedriver and opens a session; panics with what to
    /// install when Chromium or chromedriver is missing.
    pub async fn start() -> anyhow::Result<Self> {
        let (Some(chromium), Some(chromedriver)) = (
            crate::support::on_path("chromium"),
            crate::support::on_path("chromedriver"),
        ) else {
            panic!("{INSTALL}");
        };
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("chromedriver.log");
        // A port free a moment ago; should another process take it first,
        // chromedriver exits and the wait below says so.
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?.port()
        };
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            // Its warnings and errors only (a browser that crashed or
            // could not start): at `INFO` it logs every command.
            .arg("--log-level=WARNING")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", chromedriver.display()))?;
        let mut driver = Driver { child, log, dir };
        let url = format!("http://127.0.0.1:{port}");
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(reply) = http("GET", &format!("{url}/status"), "").await
                && reply.status == 200
                && reply.body.contains("\"ready\":true")
            {
                break;
            }
            if let Some(status) = driver.child.try_wait()? {
                bail!("chromedriver exited ({status}) before it was ready");
            }
            if Instant::now() > give_up {
                bail!("chromedriver did not answer on {url}/status within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A fresh profile, so nothing of another run (cookies above all)
        // is there.
        let profile = driver.dir.path().join("profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), "chrome".into());
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .context("chromedriver did not open a Chromium session")?;
        let browser = Self {
            client,
            _driver: driver,
        };
        browser.fit_viewport().await?;
        Ok(browser)
    }

    /// Sizes the window so that the page is [`VIEWPORT`], adding the
    /// frame's size (the window's less the page's) to it.
    async fn fit_viewport(&self) -> anyhow::Result<()> {
        let (width, height) = VIEWPORT;
        let inner = "return [window.innerWidth, window.innerHeight];";
        let size = |v: Value| -> anyhow::Result<(u64, u64)> {
            let n = |i: usize| v[i].as_u64().with_context(|| format!("window size {v}"));
            Ok((n(0)?, n(1)?))
        };
        let (window_w, window_h) = self.client.get_window_size().await?;
        let (page_w, page_h) = size(self.eval(inner).await?)?;
        let frame = |window: u64, page: u64| u32::try_from(window.saturating_sub(page));
        self.client
            .set_window_size(
                width + frame(window_w, page_w)?,
                height + frame(window_h, page_h)?,
            )
            .await?;
        let page = size(self.eval(inner).await?)?;
        if page != (u64::from(width), u64::from(height)) {
            bail!("the page is {page:?} in a window sized for {VIEWPORT:?}");
        }
        Ok(())
    }

    /// Ends the session (Chromium quits); the driver stops on drop.
    pub async fn close(self) -> anyhow::Result<()> {
        self.client.clone().close().await?;
        Ok(())
    }

    /// Saves a screenshot of the page (as it is scrolled) as `name` in
    /// [`artefacts_dir`]; checks that it is a PNG of [`VIEWPORT`]'s size.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.client.screenshot().await?;
        std::fs::create_dir_all(artefacts_dir())?;
        let path = artefacts_dir().join(name);
        std::fs::write(&path, &png)?;
        // The signature, then the IHDR chunk: width and height at 16 and 20.
        let size = |at: usize| -> Option<u32> {
            Some(u32::from_be_bytes(png.get(at..at + 4)?.try_into().ok()?))
        };
        let shape = png
            .starts_with(b"\x89PNG\r\n\x1a\n")
            .then(|| size(16).zip(size(20)))
            .flatten();
        if shape != Some(VIEWPORT) {
            bail!(
                "{} is not a {VIEWPORT:?} PNG: {shape:?}, {} bytes",
                path.display(),
                png.len()
            );
        }
        Ok(path)
    }

    /// Runs `script` (a function body) in the page and returns what it
    /// returns.
    pub async fn eval(&self, script: &str) -> Result<Value, CmdError> {
        self.client.execute(script, Vec::new()).await
    }

    /// Does `act` (some clicks and keys), again from the start if the page
    /// re-rendered under it (the dashboard redraws every 2 s, which leaves
    /// elements found before the redraw stale) or if what it needs is not
    /// there yet; fails after a bounded time naming `what`.
    pub async fn act<F, Fut>(&self, what: &str, mut act: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), CmdError>>,
    {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let error = match act().await {
                Ok(()) => return,
                Err(error) => error,
            };
            let retry = error.is_stale_element_reference()
                || error.is_no_such_element()
                || error.is_element_not_interactable();
            if !retry || Instant::now() > give_up {
                self.fail(&format!("to {what}, but: {error}"), &Value::Null)
                    .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls `script`'s value until `done` accepts it; returns that value.
    /// After `limit`, fails with `expected`, the script's last value and
    /// the page's text, and saves a screenshot.
    pub async fn wait_until(
        &self,
        limit: Duration,
        expected: &str,
        script: &str,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let give_up = Instant::now() + limit;
        loop {
            let seen = match self.eval(script).await {
                Ok(value) if done(&value) => return value,
                Ok(value) => value,
                Err(error) => json!({ "script error": error.to_string() }),
            };
            if Instant::now() > give_up {
                self.fail(&format!("{expected} (waited {limit:?})"), &seen)
                    .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fails the test: what was expected, what the page showed, and a
    /// screenshot at `target/test-artefacts/dashboard-failure.png`.
    pub async fn fail(&self, expected: &str, seen: &Value) -> ! {
        let url = self
            .client
            .current_url()
            .await
            .map_or_else(|e| format!("({e})"), |u| u.to_string());
        let text = self
            .eval("return document.body ? document.body.innerText : '';")
            .await
            .ok()
            .and_then(|t| t.as_str().map(str::to_owned))
            .unwrap_or_default();
        let text: String = text.chars().take(3000).collect();
        let shot = artefacts_dir().join("dashboard-failure.png");
        let saved = match self.client.screenshot().await {
            Ok(png) => std::fs::create_dir_all(artefacts_dir())
                .and_then(|()| std::fs::write(&shot, png))
                .map_or_else(
                    |e| format!("not saved: {e}"),
                    |()| shot.display().to_string(),
                ),
            Err(e) => format!("not taken: {e}"),
        };
        panic!(
            "expected {expected}\nthe script saw: {seen}\nat {url} the page showed:\n{text}\n\
             screenshot: {saved}"
        );
    }
}

//! A web role's versions, and the share of its requests each one serves.
//!
//! A web role gets a fresh sandbox per request, so its "instances" are
//! versions of the role (a component with its settings) serving a share of
//! the requests: [`WebFront`] splits requests round-robin into as many
//! shares as the service has upgrade domains, and each domain's share goes
//! to one version. A rolling upgrade moves the shares domain by domain to
//! the new version; requests already dispatched finish on the version that
//! took them, since each holds it until its response is written.
//!
//! A version is *starting* until its `start` hook returned and its health
//! path (if the role declares one) answered 2xx; only then does it take a
//! share. Retired, it is *draining* until its requests in flight (and the
//! sandboxes still streaming their bodies) are done, bounded by the grace
//! period (a reusing role's idle instances are freed at once), then its `stop` hook runs (if its `start` hook had returned Ok)
//! and it is *stopped*. A service that stops waits for those drains too.

use super::instance::InstanceState;
use super::lock::lock;
use super::status::InstanceStatus;
use super::version::VersionInfo;
use crate::lingering::LingeringBody;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use weft_sandbox::{WebResponse, WebRole};

/// How often a starting version's health path is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// One version of a web role.
pub struct WebVersion {
    /// What it was built from.
    pub info: VersionInfo,
    /// The role, ready to serve.
    pub role: WebRole,
    health: Option<String>,
    in_flight: AtomicU64,
    state: Mutex<InstanceState>,
    /// Whether its start hook returned Ok: only then does its stop hook run.
    hook_started: AtomicBool,
}

/// Counts a request in flight until dropped (also when the client goes away).
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl WebVersion {
    /// A version not yet started.
    pub fn new(info: VersionInfo, role: WebRole, health: Option<String>) -> Self {
        Self {
            info,
            role,
            health,
            in_flight: AtomicU64::new(0),
            state: Mutex::new(InstanceState::Starting),
            hook_started: AtomicBool::new(false),
        }
    }

    /// Its state.
    pub fn state(&self) -> InstanceState {
        *lock(&self.state)
    }

    fn set_state(&self, state: InstanceState) {
        *lock(&self.state) = state;
    }

    /// Requests dispatched to it and not yet answered.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Runs its start hook, then probes its health path until it answers
    /// 2xx, within `timeout`; ready once both passed.
    pub async fn start(&self, timeout: Duration) -> Result<(), String> {
        self.set_state(InstanceState::Starting);
        let give_up = Instant::now() + timeout;
        let started = tokio::time::timeout_at(give_up.into(), self.role.start_hook()).await;
        match started {
            Ok(Ok(())) => self.hook_started.store(true, Ordering::Release),
            Ok(Err(failure)) => {
                self.set_state(InstanceState::Failed);
                return Err(format!("start hook: {failure}"));
            }
            Err(_) => {
                self.set_state(InstanceState::Failed);
                return Err(format!(
                    "start hook did not return within {} s",
                    timeout.as_secs()
                ));
            }
        }
        loop {
            // A probe that never answers must not hold the start past its
            // bound either.
            let probed = tokio::time::timeout_at(give_up.into(), self.probe())
                .await
                .unwrap_or_else(|_| Err("its health path did not answer".into()));
            match probed {
                Ok(()) => break,
                Err(why) if Instant::now() + PROBE_INTERVAL >= give_up => {
                    self.set_state(InstanceState::Failed);
                    return Err(format!("not healthy within {} s: {why}", timeout.as_secs()));
                }
                Err(_) => tokio::time::sleep(PROBE_INTERVAL).await,
            }
        }
        self.set_state(InstanceState::Ready);
        Ok(())
    }

    /// Sends `GET <health path>` to the version (in the process, not over
    /// the network): Ok on 2xx, or when the role declares no health path.
    pub async fn probe(&self) -> Result<(), String> {
        let Some(path) = &self.health else {
            return Ok(());
        };
        let request = http::Request::builder()
            .method("GET")
            .uri(path.as_str())
            .header(http::header::HOST, "localhost")
            .header("user-agent", "weft-health-probe")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot build the probe: {e}"))?;
        let response = self.role.handle(request).await;
        let status = response.status();
        // Read the body, so the guest finishes its request.
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("GET {path} answered {status}"))
        }
    }

    /// Serves one request, counting it in flight.
    pub async fn serve(&self, request: hyper::Request<LingeringBody>) -> WebResponse {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _counted = InFlight(&self.in_flight);
        self.role.handle(request).await
    }

    /// Waits, up to `grace`, for its requests in flight and the sandboxes
    /// still streaming bodies to finish, then runs its stop hook.
    pub async fn drain_and_stop(&self, grace: Duration) {
        self.set_state(InstanceState::Draining);
        // A reusing role's idle instances count as live: without this the
        // drain would wait out the whole grace for sandboxes serving nothing.
        self.role.release_idle();
        let give_up = Instant::now() + grace;
        while (self.in_flight() > 0 || self.role.usage().counters.instances_live > 0)
            && Instant::now() < give_up
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A version whose start hook never returned Ok gets no stop hook,
        // as the fabric called OnStop only after OnStart succeeded.
        if self.hook_started.load(Ordering::Acquire)
            && let Err(failure) = self.role.stop_hook().await
        {
            tracing::warn!(
                service = %self.role.usage().service,
                role = %self.role.usage().role,
                generation = self.info.generation,
                %failure,
                "web role stop hook failed"
            );
        }
        self.set_state(InstanceState::Stopped);
    }
}

/// Where a web role's requests go: one version per upgrade domain.
#[derive(Default)]
pub struct WebFront {
    domains: RwLock<Vec<Arc<WebVersion>>>,
    next: AtomicUsize,
    draining: Mutex<Vec<Arc<WebVersion>>>,
    /// The tasks draining retired versions, for shutdown to wait for.
    retiring: Mutex<Vec<JoinHandle<()>>>,
}

impl WebFront {
    /// The version the next request goes to, if any is ready.
    pub fn pick(&self) -> Option<Arc<WebVersion>> {
        let domains = self
            .domains
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if domains.is_empty() {
            return None;
        }
        let share = self.next.fetch_add(1, Ordering::Relaxed) % domains.len();
        domains.get(share).cloned()
    }

    /// Sends every share (`domains` of them) to `version`.
    pub fn route_all(&self, version: &Arc<WebVersion>, domains: u32) {
        let count = usize::try_from(domains.max(1)).unwrap_or(1);
        *self
            .domains
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = vec![version.clone(); count];
    }

    /// Sends domain `domain`'s share to `version`.
    pub fn move_domain(&self, domain: u32, version: &Arc<WebVersion>) {
        let mut domains = self
            .domains
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slot) = usize::try_from(domain)
            .ok()
            .and_then(|d| domains.get_mut(d))
        {
            *slot = version.clone();
        }
    }

    /// The versions serving shares now, each once.
    pub fn serving(&self) -> Vec<Arc<WebVersion>> {
        let mut seen: Vec<Arc<WebVersion>> = Vec::new();
        for version in self
            .domains
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            if !seen.iter().any(|v| Arc::ptr_eq(v, version)) {
                seen.push(version.clone());
            }
        }
        seen
    }

    /// Drains `version` in the background (it serves no share any more).
    pub fn retire(self: &Arc<Self>, version: Arc<WebVersion>, grace: Duration) {
        lock(&self.draining).push(version.clone());
        let front = self.clone();
        let task = tokio::spawn(async move {
            version.drain_and_stop(grace).await;
            lock(&front.draining).retain(|v| !Arc::ptr_eq(v, &version));
        });
        let mut retiring = lock(&self.retiring);
        retiring.retain(|task| !task.is_finished());
        retiring.push(task);
    }

    /// The drains of retired versions still under way (each bounded by
    /// the grace period it was given), for a stop to wait for before it
    /// closes the backends they may still use and their stop hooks run.
    pub fn retiring(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *lock(&self.retiring))
    }

    /// Stops taking requests and returns every version it had, to drain.
    pub fn close(&self) -> Vec<Arc<WebVersion>> {
        let serving = self.serving();
        self.domains
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        serving
    }

    /// One entry per domain's share and per draining version, and how many
    /// shares are served by a ready version.
    pub fn status(&self) -> (Vec<InstanceStatus>, u32) {
        let domains = self
            .domains
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut ready = 0;
        let mut instances: Vec<InstanceStatus> = domains
            .iter()
            .enumerate()
            .map(|(d, version)| {
                let state = version.state();
                if state == InstanceState::Ready {
                    ready += 1;
                }
                entry(format!("d{d}"), u32::try_from(d).ok(), version)
            })
            .collect();
        for version in lock(&self.draining).iter() {
            instances.push(entry(
                format!("draining-g{}", version.info.generation),
                None,
                version,
            ));
        }
        (instances, ready)
    }
}

fn entry(id: String, domain: Option<u32>, version: &WebVersion) -> InstanceStatus {
    InstanceStatus {
        id,
        domain,
        generation: version.info.generation,
        state: version.state(),
        restarts: 0,
        crash_looping: false,
        last_failure: None,
        in_flight: Some(version.in_flight()),
    }
}

/// The answer while no version of the role is ready: 503, retry shortly.
pub fn not_ready() -> WebResponse {
    weft_sandbox::busy_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "starting",
        "the role is starting; retry shortly",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::{first_version, role_spec};
    use std::path::Path;
    use weft_sandbox::{EngineConfig, Runtime};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retired_version_can_be_waited_for_until_its_stop_hook_ran() {
        let runtime = Runtime::new(EngineConfig::default()).unwrap();
        let spec = role_spec("web", &[], &[]);
        let role = runtime
            .web_role(Path::new(weft_test_artifacts::ROLLOUT_WEB), spec)
            .unwrap();
        let info = first_version("rollout-web");
        let version = Arc::new(WebVersion::new(info, role, Some("/health".into())));
        version.start(Duration::from_secs(30)).await.unwrap();
        let front = Arc::new(WebFront::default());
        front.route_all(&version, 2);
        front.retire(version.clone(), Duration::from_secs(5));
        // What a stopping service waits for before it closes the backends.
        let drains = front.retiring();
        assert_eq!(drains.len(), 1);
        for drain in drains {
            drain.await.unwrap();
        }
        assert_eq!(version.state(), InstanceState::Stopped);
        assert!(front.retiring().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_health_path_that_never_answers_fails_the_start_within_its_timeout() {
        let runtime = Runtime::new(EngineConfig::default()).unwrap();
        let spec = role_spec("web", &[], &[]);
        let role = runtime
            .web_role(Path::new(weft_test_artifacts::ROLLOUT_WEB), spec)
            .unwrap();
        let info = first_version("rollout-web");
        // Its "health path" answers after 20 s: far past the timeout.
        let version = WebVersion::new(info, role, Some("/sleep/20000".into()));
        let began = Instant::now();
        let why = version.start(Duration::from_secs(1)).await.unwrap_err();
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{:?}",
            began.elapsed()
        );
        assert!(why.contains("did not answer"), "{why}");
        assert_eq!(version.state(), InstanceState::Failed);
    }
}

//! One role of a manifest, `[roles.NAME]`: what every role has (its
//! component, grants and limits) and what only one kind has, as a type per
//! kind ([`RoleByKind`]): a web role's address and health path cannot be
//! missing or given to a worker. `instances` means what each kind can use:
//! a worker's instances on a host, a web role's hosts in a fabric (one host
//! gives a web role a fresh instance per request whatever it says). The
//! TOML keeps one flat table per role; the split is made, and each
//! misplaced key refused by name, when it is resolved.
//!
//! `placement` (every kind) names the host labels a role requires in a
//! fabric; one host ignores it.

use super::checks::{check_health_path, check_name, check_setting_name};
use super::{MAX_INSTANCES, MAX_LABEL_LEN, MAX_PLACEMENT_LABELS};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use weft_sandbox::{CpuShare, EgressAllowlist, EngineConfig, RateLimits, SandboxLimits};

/// A role's kind, as the manifest's `kind` key names it (and the status
/// report's `kind`, serialized).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoleKind {
    /// Serves HTTP through `wasi:http/incoming-handler` (WASIp2) or
    /// `wasi:http/handler@0.3.0` (WASIp3).
    Web,
    /// Pulls work from queues; run through `wasi:cli/run`.
    Worker,
}

impl RoleKind {
    /// `web` or `worker`, as the manifest spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Worker => "worker",
        }
    }
}

/// One role, with paths resolved against the manifest's folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    /// What only this kind of role has.
    pub by_kind: RoleByKind,
    /// The component file.
    pub component: PathBuf,
    /// A shell command that builds the component, run in the manifest's folder.
    pub build: Option<String>,
    /// Queues the role may use.
    pub queues: BTreeSet<String>,
    /// Buckets the role may open.
    pub buckets: BTreeSet<String>,
    /// What bounds each sandbox.
    pub limits: SandboxLimits,
    /// The role's rate limits.
    pub rate_limits: RateLimits,
    /// The role's share of the host's CPU.
    pub cpu: CpuShare,
    /// Settings, read through `wasi:config/store`: the declared settings
    /// with their values (defaults, or the environment's).
    pub settings: BTreeMap<String, String>,
    /// Whether the role gets a private scratch folder.
    pub scratch: bool,
    /// The host labels the role requires in a fabric (`placement = { zone =
    /// "eu-1" }`), each key and value a label ([`check_label`]); one host
    /// ignores them.
    pub placement: BTreeMap<String, String>,
}

/// What only one kind of role has.
#[derive(Debug, Clone, PartialEq)]
pub enum RoleByKind {
    /// A web role: a fresh instance per request, behind an address.
    Web(WebRoleManifest),
    /// A worker role: a fixed number of instances.
    Worker(WorkerRoleManifest),
}

/// What only a web role has.
#[derive(Debug, Clone, PartialEq)]
pub struct WebRoleManifest {
    /// Where it listens (port 0: a free port the OS picks).
    pub listen: SocketAddr,
    /// Its health path, probed before a version takes traffic and while an
    /// upgrade waits for health; none: healthy once started.
    pub health: Option<String>,
    /// Origins it may send HTTP requests to; empty: none.
    pub egress: EgressAllowlist,
    /// How many hosts serve it in a fabric (its `instances`), 1 to
    /// [`MAX_INSTANCES`]; one host ignores it.
    pub hosts: u32,
}

/// What only a worker role has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerRoleManifest {
    /// Instances to run, 1 to [`MAX_INSTANCES`].
    pub instances: u32,
}

/// How many sandboxes of a role can be alive at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxCount {
    /// A web role: one per request in flight.
    PerRequest,
    /// A worker role: its instance count.
    Instances(u32),
}

impl SandboxCount {
    /// The engine's instance slots a role with these `limits` can hold at
    /// once: a web role twice its `max-in-flight` (during an upgrade two
    /// versions each take up to that many requests), a worker role one per
    /// instance. The host reserves this much for it, and `weft up` sizes
    /// its engine from it.
    pub fn slots(self, limits: &SandboxLimits) -> u32 {
        match self {
            Self::PerRequest => limits.max_in_flight.saturating_mul(2),
            Self::Instances(n) => n,
        }
    }
}

impl Role {
    /// Web or worker.
    pub fn kind(&self) -> RoleKind {
        match self.by_kind {
            RoleByKind::Web(_) => RoleKind::Web,
            RoleByKind::Worker(_) => RoleKind::Worker,
        }
    }

    /// What makes two versions of the role differ, beyond its component:
    /// every field but its counts (a worker's instances, a web role's
    /// hosts), its placement and where the component came from (its file
    /// and build command): none of those changes what an instance runs.
    pub fn definition(&self) -> Role {
        let mut role = Role {
            component: PathBuf::new(),
            build: None,
            placement: BTreeMap::new(),
            ..self.clone()
        };
        match &mut role.by_kind {
            RoleByKind::Web(web) => web.hosts = 0,
            RoleByKind::Worker(worker) => worker.instances = 0,
        }
        role
    }

    /// What only a web role has; `None` for a worker.
    pub fn web(&self) -> Option<&WebRoleManifest> {
        match &self.by_kind {
            RoleByKind::Web(web) => Some(web),
            RoleByKind::Worker(_) => None,
        }
    }

    /// Where a web role listens; `None` for a worker.
    pub fn listen(&self) -> Option<SocketAddr> {
        self.web().map(|web| web.listen)
    }

    /// A web role's health path, if it has one.
    pub fn health(&self) -> Option<&str> {
        self.web().and_then(|web| web.health.as_deref())
    }

    /// The origins the role may reach (a worker: none).
    pub fn egress(&self) -> EgressAllowlist {
        self.web().map(|web| web.egress.clone()).unwrap_or_default()
    }

    /// Worker instances to run; 1 for a web role, which gets a fresh
    /// instance per request instead.
    pub fn instances(&self) -> u32 {
        match self.by_kind {
            RoleByKind::Web(_) => 1,
            RoleByKind::Worker(worker) => worker.instances,
        }
    }

    /// Its `instances` as a fabric counts them: a web role's hosts, a
    /// worker role's instances (spread over the fabric's hosts).
    pub fn fabric_instances(&self) -> u32 {
        match &self.by_kind {
            RoleByKind::Web(web) => web.hosts,
            RoleByKind::Worker(worker) => worker.instances,
        }
    }

    /// How many of its sandboxes can be alive at once.
    pub fn sandboxes(&self) -> SandboxCount {
        match self.by_kind {
            RoleByKind::Web(_) => SandboxCount::PerRequest,
            RoleByKind::Worker(worker) => SandboxCount::Instances(worker.instances),
        }
    }

    /// The engine's instance slots it can hold at once ([`SandboxCount::slots`]).
    pub fn slots(&self) -> u32 {
        self.sandboxes().slots(&self.limits)
    }
}

/// A role's table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawRole {
    kind: RoleKind,
    component: PathBuf,
    build: Option<String>,
    instances: Option<u32>,
    listen: Option<String>,
    #[serde(default)]
    queues: Vec<String>,
    #[serde(default)]
    buckets: Vec<String>,
    #[serde(default)]
    limits: SandboxLimits,
    #[serde(default)]
    rate_limits: RateLimits,
    #[serde(default)]
    cpu: CpuShare,
    #[serde(default)]
    egress: Vec<String>,
    #[serde(default)]
    settings: BTreeMap<String, String>,
    #[serde(default)]
    scratch: bool,
    health: Option<String>,
    #[serde(default)]
    placement: BTreeMap<String, String>,
}

impl RawRole {
    /// Checks the table and resolves its paths against `base`; an error
    /// names the field and says what is wrong.
    pub(super) fn resolve(
        self,
        base: &Path,
        engine: &EngineConfig,
    ) -> Result<Role, (&'static str, String)> {
        // Checked in the order the fields were always checked, so a table
        // with two faults names the same one as before.
        // A worker's instances, or a web role's hosts in a fabric.
        let instances = match self.instances {
            None => 1,
            Some(n) if (1..=MAX_INSTANCES).contains(&n) => n,
            Some(n) => {
                return Err((
                    "instances",
                    format!("must be 1 to {MAX_INSTANCES}, not {n}"),
                ));
            }
        };
        let listen = match (self.kind, self.listen) {
            (RoleKind::Web, Some(addr)) => Some(addr.parse::<SocketAddr>().map_err(|_| {
                (
                    "listen",
                    format!("'{addr}' is not an address like 127.0.0.1:8080"),
                )
            })?),
            (RoleKind::Web, None) => {
                return Err((
                    "listen",
                    "required for web roles (say \"127.0.0.1:8080\")".into(),
                ));
            }
            (RoleKind::Worker, Some(_)) => {
                return Err(("listen", "worker roles have no outside contact".into()));
            }
            (RoleKind::Worker, None) => None,
        };
        if self.component.as_os_str().is_empty() {
            return Err(("component", "must name a .wasm file".into()));
        }
        if self
            .build
            .as_ref()
            .is_some_and(|build| build.trim().is_empty())
        {
            return Err(("build", "is empty; remove it or give a command".into()));
        }
        let queues = names(self.queues).map_err(|why| ("queues", why))?;
        let buckets = names(self.buckets).map_err(|why| ("buckets", why))?;
        self.limits
            .validate(engine)
            .map_err(|why| ("limits", why.to_string()))?;
        self.cpu
            .validate()
            .map_err(|why| ("cpu", why.to_string()))?;
        let default = SandboxLimits::default();
        if self.kind == RoleKind::Worker
            && (self.limits.requests_per_instance != default.requests_per_instance
                || self.limits.concurrent_requests_per_instance
                    != default.concurrent_requests_per_instance
                || self.limits.instance_idle_timeout_ms != default.instance_idle_timeout_ms)
        {
            return Err((
                "limits",
                "requests-per-instance, concurrent-requests-per-instance and \
                 instance-idle-timeout-ms apply to web roles; a worker instance runs until it \
                 returns"
                    .into(),
            ));
        }
        if self.kind == RoleKind::Worker && !self.egress.is_empty() {
            return Err((
                "egress",
                "worker roles have no outside contact; give egress to a web role".into(),
            ));
        }
        let egress =
            EgressAllowlist::parse(&self.egress).map_err(|why| ("egress", why.to_string()))?;
        let health = match (self.kind, self.health) {
            (RoleKind::Worker, Some(_)) => {
                return Err((
                    "health",
                    "applies to web roles; a worker is healthy while it runs".into(),
                ));
            }
            (RoleKind::Web, Some(path)) => Some(check_health_path(path)?),
            (_, None) => None,
        };
        for key in self.settings.keys() {
            check_setting_name(key).map_err(|why| ("settings", format!("'{key}' {why}")))?;
        }
        check_placement(&self.placement).map_err(|why| ("placement", why))?;
        // An address is what a web role has, and only a web role (both
        // checked above).
        let by_kind = match listen {
            Some(listen) => RoleByKind::Web(WebRoleManifest {
                listen,
                health,
                egress,
                hosts: instances,
            }),
            None => RoleByKind::Worker(WorkerRoleManifest { instances }),
        };
        Ok(Role {
            by_kind,
            component: base.join(self.component),
            build: self.build,
            queues,
            buckets,
            limits: self.limits,
            rate_limits: self.rate_limits,
            cpu: self.cpu,
            settings: self.settings,
            scratch: self.scratch,
            placement: self.placement,
        })
    }
}

/// A list of queue or bucket names: each valid, none twice.
fn names(list: Vec<String>) -> Result<BTreeSet<String>, String> {
    let mut set = BTreeSet::new();
    for name in list {
        check_name(&name).map_err(|why| format!("'{name}' {why}"))?;
        if !set.insert(name.clone()) {
            return Err(format!("'{name}' is listed twice"));
        }
    }
    Ok(set)
}

/// A role's `placement`: at most [`MAX_PLACEMENT_LABELS`] entries, each key
/// and value a label.
fn check_placement(placement: &BTreeMap<String, String>) -> Result<(), String> {
    if placement.len() > MAX_PLACEMENT_LABELS {
        return Err(format!(
            "may name at most {MAX_PLACEMENT_LABELS} labels, not {}",
            placement.len()
        ));
    }
    for (key, value) in placement {
        check_label(key).map_err(|why| format!("key '{key}' {why}"))?;
        check_label(value).map_err(|why| format!("{key} = '{value}': the value {why}"))?;
    }
    Ok(())
}

/// Checks a host label's key or value: 1 to [`MAX_LABEL_LEN`] characters of `a-z`, `0-9`,
/// `.`, `_` and `-`, starting with a letter or digit.
pub fn check_label(text: &str) -> Result<(), String> {
    let mut bytes = text.bytes();
    let first_fits = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_fits = bytes
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if text.len() > MAX_LABEL_LEN || !first_fits || !rest_fits {
        return Err(format!(
            "must be 1 to {MAX_LABEL_LEN} of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
        ));
    }
    Ok(())
}

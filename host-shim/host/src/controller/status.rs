//! What the admin API reports, as JSON: services, their roles, each role's
//! instances with their lifecycle state, usage and queue depths, and the
//! operation (upgrade, settings change, scale) under way or last finished.
//!
//! The same types are the server's answers and the CLI's reading of them.
//! Kinds and states are enums from the code that sets them to the JSON that
//! carries them, each serialized as the name `host-shim/host/src/admin/openapi.json`
//! documents.

use super::instance::InstanceState;
use crate::manifest::RoleKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

/// Every service on the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostStatus {
    /// The services, by name.
    pub services: Vec<ServiceStatus>,
    /// Services the host has a record of that do not run (yet): being
    /// started, or whose redeploy failed. Listed with every service only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingService>,
}

/// A recorded service that does not run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingService {
    /// The service's name.
    pub name: String,
    /// Why it does not run.
    pub state: PendingState,
    /// Why its redeploy failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a recorded service does not run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PendingState {
    /// It is being deployed or restored (building, or waiting for its
    /// queue server).
    Starting,
    /// Its redeploy at the host's start failed; its record is kept, to be
    /// removed (`weft remove`) or redeployed at the next start.
    Failed,
}

/// One deployed service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The service's name.
    pub name: String,
    /// Counts deployments, upgrades and settings changes of the service.
    pub generation: u64,
    /// The environment overlay it was deployed with, if any.
    pub environment: Option<String>,
    /// Upgrade domains.
    pub upgrade_domains: u32,
    /// The operation under way, or the last one.
    pub operation: Option<OperationStatus>,
    /// Its roles, by name.
    pub roles: Vec<RoleStatus>,
    /// Why its embedded queue store cannot write now (a full disk, an I/O
    /// error); absent while writes succeed. Sends answer `unavailable`
    /// meanwhile, and the store recovers by itself once a write succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_failing: Option<String>,
}

/// The most steps an operation keeps.
pub const MAX_STEPS: usize = 200;

/// An operation that changes a running service step by step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OperationStatus {
    /// What it changes.
    pub kind: OperationKind,
    /// Where it is.
    pub state: OperationState,
    /// What it is doing, or how it ended, for people.
    pub step: String,
    /// Every step so far, oldest first (at most [`MAX_STEPS`]), so a
    /// client polling now and then misses none.
    #[serde(default)]
    pub steps: Vec<String>,
    /// The generation it moves to.
    pub generation: u64,
    /// Domains moved so far, of `domains`.
    pub domains_done: u32,
    /// Upgrade domains in this operation.
    pub domains: u32,
    /// Why it was rolled back.
    pub reason: Option<String>,
}

/// What an operation changes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OperationKind {
    /// `upgrade`: a new manifest, overlay or component, rolled out by
    /// upgrade domain.
    Upgrade,
    /// `settings`: new setting values for one role, rolled out likewise.
    Settings,
    /// `scale`: a worker role's instance count, done at once.
    Scale,
}

impl OperationKind {
    /// Its name in the JSON and in `weft status`.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Upgrade => "upgrade",
            OperationKind::Settings => "settings",
            OperationKind::Scale => "scale",
        }
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OperationState {
    /// `running`: its rollout is under way.
    Running,
    /// `done`: the new record is saved and in force.
    Done,
    /// `rolled-back`: a domain was not healthy in time (or the record could
    /// not be saved); the service runs the old record again (see `reason`).
    RolledBack,
    /// `failed`: its rollout stopped unexpectedly (a bug, reported in the
    /// host's log and `reason`).
    Failed,
}

impl OperationState {
    /// Its name in the JSON and in `weft status`.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::Running => "running",
            OperationState::Done => "done",
            OperationState::RolledBack => "rolled-back",
            OperationState::Failed => "failed",
        }
    }
}

impl fmt::Display for OperationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One role of a service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleStatus {
    /// The role's name.
    pub name: String,
    /// `web` or `worker`.
    pub kind: RoleKind,
    /// Where a web role listens.
    pub url: Option<String>,
    /// The SHA-256 of the component its current version runs.
    pub component: String,
    /// The generation of its current version.
    pub generation: u64,
    /// Worker instances declared (web: its upgrade domains).
    pub declared: u32,
    /// Instances ready now.
    pub ready: u32,
    /// Its settings' values.
    pub settings: BTreeMap<String, String>,
    /// A web role's health path.
    pub health: Option<String>,
    /// Its instances (a worker's instances; a web role's versions by
    /// upgrade domain, and versions still draining).
    pub instances: Vec<InstanceStatus>,
    /// What it has used of the host (every version of it on this host).
    pub usage: UsageStatus,
    /// The queues it may use, with their depths.
    pub queues: Vec<QueueStatus>,
}

/// One instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceStatus {
    /// `0`, `1`... for a worker; `d0`, `d1`... (the domain's share) or
    /// `draining-g3` for a web role.
    pub id: String,
    /// Its upgrade domain.
    pub domain: Option<u32>,
    /// The generation of the version it runs.
    pub generation: u64,
    /// Where it is in its lifecycle.
    pub state: InstanceState,
    /// Times it was restarted after returning or failing.
    pub restarts: u64,
    /// Whether it failed repeatedly within the crash-loop window.
    pub crash_looping: bool,
    /// Why it last failed.
    pub last_failure: Option<String>,
    /// A web version's requests in flight.
    pub in_flight: Option<u64>,
}

/// What a role has used.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageStatus {
    /// Fuel burnt.
    pub fuel_used: u64,
    /// Linear memory held now, in bytes.
    pub memory_bytes: u64,
    /// The most held at once, in bytes.
    pub memory_high_water: u64,
    /// Requests (web) or received batches (worker).
    pub invocations: u64,
    /// Failures of every kind.
    pub failures: u64,
    /// Its share of one CPU over the scheduler's last window, in parts
    /// per million (every version of it added up; 1,000,000 is one whole
    /// CPU). Absent from the JSON of hosts that did not report it.
    #[serde(default)]
    pub cpu_share_ppm: u32,
}

/// A queue a role may use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueStatus {
    /// Its name.
    pub name: String,
    /// Messages it holds (visible, delayed or leased), if the backend answered.
    pub length: Option<u64>,
    /// Messages in its poison queue.
    pub poison: Option<u64>,
}

impl RoleStatus {
    /// Where a web role listens, read from its `url` (`http://ADDR`, as
    /// [`crate::http_server::WebServer`] writes it); `None` for a worker.
    pub fn listen(&self) -> Option<SocketAddr> {
        self.url.as_deref()?.strip_prefix("http://")?.parse().ok()
    }
}

impl OperationStatus {
    /// Moves on to `step`, remembering it.
    pub fn record(&mut self, step: String) {
        if self.steps.len() < MAX_STEPS {
            self.steps.push(step.clone());
        }
        self.step = step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_web_role_s_listen_address_is_read_from_its_url() {
        let role = |url: Option<&str>| RoleStatus {
            name: "web".into(),
            kind: RoleKind::Web,
            url: url.map(str::to_owned),
            component: String::new(),
            generation: 1,
            declared: 1,
            ready: 1,
            settings: BTreeMap::new(),
            health: None,
            instances: Vec::new(),
            usage: UsageStatus::default(),
            queues: Vec::new(),
        };
        let v4: SocketAddr = "10.0.0.7:8080".parse().unwrap();
        assert_eq!(role(Some("http://10.0.0.7:8080")).listen(), Some(v4));
        let v6: SocketAddr = "[::1]:9000".parse().unwrap();
        assert_eq!(role(Some("http://[::1]:9000")).listen(), Some(v6));
        assert_eq!(role(None).listen(), None);
        assert_eq!(role(Some("https://10.0.0.7:8080")).listen(), None);
    }

    /// The JSON the admin API answered when kinds and states were strings.
    #[test]
    fn an_operation_serializes_as_it_always_has() {
        let operation = OperationStatus {
            kind: OperationKind::Upgrade,
            state: OperationState::RolledBack,
            step: "rolled back to generation 1".into(),
            steps: vec!["starting".into()],
            generation: 2,
            domains_done: 1,
            domains: 2,
            reason: Some("domain 1 of 2: unhealthy".into()),
        };
        let json = serde_json::to_string(&operation).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"upgrade","state":"rolled-back","step":"rolled back to generation 1","steps":["starting"],"generation":2,"domains_done":1,"domains":2,"reason":"domain 1 of 2: unhealthy"}"#
        );
        let back: OperationStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(back, operation);
        for kind in [
            OperationKind::Upgrade,
            OperationKind::Settings,
            OperationKind::Scale,
        ] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
        }
        for kind in [RoleKind::Web, RoleKind::Worker] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
        for state in [
            OperationState::Running,
            OperationState::Done,
            OperationState::RolledBack,
            OperationState::Failed,
        ] {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{state}\""));
        }
    }
}

//! The beat loop: every second, and soon after a local change, this host
//! writes `beat.<id>` with what it runs of each fabric service (the
//! revision applied, each role's instances, readiness and address), the
//! sandbox slots its services reserved, and the services it refused. The
//! leader judges liveness by the key's revision advancing; people and the
//! CLI read the rest.
//!
//! A host silent for nearly its down-after (stopped, or cut off from the
//! fabric) may have been declared down and its instances placed
//! elsewhere: before it beats again (and looks alive to the leader), the
//! apply loop must finish a round that read the fabric as it is now, so
//! it has stopped what it no longer owns.

use super::memory::Memory;
use crate::model::{Beat, RolePart, ServicePart};
use crate::names::beat_key;
use crate::store::{Bucket, FabricStore};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use weft_host::Controller;
use weft_host::clock::now_ms;
use weft_host::controller::slots::slots_needed;
use weft_host::controller::status::{OperationState, OperationStatus, RoleStatus, ServiceStatus};
use weft_host::manifest::RoleKind;

/// Between beats.
pub(super) const BEAT_EVERY: Duration = Duration::from_secs(1);
/// After a nudge, so that a burst of changes makes one beat.
const NUDGE_DELAY: Duration = Duration::from_millis(100);
/// How long a host back from a long silence waits for the apply loop to
/// reconcile before it beats anyway (a beat withheld longer would get a
/// reachable host declared down for nothing).
const RECONCILE_WITHIN: Duration = Duration::from_secs(10);
/// How much earlier than its down-after a host counts its silence as one
/// the leader may have acted on.
const SILENCE_MARGIN: Duration = Duration::from_secs(1);

/// Whether a host whose last beat was acknowledged at `last_ack` (none:
/// none yet) must reconcile before it beats at `now`: it was silent for
/// `down_after` less [`SILENCE_MARGIN`] or more (at least a beat and a
/// half, so that a beat a little late is no silence).
pub(super) fn must_reconcile_first(
    last_ack: Option<Instant>,
    now: Instant,
    down_after: Duration,
) -> bool {
    let silence = down_after
        .saturating_sub(SILENCE_MARGIN)
        .max(BEAT_EVERY + BEAT_EVERY / 2);
    last_ack.is_some_and(|acked| now.saturating_duration_since(acked) >= silence)
}

/// Beats until `shutdown`; after a silence of nearly `down_after`, only
/// once the apply loop has reconciled.
pub(super) async fn run(
    store: FabricStore,
    controller: Arc<Controller>,
    host_id: String,
    boot: String,
    memory: Arc<Memory>,
    down_after: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let key = beat_key(&host_id);
    let mut seq = 0u64;
    let mut failing = false;
    let mut last_ack: Option<Instant> = None;
    // Whether this silence was logged (the wait is repeated at every
    // attempt while the fabric stays unreachable, the line is not).
    let mut announced = false;
    while !*shutdown.borrow() {
        if must_reconcile_first(last_ack, Instant::now(), down_after) {
            if !announced {
                announced = true;
                let silent = last_ack.map_or(0, |acked| acked.elapsed().as_secs());
                tracing::info!(
                    "back after {silent} s without the fabric: reconciling before beating"
                );
            }
            tokio::select! {
                fresh = memory.fresh_round(RECONCILE_WITHIN) => if !fresh {
                    tracing::warn!(within_s = RECONCILE_WITHIN.as_secs(),
                        "the agent did not reconcile with the fabric in time; beating anyway");
                },
                _ = shutdown.changed() => break,
            }
        }
        seq = seq.saturating_add(1);
        let beat = beat(&controller, &boot, seq, &memory).await;
        match store.put(Bucket::Beats, &key, &beat).await {
            Ok(_) => {
                last_ack = Some(Instant::now());
                announced = false;
                if failing {
                    failing = false;
                    tracing::info!("heartbeats reach the fabric again");
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot write this host's heartbeat; retrying every second");
            }
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(BEAT_EVERY) => {}
            () = memory.nudged() => tokio::time::sleep(NUDGE_DELAY).await,
            _ = shutdown.changed() => {}
        }
    }
}

/// This host's beat number `seq` now.
async fn beat(controller: &Controller, boot: &str, seq: u64, memory: &Memory) -> Beat {
    let statuses = match controller.status(None).await {
        Ok(status) => status.services,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the services' status for the heartbeat");
            Vec::new()
        }
    };
    let mut slots_used = 0u32;
    for name in controller.service_names() {
        if let Some(Ok(manifest)) = controller.record(&name).map(|record| record.manifest()) {
            slots_used = slots_used.saturating_add(slots_needed(&manifest, |_| true));
        }
    }
    let mut services = BTreeMap::new();
    for status in statuses {
        // Services deployed on this host alone (through its admin API) are
        // not the fabric's to report.
        let is_fabrics = controller
            .record(&status.name)
            .is_some_and(|record| record.local.is_some());
        if is_fabrics {
            let applied = memory.applied(&status.name).unwrap_or(0);
            services.insert(status.name.clone(), service_part(&status, applied));
        }
    }
    Beat {
        boot: boot.to_owned(),
        seq,
        sent_ms: now_ms(),
        slots_used,
        services,
        refused: memory.refused(),
        retrying: memory.retrying(),
        apply_rounds: memory.apply_rounds(),
    }
}

/// What a beat says of one service, which runs `desired_revision` here.
pub(super) fn service_part(status: &ServiceStatus, desired_revision: u64) -> ServicePart {
    ServicePart {
        desired_revision,
        generation: status.generation,
        operation: status.operation.as_ref().and_then(operation_under_way),
        roles: status
            .roles
            .iter()
            .map(|role| (role.name.clone(), role_part(role)))
            .collect(),
    }
}

/// A local operation, if under way: its kind and step, for people and the
/// leader (`upgrade: domain 2 of 2: waiting for health`).
fn operation_under_way(operation: &OperationStatus) -> Option<String> {
    (operation.state == OperationState::Running)
        .then(|| format!("{}: {}", operation.kind, operation.step))
}

/// What a beat says of one role. A web role runs once on a host: its
/// status counts upgrade domains, the fabric counts hosts, so it is 1
/// declared, and ready while any version serves.
fn role_part(role: &RoleStatus) -> RolePart {
    let (declared, ready) = match role.kind {
        RoleKind::Web => (1, u32::from(role.ready > 0)),
        RoleKind::Worker => (role.declared, role.ready),
    };
    RolePart {
        declared,
        ready,
        listen: role.url.as_deref().and_then(listen_address),
        health: role.health.clone(),
    }
}

/// The address in a web role's URL (`http://127.0.0.2:8080`).
fn listen_address(url: &str) -> Option<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.trim_end_matches('/').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_host::controller::status::UsageStatus;

    fn role(
        name: &str,
        kind: RoleKind,
        url: Option<&str>,
        declared: u32,
        ready: u32,
    ) -> RoleStatus {
        RoleStatus {
            name: name.into(),
            kind,
            url: url.map(Into::into),
            component: "sha256:00".into(),
            generation: 2,
            declared,
            ready,
            settings: BTreeMap::new(),
            health: url.map(|_| "/healthz".into()),
            instances: Vec::new(),
            usage: UsageStatus::default(),
            queues: Vec::new(),
        }
    }

    #[test]
    fn a_host_silent_for_nearly_its_down_after_reconciles_before_beating() {
        let start = Instant::now();
        let ten = Duration::from_secs(10);
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert!(!must_reconcile_first(None, at(60_000), ten), "a first beat");
        assert!(
            !must_reconcile_first(Some(start), at(1_100), ten),
            "a beat on time"
        );
        assert!(!must_reconcile_first(Some(start), at(8_999), ten));
        assert!(
            must_reconcile_first(Some(start), at(9_000), ten),
            "down-after less 1 s"
        );
        assert!(must_reconcile_first(Some(start), at(300_000), ten));
        // An acknowledgement later than now (a clock read before it) is no silence.
        assert!(!must_reconcile_first(Some(at(5_000)), start, ten));
        // The shortest down-after still lets a beat be a little late.
        let two = Duration::from_secs(2);
        assert!(!must_reconcile_first(Some(start), at(1_400), two));
        assert!(must_reconcile_first(Some(start), at(1_500), two));
    }

    #[test]
    fn a_service_s_part_reports_web_roles_once_with_their_address() {
        let status = ServiceStatus {
            name: "shop".into(),
            generation: 3,
            environment: None,
            upgrade_domains: 2,
            operation: None,
            roles: vec![
                role("web", RoleKind::Web, Some("http://10.0.0.7:8080"), 2, 2),
                role("v6", RoleKind::Web, Some("http://[::1]:9000"), 2, 0),
                role("worker", RoleKind::Worker, None, 4, 3),
            ],
            store_failing: None,
        };
        let part = service_part(&status, 11);
        assert_eq!(part.desired_revision, 11);
        assert_eq!(part.generation, 3);
        let web = &part.roles["web"];
        assert_eq!((web.declared, web.ready), (1, 1));
        assert_eq!(web.listen, Some("10.0.0.7:8080".parse().unwrap()));
        assert_eq!(web.health.as_deref(), Some("/healthz"));
        let v6 = &part.roles["v6"];
        assert_eq!((v6.declared, v6.ready), (1, 0));
        assert_eq!(v6.listen, Some("[::1]:9000".parse().unwrap()));
        let worker = &part.roles["worker"];
        assert_eq!((worker.declared, worker.ready, worker.listen), (4, 3, None));
        assert_eq!(part.operation, None);
    }

    #[test]
    fn a_service_s_part_names_the_local_operation_under_way_only() {
        let mut operation = OperationStatus {
            kind: weft_host::controller::status::OperationKind::Upgrade,
            state: OperationState::Running,
            step: "domain 2 of 2: waiting for health".into(),
            steps: Vec::new(),
            generation: 4,
            domains_done: 1,
            domains: 2,
            reason: None,
        };
        let mut status = ServiceStatus {
            name: "shop".into(),
            generation: 3,
            environment: None,
            upgrade_domains: 2,
            operation: Some(operation.clone()),
            roles: Vec::new(),
            store_failing: None,
        };
        assert_eq!(
            service_part(&status, 1).operation.as_deref(),
            Some("upgrade: domain 2 of 2: waiting for health")
        );
        operation.state = OperationState::Done;
        status.operation = Some(operation);
        assert_eq!(service_part(&status, 1).operation, None);
    }
}

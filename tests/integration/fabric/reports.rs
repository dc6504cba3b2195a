//! Readers of what the fabric and its members report, as the types the
//! binary writes them from: `weft fabric hosts --json` ([`FabricHosts`]),
//! `weft status --fabric --json` ([`FabricStatus`]) and a member's own
//! `GET /v1/services` ([`HostStatus`]).

use super::harness::{Member, Output};
use crate::hosting::TOKEN;
use std::collections::BTreeMap;
use std::time::Duration;
use weft_fabric::model::HostState;
use weft_fabric::ops::hosts::FabricHosts;
use weft_fabric::ops::status::{FabricStatus, ServiceReport};
use weft_host::controller::instance::InstanceState;
use weft_host::controller::status::HostStatus;

/// The JSON a successful `weft ... --json` printed, as `T`.
pub fn parse<T: serde::de::DeserializeOwned>(out: &Output) -> T {
    assert!(out.ok, "{out:?}");
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not the JSON expected: {e}\n{}", out.stdout))
}

/// The id of the member that leads, if one does.
pub fn leader_id(hosts: &FabricHosts) -> Option<String> {
    hosts.leader.as_ref().map(|lease| lease.host.clone())
}

/// The ids of the ready members.
pub fn ready(hosts: &FabricHosts) -> Vec<&str> {
    hosts
        .hosts
        .iter()
        .filter(|host| host.state == HostState::Ready)
        .map(|host| host.id.as_str())
        .collect()
}

/// The service `name` in `status`.
pub fn service<'a>(status: &'a FabricStatus, name: &str) -> Option<&'a ServiceReport> {
    status.services.iter().find(|service| service.name == name)
}

/// Host id → ready instances of `service`/`role` on the hosts the leader
/// placed it on, counting only hosts that run the service's latest desired
/// state.
pub fn ready_by_host(
    status: &FabricStatus,
    service_name: &str,
    role: &str,
) -> BTreeMap<String, u32> {
    let Some(service) = service(status, service_name) else {
        return BTreeMap::new();
    };
    let Some(role) = service.roles.iter().find(|r| r.name == role) else {
        return BTreeMap::new();
    };
    role.hosts
        .iter()
        .filter(|(_, part)| part.revision == Some(service.desired_revision))
        .map(|(id, part)| (id.clone(), part.ready.min(part.assigned)))
        .filter(|(_, ready)| *ready > 0)
        .collect()
}

/// What `member` runs, by its own admin API (`GET /v1/services`); `None`
/// if it does not answer within `limit` (a stopped process).
pub async fn services_of(member: &Member, limit: Duration) -> Option<HostStatus> {
    let call = member.host.api_as(Some(TOKEN), "GET", "/v1/services", "");
    let reply = tokio::time::timeout(limit, call).await.ok()?.ok()?;
    assert_eq!(reply.status, 200, "{reply:?}");
    Some(serde_json::from_str(&reply.body).unwrap())
}

/// The instances of `service`/`role` in `host` that are alive: starting,
/// ready or draining.
pub fn alive_instances(host: &HostStatus, service: &str, role: &str) -> usize {
    host.services
        .iter()
        .filter(|s| s.name == service)
        .flat_map(|s| &s.roles)
        .filter(|r| r.name == role)
        .flat_map(|r| &r.instances)
        .filter(|i| {
            matches!(
                i.state,
                InstanceState::Starting | InstanceState::Ready | InstanceState::Draining
            )
        })
        .count()
}

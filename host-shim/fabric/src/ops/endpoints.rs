//! `weft endpoints SERVICE/ROLE`: where a web role is served and ready now,
//! for a load balancer in front of the fabric, and the same as an HAProxy
//! backend.

use super::snapshot::Snapshot;
use super::status::not_deployed;
use crate::error::{FabricError, one_line};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// A web role's addresses across the fabric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Where the role listens on each registered host assigned it whose
    /// beat says it is ready (the host's advertised IP, the beat's port),
    /// sorted.
    pub addrs: Vec<SocketAddr>,
    /// The role's health path, if it has one.
    pub health: Option<String>,
}

/// The ready endpoints of web role `role` of `service` in `snapshot`.
pub fn web_endpoints(
    snapshot: &Snapshot,
    service: &str,
    role: &str,
) -> Result<Endpoints, FabricError> {
    let signed = snapshot
        .services
        .get(service)
        .ok_or_else(|| not_deployed(service))?;
    let desired = signed.value.desired_unverified(service)?;
    let manifest = desired
        .record
        .manifest()
        .map_err(|e| FabricError::Refused(one_line(&e.to_string())))?;
    let spec = manifest
        .roles
        .get(role)
        .ok_or_else(|| FabricError::NotFound(format!("service {service} has no role {role}")))?;
    let web = spec.web().ok_or_else(|| {
        FabricError::Refused(format!(
            "{service}/{role} is a worker role: only a web role has endpoints"
        ))
    })?;
    let hosts: BTreeSet<&String> = snapshot
        .assignments
        .get(service)
        .and_then(|assignment| assignment.roles.get(role))
        .map(|placement| placement.values().collect())
        .unwrap_or_default();
    let addrs: BTreeSet<SocketAddr> = hosts
        .into_iter()
        .filter_map(|host| {
            let part = snapshot
                .beats
                .get(host)?
                .services
                .get(service)?
                .roles
                .get(role)?;
            if part.ready == 0 {
                return None;
            }
            // The IP is the host record's `advertise`, never the beat's: a
            // forged beat cannot steer a load balancer elsewhere.
            let advertise = snapshot.hosts.get(host)?.value.advertise;
            part.listen
                .map(|listen| SocketAddr::new(advertise, listen.port()))
        })
        .collect();
    Ok(Endpoints {
        addrs: addrs.into_iter().collect(),
        health: web.health.clone(),
    })
}

/// An HAProxy 2.6 backend named `name` over `addrs`: round robin, each
/// server checked every 500 ms (down after 2 failures, up after 2
/// successes), by a GET of `health` answered 200 when the role has a
/// health path, else by a TCP connect.
pub fn haproxy_backend(name: &str, addrs: &[SocketAddr], health: Option<&str>) -> String {
    let mut text = format!("backend {name}\n    balance roundrobin\n");
    if let Some(path) = health {
        text.push_str("    option httpchk\n");
        let _ = writeln!(text, "    http-check send meth GET uri {path}");
        text.push_str("    http-check expect status 200\n");
    }
    text.push_str("    default-server inter 500ms fall 2 rise 2\n");
    for (index, addr) in addrs.iter().enumerate() {
        let _ = writeln!(text, "    server h{index} {addr} check");
    }
    text
}

/// Checks an HAProxy backend name: 1 to 63 characters of letters, digits,
/// `-`, `_`, `.` and `:` (what HAProxy accepts in a proxy's name).
pub fn check_backend_name(name: &str) -> Result<(), FabricError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if name.is_empty() || name.len() > 63 || !name.chars().all(allowed) {
        return Err(FabricError::Refused(format!(
            "backend name '{}' must be 1 to 63 letters, digits, '-', '_', '.' or ':'",
            name.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

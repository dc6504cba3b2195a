//! What the controller's unit tests share: a role spec and a version record
//! for the test guests, on an in-memory broker.

use super::store::Digest;
use super::version::VersionInfo;
use std::collections::BTreeMap;
use std::sync::Arc;
use weft_broker::MemoryBroker;
use weft_sandbox::{CpuShare, Grants, RateLimits, RoleSpec, SandboxLimits};

/// `test/ROLE` with default limits, granted `queues` and `buckets` on a
/// fresh in-memory broker.
pub fn role_spec(role: &str, queues: &[&str], buckets: &[&str]) -> RoleSpec {
    let broker = Arc::new(MemoryBroker::default());
    RoleSpec {
        grants: Grants {
            service: "test".into(),
            role: role.into(),
            queues: queues.iter().map(|&q| q.to_owned()).collect(),
            buckets: buckets.iter().map(|&b| b.to_owned()).collect(),
            ..Grants::default()
        },
        limits: SandboxLimits::default(),
        rate_limits: RateLimits::default(),
        cpu: CpuShare::default(),
        queues: broker.clone(),
        kv: broker,
    }
}

/// Generation 1 of the component named `name`, with no settings.
pub fn first_version(name: &str) -> VersionInfo {
    VersionInfo {
        generation: 1,
        digest: Digest::of(name.as_bytes()),
        settings: BTreeMap::new(),
    }
}

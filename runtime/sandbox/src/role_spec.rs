//! What a role is given ([`RoleSpec`]): its grants, the limits of each of
//! its sandboxes, its rate limits, its share of the CPU, and the backends
//! behind its queues and buckets. The host builds one from the manifest and
//! hands it to [`crate::Runtime::web_role`] or
//! [`crate::Runtime::worker_role`]; the sandbox never reads the manifest.

use crate::cpu::CpuShare;
use crate::grants::Grants;
use crate::limits::SandboxLimits;
use crate::rate_limit::RateLimits;
use std::sync::Arc;
use weft_broker::{KvStore, QueueBroker};

/// What a role is given: its grants, limits, and the backends behind its
/// queues and buckets.
#[derive(Clone)]
pub struct RoleSpec {
    /// What the role may reach.
    pub grants: Grants,
    /// What bounds each of its sandboxes.
    pub limits: SandboxLimits,
    /// The role's rate limits, shared by all its sandboxes.
    pub rate_limits: RateLimits,
    /// The role's share of the host's CPU.
    pub cpu: CpuShare,
    /// The queues backend.
    pub queues: Arc<dyn QueueBroker>,
    /// The key-value backend.
    pub kv: Arc<dyn KvStore>,
}

//! One version of a role: the state all of its sandboxes share.
//!
//! Each time the host prepares a role's component ([`crate::Runtime::web_role`],
//! [`crate::Runtime::worker_role`]), for its first version or an upgrade, it
//! gets a [`RoleVersion`]. However many sandboxes that version runs (a web
//! request each, or its worker instances), they draw on one set of shared
//! limits: one [`RoleLimiter`] (its token buckets), one CPU account with the
//! scheduler ([`RoleCpu`]), one memory pool ([`RoleMemory`]) and one set of
//! usage counters ([`RoleUsage`]). Versions of a role running side by side
//! (an upgrade's old and new) share only its scratch quota
//! ([`ScratchQuota::of`]). The [`crate::Runtime`] keeps a weak reference to
//! every version, to report their usage.

use crate::cpu::{CpuScheduler, CpuShare, RoleCpu};
use crate::grants::Grants;
use crate::limits::SandboxLimits;
use crate::memory::RoleMemory;
use crate::rate_limit::RoleLimiter;
use crate::role_spec::RoleSpec;
use crate::scratch::ScratchQuota;
use crate::trace::{RoleTrace, SpanSink};
use crate::usage::{MemoryUsage, RoleUsage, UsageSnapshot};
use crate::vmbus::VmBusCtx;
use std::num::NonZeroU64;
use std::sync::Arc;

/// What all the sandboxes of one version of a role share.
pub(crate) struct RoleVersion {
    pub(crate) spec: RoleSpec,
    pub(crate) kind: &'static str,
    pub(crate) grants: Arc<Grants>,
    pub(crate) limiter: Arc<RoleLimiter>,
    pub(crate) cpu: Arc<RoleCpu>,
    pub(crate) memory: Arc<RoleMemory>,
    pub(crate) usage: Arc<RoleUsage>,
    /// The quota on its scratch folder, if it has one.
    pub(crate) scratch: Option<Arc<ScratchQuota>>,
    /// How often its guests yield, in fuel (the engine's setting).
    pub(crate) fuel_yield_interval: NonZeroU64,
    /// Its spans' tags and sink (off without one).
    pub(crate) trace: RoleTrace,
}

impl RoleVersion {
    /// A new sandbox's VMBus: the role's grants, backends and rate limits.
    pub(crate) fn vmbus(&self) -> VmBusCtx {
        VmBusCtx::new(
            self.grants.clone(),
            self.spec.queues.clone(),
            self.spec.kv.clone(),
            self.limiter.clone(),
        )
    }

    pub(crate) fn new(
        spec: RoleSpec,
        kind: &'static str,
        scheduler: &Arc<CpuScheduler>,
        fuel_yield_interval: NonZeroU64,
        spans: Option<&Arc<dyn SpanSink>>,
    ) -> Self {
        let usage = Arc::new(RoleUsage::default());
        Self {
            trace: RoleTrace::new(spans, &spec.grants.service, &spec.grants.role),
            kind,
            grants: Arc::new(spec.grants.clone()),
            limiter: Arc::new(RoleLimiter::new(&spec.rate_limits)),
            cpu: Arc::new(scheduler.register(spec.cpu, usage.clone())),
            memory: Arc::new(RoleMemory::new(&spec.limits)),
            usage,
            scratch: spec
                .grants
                .scratch_dir
                .as_ref()
                .map(|dir| ScratchQuota::of(dir, spec.limits.scratch_bytes())),
            fuel_yield_interval,
            spec,
        }
    }

    pub(crate) fn limits(&self) -> &SandboxLimits {
        &self.spec.limits
    }

    pub(crate) fn share(&self) -> CpuShare {
        self.spec.cpu
    }

    /// Everything measured of this version of the role now.
    pub(crate) fn snapshot(&self) -> UsageSnapshot {
        UsageSnapshot {
            service: self.grants.service.clone(),
            role: self.grants.role.clone(),
            kind: self.kind,
            weight: self.share().weight,
            counters: self.usage.counters(),
            calls: self.limiter.stats(),
            memory: MemoryUsage {
                instance_cap: self.limits().memory_bytes(),
                role_cap: self.limits().role_memory_bytes(),
                ..self.memory.usage()
            },
        }
    }
}

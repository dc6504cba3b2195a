//! What bounds one sandbox: memory, fuel, deadline, body size, concurrency,
//! stop grace, instance reuse and scratch space ([`SandboxLimits`]), as a
//! role's `limits` table in the service manifest gives them.
//!
//! These are per-sandbox settings, checked against the engine's own
//! ([`EngineConfig`]) when a role is prepared. Every field's default is safe
//! for a hostile guest that nobody configured.

use crate::engine_config::EngineConfig;
use serde::Deserialize;
use std::time::Duration;

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// A setting out of range: the message names the setting and its bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSetting(pub String);

/// What bounds one sandbox. Deserialized from a role's `limits` table in the
/// service manifest, so fields are kebab-case and unknown keys are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SandboxLimits {
    /// Linear memory cap per instance, in MiB. Default 128: ample for
    /// ordinary roles, small enough that hundreds fit on one machine. Growth
    /// past it is refused (`memory.grow` returns -1), not trapped.
    pub memory_mib: u64,
    /// Fuel (about one unit per wasm instruction) per HTTP request, or per
    /// received batch for a worker. Default 10 billion: seconds of CPU, far
    /// beyond a well-behaved request, and a backstop behind the deadline.
    pub fuel: u64,
    /// Wall-clock deadline per HTTP request (including streaming the response)
    /// or per received batch, in milliseconds, counting time blocked in host
    /// calls. Default 30,000; at most a day ([`Self::MAX_DEADLINE_MS`]).
    pub deadline_ms: u64,
    /// The largest HTTP request body a web role accepts, in KiB. Default
    /// 1,024 (1 MiB); larger bodies get 413 before the guest runs. At most
    /// 4 GiB.
    pub max_request_body_kib: u64,
    /// Web roles: requests running at once (each in its own sandbox).
    /// Default 256: enough to keep two cores busy through I/O waits, few
    /// enough that one role cannot take the host's whole instance pool.
    pub max_in_flight: u32,
    /// Web roles: requests that may wait for a free slot. Beyond that a
    /// request gets a fast 503 with `Retry-After`, never a hang. Default 256.
    pub max_queued: u32,
    /// Linear memory of all the role's instances together, in MiB (web
    /// requests in flight, or worker instances). `None` (the default): no
    /// cap beyond `memory-mib` per instance times the instance count. An
    /// instance whose growth would pass it sees `memory.grow` fail; one
    /// that cannot even start gets a 503 (web) or is restarted later (worker).
    pub role_memory_mib: Option<u64>,
    /// How long an instance asked to stop (an upgrade, a scale-down, a
    /// settings change, shutdown) may take to wind down, in milliseconds: a
    /// worker between batches to return from `run`, and any instance's
    /// `stop` hook to return. A worker in the middle of a batch first
    /// finishes it (bounded by `deadline-ms`). Default 10,000: time to
    /// flush and say goodbye, short enough that an upgrade keeps moving.
    /// At most an hour.
    pub stop_grace_ms: u64,
    /// Web roles: requests one instance may serve, one after another.
    /// Default 1: a fresh instance per request, so no request ever sees what
    /// an earlier one left in the guest's memory. Above 1, an instance that
    /// answered successfully is kept for a later request of the same role
    /// (never another role's), which saves instantiating it; whatever the
    /// guest kept in memory is then visible to that request. Fuel, the
    /// deadline and the memory refusal are reset per request; the memory cap
    /// holds over the instance's life. An instance whose request failed is
    /// dropped. At most [`Self::MAX_REQUESTS_PER_INSTANCE`].
    pub requests_per_instance: u32,
    /// WASIp3 web roles: requests one instance may serve at once, its
    /// handler's calls interleaved at the guest's awaits. Default 1: one
    /// request at a time. Above 1, an instance waiting on I/O (a timer, an
    /// outgoing request, a body) takes another request, up to this many and
    /// up to `requests-per-instance` in all (so at most that). They share
    /// the instance's memory, its memory cap and its fuel (a budget is
    /// added per request), and a trap ends them all. A p2 role, whose
    /// handler runs one call at a time, refuses a value above 1.
    pub concurrent_requests_per_instance: u32,
    /// WASIp3 web roles: how long an instance kept for later requests may
    /// wait with nothing in flight before it ends, in milliseconds. Default
    /// 60,000: a busy role keeps its instances, an idle one gives back
    /// their memory and pool slots within a minute. At most a day. A p2
    /// role, whose idle instances wait until reused or released, refuses
    /// any other value.
    pub instance_idle_timeout_ms: u64,
    /// What the role's scratch folder may hold, in MiB: file bytes plus
    /// 4 KiB per file, folder or link. Default 64: room for working files,
    /// small enough that a guest cannot fill the host's disk. A write past
    /// it fails with `insufficient-space` (`ENOSPC`), never a trap. Only
    /// applies to a role granted `scratch`; at most [`Self::MAX_SCRATCH_MIB`].
    pub scratch_mib: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            memory_mib: 128,
            fuel: 10_000_000_000,
            deadline_ms: 30_000,
            max_request_body_kib: 1024,
            max_in_flight: 256,
            max_queued: 256,
            role_memory_mib: None,
            stop_grace_ms: 10_000,
            requests_per_instance: 1,
            concurrent_requests_per_instance: 1,
            instance_idle_timeout_ms: 60_000,
            scratch_mib: 64,
        }
    }
}

impl SandboxLimits {
    /// The most requests one web instance may serve: past a million, an
    /// instance has lived long enough to be replaced.
    pub const MAX_REQUESTS_PER_INSTANCE: u32 = 1_000_000;

    /// The longest `deadline-ms`: a day. Bounded so that every instant it
    /// is added to stays representable (an overflow would panic the host).
    pub const MAX_DEADLINE_MS: u64 = 24 * 60 * 60 * 1000;

    /// The longest `stop-grace-ms`: an hour, past any service manager's
    /// patience at shutdown.
    pub const MAX_STOP_GRACE_MS: u64 = 60 * 60 * 1000;

    /// The largest `max-request-body-kib`: 4 GiB.
    pub const MAX_REQUEST_BODY_KIB: u64 = 4 * 1024 * 1024;

    /// The largest `role-memory-mib`: 4 TiB, far past any host's memory.
    pub const MAX_ROLE_MEMORY_MIB: u64 = 4 * 1024 * 1024;

    /// The most `max-in-flight` and `max-queued`: a million each.
    pub const MAX_CONCURRENCY: u32 = 1_000_000;

    /// The largest `scratch-mib`: 1 TiB.
    pub const MAX_SCRATCH_MIB: u64 = 1024 * 1024;

    /// The scratch folder's quota in bytes.
    pub fn scratch_bytes(&self) -> u64 {
        self.scratch_mib.saturating_mul(MIB)
    }

    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib.saturating_mul(MIB)
    }

    /// The deadline as a duration.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// How long a kept WASIp3 instance may wait idle, as a duration.
    pub fn instance_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.instance_idle_timeout_ms)
    }

    /// The stop grace period as a duration.
    pub fn stop_grace(&self) -> Duration {
        Duration::from_millis(self.stop_grace_ms)
    }

    /// The role-wide memory cap in bytes, if any.
    pub fn role_memory_bytes(&self) -> Option<u64> {
        self.role_memory_mib.map(|mib| mib.saturating_mul(MIB))
    }

    /// The request body limit in bytes.
    pub fn max_request_body_bytes(&self) -> u64 {
        self.max_request_body_kib.saturating_mul(1024)
    }

    /// Checks the limits make sense on their own and against the engine.
    pub fn validate(&self, engine: &EngineConfig) -> Result<(), InvalidSetting> {
        if self.memory_mib == 0 {
            return Err(InvalidSetting("memory-mib must be at least 1".into()));
        }
        if self.memory_bytes() > engine.max_memory_bytes {
            return Err(InvalidSetting(format!(
                "memory-mib {} is over the host's maximum of {} MiB",
                self.memory_mib,
                engine.max_memory_bytes / MIB
            )));
        }
        if self.fuel == 0 {
            return Err(InvalidSetting("fuel must be at least 1".into()));
        }
        let within = |field: &str, value: u64, max: u64, unit: &str| {
            if (1..=max).contains(&value) {
                Ok(())
            } else {
                Err(InvalidSetting(format!(
                    "{field} must be 1 to {max} ({unit}), not {value}"
                )))
            }
        };
        within(
            "deadline-ms",
            self.deadline_ms,
            Self::MAX_DEADLINE_MS,
            "a day",
        )?;
        within(
            "stop-grace-ms",
            self.stop_grace_ms,
            Self::MAX_STOP_GRACE_MS,
            "an hour",
        )?;
        within(
            "max-request-body-kib",
            self.max_request_body_kib,
            Self::MAX_REQUEST_BODY_KIB,
            "4 GiB",
        )?;
        let concurrency = u64::from(Self::MAX_CONCURRENCY);
        within(
            "max-in-flight",
            u64::from(self.max_in_flight),
            concurrency,
            "a million",
        )?;
        if self.max_queued > Self::MAX_CONCURRENCY {
            return Err(InvalidSetting(format!(
                "max-queued must be at most {}, not {}",
                Self::MAX_CONCURRENCY,
                self.max_queued
            )));
        }
        within(
            "scratch-mib",
            self.scratch_mib,
            Self::MAX_SCRATCH_MIB,
            "1 TiB",
        )?;
        if let Some(role_mib) = self.role_memory_mib {
            within(
                "role-memory-mib",
                role_mib,
                Self::MAX_ROLE_MEMORY_MIB,
                "4 TiB",
            )?;
        }
        if !(1..=Self::MAX_REQUESTS_PER_INSTANCE).contains(&self.requests_per_instance) {
            return Err(InvalidSetting(format!(
                "requests-per-instance must be 1 to {}, not {}",
                Self::MAX_REQUESTS_PER_INSTANCE,
                self.requests_per_instance
            )));
        }
        if !(1..=self.requests_per_instance).contains(&self.concurrent_requests_per_instance) {
            return Err(InvalidSetting(format!(
                "concurrent-requests-per-instance must be 1 to requests-per-instance ({}), not {}",
                self.requests_per_instance, self.concurrent_requests_per_instance
            )));
        }
        within(
            "instance-idle-timeout-ms",
            self.instance_idle_timeout_ms,
            Self::MAX_DEADLINE_MS,
            "a day",
        )?;
        if let Some(role_mib) = self.role_memory_mib
            && role_mib < self.memory_mib
        {
            return Err(InvalidSetting(format!(
                "role-memory-mib {role_mib} is below memory-mib {}: not one instance would fit",
                self.memory_mib
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every duration and size a sandbox takes, fed extreme values: either
    /// accepted, and then safe to add to an instant, or refused naming it.
    #[test]
    fn extreme_limits_are_refused_by_name_or_safe_to_use() {
        let engine = EngineConfig {
            max_memory_bytes: 4096 * MIB,
            ..EngineConfig::default()
        };
        let values = [0, 1, u64::from(u32::MAX), i64::MAX.unsigned_abs(), u64::MAX];
        type Set = fn(&mut SandboxLimits, u64);
        let fields: [(&str, Set); 8] = [
            ("deadline-ms", |l, v| l.deadline_ms = v),
            ("stop-grace-ms", |l, v| l.stop_grace_ms = v),
            ("max-request-body-kib", |l, v| l.max_request_body_kib = v),
            ("role-memory-mib", |l, v| l.role_memory_mib = Some(v)),
            ("max-in-flight", |l, v| {
                l.max_in_flight = u32::try_from(v).unwrap_or(u32::MAX);
            }),
            ("max-queued", |l, v| {
                l.max_queued = u32::try_from(v).unwrap_or(u32::MAX);
            }),
            ("concurrent-requests-per-instance", |l, v| {
                l.concurrent_requests_per_instance = u32::try_from(v).unwrap_or(u32::MAX);
            }),
            ("instance-idle-timeout-ms", |l, v| {
                l.instance_idle_timeout_ms = v;
            }),
        ];
        for (name, set) in fields {
            for value in values {
                let mut limits = SandboxLimits::default();
                set(&mut limits, value);
                match limits.validate(&engine) {
                    Ok(()) => {
                        let now = std::time::Instant::now();
                        let _ = now
                            + limits.deadline()
                            + limits.stop_grace()
                            + limits.instance_idle_timeout();
                        let _ = usize::try_from(limits.max_request_body_bytes()).unwrap();
                    }
                    Err(e) => assert!(e.to_string().contains(name), "{name}={value}: {e}"),
                }
            }
        }
        let mut limits = SandboxLimits {
            deadline_ms: u64::MAX,
            ..SandboxLimits::default()
        };
        assert!(limits.validate(&engine).is_err());
        limits.deadline_ms = SandboxLimits::MAX_DEADLINE_MS;
        assert!(limits.validate(&engine).is_ok());
    }
}

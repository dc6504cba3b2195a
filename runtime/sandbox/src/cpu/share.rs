//! A role's share of the host's CPU ([`CpuShare`]), as a role's `cpu`
//! table in the service manifest gives it: a weight and an optional hard
//! quota, which the scheduler ([`crate::cpu`]) enforces.

use crate::limits::InvalidSetting;
use serde::Deserialize;

/// How a role shares the host's CPU with other roles. Deserialized from a
/// role's `cpu` table in the service manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct CpuShare {
    /// The role's relative share when guests wait for CPU (1 to 10,000).
    /// Default 100, as cgroup v2's `cpu.weight`: a role of weight 200 gets
    /// twice the fuel of a role of weight 100 while both want more than the
    /// host has; an idle role's share goes to the others.
    pub weight: u32,
    /// A hard quota: fuel per second all the role's guests together may
    /// burn, like cgroup v2's `cpu.max`, whether or not the host is busy.
    /// A guest over it is parked until the quota refills, not killed.
    /// Default `None`: no quota.
    pub max_fuel_per_sec: Option<u64>,
}

impl Default for CpuShare {
    fn default() -> Self {
        Self {
            weight: 100,
            max_fuel_per_sec: None,
        }
    }
}

impl CpuShare {
    /// The largest weight a role may have.
    pub const MAX_WEIGHT: u32 = 10_000;

    /// Checks the weight and the quota are in range.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.weight == 0 || self.weight > Self::MAX_WEIGHT {
            return Err(InvalidSetting(format!(
                "weight must be 1 to {}, not {}",
                Self::MAX_WEIGHT,
                self.weight
            )));
        }
        if self.max_fuel_per_sec == Some(0) {
            return Err(InvalidSetting(
                "max-fuel-per-sec must be at least 1 (leave it out for no quota)".into(),
            ));
        }
        Ok(())
    }
}

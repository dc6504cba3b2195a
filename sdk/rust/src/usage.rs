//! What the host has measured of this role's use of the machine, read-only,
//! through `weft:vmbus/usage`: for roles that degrade gracefully, shedding
//! optional work when their CPU share is squeezed, their calls are being
//! rate limited, or their deadline is near.
//!
//! ```no_run
//! let usage = weft_sdk::usage::get()?;
//! if usage.deadline_left().is_some_and(|left| left.as_millis() < 50) {
//!     // Answer with what we have instead of computing more.
//! }
//! # Ok::<(), weft_sdk::Error>(())
//! ```

use std::time::Duration;

use crate::bindings::weft::vmbus::usage as wit;
use crate::error::Result;

/// The host's figures for this role and this instance, at one moment.
///
/// "Role" figures cover every instance of the role on this host since it
/// started; "instance" figures cover the calling sandbox.
#[derive(Debug, Clone)]
pub struct Usage {
    raw: wit::RoleUsage,
}

impl Usage {
    /// Fuel (about one unit per wasm instruction) the role has burnt.
    pub fn fuel_used(&self) -> u64 {
        self.raw.fuel_used
    }

    /// Fuel left in this instance's budget for the current request or batch.
    pub fn fuel_left(&self) -> u64 {
        self.raw.fuel_left
    }

    /// The role's share of all the fuel burnt on the host over the last
    /// second, from 0 to 1.
    pub fn cpu_share(&self) -> f64 {
        f64::from(self.raw.cpu_share_ppm) / 1e6
    }

    /// The role's CPU weight.
    pub fn weight(&self) -> u32 {
        self.raw.weight
    }

    /// How long the role's guests waited for a CPU while other roles ran.
    pub fn parked(&self) -> Duration {
        Duration::from_millis(self.raw.parked_ms)
    }

    /// How long the role's guests were held back by its CPU quota.
    pub fn throttled(&self) -> Duration {
        Duration::from_millis(self.raw.throttled_ms)
    }

    /// VMBus calls the role made that were admitted.
    pub fn calls(&self) -> u64 {
        self.raw.calls
    }

    /// VMBus calls the role made that were refused as rate limited.
    pub fn calls_rate_limited(&self) -> u64 {
        self.raw.calls_rate_limited
    }

    /// This instance's linear memory, in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.raw.memory_bytes
    }

    /// This instance's memory cap, in bytes.
    pub fn memory_cap_bytes(&self) -> u64 {
        self.raw.memory_cap_bytes
    }

    /// The linear memory of all the role's instances together, in bytes.
    pub fn role_memory_bytes(&self) -> u64 {
        self.raw.role_memory_bytes
    }

    /// The cap on all the role's instances together, if it has one.
    pub fn role_memory_cap_bytes(&self) -> Option<u64> {
        self.raw.role_memory_cap_bytes
    }

    /// Time left before this request's or batch's deadline, if one runs.
    pub fn deadline_left(&self) -> Option<Duration> {
        self.raw.deadline_left_ms.map(Duration::from_millis)
    }
}

/// The figures now. Fails only when the role's `usage` rate limit is spent.
pub fn get() -> Result<Usage> {
    Ok(Usage { raw: wit::get()? })
}

//! Linear memory caps: per instance, and per role across all its instances.
//!
//! Each store's [`MemoryLimiter`] (a wasmtime `ResourceLimiter`) keeps a
//! running total of the guest's linear memories, all of them together, and
//! draws every growth from the role's shared [`RoleMemory`] as well. Growth
//! past either cap is refused: the guest sees `memory.grow` return -1, it is
//! not trapped. The limiter remembers a refusal, to explain a later trap (a
//! Rust guest aborts with `unreachable` when an allocation fails). When the
//! store is dropped its memory goes back to the role.

use crate::limits::SandboxLimits;
use crate::usage::MemoryUsage;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::ResourceLimiter;

/// Table elements one instance may grow to: far above what compilers emit
/// for function tables, far below what would strain the host.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// A role's memory pool: what its instances hold together, and its cap.
#[derive(Debug)]
pub(crate) struct RoleMemory {
    cap: Option<u64>,
    used: AtomicU64,
    high_water: AtomicU64,
    instance_high_water: AtomicU64,
}

impl RoleMemory {
    pub(crate) fn new(limits: &SandboxLimits) -> Self {
        Self {
            cap: limits.role_memory_bytes(),
            used: AtomicU64::new(0),
            high_water: AtomicU64::new(0),
            instance_high_water: AtomicU64::new(0),
        }
    }

    /// Takes `bytes` more from the pool, if the cap allows.
    fn grow(&self, bytes: u64) -> bool {
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let total = used.checked_add(bytes)?;
                self.cap.is_none_or(|cap| total <= cap).then_some(total)
            });
        match taken {
            Ok(before) => {
                self.high_water
                    .fetch_max(before.saturating_add(bytes), Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    fn release(&self, bytes: u64) {
        // Never below zero, whatever the order of drops.
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// What the pool holds now and has held at most (the caps are filled in
    /// by the caller, which knows the limits).
    pub(crate) fn usage(&self) -> MemoryUsage {
        MemoryUsage {
            bytes: self.used.load(Ordering::Relaxed),
            high_water: self.high_water.load(Ordering::Relaxed),
            instance_high_water: self.instance_high_water.load(Ordering::Relaxed),
            instance_cap: 0,
            role_cap: self.cap,
        }
    }
}

/// Refuses memory growth that would take the guest's linear memories, all
/// of them together, past its cap or its role's.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    cap_bytes: usize,
    /// Bytes of linear memory the guest holds, over every memory it has.
    used_bytes: usize,
    /// Whether a growth was refused since the last [`Self::clear_refusal`].
    pub(crate) refused: bool,
    role: Arc<RoleMemory>,
}

impl MemoryLimiter {
    pub(crate) fn new(cap_bytes: usize, role: Arc<RoleMemory>) -> Self {
        Self {
            cap_bytes,
            used_bytes: 0,
            refused: false,
            role,
        }
    }

    /// Forgets a refusal the guest survived (a worker starting a new batch).
    pub(crate) fn clear_refusal(&mut self) {
        self.refused = false;
    }

    /// Bytes of linear memory the guest holds now.
    pub(crate) fn used_bytes(&self) -> usize {
        self.used_bytes
    }
}

fn as_u64(bytes: usize) -> u64 {
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // wasmtime asks the limiter before it checks the memory's declared
        // maximum, and tells no limiter when it then refuses: refuse such a
        // growth here, so it is never counted. (Past this point only the
        // OS can fail a growth; those bytes stay counted until the store
        // ends, which errs on the safe side.)
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let total = self
            .used_bytes
            .saturating_sub(current)
            .saturating_add(desired);
        let more = as_u64(desired.saturating_sub(current));
        if total > self.cap_bytes || !self.role.grow(more) {
            self.refused = true;
            return Ok(false);
        }
        self.used_bytes = total;
        self.role
            .instance_high_water
            .fetch_max(as_u64(total), Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.role.release(as_u64(self.used_bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    fn role(cap_mib: Option<u64>) -> Arc<RoleMemory> {
        Arc::new(RoleMemory::new(&SandboxLimits {
            role_memory_mib: cap_mib,
            ..SandboxLimits::default()
        }))
    }

    #[test]
    fn the_cap_covers_all_of_a_guests_memories_together() {
        let mut limiter = MemoryLimiter::new(10 * MIB, role(None));
        // Two memories start at 4 MiB each: 8 MiB in all.
        assert!(limiter.memory_growing(0, 4 * MIB, None).unwrap());
        assert!(limiter.memory_growing(0, 4 * MIB, None).unwrap());
        // A third memory of 4 MiB, or growing one to 8 MiB, passes the cap.
        assert!(!limiter.memory_growing(0, 4 * MIB, None).unwrap());
        assert!(!limiter.memory_growing(4 * MIB, 8 * MIB, None).unwrap());
        assert!(limiter.refused);
        // Growing one of them by 2 MiB fits exactly.
        assert!(limiter.memory_growing(4 * MIB, 6 * MIB, None).unwrap());
        assert_eq!(limiter.used_bytes(), 10 * MIB);
        limiter.clear_refusal();
        assert!(!limiter.refused);
    }

    #[test]
    fn the_role_cap_covers_all_its_instances_and_frees_on_drop() {
        let pool = role(Some(10));
        let mut first = MemoryLimiter::new(8 * MIB, pool.clone());
        let mut second = MemoryLimiter::new(8 * MIB, pool.clone());
        assert!(first.memory_growing(0, 6 * MIB, None).unwrap());
        // Within its own cap, but the role has only 4 MiB left.
        assert!(!second.memory_growing(0, 6 * MIB, None).unwrap());
        assert!(second.refused);
        assert!(second.memory_growing(0, 4 * MIB, None).unwrap());
        assert_eq!(pool.usage().bytes, as_u64(10 * MIB));
        drop(first);
        assert_eq!(pool.usage().bytes, as_u64(4 * MIB));
        let mut third = MemoryLimiter::new(8 * MIB, pool.clone());
        assert!(third.memory_growing(0, 6 * MIB, None).unwrap());
        let usage = pool.usage();
        assert_eq!(usage.high_water, as_u64(10 * MIB));
        assert_eq!(usage.instance_high_water, as_u64(6 * MIB));
    }

    #[test]
    fn a_growth_past_the_declared_maximum_is_refused_and_not_counted() {
        let pool = role(Some(10));
        let mut limiter = MemoryLimiter::new(8 * MIB, pool.clone());
        assert!(limiter.memory_growing(0, MIB, Some(2 * MIB)).unwrap());
        assert!(!limiter.memory_growing(MIB, 3 * MIB, Some(2 * MIB)).unwrap());
        assert_eq!(limiter.used_bytes(), MIB);
        assert_eq!(pool.usage().bytes, as_u64(MIB));
    }
}

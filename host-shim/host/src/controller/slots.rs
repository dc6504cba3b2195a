//! The engine's pool of instance slots, shared by every service on the
//! host, and what each service has reserved of it.
//!
//! A sandbox can only be instantiated while the pool has a free slot, so a
//! role declared with more instances than the pool holds never gets them:
//! its workers fail to instantiate and restart forever, taking the slots
//! the web roles' requests need. The controller therefore reserves, for
//! each service, the slots its roles can hold at once, counted as
//! [`crate::launch::engine_config`] sizes the pool for `weft up`: a web
//! role twice its `max-in-flight` (during an upgrade two versions each
//! take up to that many requests), a worker role one per instance. A
//! deploy, scale or upgrade that would take the reservations past the
//! pool's size is refused (409), naming the numbers.

use super::error::ControllerError;
use super::lock::lock;
use crate::manifest::{Manifest, Role};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The pool's size and each service's reservation.
#[derive(Debug)]
pub struct SlotPool {
    capacity: u32,
    reserved: Mutex<BTreeMap<String, u32>>,
}

impl SlotPool {
    /// The reservations of a pool of `capacity` slots, none yet.
    pub fn new(capacity: u32) -> Self {
        Self {
            capacity,
            reserved: Mutex::new(BTreeMap::new()),
        }
    }

    /// Reserves `need` slots for `service` in place of what it held, or
    /// refuses (409) if the reservations would pass the pool's size.
    pub fn reserve(&self, service: &str, need: u32) -> Result<(), ControllerError> {
        let mut reserved = lock(&self.reserved);
        let others = reserved
            .iter()
            .filter(|(name, _)| name.as_str() != service)
            .fold(0u32, |sum, (_, n)| sum.saturating_add(*n));
        if others.saturating_add(need) > self.capacity {
            return Err(ControllerError::Conflict(format!(
                "service '{service}' would need {need} sandbox slots (a worker instance \
                 takes one, a web role twice its max-in-flight), and other services hold \
                 {others} of the host's {}: lower the instance counts or max-in-flight, \
                 or give the host more slots (weft host --max-instances)",
                self.capacity
            )));
        }
        reserved.insert(service.to_owned(), need);
        Ok(())
    }

    /// Sets `service`'s reservation to `need` without checking: to give
    /// back what an operation reserved beyond what the service keeps.
    pub fn set(&self, service: &str, need: u32) {
        lock(&self.reserved).insert(service.to_owned(), need);
    }

    /// Forgets `service`'s reservation.
    pub fn release(&self, service: &str) {
        lock(&self.reserved).remove(service);
    }

    /// What `service` holds.
    pub fn held(&self, service: &str) -> u32 {
        lock(&self.reserved).get(service).copied().unwrap_or(0)
    }
}

/// The slots role `role` can hold at once.
pub fn role_slots(role: &Role) -> u32 {
    role.slots()
}

/// The slots the roles of `manifest` that this host runs (`runs`) can hold.
pub fn slots_needed(manifest: &Manifest, runs: impl Fn(&str) -> bool) -> u32 {
    manifest
        .roles
        .iter()
        .filter(|(name, _)| runs(name))
        .fold(0u32, |sum, (_, role)| sum.saturating_add(role_slots(role)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_web_role_counts_twice_its_in_flight_and_a_worker_its_instances() {
        let manifest = Manifest::parse(
            Path::new("dir/weft.toml"),
            r#"
[service]
name = "shop"

[roles.web]
kind = "web"
component = "web.wasm"
listen = "127.0.0.1:0"
[roles.web.limits]
max-in-flight = 10

[roles.worker]
kind = "worker"
component = "worker.wasm"
instances = 3
"#,
        )
        .unwrap();
        assert_eq!(slots_needed(&manifest, |_| true), 23);
        assert_eq!(slots_needed(&manifest, |name| name == "worker"), 3);
    }

    #[test]
    fn reservations_never_pass_the_pool() {
        let pool = SlotPool::new(100);
        pool.reserve("a", 60).unwrap();
        let refused = pool.reserve("b", 41).unwrap_err().to_string();
        assert!(
            refused.contains("'b' would need 41") && refused.contains("hold 60 of the host's 100"),
            "{refused}"
        );
        assert_eq!(pool.held("b"), 0);
        pool.reserve("b", 40).unwrap();
        // A service's own reservation is replaced, not added to.
        pool.reserve("a", 60).unwrap();
        assert!(pool.reserve("a", 61).is_err());
        assert_eq!(pool.held("a"), 60);
        pool.release("b");
        pool.reserve("a", 100).unwrap();
        pool.set("a", 10);
        assert_eq!(pool.held("a"), 10);
        assert!(pool.reserve("c", u32::MAX).is_err());
    }
}

//! A guest's place in the scheduler's queue, and the ids the scheduler
//! knows guests and roles by: shared by the scheduler's front
//! ([`super::CpuScheduler`]) and its state, so neither imports the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// A guest's number with the scheduler.
pub(super) type GuestId = u64;
/// A role's number with the scheduler.
pub(super) type RoleId = u64;

/// A queued guest's ticket: set when it is granted a slot.
#[derive(Debug)]
pub(crate) struct Waiter {
    pub(super) guest: GuestId,
    pub(super) granted: AtomicBool,
    wake: Notify,
}

impl Waiter {
    pub(super) fn new(guest: GuestId) -> Arc<Self> {
        Arc::new(Self {
            guest,
            granted: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    pub(super) fn grant(&self) {
        self.granted.store(true, Ordering::Release);
        // notify_one keeps a permit if the guest is not waiting yet.
        self.wake.notify_one();
    }

    /// Waits until granted, or until the deadline.
    pub(super) async fn granted_or(&self, deadline: Option<tokio::time::Instant>) {
        while !self.granted.load(Ordering::Acquire) {
            match deadline {
                Some(at) => {
                    if tokio::time::timeout_at(at, self.wake.notified())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }
}

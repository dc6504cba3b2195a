//! The controller's one way to take a `std::sync::Mutex`.
//!
//! The controller's mutexes guard plain data (maps, counts, the current
//! version) that a panicking holder cannot leave half-changed in a way later
//! readers would trip on, so a poisoned lock is taken anyway rather than
//! turning one panic into a cascade.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking it even if a holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

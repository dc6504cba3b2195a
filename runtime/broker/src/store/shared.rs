//! What the store and its writer thread share: the tables of the file, the
//! open database, and the store's health.

use redb::{Database, TableDefinition};
use std::collections::HashMap;
use std::sync::{Mutex, RwLock, RwLockReadGuard};

pub(super) const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
pub(super) const DEDUPE: TableDefinition<(&str, &str), (u64, &str)> =
    TableDefinition::new("dedupe");
pub(super) const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// What the store's callers and its writer thread share.
pub(super) struct Shared {
    /// The open database; `None` while the writer reopens it after a failed
    /// write (redb refuses every later call once a write has failed).
    /// Readers hold the read lock for their whole read, so the writer,
    /// taking the write lock, knows the old database is closed when it
    /// opens the file again.
    pub(super) db: RwLock<Option<Database>>,
    /// Whether writes succeed, and if not, why.
    pub(super) health: Mutex<StoreHealth>,
}

impl Shared {
    pub(super) fn db(&self) -> RwLockReadGuard<'_, Option<Database>> {
        self.db.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether the store can write now: what a host shows in its status and
/// metrics while the disk under the state folder is full or failing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreHealth {
    /// The last write reached the disk.
    Writable,
    /// The last write failed (a full disk, an I/O error). Sends, receives
    /// and key-value writes answer `unavailable` meanwhile; settles are
    /// kept and written later. The store retries by itself, reopening the
    /// file if redb needs it, and is `Writable` again once a write succeeds.
    Failing {
        /// What the last attempt met, on one line.
        reason: String,
    },
}

/// Bytes (keys and values) each bucket holds, by bucket.
pub(super) type BucketBytes = HashMap<String, usize>;

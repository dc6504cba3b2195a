//! The embedded backend's store: one redb file, written by one thread that
//! commits whatever is waiting as one transaction (group commit).
//!
//! Every commit is fsynced (redb's `Durability::Immediate`), so an operation
//! that waited for its commit is on disk. Operations that arrive while a
//! commit is in progress queue up and share the next one: a burst of sends
//! from many guests costs one fsync, not one each. Reads (key-value gets and
//! listings) use read transactions from any thread and never wait for the
//! writer.
//!
//! A failed write (a full disk, an I/O error) is survived, not latched: the
//! writer ([`writer`]) answers what waited for it `unavailable`, keeps the
//! settles nobody waited for, reopens the file (redb refuses every call
//! after a failed write) and retries with backoff until a commit succeeds.
//! Meanwhile [`StoreHealth`] says `Failing`, with the reason.
//!
//! Tables: `messages` ((queue, seq) → the whole message: id, times,
//! visibility, dequeue count, poison reason and body; rewritten on each
//! delivery), `dedupe` ((queue, dedupe id) → expiry and message id), `kv`
//! ((bucket, key) → the entry's deadline and value, with `kv_expiring`
//! listing the entries that expire in deadline order: see [`kv`]) and `meta`
//! (the format version: 2; a format-1 file is migrated at open). One row per
//! message, rather than a second table for what changes per delivery, keeps
//! a message's life at three row writes, and an entry's deadline in its own
//! row keeps a write at two: each row a commit changes costs pages the
//! commit writes, scattered across the file, and on a disk that charges
//! per write those pages bound throughput once fsyncs are shared.
//!
//! The state folder is created `0700` and the file `0600`: they hold every
//! guest's messages and key-value entries. A folder other users can write
//! to is refused, as the compiled-component cache refuses one: whoever can
//! write there can swap the store for one of their own.

mod kv;
#[cfg(test)]
pub(crate) mod power_cut;
mod record;
mod shared;
mod writer;

pub use shared::StoreHealth;

use crate::api::KeyPage;
use crate::error::one_line;
use crate::error::{BrokerError, OpenErrorKind};
use crate::message::Message;
use crate::persist::{Change, Done};
use kv::KvOp;
use record::decode;
use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, StorageError};
use shared::{BucketBytes, DEDUPE, KV, MESSAGES, META, Shared};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use tokio::sync::oneshot;
use writer::{Job, Writer, write_loop};

/// The layout of the tables above; a file with another is refused, but for
/// format 1 (whose key-value deadlines had a table of their own), which is
/// migrated at open.
const FORMAT: u64 = 2;
/// redb's page cache (it grows to this on demand).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Why the store could not be opened. Each is one line naming the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (or another broker in this one) has the file open.
    #[error(
        "{}: the queue store is in use by another process (is this service already running with the same state folder?)",
        path.display()
    )]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// The file is not a store this version can read, or is damaged.
    #[error(
        "{}: the queue store is damaged or not a Weft store ({reason}); move it aside to start with empty queues",
        path.display()
    )]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What is wrong, on one line.
        reason: String,
    },
    /// Other users can write to the state folder.
    #[error(
        "{}: the state folder is writable by other users; make it private (chmod 700 {})",
        path.display(),
        path.display()
    )]
    NotPrivate {
        /// The state folder.
        path: PathBuf,
    },
    /// The file or its folder cannot be read or written.
    #[error("{}: cannot open the queue store: {reason}", path.display())]
    Io {
        /// The store file.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
}

impl StoreError {
    /// What the failure means for the caller: a store another process
    /// holds, or one the OS cannot read or write now, is unavailable; a
    /// damaged store or a state folder others can write to needs an
    /// operator.
    pub fn kind(&self) -> OpenErrorKind {
        match self {
            Self::Locked { .. } | Self::Io { .. } => OpenErrorKind::Unavailable,
            Self::Corrupt { .. } | Self::NotPrivate { .. } => OpenErrorKind::HostState,
        }
    }
}

/// The open store: its file, and the writer thread's queue.
pub(crate) struct Store {
    shared: Arc<Shared>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Everything the store held at open, for the rules.
pub(crate) struct Contents {
    pub(crate) messages: Vec<(String, u64, Message)>,
    pub(crate) dedupe: Vec<(String, String, String, u64)>,
}

/// The answer to a read while the writer reopens the file.
fn reopening() -> BrokerError {
    BrokerError::Unavailable("the queue store is recovering from a failed write".into())
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> BrokerError {
    tracing::error!(%error, "queue store: {what} failed");
    BrokerError::Unavailable(format!("the queue store cannot {what} now"))
}

impl Store {
    /// Opens (or creates) the store at `path` and reads what it holds.
    pub(crate) fn open(path: &Path) -> Result<(Self, Contents), StoreError> {
        let file = path.to_path_buf();
        Self::open_with(path, move |builder| builder.create(&file))
    }

    /// As [`Store::open`], with `create` making the database from redb's
    /// builder: the file at `path`, or in tests a disk that can lose power
    /// (`power_cut.rs`). `create` is called again whenever the writer must
    /// reopen the database after a failed write.
    pub(crate) fn open_with(
        path: &Path,
        create: impl Fn(&redb::Builder) -> Result<Database, DatabaseError> + Send + 'static,
    ) -> Result<(Self, Contents), StoreError> {
        let io = |reason: String| StoreError::Io {
            path: path.to_path_buf(),
            reason,
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(parent) = path.parent() {
            prepare_folder(parent)?;
        }
        create_private(path).map_err(|e| io(e.to_string()))?;
        let db = open_database(path, &create)?;
        let (contents, bucket_bytes) =
            // The database is dropped if this panics: nothing is left half-used.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                prepare(&db).and_then(|()| read_all(&db))
            }))
                .unwrap_or_else(|_| Err("redb refused its pages".into()))
                .map_err(corrupt)?;
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(db)),
            health: Mutex::new(StoreHealth::Writable),
        });
        let (tx, rx) = mpsc::channel();
        let file = path.to_path_buf();
        let writer = Writer::new(
            shared.clone(),
            Box::new(move || open_database(&file, &create).map_err(|e| e.to_string())),
            bucket_bytes,
        );
        let writer = std::thread::Builder::new()
            .name("weft-queue-store".into())
            .spawn(move || write_loop(writer, &rx))
            .map_err(|e| io(format!("cannot start the writer thread: {e}")))?;
        Ok((
            Self {
                shared,
                jobs: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
            },
            contents,
        ))
    }

    fn submit(&self, job: Job) -> Result<(), BrokerError> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        match jobs.as_ref() {
            Some(tx) if tx.send(job).is_ok() => Ok(()),
            _ => Err(BrokerError::Unavailable("the queue store is closed".into())),
        }
    }

    /// Queues `changes` for the writer, after every earlier submission,
    /// and calls `done` once they are written or failed. Never blocks.
    pub(crate) fn submit_changes(
        &self,
        changes: Vec<Change>,
        done: Option<Done>,
    ) -> Result<(), BrokerError> {
        self.submit(Job::Changes { changes, done })
    }

    /// Writes `changes` and waits until they are on disk.
    pub(crate) async fn write(&self, changes: Vec<Change>) -> Result<(), BrokerError> {
        let (done, written) = oneshot::channel();
        let done: Done = Box::new(move |outcome| {
            let _ = done.send(outcome);
        });
        self.submit_changes(changes, Some(done))?;
        written
            .await
            .map_err(|_| BrokerError::Unavailable("the queue store is closed".into()))?
    }

    /// Runs a key-value operation at `now_ms`, on disk on return; answers
    /// what it counted (a purge's entries).
    async fn kv(&self, op: KvOp, now_ms: u64) -> Result<u64, BrokerError> {
        let (done, written) = oneshot::channel();
        self.submit(Job::Kv {
            op,
            now_ms,
            done: Some(done),
        })?;
        written
            .await
            .map_err(|_| BrokerError::Unavailable("the queue store is closed".into()))?
    }

    /// Stores (or, with `None`, removes) a key-value entry expiring at
    /// `deadline` (`None`: never), on disk on return.
    pub(crate) async fn kv_write(
        &self,
        bucket: &str,
        key: &str,
        value: Option<Vec<u8>>,
        deadline: Option<u64>,
        now_ms: u64,
    ) -> Result<(), BrokerError> {
        let op = KvOp::Write {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            value,
            deadline,
        };
        self.kv(op, now_ms).await.map(|_| ())
    }

    /// Deletes every entry of `bucket`; answers how many had not expired.
    pub(crate) async fn kv_purge(&self, bucket: &str, now_ms: u64) -> Result<u64, BrokerError> {
        let op = KvOp::Purge {
            bucket: bucket.to_owned(),
        };
        self.kv(op, now_ms).await
    }

    /// Frees entries expired at `now_ms` (at most
    /// [`MAX_SWEEP`](crate::expiry::MAX_SWEEP)), with the next commit;
    /// waits for nothing. The receiver gets how many it freed (or why it
    /// failed), before the answer of any job submitted after it.
    pub(crate) fn kv_sweep(
        &self,
        now_ms: u64,
    ) -> Result<oneshot::Receiver<Result<u64, BrokerError>>, BrokerError> {
        let (done, swept) = oneshot::channel();
        self.submit(Job::Kv {
            op: KvOp::Sweep,
            now_ms,
            done: Some(done),
        })?;
        Ok(swept)
    }

    /// How many key-value rows the file holds, expired or not.
    #[cfg(test)]
    pub(crate) fn kv_rows(&self) -> u64 {
        use redb::ReadableTableMetadata;
        let db = self.shared.db();
        let txn = db.as_ref().unwrap().begin_read().unwrap();
        txn.open_table(KV).unwrap().len().unwrap()
    }

    /// The value under `key` in `bucket`, as last committed, unless it has
    /// expired at `now_ms`.
    pub(crate) fn kv_get(
        &self,
        bucket: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, BrokerError> {
        let db = self.shared.db();
        let db = db.as_ref().ok_or_else(reopening)?;
        kv::get(db, bucket, key, now_ms).map_err(|e| unavailable("read", e))
    }

    /// One page of `bucket`'s unexpired keys, in order, from `cursor` on.
    pub(crate) fn kv_keys(
        &self,
        bucket: &str,
        cursor: Option<u64>,
        now_ms: u64,
    ) -> Result<KeyPage, BrokerError> {
        let start = usize::try_from(cursor.unwrap_or(0))
            .map_err(|_| BrokerError::Invalid("cursor out of range".into()))?;
        let db = self.shared.db();
        let db = db.as_ref().ok_or_else(reopening)?;
        kv::keys(db, bucket, start, now_ms).map_err(|e| unavailable("read", e))
    }

    /// Whether writes succeed now, and if not, why.
    pub(crate) fn health(&self) -> StoreHealth {
        self.shared
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until everything submitted so far is on disk, then stops the
    /// writer; later writes fail with `unavailable`.
    pub(crate) fn close(&self) {
        let tx = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(tx);
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// Opens the database with `create`, mapping redb's refusals to ours.
fn open_database(
    path: &Path,
    create: &dyn Fn(&redb::Builder) -> Result<Database, DatabaseError>,
) -> Result<Database, StoreError> {
    // redb checks every page's checksum here; its debug builds panic on
    // some damage instead of returning an error, which is caught too.
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut builder = Database::builder();
        builder
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true);
        create(&builder)
    }));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch)) => {
            Err(StoreError::Locked {
                path: path.to_path_buf(),
            })
        }
        Ok(Err(DatabaseError::Storage(StorageError::Io(e))))
            if e.kind() != std::io::ErrorKind::InvalidData =>
        {
            Err(StoreError::Io {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
        Ok(Err(e)) => Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: one_line(&e),
        }),
        Err(_) => Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: "redb refused its pages".into(),
        }),
    }
}

/// Creates the state folder (and any missing parent) `0700`, or checks that
/// an existing one is not writable by other users.
fn prepare_folder(folder: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)
        .map_err(|e| StoreError::Io {
            path: folder.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mode = std::fs::metadata(folder)
        .map_err(|e| StoreError::Io {
            path: folder.to_path_buf(),
            reason: e.to_string(),
        })?
        .permissions()
        .mode();
    if mode & 0o022 != 0 {
        return Err(StoreError::NotPrivate {
            path: folder.to_path_buf(),
        });
    }
    Ok(())
}

/// Creates the store file `0600` if it is missing (redb then sets up the
/// empty file), and takes read access from others on one made before.
fn create_private(path: &Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let mut permissions = file.metadata()?.permissions();
    if permissions.mode() & 0o077 != 0 {
        permissions.set_mode(permissions.mode() & 0o700);
        file.set_permissions(permissions)?;
    }
    Ok(())
}

/// Creates the tables of a new file, or checks an old file's format.
fn prepare(db: &Database) -> Result<(), String> {
    let setup = || -> Result<Option<u64>, redb::Error> {
        let txn = db.begin_write()?;
        let found = txn.open_table(META)?.get("format")?.map(|v| v.value());
        if found == Some(1) {
            kv::migrate_from_format_1(&txn)?;
            tracing::info!(
                "queue store: the file's key-value deadlines moved into their entries (format 1 to 2)"
            );
        }
        if matches!(found, None | Some(1)) {
            txn.open_table(META)?.insert("format", FORMAT)?;
        }
        txn.open_table(MESSAGES)?;
        txn.open_table(DEDUPE)?;
        kv::prepare(&txn)?;
        txn.commit()?;
        Ok(found)
    };
    match setup() {
        Ok(None | Some(1 | FORMAT)) => Ok(()),
        Ok(Some(other)) => Err(format!("format {other}, this Weft reads format {FORMAT}")),
        Err(e) => Err(one_line(&e)),
    }
}

/// Reads every message, dedupe id and bucket size.
fn read_all(db: &Database) -> Result<(Contents, BucketBytes), String> {
    let read = || -> Result<Result<(Contents, BucketBytes), String>, redb::Error> {
        let txn = db.begin_read()?;
        let messages = txn.open_table(MESSAGES)?;
        let mut contents = Contents {
            messages: Vec::new(),
            dedupe: Vec::new(),
        };
        for entry in messages.iter()? {
            let (key, value) = entry?;
            let (queue, seq) = key.value();
            let Some(message) = decode(value.value()) else {
                return Ok(Err(format!(
                    "message {seq} of queue '{queue}' is malformed"
                )));
            };
            contents.messages.push((queue.to_owned(), seq, message));
        }
        for entry in txn.open_table(DEDUPE)?.iter()? {
            let (key, value) = entry?;
            let (queue, dedupe) = key.value();
            let (expires_at_ms, id) = value.value();
            contents.dedupe.push((
                queue.to_owned(),
                dedupe.to_owned(),
                id.to_owned(),
                expires_at_ms,
            ));
        }
        let mut bucket_bytes = BucketBytes::new();
        for row in txn.open_table(KV)?.iter()? {
            let (key, row) = row?;
            let (bucket, k) = key.value();
            let Ok((_, value)) = kv::entry(row.value()) else {
                return Ok(Err(format!(
                    "the entry '{k}' of bucket '{bucket}' is malformed"
                )));
            };
            *bucket_bytes.entry(bucket.to_owned()).or_default() += k.len() + value.len();
        }
        Ok(Ok((contents, bucket_bytes)))
    };
    read().map_err(|e| one_line(&e))?
}

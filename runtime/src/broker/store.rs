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
//! Tables: `messages` ((queue, seq) → the whole message: id, times,
//! visibility, dequeue count, poison reason and body; rewritten on each
//! delivery), `dedupe` ((queue, dedupe id) → expiry and message id), `kv`
//! ((bucket, key) → value) and `meta` (the format version). One row per
//! message, rather than a second table for what changes per delivery, keeps
//! a message's life at three row writes: the writer thread's B-tree work is
//! what bounds throughput once fsyncs are shared.
//!
//! The state folder is created `0700` and the file `0600`: they hold every
//! guest's messages and key-value entries. A folder other users can write
//! to is refused, as the compiled-component cache refuses one: whoever can
//! write there can swap the store for one of their own.

mod record;

use super::book::Message;
use super::memory::MAX_BUCKET_BYTES;
use super::persist::{Change, Done};
use super::{BrokerError, KeyPage};
use record::{decode, encode};
use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, StorageError, TableDefinition,
    WriteTransaction,
};
use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;

const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const DEDUPE: TableDefinition<(&str, &str), (u64, &str)> = TableDefinition::new("dedupe");
const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The layout of the tables above; a file with another is refused.
const FORMAT: u64 = 1;
/// The most operations one commit takes: enough to amortise an fsync over
/// thousands, few enough that one commit stays short.
const MAX_JOBS_PER_COMMIT: usize = 4096;
/// redb's page cache (it grows to this on demand).
const CACHE_BYTES: usize = 64 * 1024 * 1024;
/// How many keys one `list_keys` page holds.
const KEY_PAGE: usize = 1000;

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

/// One unit of work for the writer thread.
enum Job {
    /// Book changes; `done` (if any) is called once they are on disk, or
    /// failed to get there, after every earlier job's.
    Changes {
        changes: Vec<Change>,
        done: Option<Done>,
    },
    /// A key-value write (`value: None` deletes).
    Kv {
        bucket: String,
        key: String,
        value: Option<Vec<u8>>,
        done: oneshot::Sender<Result<(), BrokerError>>,
    },
}

/// The open store: its file, and the writer thread's queue.
pub(crate) struct Store {
    db: Arc<Database>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Everything the store held at open, for the book.
pub(crate) struct Contents {
    pub(crate) messages: Vec<(String, u64, Message)>,
    pub(crate) dedupe: Vec<(String, String, String, u64)>,
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> BrokerError {
    tracing::error!(%error, "queue store: {what} failed");
    BrokerError::Unavailable(format!("the queue store cannot {what} now"))
}

impl Store {
    /// Opens (or creates) the store at `path` and reads what it holds.
    pub(crate) fn open(path: &Path) -> Result<(Self, Contents), StoreError> {
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
        // redb checks every page's checksum here; its debug builds panic on
        // some damage instead of returning an error, which is caught too.
        let opened = std::panic::catch_unwind(|| {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .set_check_integrity_on_open(true)
                .create(path)
        });
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch)) => {
                return Err(StoreError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Ok(Err(DatabaseError::Storage(StorageError::Io(e))))
                if e.kind() != std::io::ErrorKind::InvalidData =>
            {
                return Err(io(e.to_string()));
            }
            Ok(Err(e)) => return Err(corrupt(one_line(&e))),
            Err(_) => return Err(corrupt("redb refused its pages".into())),
        };
        let db = Arc::new(db);
        let (contents, bucket_bytes) =
            // The database is dropped if this panics: nothing is left half-used.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                prepare(&db).and_then(|()| read_all(&db))
            }))
                .unwrap_or_else(|_| Err("redb refused its pages".into()))
                .map_err(corrupt)?;
        let (tx, rx) = mpsc::channel();
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("weft-queue-store".into())
            .spawn(move || write_loop(&writer_db, &rx, bucket_bytes))
            .map_err(|e| io(format!("cannot start the writer thread: {e}")))?;
        Ok((
            Self {
                db,
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

    /// Stores (or, with `None`, removes) a key-value entry, on disk on return.
    pub(crate) async fn kv_write(
        &self,
        bucket: &str,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<(), BrokerError> {
        let (done, written) = oneshot::channel();
        self.submit(Job::Kv {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            value,
            done,
        })?;
        written
            .await
            .map_err(|_| BrokerError::Unavailable("the queue store is closed".into()))?
    }

    /// The value under `key` in `bucket`, as last committed.
    pub(crate) fn kv_get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        let read = || -> Result<Option<Vec<u8>>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(KV)?;
            Ok(table.get((bucket, key))?.map(|v| v.value().to_vec()))
        };
        read().map_err(|e| unavailable("read", e))
    }

    /// One page of `bucket`'s keys, in order, from `cursor` on.
    pub(crate) fn kv_keys(
        &self,
        bucket: &str,
        cursor: Option<u64>,
    ) -> Result<KeyPage, BrokerError> {
        let start = usize::try_from(cursor.unwrap_or(0))
            .map_err(|_| BrokerError::Invalid("cursor out of range".into()))?;
        let read = || -> Result<KeyPage, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(KV)?;
            let mut keys = Vec::new();
            let mut more = false;
            for (index, entry) in table.range((bucket, "")..)?.enumerate() {
                let (k, _) = entry?;
                let (b, key) = k.value();
                if b != bucket {
                    break;
                }
                if index < start {
                    continue;
                }
                if keys.len() == KEY_PAGE {
                    more = true;
                    break;
                }
                keys.push(key.to_owned());
            }
            let end = start + keys.len();
            Ok(KeyPage {
                keys,
                cursor: more.then(|| u64::try_from(end).ok()).flatten(),
            })
        };
        read().map_err(|e| unavailable("read", e))
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
        let format = {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("format")?.map(|v| v.value());
            if found.is_none() {
                meta.insert("format", FORMAT)?;
            }
            found
        };
        txn.open_table(MESSAGES)?;
        txn.open_table(DEDUPE)?;
        txn.open_table(KV)?;
        txn.commit()?;
        Ok(format)
    };
    match setup() {
        Ok(None | Some(FORMAT)) => Ok(()),
        Ok(Some(other)) => Err(format!("format {other}, this Weft reads format {FORMAT}")),
        Err(e) => Err(one_line(&e)),
    }
}

type BucketBytes = HashMap<String, usize>;

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
        for entry in txn.open_table(KV)?.iter()? {
            let (key, value) = entry?;
            let (bucket, k) = key.value();
            *bucket_bytes.entry(bucket.to_owned()).or_default() += k.len() + value.value().len();
        }
        Ok(Ok((contents, bucket_bytes)))
    };
    read().map_err(|e| one_line(&e))?
}

/// The writer thread: takes every job waiting, applies them in one
/// transaction, commits (fsync), then answers each.
fn write_loop(db: &Database, jobs: &mpsc::Receiver<Job>, mut bucket_bytes: BucketBytes) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_JOBS_PER_COMMIT {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut sizes = bucket_bytes.clone();
        match commit(db, &batch, &mut sizes) {
            Ok(outcomes) => {
                bucket_bytes = sizes;
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    answer(job, outcome);
                }
            }
            Err(e) => {
                let error = unavailable("write", e);
                for job in batch {
                    answer(job, Err(error.clone()));
                }
            }
        }
    }
}

fn answer(job: Job, outcome: Result<(), BrokerError>) {
    match job {
        Job::Changes {
            done: Some(done), ..
        } => done(outcome),
        Job::Changes { done: None, .. } => {}
        Job::Kv { done, .. } => {
            let _ = done.send(outcome);
        }
    }
}

/// Applies a batch of jobs in one durable transaction. A job refused on its
/// own (a full bucket) gets its error; the others are committed.
fn commit(
    db: &Database,
    batch: &[Job],
    bucket_bytes: &mut BucketBytes,
) -> Result<Vec<Result<(), BrokerError>>, redb::Error> {
    // redb's default durability, Immediate: the commit returns once fsynced.
    let txn = db.begin_write()?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        outcomes.push(match job {
            Job::Changes { changes, .. } => {
                apply(&txn, changes)?;
                Ok(())
            }
            Job::Kv {
                bucket, key, value, ..
            } => kv_apply(&txn, bucket, key, value.as_deref(), bucket_bytes)?,
        });
    }
    txn.commit()?;
    Ok(outcomes)
}

fn apply(txn: &WriteTransaction, changes: &[Change]) -> Result<(), redb::Error> {
    let mut messages = txn.open_table(MESSAGES)?;
    let mut dedupe = txn.open_table(DEDUPE)?;
    for change in changes {
        match change {
            Change::Put {
                queue,
                seq,
                message,
            } => {
                messages.insert((queue.as_str(), *seq), encode(message).as_slice())?;
            }
            Change::Delete { queue, seq } => {
                messages.remove((queue.as_str(), *seq))?;
            }
            Change::Dedupe {
                queue,
                key,
                id,
                expires_at_ms,
            } => {
                dedupe.insert(
                    (queue.as_str(), key.as_str()),
                    (*expires_at_ms, id.as_str()),
                )?;
            }
            Change::DedupeGone { queue, key } => {
                dedupe.remove((queue.as_str(), key.as_str()))?;
            }
        }
    }
    Ok(())
}

fn kv_apply(
    txn: &WriteTransaction,
    bucket: &str,
    key: &str,
    value: Option<&[u8]>,
    bucket_bytes: &mut BucketBytes,
) -> Result<Result<(), BrokerError>, redb::Error> {
    let mut table = txn.open_table(KV)?;
    let old = table
        .get((bucket, key))?
        .map_or(0, |v| key.len() + v.value().len());
    let held = bucket_bytes.get(bucket).copied().unwrap_or(0);
    let Some(value) = value else {
        if old > 0 {
            table.remove((bucket, key))?;
            bucket_bytes.insert(bucket.to_owned(), held - old);
        }
        return Ok(Ok(()));
    };
    let bytes = held - old + key.len() + value.len();
    if bytes > MAX_BUCKET_BYTES {
        return Ok(Err(BrokerError::Unavailable(format!(
            "bucket is full ({held} bytes; the limit is {MAX_BUCKET_BYTES})"
        ))));
    }
    table.insert((bucket, key), value)?;
    bucket_bytes.insert(bucket.to_owned(), bytes);
    Ok(Ok(()))
}

/// The first line of an error, for one-line reports.
fn one_line(error: &impl std::fmt::Display) -> String {
    error
        .to_string()
        .lines()
        .next()
        .unwrap_or("unknown error")
        .to_owned()
}

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

use super::book::{Change, Message};
use super::memory::MAX_BUCKET_BYTES;
use super::{BrokerError, KeyPage};
use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, StorageError, TableDefinition,
    WriteTransaction,
};
use std::collections::HashMap;
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
    /// Book changes; `done` (if any) hears once they are on disk.
    Changes {
        changes: Vec<Change>,
        done: Option<oneshot::Sender<Result<(), BrokerError>>>,
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
            std::fs::create_dir_all(parent).map_err(|e| io(e.to_string()))?;
        }
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

    /// Writes `changes` and waits until they are on disk.
    pub(crate) async fn write(&self, changes: Vec<Change>) -> Result<(), BrokerError> {
        let (done, written) = oneshot::channel();
        self.submit(Job::Changes {
            changes,
            done: Some(done),
        })?;
        written
            .await
            .map_err(|_| BrokerError::Unavailable("the queue store is closed".into()))?
    }

    /// Writes `changes` with the next commit, without waiting for it.
    pub(crate) fn write_later(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let _ = self.submit(Job::Changes {
            changes,
            done: None,
        });
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
    let done = match job {
        Job::Changes { done, .. } => done,
        Job::Kv { done, .. } => Some(done),
    };
    if let Some(done) = done {
        let _ = done.send(outcome);
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

/// The byte layout of a message, version 1: inserted-at, expires-at
/// (`u64::MAX`: never) and visible-at as little-endian u64s, the dequeue
/// count (u32), the id's length (u16) and bytes, the poison reason's length
/// (u32, `u32::MAX`: none) and bytes, then the body.
fn encode(message: &Message) -> Vec<u8> {
    let reason = message.poison_reason.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(
        1 + 8 * 3 + 4 + 2 + message.id.len() + 4 + reason.len() + message.body.len(),
    );
    out.push(1);
    out.extend_from_slice(&message.inserted_at_ms.to_le_bytes());
    out.extend_from_slice(&message.expires_at_ms.unwrap_or(u64::MAX).to_le_bytes());
    out.extend_from_slice(&message.visible_at_ms.to_le_bytes());
    out.extend_from_slice(&message.dequeue_count.to_le_bytes());
    // Ids are 32 hex digits, reasons one short line: both far inside their
    // length fields.
    let id_len = u16::try_from(message.id.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&id_len.to_le_bytes());
    out.extend_from_slice(&message.id.as_bytes()[..usize::from(id_len)]);
    match &message.poison_reason {
        Some(reason) => {
            let len = u32::try_from(reason.len()).unwrap_or(u32::MAX - 1);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&reason.as_bytes()[..usize::try_from(len).unwrap_or(0)]);
        }
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    out.extend_from_slice(&message.body);
    out
}

/// Reads [`encode`]'s layout; `None` if the bytes do not follow it.
fn decode(bytes: &[u8]) -> Option<Message> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = bytes.split_at_checked(n)?;
        *bytes = rest;
        Some(head)
    }
    fn u64_le(bytes: &mut &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(take(bytes, 8)?.try_into().ok()?))
    }
    let mut rest = bytes;
    if take(&mut rest, 1)? != [1] {
        return None;
    }
    let inserted_at_ms = u64_le(&mut rest)?;
    let expires = u64_le(&mut rest)?;
    let visible_at_ms = u64_le(&mut rest)?;
    let dequeue_count = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?);
    let id_len = u16::from_le_bytes(take(&mut rest, 2)?.try_into().ok()?);
    let id = std::str::from_utf8(take(&mut rest, usize::from(id_len))?).ok()?;
    let reason_len = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?);
    let poison_reason = if reason_len == u32::MAX {
        None
    } else {
        let len = usize::try_from(reason_len).ok()?;
        Some(std::str::from_utf8(take(&mut rest, len)?).ok()?.to_owned())
    };
    Some(Message {
        id: id.to_owned(),
        body: rest.to_vec(),
        inserted_at_ms,
        expires_at_ms: (expires != u64::MAX).then_some(expires),
        visible_at_ms,
        dequeue_count,
        poison_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let message = Message {
            id: "0123456789abcdef0123456789abcdef".into(),
            body: b"hello".to_vec(),
            inserted_at_ms: 1_700_000_000_000,
            expires_at_ms: Some(1_700_000_060_000),
            visible_at_ms: 1_700_000_030_000,
            dequeue_count: 4,
            poison_reason: Some("delivered 5 times".into()),
        };
        assert_eq!(decode(&encode(&message)), Some(message.clone()));
        let plain = Message {
            expires_at_ms: None,
            poison_reason: None,
            body: Vec::new(),
            ..message
        };
        assert_eq!(decode(&encode(&plain)), Some(plain.clone()));
        let bytes = encode(&plain);
        for cut in 0..bytes.len() {
            // Truncated inside the fixed part: refused, never a panic.
            if cut < bytes.len() - plain.body.len() {
                assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
            }
        }
        assert_eq!(decode(&[2, 0, 0]), None);
    }
}

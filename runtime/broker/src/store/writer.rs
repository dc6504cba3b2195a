//! The store's writer thread: group commit, and riding out failed writes.
//!
//! The thread takes every job waiting, applies them in one transaction,
//! commits (fsync), then answers each. When a commit fails (the disk under
//! the state folder is full, or failing), nothing in it reached the disk:
//!
//! - a job someone waits for (a send, a receive's dequeue counts, a
//!   key-value write) is answered `unavailable`, and the rules undo it
//!   (a send is forgotten and its room given back), so the rules still
//!   match the file;
//! - a job nobody waits for (a settle, a forgotten dedupe id, an operator's
//!   purge or redrive, whose caller waits on an empty job behind it) was
//!   already applied to the rules, so it is kept, newest change per row, and written
//!   first by the next commit that succeeds: file and rules agree again
//!   without reading the file back. At most one change per message or
//!   dedupe id the rules held is kept, so what waits is bounded by the
//!   queues' own limits.
//!
//! redb refuses every call after a failed write until the database is
//! reopened, so the writer reopens it (redb repairs the file from its last
//! commit) before it tries again. Tries are spaced out, from
//! [`RETRY_FIRST`] doubling to [`RETRY_MAX`]; jobs arriving in between are
//! answered at once. The store's [`StoreHealth`] says `Failing` with the
//! reason until a commit succeeds.

use super::kv::KvOp;
use super::record::encode;
use super::shared::{BucketBytes, DEDUPE, MESSAGES, Shared, StoreHealth};
use crate::error::{BrokerError, one_line};
use crate::persist::{Change, Done};
use redb::{Database, WriteTransaction};
use std::collections::HashMap;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The most operations one commit takes: enough to amortise an fsync over
/// thousands, few enough that one commit stays short.
const MAX_JOBS_PER_COMMIT: usize = 4096;
/// The wait before the first retry after a failed write: short, so a blip
/// costs little.
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// The longest wait between retries: each retry may reopen the file (redb
/// reads it all to check it), so a disk that stays full costs one read of
/// the file per this long, and writes resume at most this long after room
/// is made.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// One unit of work for the writer thread.
pub(super) enum Job {
    /// Changes the queue rules made; `done` (if any) is called once they
    /// are on disk, or failed to get there, after every earlier job's.
    Changes {
        changes: Vec<Change>,
        done: Option<Done>,
    },
    /// A key-value operation at `now_ms`; `done` (if any) gets what it
    /// counted (a purge's entries) once it is on disk, or why not.
    Kv {
        op: KvOp,
        now_ms: u64,
        done: Option<oneshot::Sender<Result<u64, BrokerError>>>,
    },
}

/// Opens the database again after a failed write; the error on one line.
pub(super) type Reopen = Box<dyn Fn() -> Result<Database, String> + Send>;

/// The writer thread's state.
pub(super) struct Writer {
    shared: Arc<Shared>,
    reopen: Reopen,
    /// Bytes each bucket holds on disk, as last committed.
    bucket_bytes: BucketBytes,
    /// Changes nobody waits for whose commit failed, to write first.
    carry: Carry,
    /// After a failed write: when to try again, and the wait after that.
    retry: Option<(Instant, Duration)>,
}

impl Writer {
    pub(super) fn new(shared: Arc<Shared>, reopen: Reopen, bucket_bytes: BucketBytes) -> Self {
        Self {
            shared,
            reopen,
            bucket_bytes,
            carry: Carry::default(),
            retry: None,
        }
    }

    /// Commits `batch` (after the carried changes), or fails it. A failing
    /// store only tries when its retry is due, or when `last` (the store is
    /// closing and this is its final chance to write the carry).
    fn run(&mut self, batch: Vec<Job>, last: bool) {
        if let Some((at, _)) = self.retry
            && Instant::now() < at
            && !last
        {
            self.fail(batch);
            return;
        }
        let mut sizes = self.bucket_bytes.clone();
        match self.attempt(&batch, &mut sizes) {
            Ok(outcomes) => {
                self.bucket_bytes = sizes;
                self.carry.0.clear();
                if self.retry.take().is_some() {
                    tracing::warn!("queue store: writes succeed again");
                }
                self.set_health(StoreHealth::Writable);
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    answer(job, outcome);
                }
            }
            Err(reason) => {
                let wait = match self.retry {
                    None => {
                        tracing::error!(%reason, "queue store: a write failed; sends answer `unavailable` until one succeeds");
                        RETRY_FIRST
                    }
                    Some((_, wait)) => {
                        tracing::debug!(%reason, "queue store: a retried write failed");
                        (wait * 2).min(RETRY_MAX)
                    }
                };
                self.retry = Some((Instant::now() + wait, wait));
                self.set_health(StoreHealth::Failing { reason });
                self.fail(batch);
            }
        }
    }

    /// Answers every job of a batch that did not reach the disk.
    fn fail(&mut self, batch: Vec<Job>) {
        let error = BrokerError::Unavailable("the queue store cannot write now".into());
        for job in batch {
            match job {
                Job::Changes {
                    changes,
                    done: None,
                } => self.carry.add(changes),
                job => answer(job, Err(error.clone())),
            }
        }
    }

    /// Reopens the database if a failed write closed it, then commits.
    fn attempt(
        &mut self,
        batch: &[Job],
        sizes: &mut BucketBytes,
    ) -> Result<Vec<Result<u64, BrokerError>>, String> {
        if self.shared.db().is_none() {
            let db = (self.reopen)()?;
            *self.shared.db.write().unwrap_or_else(|p| p.into_inner()) = Some(db);
        }
        let guard = self.shared.db();
        let db = guard
            .as_ref()
            .ok_or_else(|| "the database is closed".to_owned())?;
        let error = match commit(db, &self.carry, batch, sizes) {
            Ok(outcomes) => return Ok(outcomes),
            Err(e) => one_line(&e),
        };
        // redb refuses every later call once a write failed; a failure it
        // did not latch (a transient error) needs no reopen.
        let latched = db.begin_write().is_err();
        drop(guard);
        if latched {
            // No reader holds it (they hold the lock), so dropping it here
            // closes the file before the next try opens it again.
            let old = self
                .shared
                .db
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            drop(old);
        }
        Err(error)
    }

    fn set_health(&self, health: StoreHealth) {
        *self.shared.health.lock().unwrap_or_else(|p| p.into_inner()) = health;
    }

    fn failing(&self) -> bool {
        self.retry.is_some()
    }
}

/// The writer thread: commits whatever is waiting as one transaction; while
/// writes fail, wakes when a retry is due even if nothing new arrived, so
/// carried settles land and the health clears once the disk has room.
pub(super) fn write_loop(mut writer: Writer, jobs: &mpsc::Receiver<Job>) {
    loop {
        let first = match writer.retry {
            None => match jobs.recv() {
                Ok(job) => job,
                Err(mpsc::RecvError) => return,
            },
            Some((at, _)) => {
                match jobs.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        writer.run(Vec::new(), false);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        // Closing: one last try for the carried settles.
                        if writer.failing() && !writer.carry.0.is_empty() {
                            writer.run(Vec::new(), true);
                        }
                        return;
                    }
                }
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_JOBS_PER_COMMIT {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        writer.run(batch, false);
    }
}

fn answer(job: Job, outcome: Result<u64, BrokerError>) {
    match job {
        Job::Changes {
            done: Some(done), ..
        } => done(outcome.map(|_| ())),
        Job::Changes { done: None, .. } | Job::Kv { done: None, .. } => {}
        Job::Kv {
            done: Some(done), ..
        } => {
            let _ = done.send(outcome);
        }
    }
}

/// Which row a change writes.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Row {
    Message(String, u64),
    Dedupe(String, String),
}

/// Changes nobody waits for whose commit failed: the newest per row. Each
/// change writes its row whole, so the newest alone gives the row the
/// rules' value, and rows are independent, so their order does not matter.
#[derive(Default)]
struct Carry(HashMap<Row, Change>);

impl Carry {
    fn add(&mut self, changes: Vec<Change>) {
        for change in changes {
            let row = match &change {
                Change::Put { queue, seq, .. } | Change::Delete { queue, seq } => {
                    Row::Message(queue.clone(), *seq)
                }
                Change::Dedupe { queue, key, .. } | Change::DedupeGone { queue, key } => {
                    Row::Dedupe(queue.clone(), key.clone())
                }
            };
            self.0.insert(row, change);
        }
    }
}

/// Applies the carried changes, then a batch of jobs, in one durable
/// transaction. A job refused on its own (a full bucket) gets its error;
/// the others are committed.
fn commit(
    db: &Database,
    carry: &Carry,
    batch: &[Job],
    bucket_bytes: &mut BucketBytes,
) -> Result<Vec<Result<u64, BrokerError>>, redb::Error> {
    // redb's default durability, Immediate: the commit returns once fsynced.
    let txn = db.begin_write()?;
    apply(&txn, carry.0.values())?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        outcomes.push(match job {
            Job::Changes { changes, .. } => {
                apply(&txn, changes)?;
                Ok(0)
            }
            Job::Kv { op, now_ms, .. } => op.apply(&txn, *now_ms, bucket_bytes)?,
        });
    }
    txn.commit()?;
    Ok(outcomes)
}

fn apply<'a>(
    txn: &WriteTransaction,
    changes: impl IntoIterator<Item = &'a Change>,
) -> Result<(), redb::Error> {
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

#[cfg(test)]
mod tests {
    use crate::{
        BrokerError, EmbeddedBroker, KvStore, MAX_BATCH, QueueBroker, QueueSettings,
        ReceiveRequest, SendOptions, StoreHealth,
    };
    use std::collections::BTreeSet;
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::Duration;

    /// A small tmpfs mounted on a fresh folder, unmounted when dropped.
    struct Tmpfs {
        dir: tempfile::TempDir,
    }

    impl Tmpfs {
        /// `None` where mounting is not permitted (not root, no tmpfs).
        fn mount(size: &str) -> Option<Self> {
            let dir = tempfile::tempdir().expect("a temporary folder");
            let mounted = Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            mounted.then_some(Self { dir })
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        }
    }

    /// Writes a file until the filesystem has no room left.
    fn fill(path: &Path) -> PathBuf {
        let mut file = std::fs::File::create(path).expect("the filler file");
        for chunk in [1 << 16, 1 << 12, 1 << 9, 1] {
            let bytes = vec![0xa5; chunk];
            while file.write_all(&bytes).is_ok() {}
        }
        let _ = file.sync_all();
        path.to_path_buf()
    }

    fn request() -> ReceiveRequest {
        ReceiveRequest {
            max_messages: MAX_BATCH,
            visibility_timeout: Duration::from_secs(600),
            wait: Duration::ZERO,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_is_survived_without_a_restart_and_nothing_acknowledged_is_lost() {
        let Some(disk) = Tmpfs::mount("8m") else {
            eprintln!("SKIPPED: mounting a tmpfs is not permitted here (the test needs root)");
            return;
        };
        let state = disk.path().join("state");
        let broker = EmbeddedBroker::open(&state, QueueSettings::default()).unwrap();
        let mut acked = BTreeSet::new();
        for i in 0..10 {
            let body = format!("before-{i}").into_bytes();
            acked.insert(broker.send("q", body, SendOptions::now()).await.unwrap());
        }
        let leased = broker.receive("q", request()).await.unwrap();
        assert_eq!(leased.len(), 10);
        broker.set("b", "k", b"v1".to_vec()).await.unwrap();

        // The disk fills: sends that fit in the file's free pages are
        // acknowledged, then the first that needs room gets `unavailable`.
        let filler = fill(&disk.path().join("filler"));
        let mut refused = None;
        for i in 0..2000 {
            let body = vec![u8::try_from(i % 251).unwrap(); 16 * 1024];
            match broker.send("q", body, SendOptions::now()).await {
                Ok(id) => {
                    acked.insert(id);
                }
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let refused = refused.expect("a send refused once the disk was full");
        assert!(
            matches!(refused, BrokerError::Unavailable(_)),
            "{refused:?}"
        );
        let StoreHealth::Failing { reason } = broker.health() else {
            panic!("the store says it is writable on a full disk");
        };
        assert!(!reason.is_empty() && !reason.contains('\n'), "{reason}");
        // Still refused while full (the store retries by itself meanwhile),
        // and key-value writes too (below).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = broker
            .send("q", vec![1; 16 * 1024], SendOptions::now())
            .await;
        assert!(
            matches!(again, Err(BrokerError::Unavailable(_))),
            "{again:?}"
        );
        // Settles made while writes fail are acknowledged (they ride on a
        // later commit), and must reach the disk: half the leased messages
        // are completed now, while the failed send's retry is not yet due.
        for delivery in &leased[..5] {
            broker.complete("q", &delivery.receipt).await.unwrap();
            acked.remove(&delivery.id);
        }
        let kv = broker.set("b", "k", vec![2; 64 * 1024]).await;
        assert!(matches!(kv, Err(BrokerError::Unavailable(_))), "{kv:?}");

        // Room is made: writes succeed again, with no restart.
        std::fs::remove_file(&filler).unwrap();
        let mut after = None;
        for _ in 0..200 {
            match broker
                .send("q", b"after-0".to_vec(), SendOptions::now())
                .await
            {
                Ok(id) => {
                    after = Some(id);
                    break;
                }
                Err(BrokerError::Unavailable(_)) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        acked.insert(after.expect("sends succeed again once the disk has room"));
        assert_eq!(broker.health(), StoreHealth::Writable);
        for i in 1..5 {
            let body = format!("after-{i}").into_bytes();
            acked.insert(broker.send("q", body, SendOptions::now()).await.unwrap());
        }
        for delivery in &leased[5..] {
            broker.complete("q", &delivery.receipt).await.unwrap();
            acked.remove(&delivery.id);
        }
        broker.set("b", "k", b"v2".to_vec()).await.unwrap();
        // Refused sends were forgotten: the rules hold what was acknowledged.
        assert_eq!(broker.len("q").await.unwrap(), acked.len());
        broker.flush().await.unwrap();
        broker.close();
        drop(broker);

        // Every acknowledged message is on disk, and nothing completed came
        // back (the completions made while full were written later).
        let broker = EmbeddedBroker::open(&state, QueueSettings::default()).unwrap();
        // (A completion lost would leave its message on disk, still leased.)
        assert_eq!(broker.len("q").await.unwrap(), acked.len());
        let mut received = BTreeSet::new();
        loop {
            let got = broker.receive("q", request()).await.unwrap();
            if got.is_empty() {
                break;
            }
            for delivery in got {
                assert!(received.insert(delivery.id), "delivered twice");
            }
        }
        assert_eq!(received, acked);
        assert_eq!(broker.get("b", "k").await.unwrap(), Some(b"v2".to_vec()));
    }
}

//! The embedded backend: durable queues and buckets in one file on this
//! host's disk, with no set-up. The default of `weft up`.
//!
//! Its queues are the [`rules`](crate::rules) whose changes the
//! [`store`](crate::store) writes to a redb file: a send (and a receive's new
//! dequeue counts) is fsynced before it answers, and settles ride along with
//! the next commit. At open, the queues are rebuilt from the file: every message
//! sent and not completed is there, with the visibility and dequeue count of
//! its last delivery, so a lease held when the host died lapses after its
//! visibility timeout like any other.
//!
//! The rules hold every message in memory too (bounded by the queues' limits),
//! so receiving never reads the disk. Key-value entries live only in the
//! file: reads are read transactions, writes are fsynced before they answer.
//! An entry's deadline (its bucket's time to live, [`expiry`](crate::expiry))
//! is stored with it, so it holds across a restart.

use crate::api::{BucketSettings, KeyPage, KvStore};
use crate::error::BrokerError;
use crate::expiry::{Expiry, MAX_SWEEP};
use crate::limits::QueueSettings;
use crate::persist::{Change, Done, Persist};
use crate::queues::Queues;
use crate::store::{Contents, Store, StoreError, StoreHealth};
use async_trait::async_trait;
use std::path::{Path, PathBuf};

/// The store's file name inside a service's state folder.
pub const STORE_FILE: &str = "queues.redb";

/// Durable queues and key-value buckets in one local file.
pub struct EmbeddedBroker {
    queues: Queues<Store>,
    path: PathBuf,
    expiry: Expiry,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Persist for Store {
    const DURABLE: bool = true;

    fn submit(&self, changes: Vec<Change>, done: Option<Done>) -> Result<(), BrokerError> {
        self.submit_changes(changes, done)
    }
}

impl EmbeddedBroker {
    /// Opens the store in `state_dir` (creating both if needed, private to
    /// this user) and restores its queues. A store another process holds, a
    /// damaged one, or a state folder other users can write to is an error
    /// naming the file or folder.
    pub fn open(state_dir: &Path, settings: QueueSettings) -> Result<Self, StoreError> {
        let path = state_dir.join(STORE_FILE);
        let opened = Store::open(&path)?;
        Ok(Self::restore(path, opened, settings))
    }

    /// Opens the store on `disk`, a disk that can lose power, instead of
    /// the file in `state_dir` (which is still created, and stays empty).
    #[cfg(test)]
    pub(crate) fn open_on(
        state_dir: &Path,
        settings: QueueSettings,
        disk: crate::store::power_cut::Disk,
    ) -> Result<Self, StoreError> {
        let path = state_dir.join(STORE_FILE);
        // A clone per open: the writer opens it again after a failed write.
        let opened = Store::open_with(&path, move |builder| {
            builder.create_with_backend(disk.clone())
        })?;
        Ok(Self::restore(path, opened, settings))
    }

    /// Every message `queue` holds, leased or not, as (id, dequeue count).
    #[cfg(test)]
    pub(crate) fn contents(&self, queue: &str) -> Vec<(String, u32)> {
        self.queues.contents(queue)
    }

    /// Rebuilds the queues from what an opened store holds.
    fn restore(
        path: PathBuf,
        (store, contents): (Store, Contents),
        settings: QueueSettings,
    ) -> Self {
        let queues = Queues::new(settings, store);
        let now = queues.now_ms();
        let mut restored = 0usize;
        for (queue, seq, message) in contents.messages {
            queues.restore(&queue, seq, message);
            restored += 1;
        }
        for (queue, key, id, expires_at_ms) in contents.dedupe {
            if expires_at_ms > now {
                queues.restore_dedupe(&queue, key, id, expires_at_ms);
            }
        }
        queues.restored();
        tracing::info!(store = %path.display(), messages = restored, "queue store opened");
        Self {
            queues,
            path,
            expiry: Expiry::default(),
        }
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the store can write now, and if not, why: a full or failing
    /// disk makes writes answer `unavailable` until the store, retrying by
    /// itself, gets one through.
    pub fn health(&self) -> StoreHealth {
        self.queues.persist().health()
    }

    /// Waits until every change made so far (settles included) is on disk.
    pub async fn flush(&self) -> Result<(), BrokerError> {
        self.queues.persist().write(Vec::new()).await
    }

    /// Flushes, then closes the file: later calls fail with `unavailable`.
    /// Dropping the broker does the same.
    pub fn close(&self) {
        self.queues.persist().close();
    }
}

crate::queues::queue_broker_over_queues!(EmbeddedBroker);

#[async_trait]
impl KvStore for EmbeddedBroker {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        let now = self.queues.now_ms();
        self.queues.persist().kv_get(bucket, key, now)
    }

    async fn set(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<(), BrokerError> {
        let now = self.queues.now_ms();
        let store = self.queues.persist();
        let sweep = if self.expiry.sweep_due(now) {
            Some(store.kv_sweep(now)?)
        } else {
            None
        };
        let deadline = self.expiry.deadline(bucket, now);
        let written = store
            .kv_write(bucket, key, Some(value), deadline, now)
            .await;
        // The sweep was answered before this write: if it stopped at its
        // cap (or failed), expired entries are left, and the next write
        // sweeps again.
        if let Some(mut sweep) = sweep
            && !matches!(sweep.try_recv(), Ok(Ok(n)) if n < MAX_SWEEP as u64)
        {
            self.expiry.sweep_soon();
        }
        written
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), BrokerError> {
        let now = self.queues.now_ms();
        self.queues
            .persist()
            .kv_write(bucket, key, None, None, now)
            .await
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, BrokerError> {
        Ok(self.get(bucket, key).await?.is_some())
    }

    async fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> Result<KeyPage, BrokerError> {
        let now = self.queues.now_ms();
        self.queues.persist().kv_keys(bucket, cursor, now)
    }

    async fn configure_bucket(
        &self,
        bucket: &str,
        settings: BucketSettings,
    ) -> Result<(), BrokerError> {
        self.expiry.configure(bucket, settings);
        Ok(())
    }

    async fn purge_bucket(&self, bucket: &str) -> Result<u64, BrokerError> {
        let now = self.queues.now_ms();
        self.queues.persist().kv_purge(bucket, now).await
    }
}

#[cfg(test)]
mod conformance {
    use crate::conformance::{Backend, Guard, SETTINGS, conformance_tests};
    use std::sync::Arc;

    async fn embedded() -> (Arc<dyn Backend>, Guard) {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let broker = super::EmbeddedBroker::open(dir.path(), SETTINGS).expect("the store opens");
        (Arc::new(broker), Box::new(dir))
    }

    conformance_tests!(embedded);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MAX_BATCH, QueueBroker, ReceiveRequest, SendOptions};
    use futures::FutureExt;
    use std::time::Duration;

    fn request(max: u32, visibility_ms: u64) -> ReceiveRequest {
        ReceiveRequest {
            max_messages: max,
            visibility_timeout: Duration::from_millis(visibility_ms),
            wait: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn what_was_sent_survives_a_reopen_with_its_dequeue_count() {
        let dir = tempfile::tempdir().unwrap();
        let settings = QueueSettings::default();
        let (leased, waiting, completed) = {
            let broker = EmbeddedBroker::open(dir.path(), settings).unwrap();
            let leased = broker
                .send("q", b"leased".to_vec(), SendOptions::now())
                .await
                .unwrap();
            let waiting = broker
                .send("q", b"waiting".to_vec(), SendOptions::now())
                .await
                .unwrap();
            let done = broker
                .send("q", b"done".to_vec(), SendOptions::now())
                .await
                .unwrap();
            let got = broker.receive("q", request(MAX_BATCH, 100)).await.unwrap();
            assert_eq!(got.len(), 3);
            let done_receipt = &got.iter().find(|d| d.id == done).unwrap().receipt;
            broker.complete("q", done_receipt).await.unwrap();
            let waiting_receipt = &got.iter().find(|d| d.id == waiting).unwrap().receipt;
            broker
                .abandon("q", waiting_receipt, Duration::ZERO)
                .await
                .unwrap();
            broker.set("b", "k", b"v".to_vec()).await.unwrap();
            broker.close();
            (leased, waiting, done)
        };
        let broker = EmbeddedBroker::open(dir.path(), settings).unwrap();
        assert_eq!(broker.len("q").await.unwrap(), 2);
        assert_eq!(broker.get("b", "k").await.unwrap(), Some(b"v".to_vec()));
        // The abandoned message is visible at once; the leased one after its
        // lease (100 ms) lapses; both with their dequeue count kept.
        let mut seen = Vec::new();
        for _ in 0..100 {
            for d in broker
                .receive("q", request(MAX_BATCH, 60_000))
                .await
                .unwrap()
            {
                seen.push((d.id, d.dequeue_count));
            }
            if seen.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen.sort();
        let mut expected = vec![(leased, 2), (waiting, 2)];
        expected.sort();
        assert_eq!(seen, expected);
        assert!(!seen.iter().any(|(id, _)| *id == completed));
    }

    /// A file written before an entry's deadline moved into its row (format
    /// 1, deadlines in a table of their own) opens as it was: its entries,
    /// their deadlines and their bucket's bytes, and it reopens as format 2.
    #[tokio::test]
    async fn a_format_1_file_opens_with_its_entries_and_their_deadlines() {
        use redb::{ReadableDatabase, TableDefinition};
        const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
        const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
        const KV_DEADLINES: TableDefinition<(&str, &str), u64> =
            TableDefinition::new("kv_deadlines");
        const KV_EXPIRING: TableDefinition<(u64, &str, &str), ()> =
            TableDefinition::new("kv_expiring");
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let later = u64::try_from(now).unwrap() + 3_600_000;
        {
            let db = redb::Database::create(dir.path().join(STORE_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                txn.open_table(META).unwrap().insert("format", 1).unwrap();
                let mut kv = txn.open_table(KV).unwrap();
                kv.insert(("b", "expired"), &b"old"[..]).unwrap();
                kv.insert(("b", "live"), &b"value"[..]).unwrap();
                kv.insert(("c", "kept"), &b"forever"[..]).unwrap();
                let mut deadlines = txn.open_table(KV_DEADLINES).unwrap();
                deadlines.insert(("b", "expired"), 1).unwrap();
                deadlines.insert(("b", "live"), later).unwrap();
                let mut expiring = txn.open_table(KV_EXPIRING).unwrap();
                expiring.insert((1, "b", "expired"), ()).unwrap();
                expiring.insert((later, "b", "live"), ()).unwrap();
            }
            txn.commit().unwrap();
        }
        for _open in 0..2 {
            let broker = EmbeddedBroker::open(dir.path(), QueueSettings::default()).unwrap();
            assert_eq!(broker.get("b", "expired").await.unwrap(), None);
            assert_eq!(
                broker.get("b", "live").await.unwrap(),
                Some(b"value".to_vec())
            );
            assert_eq!(
                broker.get("c", "kept").await.unwrap(),
                Some(b"forever".to_vec())
            );
            assert_eq!(broker.list_keys("b", None).await.unwrap().keys, ["live"]);
        }
        let broker = EmbeddedBroker::open(dir.path(), QueueSettings::default()).unwrap();
        // Live entries count, the expired one does not.
        assert_eq!(broker.purge_bucket("b").await.unwrap(), 1);
        assert_eq!(broker.purge_bucket("c").await.unwrap(), 1);
        drop(broker);
        let db = redb::Database::open(dir.path().join(STORE_FILE)).unwrap();
        let read = db.begin_read().unwrap();
        assert_eq!(
            read.open_table(META)
                .unwrap()
                .get("format")
                .unwrap()
                .unwrap()
                .value(),
            2
        );
        assert!(read.open_table(KV_DEADLINES).is_err());
    }

    /// An entry's deadline is on disk: it holds after a reopen that
    /// configures nothing, and expired entries (counted in the bucket's
    /// bytes at open) are swept when a write finds the bucket full. Time is
    /// the paused test clock.
    #[tokio::test(start_paused = true)]
    async fn an_entrys_deadline_survives_a_reopen_and_expiry_frees_room() {
        let dir = tempfile::tempdir().unwrap();
        let settings = QueueSettings::default();
        let ttl = Duration::from_secs(60);
        let value = vec![3; crate::MAX_VALUE_BYTES];
        let stored = {
            let broker = EmbeddedBroker::open(dir.path(), settings).unwrap();
            broker
                .configure_bucket("b", BucketSettings { ttl: Some(ttl) })
                .await
                .unwrap();
            let mut stored = 0;
            let refused = loop {
                match broker
                    .set("b", &format!("k{stored:03}"), value.clone())
                    .await
                {
                    Ok(()) => stored += 1,
                    Err(e) => break e,
                }
            };
            assert!(matches!(refused, BrokerError::BucketFull(_)), "{refused:?}");
            broker.set("kept", "k", b"v".to_vec()).await.unwrap();
            broker.close();
            stored
        };
        assert_eq!(stored, crate::MAX_BUCKET_BYTES / value.len() - 1);
        let broker = EmbeddedBroker::open(dir.path(), settings).unwrap();
        assert_eq!(broker.get("b", "k000").await.unwrap(), Some(value.clone()));
        assert!(matches!(
            broker.set("b", "new", value.clone()).await,
            Err(BrokerError::BucketFull(_))
        ));
        tokio::time::advance(ttl + Duration::from_secs(1)).await;
        assert_eq!(broker.get("b", "k000").await.unwrap(), None);
        assert!(!broker.exists("b", "k001").await.unwrap());
        assert!(broker.list_keys("b", None).await.unwrap().keys.is_empty());
        assert_eq!(broker.get("kept", "k").await.unwrap(), Some(b"v".to_vec()));
        // Unconfigured after the reopen, "b" now keeps what it is given.
        broker.set("b", "new", value.clone()).await.unwrap();
        broker.close();
        drop(broker);
        let broker = EmbeddedBroker::open(dir.path(), settings).unwrap();
        tokio::time::advance(ttl * 10).await;
        assert_eq!(broker.get("b", "new").await.unwrap(), Some(value));
        assert_eq!(broker.purge_bucket("b").await.unwrap(), 1);
        assert_eq!(broker.purge_bucket("kept").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_send_dropped_while_its_commit_waits_becomes_receivable() {
        let dir = tempfile::tempdir().unwrap();
        let settings = QueueSettings::default();
        let broker = EmbeddedBroker::open(dir.path(), settings).unwrap();
        // A request's deadline drops the send while its fsync is pending.
        let dropped = broker.send("q", b"x".to_vec(), SendOptions::now());
        assert!(dropped.now_or_never().is_none(), "the send did not wait");
        broker.flush().await.unwrap();
        assert_eq!(broker.len("q").await.unwrap(), 1);
        let got = broker.receive("q", request(1, 60_000)).await.unwrap();
        assert_eq!(got[0].body, b"x");
        drop(broker);
        let broker = EmbeddedBroker::open(dir.path(), settings).unwrap();
        assert_eq!(broker.len("q").await.unwrap(), 1);
    }

    /// A purge or redrive that answered is on disk: a power cut right after
    /// it (losing every write not synced) takes neither back, and the
    /// redriven message keeps its `traceparent`.
    #[tokio::test]
    async fn a_purge_and_a_redrive_survive_a_power_cut() {
        let dir = tempfile::tempdir().unwrap();
        let disk = crate::store::power_cut::Disk::new();
        let settings = QueueSettings {
            max_deliveries: 1,
            ..QueueSettings::default()
        };
        let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (redriven, left) = {
            let broker = EmbeddedBroker::open_on(dir.path(), settings, disk.handle()).unwrap();
            let traced = SendOptions {
                trace_parent: Some(trace.into()),
                ..SendOptions::default()
            };
            let redriven = broker.send("q", b"bad".to_vec(), traced).await.unwrap();
            let left = broker
                .send("q", b"worse".to_vec(), SendOptions::now())
                .await
                .unwrap();
            for body in [b"p1", b"p2"] {
                broker
                    .send("other", body.to_vec(), SendOptions::now())
                    .await
                    .unwrap();
            }
            for delivery in broker
                .receive("q", request(MAX_BATCH, 60_000))
                .await
                .unwrap()
            {
                broker
                    .abandon("q", &delivery.receipt, Duration::ZERO)
                    .await
                    .unwrap();
            }
            assert!(
                broker
                    .receive("q", request(MAX_BATCH, 60_000))
                    .await
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(broker.len("q-poison").await.unwrap(), 2);
            assert_eq!(broker.purge("other").await.unwrap(), 2);
            let moved = broker
                .redrive("q", Some(std::slice::from_ref(&redriven)))
                .await
                .unwrap();
            assert_eq!(moved, [redriven.as_str()]);
            disk.cut_at_write(0, || false);
            (redriven, left)
        };
        let broker = EmbeddedBroker::open_on(dir.path(), settings, disk.handle()).unwrap();
        assert_eq!(broker.len("other").await.unwrap(), 0, "the purge was lost");
        let got = broker
            .receive("q", request(MAX_BATCH, 60_000))
            .await
            .unwrap();
        assert_eq!(got.len(), 1, "the redrive was lost");
        assert_eq!(
            (
                got[0].id.as_str(),
                got[0].dequeue_count,
                got[0].poison_reason.as_deref()
            ),
            (redriven.as_str(), 1, None)
        );
        assert_eq!(got[0].trace_parent.as_deref(), Some(trace));
        let poison = broker.peek("q-poison", MAX_BATCH).await.unwrap();
        assert_eq!(poison.len(), 1);
        assert_eq!(poison[0].id, left);
        assert!(poison[0].poison_reason.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_disk_holds_what_the_queues_hold_after_concurrent_settles() {
        let dir = tempfile::tempdir().unwrap();
        let settings = QueueSettings::default();
        let broker = std::sync::Arc::new(EmbeddedBroker::open(dir.path(), settings).unwrap());
        for i in 0..40u8 {
            broker.send("q", vec![i], SendOptions::now()).await.unwrap();
        }
        // Receivers racing on short leases: each delivery completed,
        // abandoned, extended or left to lapse. Every change reaches the
        // store in the rules' order, so nothing completed comes back and
        // every dequeue count on disk is the rules'.
        let workers = (0..4).map(|_| {
            let broker = broker.clone();
            tokio::spawn(async move {
                for _ in 0..150 {
                    let visibility = rand::random_range(1..4);
                    let got = broker.receive("q", request(4, visibility)).await.unwrap();
                    for d in got {
                        let _ = match rand::random_range(0..4) {
                            0 => broker.complete("q", &d.receipt).await,
                            1 => broker.abandon("q", &d.receipt, Duration::ZERO).await,
                            2 => {
                                broker
                                    .extend("q", &d.receipt, Duration::from_millis(2))
                                    .await
                            }
                            _ => Ok(()),
                        };
                    }
                }
            })
        });
        for worker in futures::future::join_all(workers).await {
            worker.unwrap();
        }
        let held = (
            broker.queues.contents("q"),
            broker.queues.contents("q-poison"),
        );
        broker.flush().await.unwrap();
        drop(broker);
        let reopened = EmbeddedBroker::open(dir.path(), settings).unwrap();
        let disk = (
            reopened.queues.contents("q"),
            reopened.queues.contents("q-poison"),
        );
        assert_eq!(disk, held);
    }

    #[test]
    fn the_store_and_its_folder_are_private_and_an_open_folder_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let chmod = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("home").join("state");
        let file = state.join(STORE_FILE);
        drop(EmbeddedBroker::open(&state, QueueSettings::default()).unwrap());
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&file), 0o600);
        // A store left readable by others (by an older Weft) is made private.
        chmod(&file, 0o644);
        drop(EmbeddedBroker::open(&state, QueueSettings::default()).unwrap());
        assert_eq!(mode(&file), 0o600);
        // A folder others can write to is refused, on one line naming it.
        for open in [0o770, 0o707, 0o777] {
            chmod(&state, open);
            let error = EmbeddedBroker::open(&state, QueueSettings::default()).unwrap_err();
            let message = error.to_string();
            assert!(matches!(error, StoreError::NotPrivate { .. }), "{message}");
            assert!(
                message.contains(&state.display().to_string())
                    && message.contains("writable by other users"),
                "{message}"
            );
            assert!(!message.contains('\n'));
        }
    }

    #[test]
    fn a_store_held_by_another_broker_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let _first = EmbeddedBroker::open(dir.path(), QueueSettings::default()).unwrap();
        let second = EmbeddedBroker::open(dir.path(), QueueSettings::default()).unwrap_err();
        let message = second.to_string();
        assert!(matches!(second, StoreError::Locked { .. }), "{message}");
        assert!(
            message.contains(STORE_FILE) && message.contains("in use"),
            "{message}"
        );
        assert!(!message.contains('\n'));
    }

    #[test]
    fn a_damaged_store_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STORE_FILE), vec![0x5a; 64 * 1024]).unwrap();
        let error = EmbeddedBroker::open(dir.path(), QueueSettings::default()).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{message}");
        assert!(
            message.contains(STORE_FILE) && message.contains("damaged"),
            "{message}"
        );

        // A real store with a page overwritten in the middle is caught by
        // redb's checksums, not trusted.
        let dir = tempfile::tempdir().unwrap();
        {
            let broker = EmbeddedBroker::open(dir.path(), QueueSettings::default()).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                for i in 0..200u32 {
                    broker
                        .send(
                            "q",
                            vec![u8::try_from(i % 256).unwrap(); 2000],
                            SendOptions::now(),
                        )
                        .await
                        .unwrap();
                }
            });
        }
        let path = dir.path().join(STORE_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        for b in &mut bytes[middle..middle + 8192] {
            *b ^= 0xff;
        }
        std::fs::write(&path, bytes).unwrap();
        let error = EmbeddedBroker::open(dir.path(), QueueSettings::default()).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    }

    #[tokio::test]
    async fn a_sweep_stops_at_its_cap_and_the_next_write_sweeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let broker = EmbeddedBroker::open(dir.path(), QueueSettings::default()).unwrap();
        let broker = std::sync::Arc::new(broker);
        let ttl = Some(Duration::from_millis(200));
        let settings = crate::BucketSettings { ttl };
        broker.configure_bucket("b", settings).await.unwrap();
        // Concurrent, so they share commits.
        let writes = (0..crate::expiry::MAX_SWEEP + 10).map(|i| {
            let broker = broker.clone();
            async move { broker.set("b", &format!("k{i:05}"), vec![1]).await }
        });
        for written in futures::future::join_all(writes).await {
            written.unwrap();
        }
        broker.set("kept", "k", vec![1]).await.unwrap();
        let store = broker.queues.persist();
        assert_eq!(store.kv_rows(), u64::try_from(MAX_SWEEP + 11).unwrap());
        tokio::time::sleep(Duration::from_millis(300)).await;
        // As if the period had passed: the next write sweeps.
        broker.expiry.sweep_soon();
        broker.set("kept", "k1", vec![1]).await.unwrap();
        assert_eq!(store.kv_rows(), 10 + 2, "the sweep did not stop at its cap");
        // It stopped at its cap, so the next write sweeps again.
        broker.set("kept", "k2", vec![1]).await.unwrap();
        assert_eq!(store.kv_rows(), 3);
        assert_eq!(broker.get("kept", "k").await.unwrap(), Some(vec![1]));
    }
}

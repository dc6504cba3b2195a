//! The in-process backend: queues and buckets in this process's memory.
//!
//! It keeps every promise of [`super::QueueBroker`] except durability: what it
//! holds is gone when the process exits. Time comes from `tokio::time`, so
//! tests drive leases with a paused clock instead of sleeping.

use super::{
    BrokerError, Delivery, KeyPage, KvStore, MAX_BATCH, MAX_MESSAGE_BYTES, POISON_SUFFIX,
    QueueBroker, QueueSettings, ReceiveRequest,
};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How many keys one `list_keys` page holds.
const KEY_PAGE: usize = 1000;

/// The most bytes (keys and values) one bucket holds in memory (64 MiB):
/// what a guest stores is host memory, so it is bounded like any host
/// allocation made on a guest's behalf.
pub const MAX_BUCKET_BYTES: usize = 64 * 1024 * 1024;

/// Queues and key-value buckets in memory.
#[derive(Debug, Default)]
pub struct MemoryBroker {
    settings: QueueSettings,
    queues: Mutex<HashMap<String, QueueState>>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Default)]
struct Bucket {
    entries: BTreeMap<String, Vec<u8>>,
    bytes: usize,
}

#[derive(Debug)]
struct StoredMessage {
    body: Vec<u8>,
    inserted_at_ms: u64,
    dequeue_count: u32,
    visible_at: Instant,
    seq: u64,
    /// The token of the current delivery's receipt, if it has been delivered.
    lease: Option<u64>,
}

#[derive(Debug, Default)]
struct QueueState {
    messages: HashMap<String, StoredMessage>,
    /// Messages ordered by when they become visible, then by send order.
    by_visibility: BTreeSet<(Instant, u64, String)>,
    next_seq: u64,
    /// Bytes of message bodies held.
    bytes: usize,
    /// Woken when a message may have become visible early (a send, an
    /// abandon, a move to this poison queue), so long-polls look again.
    arrivals: Arc<Notify>,
}

impl QueueState {
    fn insert(&mut self, id: String, body: Vec<u8>, inserted_at_ms: u64, visible_at: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += body.len();
        self.by_visibility.insert((visible_at, seq, id.clone()));
        self.messages.insert(
            id,
            StoredMessage {
                body,
                inserted_at_ms,
                dequeue_count: 0,
                visible_at,
                seq,
                lease: None,
            },
        );
    }

    fn set_visible_at(&mut self, id: &str, visible_at: Instant) {
        if let Some(message) = self.messages.get_mut(id) {
            self.by_visibility
                .remove(&(message.visible_at, message.seq, id.to_owned()));
            message.visible_at = visible_at;
            self.by_visibility
                .insert((visible_at, message.seq, id.to_owned()));
        }
    }

    fn remove(&mut self, id: &str) -> Option<StoredMessage> {
        let message = self.messages.remove(id)?;
        self.bytes -= message.body.len();
        self.by_visibility
            .remove(&(message.visible_at, message.seq, id.to_owned()));
        Some(message)
    }

    /// The id of the first message visible at `now`.
    fn first_visible(&self, now: Instant) -> Option<String> {
        self.by_visibility
            .first()
            .filter(|(visible_at, _, _)| *visible_at <= now)
            .map(|(_, _, id)| id.clone())
    }

    /// When the next message becomes visible, if any is waiting.
    fn next_visible_at(&self) -> Option<Instant> {
        self.by_visibility
            .first()
            .map(|(visible_at, _, _)| *visible_at)
    }
}

impl MemoryBroker {
    /// An empty broker with the given queue settings.
    pub fn new(settings: QueueSettings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    fn queues(&self) -> MutexGuard<'_, HashMap<String, QueueState>> {
        // A panic while holding the lock cannot leave a queue half-updated in
        // a way later calls would misread, so a poisoned lock is still usable.
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn buckets(&self) -> MutexGuard<'_, HashMap<String, Bucket>> {
        self.buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Leases up to `max` visible messages, moving those delivered too often
    /// to the poison queue. Returns the deliveries and, when there were none,
    /// when the next message becomes visible.
    fn take_visible(
        &self,
        queue: &str,
        max: u32,
        visibility_timeout: Duration,
    ) -> (Vec<Delivery>, Option<Instant>) {
        let now = Instant::now();
        let mut queues = self.queues();
        let mut deliveries = Vec::new();
        let mut poisoned = Vec::new();
        let Some(state) = queues.get_mut(queue) else {
            return (deliveries, None);
        };
        let is_poison_queue = queue.ends_with(POISON_SUFFIX);
        while deliveries.len() < usize::try_from(max).unwrap_or(usize::MAX) {
            let Some(id) = state.first_visible(now) else {
                break;
            };
            let exhausted = state
                .messages
                .get(&id)
                .is_some_and(|m| m.dequeue_count >= self.settings.max_deliveries);
            if exhausted && !is_poison_queue {
                if let Some(message) = state.remove(&id) {
                    poisoned.push((id, message));
                }
                continue;
            }
            let token: u64 = rand::random();
            state.set_visible_at(&id, now + visibility_timeout);
            let Some(message) = state.messages.get_mut(&id) else {
                break;
            };
            message.dequeue_count = message.dequeue_count.saturating_add(1);
            message.lease = Some(token);
            deliveries.push(Delivery {
                receipt: format!("{id}.{token:016x}"),
                body: message.body.clone(),
                dequeue_count: message.dequeue_count,
                inserted_at_ms: message.inserted_at_ms,
                id,
            });
        }
        let next = if deliveries.is_empty() {
            state.next_visible_at()
        } else {
            None
        };
        if !poisoned.is_empty() {
            let poison = queues.entry(format!("{queue}{POISON_SUFFIX}")).or_default();
            for (id, message) in poisoned {
                tracing::warn!(queue, message = %id, deliveries = message.dequeue_count, "message moved to poison queue");
                poison.insert(id, message.body, message.inserted_at_ms, now);
            }
            poison.arrivals.notify_waiters();
        }
        (deliveries, next)
    }

    /// Runs `f` on the message a receipt names, if the receipt's lease holds.
    fn with_lease<R>(
        &self,
        queue: &str,
        receipt: &str,
        f: impl FnOnce(&mut QueueState, &str) -> R,
    ) -> Result<R, BrokerError> {
        let stale = || BrokerError::NotFound("no current delivery has this receipt".into());
        let (id, token) = receipt.rsplit_once('.').ok_or_else(stale)?;
        let token = u64::from_str_radix(token, 16).map_err(|_| stale())?;
        let mut queues = self.queues();
        let state = queues.get_mut(queue).ok_or_else(stale)?;
        let message = state.messages.get(id).ok_or_else(stale)?;
        if message.lease != Some(token) || message.visible_at <= Instant::now() {
            return Err(stale());
        }
        Ok(f(state, id))
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[async_trait]
impl QueueBroker for MemoryBroker {
    async fn send(
        &self,
        queue: &str,
        body: Vec<u8>,
        delay: Duration,
    ) -> Result<String, BrokerError> {
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(BrokerError::TooLarge(format!(
                "message body is {} bytes; the limit is {MAX_MESSAGE_BYTES}",
                body.len()
            )));
        }
        let id = format!("{:032x}", rand::random::<u128>());
        let visible_at = Instant::now() + delay;
        let mut queues = self.queues();
        let state = queues.entry(queue.to_owned()).or_default();
        let QueueSettings {
            max_messages,
            max_bytes,
            ..
        } = self.settings;
        if state.messages.len() >= max_messages || state.bytes + body.len() > max_bytes {
            return Err(BrokerError::Unavailable(format!(
                "queue is full ({} messages, {} bytes; the limits are {max_messages} and {max_bytes})",
                state.messages.len(),
                state.bytes
            )));
        }
        state.insert(id.clone(), body, unix_millis(), visible_at);
        state.arrivals.notify_waiters();
        Ok(id)
    }

    async fn receive(
        &self,
        queue: &str,
        request: ReceiveRequest,
    ) -> Result<Vec<Delivery>, BrokerError> {
        if request.max_messages == 0 || request.max_messages > MAX_BATCH {
            return Err(BrokerError::Invalid(format!(
                "max-messages must be 1 to {MAX_BATCH}, not {}",
                request.max_messages
            )));
        }
        let give_up_at = Instant::now() + request.wait;
        let arrivals = self
            .queues()
            .entry(queue.to_owned())
            .or_default()
            .arrivals
            .clone();
        loop {
            // Register for wake-ups before looking, so a send that lands
            // between the look and the wait is not missed.
            let arrival = arrivals.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            let (deliveries, next_visible) =
                self.take_visible(queue, request.max_messages, request.visibility_timeout);
            let now = Instant::now();
            if !deliveries.is_empty() || now >= give_up_at {
                return Ok(deliveries);
            }
            let wake_at = next_visible.map_or(give_up_at, |next| next.min(give_up_at));
            tokio::select! {
                () = &mut arrival => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    async fn complete(&self, queue: &str, receipt: &str) -> Result<(), BrokerError> {
        self.with_lease(queue, receipt, |state, id| {
            state.remove(id);
        })
    }

    async fn abandon(&self, queue: &str, receipt: &str) -> Result<(), BrokerError> {
        self.with_lease(queue, receipt, |state, id| {
            state.set_visible_at(id, Instant::now());
            if let Some(message) = state.messages.get_mut(id) {
                message.lease = None;
            }
            state.arrivals.notify_waiters();
        })
    }

    async fn len(&self, queue: &str) -> Result<usize, BrokerError> {
        Ok(self
            .queues()
            .get(queue)
            .map_or(0, |state| state.messages.len()))
    }
}

#[async_trait]
impl KvStore for MemoryBroker {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        Ok(self
            .buckets()
            .get(bucket)
            .and_then(|b| b.entries.get(key).cloned()))
    }

    async fn set(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<(), BrokerError> {
        let mut buckets = self.buckets();
        let b = buckets.entry(bucket.to_owned()).or_default();
        let replaced = b.entries.get(key).map_or(0, |old| key.len() + old.len());
        let bytes = b.bytes - replaced + key.len() + value.len();
        if bytes > MAX_BUCKET_BYTES {
            return Err(BrokerError::Unavailable(format!(
                "bucket is full ({} bytes; the limit is {MAX_BUCKET_BYTES})",
                b.bytes
            )));
        }
        b.bytes = bytes;
        b.entries.insert(key.to_owned(), value);
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), BrokerError> {
        if let Some(b) = self.buckets().get_mut(bucket)
            && let Some(old) = b.entries.remove(key)
        {
            b.bytes -= key.len() + old.len();
        }
        Ok(())
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, BrokerError> {
        Ok(self
            .buckets()
            .get(bucket)
            .is_some_and(|b| b.entries.contains_key(key)))
    }

    async fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> Result<KeyPage, BrokerError> {
        let start = usize::try_from(cursor.unwrap_or(0))
            .map_err(|_| BrokerError::Invalid("cursor out of range".into()))?;
        let buckets = self.buckets();
        let Some(b) = buckets.get(bucket) else {
            return Ok(KeyPage::default());
        };
        let keys: Vec<String> = b
            .entries
            .keys()
            .skip(start)
            .take(KEY_PAGE)
            .cloned()
            .collect();
        let end = start + keys.len();
        let cursor = if end < b.entries.len() {
            u64::try_from(end).ok()
        } else {
            None
        };
        Ok(KeyPage { keys, cursor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(max: u32, visibility_ms: u64, wait_ms: u64) -> ReceiveRequest {
        ReceiveRequest {
            max_messages: max,
            visibility_timeout: Duration::from_millis(visibility_ms),
            wait: Duration::from_millis(wait_ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn complete_deletes_and_receipt_is_single_use() {
        let broker = MemoryBroker::default();
        let id = broker
            .send("q", b"hello".to_vec(), Duration::ZERO)
            .await
            .unwrap();
        let got = broker.receive("q", request(8, 1000, 0)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, id);
        assert_eq!(got[0].body, b"hello");
        assert_eq!(got[0].dequeue_count, 1);
        broker.complete("q", &got[0].receipt).await.unwrap();
        assert_eq!(broker.len("q").await.unwrap(), 0);
        assert!(matches!(
            broker.complete("q", &got[0].receipt).await,
            Err(BrokerError::NotFound(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn lapsed_lease_redelivers_and_refuses_the_old_receipt() {
        let broker = MemoryBroker::default();
        broker
            .send("q", b"x".to_vec(), Duration::ZERO)
            .await
            .unwrap();
        let first = broker.receive("q", request(1, 1000, 0)).await.unwrap();
        assert!(
            broker
                .receive("q", request(1, 1000, 0))
                .await
                .unwrap()
                .is_empty(),
            "leased message is hidden"
        );
        tokio::time::advance(Duration::from_millis(1001)).await;
        let second = broker.receive("q", request(1, 1000, 0)).await.unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].dequeue_count, 2);
        assert_ne!(second[0].receipt, first[0].receipt);
        assert!(matches!(
            broker.complete("q", &first[0].receipt).await,
            Err(BrokerError::NotFound(_))
        ));
        broker.complete("q", &second[0].receipt).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn abandon_makes_visible_at_once() {
        let broker = MemoryBroker::default();
        broker
            .send("q", b"x".to_vec(), Duration::ZERO)
            .await
            .unwrap();
        let first = broker.receive("q", request(1, 60_000, 0)).await.unwrap();
        broker.abandon("q", &first[0].receipt).await.unwrap();
        let again = broker.receive("q", request(1, 60_000, 0)).await.unwrap();
        assert_eq!(again[0].dequeue_count, 2);
        assert!(matches!(
            broker.abandon("q", &first[0].receipt).await,
            Err(BrokerError::NotFound(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn too_many_deliveries_moves_to_poison() {
        let broker = MemoryBroker::new(QueueSettings {
            max_deliveries: 2,
            ..QueueSettings::default()
        });
        let id = broker
            .send("q", b"bad".to_vec(), Duration::ZERO)
            .await
            .unwrap();
        for _ in 0..2 {
            let got = broker.receive("q", request(1, 1000, 0)).await.unwrap();
            broker.abandon("q", &got[0].receipt).await.unwrap();
        }
        assert!(
            broker
                .receive("q", request(1, 1000, 0))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(broker.len("q").await.unwrap(), 0);
        let poison = broker
            .receive("q-poison", request(1, 1000, 0))
            .await
            .unwrap();
        assert_eq!(poison[0].id, id);
        assert_eq!(poison[0].body, b"bad");
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_send_and_long_poll() {
        let broker = std::sync::Arc::new(MemoryBroker::default());
        broker
            .send("q", b"later".to_vec(), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            broker
                .receive("q", request(1, 1000, 1000))
                .await
                .unwrap()
                .is_empty()
        );
        // A waiting receiver wakes when the delayed message becomes visible.
        let got = broker.receive("q", request(1, 1000, 10_000)).await.unwrap();
        assert_eq!(got[0].body, b"later");
        // And when a new message is sent while it waits.
        let waiter = {
            let broker = broker.clone();
            tokio::spawn(async move { broker.receive("q2", request(1, 1000, 60_000)).await })
        };
        tokio::task::yield_now().await;
        broker
            .send("q2", b"now".to_vec(), Duration::ZERO)
            .await
            .unwrap();
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(got[0].body, b"now");
    }

    #[tokio::test]
    async fn limits_are_checked() {
        let broker = MemoryBroker::default();
        let big = vec![0; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            broker.send("q", big, Duration::ZERO).await,
            Err(BrokerError::TooLarge(_))
        ));
        assert!(
            broker
                .send("q", vec![0; MAX_MESSAGE_BYTES], Duration::ZERO)
                .await
                .is_ok()
        );
        assert!(matches!(
            broker.receive("q", request(0, 1, 0)).await,
            Err(BrokerError::Invalid(_))
        ));
        assert!(matches!(
            broker.receive("q", request(33, 1, 0)).await,
            Err(BrokerError::Invalid(_))
        ));
        assert!(matches!(
            broker.complete("q", "garbage").await,
            Err(BrokerError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn batch_is_fifo_and_bounded() {
        let broker = MemoryBroker::default();
        for i in 0..40u8 {
            broker.send("q", vec![i], Duration::ZERO).await.unwrap();
        }
        let got = broker.receive("q", request(32, 1000, 0)).await.unwrap();
        assert_eq!(got.len(), 32);
        let bodies: Vec<u8> = got.iter().map(|d| d.body[0]).collect();
        assert_eq!(bodies, (0..32).collect::<Vec<u8>>());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_sends_until_drained() {
        let settings = QueueSettings {
            max_messages: 3,
            max_bytes: 10,
            ..QueueSettings::default()
        };
        let broker = MemoryBroker::new(settings);
        for _ in 0..3 {
            broker
                .send("q", b"ab".to_vec(), Duration::ZERO)
                .await
                .unwrap();
        }
        let full = broker.send("q", b"a".to_vec(), Duration::ZERO).await;
        assert!(
            matches!(full, Err(BrokerError::Unavailable(ref why)) if why.contains("full")),
            "{full:?}"
        );
        // Other queues are not affected.
        broker
            .send("other", b"ab".to_vec(), Duration::ZERO)
            .await
            .unwrap();
        let got = broker.receive("q", request(1, 1000, 0)).await.unwrap();
        broker.complete("q", &got[0].receipt).await.unwrap();
        broker
            .send("q", b"ab".to_vec(), Duration::ZERO)
            .await
            .unwrap();
        // Bytes are bounded too: 4 × 2 bytes held, 3 more would pass 10.
        let bytes = MemoryBroker::new(QueueSettings {
            max_bytes: 10,
            ..QueueSettings::default()
        });
        bytes.send("q", vec![0; 8], Duration::ZERO).await.unwrap();
        assert!(bytes.send("q", vec![0; 3], Duration::ZERO).await.is_err());
    }

    #[tokio::test]
    async fn a_full_bucket_refuses_writes_and_counts_replacements() {
        let broker = MemoryBroker::default();
        let half = vec![0; MAX_BUCKET_BYTES / 2];
        broker.set("b", "a", half.clone()).await.unwrap();
        // Replacing a value does not count it twice.
        broker.set("b", "a", half.clone()).await.unwrap();
        assert!(matches!(
            broker.set("b", "b", half.clone()).await,
            Err(BrokerError::Unavailable(_))
        ));
        broker.delete("b", "a").await.unwrap();
        broker.set("b", "b", half).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_poison_queue_receiver_wakes_when_a_message_is_poisoned() {
        let broker = std::sync::Arc::new(MemoryBroker::new(QueueSettings {
            max_deliveries: 1,
            ..QueueSettings::default()
        }));
        broker
            .send("q", b"bad".to_vec(), Duration::ZERO)
            .await
            .unwrap();
        let first = broker.receive("q", request(1, 1000, 0)).await.unwrap();
        broker.abandon("q", &first[0].receipt).await.unwrap();
        let waiter = {
            let broker = broker.clone();
            tokio::spawn(async move { broker.receive("q-poison", request(1, 1000, 60_000)).await })
        };
        tokio::task::yield_now().await;
        let started = Instant::now();
        assert!(
            broker
                .receive("q", request(1, 1000, 0))
                .await
                .unwrap()
                .is_empty()
        );
        let poisoned = waiter.await.unwrap().unwrap();
        assert_eq!(poisoned[0].body, b"bad");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the poison receiver slept out its wait"
        );
    }

    #[tokio::test]
    async fn kv_pages_through_keys() {
        let broker = MemoryBroker::default();
        for i in 0..2500 {
            broker.set("b", &format!("k{i:05}"), vec![1]).await.unwrap();
        }
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = broker.list_keys("b", cursor).await.unwrap();
            all.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(all.len(), 2500);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        broker.delete("b", "k00000").await.unwrap();
        assert!(!broker.exists("b", "k00000").await.unwrap());
        assert_eq!(broker.get("b", "k00001").await.unwrap(), Some(vec![1]));
        assert_eq!(broker.get("other", "k").await.unwrap(), None);
    }
}

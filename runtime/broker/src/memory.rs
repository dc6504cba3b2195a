//! The in-process backend: queues and buckets in this process's memory.
//!
//! It keeps every promise of [`QueueBroker`](crate::QueueBroker) except
//! durability: what it holds is gone when the process exits. Its queues are
//! the bare [`rules`](crate::rules); time comes from `tokio::time`, so tests drive
//! leases with a paused clock instead of sleeping. Its buckets (`kv.rs`)
//! expire entries as [`expiry`](crate::expiry) says.

mod kv;

use crate::api::{BucketSettings, KeyPage, KvStore};
use crate::error::BrokerError;
use crate::limits::QueueSettings;
use crate::persist::Volatile;
use crate::queues::Queues;
use async_trait::async_trait;
use kv::Buckets;

/// Queues and key-value buckets in memory.
pub struct MemoryBroker {
    queues: Queues<Volatile>,
    kv: Buckets,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker").finish_non_exhaustive()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new(QueueSettings::default())
    }
}

impl MemoryBroker {
    /// An empty broker with the given queue settings.
    pub fn new(settings: QueueSettings) -> Self {
        Self {
            queues: Queues::new(settings, Volatile),
            kv: Buckets::default(),
        }
    }
}

crate::queues::queue_broker_over_queues!(MemoryBroker);

#[async_trait]
impl KvStore for MemoryBroker {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        Ok(self.kv.get(bucket, key, self.queues.now_ms()))
    }

    async fn set(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<(), BrokerError> {
        self.kv.set(bucket, key, value, self.queues.now_ms())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), BrokerError> {
        self.kv.delete(bucket, key);
        Ok(())
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, BrokerError> {
        Ok(self.kv.exists(bucket, key, self.queues.now_ms()))
    }

    async fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> Result<KeyPage, BrokerError> {
        self.kv.list_keys(bucket, cursor, self.queues.now_ms())
    }

    async fn configure_bucket(
        &self,
        bucket: &str,
        settings: BucketSettings,
    ) -> Result<(), BrokerError> {
        self.kv.configure(bucket, settings);
        Ok(())
    }

    async fn purge_bucket(&self, bucket: &str) -> Result<u64, BrokerError> {
        Ok(self.kv.purge(bucket, self.queues.now_ms()))
    }
}

#[cfg(test)]
mod conformance {
    use crate::conformance::{Backend, Guard, SETTINGS, conformance_tests};
    use std::sync::Arc;

    async fn memory() -> (Arc<dyn Backend>, Guard) {
        (Arc::new(super::MemoryBroker::new(SETTINGS)), Box::new(()))
    }

    conformance_tests!(memory);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MAX_MESSAGE_BYTES, POISON_RETRY, QueueBroker, ReceiveRequest, SendOptions};
    use std::time::Duration;
    use tokio::time::Instant;

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
            .send("q", b"hello".to_vec(), SendOptions::now())
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
            .send("q", b"x".to_vec(), SendOptions::now())
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
            .send("q", b"x".to_vec(), SendOptions::now())
            .await
            .unwrap();
        let first = broker.receive("q", request(1, 60_000, 0)).await.unwrap();
        broker
            .abandon("q", &first[0].receipt, Duration::ZERO)
            .await
            .unwrap();
        let again = broker.receive("q", request(1, 60_000, 0)).await.unwrap();
        assert_eq!(again[0].dequeue_count, 2);
        assert!(matches!(
            broker.abandon("q", &first[0].receipt, Duration::ZERO).await,
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
            .send("q", b"bad".to_vec(), SendOptions::now())
            .await
            .unwrap();
        for _ in 0..2 {
            let got = broker.receive("q", request(1, 1000, 0)).await.unwrap();
            broker
                .abandon("q", &got[0].receipt, Duration::ZERO)
                .await
                .unwrap();
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
    async fn a_message_waits_for_room_in_its_full_poison_queue_then_moves() {
        let broker = MemoryBroker::new(QueueSettings {
            max_deliveries: 1,
            max_messages: 2,
            ..QueueSettings::default()
        });
        for body in [b"p1", b"p2"] {
            broker
                .send("q-poison", body.to_vec(), SendOptions::now())
                .await
                .unwrap();
        }
        let id = broker
            .send("q", b"bad".to_vec(), SendOptions::now())
            .await
            .unwrap();
        let first = broker.receive("q", request(1, 10, 0)).await.unwrap();
        tokio::time::advance(Duration::from_millis(11)).await;
        let retry = POISON_RETRY + Duration::from_millis(1);
        for _ in 0..2 {
            // No room: it stays, hidden and undelivered, and tries again.
            assert!(
                broker
                    .receive("q", request(1, 10, 0))
                    .await
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(broker.len("q").await.unwrap(), 1);
            assert_eq!(broker.len("q-poison").await.unwrap(), 2);
            // The lapsed receipt does not settle it while it is hidden.
            assert!(matches!(
                broker.complete("q", &first[0].receipt).await,
                Err(BrokerError::NotFound(_))
            ));
            tokio::time::advance(retry).await;
        }
        // An operator drains one poison message: at its next try it moves.
        let drained = broker
            .receive("q-poison", request(1, 1000, 0))
            .await
            .unwrap();
        broker
            .complete("q-poison", &drained[0].receipt)
            .await
            .unwrap();
        assert!(
            broker
                .receive("q", request(1, 10, 0))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(broker.len("q").await.unwrap(), 0);
        let poison = broker.peek("q-poison", 2).await.unwrap();
        assert_eq!(poison.len(), 2);
        assert_eq!(poison[1].id, id);
        assert!(poison[1].poison_reason.is_some());

        // Bytes count as well as messages.
        let broker = MemoryBroker::new(QueueSettings {
            max_deliveries: 1,
            max_bytes: 10,
            ..QueueSettings::default()
        });
        broker
            .send("q-poison", vec![0; 8], SendOptions::now())
            .await
            .unwrap();
        broker
            .send("q", vec![1; 3], SendOptions::now())
            .await
            .unwrap();
        let got = broker.receive("q", request(1, 1000, 0)).await.unwrap();
        broker
            .abandon("q", &got[0].receipt, Duration::ZERO)
            .await
            .unwrap();
        assert!(
            broker
                .receive("q", request(1, 10, 0))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            (
                broker.len("q").await.unwrap(),
                broker.len("q-poison").await.unwrap()
            ),
            (1, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_send_and_long_poll() {
        let broker = std::sync::Arc::new(MemoryBroker::default());
        broker
            .send(
                "q",
                b"later".to_vec(),
                SendOptions::delayed(Duration::from_secs(5)),
            )
            .await
            .unwrap();
        assert!(
            broker
                .receive("q", request(1, 1000, 1000))
                .await
                .unwrap()
                .is_empty()
        );
        // A waiting receiver wakes when the delayed message becomes visible
        // (4 s on), not when its 10 s wait runs out.
        let waiting = tokio::time::Instant::now();
        let got = broker.receive("q", request(1, 1000, 10_000)).await.unwrap();
        assert_eq!(got[0].body, b"later");
        assert!(
            waiting.elapsed() < Duration::from_secs(5),
            "{:?}",
            waiting.elapsed()
        );
        // And when a new message is sent while it waits.
        let waiter = {
            let broker = broker.clone();
            tokio::spawn(async move { broker.receive("q2", request(1, 1000, 60_000)).await })
        };
        tokio::task::yield_now().await;
        let sent_at = tokio::time::Instant::now();
        broker
            .send("q2", b"now".to_vec(), SendOptions::now())
            .await
            .unwrap();
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(got[0].body, b"now");
        // Woken by the send, not by its wait running out (the paused clock
        // would have jumped the 60 s).
        assert_eq!(
            tokio::time::Instant::now(),
            sent_at,
            "the receiver slept on"
        );
    }

    #[tokio::test]
    async fn limits_are_checked() {
        let broker = MemoryBroker::default();
        let big = vec![0; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            broker.send("q", big, SendOptions::now()).await,
            Err(BrokerError::TooLarge(_))
        ));
        assert!(
            broker
                .send("q", vec![0; MAX_MESSAGE_BYTES], SendOptions::now())
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
            broker.send("q", vec![i], SendOptions::now()).await.unwrap();
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
                .send("q", b"ab".to_vec(), SendOptions::now())
                .await
                .unwrap();
        }
        let full = broker.send("q", b"a".to_vec(), SendOptions::now()).await;
        assert!(
            matches!(full, Err(BrokerError::Unavailable(ref why)) if why.contains("full")),
            "{full:?}"
        );
        // Other queues are not affected.
        broker
            .send("other", b"ab".to_vec(), SendOptions::now())
            .await
            .unwrap();
        let got = broker.receive("q", request(1, 1000, 0)).await.unwrap();
        broker.complete("q", &got[0].receipt).await.unwrap();
        broker
            .send("q", b"ab".to_vec(), SendOptions::now())
            .await
            .unwrap();
        // Bytes are bounded too: 4 × 2 bytes held, 3 more would pass 10.
        let bytes = MemoryBroker::new(QueueSettings {
            max_bytes: 10,
            ..QueueSettings::default()
        });
        bytes
            .send("q", vec![0; 8], SendOptions::now())
            .await
            .unwrap();
        assert!(
            bytes
                .send("q", vec![0; 3], SendOptions::now())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_poison_queue_receiver_wakes_when_a_message_is_poisoned() {
        let broker = std::sync::Arc::new(MemoryBroker::new(QueueSettings {
            max_deliveries: 1,
            ..QueueSettings::default()
        }));
        broker
            .send("q", b"bad".to_vec(), SendOptions::now())
            .await
            .unwrap();
        let first = broker.receive("q", request(1, 1000, 0)).await.unwrap();
        broker
            .abandon("q", &first[0].receipt, Duration::ZERO)
            .await
            .unwrap();
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
}

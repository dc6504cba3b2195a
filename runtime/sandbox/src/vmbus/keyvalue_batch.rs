//! Host side of the standard `wasi:keyvalue/batch`: `get-many`, `set-many`
//! and `delete-many` on a bucket opened through `wasi:keyvalue/store`
//! ([`super::keyvalue`]), whose per-instance state, key and value checks
//! and rate-limit bucket ([`BUCKET`]) they share.
//!
//! A batch is one call, however many keys it carries:
//! - at most [`MAX_BATCH_KEYS`] keys; more is refused
//!   (`error::other("set-many takes at most 32 keys per call, not 33")`)
//!   before anything else is checked. Zero keys is not an error: the call
//!   answers at once (nothing done, or an empty list), reaching no backend
//!   and so, like `open`, charged nothing;
//! - every key and value is checked as a single call checks it, all before
//!   anything is written: one bad entry refuses the whole batch;
//! - the rate limiter admits it as one operation carrying the bytes of every
//!   key and value (`get-many`'s values are charged once read, as `get`'s
//!   are), so a worker writing its batch's results pays one call per batch;
//! - the backend gets every key's operation at once, so the embedded store's
//!   writer lands a `set-many` in one group commit (one fsync, not one per
//!   key) and NATS pipelines them.
//!
//! As the WIT says, a batch is not atomic: when some keys fail, the others'
//! writes stand, and the call answers the first failure in the keys' order
//! once every operation has finished (a full bucket is the same
//! `bucket-full: ...` a single `set` answers). The order in which one
//! batch's keys are written is not promised, so a key given twice in one
//! `set-many` ends with either value. With tracing on, each call is one
//! `weft.vmbus` span (`keyvalue.get-many`, `keyvalue.set-many`,
//! `keyvalue.delete-many`) naming its `weft.bucket`.

use super::bindings::BucketHandle;
use super::bindings::wasi::keyvalue::batch::{self, Error, Host};
use super::keyvalue::{BUCKET, KEYS_PER_CALL, KvView, RATE_LIMITED, check_key, check_value};
use crate::rate_limit::byte_count;
use wasmtime::component::{HasData, Linker, Resource};
use weft_broker::BrokerError;

/// The most keys one batch call takes: as many as one queue `receive`
/// hands out (`weft_broker::MAX_BATCH`), so a worker writes its batch's
/// results in one call. Small enough that one call's work (32 values of up
/// to 1 MiB) stays bounded.
pub const MAX_BATCH_KEYS: usize = 32;

/// Marks [`KvView`] as the data `wasi:keyvalue/batch`'s host functions
/// borrow (the same view `wasi:keyvalue/store`'s take).
struct KeyValueBatch;

impl HasData for KeyValueBatch {
    type Data<'a> = KvView<'a>;
}

/// Links `wasi:keyvalue/batch` into `linker`, each call served on the view
/// `get` takes of the store's data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    batch::add_to_linker::<T, KeyValueBatch>(linker, get)
}

/// Refuses a batch of more than [`MAX_BATCH_KEYS`] keys.
fn check_count(call: &str, count: usize) -> Result<(), Error> {
    if count > MAX_BATCH_KEYS {
        return Err(Error::Other(format!(
            "{call} takes at most {MAX_BATCH_KEYS} {KEYS_PER_CALL}, not {count}"
        )));
    }
    Ok(())
}

/// Checks every key of a batch, as a single call checks its one.
fn check_keys(call: &str, keys: &[String]) -> Result<(), Error> {
    check_count(call, keys.len())?;
    keys.iter().try_for_each(|key| check_key(key))
}

/// The sum of `sizes`, saturating (a guest's lengths are hostile).
fn total(sizes: impl Iterator<Item = usize>) -> usize {
    sizes.fold(0, usize::saturating_add)
}

impl KvView<'_> {
    /// The backend's name for `bucket` once a batch call on it passes: the
    /// handle looked up (the outer error traps: a handle the guest does not
    /// own), then `checked` (the batch's count, keys and values, checked by
    /// the caller), then the rate limiter, admitting the batch as one call
    /// carrying `bytes`. `None` for an empty batch, which reaches no backend
    /// and is charged nothing.
    async fn admit_batch(
        &mut self,
        bucket: &Resource<BucketHandle>,
        count: usize,
        checked: Result<(), Error>,
        bytes: usize,
    ) -> wasmtime::Result<Result<Option<String>, Error>> {
        let name = self.table.get(bucket)?.scoped_name.clone();
        if let Err(e) = checked {
            return Ok(Err(e));
        }
        if count == 0 {
            return Ok(Ok(None));
        }
        let limiter = self.caller.limiter.clone();
        if limiter.admit(BUCKET, byte_count(bytes)).await.is_err() {
            return Ok(Err(Error::Other(RATE_LIMITED.into())));
        }
        Ok(Ok(Some(name)))
    }
}

/// Runs every operation of a batch at once, each its own task so the
/// backend sees them together (the embedded store's writer commits all
/// that wait in one transaction), and answers their outcomes in the
/// operations' order once every one has finished: a failure does not
/// leave the others running behind the guest's back.
async fn run_all<T, F>(ops: impl IntoIterator<Item = F>) -> Vec<Result<T, BrokerError>>
where
    T: Send + 'static,
    F: Future<Output = Result<T, BrokerError>> + Send + 'static,
{
    let tasks: Vec<_> = ops.into_iter().map(tokio::spawn).collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.unwrap_or_else(|e| {
            Err(BrokerError::Unavailable(format!(
                "key-value call failed: {e}"
            )))
        }));
    }
    outcomes
}

/// The outcomes of a batch's operations, or the first failure among them
/// in the keys' order.
fn first_failure<T>(outcomes: Vec<Result<T, BrokerError>>) -> Result<Vec<T>, Error> {
    outcomes
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(Error::from)
}

impl Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, Error>> {
        let span = self.call_span("keyvalue.get-many", &bucket);
        let result = async {
            let checked = check_keys("get-many", &keys);
            let bytes = total(keys.iter().map(String::len));
            let admitted = self.admit_batch(&bucket, keys.len(), checked, bytes);
            let name = match admitted.await? {
                Ok(Some(name)) => name,
                Ok(None) => return Ok(Ok(Vec::new())),
                Err(e) => return Ok(Err(e)),
            };
            let store = self.state.store.clone();
            let outcomes = run_all(keys.into_iter().map(|key| {
                let (store, name) = (store.clone(), name.clone());
                async move {
                    let value = store.get(&name, &key).await?;
                    Ok(value.map(|value| (key, value)))
                }
            }))
            .await;
            let entries = first_failure(outcomes);
            if let Ok(entries) = &entries {
                let read = total(entries.iter().flatten().map(|(_, value)| value.len()));
                self.caller.limiter.charge(BUCKET, byte_count(read));
            }
            Ok(entries)
        }
        .await;
        span.end_trapping(result)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let span = self.call_span("keyvalue.set-many", &bucket);
        let result = async {
            let checked = check_count("set-many", key_values.len()).and_then(|()| {
                key_values.iter().try_for_each(|(key, value)| {
                    check_key(key)?;
                    check_value(value)
                })
            });
            let bytes = total(
                key_values
                    .iter()
                    .map(|(key, value)| key.len().saturating_add(value.len())),
            );
            let admitted = self.admit_batch(&bucket, key_values.len(), checked, bytes);
            let name = match admitted.await? {
                Ok(Some(name)) => name,
                Ok(None) => return Ok(Ok(())),
                Err(e) => return Ok(Err(e)),
            };
            let store = self.state.store.clone();
            let outcomes = run_all(key_values.into_iter().map(|(key, value)| {
                let (store, name) = (store.clone(), name.clone());
                async move { store.set(&name, &key, value).await }
            }))
            .await;
            Ok(first_failure(outcomes).map(drop))
        }
        .await;
        span.end_trapping(result)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let span = self.call_span("keyvalue.delete-many", &bucket);
        let result = async {
            let checked = check_keys("delete-many", &keys);
            let bytes = total(keys.iter().map(String::len));
            let admitted = self.admit_batch(&bucket, keys.len(), checked, bytes);
            let name = match admitted.await? {
                Ok(Some(name)) => name,
                Ok(None) => return Ok(Ok(())),
                Err(e) => return Ok(Err(e)),
            };
            let store = self.state.store.clone();
            // Deleting a missing key is not an error (the broker's rule),
            // which is the WIT's "it skips the key".
            let outcomes = run_all(keys.into_iter().map(|key| {
                let (store, name) = (store.clone(), name.clone());
                async move { store.delete(&name, &key).await }
            }))
            .await;
            Ok(first_failure(outcomes).map(drop))
        }
        .await;
        span.end_trapping(result)
    }
}

#[cfg(test)]
mod tests {
    use super::super::bindings::wasi::keyvalue::store::Host as _;
    use super::super::keyvalue::tests::instance;
    use super::*;
    use crate::trace::CallError;
    use std::sync::Arc;
    use weft_broker::{KvStore, MAX_KEY_BYTES, MAX_VALUE_BYTES, MemoryBroker};

    /// `count` entries `<prefix>0`.. holding `v<i>`.
    fn entries(prefix: &str, count: usize) -> Vec<(String, Vec<u8>)> {
        (0..count)
            .map(|i| (format!("{prefix}{i}"), format!("v{i}").into_bytes()))
            .collect()
    }

    fn keys(prefix: &str, count: usize) -> Vec<String> {
        (0..count).map(|i| format!("{prefix}{i}")).collect()
    }

    /// A borrow of an open bucket, for one more call on it.
    fn again(bucket: &Resource<BucketHandle>) -> Resource<BucketHandle> {
        Resource::new_borrow(bucket.rep())
    }

    /// How many of `keys` the service's `cache` bucket holds.
    async fn held(broker: &MemoryBroker, keys: &[String]) -> usize {
        let mut held = 0;
        for key in keys {
            if broker.exists("svc/cache", key).await.unwrap() {
                held += 1;
            }
        }
        held
    }

    fn too_many(result: Result<impl std::fmt::Debug, Error>, call: &str) {
        match result {
            Err(Error::Other(why)) => {
                assert_eq!(
                    why,
                    format!("{call} takes at most 32 keys per call, not 33")
                );
            }
            other => panic!("{call} of 33 keys answered {other:?}"),
        }
    }

    #[test]
    fn the_limit_is_one_queue_batch() {
        assert_eq!(
            u32::try_from(MAX_BATCH_KEYS).unwrap(),
            weft_broker::MAX_BATCH
        );
    }

    /// 32 keys pass each call; 33 are refused before anything is written
    /// or read, and cost no token.
    #[tokio::test]
    async fn the_limit_bites_at_33_keys_and_32_pass() {
        let (mut state, caller, mut table, broker) = instance(3);
        let mut kv = KvView {
            state: &mut state,
            caller: &caller,
            table: &mut table,
        };
        let bucket = kv.open("cache".into()).await.unwrap().unwrap();

        too_many(
            kv.set_many(again(&bucket), entries("over", 33))
                .await
                .unwrap(),
            "set-many",
        );
        assert_eq!(held(&broker, &keys("over", 33)).await, 0);
        too_many(
            kv.get_many(again(&bucket), keys("k", 33)).await.unwrap(),
            "get-many",
        );
        too_many(
            kv.delete_many(again(&bucket), keys("k", 33)).await.unwrap(),
            "delete-many",
        );

        // The three refusals cost nothing: three calls a minute remain.
        kv.set_many(again(&bucket), entries("k", 32))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(held(&broker, &keys("k", 32)).await, 32);
        let got = kv
            .get_many(again(&bucket), keys("k", 32))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 32);
        assert!(got.iter().all(Option::is_some));
        kv.delete_many(bucket, keys("k", 32))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(held(&broker, &keys("k", 32)).await, 0);
    }

    /// A role allowed three calls a minute makes three batches of several
    /// keys each (one of every kind), and the fourth is refused as a single
    /// call is.
    #[tokio::test]
    async fn a_batch_costs_one_call_of_the_rate_limit() {
        let (mut state, caller, mut table, broker) = instance(3);
        let mut kv = KvView {
            state: &mut state,
            caller: &caller,
            table: &mut table,
        };
        let bucket = kv.open("cache".into()).await.unwrap().unwrap();
        kv.set_many(again(&bucket), entries("k", 8))
            .await
            .unwrap()
            .unwrap();
        let got = kv.get_many(again(&bucket), keys("k", 8)).await.unwrap();
        assert_eq!(got.unwrap().len(), 8);
        kv.delete_many(again(&bucket), keys("k", 4))
            .await
            .unwrap()
            .unwrap();
        match kv.set_many(bucket, entries("j", 8)).await.unwrap() {
            Err(Error::Other(why)) => assert_eq!(why, RATE_LIMITED),
            other => panic!("the fourth batch passed: {other:?}"),
        }
        assert_eq!(held(&broker, &keys("k", 8)).await, 4);
        assert_eq!(held(&broker, &keys("j", 8)).await, 0);
        let stats = caller.limiter.stats();
        let kv_stats = stats.iter().find(|s| s.interface == BUCKET).unwrap();
        assert_eq!((kv_stats.admitted, kv_stats.limited), (3, 1));
    }

    /// One key or value over its limit, anywhere in the batch, refuses the
    /// whole batch: nothing is written, and no token is spent.
    #[tokio::test]
    async fn one_bad_entry_refuses_the_whole_batch() {
        let (mut state, caller, mut table, broker) = instance(1);
        let mut kv = KvView {
            state: &mut state,
            caller: &caller,
            table: &mut table,
        };
        let bucket = kv.open("cache".into()).await.unwrap().unwrap();

        let mut long_key = entries("k", 5);
        long_key.push(("x".repeat(MAX_KEY_BYTES + 1), b"v".to_vec()));
        match kv.set_many(again(&bucket), long_key).await.unwrap() {
            Err(e @ Error::Other(_)) => assert_eq!(e.kind(), "too-large"),
            other => panic!("{other:?}"),
        }
        let mut large_value = entries("k", 5);
        large_value[2].1 = vec![0; MAX_VALUE_BYTES + 1];
        match kv.set_many(again(&bucket), large_value).await.unwrap() {
            Err(Error::Other(why)) => assert!(why.starts_with("value is "), "{why}"),
            other => panic!("{other:?}"),
        }
        let mut bad_keys = keys("k", 5);
        bad_keys.insert(0, "x".repeat(MAX_KEY_BYTES + 1));
        let refused = kv.delete_many(again(&bucket), bad_keys.clone()).await;
        assert!(matches!(refused.unwrap(), Err(Error::Other(_))));
        let refused = kv.get_many(again(&bucket), bad_keys).await;
        assert!(matches!(refused.unwrap(), Err(Error::Other(_))));
        assert_eq!(held(&broker, &keys("k", 5)).await, 0);

        // The refusals spent nothing: the one call a minute is still there.
        kv.set_many(bucket, entries("k", 5)).await.unwrap().unwrap();
        assert_eq!(held(&broker, &keys("k", 5)).await, 5);
    }

    /// `get-many` answers each key in the order asked, `None` for a missing
    /// one, a repeated key as often as it is asked.
    #[tokio::test]
    async fn get_many_answers_in_key_order_with_none_for_missing_keys() {
        let (mut state, caller, mut table, broker) = instance(10);
        let mut kv = KvView {
            state: &mut state,
            caller: &caller,
            table: &mut table,
        };
        let bucket = kv.open("cache".into()).await.unwrap().unwrap();
        broker.set("svc/cache", "a", b"1".to_vec()).await.unwrap();
        broker.set("svc/cache", "c", b"3".to_vec()).await.unwrap();
        let asked = ["c", "missing", "a", "b", "c"].map(String::from).to_vec();
        let got = kv.get_many(bucket, asked).await.unwrap().unwrap();
        let entry = |k: &str, v: &[u8]| Some((k.to_owned(), v.to_vec()));
        assert_eq!(
            got,
            [
                entry("c", b"3"),
                None,
                entry("a", b"1"),
                None,
                entry("c", b"3")
            ]
        );
    }

    /// `delete-many` deletes the keys there are and skips the missing ones.
    #[tokio::test]
    async fn delete_many_skips_missing_keys() {
        let (mut state, caller, mut table, broker) = instance(10);
        let mut kv = KvView {
            state: &mut state,
            caller: &caller,
            table: &mut table,
        };
        let bucket = kv.open("cache".into()).await.unwrap().unwrap();
        kv.set_many(again(&bucket), entries("k", 3))
            .await
            .unwrap()
            .unwrap();
        broker
            .set("svc/cache", "kept", b"v".to_vec())
            .await
            .unwrap();
        kv.delete_many(bucket, keys("k", 6)).await.unwrap().unwrap();
        assert_eq!(held(&broker, &keys("k", 6)).await, 0);
        assert!(broker.exists("svc/cache", "kept").await.unwrap());
    }

    /// An empty batch is no error: nothing to do, no backend reached, no
    /// token spent.
    #[tokio::test]
    async fn an_empty_batch_does_nothing_and_costs_nothing() {
        let (mut state, caller, mut table, _) = instance(1);
        let mut kv = KvView {
            state: &mut state,
            caller: &caller,
            table: &mut table,
        };
        let bucket = kv.open("cache".into()).await.unwrap().unwrap();
        for _ in 0..3 {
            let got = kv.get_many(again(&bucket), Vec::new()).await.unwrap();
            assert_eq!(got.unwrap(), []);
            kv.set_many(again(&bucket), Vec::new())
                .await
                .unwrap()
                .unwrap();
            kv.delete_many(again(&bucket), Vec::new())
                .await
                .unwrap()
                .unwrap();
        }
        kv.set_many(bucket, entries("k", 2)).await.unwrap().unwrap();
        let stats = caller.limiter.stats();
        let kv_stats = stats.iter().find(|s| s.interface == BUCKET).unwrap();
        assert_eq!((kv_stats.admitted, kv_stats.limited), (1, 0));
    }

    /// A handle the guest does not hold traps, as it does in single calls,
    /// however the batch would otherwise be answered.
    #[tokio::test]
    async fn a_bucket_not_held_traps() {
        let (mut state, caller, mut table, _) = instance(10);
        let mut kv = KvView {
            state: &mut state,
            caller: &caller,
            table: &mut table,
        };
        let stranger = || Resource::<BucketHandle>::new_borrow(7);
        assert!(kv.set_many(stranger(), entries("k", 1)).await.is_err());
        assert!(kv.set_many(stranger(), entries("k", 33)).await.is_err());
        assert!(kv.get_many(stranger(), Vec::new()).await.is_err());
        assert!(kv.delete_many(stranger(), keys("k", 1)).await.is_err());
    }

    /// A `set-many` into a full bucket answers the same `bucket-full: ...`
    /// a single `set` does; the entries that fit stay written.
    #[tokio::test]
    async fn a_full_bucket_refuses_set_many_as_it_does_set() {
        let (mut state, caller, mut table, broker) = instance(1000);
        let mut kv = KvView {
            state: &mut state,
            caller: &caller,
            table: &mut table,
        };
        let bucket = kv.open("cache".into()).await.unwrap().unwrap();
        let value = vec![0; MAX_VALUE_BYTES];
        let fits = weft_broker::MAX_BUCKET_BYTES / MAX_VALUE_BYTES;
        let mut refused = None;
        for batch in 0..=fits / MAX_BATCH_KEYS {
            let batch: Vec<_> = (0..MAX_BATCH_KEYS)
                .map(|i| (format!("b{batch}-{i}"), value.clone()))
                .collect();
            if let Err(e) = kv.set_many(again(&bucket), batch).await.unwrap() {
                refused = Some(e);
                break;
            }
        }
        match refused {
            Some(e @ Error::Other(_)) => {
                assert_eq!(e.kind(), "bucket-full");
                assert!(matches!(&e, Error::Other(why) if why.starts_with("bucket-full: ")));
            }
            other => panic!("a full bucket answered {other:?}"),
        }
        let written = broker.list_keys("svc/cache", None).await.unwrap().keys;
        assert!(!written.is_empty() && written.len() < fits + MAX_BATCH_KEYS);
    }

    /// With tracing on, each batch is one `weft.vmbus` span, naming its
    /// bucket and its outcome.
    #[tokio::test]
    async fn each_batch_is_one_span_naming_its_bucket_and_outcome() {
        use crate::trace::{current_request, kept_role, text};
        let (mut state, mut caller, mut table, _) = instance(2);
        let (kept, role) = kept_role();
        caller.trace = role.instance("req-1");
        let request = current_request(&role, &caller.trace);
        let mut kv = KvView {
            state: &mut state,
            caller: &caller,
            table: &mut table,
        };
        let bucket = kv.open("cache".into()).await.unwrap().unwrap();
        kv.set_many(again(&bucket), entries("k", 5))
            .await
            .unwrap()
            .unwrap();
        let refused = kv.delete_many(again(&bucket), keys("k", 33)).await;
        assert!(refused.unwrap().is_err());
        let got = kv.get_many(again(&bucket), keys("k", 5)).await.unwrap();
        assert_eq!(got.unwrap().len(), 5);
        // Two calls a minute: the third batch is refused.
        assert!(kv.delete_many(bucket, keys("k", 5)).await.unwrap().is_err());

        let spans = kept.0.lock().unwrap();
        let seen: Vec<_> = spans
            .iter()
            .map(|s| (text(s, "weft.call"), text(s, "weft.outcome")))
            .collect();
        assert_eq!(
            seen,
            [
                (Some("keyvalue.open"), Some("ok")),
                (Some("keyvalue.set-many"), Some("ok")),
                (Some("keyvalue.delete-many"), Some("too-large")),
                (Some("keyvalue.get-many"), Some("ok")),
                (Some("keyvalue.delete-many"), Some("rate-limited")),
            ]
        );
        assert!(
            spans
                .iter()
                .all(|s| text(s, "weft.bucket") == Some("cache"))
        );
        let parent = Some(request.context().span_id);
        assert!(spans.iter().all(|s| s.parent_span_id == parent));
    }

    /// The batch's operations really are in flight together: a backend
    /// that answers no `set` until all of a batch's have arrived still
    /// completes a `set-many` (one at a time, it would wait forever; the
    /// clock is paused, so the timeout fires only once nothing can move).
    #[tokio::test(start_paused = true)]
    async fn a_batch_reaches_the_backend_all_at_once() {
        let broker = Arc::new(MemoryBroker::default());
        let gate = Arc::new(Gate {
            inner: broker.clone(),
            barrier: tokio::sync::Barrier::new(MAX_BATCH_KEYS),
        });
        let (_, caller, mut table, _) = instance(10);
        let mut state = super::super::keyvalue::KvState::new(gate);
        let mut kv = KvView {
            state: &mut state,
            caller: &caller,
            table: &mut table,
        };
        let bucket = kv.open("cache".into()).await.unwrap().unwrap();
        let batch = kv.set_many(bucket, entries("k", MAX_BATCH_KEYS));
        let answered = tokio::time::timeout(std::time::Duration::from_secs(60), batch).await;
        answered
            .expect("the sets were not all in flight at once")
            .unwrap()
            .unwrap();
        assert_eq!(
            held(&broker, &keys("k", MAX_BATCH_KEYS)).await,
            MAX_BATCH_KEYS
        );
    }

    /// A store whose `set`s wait at a barrier until a whole batch has
    /// arrived.
    struct Gate {
        inner: Arc<MemoryBroker>,
        barrier: tokio::sync::Barrier,
    }

    #[async_trait::async_trait]
    impl KvStore for Gate {
        async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, BrokerError> {
            self.inner.get(bucket, key).await
        }
        async fn set(&self, bucket: &str, key: &str, value: Vec<u8>) -> Result<(), BrokerError> {
            self.barrier.wait().await;
            self.inner.set(bucket, key, value).await
        }
        async fn delete(&self, bucket: &str, key: &str) -> Result<(), BrokerError> {
            self.inner.delete(bucket, key).await
        }
        async fn exists(&self, bucket: &str, key: &str) -> Result<bool, BrokerError> {
            self.inner.exists(bucket, key).await
        }
        async fn list_keys(
            &self,
            bucket: &str,
            cursor: Option<u64>,
        ) -> Result<weft_broker::KeyPage, BrokerError> {
            self.inner.list_keys(bucket, cursor).await
        }
        async fn configure_bucket(
            &self,
            bucket: &str,
            settings: weft_broker::BucketSettings,
        ) -> Result<(), BrokerError> {
            self.inner.configure_bucket(bucket, settings).await
        }
        async fn purge_bucket(&self, bucket: &str) -> Result<u64, BrokerError> {
            self.inner.purge_bucket(bucket).await
        }
    }
}

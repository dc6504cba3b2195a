//! Host side of the standard `wasi:keyvalue/store`: buckets the role's
//! grants list, backed by the host's [`weft_broker::KvStore`]. Its
//! per-instance state is [`KvState`] (the backend, and how many buckets
//! are open); it draws on the [`BUCKET`] bucket. Its key and value limits
//! are the broker's ([`MAX_KEY_BYTES`], [`MAX_VALUE_BYTES`]), which every
//! backend holds too. Every call on an open bucket is charged as one
//! operation; `open` itself is checked against the grants but not charged
//! (it reaches no backend). With tracing on ([`crate::trace`]), every call but a
//! bucket's drop is a `weft.vmbus` span (`keyvalue.open`, `keyvalue.get`...)
//! naming its `weft.bucket`.
//!
//! `wasi:keyvalue/batch` (`super::keyvalue_batch`) works on the buckets
//! opened here, with this state, these checks and this rate-limit bucket.

use super::bindings::BucketHandle;
use super::bindings::wasi::keyvalue::store::{self, Error, Host, HostBucket, KeyResponse};
use super::caller::Caller;
use crate::rate_limit::{Interface, byte_count};
use crate::trace::{CallError, CallSpan, SpanKind};
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use weft_broker::{BrokerError, KvStore, MAX_KEY_BYTES, MAX_VALUE_BYTES};

/// The rate-limit bucket this interface draws on.
pub const BUCKET: Interface = Interface::Kv;

/// How many buckets one instance may hold open at once.
pub const MAX_OPEN_BUCKETS: usize = 64;

/// An instance's key-value state.
pub struct KvState {
    pub(super) store: Arc<dyn KvStore>,
    open_buckets: usize,
}

impl KvState {
    /// State for an instance whose buckets `store` holds.
    pub fn new(store: Arc<dyn KvStore>) -> Self {
        Self {
            store,
            open_buckets: 0,
        }
    }
}

/// What a `wasi:keyvalue` call works on: the instance's state, its caller,
/// and the table holding its open buckets.
pub struct KvView<'a> {
    /// The instance's key-value state.
    pub state: &'a mut KvState,
    /// Who calls.
    pub caller: &'a Caller,
    /// The instance's resource table.
    pub table: &'a mut ResourceTable,
}

/// Marks [`KvView`] as the data `wasi:keyvalue`'s host functions borrow.
struct KeyValue;

impl HasData for KeyValue {
    type Data<'a> = KvView<'a>;
}

/// Links `wasi:keyvalue/store` into `linker`, each call served on the view
/// `get` takes of the store's data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, KeyValue>(linker, get)
}

/// How a guest's `error::other` for a full bucket begins: the standard
/// WIT has no variant for it, and a guest must tell it from `unavailable`
/// (retrying soon does not help; expiry or an operator does). The Rust SDK
/// maps it to `weft_sdk::kv::Error::BucketFull`.
pub const BUCKET_FULL: &str = "bucket-full";

impl From<BrokerError> for Error {
    fn from(error: BrokerError) -> Self {
        match error {
            BrokerError::BucketFull(why) => Error::Other(format!("{BUCKET_FULL}: {why}")),
            other => Error::Other(other.to_string()),
        }
    }
}

/// Refuses a key over the broker's limit (every backend's).
pub(super) fn check_key(key: &str) -> Result<(), Error> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::Other(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

/// Refuses a value over the broker's limit (every backend's).
pub(super) fn check_value(value: &[u8]) -> Result<(), Error> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::Other(format!(
            "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

/// How the `error::other` for a batch over the per-call key limit ends
/// (`set-many takes at most 32 keys per call, not 33`), so that its span
/// names it `too-large` as it does an oversized key.
pub(super) const KEYS_PER_CALL: &str = "keys per call";

/// What a guest sees when its key-value rate limit is spent
/// (`wasi:keyvalue` has no variant of its own for it).
pub const RATE_LIMITED: &str = "rate-limited; retry later";

/// A key-value error's kind, as its call's span names it: the standard
/// variants, and the kinds this host puts in `other` (the rate limit, a
/// full bucket, a key, value or batch too large, the broker's kind).
impl CallError for Error {
    fn kind(&self) -> &'static str {
        match self {
            Error::NoSuchStore => "no-such-store",
            Error::AccessDenied => "access-denied",
            Error::Other(why) if why == RATE_LIMITED => "rate-limited",
            Error::Other(why) if why.starts_with(BUCKET_FULL) => "bucket-full",
            Error::Other(why)
                if why.starts_with("key is ")
                    || why.starts_with("value is ")
                    || why.contains(KEYS_PER_CALL) =>
            {
                "too-large"
            }
            Error::Other(why) => match why.split_once(':').map(|(kind, _)| kind) {
                Some("too large") => "too-large",
                Some("not found") => "not-found",
                Some("invalid") => "invalid",
                Some("unavailable") => "unavailable",
                _ => "other",
            },
        }
    }
}

impl KvView<'_> {
    /// The `weft.vmbus` span of `call` on an open `bucket`, named as the
    /// guest opened it (looked up only while tracing is on).
    pub(super) fn call_span(
        &self,
        call: &'static str,
        bucket: &Resource<BucketHandle>,
    ) -> CallSpan {
        CallSpan::start(&self.caller.trace, call, SpanKind::Internal).on("weft.bucket", || {
            let scoped = self
                .table
                .get(bucket)
                .map_or("", |b| b.scoped_name.as_str());
            let service = self.caller.grants.service.as_str();
            scoped
                .strip_prefix(service)
                .and_then(|name| name.strip_prefix('/'))
                .unwrap_or(scoped)
                .to_owned()
        })
    }

    /// The backend's name for an open bucket, once the key is checked and
    /// the call (carrying `bytes`) admitted by the role's rate limits. The
    /// outer error traps (a handle the guest does not own); the inner one
    /// is the guest's.
    async fn prepare(
        &mut self,
        bucket: &Resource<BucketHandle>,
        key: &str,
        bytes: usize,
    ) -> wasmtime::Result<Result<String, Error>> {
        let name = self.table.get(bucket)?.scoped_name.clone();
        if let Err(e) = check_key(key) {
            return Ok(Err(e));
        }
        let tokens = byte_count(key.len().saturating_add(bytes));
        let limiter = self.caller.limiter.clone();
        if limiter.admit(BUCKET, tokens).await.is_err() {
            return Ok(Err(Error::Other(RATE_LIMITED.into())));
        }
        Ok(Ok(name))
    }

    /// A call on one key that neither carries a value nor is charged for
    /// one (delete, exists): its span, the key's checks, then `op` on the
    /// store with the bucket's backend name.
    async fn on_key<T, F>(
        &mut self,
        call: &'static str,
        bucket: &Resource<BucketHandle>,
        key: &str,
        op: impl FnOnce(Arc<dyn KvStore>, String) -> F,
    ) -> wasmtime::Result<Result<T, Error>>
    where
        F: Future<Output = Result<T, BrokerError>>,
    {
        let span = self.call_span(call, bucket);
        let result = async {
            let name = match self.prepare(bucket, key, 0).await? {
                Ok(name) => name,
                Err(e) => return Ok(Err(e)),
            };
            let store = self.state.store.clone();
            Ok(op(store, name).await.map_err(Error::from))
        }
        .await;
        span.end_trapping(result)
    }
}

impl Host for KvView<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<BucketHandle>, Error>> {
        let span = CallSpan::start(&self.caller.trace, "keyvalue.open", SpanKind::Internal)
            .on("weft.bucket", || identifier.clone());
        // Opening is not charged to the rate limit: it reaches no backend
        // (a grant lookup and a handle, at most [`MAX_OPEN_BUCKETS`] held),
        // and charging it made a handler that opens its bucket per request
        // pay two calls for one write. It is still checked against the
        // grants, so an ungranted bucket is denied however often it is asked.
        let result = async {
            if !self.caller.grants.buckets.contains(&identifier) {
                return Ok(Err(Error::AccessDenied));
            }
            if self.state.open_buckets >= MAX_OPEN_BUCKETS {
                return Ok(Err(Error::Other(format!(
                    "at most {MAX_OPEN_BUCKETS} buckets may be open at once"
                ))));
            }
            let handle = BucketHandle {
                scoped_name: self.caller.scoped(&identifier),
            };
            let resource = self.table.push(handle)?;
            self.state.open_buckets += 1;
            Ok(Ok(resource))
        }
        .await;
        span.end_trapping(result)
    }
}

impl HostBucket for KvView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let span = self.call_span("keyvalue.get", &bucket);
        let result = async {
            let name = match self.prepare(&bucket, &key, 0).await? {
                Ok(name) => name,
                Err(e) => return Ok(Err(e)),
            };
            let value = self.state.store.get(&name, &key).await.map_err(Error::from);
            if let Ok(Some(bytes)) = &value {
                self.caller.limiter.charge(BUCKET, byte_count(bytes.len()));
            }
            Ok(value)
        }
        .await;
        span.end_trapping(result)
    }

    async fn set(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let span = self.call_span("keyvalue.set", &bucket);
        let result = async {
            if let Err(e) = check_value(&value) {
                return Ok(Err(e));
            }
            let name = match self.prepare(&bucket, &key, value.len()).await? {
                Ok(name) => name,
                Err(e) => return Ok(Err(e)),
            };
            Ok(self
                .state
                .store
                .set(&name, &key, value)
                .await
                .map_err(Error::from))
        }
        .await;
        span.end_trapping(result)
    }

    async fn delete(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let key = key.as_str();
        self.on_key("keyvalue.delete", &bucket, key, |store, name| async move {
            store.delete(&name, key).await
        })
        .await
    }

    async fn exists(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let key = key.as_str();
        self.on_key("keyvalue.exists", &bucket, key, |store, name| async move {
            store.exists(&name, key).await
        })
        .await
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<KeyResponse, Error>> {
        let span = self.call_span("keyvalue.list-keys", &bucket);
        let result = async {
            let name = match self.prepare(&bucket, "", 0).await? {
                Ok(name) => name,
                Err(e) => return Ok(Err(e)),
            };
            let page = self
                .state
                .store
                .list_keys(&name, cursor)
                .await
                .map_err(Error::from);
            if let Ok(page) = &page {
                self.caller
                    .limiter
                    .charge(BUCKET, byte_count(page.keys.iter().map(String::len).sum()));
            }
            Ok(page.map(|page| KeyResponse {
                keys: page.keys,
                cursor: page.cursor,
            }))
        }
        .await;
        span.end_trapping(result)
    }

    async fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        self.state.open_buckets = self.state.open_buckets.saturating_sub(1);
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::grants::Grants;
    use crate::rate_limit::{BucketConfig, InterfaceLimits, RateLimits, RoleLimiter};
    use weft_broker::MemoryBroker;

    /// An instance of a role granted bucket `cache`, allowed `ops` key-value
    /// calls a minute.
    pub(crate) fn instance(ops: u64) -> (KvState, Caller, ResourceTable, Arc<MemoryBroker>) {
        let broker = Arc::new(MemoryBroker::default());
        let grants = Grants {
            service: "svc".into(),
            role: "web".into(),
            buckets: ["cache".to_owned()].into(),
            ..Grants::default()
        };
        let limits = RateLimits::default()
            .with(
                BUCKET,
                InterfaceLimits {
                    ops: Some(BucketConfig {
                        size: ops,
                        refill_ms: 60_000,
                        burst: 0,
                    }),
                    bytes: None,
                },
            )
            .with_max_wait_ms(0);
        let caller = Caller::new(Arc::new(grants), Arc::new(RoleLimiter::new(&limits)));
        (
            KvState::new(broker.clone()),
            caller,
            ResourceTable::new(),
            broker,
        )
    }

    #[tokio::test]
    async fn only_granted_buckets_open_scoped_by_service_within_the_rate() {
        let (mut state, caller, mut table, broker) = instance(3);
        let mut kv = KvView {
            state: &mut state,
            caller: &caller,
            table: &mut table,
        };
        assert!(matches!(
            kv.open("other".into()).await.unwrap(),
            Err(Error::AccessDenied)
        ));
        let bucket = kv.open("cache".into()).await.unwrap().unwrap();
        kv.set(
            Resource::new_borrow(bucket.rep()),
            "k".into(),
            b"v".to_vec(),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            broker.get("svc/cache", "k").await.unwrap(),
            Some(b"v".to_vec())
        );
        let rep = bucket.rep();
        let got = kv.get(Resource::new_borrow(rep), "k".into()).await;
        assert_eq!(got.unwrap().unwrap(), Some(b"v".to_vec()));
        let exists = kv.exists(Resource::new_borrow(rep), "k".into()).await;
        assert!(exists.unwrap().unwrap());
        // Three calls a minute: the fourth is refused, not trapped.
        match kv.get(bucket, "k".into()).await.unwrap() {
            Err(Error::Other(why)) => assert_eq!(why, RATE_LIMITED),
            other => panic!("{other:?}"),
        }
    }

    /// Opening a bucket reaches no backend and costs no tokens: a role
    /// allowed one call a minute opens as many buckets as it may hold, and
    /// still has its call; an ungranted bucket stays denied, and the rate
    /// still bites on the calls that reach the store.
    #[tokio::test]
    async fn opening_buckets_costs_no_tokens_but_is_still_granted() {
        let (mut state, caller, mut table, _) = instance(1);
        let mut kv = KvView {
            state: &mut state,
            caller: &caller,
            table: &mut table,
        };
        let mut opened = Vec::new();
        for _ in 0..MAX_OPEN_BUCKETS {
            opened.push(kv.open("cache".into()).await.unwrap().unwrap());
            assert!(matches!(
                kv.open("other".into()).await.unwrap(),
                Err(Error::AccessDenied)
            ));
        }
        // The cap on open handles holds without the rate limit's help.
        assert!(matches!(
            kv.open("cache".into()).await.unwrap(),
            Err(Error::Other(why)) if why.starts_with("at most")
        ));
        let last = opened.pop().unwrap();
        for bucket in opened {
            kv.drop(bucket).await.unwrap();
        }
        let handle = Resource::new_borrow(last.rep());
        kv.set(handle, "k".into(), b"v".to_vec())
            .await
            .unwrap()
            .unwrap();
        match kv.get(last, "k".into()).await.unwrap() {
            Err(Error::Other(why)) => assert_eq!(why, RATE_LIMITED),
            other => panic!("the second call a minute passed: {other:?}"),
        }
        let stats = caller.limiter.stats();
        let kv_stats = stats.iter().find(|s| s.interface == BUCKET).unwrap();
        assert_eq!((kv_stats.admitted, kv_stats.limited), (1, 1));
    }

    /// A full bucket reaches the guest as `other("bucket-full: ...")`, its
    /// reason kept; the bucket's other errors keep their own words.
    #[tokio::test]
    async fn a_full_bucket_is_a_distinct_error_for_the_guest() {
        let (mut state, caller, mut table, broker) = instance(1000);
        let mut kv = KvView {
            state: &mut state,
            caller: &caller,
            table: &mut table,
        };
        let bucket = kv.open("cache".into()).await.unwrap().unwrap();
        let value = vec![0; MAX_VALUE_BYTES];
        let mut refused = None;
        for i in 0..=weft_broker::MAX_BUCKET_BYTES / MAX_VALUE_BYTES {
            let handle = Resource::new_borrow(bucket.rep());
            if let Err(e) = kv
                .set(handle, format!("k{i}"), value.clone())
                .await
                .unwrap()
            {
                refused = Some(e);
                break;
            }
        }
        match refused {
            Some(Error::Other(why)) => {
                assert!(why.starts_with("bucket-full: "), "{why}");
                assert!(why.contains("limit"), "{why}");
            }
            other => panic!("a full bucket answered {other:?}"),
        }
        // A neighbour bucket of the same service still takes writes.
        broker.set("svc/other", "k", b"v".to_vec()).await.unwrap();
        match Error::from(BrokerError::Unavailable("down".into())) {
            Error::Other(why) => assert_eq!(why, "unavailable: down"),
            other => panic!("{other:?}"),
        }
    }
    /// With tracing on, each call is a `weft.vmbus` span under the
    /// instance's current span, naming its bucket and its outcome.
    #[tokio::test]
    async fn each_call_is_a_span_naming_its_bucket_and_outcome() {
        use crate::trace::{current_request, kept_role, text};
        let (mut state, mut caller, mut table, _) = instance(1);
        let (kept, role) = kept_role();
        caller.trace = role.instance("req-1");
        let request = current_request(&role, &caller.trace);
        let mut kv = KvView {
            state: &mut state,
            caller: &caller,
            table: &mut table,
        };
        let bucket = kv.open("cache".into()).await.unwrap().unwrap();
        let handle = Resource::new_borrow(bucket.rep());
        kv.set(handle, "k".into(), b"v".to_vec())
            .await
            .unwrap()
            .unwrap();
        // One call a minute (opening is free): the second is refused.
        assert!(kv.get(bucket, "k".into()).await.unwrap().is_err());

        let spans = kept.0.lock().unwrap();
        let seen: Vec<_> = spans
            .iter()
            .map(|s| {
                (
                    text(s, "weft.call"),
                    text(s, "weft.bucket"),
                    text(s, "weft.outcome"),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (Some("keyvalue.open"), Some("cache"), Some("ok")),
                (Some("keyvalue.set"), Some("cache"), Some("ok")),
                (Some("keyvalue.get"), Some("cache"), Some("rate-limited")),
            ]
        );
        let parent = Some(request.context().span_id);
        assert!(spans.iter().all(|s| s.parent_span_id == parent));
    }

    #[test]
    fn error_kinds_name_what_the_guest_was_told() {
        let kind = |e: Error| e.kind();
        assert_eq!(kind(Error::Other(RATE_LIMITED.into())), "rate-limited");
        assert_eq!(
            kind(BrokerError::BucketFull("x".into()).into()),
            "bucket-full"
        );
        assert_eq!(
            kind(BrokerError::Unavailable("x".into()).into()),
            "unavailable"
        );
        assert_eq!(kind(Error::Other("key is 9 bytes".into())), "too-large");
        assert_eq!(kind(Error::AccessDenied), "access-denied");
        assert_eq!(kind(Error::Other("surprise".into())), "other");
    }
}

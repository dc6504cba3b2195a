//! Host side of the standard `wasi:keyvalue/store`: buckets the role's
//! grants list, backed by the host's [`weft_broker::KvStore`]. Its
//! per-instance state is [`KvState`] (the backend, and how many buckets
//! are open); it draws on the [`BUCKET`] bucket. Its key and value limits
//! are the broker's ([`MAX_KEY_BYTES`], [`MAX_VALUE_BYTES`]), which every
//! backend holds too.

use super::bindings::BucketHandle;
use super::bindings::wasi::keyvalue::store::{self, Error, Host, HostBucket, KeyResponse};
use super::caller::Caller;
use crate::rate_limit::{Interface, byte_count};
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use weft_broker::{BrokerError, KvStore, MAX_KEY_BYTES, MAX_VALUE_BYTES};

/// The rate-limit bucket this interface draws on.
pub const BUCKET: Interface = Interface::Kv;

/// How many buckets one instance may hold open at once.
pub const MAX_OPEN_BUCKETS: usize = 64;

/// An instance's key-value state.
pub struct KvState {
    store: Arc<dyn KvStore>,
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

impl From<BrokerError> for Error {
    fn from(error: BrokerError) -> Self {
        Error::Other(error.to_string())
    }
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::Other(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

/// What a guest sees when its key-value rate limit is spent
/// (`wasi:keyvalue` has no variant of its own for it).
pub const RATE_LIMITED: &str = "rate-limited; retry later";

impl KvView<'_> {
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
}

impl Host for KvView<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<BucketHandle>, Error>> {
        let limiter = self.caller.limiter.clone();
        if limiter.admit(BUCKET, 0).await.is_err() {
            return Ok(Err(Error::Other(RATE_LIMITED.into())));
        }
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
}

impl HostBucket for KvView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
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

    async fn set(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        if value.len() > MAX_VALUE_BYTES {
            return Ok(Err(Error::Other(format!(
                "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
                value.len()
            ))));
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

    async fn delete(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let name = match self.prepare(&bucket, &key, 0).await? {
            Ok(name) => name,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self
            .state
            .store
            .delete(&name, &key)
            .await
            .map_err(Error::from))
    }

    async fn exists(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let name = match self.prepare(&bucket, &key, 0).await? {
            Ok(name) => name,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self
            .state
            .store
            .exists(&name, &key)
            .await
            .map_err(Error::from))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<KeyResponse, Error>> {
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

    async fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        self.state.open_buckets = self.state.open_buckets.saturating_sub(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::Grants;
    use crate::rate_limit::{BucketConfig, InterfaceLimits, RateLimits, RoleLimiter};
    use weft_broker::MemoryBroker;

    /// An instance of a role granted bucket `cache`, allowed `ops` key-value
    /// calls a minute.
    fn instance(ops: u64) -> (KvState, Caller, ResourceTable, Arc<MemoryBroker>) {
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
        kv.set(bucket, "k".into(), b"v".to_vec())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            broker.get("svc/cache", "k").await.unwrap(),
            Some(b"v".to_vec())
        );
        // Three calls a minute: the fourth is refused, not trapped.
        match kv.open("cache".into()).await.unwrap() {
            Err(Error::Other(why)) => assert_eq!(why, RATE_LIMITED),
            other => panic!("{other:?}"),
        }
    }
}

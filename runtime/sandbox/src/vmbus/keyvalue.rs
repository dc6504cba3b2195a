//! Host side of the standard `wasi:keyvalue/store`: buckets the role's
//! grants list, backed by the host's [`weft_broker::KvStore`].

use super::VmBusView;
use super::bindings::wasi::keyvalue::store::{Error, Host, HostBucket, KeyResponse};
use super::queue::byte_count;
use crate::rate_limit::Interface;
use wasmtime::component::Resource;
use weft_broker::BrokerError;

/// The longest key a guest may use, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// The largest value a guest may store, in bytes (1 MiB): values are copied
/// through host memory, so their size is bounded like any host allocation
/// made on a guest's behalf.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// How many buckets one instance may hold open at once.
pub const MAX_OPEN_BUCKETS: usize = 64;

/// An open bucket: the backend's (service-scoped) bucket name.
#[derive(Debug)]
pub struct BucketHandle {
    scoped_name: String,
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

impl VmBusView<'_> {
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
        let limiter = self.ctx.limiter.clone();
        if limiter.admit(Interface::Kv, tokens).await.is_err() {
            return Ok(Err(Error::Other(RATE_LIMITED.into())));
        }
        Ok(Ok(name))
    }
}

impl Host for VmBusView<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<BucketHandle>, Error>> {
        let limiter = self.ctx.limiter.clone();
        if limiter.admit(Interface::Kv, 0).await.is_err() {
            return Ok(Err(Error::Other(RATE_LIMITED.into())));
        }
        if !self.ctx.grants.buckets.contains(&identifier) {
            return Ok(Err(Error::AccessDenied));
        }
        if self.ctx.open_buckets >= MAX_OPEN_BUCKETS {
            return Ok(Err(Error::Other(format!(
                "at most {MAX_OPEN_BUCKETS} buckets may be open at once"
            ))));
        }
        let handle = BucketHandle {
            scoped_name: self.ctx.scoped(&identifier),
        };
        let resource = self.table.push(handle)?;
        self.ctx.open_buckets += 1;
        Ok(Ok(resource))
    }
}

impl HostBucket for VmBusView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let name = match self.prepare(&bucket, &key, 0).await? {
            Ok(name) => name,
            Err(e) => return Ok(Err(e)),
        };
        let value = self.ctx.kv.get(&name, &key).await.map_err(Error::from);
        if let Ok(Some(bytes)) = &value {
            self.ctx
                .limiter
                .charge(Interface::Kv, byte_count(bytes.len()));
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
            .ctx
            .kv
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
        Ok(self.ctx.kv.delete(&name, &key).await.map_err(Error::from))
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
        Ok(self.ctx.kv.exists(&name, &key).await.map_err(Error::from))
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
            .ctx
            .kv
            .list_keys(&name, cursor)
            .await
            .map_err(Error::from);
        if let Ok(page) = &page {
            self.ctx.limiter.charge(
                Interface::Kv,
                byte_count(page.keys.iter().map(String::len).sum()),
            );
        }
        Ok(page.map(|page| KeyResponse {
            keys: page.keys,
            cursor: page.cursor,
        }))
    }

    async fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        self.ctx.open_buckets = self.ctx.open_buckets.saturating_sub(1);
        Ok(())
    }
}

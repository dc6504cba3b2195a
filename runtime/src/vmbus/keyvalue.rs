//! Host side of the standard `wasi:keyvalue/store`: buckets the role's
//! grants list, backed by the host's [`crate::broker::KvStore`].

use super::VmBusView;
use super::bindings::wasi::keyvalue::store::{Error, Host, HostBucket, KeyResponse};
use crate::broker::BrokerError;
use wasmtime::component::Resource;

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

impl VmBusView<'_> {
    fn bucket(&self, bucket: &Resource<BucketHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(bucket)?.scoped_name.clone())
    }
}

impl Host for VmBusView<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<BucketHandle>, Error>> {
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
        let name = self.bucket(&bucket)?;
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        Ok(self.ctx.kv.get(&name, &key).await.map_err(Error::from))
    }

    async fn set(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let name = self.bucket(&bucket)?;
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Ok(Err(Error::Other(format!(
                "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
                value.len()
            ))));
        }
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
        let name = self.bucket(&bucket)?;
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        Ok(self.ctx.kv.delete(&name, &key).await.map_err(Error::from))
    }

    async fn exists(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let name = self.bucket(&bucket)?;
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        Ok(self.ctx.kv.exists(&name, &key).await.map_err(Error::from))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<KeyResponse, Error>> {
        let name = self.bucket(&bucket)?;
        Ok(self
            .ctx
            .kv
            .list_keys(&name, cursor)
            .await
            .map(|page| KeyResponse {
                keys: page.keys,
                cursor: page.cursor,
            })
            .map_err(Error::from))
    }

    async fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        self.ctx.open_buckets = self.ctx.open_buckets.saturating_sub(1);
        Ok(())
    }
}

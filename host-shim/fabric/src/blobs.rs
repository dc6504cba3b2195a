//! Components in the fabric's object store, by digest: the operator CLI
//! uploads each role's component under `sha256-<hex>`, and each host
//! downloads the ones its part of a service needs.
//!
//! A host runs only what the fabric's operators signed, and the signed
//! desired state names components by digest. The object store checks its
//! own digest when an object is read, but that only proves the chunks match
//! the metadata some writer published alongside them: anyone who can write
//! to the bucket can publish other bytes, with matching metadata, under a
//! digest's name. So [`download`] re-hashes what it read and refuses bytes
//! that are not the digest they are named by: the signed digest, not the
//! store, is what a host trusts.

use crate::error::{FabricError, one_line};
use crate::names::blob_name;
use crate::store::FabricStore;
use async_nats::jetstream::object_store::{GetErrorKind, InfoErrorKind, ObjectInfo};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use std::time::Duration;
use tokio::io::AsyncReadExt as _;
use weft_host::controller::store::Digest;

/// Uploads `bytes` as the component `digest`; they must hash to it.
/// Returns true if it uploaded them, false if an intact copy is there
/// already (the stored object's own digest and size are those of these
/// bytes, so the upload is skipped without reading it back).
pub async fn upload(
    store: &FabricStore,
    digest: &Digest,
    bytes: bytes::Bytes,
) -> Result<bool, FabricError> {
    let actual = Digest::of(&bytes);
    if actual != *digest {
        return Err(FabricError::Blob(format!(
            "the bytes given for component sha256:{}… hash to sha256:{}…; nothing was uploaded",
            digest.short(),
            actual.short()
        )));
    }
    let name = blob_name(digest);
    let objects = store.blob_store();
    match objects.info(&name).await {
        Ok(info) if holds(&info, digest, bytes.len()) => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == InfoErrorKind::NotFound => {}
        Err(e) => return Err(FabricError::store(e)),
    }
    // Other bytes under this name (or a deleted object) are replaced: the
    // store purges the old chunks once the new metadata is published.
    objects
        .put(name.as_str(), &mut bytes.as_ref())
        .await
        .map_err(FabricError::store)?;
    Ok(true)
}

/// Whether the object `info` describes is `size` bytes whose SHA-256 is
/// `digest`, by the store's own record of what was put.
fn holds(info: &ObjectInfo, digest: &Digest, size: usize) -> bool {
    !info.deleted
        && info.size == size
        && info
            .digest
            .as_deref()
            .is_some_and(|stored| object_store_digest(digest).as_deref() == Some(stored))
}

/// `digest` as the object store records one: `SHA-256=` and the raw
/// 32 bytes in padded URL-safe base64.
fn object_store_digest(digest: &Digest) -> Option<String> {
    let text = digest.to_string();
    let hex = text.strip_prefix("sha256:")?;
    let raw = (0..hex.len())
        .step_by(2)
        .map(|at| {
            hex.get(at..at.saturating_add(2))
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()?;
    Some(format!("SHA-256={}", URL_SAFE.encode(raw)))
}

/// The time to open an object, and to read one besides its size's share.
const DOWNLOAD_BASE: Duration = Duration::from_secs(30);

/// How long reading `size` bytes may take: [`DOWNLOAD_BASE`] and a second
/// per MiB.
fn download_within(size: usize) -> Duration {
    let mib = u64::try_from(size / (1024 * 1024)).unwrap_or(u64::MAX);
    DOWNLOAD_BASE.saturating_add(Duration::from_secs(mib))
}

/// The component `digest` from the fabric's object store, read up to
/// `max_bytes` (a larger one is refused, unread), re-hashed, and refused
/// unless it is the digest it is named by. Bounded in time (a stalled
/// read is a [`FabricError::Store`] error): 30 s to open, and 30 s and
/// a second per MiB of the stored size to read.
pub async fn download(
    store: &FabricStore,
    digest: &Digest,
    max_bytes: usize,
) -> Result<bytes::Bytes, FabricError> {
    // Bounded: an object whose metadata names chunks that never come
    // would otherwise hold the caller (the agent's apply loop) forever.
    let stalled = |within: Duration| {
        FabricError::Store(format!(
            "fetching component sha256:{}… from the object store: no end within {} s",
            digest.short(),
            within.as_secs()
        ))
    };
    let opened = tokio::time::timeout(DOWNLOAD_BASE, store.blob_store().get(blob_name(digest)));
    let Ok(opened) = opened.await else {
        return Err(stalled(DOWNLOAD_BASE));
    };
    let mut object = match opened {
        Ok(object) => object,
        Err(e) if e.kind() == GetErrorKind::NotFound => {
            return Err(FabricError::Blob(format!(
                "component sha256:{}… is not in the fabric's object store",
                digest.short()
            )));
        }
        Err(e) => return Err(FabricError::store(e)),
    };
    let too_large = || {
        FabricError::Blob(format!(
            "component sha256:{}… in the object store is larger than the {max_bytes}-byte limit",
            digest.short()
        ))
    };
    if object.info().size > max_bytes {
        return Err(too_large());
    }
    // The size in the metadata is the writer's word; the reader's limit is
    // what bounds memory.
    let limit = u64::try_from(max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let within = download_within(object.info().size);
    let mut read = Vec::with_capacity(object.info().size);
    let mut taken = (&mut object).take(limit);
    let reading = taken.read_to_end(&mut read);
    let Ok(outcome) = tokio::time::timeout(within, reading).await else {
        return Err(stalled(within));
    };
    let mismatch = || {
        FabricError::Blob(format!(
            "component sha256:{}… in the object store does not match its name",
            digest.short()
        ))
    };
    match outcome {
        Ok(_) => {}
        // The store's own check: the chunks are not what its metadata says.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Err(mismatch()),
        Err(e) => {
            return Err(FabricError::Store(format!(
                "reading component sha256:{}…: {}",
                digest.short(),
                one_line(&e.to_string())
            )));
        }
    }
    if read.len() > max_bytes {
        return Err(too_large());
    }
    if Digest::of(&read) != *digest {
        return Err(mismatch());
    }
    Ok(bytes::Bytes::from(read))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::NatsServer;

    /// `size` bytes that are not all alike (so chunks differ).
    fn component(size: usize, seed: u8) -> bytes::Bytes {
        (0..size)
            .map(|i| u8::try_from(i % 251).unwrap() ^ seed)
            .collect::<Vec<u8>>()
            .into()
    }

    #[tokio::test]
    async fn a_component_uploads_and_downloads_intact() {
        let server = NatsServer::start();
        let store = server.store().await;
        let bytes = component(3 * 1024 * 1024, 7);
        let digest = Digest::of(&bytes);
        assert!(upload(&store, &digest, bytes.clone()).await.unwrap());
        let read = download(&store, &digest, 4 * 1024 * 1024).await.unwrap();
        assert_eq!(read, bytes);
        let error = download(&store, &digest, 1024 * 1024).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "component sha256:{}… in the object store is larger than the 1048576-byte limit",
                digest.short()
            )
        );
        let missing = Digest::of(b"never uploaded");
        let error = download(&store, &missing, 1024).await.unwrap_err();
        assert!(matches!(error, FabricError::Blob(_)), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!(
                "component sha256:{}… is not in the fabric's object store",
                missing.short()
            )
        );
    }

    #[tokio::test]
    async fn other_bytes_under_a_digest_are_refused_then_replaced() {
        let server = NatsServer::start();
        let store = server.store().await;
        let bytes = component(200 * 1024, 1);
        let digest = Digest::of(&bytes);
        // Someone with write access to the bucket plants other bytes (the
        // store's own digest matches them) under the component's name.
        let planted = component(200 * 1024, 2);
        store
            .blob_store()
            .put(blob_name(&digest).as_str(), &mut planted.as_ref())
            .await
            .unwrap();
        let error = download(&store, &digest, 1024 * 1024).await.unwrap_err();
        assert!(matches!(error, FabricError::Blob(_)), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!(
                "component sha256:{}… in the object store does not match its name",
                digest.short()
            )
        );
        // An upload does not trust the planted copy: it replaces it.
        assert!(upload(&store, &digest, bytes.clone()).await.unwrap());
        assert_eq!(download(&store, &digest, 1024 * 1024).await.unwrap(), bytes);
    }

    #[tokio::test]
    async fn upload_is_idempotent_and_checks_the_bytes() {
        let server = NatsServer::start();
        let store = server.store().await;
        let bytes = component(300 * 1024, 3);
        let digest = Digest::of(&bytes);
        assert!(upload(&store, &digest, bytes.clone()).await.unwrap());
        assert!(!upload(&store, &digest, bytes.clone()).await.unwrap());
        let other = Digest::of(b"other");
        let error = upload(&store, &other, bytes).await.unwrap_err();
        assert!(matches!(error, FabricError::Blob(_)), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!(
                "the bytes given for component sha256:{}… hash to sha256:{}…; nothing was uploaded",
                other.short(),
                digest.short()
            )
        );
        assert!(matches!(
            store.blob_store().info(blob_name(&other)).await,
            Err(e) if e.kind() == InfoErrorKind::NotFound
        ));
    }
}

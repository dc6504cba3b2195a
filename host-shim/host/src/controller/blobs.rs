//! The state folder's component blobs as the controller keeps them: stored
//! when a client uploads one, kept while a record, a running service or a
//! change under way names it, and swept an hour after nothing does.
//!
//! Blobs that no record in the state folder (deployed or not: a service
//! that failed to redeploy keeps its record), no running service and no
//! deploy or upgrade under way names are deleted an hour after they were
//! last stored or asked about, after the next deploy, upgrade or removal
//! (so an upload has time to be deployed, and a rolled-back version's
//! component goes away). Uploads never deployed are bounded in count and
//! bytes.

use super::error::ControllerError;
use super::lock::lock;
use super::store::{DeploymentSource, Digest, StateDir};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long an unreferenced blob is kept after it was written.
const BLOB_GRACE: Duration = Duration::from_secs(60 * 60);
/// The most blobs uploaded and not (yet) deployed the host keeps, and
/// their bytes: a client that uploads and never deploys cannot fill the
/// disk during [`BLOB_GRACE`]. Ample for a team's uploads ahead of deploys.
const MAX_UNDEPLOYED_BLOBS: usize = 64;
const MAX_UNDEPLOYED_BLOB_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// The blobs in the state folder, and those changes under way need.
pub(super) struct Blobs {
    state: StateDir,
    /// The components of deploys and upgrades being built, counted: the
    /// sweep keeps them though no record names them yet.
    incoming: Mutex<BTreeMap<Digest, usize>>,
    /// Held while blobs are swept, and while one is checked or stored, so
    /// a blob a client was just told is there is not deleted under it.
    sweeping: Arc<Mutex<()>>,
}

impl Blobs {
    /// The blobs of `state`.
    pub(super) fn new(state: StateDir) -> Self {
        Self {
            state,
            incoming: Mutex::new(BTreeMap::new()),
            sweeping: Arc::new(Mutex::new(())),
        }
    }

    /// Keeps `source`'s components from the sweep until the guard drops.
    pub(super) fn hold(&self, source: &DeploymentSource) -> Incoming<'_> {
        Incoming::new(&self.incoming, source)
    }

    /// The components of deploys and upgrades being built.
    pub(super) fn held(&self) -> BTreeSet<Digest> {
        lock(&self.incoming).keys().cloned().collect()
    }

    /// Whether blob `digest` is stored intact (which gives it a fresh
    /// grace period); a damaged one is not, so the client uploads it again.
    /// Hashed on a blocking thread.
    pub(super) async fn has(&self, digest: &Digest) -> bool {
        let (state, sweeping, digest) = (self.state.clone(), self.sweeping.clone(), digest.clone());
        tokio::task::spawn_blocking(move || {
            let _sweeping = lock(&sweeping);
            state.has_blob(&digest)
        })
        .await
        .unwrap_or(false)
    }

    /// Stores `bytes`, which must hash to `digest` (replacing a damaged
    /// copy), unless uploads never deployed would pass their bounds;
    /// `used` holds what running services and changes under way need.
    /// Hashed and written on a blocking thread.
    pub(super) async fn put(
        &self,
        digest: &Digest,
        bytes: bytes::Bytes,
        used: BTreeSet<Digest>,
    ) -> Result<(), ControllerError> {
        let (state, sweeping, digest) = (self.state.clone(), self.sweeping.clone(), digest.clone());
        tokio::task::spawn_blocking(move || {
            let actual = Digest::of(&bytes);
            if actual != digest {
                return Err(ControllerError::Invalid(format!(
                    "the body's digest is {actual}, not {digest}"
                )));
            }
            let _sweeping = lock(&sweeping);
            room_for_undeployed(&state, used, &digest, bytes.len())?;
            state
                .put_blob(&bytes)
                .map(|_| ())
                .map_err(|e| ControllerError::Internal(format!("cannot store the blob: {e}")))
        })
        .await
        .unwrap_or_else(|e| Err(ControllerError::Internal(format!("storing the blob: {e}"))))
    }

    /// Deletes the blobs nothing needs: neither a record in the state
    /// folder (a service that failed to redeploy keeps its record, and may
    /// be redeployed or removed), nor `used` (running services and changes
    /// under way), once they are old enough that no client could be about
    /// to name them; and the temporary files of uploads a crash cut short.
    /// The folder is read on a blocking thread.
    pub(super) async fn sweep(&self, used: BTreeSet<Digest>) {
        let (state, sweeping) = (self.state.clone(), self.sweeping.clone());
        let swept = tokio::task::spawn_blocking(move || sweep(&state, &sweeping, used)).await;
        if let Err(e) = swept {
            tracing::warn!(error = %e, "the blob sweep failed");
        }
    }
}

/// Keeps the components of a deploy or upgrade from the sweep until dropped.
pub(super) struct Incoming<'a> {
    counts: &'a Mutex<BTreeMap<Digest, usize>>,
    digests: Vec<Digest>,
}

impl<'a> Incoming<'a> {
    fn new(counts: &'a Mutex<BTreeMap<Digest, usize>>, source: &DeploymentSource) -> Self {
        let digests: Vec<Digest> = source.components.values().cloned().collect();
        let mut held = lock(counts);
        for digest in &digests {
            *held.entry(digest.clone()).or_default() += 1;
        }
        Self { counts, digests }
    }
}

impl Drop for Incoming<'_> {
    fn drop(&mut self) {
        let mut held = lock(self.counts);
        for digest in &self.digests {
            if let Some(count) = held.get_mut(digest) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    held.remove(digest);
                }
            }
        }
    }
}

/// Refuses a new blob of `len` bytes if the blobs nothing uses (nor any
/// record) would then pass [`MAX_UNDEPLOYED_BLOBS`] or
/// [`MAX_UNDEPLOYED_BLOB_BYTES`]. One already stored costs nothing more.
fn room_for_undeployed(
    state: &StateDir,
    mut used: BTreeSet<Digest>,
    digest: &Digest,
    len: usize,
) -> Result<(), ControllerError> {
    if state.has_blob(digest) {
        return Ok(());
    }
    for (_, record) in state.records() {
        if let Ok(record) = record {
            used.extend(record.source.components.into_values());
        }
    }
    let (count, bytes) = state.unused_blobs(&used);
    let len = u64::try_from(len).unwrap_or(u64::MAX);
    if count >= MAX_UNDEPLOYED_BLOBS || bytes.saturating_add(len) > MAX_UNDEPLOYED_BLOB_BYTES {
        return Err(ControllerError::Conflict(format!(
            "the host holds {count} components ({bytes} bytes) uploaded and not deployed; \
             the limit is {MAX_UNDEPLOYED_BLOBS} ({MAX_UNDEPLOYED_BLOB_BYTES} bytes): deploy them, \
             or wait for those unused for an hour to be removed"
        )));
    }
    Ok(())
}

/// [`Blobs::sweep`]' work on the folder: `used` holds what
/// running services and changes under way need; every record adds its own.
fn sweep(state: &StateDir, sweeping: &Mutex<()>, mut used: BTreeSet<Digest>) {
    for (name, record) in state.records() {
        match record {
            Ok(record) => used.extend(record.source.components.into_values()),
            Err(why) => {
                // Its blobs are unknown: keep every blob.
                tracing::warn!(service = %name, error = %why, "cannot read a record; no blob is swept");
                return;
            }
        }
    }
    let _sweeping = lock(sweeping);
    for digest in state.blobs() {
        let old_enough = state.blob_age(&digest).is_some_and(|age| age >= BLOB_GRACE);
        if old_enough && !used.contains(&digest) {
            state.remove_blob(&digest);
        }
    }
    state.remove_stale_temporaries();
}

#[cfg(test)]
mod undeployed_blob_tests {
    use super::super::store::DeploymentRecord;
    use super::super::store::Layout;
    use super::*;
    use crate::environment::Overrides;

    #[test]
    fn blobs_uploaded_and_never_deployed_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path(), Layout::Host).unwrap();
        let upload = |i: usize| -> Result<Digest, ControllerError> {
            let bytes = format!("component {i}").into_bytes();
            let digest = Digest::of(&bytes);
            room_for_undeployed(&state, BTreeSet::new(), &digest, bytes.len())?;
            Ok(state.put_blob(&bytes).unwrap())
        };
        let first = upload(0).unwrap();
        for i in 1..MAX_UNDEPLOYED_BLOBS {
            upload(i).unwrap();
        }
        let refused = upload(MAX_UNDEPLOYED_BLOBS).unwrap_err();
        assert!(
            matches!(refused, ControllerError::Conflict(ref why) if why.contains("not deployed")),
            "{refused:?}"
        );
        // Uploading one already stored again costs nothing.
        assert!(room_for_undeployed(&state, BTreeSet::new(), &first, 100).is_ok());
        // A blob a record names is deployed, so no longer counted.
        let record = DeploymentRecord {
            source: DeploymentSource {
                manifest_file: "weft.toml".into(),
                manifest: "[service]\nname = \"x\"\n".into(),
                environment: None,
                components: [("web".to_owned(), first)].into(),
            },
            overrides: Overrides::default(),
            generation: 1,
            local: None,
        };
        state.save_record("x", &record).unwrap();
        upload(MAX_UNDEPLOYED_BLOBS).unwrap();
        // Bytes are bounded too, whatever the count.
        let big = Digest::of(b"big");
        let too_big = usize::try_from(MAX_UNDEPLOYED_BLOB_BYTES).unwrap();
        let empty = tempfile::tempdir().unwrap();
        let state = StateDir::open(empty.path(), Layout::Host).unwrap();
        assert!(room_for_undeployed(&state, BTreeSet::new(), &big, too_big).is_ok());
        assert!(room_for_undeployed(&state, BTreeSet::new(), &big, too_big + 1).is_err());
    }
}

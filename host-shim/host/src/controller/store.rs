//! The host's state folder: component blobs named by their SHA-256, and
//! each deployed service's record, so a restarted host redeploys them.
//!
//! ```text
//! STATE/blobs/sha256/HEX                  component bytes, named by content
//! STATE/services/NAME/deployment.json     the service's deployment record
//! STATE/services/NAME/queues.redb         its queues and buckets (embedded)
//! STATE/services/NAME/scratch/...         its roles' scratch folders
//! ```
//!
//! `weft up` keeps one service, whose folder is STATE itself (as it always
//! has), and writes no record: it deploys its manifest afresh at each
//! start. A host whose services are recorded elsewhere (a store that many
//! hosts share) lays its services out as `weft host` does but keeps no
//! record either ([`Layout::Fabric`]): what it runs is that store's to say,
//! and the same folder opened later as a plain host must not redeploy it. Every file is written to a temporary name, fsynced, then renamed,
//! so a crash leaves the old file or the new one, never half of one.
//!
//! The folder is private whatever the umask: every folder made here is
//! `0700` and every file `0600` ([`weft_sandbox::private_fs`]), and every
//! folder used (the root, the blob folder, each service's) is refused if
//! another user owns it or could write to it, since whoever can write there
//! can plant a component or a record. A blob is checked against its digest
//! whenever it is loaded or asked about, so a damaged one is never run and
//! is replaced by the next upload of its bytes.
//!
//! What a record holds, and a blob's name ([`Digest`]), are defined in
//! `store/deployment.rs`; this module keeps them on disk.

mod deployment;

pub use deployment::{DeploymentRecord, DeploymentSource, Digest, DigestError, ResolveError};
use std::path::{Path, PathBuf};
use std::time::Duration;
use weft_sandbox::private_fs::{self, PrivateFsError};

/// The file a service's record is kept in.
const RECORD_FILE: &str = "deployment.json";
/// A temporary file this old in the state folder was left by a killed
/// writer (see [`private_fs::remove_stale_temporaries`]).
const STALE_TEMPORARY: Duration = Duration::from_secs(10 * 60);

/// Why a stored blob cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// No blob of that digest is stored.
    #[error("was not uploaded")]
    Missing,
    /// The file's bytes do not hash to its name: damaged on disk, or
    /// planted. It is never loaded; uploading the component again replaces it.
    #[error(
        "is damaged in the host's state folder (its bytes hash to {actual}); upload it again (deploy or upgrade again) to repair it"
    )]
    Damaged {
        /// What the bytes there hash to.
        actual: Digest,
    },
    /// The file cannot be read.
    #[error("cannot be read from the host's state folder: {0}")]
    Unreadable(std::io::Error),
}

/// Why the state folder, or a record in it, cannot be used. Paths are
/// fields; the messages are the ones the host has always printed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A folder of the state folder cannot be made private, or another
    /// user owns it or could write to it (the error names the folder).
    #[error("the state folder is not safe to use: {0}")]
    Unsafe(PrivateFsError),
    /// A service's record cannot be encoded.
    #[error("cannot save the deployment record: {error}")]
    EncodeRecord {
        /// The record's file.
        path: PathBuf,
        /// Why.
        error: serde_json::Error,
    },
    /// A service's record cannot be written (the error names the file or
    /// folder).
    #[error("cannot save the deployment record: {error}")]
    SaveRecord {
        /// The record's file.
        path: PathBuf,
        /// Why.
        error: PrivateFsError,
    },
    /// The blocking task that writes a record failed.
    #[error("cannot save the deployment record: {error}")]
    SaveTask {
        /// The record's file.
        path: PathBuf,
        /// Why.
        error: tokio::task::JoinError,
    },
    /// A service's record cannot be removed.
    #[error("cannot remove the record: {error}")]
    RemoveRecord {
        /// The record's file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A service's folder others could write to: its record is not
    /// followed (the error names the folder).
    #[error("{0}")]
    UntrustedRecord(PrivateFsError),
    /// A service's record cannot be read.
    #[error("{}: {error}", path.display())]
    UnreadableRecord {
        /// The record's file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A service's record is not a record.
    #[error("{}: {error}", path.display())]
    MalformedRecord {
        /// The record's file.
        path: PathBuf,
        /// Why.
        error: serde_json::Error,
    },
}

/// How the state folder is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `weft host`: many services, each in `services/NAME`, with records.
    Host,
    /// `weft up`: one service in the folder itself, no records.
    Single,
    /// A host told what to run by a store outside it: each service in
    /// `services/NAME` as [`Layout::Host`], but no record is saved, read
    /// or removed, since that store holds them.
    Fabric,
}

impl Layout {
    /// Whether services have folders of their own under `services/`.
    fn has_services_folder(self) -> bool {
        matches!(self, Self::Host | Self::Fabric)
    }
}

/// The state folder.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    layout: Layout,
}

impl StateDir {
    /// Opens the folder, creating what is missing (private); refuses one
    /// another user owns or could write to, and removes temporary files a
    /// killed writer left.
    pub fn open(root: &Path, layout: Layout) -> Result<Self, StoreError> {
        let state = Self {
            root: root.to_path_buf(),
            layout,
        };
        let mut folders = vec![root.to_path_buf(), root.join("blobs"), state.blob_dir()];
        if layout.has_services_folder() {
            folders.push(root.join("services"));
        }
        for folder in &folders {
            private_fs::create_private_dir(folder).map_err(StoreError::Unsafe)?;
        }
        private_fs::remove_stale_temporaries(&state.blob_dir(), STALE_TEMPORARY);
        if layout.has_services_folder()
            && let Ok(entries) = std::fs::read_dir(root.join("services"))
        {
            for entry in entries.flatten() {
                private_fs::remove_stale_temporaries(&entry.path(), STALE_TEMPORARY);
            }
        }
        Ok(state)
    }

    /// Creates (private) or checks service `name`'s own folder, before its
    /// queue store and scratch folders are opened in it; returns it.
    pub fn prepare_service_dir(&self, name: &str) -> Result<PathBuf, StoreError> {
        let folder = self.service_dir(name);
        private_fs::create_private_dir(&folder).map_err(StoreError::Unsafe)?;
        Ok(folder)
    }

    /// Whether records are kept ([`Layout::Host`]).
    pub fn keeps_records(&self) -> bool {
        self.layout == Layout::Host
    }

    /// Service `name`'s own folder (its queue store, its scratch folders).
    pub fn service_dir(&self, name: &str) -> PathBuf {
        match self.layout {
            Layout::Host | Layout::Fabric => self.root.join("services").join(name),
            Layout::Single => self.root.clone(),
        }
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// Where blob `digest` lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir().join(digest.hex())
    }

    /// Ok if blob `digest` is stored and its bytes hash to its digest.
    /// Reads and hashes the whole file: call it off the async threads.
    pub fn check_blob(&self, digest: &Digest) -> Result<(), BlobError> {
        let file = match std::fs::File::open(self.blob_path(digest)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BlobError::Missing),
            Err(e) => return Err(BlobError::Unreadable(e)),
        };
        let actual = Digest::of_reader(file).map_err(BlobError::Unreadable)?;
        if &actual != digest {
            return Err(BlobError::Damaged { actual });
        }
        Ok(())
    }

    /// Whether blob `digest` is stored intact (a damaged one is reported
    /// missing, so a client uploads it again and the upload replaces it). A
    /// stored blob's modification time is set to now: a client that asks
    /// is about to name it in a deploy instead of uploading it, so it gets
    /// a fresh grace period before an unused blob may be swept. Hashes the
    /// blob: call it off the async threads.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        match self.check_blob(digest) {
            Ok(()) => {
                touch(&self.blob_path(digest));
                true
            }
            Err(BlobError::Missing) => false,
            Err(e) => {
                tracing::warn!(blob = %digest, error = %e, "a stored blob is unusable; it will be replaced when uploaded again");
                false
            }
        }
    }

    /// Stores `bytes` under their digest and returns it (refreshing the
    /// modification time of a blob already stored intact, as
    /// [`Self::has_blob`], and replacing a damaged one). Hashes the bytes:
    /// call it off the async threads.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest, PrivateFsError> {
        let digest = Digest::of(bytes);
        if !self.has_blob(&digest) {
            private_fs::write_private_file(&self.blob_path(&digest), bytes)?;
        }
        Ok(digest)
    }

    /// Removes temporary files a killed upload left in the blob folder.
    pub fn remove_stale_temporaries(&self) {
        private_fs::remove_stale_temporaries(&self.blob_dir(), STALE_TEMPORARY);
    }

    /// How long ago blob `digest` was stored or last asked about.
    pub fn blob_age(&self, digest: &Digest) -> Option<std::time::Duration> {
        let modified = std::fs::metadata(self.blob_path(digest))
            .and_then(|m| m.modified())
            .ok()?;
        std::time::SystemTime::now().duration_since(modified).ok()
    }

    /// Every stored blob's digest.
    pub fn blobs(&self) -> Vec<Digest> {
        let Ok(entries) = std::fs::read_dir(self.blob_dir()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                entry
                    .file_name()
                    .to_str()
                    .and_then(|name| Digest::parse(name).ok())
            })
            .collect()
    }

    /// How many stored blobs are not in `used`, and their bytes: what
    /// uploads never deployed cost the disk until the sweep removes them.
    pub fn unused_blobs(&self, used: &std::collections::BTreeSet<Digest>) -> (usize, u64) {
        self.blobs()
            .into_iter()
            .filter(|digest| !used.contains(digest))
            .fold((0, 0), |(count, bytes), digest| {
                let len = std::fs::metadata(self.blob_path(&digest)).map_or(0, |m| m.len());
                (count + 1, bytes.saturating_add(len))
            })
    }

    /// Removes blob `digest`, if stored.
    pub fn remove_blob(&self, digest: &Digest) {
        let _ = std::fs::remove_file(self.blob_path(digest));
    }

    /// Saves service `name`'s record (host mode; a no-op otherwise),
    /// private and whole. It fsyncs: call it off the async threads, or
    /// through [`Self::save_record_off_thread`].
    pub fn save_record(&self, name: &str, record: &DeploymentRecord) -> Result<(), StoreError> {
        if !self.keeps_records() {
            return Ok(());
        }
        let folder = self.service_dir(name);
        let path = folder.join(RECORD_FILE);
        let json = match serde_json::to_vec_pretty(record) {
            Ok(json) => json,
            Err(error) => return Err(StoreError::EncodeRecord { path, error }),
        };
        let written = private_fs::create_private_dir(&folder)
            .and_then(|()| private_fs::write_private_file(&path, &json));
        written.map_err(|error| StoreError::SaveRecord { path, error })
    }

    /// [`Self::save_record`] on a blocking thread, so its fsyncs never
    /// hold up the async threads that serve requests.
    pub async fn save_record_off_thread(
        &self,
        name: &str,
        record: &DeploymentRecord,
    ) -> Result<(), StoreError> {
        let path = self.service_dir(name).join(RECORD_FILE);
        let (state, name, record) = (self.clone(), name.to_owned(), record.clone());
        tokio::task::spawn_blocking(move || state.save_record(&name, &record))
            .await
            .unwrap_or_else(|error| Err(StoreError::SaveTask { path, error }))
    }

    /// Whether service `name` has a record (host mode).
    pub fn has_record(&self, name: &str) -> bool {
        self.keeps_records() && self.service_dir(name).join(RECORD_FILE).is_file()
    }

    /// Forgets service `name`'s record (host mode; a no-op otherwise); its
    /// data folder (queues, scratch) stays, for an operator to keep or
    /// delete.
    pub fn remove_record(&self, name: &str) -> Result<(), StoreError> {
        if !self.keeps_records() {
            return Ok(());
        }
        let path = self.service_dir(name).join(RECORD_FILE);
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::RemoveRecord { path, error })
            }
            _ => Ok(()),
        }
    }

    /// Every saved record, by service name, or why it cannot be read.
    pub fn records(&self) -> Vec<(String, Result<DeploymentRecord, StoreError>)> {
        let mut found = Vec::new();
        if !self.keeps_records() {
            return found;
        }
        let Ok(entries) = std::fs::read_dir(self.root.join("services")) else {
            return found;
        };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let path = entry.path().join(RECORD_FILE);
            if !path.is_file() {
                continue;
            }
            // A record others could have written is not followed.
            if let Err(e) = private_fs::check_trusted_dir(&entry.path()) {
                found.push((name, Err(StoreError::UntrustedRecord(e))));
                continue;
            }
            let record = match std::fs::read(&path) {
                Ok(bytes) => serde_json::from_slice(&bytes)
                    .map_err(|error| StoreError::MalformedRecord { path, error }),
                Err(error) => Err(StoreError::UnreadableRecord { path, error }),
            };
            found.push((name, record));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }
}

/// Sets `path`'s modification time to now, if it can.
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().write(true).open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::Overrides;
    use std::collections::BTreeMap;

    #[test]
    fn blobs_are_stored_by_content_and_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path(), Layout::Host).unwrap();
        let digest = state.put_blob(b"component bytes").unwrap();
        assert_eq!(digest, Digest::of(b"component bytes"));
        assert_eq!(
            std::fs::read(state.blob_path(&digest)).unwrap(),
            b"component bytes"
        );
        let record = DeploymentRecord {
            source: DeploymentSource {
                manifest_file: "weft.toml".into(),
                manifest: "[service]\nname = \"x\"\n".into(),
                environment: None,
                components: [("web".to_owned(), digest.clone())].into(),
            },
            overrides: Overrides::default(),
            generation: 3,
            local: None,
        };
        state.save_record("x", &record).unwrap();
        let records = state.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].0, "x");
        assert_eq!(records[0].1.as_ref().unwrap(), &record);
        assert!(state.has_record("x"));
        state.remove_record("x").unwrap();
        assert!(state.records().is_empty());
        assert!(!state.has_record("x"));
    }

    #[test]
    fn a_fabric_host_keeps_service_folders_but_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let record = DeploymentRecord {
            source: DeploymentSource {
                manifest_file: "weft.toml".into(),
                manifest: "[service]\nname = \"x\"\n".into(),
                environment: None,
                components: BTreeMap::new(),
            },
            overrides: Overrides::default(),
            generation: 1,
            local: None,
        };
        // A record a plain host left: a fabric host neither follows nor
        // deletes it.
        let host = StateDir::open(dir.path(), Layout::Host).unwrap();
        host.save_record("old", &record).unwrap();
        let fabric = StateDir::open(dir.path(), Layout::Fabric).unwrap();
        assert!(!fabric.keeps_records());
        assert_eq!(
            fabric.service_dir("x"),
            dir.path().join("services").join("x")
        );
        assert_eq!(
            fabric.prepare_service_dir("x").unwrap(),
            fabric.service_dir("x")
        );
        fabric.save_record("x", &record).unwrap();
        assert!(!fabric.service_dir("x").join(RECORD_FILE).exists());
        assert!(!fabric.has_record("x"));
        assert!(fabric.records().is_empty());
        fabric.remove_record("old").unwrap();
        assert!(!fabric.has_record("old"));
        assert!(host.has_record("old"), "the plain host's record stays");
        assert_eq!(host.records().len(), 1, "and only it");
    }

    #[test]
    fn a_damaged_blob_is_refused_and_replaced_by_its_next_upload() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path(), Layout::Host).unwrap();
        let digest = state.put_blob(b"component bytes").unwrap();
        state.check_blob(&digest).unwrap();
        // One byte changed on disk (the digest no longer matches).
        std::fs::write(state.blob_path(&digest), b"component bytez").unwrap();
        let error = state.check_blob(&digest).unwrap_err();
        assert!(
            matches!(&error, BlobError::Damaged { actual } if *actual == Digest::of(b"component bytez")),
            "{error}"
        );
        assert!(error.to_string().contains("upload it again"), "{error}");
        assert!(!state.has_blob(&digest), "a damaged blob is not offered");
        assert_eq!(state.put_blob(b"component bytes").unwrap(), digest);
        state.check_blob(&digest).unwrap();
        assert!(state.has_blob(&digest));
        assert!(matches!(
            state.check_blob(&Digest::of(b"never stored")),
            Err(BlobError::Missing)
        ));
    }

    #[test]
    fn the_state_folder_is_made_private_and_an_open_one_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let chmod = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        let state = StateDir::open(&root, Layout::Host).unwrap();
        let digest = state.put_blob(b"component bytes").unwrap();
        let record = DeploymentRecord {
            source: DeploymentSource {
                manifest_file: "weft.toml".into(),
                manifest: String::new(),
                environment: None,
                components: BTreeMap::new(),
            },
            overrides: Overrides::default(),
            generation: 1,
            local: None,
        };
        state.save_record("x", &record).unwrap();
        let at = |folder: &str| {
            if folder.is_empty() {
                root.clone()
            } else {
                root.join(folder)
            }
        };
        for folder in ["", "blobs", "blobs/sha256", "services", "services/x"] {
            assert_eq!(mode(&at(folder)), 0o700, "{folder}");
        }
        assert_eq!(mode(&state.blob_path(&digest)), 0o600);
        assert_eq!(mode(&root.join("services/x").join(RECORD_FILE)), 0o600);

        // A service folder others could write to: its record is not followed.
        chmod(&root.join("services/x"), 0o770);
        let records = state.records();
        let why = records[0].1.as_ref().unwrap_err().to_string();
        assert!(why.contains("writable by other users"), "{why}");
        chmod(&root.join("services/x"), 0o700);

        for folder in ["", "blobs/sha256", "services"] {
            chmod(&at(folder), 0o775);
            let error = StateDir::open(&root, Layout::Host).unwrap_err().to_string();
            assert!(
                error.contains(&format!(
                    "{}: writable by other users",
                    at(folder).display()
                )),
                "{error}"
            );
            assert!(!error.contains('\n'), "{error}");
            chmod(&at(folder), 0o700);
        }
        StateDir::open(&root, Layout::Host).unwrap();
    }

    #[test]
    fn asking_for_a_blob_or_storing_it_again_refreshes_its_age() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path(), Layout::Host).unwrap();
        let digest = state.put_blob(b"component bytes").unwrap();
        let age_it = || {
            let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
            std::fs::File::options()
                .write(true)
                .open(state.blob_path(&digest))
                .unwrap()
                .set_modified(old)
                .unwrap();
        };
        let fresh = std::time::Duration::from_secs(60);
        age_it();
        assert!(state.blob_age(&digest).unwrap() > fresh);
        assert!(state.has_blob(&digest));
        assert!(state.blob_age(&digest).unwrap() < fresh);
        age_it();
        state.put_blob(b"component bytes").unwrap();
        assert!(state.blob_age(&digest).unwrap() < fresh);
        assert_eq!(state.blobs(), vec![digest.clone()]);
        assert!(!state.has_blob(&Digest::of(b"other bytes")));
    }
}

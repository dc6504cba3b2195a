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
//! start. Every file is written to a temporary name, fsynced, then renamed,
//! so a crash leaves the old file or the new one, never half of one.

use crate::environment::{Environment, Overrides};
use crate::manifest::{Manifest, ManifestError};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The file a service's record is kept in.
const RECORD_FILE: &str = "deployment.json";

/// A component's SHA-256, as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(hex(&Sha256::digest(bytes)))
    }

    /// Parses `sha256:HEX` (or bare HEX).
    pub fn parse(text: &str) -> Result<Self, String> {
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(hex.to_owned()))
        } else {
            Err(format!(
                "'{}' is not a digest like sha256:<64 lowercase hex digits>",
                text.chars().take(80).collect::<String>()
            ))
        }
    }

    /// The first 12 hex digits, for people.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.to_string()
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// What a deployment is made of: the manifest, an optional environment
/// overlay, and the component each role runs. The admin API's deploy and
/// upgrade requests carry exactly this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentSource {
    /// The manifest's file name on the client, for messages.
    pub manifest_file: String,
    /// The manifest's TOML text.
    pub manifest: String,
    /// The environment overlay, if any.
    #[serde(default)]
    pub environment: Option<Environment>,
    /// Each role's component, by role name.
    pub components: BTreeMap<String, Digest>,
}

impl DeploymentSource {
    /// The manifest this source declares, with its overlay and `overrides`
    /// applied; errors name the file (and line or field).
    pub fn resolve(&self, overrides: &Overrides) -> Result<Manifest, String> {
        let path = Path::new(&self.manifest_file);
        let mut manifest =
            Manifest::parse(path, &self.manifest).map_err(|e: ManifestError| e.to_string())?;
        if let Some(environment) = &self.environment {
            environment
                .apply(&mut manifest)
                .map_err(|e| e.to_string())?;
        }
        overrides.apply(&mut manifest)?;
        Ok(manifest)
    }
}

/// A deployed service's record: its source, the changes made since through
/// the API, and its generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// What was deployed.
    pub source: DeploymentSource,
    /// Instance counts and settings changed since.
    #[serde(default)]
    pub overrides: Overrides,
    /// Counts the deployment, upgrades and settings changes.
    pub generation: u64,
}

impl DeploymentRecord {
    /// The manifest in force.
    pub fn manifest(&self) -> Result<Manifest, String> {
        self.source.resolve(&self.overrides)
    }
}

/// How the state folder is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `weft host`: many services, each in `services/NAME`, with records.
    Host,
    /// `weft up`: one service in the folder itself, no records.
    Single,
}

/// The state folder.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    layout: Layout,
}

impl StateDir {
    /// Opens (creating) the folder.
    pub fn open(root: &Path, layout: Layout) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let blobs = root.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs)
            .with_context(|| format!("cannot create the state folder {}", blobs.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
            layout,
        })
    }

    /// Whether records are kept (host mode).
    pub fn keeps_records(&self) -> bool {
        self.layout == Layout::Host
    }

    /// Service `name`'s own folder (its queue store, its scratch folders).
    pub fn service_dir(&self, name: &str) -> PathBuf {
        match self.layout {
            Layout::Host => self.root.join("services").join(name),
            Layout::Single => self.root.clone(),
        }
    }

    /// Where blob `digest` lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(&digest.0)
    }

    /// Whether blob `digest` is stored. A stored blob's modification time
    /// is set to now: a client that asks is about to name it in a deploy
    /// instead of uploading it, so it gets a fresh grace period before an
    /// unused blob may be swept.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        let path = self.blob_path(digest);
        if !path.is_file() {
            return false;
        }
        touch(&path);
        true
    }

    /// Stores `bytes` under their digest and returns it (refreshing the
    /// modification time of a blob already stored, as [`Self::has_blob`]).
    pub fn put_blob(&self, bytes: &[u8]) -> std::io::Result<Digest> {
        let digest = Digest::of(bytes);
        if !self.has_blob(&digest) {
            write_atomically(&self.blob_path(&digest), bytes)?;
        }
        Ok(digest)
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
        let Ok(entries) = std::fs::read_dir(self.root.join("blobs").join("sha256")) else {
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

    /// Removes blob `digest`, if stored.
    pub fn remove_blob(&self, digest: &Digest) {
        let _ = std::fs::remove_file(self.blob_path(digest));
    }

    /// Saves service `name`'s record (host mode; a no-op otherwise).
    pub fn save_record(&self, name: &str, record: &DeploymentRecord) -> std::io::Result<()> {
        if !self.keeps_records() {
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        write_atomically(&self.service_dir(name).join(RECORD_FILE), &json)
    }

    /// Whether service `name` has a record (host mode).
    pub fn has_record(&self, name: &str) -> bool {
        self.keeps_records() && self.service_dir(name).join(RECORD_FILE).is_file()
    }

    /// Forgets service `name`'s record; its data folder (queues, scratch)
    /// stays, for an operator to keep or delete.
    pub fn remove_record(&self, name: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.service_dir(name).join(RECORD_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every saved record, by service name, or why it cannot be read.
    pub fn records(&self) -> Vec<(String, Result<DeploymentRecord, String>)> {
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
            let record = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
                .map_err(|e| format!("{}: {e}", path.display()));
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

/// Writes `bytes` to `path` through a temporary file, fsynced, then renamed.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let folder = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder)?;
    let mut temp = tempfile::NamedTempFile::new_in(folder)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    // The rename itself is durable once the folder is synced.
    if let Ok(dir) = std::fs::File::open(folder) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_strictly() {
        let digest = Digest::of(b"hello");
        assert_eq!(Digest::parse(&digest.to_string()).unwrap(), digest);
        for bad in [
            "",
            "sha256:",
            "sha256:../../etc/passwd",
            &"A".repeat(64),
            &"a".repeat(63),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }

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

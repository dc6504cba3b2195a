//! What a deployment is made of, as the state folder keeps it: the
//! components' digests (a blob's name), the source a client sent, and the
//! record a restarted host redeploys from.

use crate::environment::{Environment, OverrideError, Overrides};
use crate::hex::hex;
use crate::local_part::{LocalPart, LocalPartError};
use crate::manifest::{Manifest, ManifestError};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

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
    pub fn parse(text: &str) -> Result<Self, DigestError> {
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(hex.to_owned()))
        } else {
            Err(DigestError {
                text: text.chars().take(80).collect(),
            })
        }
    }

    /// The 64 hex digits: the blob's file name.
    pub(super) fn hex(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for people.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }

    /// The digest of what `reader` yields, read in pieces.
    pub(super) fn of_reader(mut reader: impl std::io::Read) -> std::io::Result<Self> {
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = reader.read(&mut buffer)?;
            if read == 0 {
                return Ok(Self(hex(&hasher.finalize())));
            }
            hasher.update(buffer.get(..read).unwrap_or_default());
        }
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// Text that is not a [`Digest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a digest like sha256:<64 lowercase hex digits>")]
#[non_exhaustive]
pub struct DigestError {
    /// The text, its first 80 characters.
    pub text: String,
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(text: String) -> Result<Self, DigestError> {
        Self::parse(&text)
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.to_string()
    }
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
    pub fn resolve(&self, overrides: &Overrides) -> Result<Manifest, ResolveError> {
        let path = Path::new(&self.manifest_file);
        let mut manifest = Manifest::parse(path, &self.manifest)?;
        if let Some(environment) = &self.environment {
            environment.apply(&mut manifest)?;
        }
        overrides.apply(&mut manifest)?;
        Ok(manifest)
    }
}

/// Why a [`DeploymentSource`] (or a record) declares no valid manifest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The manifest or its overlay does not validate.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The changes made through the API no longer fit it.
    #[error(transparent)]
    Overrides(#[from] OverrideError),
    /// This host's part of the service does not fit it.
    #[error(transparent)]
    Local(#[from] LocalPartError),
}

/// A deployed service's record: its source, the changes made since through
/// the API, its generation, and, for a service that runs on many hosts,
/// this host's part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// What was deployed.
    pub source: DeploymentSource,
    /// Instance counts and settings changed since.
    #[serde(default)]
    pub overrides: Overrides,
    /// Counts the deployment, upgrades and settings changes.
    pub generation: u64,
    /// This host's part of a service that runs on many hosts; none: the
    /// whole service runs here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalPart>,
}

impl DeploymentRecord {
    /// The manifest in force: the source's with the overrides, narrowed
    /// to this host's part if it has one.
    pub fn manifest(&self) -> Result<Manifest, ResolveError> {
        let mut manifest = self.source.resolve(&self.overrides)?;
        if let Some(part) = &self.local {
            part.apply(&mut manifest)?;
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_without_a_local_part_loads_and_is_saved_as_before() {
        let digest = Digest::of(b"web");
        let json = format!(
            r#"{{"source":{{"manifest_file":"weft.toml","manifest":"","components":{{"web":"{digest}"}}}},"overrides":{{"instances":{{}},"settings":{{}}}},"generation":4}}"#
        );
        let record: DeploymentRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(record.local, None);
        assert_eq!(record.generation, 4);
        assert_eq!(record.source.components["web"], digest);
        let saved = serde_json::to_string(&record).unwrap();
        assert!(!saved.contains("local"), "{saved}");
        assert_eq!(
            serde_json::from_str::<DeploymentRecord>(&saved).unwrap(),
            record
        );
    }

    #[test]
    fn a_record_s_local_part_narrows_its_manifest() {
        let manifest = "[service]\nname = \"x\"\n[roles.web]\nkind = \"web\"\ncomponent = \"web.wasm\"\nlisten = \"127.0.0.1:0\"\n[roles.worker]\nkind = \"worker\"\ncomponent = \"worker.wasm\"\n";
        let mut record = DeploymentRecord {
            source: DeploymentSource {
                manifest_file: "weft.toml".into(),
                manifest: manifest.into(),
                environment: None,
                components: BTreeMap::new(),
            },
            overrides: Overrides::default(),
            generation: 1,
            local: Some(LocalPart {
                roles: [("worker".to_owned(), 3)].into(),
                ..LocalPart::default()
            }),
        };
        // The part's count wins over the overrides'.
        record.overrides.instances.insert("worker".into(), 2);
        let resolved = record.manifest().unwrap();
        assert_eq!(resolved.roles.keys().collect::<Vec<_>>(), ["worker"]);
        assert_eq!(resolved.roles["worker"].instances(), 3);
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            serde_json::from_str::<DeploymentRecord>(&json).unwrap(),
            record
        );
        record.local = Some(LocalPart {
            roles: [("nope".to_owned(), 1)].into(),
            ..LocalPart::default()
        });
        let err = record.manifest().unwrap_err();
        assert!(matches!(err, ResolveError::Local(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "local.roles.nope: the manifest has no such role"
        );
    }

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
}

//! Operators' signatures over desired state: a host runs only what the
//! fabric's operators signed.
//!
//! Whoever can write to the fabric's KV bucket could otherwise plant a
//! `svc.<name>` entry and have every host run a component of their
//! choosing. So the operator CLI signs each [`Desired`] with an Ed25519 key
//! ([`SigningKey`], kept in a file only its owner can read), and every host
//! (and the leader, before it places anything) checks the signature against
//! the public keys it was told to trust ([`TrustedKeys`], `--fabric-trust`).
//!
//! What is signed is the exact JSON text of the [`Desired`] (the entry's
//! `body`), so no re-serialisation can change what was verified. The
//! service's name is inside the signed body and must equal the key's, so a
//! signed body cannot be replayed under another name; and a signed record
//! never carries a host's part (`local`): that part is the leader's to
//! assign, not something an operator's signature vouches for.

use crate::error::{FabricError, one_line};
use crate::model::{Desired, SignedDesired};
use crate::names::service_key;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Bytes in an Ed25519 seed and in an Ed25519 public key.
const KEY_BYTES: usize = 32;
/// The private key's file name in `weft fabric keygen --out DIR`.
pub const KEY_FILE: &str = "fabric.key";
/// The public key's file name in `weft fabric keygen --out DIR`.
pub const PUBLIC_KEY_FILE: &str = "fabric.pub";

/// An operator's Ed25519 signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    // Only the public half: the seed never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public_key", &self.public_key())
            .finish()
    }
}

impl SigningKey {
    /// Loads the key at `path`: the 32-byte Ed25519 seed, base64, on one
    /// line. Refuses a file group or others may read or write: a key others
    /// can read signs for them too.
    pub fn load(path: &Path) -> Result<Self, FabricError> {
        let shown = path.display();
        let metadata = std::fs::metadata(path).map_err(|e| {
            FabricError::Signature(format!(
                "signing key {shown} cannot be read: {}",
                one_line(&e.to_string())
            ))
        })?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(FabricError::Signature(format!(
                "signing key {shown} is open to group or others (mode {mode:04o}); run `chmod 600 {shown}`"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            FabricError::Signature(format!(
                "signing key {shown} cannot be read: {}",
                one_line(&e.to_string())
            ))
        })?;
        let not_a_key = || {
            FabricError::Signature(format!(
                "signing key {shown} is not a base64 Ed25519 seed of {KEY_BYTES} bytes (make one with `weft fabric keygen`)"
            ))
        };
        let seed = decode_key(text.trim()).ok_or_else(not_a_key)?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| not_a_key())?;
        Ok(Self { pair })
    }

    /// The public key, base64 (standard, padded): what a trust file lists
    /// and what [`SignedDesired::key_id`] names.
    pub fn public_key(&self) -> String {
        STANDARD.encode(self.pair.public_key().as_ref())
    }

    /// Signs `desired`: its JSON text is the body, exactly as hosts will
    /// verify it. Refuses a record with a host's part (`local`), which no
    /// host would accept.
    pub fn sign(&self, desired: &Desired) -> Result<SignedDesired, FabricError> {
        if desired.record.local.is_some() {
            return Err(FabricError::Signature(format!(
                "{}: a desired state must not carry a host's part (local); the leader assigns it",
                service_key(&desired.service)
            )));
        }
        let body = serde_json::to_string(desired).map_err(|e| {
            FabricError::Signature(format!(
                "{}: cannot encode the desired state: {}",
                service_key(&desired.service),
                one_line(&e.to_string())
            ))
        })?;
        Ok(self.sign_body(body))
    }

    fn sign_body(&self, body: String) -> SignedDesired {
        let signature = STANDARD.encode(self.pair.sign(body.as_bytes()).as_ref());
        SignedDesired {
            body,
            key_id: self.public_key(),
            signature,
        }
    }
}

/// Makes a new signing key: writes `dir/fabric.key` (the seed, mode 0600)
/// and `dir/fabric.pub` (the public key, for hosts' trust files), creating
/// `dir` if needed. Refuses to overwrite either file: losing a key in use
/// would lock its operator out of the fabric. Returns both paths.
pub fn keygen(dir: &Path) -> Result<(PathBuf, PathBuf), FabricError> {
    let key_path = dir.join(KEY_FILE);
    let public_path = dir.join(PUBLIC_KEY_FILE);
    for path in [&key_path, &public_path] {
        if path.symlink_metadata().is_ok() {
            return Err(exists_already(path));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| write_failed(dir, &e))?;
    let mut seed = [0u8; KEY_BYTES];
    SystemRandom::new().fill(&mut seed).map_err(|_| {
        FabricError::Signature("the system's random source failed; no key was made".into())
    })?;
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|e| FabricError::Signature(format!("cannot make an Ed25519 key: {e}")))?;
    let public = STANDARD.encode(pair.public_key().as_ref());
    write_new(&key_path, 0o600, &STANDARD.encode(seed))?;
    if let Err(e) = write_new(&public_path, 0o644, &public) {
        // Leave nothing behind: a key without its public half is no use.
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    Ok((key_path, public_path))
}

/// Writes `line` and a newline to a file that must not exist yet, created
/// with `mode` (so a private key is never readable by others, not even
/// for an instant).
fn write_new(path: &Path, mode: u32, line: &str) -> Result<(), FabricError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => exists_already(path),
            _ => write_failed(path, &e),
        })?;
    file.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| write_failed(path, &e))
}

fn exists_already(path: &Path) -> FabricError {
    FabricError::Conflict(format!(
        "{} exists already; keygen never overwrites a key (move it away first)",
        path.display()
    ))
}

fn write_failed(path: &Path, error: &std::io::Error) -> FabricError {
    FabricError::Signature(format!(
        "cannot write {}: {}",
        path.display(),
        one_line(&error.to_string())
    ))
}

/// The operators' public keys a host trusts (`--fabric-trust FILE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: BTreeSet<[u8; KEY_BYTES]>,
}

impl TrustedKeys {
    /// Loads a trust file: one base64 public key per line (as in a
    /// `fabric.pub`), `#` comments and blank lines ignored, at least one key.
    pub fn load(path: &Path) -> Result<Self, FabricError> {
        let shown = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| {
            FabricError::Signature(format!(
                "trust file {shown} cannot be read: {}",
                one_line(&e.to_string())
            ))
        })?;
        let mut keys = BTreeSet::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = decode_key(line).ok_or_else(|| {
                FabricError::Signature(format!(
                    "trust file {shown} line {}: not a base64 Ed25519 public key of {KEY_BYTES} bytes",
                    index.saturating_add(1)
                ))
            })?;
            keys.insert(key);
        }
        if keys.is_empty() {
            return Err(FabricError::Signature(format!(
                "trust file {shown} names no key; add an operator's fabric.pub line"
            )));
        }
        Ok(Self { keys })
    }

    /// Trust in exactly `key`'s public half: an operator who gave no trust
    /// file builds only on what its own key signed.
    pub fn of_key(key: &SigningKey) -> Self {
        let public = key.pair.public_key().as_ref();
        Self {
            keys: <[u8; KEY_BYTES]>::try_from(public).into_iter().collect(),
        }
    }

    /// Keys trusted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true for a loaded trust file (it names at least one key).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The desired state of `service` in `signed`, if a trusted key signed
    /// exactly its body, the body is a [`Desired`] for `service`, and it
    /// carries no host's part. Each refusal is one line naming the key.
    pub fn verify(&self, service: &str, signed: &SignedDesired) -> Result<Desired, FabricError> {
        let key = service_key(service);
        let refused = |why: String| FabricError::Signature(format!("{key}: {why}"));
        let public = decode_key(&signed.key_id)
            .ok_or_else(|| refused("its key_id is not a base64 Ed25519 public key".into()))?;
        if !self.keys.contains(&public) {
            return Err(refused(format!(
                "signed by key {}, which is not among the trusted keys",
                shown_key_id(&signed.key_id)
            )));
        }
        let signature = STANDARD
            .decode(signed.signature.as_bytes())
            .map_err(|_| refused("its signature is not base64".into()))?;
        UnparsedPublicKey::new(&ED25519, public)
            .verify(signed.body.as_bytes(), &signature)
            .map_err(|_| refused("signature does not verify".into()))?;
        let desired = signed.desired_unverified(service).map_err(|e| match e {
            FabricError::Malformed { reason, .. } => {
                refused(format!("the signed body is not a desired state: {reason}"))
            }
            other => other,
        })?;
        if desired.service != service {
            return Err(refused(format!(
                "the signed body is for service '{}', not '{service}'",
                desired.service.chars().take(80).collect::<String>()
            )));
        }
        if desired.record.local.is_some() {
            return Err(refused(
                "the signed body carries a host's part (local), which only the leader assigns"
                    .into(),
            ));
        }
        Ok(desired)
    }
}

/// A 32-byte key from its base64 text, if it is one.
fn decode_key(text: &str) -> Option<[u8; KEY_BYTES]> {
    let bytes = STANDARD.decode(text.as_bytes()).ok()?;
    <[u8; KEY_BYTES]>::try_from(bytes.as_slice()).ok()
}

/// A key id as shown in a message: never longer than a real one.
fn shown_key_id(key_id: &str) -> String {
    key_id.chars().take(44).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use weft_host::controller::store::{DeploymentRecord, DeploymentSource, Digest};
    use weft_host::local_part::LocalPart;

    fn desired(service: &str) -> Desired {
        Desired {
            service: service.into(),
            record: DeploymentRecord {
                source: DeploymentSource {
                    manifest_file: "weft.toml".into(),
                    manifest: "[service]\nname = \"shop\"\n".into(),
                    environment: None,
                    components: BTreeMap::from([("web".into(), Digest::of(b"web"))]),
                },
                overrides: Default::default(),
                generation: 1,
                local: None,
            },
            replaces: 0,
            signed_at_ms: 1_700_000_000_000,
        }
    }

    /// A new key in a fresh folder, and a trust file holding its public key.
    fn key_and_trust(dir: &Path) -> (SigningKey, TrustedKeys) {
        let (key_path, public_path) = keygen(dir).unwrap();
        (
            SigningKey::load(&key_path).unwrap(),
            TrustedKeys::load(&public_path).unwrap(),
        )
    }

    fn message(error: FabricError) -> String {
        assert!(matches!(error, FabricError::Signature(_)), "{error:?}");
        error.to_string()
    }

    #[test]
    fn a_signed_desired_state_verifies_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let (key, trust) = key_and_trust(dir.path());
        let wanted = desired("shop");
        let signed = key.sign(&wanted).unwrap();
        assert_eq!(signed.body, serde_json::to_string(&wanted).unwrap());
        assert_eq!(signed.key_id, key.public_key());
        assert_eq!(trust.verify("shop", &signed).unwrap(), wanted);
        let public = std::fs::read_to_string(dir.path().join(PUBLIC_KEY_FILE)).unwrap();
        assert_eq!(public, format!("{}\n", key.public_key()));
        assert_eq!(trust.len(), 1);
    }

    #[test]
    fn an_altered_body_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (key, trust) = key_and_trust(dir.path());
        let mut signed = key.sign(&desired("shop")).unwrap();
        signed.body = signed.body.replace("\"generation\":1", "\"generation\":2");
        assert!(signed.body.contains("\"generation\":2"));
        assert_eq!(
            message(trust.verify("shop", &signed).unwrap_err()),
            "svc.shop: signature does not verify"
        );
    }

    #[test]
    fn a_key_the_host_does_not_trust_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, trust) = key_and_trust(&dir.path().join("operator"));
        let (stranger, _) = key_and_trust(&dir.path().join("stranger"));
        let signed = stranger.sign(&desired("shop")).unwrap();
        assert_eq!(
            message(trust.verify("shop", &signed).unwrap_err()),
            format!(
                "svc.shop: signed by key {}, which is not among the trusted keys",
                stranger.public_key()
            )
        );
        // Claiming a trusted key's id does not help: the signature is checked
        // against the key named.
        let operator =
            std::fs::read_to_string(dir.path().join("operator").join(PUBLIC_KEY_FILE)).unwrap();
        let forged = SignedDesired {
            key_id: operator.trim().to_owned(),
            ..signed
        };
        assert_eq!(
            message(trust.verify("shop", &forged).unwrap_err()),
            "svc.shop: signature does not verify"
        );
    }

    #[test]
    fn a_body_replayed_under_another_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (key, trust) = key_and_trust(dir.path());
        let signed = key.sign(&desired("shop")).unwrap();
        assert_eq!(
            message(trust.verify("bank", &signed).unwrap_err()),
            "svc.bank: the signed body is for service 'shop', not 'bank'"
        );
    }

    #[test]
    fn a_record_with_a_local_part_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (key, trust) = key_and_trust(dir.path());
        let mut with_local = desired("shop");
        with_local.record.local = Some(LocalPart {
            roles: BTreeMap::from([("web".into(), 1)]),
            ..LocalPart::default()
        });
        assert_eq!(
            message(key.sign(&with_local).unwrap_err()),
            "svc.shop: a desired state must not carry a host's part (local); the leader assigns it"
        );
        // Signed by other means, hosts still refuse it.
        let signed = key.sign_body(serde_json::to_string(&with_local).unwrap());
        assert_eq!(
            message(trust.verify("shop", &signed).unwrap_err()),
            "svc.shop: the signed body carries a host's part (local), which only the leader assigns"
        );
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (key_path, _) = keygen(dir.path()).unwrap();
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = message(SigningKey::load(&key_path).unwrap_err());
        assert_eq!(
            error,
            format!(
                "signing key {0} is open to group or others (mode 0644); run `chmod 600 {0}`",
                key_path.display()
            )
        );
        assert!(!error.contains('\n'));
    }

    #[test]
    fn keygen_never_overwrites_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let (key_path, public_path) = keygen(dir.path()).unwrap();
        let seed = std::fs::read(&key_path).unwrap();
        let error = keygen(dir.path()).unwrap_err();
        assert!(matches!(error, FabricError::Conflict(_)), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!(
                "{} exists already; keygen never overwrites a key (move it away first)",
                key_path.display()
            )
        );
        assert_eq!(std::fs::read(&key_path).unwrap(), seed);
        // Only the public half there: still refused, and nothing written.
        std::fs::remove_file(&key_path).unwrap();
        assert!(matches!(keygen(dir.path()), Err(FabricError::Conflict(_))));
        assert!(!key_path.exists());
        assert!(public_path.exists());
    }

    #[test]
    fn trust_files_are_read_strictly() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = key_and_trust(&dir.path().join("k"));
        let path = dir.path().join("trust");
        std::fs::write(&path, format!("# operators\n\n  {}  \n", key.public_key())).unwrap();
        assert_eq!(TrustedKeys::load(&path).unwrap().len(), 1);
        std::fs::write(&path, "# nobody\n\n").unwrap();
        assert!(
            message(TrustedKeys::load(&path).unwrap_err())
                .ends_with("names no key; add an operator's fabric.pub line")
        );
        std::fs::write(&path, format!("{}\nnot-a-key\n", key.public_key())).unwrap();
        assert_eq!(
            message(TrustedKeys::load(&path).unwrap_err()),
            format!(
                "trust file {} line 2: not a base64 Ed25519 public key of 32 bytes",
                path.display()
            )
        );
    }
}

//! The admin API's bearer token: where a host and a client find it, and the
//! constant-time check.
//!
//! A host takes its token from `--token-file FILE`, else from the
//! `WEFT_ADMIN_TOKEN` environment variable, else from `admin-token` in its
//! state folder, which it creates (32 random bytes, hex, mode 0600) on its
//! first start. A client looks in the same places, the last being the
//! default host state folder, whose token it sends only to the admin
//! address that host recorded beside it ([`ADMIN_ADDRESS_FILE`]). A token file must not be readable by other
//! users. The check compares SHA-256 digests of the presented and expected
//! tokens byte by byte without stopping early, so neither the token nor its
//! length leaks through timing.

use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use weft_sandbox::private_fs::{self, PrivateFsError};

/// The environment variable a token may come from.
pub const TOKEN_ENV: &str = "WEFT_ADMIN_TOKEN";
/// The token file a host creates in its state folder.
pub const TOKEN_FILE: &str = "admin-token";
/// Where `weft host` records, beside its token, the address its admin API
/// listens on: a client sends the token it found there only to that address.
pub const ADMIN_ADDRESS_FILE: &str = "admin-address";
/// The shortest token accepted. Length is what protects a token: the
/// bearer check is never rate limited (a limit would let anyone lock the
/// operators out), so a token an operator chooses should be far longer than
/// this, as random as the generated one (32 bytes, hex).
const MIN_TOKEN_LEN: usize = 16;

/// Why no admin token could be had. Each message is one line naming the
/// file or variable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is too short to be a secret.
    #[error("the admin token must be at least {MIN_TOKEN_LEN} characters")]
    TooShort,
    /// The token in the environment is too short to be a secret.
    #[error("{TOKEN_ENV}: the admin token must be at least {MIN_TOKEN_LEN} characters")]
    TooShortInEnvironment,
    /// A token file cannot be read.
    #[error("{}: cannot read the admin token: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        reason: std::io::Error,
    },
    /// A token file other users can read.
    #[error("{}: other users can read this admin token file; chmod 600 it", path.display())]
    Readable {
        /// The file.
        path: PathBuf,
    },
    /// The folder of a new token file cannot be made private.
    #[error("cannot create {}: {reason}", folder.display())]
    Folder {
        /// The folder.
        folder: PathBuf,
        /// What failed.
        reason: PrivateFsError,
    },
    /// A new token file cannot be written.
    #[error("{}: cannot create the admin token: {reason}", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: PrivateFsError,
    },
    /// A client found no token anywhere.
    #[error("no admin token: pass --token-file FILE or set {TOKEN_ENV}")]
    Missing,
}

/// An expected token, kept as its digest.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl Token {
    /// A token from its secret text (surrounding whitespace ignored).
    pub fn new(secret: &str) -> Result<Self, TokenError> {
        let secret = secret.trim();
        if secret.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort);
        }
        Ok(Self(Sha256::digest(secret.as_bytes()).into()))
    }

    /// Whether an `Authorization` header carries this token as `Bearer`.
    pub fn admits(&self, authorization: Option<&http::HeaderValue>) -> bool {
        let presented = authorization
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("");
        self.matches(presented)
    }

    /// Whether `presented` (surrounding whitespace ignored) is this token,
    /// as the dashboard's sign-in form gives it.
    pub fn matches(&self, presented: &str) -> bool {
        let presented = presented.trim();
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let pairs = digest.iter().copied().zip(self.0.iter().copied());
        same_bytes(pairs) && !presented.is_empty()
    }
}

/// Whether every pair holds equal bytes, looking at all of them whatever
/// the first difference: the differences are folded together, never
/// tested one by one, so how long it takes does not say where they differ.
pub(crate) fn same_bytes(pairs: impl Iterator<Item = (u8, u8)>) -> bool {
    let difference = pairs.fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

/// Where a host's token came from, for its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token-file`.
    File(PathBuf),
    /// The environment.
    Environment,
    /// The state folder's `admin-token` (made now if `true`).
    StateFolder(PathBuf, bool),
}

/// The token a host serving from `state_dir` expects.
pub fn host_token(
    token_file: Option<&Path>,
    state_dir: &Path,
) -> Result<(Token, TokenSource), TokenError> {
    if let Some(file) = token_file {
        let secret = read_token_file(file)?;
        return Ok((Token::new(&secret)?, TokenSource::File(file.to_path_buf())));
    }
    if let Ok(secret) = std::env::var(TOKEN_ENV) {
        let token = Token::new(&secret).map_err(|_| TokenError::TooShortInEnvironment)?;
        return Ok((token, TokenSource::Environment));
    }
    let file = state_dir.join(TOKEN_FILE);
    if file.exists() {
        let secret = read_token_file(&file)?;
        return Ok((Token::new(&secret)?, TokenSource::StateFolder(file, false)));
    }
    let secret = create_token_file(&file)?;
    Ok((Token::new(&secret)?, TokenSource::StateFolder(file, true)))
}

/// The token a client presents: `--token-file`, the environment, or the
/// token file of the host state folder `default_state`.
pub fn client_token(
    token_file: Option<&Path>,
    default_state: Option<&Path>,
) -> Result<String, TokenError> {
    if let Some(file) = token_file {
        return read_token_file(file);
    }
    if let Ok(secret) = std::env::var(TOKEN_ENV) {
        return Ok(secret.trim().to_owned());
    }
    if let Some(file) = default_state.map(|dir| dir.join(TOKEN_FILE))
        && file.exists()
    {
        return read_token_file(&file);
    }
    Err(TokenError::Missing)
}

/// Reads a token file that only its owner can read.
fn read_token_file(path: &Path) -> Result<String, TokenError> {
    use std::os::unix::fs::PermissionsExt as _;
    let unreadable = |reason| TokenError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let metadata = std::fs::metadata(path).map_err(unreadable)?;
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(TokenError::Readable {
            path: path.to_path_buf(),
        });
    }
    let secret = std::fs::read_to_string(path).map_err(unreadable)?;
    Ok(secret.trim().to_owned())
}

/// Creates a token file with a fresh random token, readable by its owner
/// only (whatever the umask), in a private folder. It is written whole to a
/// temporary file, fsynced, and linked into place only if no file is there
/// yet, so a crash never leaves an empty or half-written token, and a token
/// made meanwhile by another process is never replaced.
fn create_token_file(path: &Path) -> Result<String, TokenError> {
    let secret = crate::hex::hex(&rand::random::<[u8; 32]>());
    let folder = path.parent().unwrap_or(Path::new("."));
    private_fs::create_private_dir(folder).map_err(|reason| TokenError::Folder {
        folder: folder.to_path_buf(),
        reason,
    })?;
    private_fs::create_private_file(path, format!("{secret}\n").as_bytes()).map_err(|reason| {
        TokenError::Create {
            path: path.to_path_buf(),
            reason,
        }
    })?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let token = Token::new("correct horse battery staple").unwrap();
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        assert!(token.admits(Some(&header("Bearer correct horse battery staple"))));
        assert!(!token.admits(None));
        assert!(!token.admits(Some(&header("Bearer "))));
        assert!(!token.admits(Some(&header("Bearer correct horse battery stapl"))));
        assert!(!token.admits(Some(&header("Bearer correct horse battery staple!"))));
        assert!(!token.admits(Some(&header("Basic correct horse battery staple"))));
        assert!(Token::new("short").is_err());
    }

    #[test]
    fn tokens_of_any_length_compare_by_digest_looking_at_every_byte() {
        let token = Token::new("0123456789abcdef-secret").unwrap();
        let admits = |presented: &str| {
            token.admits(Some(
                &HeaderValue::from_str(&format!("Bearer {presented}")).unwrap(),
            ))
        };
        assert!(admits("0123456789abcdef-secret"));
        // Equal lengths, one byte off at the start, middle and end.
        assert!(!admits("X123456789abcdef-secret"));
        assert!(!admits("0123456789aXcdef-secret"));
        assert!(!admits("0123456789abcdef-secreX"));
        // Shorter, longer, a prefix of it, and it as a prefix of another.
        assert!(!admits("0123456789abcdef"));
        assert!(!admits("0123456789abcdef-secret-and-more"));
        assert!(!admits(&"0".repeat(4096)));
        // The comparison reads every pair, even when the first differs: it
        // does not stop at the first difference.
        let seen = std::cell::Cell::new(0);
        let counted = |a: [u8; 32], b: [u8; 32]| {
            seen.set(0);
            let pairs = a.into_iter().zip(b).inspect(|_| seen.set(seen.get() + 1));
            (same_bytes(pairs), seen.get())
        };
        let mut other = [7u8; 32];
        assert_eq!(counted([7; 32], [7; 32]), (true, 32));
        other[0] = 8;
        assert_eq!(counted([7; 32], other), (false, 32));
        other = [7; 32];
        other[31] = 0;
        assert_eq!(counted([7; 32], other), (false, 32));
        assert_eq!(counted([0; 32], [255; 32]), (false, 32));
    }

    #[test]
    fn a_host_makes_a_private_token_once_and_refuses_a_readable_one() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = host_token(None, dir.path()).unwrap();
        let file = dir.path().join(TOKEN_FILE);
        assert_eq!(source, TokenSource::StateFolder(file.clone(), true));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let secret = client_token(Some(&file), None).unwrap();
        assert!(first.admits(Some(
            &HeaderValue::from_str(&format!("Bearer {secret}")).unwrap()
        )));
        let (again, source) = host_token(None, dir.path()).unwrap();
        assert_eq!(source, TokenSource::StateFolder(file.clone(), false));
        assert!(again.admits(Some(
            &HeaderValue::from_str(&format!("Bearer {secret}")).unwrap()
        )));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = host_token(Some(&file), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("other users can read"), "{err}");
    }

    #[test]
    fn a_token_file_is_made_whole_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state").join(TOKEN_FILE);
        let secret = create_token_file(&file).unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("{secret}\n")
        );
        // Another one made meanwhile is kept, not overwritten.
        assert!(create_token_file(&file).is_err());
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("{secret}\n")
        );
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(TOKEN_FILE)]);
    }
}

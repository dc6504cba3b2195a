//! Compiled components cached on disk, keyed by content hash, so a host that
//! restarts (or a test process that starts) does not compile again.
//!
//! A cached entry is native code that wasmtime maps and runs without
//! re-checking it, so the cache trusts nothing it did not write itself:
//!
//! - the folder must belong to the user running the host and be writable by
//!   nobody else (it is created `0700`);
//! - every entry carries an HMAC-SHA256 tag, keyed by a random secret kept in
//!   the folder (`0600`), over the entry's name and bytes; an entry whose tag
//!   does not verify (planted, copied from elsewhere, damaged) is compiled
//!   again and replaced, never loaded.
//!
//! An entry's name is the SHA-256 of the component's bytes plus a hash of
//! the engine's compatibility settings (wasmtime version, target, tunables),
//! so a different engine never finds a stale entry. Entries are written to
//! a temporary name and renamed, so a crash never leaves half an entry.

use crate::error::{RuntimeError, one_line};
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The file holding the cache's secret key.
const KEY_FILE: &str = "key";
/// Bytes of the secret key, and of an entry's tag.
const TAG_BYTES: usize = 32;

type Tagger = Hmac<Sha256>;

/// A folder of compiled components.
pub(crate) struct ComponentCache {
    dir: Dir,
    key: [u8; TAG_BYTES],
    engine_tag: String,
    hits: AtomicU64,
    compiles: AtomicU64,
}

/// How often the cache saved a compilation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Components loaded from the cache.
    pub hits: u64,
    /// Components compiled (and then stored).
    pub compiles: u64,
}

impl ComponentCache {
    /// Opens (creating if needed) the cache folder for `engine`, refusing a
    /// folder other users could write to.
    pub(crate) fn open(path: &Path, engine: &Engine) -> Result<Self, RuntimeError> {
        let fail = |why: String| {
            RuntimeError::Engine(format!("component cache {}: {why}", path.display()))
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| fail(e.to_string()))?;
        check_private(path).map_err(fail)?;
        let key = load_or_create_key(&path.join(KEY_FILE)).map_err(fail)?;
        let dir =
            Dir::open_ambient_dir(path, ambient_authority()).map_err(|e| fail(e.to_string()))?;
        // The same engine settings give the same tag in every process built
        // by the same compiler; a different tag only costs a recompile.
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir,
            key,
            engine_tag: format!("{:016x}", hasher.finish()),
            hits: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
        })
    }

    fn entry_name(&self, wasm: &[u8]) -> String {
        let mut name = String::with_capacity(64 + 24);
        for byte in Sha256::digest(wasm) {
            let _ = write!(name, "{byte:02x}");
        }
        let _ = write!(name, "-{}.cwasm", self.engine_tag);
        name
    }

    fn tagger(&self, name: &str) -> Tagger {
        let mut mac = Tagger::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(name.as_bytes());
        mac
    }

    /// The entry's compiled bytes, if its tag verifies.
    fn read_verified(&self, name: &str) -> Option<Vec<u8>> {
        let mut entry = self.dir.read(name).ok()?;
        if entry.len() < TAG_BYTES {
            return None;
        }
        let compiled = entry.split_off(TAG_BYTES);
        let mut mac = self.tagger(name);
        mac.update(&compiled);
        mac.verify_slice(&entry).ok()?;
        Some(compiled)
    }

    /// The compiled form of `wasm`, from the cache or freshly compiled (and
    /// then stored). A cache that cannot be read or written only costs time.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        path: &Path,
    ) -> Result<Component, RuntimeError> {
        let name = self.entry_name(wasm);
        if let Some(compiled) = self.read_verified(&name) {
            // SAFETY: wasmtime requires that the bytes come from
            // `Component::serialize` and were not tampered with. These did:
            // `store` below wrote them, and their HMAC tag, keyed by a secret
            // only this user can read, verified just now over the entry's
            // name (which binds the source bytes and the engine settings) and
            // the bytes themselves. wasmtime also checks the header and
            // refuses an artifact from an incompatible engine.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize(engine, &compiled) };
            match loaded {
                Ok(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(component);
                }
                Err(e) => {
                    tracing::warn!(entry = %name, error = %one_line(&e), "recompiling an unusable cache entry")
                }
            }
        }
        let component = compile(engine, wasm, path)?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.store(&name, &component) {
            tracing::warn!(entry = %name, error = %e, "cannot write a component cache entry");
        }
        Ok(component)
    }

    /// Hits and compilations so far.
    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            compiles: self.compiles.load(Ordering::Relaxed),
        }
    }

    fn store(&self, name: &str, component: &Component) -> Result<(), String> {
        let compiled = component.serialize().map_err(|e| one_line(&e))?;
        let mut mac = self.tagger(name);
        mac.update(&compiled);
        let mut entry = mac.finalize().into_bytes().to_vec();
        entry.extend_from_slice(&compiled);
        let temporary = format!("{name}.{:016x}.tmp", rand::random::<u64>());
        self.dir
            .write(&temporary, &entry)
            .map_err(|e| e.to_string())?;
        self.dir.rename(&temporary, &self.dir, name).map_err(|e| {
            let _ = self.dir.remove_file(&temporary);
            e.to_string()
        })
    }
}

/// Refuses a folder that another user owns or could write to.
fn check_private(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let me = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| format!("cannot tell who runs this process: {e}"))?;
    if meta.uid() != me {
        return Err(format!(
            "owned by user {}, not by this user ({me})",
            meta.uid()
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err("writable by other users; make it private (chmod 700)".into());
    }
    Ok(())
}

/// Reads the cache's secret key, creating it (mode 0600) on first use.
fn load_or_create_key(path: &Path) -> Result<[u8; TAG_BYTES], String> {
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut file) => {
            let key: [u8; TAG_BYTES] = rand::random();
            file.write_all(&key)
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot write its key: {e}"))?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if std::fs::metadata(path)
                .map_err(|e| e.to_string())?
                .permissions()
                .mode()
                & 0o077
                != 0
            {
                return Err(format!(
                    "its key {} is readable by other users",
                    path.display()
                ));
            }
            let bytes = std::fs::read(path).map_err(|e| format!("cannot read its key: {e}"))?;
            <[u8; TAG_BYTES]>::try_from(bytes.as_slice())
                .map_err(|_| format!("its key {} is damaged", path.display()))
        }
        Err(e) => Err(format!("cannot create its key: {e}")),
    }
}

/// Compiles a component, naming the file in the error.
pub(crate) fn compile(
    engine: &Engine,
    wasm: &[u8],
    path: &Path,
) -> Result<Component, RuntimeError> {
    Component::new(engine, wasm).map_err(|e| RuntimeError::InvalidComponent {
        path: PathBuf::from(path),
        reason: one_line(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component with no imports or exports, from its binary encoding.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn temp_cache() -> (PathBuf, Engine, ComponentCache) {
        let dir =
            std::env::temp_dir().join(format!("weft-cache-test-{:016x}", rand::random::<u64>()));
        let engine = Engine::default();
        let cache = ComponentCache::open(&dir, &engine).unwrap();
        (dir, engine, cache)
    }

    #[test]
    fn entry_names_bind_content_and_engine() {
        let (dir, _, cache) = temp_cache();
        let a = cache.entry_name(b"one");
        assert_eq!(a, cache.entry_name(b"one"));
        assert_ne!(a, cache.entry_name(b"two"));
        assert!(a.ends_with(&format!("-{}.cwasm", cache.engine_tag)));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn entries_load_only_with_a_valid_tag() {
        let (dir, engine, cache) = temp_cache();
        cache
            .load(&engine, EMPTY_COMPONENT, Path::new("empty.wasm"))
            .unwrap();
        cache
            .load(&engine, EMPTY_COMPONENT, Path::new("empty.wasm"))
            .unwrap();
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 1,
                compiles: 1
            }
        );

        // A planted entry (right name, serialized bytes, no valid tag) is
        // recompiled, never deserialized.
        let name = cache.entry_name(EMPTY_COMPONENT);
        let genuine = std::fs::read(dir.join(&name)).unwrap();
        let mut planted = vec![0u8; TAG_BYTES];
        planted.extend_from_slice(&genuine[TAG_BYTES..]);
        std::fs::write(dir.join(&name), &planted).unwrap();
        assert!(cache.read_verified(&name).is_none());
        cache
            .load(&engine, EMPTY_COMPONENT, Path::new("empty.wasm"))
            .unwrap();
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 1,
                compiles: 2
            }
        );
        assert_eq!(
            std::fs::read(dir.join(&name)).unwrap(),
            genuine,
            "the entry was replaced"
        );

        // The same entry under another cache's key does not verify either.
        let other = ComponentCache::open(&dir.join("other"), &engine).unwrap();
        std::fs::copy(dir.join(&name), dir.join("other").join(&name)).unwrap();
        assert!(other.read_verified(&name).is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_folder_others_can_write_is_refused() {
        let dir =
            std::env::temp_dir().join(format!("weft-cache-test-{:016x}", rand::random::<u64>()));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ComponentCache::open(&dir, &Engine::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("writable by other users"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let engine = Engine::default();
        let err = compile(&engine, b"not wasm", Path::new("bad.wasm")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("bad.wasm: not a valid Wasm component"),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }
}

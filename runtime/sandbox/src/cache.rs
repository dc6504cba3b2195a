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
//!   again and replaced, never loaded. A key that is missing, damaged (a
//!   crash while an older release wrote it), unreadable or readable by
//!   others is replaced by a new one, which only costs a recompile of each
//!   entry.
//!
//! An entry's name is the SHA-256 of the component's bytes plus a hash of
//! the engine's compatibility settings (wasmtime version, target, tunables),
//! so a different engine never finds a stale entry. Entries and the key are
//! written `0600` to a temporary name, fsynced and renamed, so a crash never
//! leaves half of one; temporary files a killed process left are removed
//! when the cache opens.
//!
//! The cache is bounded: at most [`MAX_CACHE_BYTES`] in at most
//! [`MAX_CACHE_ENTRIES`] entries. When it opens and after each entry it
//! stores, the least recently used entries (by modification time, which a
//! hit refreshes) are deleted until it fits; entries of an older engine,
//! never hit again, go first.

use crate::error::{RuntimeError, one_line};
use crate::private_fs::{self, PrivateFsError};
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The file holding the cache's secret key.
const KEY_FILE: &str = "key";
/// Bytes of the secret key, and of an entry's tag.
const TAG_BYTES: usize = 32;
/// The most bytes of compiled entries kept (1 GiB): a compiled component
/// is a few MiB, so this holds every component a host runs, several
/// versions of each, while bounding what deploys and engine upgrades pile
/// up on the disk over months.
pub(crate) const MAX_CACHE_BYTES: u64 = 1 << 30;
/// The most entries kept, whatever their size.
pub(crate) const MAX_CACHE_ENTRIES: usize = 512;
/// A temporary file this old was left by a killed writer (see
/// [`private_fs::remove_stale_temporaries`]).
const STALE_TEMPORARY: Duration = Duration::from_secs(10 * 60);
/// The extension of an entry's name.
const ENTRY_EXTENSION: &str = ".cwasm";

type Tagger = Hmac<Sha256>;

/// A folder of compiled components.
pub(crate) struct ComponentCache {
    /// The folder, held open: entries are read through it.
    dir: Dir,
    /// The folder's path: entries are written and evicted through it.
    path: PathBuf,
    key: [u8; TAG_BYTES],
    bounds: Bounds,
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

/// How much the cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// The most bytes of entries.
    pub(crate) bytes: u64,
    /// The most entries.
    pub(crate) entries: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            bytes: MAX_CACHE_BYTES,
            entries: MAX_CACHE_ENTRIES,
        }
    }
}

impl ComponentCache {
    /// Opens (creating if needed, private) the cache folder for `engine`,
    /// refusing a folder another user owns or could write to.
    pub(crate) fn open(path: &Path, engine: &Engine) -> Result<Self, RuntimeError> {
        Self::open_bounded(path, engine, Bounds::default())
    }

    /// [`Self::open`], keeping at most `bounds`.
    pub(crate) fn open_bounded(
        path: &Path,
        engine: &Engine,
        bounds: Bounds,
    ) -> Result<Self, RuntimeError> {
        // The error names the folder.
        private_fs::create_private_dir(path)
            .map_err(|e| RuntimeError::Engine(format!("component cache {e}")))?;
        private_fs::remove_stale_temporaries(path, STALE_TEMPORARY);
        let key = load_or_create_key(&path.join(KEY_FILE));
        let dir = Dir::open_ambient_dir(path, ambient_authority()).map_err(|e| {
            RuntimeError::Engine(format!("component cache {}: {e}", path.display()))
        })?;
        // The same engine settings give the same tag in every process built
        // by the same compiler; a different tag only costs a recompile.
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let cache = Self {
            dir,
            path: path.to_path_buf(),
            key,
            bounds,
            engine_tag: format!("{:016x}", hasher.finish()),
            hits: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
        };
        cache.evict();
        Ok(cache)
    }

    fn entry_name(&self, wasm: &[u8]) -> String {
        let mut name = String::with_capacity(64 + 24);
        for byte in Sha256::digest(wasm) {
            let _ = write!(name, "{byte:02x}");
        }
        let _ = write!(name, "-{}{ENTRY_EXTENSION}", self.engine_tag);
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
        self.mark_used(name);
        Some(compiled)
    }

    /// Makes entry `name` the most recently used, the last to be evicted.
    /// Set from the clock, not left to the write: the kernel stamps writes
    /// from a coarser clock, which could order a hit before an older write.
    fn mark_used(&self, name: &str) {
        if let Ok(file) = self.dir.open(name) {
            let _ = file.into_std().set_modified(SystemTime::now());
        }
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
        private_fs::write_private_file(&self.path.join(name), &entry).map_err(|e| e.to_string())?;
        self.mark_used(name);
        self.evict();
        Ok(())
    }

    /// Deletes the least recently used entries until the rest fit the
    /// bounds. Another process may be evicting too: what it deleted first
    /// is skipped; an entry deleted while read only costs a recompile.
    fn evict(&self) {
        let Ok(listing) = std::fs::read_dir(&self.path) else {
            return;
        };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = listing
            .flatten()
            .filter(|entry| {
                entry
                    .file_name()
                    .to_str()
                    .is_some_and(|name| name.ends_with(ENTRY_EXTENSION))
            })
            .filter_map(|entry| {
                let meta = entry.metadata().ok()?;
                let used = meta.modified().ok()?;
                meta.is_file().then(|| (used, meta.len(), entry.path()))
            })
            .collect();
        // Most recently used first: keep those while they fit, and once one
        // does not, delete it and every older one.
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        let (mut bytes, mut kept, mut full) = (0u64, 0usize, false);
        for (_, size, path) in entries {
            full = full
                || kept >= self.bounds.entries
                || bytes.saturating_add(size) > self.bounds.bytes;
            if !full {
                bytes += size;
                kept += 1;
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::debug!(entry = %path.display(), "evicted a component cache entry");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(entry = %path.display(), error = %e, "cannot evict a component cache entry");
                }
            }
        }
    }
}

/// The cache's secret key: the one in `path`, or a new one, made (`0600`,
/// written whole) when there is none or the one there cannot be used. A
/// new key only makes every entry fail its check and be compiled again; a
/// key that cannot be saved serves this process alone.
fn load_or_create_key(path: &Path) -> [u8; TAG_BYTES] {
    // Twice at most: a key another process made between our read and our
    // write is read the second time.
    for _ in 0..2 {
        let problem = match read_key(path) {
            Ok(key) => return key,
            Err(problem) => problem,
        };
        let key: [u8; TAG_BYTES] = rand::random();
        let saved = match &problem {
            None => private_fs::create_private_file(path, &key),
            Some(why) => {
                tracing::warn!(key = %path.display(), problem = %why, "replacing the component cache's key; its entries will be compiled again");
                private_fs::write_private_file(path, &key)
            }
        };
        match saved {
            Ok(()) => return key,
            Err(PrivateFsError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot save the component cache's key; what this process stores will be compiled again by the next");
                return key;
            }
        }
    }
    tracing::warn!(key = %path.display(), "the component cache's key keeps changing; using one for this process alone");
    rand::random()
}

/// The key in `path`: `Err(None)` if there is none, `Err(Some(why))` if
/// the file there cannot be used.
fn read_key(path: &Path) -> Result<[u8; TAG_BYTES], Option<String>> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(None),
        Err(e) => return Err(Some(e.to_string())),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Some("readable by other users".into()));
    }
    let bytes = std::fs::read(path).map_err(|e| Some(e.to_string()))?;
    <[u8; TAG_BYTES]>::try_from(bytes.as_slice())
        .map_err(|_| Some(format!("damaged ({} bytes, not {TAG_BYTES})", bytes.len())))
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

    /// A component of its own for each `mark`: the empty one with a custom
    /// section holding `mark`.
    fn marked(mark: u8) -> Vec<u8> {
        let mut wasm = EMPTY_COMPONENT.to_vec();
        wasm.extend_from_slice(&[0, 3, 1, b'w', mark]);
        wasm
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(ENTRY_EXTENSION))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_damaged_or_exposed_key_costs_a_recompile_not_an_error() {
        let (dir, engine, cache) = temp_cache();
        let key = dir.join(KEY_FILE);
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        cache
            .load(&engine, EMPTY_COMPONENT, Path::new("e.wasm"))
            .unwrap();
        drop(cache);
        // What a kill -9 left of a key written in place; then a key others
        // can read; then one that is not a file at all.
        let damages: [&dyn Fn(); 3] = [
            &|| std::fs::write(&key, b"").unwrap(),
            &|| {
                std::fs::write(&key, [7u8; TAG_BYTES]).unwrap();
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            },
            &|| {
                std::fs::remove_file(&key).unwrap();
                std::fs::create_dir(&key).unwrap();
            },
        ];
        for (i, damage) in damages.iter().enumerate() {
            damage();
            let cache = ComponentCache::open(&dir, &engine);
            if i == 2 {
                // A folder cannot be renamed over: the cache still works,
                // with a key for this process alone.
                let cache = cache.unwrap();
                cache
                    .load(&engine, EMPTY_COMPONENT, Path::new("e.wasm"))
                    .unwrap();
                assert_eq!(
                    cache.stats(),
                    CacheStats {
                        hits: 0,
                        compiles: 1
                    }
                );
                std::fs::remove_dir(&key).unwrap();
                continue;
            }
            let cache = cache.unwrap();
            cache
                .load(&engine, EMPTY_COMPONENT, Path::new("e.wasm"))
                .unwrap();
            assert_eq!(
                cache.stats(),
                CacheStats {
                    hits: 0,
                    compiles: 1
                },
                "damage {i}"
            );
            let meta = std::fs::metadata(&key).unwrap();
            assert_eq!(meta.len(), TAG_BYTES as u64);
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
            // The new key is kept: the next process hits.
            drop(cache);
            let again = ComponentCache::open(&dir, &engine).unwrap();
            again
                .load(&engine, EMPTY_COMPONENT, Path::new("e.wasm"))
                .unwrap();
            assert_eq!(
                again.stats(),
                CacheStats {
                    hits: 1,
                    compiles: 0
                }
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_least_recently_used_entries_are_evicted() {
        let dir =
            std::env::temp_dir().join(format!("weft-cache-test-{:016x}", rand::random::<u64>()));
        let engine = Engine::default();
        let bounds = Bounds {
            bytes: u64::MAX,
            entries: 2,
        };
        let cache = ComponentCache::open_bounded(&dir, &engine, bounds).unwrap();
        let (a, b, c) = (marked(1), marked(2), marked(3));
        for wasm in [&a, &b] {
            cache.load(&engine, wasm, Path::new("x.wasm")).unwrap();
        }
        // A hit makes `a` the most recently used: `b` goes when `c` comes.
        cache.load(&engine, &a, Path::new("x.wasm")).unwrap();
        cache.load(&engine, &c, Path::new("x.wasm")).unwrap();
        let mut expected = vec![cache.entry_name(&a), cache.entry_name(&c)];
        expected.sort();
        assert_eq!(entries(&dir), expected);
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 1,
                compiles: 3
            }
        );

        // A byte bound too, applied when the cache opens: only the newest
        // entry fits in the size of one.
        let one = std::fs::metadata(dir.join(cache.entry_name(&c)))
            .unwrap()
            .len();
        drop(cache);
        let bounds = Bounds {
            bytes: one,
            entries: 100,
        };
        let cache = ComponentCache::open_bounded(&dir, &engine, bounds).unwrap();
        assert_eq!(entries(&dir), vec![cache.entry_name(&c)]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn temporary_files_a_killed_writer_left_are_removed_at_open() {
        let (dir, engine, cache) = temp_cache();
        drop(cache);
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        let leftovers = [
            format!("{}0123456789abcdef", private_fs::TEMP_PREFIX),
            "0123-abcd.cwasm.0123456789abcdef.tmp".to_owned(),
        ];
        for name in &leftovers {
            std::fs::File::create(dir.join(name))
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        // One being written by another process right now stays.
        let young = format!("{}fedcba9876543210", private_fs::TEMP_PREFIX);
        std::fs::write(dir.join(&young), b"").unwrap();
        drop(ComponentCache::open(&dir, &engine).unwrap());
        for name in &leftovers {
            assert!(!dir.join(name).exists(), "{name}");
        }
        assert!(dir.join(&young).exists());
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

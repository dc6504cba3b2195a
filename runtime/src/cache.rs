//! Compiled components cached on disk, keyed by content hash, so a host that
//! restarts (or a test process that starts) does not compile again.
//!
//! An entry's name is the SHA-256 of the component's bytes plus a hash of
//! the engine's compatibility settings (wasmtime version, target, tunables),
//! so a different engine never finds a stale entry. Entries are written to
//! a temporary name and renamed, so a crash never leaves half an entry.

use crate::error::{RuntimeError, one_line};
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A folder of compiled components.
pub(crate) struct ComponentCache {
    dir: Dir,
    engine_tag: String,
}

impl ComponentCache {
    /// Opens (creating if needed) the cache folder for `engine`.
    pub(crate) fn open(path: &Path, engine: &Engine) -> Result<Self, RuntimeError> {
        let cannot = |e: std::io::Error| {
            RuntimeError::Engine(format!("component cache {}: {e}", path.display()))
        };
        std::fs::create_dir_all(path).map_err(cannot)?;
        let dir = Dir::open_ambient_dir(path, ambient_authority()).map_err(cannot)?;
        // DefaultHasher's keys are fixed, so this tag is the same in every
        // process built from the same source.
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir,
            engine_tag: format!("{:016x}", hasher.finish()),
        })
    }

    fn entry_name(&self, wasm: &[u8]) -> String {
        let digest = Sha256::digest(wasm);
        let mut name = String::with_capacity(64 + 24);
        for byte in digest {
            let _ = write!(name, "{byte:02x}");
        }
        let _ = write!(name, "-{}.cwasm", self.engine_tag);
        name
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
        if let Ok(compiled) = self.dir.read(&name) {
            // SAFETY: wasmtime requires that deserialized bytes come from
            // `Component::serialize` of a compatible engine. This entry was
            // written by `store` below from such bytes, into the host's own
            // state folder, under a name that binds it to the exact source
            // bytes and the engine's compatibility hash; wasmtime also checks
            // the header and rejects an incompatible artifact.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize(engine, &compiled) };
            match loaded {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(entry = %name, error = %one_line(&e), "recompiling unusable cache entry")
                }
            }
        }
        let component = compile(engine, wasm, path)?;
        if let Err(e) = self.store(&name, &component) {
            tracing::warn!(entry = %name, error = %e, "cannot write component cache entry");
        }
        Ok(component)
    }

    fn store(&self, name: &str, component: &Component) -> Result<(), String> {
        let bytes = component.serialize().map_err(|e| one_line(&e))?;
        let temporary = format!("{name}.{:016x}.tmp", rand::random::<u64>());
        self.dir
            .write(&temporary, &bytes)
            .map_err(|e| e.to_string())?;
        self.dir.rename(&temporary, &self.dir, name).map_err(|e| {
            let _ = self.dir.remove_file(&temporary);
            e.to_string()
        })
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

    #[test]
    fn entry_names_bind_content_and_engine() {
        let engine = Engine::default();
        let dir = std::env::temp_dir().join(format!("weft-cache-test-{}", rand::random::<u64>()));
        let cache = ComponentCache::open(&dir, &engine).unwrap();
        let a = cache.entry_name(b"one");
        assert_eq!(a, cache.entry_name(b"one"));
        assert_ne!(a, cache.entry_name(b"two"));
        assert!(a.ends_with(&format!("-{}.cwasm", cache.engine_tag)));
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

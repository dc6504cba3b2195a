//! Where a host keeps what it keeps, unless told otherwise: per-user
//! folders under the XDG base folders (or their `~/.cache` and
//! `~/.local/state` fallbacks), never the manifest's folder, where a
//! repository could ship "cached" native code.

use std::path::{Path, PathBuf};

/// A per-user folder: `$XDG_VAR/weft` or `~/FALLBACK/weft`.
fn user_dir(xdg_var: &str, fallback: &str) -> Option<PathBuf> {
    let base = std::env::var_os(xdg_var)
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(fallback)))?;
    Some(base.join("weft"))
}

/// Where compiled components are cached unless `--cache-dir` says otherwise.
pub fn default_cache_dir() -> Option<PathBuf> {
    user_dir("XDG_CACHE_HOME", ".cache").map(|dir| dir.join("components"))
}

/// Where `weft up` keeps a service's state unless `--state-dir` says otherwise.
pub fn default_state_dir(service: &str) -> Option<PathBuf> {
    user_dir("XDG_STATE_HOME", ".local/state").map(|dir| dir.join(service))
}

/// Where `weft host` keeps its state unless `--state-dir` says otherwise
/// (`_host` cannot be a service's name, so it never meets `weft up`'s).
pub fn default_host_state_dir() -> Option<PathBuf> {
    user_dir("XDG_STATE_HOME", ".local/state").map(|dir| dir.join("_host"))
}

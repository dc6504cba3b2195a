//! What a version of a role was built from: the record of one generation of
//! one role, shared by web versions ([`super::web`]) and worker versions
//! ([`super::workers`]) alike.

use super::store::Digest;
use std::collections::BTreeMap;

/// What a version of a role was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// The deployment generation that made it.
    pub generation: u64,
    /// Its component.
    pub digest: Digest,
    /// Its settings' values.
    pub settings: BTreeMap<String, String>,
}

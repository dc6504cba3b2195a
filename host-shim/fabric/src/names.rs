//! The fabric's names: its buckets, the keys in them, and the checks on
//! what a user names (a host, a fault domain, a label).
//!
//! Keys use `.` as separator so that one key kind is one subject prefix
//! (`assign.>`), and every part is in Weft's name alphabet, which is a
//! valid NATS subject token.

use std::collections::BTreeMap;
use weft_host::controller::store::Digest;
use weft_host::manifest::{MAX_PLACEMENT_LABELS, check_label};

/// The KV bucket of the fabric's lasting state: the leader's lease, the
/// members, the desired state of each service and its placement.
pub const STATE_BUCKET: &str = "weft-fabric";
/// The KV bucket of heartbeats: written every second, disposable.
pub const BEATS_BUCKET: &str = "weft-fabric-beats";
/// The object store of components, by digest.
pub const BLOBS_BUCKET: &str = "weft-fabric-blobs";

/// The leader's lease.
pub const LEADER_KEY: &str = "leader";
/// Prefix of members' records (`host.<id>`).
pub const HOST_PREFIX: &str = "host.";
/// Prefix of the leader's view of each member (`hstate.<id>`).
pub const HOST_STATE_PREFIX: &str = "hstate.";
/// Prefix of each service's signed desired state (`svc.<name>`).
pub const SERVICE_PREFIX: &str = "svc.";
/// Prefix of each service's placement (`assign.<name>`).
pub const ASSIGNMENT_PREFIX: &str = "assign.";
/// Prefix of heartbeats (`beat.<id>`, in [`BEATS_BUCKET`]).
pub const BEAT_PREFIX: &str = "beat.";

/// `host.<id>`.
pub fn host_key(id: &str) -> String {
    format!("{HOST_PREFIX}{id}")
}

/// `hstate.<id>`.
pub fn host_state_key(id: &str) -> String {
    format!("{HOST_STATE_PREFIX}{id}")
}

/// `svc.<name>`.
pub fn service_key(name: &str) -> String {
    format!("{SERVICE_PREFIX}{name}")
}

/// `assign.<name>`.
pub fn assignment_key(name: &str) -> String {
    format!("{ASSIGNMENT_PREFIX}{name}")
}

/// `beat.<id>`.
pub fn beat_key(id: &str) -> String {
    format!("{BEAT_PREFIX}{id}")
}

/// A component's name in [`BLOBS_BUCKET`]: `sha256-<64 hex>`.
pub fn blob_name(digest: &Digest) -> String {
    digest.to_string().replacen(':', "-", 1)
}

/// Why a name given on the command line is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} '{text}' {why}")]
#[non_exhaustive]
pub struct NameError {
    /// What was named: `host id`, `fault domain`, `label`.
    pub what: &'static str,
    /// The text, its first 80 characters.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

impl NameError {
    fn new(what: &'static str, text: &str, why: impl Into<String>) -> Self {
        Self {
            what,
            text: text.chars().take(80).collect(),
            why: why.into(),
        }
    }
}

/// Checks a fault domain, or a label's key or value (`what` names which in
/// the error), by the rule a role's `placement` labels follow
/// ([`check_label`]: 1 to 63 characters of `a-z`, `0-9`, `.`, `_` and `-`,
/// starting with a letter or digit).
pub fn check_label_part(what: &'static str, text: &str) -> Result<(), NameError> {
    check_label(text).map_err(|why| NameError::new(what, text, why))
}

/// Checks a host id: a label's rule ([`check_label_part`]) without `.`,
/// since the id becomes one token of the fabric's keys (`host.<id>`).
pub fn check_host_id(text: &str) -> Result<(), NameError> {
    check_label_part("host id", text)?;
    if text.contains('.') {
        return Err(NameError::new(
            "host id",
            text,
            "may not contain '.' (it is one token of the fabric's keys)",
        ));
    }
    Ok(())
}

/// Parses `key=value` labels (`--label zone=a`), at most
/// [`MAX_PLACEMENT_LABELS`] (as many as a role's `placement` may require).
pub fn parse_labels(texts: &[String]) -> Result<BTreeMap<String, String>, NameError> {
    if texts.len() > MAX_PLACEMENT_LABELS {
        return Err(NameError::new(
            "label",
            &texts.join(","),
            format!("is more than {MAX_PLACEMENT_LABELS} labels"),
        ));
    }
    let mut labels = BTreeMap::new();
    for text in texts {
        let Some((key, value)) = text.split_once('=') else {
            return Err(NameError::new("label", text, "is not key=value"));
        };
        check_label_part("label", key)?;
        check_label_part("label", value)?;
        if labels.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(NameError::new("label", text, "names its key twice"));
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_host_id("h-1_a").is_ok());
        assert!(check_label_part("fault domain", "eu-west-1.a").is_ok());
        for bad in ["", "-a", "A", "a b", "a*", "a>", &"a".repeat(64)] {
            assert!(check_label_part("fault domain", bad).is_err(), "{bad}");
            assert!(check_host_id(bad).is_err(), "{bad}");
        }
        let refused = check_label_part("fault domain", "A").unwrap_err();
        assert!(
            refused.to_string().starts_with("fault domain 'A' must be"),
            "{refused}"
        );
        let dotted = check_host_id("a.b").unwrap_err();
        assert_eq!(
            dotted.to_string(),
            "host id 'a.b' may not contain '.' (it is one token of the fabric's keys)"
        );
    }

    #[test]
    fn labels_parse_strictly() {
        let labels = parse_labels(&["zone=a".into(), "disk=ssd".into()]).unwrap();
        assert_eq!(labels["zone"], "a");
        for bad in ["zone", "zone=", "=a", "Zone=a", "zone=a b"] {
            assert!(parse_labels(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(parse_labels(&["zone=a".into(), "zone=b".into()]).is_err());
        let many: Vec<String> = (0..=MAX_PLACEMENT_LABELS)
            .map(|i| format!("k{i}=v"))
            .collect();
        assert!(parse_labels(&many).is_err());
    }

    #[test]
    fn keys_and_blob_names() {
        assert_eq!(service_key("shop"), "svc.shop");
        assert_eq!(assignment_key("shop"), "assign.shop");
        let digest = Digest::of(b"x");
        assert!(blob_name(&digest).starts_with("sha256-"));
        assert_eq!(blob_name(&digest).len(), 7 + 64);
    }
}

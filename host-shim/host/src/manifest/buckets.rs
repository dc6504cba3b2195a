//! The manifest's `[buckets.NAME]` tables: how a service's bucket keeps its
//! entries. A role reaches a bucket by naming it in its `buckets` list; the
//! table, which is optional, belongs to the service (two roles sharing a
//! bucket share its settings), and the host applies it with
//! [`KvStore::configure_bucket`](weft_broker::KvStore::configure_bucket)
//! each time it opens the service's backends.
//!
//! ```toml
//! [buckets.jobs]
//! ttl-seconds = 3600   # an entry expires an hour after its last write
//! ```

use super::checks::{check_name, line_of};
use super::role::Role;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use toml::Spanned;
use weft_broker::BucketSettings;

/// The longest `ttl-seconds`: a year. Longer is the same as none for a
/// bucket that is meant to stop filling up, and keeps every deadline far
/// from overflowing.
pub const MAX_BUCKET_TTL_SECS: u64 = 365 * 24 * 60 * 60;

/// One `[buckets.NAME]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawBucket {
    /// How long an entry lives after its last write, in seconds (1 to
    /// [`MAX_BUCKET_TTL_SECS`]). Default: none, entries live until deleted
    /// (a bucket is then bounded by its size alone, 64 MiB).
    ttl_seconds: Option<u64>,
}

/// Checks each table (its name, that some role is granted the bucket, its
/// numbers) and returns the settings by bucket name. Errors are one line,
/// naming the table's line and the field.
pub(super) fn resolve(
    raw: BTreeMap<Spanned<String>, RawBucket>,
    roles: &BTreeMap<String, Role>,
    text: &str,
) -> Result<BTreeMap<String, BucketSettings>, String> {
    let mut buckets = BTreeMap::new();
    for (key, table) in raw {
        let line = line_of(text, key.span().start);
        let name = key.into_inner();
        let at = format!("line {line}: buckets.{name}");
        check_name(&name).map_err(|why| format!("{at}: bucket name {why}"))?;
        if !roles.values().any(|role| role.buckets.contains(&name)) {
            return Err(format!(
                "{at}: no role is granted bucket '{name}'; add it to a role's buckets list, or remove the table"
            ));
        }
        let ttl = match table.ttl_seconds {
            Some(secs) if !(1..=MAX_BUCKET_TTL_SECS).contains(&secs) => {
                return Err(format!(
                    "{at}.ttl-seconds must be 1 to {MAX_BUCKET_TTL_SECS} (a year), not {secs}"
                ));
            }
            Some(secs) => Some(Duration::from_secs(secs)),
            None => None,
        };
        buckets.insert(name, BucketSettings { ttl });
    }
    Ok(buckets)
}

#[cfg(test)]
mod tests {
    use super::super::Manifest;
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
[service]
name = "pipeline"

[roles.web]
kind = "web"
component = "web.wasm"
listen = "127.0.0.1:0"
buckets = ["jobs", "cache"]

[roles.worker]
kind = "worker"
component = "worker.wasm"
buckets = ["jobs"]
"#;

    fn parse(extra: &str) -> Result<Manifest, String> {
        Manifest::parse(Path::new("dir/weft.toml"), &format!("{BASE}{extra}"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_bucket_table_sets_its_ttl_and_a_missing_one_sets_nothing() {
        let m = parse("\n[buckets.jobs]\nttl-seconds = 3600\n").unwrap();
        assert_eq!(
            m.buckets,
            BTreeMap::from([(
                "jobs".to_owned(),
                BucketSettings {
                    ttl: Some(Duration::from_secs(3600))
                }
            )])
        );
        assert!(parse("").unwrap().buckets.is_empty());
        let m = parse("\n[buckets.cache]\n").unwrap();
        assert_eq!(m.buckets["cache"], BucketSettings::default());
        // The edges are accepted.
        for secs in [1, MAX_BUCKET_TTL_SECS] {
            let m = parse(&format!("\n[buckets.jobs]\nttl-seconds = {secs}\n")).unwrap();
            assert_eq!(m.buckets["jobs"].ttl, Some(Duration::from_secs(secs)));
        }
    }

    #[test]
    fn bad_bucket_tables_are_refused_on_one_line_naming_the_table() {
        let cases = [
            (
                "\n[buckets.jobs]\nttl-seconds = 0\n",
                "line 16: buckets.jobs.ttl-seconds must be 1 to 31536000 (a year), not 0",
            ),
            (
                "\n[buckets.jobs]\nttl-seconds = 31536001\n",
                "buckets.jobs.ttl-seconds must be 1 to 31536000",
            ),
            ("\n[buckets.jobs]\nttl-seconds = -5\n", "ttl-seconds"),
            ("\n[buckets.jobs]\nttl-seconds = \"1h\"\n", "ttl-seconds"),
            ("\n[buckets.jobs]\nttl = 5\n", "unknown field `ttl`"),
            (
                "\n[buckets.results]\nttl-seconds = 60\n",
                "line 16: buckets.results: no role is granted bucket 'results'",
            ),
            (
                "\n[buckets.Jobs]\nttl-seconds = 60\n",
                "buckets.Jobs: bucket name",
            ),
        ];
        for (extra, expected) in cases {
            let err = parse(extra).unwrap_err();
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
            assert!(err.starts_with("dir/weft.toml: "), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}

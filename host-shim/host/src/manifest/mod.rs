//! The service manifest, `weft.toml`: a service's roles, what each may
//! reach, and what bounds it.
//!
//! Parsing refuses unknown keys, and every error is one line naming the file
//! and, where the TOML parser knows it, the line and column; semantic errors
//! name the line of the role's table and the field (`line 9:
//! roles.web.listen: ...`). A role's `settings` table declares the settings
//! it reads, with their default values; an environment overlay
//! ([`crate::environment`]) may change their values and the instance counts.
//! A `[buckets.NAME]` table ([`buckets`]) sets how a bucket some role is
//! granted keeps its entries (a time to live).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

mod buckets;
mod checks;
#[cfg(test)]
mod extremes;
mod role;
pub use buckets::MAX_BUCKET_TTL_SECS;
pub use checks::{check_health_path, check_name, check_setting_name, describe_toml_error, line_of};
use role::RawRole;
pub use role::{
    Role, RoleByKind, RoleKind, SandboxCount, WebRoleManifest, WorkerRoleManifest, check_label,
};
use weft_broker::{BucketSettings, QueuesConfig};
use weft_sandbox::EngineConfig;
use weft_sandbox::limits::MIB;

/// The file `weft up DIR` reads.
pub const MANIFEST_FILE: &str = "weft.toml";

/// A manifest that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ManifestError {
    /// The manifest file.
    pub path: PathBuf,
    /// What is wrong, on one line, with the line and column when known.
    pub message: String,
}

/// A parsed, validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The manifest file.
    pub path: PathBuf,
    /// The service's name.
    pub service: String,
    /// Roles by name.
    pub roles: BTreeMap<String, Role>,
    /// Where the service's queues and buckets live (`[queues]`).
    pub queues: QueuesConfig,
    /// The buckets with a `[buckets.NAME]` table, and their settings; a
    /// bucket a role is granted without one has the default settings
    /// (no time to live).
    pub buckets: BTreeMap<String, BucketSettings>,
    /// How the service is upgraded.
    pub upgrade: UpgradePolicy,
}

/// How a rolling upgrade moves (`[service]` keys `upgrade-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradePolicy {
    /// Upgrade domains: a role's instances (worker) or its share of
    /// requests (web) are split into this many, upgraded one at a time.
    /// Default 2: half the capacity keeps serving while the other half
    /// moves.
    pub domains: u32,
    /// How long a domain's new instances must stay ready (and a web role's
    /// health path answer 2xx) before the next domain moves. Default 2 s;
    /// at most an hour.
    pub settle: Duration,
    /// How long one domain may take to become healthy before the upgrade is
    /// rolled back. Default 120 s; at most a day.
    pub timeout: Duration,
}

impl Default for UpgradePolicy {
    fn default() -> Self {
        Self {
            domains: 2,
            settle: Duration::from_secs(2),
            timeout: Duration::from_secs(120),
        }
    }
}

/// Most upgrade domains a service may have.
pub const MAX_UPGRADE_DOMAINS: u32 = 20;

/// The longest `upgrade-settle-ms`: an hour.
pub const MAX_UPGRADE_SETTLE_MS: u64 = 60 * 60 * 1000;

/// The longest `upgrade-timeout-secs`: a day.
pub const MAX_UPGRADE_TIMEOUT_SECS: u64 = 24 * 60 * 60;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawManifest {
    service: RawService,
    #[serde(default)]
    roles: BTreeMap<Spanned<String>, RawRole>,
    #[serde(default)]
    queues: QueuesConfig,
    #[serde(default)]
    buckets: BTreeMap<Spanned<String>, buckets::RawBucket>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawService {
    name: String,
    upgrade_domains: Option<u32>,
    upgrade_settle_ms: Option<u64>,
    upgrade_timeout_secs: Option<u64>,
}

impl RawService {
    fn upgrade(&self) -> Result<UpgradePolicy, String> {
        let default = UpgradePolicy::default();
        let domains = self.upgrade_domains.unwrap_or(default.domains);
        if !(1..=MAX_UPGRADE_DOMAINS).contains(&domains) {
            return Err(format!(
                "upgrade-domains must be 1 to {MAX_UPGRADE_DOMAINS}, not {domains}"
            ));
        }
        // Bounded so that no instant they are added to overflows.
        let settle = match self.upgrade_settle_ms {
            Some(ms) if ms > MAX_UPGRADE_SETTLE_MS => {
                return Err(format!(
                    "upgrade-settle-ms must be at most {MAX_UPGRADE_SETTLE_MS} (an hour), not {ms}"
                ));
            }
            Some(ms) => Duration::from_millis(ms),
            None => default.settle,
        };
        let timeout = match self.upgrade_timeout_secs {
            Some(secs) if !(1..=MAX_UPGRADE_TIMEOUT_SECS).contains(&secs) => {
                return Err(format!(
                    "upgrade-timeout-secs must be 1 to {MAX_UPGRADE_TIMEOUT_SECS} (a day), not {secs}"
                ));
            }
            Some(secs) => Duration::from_secs(secs),
            None => default.timeout,
        };
        Ok(UpgradePolicy {
            domains,
            settle,
            timeout,
        })
    }
}

/// The largest memory cap a role may ask for, in MiB (4 GiB: all a 32-bit
/// Wasm memory can address).
pub const MAX_MEMORY_MIB: u64 = 4096;

/// Most worker instances one role may ask for on one host, and most hosts
/// a web role may ask for in a fabric.
pub const MAX_INSTANCES: u32 = 1000;

/// Most host labels one role's `placement` may name (the one bound on a
/// count of labels, a host's own too).
pub const MAX_PLACEMENT_LABELS: usize = 16;

/// Longest host label key or value, in characters ([`check_label`]).
pub const MAX_LABEL_LEN: usize = 63;

impl Manifest {
    /// Reads `path`, or `path/weft.toml` when `path` is a folder.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let path = if path.is_dir() {
            path.join(MANIFEST_FILE)
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&path).map_err(|e| ManifestError {
            path: path.clone(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&path, &text)
    }

    /// Parses and validates manifest text that came from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ManifestError> {
        let engine = &EngineConfig {
            max_memory_bytes: MAX_MEMORY_MIB * MIB,
            ..EngineConfig::default()
        };
        let fail = |message: String| ManifestError {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| fail(describe_toml_error(text, &e)))?;
        check_name(&raw.service.name).map_err(|why| fail(format!("service.name: {why}")))?;
        let upgrade = raw
            .service
            .upgrade()
            .map_err(|why| fail(format!("service.{why}")))?;
        raw.queues
            .validate()
            .map_err(|why| fail(format!("queues.{why}")))?;
        if raw.roles.is_empty() {
            return Err(fail("no roles: add a [roles.NAME] table".into()));
        }
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut roles = BTreeMap::new();
        let mut listens = BTreeMap::new();
        for (key, raw_role) in raw.roles {
            let line = line_of(text, key.span().start);
            let name = key.into_inner();
            let at = |field: &str| format!("line {line}: roles.{name}.{field}");
            check_name(&name)
                .map_err(|why| fail(format!("line {line}: roles.{name}: role name {why}")))?;
            let role = raw_role
                .resolve(&base, engine)
                .map_err(|(field, why)| fail(format!("{}: {why}", at(field))))?;
            // Port 0 asks the OS for a free port, so it never clashes.
            if let Some(addr) = role.listen().filter(|addr| addr.port() != 0)
                && let Some(other) = listens.insert(addr, name.clone())
            {
                {
                    return Err(fail(format!(
                        "{}: {addr} is already used by role '{other}'",
                        at("listen")
                    )));
                }
            }
            roles.insert(name, role);
        }
        let buckets = buckets::resolve(raw.buckets, &roles, text).map_err(fail)?;
        Ok(Self {
            path: path.to_path_buf(),
            service: raw.service.name,
            roles,
            queues: raw.queues,
            buckets,
            upgrade,
        })
    }

    /// The folder relative paths and build commands start from.
    pub fn folder(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_sandbox::{CpuShare, RateLimits, SandboxLimits};

    fn parse(text: &str) -> Result<Manifest, String> {
        Manifest::parse(Path::new("dir/weft.toml"), text).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
[service]
name = "pipeline"

[roles.web]
kind = "web"
component = "web.wasm"
listen = "127.0.0.1:8080"
queues = ["jobs"]
buckets = ["jobs"]
[roles.web.limits]
memory-mib = 64
[roles.web.settings]
greeting = "hi"
[roles.web.rate-limits.queue]
ops = { size = 50, refill-ms = 1000, burst = 10 }
[roles.web.cpu]
weight = 200

[roles.worker]
kind = "worker"
component = "../worker.wasm"
instances = 3
queues = ["jobs"]
"#;

    #[test]
    fn a_good_manifest_resolves_paths_and_defaults() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.service, "pipeline");
        let web = &m.roles["web"];
        assert_eq!(web.component, Path::new("dir/web.wasm"));
        assert_eq!(web.limits.requests_per_instance, 1, "fresh per request");
        assert_eq!(web.limits.memory_mib, 64);
        assert_eq!(web.limits.deadline_ms, SandboxLimits::default().deadline_ms);
        assert_eq!(web.settings["greeting"], "hi");
        assert_eq!(
            web.rate_limits[weft_sandbox::rate_limit::Interface::Queue]
                .ops
                .map(|b| (b.size, b.burst)),
            Some((50, 10))
        );
        assert_eq!(m.roles["worker"].rate_limits, RateLimits::default());
        assert_eq!(web.cpu.weight, 200);
        assert_eq!(m.roles["worker"].cpu, CpuShare::default());
        assert!(web.egress().is_empty(), "no egress unless listed");
        let worker = &m.roles["worker"];
        assert_eq!(worker.instances(), 3);
        assert_eq!(worker.component, Path::new("dir/../worker.wasm"));
        assert!(worker.buckets.is_empty());
    }

    #[test]
    fn each_role_carries_what_its_kind_has_and_nothing_else() {
        let m = parse(GOOD).unwrap();
        let RoleByKind::Web(web) = &m.roles["web"].by_kind else {
            panic!("the web role is not web: {:?}", m.roles["web"]);
        };
        assert_eq!(web.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(web.health, None);
        assert_eq!(m.roles["web"].sandboxes(), SandboxCount::PerRequest);
        assert_eq!(
            m.roles["worker"].by_kind,
            RoleByKind::Worker(WorkerRoleManifest { instances: 3 })
        );
        assert_eq!(m.roles["worker"].listen(), None);
        assert_eq!(m.roles["worker"].slots(), 3);
    }

    #[test]
    fn syntax_errors_name_file_line_and_column_on_one_line() {
        let err = parse("[service]\nname = \"x\"\n[roles.a\n").unwrap_err();
        assert!(err.starts_with("dir/weft.toml: line 3, column"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let err =
            parse(&GOOD.replace("instances = 3", "instances = 3\ncolour = \"red\"")).unwrap_err();
        assert!(
            err.contains("line 24, column 1") && err.contains("colour"),
            "{err}"
        );
        let err = parse(&GOOD.replace("memory-mib = 64", "memory = 64")).unwrap_err();
        assert!(err.contains("memory"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let cases = [
            (
                GOOD.replace("listen = \"127.0.0.1:8080\"\n", ""),
                "roles.web.listen: required",
            ),
            (
                GOOD.replace("127.0.0.1:8080", "localhost"),
                "roles.web.listen: 'localhost'",
            ),
            (
                GOOD.replace("instances = 3", "instances = 0"),
                "roles.worker.instances: must be 1",
            ),
            (
                GOOD.replace(
                    "queues = [\"jobs\"]\nbuckets",
                    "queues = [\"Jobs!\"]\nbuckets",
                ),
                "roles.web.queues",
            ),
            (
                GOOD.replace("memory-mib = 64", "memory-mib = 5000"),
                "roles.web.limits: memory-mib",
            ),
            (
                GOOD.replace("name = \"pipeline\"", "name = \"../etc\""),
                "service.name",
            ),
            (
                GOOD.replace("kind = \"worker\"", "kind = \"batch\""),
                "unknown variant",
            ),
            (
                GOOD.replace("weight = 200", "weight = 0"),
                "roles.web.cpu: weight must be 1",
            ),
            (
                GOOD.replace(
                    "instances = 3",
                    "instances = 3\negress = [\"https://x.io\"]",
                ),
                "roles.worker.egress: worker roles have no outside contact",
            ),
            (
                GOOD.replace(
                    "buckets = [\"jobs\"]",
                    "buckets = [\"jobs\"]\negress = [\"x.io\"]",
                ),
                "roles.web.egress: 'x.io'",
            ),
            (
                GOOD.replace("memory-mib = 64", "memory-mib = 64\nrole-memory-mib = 32"),
                "roles.web.limits: role-memory-mib 32 is below",
            ),
            (
                GOOD.replace(
                    "memory-mib = 64",
                    "memory-mib = 64\nrequests-per-instance = 0",
                ),
                "roles.web.limits: requests-per-instance must be 1 to 1000000, not 0",
            ),
            (
                format!("{GOOD}[roles.worker.limits]\nrequests-per-instance = 5\n"),
                "roles.worker.limits: requests-per-instance, concurrent-requests-per-instance",
            ),
            (
                GOOD.replace(
                    "memory-mib = 64",
                    "memory-mib = 64\nconcurrent-requests-per-instance = 4",
                ),
                "roles.web.limits: concurrent-requests-per-instance must be 1 to \
                 requests-per-instance (1), not 4",
            ),
            (
                format!(
                    "{GOOD}[roles.worker.limits]\nconcurrent-requests-per-instance = 1\ninstance-idle-timeout-ms = 5\n"
                ),
                "roles.worker.limits: requests-per-instance, concurrent-requests-per-instance \
                 and instance-idle-timeout-ms apply to web roles",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn the_queues_table_picks_the_backend_and_refuses_unknown_keys() {
        use weft_broker::BackendKind;
        let m = parse(GOOD).unwrap();
        assert_eq!(m.queues.kind(), BackendKind::Embedded);
        let nats = format!(
            "{GOOD}\n[queues]\nbackend = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nmax-deliveries = 7\n"
        );
        let m = parse(&nats).unwrap();
        assert_eq!(m.queues.backend, Some(BackendKind::Nats));
        assert_eq!(m.queues.settings().max_deliveries, 7);
        let err = parse(&format!(
            "{GOOD}\n[queues]\nbackend = \"nats\"\nspeed = 3\n"
        ))
        .unwrap_err();
        assert!(err.contains("line 28") && err.contains("speed"), "{err}");
        let err = parse(&format!("{GOOD}\n[queues]\nmax-deliveries = 0\n")).unwrap_err();
        assert!(err.contains("queues.max-deliveries"), "{err}");
        let err = parse(&format!("{GOOD}\n[queues]\nurl = \"nats://x:1\"\n")).unwrap_err();
        assert!(err.contains("queues.url applies only"), "{err}");
    }

    #[test]
    fn a_web_role_takes_its_fabric_host_count_from_instances() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.roles["web"].fabric_instances(), 1, "one host by default");
        assert_eq!(m.roles["worker"].fabric_instances(), 3);
        let text = GOOD.replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:8080\"\ninstances = 3",
        );
        let m = parse(&text).unwrap();
        let web = &m.roles["web"];
        assert_eq!(web.web().map(|web| web.hosts), Some(3));
        assert_eq!(web.fabric_instances(), 3);
        // One host still gives it a fresh instance per request.
        assert_eq!(web.instances(), 1);
        assert_eq!(web.sandboxes(), SandboxCount::PerRequest);
        assert_eq!(
            web.definition(),
            parse(GOOD).unwrap().roles["web"].definition(),
            "the host count is not part of what a version runs"
        );
        for bad in ["0", "1001"] {
            let text = GOOD.replace(
                "listen = \"127.0.0.1:8080\"",
                &format!("listen = \"127.0.0.1:8080\"\ninstances = {bad}"),
            );
            let err = parse(&text).unwrap_err();
            assert!(
                err.contains(&format!(
                    "roles.web.instances: must be 1 to 1000, not {bad}"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn placement_names_host_labels_and_refuses_bad_ones() {
        let m = parse(GOOD).unwrap();
        assert!(m.roles["web"].placement.is_empty());
        let text = GOOD.replace(
            "instances = 3",
            "instances = 3\nplacement = { zone = \"eu-1\", disk.kind = \"ssd\" }",
        );
        let err = parse(&text).unwrap_err();
        assert!(
            err.contains("line 24") && err.contains("expected a string"),
            "a dotted key is a table, not a label: {err}"
        );
        let text = GOOD.replace(
            "instances = 3",
            "instances = 3\nplacement = { zone = \"eu-1\", \"disk.kind\" = \"ssd_2\" }",
        );
        let m = parse(&text).unwrap();
        assert_eq!(
            m.roles["worker"].placement,
            BTreeMap::from([
                ("disk.kind".to_owned(), "ssd_2".to_owned()),
                ("zone".to_owned(), "eu-1".to_owned()),
            ])
        );
        let cases = [
            ("{ Zone = \"eu\" }", "roles.worker.placement: key 'Zone'"),
            (
                "{ zone = \"EU\" }",
                "roles.worker.placement: zone = 'EU': the value",
            ),
            (
                "{ zone = \"\" }",
                "roles.worker.placement: zone = '': the value",
            ),
            (
                "{ \"-zone\" = \"eu\" }",
                "roles.worker.placement: key '-zone'",
            ),
            (
                "{ zone = 3 }",
                "line 24, column 22: zone: invalid type: integer",
            ),
        ];
        for (table, expected) in cases {
            let text = GOOD.replace(
                "instances = 3",
                &format!("instances = 3\nplacement = {table}"),
            );
            let err = parse(&text).unwrap_err();
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
            assert!(!err.contains('\n'), "{err}");
        }
        let long = "a".repeat(64);
        let text = GOOD.replace(
            "instances = 3",
            &format!("instances = 3\nplacement = {{ zone = \"{long}\" }}"),
        );
        assert!(parse(&text).unwrap_err().contains("roles.worker.placement"));
        let many: Vec<String> = (0..17).map(|i| format!("k{i} = \"v\"")).collect();
        let text = GOOD.replace(
            "instances = 3",
            &format!("instances = 3\nplacement = {{ {} }}", many.join(", ")),
        );
        let err = parse(&text).unwrap_err();
        assert!(
            err.contains("roles.worker.placement: may name at most 16 labels, not 17"),
            "{err}"
        );
    }

    #[test]
    fn two_roles_cannot_share_an_address() {
        let text = format!(
            "{GOOD}\n[roles.other]\nkind = \"web\"\ncomponent = \"x.wasm\"\nlisten = \"127.0.0.1:8080\"\n"
        );
        assert!(parse(&text).unwrap_err().contains("already used"));
    }

    #[test]
    fn the_shipped_examples_are_valid() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        for example in ["hello-web", "pipeline"] {
            let path = examples.join(example).join(MANIFEST_FILE);
            Manifest::load(&path).unwrap();
        }
        Manifest::load(&examples.join("pipeline/polyglot.toml")).unwrap();
    }
}

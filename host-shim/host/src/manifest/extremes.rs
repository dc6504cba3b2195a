//! Property test: every number a manifest holds, fed extreme values, is
//! either accepted (and then safe for every sum the host makes of it) or
//! refused with one line naming the field; never a panic.

use super::*;
use crate::environment::Overrides;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

/// The values tried for every field: the edges of each integer type TOML
/// and the host use, past them, negatives, and floats.
const EXTREMES: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "65535",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "10000000000000000000",
    "1e308",
    "-0.0",
    "1.5",
    "nan",
    "inf",
    "\"12\"",
];

/// A manifest with every table a number lives in.
const BASE: &str = r#"
[service]
name = "edge"
#SERVICE#

[roles.web]
kind = "web"
component = "web.wasm"
listen = "127.0.0.1:0"
queues = ["jobs"]
[roles.web.limits]
#LIMITS#
[roles.web.cpu]
#CPU#
[roles.web.rate-limits]
#RATE#

[roles.worker]
kind = "worker"
component = "worker.wasm"
queues = ["jobs"]
buckets = ["jobs"]
#WORKER#

[queues]
#QUEUES#

[buckets.jobs]
#BUCKETS#
"#;

/// Each field: where it goes, and the name its error must carry.
fn fields() -> Vec<(&'static str, String, &'static str)> {
    let mut fields = Vec::new();
    for key in [
        "upgrade-domains",
        "upgrade-settle-ms",
        "upgrade-timeout-secs",
    ] {
        fields.push(("#SERVICE#", format!("{key} = V"), key));
    }
    for key in [
        "memory-mib",
        "fuel",
        "deadline-ms",
        "max-request-body-kib",
        "max-in-flight",
        "max-queued",
        "role-memory-mib",
        "stop-grace-ms",
        "requests-per-instance",
        "concurrent-requests-per-instance",
        "instance-idle-timeout-ms",
    ] {
        fields.push(("#LIMITS#", format!("{key} = V"), key));
    }
    for key in ["weight", "max-fuel-per-sec"] {
        fields.push(("#CPU#", format!("{key} = V"), key));
    }
    fields.push(("#RATE#", "max-wait-ms = V".into(), "max-wait-ms"));
    for (key, table) in [
        ("size", "queue.ops = { size = V, refill-ms = 1000 }"),
        ("refill-ms", "kv.bytes = { size = 10, refill-ms = V }"),
        (
            "burst",
            "log.ops = { size = 10, refill-ms = 1000, burst = V }",
        ),
    ] {
        fields.push(("#RATE#", table.into(), key));
    }
    fields.push(("#WORKER#", "instances = V".into(), "instances"));
    for key in ["max-deliveries", "max-messages", "max-mib"] {
        fields.push(("#QUEUES#", format!("{key} = V"), key));
    }
    for key in ["ack-wait-ms", "replicas", "connect-timeout-secs"] {
        fields.push(("#QUEUES#", format!("backend = \"nats\"\n{key} = V"), key));
    }
    fields.push(("#BUCKETS#", "ttl-seconds = V".into(), "ttl-seconds"));
    fields
}

fn manifest_with(slot: &str, line: &str) -> String {
    let mut text = BASE.to_owned();
    for hole in [
        "#SERVICE#",
        "#LIMITS#",
        "#CPU#",
        "#RATE#",
        "#WORKER#",
        "#QUEUES#",
        "#BUCKETS#",
    ] {
        text = text.replace(hole, if hole == slot { line } else { "" });
    }
    text
}

/// What the host computes from an accepted manifest: none of it may panic.
fn use_everything(manifest: &Manifest) {
    let now = Instant::now();
    let policy = manifest.upgrade;
    let _ = now + policy.timeout + policy.settle;
    for role in manifest.roles.values() {
        let limits = role.limits;
        let _ = now + limits.deadline() + limits.stop_grace();
        let _ = limits.deadline().saturating_add(limits.stop_grace());
        let _ = (limits.memory_bytes(), limits.role_memory_bytes());
        let _ = usize::try_from(limits.max_request_body_bytes());
        for interface in weft_sandbox::rate_limit::Interface::ALL {
            let interface = &role.rate_limits[interface];
            for bucket in [interface.ops, interface.bytes].into_iter().flatten() {
                let _ = now + Duration::from_millis(bucket.refill_ms);
            }
        }
        let _ = now + Duration::from_millis(role.rate_limits.max_wait_ms);
    }
    let _ = crate::controller::slots::slots_needed(manifest, |_| true);
    let _ = crate::launch::engine_config(
        manifest.roles.values().map(|r| (r.limits, r.sandboxes())),
        None,
    );
    let settings = manifest.queues.settings();
    let _ = now + Duration::from_millis(manifest.queues.ack_wait_ms);
    let _ = now + Duration::from_secs(manifest.queues.connect_timeout_secs);
    let _ = (settings.max_bytes, settings.max_messages);
    // A backend adds a bucket's time to live to now, in epoch milliseconds.
    for bucket in manifest.buckets.values() {
        if let Some(ttl) = bucket.ttl {
            let _ = now + ttl;
            let _ = u64::MAX / 2 + u64::try_from(ttl.as_millis()).unwrap();
        }
    }
}

#[test]
fn extreme_numbers_are_accepted_safely_or_refused_naming_the_field() {
    let mut refused = 0;
    let mut accepted = 0;
    for (slot, line, key) in fields() {
        for value in EXTREMES {
            let text = manifest_with(slot, &line.replace('V', value));
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let parsed = Manifest::parse(Path::new("dir/weft.toml"), &text);
                if let Ok(manifest) = &parsed {
                    use_everything(manifest);
                }
                parsed.map_err(|e| e.to_string())
            }));
            let Ok(parsed) = outcome else {
                panic!("{key} = {value} panicked");
            };
            match parsed {
                Ok(_) => accepted += 1,
                Err(message) => {
                    refused += 1;
                    assert!(!message.contains('\n'), "{key} = {value}: {message}");
                    assert!(
                        message.contains(key),
                        "{key} = {value}: the error does not name the field: {message}"
                    );
                }
            }
        }
    }
    // Both outcomes happened: the loop is not vacuous either way.
    assert!(accepted > 20 && refused > 200, "{accepted} {refused}");
}

#[test]
fn the_issue_s_upgrade_timeout_is_refused() {
    let text = manifest_with("#SERVICE#", "upgrade-timeout-secs = 10000000000000000000");
    let error = Manifest::parse(Path::new("dir/weft.toml"), &text)
        .unwrap_err()
        .to_string();
    assert!(error.contains("upgrade-timeout-secs"), "{error}");
    let text = manifest_with("#SERVICE#", "upgrade-timeout-secs = 86401");
    let error = Manifest::parse(Path::new("dir/weft.toml"), &text)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("service.upgrade-timeout-secs must be 1 to 86400"),
        "{error}"
    );
}

#[test]
fn extreme_instance_counts_from_the_api_are_refused_naming_the_role() {
    let manifest = Manifest::parse(Path::new("dir/weft.toml"), &manifest_with("", "")).unwrap();
    for count in [0, 1, 1000, 1001, u32::MAX / 2, u32::MAX] {
        let mut overrides = Overrides::default();
        overrides.instances.insert("worker".into(), count);
        let mut changed = manifest.clone();
        match overrides.apply(&mut changed) {
            Ok(()) => {
                assert_eq!(changed.roles["worker"].instances(), count);
                use_everything(&changed);
            }
            Err(error) => {
                let message = error.to_string();
                assert!(
                    message.starts_with("roles.worker.instances") && !message.contains('\n'),
                    "{count}: {message}"
                );
            }
        }
    }
}

//! Renders every role's usage as Prometheus text (exposition format 0.0.4),
//! for the admin address's `/metrics`.
//!
//! One family per figure, labelled by `service` and `role` (and by
//! `interface`, `kind` or `direction` where a figure has several parts).
//! Counters end in `_total`; times are in seconds and memory in bytes, as
//! Prometheus' conventions ask.

use crate::otlp::SpanStats;
use std::fmt::Write as _;
use weft_broker::StoreHealth;
use weft_sandbox::UsageSnapshot;

/// Writes one metric family: its help and type lines, then its samples.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, f64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn role_labels(role: &UsageSnapshot) -> String {
    format!(
        "service=\"{}\",role=\"{}\",kind=\"{}\"",
        escape(&role.service),
        escape(&role.role),
        role.kind
    )
}

#[allow(clippy::cast_precision_loss)] // Prometheus values are floats.
fn float(n: u64) -> f64 {
    n as f64
}

/// Adds up the versions of each role: during a rolling upgrade (and while
/// a retired version drains) a role runs as two versions, each with its own
/// accounts, and Prometheus wants one series per label set. When the old
/// version is gone its counts leave the sums, which Prometheus reads as a
/// counter reset.
pub fn merge_versions(snapshots: Vec<UsageSnapshot>) -> Vec<UsageSnapshot> {
    let mut merged: Vec<UsageSnapshot> = Vec::new();
    for snapshot in snapshots {
        match merged.iter_mut().find(|m| {
            m.service == snapshot.service && m.role == snapshot.role && m.kind == snapshot.kind
        }) {
            Some(role) => role.absorb(&snapshot),
            None => merged.push(snapshot),
        }
    }
    merged
}

/// The text for `/metrics`.
pub fn render(roles: &[UsageSnapshot]) -> String {
    let mut out = String::new();
    type Figure = (
        &'static str,
        &'static str,
        &'static str,
        fn(&UsageSnapshot) -> f64,
    );
    let per_role: [Figure; 12] = [
        (
            "weft_role_fuel_used_total",
            "counter",
            "Fuel (about one unit per wasm instruction) the role's guests have burnt.",
            |r| float(r.counters.fuel_used),
        ),
        (
            "weft_role_cpu_share",
            "gauge",
            "The role's share of all fuel burnt on the host over the last second (0 to 1).",
            |r| r.counters.cpu_share(),
        ),
        (
            "weft_role_cpu_weight",
            "gauge",
            "The role's CPU weight.",
            |r| f64::from(r.weight),
        ),
        (
            "weft_role_parked_seconds_total",
            "counter",
            "Time the role's guests waited for a CPU slot while other roles ran.",
            |r| r.counters.parked.as_secs_f64(),
        ),
        (
            "weft_role_throttled_seconds_total",
            "counter",
            "Time the role's guests were held back by its CPU quota.",
            |r| r.counters.throttled.as_secs_f64(),
        ),
        (
            "weft_role_invocations_total",
            "counter",
            "Requests (web roles) or received batches (worker roles).",
            |r| float(r.counters.invocations),
        ),
        (
            "weft_role_instances",
            "gauge",
            "Sandboxes of the role alive now (web: requests in flight, plus idle instances kept for reuse).",
            |r| float(r.counters.instances_live),
        ),
        (
            "weft_role_memory_bytes",
            "gauge",
            "Linear memory all the role's sandboxes hold now.",
            |r| float(r.memory.bytes),
        ),
        (
            "weft_role_memory_high_water_bytes",
            "gauge",
            "The most linear memory the role's sandboxes held at once.",
            |r| float(r.memory.high_water),
        ),
        (
            "weft_role_instance_memory_high_water_bytes",
            "gauge",
            "The most linear memory one sandbox of the role held.",
            |r| float(r.memory.instance_high_water),
        ),
        (
            "weft_role_instance_memory_cap_bytes",
            "gauge",
            "The memory cap of one sandbox of the role.",
            |r| float(r.memory.instance_cap),
        ),
        (
            "weft_role_memory_cap_bytes",
            "gauge",
            "The memory cap of all the role's sandboxes together (absent: none).",
            |r| r.memory.role_cap.map_or(f64::NAN, float),
        ),
    ];
    for (name, kind, help, value) in per_role {
        let samples = roles
            .iter()
            .map(|role| (role_labels(role), value(role)))
            .filter(|(_, v)| !v.is_nan());
        family(&mut out, name, kind, help, samples);
    }
    family(
        &mut out,
        "weft_role_failures_total",
        "counter",
        "Invocations that failed, by kind (fuel, deadline, memory, trap, exit, instantiate, capacity, protocol).",
        roles.iter().flat_map(|role| {
            role.counters.failures.iter().map(move |(kind, count)| {
                (
                    format!("{},failure=\"{kind}\"", role_labels(role)),
                    float(*count),
                )
            })
        }),
    );

    type CallFigure = (
        &'static str,
        &'static str,
        fn(&weft_sandbox::rate_limit::CallStats) -> f64,
    );
    let per_call: [CallFigure; 4] = [
        (
            "weft_role_calls_total",
            "Host calls admitted, by interface (log: lines written; http: requests).",
            |c| float(c.admitted),
        ),
        (
            "weft_role_calls_rate_limited_total",
            "Host calls refused as rate-limited, by interface (log: lines dropped).",
            |c| float(c.limited),
        ),
        (
            "weft_role_call_wait_seconds_total",
            "Time host calls and bodies waited for rate-limit tokens, by interface.",
            |c| c.waited.as_secs_f64(),
        ),
        (
            "weft_role_call_bytes_total",
            "Payload bytes that passed each interface's bytes bucket.",
            |c| float(c.bytes),
        ),
    ];
    for (name, help, value) in per_call {
        let samples = roles.iter().flat_map(|role| {
            role.calls.iter().map(move |call| {
                let labels = format!(
                    "{},interface=\"{}\"",
                    role_labels(role),
                    call.interface.name()
                );
                (labels, value(call))
            })
        });
        family(&mut out, name, "counter", help, samples);
    }
    family(
        &mut out,
        "weft_role_http_body_bytes_total",
        "counter",
        "HTTP body bytes by direction: in (requests read), out (responses written), egress_out (outgoing requests), egress_in (their responses).",
        roles.iter().flat_map(|role| {
            let b = role.counters.bytes;
            [
                ("in", b.http_in),
                ("out", b.http_out),
                ("egress_out", b.egress_out),
                ("egress_in", b.egress_in),
            ]
            .map(|(direction, n)| {
                (
                    format!("{},direction=\"{direction}\"", role_labels(role)),
                    float(n),
                )
            })
        }),
    );
    render_traces(&mut out, &SpanStats::process());
    out
}

/// The trace exporter's counts (zero while tracing is off): one series
/// each, with no labels.
fn render_traces(out: &mut String, stats: &SpanStats) {
    let figures = [
        (
            "weft_trace_spans_dropped_total",
            "Spans dropped instead of exported: the queue was full (the collector slow or down) or their batch failed.",
            stats.dropped(),
        ),
        (
            "weft_trace_spans_exported_total",
            "Spans the OTLP collector accepted.",
            stats.exported(),
        ),
    ];
    for (name, help, value) in figures {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {value}");
    }
}

/// The text for each service's embedded queue store: 1 while it writes,
/// 0 while the disk is full or failing (the service's status says why).
pub fn render_stores(stores: &[(String, StoreHealth)]) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "weft_store_writable",
        "gauge",
        "Whether the service's embedded queue store can write (0: its disk is full or failing; sends answer unavailable until it recovers by itself).",
        stores.iter().map(|(service, health)| {
            let writable = matches!(health, StoreHealth::Writable);
            (
                format!("service=\"{}\"", escape(service)),
                if writable { 1.0 } else { 0.0 },
            )
        }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use weft_sandbox::usage::{BodyBytes, Counters, MemoryUsage};

    fn role(name: &str) -> UsageSnapshot {
        UsageSnapshot {
            service: "svc".into(),
            role: name.into(),
            kind: "web",
            weight: 100,
            counters: Counters {
                fuel_used: 1234,
                cpu_share_ppm: 250_000,
                parked: Duration::from_millis(1500),
                throttled: Duration::ZERO,
                invocations: 7,
                failures: vec![("fuel", 2), ("deadline", 0)],
                instances_live: 1,
                bytes: BodyBytes {
                    http_in: 10,
                    http_out: 20,
                    egress_out: 0,
                    egress_in: 0,
                },
            },
            calls: Vec::new(),
            memory: MemoryUsage {
                bytes: 65536,
                high_water: 131072,
                instance_high_water: 65536,
                instance_cap: 1 << 27,
                role_cap: None,
            },
        }
    }

    #[test]
    fn renders_families_with_labels_one_series_per_role() {
        let text = render(&[role("web"), role("a\"b")]);
        assert!(text.contains("# TYPE weft_role_fuel_used_total counter\n"));
        assert!(text.contains(
            "weft_role_fuel_used_total{service=\"svc\",role=\"web\",kind=\"web\"} 1234\n"
        ));
        assert!(
            text.contains("weft_role_cpu_share{service=\"svc\",role=\"web\",kind=\"web\"} 0.25\n")
        );
        assert!(text.contains(
            "weft_role_parked_seconds_total{service=\"svc\",role=\"web\",kind=\"web\"} 1.5\n"
        ));
        assert!(text.contains("failure=\"fuel\"} 2\n"));
        assert!(text.contains("direction=\"out\"} 20\n"));
        assert!(text.contains("role=\"a\\\"b\""), "label values are escaped");
        assert!(
            !text.contains("weft_role_memory_cap_bytes{"),
            "no cap, no sample"
        );
        // Two versions of a role are one series.
        let merged = merge_versions(vec![role("web"), role("web"), role("api")]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].counters.fuel_used, 2468);
        let text = render(&merged);
        assert_eq!(
            text.matches("weft_role_fuel_used_total{service=\"svc\",role=\"web\"")
                .count(),
            1
        );
        let stores = render_stores(&[
            ("ok".into(), StoreHealth::Writable),
            (
                "full".into(),
                StoreHealth::Failing {
                    reason: "No space left on device".into(),
                },
            ),
        ]);
        assert!(stores.contains("# TYPE weft_store_writable gauge\n"));
        assert!(stores.contains("weft_store_writable{service=\"ok\"} 1\n"));
        assert!(stores.contains("weft_store_writable{service=\"full\"} 0\n"));
        let text = text + &stores;
        // Every sample line is NAME{LABELS} VALUE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}

//! `weft status` as text: per service a header line, a table of its roles
//! (readiness, version, fuel, memory, queue depths) and one of its
//! instances (domain, generation, state, restarts, crash loops).

use std::fmt::Write as _;
use weft_host::controller::status::{HostStatus, PendingState, ServiceStatus};

/// Renders every service.
pub fn render(host: &HostStatus) -> String {
    if host.services.is_empty() && host.pending.is_empty() {
        return "no services on this host\n".into();
    }
    let mut out = String::new();
    for (i, service) in host.services.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_service(&mut out, service);
    }
    if !host.pending.is_empty() && !host.services.is_empty() {
        out.push('\n');
    }
    for pending in &host.pending {
        let state = match pending.state {
            PendingState::Starting => "starting",
            PendingState::Failed => "failed",
        };
        let _ = write!(out, "service {}  {state}", pending.name);
        if let Some(reason) = &pending.reason {
            let _ = write!(out, ": {reason}");
        }
        out.push('\n');
    }
    out
}

fn render_service(out: &mut String, service: &ServiceStatus) {
    let _ = write!(
        out,
        "service {}  generation {}  upgrade domains {}",
        service.name, service.generation, service.upgrade_domains
    );
    if let Some(environment) = &service.environment {
        let _ = write!(out, "  environment {environment}");
    }
    out.push('\n');
    if let Some(reason) = &service.store_failing {
        let _ = writeln!(out, "  queue store cannot write: {reason}");
    }
    if let Some(op) = &service.operation {
        let _ = write!(out, "  {} {}: {}", op.kind, op.state, op.step);
        if let Some(reason) = &op.reason {
            let _ = write!(out, " ({reason})");
        }
        out.push('\n');
    }
    let mut roles = vec![row(&[
        "ROLE",
        "KIND",
        "READY",
        "GEN",
        "COMPONENT",
        "FUEL",
        "MEMORY",
        "CALLS",
        "FAILURES",
        "QUEUES",
    ])];
    let mut instances = vec![row(&[
        "INSTANCE", "DOMAIN", "GEN", "STATE", "RESTARTS", "NOTE",
    ])];
    for role in &service.roles {
        let queues: Vec<String> = role
            .queues
            .iter()
            .map(|q| {
                let n = |v: Option<u64>| v.map_or("?".into(), |v| v.to_string());
                format!("{}={} (poison {})", q.name, n(q.length), n(q.poison))
            })
            .collect();
        let component = role
            .component
            .strip_prefix("sha256:")
            .unwrap_or(&role.component);
        roles.push(vec![
            role.name.clone(),
            role.kind.name().to_owned(),
            format!("{}/{}", role.ready, role.declared),
            role.generation.to_string(),
            component.chars().take(12).collect(),
            si(role.usage.fuel_used),
            mib(role.usage.memory_bytes),
            role.usage.invocations.to_string(),
            role.usage.failures.to_string(),
            if queues.is_empty() {
                "-".into()
            } else {
                queues.join(" ")
            },
        ]);
        for instance in &role.instances {
            let mut note = Vec::new();
            if instance.crash_looping {
                note.push("crash-looping".to_owned());
            }
            if let Some(n) = instance.in_flight {
                note.push(format!("in flight {n}"));
            }
            if let Some(why) = &instance.last_failure {
                note.push(format!(
                    "last failure: {}",
                    why.chars().take(80).collect::<String>()
                ));
            }
            instances.push(vec![
                format!("{}/{}", role.name, instance.id),
                instance.domain.map_or("-".into(), |d| d.to_string()),
                instance.generation.to_string(),
                instance.state.to_string(),
                instance.restarts.to_string(),
                note.join("; "),
            ]);
        }
    }
    align(out, &roles);
    align(out, &instances);
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// Writes rows as columns padded to their widest cell, indented.
fn align(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        out.push_str("  ");
        let last = row.len().saturating_sub(1);
        for (c, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if c < last {
                let pad = widths[c] - cell.chars().count() + 2;
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }
}

/// 1234567 → `1.2M`.
fn si(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // a display figure
    let x = n as f64;
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", x / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", x / 1e6),
        _ => format!("{:.1}G", x / 1e9),
    }
}

fn mib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // a display figure
    let mib = bytes as f64 / (1024.0 * 1024.0);
    format!("{mib:.1} MiB")
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_host::controller::status::*;

    #[test]
    fn a_service_renders_as_aligned_tables() {
        let host = HostStatus {
            services: vec![ServiceStatus {
                name: "shop".into(),
                generation: 2,
                environment: Some("prod".into()),
                upgrade_domains: 2,
                operation: Some(OperationStatus {
                    kind: OperationKind::Upgrade,
                    state: OperationState::RolledBack,
                    step: "rolled back to generation 1".into(),
                    steps: Vec::new(),
                    generation: 2,
                    domains_done: 1,
                    domains: 2,
                    reason: Some("domain 1 of 2: unhealthy".into()),
                }),
                store_failing: None,
                roles: vec![RoleStatus {
                    name: "worker".into(),
                    kind: weft_host::manifest::RoleKind::Worker,
                    url: None,
                    component: format!("sha256:{}", "ab".repeat(32)),
                    generation: 1,
                    declared: 2,
                    ready: 1,
                    settings: Default::default(),
                    health: None,
                    instances: vec![InstanceStatus {
                        id: "0".into(),
                        domain: Some(0),
                        generation: 1,
                        state: weft_host::controller::instance::InstanceState::Failed,
                        restarts: 6,
                        crash_looping: true,
                        last_failure: Some("guest trapped: unreachable".into()),
                        in_flight: None,
                    }],
                    usage: UsageStatus {
                        fuel_used: 12_345_678,
                        memory_bytes: 3 * 1024 * 1024,
                        ..UsageStatus::default()
                    },
                    queues: vec![QueueStatus {
                        name: "jobs".into(),
                        length: Some(3),
                        poison: Some(0),
                    }],
                }],
            }],
            pending: vec![
                PendingService {
                    name: "mail".into(),
                    state: PendingState::Starting,
                    reason: None,
                },
                PendingService {
                    name: "ghost".into(),
                    state: PendingState::Failed,
                    reason: Some("no queue server".into()),
                },
            ],
        };
        let text = render(&host);
        assert!(text.contains("\nservice mail  starting\n"), "{text}");
        assert!(
            text.ends_with("service ghost  failed: no queue server\n"),
            "{text}"
        );
        assert!(
            text.contains("service shop  generation 2  upgrade domains 2  environment prod"),
            "{text}"
        );
        assert!(
            text.contains(
                "upgrade rolled-back: rolled back to generation 1 (domain 1 of 2: unhealthy)"
            ),
            "{text}"
        );
        assert!(
            text.contains("worker  worker  1/2    1    abababababab  12.3M  3.0 MiB"),
            "{text}"
        );
        assert!(text.contains("jobs=3 (poison 0)"), "{text}");
        assert!(text.contains("worker/0  0       1    failed  6         crash-looping; last failure: guest trapped"), "{text}");
    }
}

//! The tables `weft fabric hosts` and `weft status --fabric` print.

use std::fmt::Write as _;
use weft_fabric::model::FabricRollout;
use weft_fabric::ops::status::rollout_reason;
use weft_fabric::ops::{FabricHosts, FabricStatus};

/// `HOST STATE DOMAIN LABELS SLOTS ADVERTISE RUNS`, then who leads.
pub fn hosts(report: &FabricHosts) -> String {
    let mut rows = vec![row(&[
        "HOST",
        "STATE",
        "DOMAIN",
        "LABELS",
        "SLOTS",
        "ADVERTISE",
        "RUNS",
    ])];
    for host in &report.hosts {
        let labels: Vec<String> = host
            .labels
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let state = if host.drain && host.state.as_str() != "draining" {
            format!("{} (drain asked)", host.state)
        } else {
            host.state.to_string()
        };
        rows.push(vec![
            host.id.clone(),
            state,
            host.fault_domain.clone(),
            or_dash(labels.join(",")),
            format!("{}/{}", host.slots_used, host.capacity.slots),
            host.advertise.to_string(),
            or_dash(host.runs.join(",")),
        ]);
    }
    let mut text = columns(&rows);
    match &report.leader {
        Some(leader) => {
            let _ = writeln!(text, "leader: {} (term {})", leader.host, leader.term);
        }
        None => text.push_str("leader: none\n"),
    }
    text
}

/// `SERVICE GEN REVISION ROLE READY PLACED`, a row per role, then a line
/// per service with a fabric-wide rollout (its state, step and reason),
/// and a line per service that has not converged, saying what it waits for.
pub fn status(report: &FabricStatus) -> String {
    let mut rows = vec![row(&[
        "SERVICE", "GEN", "REVISION", "ROLE", "READY", "PLACED",
    ])];
    let mut notes = String::new();
    for service in &report.services {
        let mut first = true;
        for role in &service.roles {
            let placed: Vec<String> = role
                .placed
                .iter()
                .map(|(host, indices)| match indices.len() {
                    1 => host.clone(),
                    n => format!("{host}({n})"),
                })
                .collect();
            let (name, generation, revision) = if first {
                (
                    service.name.clone(),
                    service.generation.to_string(),
                    service.desired_revision.to_string(),
                )
            } else {
                (String::new(), String::new(), String::new())
            };
            first = false;
            rows.push(vec![
                name,
                generation,
                revision,
                role.name.clone(),
                format!("{}/{}", role.ready, role.declared),
                or_dash(placed.join(",")),
            ]);
        }
        if first {
            rows.push(vec![
                service.name.clone(),
                service.generation.to_string(),
                service.desired_revision.to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        if let Some(rollout) = &service.rollout {
            let _ = writeln!(notes, "{}: {}", service.name, rollout_line(rollout));
        }
        if !service.converged {
            let _ = writeln!(notes, "{}: waiting: {}", service.name, service.missing());
        }
    }
    let mut text = columns(&rows);
    text.push_str(&notes);
    text
}

/// `rollout 7 -> 8: moving, host b (2 of 3)`, and why it rolled back.
fn rollout_line(rollout: &FabricRollout) -> String {
    let mut line = format!(
        "rollout {} -> {}: {}",
        rollout.from_revision, rollout.to_revision, rollout.state
    );
    if rollout.step != rollout.state.as_str() && !rollout.step.is_empty() {
        let _ = write!(line, ", {}", rollout.step);
    }
    if rollout.reason.is_some() {
        let _ = write!(line, " ({})", rollout_reason(rollout));
    }
    line
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|cell| (*cell).to_owned()).collect()
}

fn or_dash(text: String) -> String {
    if text.is_empty() { "-".into() } else { text }
}

/// Rows as left-aligned columns two spaces apart, trailing spaces trimmed.
fn columns(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            let width = cell.chars().count();
            match widths.get_mut(index) {
                Some(known) => *known = (*known).max(width),
                None => widths.push(width),
            }
        }
    }
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use weft_fabric::model::{Capacity, HostState, RolloutState};
    use weft_fabric::ops::{HostReport, LeaderReport, RoleReport, ServiceReport};

    #[test]
    fn the_hosts_table_lines_up_and_names_the_leader() {
        let host = |id: &str, state, runs: Vec<String>| HostReport {
            id: id.into(),
            state,
            drain: false,
            fault_domain: "rack-1".into(),
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            capacity: Capacity {
                slots: 1000,
                memory_mib: 1,
                cpus: 1,
            },
            slots_used: 514,
            advertise: "10.0.0.1".parse().unwrap(),
            admin: None,
            version: "1".into(),
            runs,
            last_beat_ms: None,
        };
        let report = FabricHosts {
            leader: Some(LeaderReport {
                host: "alpha".into(),
                term: 12,
            }),
            hosts: vec![
                host("alpha", HostState::Ready, vec!["shop/web".into()]),
                host("b", HostState::Down, Vec::new()),
            ],
        };
        assert_eq!(
            hosts(&report),
            "HOST   STATE  DOMAIN  LABELS  SLOTS     ADVERTISE  RUNS\n\
             alpha  ready  rack-1  zone=a  514/1000  10.0.0.1   shop/web\n\
             b      down   rack-1  zone=a  514/1000  10.0.0.1   -\n\
             leader: alpha (term 12)\n"
        );
        let leaderless = FabricHosts {
            leader: None,
            hosts: Vec::new(),
        };
        assert!(hosts(&leaderless).ends_with("leader: none\n"));
    }

    #[test]
    fn the_status_table_shows_a_rollout_its_step_and_why_it_rolled_back() {
        let rollout = FabricRollout {
            from_revision: 7,
            to_revision: 8,
            hosts: vec!["a".into(), "b".into()],
            hosts_done: 1,
            state: RolloutState::Moving,
            step: "host b (2 of 2)".into(),
            reason: None,
            released_at_ms: None,
        };
        let mut service = ServiceReport {
            name: "shop".into(),
            generation: 2,
            desired_revision: 8,
            placed_revision: Some(8),
            converged: false,
            roles: vec![RoleReport {
                name: "worker".into(),
                declared: 2,
                ready: 1,
                placed: BTreeMap::from([("a".into(), vec![0]), ("b".into(), vec![1])]),
                hosts: BTreeMap::new(),
            }],
            unplaced: BTreeMap::new(),
            refused: BTreeMap::new(),
            error: None,
            held: BTreeMap::new(),
            rollout: Some(rollout.clone()),
        };
        let moving = FabricStatus {
            services: vec![service.clone()],
        };
        assert_eq!(
            status(&moving),
            "SERVICE  GEN  REVISION  ROLE    READY  PLACED\n\
             shop     2    8         worker  1/2    a,b\n\
             shop: rollout 7 -> 8: moving, host b (2 of 2)\n\
             shop: waiting: rolling out: host b (2 of 2)\n"
        );
        service.placed_revision = Some(7);
        service.rollout = Some(FabricRollout {
            state: RolloutState::RolledBack,
            step: "rolled back to revision 7 at host b (2 of 2)".into(),
            reason: Some("host b refused revision 8: boom".into()),
            ..rollout.clone()
        });
        let text = status(&FabricStatus {
            services: vec![service.clone()],
        });
        assert!(
            text.contains(
                "shop: rollout 7 -> 8: rolled-back, rolled back to revision 7 at host b (2 of 2) (host b refused revision 8: boom)\n"
            ),
            "{text}"
        );
        service.converged = true;
        service.rollout = Some(FabricRollout {
            state: RolloutState::Done,
            step: "done".into(),
            hosts_done: 2,
            ..rollout
        });
        let text = status(&FabricStatus {
            services: vec![service],
        });
        assert!(text.ends_with("shop: rollout 7 -> 8: done\n"), "{text}");
    }
}

//! The agent's decision, pure: given the record a service runs here (if
//! any) and the record this host's part of it should be (if it has one),
//! the one step that brings the first closer to the second. The apply loop
//! takes one step per service per round, so a step that needs another
//! (an upgrade, then a scale) is taken next round. An upgrade carries the
//! wanted settings with the new source, so new code never starts with
//! settings other than those signed.

use std::collections::BTreeMap;
use weft_host::controller::store::DeploymentRecord;

/// One step towards the wanted record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// It runs as wanted.
    Nothing,
    /// It does not run here and should: deploy the wanted record.
    Deploy,
    /// It runs here and this host has no part of it any more.
    Remove,
    /// Its source or the settings of a role here differ: one local
    /// rolling upgrade to the wanted source and overrides together (the
    /// local part stays as it runs).
    Upgrade,
    /// The roles that run here, their listen address or their queue server
    /// differ: remove it, then deploy the wanted record (break before make).
    Restart,
    /// Worker role `role` runs another count here: scale it.
    Scale {
        /// The role.
        role: String,
        /// Its instances here.
        count: u32,
    },
}

/// The step from `running` (the record the service runs here, `None` if it
/// does not) towards `wanted` (this host's part, `None` if it has none).
///
/// Generations are not compared: each host counts its own local changes,
/// so they differ between hosts running the same desired state. Nor are
/// worker counts in the overrides: this host's part sets them.
pub fn decide(running: Option<&DeploymentRecord>, wanted: Option<&DeploymentRecord>) -> Action {
    let (running, wanted) = match (running, wanted) {
        (None, None) => return Action::Nothing,
        (Some(_), None) => return Action::Remove,
        (None, Some(_)) => return Action::Deploy,
        (Some(running), Some(wanted)) => (running, wanted),
    };
    let (running_part, wanted_part) = (running.local.clone(), wanted.local.clone());
    let running_part = running_part.unwrap_or_default();
    let wanted_part = wanted_part.unwrap_or_default();
    let same_roles = running_part.roles.keys().eq(wanted_part.roles.keys());
    if !same_roles
        || running_part.listen_ip != wanted_part.listen_ip
        || running_part.queues_url != wanted_part.queues_url
    {
        return Action::Restart;
    }
    let empty = BTreeMap::new();
    let settings_differ = wanted_part.roles.keys().any(|role| {
        running.overrides.settings.get(role).unwrap_or(&empty)
            != wanted.overrides.settings.get(role).unwrap_or(&empty)
    });
    if running.source != wanted.source || settings_differ {
        return Action::Upgrade;
    }
    for (role, &count) in &wanted_part.roles {
        if running_part.roles.get(role) != Some(&count) {
            return Action::Scale {
                role: role.clone(),
                count,
            };
        }
    }
    Action::Nothing
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_host::controller::store::{DeploymentSource, Digest};
    use weft_host::environment::Overrides;
    use weft_host::local_part::LocalPart;

    fn record(component: &[u8], roles: &[(&str, u32)]) -> DeploymentRecord {
        DeploymentRecord {
            source: DeploymentSource {
                manifest_file: "weft.toml".into(),
                manifest: "[service]\nname = \"shop\"\n".into(),
                environment: None,
                components: BTreeMap::from([("worker".into(), Digest::of(component))]),
            },
            overrides: Overrides::default(),
            generation: 1,
            local: Some(LocalPart {
                roles: roles.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect(),
                listen_ip: Some("10.0.0.7".parse().unwrap()),
                queues_url: Some("nats://10.0.0.1:4222".into()),
            }),
        }
    }

    fn with_settings(
        mut record: DeploymentRecord,
        role: &str,
        kv: &[(&str, &str)],
    ) -> DeploymentRecord {
        record.overrides.settings.insert(
            role.into(),
            kv.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        record
    }

    #[test]
    fn presence_decides_deploy_and_remove() {
        let wanted = record(b"v1", &[("worker", 2)]);
        assert_eq!(decide(None, Some(&wanted)), Action::Deploy);
        assert_eq!(decide(Some(&wanted), None), Action::Remove);
        assert_eq!(decide(None, None), Action::Nothing);
    }

    #[test]
    fn the_same_record_needs_nothing_whatever_the_generation() {
        let wanted = record(b"v1", &[("web", 1), ("worker", 2)]);
        let mut running = wanted.clone();
        running.generation = 7;
        running.overrides.instances.insert("worker".into(), 9);
        assert_eq!(decide(Some(&running), Some(&wanted)), Action::Nothing);
    }

    #[test]
    fn another_source_is_an_upgrade() {
        let running = record(b"v1", &[("worker", 2)]);
        let wanted = record(b"v2", &[("worker", 2)]);
        assert_eq!(decide(Some(&running), Some(&wanted)), Action::Upgrade);
    }

    #[test]
    fn other_roles_an_address_or_a_queue_server_restart_it() {
        let running = record(b"v1", &[("worker", 2)]);
        let more_roles = record(b"v2", &[("web", 1), ("worker", 2)]);
        assert_eq!(
            decide(Some(&running), Some(&more_roles)),
            Action::Restart,
            "the roles here change before the source does"
        );
        let mut moved = running.clone();
        if let Some(part) = &mut moved.local {
            part.listen_ip = Some("10.0.0.8".parse().unwrap());
        }
        assert_eq!(decide(Some(&running), Some(&moved)), Action::Restart);
        let mut other_server = running.clone();
        if let Some(part) = &mut other_server.local {
            part.queues_url = Some("nats://10.0.0.2:4222".into());
        }
        assert_eq!(decide(Some(&running), Some(&other_server)), Action::Restart);
        let mut outside = running.clone();
        outside.local = None;
        assert_eq!(decide(Some(&outside), Some(&running)), Action::Restart);
    }

    #[test]
    fn changed_or_dropped_settings_are_one_upgrade_with_the_source() {
        let base = record(b"v1", &[("worker", 2)]);
        let running = with_settings(base.clone(), "worker", &[("colour", "red"), ("size", "m")]);
        let wanted = with_settings(base.clone(), "worker", &[("colour", "blue"), ("size", "m")]);
        assert_eq!(decide(Some(&running), Some(&wanted)), Action::Upgrade);
        let fewer = with_settings(base.clone(), "worker", &[("colour", "red")]);
        assert_eq!(decide(Some(&running), Some(&fewer)), Action::Upgrade);
        // A new source with new settings: one step, no settings step after.
        let newer = with_settings(
            record(b"v2", &[("worker", 2)]),
            "worker",
            &[("colour", "blue")],
        );
        assert_eq!(decide(Some(&running), Some(&newer)), Action::Upgrade);
        let mut upgraded = newer.clone();
        upgraded.generation = 9;
        assert_eq!(decide(Some(&upgraded), Some(&newer)), Action::Nothing);
        // Settings of a role that does not run here do not matter here.
        let elsewhere = with_settings(base.clone(), "web", &[("colour", "blue")]);
        assert_eq!(decide(Some(&base), Some(&elsewhere)), Action::Nothing);
    }

    #[test]
    fn another_worker_count_scales_it() {
        let running = record(b"v1", &[("web", 1), ("worker", 2)]);
        let wanted = record(b"v1", &[("web", 1), ("worker", 5)]);
        assert_eq!(
            decide(Some(&running), Some(&wanted)),
            Action::Scale {
                role: "worker".into(),
                count: 5
            }
        );
    }
}

//! [`LocalPart`]: this host's part of a service that runs on many hosts.
//! Whatever spreads a service over hosts says, for each host, which roles
//! run there, how many instances of each worker role, the address its web
//! roles listen on, and the NATS server its queues live on; applied to the
//! manifest, the part is the service as this host runs it. The host knows
//! nothing else of the hosts it shares the service with.

use crate::environment::set_instances;
use crate::manifest::{Manifest, RoleByKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use weft_broker::{BackendKind, QueuesConfig, QueuesConfigError};

/// This host's part of a service that runs on many hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalPart {
    /// The roles that run on this host, with each worker role's instance
    /// count here (0: none here yet; a web role: 1).
    pub roles: BTreeMap<String, u32>,
    /// The address web roles listen on here, in place of the manifest's IP
    /// (its port kept).
    pub listen_ip: Option<IpAddr>,
    /// The NATS server that holds the service's queues when its manifest
    /// names no backend.
    pub queues_url: Option<String>,
}

/// Why a [`LocalPart`] does not fit a manifest; one line naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocalPartError {
    /// The part names no role: a host with no role of a service runs none
    /// of it.
    #[error("local.roles: names no role; a host with no role of the service does not run it")]
    NoRoles,
    /// The part names a role the manifest does not have.
    #[error("local.roles.{role}: the manifest has no such role")]
    UnknownRole {
        /// The role's name.
        role: String,
    },
    /// A role's count does not fit it.
    #[error("local.roles.{role}: {why}")]
    Count {
        /// The role's name.
        role: String,
        /// What is wrong with its count.
        why: String,
    },
    /// The manifest keeps its queues on one host's disk.
    #[error(
        "[queues] backend \"embedded\" cannot run in a fabric (a queue on one host's disk strands its messages with that host)"
    )]
    EmbeddedQueues,
    /// The queue server's URL is not one.
    #[error("local.queues_url: {0}")]
    QueuesUrl(QueuesConfigError),
}

/// Refuses a `[queues]` table that keeps a service's queues on one host's
/// disk by name (`backend = "embedded"`): in a fabric a queue must outlive
/// any one host. A table that names no backend is fine: the fabric gives
/// it its NATS server.
pub fn check_fabric_queues(queues: &QueuesConfig) -> Result<(), LocalPartError> {
    if queues.backend == Some(BackendKind::Embedded) {
        return Err(LocalPartError::EmbeddedQueues);
    }
    Ok(())
}

impl LocalPart {
    /// Narrows `manifest` to this host's part: only the roles named run,
    /// each worker with its count here; web roles listen on `listen_ip`
    /// (their ports kept); queues the manifest does not place go to
    /// `queues_url`. A manifest that keeps its queues on one host's disk by
    /// name is refused. On an error `manifest` may be half changed: apply
    /// it to a copy you can drop.
    pub fn apply(&self, manifest: &mut Manifest) -> Result<(), LocalPartError> {
        if self.roles.is_empty() {
            return Err(LocalPartError::NoRoles);
        }
        if let Some(role) = self
            .roles
            .keys()
            .find(|role| !manifest.roles.contains_key(*role))
        {
            return Err(LocalPartError::UnknownRole { role: role.clone() });
        }
        manifest
            .roles
            .retain(|name, _| self.roles.contains_key(name));
        for (name, role) in &mut manifest.roles {
            let count = self.roles.get(name).copied().unwrap_or(1);
            match &mut role.by_kind {
                RoleByKind::Web(web) => {
                    if count != 1 {
                        return Err(LocalPartError::Count {
                            role: name.clone(),
                            why: format!(
                                "a web role runs once on a host (a fresh instance per request); its count here must be 1, not {count}"
                            ),
                        });
                    }
                    if let Some(ip) = self.listen_ip {
                        web.listen.set_ip(ip);
                    }
                }
                // None here: the role is present, so an instance placed on
                // this host later starts without restarting the others.
                RoleByKind::Worker(worker) if count == 0 => worker.instances = 0,
                RoleByKind::Worker(_) => {
                    set_instances(role, count).map_err(|why| LocalPartError::Count {
                        role: name.clone(),
                        why: format!("instances {why}"),
                    })?;
                }
            }
        }
        check_fabric_queues(&manifest.queues)?;
        let queues = &mut manifest.queues;
        match queues.backend {
            // Refused above.
            Some(BackendKind::Embedded) => {}
            Some(BackendKind::Nats) => {
                if queues.url.is_none() {
                    queues.url.clone_from(&self.queues_url);
                }
            }
            None => {
                if let Some(url) = &self.queues_url {
                    queues.backend = Some(BackendKind::Nats);
                    queues.url = Some(url.clone());
                }
            }
        }
        queues.validate().map_err(LocalPartError::QueuesUrl)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const MANIFEST: &str = r#"
[service]
name = "shop"

[roles.web]
kind = "web"
component = "web.wasm"
listen = "127.0.0.1:8080"
instances = 2

[roles.admin]
kind = "web"
component = "admin.wasm"
listen = "127.0.0.1:0"

[roles.worker]
kind = "worker"
component = "worker.wasm"
instances = 6
"#;

    fn manifest(queues: &str) -> Manifest {
        Manifest::parse(Path::new("dir/weft.toml"), &format!("{MANIFEST}{queues}")).unwrap()
    }

    fn part(roles: &[(&str, u32)]) -> LocalPart {
        LocalPart {
            roles: roles.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect(),
            listen_ip: None,
            queues_url: None,
        }
    }

    #[test]
    fn roles_not_in_the_part_are_removed_and_worker_counts_set() {
        let mut m = manifest("");
        part(&[("web", 1), ("worker", 2)]).apply(&mut m).unwrap();
        assert_eq!(
            m.roles.keys().collect::<Vec<_>>(),
            ["web", "worker"],
            "admin runs elsewhere"
        );
        assert_eq!(m.roles["worker"].instances(), 2);
        assert_eq!(m.roles["web"].fabric_instances(), 2, "the manifest's hosts");
        assert_eq!(
            m.roles["web"].listen(),
            Some("127.0.0.1:8080".parse().unwrap()),
            "no listen_ip: the manifest's address"
        );
        assert_eq!(m.queues.kind(), BackendKind::Embedded, "no queues_url");
    }

    #[test]
    fn web_roles_listen_on_the_part_s_ip_keeping_their_ports() {
        let mut m = manifest("");
        let part = LocalPart {
            listen_ip: Some("10.0.0.7".parse().unwrap()),
            ..part(&[("web", 1), ("admin", 1)])
        };
        part.apply(&mut m).unwrap();
        assert_eq!(
            m.roles["web"].listen(),
            Some("10.0.0.7:8080".parse().unwrap())
        );
        assert_eq!(
            m.roles["admin"].listen(),
            Some("10.0.0.7:0".parse().unwrap())
        );
    }

    #[test]
    fn undeclared_queues_go_to_the_part_s_server() {
        let url = "nats://10.0.0.1:4222".to_owned();
        let with_url = LocalPart {
            queues_url: Some(url.clone()),
            ..part(&[("worker", 1)])
        };
        let mut m = manifest("");
        with_url.apply(&mut m).unwrap();
        assert_eq!(m.queues.backend, Some(BackendKind::Nats));
        assert_eq!(m.queues.nats_url(), url);

        // A server the manifest names is kept; a NATS backend without one
        // gets the part's.
        let mut m = manifest("\n[queues]\nbackend = \"nats\"\nurl = \"nats://elsewhere:4222\"\n");
        with_url.apply(&mut m).unwrap();
        assert_eq!(m.queues.nats_url(), "nats://elsewhere:4222");
        let mut m = manifest("\n[queues]\nbackend = \"nats\"\nreplicas = 3\n");
        with_url.apply(&mut m).unwrap();
        assert_eq!(m.queues.nats_url(), url);
        assert_eq!(m.queues.replicas, 3);

        let bad = LocalPart {
            queues_url: Some("http://x:1".into()),
            ..part(&[("worker", 1)])
        };
        let err = bad.apply(&mut manifest("")).unwrap_err().to_string();
        assert!(
            err.starts_with("local.queues_url: url 'http://x:1'"),
            "{err}"
        );
    }

    #[test]
    fn queues_declared_embedded_are_refused() {
        let mut m = manifest("\n[queues]\nbackend = \"embedded\"\n");
        let part = LocalPart {
            queues_url: Some("nats://10.0.0.1:4222".into()),
            ..part(&[("worker", 1)])
        };
        let err = part.apply(&mut m).unwrap_err();
        assert_eq!(
            err.to_string(),
            "[queues] backend \"embedded\" cannot run in a fabric (a queue on one host's disk strands its messages with that host)"
        );
        // The same rule on its own, as the operator's tools check it.
        assert_eq!(
            check_fabric_queues(&m.queues),
            Err(LocalPartError::EmbeddedQueues)
        );
        assert_eq!(check_fabric_queues(&manifest("").queues), Ok(()));
        let nats = manifest("\n[queues]\nbackend = \"nats\"\n");
        assert_eq!(check_fabric_queues(&nats.queues), Ok(()));
    }

    #[test]
    fn a_worker_role_with_no_instance_here_stays_present_with_none() {
        let mut m = manifest("");
        part(&[("web", 1), ("worker", 0)]).apply(&mut m).unwrap();
        assert_eq!(m.roles["worker"].instances(), 0);
        assert_eq!(m.roles["worker"].slots(), 0);
        assert!(m.roles.contains_key("web"));
    }

    #[test]
    fn a_part_that_does_not_fit_the_manifest_is_refused_naming_the_field() {
        let cases = [
            (
                part(&[("nope", 1)]),
                "local.roles.nope: the manifest has no such role",
            ),
            (
                part(&[("worker", 1001)]),
                "local.roles.worker: instances must be 1 to 1000, not 1001",
            ),
            (part(&[("web", 2)]), "local.roles.web: a web role runs once"),
            (part(&[]), "local.roles: names no role"),
        ];
        for (part, expected) in cases {
            let err = part.apply(&mut manifest("")).unwrap_err().to_string();
            assert!(
                err.starts_with(expected),
                "expected {expected:?} in {err:?}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn a_part_round_trips_and_refuses_unknown_fields() {
        let part = LocalPart {
            listen_ip: Some("::1".parse().unwrap()),
            queues_url: Some("nats://10.0.0.1:4222".into()),
            ..part(&[("web", 1), ("worker", 4)])
        };
        let json = serde_json::to_string(&part).unwrap();
        assert_eq!(serde_json::from_str::<LocalPart>(&json).unwrap(), part);
        let err = serde_json::from_str::<LocalPart>(r#"{"roles":{},"colour":1}"#).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}

//! The assignment a round writes for a verified service: its roles as the
//! plan places them, and which instances changed host (for the log).

use crate::model::Assignment;
use crate::placement::{Demand, Plan};
use std::collections::BTreeMap;
use std::time::Duration;
use weft_host::controller::store::DeploymentRecord;

/// A verified service as placement sees it.
#[derive(Debug, Clone)]
pub(super) struct Service {
    /// The `svc.<name>` revision verified.
    pub(super) revision: u64,
    /// What each of its roles asks of placement.
    pub(super) demands: Vec<Demand>,
    /// Its verified record.
    pub(super) record: DeploymentRecord,
    /// How long one host may take to move in a fabric-wide rollout.
    pub(super) host_timeout: Duration,
}

/// The assignment of `service` under `term` that `plan` gives it.
pub(super) fn assignment_of(name: &str, service: &Service, term: u64, plan: &Plan) -> Assignment {
    let mut roles = BTreeMap::new();
    let mut unplaced = BTreeMap::new();
    for demand in &service.demands {
        let key = (name.to_owned(), demand.role.clone());
        roles.insert(
            demand.role.clone(),
            plan.placements.get(&key).cloned().unwrap_or_default(),
        );
        if let Some(&missing @ 1..) = plan.unplaced.get(&key) {
            unplaced.insert(demand.role.clone(), missing);
        }
    }
    Assignment {
        term,
        desired_revision: service.revision,
        roles,
        unplaced,
        held: BTreeMap::new(),
        rollout: None,
    }
}

/// An instance that changed host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Move {
    pub(super) role: String,
    pub(super) index: u32,
    pub(super) from: Option<String>,
    pub(super) to: Option<String>,
}

/// The instances placed differently in `new` than in `old`.
pub(super) fn moves(old: Option<&Assignment>, new: &Assignment) -> Vec<Move> {
    let empty = BTreeMap::new();
    let old_roles = old.map_or(&empty, |old| &old.roles);
    let mut moved = Vec::new();
    let roles: std::collections::BTreeSet<&String> =
        old_roles.keys().chain(new.roles.keys()).collect();
    for role in roles {
        let before = old_roles.get(role);
        let after = new.roles.get(role);
        let indexes: std::collections::BTreeSet<u32> = before
            .into_iter()
            .chain(after)
            .flat_map(|at| at.keys().copied())
            .collect();
        for index in indexes {
            let from = before.and_then(|at| at.get(&index)).cloned();
            let to = after.and_then(|at| at.get(&index)).cloned();
            if from != to {
                moved.push(Move {
                    role: role.clone(),
                    index,
                    from,
                    to,
                });
            }
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "[service]\nname = \"shop\"\n\
        [roles.web]\nkind = \"web\"\ncomponent = \"web.wasm\"\nlisten = \"127.0.0.1:0\"\ninstances = 2\n\
        [roles.web.limits]\nmax-in-flight = 4\n\
        [roles.worker]\nkind = \"worker\"\ncomponent = \"worker.wasm\"\ninstances = 3\nplacement = { zone = \"a\" }\n";

    #[test]
    fn an_assignment_takes_its_roles_from_the_plan_and_counts_what_is_missing() {
        let service = Service {
            revision: 12,
            demands: vec![Demand {
                service: "shop".into(),
                role: "worker".into(),
                count: 3,
                slots_each: 1,
                one_per_host: false,
                requires: BTreeMap::new(),
            }],
            record: DeploymentRecord {
                source: weft_host::controller::store::DeploymentSource {
                    manifest_file: "weft.toml".into(),
                    manifest: MANIFEST.into(),
                    environment: None,
                    components: BTreeMap::new(),
                },
                overrides: Default::default(),
                generation: 1,
                local: None,
            },
            host_timeout: Duration::from_secs(270),
        };
        let key = ("shop".to_owned(), "worker".to_owned());
        let plan = Plan {
            placements: BTreeMap::from([(
                key.clone(),
                BTreeMap::from([(0, "a".into()), (1, "b".into())]),
            )]),
            unplaced: BTreeMap::from([(key, 1)]),
        };
        let assignment = assignment_of("shop", &service, 5, &plan);
        assert_eq!(assignment.term, 5);
        assert_eq!(assignment.desired_revision, 12);
        assert_eq!(assignment.roles["worker"].len(), 2);
        assert_eq!(assignment.unplaced["worker"], 1);
    }

    #[test]
    fn moves_name_each_instance_that_changed_host() {
        let old = Assignment {
            term: 1,
            desired_revision: 1,
            roles: BTreeMap::from([(
                "worker".into(),
                BTreeMap::from([(0, "a".into()), (1, "b".into())]),
            )]),
            unplaced: BTreeMap::new(),
            held: BTreeMap::new(),
            rollout: None,
        };
        let new = Assignment {
            term: 2,
            roles: BTreeMap::from([(
                "worker".into(),
                BTreeMap::from([(0, "a".into()), (1, "c".into()), (2, "c".into())]),
            )]),
            ..old.clone()
        };
        let moved = moves(Some(&old), &new);
        assert_eq!(
            moved,
            vec![
                Move {
                    role: "worker".into(),
                    index: 1,
                    from: Some("b".into()),
                    to: Some("c".into())
                },
                Move {
                    role: "worker".into(),
                    index: 2,
                    from: None,
                    to: Some("c".into())
                },
            ]
        );
        assert!(moves(Some(&old), &old).is_empty());
    }
}

//! A role running on this host, web or worker, and a change of one to a new
//! version. What varies by kind is answered here, once per method: a
//! rollout ([`super::rollout`]), a status report and a stop ask the role,
//! and never match web against worker themselves.
//!
//! A web role is its listener and front ([`WebServer`]) with the version
//! committed last; its upgrade domains are shares of its requests. A worker
//! role is its pool of instance slots ([`WorkerPool`]); its upgrade domains
//! are sets of slots. A [`RoleChange`] pairs a role with its old and new
//! versions of the same kind, so a web role can only be given a web version.

use super::build::VersionBuilder;
use super::error::ControllerError;
use super::lock::lock;
use super::status::InstanceStatus;
use super::version::VersionInfo;
use super::web::WebVersion;
use super::workers::{DomainHealth, WorkerPool, WorkerVersion};
use crate::environment::WEB_INSTANCES;
use crate::http_server::WebServer;
use crate::manifest::RoleKind;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A web role on this host.
pub(super) struct WebRunner {
    server: WebServer,
    /// The version committed last (all shares go to it outside upgrades).
    current: Mutex<Arc<WebVersion>>,
}

impl WebRunner {
    fn current(&self) -> Arc<WebVersion> {
        lock(&self.current).clone()
    }
}

/// A role on this host.
pub(super) enum RoleRunner {
    /// A web role behind its listener.
    Web(Arc<WebRunner>),
    /// A worker role's instance slots.
    Worker(Arc<WorkerPool>),
}

/// What a role reports of itself in a status.
pub(super) struct RoleReport {
    /// Web or worker.
    pub(super) kind: RoleKind,
    /// Where a web role listens.
    pub(super) url: Option<String>,
    /// Its current version.
    pub(super) info: VersionInfo,
    /// Its instances, and how many are ready.
    pub(super) instances: Vec<InstanceStatus>,
    pub(super) ready: u32,
    /// Instances declared (a web role: its upgrade domains).
    pub(super) declared: u32,
}

/// What a role's stop leaves to wait for.
#[derive(Default)]
pub(super) struct Stopping {
    /// A web role's listener task, ending once its requests are answered.
    pub(super) server: Option<JoinHandle<()>>,
    /// A worker role's instances, ending once they stopped.
    pub(super) instances: Vec<JoinHandle<()>>,
    /// The longest an instance's batch may take (a worker's deadline).
    pub(super) deadline: Duration,
}

impl RoleRunner {
    /// A web role serving `server`, which routes to `current`.
    pub(super) fn web(server: WebServer, current: Arc<WebVersion>) -> Self {
        RoleRunner::Web(Arc::new(WebRunner {
            server,
            current: Mutex::new(current),
        }))
    }

    /// What it reports of itself; a web role's declared count is the
    /// service's `upgrade_domains`.
    pub(super) fn report(&self, upgrade_domains: u32) -> RoleReport {
        match self {
            RoleRunner::Web(web) => {
                let (instances, ready) = web.server.front.status();
                RoleReport {
                    kind: RoleKind::Web,
                    url: Some(web.server.url.clone()),
                    info: web.current().info.clone(),
                    instances,
                    ready,
                    declared: upgrade_domains,
                }
            }
            RoleRunner::Worker(pool) => {
                let (instances, ready) = pool.status();
                RoleReport {
                    kind: RoleKind::Worker,
                    url: None,
                    info: pool.current().info.clone(),
                    instances,
                    ready,
                    declared: pool.count(),
                }
            }
        }
    }

    /// The pool a scale changes: only worker roles scale.
    pub(super) fn scalable(&self, name: &str) -> Result<&Arc<WorkerPool>, ControllerError> {
        match self {
            RoleRunner::Worker(pool) => Ok(pool),
            RoleRunner::Web(_) => Err(ControllerError::Invalid(format!(
                "roles.{name}: only worker roles scale; {WEB_INSTANCES}"
            ))),
        }
    }

    /// Builds role `name`'s new version with `builder`, paired with the
    /// version it replaces.
    pub(super) async fn change(
        &self,
        name: &str,
        builder: &VersionBuilder<'_>,
    ) -> Result<RoleChange, ControllerError> {
        Ok(match self {
            RoleRunner::Web(web) => RoleChange::Web {
                name: name.to_owned(),
                role: web.clone(),
                old: web.current(),
                new: builder.web(name).await?,
            },
            RoleRunner::Worker(pool) => RoleChange::Worker {
                name: name.to_owned(),
                pool: pool.clone(),
                old: pool.current(),
                new: builder.worker(name).await?,
            },
        })
    }

    /// Splits the role into `domains` upgrade domains once an operation is
    /// done; a worker role takes `instances` instances.
    pub(super) fn settle(&self, domains: u32, instances: u32) {
        match self {
            RoleRunner::Web(web) => web.server.front.route_all(&web.current(), domains),
            RoleRunner::Worker(pool) => {
                pool.set_domains(domains);
                pool.scale(instances);
            }
        }
    }

    /// Stops taking work: a web role's listener closes (its requests in
    /// flight finish), a worker role's instances are asked to stop.
    pub(super) fn begin_stop(&self) -> Stopping {
        match self {
            RoleRunner::Web(web) => Stopping {
                server: web.server.stop_accepting(),
                ..Stopping::default()
            },
            RoleRunner::Worker(pool) => Stopping {
                deadline: pool.current().role.limits().deadline(),
                instances: pool.stop(),
                server: None,
            },
        }
    }

    /// Once its requests are answered: a web role's versions drain and
    /// their stop hooks run (those an upgrade retired too). A worker's
    /// instances drain on their own, in [`RoleRunner::begin_stop`]'s tasks.
    pub(super) async fn drain(&self, grace: Duration) {
        if let RoleRunner::Web(web) = self {
            web.server.drain(grace).await;
        }
    }
}

/// An operation's change of one role: its old version and the new one,
/// of the role's own kind.
pub(super) enum RoleChange {
    /// A web role's: its upgrade domains are shares of its requests.
    Web {
        name: String,
        role: Arc<WebRunner>,
        old: Arc<WebVersion>,
        new: Arc<WebVersion>,
    },
    /// A worker role's: its upgrade domains are sets of instance slots.
    Worker {
        name: String,
        pool: Arc<WorkerPool>,
        old: Arc<WorkerVersion>,
        new: Arc<WorkerVersion>,
    },
}

impl RoleChange {
    /// The role's name.
    pub(super) fn name(&self) -> &str {
        match self {
            RoleChange::Web { name, .. } | RoleChange::Worker { name, .. } => name,
        }
    }

    /// Readies the new version before it takes work, within `timeout`: a
    /// web version runs its start hook and answers its health path; worker
    /// instances start as their domain moves.
    pub(super) async fn start(&self, timeout: Duration) -> Result<(), String> {
        match self {
            RoleChange::Web { new, .. } => new.start(timeout).await,
            RoleChange::Worker { .. } => Ok(()),
        }
    }

    /// Whether [`RoleChange::start`] has anything to do, for the progress
    /// report.
    pub(super) fn starts(&self) -> bool {
        matches!(self, RoleChange::Web { .. })
    }

    /// Splits the role into `domains` upgrade domains, all on the old
    /// version, for the rollout to move one by one.
    pub(super) fn split(&self, domains: u32) {
        match self {
            RoleChange::Web { role, old, .. } => role.server.front.route_all(old, domains),
            RoleChange::Worker { pool, .. } => pool.set_domains(domains),
        }
    }

    /// Moves domain `domain` to the new version.
    pub(super) fn move_domain(&self, domain: u32) {
        match self {
            RoleChange::Web { role, new, .. } => role.server.front.move_domain(domain, new),
            RoleChange::Worker { pool, new, .. } => pool.move_domain(domain, new),
        }
    }

    /// How domain `domain`, moved at `moved_at`, is doing on the new
    /// version: a web version's health path is asked once (its requests
    /// are shares, not instances); a worker's moved instances must be
    /// ready and none failed.
    pub(super) async fn health(&self, domain: u32, moved_at: Instant) -> DomainHealth {
        match self {
            RoleChange::Web { new, .. } => match new.probe().await {
                Ok(()) => DomainHealth::Healthy,
                Err(why) => DomainHealth::Failed(why),
            },
            RoleChange::Worker { pool, new, .. } => {
                pool.domain_health(domain, new.info.generation, moved_at, Duration::ZERO)
            }
        }
    }

    /// Moves the first `moved` domains back to the old version and splits
    /// the role into `domains` again; a new web version drains, bounded by
    /// `grace`.
    pub(super) fn roll_back(&self, moved: u32, domains: u32, grace: Duration) {
        match self {
            RoleChange::Web { role, old, new, .. } => {
                for domain in 0..moved {
                    role.server.front.move_domain(domain, old);
                }
                role.server.front.route_all(old, domains);
                role.server.front.retire(new.clone(), grace);
            }
            RoleChange::Worker { pool, old, .. } => {
                for domain in 0..moved {
                    pool.move_domain(domain, old);
                }
                pool.set_domains(domains);
            }
        }
    }

    /// Makes the new version the role's current one; an old web version
    /// drains, bounded by `grace`.
    pub(super) fn commit(&self, grace: Duration) {
        match self {
            RoleChange::Web { role, old, new, .. } => {
                *lock(&role.current) = new.clone();
                role.server.front.retire(old.clone(), grace);
            }
            RoleChange::Worker { pool, new, .. } => pool.set_current(new.clone()),
        }
    }
}

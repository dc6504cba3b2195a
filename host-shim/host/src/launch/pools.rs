//! The connection pools of a host's listeners, sized once at start: the
//! web roles' and the admin address's, each capped apart
//! ([`crate::connections`]).

use crate::connections::{self, ConnectionLimits, Listening};
use crate::lingering::MinRate;
use std::sync::Arc;
use std::time::Duration;

/// What bounds the connections clients hold of a host (`weft serve`, `up`
/// and `host` share these flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// Connections the web roles' listeners hold open at once, all
    /// together; `None`: from the descriptor limit
    /// ([`connections::default_caps`]).
    pub max_web: Option<u64>,
    /// Connections the admin address holds open at once; `None`: from the
    /// descriptor limit.
    pub max_admin: Option<u64>,
    /// How long a connection may go without a complete request head.
    pub idle_timeout: Duration,
    /// The slowest a request body may come once its grace is spent, in
    /// bytes a second; 0 turns the bound off.
    pub min_body_rate: u64,
    /// How long a request body may take before the minimum rate applies.
    pub body_grace: Duration,
}

/// The connection pools of a host's listeners.
pub struct Pools {
    /// The web roles' listeners, all together.
    pub web: Arc<Listening>,
    /// The admin address.
    pub admin: Arc<Listening>,
}

impl Pools {
    /// Raises the descriptor limit, the first thing a host does, and sizes
    /// the pools from it unless `options` names their caps.
    pub fn new(options: &ConnectionOptions) -> Self {
        let descriptors = match connections::raise_descriptor_limit() {
            Ok(descriptors) => descriptors,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read or raise the descriptor limit; assuming 1024");
                1024
            }
        };
        let (web_cap, admin_cap) = connections::default_caps(descriptors);
        let cap = |flag: Option<u64>, default: usize| {
            flag.map_or(default, |n| usize::try_from(n).unwrap_or(usize::MAX))
        };
        let web = ConnectionLimits {
            max_connections: cap(options.max_web, web_cap),
            idle_timeout: options.idle_timeout,
            min_body_rate: (options.min_body_rate > 0).then_some(MinRate {
                bytes_per_sec: options.min_body_rate,
                grace: options.body_grace,
            }),
        };
        let admin = ConnectionLimits::admin(&web, cap(options.max_admin, admin_cap));
        tracing::info!(
            descriptors,
            web = web.max_connections,
            admin = admin.max_connections,
            "connection caps"
        );
        Self {
            web: Listening::new(web),
            admin: Listening::new(admin),
        }
    }
}

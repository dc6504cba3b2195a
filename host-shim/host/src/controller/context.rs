//! What every service on the host shares: the engine, the state folder,
//! the slot reservations and the web listeners' connection pool.

use super::slots::SlotPool;
use super::store::StateDir;
use std::sync::Arc;
use std::time::Duration;
use weft_sandbox::Runtime;

/// What every service on the host shares.
#[derive(Clone)]
pub struct HostContext {
    /// The engine.
    pub runtime: Arc<Runtime>,
    /// The state folder.
    pub state: StateDir,
    /// How long in-flight requests, draining versions and stop hooks may take.
    pub grace: Duration,
    /// Run only these roles (`weft up --role`); empty: all.
    pub only_roles: Vec<String>,
    /// The engine's instance slots, and what each service reserved.
    pub slots: Arc<SlotPool>,
    /// The connection pool every web role's listener draws from.
    pub web_pool: Arc<crate::connections::Listening>,
}

impl HostContext {
    /// Whether this host runs role `name`.
    pub fn runs(&self, name: &str) -> bool {
        self.only_roles.is_empty() || self.only_roles.iter().any(|r| r == name)
    }
}

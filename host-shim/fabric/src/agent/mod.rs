//! The agent: what every host of a fabric runs besides its controller. Two
//! loops, stopped by one shutdown signal:
//!
//! - the beat loop (`beat`) writes `beat.<id>` every second with what this
//!   host runs;
//! - the apply loop (`apply`) applies to the local controller this host's
//!   part of each service, as the current leader placed it and once its
//!   desired state verifies against the fabric's operators' keys, one
//!   step at a time ([`decide`], a pure function of the record running
//!   here and the one wanted).
//!
//! `memory` carries what the apply loop learns (the revision each service
//! runs, what it refused, the rounds it finished) to the beat loop.
//! [`logs`] answers other processes' requests for this host's guest
//! output. Modules depend one way: this file on `beat` and `apply`, both
//! on `memory`, `apply` on `decide` and `failure` (how a failed step is
//! judged: a refusal, or a failure that may pass).

mod apply;
mod beat;
pub mod decide;
mod failure;
pub mod logs;
mod memory;
#[cfg(test)]
pub(crate) mod tests;

pub use decide::{Action, decide};

use crate::signing::TrustedKeys;
use crate::store::FabricStore;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_host::Controller;

/// Who this host is, for the agent.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    /// The host's id.
    pub host_id: String,
    /// This process's boot id.
    pub boot: String,
    /// The address its web roles listen on.
    pub advertise: IpAddr,
    /// The fabric's NATS server as given (`--fabric`), where services whose
    /// manifest names no queue server keep their queues.
    pub queues_url: String,
}

/// The agent's two loops, running.
#[derive(Debug)]
pub struct Agent {
    /// The beat loop.
    pub beat: JoinHandle<()>,
    /// The apply loop.
    pub apply: JoinHandle<()>,
}

/// The down-after [`spawn`] assumes (`--fabric-down-after`'s default).
pub const DEFAULT_DOWN_AFTER: Duration = Duration::from_secs(10);

/// Starts the beat and apply loops of `identity` on `controller`, for a
/// fabric whose leader calls a host down after [`DEFAULT_DOWN_AFTER`];
/// both stop when `shutdown` turns true.
pub fn spawn(
    store: FabricStore,
    controller: Arc<Controller>,
    trust: Arc<TrustedKeys>,
    identity: AgentIdentity,
    shutdown: watch::Receiver<bool>,
) -> Agent {
    spawn_with_down_after(
        store,
        controller,
        trust,
        identity,
        DEFAULT_DOWN_AFTER,
        shutdown,
    )
}

/// As [`spawn`], for a fabric whose leader calls a host down after
/// `down_after` of silence: after nearly that long without an
/// acknowledged beat (stopped, or cut off), the beat loop waits for the
/// apply loop to finish a round that read the fabric (at most 10 s)
/// before it beats again, so a host back from the dead first stops what
/// was placed elsewhere meanwhile.
pub fn spawn_with_down_after(
    store: FabricStore,
    controller: Arc<Controller>,
    trust: Arc<TrustedKeys>,
    identity: AgentIdentity,
    down_after: Duration,
    shutdown: watch::Receiver<bool>,
) -> Agent {
    let memory = Arc::new(memory::Memory::default());
    let beat = tokio::spawn(beat::run(
        store.clone(),
        controller.clone(),
        identity.host_id.clone(),
        identity.boot,
        memory.clone(),
        down_after,
        shutdown.clone(),
    ));
    let here = apply::Here {
        host_id: identity.host_id,
        advertise: identity.advertise,
        queues_url: identity.queues_url,
    };
    let applier = apply::Applier::new(store, controller, trust, here, memory);
    let apply = tokio::spawn(applier.run(shutdown));
    Agent { beat, apply }
}

//! What a role may reach ([`Grants`]): its queues, buckets, settings,
//! scratch folder and egress origins. Anything absent is denied; the VMBus
//! ([`crate::vmbus`]) and the egress hooks ([`crate::egress`]) check every
//! call against them.

use crate::egress::EgressAllowlist;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// What a role may reach over the VMBus; anything absent is denied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// The service the role belongs to; queue and bucket names are scoped by it.
    pub service: String,
    /// The role's name, for logs.
    pub role: String,
    /// Queues the role may send to and receive from.
    pub queues: BTreeSet<String>,
    /// Key-value buckets the role may open.
    pub buckets: BTreeSet<String>,
    /// Settings the role reads through `wasi:config/store`.
    pub settings: BTreeMap<String, String>,
    /// A host folder the guest sees as `/scratch`, read-write; `None` means
    /// the guest has no filesystem at all.
    pub scratch_dir: Option<PathBuf>,
    /// Origins a web role may send HTTP requests to; empty (the default)
    /// means no outgoing HTTP at all.
    pub egress: EgressAllowlist,
}

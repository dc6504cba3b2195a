//! Which signed revision of `svc.<name>` may be run (or built on): the
//! one check every reader of desired state makes — the leader before it
//! places, each host's agent before it runs, the operator CLI before it
//! signs a change over the current record.
//!
//! A signature alone says an operator once signed a body, not that it is
//! the body to run now: whoever can write to the fabric's bucket could put
//! an old signed body again as a new revision, or name an old revision in
//! the (unsigned) assignment. So each signed [`Desired`] names the KV
//! revision of the key's change it replaced (`replaces`, written by
//! compare-and-set against exactly that revision), chaining every signed
//! revision to the one before it:
//!
//! - the newest entry R must verify, and its `replaces` must be the
//!   revision of the key's change before R (read from the key's history):
//!   a body replayed as a new revision names some older revision and is
//!   refused;
//! - an older revision O may be run only if it is the one R replaced and
//!   the assignment's rollout goes from O to R (a host held back during a
//!   fabric-wide rollout, or every host after it rolled back). O itself
//!   must verify; its place in the chain is vouched for by R's signature
//!   (its operator's CLI checked O's chain before signing R over it).
//!
//! What a forged assignment can still do: hold hosts back at the revision
//! the newest one replaced, and move signed work between hosts within
//! their capacity. What it cannot: run anything unsigned, run a revision
//! older than the one the newest replaced, or replay an old signed body.

use crate::error::FabricError;
use crate::model::{Assignment, Desired, SignedDesired};
use crate::names::service_key;
use crate::signing::TrustedKeys;
use crate::store::{Bucket, FabricStore, Versioned};

/// The desired state of service `name` in its newest entry, if a trusted
/// key signed it and it replaced the key's change just before it.
/// Refusals are [`FabricError::Signature`] one-liners; a failed read of
/// the key's history is a store error (try again).
pub async fn verified_newest(
    store: &FabricStore,
    trust: &TrustedKeys,
    name: &str,
    newest: &Versioned<SignedDesired>,
) -> Result<Desired, FabricError> {
    let desired = trust.verify(name, &newest.value)?;
    let key = service_key(name);
    let previous = store
        .previous_revision(Bucket::State, &key, newest.revision)
        .await?;
    if desired.replaces != previous {
        return Err(FabricError::Signature(format!(
            "{key} revision {}: its signed body replaces revision {}, but the change before it is revision {previous} (an old body written again?)",
            newest.revision, desired.replaces
        )));
    }
    Ok(desired)
}

/// The desired state of service `name` at `revision` (whose entry is
/// `signed`), which `assignment` gives a host to run, given the key's
/// `newest` entry: the newest itself ([`verified_newest`]), or the
/// revision the newest replaced while the assignment's rollout goes from
/// it to the newest. Any other revision is refused
/// ([`FabricError::Signature`]). An assignment that names the revision the
/// newest replaced without such a rollout, or a revision newer than
/// `newest`, has not caught up with the desired state yet:
/// [`FabricError::Conflict`] (wait, refuse nothing).
pub async fn verified_at(
    store: &FabricStore,
    trust: &TrustedKeys,
    name: &str,
    revision: u64,
    signed: &SignedDesired,
    newest: &Versioned<SignedDesired>,
    assignment: &Assignment,
) -> Result<Desired, FabricError> {
    let key = service_key(name);
    if revision > newest.revision {
        return Err(FabricError::Conflict(format!(
            "{key} revision {revision} is newer than the newest read ({})",
            newest.revision
        )));
    }
    let replacing = verified_newest(store, trust, name, newest).await?;
    if revision == newest.revision {
        return Ok(replacing);
    }
    if replacing.replaces != revision {
        return Err(FabricError::Signature(format!(
            "{key} revision {revision} is not the one revision {} replaced",
            newest.revision
        )));
    }
    let rolling = assignment.rollout.as_ref().is_some_and(|rollout| {
        rollout.from_revision == revision && rollout.to_revision == newest.revision
    });
    if !rolling {
        return Err(FabricError::Conflict(format!(
            "{key} revision {} is not placed yet (the assignment still names revision {revision}, which it replaced)",
            newest.revision
        )));
    }
    trust.verify(name, signed)
}

#[cfg(test)]
mod tests;

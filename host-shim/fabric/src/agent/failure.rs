//! How a failed step of a service is judged: a refusal (this revision
//! cannot run here: the beat's `refused`, which rolls a fabric-wide
//! rollout back at once) or a failure that may pass (the store or the
//! object store unreachable, an operation under way, a step that did not
//! end in time: the beat's `retrying`, which leaves the rollout's host
//! timeout to decide). Pure, so the judgement is tested apart.

use crate::error::FabricError;
use std::time::{Duration, Instant};
use weft_host::ControllerError;

/// How long a refused step waits before it is tried again.
const RETRY_REFUSED_AFTER: Duration = Duration::from_secs(30);
/// How long a step that failed for a passing reason waits.
const RETRY_PASSING_AFTER: Duration = Duration::from_secs(5);

/// What a failure says of the revision it failed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// The revision cannot run here (a signature, a manifest, a component):
    /// refused, tried again now and then.
    Refused,
    /// Its local rollout rolled back: refused, never tried again (it
    /// would roll back again); a new revision is tried.
    RolledBack,
    /// The reason may pass: not a refusal, tried again soon.
    Passing,
}

impl Kind {
    /// Whether the beat reports it apart from refusals.
    pub(super) fn passing(self) -> bool {
        self == Self::Passing
    }

    /// Whether a step that failed so `elapsed` ago still waits.
    pub(super) fn still_waits(self, elapsed: Duration) -> bool {
        match self {
            Self::RolledBack => true,
            Self::Refused => elapsed < RETRY_REFUSED_AFTER,
            Self::Passing => elapsed < RETRY_PASSING_AFTER,
        }
    }
}

/// A step that failed for a revision.
pub(super) struct Failure {
    /// The revision.
    pub(super) revision: u64,
    /// When.
    pub(super) at: Instant,
    /// What it says of the revision.
    pub(super) kind: Kind,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum StepError {
    /// The controller refused or failed it.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// The fabric's store or object store failed it.
    #[error(transparent)]
    Fabric(#[from] FabricError),
    /// It did not end in time (the controller finishes or abandons it in
    /// its own task).
    #[error("the step did not end within {} s", .0.as_secs())]
    TimedOut(Duration),
}

impl StepError {
    /// What this failure says of the revision: a refusal only when the
    /// revision itself is at fault (its manifest, a component), never when
    /// the store, the network or the host's own state is.
    pub(super) fn kind(&self) -> Kind {
        match self {
            Self::Controller(ControllerError::Invalid(_) | ControllerError::Component(_))
            | Self::Fabric(FabricError::Blob(_)) => Kind::Refused,
            Self::Controller(_) | Self::Fabric(_) | Self::TimedOut(_) => Kind::Passing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fault_of_the_revision_is_a_refusal() {
        let refused = [
            StepError::Controller(ControllerError::Invalid("bad manifest".into())),
            StepError::Fabric(FabricError::Blob("does not match its name".into())),
        ];
        for error in refused {
            assert_eq!(error.kind(), Kind::Refused, "{error}");
        }
        let passing = [
            StepError::Controller(ControllerError::Conflict("an upgrade is under way".into())),
            StepError::Controller(ControllerError::Unavailable("shutting down".into())),
            StepError::Controller(ControllerError::Internal("disk full".into())),
            StepError::Fabric(FabricError::Store("no end within 30 s".into())),
            StepError::TimedOut(Duration::from_secs(300)),
        ];
        for error in passing {
            assert_eq!(error.kind(), Kind::Passing, "{error}");
            assert!(error.kind().passing());
        }
        assert_eq!(
            StepError::TimedOut(Duration::from_secs(300)).to_string(),
            "the step did not end within 300 s"
        );
    }

    #[test]
    fn a_rolled_back_revision_waits_for_good_and_a_passing_failure_briefly() {
        let long = Duration::from_secs(3600);
        assert!(Kind::RolledBack.still_waits(long));
        assert!(!Kind::Refused.still_waits(long));
        assert!(Kind::Refused.still_waits(Duration::from_secs(10)));
        assert!(!Kind::Passing.still_waits(Duration::from_secs(10)));
        assert!(Kind::Passing.still_waits(Duration::from_secs(1)));
    }
}

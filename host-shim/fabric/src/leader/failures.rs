//! What the leader remembers of the failures of each part of a round (a
//! service, the members' states), so that one service that cannot be
//! written never stops the others, and a failure that lasts is logged
//! once, not every second.
//!
//! Pure: it decides how loud each failure is; the round logs it.

use crate::FabricError;
use std::collections::{BTreeMap, HashMap};
use std::mem::Discriminant;

/// Rounds in a row whose writes of one service conflicted before it is
/// logged as a warning: a conflict or two is another writer racing this
/// one (the next round re-reads); more is something that keeps changing
/// the key under the leader.
pub(super) const CONFLICTS_BEFORE_WARNING: u32 = 5;

/// How loud a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Loudness {
    /// New (a kind not logged for this part since it last worked), or
    /// the [`CONFLICTS_BEFORE_WARNING`]th conflict in a row.
    Warn,
    /// The same again, or a conflict that may pass.
    Quiet,
}

/// The failures of each part of a round, by its name.
#[derive(Debug, Default)]
pub(super) struct Failures {
    /// The kind of error last logged as a warning, by part.
    warned: HashMap<String, Discriminant<FabricError>>,
    /// Rounds in a row whose writes conflicted, by part.
    conflicts: BTreeMap<String, u32>,
}

impl Failures {
    /// Records that `part` failed with `error` this round.
    pub(super) fn failed(&mut self, part: &str, error: &FabricError) -> Loudness {
        if let FabricError::Conflict(_) = error {
            let row = self.conflicts.entry(part.to_owned()).or_default();
            *row = row.saturating_add(1);
            return if *row == CONFLICTS_BEFORE_WARNING {
                Loudness::Warn
            } else {
                Loudness::Quiet
            };
        }
        self.conflicts.remove(part);
        let kind = std::mem::discriminant(error);
        if self.warned.insert(part.to_owned(), kind) == Some(kind) {
            Loudness::Quiet
        } else {
            Loudness::Warn
        }
    }

    /// Records that `part` worked this round; true if a failure of it
    /// had been logged as a warning (so its recovery is worth a line).
    pub(super) fn succeeded(&mut self, part: &str) -> bool {
        let conflicts = self.conflicts.remove(part).unwrap_or(0);
        let warned = self.warned.remove(part).is_some();
        warned || conflicts >= CONFLICTS_BEFORE_WARNING
    }

    /// Forgets the parts `keep` says are gone.
    pub(super) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.warned.retain(|part, _| keep(part));
        self.conflicts.retain(|part, _| keep(part));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(reason: &str) -> FabricError {
        FabricError::Store(reason.into())
    }

    #[test]
    fn each_kind_of_failure_is_a_warning_once_per_part_while_it_lasts() {
        let mut failures = Failures::default();
        assert_eq!(failures.failed("a", &store("timeout")), Loudness::Warn);
        // Another reason of the same kind: no new line every second.
        assert_eq!(failures.failed("a", &store("gone")), Loudness::Quiet);
        // Another part is its own.
        assert_eq!(failures.failed("b", &store("timeout")), Loudness::Warn);
        // Another kind is news.
        let signature = FabricError::Signature("bad".into());
        assert_eq!(failures.failed("a", &signature), Loudness::Warn);
        assert_eq!(failures.failed("a", &store("timeout")), Loudness::Warn);
        // Once it works, the next failure is news again.
        assert!(failures.succeeded("a"));
        assert!(!failures.succeeded("a"), "nothing to recover from");
        assert_eq!(failures.failed("a", &store("timeout")), Loudness::Warn);
    }

    #[test]
    fn conflicts_warn_only_after_some_rounds_in_a_row() {
        let mut failures = Failures::default();
        let conflict = FabricError::Conflict("assign.a changed meanwhile".into());
        for _ in 1..CONFLICTS_BEFORE_WARNING {
            assert_eq!(failures.failed("a", &conflict), Loudness::Quiet);
        }
        assert_eq!(failures.failed("a", &conflict), Loudness::Warn);
        assert_eq!(failures.failed("a", &conflict), Loudness::Quiet, "once");
        assert!(failures.succeeded("a"), "its recovery is worth a line");
        // A round that worked breaks the row.
        for _ in 1..CONFLICTS_BEFORE_WARNING {
            assert_eq!(failures.failed("a", &conflict), Loudness::Quiet);
        }
        assert!(!failures.succeeded("a"));
        assert_eq!(failures.failed("a", &conflict), Loudness::Quiet);
    }

    #[test]
    fn parts_gone_are_forgotten() {
        let mut failures = Failures::default();
        failures.failed("a", &store("timeout"));
        failures.failed("b", &store("timeout"));
        failures.retain(|part| part == "b");
        assert_eq!(failures.failed("a", &store("timeout")), Loudness::Warn);
        assert_eq!(failures.failed("b", &store("timeout")), Loudness::Quiet);
    }
}

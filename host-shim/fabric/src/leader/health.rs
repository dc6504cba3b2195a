//! How the leader judges each member: by when it last saw the member's
//! beat change, on its own monotonic clock (a beat's `sent_ms` is another
//! machine's wall clock, shown to people only).
//!
//! Pure: observations and `now` in, states out, so the rules are tested
//! without a clock or a server.

use crate::model::HostState;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// When a member counts as silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Thresholds {
    /// Silence after which it gets no new work.
    pub suspect_after: Duration,
    /// Silence after which its work moves elsewhere.
    pub down_after: Duration,
}

/// The beat revision a member last showed, and when this leader first saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Observation {
    /// The `beat.<id>` revision (0: no beat yet).
    revision: u64,
    seen_at: Instant,
}

/// What this leader has seen of every member's beats during its term.
#[derive(Debug, Clone, Default)]
pub(crate) struct Health {
    observations: BTreeMap<String, Observation>,
}

impl Health {
    /// Records the members present at `now` with their beat revisions (0:
    /// none yet). A member seen for the first time, or with a new
    /// revision, counts as heard from at `now`: a leader new to its term
    /// has seen nobody yet, so every member gets a full grace period
    /// before it can be judged down. Members gone from the list are forgotten.
    pub(crate) fn observe(&mut self, beats: &BTreeMap<String, u64>, now: Instant) {
        self.observations.retain(|id, _| beats.contains_key(id));
        for (id, &revision) in beats {
            let fresh = self
                .observations
                .get(id)
                .is_none_or(|seen| seen.revision != revision);
            if fresh {
                self.observations.insert(
                    id.clone(),
                    Observation {
                        revision,
                        seen_at: now,
                    },
                );
            }
        }
    }

    /// Member `id`'s state at `now`: draining if it asked to be emptied,
    /// else by how long its beat has not changed.
    pub(crate) fn state(
        &self,
        id: &str,
        draining: bool,
        now: Instant,
        thresholds: Thresholds,
    ) -> HostState {
        if draining {
            return HostState::Draining;
        }
        // Not observed yet: as if heard from now.
        let silent = self.observations.get(id).map_or(Duration::ZERO, |seen| {
            now.saturating_duration_since(seen.seen_at)
        });
        if silent >= thresholds.down_after {
            HostState::Down
        } else if silent >= thresholds.suspect_after {
            HostState::Suspect
        } else {
            HostState::Ready
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THRESHOLDS: Thresholds = Thresholds {
        suspect_after: Duration::from_secs(3),
        down_after: Duration::from_secs(10),
    };

    fn beats(entries: &[(&str, u64)]) -> BTreeMap<String, u64> {
        entries
            .iter()
            .map(|(id, rev)| ((*id).to_owned(), *rev))
            .collect()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_silent_member_turns_suspect_then_down() {
        let start = Instant::now();
        let mut health = Health::default();
        health.observe(&beats(&[("a", 4)]), start);
        let state = |at| health.state("a", false, start + at, THRESHOLDS);
        assert_eq!(state(Duration::ZERO), HostState::Ready);
        assert_eq!(state(Duration::from_millis(2_999)), HostState::Ready);
        assert_eq!(state(secs(3)), HostState::Suspect);
        assert_eq!(state(Duration::from_millis(9_999)), HostState::Suspect);
        assert_eq!(state(secs(10)), HostState::Down);
    }

    #[test]
    fn a_new_beat_revision_makes_it_ready_again() {
        let start = Instant::now();
        let mut health = Health::default();
        health.observe(&beats(&[("a", 4)]), start);
        // The same revision again is no news.
        health.observe(&beats(&[("a", 4)]), start + secs(8));
        assert_eq!(
            health.state("a", false, start + secs(10), THRESHOLDS),
            HostState::Down
        );
        health.observe(&beats(&[("a", 5)]), start + secs(11));
        assert_eq!(
            health.state("a", false, start + secs(11), THRESHOLDS),
            HostState::Ready
        );
        assert_eq!(
            health.state("a", false, start + secs(14), THRESHOLDS),
            HostState::Suspect
        );
    }

    #[test]
    fn a_new_leader_gives_every_member_a_full_grace_period() {
        // The member's last beat may be old, but this leader just started
        // watching: it is not down before down_after from now.
        let now = Instant::now();
        let mut health = Health::default();
        health.observe(&beats(&[("a", 90), ("b", 0)]), now);
        for id in ["a", "b", "never-observed"] {
            assert_eq!(health.state(id, false, now, THRESHOLDS), HostState::Ready);
        }
        assert_eq!(
            health.state("b", false, now + secs(9), THRESHOLDS),
            HostState::Suspect
        );
        assert_eq!(
            health.state("b", false, now + secs(10), THRESHOLDS),
            HostState::Down
        );
    }

    #[test]
    fn draining_wins_over_silence() {
        let now = Instant::now();
        let mut health = Health::default();
        health.observe(&beats(&[("a", 1)]), now);
        assert_eq!(
            health.state("a", true, now, THRESHOLDS),
            HostState::Draining
        );
        assert_eq!(
            health.state("a", true, now + secs(60), THRESHOLDS),
            HostState::Draining
        );
    }

    #[test]
    fn a_member_that_left_and_came_back_starts_afresh() {
        let start = Instant::now();
        let mut health = Health::default();
        health.observe(&beats(&[("a", 1), ("b", 1)]), start);
        health.observe(&beats(&[("b", 1)]), start + secs(20));
        health.observe(&beats(&[("a", 1), ("b", 1)]), start + secs(30));
        assert_eq!(
            health.state("a", false, start + secs(30), THRESHOLDS),
            HostState::Ready
        );
        assert_eq!(
            health.state("b", false, start + secs(30), THRESHOLDS),
            HostState::Down
        );
    }
}

//! Following a change until the fabric runs it: the leader placed the
//! written revision, every instance found a host, and every host runs that
//! revision with its instances ready. An upgrade's fabric-wide rollout is
//! followed step by step; one that rolled the revision back ends the wait.
//!
//! [`Waiting::judge`] decides each poll from the report alone, so what
//! ends a wait is tested without a fabric.

use super::Operator;
use super::snapshot::Snapshot;
use super::status::{self, ServiceReport, rollout_reason};
use crate::error::FabricError;
use std::time::Duration;
use tokio::time::Instant;

/// How often the fabric is read while waiting.
const POLL: Duration = Duration::from_millis(250);
/// How long hosts may keep refusing the service before the wait gives up
/// (a refusal may be a start that is retried; a signature that does not
/// verify is not).
const REFUSED_FOR: Duration = Duration::from_secs(5);

impl Operator {
    /// Waits until service `name` runs revision `revision` everywhere it
    /// was placed, calling `progress` with each report that differs from
    /// the last; returns the converged report. Gives up after `timeout`
    /// (or when hosts keep refusing it, or a newer change replaced it)
    /// with [`FabricError::Refused`] naming what is missing (a moving
    /// rollout's step among it); at once, with `service NAME was rolled
    /// back: REASON`, when the fabric-wide rollout rolled it back.
    pub async fn wait_converged(
        &self,
        name: &str,
        revision: u64,
        timeout: Duration,
        progress: &mut (dyn FnMut(&ServiceReport) + Send),
    ) -> Result<ServiceReport, FabricError> {
        let mut waiting = Waiting::new(name, revision, timeout, Instant::now());
        let mut last: Option<ServiceReport> = None;
        loop {
            let snapshot = Snapshot::read(self.store()).await?;
            let report = match status::fabric_status(&snapshot, Some(name)) {
                Ok(mut found) => found.services.pop(),
                Err(FabricError::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            if let Some(report) = &report
                && report.desired_revision == revision
                && last.as_ref() != Some(report)
            {
                progress(report);
            }
            let now = Instant::now();
            match waiting.judge(report, now)? {
                Judged::Converged(report) => return Ok(report),
                Judged::Waiting(report) => last = Some(report),
            }
            tokio::time::sleep(POLL.min(waiting.give_up.saturating_duration_since(now))).await;
        }
    }
}

/// A wait for one service to run one revision.
#[derive(Debug, Clone)]
pub(super) struct Waiting<'a> {
    name: &'a str,
    revision: u64,
    timeout: Duration,
    give_up: Instant,
    refused_since: Option<Instant>,
}

/// What one poll found.
#[derive(Debug)]
pub(super) enum Judged {
    /// The fabric runs it.
    Converged(ServiceReport),
    /// Not yet: poll again.
    Waiting(ServiceReport),
}

impl<'a> Waiting<'a> {
    /// A wait for service `name` at `revision`, from `start` for `timeout`.
    pub(super) fn new(name: &'a str, revision: u64, timeout: Duration, start: Instant) -> Self {
        Self {
            name,
            revision,
            timeout,
            give_up: start + timeout,
            refused_since: None,
        }
    }

    /// Judges the service's `report` (none: it is gone) read at `now`.
    pub(super) fn judge(
        &mut self,
        report: Option<ServiceReport>,
        now: Instant,
    ) -> Result<Judged, FabricError> {
        let name = self.name;
        let revision = self.revision;
        let Some(report) = report else {
            return Err(FabricError::NotFound(format!(
                "service {name} was removed from the fabric while waiting for it"
            )));
        };
        if report.desired_revision != revision {
            return Err(FabricError::Conflict(format!(
                "service {name} was changed again (revision {}) while waiting for revision {revision}",
                report.desired_revision
            )));
        }
        if report.converged {
            return Ok(Judged::Converged(report));
        }
        if let Some(rollout) = report.rolled_back() {
            return Err(FabricError::Refused(format!(
                "service {name} was rolled back: {}",
                rollout_reason(rollout)
            )));
        }
        // While a rollout moves, the leader judges a refusal (it rolls the
        // fabric back); the report names only refusals of the revision
        // each host should run.
        if report.refused.is_empty()
            || report.placed_revision != Some(revision)
            || report.moving().is_some()
        {
            self.refused_since = None;
        } else if now.duration_since(*self.refused_since.get_or_insert(now)) >= REFUSED_FOR {
            return Err(FabricError::Refused(format!(
                "service {name} is refused: {}",
                report.missing()
            )));
        }
        if now >= self.give_up {
            return Err(FabricError::Refused(format!(
                "service {name} has not converged after {} s: {}",
                self.timeout.as_secs(),
                report.missing()
            )));
        }
        Ok(Judged::Waiting(report))
    }
}

//! The leader's lease: one host at a time places work, chosen by
//! compare-and-set on the `leader` key of the state bucket.
//!
//! The server (2.9) has no per-key TTL, so a lease expires by silence, and
//! every host judges silence on its own monotonic clock, never on another
//! host's wall clock:
//!
//! - the holder renews every [`RENEW_EVERY`] with a compare-and-set on the
//!   revision it last wrote, and counts itself leader only while its last
//!   acknowledged renewal was *sent* less than [`LEASE`] − 1 s ago;
//! - a candidate takes the lease over (compare-and-set on the revision it
//!   saw) only after that revision has stood unchanged for [`LEASE`] + 1 s
//!   from when it first saw it. It saw it after it was written, and it was
//!   written after it was sent, so the old holder stopped leading at least
//!   2 s (of either clock) before the new one starts;
//! - a holder that steps down deletes the key (with its revision), and a
//!   candidate that finds the key empty campaigns at once.
//!
//! The term is the KV revision of the write that won the lease. That write
//! cannot know its own revision, so it carries term 0, and the holder at
//! once renews with `term` set; it leads only from that renewal on, so
//! every record a leader leads under carries its term. Hosts act on an
//! assignment only if its term is the one in `leader` now, which fences off
//! a deposed leader's late writes.

mod changes;

pub(crate) use changes::ChangeWatch;

use crate::FabricError;
use crate::model::LeaderRecord;
use crate::names::LEADER_KEY;
use crate::store::{Bucket, FabricStore};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a lease lasts without a renewal.
pub const LEASE: Duration = Duration::from_secs(6);
/// How often the holder renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// The safety margin on either side: the holder stops this much before
/// [`LEASE`], a candidate waits this much after it.
const MARGIN: Duration = Duration::from_secs(1);
/// How often a candidate re-reads the lease when nothing wakes it sooner.
const CANDIDATE_POLL: Duration = Duration::from_millis(500);
/// How soon a holder retries a renewal the store failed.
const RENEW_RETRY: Duration = Duration::from_millis(500);
/// The longest random wait before taking a vacant lease, so hosts that
/// saw it vacated together do not all write at once.
const MAX_JITTER_MS: u64 = 300;

/// The lease as its holder knows it: the revision to renew and when the
/// last acknowledged write was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    term: u64,
    revision: u64,
    renewal: u64,
    /// When the last acknowledged write was sent (not acknowledged: the
    /// server may have stored it any time after it was sent).
    acked_sent_at: Instant,
    /// Whether a record carrying `term` has been acknowledged.
    stamped: bool,
}

impl Held {
    /// Until when this host may act as leader.
    fn valid_until(&self) -> Instant {
        self.acked_sent_at + LEASE - MARGIN
    }

    /// Whether this host may act as leader at `now`.
    fn is_valid(&self, now: Instant) -> bool {
        now < self.valid_until()
    }

    /// The term this host leads at `now`, if it does.
    fn leading(&self, now: Instant) -> Option<u64> {
        (self.stamped && self.is_valid(now)).then_some(self.term)
    }

    /// Records an acknowledged write sent at `sent_at`.
    fn acked(&mut self, revision: u64, sent_at: Instant) {
        self.revision = revision;
        self.renewal = self.renewal.saturating_add(1);
        self.acked_sent_at = sent_at;
        self.stamped = true;
    }
}

/// Another holder's lease as a candidate saw it: the revision and when
/// this candidate first saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    revision: u64,
    since: Instant,
}

impl Seen {
    /// `revision`, seen at `now`: the clock keeps running from when the
    /// candidate first saw the same revision, and restarts on a new one.
    fn observe(previous: Option<Seen>, revision: u64, now: Instant) -> Seen {
        match previous {
            Some(seen) if seen.revision == revision => seen,
            _ => Seen {
                revision,
                since: now,
            },
        }
    }

    /// When the lease counts as abandoned, if its revision stands till then.
    fn expires_at(&self) -> Instant {
        self.since + LEASE + MARGIN
    }

    /// Whether a candidate may take the lease over at `now`.
    fn may_take_over(&self, now: Instant) -> bool {
        now >= self.expires_at()
    }
}

/// Logs `what` failing with `error` unless it was the last failure logged.
fn warn_once(failing: &mut Option<String>, what: &str, error: &FabricError) {
    let message = format!("{what}: {error}");
    if failing.as_deref() != Some(message.as_str()) {
        tracing::warn!("{message}");
        *failing = Some(message);
    }
}

/// Campaigns for the lease as `host_id` (process `boot`), holds it while it
/// can, and steps down when `shutdown` turns true (or its sender goes).
///
/// The receiver reads `Some(term)` while this host holds the lease and its
/// last acknowledged renewal is younger than [`LEASE`] − 1 s on this host's
/// clock, `None` otherwise.
pub fn spawn_elector(
    store: FabricStore,
    host_id: String,
    boot: String,
    shutdown: watch::Receiver<bool>,
) -> (watch::Receiver<Option<u64>>, JoinHandle<()>) {
    let (leadership, receiver) = watch::channel(None);
    let elector = Elector {
        store,
        host_id,
        boot,
        shutdown,
        leadership,
    };
    (receiver, tokio::spawn(elector.run()))
}

struct Elector {
    store: FabricStore,
    host_id: String,
    boot: String,
    shutdown: watch::Receiver<bool>,
    leadership: watch::Sender<Option<u64>>,
}

/// Whether the elector goes on.
enum Next {
    Campaign,
    Stop,
}

impl Elector {
    async fn run(mut self) {
        loop {
            let Some(held) = self.campaign().await else {
                break;
            };
            tracing::info!(host = %self.host_id, term = held.term, "this host leads the fabric");
            if let Next::Stop = self.hold(held).await {
                break;
            }
        }
        self.publish(None);
    }

    fn publish(&self, term: Option<u64>) {
        self.leadership.send_if_modified(|current| {
            let changed = *current != term;
            *current = term;
            changed
        });
    }

    fn record(&self, term: u64, renewal: u64) -> LeaderRecord {
        LeaderRecord {
            holder: self.host_id.clone(),
            boot: self.boot.clone(),
            term,
            renewal,
        }
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow() || self.shutdown.has_changed().is_err()
    }

    /// Waits until the lease is vacant or abandoned and this host wins it;
    /// `None` on shutdown.
    async fn campaign(&mut self) -> Option<Held> {
        let mut seen: Option<Seen> = None;
        // Wakes the candidate on every change in the state bucket (kept
        // here, not in `self`: a watch is not `Sync`).
        let mut changes = ChangeWatch::new(Bucket::State);
        // While the store fails, each new reason is logged once, not every poll.
        let mut failing: Option<String> = None;
        loop {
            if self.stopping() {
                return None;
            }
            let now = Instant::now();
            let mut wake_at = now + CANDIDATE_POLL;
            match self.read_lease().await {
                Ok(None) => {
                    let jitter = rand::random_range(0..=MAX_JITTER_MS);
                    if !self.sleep(Duration::from_millis(jitter)).await {
                        return None;
                    }
                    match self.acquire(None).await {
                        Ok(held) => return Some(held),
                        Err(FabricError::Conflict(_)) => continue,
                        Err(e) => {
                            warn_once(&mut failing, "cannot campaign for the fabric's lease", &e)
                        }
                    }
                }
                Ok(Some(revision)) => {
                    let current = Seen::observe(seen, revision, now);
                    seen = Some(current);
                    if current.may_take_over(now) {
                        match self.acquire(Some(revision)).await {
                            Ok(held) => return Some(held),
                            Err(FabricError::Conflict(_)) => continue,
                            Err(e) => {
                                warn_once(&mut failing, "cannot take over the fabric's lease", &e);
                            }
                        }
                    } else {
                        failing = None;
                        wake_at = wake_at.min(current.expires_at());
                    }
                }
                Err(e) => warn_once(&mut failing, "cannot read the fabric's lease", &e),
            }
            if !self.wait_for_change(&mut changes, wake_at).await {
                return None;
            }
        }
    }

    /// The lease's revision, `None` if vacant. A record that does not parse
    /// counts as a lease like any other, so it expires and is replaced.
    async fn read_lease(&self) -> Result<Option<u64>, FabricError> {
        match self
            .store
            .get::<LeaderRecord>(Bucket::State, LEADER_KEY)
            .await
        {
            Ok(lease) => Ok(lease.map(|lease| lease.revision)),
            Err(FabricError::Malformed { .. }) => self
                .store
                .last_revision(Bucket::State, LEADER_KEY)
                .await
                .map(Some),
            Err(e) => Err(e),
        }
    }

    /// Writes this host's lease over `replacing` (or into a vacant key),
    /// then stamps it with its term.
    async fn acquire(&self, replacing: Option<u64>) -> Result<Held, FabricError> {
        let sent_at = Instant::now();
        let unstamped = self.record(0, 0);
        let won = match replacing {
            None => {
                self.store
                    .create(Bucket::State, LEADER_KEY, &unstamped)
                    .await?
            }
            Some(revision) => {
                self.store
                    .update(Bucket::State, LEADER_KEY, &unstamped, revision)
                    .await?
            }
        };
        let mut held = Held {
            term: won,
            revision: won,
            renewal: 0,
            acked_sent_at: sent_at,
            stamped: false,
        };
        // Stamping now, not at the first renewal: a leader leads only under
        // a record that names its term.
        let sent_at = Instant::now();
        let stamped = self.record(held.term, 1);
        match self
            .store
            .update(Bucket::State, LEADER_KEY, &stamped, held.revision)
            .await
        {
            Ok(revision) => held.acked(revision, sent_at),
            Err(FabricError::Conflict(reason)) => return Err(FabricError::Conflict(reason)),
            // The holder's loop retries it as a renewal.
            Err(e) => tracing::warn!(error = %e, "cannot stamp the fabric's lease with its term"),
        }
        Ok(held)
    }

    /// Renews the lease until it is lost or this host shuts down.
    async fn hold(&mut self, mut held: Held) -> Next {
        let mut next_renewal = if held.stamped {
            held.acked_sent_at + RENEW_EVERY
        } else {
            Instant::now()
        };
        loop {
            let now = Instant::now();
            self.publish(held.leading(now));
            let mut wake_at = next_renewal;
            if held.is_valid(now) {
                wake_at = wake_at.min(held.valid_until());
            }
            if !self.sleep_until(wake_at).await {
                self.step_down(&held).await;
                return Next::Stop;
            }
            let now = Instant::now();
            // At once, before any renewal is awaited: a holder that was
            // paused past its lease must not count as leader meanwhile.
            self.publish(held.leading(now));
            if now < next_renewal {
                continue;
            }
            // A renewal still pending when the lease runs out must not keep
            // this host counted as leader: the wait is bounded by validity.
            let deadline = if held.is_valid(now) {
                held.valid_until()
            } else {
                now + RENEW_EVERY
            };
            let record = self.record(held.term, held.renewal.saturating_add(1));
            let renewal = self
                .store
                .update(Bucket::State, LEADER_KEY, &record, held.revision);
            let outcome = tokio::select! {
                outcome = renewal => Some(outcome),
                () = tokio::time::sleep_until(deadline) => None,
            };
            match outcome {
                Some(Ok(revision)) => {
                    held.acked(revision, now);
                    next_renewal = now + RENEW_EVERY;
                }
                Some(Err(FabricError::Conflict(_))) => {
                    self.publish(None);
                    tracing::warn!(host = %self.host_id, term = held.term, "this host lost the fabric's lease to another");
                    return Next::Campaign;
                }
                failed => {
                    let reason = match failed {
                        Some(Err(e)) => e.to_string(),
                        _ => "no answer in time".to_owned(),
                    };
                    if !held.is_valid(Instant::now()) {
                        self.publish(None);
                        tracing::warn!(%reason, term = held.term, "cannot renew the fabric's lease and it ran out; campaigning again");
                        return Next::Campaign;
                    }
                    tracing::warn!(%reason, term = held.term, "cannot renew the fabric's lease; retrying");
                    next_renewal = Instant::now() + RENEW_RETRY;
                }
            }
        }
    }

    /// Hands the lease back, so another host takes over at once.
    async fn step_down(&self, held: &Held) {
        self.publish(None);
        match self
            .store
            .delete(Bucket::State, LEADER_KEY, held.revision)
            .await
        {
            Ok(()) => tracing::info!(
                term = held.term,
                "this host stepped down as the fabric's leader"
            ),
            // Another host holds it already, or the store is gone: it
            // then expires by silence.
            Err(e) => tracing::warn!(error = %e, "cannot hand back the fabric's lease"),
        }
    }

    /// Sleeps `duration`; false if shutdown came first.
    async fn sleep(&mut self, duration: Duration) -> bool {
        self.sleep_until(Instant::now() + duration).await
    }

    /// Sleeps until `at`; false if shutdown came first.
    async fn sleep_until(&mut self, at: Instant) -> bool {
        tokio::select! {
            () = tokio::time::sleep_until(at) => true,
            _ = self.shutdown.wait_for(|stop| *stop) => false,
        }
    }

    /// Waits for a change in the state bucket (debounced: a watch that
    /// keeps waking it does not make the candidate spin), or until `at`;
    /// false if shutdown came first.
    async fn wait_for_change(&mut self, changes: &mut ChangeWatch, at: Instant) -> bool {
        // Without a watch the candidate still polls.
        changes.ensure(&self.store).await;
        let shutdown = &mut self.shutdown;
        tokio::select! {
            () = tokio::time::sleep_until(at) => true,
            // A change, or the watch ended: look at the lease again.
            _ = changes.changed() => true,
            _ = shutdown.wait_for(|stop| *stop) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_at(sent_at: Instant) -> Held {
        Held {
            term: 7,
            revision: 8,
            renewal: 1,
            acked_sent_at: sent_at,
            stamped: true,
        }
    }

    #[test]
    fn a_holder_leads_until_lease_less_a_margin_after_its_last_acked_renewal() {
        let sent = Instant::now();
        let held = held_at(sent);
        assert_eq!(held.leading(sent), Some(7));
        assert_eq!(held.leading(sent + Duration::from_millis(4_999)), Some(7));
        assert_eq!(held.leading(sent + Duration::from_secs(5)), None);
        assert_eq!(held.leading(sent + Duration::from_secs(6)), None);
    }

    #[test]
    fn a_renewal_extends_from_when_it_was_sent() {
        let start = Instant::now();
        let mut held = held_at(start);
        held.acked(9, start + Duration::from_secs(2));
        assert_eq!(held.revision, 9);
        assert_eq!(held.renewal, 2);
        assert_eq!(held.leading(start + Duration::from_millis(6_999)), Some(7));
        assert_eq!(held.leading(start + Duration::from_secs(7)), None);
    }

    #[test]
    fn a_paused_holder_does_not_lead() {
        let sent = Instant::now();
        let held = held_at(sent);
        assert_eq!(held.leading(sent + Duration::from_secs(20)), None);
    }

    #[test]
    fn an_unstamped_lease_does_not_lead() {
        let sent = Instant::now();
        let held = Held {
            stamped: false,
            ..held_at(sent)
        };
        assert!(held.is_valid(sent));
        assert_eq!(held.leading(sent), None);
    }

    #[test]
    fn a_candidate_takes_over_only_after_lease_plus_a_margin_of_silence() {
        let first = Instant::now();
        let seen = Seen::observe(None, 5, first);
        // Seeing the same revision again does not restart the clock.
        let seen = Seen::observe(Some(seen), 5, first + Duration::from_secs(3));
        assert_eq!(seen.since, first);
        assert!(!seen.may_take_over(first + Duration::from_millis(6_999)));
        assert!(seen.may_take_over(first + Duration::from_secs(7)));
        // A renewal restarts it.
        let later = first + Duration::from_secs(4);
        let renewed = Seen::observe(Some(seen), 6, later);
        assert!(!renewed.may_take_over(first + Duration::from_secs(8)));
        assert!(renewed.may_take_over(later + Duration::from_secs(7)));
    }

    #[test]
    fn the_old_holder_stops_before_a_candidate_may_start() {
        // The candidate sees the renewal no earlier than it was sent.
        let sent = Instant::now();
        let held = held_at(sent);
        let seen = Seen::observe(None, held.revision, sent);
        assert!(seen.expires_at() >= held.valid_until() + Duration::from_secs(2));
    }
}

#[cfg(test)]
mod with_nats {
    use super::*;
    use crate::store::ConnectOptions;
    use crate::test_support::NatsServer;

    async fn elector(
        server: &NatsServer,
        id: &str,
    ) -> (
        watch::Receiver<Option<u64>>,
        JoinHandle<()>,
        watch::Sender<bool>,
    ) {
        let store = FabricStore::connect(&ConnectOptions::new(&server.url()))
            .await
            .unwrap();
        let (stop, shutdown) = watch::channel(false);
        let (leadership, task) = spawn_elector(store, id.into(), format!("{id}-boot"), shutdown);
        (leadership, task, stop)
    }

    async fn leads_within(leadership: &mut watch::Receiver<Option<u64>>, limit: Duration) -> u64 {
        let term = tokio::time::timeout(limit, leadership.wait_for(Option::is_some))
            .await
            .expect("no leader in time")
            .unwrap();
        term.unwrap_or_default()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_elector_leads_and_the_other_takes_over() {
        let server = NatsServer::start();
        let (mut a, a_task, _a_stop) = elector(&server, "a").await;
        let first = leads_within(&mut a, Duration::from_secs(3)).await;
        let (mut b, b_task, b_stop) = elector(&server, "b").await;
        // b sees a's lease and waits: exactly one leads.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(*a.borrow(), Some(first));
        assert_eq!(*b.borrow(), None);

        // a dies without stepping down: b takes over once a's lease lapses.
        a_task.abort();
        let died = Instant::now();
        let second = leads_within(&mut b, LEASE + Duration::from_secs(2)).await;
        assert!(died.elapsed() >= LEASE - 2 * MARGIN, "{:?}", died.elapsed());
        assert!(second > first);

        // A fresh c waits behind b; b steps down and c leads at once.
        let (mut c, c_task, _c_stop) = elector(&server, "c").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(*c.borrow(), None);
        b_stop.send_replace(true);
        let stepped = Instant::now();
        b_task.await.unwrap();
        assert_eq!(*b.borrow(), None);
        let third = leads_within(&mut c, Duration::from_millis(1_500)).await;
        assert!(stepped.elapsed() < Duration::from_millis(1_500));
        assert!(third > second);
        c_task.abort();
    }
}

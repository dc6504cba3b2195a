//! The host's bounded memory of each role's guest output, for `weft logs`.
//!
//! The runtime logs every line a guest prints as a `tracing` event on the
//! target [`GUEST_LOG_TARGET`] (`weft::guest`), with `service`, `role`,
//! `instance` and `stream` fields ([`weft_sandbox::guest_log`]).
//! [`GuestOutputLayer`] tees those events into a [`GuestOutput`], which keeps
//! the last [`MAX_LINES`] lines (and at most [`MAX_BYTES`] of text) per role,
//! numbered by one host-wide sequence, so a client reads "everything after
//! N" and waits for more (`weft logs -f`).
//! The guest's own rate limit on output (500 lines/s and 1 MiB/s per role
//! by default) bounds what arrives; this module bounds what is kept.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Lines kept per role.
pub const MAX_LINES: usize = 1000;
/// Bytes of text kept per role.
pub const MAX_BYTES: usize = 1024 * 1024;
/// The target the runtime logs guest output on (one spelling, the
/// sandbox's).
pub use weft_sandbox::guest_log::GUEST_LOG_TARGET;

/// One line a guest printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Its place in the host-wide sequence (1, 2, ...).
    pub seq: u64,
    /// When it was logged, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The instance that printed it (a worker's number, `req-N`, `start`...).
    pub instance: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line.
    pub text: String,
}

#[derive(Default)]
struct RoleLog {
    lines: VecDeque<LogLine>,
    bytes: usize,
}

#[derive(Default)]
struct Kept {
    roles: BTreeMap<(String, String), RoleLog>,
    last_seq: u64,
}

/// Every role's recent output.
pub struct GuestOutput {
    kept: Mutex<Kept>,
    /// The last sequence number, for waiting readers.
    latest: watch::Sender<u64>,
}

impl Default for GuestOutput {
    fn default() -> Self {
        Self {
            kept: Mutex::new(Kept::default()),
            latest: watch::channel(0).0,
        }
    }
}

impl GuestOutput {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a line role `role` of `service` printed.
    pub fn push(&self, service: &str, role: &str, instance: String, stream: String, text: String) {
        let at_ms = crate::clock::now_ms();
        let seq = {
            let mut output = self.lock();
            output.last_seq += 1;
            let seq = output.last_seq;
            let log = output
                .roles
                .entry((service.to_owned(), role.to_owned()))
                .or_default();
            log.bytes += text.len();
            log.lines.push_back(LogLine {
                seq,
                at_ms,
                instance,
                stream,
                text,
            });
            while log.lines.len() > MAX_LINES || log.bytes > MAX_BYTES {
                match log.lines.pop_front() {
                    Some(old) => log.bytes -= old.text.len(),
                    None => break,
                }
            }
            seq
        };
        self.latest.send_replace(seq);
    }

    /// Up to `limit` of the role's lines after sequence number `after`, and
    /// the sequence number to read after next time.
    pub fn read(&self, service: &str, role: &str, after: u64, limit: usize) -> (Vec<LogLine>, u64) {
        let output = self.lock();
        let Some(log) = output.roles.get(&(service.to_owned(), role.to_owned())) else {
            return (Vec::new(), after);
        };
        let lines: Vec<LogLine> = log
            .lines
            .iter()
            .filter(|line| line.seq > after)
            .take(limit)
            .cloned()
            .collect();
        let next = lines.last().map_or(after, |line| line.seq);
        (lines, next)
    }

    /// As [`GuestOutput::read`], but waits up to `wait` for a first line.
    pub async fn wait(
        &self,
        service: &str,
        role: &str,
        after: u64,
        limit: usize,
        wait: Duration,
    ) -> (Vec<LogLine>, u64) {
        let mut latest = self.latest.subscribe();
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            latest.borrow_and_update();
            let found = self.read(service, role, after, limit);
            if !found.0.is_empty() {
                return found;
            }
            if tokio::time::timeout_at(give_up, latest.changed())
                .await
                .is_err()
            {
                return found;
            }
        }
    }

    /// Forgets a removed service's lines.
    pub fn forget(&self, service: &str) {
        self.lock().roles.retain(|(s, _), _| s != service);
    }
}

/// A `tracing` layer that copies guest output into a [`GuestOutput`].
pub struct GuestOutputLayer(pub std::sync::Arc<GuestOutput>);

#[derive(Default)]
struct Fields {
    service: String,
    role: String,
    instance: String,
    stream: String,
    message: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field, format!("{value:?}"));
    }
}

impl Fields {
    fn set(&mut self, field: &Field, value: String) {
        match field.name() {
            "service" => self.service = value,
            "role" => self.role = value,
            "instance" => self.instance = value,
            "stream" => self.stream = value,
            "message" => self.message = value,
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for GuestOutputLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != GUEST_LOG_TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.service.is_empty() || fields.role.is_empty() {
            return;
        }
        self.0.push(
            &fields.service,
            &fields.role,
            fields.instance,
            fields.stream,
            fields.message,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn the_layer_keeps_guest_lines_per_role_and_nothing_else() {
        let output = Arc::new(GuestOutput::default());
        let subscriber = tracing_subscriber::registry().with(GuestOutputLayer(output.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: GUEST_LOG_TARGET, service = "s", role = "web", instance = "req-1", stream = "stdout", "hello {}", "there");
            tracing::info!(target: GUEST_LOG_TARGET, service = "s", role = "worker", instance = "0", stream = "stderr", "other role");
            tracing::info!(
                service = "s",
                role = "web",
                "a host event, not guest output"
            );
        });
        let (lines, next) = output.read("s", "web", 0, 10);
        assert_eq!(lines.len(), 1);
        assert_eq!(
            (
                lines[0].text.as_str(),
                lines[0].instance.as_str(),
                lines[0].stream.as_str()
            ),
            ("hello there", "req-1", "stdout")
        );
        assert_eq!(output.read("s", "web", next, 10).0, Vec::new());
        assert_eq!(output.read("s", "worker", 0, 10).0[0].text, "other role");
    }

    #[test]
    fn each_role_keeps_a_bounded_tail() {
        let output = GuestOutput::default();
        for i in 0..(MAX_LINES + 50) {
            output.push("s", "r", "0".into(), "stdout".into(), format!("line {i}"));
        }
        output.push("s", "other", "0".into(), "stdout".into(), "kept".into());
        let (lines, _) = output.read("s", "r", 0, usize::MAX);
        assert_eq!(lines.len(), MAX_LINES);
        assert_eq!(lines[0].text, "line 50");
        // Bytes bound it too: 300 lines of 4 KiB are 1.2 MiB.
        for _ in 0..300 {
            output.push("s", "big", "0".into(), "stdout".into(), "x".repeat(4096));
        }
        let (big, _) = output.read("s", "big", 0, usize::MAX);
        assert!(
            big.len() * 4096 <= MAX_BYTES && big.len() >= 250,
            "{}",
            big.len()
        );
        assert_eq!(output.read("s", "other", 0, 10).0.len(), 1);
        output.forget("s");
        assert!(output.read("s", "other", 0, 10).0.is_empty());
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_for_a_new_line() {
        let output = Arc::new(GuestOutput::default());
        let writer = output.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            writer.push("s", "r", "0".into(), "stdout".into(), "late".into());
        });
        let (lines, _) = output.wait("s", "r", 0, 10, Duration::from_secs(10)).await;
        assert_eq!(lines[0].text, "late");
        let (none, next) = output
            .wait("s", "r", lines[0].seq, 10, Duration::from_millis(20))
            .await;
        assert!(none.is_empty());
        assert_eq!(next, lines[0].seq);
    }
}

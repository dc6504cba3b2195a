//! The `weft.deliver` spans of the messages an instance holds, from
//! `receive` until the message is completed, abandoned, or its lease lapses.
//!
//! Kept beside the instance's leases (in its queue state), keyed the same
//! way (queue and receipt). A lapsed lease is found at the instance's next
//! queue call ([`Deliveries::expire`]) or when it ends
//! ([`Deliveries::end_all`]). Each span notes the instance's fuel count
//! when it began; its `weft.fuel` is the difference when it ends. At most
//! [`MAX_OPEN`] are open at once: a guest holding more has the rest
//! untraced rather than the host's memory grow with it.

use super::span::{AttributeValue, OpenSpan};
use std::collections::HashMap;
use std::time::Instant;

/// The most delivery spans one instance keeps open.
pub const MAX_OPEN: usize = 4096;

struct Open {
    span: OpenSpan,
    expires: Instant,
    fuel_at_start: Option<u64>,
}

/// An instance's open delivery spans, by (queue, receipt).
#[derive(Default)]
pub(crate) struct Deliveries {
    open: HashMap<(String, String), Open>,
}

impl Deliveries {
    /// Opens `span` for the message `receipt` of `queue`, leased until `expires`.
    pub(crate) fn begin(
        &mut self,
        queue: &str,
        receipt: &str,
        mut span: OpenSpan,
        expires: Instant,
        fuel: Option<u64>,
    ) {
        if self.open.len() >= MAX_OPEN {
            return;
        }
        span.attribute("weft.queue", AttributeValue::Text(queue.to_owned()));
        let open = Open {
            span,
            expires,
            fuel_at_start: fuel,
        };
        self.open
            .insert((queue.to_owned(), receipt.to_owned()), open);
    }

    /// Moves a delivery's lease expiry (an extend).
    pub(crate) fn extend(&mut self, queue: &str, receipt: &str, expires: Instant) {
        if let Some(open) = self.open.get_mut(&key(queue, receipt)) {
            open.expires = expires;
        }
    }

    /// Ends a delivery's span with `outcome`, the instance's fuel count now being `fuel`.
    pub(crate) fn end(&mut self, queue: &str, receipt: &str, outcome: &str, fuel: Option<u64>) {
        if let Some(open) = self.open.remove(&key(queue, receipt)) {
            open.finish(outcome, fuel);
        }
    }

    /// Ends, as `lease-lost`, every span whose lease lapsed by `now`.
    pub(crate) fn expire(&mut self, now: Instant, fuel: Option<u64>) {
        if self.open.is_empty() {
            return;
        }
        let lapsed: Vec<_> = self
            .open
            .iter()
            .filter(|(_, open)| open.expires <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in lapsed {
            if let Some(open) = self.open.remove(&key) {
                open.finish("lease-lost", fuel);
            }
        }
    }

    /// Ends every span still open as the instance ends: those whose lease
    /// lapsed as `lease-lost`, the rest as `outcome`.
    pub(crate) fn end_all(&mut self, outcome: &str, fuel: Option<u64>) {
        self.expire(Instant::now(), fuel);
        for (_, open) in self.open.drain() {
            open.finish(outcome, fuel);
        }
    }

    /// Whether none is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// How many are open.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }
}

impl Open {
    fn finish(self, outcome: &str, fuel: Option<u64>) {
        let used = fuel
            .zip(self.fuel_at_start)
            .map(|(now, then)| now.saturating_sub(then));
        self.span.finish(used, outcome);
    }
}

fn key(queue: &str, receipt: &str) -> (String, String) {
    (queue.to_owned(), receipt.to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::span::tests::{Kept, text};
    use super::super::span::{Parent, RoleTrace, SpanKind, SpanSink};
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn each_delivery_ends_once_with_its_outcome_and_fuel() {
        let kept = Arc::new(Kept::default());
        let sink: Arc<dyn SpanSink> = kept.clone();
        let trace = RoleTrace::new(Some(&sink), "svc", "worker").instance("0");
        let open = |header| {
            trace
                .start("weft.deliver", SpanKind::Consumer, Parent::Remote(header))
                .unwrap()
        };
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut deliveries = Deliveries::default();
        deliveries.begin("q", "a", open(None), later, Some(100));
        deliveries.begin("q", "b", open(None), now, Some(100));
        deliveries.begin("q", "c", open(None), now, Some(100));
        deliveries.extend("q", "c", later);
        deliveries.expire(now, Some(150));
        deliveries.end("q", "a", "completed", Some(400));
        deliveries.end("q", "a", "completed", Some(500));
        deliveries.end_all("abandoned", Some(600));
        assert_eq!(deliveries.len(), 0);

        let spans = kept.0.lock().unwrap();
        let outcomes: Vec<_> = spans
            .iter()
            .map(|s| text(s, "weft.outcome").unwrap())
            .collect();
        assert_eq!(outcomes, ["lease-lost", "completed", "abandoned"]);
        let fuel: Vec<_> = spans
            .iter()
            .map(|s| {
                s.attributes
                    .iter()
                    .find(|(n, _)| *n == "weft.fuel")
                    .cloned()
            })
            .collect();
        assert_eq!(fuel[1], Some(("weft.fuel", AttributeValue::Int(300))));
        assert_eq!(text(&spans[0], "weft.queue"), Some("q"));
    }

    #[test]
    fn past_the_cap_deliveries_go_untraced_and_the_rest_still_end() {
        let kept = Arc::new(Kept::default());
        let sink: Arc<dyn SpanSink> = kept.clone();
        let trace = RoleTrace::new(Some(&sink), "svc", "worker").instance("0");
        let later = Instant::now() + Duration::from_secs(60);
        let mut deliveries = Deliveries::default();
        for i in 0..MAX_OPEN + 10 {
            let span = trace
                .start("weft.deliver", SpanKind::Consumer, Parent::Remote(None))
                .unwrap();
            deliveries.begin("q", &i.to_string(), span, later, None);
        }
        assert_eq!(deliveries.len(), MAX_OPEN);
        deliveries.end("q", "0", "completed", None);
        deliveries.end_all("abandoned", None);
        assert_eq!(kept.0.lock().unwrap().len(), MAX_OPEN);
    }
}

//! Spans: the record of a finished one ([`FinishedSpan`]), the sink the
//! host installs ([`SpanSink`]), and the tracing state of a role's version
//! ([`RoleTrace`]) and of one of its instances ([`InstanceTrace`]), both
//! `None` inside when tracing is off.

use super::context::{SpanContext, SpanId, TraceId, TraceParent};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Where finished spans go: the host's exporter. `record` is called on the
/// guest's path (in its host calls and as its request ends), so it must
/// never block: queue the span or drop it.
pub trait SpanSink: Send + Sync + 'static {
    /// Takes one finished span.
    fn record(&self, span: FinishedSpan);
}

/// What a span stands for, as OpenTelemetry's `SpanKind` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Work inside Weft (a VMBus call other than a send).
    Internal,
    /// A request Weft serves (`weft.request`).
    Server,
    /// A message sent to a queue.
    Producer,
    /// A message received from a queue (`weft.deliver`).
    Consumer,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// Text.
    Text(String),
    /// A whole number.
    Int(i64),
}

/// One attribute: its name and value.
pub type Attribute = (&'static str, AttributeValue);

/// A span that has ended, as the sink receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedSpan {
    /// `weft.request`, `weft.vmbus` or `weft.deliver`.
    pub name: &'static str,
    /// What it stands for.
    pub kind: SpanKind,
    /// Its trace.
    pub trace_id: TraceId,
    /// Itself.
    pub span_id: SpanId,
    /// Its parent, if it has one (a span starting a trace has none).
    pub parent_span_id: Option<SpanId>,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// `weft.service`, `weft.role`, `weft.instance`, `weft.outcome`,
    /// `weft.fuel` (when known) and what the span adds (`weft.call`,
    /// `weft.queue`, `http.response.status_code`).
    pub attributes: Vec<Attribute>,
}

/// Who a role's spans belong to, and where they go.
struct RoleTags {
    sink: Arc<dyn SpanSink>,
    service: String,
    role: String,
}

/// A version of a role's tracing: `None` inside when tracing is off.
#[derive(Clone, Default)]
pub(crate) struct RoleTrace(Option<Arc<RoleTags>>);

impl fmt::Debug for RoleTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "RoleTrace(on)"
        } else {
            "RoleTrace(off)"
        })
    }
}

/// Where a new span hangs.
pub(crate) enum Parent<'a> {
    /// A `traceparent` from a client or a message, if it had a valid one;
    /// otherwise the span starts a new trace.
    Remote(Option<&'a str>),
    /// A span of this host.
    Local(Option<SpanContext>),
}

impl RoleTrace {
    /// Whether spans are recorded.
    pub(crate) fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// The tracing of a role of `service` whose spans go to `sink`, if any.
    pub(crate) fn new(sink: Option<&Arc<dyn SpanSink>>, service: &str, role: &str) -> Self {
        Self(sink.map(|sink| {
            Arc::new(RoleTags {
                sink: sink.clone(),
                service: service.to_owned(),
                role: role.to_owned(),
            })
        }))
    }

    /// The tracing of one of its instances, named `instance`.
    pub(crate) fn instance(&self, instance: &str) -> InstanceTrace {
        InstanceTrace(self.0.as_ref().map(|role| {
            Arc::new(InstanceTags {
                role: role.clone(),
                instance: instance.to_owned(),
                current: Mutex::new(None),
            })
        }))
    }

    /// A span starting now under `parent`, for `instance`; `None` when
    /// tracing is off.
    pub(crate) fn start(
        &self,
        name: &'static str,
        kind: SpanKind,
        parent: Parent<'_>,
        instance: &str,
    ) -> Option<OpenSpan> {
        let role = self.0.as_ref()?;
        let (ctx, parent_span_id) = match parent {
            Parent::Remote(header) => match header.map(TraceParent::parse) {
                Some(Ok(remote)) => (
                    SpanContext::child_of_remote(&remote),
                    Some(remote.parent_id),
                ),
                // Absent or invalid: a new trace (an invalid one is hostile
                // or broken input, and joining it could mislead).
                _ => (SpanContext::root(), None),
            },
            Parent::Local(Some(local)) => (local.child(), Some(local.span_id)),
            Parent::Local(None) => (SpanContext::root(), None),
        };
        Some(OpenSpan {
            sink: role.sink.clone(),
            ctx,
            span: FinishedSpan {
                name,
                kind,
                trace_id: ctx.trace_id,
                span_id: ctx.span_id,
                parent_span_id,
                start: SystemTime::now(),
                end: SystemTime::UNIX_EPOCH,
                attributes: vec![
                    ("weft.service", AttributeValue::Text(role.service.clone())),
                    ("weft.role", AttributeValue::Text(role.role.clone())),
                    ("weft.instance", AttributeValue::Text(instance.to_owned())),
                ],
            },
        })
    }
}

struct InstanceTags {
    role: Arc<RoleTags>,
    instance: String,
    /// The span the instance works for now: its request's, or the delivery
    /// it received last. Never held across an await.
    current: Mutex<Option<SpanContext>>,
}

/// One instance's tracing: `None` inside when tracing is off.
#[derive(Clone, Default)]
pub struct InstanceTrace(Option<Arc<InstanceTags>>);

impl fmt::Debug for InstanceTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(tags) => write!(f, "InstanceTrace({})", tags.instance),
            None => f.write_str("InstanceTrace(off)"),
        }
    }
}

impl InstanceTrace {
    /// Whether spans are recorded.
    pub(crate) fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Sets the span the instance works for from now on.
    pub(crate) fn set_current(&self, ctx: Option<SpanContext>) {
        if let Some(tags) = &self.0 {
            *tags.current.lock().unwrap_or_else(|p| p.into_inner()) = ctx;
        }
    }

    /// The span the instance works for now, if any.
    pub(crate) fn current(&self) -> Option<SpanContext> {
        let tags = self.0.as_ref()?;
        *tags.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A span of this instance starting now under `parent`; `None` when
    /// tracing is off.
    pub(crate) fn start(
        &self,
        name: &'static str,
        kind: SpanKind,
        parent: Parent<'_>,
    ) -> Option<OpenSpan> {
        let tags = self.0.as_ref()?;
        RoleTrace(Some(tags.role.clone())).start(name, kind, parent, &tags.instance)
    }

    /// A span for a host call, a child of the current span; `None` too
    /// while the instance works for no span (a worker waiting for work:
    /// its polls belong to no trace).
    pub(crate) fn start_call(&self, call: &'static str, kind: SpanKind) -> Option<OpenSpan> {
        let current = self.current()?;
        let mut span = self.start("weft.vmbus", kind, Parent::Local(Some(current)))?;
        span.attribute("weft.call", AttributeValue::Text(call.to_owned()));
        Some(span)
    }
}

/// A span under way; recorded when [`OpenSpan::finish`]ed.
pub(crate) struct OpenSpan {
    sink: Arc<dyn SpanSink>,
    ctx: SpanContext,
    span: FinishedSpan,
}

impl OpenSpan {
    /// Its context: what goes out as its `traceparent`.
    pub(crate) fn context(&self) -> SpanContext {
        self.ctx
    }

    /// Adds an attribute.
    pub(crate) fn attribute(&mut self, name: &'static str, value: AttributeValue) {
        self.span.attributes.push((name, value));
    }

    /// Sets an attribute, replacing the value it had.
    pub(crate) fn set_attribute(&mut self, name: &'static str, value: AttributeValue) {
        match self.span.attributes.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.span.attributes.push((name, value)),
        }
    }

    /// Ends the span now with `outcome` and, if known, the `fuel` it
    /// burnt, and hands it to the sink.
    pub(crate) fn finish(mut self, fuel: Option<u64>, outcome: impl Into<String>) {
        self.span.end = SystemTime::now().max(self.span.start);
        if let Some(fuel) = fuel {
            let fuel = i64::try_from(fuel).unwrap_or(i64::MAX);
            self.span
                .attributes
                .push(("weft.fuel", AttributeValue::Int(fuel)));
        }
        self.span
            .attributes
            .push(("weft.outcome", AttributeValue::Text(outcome.into())));
        self.sink.record(self.span);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A sink keeping what it is given, for tests.
    #[derive(Default)]
    pub(crate) struct Kept(pub(crate) Mutex<Vec<FinishedSpan>>);

    impl SpanSink for Kept {
        fn record(&self, span: FinishedSpan) {
            self.0.lock().unwrap().push(span);
        }
    }

    /// A role of service `svc` traced into a [`Kept`] sink, and that sink.
    pub(crate) fn kept_role() -> (Arc<Kept>, RoleTrace) {
        let kept = Arc::new(Kept::default());
        let sink: Arc<dyn SpanSink> = kept.clone();
        (kept, RoleTrace::new(Some(&sink), "svc", "web"))
    }

    /// A new trace's `weft.request` span for `req-1`, made `instance`'s
    /// current span so that its calls are children of it.
    pub(crate) fn current_request(role: &RoleTrace, instance: &InstanceTrace) -> OpenSpan {
        let request = role
            .start(
                "weft.request",
                SpanKind::Server,
                Parent::Local(None),
                "req-1",
            )
            .unwrap();
        instance.set_current(Some(request.context()));
        request
    }

    pub(crate) fn text<'a>(span: &'a FinishedSpan, name: &str) -> Option<&'a str> {
        span.attributes.iter().find_map(|(n, v)| match v {
            AttributeValue::Text(t) if *n == name => Some(t.as_str()),
            _ => None,
        })
    }

    #[test]
    fn off_records_nothing_and_on_records_children_in_the_callers_trace() {
        let idle = RoleTrace::new(
            Some(&(Arc::new(Kept::default()) as Arc<dyn SpanSink>)),
            "s",
            "r",
        );
        assert!(
            idle.instance("0")
                .start_call("queue.receive", SpanKind::Internal)
                .is_none()
        );
        assert!(
            RoleTrace::default()
                .instance("0")
                .start_call("queue.send", SpanKind::Producer)
                .is_none()
        );

        let kept = Arc::new(Kept::default());
        let sink: Arc<dyn SpanSink> = kept.clone();
        let role = RoleTrace::new(Some(&sink), "svc", "web");
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let request = role
            .start(
                "weft.request",
                SpanKind::Server,
                Parent::Remote(Some(header)),
                "req-1",
            )
            .unwrap();
        let instance = role.instance("req-1");
        instance.set_current(Some(request.context()));
        let call = instance
            .start_call("queue.send", SpanKind::Producer)
            .unwrap();
        assert_eq!(call.context().trace_id, request.context().trace_id);
        call.finish(None, "ok");
        request.finish(Some(42), "200");
        // A broken header starts a new trace instead.
        role.start(
            "weft.request",
            SpanKind::Server,
            Parent::Remote(Some("00-zz")),
            "req-2",
        )
        .unwrap()
        .finish(None, "200");

        let spans = kept.0.lock().unwrap();
        let (call, request, fresh) = (&spans[0], &spans[1], &spans[2]);
        assert_eq!(
            request.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            request.parent_span_id.unwrap().to_string(),
            "00f067aa0ba902b7"
        );
        assert_eq!(call.parent_span_id, Some(request.span_id));
        assert_eq!(text(call, "weft.call"), Some("queue.send"));
        assert_eq!(text(request, "weft.outcome"), Some("200"));
        assert_eq!(text(request, "weft.role"), Some("web"));
        assert!(
            request
                .attributes
                .contains(&("weft.fuel", AttributeValue::Int(42)))
        );
        assert_ne!(fresh.trace_id, request.trace_id);
        assert_eq!(fresh.parent_span_id, None);
        assert!(request.end >= request.start);
    }
}

//! The `weft.vmbus` span of one VMBus call, the same for every interface:
//! started by [`CallSpan::start`] (a child of the span the instance
//! works for, with `weft.call` and, where the call names one, the
//! `weft.queue` or `weft.bucket` it works on), ended by [`CallSpan::end`]
//! with `weft.outcome` `ok` or the kind of the call's error, each
//! interface naming its errors' kinds through [`CallError`].

use super::context::SpanContext;
use super::span::{AttributeValue, InstanceTrace, OpenSpan, SpanKind};

/// How a VMBus error is named in its call's `weft.outcome`: a short,
/// fixed word (`rate-limited`, `denied`, `bucket-full`...), never the
/// error's text (which may echo what the guest passed).
pub(crate) trait CallError {
    /// The error's kind.
    fn kind(&self) -> &'static str;
}

/// A call's span under way; nothing inside while tracing is off or the
/// instance works for no span, so a call costs one branch then.
#[must_use = "a call's span is recorded only when it ends"]
pub(crate) struct CallSpan(Option<OpenSpan>);

impl CallSpan {
    /// The span of a `call` (`queue.send`, `keyvalue.get`...) the instance
    /// `trace` stands for, starting now. A constructor here, not a method
    /// of [`InstanceTrace`]: `span.rs` then never reaches back into this
    /// module (no import loop).
    pub(crate) fn start(trace: &InstanceTrace, call: &'static str, kind: SpanKind) -> Self {
        CallSpan(trace.start_call(call, kind))
    }

    /// Names what the call works on (`weft.queue`, `weft.bucket`): `name`
    /// is read only while tracing is on.
    pub(crate) fn on(mut self, attribute: &'static str, name: impl FnOnce() -> String) -> Self {
        if let Some(span) = &mut self.0 {
            span.attribute(attribute, AttributeValue::Text(name()));
        }
        self
    }

    /// Its context (what a send puts in its message), if it is recorded.
    pub(crate) fn context(&self) -> Option<SpanContext> {
        self.0.as_ref().map(OpenSpan::context)
    }

    /// Ends it with the call's outcome: `ok`, or its error's kind.
    pub(crate) fn end<R, E: CallError>(self, result: &Result<R, E>) {
        if let Some(span) = self.0 {
            span.finish(None, outcome(result));
        }
    }

    /// Ends it with the outcome of a call that may also trap (a handle the
    /// guest does not own): `trap` then. Returns the result, untouched.
    pub(crate) fn end_trapping<R, E: CallError>(
        self,
        result: wasmtime::Result<Result<R, E>>,
    ) -> wasmtime::Result<Result<R, E>> {
        if let Some(span) = self.0 {
            let outcome = match &result {
                Ok(result) => outcome(result),
                Err(_) => "trap",
            };
            span.finish(None, outcome);
        }
        result
    }
}

fn outcome<R, E: CallError>(result: &Result<R, E>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::span::tests::{current_request, kept_role, text};
    use super::*;

    struct Refused;

    impl CallError for Refused {
        fn kind(&self) -> &'static str {
            "refused"
        }
    }

    #[test]
    fn a_call_span_names_its_call_target_and_outcome_under_the_current_span() {
        let (kept, role) = kept_role();
        let instance = role.instance("req-1");
        // Working for no span: nothing is recorded, and the name is never read.
        CallSpan::start(&instance, "keyvalue.get", SpanKind::Internal)
            .on("weft.bucket", || unreachable!("read while untraced"))
            .end(&Ok::<(), Refused>(()));
        assert!(kept.0.lock().unwrap().is_empty());

        let request = current_request(&role, &instance);
        let set = CallSpan::start(&instance, "keyvalue.set", SpanKind::Internal)
            .on("weft.bucket", || "jobs".into());
        assert!(set.context().is_some());
        set.end(&Err::<(), _>(Refused));
        let open = CallSpan::start(&instance, "keyvalue.open", SpanKind::Internal);
        let trapped: wasmtime::Result<Result<(), Refused>> = Err(wasmtime::format_err!("bad"));
        assert!(open.end_trapping(trapped).is_err());
        CallSpan::start(&instance, "config.get", SpanKind::Internal)
            .end_trapping(Ok(Ok::<(), Refused>(())))
            .unwrap()
            .unwrap_or_else(|_| unreachable!());

        let spans = kept.0.lock().unwrap();
        let found: Vec<_> = spans
            .iter()
            .map(|s| {
                (
                    s.name,
                    text(s, "weft.call"),
                    text(s, "weft.bucket"),
                    text(s, "weft.outcome"),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                (
                    "weft.vmbus",
                    Some("keyvalue.set"),
                    Some("jobs"),
                    Some("refused")
                ),
                ("weft.vmbus", Some("keyvalue.open"), None, Some("trap")),
                ("weft.vmbus", Some("config.get"), None, Some("ok")),
            ]
        );
        assert!(
            spans
                .iter()
                .all(|s| s.parent_span_id == Some(request.context().span_id))
        );
        assert!(spans.iter().all(|s| text(s, "weft.role") == Some("web")));
    }
}

//! Traces: the spans Weft records of its guests' work, in W3C trace
//! context, handed to a sink the host installs.
//!
//! Tracing is off unless the host installs a [`SpanSink`] on the engine
//! ([`crate::Runtime::with_span_sink`]); then every sandbox's tracing state
//! is `None` and each place that would record a span costs one branch.
//! With a sink, the sandbox records three kinds of span, each carrying the
//! attributes `weft.service`, `weft.role`, `weft.instance`, `weft.fuel`
//! (where it is known) and `weft.outcome`:
//!
//! - `weft.request`: one web request, from admission to the guest's end
//!   (its body streamed), in the trace of the request's `traceparent`
//!   header, or a new trace when it has none or an invalid one. Its fuel is
//!   what the request burnt; its outcome the status code, or the failure's
//!   kind (`fuel`, `deadline`...) or the refusal's (`rate`, `capacity`...).
//!   A WASIp3 request's span ends when its response body does (`body` if
//!   that failed after the head) and has no fuel: a WASIp3 instance's fuel
//!   is shared by the requests it serves.
//! - `weft.vmbus`: one VMBus call of any interface (`weft.call`:
//!   `queue.send`, `keyvalue.set`, `config.get`, `usage.get`...; with
//!   `weft.bucket` for a key-value call on an open bucket), a child of the
//!   span the instance works for (its request's, or the delivery it
//!   received last); its outcome is `ok` or the error's kind. Every
//!   interface records it the same way ([`CallSpan`], `call.rs`). A send
//!   carries its own span's `traceparent` in the message
//!   ([`weft_broker::SendOptions::trace_parent`]).
//! - `weft.deliver`: one message a worker received, from `receive` until it
//!   completed (`completed`), abandoned (`abandoned`) or lost its lease
//!   (`lease-lost`, found at the instance's next queue call or its end), a
//!   child of the message's `traceparent`; its fuel is what the instance
//!   burnt meanwhile (the instance's own count, which other deliveries it
//!   handled at the same time share).
//!
//! A `traceparent` comes from clients and guests: [`TraceParent::parse`]
//! checks every field and never panics; anything it refuses starts a new
//! trace. A sink must not block: the guest's host call waits for it.

mod call;
mod context;
mod deliveries;
mod span;

pub(crate) use call::{CallError, CallSpan};
pub use context::{BadTraceParent, SpanContext, SpanId, TraceId, TraceParent};
pub(crate) use deliveries::Deliveries;
/// A sink keeping what it is given, and an attribute's text, for tests.
#[cfg(test)]
pub(crate) use span::tests::{current_request, kept_role, text};
pub use span::{Attribute, AttributeValue, FinishedSpan, SpanKind, SpanSink};
pub(crate) use span::{InstanceTrace, OpenSpan, Parent, RoleTrace};

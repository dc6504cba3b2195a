//! Web roles: a `wasi:http/incoming-handler` (WASIp2) or `wasi:http/handler`
//! (WASIp3, [`p3`]) component, a fresh sandbox per request unless the role
//! reuses its instances.
//!
//! [`WebRole::handle`] takes a hyper request and returns a hyper response.
//! Each request passes the role's admission checks (body size, `Host`, the
//! `http` request rate, a slot among `max-in-flight`, the CPU quota), then
//! gets a sandbox ([`instance`]): a new store from the pre-instantiated
//! component or, with `requests-per-instance` above 1, one of the role's
//! idle instances; either way with the role's full fuel budget, its memory
//! caps and a new deadline; the deadline covers the whole
//! request, including time blocked in host calls and streaming the response
//! body. Request and response bodies pass the role's `http` bytes bucket. A
//! failure ends only this request, with a 5xx and a short reason (and an
//! [`FAILURE_HEADER`] naming the kind of failure), built by [`failure`],
//! which the host uses too for the answers it makes itself.
//!
//! A role that takes no more requests calls [`WebRole::release_idle`]: its
//! idle instances are freed at once and those still serving when they finish,
//! so a draining role is done as soon as its last request is. A version of
//! a role runs its lifecycle hooks in sandboxes of their own ([`hooks`]).
//!
//! With tracing on ([`crate::trace`]), each request is a `weft.request`
//! span, from admission until its guest is done (body streamed), in the
//! trace of its `traceparent` header; the guest's queue calls are its
//! children.

mod failure;
mod hooks;
mod instance;
mod p3;

use crate::body::MeteredBody;
use crate::error::GuestFailure;
use crate::hooks::Hooks;
use crate::limits::SandboxLimits;
use crate::rate_limit::Interface;
use crate::role_version::RoleVersion;
use crate::sandbox::GuestState;
use crate::trace::{AttributeValue, OpenSpan, Parent, SpanKind};
use crate::usage::{Flow, UsageSnapshot};
use bytes::Bytes;
pub use failure::{FAILURE_HEADER, busy_response, failure_response};
use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use instance::{IdleInstances, WebInstance};
pub(crate) use p3::P3Handler;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::InstancePre;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The response type web roles produce.
pub type WebResponse = hyper::Response<HyperOutgoingBody>;

/// What serves a web role's requests: a WASIp2 or a WASIp3 handler.
pub(crate) enum Handler {
    /// `wasi:http/incoming-handler@0.2`: a sandbox per request, or one of
    /// the role's idle instances.
    P2(ProxyPre<GuestState>),
    /// `wasi:http/handler@0.3.0`: requests handed to instances that may
    /// take several ([`p3`]).
    P3(P3Handler),
}

/// A web role ready to serve requests.
pub struct WebRole {
    /// The component, linked: what its lifecycle hooks are instantiated from.
    pub(crate) pre: InstancePre<GuestState>,
    handler: Handler,
    /// The version of the role it serves, shared by all its sandboxes.
    pub(crate) version: Arc<RoleVersion>,
    /// The component's lifecycle hooks, if it exports them ([`crate::hooks`]).
    pub(crate) hooks: Option<Hooks>,
    requests: AtomicU64,
    /// Slots for requests in flight.
    in_flight: Arc<Semaphore>,
    /// Requests waiting for a slot.
    queued: AtomicU32,
    /// Instances waiting to serve another request (none unless the role
    /// reuses instances).
    idle: Arc<IdleInstances>,
}

impl WebRole {
    pub(crate) fn new(
        pre: InstancePre<GuestState>,
        handler: Handler,
        version: Arc<RoleVersion>,
        hooks: Option<Hooks>,
    ) -> Self {
        let slots = usize::try_from(version.limits().max_in_flight).unwrap_or(usize::MAX);
        let slots = slots.min(Semaphore::MAX_PERMITS);
        let in_flight = Arc::new(Semaphore::new(slots));
        let idle = IdleInstances::new(version.limits().requests_per_instance, slots);
        Self {
            in_flight,
            idle: Arc::new(idle),
            pre,
            handler,
            version,
            hooks,
            requests: AtomicU64::new(0),
            queued: AtomicU32::new(0),
        }
    }

    /// The role's limits.
    pub fn limits(&self) -> &SandboxLimits {
        self.version.limits()
    }

    /// What the role has used of the host so far.
    pub fn usage(&self) -> UsageSnapshot {
        self.version.snapshot()
    }

    /// Serves one request in a fresh sandbox, or in one of the role's idle
    /// instances when it reuses them.
    pub async fn handle<B>(&self, request: hyper::Request<B>) -> WebResponse
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let limits = *self.version.limits();
        let mut span = self.request_span(request.headers());
        let max_body = limits.max_request_body_bytes();
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = || {
            failure_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body",
                &format!("request body over the limit of {max_body} bytes"),
            )
        };
        if declared.is_some_and(|len| len > max_body) {
            return refused(span, too_large());
        }
        // wasi:http needs an authority; HTTP/1.1 requires a Host header.
        if request.uri().authority().is_none()
            && !request.headers().contains_key(http::header::HOST)
        {
            let response = failure_response(
                StatusCode::BAD_REQUEST,
                "request",
                "request has no Host header",
            );
            return refused(span, response);
        }
        // A body without a declared length is cut off at the limit; the
        // guest then sees a read error, and the client a 413.
        let overflowed = Arc::new(AtomicBool::new(false));
        let flag = overflowed.clone();
        let limiter = self.version.limiter.clone();
        let usage = self.version.usage.clone();
        let request = request.map(|body| {
            let limit = usize::try_from(max_body).unwrap_or(usize::MAX);
            let limited = Limited::new(body.map_err(Into::into), limit).map_err(move |e| {
                match e.downcast::<wasmtime_wasi_http::Error>() {
                    Ok(inner) => *inner,
                    Err(_) => {
                        flag.store(true, Ordering::Relaxed);
                        wasmtime_wasi_http::Error::HttpRequestBodySize(Some(max_body))
                    }
                }
            });
            MeteredBody::new(limited.boxed_unsync(), limiter, usage, Flow::HttpIn)
        });

        if self
            .version
            .limiter
            .admit(Interface::Http, 0)
            .await
            .is_err()
        {
            let response = busy_response(
                StatusCode::TOO_MANY_REQUESTS,
                "rate",
                "over the role's request rate; retry shortly",
            );
            return refused(span, response);
        }
        let Some(slot) = self.slot(&limits).await else {
            let response = busy_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "capacity",
                "too many requests in flight; retry shortly",
            );
            return refused(span, response);
        };
        let number = self.requests.fetch_add(1, Ordering::Relaxed);
        self.version.usage.add_invocation();
        if let Some(span) = &mut span {
            span.set_attribute(
                "weft.instance",
                AttributeValue::Text(format!("req-{number}")),
            );
        }
        let outcome = self.serve(request, number, slot, &mut span).await;
        // Whatever the guest made of a truncated body, the client learns
        // its body was refused, as long as the response head is not yet out.
        if overflowed.load(Ordering::Relaxed) {
            return refused(span, too_large());
        }
        // A span `serve` did not hand on ends here, without its fuel.
        let ended = match &outcome {
            Ok(response) => Ok(response.status()),
            Err(failure) => Err(failure.kind()),
        };
        finish_request(span, None, ended);
        match outcome {
            Ok(response) => response.map(|body| {
                let (limiter, usage) = (self.version.limiter.clone(), self.version.usage.clone());
                MeteredBody::new(body, limiter, usage, Flow::HttpOut).boxed_unsync()
            }),
            Err(failure) => {
                self.version.usage.add_failure(&failure);
                tracing::warn!(
                    service = %self.version.grants.service,
                    role = %self.version.grants.role,
                    request = number,
                    failure = %failure,
                    "request failed"
                );
                failure::for_guest(&failure)
            }
        }
    }

    /// A `weft.request` span for a request with these headers, in the
    /// trace of its `traceparent` (one, valid) or a new trace; `None`
    /// while tracing is off.
    fn request_span(&self, headers: &http::HeaderMap) -> Option<OpenSpan> {
        if !self.version.trace.is_on() {
            return None;
        }
        let mut values = headers.get_all(TRACEPARENT).iter();
        // Two `traceparent` headers are as good as none.
        let header = match (values.next(), values.next()) {
            (Some(one), None) => one.to_str().ok(),
            _ => None,
        };
        let parent = Parent::Remote(header);
        self.version
            .trace
            .start("weft.request", SpanKind::Server, parent, "-")
    }

    /// Frees the role's idle instances and keeps none from now on: for a
    /// role that takes no new requests (a draining version), so that it
    /// holds no sandbox once its requests in flight are done. A request
    /// still served afterwards runs in a fresh instance, dropped when done.
    /// Returns how many idle instances were freed.
    pub fn release_idle(&self) -> usize {
        match &self.handler {
            Handler::P2(_) => self.idle.release(),
            Handler::P3(p3) => p3.release_idle(),
        }
    }

    /// Whether the role's component is a WASIp3 handler
    /// (`wasi:http/handler@0.3.0`).
    pub fn is_p3(&self) -> bool {
        matches!(self.handler, Handler::P3(_))
    }

    /// How many instances wait for a request now (none unless the role
    /// reuses instances). An instance is back among them, or dropped, only
    /// once its guest's handler has returned: just after the client has
    /// read the response's end, not before.
    pub fn idle_instances(&self) -> usize {
        match &self.handler {
            Handler::P2(_) => self.idle.count(),
            Handler::P3(p3) => p3.idle_instances(),
        }
    }

    /// Creates a sandbox exactly as a request finding no idle instance
    /// does (its store, WASI and HTTP contexts, VMBus state, limits and CPU
    /// account), instantiates the component in it, and drops it: what a
    /// fresh instance costs, apart from any request. Benchmarks measure it;
    /// it takes no slot and counts no request.
    pub async fn instantiate_once(&self) -> Result<(), GuestFailure> {
        let number = self.requests.load(Ordering::Relaxed);
        let pre = match &self.handler {
            Handler::P2(pre) => pre,
            Handler::P3(p3) => return p3.instantiate_once(number).await,
        };
        let mut instance = WebInstance::new(pre, &self.version, number)?;
        let limits = *self.version.limits();
        instance.prepare(&limits, Instant::now() + limits.deadline())?;
        let outcome = instance.instantiate(pre).await;
        instance.finish();
        outcome.map_err(|failed| failed.explain(instance.state(), &limits))
    }

    /// A slot to run in: at once if one is free, else after waiting in a
    /// bounded queue (no longer than the request's deadline); `None` when
    /// the queue is full or the wait too long.
    async fn slot(&self, limits: &SandboxLimits) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.in_flight.clone().try_acquire_owned() {
            return Some(permit);
        }
        // Counted while waiting, and uncounted however the wait ends: hyper
        // drops this future when the client goes away.
        let place = QueuePlace::take(&self.queued);
        if place.ahead >= limits.max_queued {
            return None;
        }
        tokio::time::timeout(limits.deadline(), self.in_flight.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }

    async fn serve<B>(
        &self,
        request: hyper::Request<B>,
        number: u64,
        slot: OwnedSemaphorePermit,
        span: &mut Option<OpenSpan>,
    ) -> Result<WebResponse, GuestFailure>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let version = &self.version;
        let limits = *version.limits();
        let deadline = Instant::now() + limits.deadline();
        // A role over its CPU quota waits here, before it takes a sandbox.
        version.cpu.wait_for_quota(Some(deadline.into())).await;
        let pre = match &self.handler {
            Handler::P2(pre) => pre,
            Handler::P3(p3) => {
                let request = request.map(|body| body.map_err(Into::into).boxed_unsync());
                let current = span.as_ref().map(OpenSpan::context);
                let response = p3.serve(request, number, deadline, slot, current).await?;
                // The guest may go on streaming the body long after its
                // handler returned the head: the span ends with the body.
                let (span, status) = (span.take(), response.status());
                return Ok(response.map(|body| EndsSpan::new(body, span, status).boxed_unsync()));
            }
        };
        let mut instance = match self.idle.take() {
            Some(instance) => instance,
            None => WebInstance::new(pre, version, number)?,
        };
        instance.prepare(&limits, deadline)?;
        // The guest's queue calls hang under this request's span.
        let current = span.as_ref().map(OpenSpan::context);
        let caller = &instance.store_mut().data_mut().vmbus.caller;
        caller.trace.set_current(current);

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let store = instance.store_mut();
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(|e| GuestFailure::Protocol(format!("bad request: {e}")))?;
        let outparam = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(|e| GuestFailure::Instantiate(e.to_string()))?;

        // The guest runs in its own task so it can keep streaming the body
        // after the response head is sent; the deadline bounds all of it.
        let pre = pre.clone();
        let idle = self.idle.clone();
        let task = tokio::spawn(async move {
            let run = instance.run(&pre, incoming, outparam);
            let outcome = match tokio::time::timeout_at(deadline.into(), run).await {
                Ok(Ok(true)) => Ok(()),
                // Dropping the instance (below) drops the sender, so the
                // request ends at once rather than wait on a reused one.
                Ok(Ok(false)) => Err(GuestFailure::Protocol(
                    "guest returned without a response".into(),
                )),
                Ok(Err(failed)) => Err(failed.explain(instance.state(), &limits)),
                Err(_elapsed) => Err(GuestFailure::Deadline(limits.deadline())),
            };
            let fuel_left = instance.store_mut().get_fuel().unwrap_or(0);
            let fuel = limits.fuel.saturating_sub(fuel_left);
            instance.finish();
            if outcome.is_ok() {
                idle.put(instance);
            } else {
                drop(instance);
            }
            // The slot is held until the guest is done, body included, and
            // its instance is back among the idle ones or gone.
            drop(slot);
            (outcome, fuel)
        });

        match receiver.await {
            Ok(Ok(response)) => {
                // The head is out; if the guest fails while streaming the
                // body, the client sees the body cut short and the log says why.
                let version = self.version.clone();
                let (span, status) = (span.take(), response.status());
                tokio::spawn(async move {
                    match task.await {
                        Ok((Err(failure), fuel)) => {
                            version.usage.add_failure(&failure);
                            let grants = &version.grants;
                            tracing::warn!(service = %grants.service, role = %grants.role, request = number, failure = %failure, "request failed after its response began");
                            finish_request(span, Some(fuel), Err(failure.kind()));
                        }
                        Ok((Ok(()), fuel)) => finish_request(span, Some(fuel), Ok(status)),
                        Err(_) => finish_request(span, None, Err("trap")),
                    }
                });
                Ok(response)
            }
            Ok(Err(code)) => Err(GuestFailure::Protocol(format!(
                "guest answered with an error: {}",
                short_code(&code)
            ))),
            // The guest dropped the response outparam without setting it:
            // the task's outcome says why.
            Err(_) => {
                let (outcome, fuel) = match task.await {
                    Ok((Ok(()), fuel)) => (
                        Err(GuestFailure::Protocol(
                            "guest returned without a response".into(),
                        )),
                        Some(fuel),
                    ),
                    Ok((Err(failure), fuel)) => (Err(failure), Some(fuel)),
                    Err(join) => (
                        Err(GuestFailure::Trap(format!(
                            "guest task ended abnormally: {join}"
                        ))),
                        None,
                    ),
                };
                let kind = outcome
                    .as_ref()
                    .err()
                    .map_or("protocol", GuestFailure::kind);
                finish_request(span.take(), fuel, Err(kind));
                outcome
            }
        }
    }
}

/// A request's place among those waiting for a slot, given up on drop.
struct QueuePlace<'a> {
    queued: &'a AtomicU32,
    /// Requests already waiting when this one arrived.
    ahead: u32,
}

impl<'a> QueuePlace<'a> {
    fn take(queued: &'a AtomicU32) -> Self {
        let ahead = queued.fetch_add(1, Ordering::AcqRel);
        Self { queued, ahead }
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The header a request's trace context comes in.
const TRACEPARENT: &str = "traceparent";

/// Ends a request's span, if it has one, with its status or the kind of
/// its failure, and the fuel it burnt if known.
fn finish_request(span: Option<OpenSpan>, fuel: Option<u64>, outcome: Result<StatusCode, &str>) {
    let Some(mut span) = span else {
        return;
    };
    match outcome {
        Ok(status) => {
            let code = AttributeValue::Int(i64::from(status.as_u16()));
            span.attribute("http.response.status_code", code);
            span.finish(fuel, status.as_str());
        }
        Err(kind) => span.finish(fuel, kind),
    }
}

/// A WASIp3 response's body, which ends its request's span when it is done,
/// or dropped (the client gone, or the deadline passed): with its status,
/// or `body` if it failed. The span carries no fuel: a WASIp3 instance's
/// fuel is the store's, shared by the requests it serves.
struct EndsSpan {
    body: HyperOutgoingBody,
    span: Option<OpenSpan>,
    outcome: Result<StatusCode, &'static str>,
}

impl EndsSpan {
    fn new(body: HyperOutgoingBody, span: Option<OpenSpan>, status: StatusCode) -> Self {
        Self {
            body,
            span,
            outcome: Ok(status),
        }
    }
}

impl Body for EndsSpan {
    type Data = Bytes;
    type Error = <HyperOutgoingBody as Body>::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Err(_))) => this.outcome = Err("body"),
            std::task::Poll::Ready(None) => finish_request(this.span.take(), None, this.outcome),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for EndsSpan {
    fn drop(&mut self) {
        finish_request(self.span.take(), None, self.outcome);
    }
}

/// A response the host made instead of the guest: its span ends with its status.
fn refused(span: Option<OpenSpan>, response: WebResponse) -> WebResponse {
    finish_request(span, None, Ok(response.status()));
    response
}

fn short_code(code: &ErrorCode) -> String {
    let text = format!("{code:?}");
    text.chars().take(200).collect()
}

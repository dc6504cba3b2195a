//! Web roles: a `wasi:http/incoming-handler` component, a fresh sandbox per
//! request.
//!
//! [`WebRole::handle`] takes a hyper request and returns a hyper response.
//! Each request gets a new store from the pre-instantiated component, with
//! the role's fuel budget, memory cap and deadline; the deadline covers the
//! whole request, including time blocked in host calls and streaming the
//! response body. A failure ends only this request, with a 5xx and a short
//! reason (and an `x-weft-failure` header naming the kind of failure).

use crate::config::SandboxLimits;
use crate::engine::RoleSpec;
use crate::error::GuestFailure;
use crate::guest_log::GuestTags;
use crate::rate_limit::RoleLimiter;
use crate::sandbox::{Failed, GuestState, new_store};
use crate::vmbus::VmBusCtx;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The response type web roles produce.
pub type WebResponse = hyper::Response<HyperOutgoingBody>;

/// A web role ready to serve requests.
pub struct WebRole {
    pre: ProxyPre<GuestState>,
    spec: RoleSpec,
    grants: Arc<crate::config::Grants>,
    limiter: Arc<RoleLimiter>,
    requests: AtomicU64,
    /// Slots for requests in flight.
    in_flight: Arc<Semaphore>,
    /// Requests waiting for a slot.
    queued: AtomicU32,
}

impl WebRole {
    pub(crate) fn new(pre: ProxyPre<GuestState>, spec: RoleSpec) -> Self {
        let grants = Arc::new(spec.grants.clone());
        let limiter = Arc::new(RoleLimiter::new(&spec.rate_limits));
        let slots = usize::try_from(spec.limits.max_in_flight).unwrap_or(usize::MAX);
        let in_flight = Arc::new(Semaphore::new(slots.min(Semaphore::MAX_PERMITS)));
        Self {
            in_flight,
            pre,
            spec,
            grants,
            limiter,
            requests: AtomicU64::new(0),
            queued: AtomicU32::new(0),
        }
    }

    /// The role's limits.
    pub fn limits(&self) -> &SandboxLimits {
        &self.spec.limits
    }

    /// Serves one request in a fresh sandbox.
    pub async fn handle<B>(&self, request: hyper::Request<B>) -> WebResponse
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let limits = self.spec.limits;
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
            return too_large();
        }
        // wasi:http needs an authority; HTTP/1.1 requires a Host header.
        if request.uri().authority().is_none()
            && !request.headers().contains_key(http::header::HOST)
        {
            return failure_response(
                StatusCode::BAD_REQUEST,
                "request",
                "request has no Host header",
            );
        }
        // A body without a declared length is cut off at the limit; the
        // guest then sees a read error, and the client a 413.
        let overflowed = Arc::new(AtomicBool::new(false));
        let flag = overflowed.clone();
        let request = request.map(|body| {
            let limit = usize::try_from(max_body).unwrap_or(usize::MAX);
            Limited::new(body.map_err(Into::into), limit).map_err(move |e| {
                match e.downcast::<wasmtime_wasi_http::Error>() {
                    Ok(inner) => *inner,
                    Err(_) => {
                        flag.store(true, Ordering::Relaxed);
                        wasmtime_wasi_http::Error::HttpRequestBodySize(Some(max_body))
                    }
                }
            })
        });

        let Some(slot) = self.slot(&limits).await else {
            let mut busy = failure_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "capacity",
                "too many requests in flight; retry shortly",
            );
            busy.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            return busy;
        };
        let number = self.requests.fetch_add(1, Ordering::Relaxed);
        let outcome = self.serve(request, number, slot).await;
        // Whatever the guest made of a truncated body, the client learns
        // its body was refused, as long as the response head is not yet out.
        if overflowed.load(Ordering::Relaxed) {
            return too_large();
        }
        match outcome {
            Ok(response) => response,
            Err(failure) => {
                tracing::warn!(
                    service = %self.grants.service,
                    role = %self.grants.role,
                    request = number,
                    failure = %failure,
                    "request failed"
                );
                let (status, kind) = match &failure {
                    GuestFailure::Deadline(_) => (StatusCode::GATEWAY_TIMEOUT, "deadline"),
                    GuestFailure::OutOfFuel => (StatusCode::INTERNAL_SERVER_ERROR, "fuel"),
                    GuestFailure::MemoryCap(_) => (StatusCode::INTERNAL_SERVER_ERROR, "memory"),
                    GuestFailure::Instantiate(_) => (StatusCode::SERVICE_UNAVAILABLE, "capacity"),
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "trap"),
                };
                failure_response(status, kind, &failure.to_string())
            }
        }
    }

    /// A slot to run in: at once if one is free, else after waiting in a
    /// bounded queue (no longer than the request's deadline); `None` when
    /// the queue is full or the wait too long.
    async fn slot(&self, limits: &SandboxLimits) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.in_flight.clone().try_acquire_owned() {
            return Some(permit);
        }
        let waiting = self.queued.fetch_add(1, Ordering::AcqRel);
        let permit = if waiting < limits.max_queued {
            tokio::time::timeout(limits.deadline(), self.in_flight.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        self.queued.fetch_sub(1, Ordering::AcqRel);
        permit
    }

    async fn serve<B>(
        &self,
        request: hyper::Request<B>,
        number: u64,
        slot: OwnedSemaphorePermit,
    ) -> Result<WebResponse, GuestFailure>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let limits = self.spec.limits;
        let tags = Arc::new(GuestTags {
            service: self.grants.service.clone(),
            role: self.grants.role.clone(),
            instance: format!("req-{number}"),
        });
        let vmbus = VmBusCtx::new(
            self.grants.clone(),
            self.spec.queues.clone(),
            self.spec.kv.clone(),
            self.limiter.clone(),
        );
        let state = GuestState::new(&limits, tags, vmbus)
            .map_err(|e| GuestFailure::Instantiate(e.to_string()))?;
        let mut store = new_store(self.pre.engine(), state, limits.fuel)
            .map_err(|e| GuestFailure::Instantiate(e.to_string()))?;
        let deadline = Instant::now() + limits.deadline();
        store.data_mut().deadline = Some(deadline);

        let (sender, receiver) = tokio::sync::oneshot::channel();
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
        let pre = self.pre.clone();
        let task = tokio::spawn(async move {
            // The slot is held until the guest is done, body included.
            let _slot = slot;
            let run = async {
                let proxy = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(Failed::Instantiating)?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, outparam)
                    .await
                    .map_err(Failed::Running)
            };
            match tokio::time::timeout_at(deadline.into(), run).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(failed)) => Err(failed.explain(store.data(), &limits)),
                Err(_elapsed) => Err(GuestFailure::Deadline(limits.deadline())),
            }
        });

        match receiver.await {
            Ok(Ok(response)) => {
                // The head is out; if the guest fails while streaming the
                // body, the client sees the body cut short and the log says why.
                let grants = self.grants.clone();
                tokio::spawn(async move {
                    if let Ok(Err(failure)) = task.await {
                        tracing::warn!(service = %grants.service, role = %grants.role, request = number, failure = %failure, "request failed after its response began");
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
            Err(_) => match task.await {
                Ok(Ok(())) => Err(GuestFailure::Protocol(
                    "guest returned without a response".into(),
                )),
                Ok(Err(failure)) => Err(failure),
                Err(join) => Err(GuestFailure::Trap(format!(
                    "guest task ended abnormally: {join}"
                ))),
            },
        }
    }
}

fn short_code(code: &ErrorCode) -> String {
    let text = format!("{code:?}");
    text.chars().take(200).collect()
}

/// A plain-text 5xx/4xx produced by the host, not the guest.
fn failure_response(status: StatusCode, kind: &'static str, reason: &str) -> WebResponse {
    let body = Full::new(Bytes::from(format!("weft: {reason}\n")))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("x-weft-failure", HeaderValue::from_static(kind));
    response
}

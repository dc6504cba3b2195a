//! The answers the host makes itself, instead of a guest: a short plain-text
//! reason and an [`FAILURE_HEADER`] naming the kind of failure: a guest's
//! (`deadline`, `fuel`, `memory`, `capacity`, `trap`, see [`for_guest`]) or
//! a refusal's (`body`, `request`, `rate`, `capacity`, and the host's
//! `starting`). Every such answer in Weft, the sandbox's and the host's, is
//! built here, so clients and tests see one shape.

use crate::error::GuestFailure;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// A web role's response (named [`crate::WebResponse`] where the role is);
/// spelled out here so this module needs nothing of its parent.
type WebResponse = hyper::Response<HyperOutgoingBody>;

/// The header naming the kind of failure on an answer the host made.
pub const FAILURE_HEADER: &str = "x-weft-failure";

/// A plain-text answer made by the host, not the guest: `status`, the body
/// `weft: {reason}`, and `x-weft-failure: {kind}`.
pub fn failure_response(status: StatusCode, kind: &'static str, reason: &str) -> WebResponse {
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
    headers.insert(FAILURE_HEADER, HeaderValue::from_static(kind));
    response
}

/// A refusal the client should retry: a [`failure_response`] with
/// `Retry-After: 1`.
pub fn busy_response(status: StatusCode, kind: &'static str, reason: &str) -> WebResponse {
    let mut response = failure_response(status, kind, reason);
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The answer to a request whose guest failed: 504 past the deadline, 503
/// (retry) when there was no capacity for it, 500 otherwise; the header
/// names the failure's kind (`deadline`, `fuel`, `memory`, `capacity`, and
/// `trap` for the rest).
pub(crate) fn for_guest(failure: &GuestFailure) -> WebResponse {
    let (status, kind) = match failure {
        GuestFailure::Deadline(_) => (StatusCode::GATEWAY_TIMEOUT, "deadline"),
        GuestFailure::OutOfFuel => (StatusCode::INTERNAL_SERVER_ERROR, "fuel"),
        GuestFailure::MemoryCap(_) => (StatusCode::INTERNAL_SERVER_ERROR, "memory"),
        // No pool slot or no room in the role's memory: it passes as other
        // requests end.
        GuestFailure::Capacity(_) => {
            return busy_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "capacity",
                &failure.to_string(),
            );
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "trap"),
    };
    failure_response(status, kind, &failure.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_its_kind_and_asks_to_retry() {
        let response = busy_response(StatusCode::SERVICE_UNAVAILABLE, "starting", "wait");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[FAILURE_HEADER], "starting");
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "1");
        let plain = failure_response(StatusCode::GATEWAY_TIMEOUT, "deadline", "too slow");
        assert_eq!(plain.headers()[FAILURE_HEADER], "deadline");
        assert!(!plain.headers().contains_key(http::header::RETRY_AFTER));
    }
}

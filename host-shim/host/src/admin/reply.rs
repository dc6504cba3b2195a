//! How the admin address answers: JSON and text bodies, errors on one line,
//! the 401s with their `WWW-Authenticate`, and the security headers every
//! answer carries ([`secured`]), put on once where an answer leaves
//! `admin::answer`, whatever route made it.
//!
//! The headers: `X-Content-Type-Options: nosniff` (a JSON or text body is
//! never run as script or read as a page), `Cache-Control: no-store` (no
//! status, value or page is kept by a browser or proxy), no framing
//! (`X-Frame-Options: DENY` and `frame-ancestors 'none'`), and a content
//! security policy: the dashboard's pages may load only the address's own
//! files, with no inline script or style; any other answer may load
//! nothing at all.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// Every answer of the admin address.
pub(super) type Reply = Response<Full<Bytes>>;

/// The dashboard's pages: only the address's own files; no inline script
/// or style, no framing, forms posted only back here.
pub(super) const PAGE_CSP: &str =
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// Every other answer: nothing to load, no framing.
pub(super) const DATA_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// `reply` with the headers every admin answer carries.
pub(super) fn secured(mut reply: Reply) -> Reply {
    let page = reply
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    let headers = reply.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(if page { PAGE_CSP } else { DATA_CSP }),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: under it a browser sends `Origin: null` with the
    // sign-in form's POST (Fetch, "serializing a request origin"), which
    // the origin check must refuse. `same-origin` still sends no referrer
    // to any other site.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    reply
}

/// 401 for a `/v1` request without the token or a session.
pub(super) fn unauthorized() -> Reply {
    let mut reply = error(
        StatusCode::UNAUTHORIZED,
        "a valid admin token is required (Authorization: Bearer TOKEN)",
    );
    reply
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    reply
}

/// `value` as JSON with `status` (500 if it cannot be written).
pub(super) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Reply {
    match serde_json::to_string(value) {
        Ok(body) => text(status, "application/json", body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `{"error": "..."}` with `status`, the message on one line.
pub(super) fn error(status: StatusCode, message: &str) -> Reply {
    let one_line = message.replace('\n', " ");
    let body = serde_json::json!({ "error": one_line }).to_string();
    text(status, "application/json", body)
}

/// `body` as `content_type` with `status`.
pub(super) fn text(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_may_load_their_own_files_and_everything_else_nothing() {
        let page = secured(text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<p>".into(),
        ));
        let data = secured(json(StatusCode::OK, &serde_json::json!({ "a": 1 })));
        let bytes = secured(text(StatusCode::OK, "application/octet-stream", "x".into()));
        let bare = secured(Reply::new(Full::new(Bytes::new())));
        assert_eq!(page.headers()[header::CONTENT_SECURITY_POLICY], PAGE_CSP);
        for reply in [&data, &bytes, &bare] {
            assert_eq!(reply.headers()[header::CONTENT_SECURITY_POLICY], DATA_CSP);
        }
        for reply in [&page, &data, &bytes, &bare] {
            let headers = reply.headers();
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
            let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        }
    }

    #[tokio::test]
    async fn an_error_is_one_line_of_json_and_a_401_names_its_scheme() {
        use http_body_util::BodyExt as _;
        let reply = error(StatusCode::BAD_REQUEST, "two\nlines");
        assert_eq!(reply.headers()[header::CONTENT_TYPE], "application/json");
        let body = reply.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"error":"two lines"}"#);
        let refused = unauthorized();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(refused.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}

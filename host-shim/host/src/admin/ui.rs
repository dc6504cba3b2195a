//! The dashboard, served at `/ui` on the admin address: a sign-in page, one
//! page of plain HTML, a few ES modules and a style sheet, embedded in the
//! binary (`admin/ui/`), no build step. The page reads and changes
//! everything through the `/v1` API with its session cookie and CSRF token
//! ([`super::session`]); this module only serves the files and the session.
//!
//! | Path | Without a session | With one |
//! |---|---|---|
//! | `GET /ui` | the sign-in page | the dashboard |
//! | `GET /ui/signin`, `GET /ui/app.css` | the file | the file |
//! | `GET /ui/NAME.js` (each of [`SCRIPTS`]) | 401 | the module |
//! | `GET /ui/session` | 401 | `{"csrf": "..."}` |
//! | `POST /ui/session` (form `token=...`) | 303 to `/ui` with the cookie (ending the browser's old session), or the sign-in page with the error | the same |
//! | `POST /ui/signout` (with `X-Weft-Csrf`) | 303 to `/ui` | ends the session, 303 to `/ui` |
//! | anything else under `/ui` | 401 | 404 |
//!
//! Each 401 is the sign-in page with `WWW-Authenticate` naming the cookie
//! and the form that gives it. Every answer also carries the headers of
//! [`super::reply::secured`]: no framing, no caching, and a content security
//! policy that allows only the address's own files, no inline script or
//! style, so text from the API that the page shows can never run.

use super::session::{self, Admission, CLEAR_COOKIE, SignInError};
use super::{Admin, ApiError, Reply, error, json, read_body, text};
use crate::lingering::LingeringBody;
use http::{HeaderValue, Method, StatusCode, header};
use std::time::Instant;

/// The dashboard's page.
const INDEX: &str = include_str!("ui/index.html");
/// The sign-in page; `<!--error-->` marks where an error goes.
const SIGN_IN: &str = include_str!("ui/signin.html");
/// The page's ES modules, by path: `app.js` is the one the page loads, and
/// it imports the others.
const SCRIPTS: [(&str, &str); 7] = [
    ("/ui/app.js", include_str!("ui/app.js")),
    ("/ui/api.js", include_str!("ui/api.js")),
    ("/ui/dom.js", include_str!("ui/dom.js")),
    ("/ui/render.js", include_str!("ui/render.js")),
    ("/ui/stores.js", include_str!("ui/stores.js")),
    ("/ui/charts.js", include_str!("ui/charts.js")),
    ("/ui/actions.js", include_str!("ui/actions.js")),
];
/// The style sheet of both pages.
const APP_CSS: &str = include_str!("ui/app.css");
/// The largest sign-in form read: a token is far shorter.
const MAX_FORM_BYTES: usize = 4096;
/// The challenge of a 401 under `/ui`: a session cookie, which the form at
/// `/ui/session` gives (the form of the expired cookie-scheme draft, as no
/// standard scheme names a cookie).
const CHALLENGE: &str =
    "Cookie realm=\"weft dashboard\", form-action=\"/ui/session\", cookie-name=\"weft_session\"";
/// The answer under `weft serve`, which has no API to show.
const NO_DASHBOARD: &str = "weft serve has no dashboard; run services with weft up or weft host";

/// Whether `path` is the dashboard's.
pub fn is_ui(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// The dashboard's paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    Index,
    SignIn,
    /// One of [`SCRIPTS`], its text.
    Script(&'static str),
    Style,
    Session,
    SignOut,
}

impl Page {
    fn of(path: &str) -> Option<Self> {
        Some(match path {
            "/ui" | "/ui/" => Page::Index,
            "/ui/signin" => Page::SignIn,
            "/ui/app.css" => Page::Style,
            "/ui/session" => Page::Session,
            "/ui/signout" => Page::SignOut,
            _ => {
                let (_, script) = SCRIPTS.iter().find(|(at, _)| *at == path)?;
                Page::Script(script)
            }
        })
    }

    /// The methods it answers.
    fn allowed(self) -> &'static str {
        match self {
            Page::Session => "GET, HEAD, POST",
            Page::SignOut => "POST",
            _ => "GET, HEAD",
        }
    }
}

/// Answers a request for a dashboard path.
pub async fn answer(admin: &Admin, request: http::Request<LingeringBody>) -> Reply {
    route(admin, request, Instant::now()).await
}

async fn route(admin: &Admin, request: http::Request<LingeringBody>, now: Instant) -> Reply {
    if admin.controller.is_none() || admin.token.is_none() {
        return error(StatusCode::NOT_FOUND, NO_DASHBOARD);
    }
    let method = request.method().clone();
    let page = Page::of(request.uri().path());
    let reads = method == Method::GET || method == Method::HEAD;
    // Marks the session used: a page open and polling keeps it alive.
    let csrf = admin.sessions.csrf(request.headers(), now);
    match (page, csrf) {
        (Some(Page::Style), _) if reads => asset("text/css; charset=utf-8", APP_CSS),
        (Some(Page::SignIn), _) if reads => sign_in_page(StatusCode::OK, None),
        (Some(Page::Index), Some(_)) if reads => asset("text/html; charset=utf-8", INDEX),
        (Some(Page::Index), None) if reads => sign_in_page(StatusCode::OK, None),
        (Some(Page::Script(script)), Some(_)) if reads => {
            asset("text/javascript; charset=utf-8", script)
        }
        (Some(Page::Session), Some(csrf)) if reads => {
            json(StatusCode::OK, &serde_json::json!({ "csrf": csrf }))
        }
        (Some(Page::Session), _) if method == Method::POST => sign_in(admin, request, now).await,
        (Some(Page::SignOut), _) if method == Method::POST => sign_out(admin, &request, now),
        (Some(Page::Script(_) | Page::Session), None) if reads => signed_out(),
        (Some(page), _) => {
            let mut reply = error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("use {}", page.allowed()),
            );
            reply
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(page.allowed()));
            reply
        }
        (None, Some(_)) => error(StatusCode::NOT_FOUND, "no such page; the dashboard is /ui"),
        (None, None) => signed_out(),
    }
}

/// The sign-in form's answer: a session and `303 → /ui`, or the sign-in
/// page saying why not.
async fn sign_in(admin: &Admin, request: http::Request<LingeringBody>, now: Instant) -> Reply {
    if !session::same_origin(request.headers()) {
        return sign_in_page(
            StatusCode::FORBIDDEN,
            Some("this sign-in comes from another origin"),
        );
    }
    let headers = request.headers().clone();
    let body = match read_body(request, MAX_FORM_BYTES).await {
        Ok(body) => body,
        Err(e) => return sign_in_page(body_problem(&e), Some(&e.to_string())),
    };
    let presented = form_value(&body, "token").unwrap_or_default();
    match admin
        .sessions
        .sign_in(admin.token.as_ref(), &presented, &headers, now)
    {
        Ok(signed_in) => {
            tracing::info!(replaced = signed_in.replaced, "a dashboard session began");
            let mut reply = see_ui();
            if let Ok(cookie) = HeaderValue::from_str(&session::set_cookie(&signed_in.id)) {
                reply.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            reply
        }
        Err(e @ SignInError::WrongToken) => {
            tracing::warn!("a dashboard sign-in with a wrong token was refused");
            sign_in_page(StatusCode::UNAUTHORIZED, Some(&e.to_string()))
        }
        Err(e @ SignInError::TooMany) => {
            let mut reply = sign_in_page(StatusCode::TOO_MANY_REQUESTS, Some(&e.to_string()));
            reply
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            reply
        }
        Err(e) => sign_in_page(StatusCode::NOT_FOUND, Some(&e.to_string())),
    }
}

/// The status of a sign-in form that could not be read: 413 if it is over
/// [`MAX_FORM_BYTES`], else 400 (cut as too slow, or not HTTP).
fn body_problem(e: &ApiError) -> StatusCode {
    match e {
        ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Ends the request's session (it must show the session's CSRF token, so
/// another site cannot sign a person out) and sends the browser to the
/// sign-in page, its cookie cleared.
fn sign_out(admin: &Admin, request: &http::Request<LingeringBody>, now: Instant) -> Reply {
    let headers = request.headers();
    match admin
        .sessions
        .admit(admin.token.as_ref(), &Method::POST, headers, now)
    {
        Admission::Forbidden(why) => return error(StatusCode::FORBIDDEN, why),
        Admission::Session => {
            if admin.sessions.sign_out(headers) {
                tracing::info!("a dashboard session ended");
            }
        }
        Admission::Bearer | Admission::Unauthorized => {}
    }
    let mut reply = see_ui();
    reply
        .headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_static(CLEAR_COOKIE));
    reply
}

/// `303 See Other` to `/ui`.
fn see_ui() -> Reply {
    let mut reply = text(StatusCode::SEE_OTHER, "text/plain", String::new());
    reply
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/ui"));
    reply
}

/// 401 for what only a session may read: the sign-in page.
fn signed_out() -> Reply {
    sign_in_page(
        StatusCode::UNAUTHORIZED,
        Some("sign in first: this part of the dashboard needs a session"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Reply {
    text(StatusCode::OK, content_type, body.to_owned())
}

/// The sign-in page with `status`, saying `problem` if there is one; a 401
/// with its challenge.
fn sign_in_page(status: StatusCode, problem: Option<&str>) -> Reply {
    let mut reply = text(status, "text/html; charset=utf-8", sign_in_html(problem));
    if status == StatusCode::UNAUTHORIZED {
        reply.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(CHALLENGE),
        );
    }
    reply
}

fn sign_in_html(problem: Option<&str>) -> String {
    SIGN_IN.replace("<!--error-->", &escape_html(problem.unwrap_or("")))
}

/// Text made safe to put between HTML tags.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The value of field `key` in an `application/x-www-form-urlencoded`
/// body, as a browser encodes it (bytes that are not UTF-8 once decoded
/// become U+FFFD, so such a token never matches).
fn form_value(body: &[u8], key: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests;

//! The dashboard's sessions: a person signs in once with the admin token and
//! the browser keeps a session cookie instead of the token.
//!
//! - A session id is 32 random bytes, hex, sent as
//!   `weft_session=ID; HttpOnly; SameSite=Strict; Path=/`. It carries no
//!   `Secure` flag: the admin address is plain HTTP (on loopback unless an
//!   operator names another address), where a browser would never send a
//!   `Secure` cookie back. An operator exposing the admin address beyond
//!   the machine puts it behind TLS, as the README says.
//! - Sessions live in the host's memory only (a restart signs everyone
//!   out), keyed by the SHA-256 of their id, so a lookup's timing says
//!   nothing about a valid id. One idle for [`IDLE_EXPIRY`] is gone, and
//!   so is one [`MAX_LIFETIME`] old however much it is used (a stolen
//!   cookie does not live forever on a page left polling); at most
//!   [`MAX_SESSIONS`] are kept, the least recently used evicted first.
//!   Signing in from a browser that already has a session ends that one.
//! - With a valid cookie a `/v1` route is admitted as with the bearer
//!   token, except that a method other than GET or HEAD must also carry
//!   [`CSRF_HEADER`] equal to the session's own CSRF token (which only a
//!   page of the admin address's own origin can read, from `GET
//!   /ui/session`) and, when the browser sends `Origin`, an origin equal to
//!   `http://HOST` for the request's own `Host`. `SameSite=Strict` already
//!   keeps the cookie off cross-site requests; the header and the origin
//!   check make a forged request fail even where a browser got that wrong.
//! - Sign-in attempts share one token bucket per host, [`SIGN_INS_PER_SECOND`]
//!   a second, so a sign-in loop costs the host little CPU and cannot flood
//!   its log. The bucket does not stop guessing: the bearer check on every
//!   `/v1` request is a second way to try tokens, and it is deliberately not
//!   rate limited, since a limit there would let anyone on the address lock
//!   the operators out. What protects the token is its length: a generated
//!   one is 256 random bits, far past any guessing; one an operator chooses
//!   must have at least 16 characters and should be much longer (a random
//!   32 bytes, hex, as the generated one is). An attempt over the rate is
//!   refused without looking at its token, so the bucket is no oracle.
//! - A browser sends a cookie to every port of its host name, so the web
//!   roles' listeners take the session cookie out of each request, and out
//!   of each guest's `Set-Cookie`, before it crosses ([`crate::session_cookie`]).
//!   A guest's page on the same host name is same-site with the dashboard,
//!   which is why a change needs the CSRF header (a cross-origin page cannot
//!   send it without a CORS preflight the admin address never grants) and a
//!   matching `Origin`.

use super::auth::{Token, same_bytes};
use http::{HeaderMap, Method, header};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use weft_sandbox::rate_limit::TokenBucket;

pub use crate::session_cookie::COOKIE;
/// The header a changing request must carry with its session's CSRF token.
pub const CSRF_HEADER: &str = "x-weft-csrf";
/// How long a session lasts without a request.
pub const IDLE_EXPIRY: Duration = Duration::from_secs(12 * 60 * 60);
/// How long a session lasts from its sign-in, however much it is used.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// The most sessions kept at once; the least recently used goes first.
pub const MAX_SESSIONS: usize = 64;
/// Sign-in attempts a host answers per second (with a burst of as many).
pub const SIGN_INS_PER_SECOND: u64 = 5;

/// Why a sign-in failed. Each message is one line, shown on the sign-in page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignInError {
    /// The token presented is not the admin token.
    #[error("that is not this host's admin token")]
    WrongToken,
    /// Over [`SIGN_INS_PER_SECOND`]; the token was not looked at.
    #[error("too many sign-in attempts; wait a second and try again")]
    TooMany,
    /// The host has no admin token, so no API and nothing to sign in to.
    #[error("this host has no admin API to sign in to")]
    NoToken,
}

/// A new session. Its CSRF token is the page's to ask for
/// ([`Sessions::csrf`]), never in the sign-in's answer.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The session id, 64 hex digits, for the cookie.
    pub id: String,
    /// Whether it ended a session the browser had.
    pub replaced: bool,
}

/// How a request to a `/v1` route stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It carries the admin token.
    Bearer,
    /// It carries a valid session cookie (and, if it changes something, its
    /// CSRF token from the right origin).
    Session,
    /// It carries a valid session cookie but changes something without the
    /// session's CSRF token, or from another origin (403).
    Forbidden(&'static str),
    /// Neither a token nor a session (401).
    Unauthorized,
}

impl Admission {
    /// Whether the request may go on.
    pub fn admitted(self) -> bool {
        matches!(self, Admission::Bearer | Admission::Session)
    }
}

struct Session {
    /// The SHA-256 of its CSRF token, compared without stopping early.
    csrf_digest: [u8; 32],
    /// Its CSRF token, for `GET /ui/session`.
    csrf: String,
    signed_in_at: Instant,
    last_seen: Instant,
}

#[derive(Default)]
struct Kept {
    sessions: HashMap<[u8; 32], Session>,
    /// Made at the first attempt (a bucket needs a start time).
    sign_ins: Option<TokenBucket>,
}

/// The sessions of one admin address.
#[derive(Default)]
pub struct Sessions {
    kept: Mutex<Kept>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Signs in with `presented` against `expected` at `now`: a new session,
    /// ending the one the request's `headers` carry a cookie of, and the
    /// least recently used one evicted if [`MAX_SESSIONS`] are kept.
    pub fn sign_in(
        &self,
        expected: Option<&Token>,
        presented: &str,
        headers: &HeaderMap,
        now: Instant,
    ) -> Result<SignedIn, SignInError> {
        let expected = expected.ok_or(SignInError::NoToken)?;
        let mut kept = self.lock();
        if kept.sign_ins.is_none() {
            kept.sign_ins = TokenBucket::new(SIGN_INS_PER_SECOND, Duration::from_secs(1), 0, now);
        }
        if let Some(bucket) = kept.sign_ins.as_mut()
            && bucket.reduce(1, now).is_err()
        {
            return Err(SignInError::TooMany);
        }
        if !expected.matches(presented) {
            return Err(SignInError::WrongToken);
        }
        expire(&mut kept.sessions, now);
        let mut replaced = false;
        for key in session_ids(headers).map(digest) {
            replaced |= kept.sessions.remove(&key).is_some();
        }
        while kept.sessions.len() >= MAX_SESSIONS {
            let oldest = kept
                .sessions
                .iter()
                .min_by_key(|(_, session)| session.last_seen)
                .map(|(key, _)| *key);
            match oldest {
                Some(key) => kept.sessions.remove(&key),
                None => break,
            };
        }
        let (id, csrf) = (random_hex(), random_hex());
        kept.sessions.insert(
            digest(&id),
            Session {
                csrf_digest: digest(&csrf),
                csrf,
                signed_in_at: now,
                last_seen: now,
            },
        );
        Ok(SignedIn { id, replaced })
    }

    /// The CSRF token of the valid session whose cookie `headers` carry,
    /// marking it used at `now`.
    pub fn csrf(&self, headers: &HeaderMap, now: Instant) -> Option<String> {
        let mut kept = self.lock();
        expire(&mut kept.sessions, now);
        let session = find(&mut kept.sessions, headers)?;
        session.last_seen = now;
        Some(session.csrf.clone())
    }

    /// How a request with `method` and `headers` stands at `now`: the bearer
    /// token first, then the session cookie (marking the session used).
    pub fn admit(
        &self,
        token: Option<&Token>,
        method: &Method,
        headers: &HeaderMap,
        now: Instant,
    ) -> Admission {
        if token.is_some_and(|token| token.admits(headers.get(header::AUTHORIZATION))) {
            return Admission::Bearer;
        }
        if token.is_none() {
            return Admission::Unauthorized;
        }
        let mut kept = self.lock();
        expire(&mut kept.sessions, now);
        let Some(session) = find(&mut kept.sessions, headers) else {
            return Admission::Unauthorized;
        };
        session.last_seen = now;
        if *method == Method::GET || *method == Method::HEAD {
            return Admission::Session;
        }
        let presented = headers
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        let pairs = digest(presented).into_iter().zip(session.csrf_digest);
        if !same_bytes(pairs) {
            return Admission::Forbidden(
                "this change needs the session's X-Weft-Csrf header; reload the dashboard",
            );
        }
        if !same_origin(headers) {
            return Admission::Forbidden("this change comes from another origin");
        }
        Admission::Session
    }

    /// Ends the session whose cookie `headers` carry; whether there was one.
    pub fn sign_out(&self, headers: &HeaderMap) -> bool {
        let mut kept = self.lock();
        let keys: Vec<[u8; 32]> = session_ids(headers).map(digest).collect();
        keys.iter().any(|key| kept.sessions.remove(key).is_some())
    }
}

/// The `Set-Cookie` value that gives the browser session `id`.
pub fn set_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/")
}

/// The `Set-Cookie` value that makes the browser forget its session.
pub const CLEAR_COOKIE: &str = "weft_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0";

/// Whether a request's `Origin`, if it has one, is `http://HOST` for its own
/// `Host` header (the admin address as the browser reached it).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => origin
            .strip_prefix("http://")
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host)),
        _ => false,
    }
}

/// Every `weft_session` value in the request's `Cookie` headers.
fn session_ids(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, id)| id.trim())
        .filter(|id| !id.is_empty())
}

/// The session whose cookie `headers` carry, if it is kept.
fn find<'a>(
    sessions: &'a mut HashMap<[u8; 32], Session>,
    headers: &HeaderMap,
) -> Option<&'a mut Session> {
    let key = session_ids(headers)
        .map(digest)
        .find(|key| sessions.contains_key(key))?;
    sessions.get_mut(&key)
}

/// Forgets sessions idle for [`IDLE_EXPIRY`] or older than [`MAX_LIFETIME`].
fn expire(sessions: &mut HashMap<[u8; 32], Session>, now: Instant) {
    sessions.retain(|_, session| {
        now.saturating_duration_since(session.last_seen) < IDLE_EXPIRY
            && now.saturating_duration_since(session.signed_in_at) < MAX_LIFETIME
    });
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// 32 random bytes as 64 hex digits.
fn random_hex() -> String {
    crate::hex::hex(&rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests;

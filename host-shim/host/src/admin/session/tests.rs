//! The dashboard sessions' tests: sign-in, CSRF and origin, idle and
//! absolute expiry, a second sign-in, eviction and the sign-in rate.

use super::*;
use http::HeaderValue;

const SECRET: &str = "dashboard-test-token-0123456789";

fn token() -> Token {
    Token::new(SECRET).unwrap()
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn cookie(id: &str) -> String {
    format!("other=1; {COOKIE}={id}")
}

/// The CSRF token of session `id` at `now`, if it is alive.
fn csrf_of(sessions: &Sessions, id: &str, now: Instant) -> Option<String> {
    sessions.csrf(&headers(&[("cookie", &cookie(id))]), now)
}

/// Sessions kept now (expired ones included until the next look).
fn count(sessions: &Sessions) -> usize {
    sessions.lock().sessions.len()
}

#[test]
fn a_good_token_opens_a_session_of_random_hex_and_a_wrong_one_does_not() {
    let sessions = Sessions::default();
    let now = Instant::now();
    let first = sessions
        .sign_in(Some(&token()), SECRET, &HeaderMap::new(), now)
        .unwrap();
    let second = sessions
        .sign_in(Some(&token()), SECRET, &HeaderMap::new(), now)
        .unwrap();
    let first_csrf = csrf_of(&sessions, &first.id, now).unwrap();
    assert!(!first.replaced && !second.replaced);
    for id in [&first.id, &first_csrf, &second.id] {
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    assert_ne!(first.id, second.id);
    assert_ne!(first.id, first_csrf);
    assert_eq!(
        sessions
            .sign_in(
                Some(&token()),
                "not-the-token-at-all",
                &HeaderMap::new(),
                now
            )
            .unwrap_err(),
        SignInError::WrongToken
    );
    assert_eq!(
        sessions
            .sign_in(None, SECRET, &HeaderMap::new(), now)
            .unwrap_err(),
        SignInError::NoToken
    );
    assert_eq!(count(&sessions), 2);
    let cookie = set_cookie(&first.id);
    assert_eq!(
        cookie,
        format!(
            "weft_session={}; HttpOnly; SameSite=Strict; Path=/",
            first.id
        )
    );
    let got = sessions.csrf(&headers(&[("cookie", &cookie_of(&cookie))]), now);
    assert_eq!(got.as_deref(), Some(first_csrf.as_str()));
}

/// The `name=value` a browser sends back for a `Set-Cookie` value.
fn cookie_of(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[test]
fn a_session_reads_freely_but_changes_only_with_its_csrf_token_from_its_origin() {
    let sessions = Sessions::default();
    let now = Instant::now();
    let token = token();
    let id = sessions
        .sign_in(Some(&token), SECRET, &HeaderMap::new(), now)
        .unwrap()
        .id;
    let csrf = csrf_of(&sessions, &id, now).unwrap();
    let admit = |method: Method, pairs: &[(&'static str, &str)]| {
        sessions.admit(Some(&token), &method, &headers(pairs), now)
    };
    let with = cookie(&id);
    assert_eq!(admit(Method::GET, &[("cookie", &with)]), Admission::Session);
    assert_eq!(
        admit(Method::HEAD, &[("cookie", &with)]),
        Admission::Session
    );
    assert!(matches!(
        admit(Method::PUT, &[("cookie", &with)]),
        Admission::Forbidden(_)
    ));
    assert!(matches!(
        admit(
            Method::POST,
            &[("cookie", &with), (CSRF_HEADER, "0".repeat(64).as_str())]
        ),
        Admission::Forbidden(_)
    ));
    let host = ("host", "127.0.0.1:7070");
    assert_eq!(
        admit(
            Method::PUT,
            &[("cookie", &with), (CSRF_HEADER, &csrf), host]
        ),
        Admission::Session
    );
    assert_eq!(
        admit(
            Method::DELETE,
            &[
                ("cookie", &with),
                (CSRF_HEADER, &csrf),
                host,
                ("origin", "http://127.0.0.1:7070")
            ]
        ),
        Admission::Session
    );
    for foreign in [
        "http://evil.example",
        "https://127.0.0.1:7070",
        "http://127.0.0.1:7071",
        "null",
    ] {
        assert_eq!(
            admit(
                Method::PUT,
                &[
                    ("cookie", &with),
                    (CSRF_HEADER, &csrf),
                    host,
                    ("origin", foreign)
                ]
            ),
            Admission::Forbidden("this change comes from another origin"),
            "{foreign}"
        );
    }
    // Another session's CSRF token is no good.
    let other = sessions
        .sign_in(Some(&token), SECRET, &HeaderMap::new(), now)
        .unwrap();
    let other_csrf = csrf_of(&sessions, &other.id, now).unwrap();
    assert!(matches!(
        admit(
            Method::PUT,
            &[("cookie", &with), (CSRF_HEADER, &other_csrf)]
        ),
        Admission::Forbidden(_)
    ));
    // No cookie, an unknown one, or a CSRF token alone: not signed in.
    assert_eq!(admit(Method::GET, &[]), Admission::Unauthorized);
    assert_eq!(
        admit(Method::GET, &[("cookie", &cookie(&"ab".repeat(32)))]),
        Admission::Unauthorized
    );
    assert_eq!(
        admit(Method::PUT, &[(CSRF_HEADER, &csrf)]),
        Admission::Unauthorized
    );
    // The bearer token keeps working, needing neither cookie nor CSRF.
    let bearer = format!("Bearer {SECRET}");
    assert_eq!(
        admit(Method::PUT, &[("authorization", &bearer)]),
        Admission::Bearer
    );
    // A host without a token admits nothing, whatever the cookie.
    assert_eq!(
        sessions.admit(None, &Method::GET, &headers(&[("cookie", &with)]), now),
        Admission::Unauthorized
    );
}

#[test]
fn a_session_idle_for_twelve_hours_is_gone_and_use_keeps_it() {
    let sessions = Sessions::default();
    let start = Instant::now();
    let token = token();
    let kept = sessions
        .sign_in(Some(&token), SECRET, &HeaderMap::new(), start)
        .unwrap();
    let idle = sessions
        .sign_in(Some(&token), SECRET, &HeaderMap::new(), start)
        .unwrap();
    let get = |id: &str, at: Instant| {
        sessions.admit(
            Some(&token),
            &Method::GET,
            &headers(&[("cookie", &cookie(id))]),
            at,
        )
    };
    let almost = start + IDLE_EXPIRY - Duration::from_secs(1);
    assert_eq!(get(&kept.id, almost), Admission::Session);
    let later = start + IDLE_EXPIRY;
    assert_eq!(get(&idle.id, later), Admission::Unauthorized);
    // The one used an hour before its expiry lives on.
    assert_eq!(get(&kept.id, later), Admission::Session);
    assert_eq!(count(&sessions), 1);
    let much_later = later + IDLE_EXPIRY;
    assert!(
        sessions
            .csrf(&headers(&[("cookie", &cookie(&kept.id))]), much_later)
            .is_none()
    );
    assert_eq!(count(&sessions), 0);
}

#[test]
fn past_the_most_sessions_the_least_recently_used_is_evicted() {
    let sessions = Sessions::default();
    let token = token();
    let start = Instant::now();
    let mut ids = Vec::new();
    for i in 0..MAX_SESSIONS {
        // Spread over time so the bucket never binds.
        let at = start + Duration::from_secs(u64::try_from(i).unwrap());
        ids.push(
            sessions
                .sign_in(Some(&token), SECRET, &HeaderMap::new(), at)
                .unwrap()
                .id,
        );
    }
    let now = start + Duration::from_secs(1000);
    // The oldest is used now, so the second oldest is the one to go.
    let used = sessions.csrf(&headers(&[("cookie", &cookie(&ids[0]))]), now);
    assert!(used.is_some());
    let newest = sessions
        .sign_in(Some(&token), SECRET, &HeaderMap::new(), now)
        .unwrap();
    assert_eq!(count(&sessions), MAX_SESSIONS);
    let alive = |id: &str| {
        sessions
            .csrf(&headers(&[("cookie", &cookie(id))]), now)
            .is_some()
    };
    assert!(!alive(&ids[1]));
    assert!(alive(&ids[0]));
    assert!(alive(&ids[2]));
    assert!(alive(&ids[MAX_SESSIONS - 1]));
    assert!(alive(&newest.id));
}

#[test]
fn sign_in_attempts_over_the_rate_are_refused_unchecked_and_the_rate_recovers() {
    let sessions = Sessions::default();
    let token = token();
    let now = Instant::now();
    let rate = usize::try_from(SIGN_INS_PER_SECOND).unwrap();
    for _ in 0..rate {
        assert_eq!(
            sessions
                .sign_in(
                    Some(&token),
                    "a-wrong-guess-of-the-token",
                    &HeaderMap::new(),
                    now
                )
                .unwrap_err(),
            SignInError::WrongToken
        );
    }
    // Over the rate even the right token is refused without a look.
    assert_eq!(
        sessions
            .sign_in(Some(&token), SECRET, &HeaderMap::new(), now)
            .unwrap_err(),
        SignInError::TooMany
    );
    assert_eq!(count(&sessions), 0);
    // A signed-in session and the bearer token are not held up by it.
    let bearer = format!("Bearer {SECRET}");
    assert_eq!(
        sessions.admit(
            Some(&token),
            &Method::GET,
            &headers(&[("authorization", &bearer)]),
            now
        ),
        Admission::Bearer
    );
    let later = now + Duration::from_secs(1);
    let signed = sessions
        .sign_in(Some(&token), SECRET, &HeaderMap::new(), later)
        .unwrap();
    assert_eq!(
        sessions.admit(
            Some(&token),
            &Method::GET,
            &headers(&[("cookie", &cookie(&signed.id))]),
            later
        ),
        Admission::Session
    );
}

#[test]
fn signing_out_ends_the_session_and_only_that_one() {
    let sessions = Sessions::default();
    let token = token();
    let now = Instant::now();
    let leaving = sessions
        .sign_in(Some(&token), SECRET, &HeaderMap::new(), now)
        .unwrap();
    let staying = sessions
        .sign_in(Some(&token), SECRET, &HeaderMap::new(), now)
        .unwrap();
    assert!(sessions.sign_out(&headers(&[("cookie", &cookie(&leaving.id))])));
    assert!(!sessions.sign_out(&headers(&[("cookie", &cookie(&leaving.id))])));
    assert!(
        sessions
            .csrf(&headers(&[("cookie", &cookie(&leaving.id))]), now)
            .is_none()
    );
    assert!(
        sessions
            .csrf(&headers(&[("cookie", &cookie(&staying.id))]), now)
            .is_some()
    );
    assert!(CLEAR_COOKIE.contains("Max-Age=0") && CLEAR_COOKIE.starts_with("weft_session=;"));
}

#[test]
fn an_origin_must_be_the_request_s_own_host_over_http() {
    assert!(same_origin(&headers(&[("host", "127.0.0.1:9")])));
    assert!(same_origin(&headers(&[
        ("host", "127.0.0.1:9"),
        ("origin", "http://127.0.0.1:9")
    ])));
    assert!(!same_origin(&headers(&[("origin", "http://127.0.0.1:9")])));
    assert!(!same_origin(&headers(&[
        ("host", "127.0.0.1:9"),
        ("origin", "http://127.0.0.1:9.evil.example")
    ])));
}

#[test]
fn a_session_ends_a_day_after_sign_in_however_much_it_is_used() {
    let sessions = Sessions::default();
    let token = token();
    let start = Instant::now();
    let busy = sessions
        .sign_in(Some(&token), SECRET, &HeaderMap::new(), start)
        .unwrap();
    // Used every hour: never idle, yet gone at its lifetime.
    let hour = Duration::from_secs(60 * 60);
    let mut at = start;
    while at + hour < start + MAX_LIFETIME {
        at += hour;
        assert!(csrf_of(&sessions, &busy.id, at).is_some(), "{at:?}");
    }
    let last = start + MAX_LIFETIME - Duration::from_secs(1);
    assert!(csrf_of(&sessions, &busy.id, last).is_some());
    // One signed in later, still within its own day, is untouched.
    let later = sessions
        .sign_in(Some(&token), SECRET, &HeaderMap::new(), last)
        .unwrap();
    let end = start + MAX_LIFETIME;
    let get = |id: &str| {
        sessions.admit(
            Some(&token),
            &Method::GET,
            &headers(&[("cookie", &cookie(id))]),
            end,
        )
    };
    assert_eq!(get(&busy.id), Admission::Unauthorized);
    assert_eq!(get(&later.id), Admission::Session);
    assert_eq!(count(&sessions), 1);
    assert!(IDLE_EXPIRY < MAX_LIFETIME);
}

#[test]
fn signing_in_again_from_a_browser_ends_its_old_session_only() {
    let sessions = Sessions::default();
    let token = token();
    let now = Instant::now();
    let old = sessions
        .sign_in(Some(&token), SECRET, &HeaderMap::new(), now)
        .unwrap();
    let other = sessions
        .sign_in(Some(&token), SECRET, &HeaderMap::new(), now)
        .unwrap();
    let browser = headers(&[("cookie", &cookie(&old.id))]);
    // A failed sign-in ends nothing.
    assert_eq!(
        sessions
            .sign_in(Some(&token), "a-wrong-guess-of-the-token", &browser, now)
            .unwrap_err(),
        SignInError::WrongToken
    );
    assert!(csrf_of(&sessions, &old.id, now).is_some());
    let new = sessions
        .sign_in(Some(&token), SECRET, &browser, now)
        .unwrap();
    assert!(new.replaced);
    assert!(csrf_of(&sessions, &old.id, now).is_none());
    assert!(csrf_of(&sessions, &new.id, now).is_some());
    assert!(csrf_of(&sessions, &other.id, now).is_some());
    assert_eq!(count(&sessions), 2);
    // A cookie of a session already gone replaces nothing.
    let again = sessions
        .sign_in(Some(&token), SECRET, &browser, now)
        .unwrap();
    assert!(!again.replaced);
}

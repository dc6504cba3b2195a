//! The dashboard's session cookie as the web roles' listeners see it: its
//! name, and the two filters that keep it between the operator's browser
//! and the admin address.
//!
//! A browser keys cookies by host name, not port, so the cookie the admin
//! address sets ([`crate::admin::session`]) also goes to every web role on
//! the same host name, and a web role's `Set-Cookie` lands in the same jar
//! the dashboard reads. [`strip_cookie`] takes the session out of each
//! request before a guest sees it; [`strip_set_cookie`] takes out of each
//! guest answer any `Set-Cookie` that would overwrite or plant it.
//!
//! This module is a leaf that the admin API and [`crate::http_server`] both
//! import, so neither imports the other (the admin API reaches the
//! listeners through the controller).

use http::{HeaderMap, HeaderValue, header};

/// The session cookie's name.
pub const COOKIE: &str = "weft_session";

/// Takes the session cookie out of `headers`' `Cookie` headers, keeping
/// every other cookie. A request to a web role on the admin address's host
/// name would otherwise hand an operator's session to a guest.
pub fn strip_cookie(headers: &mut HeaderMap) {
    if !headers.contains_key(header::COOKIE) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| {
            let pairs: Vec<&[u8]> = value
                .as_bytes()
                .split(|b| *b == b';')
                .map(<[u8]>::trim_ascii)
                .filter(|pair| !pair.is_empty() && !names_the_session(pair))
                .collect();
            HeaderValue::from_bytes(&pairs.join(&b"; "[..])).ok()
        })
        .filter(|value| !value.is_empty())
        .collect();
    headers.remove(header::COOKIE);
    for value in kept {
        headers.append(header::COOKIE, value);
    }
}

/// Drops from a guest's answer every `Set-Cookie` header that would set
/// the session cookie, keeping every other. Such a header could overwrite
/// the operator's session (signing them out) or plant one of the guest's
/// choosing beside it.
pub fn strip_set_cookie(headers: &mut HeaderMap) {
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|value| {
            let pair = value.as_bytes().split(|b| *b == b';').next().unwrap_or(&[]);
            // A cookie with an empty name (`=weft_session=x`) is sent back
            // by browsers as its bare value, `weft_session=x`.
            let pair = pair.trim_ascii();
            let pair = pair.strip_prefix(b"=").unwrap_or(pair);
            !names_the_session(pair)
        })
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for value in kept {
        headers.append(header::SET_COOKIE, value);
    }
}

/// Whether the cookie pair `name=value` (or a bare `name`) is named
/// [`COOKIE`], in any case: no browser should be given a near miss either.
fn names_the_session(pair: &[u8]) -> bool {
    let name = pair.split(|b| *b == b'=').next().unwrap_or(pair);
    name.trim_ascii().eq_ignore_ascii_case(COOKIE.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: header::HeaderName, values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(name.clone(), HeaderValue::from_bytes(value).unwrap());
        }
        map.append(header::ACCEPT, HeaderValue::from_static("*/*"));
        map
    }

    fn values(map: &HeaderMap, name: header::HeaderName) -> Vec<&[u8]> {
        map.get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    }

    #[test]
    fn a_web_role_never_sees_the_session_cookie_but_sees_the_others() {
        let mut map = headers(
            header::COOKIE,
            &[
                b"theme=dark; weft_session=abc; cart=3",
                b"weft_session=def",
                b" weft_session = ghi ;lang=fr",
                b"x=\xff; weft_session=jkl; WEFT_SESSION=mno",
                b"weft_sessions=kept",
            ],
        );
        strip_cookie(&mut map);
        assert_eq!(
            values(&map, header::COOKIE),
            vec![
                &b"theme=dark; cart=3"[..],
                &b"lang=fr"[..],
                &b"x=\xff"[..],
                &b"weft_sessions=kept"[..]
            ]
        );
        assert_eq!(map.get(header::ACCEPT).unwrap(), "*/*");
        let mut none = headers(header::COOKIE, &[]);
        strip_cookie(&mut none);
        assert_eq!(none.len(), 1);
    }

    #[test]
    fn a_web_role_cannot_set_the_session_cookie_but_sets_its_own() {
        let mut map = headers(
            header::SET_COOKIE,
            &[
                b"cart=3; Path=/",
                b"weft_session=planted; HttpOnly; SameSite=Strict; Path=/",
                b"weft_session=; Max-Age=0",
                b" Weft_Session =x; Path=/v1",
                b"=weft_session=nameless",
                b"weft_session",
                b"theme=dark; Path=/; Comment=weft_session=no",
                b"x=\xff",
                b"weft_sessions=kept",
            ],
        );
        strip_set_cookie(&mut map);
        assert_eq!(
            values(&map, header::SET_COOKIE),
            vec![
                &b"cart=3; Path=/"[..],
                &b"theme=dark; Path=/; Comment=weft_session=no"[..],
                &b"x=\xff"[..],
                &b"weft_sessions=kept"[..]
            ]
        );
        assert_eq!(map.get(header::ACCEPT).unwrap(), "*/*");
        let mut none = headers(header::SET_COOKIE, &[]);
        strip_set_cookie(&mut none);
        assert_eq!(none.len(), 1);
    }
}

//! The dashboard's tests: its files keep the DOM contract and hold no way
//! to turn text into markup or script; its paths; the sign-in form; and,
//! on a real admin server, the headers every admin answer carries, the
//! challenge of every 401, and the status of a sign-in form that cannot be
//! read.

use super::*;
use crate::admin::fabric_tests::{SECRET, host};
use crate::admin::reply::{DATA_CSP, PAGE_CSP};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[test]
fn the_form_s_token_is_decoded_as_a_browser_encodes_it() {
    assert_eq!(form_value(b"token=abc", "token").as_deref(), Some("abc"));
    assert_eq!(
        form_value(b"x=1&token=a%2Bb+c%25%3D&y=2", "token").as_deref(),
        Some("a+b c%=")
    );
    assert_eq!(form_value(b"tok%65n=z", "token").as_deref(), Some("z"));
    assert_eq!(
        form_value(b"token=%zz%4", "token").as_deref(),
        Some("%zz%4")
    );
    assert_eq!(
        form_value(b"token=%ff", "token").as_deref(),
        Some("\u{fffd}")
    );
    assert_eq!(form_value(b"other=1", "token"), None);
    assert_eq!(form_value(b"", "token"), None);
    assert_eq!(form_value(b"token", "token").as_deref(), Some(""));
}

#[test]
fn an_error_on_the_sign_in_page_is_escaped_text() {
    let body = sign_in_html(Some("<script>x</script> & \"q\""));
    assert!(!body.contains("<script>x"), "{body}");
    assert!(body.contains("&lt;script&gt;x&lt;/script&gt; &amp; &quot;q&quot;"));
    assert!(SIGN_IN.contains("<!--error-->"));
}

/// Every file the dashboard serves that a browser runs or renders.
fn assets() -> Vec<(&'static str, &'static str)> {
    let mut all = vec![("signin.html", SIGN_IN), ("index.html", INDEX)];
    all.extend(SCRIPTS);
    all
}

/// What in `text` would turn a string into markup or script: the first
/// forbidden API or inline event handler found.
fn markup_sink(text: &str) -> Option<String> {
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ] {
        if text.contains(sink) {
            return Some(sink.to_owned());
        }
    }
    inline_handler(text)
}

/// An inline event handler in `text`: an attribute or property `onNAME=`,
/// or an attribute name `"onNAME"` given as a string (to `setAttribute` or
/// an element's attributes).
fn inline_handler(text: &str) -> Option<String> {
    text.match_indices("on").find_map(|(at, _)| {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            return None;
        }
        let rest = &text[at + 2..];
        let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        if name_len == 0 {
            return None;
        }
        let after = rest[name_len..].trim_start();
        let assigned = after.starts_with('=') && !after.starts_with("==");
        let quoted = matches!(before, Some('"' | '\''))
            && rest[name_len..].starts_with(before.unwrap_or('"'));
        (assigned || quoted).then(|| format!("on{}", &rest[..name_len]))
    })
}

#[test]
fn the_pages_keep_the_contract_and_nothing_turns_text_into_markup() {
    for needle in [
        "id=\"signin\"",
        "id=\"token\"",
        "name=\"token\"",
        "id=\"signin-button\"",
        "id=\"signin-error\"",
        "action=\"/ui/session\"",
    ] {
        assert!(SIGN_IN.contains(needle), "the sign-in page lacks {needle}");
    }
    for needle in ["id=\"hosts\"", "id=\"services\"", "id=\"signout\""] {
        assert!(INDEX.contains(needle), "the dashboard lacks {needle}");
    }
    for page in [SIGN_IN, INDEX] {
        assert!(!page.contains("<style"));
        assert!(!page.contains(" style="));
        for script in page.split("<script").skip(1) {
            assert!(script.trim_start().starts_with("type=\"module\" src="));
        }
    }
    for (name, text) in assets() {
        assert_eq!(markup_sink(text), None, "{name}");
        assert!(
            text.lines().count() < 250,
            "{name} is past 250 lines: split it"
        );
    }
    // Every module the page imports is served.
    for (name, text) in SCRIPTS {
        for import in text.split("from \"./").skip(1) {
            let file = import.split('"').next().unwrap_or("");
            let path = format!("/ui/{file}");
            assert!(
                matches!(Page::of(&path), Some(Page::Script(_))),
                "{name} imports {path}, which is not served"
            );
        }
    }
}

#[test]
fn a_markup_sink_or_an_inline_handler_is_seen() {
    for bad in [
        "<b onclick=\"x()\">",
        "<b ONCLICK=x onload =\"y\">",
        "node.innerHTML = s;",
        "node.outerHTML = s;",
        "node.insertAdjacentHTML('beforeend', s);",
        "document.write(s);",
        "button.onclick = go;",
        "node.setAttribute(\"onmouseover\", s);",
        "el(\"b\", { 'onfocus': s });",
    ] {
        assert!(markup_sink(bad).is_some(), "{bad}");
    }
    for good in [
        "<p>runs on this host</p>",
        "const done = x; if (one == two) y = 1;",
        "el(\"b\", { once: true, \"data-on\": 1 });",
        "node.textContent = s; addEventListener(\"click\", f);",
    ] {
        assert_eq!(markup_sink(good), None, "{good}");
    }
}

#[test]
fn only_the_dashboard_s_paths_are_its_own() {
    assert!(is_ui("/ui") && is_ui("/ui/") && is_ui("/ui/app.js"));
    assert!(!is_ui("/uix") && !is_ui("/v1/ui") && !is_ui("/"));
    assert_eq!(Page::of("/ui/"), Some(Page::Index));
    for (path, text) in SCRIPTS {
        assert_eq!(Page::of(path), Some(Page::Script(text)));
    }
    assert_eq!(Page::of("/ui/nothing.js"), None);
    assert_eq!(Page::of("/ui/../v1/services"), None);
}

#[test]
fn a_body_cut_short_is_a_bad_request_and_only_an_oversized_one_too_large() {
    assert_eq!(
        body_problem(&ApiError::TooLarge(MAX_FORM_BYTES)),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let cut = ApiError::Controller(crate::controller::ControllerError::Invalid(
        "the body: cut".into(),
    ));
    assert_eq!(body_problem(&cut), StatusCode::BAD_REQUEST);
}

/// An answer read off the wire: its status, head (lowercase) and body.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    /// The value of header `name` (lowercase), if present.
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim())
        })
    }
}

/// Sends `request` as it is (head and body) to `addr` and reads the answer
/// until the server closes the connection (each request asks it to).
async fn raw(addr: SocketAddr, request: &str) -> Raw {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Raw {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// `METHOD path` with `headers` (each `Name: value`) and `body`, closed after.
fn request(method: &str, path: &str, headers: &[&str], body: &str) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    if !body.is_empty() {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_answer_is_secured_and_every_401_says_how_to_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let (_controller, admin) = host(dir.path(), None).await;
    let addr = admin.addr;
    let bearer = format!("Authorization: Bearer {SECRET}");
    let form = "Content-Type: application/x-www-form-urlencoded";
    let signed_in = raw(
        addr,
        &request("POST", "/ui/session", &[form], &format!("token={SECRET}")),
    )
    .await;
    assert_eq!(signed_in.status, 303, "{signed_in:?}");
    let cookie = signed_in
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let cookie = format!("Cookie: {cookie}");
    // (method, path, headers, body, status, the challenge of a 401)
    let cases = [
        ("GET", "/healthz", vec![], String::new(), 200, None),
        ("GET", "/metrics", vec![], String::new(), 200, None),
        ("GET", "/v1/openapi.json", vec![], String::new(), 200, None),
        (
            "GET",
            "/v1/services",
            vec![],
            String::new(),
            401,
            Some("bearer"),
        ),
        (
            "GET",
            "/v1/services",
            vec![bearer.as_str()],
            String::new(),
            200,
            None,
        ),
        (
            "GET",
            "/v1/services",
            vec![cookie.as_str()],
            String::new(),
            200,
            None,
        ),
        (
            "GET",
            "/v1/no-such",
            vec![bearer.as_str()],
            String::new(),
            404,
            None,
        ),
        ("GET", "/ui", vec![], String::new(), 200, None),
        (
            "GET",
            "/ui",
            vec![cookie.as_str()],
            String::new(),
            200,
            None,
        ),
        (
            "GET",
            "/ui/app.js",
            vec![],
            String::new(),
            401,
            Some("cookie"),
        ),
        (
            "GET",
            "/ui/render.js",
            vec![cookie.as_str()],
            String::new(),
            200,
            None,
        ),
        (
            "GET",
            "/ui/session",
            vec![],
            String::new(),
            401,
            Some("cookie"),
        ),
        (
            "GET",
            "/ui/elsewhere",
            vec![],
            String::new(),
            401,
            Some("cookie"),
        ),
        (
            "POST",
            "/ui/session",
            vec![form],
            "token=not-the-admin-token".into(),
            401,
            Some("cookie"),
        ),
    ];
    for (method, path, headers, body, status, challenge) in cases {
        let what = format!("{method} {path} {headers:?}");
        let reply = raw(addr, &request(method, path, &headers, &body)).await;
        assert_eq!(reply.status, status, "{what}: {reply:?}");
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
        assert_eq!(reply.header("x-frame-options"), Some("deny"), "{what}");
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{what}");
        let csp = reply.header("content-security-policy").unwrap_or("");
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
        let html = reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html"));
        let expected = if html { PAGE_CSP } else { DATA_CSP };
        assert_eq!(csp, expected.to_ascii_lowercase(), "{what}");
        let scheme = reply
            .header("www-authenticate")
            .and_then(|c| c.split(' ').next());
        assert_eq!(scheme, challenge, "{what}");
        if challenge == Some("cookie") {
            // The sign-in page, with nothing of the deployments.
            assert!(html && reply.body.contains("id=\"signin\""), "{what}");
            assert!(reply.head.contains("form-action=\"/ui/session\""), "{what}");
        }
    }
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_form_that_cannot_be_read_is_400_and_one_too_large_413() {
    let dir = tempfile::tempdir().unwrap();
    let (_controller, admin) = host(dir.path(), None).await;
    let addr = admin.addr;
    let form = "Content-Type: application/x-www-form-urlencoded";
    // Broken chunked framing: the body cannot be read, and is not too large.
    let broken = format!(
        "POST /ui/session HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{form}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\ntoken\r\n"
    );
    let reply = raw(addr, &broken).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.body.contains("id=\"signin\""), "{reply:?}");
    let big = format!("token={}", "x".repeat(MAX_FORM_BYTES + 1));
    let reply = raw(addr, &request("POST", "/ui/session", &[form], &big)).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    // The neighbour: a form just under the limit is read (and refused as
    // the wrong token).
    let fits = format!("token={}", "x".repeat(MAX_FORM_BYTES - 6));
    let reply = raw(addr, &request("POST", "/ui/session", &[form], &fits)).await;
    assert_eq!(reply.status, 401, "{reply:?}");
    admin.stop().await;
}

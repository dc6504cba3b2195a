//! The dashboard over plain HTTP against a real `weft host`: without a
//! session only the sign-in page shows; a wrong token gets the page's
//! error; the token gets a session cookie (`HttpOnly`, `SameSite=Strict`)
//! that reads the API freely but changes it only with the session's CSRF
//! token from the admin address's own origin; signing out ends it; the
//! bearer token works as before throughout; sign-in attempts are rate
//! limited. `weft serve`, which has no API, has no dashboard either.

use crate::controller::service_dir;
use crate::hosting::{Host, TOKEN, token_file};
use crate::support::{Reply, http_with, serve};
use std::time::Duration;
use weft_test_artifacts::{HELLO_WEB, ROLLOUT_WEB, ROLLOUT_WORKER};

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
const JSON: (&str, &str) = ("content-type", "application/json");

async fn send(
    host: &Host,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    http_with(
        method,
        &format!("{}{path}", host.admin),
        headers,
        body.as_bytes().to_vec(),
    )
    .await
    .unwrap()
}

/// Signs in to the dashboard with the good token (`POST /ui/session`).
async fn post_token(host: &Host) -> Reply {
    send(
        host,
        "POST",
        "/ui/session",
        &[FORM],
        &format!("token={TOKEN}"),
    )
    .await
}

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The worker's declared instance count, read with the bearer token.
async fn declared(host: &Host) -> u64 {
    let status = host.service("quarry").await;
    status["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "worker")
        .and_then(|r| r["declared"].as_u64())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_signs_in_with_the_token_and_changes_only_with_its_csrf_token() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(&dir.path().join("state"), &token_file(dir.path()));
    let folder = dir.path().join("quarry");
    service_dir(&folder, "quarry", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", folder.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");

    // Without a session: the sign-in page and nothing of the deployments.
    let page = send(&host, "GET", "/ui", &[], "").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("id=\"signin\"") && page.body.contains("id=\"token\""));
    assert!(!page.body.contains("id=\"services\"") && !page.body.contains("quarry"));
    assert!(header(&page, "content-security-policy").starts_with("default-src 'self'"));
    assert_eq!(header(&page, "x-frame-options"), "DENY");
    assert_eq!(header(&page, "cache-control"), "no-store");
    for path in ["/ui/app.js", "/ui/session", "/ui/elsewhere"] {
        let reply = send(&host, "GET", path, &[], "").await;
        assert_eq!(reply.status, 401, "{path}: {reply:?}");
        assert!(!reply.body.contains("quarry"), "{path}: {reply:?}");
    }
    assert_eq!(send(&host, "GET", "/ui/app.css", &[], "").await.status, 200);
    assert_eq!(
        send(&host, "GET", "/v1/services", &[], "").await.status,
        401
    );

    // A wrong token: the sign-in page with its error, and no cookie.
    let wrong = send(
        &host,
        "POST",
        "/ui/session",
        &[FORM],
        "token=not-the-admin-token",
    )
    .await;
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert!(
        wrong.body.contains("not this host&#39;s admin token"),
        "{wrong:?}"
    );
    assert!(wrong.headers.get("set-cookie").is_none());

    // The token: 303 to /ui with the session cookie.
    let good = post_token(&host).await;
    assert_eq!(good.status, 303, "{good:?}");
    assert_eq!(header(&good, "location"), "/ui");
    let set_cookie = header(&good, "set-cookie");
    let attributes: Vec<&str> = set_cookie.split("; ").collect();
    assert!(attributes.contains(&"HttpOnly"), "{set_cookie}");
    assert!(attributes.contains(&"SameSite=Strict"), "{set_cookie}");
    assert!(attributes.contains(&"Path=/"), "{set_cookie}");
    let cookie = attributes[0].to_owned();
    let id = cookie.strip_prefix("weft_session=").unwrap();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{cookie}"
    );
    let with = ("cookie", cookie.as_str());

    // The session reads the dashboard and the API.
    let app = send(&host, "GET", "/ui", &[with], "").await;
    assert!(
        app.status == 200 && app.body.contains("id=\"services\""),
        "{app:?}"
    );
    let script = send(&host, "GET", "/ui/app.js", &[with], "").await;
    assert_eq!(script.status, 200);
    assert!(header(&script, "content-type").starts_with("text/javascript"));
    let session = send(&host, "GET", "/ui/session", &[with], "").await;
    assert_eq!(session.status, 200, "{session:?}");
    let csrf: serde_json::Value = serde_json::from_str(&session.body).unwrap();
    let csrf = csrf["csrf"].as_str().unwrap().to_owned();
    let services = send(&host, "GET", "/v1/services", &[with], "").await;
    assert!(
        services.status == 200 && services.body.contains("\"quarry\""),
        "{services:?}"
    );

    // A change without the CSRF token, with another's, or from another
    // origin: 403, and nothing changed.
    let scale = "/v1/services/quarry/roles/worker/instances";
    let origin = host.admin.clone();
    for (what, headers) in [
        ("no CSRF header", vec![with, JSON]),
        (
            "a wrong CSRF token",
            vec![with, JSON, ("x-weft-csrf", "0123abcd")],
        ),
        (
            "a foreign origin",
            vec![
                with,
                JSON,
                ("x-weft-csrf", csrf.as_str()),
                ("origin", "http://evil.example"),
            ],
        ),
    ] {
        let refused = send(&host, "PUT", scale, &headers, "{\"count\": 2}").await;
        assert_eq!(refused.status, 403, "{what}: {refused:?}");
        let error: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
        assert!(!error["error"].as_str().unwrap().contains('\n'));
    }
    assert_eq!(declared(&host).await, 1);

    // With it, from the admin address's own origin: done.
    let headers = [
        with,
        JSON,
        ("x-weft-csrf", csrf.as_str()),
        ("origin", origin.as_str()),
    ];
    let scaled = send(&host, "PUT", scale, &headers, "{\"count\": 2}").await;
    assert_eq!(scaled.status, 200, "{scaled:?}");
    assert_eq!(declared(&host).await, 2);
    // The bearer token works as before, needing neither.
    let bearer = host.api("PUT", scale, "{\"count\": 1}").await;
    assert_eq!(bearer.status, 200, "{bearer:?}");
    assert_eq!(declared(&host).await, 1);

    // Signing out needs the CSRF token too, then ends the session.
    let refused = send(&host, "POST", "/ui/signout", &[with], "").await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(
        send(&host, "GET", "/v1/services", &[with], "").await.status,
        200
    );
    let out = send(
        &host,
        "POST",
        "/ui/signout",
        &[with, ("x-weft-csrf", csrf.as_str())],
        "",
    )
    .await;
    assert_eq!(out.status, 303, "{out:?}");
    assert!(header(&out, "set-cookie").contains("Max-Age=0"), "{out:?}");
    assert_eq!(
        send(&host, "GET", "/v1/services", &[with], "").await.status,
        401
    );
    assert_eq!(
        send(&host, "PUT", scale, &headers, "{\"count\": 2}")
            .await
            .status,
        401
    );
    let after = send(&host, "GET", "/ui", &[with], "").await;
    assert!(after.body.contains("id=\"signin\"") && !after.body.contains("id=\"services\""));
    assert_eq!(declared(&host).await, 1);

    // Guessing fast meets the sign-in rate: refused unchecked (429), while
    // the bearer token is untouched; a second later the token signs in.
    let mut limited = 0;
    for _ in 0..20 {
        let guess = send(
            &host,
            "POST",
            "/ui/session",
            &[FORM],
            "token=guess-guess-guess",
        )
        .await;
        assert!(matches!(guess.status, 401 | 429), "{guess:?}");
        limited += usize::from(guess.status == 429);
    }
    assert!(limited > 0, "20 guesses at once were never rate limited");
    assert_eq!(host.api("GET", "/v1/services", "").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let again = post_token(&host).await;
    assert_eq!(again.status, 303, "{again:?}");
}

#[tokio::test]
async fn weft_serve_has_no_dashboard() {
    let weft = serve(HELLO_WEB, &[]);
    let admin = weft.admin.clone().unwrap();
    for (method, path, body) in [
        ("GET", "/ui", ""),
        ("GET", "/ui/app.js", ""),
        ("GET", "/ui/signin", ""),
        ("POST", "/ui/session", "token=any-token-0123456789"),
    ] {
        let url = format!("{admin}{path}");
        let reply = http_with(method, &url, &[FORM], body.as_bytes().to_vec())
            .await
            .unwrap();
        assert_eq!(reply.status, 404, "{method} {path}: {reply:?}");
        assert!(reply.headers.get("set-cookie").is_none());
    }
}

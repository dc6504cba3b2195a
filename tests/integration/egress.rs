//! A web role's outgoing HTTP: only to the origins its manifest allows
//! (nothing by default), never widened by an incoming request's `Host`
//! header, and held to its egress rate.

use crate::support::{Upstream, runtime, spec};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::path::Path;
use weft_sandbox::rate_limit::{BucketConfig, Interface, InterfaceLimits};
use weft_sandbox::{EgressAllowlist, SandboxLimits, WebRole};
use weft_test_artifacts::PROBE;

fn role(allow: &[String], egress: Option<InterfaceLimits>, max_wait_ms: u64) -> WebRole {
    let (mut spec, _) = spec("web", &[], &[], SandboxLimits::default());
    spec.grants.egress = EgressAllowlist::parse(allow).unwrap();
    if let Some(limits) = egress {
        spec.rate_limits[Interface::Egress] = limits;
    }
    spec.rate_limits.max_wait_ms = max_wait_ms;
    runtime().web_role(Path::new(PROBE), spec).unwrap()
}

/// GET `path` with this `Host` header; the body.
async fn get_with_host(role: &WebRole, host: &str, path: &str) -> String {
    let request = http::Request::builder()
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let body = role.handle(request).await.into_body();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn fetch(role: &WebRole, url: &str) -> String {
    let path = format!("/fetch?url={url}");
    get_with_host(role, "localhost", &path).await
}

#[tokio::test]
async fn only_allowed_origins_are_reached() {
    let allowed = Upstream::start().await;
    let other = Upstream::start().await;
    let role = role(&[allowed.origin()], None, 100);
    assert_eq!(
        fetch(&role, &format!("{}/x", allowed.origin())).await,
        "status 200"
    );
    assert_eq!(allowed.connections(), 1);
    let denied = fetch(&role, &format!("{}/x", other.origin())).await;
    assert!(denied.to_lowercase().contains("denied"), "{denied}");
    // Same host, other scheme or name: not the allowed origin either.
    let https = fetch(&role, &format!("https://{}/x", allowed.addr)).await;
    assert!(https.starts_with("error:"), "{https}");
    let by_name = fetch(
        &role,
        &format!("http://localhost:{}/x", allowed.addr.port()),
    )
    .await;
    assert!(by_name.starts_with("error:"), "{by_name}");
    assert_eq!(
        other.connections(),
        0,
        "nothing reached a listener not allowed"
    );
    assert_eq!(allowed.connections(), 1);
    let usage = role.usage();
    assert_eq!(
        usage.counters.bytes.egress_in, 5,
        "the 5 bytes of `hello` were counted"
    );
}

#[tokio::test]
async fn a_role_without_egress_reaches_nothing() {
    let upstream = Upstream::start().await;
    let role = role(&[], None, 100);
    let denied = fetch(&role, &format!("{}/", upstream.origin())).await;
    assert!(denied.to_lowercase().contains("denied"), "{denied}");
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn the_incoming_host_header_never_widens_the_allowlist() {
    let allowed = Upstream::start().await;
    let target = Upstream::start().await;
    let role = role(&[allowed.origin()], None, 100);
    // The client claims the role lives at `target`: a guest proxying to its
    // "own" host must still be refused there (Spin's CVE-2024-32980).
    let answer = get_with_host(&role, &target.addr.to_string(), "/fetch-self?path=/").await;
    assert!(answer.starts_with("error:"), "{answer}");
    assert!(
        answer.to_lowercase().contains("denied"),
        "refused as denied, not as malformed: {answer}"
    );
    assert_eq!(target.connections(), 0);
    // And at an allowed host the same route goes through.
    let answer = get_with_host(&role, &allowed.addr.to_string(), "/fetch-self?path=/").await;
    assert_eq!(answer, "status 200");
}

#[tokio::test]
async fn outgoing_requests_are_held_to_the_egress_rate() {
    let upstream = Upstream::start().await;
    let limits = InterfaceLimits {
        ops: Some(BucketConfig::per_second(3)),
        bytes: None,
    };
    let role = role(&[upstream.origin()], Some(limits), 0);
    let mut ok: usize = 0;
    let mut limited: usize = 0;
    let started = std::time::Instant::now();
    for _ in 0..6 {
        let answer = fetch(&role, &format!("{}/", upstream.origin())).await;
        if answer == "status 200" {
            ok += 1;
        } else {
            assert!(answer.starts_with("error:"), "{answer}");
            limited += 1;
        }
    }
    assert_eq!(
        ok,
        upstream.connections(),
        "every admitted request went out"
    );
    // 3 tokens to start with, and one more per 333 ms the loop took.
    let refilled = usize::try_from(started.elapsed().as_millis() / 333).unwrap_or(usize::MAX);
    assert!(
        ok >= 3 && ok <= 3 + refilled + 1 && limited > 0,
        "{ok} ok after {refilled} refills"
    );
    assert_eq!(ok + limited, 6);
    let egress = role
        .usage()
        .calls
        .into_iter()
        .find(|c| c.interface.name() == "egress")
        .unwrap();
    assert_eq!(
        (egress.admitted, egress.limited),
        (ok as u64, limited as u64)
    );
}

/// A name is not a grant of the addresses it resolves to: an allowlisted
/// `localhost` origin (which resolves to loopback, as a rebound name
/// would) is refused before any connection, while the same listener named
/// by its IP literal is reached (and then by the name too: the allowlist
/// names that address).
#[tokio::test]
async fn an_allowed_name_resolving_to_loopback_is_refused() {
    let upstream = Upstream::start().await;
    let by_name = format!("http://localhost:{}", upstream.addr.port());
    let role_by_name = role(std::slice::from_ref(&by_name), None, 100);
    let refused = fetch(&role_by_name, &format!("{by_name}/x")).await;
    assert!(refused.starts_with("error:"), "{refused}");
    assert!(
        !refused.to_lowercase().contains("denied"),
        "refused for its address, not its origin: {refused}"
    );
    assert_eq!(upstream.connections(), 0, "nothing reached the listener");
    let role_literal = role(&[by_name.clone(), upstream.origin()], None, 100);
    assert_eq!(
        fetch(&role_literal, &format!("{}/x", upstream.origin())).await,
        "status 200"
    );
    assert_eq!(
        fetch(&role_literal, &format!("{by_name}/x")).await,
        "status 200"
    );
    assert_eq!(upstream.connections(), 2);
}

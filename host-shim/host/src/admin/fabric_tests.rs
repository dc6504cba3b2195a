//! The fabric's routes on a real admin server over a real controller, on a
//! host outside any fabric and on one still joining: what they answer
//! before any view is set, and a web role's endpoints on this host alone;
//! and the changes the admin API refuses to a service the fabric runs.

use super::auth::Token;
use super::fabric_view::{FabricSlot, NOT_IN_A_FABRIC};
use super::{Admin, MAX_JSON_BYTES};
use crate::connections::{ConnectionLimits, Listening};
use crate::controller::Controller;
use crate::controller::store::{DeploymentRecord, DeploymentSource, Digest, Layout, StateDir};
use crate::environment::Overrides;
use crate::guest_output::GuestOutput;
use crate::launch::AdminServer;
use crate::local_part::LocalPart;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use weft_sandbox::{EngineConfig, Runtime};

pub(super) const SECRET: &str = "a-test-token-long-enough-for-the-admin-api";

const MANIFEST: &str = r#"
[service]
name = "shop"

[roles.web]
kind = "web"
component = "web.wasm"
listen = "127.0.0.1:0"
queues = ["jobs"]
health = "/health"
# Small enough to fit the test host's 16 slots.
[roles.web.limits]
max-in-flight = 4
[roles.web.settings]
version = "1"
healthy = "true"
start = "ok"

[roles.worker]
kind = "worker"
component = "worker.wasm"
queues = ["jobs"]
buckets = ["ledger"]
[roles.worker.settings]
version = "1"
mode = "work"
start = "ok"
"#;

/// A host with an admin server (its fabric `fabric`) over a controller
/// keeping state in `dir`.
pub(super) async fn host(
    dir: &std::path::Path,
    fabric: Option<FabricSlot>,
) -> (Arc<Controller>, AdminServer) {
    let runtime = Arc::new(
        Runtime::new(EngineConfig {
            max_instances: 16,
            ..EngineConfig::default()
        })
        .unwrap(),
    );
    let limits = ConnectionLimits {
        max_connections: 16,
        idle_timeout: Duration::from_secs(5),
        min_body_rate: None,
    };
    let controller = crate::launch::controller(
        runtime.clone(),
        StateDir::open(dir, Layout::Host).unwrap(),
        Duration::from_secs(5),
        Vec::new(),
        Listening::new(limits),
    );
    let admin = Admin {
        runtime,
        controller: Some(controller.clone()),
        token: Some(Token::new(SECRET).unwrap()),
        logs: Arc::new(GuestOutput::default()),
        max_blob_bytes: MAX_JSON_BYTES,
        fabric,
        sessions: crate::admin::session::Sessions::default(),
        queue_history: Arc::default(),
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = AdminServer::start(addr, Listening::new(limits), admin)
        .await
        .unwrap();
    (controller, server)
}

/// `GET path` on `addr` (with the token if `token`): the status and the
/// JSON body.
async fn get(addr: SocketAddr, path: &str, token: bool) -> (u16, serde_json::Value) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::get(path).header(http::header::HOST, addr.to_string());
    if token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {SECRET}"));
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

/// `METHOD path` on `addr` with the token and the JSON `body`: the status
/// and the JSON answer.
async fn send(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::AUTHORIZATION, format!("Bearer {SECRET}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

/// The source of service `shop`, its components stored in `controller`.
async fn shop_source(controller: &Controller) -> DeploymentSource {
    let mut components = BTreeMap::new();
    for (role, path) in [
        ("web", weft_test_artifacts::ROLLOUT_WEB),
        ("worker", weft_test_artifacts::ROLLOUT_WORKER),
    ] {
        let bytes = std::fs::read(path).unwrap();
        let digest = Digest::of(&bytes);
        controller.put_blob(&digest, bytes.into()).await.unwrap();
        components.insert(role.to_owned(), digest);
    }
    DeploymentSource {
        manifest_file: "weft.toml".into(),
        manifest: MANIFEST.into(),
        environment: None,
        components,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_a_fabric_the_fabric_routes_are_404_and_endpoints_are_this_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, admin) = host(dir.path(), None).await;
    let addr = admin.addr;

    for path in [
        "/v1/fabric/hosts",
        "/v1/fabric/services",
        "/v1/fabric/services/shop",
    ] {
        // The token is checked first, as on every /v1 route.
        assert_eq!(get(addr, path, false).await.0, 401, "{path}");
        let (status, body) = get(addr, path, true).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"], NOT_IN_A_FABRIC, "{path}");
    }
    let endpoints = "/v1/services/shop/roles/web/endpoints";
    assert_eq!(get(addr, endpoints, false).await.0, 401);
    let (status, body) = get(addr, endpoints, true).await;
    assert_eq!(status, 404, "{body}");

    let deployed = controller
        .deploy("shop", shop_source(&controller).await)
        .await
        .unwrap();
    let url = deployed
        .roles
        .iter()
        .find(|role| role.name == "web")
        .and_then(|role| role.url.clone())
        .unwrap();

    let (status, body) = get(addr, endpoints, true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({
            "service": "shop",
            "role": "web",
            "addrs": [url.trim_start_matches("http://")],
            "health": "/health",
        })
    );
    let (status, body) = get(addr, "/v1/services/shop/roles/worker/endpoints", true).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("worker role"),
        "{body}"
    );
    let (status, body) = get(addr, "/v1/services/shop/roles/nope/endpoints", true).await;
    assert_eq!(status, 404, "{body}");
    // Still no fabric, whatever runs here.
    assert_eq!(get(addr, "/v1/fabric/services", true).await.0, 404);

    controller.shutdown().await;
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_still_joining_its_fabric_answers_503_until_it_has_joined() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, admin) = host(dir.path(), Some(FabricSlot::default())).await;
    for path in [
        "/v1/fabric/hosts",
        "/v1/fabric/services",
        "/v1/fabric/services/shop",
        "/v1/services/shop/roles/web/endpoints",
    ] {
        let (status, body) = get(admin.addr, path, true).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("joining"),
            "{path}: {body}"
        );
    }
    controller.shutdown().await;
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_to_change_a_service_the_fabric_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, admin) = host(dir.path(), None).await;
    let addr = admin.addr;
    let source = shop_source(&controller).await;
    let record = DeploymentRecord {
        source: source.clone(),
        overrides: Overrides::default(),
        generation: 1,
        local: Some(LocalPart {
            roles: [("web".to_owned(), 1), ("worker".to_owned(), 1)].into(),
            ..LocalPart::default()
        }),
    };
    // As the fabric's agent deploys its part.
    controller
        .deploy_record("shop", record.clone())
        .await
        .unwrap();

    let refused = "service 'shop' is run by the fabric; change it with --fabric";
    let put = http::Method::PUT;
    let changes = [
        (
            put.clone(),
            "/v1/services/shop/roles/worker/instances",
            serde_json::json!({ "count": 2 }),
        ),
        (
            put.clone(),
            "/v1/services/shop/roles/worker/settings",
            serde_json::json!({ "settings": { "version": "2" } }),
        ),
        (
            http::Method::POST,
            "/v1/services/shop/upgrade",
            serde_json::to_value(&source).unwrap(),
        ),
        (
            http::Method::DELETE,
            "/v1/services/shop",
            serde_json::json!({}),
        ),
    ];
    for (method, path, body) in changes {
        let (status, answer) = send(addr, method.clone(), path, &body).await;
        assert_eq!(status, 409, "{method} {path}: {answer}");
        assert_eq!(answer["error"], refused, "{method} {path}");
    }
    // Nothing changed, and reading it is still fine.
    assert_eq!(controller.record("shop"), Some(record));
    let (status, body) = get(addr, "/v1/services/shop", true).await;
    assert_eq!(status, 200, "{body}");

    // The fabric's agent changes it through the controller itself.
    controller.scale("shop", "worker", 2).await.unwrap();
    let scaled = controller.record("shop").unwrap();
    assert_eq!(scaled.local.unwrap().roles["worker"], 2);
    controller.remove("shop").await.unwrap();

    // A service the fabric does not run changes through the API as ever.
    controller.deploy("shop", source).await.unwrap();
    let (status, body) = send(
        addr,
        put,
        "/v1/services/shop/roles/worker/instances",
        &serde_json::json!({ "count": 2 }),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    controller.shutdown().await;
    admin.stop().await;
}

//! The host's admin address (loopback by default), kept off the roles' own
//! listeners: HTTP with JSON bodies, the routes in [`routes::ROUTES`],
//! described by an OpenAPI document served at `/v1/openapi.json`.
//!
//! - `GET /metrics` (every role's usage as Prometheus text, [`crate::metrics`]),
//!   `GET /healthz` and `GET /v1/openapi.json` are open: they reveal and
//!   change nothing of the deployments.
//! - `weft serve` has no controller, so no API: every path under `/v1`
//!   (the document too) is 404 there, before anything else is checked.
//! - Everything else under `/v1` needs `Authorization: Bearer TOKEN`
//!   ([`auth`]); without a valid token the answer is 401 and nothing is
//!   read or changed. A dashboard session's cookie ([`session`]) is
//!   admitted as the token is, but a change made with it also needs the
//!   session's CSRF token from the address's own origin (else 403). The
//!   dashboard itself is `/ui` (`admin/ui.rs`), routed before this table. Path
//!   parameters are checked next (400), then the body, whose size is
//!   bounded before it is read (413): JSON bodies at 1 MiB, component
//!   blobs at `--max-component-mib`. A body left unread
//!   is drained after the answer ([`crate::lingering`]), so a client still
//!   sending sees the answer, not a reset.
//! - Controller errors map to 400 (invalid), 404, 409 (exists, an
//!   operation is under way, or the fabric runs the service: a fabric's
//!   service changes only through the fabric), 503 (shutting down) and
//!   500, each with a JSON body `{"error": "..."}` on one line.
//! - Every answer, of every route and the dashboard's, leaves with the
//!   security headers of [`reply::secured`]: `nosniff`, no framing, no
//!   caching and a content security policy.
//! - `/v1/fabric/*` reads the fabric the host is a member of through a
//!   [`fabric_view::FabricView`] (404 outside a fabric, 503 while joining),
//!   and a web role's endpoints are the fabric's in one, else this host's.

pub mod auth;
pub mod data;
#[cfg(test)]
mod fabric_tests;
pub mod fabric_view;
mod query;
mod reply;
pub mod routes;
pub mod session;
mod ui;

use crate::connections::{Accepted, Listening};
use crate::controller::store::DeploymentSource;
use crate::controller::{Controller, ControllerError};
use crate::guest_output::GuestOutput;
use crate::lingering::LingeringBody;
use crate::manifest::MAX_INSTANCES;
use bytes::Bytes;
use fabric_view::{FabricSlot, FabricViewError};
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reply::{Reply, error, json, text, unauthorized};
use routes::{Miss, Route};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use weft_broker::OpenErrorKind;
use weft_sandbox::Runtime;

/// The largest JSON body accepted.
pub const MAX_JSON_BYTES: usize = 1024 * 1024;
/// The longest a log read waits for a new line.
const MAX_LOG_WAIT: Duration = Duration::from_secs(30);
/// The most log lines one read returns.
const MAX_LOG_LINES: usize = 1000;
/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the admin address serves from.
pub struct Admin {
    /// The engine, for `/metrics`.
    pub runtime: Arc<Runtime>,
    /// The controller; `None` under `weft serve`, which has no API.
    pub controller: Option<Arc<Controller>>,
    /// The token `/v1` requests must carry.
    pub token: Option<auth::Token>,
    /// Guest output, for `logs`.
    pub logs: Arc<GuestOutput>,
    /// The largest component accepted, in bytes.
    pub max_blob_bytes: usize,
    /// The fabric this host is a member of; `None` outside a fabric.
    pub fabric: Option<FabricSlot>,
    /// The services' queue lengths over the last minutes, sampled by the
    /// task [`crate::launch::AdminServer`] starts (with a controller).
    pub queue_history: Arc<crate::queue_history::QueueHistory>,
    /// The dashboard's sign-in sessions, admitted to `/v1` as the token is.
    pub sessions: session::Sessions,
}

/// Serves the admin endpoints on `listener`, holding its connections in
/// the admin pool `pool` (never the web roles'), until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    pool: Arc<Listening>,
    admin: Arc<Admin>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let min_rate = pool.limits().min_body_rate;
    loop {
        tokio::select! {
            Accepted { stream, place, .. } = pool.accept(&listener, "admin") => {
                let admin = admin.clone();
                let service = service_fn(move |request| {
                    let admin = admin.clone();
                    let request = LingeringBody::wrap(request, min_rate);
                    async move { Ok::<_, Infallible>(answer(&admin, request).await) }
                });
                let connection = pool.http1().serve_connection(TokioIo::new(stream), service);
                tokio::spawn(async move {
                    let _ = connection.await;
                    drop(place);
                });
            }
            () = &mut shutdown => return,
        }
    }
}

/// The answer to every `/v1` request under `weft serve`, whatever its
/// method, parameters or token: it has no admin API (not even its document).
const NO_API: &str = "weft serve has no admin API; run services with weft up or weft host";

/// Answers one request, every answer with the security headers
/// ([`reply::secured`]), whichever route made it.
async fn answer(admin: &Admin, request: http::Request<LingeringBody>) -> Reply {
    reply::secured(route(admin, request).await)
}

async fn route(admin: &Admin, request: http::Request<LingeringBody>) -> Reply {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // The dashboard's pages and sign-in, apart from the API's table.
    if ui::is_ui(&path) {
        return ui::answer(admin, request).await;
    }
    if admin.controller.is_none() && (path == "/v1" || path.starts_with("/v1/")) {
        return error(StatusCode::NOT_FOUND, NO_API);
    }
    // The bearer token, or a dashboard session (with its CSRF token for a
    // change); a session without it is refused (403), not asked to sign in.
    let admission = admin.sessions.admit(
        admin.token.as_ref(),
        &method,
        request.headers(),
        std::time::Instant::now(),
    );
    let admitted = || admission.admitted();
    let refused = || match admission {
        session::Admission::Forbidden(why) => error(StatusCode::FORBIDDEN, why),
        _ => unauthorized(),
    };
    let route = match routes::route(&method, &path) {
        Ok(route) => route,
        Err(Miss::NotFound) => {
            return error(StatusCode::NOT_FOUND, "no such route; see /v1/openapi.json");
        }
        Err(Miss::Method(allowed)) => {
            let mut reply = error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("use {}", allowed.join(", ")),
            );
            if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
                reply.headers_mut().insert(header::ALLOW, value);
            }
            return reply;
        }
        Err(Miss::BadParameter(why)) => {
            return if admitted() {
                error(StatusCode::BAD_REQUEST, &why)
            } else {
                refused()
            };
        }
    };
    if !route.is_open() && !admitted() {
        return refused();
    }
    match route {
        Route::Metrics => {
            let mut body =
                crate::metrics::render(&crate::metrics::merge_versions(admin.runtime.usage()));
            if let Some(controller) = &admin.controller {
                body.push_str(&crate::metrics::render_stores(&controller.store_health()));
            }
            text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )
        }
        Route::Healthz => text(StatusCode::OK, "text/plain", "ok\n".into()),
        Route::OpenApi => text(StatusCode::OK, "application/json", OPENAPI.into()),
        route => match &admin.controller {
            Some(controller) => match operate(admin, controller, route, request).await {
                Ok(reply) => reply,
                Err(e) => api_error(&e),
            },
            None => error(StatusCode::NOT_FOUND, NO_API),
        },
    }
}

/// A scale request's count, `{"count": N}`: whatever number N is (past
/// u64, negative, a float), a one-line error naming `count`; its range is
/// checked with the manifest's rules by the controller.
fn scale_count(body: &[u8]) -> Result<u32, ControllerError> {
    let shape = || ControllerError::Invalid("the JSON body must be {\"count\": N}".into());
    let request: serde_json::Value = serde_json::from_slice(body).map_err(|_| shape())?;
    let object = request.as_object().ok_or_else(shape)?;
    if object.len() != 1 {
        return Err(shape());
    }
    let count = object.get("count").ok_or_else(shape)?;
    count
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            ControllerError::Invalid(format!(
                "count must be a whole number from 1 to {MAX_INSTANCES}, not {count}"
            ))
        })
}

/// Refuses (409) a change through this API to a service the fabric runs
/// here (its record has a local part): the fabric's agent would undo it as
/// soon as it compared the service with its signed desired state. The
/// agent itself calls the controller directly, never through this API.
fn not_run_by_the_fabric(controller: &Controller, name: &str) -> Result<(), ControllerError> {
    match controller.record(name) {
        Some(record) if record.local.is_some() => Err(ControllerError::Conflict(format!(
            "service '{name}' is run by the fabric; change it with --fabric"
        ))),
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsRequest {
    settings: BTreeMap<String, String>,
}

async fn operate(
    admin: &Admin,
    controller: &Arc<Controller>,
    route: Route,
    request: http::Request<LingeringBody>,
) -> Result<Reply, ApiError> {
    let query = request.uri().query().unwrap_or("").to_owned();
    Ok(match route {
        Route::ListServices => json(StatusCode::OK, &controller.status(None).await?),
        Route::GetService(name) => {
            let mut status = controller.status(Some(&name)).await?;
            match status.services.pop() {
                Some(service) => json(StatusCode::OK, &service),
                None => {
                    return Err(ControllerError::NotFound(format!("no service '{name}'")).into());
                }
            }
        }
        Route::Deploy(name) => {
            let source: DeploymentSource = read_json(request).await?;
            json(
                StatusCode::CREATED,
                &controller.deploy(&name, source).await?,
            )
        }
        Route::Upgrade(name) => {
            not_run_by_the_fabric(controller, &name)?;
            let source: DeploymentSource = read_json(request).await?;
            json(
                StatusCode::ACCEPTED,
                &controller.upgrade(&name, source).await?,
            )
        }
        Route::Remove(name) => {
            not_run_by_the_fabric(controller, &name)?;
            // In a task of its own, so the log is forgotten with the
            // service even if the client goes away meanwhile.
            let (controller, logs, removing) =
                (controller.clone(), admin.logs.clone(), name.clone());
            tokio::spawn(async move {
                controller.remove(&removing).await?;
                logs.forget(&removing);
                Ok::<_, ControllerError>(())
            })
            .await
            .map_err(|e| ControllerError::Internal(format!("the removal failed: {e}")))??;
            json(StatusCode::OK, &serde_json::json!({ "removed": name }))
        }
        Route::Scale(name, role) => {
            not_run_by_the_fabric(controller, &name)?;
            let count = scale_count(&read_body(request, MAX_JSON_BYTES).await?)?;
            json(
                StatusCode::OK,
                &controller.scale(&name, &role, count).await?,
            )
        }
        Route::Settings(name, role) => {
            not_run_by_the_fabric(controller, &name)?;
            let change: SettingsRequest = read_json(request).await?;
            let operation = controller
                .set_settings(&name, &role, change.settings)
                .await?;
            json(StatusCode::ACCEPTED, &operation)
        }
        Route::Logs(name, role) => {
            controller.role_exists(&name, &role)?;
            let LogQuery { after, limit, wait } = LogQuery::parse(&query)?;
            let (lines, next) = admin.logs.wait(&name, &role, after, limit, wait).await;
            json(
                StatusCode::OK,
                &serde_json::json!({ "lines": lines, "next": next }),
            )
        }
        Route::HasBlob(digest) => {
            let status = if controller.has_blob(&digest).await {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            text(status, "text/plain", String::new())
        }
        Route::PutBlob(digest) => {
            let bytes = read_body(request, admin.max_blob_bytes).await?;
            controller.put_blob(&digest, bytes).await?;
            json(
                StatusCode::CREATED,
                &serde_json::json!({ "digest": digest }),
            )
        }
        Route::Endpoints(service, role) => match &admin.fabric {
            Some(slot) => {
                let view = fabric_view::joined_view(Some(slot))?;
                json(StatusCode::OK, &view.endpoints(&service, &role).await?)
            }
            None => json(
                StatusCode::OK,
                &fabric_view::local_endpoints(controller, &service, &role).await?,
            ),
        },
        Route::FabricHosts => {
            let view = fabric_view::joined_view(admin.fabric.as_ref())?;
            json(StatusCode::OK, &view.hosts().await?)
        }
        Route::FabricServices => {
            let view = fabric_view::joined_view(admin.fabric.as_ref())?;
            json(StatusCode::OK, &view.status(None).await?)
        }
        Route::FabricService(service) => {
            let view = fabric_view::joined_view(admin.fabric.as_ref())?;
            json(StatusCode::OK, &view.status(Some(&service)).await?)
        }
        Route::Queues(s) => data::queues(&admin.queue_history, controller, &s).await?,
        Route::SendMessage(s, q) => data::send(controller, &s, &q, request).await?,
        Route::PeekMessages(s, q) => data::peek(controller, &s, &q, &query).await?,
        Route::PurgeQueue(s, q) => data::purge(controller, &s, &q).await?,
        Route::Redrive(s, q) => data::redrive(controller, &s, &q, request).await?,
        Route::Buckets(s) => data::buckets(controller, &s)?,
        Route::BucketKeys(s, b) => data::keys(controller, &s, &b, &query).await?,
        Route::BucketValue(s, b) => data::value(controller, &s, &b, &query).await?,
        Route::DeleteKeys(s, b) => data::delete_keys(controller, &s, &b, request).await?,
        Route::PurgeBucket(s, b) => data::purge_bucket(controller, &s, &b).await?,
        Route::Source(s) => data::source(controller, &s)?,
        Route::Metrics | Route::Healthz | Route::OpenApi => {
            return Err(ControllerError::Internal("an open route reached the API".into()).into());
        }
    })
}

/// What a log read asks for.
#[derive(Debug, PartialEq, Eq)]
struct LogQuery {
    /// Lines after this sequence number (default 0: the oldest kept).
    after: u64,
    /// At most this many lines (default, and at most, [`MAX_LOG_LINES`]).
    limit: usize,
    /// How long to wait for a line (default none, at most [`MAX_LOG_WAIT`]).
    wait: Duration,
}

impl LogQuery {
    fn parse(query: &str) -> Result<Self, ControllerError> {
        let number = |key: &str| query::number(query, key);
        let limit = number("limit")?.map_or(MAX_LOG_LINES, |n| {
            usize::try_from(n)
                .unwrap_or(MAX_LOG_LINES)
                .clamp(1, MAX_LOG_LINES)
        });
        Ok(Self {
            after: number("after")?.unwrap_or(0),
            limit,
            wait: Duration::from_millis(number("wait_ms")?.unwrap_or(0)).min(MAX_LOG_WAIT),
        })
    }
}

/// Why an API call failed: the controller refused it, or its body was too
/// large to read (413, before the controller sees it).
#[derive(Debug, thiserror::Error)]
enum ApiError {
    /// The controller's answer.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// The body is over its limit, in bytes.
    #[error("the body is over the limit of {0} bytes")]
    TooLarge(usize),
    /// The fabric's view's answer.
    #[error(transparent)]
    Fabric(#[from] FabricViewError),
}

async fn read_body(request: http::Request<LingeringBody>, limit: usize) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| u64::try_from(limit).is_ok_and(|limit| len > limit)) {
        return Err(ApiError::TooLarge(limit));
    }
    Limited::new(request.into_body(), limit)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::TooLarge(limit)
            } else {
                // Cut as too slow, or the client went away.
                ControllerError::Invalid(format!("the body: {e}")).into()
            }
        })
}

/// A JSON body of at most [`MAX_JSON_BYTES`], or one line saying why not.
async fn read_json<T: serde::de::DeserializeOwned>(
    request: http::Request<LingeringBody>,
) -> Result<T, ApiError> {
    parse_json(&read_body(request, MAX_JSON_BYTES).await?)
}

/// `bytes` as JSON, or one line saying why not.
fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ControllerError::Invalid(format!("the JSON body: {e}")).into())
}

/// The status and message an API error is answered with.
fn api_error(e: &ApiError) -> Reply {
    match e {
        ApiError::TooLarge(_) => error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
        ApiError::Controller(e) => controller_error(e),
        ApiError::Fabric(e) => {
            let status = match e {
                FabricViewError::NotFound(_) => StatusCode::NOT_FOUND,
                FabricViewError::Invalid(_) => StatusCode::BAD_REQUEST,
                FabricViewError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            error(status, &e.to_string())
        }
    }
}

fn controller_error(e: &ControllerError) -> Reply {
    let status = match e {
        ControllerError::NotFound(_) => StatusCode::NOT_FOUND,
        ControllerError::Conflict(_) => StatusCode::CONFLICT,
        ControllerError::Invalid(_) | ControllerError::Component(_) => StatusCode::BAD_REQUEST,
        ControllerError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ControllerError::Backend(e) => match e.kind() {
            OpenErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            OpenErrorKind::InvalidConfig => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_read_without_a_limit_gets_the_most_lines() {
        assert_eq!(
            LogQuery::parse("").unwrap(),
            LogQuery {
                after: 0,
                limit: MAX_LOG_LINES,
                wait: Duration::ZERO
            }
        );
        assert_eq!(
            LogQuery::parse("after=7&wait_ms=500").unwrap().limit,
            MAX_LOG_LINES
        );
        assert_eq!(LogQuery::parse("limit=0").unwrap().limit, 1);
        assert_eq!(LogQuery::parse("limit=5000").unwrap().limit, MAX_LOG_LINES);
        assert_eq!(
            LogQuery::parse("limit=5&after=3&wait_ms=99999").unwrap(),
            LogQuery {
                after: 3,
                limit: 5,
                wait: MAX_LOG_WAIT
            }
        );
        assert!(LogQuery::parse("limit=many").is_err());
    }

    const EXTREMES: [&str; 14] = [
        "0",
        "1",
        "-1",
        "4294967295",
        "4294967296",
        "9223372036854775807",
        "18446744073709551615",
        "18446744073709551616",
        "1e308",
        "-0.0",
        "1.5",
        "\"7\"",
        "null",
        "99999999999999999999999999999999",
    ];

    /// The API's numbers, fed extreme values: accepted within range or one
    /// line naming the field; never a panic.
    #[test]
    fn extreme_numbers_in_api_requests_are_refused_by_name() {
        for value in EXTREMES {
            let body = format!("{{\"count\": {value}}}");
            match scale_count(body.as_bytes()) {
                Ok(count) => assert_eq!(count.to_string(), value),
                Err(e) => {
                    let message = e.to_string();
                    assert!(
                        message.starts_with("count ") && !message.contains('\n'),
                        "{message}"
                    );
                }
            }
            for key in ["after", "limit", "wait_ms"] {
                match LogQuery::parse(&format!("{key}={value}")) {
                    Ok(query) => {
                        assert!(query.limit <= MAX_LOG_LINES && query.wait <= MAX_LOG_WAIT);
                        let _ = std::time::Instant::now() + query.wait;
                    }
                    Err(e) => assert!(e.to_string().contains(key), "{key}={value}: {e}"),
                }
            }
        }
        assert_eq!(scale_count(b"{\"count\": 3}").unwrap(), 3);
        assert!(scale_count(b"{\"count\": 3, \"more\": 1}").is_err());
    }
}

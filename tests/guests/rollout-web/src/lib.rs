//! Test guest: a web role whose behaviour its settings choose, for the
//! controller's deploy, upgrade and rollback tests.
//!
//! - `GET /` answers `version={version}` (the setting `version`, default
//!   `none`).
//! - `GET /health` answers 200, or 503 when the setting `healthy` is
//!   `false` (an upgrade to such a version must be rolled back).
//! - `GET /sleep/{ms}` sleeps, then answers `slept version={version}` (a
//!   request in flight across an upgrade or a shutdown).
//! - `POST /send/{queue}` sends each line of the body to the queue and
//!   answers `sent={n}` (503 on a transient failure).
//!
//! Its `start` hook prints `rollout-web: start version={version}` and fails
//! when the setting `start` is `fail`; its `stop` hook prints
//! `rollout-web: stop version={version}`.

use std::time::Duration;

use weft_sdk::wstd::http::body::util::BodyExt;
use weft_sdk::wstd::http::{Body, Error, Method, Request, Response, StatusCode};

fn setting(key: &str) -> Option<String> {
    weft_sdk::config::get(key).ok().flatten()
}

fn version() -> String {
    setting("version").unwrap_or_else(|| "none".into())
}

async fn handle(request: Request<Body>) -> Result<Response<Body>, Error> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (request.method().clone(), segments.as_slice()) {
        (Method::GET, [""]) => reply(StatusCode::OK, format!("version={}", version())),
        (Method::GET, ["health"]) => {
            if setting("healthy").as_deref() == Some("false") {
                reply(StatusCode::SERVICE_UNAVAILABLE, "unhealthy".into())
            } else {
                reply(StatusCode::OK, "ok".into())
            }
        }
        (Method::GET, ["sleep", ms]) => {
            let ms: u64 = ms.parse().unwrap_or(0);
            weft_sdk::wstd::task::sleep(Duration::from_millis(ms).into()).await;
            reply(StatusCode::OK, format!("slept version={}", version()))
        }
        (Method::POST, ["send", queue]) => {
            let queue = (*queue).to_owned();
            let body = request
                .into_body()
                .into_boxed_body()
                .collect()
                .await?
                .to_bytes();
            let text = String::from_utf8_lossy(&body).into_owned();
            let mut sent = 0;
            for line in text.lines().filter(|l| !l.is_empty()) {
                if let Err(e) = weft_sdk::queue::send(&queue, line) {
                    let status = if e.is_transient() {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    };
                    return reply(status, format!("sent={sent} error={e}"));
                }
                sent += 1;
            }
            reply(StatusCode::OK, format!("sent={sent}"))
        }
        _ => reply(StatusCode::NOT_FOUND, "not found".into()),
    }
}

fn reply(status: StatusCode, text: String) -> Result<Response<Body>, Error> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    Ok(response)
}

weft_sdk::web_role!(handle);

struct Hooks;

impl weft_sdk::lifecycle::Hooks for Hooks {
    fn start() -> Result<(), String> {
        println!("rollout-web: start version={}", version());
        match setting("start").as_deref() {
            Some("fail") => Err("asked to fail its start".into()),
            _ => Ok(()),
        }
    }

    fn stop() {
        println!("rollout-web: stop version={}", version());
    }
}

weft_sdk::role_hooks!(Hooks);

//! Test guest: a web role that sends the messages it is given, for the
//! durability tests (kill -9 under load, hosts sharing NATS).
//!
//! `POST /send/{queue}` with one message body per line sends each line, in
//! order, to the queue, and answers `200 sent={n}` once every send returned
//! (so every line of a 200 is stored). When a send fails it stops and
//! answers `503 sent={n} error={e}` for a transient failure (the backend is
//! down, a rate limit), `500` for any other; lines before it were stored.
//! `GET /length/{queue}` answers the queue's length.

use weft_sdk::wstd::http::body::util::BodyExt;
use weft_sdk::wstd::http::{Body, Error, Method, Request, Response, StatusCode};

async fn handle(request: Request<Body>) -> Result<Response<Body>, Error> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (request.method().clone(), segments.as_slice()) {
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
        (Method::GET, ["length", queue]) => match weft_sdk::queue::length(queue) {
            Ok(n) => reply(StatusCode::OK, n.to_string()),
            Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
        _ => reply(StatusCode::NOT_FOUND, "not found".into()),
    }
}

fn reply(status: StatusCode, text: String) -> Result<Response<Body>, Error> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    Ok(response)
}

weft_sdk::web_role!(handle);

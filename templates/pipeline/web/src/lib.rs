//! {{name}}'s web role: takes text jobs and answers their results.
//!
//! * `POST /jobs` with a text body records the job as `pending` in the
//!   bucket `jobs`, queues `ID\nTEXT` on the queue `jobs` for the worker,
//!   and answers `202 Accepted` with `{"id":"ID","status":"pending"}`.
//! * `GET /jobs/{id}` answers `{"id":..,"status":"pending"}`, or
//!   `{"id":..,"status":"done","words":N}` once the worker has counted.
//!
//! VMBus failures that may pass (rate limits, outages, key-value backend
//! errors) answer `503` with `Retry-After: 1`; others answer `500`.

use weft_sdk::kv::{self, Bucket};
use weft_sdk::wstd::http::{Body, Error, Method, Request, Response, StatusCode};

/// What the bucket holds for a job the worker has not counted yet.
const PENDING: &str = "pending";

async fn handle(request: Request<Body>) -> Result<Response<Body>, Error> {
    let path = request.uri().path().to_owned();
    match (request.method().clone(), path.strip_prefix("/jobs")) {
        (Method::POST, Some("")) => submit(request).await,
        (Method::GET, Some(rest)) if rest.starts_with('/') => status(&rest[1..]),
        (_, Some("")) => json(StatusCode::METHOD_NOT_ALLOWED, r#"{"error":"use POST"}"#),
        _ => json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#),
    }
}

/// `POST /jobs`: record the job as pending, then queue it.
async fn submit(request: Request<Body>) -> Result<Response<Body>, Error> {
    // The host has already bounded the body's size (the role's
    // `max-request-body-kib` limit).
    let body = request.into_body().bytes_contents().await?;
    let Ok(text) = std::str::from_utf8(&body) else {
        return json(StatusCode::BAD_REQUEST, r#"{"error":"the body must be UTF-8 text"}"#);
    };
    let id = new_job_id();
    if let Err(e) = Bucket::open("jobs").and_then(|jobs| jobs.set(&id, PENDING)) {
        return failure("recording a job", &e.to_string(), !is_kv_denial(&e));
    }
    if let Err(e) = weft_sdk::queue::send("jobs", format!("{id}\n{text}")) {
        // The job will never run: forget it rather than leave it pending.
        if let Err(e) = Bucket::open("jobs").and_then(|jobs| jobs.delete(&id)) {
            eprintln!("{{name}}-web: forgetting job {id} failed: {e}");
        }
        return failure("queueing a job", &e.to_string(), e.is_transient());
    }
    json(StatusCode::ACCEPTED, &format!(r#"{{"id":"{id}","status":"pending"}}"#))
}

/// `GET /jobs/{id}`: the job's record, as the worker left it.
fn status(id: &str) -> Result<Response<Body>, Error> {
    // Only ids this role made: nothing else is looked up or echoed.
    if !is_job_id(id) {
        return json(StatusCode::NOT_FOUND, r#"{"error":"no such job"}"#);
    }
    match Bucket::open("jobs").and_then(|jobs| jobs.get(id)) {
        Ok(None) => json(StatusCode::NOT_FOUND, r#"{"error":"no such job"}"#),
        Ok(Some(record)) if record == PENDING.as_bytes() => {
            json(StatusCode::OK, &format!(r#"{{"id":"{id}","status":"pending"}}"#))
        }
        Ok(Some(record)) => {
            let words = String::from_utf8_lossy(&record);
            let words: u64 = words.parse().unwrap_or_default();
            let body = format!(r#"{{"id":"{id}","status":"done","words":{words}}}"#);
            json(StatusCode::OK, &body)
        }
        Err(e) => failure("reading a job", &e.to_string(), !is_kv_denial(&e)),
    }
}

/// A random 128-bit id, in hex.
fn new_job_id() -> String {
    let mut bytes = [0u8; 16];
    weft_sdk::wstd::rand::get_random_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `id` has the shape [`new_job_id`] gives.
fn is_job_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether a key-value failure is the manifest's doing (a bucket it does not
/// grant), which no retry mends.
fn is_kv_denial(e: &kv::Error) -> bool {
    matches!(e, kv::Error::AccessDenied | kv::Error::NoSuchStore)
}

/// `503` for a failure that may pass, `500` for the rest.
fn failure(doing: &str, why: &str, may_pass: bool) -> Result<Response<Body>, Error> {
    eprintln!("{{name}}-web: {doing} failed: {why}");
    if may_pass {
        let body = r#"{"error":"busy, try again"}"#;
        return Ok(Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("content-type", "application/json")
            .header("retry-after", "1")
            .body(body.into())?);
    }
    json(StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":"internal error"}"#)
}

fn json(status: StatusCode, body: &str) -> Result<Response<Body>, Error> {
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_owned().into())?)
}

weft_sdk::web_role!(handle);

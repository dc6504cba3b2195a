//! The pipeline's web role: accepts text jobs and reports their status.
//!
//! * `POST /jobs` with a UTF-8 text body (1 byte to 64 KiB) records the job
//!   as `pending` in the key-value bucket `jobs`, queues it on the queue
//!   `jobs` for the worker role, and answers `202 Accepted` with
//!   `{"id":..,"status":"pending"}` and `Location: /jobs/{id}`.
//! * `GET /jobs/{id}` answers the job's record: `pending`, `done` with its
//!   `result`, or `failed` with its `reason`.
//!
//! VMBus failures that may pass (queue rate limits and outages, key-value
//! backend errors) answer `503` with `Retry-After: 1`. A full `jobs` bucket
//! does not pass by itself (its records expire after the manifest's
//! `ttl-seconds`, or an operator purges it), so it answers `507 Insufficient
//! Storage` with `{"error": "job store full", "reason": ...}` rather than
//! ask clients to retry at once. Other failures (a bucket or queue the
//! manifest does not grant) answer `500`.

use serde_json::json;
use weft_sdk::kv::{self, Bucket};
use weft_sdk::wstd::http::body::util::{BodyExt, Limited};
use weft_sdk::wstd::http::{Body, Error, Method, Request, Response, StatusCode};

/// The largest job text accepted, in bytes.
const MAX_TEXT: usize = 64 * 1024;

async fn handle(request: Request<Body>) -> Result<Response<Body>, Error> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (request.method().clone(), segments.as_slice()) {
        (Method::POST, ["jobs"]) => submit(request).await,
        (Method::GET, ["jobs", id]) if !id.is_empty() => status(id),
        (_, ["jobs"]) => method_not_allowed("POST"),
        (_, ["jobs", id]) if !id.is_empty() => method_not_allowed("GET"),
        _ => json_reply(StatusCode::NOT_FOUND, &json!({ "error": "not found" })),
    }
}

/// `POST /jobs`: validate the text, record the job, queue it.
async fn submit(request: Request<Body>) -> Result<Response<Body>, Error> {
    let text = match read_text(request).await {
        Ok(text) => text,
        Err((status, reason)) => return json_reply(status, &json!({ "error": reason })),
    };
    let id = new_job_id();
    let pending = json!({ "id": id, "status": "pending" });

    let jobs = match Bucket::open("jobs") {
        Ok(jobs) => jobs,
        Err(e) => return kv_failure(&e),
    };
    if let Err(e) = jobs.set(&id, pending.to_string()) {
        return kv_failure(&e);
    }
    let message = json!({ "id": id, "text": text }).to_string();
    if let Err(e) = weft_sdk::queue::send("jobs", message) {
        // The job will never run: forget it rather than leave it pending.
        if let Err(e) = jobs.delete(&id) {
            eprintln!("pipeline-web: could not forget job {id}: {e}");
        }
        return queue_failure(&e);
    }

    let location = format!("/jobs/{id}");
    reply(StatusCode::ACCEPTED, &pending, &[("location", &location)])
}

/// Reads the body as UTF-8 text of 1 byte to [`MAX_TEXT`], or says why not.
async fn read_text(request: Request<Body>) -> Result<String, (StatusCode, &'static str)> {
    const TOO_LARGE: (StatusCode, &str) = (StatusCode::PAYLOAD_TOO_LARGE, "body over 64 KiB");
    let body = request.into_body();
    let declared_too_large = body
        .content_length()
        .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > MAX_TEXT));
    if declared_too_large {
        return Err(TOO_LARGE);
    }
    let bytes = match Limited::new(body.into_boxed_body(), MAX_TEXT)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<weft_sdk::wstd::http::body::util::LengthLimitError>() => {
            return Err(TOO_LARGE);
        }
        Err(_) => return Err((StatusCode::BAD_REQUEST, "could not read the body")),
    };
    if bytes.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            "empty body: send the text to analyse",
        ));
    }
    String::from_utf8(bytes.to_vec())
        .map_err(|_| (StatusCode::BAD_REQUEST, "body is not UTF-8 text"))
}

/// `GET /jobs/{id}`: the stored record, as the worker left it.
fn status(id: &str) -> Result<Response<Body>, Error> {
    let record = Bucket::open("jobs").and_then(|jobs| jobs.get(id));
    match record {
        Ok(Some(record)) => Ok(Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(record.into())?),
        Ok(None) => json_reply(StatusCode::NOT_FOUND, &json!({ "error": "no such job" })),
        Err(e) => kv_failure(&e),
    }
}

/// A new job's id, in hex: the time in milliseconds (48 bits), then 80
/// random bits. Ids made close in time sort close together, so a burst of
/// new records lands in a few pages of the store's B-tree instead of one
/// page each (the store writes every page a commit touches), and the
/// random part keeps them unguessable and unique.
fn new_job_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut random = [0u8; 10];
    weft_sdk::wstd::rand::get_random_bytes(&mut random);
    let mut id = format!("{:012x}", millis & 0xffff_ffff_ffff);
    id.extend(random.iter().map(|b| format!("{b:02x}")));
    id
}

fn json_reply(status: StatusCode, body: &serde_json::Value) -> Result<Response<Body>, Error> {
    reply(status, body, &[])
}

/// A JSON response with extra headers.
fn reply(
    status: StatusCode,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> Result<Response<Body>, Error> {
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    Ok(response.body(body.to_string().into())?)
}

fn method_not_allowed(allow: &str) -> Result<Response<Body>, Error> {
    let body = json!({ "error": "method not allowed" });
    reply(StatusCode::METHOD_NOT_ALLOWED, &body, &[("allow", allow)])
}

fn queue_failure(e: &weft_sdk::Error) -> Result<Response<Body>, Error> {
    eprintln!("pipeline-web: queueing a job failed: {e}");
    match e {
        e if e.is_transient() => unavailable(),
        weft_sdk::Error::TooLarge(_) => json_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({ "error": "job too large once encoded" }),
        ),
        _ => internal_error(),
    }
}

fn kv_failure(e: &kv::Error) -> Result<Response<Body>, Error> {
    eprintln!("pipeline-web: key-value call failed: {e}");
    match e {
        kv::Error::BucketFull(why) => json_reply(
            StatusCode::INSUFFICIENT_STORAGE,
            &json!({ "error": "job store full", "reason": why }),
        ),
        // Backend trouble (an outage, a rate limit) may pass.
        kv::Error::Other(_) => unavailable(),
        _ => internal_error(),
    }
}

fn unavailable() -> Result<Response<Body>, Error> {
    let body = json!({ "error": "busy; retry shortly" });
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        &body,
        &[("retry-after", "1")],
    )
}

fn internal_error() -> Result<Response<Body>, Error> {
    json_reply(
        StatusCode::INTERNAL_SERVER_ERROR,
        &json!({ "error": "internal error" }),
    )
}

weft_sdk::web_role!(handle);

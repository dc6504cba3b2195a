//! The admin API's routes for an operator's hands on a running service's
//! data (its queues and buckets), and its deployment source:
//!
//! - queues: list them with their lengths and history
//!   ([`crate::queue_history`]), send a message, peek (a poison queue too,
//!   while the service runs: the store is the running service's own),
//!   purge, and move poison messages back (all, or by id);
//! - buckets: list them, page through keys, read a value, delete keys,
//!   purge;
//! - the [`DeploymentSource`](crate::controller::store::DeploymentSource)
//!   in force, for the dashboard's upgrade form.
//!
//! Only queues and buckets a role of the service is granted (and the poison
//! queue of a granted queue) are reached; anything else is 404
//! ([`ServiceData`](crate::controller::data::ServiceData)). None of it
//! changes a service's desired state, so it works for services the fabric
//! runs too. Each change is logged with the service, the queue or bucket
//! and how many messages or keys it touched.
//!
//! Bodies are bounded before they are read (`MAX_JSON_BYTES`), a message's
//! bytes at [`MAX_MESSAGE_BYTES`] (413). A read (peek, keys, a value) is
//! bounded at [`READ_TIMEOUT`] (503 naming the queue or bucket backend), so
//! a NATS server that does not answer holds no request for long. A change
//! (send, purge, redrive, purge a bucket) is not: once submitted, it runs
//! to its end in a task of its own, even if the client goes away, and its
//! answer is what it did. A 503 after a timeout would be a lie, since the
//! embedded store applies a change in memory before its fsync returns and a
//! NATS redrive of a large poison queue moves messages one by one. A delete
//! of keys is the one change with a bound ([`DELETE_KEYS_TIMEOUT`], for the
//! whole request, not per key): past it, no further key is started, and the
//! 503 says how many were deleted.
//!
//! The request and answer types are public: the `weft queue` and `weft
//! bucket` commands read and write the same ones.

use super::{ApiError, MAX_JSON_BYTES, Reply, json, parse_json, query, read_body, read_json};
use crate::controller::{Controller, ControllerError};
use crate::lingering::LingeringBody;
use crate::queue_history::{QueueHistory, lengths};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use weft_broker::{
    BrokerError, KvStore, MAX_BATCH, MAX_KEY_BYTES, MAX_MESSAGE_BYTES, POISON_SUFFIX, SendOptions,
};
use weft_sandbox::vmbus::queue::MAX_DELAY_MS;

mod wire;

pub use wire::{
    DeleteKeysRequest, KeysPage, PeekedMessage, QueueView, RedriveRequest, SendRequest, Sent,
};

/// Messages a peek shows unless `max` says otherwise.
pub const DEFAULT_PEEK: u32 = 10;
/// The most keys one delete may name.
pub const MAX_DELETE_KEYS: usize = 1000;
/// How long a read may take before the answer is 503.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a delete of keys starts new keys: one bound for the whole
/// request (the key under way when it passes is finished).
pub const DELETE_KEYS_TIMEOUT: Duration = Duration::from_secs(10);

/// Which backend a call goes to, named when it does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Queue,
    Bucket,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Queue => "the queue backend",
            Self::Bucket => "the bucket backend",
        }
    }
}

/// A 200 whose body is the object `{name: value}`, as most routes here
/// answer.
fn ok_with(name: &str, value: impl serde::Serialize) -> Reply {
    json(StatusCode::OK, &serde_json::json!({ name: value }))
}

/// `GET /v1/services/{service}/queues`.
pub(super) async fn queues(
    history: &QueueHistory,
    controller: &Controller,
    service: &str,
) -> Result<Reply, ApiError> {
    let data = controller.service_data(service)?;
    let queues: Vec<QueueView> = lengths(&data)
        .await
        .into_iter()
        .map(|found| QueueView {
            history: history.of(service, &found.name),
            length: found.length,
            poison_length: found.poison_length,
            name: found.name,
        })
        .collect();
    Ok(ok_with("queues", queues))
}

/// `POST /v1/services/{service}/queues/{queue}/messages`.
pub(super) async fn send(
    controller: &Controller,
    service: &str,
    queue: &str,
    request: http::Request<LingeringBody>,
) -> Result<Reply, ApiError> {
    let data = controller.service_data(service)?;
    let scoped = data.queue(queue)?;
    let asked: SendRequest = read_json(request).await?;
    let body = message_body(&asked)?;
    let delay = send_delay(asked.delay_ms)?;
    let bytes = body.len();
    let queues = data.backends.queues;
    let id = change(async move {
        queues
            .send(&scoped, body, SendOptions::delayed(delay))
            .await
    })
    .await?;
    tracing::info!(service, queue, bytes, id = %id, "an operator sent a message");
    Ok(json(StatusCode::CREATED, &Sent { id }))
}

/// How long a sent message stays invisible: at most [`MAX_DELAY_MS`], as a
/// guest's sends.
fn send_delay(delay_ms: Option<u64>) -> Result<Duration, ApiError> {
    match delay_ms {
        Some(ms) if ms > u64::from(MAX_DELAY_MS) => Err(invalid(format!(
            "delay_ms must be at most {MAX_DELAY_MS} (7 days), not {ms}"
        ))),
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Ok(Duration::ZERO),
    }
}

/// A peek's `max`: 1 to [`MAX_BATCH`], [`DEFAULT_PEEK`] if not given.
fn peek_max(text: &str) -> Result<u32, ApiError> {
    match query::value(text, "max") {
        None => Ok(DEFAULT_PEEK),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_BATCH).contains(n))
            .ok_or_else(|| invalid(format!("max must be 1 to {MAX_BATCH}, not '{text}'"))),
    }
}

/// The bytes `asked` carries: its text or its base64, one of the two, at
/// most [`MAX_MESSAGE_BYTES`].
fn message_body(asked: &SendRequest) -> Result<Vec<u8>, ApiError> {
    let body = match (&asked.body, &asked.body_base64) {
        (Some(text), None) => text.clone().into_bytes(),
        (None, Some(encoded)) => BASE64
            .decode(encoded)
            .map_err(|e| invalid(format!("body_base64 is not valid base64: {e}")))?,
        _ => {
            return Err(invalid(
                "give the message as exactly one of \"body\" (text) or \"body_base64\"".into(),
            ));
        }
    };
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::TooLarge(MAX_MESSAGE_BYTES));
    }
    Ok(body)
}

/// `GET /v1/services/{service}/queues/{queue}/messages?max=N`.
pub(super) async fn peek(
    controller: &Controller,
    service: &str,
    queue: &str,
    query: &str,
) -> Result<Reply, ApiError> {
    let max = peek_max(query)?;
    let data = controller.service_data(service)?;
    let scoped = data.queue(queue)?;
    let peeked = read(Backend::Queue, data.backends.queues.peek(&scoped, max)).await?;
    let messages: Vec<PeekedMessage> = peeked
        .into_iter()
        .map(|message| PeekedMessage {
            body_base64: BASE64.encode(&message.body),
            body: String::from_utf8(message.body).ok(),
            id: message.id,
            dequeue_count: message.dequeue_count,
            inserted_at_ms: message.inserted_at_ms,
            poison_reason: message.poison_reason,
            trace_parent: message.trace_parent,
        })
        .collect();
    Ok(ok_with("messages", messages))
}

/// `DELETE /v1/services/{service}/queues/{queue}/messages`.
pub(super) async fn purge(
    controller: &Controller,
    service: &str,
    queue: &str,
) -> Result<Reply, ApiError> {
    let data = controller.service_data(service)?;
    let scoped = data.queue(queue)?;
    let queues = data.backends.queues;
    let purged = change(async move { queues.purge(&scoped).await }).await?;
    tracing::info!(service, queue, purged, "an operator purged a queue");
    Ok(ok_with("purged", purged))
}

/// `POST /v1/services/{service}/queues/{queue}/redrive`: an empty body
/// counts as `{}` (all).
pub(super) async fn redrive(
    controller: &Controller,
    service: &str,
    queue: &str,
    request: http::Request<LingeringBody>,
) -> Result<Reply, ApiError> {
    let data = controller.service_data(service)?;
    let scoped = data.queue(queue)?;
    if queue.ends_with(POISON_SUFFIX) {
        return Err(invalid(format!(
            "redrive names the queue to move messages back to, not its poison queue ('{}')",
            queue.trim_end_matches(POISON_SUFFIX)
        )));
    }
    let bytes = read_body(request, MAX_JSON_BYTES).await?;
    let asked: RedriveRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        RedriveRequest::default()
    } else {
        parse_json(&bytes)?
    };
    let queues = data.backends.queues;
    let moved = change(async move { queues.redrive(&scoped, asked.ids.as_deref()).await }).await?;
    tracing::info!(
        service,
        queue,
        moved = moved.len(),
        "an operator moved poison messages back"
    );
    Ok(ok_with("moved", moved))
}

/// `GET /v1/services/{service}/buckets`.
pub(super) fn buckets(controller: &Controller, service: &str) -> Result<Reply, ApiError> {
    let data = controller.service_data(service)?;
    let buckets: Vec<serde_json::Value> = data
        .buckets
        .iter()
        .map(|(name, ttl)| serde_json::json!({ "name": name, "ttl_seconds": ttl }))
        .collect();
    Ok(ok_with("buckets", buckets))
}

/// `GET /v1/services/{service}/buckets/{bucket}/keys?cursor=N`.
pub(super) async fn keys(
    controller: &Controller,
    service: &str,
    bucket: &str,
    query: &str,
) -> Result<Reply, ApiError> {
    let cursor = query::number(query, "cursor")?;
    let data = controller.service_data(service)?;
    let scoped = data.bucket(bucket)?;
    let page = read(Backend::Bucket, data.backends.kv.list_keys(&scoped, cursor)).await?;
    Ok(json(
        StatusCode::OK,
        &KeysPage {
            keys: page.keys,
            cursor: page.cursor,
        },
    ))
}

/// `GET /v1/services/{service}/buckets/{bucket}/value?key=K`: the bytes.
pub(super) async fn value(
    controller: &Controller,
    service: &str,
    bucket: &str,
    query: &str,
) -> Result<Reply, ApiError> {
    let key = query::value(query, "key")
        .ok_or_else(|| invalid("the key is missing: ?key=K (percent-encoded)".into()))
        .and_then(percent_decode)?;
    check_key(&key)?;
    let data = controller.service_data(service)?;
    let scoped = data.bucket(bucket)?;
    match read(Backend::Bucket, data.backends.kv.get(&scoped, &key)).await? {
        Some(value) => {
            let mut reply = Response::new(Full::new(Bytes::from(value)));
            reply.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            // A browser that opens the value saves it, never renders it.
            reply.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment"),
            );
            Ok(reply)
        }
        None => {
            Err(ControllerError::NotFound(format!("bucket '{bucket}' has no key '{key}'")).into())
        }
    }
}

/// `POST /v1/services/{service}/buckets/{bucket}/keys/delete`: the count
/// is of the keys that existed just before each was deleted, best-effort
/// while guests write the bucket too (a key a guest deletes between the
/// look and the delete is counted; one it writes then is deleted but not).
pub(super) async fn delete_keys(
    controller: &Controller,
    service: &str,
    bucket: &str,
    request: http::Request<LingeringBody>,
) -> Result<Reply, ApiError> {
    let data = controller.service_data(service)?;
    let scoped = data.bucket(bucket)?;
    let asked: DeleteKeysRequest = read_json(request).await?;
    check_keys(&asked.keys)?;
    let kv = data.backends.kv;
    let named = asked.keys.len();
    let done = change(async move {
        Ok(delete_each(kv.as_ref(), &scoped, &asked.keys, DELETE_KEYS_TIMEOUT).await)
    })
    .await?;
    tracing::info!(
        service,
        bucket,
        deleted = done.deleted,
        "an operator deleted keys"
    );
    let deleted = done.answer(named)?;
    Ok(ok_with("deleted", deleted))
}

/// What a delete of keys did.
#[derive(Debug)]
struct Deleted {
    /// Keys that existed and were deleted.
    deleted: u64,
    /// Keys looked at (deleted, or missing).
    tried: usize,
    /// Why it stopped before the last key, if it did.
    stopped: Option<Stopped>,
}

#[derive(Debug)]
enum Stopped {
    /// [`DELETE_KEYS_TIMEOUT`] passed.
    OutOfTime,
    /// The backend refused or failed.
    Failed(BrokerError),
}

impl Deleted {
    /// The answer: the count, or an error that says what was done.
    fn answer(self, named: usize) -> Result<u64, ApiError> {
        let Self { deleted, tried, .. } = self;
        let done = format!("deleted {deleted} of the {named} keys (the first {tried} were tried)");
        match self.stopped {
            None => Ok(deleted),
            Some(Stopped::OutOfTime) => Err(ControllerError::Unavailable(format!(
                "the bucket backend took over {} s: {done}; send the rest again",
                DELETE_KEYS_TIMEOUT.as_secs()
            ))
            .into()),
            Some(Stopped::Failed(e)) => Err(broker_error(e, &format!("{done}, then: "))),
        }
    }
}

/// Deletes each of `keys` of `bucket` that exists, one after another, and
/// starts none once `bound` has passed.
async fn delete_each(kv: &dyn KvStore, bucket: &str, keys: &[String], bound: Duration) -> Deleted {
    let deadline = Instant::now() + bound;
    let mut done = Deleted {
        deleted: 0,
        tried: 0,
        stopped: None,
    };
    for key in keys {
        if Instant::now() >= deadline {
            done.stopped = Some(Stopped::OutOfTime);
            break;
        }
        let deleted = match kv.exists(bucket, key).await {
            Ok(true) => kv.delete(bucket, key).await.map(|()| true),
            other => other,
        };
        match deleted {
            Ok(existed) => {
                done.deleted += u64::from(existed);
                done.tried += 1;
            }
            Err(e) => {
                done.stopped = Some(Stopped::Failed(e));
                break;
            }
        }
    }
    done
}

/// `DELETE /v1/services/{service}/buckets/{bucket}/keys`.
pub(super) async fn purge_bucket(
    controller: &Controller,
    service: &str,
    bucket: &str,
) -> Result<Reply, ApiError> {
    let data = controller.service_data(service)?;
    let scoped = data.bucket(bucket)?;
    let kv = data.backends.kv;
    let purged = change(async move { kv.purge_bucket(&scoped).await }).await?;
    tracing::info!(service, bucket, purged, "an operator purged a bucket");
    Ok(ok_with("purged", purged))
}

/// `GET /v1/services/{service}/source`.
pub(super) fn source(controller: &Controller, service: &str) -> Result<Reply, ApiError> {
    let record = controller
        .record(service)
        .ok_or_else(|| ControllerError::NotFound(format!("no service '{service}' on this host")))?;
    Ok(json(StatusCode::OK, &record.source))
}

fn invalid(why: String) -> ApiError {
    ControllerError::Invalid(why).into()
}

/// Runs one read, bounded by [`READ_TIMEOUT`] (a 503 naming `backend`),
/// its error mapped to the API's. Dropping a read loses nothing.
async fn read<T>(
    backend: Backend,
    call: impl Future<Output = Result<T, BrokerError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(READ_TIMEOUT, call).await {
        Ok(outcome) => outcome.map_err(|e| broker_error(e, "")),
        Err(_) => Err(ControllerError::Unavailable(format!(
            "{} did not answer in {} s",
            backend.name(),
            READ_TIMEOUT.as_secs()
        ))
        .into()),
    }
}

/// Runs one change to its end in a task of its own, so neither a slow
/// backend nor a client that goes away cuts it short, and answers what it
/// did (as the removal of a service in `admin/mod.rs` does).
async fn change<T: Send + 'static>(
    call: impl Future<Output = Result<T, BrokerError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(call)
        .await
        .map_err(|e| ControllerError::Internal(format!("the change failed: {e}")))?
        .map_err(|e| broker_error(e, ""))
}

/// A backend's error as the API's, its message after `done` (what was
/// done before it).
fn broker_error(e: BrokerError, done: &str) -> ApiError {
    let why = format!("{done}{e}");
    match e {
        BrokerError::Invalid(_) | BrokerError::TooLarge(_) => ControllerError::Invalid(why),
        BrokerError::NotFound(_) => ControllerError::NotFound(why),
        BrokerError::Unavailable(_) | BrokerError::BucketFull(_) => {
            ControllerError::Unavailable(why)
        }
        _ => ControllerError::Internal(why),
    }
    .into()
}

/// The keys of one delete: at most [`MAX_DELETE_KEYS`], each checked
/// before any is deleted.
fn check_keys(keys: &[String]) -> Result<(), ApiError> {
    if keys.len() > MAX_DELETE_KEYS {
        return Err(invalid(format!(
            "at most {MAX_DELETE_KEYS} keys at a time, not {}",
            keys.len()
        )));
    }
    keys.iter().try_for_each(|key| check_key(key))
}

/// A key a guest could have written: 1 to [`MAX_KEY_BYTES`] bytes.
fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(invalid(format!(
            "a key must be 1 to {MAX_KEY_BYTES} bytes, not {}",
            key.len()
        )));
    }
    Ok(())
}

/// `%XX` escapes decoded (a `+` stays a `+`: `encodeURIComponent` writes a
/// space as `%20`; a `%` without two hex digits stays as it is, as a
/// browser's URL parser keeps it); the result must be UTF-8.
fn percent_decode(text: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| invalid("the key is not valid percent-encoded UTF-8".into()))
}

#[cfg(test)]
mod tests;

//! Traces end to end: a real `weft` exporting to a real OTLP/HTTP receiver
//! (a hyper server here, decoding each POST with OpenTelemetry's own
//! `ExportTraceServiceRequest`), and to a collector that never answers.

use crate::support::{
    Weft, error_line, eventually, http, pipeline_manifest, run_weft, serve, up_with,
};
use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use weft_test_artifacts::{HELLO_WEB, P3_HELLO};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP receiver: every span of every well-formed POST to
/// `/v1/traces`, and what it refused.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    refused: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    /// Starts it on a free port; returns its base URL.
    async fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let collector = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let collector = collector.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let collector = collector.clone();
                        async move { collector.receive(request).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        url
    }

    async fn receive(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> anyhow::Result<hyper::Response<Full<Bytes>>> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await?.to_bytes();
        let decoded = (parts.uri.path() == "/v1/traces")
            .then_some(())
            .context("not /v1/traces")
            .and_then(|()| {
                let kind = parts
                    .headers
                    .get("content-type")
                    .context("no content-type")?;
                anyhow::ensure!(kind == "application/x-protobuf", "content-type {kind:?}");
                Ok(ExportTraceServiceRequest::decode(body)?)
            });
        let status = match decoded {
            Ok(request) => {
                let spans = request
                    .resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans);
                self.spans.lock().unwrap().extend(spans);
                200
            }
            Err(why) => {
                self.refused.lock().unwrap().push(why.to_string());
                400
            }
        };
        Ok(hyper::Response::builder()
            .status(status)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::new()))?)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attribute(span, key)? {
        Value::StringValue(text) => Some(text),
        _ => None,
    }
}

fn int(span: &Span, key: &str) -> Option<i64> {
    match attribute(span, key)? {
        Value::IntValue(n) => Some(*n),
        _ => None,
    }
}

/// Sends `body` to `url` with a `traceparent` header.
async fn send_traced(
    method: &str,
    url: &str,
    traceparent: &str,
    body: &str,
) -> anyhow::Result<u16> {
    let uri: http::Uri = url.parse()?;
    let authority = uri.authority().context("no host")?.clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header("host", authority.as_str())
        .header("traceparent", traceparent)
        .body(Full::new(Bytes::from(body.to_owned())))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

/// `weft up` on the pipeline (a web role sending to `jobs`, two workers
/// receiving), exporting to `endpoint`.
fn pipeline(dir: &std::path::Path, endpoint: &str) -> Weft {
    let manifest = dir.join("weft.toml");
    std::fs::write(&manifest, pipeline_manifest("traced", "", "")).unwrap();
    up_with(&manifest, &["--otlp-endpoint", endpoint])
}

#[tokio::test]
async fn a_request_its_send_and_the_delivery_form_one_trace() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let dir = tempfile::tempdir().unwrap();
    let weft = pipeline(dir.path(), &endpoint);

    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let url = format!("{}/jobs", weft.url("web"));
    let status = send_traced("POST", &url, &traceparent, "one two three")
        .await
        .unwrap();
    assert_eq!(status, 202);

    let in_trace = |collector: &Collector| -> Vec<Span> {
        let spans = collector.spans();
        spans
            .into_iter()
            .filter(|s| hex(&s.trace_id) == TRACE_ID)
            .collect()
    };
    // The request, its send, and the delivery (once the worker completed it).
    let spans = eventually(Duration::from_secs(30), "the trace's three spans", || {
        let spans = in_trace(&collector);
        async move {
            let done = spans
                .iter()
                .any(|s| s.name == "weft.deliver" && text(s, "weft.outcome") == Some("completed"));
            (done && spans.iter().any(|s| s.name == "weft.request")).then_some(spans)
        }
    })
    .await;

    let request = spans.iter().find(|s| s.name == "weft.request").unwrap();
    assert_eq!(hex(&request.parent_span_id), PARENT_ID);
    assert_eq!(text(request, "weft.service"), Some("traced"));
    assert_eq!(text(request, "weft.role"), Some("web"));
    assert_eq!(text(request, "weft.outcome"), Some("202"));
    assert!(text(request, "weft.instance").is_some_and(|i| i.starts_with("req-")));
    assert!(
        int(request, "weft.fuel").is_some_and(|f| f > 0),
        "{request:?}"
    );
    assert!(request.end_time_unix_nano >= request.start_time_unix_nano);

    let send = spans
        .iter()
        .find(|s| s.name == "weft.vmbus" && text(s, "weft.call") == Some("queue.send"))
        .expect("a span for the send");
    assert_eq!(send.parent_span_id, request.span_id);
    assert_eq!(text(send, "weft.outcome"), Some("ok"));
    // Its key-value calls too: the bucket opened, the job recorded.
    for call in ["keyvalue.open", "keyvalue.set"] {
        let kv = spans
            .iter()
            .find(|s| text(s, "weft.call") == Some(call) && s.parent_span_id == request.span_id)
            .unwrap_or_else(|| panic!("a span for the request's {call}"));
        assert_eq!(kv.name, "weft.vmbus");
        assert_eq!(text(kv, "weft.bucket"), Some("jobs"));
        assert_eq!(text(kv, "weft.outcome"), Some("ok"));
        assert_eq!(text(kv, "weft.role"), Some("web"));
    }

    let deliver = spans.iter().find(|s| s.name == "weft.deliver").unwrap();
    assert_eq!(deliver.parent_span_id, send.span_id, "the sender's span");
    assert_eq!(text(deliver, "weft.role"), Some("worker"));
    assert_eq!(
        text(deliver, "weft.queue").map(|q| q.ends_with("jobs")),
        Some(true)
    );
    assert!(text(deliver, "weft.instance").is_some());
    assert!(
        int(deliver, "weft.fuel").is_some_and(|f| f > 0),
        "{deliver:?}"
    );
    // The worker's own calls while handling it (its batch's results stored
    // in one set-many, its batch completed in one call) join the trace.
    for call in ["keyvalue.set-many", "queue.complete-batch"] {
        assert!(
            spans
                .iter()
                .any(|s| text(s, "weft.call") == Some(call) && s.parent_span_id == deliver.span_id),
            "{call}"
        );
    }

    // A request without a traceparent (or with a broken one) starts a trace.
    let status = send_traced("POST", &url, "00-not-a-trace", "four")
        .await
        .unwrap();
    assert_eq!(status, 202);
    eventually(Duration::from_secs(30), "a new trace", || {
        let spans = collector.spans();
        async move {
            spans
                .iter()
                .any(|s| {
                    s.name == "weft.request"
                        && hex(&s.trace_id) != TRACE_ID
                        && s.parent_span_id.is_empty()
                })
                .then_some(())
        }
    })
    .await;
    assert!(collector.refused.lock().unwrap().is_empty());
}

/// A host stopped with SIGTERM sends what it still held: its last
/// request's span, waiting for its batch's interval (1 s) when the signal
/// came, is exported before the process ends, not lost with it.
#[tokio::test]
async fn a_stopped_host_sends_the_spans_it_still_held() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let mut weft = serve(HELLO_WEB, &["--otlp-endpoint", &endpoint]);
    let last = "0af7651916cd43dd8448eb211c80319c";
    let traceparent = format!("00-{last}-{PARENT_ID}-01");
    let url = format!("{}/", weft.url("web"));
    let status = send_traced("GET", &url, &traceparent, "").await.unwrap();
    assert_eq!(status, 200);

    // Waited for off the runtime: the collector answers on it meanwhile.
    let (weft, stopped) = tokio::task::spawn_blocking(move || {
        let stopped = weft.terminate();
        (weft, stopped)
    })
    .await
    .unwrap();
    assert!(stopped.unwrap().success(), "{}", weft.log());
    // The process has ended: what it sent has arrived.
    let spans = collector.spans();
    let request = spans
        .iter()
        .find(|s| s.name == "weft.request" && hex(&s.trace_id) == last)
        .unwrap_or_else(|| panic!("the last request's span; got {spans:?}"));
    assert_eq!(text(request, "weft.outcome"), Some("200"));
    assert!(collector.refused.lock().unwrap().is_empty());
}

/// A WASIp3 request's span lasts until its body is done, as a WASIp2
/// request's does: a guest that writes the rest of its body 400 ms after
/// its handler returned the head makes a span of at least 400 ms, ending
/// with the status.
#[tokio::test]
async fn a_wasip3_requests_span_lasts_until_its_body_is_done() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let weft = serve(P3_HELLO, &["--otlp-endpoint", &endpoint]);
    let trace = "5cf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-{PARENT_ID}-01");
    let url = format!("{}/drip?ms=400", weft.url("web"));
    let status = send_traced("GET", &url, &traceparent, "").await.unwrap();
    assert_eq!(status, 200);
    let request = eventually(Duration::from_secs(20), "the request's span", || async {
        collector
            .spans()
            .into_iter()
            .find(|s| s.name == "weft.request" && hex(&s.trace_id) == trace)
    })
    .await;
    let lasted = request
        .end_time_unix_nano
        .saturating_sub(request.start_time_unix_nano);
    assert!(
        Duration::from_nanos(lasted) >= Duration::from_millis(400),
        "the span ended {lasted} ns after it began, before the body"
    );
    assert_eq!(text(&request, "weft.outcome"), Some("200"));
    assert_eq!(hex(&request.parent_span_id), PARENT_ID);
    assert!(
        collector.refused.lock().unwrap().is_empty(),
        "{}",
        weft.log()
    );
}

/// The `weft_trace_spans_dropped_total` value on the admin's `/metrics`.
async fn dropped(weft: &Weft) -> Option<u64> {
    let admin = weft.admin.as_deref()?;
    let reply = http("GET", &format!("{admin}/metrics"), "").await.ok()?;
    reply
        .body
        .lines()
        .find_map(|l| l.strip_prefix("weft_trace_spans_dropped_total "))
        .and_then(|n| n.trim().parse().ok())
}

#[tokio::test]
async fn a_collector_that_never_answers_costs_spans_not_requests() {
    // Accepts connections and reads nothing: every export hangs.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
            let _ = accepted_tx.send(());
        }
    });
    let weft = serve(
        HELLO_WEB,
        &["--otlp-endpoint", &endpoint, "--otlp-queue-spans", "8"],
    );
    let url = format!("{}/", weft.url("web"));
    assert_eq!(dropped(&weft).await, Some(0));

    // Each request is two spans: its own, and its `config.get`'s.
    const SPANS: u64 = 2;
    // The first request's batch goes out and hangs; the queue then holds 8.
    assert_eq!(http("GET", &url, "").await.unwrap().status, 200);
    accepted.recv().await.unwrap();
    for _ in 0..40 {
        let reply = http("GET", &url, "").await.unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let dropped = eventually(Duration::from_secs(30), "dropped spans counted", || async {
        dropped(&weft).await.filter(|n| *n >= 40 * SPANS - 8)
    })
    .await;
    assert!(dropped <= 41 * SPANS, "{dropped}");
    // And it keeps serving.
    assert_eq!(http("GET", &url, "").await.unwrap().status, 200);
}

#[test]
fn an_https_or_malformed_endpoint_is_refused_with_one_line() {
    for (endpoint, says) in [
        ("https://collector:4318", "https is not supported"),
        ("collector:4318", "is not an http://HOST[:PORT] URL"),
    ] {
        let (ok, stderr) = run_weft(&[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--otlp-endpoint",
            endpoint,
            HELLO_WEB,
        ]);
        assert!(!ok);
        let line = error_line(&stderr);
        assert!(line.contains(says), "{line}");
    }
}

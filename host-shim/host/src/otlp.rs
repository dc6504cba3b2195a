//! Exporting the sandbox's spans to an OpenTelemetry collector over
//! OTLP/HTTP (protobuf), when the host runs with `--otlp-endpoint URL`.
//!
//! [`start`] makes the [`SpanSink`] the host installs on its engine
//! ([`weft_sandbox::Runtime::with_span_sink`]) and the task that drains it:
//!
//! - the sink never blocks a guest: it puts each span in a bounded queue
//!   ([`OtlpSettings::queue_spans`], 4096 by default) or, when the queue is
//!   full, drops it and counts it;
//! - the task sends batches of up to [`MAX_BATCH`] spans, or whatever it
//!   holds once the oldest has waited [`BATCH_INTERVAL`] (`batch.rs`);
//! - each batch is one `ExportTraceServiceRequest` (OpenTelemetry's own
//!   protobuf messages, `encode.rs`) POSTed to `URL/v1/traces`, bounded by
//!   [`EXPORT_TIMEOUT`] (`http.rs`). A batch the collector refuses, or that
//!   times out, is dropped and counted: never retried, so a slow or dead
//!   collector costs at most one batch in flight and a full queue. Failures
//!   are logged at most once a minute.
//!
//! `/metrics` shows the process's counts ([`SpanStats::process`]):
//! `weft_trace_spans_dropped_total` and `weft_trace_spans_exported_total`.
//! Only `http://` endpoints are supported (a collector on the host or a
//! sidecar); `https://` is refused with one line.
//!
//! When the host stops gracefully (SIGINT or SIGTERM), [`Exporter::flush`]
//! sends what is still queued at once and ends the export, waiting for the
//! collector at most [`FLUSH_TIMEOUT`]; what is not sent by then is
//! dropped and counted. A process killed outright loses what it queued.
//!
//! What the modules share lives in leaves they import, never in this
//! parent (no import loops): [`OtlpError`] in `error.rs`, [`SpanStats`] in
//! `stats.rs`.

mod batch;
mod encode;
mod error;
mod http;
mod stats;

pub use batch::{BatchLimits, Spans};
pub use encode::export_request;
pub use error::OtlpError;
pub use stats::SpanStats;

use std::sync::Arc;
use std::time::Duration;
use weft_sandbox::SpanSink;

/// The most spans sent in one request.
pub const MAX_BATCH: usize = 512;
/// The longest a span waits in the queue before its batch is sent.
pub const BATCH_INTERVAL: Duration = Duration::from_secs(1);
/// The longest one export may take, connecting included.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The spans the queue holds by default.
pub const DEFAULT_QUEUE_SPANS: u64 = 4096;
/// The longest the last export may delay the host's shutdown.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// The collector's base URL (`http://HOST[:PORT][/PATH]`); spans go to
    /// its `/v1/traces`.
    pub endpoint: String,
    /// This host's name, the resource's `host.name` (and `host.id`).
    pub host_name: String,
    /// The spans the queue holds before new ones are dropped (4096).
    pub queue_spans: u64,
}

/// A running export: the sink to install on the engine, and what ends
/// the export when the host stops.
pub struct Exporter {
    sink: Arc<Spans>,
    flush: batch::Flush,
}

impl Exporter {
    /// The sink to install on the engine
    /// ([`weft_sandbox::Runtime::with_span_sink`]).
    pub fn sink(&self) -> Arc<dyn SpanSink> {
        self.sink.clone()
    }

    /// Sends what is still queued and ends the export, returning within
    /// [`FLUSH_TIMEOUT`] however slow the collector. Call it once the host
    /// has stopped serving: spans recorded later are dropped.
    pub async fn flush(self) {
        self.flush.flush(FLUSH_TIMEOUT).await;
    }
}

/// Starts exporting to `settings.endpoint`, counting in the process's
/// [`SpanStats`]. Must be called within a tokio runtime: the export task
/// runs there until it is flushed, or every clone of the sink is dropped.
pub fn start(settings: &OtlpSettings) -> Result<Exporter, OtlpError> {
    let endpoint = http::Endpoint::parse(&settings.endpoint)?;
    let queue = usize::try_from(settings.queue_spans).unwrap_or(usize::MAX);
    if queue == 0 {
        return Err(OtlpError::EmptyQueue);
    }
    let limits = BatchLimits {
        queue,
        max_batch: MAX_BATCH,
        interval: BATCH_INTERVAL,
    };
    let export = http::HttpExport::new(endpoint, &settings.host_name, EXPORT_TIMEOUT);
    let (spans, flush) = batch::start(limits, export, SpanStats::process());
    tracing::info!(endpoint = %settings.endpoint, "exporting traces over OTLP/HTTP");
    Ok(Exporter {
        sink: Arc::new(spans),
        flush,
    })
}

/// This machine's host name, for the resource's `host.name`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

//! The queue benchmark, run on demand (never by `cargo test`):
//!
//! ```sh
//! WEFT_BENCH_NATS_URL=nats://127.0.0.1:4222 cargo bench -p weft-host --bench queues
//! ```
//!
//! It prints a Markdown report (the machine, then one row per measurement)
//! for `docs/benchmarks.md`. Each backend is measured beside a baseline
//! taken in the same run, and reported as a ratio to it:
//!
//! - **raw store**: redb alone, one fsynced commit per message, and 1,000
//!   messages per commit (the ceiling of group commit);
//! - **raw NATS**: a direct async-nats JetStream publish loop, 256 in flight;
//! - **broker**: the backend through the `QueueBroker` trait, no wasm: 256
//!   senders, 8 receivers taking batches of 32 and completing each message;
//! - **end to end**: the `ledger-web` web role (32 messages per request, 256
//!   requests in flight, the web role's default concurrency) enqueues, 8
//!   instances of the `drain-worker` worker role complete (a batch of 32 in
//!   one call); messages/s from the first send to the last complete, with
//!   the queue rate limit lifted (the path's ceiling) and, on the embedded
//!   backend, at a role's default rate limits.
//!
//! Latency is from a send returning (the message stored) to a receive
//! handing the message out, over every message's first delivery, measured
//! apart from throughput: one sender paced at 1,000 messages/s for 3 s, so
//! it shows the path of a message, not the time spent behind a backlog.
//! Without `WEFT_BENCH_NATS_URL` the NATS rows are left out.
#![allow(missing_docs, clippy::unwrap_used)]

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_broker::{
    BackendKind, BrokerError, Delivery, EmbeddedBroker, NatsBroker, Peeked, QueueSettings,
    QueuesConfig, ReceiveRequest, SendOptions,
};
use weft_broker::{KvStore, QueueBroker};
use weft_sandbox::rate_limit::{Interface, InterfaceLimits};
use weft_sandbox::{CpuShare, EngineConfig, Grants, RateLimits, RoleSpec, Runtime, SandboxLimits};
use weft_test_artifacts::{DRAIN_WORKER, LEDGER_WEB};

/// How long each throughput baseline runs.
const BASELINE: Duration = Duration::from_secs(3);
/// Messages per broker-level and end-to-end run.
const MESSAGES: u64 = 100_000;
/// Bodies are this long (a small job description).
const BODY: usize = 128;
const WORKERS: u32 = 8;
const REQUESTS_IN_FLIGHT: usize = 256;
const SENDERS: u64 = 256;
/// The paced latency run: this many messages, one per millisecond.
const PACED: u64 = 3000;
const LINES_PER_REQUEST: usize = 32;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let nats_url = std::env::var("WEFT_BENCH_NATS_URL").ok();
    println!("Machine and load of this run:\n");
    println!(
        "- cores (`nproc`): {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("- CPU (`lscpu` model): {}", cpu_model());
    println!(
        "- NATS: {}",
        nats_url
            .as_deref()
            .unwrap_or("not measured (WEFT_BENCH_NATS_URL unset)")
    );
    // Other work on the machine (a build) slows fsyncs and takes cores.
    println!(
        "- load average at start (`/proc/loadavg`): {}\n",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!("| what | messages/s | ratio to its baseline | latency p50 / p99 |");
    println!("| --- | ---: | ---: | ---: |");

    let tmp = tempfile::tempdir()?;
    let per_commit = redb_rate(&tmp.path().join("raw1.redb"), 1)?;
    row(
        "raw store: redb, 1 message per fsynced commit",
        per_commit,
        None,
        None,
    );
    let batched = redb_rate(&tmp.path().join("raw1000.redb"), 1000)?;
    row(
        "raw store: redb, 1,000 messages per fsynced commit",
        batched,
        None,
        None,
    );

    let embedded = Arc::new(Timed::new(EmbeddedBroker::open(
        &tmp.path().join("broker"),
        bench_settings(),
    )?));
    let batched_base = Some(("redb 1,000/commit", batched));
    let (rate, _) = broker_run(embedded.clone(), SENDERS, MESSAGES, false).await?;
    row(
        "embedded broker: send, receive, complete",
        rate,
        batched_base,
        None,
    );
    let (_, latency) = broker_run(embedded.clone(), 1, PACED, true).await?;
    row(
        "embedded broker, paced at 1,000/s: latency",
        1000.0,
        None,
        Some(latency),
    );

    let embedded = Arc::new(Timed::new(EmbeddedBroker::open(
        &tmp.path().join("e2e"),
        bench_settings(),
    )?));
    let (rate, _) = end_to_end(&embedded, Load::Saturate, Limits::Lifted).await?;
    row(
        "embedded end to end: web role → worker role, queue rate limit lifted",
        rate,
        batched_base,
        None,
    );
    row(
        "(the same, against one message per commit)",
        rate,
        Some(("redb 1/commit", per_commit)),
        None,
    );
    let embedded = Arc::new(Timed::new(EmbeddedBroker::open(
        &tmp.path().join("e2e-defaults"),
        bench_settings(),
    )?));
    let (rate, _) = end_to_end(&embedded, Load::Saturate, Limits::Defaults).await?;
    row(
        "embedded end to end: web role → worker role, default rate limits",
        rate,
        batched_base,
        None,
    );
    let (_, latency) = end_to_end(&embedded, Load::Paced, Limits::Defaults).await?;
    row(
        "embedded end to end, paced at 1,000/s: latency",
        1000.0,
        None,
        Some(latency),
    );

    if let Some(url) = nats_url {
        let raw = nats_publish_rate(&url).await?;
        row(
            "raw NATS: JetStream publish, 256 in flight",
            raw,
            None,
            None,
        );
        let config = QueuesConfig {
            backend: Some(BackendKind::Nats),
            url: Some(url.clone()),
            max_messages: 1_000_000,
            max_mib: 1024,
            ..QueuesConfig::default()
        };
        let raw_base = Some(("raw NATS", raw));
        let nats = Arc::new(Timed::new(NatsBroker::connect(&config).await?));
        let (rate, _) = broker_run(nats.clone(), SENDERS, MESSAGES, false).await?;
        row("NATS broker: send, receive, complete", rate, raw_base, None);
        let (_, latency) = broker_run(nats.clone(), 1, PACED, true).await?;
        row(
            "NATS broker, paced at 1,000/s: latency",
            1000.0,
            None,
            Some(latency),
        );
        let nats = Arc::new(Timed::new(NatsBroker::connect(&config).await?));
        let (rate, _) = end_to_end(&nats, Load::Saturate, Limits::Lifted).await?;
        row(
            "NATS end to end: web role → worker role, queue rate limit lifted",
            rate,
            raw_base,
            None,
        );
        let (_, latency) = end_to_end(&nats, Load::Paced, Limits::Defaults).await?;
        row(
            "NATS end to end, paced at 1,000/s: latency",
            1000.0,
            None,
            Some(latency),
        );
    }
    Ok(())
}

fn bench_settings() -> QueueSettings {
    QueueSettings {
        max_messages: 1_000_000,
        max_bytes: 1024 * 1024 * 1024,
        ..QueueSettings::default()
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn row(
    what: &str,
    rate: f64,
    baseline: Option<(&str, f64)>,
    latency: Option<(Duration, Duration)>,
) {
    let ratio = baseline.map_or_else(
        || {
            if latency.is_some() {
                "—"
            } else {
                "(baseline)"
            }
            .to_owned()
        },
        |(name, base)| format!("{:.2} × {name}", rate / base),
    );
    let latency = latency.map_or_else(
        || "—".to_owned(),
        |(p50, p99)| format!("{:.2} ms / {:.2} ms", millis(p50), millis(p99)),
    );
    println!("| {what} | {rate:.0} | {ratio} | {latency} |");
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Inserts of a 128-byte value per second into a fresh redb file, `batch`
/// per fsynced commit.
fn redb_rate(path: &Path, batch: u64) -> anyhow::Result<f64> {
    const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("bench");
    let db = redb::Database::create(path)?;
    let body = vec![7u8; BODY];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < BASELINE {
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            for _ in 0..batch {
                table.insert(n, body.as_slice())?;
                n += 1;
            }
        }
        txn.commit()?;
    }
    Ok(rate(n, started.elapsed()))
}

fn rate(n: u64, elapsed: Duration) -> f64 {
    // Counts far below 2^52 convert exactly.
    #[allow(clippy::cast_precision_loss)]
    let n = n as f64;
    n / elapsed.as_secs_f64()
}

/// JetStream publishes per second to a fresh work-queue stream, 256 acks
/// outstanding at a time.
async fn nats_publish_rate(url: &str) -> anyhow::Result<f64> {
    use async_nats::jetstream::{self, stream};
    let client = async_nats::connect(url)
        .await
        .context("connecting to NATS")?;
    let js = jetstream::new(client);
    let name = format!("BENCH_{:08x}", rand_u32());
    let stream = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("bench.{name}")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..stream::Config::default()
        })
        .await?;
    let body = Bytes::from(vec![7u8; BODY]);
    let started = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    let mut n = 0u64;
    while started.elapsed() < BASELINE {
        acks.push_back(js.publish(format!("bench.{name}"), body.clone()).await?);
        if acks.len() >= 256
            && let Some(ack) = acks.pop_front()
        {
            ack.await?;
            n += 1;
        }
    }
    for ack in acks {
        ack.await?;
        n += 1;
    }
    let elapsed = started.elapsed();
    drop(stream);
    js.delete_stream(&name).await?;
    Ok(rate(n, elapsed))
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// A broker that notes when each message was stored and first handed out,
/// and counts completions.
struct Timed<B> {
    inner: Arc<B>,
    sent_at: Mutex<HashMap<String, Instant>>,
    latencies: Mutex<Vec<Duration>>,
    completed: AtomicU64,
}

impl<B> Timed<B> {
    fn new(inner: B) -> Self {
        Self {
            inner: Arc::new(inner),
            sent_at: Mutex::default(),
            latencies: Mutex::default(),
            completed: AtomicU64::new(0),
        }
    }

    fn percentiles(&self) -> (Duration, Duration) {
        let mut all = std::mem::take(&mut *self.latencies.lock().unwrap());
        all.sort_unstable();
        let at = |q: usize| {
            all.get((all.len() * q / 100).min(all.len().saturating_sub(1)))
                .copied()
        };
        (at(50).unwrap_or_default(), at(99).unwrap_or_default())
    }
}

#[async_trait]
impl<B: QueueBroker> QueueBroker for Timed<B> {
    async fn send(
        &self,
        queue: &str,
        body: Vec<u8>,
        options: SendOptions,
    ) -> Result<String, BrokerError> {
        let id = self.inner.send(queue, body, options).await?;
        self.sent_at
            .lock()
            .unwrap()
            .insert(id.clone(), Instant::now());
        Ok(id)
    }
    async fn receive(
        &self,
        queue: &str,
        request: ReceiveRequest,
    ) -> Result<Vec<Delivery>, BrokerError> {
        let got = self.inner.receive(queue, request).await?;
        let now = Instant::now();
        let mut sent_at = self.sent_at.lock().unwrap();
        let mut latencies = self.latencies.lock().unwrap();
        for delivery in &got {
            if let Some(at) = sent_at.remove(&delivery.id) {
                latencies.push(now.saturating_duration_since(at));
            }
        }
        Ok(got)
    }
    async fn complete(&self, queue: &str, receipt: &str) -> Result<(), BrokerError> {
        self.inner.complete(queue, receipt).await?;
        self.completed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn abandon(
        &self,
        queue: &str,
        receipt: &str,
        delay: Duration,
    ) -> Result<(), BrokerError> {
        self.inner.abandon(queue, receipt, delay).await
    }
    async fn extend(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), BrokerError> {
        self.inner.extend(queue, receipt, visibility).await
    }
    async fn len(&self, queue: &str) -> Result<usize, BrokerError> {
        self.inner.len(queue).await
    }
    async fn peek(&self, queue: &str, max: u32) -> Result<Vec<Peeked>, BrokerError> {
        self.inner.peek(queue, max).await
    }
    async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        self.inner.purge(queue).await
    }
    async fn redrive(
        &self,
        queue: &str,
        ids: Option<&[String]>,
    ) -> Result<Vec<String>, BrokerError> {
        self.inner.redrive(queue, ids).await
    }
}

/// Waits until `completed` reaches `target` (or a minute passes).
async fn until_completed<B>(broker: &Timed<B>, target: u64) -> anyhow::Result<()> {
    let give_up = Instant::now() + Duration::from_secs(120);
    while broker.completed.load(Ordering::Relaxed) < target {
        anyhow::ensure!(Instant::now() < give_up, "the run did not finish in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The backend alone: `senders` senders sharing `messages` messages (one
/// per millisecond each when `paced`), 8 receivers.
async fn broker_run<B: QueueBroker>(
    broker: Arc<Timed<B>>,
    sender_count: u64,
    messages: u64,
    paced: bool,
) -> anyhow::Result<(f64, (Duration, Duration))> {
    let queue = format!("bench/broker-{:08x}", rand_u32());
    let per_sender = messages / sender_count;
    let total = per_sender * sender_count;
    let target = broker.completed.load(Ordering::Relaxed) + total;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut receivers = Vec::new();
    for _ in 0..WORKERS {
        let (broker, queue, stop) = (broker.clone(), queue.clone(), stop.clone());
        receivers.push(tokio::spawn(async move {
            let request = ReceiveRequest {
                max_messages: 32,
                visibility_timeout: Duration::from_secs(60),
                wait: Duration::from_millis(200),
            };
            while !stop.load(Ordering::Relaxed) {
                if let Ok(batch) = broker.receive(&queue, request).await {
                    for delivery in batch {
                        let _ = broker.complete(&queue, &delivery.receipt).await;
                    }
                }
            }
        }));
    }
    let senders: Vec<_> = (0..sender_count)
        .map(|_| {
            let (broker, queue) = (broker.clone(), queue.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                for _ in 0..per_sender {
                    if paced {
                        tick.tick().await;
                    }
                    broker
                        .send(&queue, vec![7; BODY], SendOptions::now())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await?;
    }
    until_completed(&broker, target).await?;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for receiver in receivers {
        receiver.await?;
    }
    Ok((rate(total, elapsed), broker.percentiles()))
}

/// Through the sandboxes: the web role enqueues, the worker role completes.
/// How the end-to-end run loads the web role.
#[derive(Clone, Copy)]
enum Load {
    /// [`REQUESTS_IN_FLIGHT`] clients, [`LINES_PER_REQUEST`] messages per
    /// request, [`MESSAGES`] in all, as fast as they go.
    Saturate,
    /// One client, one message per request, one request per millisecond,
    /// [`PACED`] in all.
    Paced,
}

/// The roles' rate limits in an end-to-end run.
#[derive(Clone, Copy)]
enum Limits {
    /// A role's defaults, as a manifest that says nothing gets.
    Defaults,
    /// The queue interface unlimited: the path's own ceiling.
    Lifted,
}

async fn end_to_end<B: QueueBroker + KvStore>(
    broker: &Arc<Timed<B>>,
    load: Load,
    limits: Limits,
) -> anyhow::Result<(f64, (Duration, Duration))> {
    let kv = broker.inner.clone();
    let runtime = Runtime::new(EngineConfig {
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-component-cache")),
        ..EngineConfig::default()
    })?;
    let unlimited = InterfaceLimits {
        ops: None,
        bytes: None,
    };
    let service = format!("bench{:08x}", rand_u32());
    let spec = |role: &str| RoleSpec {
        grants: Grants {
            service: service.clone(),
            role: role.into(),
            queues: ["jobs".to_owned()].into(),
            ..Grants::default()
        },
        limits: SandboxLimits::default(),
        rate_limits: match limits {
            Limits::Defaults => RateLimits::default(),
            Limits::Lifted => RateLimits::default().with(Interface::Queue, unlimited),
        },
        cpu: CpuShare::default(),
        queues: broker.clone(),
        kv: kv.clone(),
    };
    let web = Arc::new(runtime.web_role(Path::new(LEDGER_WEB), spec("web"))?);
    let worker = Arc::new(runtime.worker_role(Path::new(DRAIN_WORKER), spec("worker"))?);
    let stop = Arc::new(tokio::sync::Notify::new());
    let instances: Vec<_> = (0..WORKERS)
        .map(|i| {
            let (worker, stop) = (worker.clone(), stop.clone());
            tokio::spawn(async move {
                let stopped = async move { stop.notified().await };
                worker.run_instance(i, stopped).await
            })
        })
        .collect();
    let (clients, lines, per_task) = match load {
        Load::Saturate => {
            let requests = usize::try_from(MESSAGES).unwrap_or(0) / LINES_PER_REQUEST;
            (
                REQUESTS_IN_FLIGHT,
                LINES_PER_REQUEST,
                requests / REQUESTS_IN_FLIGHT,
            )
        }
        Load::Paced => (1, 1, usize::try_from(PACED).unwrap_or(0)),
    };
    let body: String = (0..lines)
        .map(|i| format!("{i:0width$}\n", width = BODY - 1))
        .collect();
    let before = broker.completed.load(Ordering::Relaxed);
    let started = Instant::now();
    let clients: Vec<_> = (0..clients)
        .map(|_| {
            let (web, body) = (web.clone(), body.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                for _ in 0..per_task {
                    if matches!(load, Load::Paced) {
                        tick.tick().await;
                    }
                    let request = http::Request::builder()
                        .method("POST")
                        .uri("http://localhost/send/jobs")
                        .header("host", "localhost")
                        .body(Full::new(Bytes::from(body.clone())))
                        .unwrap();
                    let response = web.handle(request).await;
                    assert_eq!(response.status(), 200);
                }
            })
        })
        .collect();
    let total = u64::try_from(per_task * clients.len() * lines)?;
    for client in clients {
        client.await?;
    }
    until_completed(broker, before + total).await?;
    let elapsed = started.elapsed();
    stop.notify_waiters();
    for instance in instances {
        instance.abort();
    }
    Ok((rate(total, elapsed), broker.percentiles()))
}

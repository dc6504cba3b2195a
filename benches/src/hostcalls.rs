//! What one core does in host calls of each rate-limited kind: the figure
//! the default `rate-limits.queue` and `.kv` buckets are sized from.
//!
//! Each kind (a queue `send`, `complete`, a key-value `set` and `get`) is
//! driven straight through the backend's trait, as the VMBus calls it, by
//! `callers` tasks on one async thread for `seconds`; the process's CPU time
//! (every thread: the caller's and the store's writer) divided into the
//! calls made gives the host's CPU cost of a call, and its inverse the calls
//! one core serves a second. The VMBus's own part of a call (lifting the
//! arguments, the grant check, the rate limiter) is left out: it is a few
//! hundred nanoseconds beside the backend's microseconds, and a guest
//! making the call pays its own share in fuel.
//!
//! The embedded backend is measured durable (every write fsynced, in group
//! commits, as `weft up` runs it); the memory backend (`weft serve`) is the
//! floor of what a call costs.

use crate::process::cpu_seconds;
use crate::stats::spread;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weft_broker::{
    EmbeddedBroker, KvStore, MemoryBroker, QueueBroker, QueueSettings, ReceiveRequest, SendOptions,
};

/// A message body or a value, as small as the pipeline example's jobs.
const PAYLOAD: usize = 128;
/// A large value, for the bytes a second one core writes.
const LARGE: usize = 64 * 1024;
/// Distinct keys the key-value kinds cycle through.
const KEYS: u64 = 10_000;
/// Queues the queue kinds spread their messages over: each holds at most
/// 100,000 messages, fewer than a fast run sends.
const QUEUES: u64 = 64;
/// Messages put in each queue for the completions to settle (few: a
/// receive looks past the leased messages of its queue).
const PER_QUEUE: usize = 4_096;
/// How far each caller steps through the keys (callers start apart, so
/// they seldom write the same key at once).
const STRIDE: u64 = 64;

/// What to measure.
pub struct Setup {
    /// Where the embedded stores live (a fresh folder per run).
    pub work: PathBuf,
    /// Seconds per measurement.
    pub seconds: f64,
    /// Calls in flight at once.
    pub callers: usize,
    /// Rounds.
    pub repeats: usize,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Send,
    Complete,
    Set,
    /// A set of a large value: what the bytes buckets are sized from.
    SetLarge,
    Get,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Send,
        Kind::Complete,
        Kind::Set,
        Kind::SetLarge,
        Kind::Get,
    ];

    fn label(self) -> &'static str {
        match self {
            Kind::Send => "queue send",
            Kind::Complete => "queue complete",
            Kind::Set => "kv set",
            Kind::SetLarge => "kv set, 64 KiB values",
            Kind::Get => "kv get",
        }
    }
}

/// Both traits of one backend.
trait Backend: QueueBroker + KvStore {}
impl<T: QueueBroker + KvStore> Backend for T {}

/// One measurement: calls made and the process's CPU seconds meanwhile.
struct Run {
    calls: u64,
    wall: f64,
    cpu: f64,
}

/// Runs every kind on both backends and returns the Markdown table.
pub fn run(setup: &Setup) -> anyhow::Result<String> {
    let mut rows = Vec::new();
    for durable in [true, false] {
        for kind in Kind::ALL {
            let mut rates = Vec::new();
            let mut micros = Vec::new();
            let mut per_core = Vec::new();
            for round in 0..setup.repeats {
                let folder = setup.work.join(format!("{}-{round}", kind.label()));
                let run = one(setup, kind, durable, &folder)?;
                let _ = std::fs::remove_dir_all(&folder);
                let calls = run.calls as f64;
                rates.push(calls / run.wall);
                micros.push(run.cpu * 1e6 / calls);
                per_core.push(calls / run.cpu);
            }
            eprintln!(
                "host-calls: {} on {}",
                kind.label(),
                if durable { "embedded" } else { "memory" }
            );
            let backend = if durable {
                "embedded (fsynced)"
            } else {
                "memory"
            };
            rows.push(format!(
                "| {backend} | {} | {} | {} | {} |",
                kind.label(),
                spread(&rates, 0),
                spread(&micros, 1),
                spread(&per_core, 0),
            ));
        }
    }
    Ok(format!(
        "{} callers in flight on one async thread, {} s each, {} rounds; bodies and values of {PAYLOAD} bytes. \
         CPU is the whole process's (the callers' thread and the store's writer).\n\n\
         | backend | call | calls/s | host CPU µs/call | calls per core-second |\n\
         | --- | --- | ---: | ---: | ---: |\n{}\n",
        setup.callers,
        setup.seconds,
        setup.repeats,
        rows.join("\n")
    ))
}

fn one(setup: &Setup, kind: Kind, durable: bool, folder: &Path) -> anyhow::Result<Run> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let backend: Arc<dyn Backend> = if durable {
            std::fs::create_dir_all(folder)?;
            Arc::new(EmbeddedBroker::open(folder, QueueSettings::default())?)
        } else {
            Arc::new(MemoryBroker::default())
        };
        let receipts = prepare(&backend, kind, setup).await?;
        let calls = Arc::new(AtomicU64::new(0));
        let receipts = Arc::new(std::sync::Mutex::new(receipts));
        let cpu_before = cpu_seconds(std::process::id())?;
        let started = Instant::now();
        // Each caller watches the clock itself: a call served from memory
        // (a read) completes without yielding, so a timer task would never
        // run to stop them.
        let until = Instant::now() + Duration::from_secs_f64(setup.seconds);
        let mut tasks = Vec::new();
        for caller in 0..setup.callers {
            let (backend, calls, receipts) = (backend.clone(), calls.clone(), receipts.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = caller as u64;
                while Instant::now() < until {
                    let key = format!("k{}", n % KEYS);
                    n += STRIDE;
                    let outcome = match kind {
                        Kind::Send => backend
                            .send(
                                &format!("q{}", (n / STRIDE) % QUEUES),
                                vec![7; PAYLOAD],
                                SendOptions::default(),
                            )
                            .await
                            .map(drop),
                        Kind::Set => backend.set("b", &key, vec![7; PAYLOAD]).await,
                        // Few keys, so the bucket stays under its size limit.
                        Kind::SetLarge => {
                            let key = format!("k{}", n % 256);
                            backend.set("b", &key, vec![7; LARGE]).await
                        }
                        Kind::Get => backend.get("b", &key).await.map(drop),
                        Kind::Complete => {
                            let Some((queue, receipt)) =
                                receipts.lock().ok().and_then(|mut r| r.pop())
                            else {
                                break;
                            };
                            backend.complete(&queue, &receipt).await
                        }
                    };
                    outcome?;
                    calls.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let wall = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(std::process::id())? - cpu_before;
        Ok(Run {
            calls: calls.load(Ordering::Relaxed),
            wall,
            cpu,
        })
    })
}

/// What a kind needs before it is timed: keys to read, or messages leased
/// and waiting to be completed (their receipts).
async fn prepare(
    backend: &Arc<dyn Backend>,
    kind: Kind,
    setup: &Setup,
) -> anyhow::Result<Vec<(String, String)>> {
    match kind {
        Kind::Get => {
            // Written 256 at a time, so the embedded store commits them
            // together.
            for first in (0..KEYS).step_by(256) {
                let mut sets = tokio::task::JoinSet::new();
                for n in first..(first + 256).min(KEYS) {
                    let backend = backend.clone();
                    sets.spawn(async move {
                        backend.set("b", &format!("k{n}"), vec![7; PAYLOAD]).await
                    });
                }
                while let Some(set) = sets.join_next().await {
                    set??;
                }
            }
            Ok(Vec::new())
        }
        Kind::Complete => {
            // More than the window can complete, at a generous guess of
            // 150,000 completions a second.
            let wanted = (setup.seconds.clamp(0.0, 600.0) * 150_000.0).round();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let wanted = wanted as usize; // 0 to 90 million, from the clamp
            let mut receipts = Vec::with_capacity(wanted);
            let request = ReceiveRequest {
                max_messages: weft_broker::MAX_BATCH,
                visibility_timeout: Duration::from_secs(600),
                wait: Duration::ZERO,
            };
            for queue in (0..).map(|q| format!("q{q}")) {
                if receipts.len() >= wanted {
                    break;
                }
                let mut held = 0;
                while held < PER_QUEUE {
                    // Sent 256 at a time, so the embedded store commits them
                    // together.
                    let mut sends = tokio::task::JoinSet::new();
                    for _ in 0..256 {
                        let (backend, queue) = (backend.clone(), queue.clone());
                        sends.spawn(async move {
                            backend
                                .send(&queue, vec![7; PAYLOAD], SendOptions::default())
                                .await
                        });
                    }
                    while let Some(sent) = sends.join_next().await {
                        sent??;
                    }
                    loop {
                        let batch = backend.receive(&queue, request).await?;
                        if batch.is_empty() {
                            break;
                        }
                        held += batch.len();
                        receipts.extend(batch.into_iter().map(|d| (queue.clone(), d.receipt)));
                    }
                }
            }
            Ok(receipts)
        }
        Kind::Send | Kind::Set | Kind::SetLarge => Ok(Vec::new()),
    }
}

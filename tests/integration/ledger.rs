//! The durability tests' load and checker, around the `ledger-web` and
//! `ledger-worker` guests: the test sends numbered messages through the web
//! role, noting which sends were acknowledged; the worker records every
//! delivery in the bucket `ledger` as `d/{body}/{dequeue count}/{receipt}`;
//! the checker compares the two.

use crate::support::http;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weft_broker::KvStore;
use weft_test_artifacts::{LEDGER_WEB, LEDGER_WORKER};

/// What the load generator tried and what the host acknowledged.
#[derive(Debug, Default)]
pub struct Sent {
    /// Every body a send was attempted for.
    pub attempted: BTreeSet<String>,
    /// Bodies whose send returned OK (so they must not be lost).
    pub acknowledged: BTreeSet<String>,
    next: u64,
}

/// Posts batches of `batch` numbered messages to `base/send/jobs` until
/// `stop` is set, recording what was acknowledged. Failed requests (the
/// host was killed, or is starting) are retried with new numbers.
pub async fn load(base: String, sent: Arc<Mutex<Sent>>, stop: Arc<AtomicBool>, batch: u64) {
    while !stop.load(Ordering::Relaxed) {
        let bodies: Vec<String> = {
            let mut sent = sent.lock().unwrap();
            let first = sent.next;
            sent.next += batch;
            let bodies: Vec<String> = (first..first + batch).map(|n| format!("m{n}")).collect();
            sent.attempted.extend(bodies.iter().cloned());
            bodies
        };
        let reply = http("POST", &format!("{base}/send/jobs"), &bodies.join("\n")).await;
        let acked = match reply {
            Ok(reply) => reply
                .body
                .split_whitespace()
                .find_map(|w| w.strip_prefix("sent=")?.parse::<usize>().ok())
                .unwrap_or(0),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                0
            }
        };
        sent.lock()
            .unwrap()
            .acknowledged
            .extend(bodies.into_iter().take(acked));
    }
}

/// What the checker found.
#[derive(Debug)]
pub struct Report {
    /// Acknowledged sends never delivered.
    pub lost: Vec<String>,
    /// Deliveries of bodies never sent.
    pub unexpected: Vec<String>,
    /// Bodies with two deliveries claiming the same dequeue count.
    pub repeated_counts: Vec<String>,
    /// Deliveries beyond the first (all redeliveries, dequeue count > 1).
    pub duplicates: usize,
    /// Distinct bodies delivered.
    pub delivered: usize,
}

/// One delivery on record: its key (unique per delivery), body and dequeue
/// count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Delivery {
    pub key: String,
    pub body: String,
    pub count: u32,
}

/// Every delivery the ledger in `kv` (bucket `bucket`) records.
pub async fn deliveries(kv: &dyn KvStore, bucket: &str) -> Vec<Delivery> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = kv.list_keys(bucket, cursor).await.unwrap();
        for key in page.keys {
            let mut parts = key.splitn(4, '/');
            let (Some("d"), Some(body), Some(count)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            all.push(Delivery {
                body: body.to_owned(),
                count: count.parse().unwrap(),
                key,
            });
        }
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    all
}

/// Reads the ledger from `kv` (bucket `bucket`) and checks it against `sent`.
pub async fn check(kv: &dyn KvStore, bucket: &str, sent: &Sent) -> Report {
    let mut deliveries: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for delivery in self::deliveries(kv, bucket).await {
        deliveries
            .entry(delivery.body)
            .or_default()
            .push(delivery.count);
    }
    let mut report = Report {
        lost: Vec::new(),
        unexpected: Vec::new(),
        repeated_counts: Vec::new(),
        duplicates: 0,
        delivered: deliveries.len(),
    };
    for body in &sent.acknowledged {
        if !deliveries.contains_key(body) {
            report.lost.push(body.clone());
        }
    }
    for (body, counts) in &mut deliveries {
        if !sent.attempted.contains(body) {
            report.unexpected.push(body.clone());
        }
        counts.sort_unstable();
        let distinct: BTreeSet<u32> = counts.iter().copied().collect();
        if distinct.len() != counts.len() {
            report.repeated_counts.push(format!("{body}: {counts:?}"));
        }
        report.duplicates += counts.len() - 1;
    }
    report
}

/// Asserts the report shows nothing lost, nothing unexpected, and only
/// redeliveries as duplicates.
pub fn assert_sound(report: &Report) {
    assert!(
        report.lost.is_empty(),
        "lost {} messages: {:?}",
        report.lost.len(),
        report.lost
    );
    assert!(
        report.unexpected.is_empty(),
        "unexpected: {:?}",
        report.unexpected
    );
    assert!(
        report.repeated_counts.is_empty(),
        "a dequeue count was handed out twice: {:?}",
        report.repeated_counts
    );
}

/// A manifest for the ledger service: `web` (listening on a free port) and
/// `worker` (`instances` of them), with `queues` as the `[queues]` table.
pub fn manifest(instances: u32, queues: &str) -> String {
    format!(
        r#"
[service]
name = "ledger"

[roles.web]
kind = "web"
component = "{LEDGER_WEB}"
listen = "127.0.0.1:0"
queues = ["jobs"]

[roles.worker]
kind = "worker"
component = "{LEDGER_WORKER}"
instances = {instances}
queues = ["jobs"]
buckets = ["ledger"]

[queues]
{queues}
"#
    )
}

/// A small pseudo-random generator for kill times (no dependency needed;
/// the seed is printed so a failing run can be replayed).
pub struct Dice(u64);

impl Dice {
    pub fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| {
                u64::try_from(d.as_nanos() % u128::from(u64::MAX)).unwrap_or(1)
            })
            | 1;
        eprintln!("dice seed: {seed}");
        Self(seed)
    }

    /// A number in `low..high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + self.0 % (high - low)
    }
}

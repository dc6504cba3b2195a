//! Test guest: a worker with lifecycle hooks that records every delivery,
//! for the controller's upgrade, drain and crash-loop tests.
//!
//! It pulls from `jobs` in batches of 8 and, for each delivery, writes
//! `d/{body}/{dequeue count}/{receipt}` to the bucket `ledger` (the
//! durability tests' checker reads it), then completes the message; a body
//! starting with `slow` sleeps 200 ms first, so drains happen mid-batch.
//! It returns from `run` when the host asks it to stop.
//!
//! Its hooks print `rollout-worker: start|stop version={version}` and record
//! themselves in the bucket as `hook/{start|stop}/{version}/{nanos}`.
//! Settings: `version`, `start = "fail"` (the start hook refuses), `start =
//! "burn"` (the start hook spins, then records the fuel the spin took as
//! `burnt/{fuel}`),
//! `mode = "crash"` (it panics as soon as it runs), `mode = "ignore-stop"`
//! (it polls the queue by hand and never returns, so the host must drop it
//! once its stop grace period is over).

use std::time::Duration;

use weft_sdk::kv::Bucket;
use weft_sdk::worker::Worker;

fn setting(key: &str) -> Option<String> {
    weft_sdk::config::get(key).ok().flatten()
}

fn version() -> String {
    setting("version").unwrap_or_else(|| "none".into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match setting("mode").as_deref() {
        Some("crash") => panic!("rollout-worker: crashing on purpose"),
        Some("ignore-stop") => loop {
            // Never asks `lifecycle::stopping`, and settles nothing.
            let options = weft_sdk::queue::ReceiveOptions {
                wait: Duration::from_millis(100),
                ..Default::default()
            };
            let _ = weft_sdk::queue::receive("jobs", &options);
            std::thread::sleep(Duration::from_millis(10));
        },
        _ => {}
    }
    let ledger = Bucket::open("ledger")?;
    Worker::new("jobs")
        .batch_size(8)
        .visibility_timeout(Duration::from_secs(5))
        .wait(Duration::from_secs(1))
        .run(|message| {
            let body = message.body_str().map_err(|e| e.to_string())?;
            if body.starts_with("slow") {
                std::thread::sleep(Duration::from_millis(200));
            }
            let key = format!("d/{body}/{}/{}", message.dequeue_count(), message.receipt());
            ledger.set(&key, version()).map_err(|e| e.to_string())
        })?;
    println!("rollout-worker: run returned version={}", version());
    Ok(())
}

/// Notes that hook `name` ran, in the bucket.
fn record(name: &str) -> Result<(), String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let ledger = Bucket::open("ledger").map_err(|e| e.to_string())?;
    ledger
        .set(&format!("hook/{name}/{}/{nanos}", version()), "1")
        .map_err(|e| e.to_string())
}

/// Spins for a while and answers the fuel the spin took, as the host's
/// usage interface counts it.
fn burn() -> Result<u64, String> {
    let fuel_left = || {
        weft_sdk::usage::get()
            .map(|u| u.fuel_left())
            .map_err(|e| e.to_string())
    };
    let before = fuel_left()?;
    let mut x = 0u64;
    for i in 0..2_000_000u64 {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
    }
    std::hint::black_box(x);
    Ok(before.saturating_sub(fuel_left()?))
}

struct Hooks;

impl weft_sdk::lifecycle::Hooks for Hooks {
    fn start() -> Result<(), String> {
        println!("rollout-worker: start version={}", version());
        match setting("start").as_deref() {
            Some("fail") => Err("asked to fail its start".into()),
            Some("burn") => {
                let burnt = burn()?;
                let ledger = Bucket::open("ledger").map_err(|e| e.to_string())?;
                ledger
                    .set(&format!("burnt/{burnt}"), "1")
                    .map_err(|e| e.to_string())?;
                record("start")
            }
            _ => record("start"),
        }
    }

    fn stop() {
        println!("rollout-worker: stop version={}", version());
        if let Err(e) = record("stop") {
            eprintln!("rollout-worker: cannot record the stop: {e}");
        }
    }
}

weft_sdk::role_hooks!(Hooks);

//! The pipeline's worker role: takes jobs from the queue `jobs` a batch at a
//! time, analyses their text and stores the results in the key-value bucket
//! `jobs`, where the web role reads them.
//!
//! A batch's results are written with one `set_many`: one host call and,
//! on the embedded store, one fsynced commit for the whole batch, where a
//! `set` per job would wait for one commit per job. A job that can never
//! succeed (a message that is not a job) is recorded as `failed` when its
//! id is known, and completed rather than retried. A key-value failure
//! abandons the whole batch, so all of it is delivered again (writing a
//! result twice is harmless: it is the same result).

mod analysis;

use serde::Deserialize;
use serde_json::json;
use weft_sdk::kv::{self, Bucket};
use weft_sdk::queue::Message;
use weft_sdk::worker::Worker;

/// A message on the queue `jobs`, as the web role sends it.
#[derive(Deserialize)]
struct Job {
    id: String,
    text: String,
}

/// Jobs taken per receive: the most the host hands out, so each commit
/// carries as many results as it can.
const BATCH: u32 = 32;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs = Bucket::open("jobs")?;
    Worker::new("jobs")
        .batch_size(BATCH)
        .run_batch(|batch| record_all(&jobs, batch))?;
    Ok(())
}

/// Writes the record of every job in `batch`; `Err` only for failures worth
/// retrying.
fn record_all(jobs: &Bucket, batch: &[Message]) -> Result<(), kv::Error> {
    jobs.set_many(batch.iter().filter_map(record))
}

/// The key and record a message leaves in the bucket: the job's result, or
/// why it failed; `None` for a message with no job id, which is dropped.
fn record(message: &Message) -> Option<(String, String)> {
    match serde_json::from_slice::<Job>(message.body()) {
        Ok(job) => {
            let result = analysis::analyse(&job.text);
            let record = json!({ "id": job.id, "status": "done", "result": result });
            Some((job.id, record.to_string()))
        }
        Err(e) => reject(message, &format!("malformed job: {e}")),
    }
}

/// The failed record of a job that can never succeed, if its id can be
/// found.
fn reject(message: &Message, reason: &str) -> Option<(String, String)> {
    let id = serde_json::from_slice::<serde_json::Value>(message.body())
        .ok()
        .and_then(|v| v.get("id")?.as_str().map(str::to_owned));
    match id {
        Some(id) => {
            eprintln!("pipeline-worker: job {id} failed: {reason}");
            let record = json!({ "id": id, "status": "failed", "reason": reason });
            Some((id, record.to_string()))
        }
        None => {
            eprintln!(
                "pipeline-worker: dropping message {} with no job id: {reason}",
                message.id()
            );
            None
        }
    }
}

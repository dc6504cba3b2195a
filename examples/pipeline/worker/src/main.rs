//! The pipeline's worker role: takes jobs from the queue `jobs`, analyses
//! their text and stores the result in the key-value bucket `jobs`, where
//! the web role reads it.
//!
//! A job that can never succeed (a message that is not a job) is recorded
//! as `failed` when its id is known, and completed rather than retried. A
//! key-value failure abandons the message, so it is delivered again.

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs = Bucket::open("jobs")?;
    Worker::new("jobs").run(|message| process(&jobs, message))?;
    Ok(())
}

/// Handles one message; `Err` only for failures worth retrying.
fn process(jobs: &Bucket, message: &Message) -> Result<(), kv::Error> {
    let job: Job = match serde_json::from_slice(message.body()) {
        Ok(job) => job,
        Err(e) => return reject(jobs, message, &format!("malformed job: {e}")),
    };
    let result = analysis::analyse(&job.text);
    let record = json!({ "id": job.id, "status": "done", "result": result });
    jobs.set(&job.id, record.to_string())
}

/// Records a job that can never succeed as failed, if its id can be found,
/// and lets the message be completed.
fn reject(jobs: &Bucket, message: &Message, reason: &str) -> Result<(), kv::Error> {
    let id = serde_json::from_slice::<serde_json::Value>(message.body())
        .ok()
        .and_then(|v| v.get("id")?.as_str().map(str::to_owned));
    match id {
        Some(id) => {
            eprintln!("pipeline-worker: job {id} failed: {reason}");
            let record = json!({ "id": id, "status": "failed", "reason": reason });
            jobs.set(&id, record.to_string())
        }
        None => {
            eprintln!(
                "pipeline-worker: dropping message {} with no job id: {reason}",
                message.id()
            );
            Ok(())
        }
    }
}

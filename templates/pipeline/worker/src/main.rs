//! {{name}}'s worker role: takes each job (`ID\nTEXT`) from the queue
//! `jobs`, counts the words of its text, and stores the count under the job's
//! id in the bucket `jobs`, where the web role reads it.

use weft_sdk::kv::Bucket;
use weft_sdk::worker::Worker;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs = Bucket::open("jobs")?;
    // The worker loop completes a message when the handler returns `Ok`, and
    // abandons it (to be delivered again) when it returns `Err`.
    Worker::new("jobs").run(|message| {
        let body = String::from_utf8_lossy(message.body());
        // A message that is not a job would fail the same way every time:
        // log it and let it be completed rather than retried.
        let Some((id, text)) = body.split_once('\n') else {
            eprintln!("{{name}}-worker: message {} is not a job", message.id());
            return Ok(());
        };
        let words = text.split_whitespace().count();
        println!("{{name}}-worker: job {id} has {words} words");
        jobs.set(id, words.to_string())
    })?;
    Ok(())
}

//! {{name}}: a Weft worker role. It takes each message from the queue
//! `tasks`, counts the words of its text, and stores the count under the
//! message's id in the bucket `results`.

use weft_sdk::kv::Bucket;
use weft_sdk::worker::Worker;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let results = Bucket::open("results")?;
    // The worker loop completes a message when the handler returns `Ok`, and
    // abandons it (to be delivered again) when it returns `Err`.
    Worker::new("tasks").run(|message| {
        // A body that is not UTF-8 is counted as it decodes, not retried:
        // it would fail the same way every time.
        let text = String::from_utf8_lossy(message.body());
        let words = text.split_whitespace().count();
        println!("{{name}}: message {} has {words} words", message.id());
        results.set(message.id(), words.to_string())
    })?;
    Ok(())
}

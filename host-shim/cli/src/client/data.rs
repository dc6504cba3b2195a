//! `weft queue` and `weft bucket`: an operator's hands on a running
//! service's data (its queues and buckets), through a host's admin API (the
//! routes of `weft_host::admin::data`, whose request and answer types these
//! commands share). Purges ask for `--yes`; everything else does what it
//! says at once. Names typed on the command line are percent-encoded into
//! the path, so a stray `/` or `?` cannot reach another route.

use super::client_for;
use super::http::{Client, check};
use crate::args::{
    BucketCommand, BucketCommandArgs, BucketTarget, QueueCommand, QueueCommandArgs, QueueTarget,
};
use ::http::Method;
use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::io::Write as _;
use weft_host::admin::data::{
    DeleteKeysRequest, KeysPage, PeekedMessage, RedriveRequest, SendRequest, Sent,
};

/// The most pages `weft bucket keys` reads: far past any bucket's keys at
/// its byte limit, a guard against a backend whose cursor never ends.
const MAX_KEY_PAGES: usize = 100_000;

/// `weft queue ...`.
pub async fn queue(args: QueueCommandArgs) -> anyhow::Result<()> {
    match args.command {
        QueueCommand::Send(args) => {
            let client = client_for(&args.client, Some(&args.target.service))?;
            let mut request = SendRequest {
                delay_ms: args.delay_ms,
                ..SendRequest::default()
            };
            match (&args.text, &args.file) {
                (Some(text), _) => request.body = Some(text.clone()),
                (None, Some(file)) => {
                    let bytes = std::fs::read(file)
                        .with_context(|| format!("{}: cannot read", file.display()))?;
                    request.body_base64 = Some(BASE64.encode(bytes));
                }
                (None, None) => bail!("give the message as TEXT or --file FILE"),
            }
            let sent: Sent = client
                .json(Method::POST, &messages(&args.target), Some(&request))
                .await?;
            println!("{}", sent.id);
        }
        QueueCommand::Peek(args) => {
            let client = client_for(&args.client, Some(&args.target.service))?;
            let path = format!("{}?max={}", messages(&args.target), args.max);
            let page: serde_json::Value = client.json(Method::GET, &path, None::<&()>).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&page)?);
                return Ok(());
            }
            let messages: Vec<PeekedMessage> = serde_json::from_value(page["messages"].clone())
                .context("the admin API's answer is not the JSON expected")?;
            let mut out = std::io::stdout().lock();
            for message in &messages {
                writeln!(out, "{}", peek_line(message))?;
            }
        }
        QueueCommand::Purge(args) => {
            let QueueTarget { service, queue } = &args.target;
            if !args.yes {
                bail!("purging deletes every message of {service}/{queue}: add --yes to do it");
            }
            let client = client_for(&args.client, Some(&args.target.service))?;
            let purged: serde_json::Value = client
                .json(Method::DELETE, &messages(&args.target), None::<&()>)
                .await?;
            println!(
                "purged {} messages from {service}/{queue}",
                purged["purged"]
            );
        }
        QueueCommand::Redrive(args) => {
            let client = client_for(&args.client, Some(&args.target.service))?;
            let request = RedriveRequest {
                ids: (!args.ids.is_empty()).then_some(args.ids),
            };
            let path = format!(
                "/v1/services/{}/queues/{}/redrive",
                segment(&args.target.service),
                segment(&args.target.queue)
            );
            let moved: serde_json::Value = client.json(Method::POST, &path, Some(&request)).await?;
            let moved = moved["moved"].as_array().cloned().unwrap_or_default();
            println!(
                "moved {} messages back to {}/{}",
                moved.len(),
                args.target.service,
                args.target.queue
            );
            for id in moved.iter().filter_map(|id| id.as_str()) {
                println!("  {id}");
            }
        }
    }
    Ok(())
}

/// `weft bucket ...`.
pub async fn bucket(args: BucketCommandArgs) -> anyhow::Result<()> {
    match args.command {
        BucketCommand::Keys(args) => {
            let client = client_for(&args.client, Some(&args.target.service))?;
            let mut cursor: Option<u64> = None;
            let mut out = std::io::stdout().lock();
            for _ in 0..MAX_KEY_PAGES {
                let path = match cursor {
                    Some(at) => format!("{}?cursor={at}", keys(&args.target)),
                    None => keys(&args.target),
                };
                let page: KeysPage = client.json(Method::GET, &path, None::<&()>).await?;
                for key in &page.keys {
                    writeln!(out, "{key}")?;
                }
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => return Ok(()),
                }
            }
            bail!("the bucket's keys did not end after {MAX_KEY_PAGES} pages");
        }
        BucketCommand::Get(args) => {
            let client = client_for(&args.client, Some(&args.target.service))?;
            let path = format!(
                "{}/value?key={}",
                bucket_path(&args.target),
                segment(&args.key)
            );
            let (status, value) = get(&client, &path).await?;
            check(status, &value)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&value)?;
            out.flush()?;
        }
        BucketCommand::Delete(args) => {
            let client = client_for(&args.client, Some(&args.target.service))?;
            let path = format!("{}/keys/delete", bucket_path(&args.target));
            let request = DeleteKeysRequest { keys: args.keys };
            let deleted: serde_json::Value =
                client.json(Method::POST, &path, Some(&request)).await?;
            println!(
                "deleted {} keys from {}/{}",
                deleted["deleted"], args.target.service, args.target.bucket
            );
        }
        BucketCommand::Purge(args) => {
            let BucketTarget { service, bucket } = &args.target;
            if !args.yes {
                bail!("purging deletes every key of {service}/{bucket}: add --yes to do it");
            }
            let client = client_for(&args.client, Some(&args.target.service))?;
            let purged: serde_json::Value = client
                .json(Method::DELETE, &keys(&args.target), None::<&()>)
                .await?;
            println!("purged {} keys from {service}/{bucket}", purged["purged"]);
        }
    }
    Ok(())
}

async fn get(client: &Client, path: &str) -> anyhow::Result<(::http::StatusCode, Bytes)> {
    client
        .call(Method::GET, path, "application/json", Bytes::new())
        .await
}

/// One peeked message on one line: its id, deliveries, when it was sent,
/// why it was poisoned, its trace, and its body (text, or base64).
fn peek_line(message: &PeekedMessage) -> String {
    let mut line = format!(
        "id={} dequeue-count={} sent-ms={}",
        message.id, message.dequeue_count, message.inserted_at_ms
    );
    if let Some(reason) = &message.poison_reason {
        line.push_str(&format!(" reason={reason:?}"));
    }
    if let Some(trace) = &message.trace_parent {
        line.push_str(&format!(" traceparent={trace}"));
    }
    match &message.body {
        Some(text) => line.push_str(&format!(" body={text:?}")),
        None => line.push_str(&format!(" body-base64={}", message.body_base64)),
    }
    line
}

fn messages(target: &QueueTarget) -> String {
    format!(
        "/v1/services/{}/queues/{}/messages",
        segment(&target.service),
        segment(&target.queue)
    )
}

fn bucket_path(target: &BucketTarget) -> String {
    format!(
        "/v1/services/{}/buckets/{}",
        segment(&target.service),
        segment(&target.bucket)
    )
}

fn keys(target: &BucketTarget) -> String {
    format!("{}/keys", bucket_path(target))
}

/// Every byte but RFC 3986's unreserved ones.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `text` percent-encoded for a path segment or a query value: every byte
/// but the unreserved ones (RFC 3986) escaped.
fn segment(text: &str) -> String {
    utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys_are_percent_encoded() {
        assert_eq!(segment("jobs-poison"), "jobs-poison");
        assert_eq!(segment("seen/a b?c&d=e%"), "seen%2Fa%20b%3Fc%26d%3De%25");
        assert_eq!(segment("\u{2713}"), "%E2%9C%93");
        assert_eq!(segment("a~b_c.d+e"), "a~b_c.d%2Be");
        let target = QueueTarget {
            service: "shop".into(),
            queue: "../x".into(),
        };
        assert_eq!(
            messages(&target),
            "/v1/services/shop/queues/..%2Fx/messages"
        );
    }

    #[test]
    fn a_peeked_message_is_one_line_with_its_body_as_text_or_base64() {
        let mut message = PeekedMessage {
            id: "m1".into(),
            body: Some("two\nlines".into()),
            body_base64: BASE64.encode("two\nlines"),
            dequeue_count: 3,
            inserted_at_ms: 1000,
            poison_reason: Some("delivered 3 times".into()),
            trace_parent: None,
        };
        assert_eq!(
            peek_line(&message),
            "id=m1 dequeue-count=3 sent-ms=1000 reason=\"delivered 3 times\" body=\"two\\nlines\""
        );
        message.body = None;
        message.body_base64 = "AP8=".into();
        message.poison_reason = None;
        assert_eq!(
            peek_line(&message),
            "id=m1 dequeue-count=3 sent-ms=1000 body-base64=AP8="
        );
    }
}

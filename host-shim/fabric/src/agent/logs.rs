//! The logs responder: every member answers, on core NATS request/reply
//! at `weft.fabric.<host-id>.logs`, for the guest output its own
//! [`GuestOutput`] keeps (the ring the admin API's logs route reads), so
//! `weft logs --fabric` shows a service's lines from every host that runs
//! it. The request and the answer are JSON ([`LogsRequest`],
//! [`LogsReply`]); a request that is not one, or names what cannot be a
//! service or a role, gets an error answer, never a panic.

use crate::error::{FabricError, one_line};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_host::Controller;
use weft_host::guest_output::{GuestOutput, LogLine};
use weft_host::manifest::check_name;

/// The most lines one answer holds (what a host keeps of one role).
pub const MAX_LINES_PER_ANSWER: u32 = 1000;

/// The subject host `host_id` answers logs requests on.
pub fn logs_subject(host_id: &str) -> String {
    format!("weft.fabric.{host_id}.logs")
}

/// What a client asks a host for: a service's lines after a sequence
/// number of that host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsRequest {
    /// The service.
    pub service: String,
    /// One role; none: every role the service has here.
    #[serde(default)]
    pub role: Option<String>,
    /// Only lines after this sequence number (0: from the oldest kept).
    #[serde(default)]
    pub after: u64,
    /// At most this many lines (1 to [`MAX_LINES_PER_ANSWER`]), the oldest first.
    pub limit: u32,
}

/// A page of a host's lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsPage {
    /// The lines, in the host's sequence order.
    pub lines: Vec<LogLine>,
    /// The sequence number to ask after next time.
    pub next: u64,
}

/// A host's answer: a page, or why the request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogsReply {
    /// The lines asked for.
    Page(LogsPage),
    /// Why the request was refused, in one line.
    Refused {
        /// The reason.
        error: String,
    },
}

/// Answers logs requests for `host_id` from `output` until `shutdown`
/// turns true; the subscription is made before this returns, so a
/// request sent afterwards is answered.
pub async fn spawn_responder(
    client: async_nats::Client,
    host_id: &str,
    output: Arc<GuestOutput>,
    controller: Arc<Controller>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, FabricError> {
    let mut requests = client
        .subscribe(logs_subject(host_id))
        .await
        .map_err(FabricError::store)?;
    Ok(tokio::spawn(async move {
        while !*shutdown.borrow() {
            let message = tokio::select! {
                message = requests.next() => message,
                _ = shutdown.changed() => break,
            };
            let Some(message) = message else { break };
            let Some(reply_to) = message.reply else {
                continue;
            };
            let reply = answer(&message.payload, &output, |service| {
                roles_here(&controller, service)
            });
            let body = encoded(reply, client.max_payload());
            if let Err(e) = client.publish(reply_to, body.into()).await {
                tracing::debug!(error = %e, "cannot answer a logs request");
            }
        }
        let _ = requests.unsubscribe().await;
    }))
}

/// The answer to request `payload`, reading `output`; `roles_of` lists a
/// service's roles on this host.
pub(crate) fn answer(
    payload: &[u8],
    output: &GuestOutput,
    roles_of: impl FnOnce(&str) -> Vec<String>,
) -> LogsReply {
    match parse(payload) {
        Ok(request) => {
            let roles = match &request.role {
                Some(role) => vec![role.clone()],
                None => roles_of(&request.service),
            };
            LogsReply::Page(read(output, &request, &roles))
        }
        Err(error) => LogsReply::Refused { error },
    }
}

/// The request in `payload`, checked.
fn parse(payload: &[u8]) -> Result<LogsRequest, String> {
    let request: LogsRequest = serde_json::from_slice(payload)
        .map_err(|e| one_line(&format!("not a logs request: {e}")))?;
    check_name(&request.service).map_err(|why| format!("service name: {why}"))?;
    if let Some(role) = &request.role {
        check_name(role).map_err(|why| format!("role name: {why}"))?;
    }
    if !(1..=MAX_LINES_PER_ANSWER).contains(&request.limit) {
        return Err(format!(
            "limit must be 1 to {MAX_LINES_PER_ANSWER}, not {}",
            request.limit
        ));
    }
    Ok(request)
}

/// The oldest `request.limit` lines of `roles` after `request.after`, in
/// the host's sequence order.
fn read(output: &GuestOutput, request: &LogsRequest, roles: &[String]) -> LogsPage {
    let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
    let mut lines: Vec<LogLine> = roles
        .iter()
        .flat_map(|role| output.read(&request.service, role, request.after, limit).0)
        .collect();
    lines.sort_by_key(|line| line.seq);
    lines.truncate(limit);
    let next = lines.last().map_or(request.after, |line| line.seq);
    LogsPage { lines, next }
}

/// `reply` as JSON no larger than `max_bytes` (the server's largest
/// message): a page too large keeps its oldest half until it fits (its
/// `next` moved back with it, so the rest comes next time).
fn encoded(mut reply: LogsReply, max_bytes: usize) -> Vec<u8> {
    loop {
        let body = serde_json::to_vec(&reply).unwrap_or_default();
        if body.len() <= max_bytes {
            return body;
        }
        let LogsReply::Page(page) = &mut reply else {
            return body;
        };
        if page.lines.len() <= 1 {
            reply = LogsReply::Refused {
                error: "a line is larger than the fabric server's largest message".into(),
            };
            continue;
        }
        page.lines.truncate(page.lines.len() / 2);
        if let Some(last) = page.lines.last() {
            page.next = last.seq;
        }
    }
}

/// The roles service `service` has on this host (none: it has none here).
fn roles_here(controller: &Controller, service: &str) -> Vec<String> {
    let Some(record) = controller.record(service) else {
        return Vec::new();
    };
    match record.source.resolve(&record.overrides) {
        Ok(manifest) => manifest.roles.into_keys().collect(),
        Err(_) => record
            .local
            .map(|part| part.roles.into_keys().collect())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::NatsServer;
    use bytes::Bytes;
    use std::time::Duration;

    fn output() -> Arc<GuestOutput> {
        let output = Arc::new(GuestOutput::default());
        output.push("shop", "web", "req-1".into(), "stdout".into(), "w1".into());
        output.push("shop", "worker", "0".into(), "stdout".into(), "k1".into());
        output.push("shop", "web", "req-2".into(), "stderr".into(), "w2".into());
        output.push("other", "web", "req-1".into(), "stdout".into(), "o1".into());
        output
    }

    fn texts(reply: &LogsReply) -> Vec<&str> {
        match reply {
            LogsReply::Page(page) => page.lines.iter().map(|l| l.text.as_str()).collect(),
            LogsReply::Refused { error } => panic!("refused: {error}"),
        }
    }

    fn refusal(reply: LogsReply) -> String {
        match reply {
            LogsReply::Refused { error } => error,
            LogsReply::Page(page) => panic!("answered {page:?}"),
        }
    }

    #[test]
    fn every_role_is_read_in_sequence_and_paged() {
        let output = output();
        let roles = |_: &str| vec!["web".to_owned(), "worker".to_owned()];
        let all = answer(
            br#"{"service":"shop","after":0,"limit":1000}"#,
            &output,
            roles,
        );
        assert_eq!(texts(&all), ["w1", "k1", "w2"]);
        let first = answer(br#"{"service":"shop","limit":2}"#, &output, roles);
        assert_eq!(texts(&first), ["w1", "k1"]);
        let LogsReply::Page(first) = first else {
            unreachable!()
        };
        let rest = format!(r#"{{"service":"shop","after":{},"limit":2}}"#, first.next);
        assert_eq!(texts(&answer(rest.as_bytes(), &output, roles)), ["w2"]);
        let web = answer(
            br#"{"service":"shop","role":"web","limit":10}"#,
            &output,
            |_| panic!("a role was given"),
        );
        assert_eq!(texts(&web), ["w1", "w2"]);
        let none = answer(br#"{"service":"gone","limit":10}"#, &output, |_| Vec::new());
        assert_eq!(
            none,
            LogsReply::Page(LogsPage {
                lines: Vec::new(),
                next: 0
            })
        );
    }

    #[test]
    fn a_malformed_request_is_refused_in_one_line() {
        let output = output();
        let ask = |text: &str| refusal(answer(text.as_bytes(), &output, |_| Vec::new()));
        assert!(ask("not json").starts_with("not a logs request: "));
        assert!(
            ask(r#"{"service":"shop"}"#).starts_with("not a logs request: missing field `limit`")
        );
        assert!(ask(r#"{"service":"shop","limit":1,"extra":1}"#).contains("unknown field"));
        assert_eq!(
            ask(r#"{"service":"../etc","limit":1}"#),
            "service name: may hold only a-z, 0-9, '-' and '_'"
        );
        assert_eq!(
            ask(r#"{"service":"shop","role":"","limit":1}"#),
            "role name: must be 1 to 64 characters"
        );
        assert_eq!(
            ask(r#"{"service":"shop","limit":0}"#),
            "limit must be 1 to 1000, not 0"
        );
        assert_eq!(
            ask(r#"{"service":"shop","limit":1001}"#),
            "limit must be 1 to 1000, not 1001"
        );
        assert!(!ask("{\n\"service\": 5}").contains('\n'));
    }

    #[test]
    fn a_page_too_large_for_one_message_keeps_its_oldest_lines() {
        let output = GuestOutput::default();
        for i in 0..8 {
            output.push(
                "s",
                "r",
                "0".into(),
                "stdout".into(),
                format!("{i}{}", "x".repeat(100)),
            );
        }
        let request = LogsRequest {
            service: "s".into(),
            role: Some("r".into()),
            after: 0,
            limit: 100,
        };
        let page = LogsReply::Page(read(&output, &request, &["r".to_owned()]));
        let body = encoded(page, 500);
        assert!(body.len() <= 500, "{}", body.len());
        let LogsReply::Page(fitted) = serde_json::from_slice(&body).unwrap() else {
            panic!("refused")
        };
        assert!(!fitted.lines.is_empty() && fitted.lines.len() < 8);
        assert_eq!(fitted.next, fitted.lines.last().unwrap().seq);
        assert!(fitted.lines[0].text.starts_with('0'));
        let tiny = encoded(
            LogsReply::Page(read(&output, &request, &["r".to_owned()])),
            60,
        );
        assert_eq!(
            serde_json::from_slice::<LogsReply>(&tiny).unwrap(),
            LogsReply::Refused {
                error: "a line is larger than the fabric server's largest message".into()
            }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_responder_answers_over_nats_and_refuses_a_bad_request() {
        let server = NatsServer::start();
        let client = async_nats::connect(server.url()).await.unwrap();
        let state = tempfile::tempdir().unwrap();
        let controller = crate::agent::tests::controller(state.path());
        let (stop, shutdown) = watch::channel(false);
        let responder =
            spawn_responder(client.clone(), "h1", output(), controller.clone(), shutdown)
                .await
                .unwrap();
        let ask = |payload: &'static str| {
            let client = client.clone();
            async move {
                let answer = tokio::time::timeout(
                    Duration::from_secs(5),
                    client.request(logs_subject("h1"), Bytes::from_static(payload.as_bytes())),
                )
                .await
                .unwrap()
                .unwrap();
                serde_json::from_slice::<LogsReply>(&answer.payload).unwrap()
            }
        };
        let web = ask(r#"{"service":"shop","role":"web","after":0,"limit":1000}"#).await;
        assert_eq!(texts(&web), ["w1", "w2"]);
        // Not deployed here: no roles to read, an empty page.
        let none = ask(r#"{"service":"shop","after":0,"limit":1000}"#).await;
        assert!(texts(&none).is_empty());
        let bad = refusal(ask(r#"{"service":"Shop","limit":5}"#).await);
        assert!(bad.starts_with("service name: "), "{bad}");
        let garbage = refusal(ask("\u{0}\u{1}").await);
        assert!(garbage.starts_with("not a logs request"), "{garbage}");
        // Still answering after the bad ones.
        assert_eq!(
            texts(&ask(r#"{"service":"other","role":"web","limit":1}"#).await),
            ["o1"]
        );

        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), responder)
            .await
            .unwrap()
            .unwrap();
        controller.shutdown().await;
    }
}

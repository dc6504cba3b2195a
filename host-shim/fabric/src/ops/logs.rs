//! `weft logs --fabric`: a service's guest output, asked of every host
//! whose beat says it runs the service (its logs responder,
//! [`crate::agent::logs`]), each within [`ASK_WITHIN`]; a host that does
//! not answer is named, not an error. Lines are merged by the time each
//! host logged them.

use super::Operator;
use crate::agent::logs::{LogsPage, LogsReply, LogsRequest, MAX_LINES_PER_ANSWER, logs_subject};
use crate::error::{FabricError, one_line};
use crate::model::{Beat, SignedDesired};
use crate::names::{BEAT_PREFIX, service_key};
use crate::store::{Bucket, Versioned};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;
use weft_host::guest_output::LogLine;
use weft_host::manifest::check_name;

/// How long each host has to answer one request.
pub const ASK_WITHIN: Duration = Duration::from_secs(2);
/// The most pages read of one host for the latest lines (a host keeps at
/// most 1000 lines per role; new lines arriving meanwhile end it too).
const MAX_PAGES: u32 = 64;

/// Lines of a service's guest output from the hosts that run it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FabricLogs {
    /// Each line with the host that logged it, oldest first.
    pub lines: Vec<(String, LogLine)>,
    /// Hosts that run the service and did not answer, with why.
    pub silent: BTreeMap<String, String>,
    /// The sequence number to ask each host after next time (for `-f`).
    pub next: BTreeMap<String, u64>,
}

impl Operator {
    /// The latest `limit` lines of role `role` (none: every role) of
    /// `service`, from every host running it.
    pub async fn logs(
        &self,
        service: &str,
        role: Option<&str>,
        limit: u32,
    ) -> Result<FabricLogs, FabricError> {
        let hosts = self.hosts_logging(service, role).await?;
        let keep = usize::try_from(limit).unwrap_or(usize::MAX);
        let asked = hosts.iter().map(|host| async move {
            let latest = self.latest_of(host, service, role, keep).await;
            (host.clone(), latest)
        });
        let mut per_host = BTreeMap::new();
        let mut found = FabricLogs::default();
        for (host, latest) in futures::future::join_all(asked).await {
            match latest {
                Ok((lines, next)) => {
                    found.next.insert(host.clone(), next);
                    per_host.insert(host, lines);
                }
                Err(why) => {
                    found.silent.insert(host, why);
                }
            }
        }
        found.lines = merged_by_time(per_host, keep);
        Ok(found)
    }

    /// The lines logged since `after` (host → sequence number; a host not
    /// in it from its oldest kept line) by the hosts running `service` now.
    pub async fn logs_after(
        &self,
        service: &str,
        role: Option<&str>,
        after: &BTreeMap<String, u64>,
    ) -> Result<FabricLogs, FabricError> {
        let hosts = self.hosts_logging(service, role).await?;
        let asked = hosts.iter().map(|host| async move {
            let from = after.get(host).copied().unwrap_or(0);
            let page = ask(self, host, service, role, from, MAX_LINES_PER_ANSWER).await;
            (host.clone(), page)
        });
        let mut per_host = BTreeMap::new();
        let mut found = FabricLogs::default();
        for (host, page) in futures::future::join_all(asked).await {
            match page {
                Ok(page) => {
                    found.next.insert(host.clone(), page.next);
                    per_host.insert(host, page.lines);
                }
                Err(why) => {
                    found.silent.insert(host, why);
                }
            }
        }
        found.lines = merged_by_time(per_host, usize::MAX);
        Ok(found)
    }

    /// The hosts whose beat runs `service` (with `role`), the names
    /// checked first; [`FabricError::NotFound`] if the fabric has no such
    /// service.
    async fn hosts_logging(
        &self,
        service: &str,
        role: Option<&str>,
    ) -> Result<Vec<String>, FabricError> {
        check_name(service).map_err(|why| FabricError::Refused(format!("service name: {why}")))?;
        if let Some(role) = role {
            check_name(role).map_err(|why| FabricError::Refused(format!("role name: {why}")))?;
        }
        let beats: BTreeMap<String, Versioned<Beat>> =
            self.store().list(Bucket::Beats, BEAT_PREFIX).await?;
        let beats: BTreeMap<String, Beat> = beats
            .into_iter()
            .map(|(host, beat)| (host, beat.value))
            .collect();
        let hosts = hosts_running(&beats, service, role);
        if hosts.is_empty() {
            let deployed = self
                .store()
                .get::<SignedDesired>(Bucket::State, &service_key(service))
                .await?
                .is_some();
            if !deployed {
                return Err(FabricError::NotFound(format!(
                    "service {service} is not deployed in the fabric"
                )));
            }
        }
        Ok(hosts)
    }

    /// The latest `keep` lines of one host, paging from its oldest, and
    /// the sequence number after its last.
    async fn latest_of(
        &self,
        host: &str,
        service: &str,
        role: Option<&str>,
        keep: usize,
    ) -> Result<(Vec<LogLine>, u64), String> {
        let mut lines: Vec<LogLine> = Vec::new();
        let mut after = 0;
        for _ in 0..MAX_PAGES {
            let page = ask(self, host, service, role, after, MAX_LINES_PER_ANSWER).await?;
            let full = page.lines.len() >= usize::try_from(MAX_LINES_PER_ANSWER).unwrap_or(0);
            after = page.next;
            lines.extend(page.lines);
            let excess = lines.len().saturating_sub(keep);
            lines.drain(..excess);
            if !full {
                break;
            }
        }
        Ok((lines, after))
    }
}

/// One page of `host`'s lines of `service` after `after`, or why it has none.
async fn ask(
    operator: &Operator,
    host: &str,
    service: &str,
    role: Option<&str>,
    after: u64,
    limit: u32,
) -> Result<LogsPage, String> {
    let request = LogsRequest {
        service: service.to_owned(),
        role: role.map(str::to_owned),
        after,
        limit,
    };
    let payload = serde_json::to_vec(&request).map_err(|e| one_line(&e.to_string()))?;
    let client = operator.store().client();
    let answer = tokio::time::timeout(
        ASK_WITHIN,
        client.request(logs_subject(host), Bytes::from(payload)),
    )
    .await
    .map_err(|_| format!("did not answer within {} s", ASK_WITHIN.as_secs()))?
    .map_err(|e| match e.kind() {
        async_nats::client::RequestErrorKind::NoResponders => {
            "does not answer logs requests (not running, or an older version)".to_owned()
        }
        async_nats::client::RequestErrorKind::TimedOut => {
            format!("did not answer within {} s", ASK_WITHIN.as_secs())
        }
        _ => one_line(&e.to_string()),
    })?;
    match serde_json::from_slice::<LogsReply>(&answer.payload) {
        Ok(LogsReply::Page(page)) => Ok(page),
        Ok(LogsReply::Refused { error }) => Err(format!("refused: {}", one_line(&error))),
        Err(e) => Err(format!(
            "answered something that is not logs: {}",
            one_line(&e.to_string())
        )),
    }
}

/// The hosts whose beat says they run `service` (with role `role`, if given).
pub fn hosts_running(
    beats: &BTreeMap<String, Beat>,
    service: &str,
    role: Option<&str>,
) -> Vec<String> {
    beats
        .iter()
        .filter(|(_, beat)| {
            beat.services
                .get(service)
                .is_some_and(|part| role.is_none_or(|role| part.roles.contains_key(role)))
        })
        .map(|(host, _)| host.clone())
        .collect()
}

/// Every host's lines as one list, oldest first by the time each was
/// logged (a host's own lines keep their order), the latest `keep` of them.
pub fn merged_by_time(
    per_host: BTreeMap<String, Vec<LogLine>>,
    keep: usize,
) -> Vec<(String, LogLine)> {
    let mut lines: Vec<(String, LogLine)> = per_host
        .into_iter()
        .flat_map(|(host, lines)| lines.into_iter().map(move |line| (host.clone(), line)))
        .collect();
    // Stable: lines of one millisecond stay by host, then in sequence.
    lines.sort_by(|(a_host, a), (b_host, b)| {
        (a.at_ms, a_host, a.seq).cmp(&(b.at_ms, b_host, b.seq))
    });
    let excess = lines.len().saturating_sub(keep);
    lines.drain(..excess);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RolePart, ServicePart};

    fn line(seq: u64, at_ms: u64, text: &str) -> LogLine {
        LogLine {
            seq,
            at_ms,
            instance: "0".into(),
            stream: "stdout".into(),
            text: text.into(),
        }
    }

    #[test]
    fn lines_merge_by_time_and_keep_the_latest() {
        let per_host = BTreeMap::from([
            ("a".to_owned(), vec![line(1, 100, "a1"), line(2, 300, "a2")]),
            ("b".to_owned(), vec![line(7, 200, "b1"), line(9, 300, "b2")]),
        ]);
        let all: Vec<(String, String)> = merged_by_time(per_host.clone(), usize::MAX)
            .into_iter()
            .map(|(host, line)| (host, line.text))
            .collect();
        let expected = [("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2")];
        assert_eq!(
            all,
            expected.map(|(h, t)| (h.to_owned(), t.to_owned())).to_vec()
        );
        let latest: Vec<String> = merged_by_time(per_host, 2)
            .into_iter()
            .map(|(_, line)| line.text)
            .collect();
        assert_eq!(latest, ["a2", "b2"]);
        assert!(merged_by_time(BTreeMap::new(), 10).is_empty());
    }

    #[test]
    fn the_hosts_asked_are_those_whose_beat_runs_the_service_or_role() {
        let part = |roles: &[&str]| ServicePart {
            desired_revision: 1,
            generation: 1,
            operation: None,
            roles: roles
                .iter()
                .map(|role| {
                    let part = RolePart {
                        declared: 1,
                        ready: 1,
                        listen: None,
                        health: None,
                    };
                    ((*role).to_owned(), part)
                })
                .collect(),
        };
        let beat = |services: Vec<(&str, ServicePart)>| Beat {
            boot: "b".into(),
            seq: 1,
            sent_ms: 0,
            slots_used: 0,
            services: services
                .into_iter()
                .map(|(name, part)| (name.to_owned(), part))
                .collect(),
            refused: BTreeMap::new(),
            retrying: BTreeMap::new(),
            apply_rounds: 0,
        };
        let beats = BTreeMap::from([
            (
                "a".to_owned(),
                beat(vec![("shop", part(&["web", "worker"]))]),
            ),
            ("b".to_owned(), beat(vec![("shop", part(&["worker"]))])),
            ("c".to_owned(), beat(vec![("other", part(&["web"]))])),
        ]);
        assert_eq!(hosts_running(&beats, "shop", None), ["a", "b"]);
        assert_eq!(hosts_running(&beats, "shop", Some("worker")), ["a", "b"]);
        assert_eq!(hosts_running(&beats, "shop", Some("web")), ["a"]);
        assert!(hosts_running(&beats, "shop", Some("cron")).is_empty());
        assert!(hosts_running(&beats, "gone", None).is_empty());
    }
}

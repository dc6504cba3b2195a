//! `weft logs SERVICE[/ROLE] --fabric URL [-f]`: a service's guest output
//! from every host that runs it, merged by time, each line as `weft logs`
//! prints it for one host with the host's id in front. A host that does
//! not answer is named on stderr; `-f` asks every host for what is new
//! each second.

use super::operator;
use crate::args::LogsArgs;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;
use weft_host::guest_output::LogLine;

/// Between `-f`'s requests.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// `weft logs SERVICE[/ROLE] --fabric URL [-f] [--lines N]`.
pub async fn logs(url: &str, args: LogsArgs) -> anyhow::Result<()> {
    let (service, role) = match args.role.split_once('/') {
        Some((service, role)) => (service, Some(role)),
        None => (args.role.as_str(), None),
    };
    let operator = operator(url, &args.fabric.connect, None, None).await?;
    let limit = u32::try_from(args.lines).unwrap_or(u32::MAX);
    let found = operator.logs(service, role, limit).await?;
    let mut silent = BTreeMap::new();
    note_silent(&mut silent, found.silent);
    print_lines(&found.lines);
    if !args.follow {
        return Ok(());
    }
    let mut next = found.next;
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let found = operator.logs_after(service, role, &next).await?;
        note_silent(&mut silent, found.silent);
        print_lines(&found.lines);
        next.extend(found.next);
    }
}

/// Names on stderr each host in `now` not already named for the same
/// reason in `named`, and forgets the hosts that answer again.
fn note_silent(named: &mut BTreeMap<String, String>, now: BTreeMap<String, String>) {
    for (host, why) in &now {
        if named.get(host) != Some(why) {
            eprintln!("weft: note: host {host} {why}; its lines are not shown");
        }
    }
    *named = now;
}

fn print_lines(lines: &[(String, LogLine)]) {
    let mut out = std::io::stdout().lock();
    for (host, line) in lines {
        let _ = writeln!(out, "{}", shown(host, line));
    }
    let _ = out.flush();
}

/// `HOST [INSTANCE] TEXT`: one host's format, the host in front.
fn shown(host: &str, line: &LogLine) -> String {
    format!("{host} [{}] {}", line.instance, line.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_its_host_then_as_for_one_host() {
        let line = LogLine {
            seq: 3,
            at_ms: 1,
            instance: "req-2".into(),
            stream: "stdout".into(),
            text: "hello".into(),
        };
        assert_eq!(shown("h2", &line), "h2 [req-2] hello");
    }
}

//! How `weft host --fabric` joins: its flags checked and turned into the
//! library's [`MemberOptions`] before anything starts, so a bad id, label
//! or trust file is one line and nothing runs.

use crate::args::FabricArgs;
use anyhow::Context as _;
use std::sync::Arc;
use std::time::Duration;
use weft_fabric::member::MemberOptions;
use weft_fabric::model::Capacity;
use weft_fabric::names::{check_host_id, check_label_part, parse_labels};
use weft_fabric::signing::TrustedKeys;
use weft_fabric::store::ConnectOptions;
use weft_host::guest_output::GuestOutput;

/// The kernel's name for this machine.
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";
/// What the kernel says of its memory.
const MEMINFO_FILE: &str = "/proc/meminfo";

/// The options to join the fabric `args` names (none: `--fabric` was not
/// given), offering `slots` sandboxes and serving `guest_output` to `weft
/// logs --fabric`; the admin address is filled in once the admin server
/// listens.
pub fn member_options(
    args: &FabricArgs,
    slots: u32,
    guest_output: Arc<GuestOutput>,
) -> anyhow::Result<Option<MemberOptions>> {
    // clap's `requires_all` on --fabric brings --advertise and
    // --fabric-trust with it: all three are there, or --fabric is not.
    let (Some(url), Some(advertise), Some(trust)) =
        (&args.fabric, args.advertise, &args.fabric_trust)
    else {
        return Ok(None);
    };
    let host_id = match &args.host_id {
        Some(id) => {
            check_host_id(id)?;
            id.clone()
        }
        None => machine_host_id()?,
    };
    check_label_part("fault domain", &args.fault_domain)?;
    let labels = parse_labels(&args.labels)?;
    // Read now so a missing or empty file stops the start; the member
    // reads it again when it joins.
    TrustedKeys::load(trust)?;
    let connect = ConnectOptions {
        url: url.clone(),
        creds: args.connect.fabric_creds.clone(),
        tls_ca: args.connect.fabric_tls_ca.clone(),
        timeout: Duration::from_secs(args.connect.fabric_connect_timeout),
        replicas: usize::from(args.fabric_replicas),
    };
    Ok(Some(MemberOptions {
        connect,
        host_id,
        advertise,
        admin: None,
        fault_domain: args.fault_domain.clone(),
        labels,
        capacity: Capacity {
            slots,
            memory_mib: memory_mib(),
            cpus: std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        },
        trust: trust.clone(),
        down_after: Duration::from_secs(args.fabric_down_after),
        guest_output: Some(guest_output),
    }))
}

/// The machine's host name, up to its first dot, as a host id.
fn machine_host_id() -> anyhow::Result<String> {
    let text = std::fs::read_to_string(HOSTNAME_FILE).with_context(|| {
        format!("{HOSTNAME_FILE}: cannot read the host name: pass --host-id ID")
    })?;
    let name = text.trim();
    let id = name
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    check_host_id(&id).with_context(|| {
        format!(
            "the machine's host name '{}' is not a host id: pass --host-id ID",
            name.chars().take(80).collect::<String>()
        )
    })?;
    Ok(id)
}

/// The machine's memory in MiB (`MemTotal`), or 0 if the kernel does not say.
fn memory_mib() -> u64 {
    let text = std::fs::read_to_string(MEMINFO_FILE).unwrap_or_default();
    mem_total_mib(&text).unwrap_or_else(|| {
        tracing::warn!(
            file = MEMINFO_FILE,
            "cannot read the machine's memory; offering 0 MiB"
        );
        0
    })
}

/// `MemTotal` of a `/proc/meminfo` text, in MiB.
fn mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_meminfo() {
        let text = "MemTotal:       16314116 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total_mib(text), Some(15931));
        assert_eq!(mem_total_mib("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_mib("MemTotal: lots kB\n"), None);
    }
}

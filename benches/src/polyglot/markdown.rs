//! The Markdown of `weft-bench polyglot`: the servers' command lines, then
//! one table per figure (components, first start, requests under wrk), each
//! with Weft's ratio to every `wasmtime` for the same component and setting.

use super::{Cache, Host, Loads, Run, Setup, Starts};
use crate::stats::{min_median_max, spread};
use std::fmt::Write as _;

/// The report of a run whose figures are `starts` and `loads`; `versions`
/// names each `wasmtime` of `setup`.
pub(super) fn write(
    setup: &Setup,
    versions: &[String],
    starts: &Starts,
    loads: &Loads,
) -> anyhow::Result<String> {
    let hosts = setup.hosts();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Hello-world web roles in Python and JavaScript: each component answers `GET /` with `Hello, world!` and imports only `wasi:http/proxy`, so `wasmtime serve` runs the very same `.wasm` as `weft serve`. Ratios are Weft's figure over wasmtime's for the same component and the same setting (requests/s: above 1 is Weft faster; ms: below 1 is Weft faster).\n"
    );
    let _ = writeln!(
        out,
        "Servers (ADDR a loopback port, N requests per instance):\n"
    );
    for &host in &hosts {
        let _ = writeln!(
            out,
            "- {}: `{}`",
            setup.host_label(host, versions),
            setup.describe(host, versions)
        );
    }

    let _ = writeln!(out, "\n### Components\n");
    let _ = write!(out, "| component | `.wasm` bytes |");
    for &host in &hosts {
        let _ = write!(
            out,
            " {} cache after compiling, bytes |",
            setup.host_label(host, versions)
        );
    }
    let _ = writeln!(out, "\n|---|---:|{}", "---:|".repeat(hosts.len()));
    for (g, guest) in setup.guests.iter().enumerate() {
        let size = std::fs::metadata(&guest.path)?.len();
        let _ = write!(out, "| {} | {size} |", guest.label);
        for h in 0..hosts.len() {
            let _ = write!(out, " {} |", starts.compiled[g][h]);
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "\nThe caches hold what each host wrote on its first start: Weft's compiled component (authenticated with an HMAC), wasmtime's compiled component compressed with zstd."
    );

    let _ = writeln!(out, "\n### Process start to first response\n");
    let _ = writeln!(
        out,
        "From spawning the server to its first `200` for `GET /` (polled over TCP every 0.2 ms, a new connection per try); ms, median (min–max). *Empty cache*: the cache folder is new and empty each run, so the host compiles the component and writes it there ({} runs each). *Warm cache*: the folder the first of those runs filled ({} runs each). Runs are interleaved: one of each configuration per round.\n",
        setup.compile_repeats, setup.start_repeats
    );
    let _ = write!(out, "| component | server | cache | ms to first response |");
    for v in versions {
        let _ = write!(out, " ÷ {v} serve |");
    }
    let _ = writeln!(
        out,
        "\n|---|---|---|---:|{}",
        "---:|".repeat(versions.len())
    );
    for (g, guest) in setup.guests.iter().enumerate() {
        for (k, cache) in [Cache::Empty, Cache::Warm].into_iter().enumerate() {
            for (h, &host) in hosts.iter().enumerate() {
                let runs = &starts.millis[g][h][k];
                let median = min_median_max(runs).1;
                let _ = write!(
                    out,
                    "| {} | {} | {} | {} |",
                    guest.label,
                    setup.host_label(host, versions),
                    cache.label(),
                    spread(runs, 1)
                );
                for w in 0..versions.len() {
                    let base = min_median_max(&starts.millis[g][w + 1][k]).1;
                    let _ = write!(out, " {:.2} |", median / base);
                }
                let _ = writeln!(out);
            }
        }
    }

    let _ = writeln!(out, "\n### Requests under wrk\n");
    let _ = writeln!(
        out,
        "Each round starts every server in turn (warm cache), warms it with 1 s of load at 16 connections, then runs wrk for {} s at each connection count (`-t 1` for one connection, `-t 2` otherwise); {} rounds. *Fresh*: a new instance per request (`--requests-per-instance 1`, `--max-instance-reuse-count 1`, wasmtime's default for a WASIp2 component). *Reuse*: an instance serves up to {} requests in sequence (`--requests-per-instance {}` beside `--max-instance-reuse-count {}`); before measuring it, two more requests after the first must answer 200, or the row is left out. wrk runs on the same cores as the server. Requests/s is the median (min–max) over rounds; p50 and p99 are wrk's, median over rounds; server CPU is the server process's user + system time over the wrk run divided by the requests it answered.\n",
        setup.seconds, setup.repeats, setup.reuse, setup.reuse, setup.reuse
    );
    let _ = write!(
        out,
        "| component | server | instances | connections | requests/s |"
    );
    for v in versions {
        let _ = write!(out, " ÷ {v} serve |");
    }
    let _ = write!(out, " p50 ms | p99 ms |");
    for v in versions {
        let _ = write!(out, " p99 ÷ {v} serve |");
    }
    let _ = writeln!(
        out,
        " server CPU µs/request | non-2xx + socket errors |\n|---|---|---|---:|---:|{}---:|---:|{}---:|---:|",
        "---:|".repeat(versions.len()),
        "---:|".repeat(versions.len())
    );
    let contenders = setup.contenders();
    let mut notes = Vec::new();
    for (g, guest) in setup.guests.iter().enumerate() {
        let median = |c: usize, k: usize, pick: fn(&Run) -> f64| {
            min_median_max(&loads.runs[g][c][k].iter().map(pick).collect::<Vec<_>>()).1
        };
        for (c, who) in contenders.iter().enumerate() {
            let instances = if who.requests_per_instance == 1 {
                "fresh".to_owned()
            } else {
                format!("reuse {}", who.requests_per_instance)
            };
            let server = setup.host_label(who.host, versions);
            if let Some(why) = &loads.left_out[g][c] {
                notes.push(format!(
                    "- {}, {server}, {instances}: left out: {why}.",
                    guest.label
                ));
                continue;
            }
            // The same setting on each wasmtime, unless that one was left out.
            let base = |w: usize| {
                contenders
                    .iter()
                    .position(|o| {
                        o.host == Host::Wasmtime(w)
                            && o.requests_per_instance == who.requests_per_instance
                    })
                    .filter(|&b| loads.left_out[g][b].is_none())
            };
            for (k, connections) in setup.connections.iter().enumerate() {
                let runs = &loads.runs[g][c][k];
                let pick = |f: fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<_>>();
                let _ = write!(
                    out,
                    "| {} | {server} | {instances} | {connections} | {} |",
                    guest.label,
                    spread(&pick(|r| r.rate), 0)
                );
                for w in 0..versions.len() {
                    let _ = write!(
                        out,
                        " {} |",
                        base(w).map_or("—".into(), |b| format!(
                            "{:.2}",
                            median(c, k, |r| r.rate) / median(b, k, |r| r.rate)
                        ))
                    );
                }
                let _ = write!(
                    out,
                    " {:.3} | {:.3} |",
                    median(c, k, |r| r.p50_ms),
                    median(c, k, |r| r.p99_ms)
                );
                for w in 0..versions.len() {
                    let _ = write!(
                        out,
                        " {} |",
                        base(w).map_or("—".into(), |b| format!(
                            "{:.2}",
                            median(c, k, |r| r.p99_ms) / median(b, k, |r| r.p99_ms)
                        ))
                    );
                }
                let _ = writeln!(
                    out,
                    " {} | {} |",
                    spread(&pick(|r| r.cpu_us_per_request), 1),
                    runs.iter().map(|r| r.errors).sum::<u64>()
                );
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\n{}", notes.join("\n"));
    }
    let _ = writeln!(out, "\nwrk commands:\n\n```sh");
    for line in &loads.wrk_lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "```");
    Ok(out)
}

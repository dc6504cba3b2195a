//! Placement benchmark: how long the leader's placement takes for a large
//! fabric, from empty and for a reconcile with nothing to do (what the
//! leader runs every second). Run with
//! `cargo bench -p weft-fabric --bench placement`.
//!
//! The fabric: 100 hosts in 10 fault domains, 150 slots each, every other
//! host labelled `disk=ssd`; 100 services, each a web role on 5 hosts
//! (4 slots each) and a worker role of 95 instances, every tenth service's
//! worker requiring `disk=ssd`: 10,000 instances in all.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use weft_fabric::model::HostState;
use weft_fabric::placement::{Current, Demand, HostView, Plan, place};

const HOSTS: usize = 100;
const DOMAINS: usize = 10;
const SERVICES: usize = 100;
const RUNS: usize = 11;

fn hosts() -> Vec<HostView> {
    (0..HOSTS)
        .map(|n| HostView {
            id: format!("host-{n:03}"),
            fault_domain: format!("rack-{}", n % DOMAINS),
            labels: if n % 2 == 0 {
                BTreeMap::from([("disk".to_owned(), "ssd".to_owned())])
            } else {
                BTreeMap::new()
            },
            capacity: 150,
            state: HostState::Ready,
        })
        .collect()
}

fn demands() -> Vec<Demand> {
    (0..SERVICES)
        .flat_map(|n| {
            let service = format!("svc-{n:03}");
            let web = Demand {
                service: service.clone(),
                role: "web".to_owned(),
                count: 5,
                slots_each: 4,
                one_per_host: true,
                requires: BTreeMap::new(),
            };
            let worker = Demand {
                service,
                role: "worker".to_owned(),
                count: 95,
                slots_each: 1,
                one_per_host: false,
                requires: if n % 10 == 0 {
                    BTreeMap::from([("disk".to_owned(), "ssd".to_owned())])
                } else {
                    BTreeMap::new()
                },
            };
            [web, worker]
        })
        .collect()
}

/// The median time of `RUNS` calls of `run`, and its last result.
fn median_of(mut run: impl FnMut() -> Plan) -> (Duration, Plan) {
    let mut times = Vec::with_capacity(RUNS);
    let mut last = Plan::default();
    for _ in 0..RUNS {
        let start = Instant::now();
        last = std::hint::black_box(run());
        times.push(start.elapsed());
    }
    times.sort();
    (times[RUNS / 2], last)
}

fn ms(time: Duration) -> String {
    format!("{:.2}", time.as_secs_f64() * 1000.0)
}

fn main() {
    let hosts = hosts();
    let demands = demands();
    let empty = Current::new();
    let (from_empty, plan) = median_of(|| place(&hosts, &demands, &empty));
    let (no_op, again) = median_of(|| place(&hosts, &demands, &plan.placements));
    let instances: usize = plan
        .placements
        .values()
        .map(|placement| placement.len())
        .sum();
    let unplaced: u32 = plan.unplaced.values().sum();
    println!(
        "| instances | unplaced | hosts | fault domains | place from empty (ms, median of {RUNS}) | no-op reconcile (ms, median of {RUNS}) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {instances} | {unplaced} | {HOSTS} | {DOMAINS} | {} | {} |",
        ms(from_empty),
        ms(no_op)
    );
    if again != plan {
        eprintln!("the no-op reconcile moved instances: placement is not stable");
        std::process::exit(1);
    }
}

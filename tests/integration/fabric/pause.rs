//! A host stopped (SIGSTOP) past its down-after, then let go on: while it
//! is silent the leader declares it down and the others take its worker;
//! once it is back it reconciles before it beats, so that the fabric never
//! runs more workers than declared, beyond those on hosts declared down,
//! and exactly the declared ones once it has caught up. Every accepted job
//! is done (a lease that lapsed while it was stopped is delivered again:
//! results are counted, not deliveries).

use super::harness::{DOWN_AFTER_SECS, Fabric};
use super::reports::{alive_instances, leader_id, ready_by_host, services_of};
use super::{deploy_pipeline, job_load, until_all_done};
use crate::support::eventually;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use weft_fabric::model::{Assignment, HostState, HostStateRecord};
use weft_fabric::names::{assignment_key, host_state_key};
use weft_fabric::store::{Bucket, ConnectOptions, FabricStore};

/// The members' ids.
const IDS: [&str; 3] = ["h-a", "h-b", "h-c"];
/// The pipeline's declared workers.
const WORKERS: u32 = 3;

/// Sends `signal` to member `id`'s process.
fn signal_member(fabric: &Fabric, id: &str, signal: libc::c_int) {
    let member = fabric.member(id).unwrap();
    let pid = libc::pid_t::try_from(member.host.weft.pid()).unwrap();
    // SAFETY: kill(2) on a child this test spawned and has not reaped; it
    // has no memory-safety preconditions.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(sent, 0, "cannot signal {id}");
}

/// The instances of the pipeline's worker role member `id` runs
/// (starting, ready or draining), by its own admin API; `None` if it does
/// not answer within 2 s.
async fn workers_on(fabric: &Fabric, id: &str) -> Option<u32> {
    let host = services_of(fabric.member(id)?, Duration::from_secs(2)).await?;
    Some(u32::try_from(alive_instances(&host, "pipeline", "worker")).unwrap())
}

/// The members the leader has declared down (its `hstate.<id>` keys).
async fn declared_down(store: &FabricStore) -> BTreeSet<&'static str> {
    let mut down = BTreeSet::new();
    for id in IDS {
        let state = store
            .get::<HostStateRecord>(Bucket::State, &host_state_key(id))
            .await
            .unwrap();
        if state.is_some_and(|s| s.value.state == HostState::Down) {
            down.insert(id);
        }
    }
    down
}

/// The pipeline's workers the leader's assignment gives member `id`.
async fn workers_assigned(store: &FabricStore, id: &str) -> u32 {
    let assignment = store
        .get::<Assignment>(Bucket::State, &assignment_key("pipeline"))
        .await
        .unwrap()
        .unwrap()
        .value;
    assignment.part_of(id).get("worker").copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_paused_past_its_down_after_runs_no_extra_workers_once_it_has_reconciled() {
    let fabric = Fabric::start(3).await;
    let bases = deploy_pipeline(&fabric, "pipeline").await;
    let store = FabricStore::connect(&ConnectOptions::new(&fabric.url()))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (accepted, clients) = job_load(bases.clone(), 2, stop.clone());
    eventually(Duration::from_secs(30), "jobs to be accepted", || async {
        (accepted.lock().unwrap().len() >= 20).then_some(())
    })
    .await;

    // Every host runs a worker: stop one that does not lead, one without
    // the web role if there is one (its clients would wait for it).
    let leader = leader_id(&fabric.hosts()).unwrap();
    let webs = ready_by_host(&fabric.status(), "pipeline", "web");
    let victim = IDS
        .into_iter()
        .filter(|id| *id != leader)
        .min_by_key(|id| webs.contains_key(*id))
        .unwrap();
    assert_eq!(workers_on(&fabric, victim).await, Some(1), "{victim}");
    let pause_for = Duration::from_secs(DOWN_AFTER_SECS + 8);
    let paused_at = Instant::now();
    signal_member(&fabric, victim, libc::SIGSTOP);
    eprintln!("stopped {victim} (leader {leader}, web on {webs:?})");
    // The heal gets a bound of its own, well past the pause: on a loaded
    // machine the moved roles take longer to start and be reported, and
    // the pause lasts until they have (it is the state after the heal that
    // is under test).
    let healed = fabric
        .until_role_ready(
            ("pipeline", "worker"),
            WORKERS,
            &[victim],
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(healed.len(), 2, "on the two others: {healed:?}");
    eprintln!("healed on {healed:?} after {:?}", paused_at.elapsed());
    let down = declared_down(&store).await;
    assert!(down.contains(victim), "{down:?}\n{}", fabric.dump().await);
    tokio::time::sleep(pause_for.saturating_sub(paused_at.elapsed())).await;
    signal_member(&fabric, victim, libc::SIGCONT);
    let resumed_at = Instant::now();

    // Watch what runs: the host states first, so that a host read as down
    // is never one that has reconciled since.
    let mut reconciled_after = None;
    let mut samples = Vec::new();
    while resumed_at.elapsed() < Duration::from_secs(15) {
        let down = declared_down(&store).await;
        let mut running = BTreeMap::new();
        for id in IDS {
            running.insert(id, workers_on(&fabric, id).await);
        }
        let assigned = workers_assigned(&store, victim).await;
        let at = resumed_at.elapsed();
        samples.push(format!("{at:?}: down {down:?} running {running:?}"));
        let Some(running) = running
            .into_iter()
            .map(|(id, n)| n.map(|n| (id, n)))
            .collect::<Option<BTreeMap<_, _>>>()
        else {
            continue;
        };
        let total: u32 = running.values().sum();
        let on_down: u32 = down.iter().map(|id| running[id]).sum();
        assert!(
            total <= WORKERS + on_down,
            "{total} workers run, {on_down} on hosts declared down:\n{}\n{}",
            samples.join("\n"),
            fabric.dump().await
        );
        if reconciled_after.is_none() && running[victim] == assigned {
            reconciled_after = Some(at);
        }
        if reconciled_after.is_some() {
            assert_eq!(
                total,
                WORKERS,
                "after {victim} reconciled:\n{}\n{}",
                samples.join("\n"),
                fabric.dump().await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reconciled_after = reconciled_after.unwrap_or_else(|| {
        panic!(
            "{victim} never ran what it was assigned:\n{}",
            samples.join("\n")
        )
    });
    eprintln!(
        "{victim} reconciled {reconciled_after:?} after SIGCONT; {} samples, the first:\n{}",
        samples.len(),
        samples[..samples.len().min(4)].join("\n")
    );
    let log = fabric.member(victim).unwrap().host.weft.log();
    assert!(log.contains("reconciling before beating"), "{log}");
    fabric.until_ready(3).await;

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let ids = accepted.lock().unwrap().clone();
    eprintln!("accepted {} jobs", ids.len());
    fabric
        .until_role_ready(("pipeline", "web"), 2, &[], Duration::from_secs(30))
        .await;
    let bases = fabric.endpoints("pipeline/web");
    until_all_done(&bases, &ids).await;
}

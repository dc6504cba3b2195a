//! The fabric through the real binary: three `weft host`s on 127.0.0.2-4
//! (fault domains a, b, c) share one NATS JetStream server; the operator
//! deploys the pipeline example to the fabric with a signed record; the
//! leader spreads it over the hosts, heals it when a host is killed -9, and
//! hands its lease over when it is killed itself; a record or component
//! forged in JetStream never runs; bad input is refused on one line.
//!
//! Each test starts its own `nats-server` and hosts; one fabric runs at a
//! time (see `harness`).

mod harness;
mod pause;
mod reports;

use crate::hosting::marked_copy;
use crate::support::{eventually, http};
use harness::{DOWN_AFTER_SECS, Fabric, pipeline_dir, pipeline_dir_with, port_free_everywhere};
use reports::{leader_id, ready, ready_by_host, service};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weft_test_artifacts::{PIPELINE_WEB, PIPELINE_WORKER};

/// Posts one job to `base`; returns its id when the web role accepted it.
async fn post_job(base: &str, text: &str) -> anyhow::Result<Option<String>> {
    let reply = http("POST", &format!("{base}/jobs"), text).await?;
    if reply.status != 202 {
        return Ok(None);
    }
    let job: serde_json::Value = serde_json::from_str(&reply.body)?;
    Ok(job["id"].as_str().map(str::to_owned))
}

/// Whether job `id` is done, asked of any of `bases` that answers.
async fn job_done(bases: &[String], id: &str) -> bool {
    for base in bases {
        if let Ok(reply) = http("GET", &format!("{base}/jobs/{id}"), "").await {
            let value: serde_json::Value = serde_json::from_str(&reply.body).unwrap_or_default();
            return value["status"] == "done";
        }
    }
    false
}

/// Deploys the pipeline (web on 2 hosts, 3 workers) as `name` and waits
/// until every instance is ready; returns the web endpoints.
async fn deploy_pipeline(fabric: &Fabric, name: &str) -> Vec<String> {
    let dir = fabric.dir.path().join(name);
    pipeline_dir(&dir, name, port_free_everywhere(), 2, 3, "");
    let out = fabric.signed_cli(&["deploy", dir.to_str().unwrap()]);
    assert!(out.ok, "{out:?}\n{}", fabric.dump().await);
    let limit = Duration::from_secs(60);
    fabric
        .until_role_ready((name, "worker"), 3, &[], limit)
        .await;
    fabric.until_role_ready((name, "web"), 2, &[], limit).await;
    fabric.endpoints(&format!("{name}/web"))
}

/// Clients posting jobs round the web endpoints until `stop`; a connection
/// error moves a client to the next endpoint. Returns the accepted ids.
fn job_load(
    bases: Vec<String>,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<String>>>, Vec<tokio::task::JoinHandle<()>>) {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let tasks = (0..clients)
        .map(|client| {
            let (bases, stop, accepted) = (bases.clone(), stop.clone(), accepted.clone());
            tokio::spawn(async move {
                let mut n = 0usize;
                let mut at = client;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let text = format!("job {client} {n} of the steady load");
                    match post_job(&bases[at % bases.len()], &text).await {
                        Ok(Some(id)) => {
                            accepted.lock().unwrap().push(id);
                            // Steady, not flooding: each job is checked later.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                        Err(_) => at += 1,
                    }
                }
            })
        })
        .collect();
    (accepted, tasks)
}

/// Waits until every job in `ids` is done.
async fn until_all_done(bases: &[String], ids: &[String]) {
    let mut pending: BTreeSet<String> = ids.iter().cloned().collect();
    let give_up = std::time::Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() {
        let before: Vec<String> = pending.iter().cloned().collect();
        for id in before {
            if job_done(bases, &id).await {
                pending.remove(&id);
            }
        }
        assert!(
            std::time::Instant::now() < give_up,
            "{} of {} accepted jobs never done: {pending:?}",
            pending.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_deployed_to_a_fabric_spreads_over_its_hosts_and_answers() {
    let fabric = Fabric::start(3).await;
    let hosts = fabric.hosts();
    let domains: BTreeSet<&str> = hosts
        .hosts
        .iter()
        .map(|h| h.fault_domain.as_str())
        .collect();
    assert_eq!(domains, BTreeSet::from(["a", "b", "c"]), "{hosts:?}");
    assert_eq!(ready(&hosts).len(), 3, "{hosts:?}");
    let leader = leader_id(&hosts).unwrap();
    assert!(hosts.hosts.iter().any(|h| h.id == leader), "{hosts:?}");

    let bases = deploy_pipeline(&fabric, "pipeline").await;
    let workers = ready_by_host(&fabric.status(), "pipeline", "worker");
    assert_eq!(
        workers,
        BTreeMap::from([("h-a".into(), 1), ("h-b".into(), 1), ("h-c".into(), 1)]),
        "one worker per fault domain"
    );
    let webs = ready_by_host(&fabric.status(), "pipeline", "web");
    assert_eq!(webs.len(), 2, "web on two hosts: {webs:?}");
    assert_eq!(bases.len(), 2, "{bases:?}");
    let ips: BTreeSet<&str> = bases
        .iter()
        .map(|b| b.trim_start_matches("http://").split(':').next().unwrap())
        .collect();
    assert_eq!(ips.len(), 2, "two hosts' addresses: {bases:?}");

    for base in &bases {
        let text = "the quick brown fox jumps over the lazy dog\nthe end";
        let id = post_job(base, text).await.unwrap().unwrap();
        let done = eventually(Duration::from_secs(30), "the job to be done", || {
            let url = format!("{base}/jobs/{id}");
            async move {
                let reply = http("GET", &url, "").await.ok()?;
                let value: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
                (value["status"] == "done").then_some(value)
            }
        })
        .await;
        assert_eq!(done["result"]["words"], 11, "{done}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_host_restores_the_declared_workers_and_loses_no_accepted_job() {
    let mut fabric = Fabric::start(3).await;
    let bases = deploy_pipeline(&fabric, "pipeline").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (accepted, clients) = job_load(bases.clone(), 2, stop.clone());
    eventually(Duration::from_secs(30), "jobs to be accepted", || async {
        (accepted.lock().unwrap().len() >= 20).then_some(())
    })
    .await;

    // Every host runs a worker: kill one that does not lead.
    let leader = leader_id(&fabric.hosts()).unwrap();
    let victim = ["h-a", "h-b", "h-c"]
        .into_iter()
        .find(|id| *id != leader)
        .unwrap();
    let before_kill = accepted.lock().unwrap().len();
    fabric.kill(victim);
    eprintln!("killed {victim} (leader {leader}) after {before_kill} accepted jobs");
    let healed = fabric
        .until_role_ready(
            ("pipeline", "worker"),
            3,
            &[victim],
            Duration::from_secs(DOWN_AFTER_SECS + 20),
        )
        .await;
    assert_eq!(healed.len(), 2, "on the two survivors: {healed:?}");
    // The load goes on a little on the healed fabric, then stops.
    let healed_at = accepted.lock().unwrap().len();
    eventually(Duration::from_secs(30), "jobs after healing", || async {
        (accepted.lock().unwrap().len() >= healed_at + 10).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let ids = accepted.lock().unwrap().clone();
    eprintln!("accepted {} jobs", ids.len());
    fabric
        .until_role_ready(("pipeline", "web"), 2, &[victim], Duration::from_secs(30))
        .await;
    let bases = fabric.endpoints("pipeline/web");
    until_all_done(&bases, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leaders_host_hands_the_lease_over_and_a_later_scale_succeeds() {
    let mut fabric = Fabric::start(3).await;
    deploy_pipeline(&fabric, "pipeline").await;
    let leader = leader_id(&fabric.hosts()).unwrap();
    fabric.kill(&leader);
    let successor = eventually(
        Duration::from_secs(DOWN_AFTER_SECS + 30),
        "another host to lead",
        || async {
            let hosts = fabric.hosts();
            leader_id(&hosts).filter(|id| *id != leader)
        },
    )
    .await;
    eprintln!("{leader} was killed; {successor} leads");
    let out = fabric.signed_cli(&["scale", "pipeline/worker", "4"]);
    assert!(out.ok, "{out:?}\n{}", fabric.dump().await);
    let workers = fabric
        .until_role_ready(
            ("pipeline", "worker"),
            4,
            &[leader.as_str()],
            Duration::from_secs(DOWN_AFTER_SECS + 30),
        )
        .await;
    assert_eq!(workers.len(), 2, "on the two survivors: {workers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_service_or_component_written_into_jetstream_never_runs() {
    use weft_fabric::model::{Desired, SignedDesired};
    use weft_fabric::names::{SERVICE_PREFIX, blob_name};
    use weft_fabric::signing::SigningKey;
    use weft_fabric::store::{Bucket, ConnectOptions, FabricStore};
    use weft_host::controller::store::Digest;

    let fabric = Fabric::start(3).await;
    deploy_pipeline(&fabric, "pipeline").await;
    let store = FabricStore::connect(&ConnectOptions::new(&fabric.url()))
        .await
        .unwrap();
    let signed = store
        .get::<SignedDesired>(Bucket::State, &format!("{SERVICE_PREFIX}pipeline"))
        .await
        .unwrap()
        .unwrap()
        .value;
    // A copy of the pipeline's record, renamed (and on another port).
    let port = port_free_everywhere();
    let renamed = |name: &str| -> Desired {
        let mut body: serde_json::Value = serde_json::from_str(&signed.body).unwrap();
        body["service"] = name.into();
        let manifest = body["record"]["source"]["manifest"].as_str().unwrap();
        let manifest = manifest
            .replace("name = \"pipeline\"", &format!("name = \"{name}\""))
            .replace(
                &format!(":{}\"", listen_port(manifest)),
                &format!(":{port}\""),
            );
        body["record"]["source"]["manifest"] = manifest.into();
        serde_json::from_value(body).unwrap()
    };

    // Signed by a key the hosts do not trust.
    let stranger = fabric.dir.path().join("stranger");
    assert!(harness::weft(&["fabric", "keygen", "--out", stranger.to_str().unwrap()]).ok);
    let stranger = SigningKey::load(&stranger.join("fabric.key")).unwrap();
    let forged = stranger.sign(&renamed("forged")).unwrap();
    store
        .put(Bucket::State, &format!("{SERVICE_PREFIX}forged"), &forged)
        .await
        .unwrap();

    // Signed by the operator, naming a worker component whose object in
    // the store holds other bytes than its name says.
    let component = rand::random::<[u8; 32]>().to_vec();
    let digest = Digest::of(&component);
    let mut tampered = renamed("tampered");
    let mut record = serde_json::to_value(&tampered.record).unwrap();
    record["source"]["components"]["worker"] = digest.to_string().into();
    tampered.record = serde_json::from_value(record).unwrap();
    let mut other = component.clone();
    other[0] ^= 1;
    store
        .blob_store()
        .put(blob_name(&digest).as_str(), &mut other.as_slice())
        .await
        .unwrap();
    let operator = SigningKey::load(std::path::Path::new(&fabric.key())).unwrap();
    let tampered = operator.sign(&tampered).unwrap();
    store
        .put(
            Bucket::State,
            &format!("{SERVICE_PREFIX}tampered"),
            &tampered,
        )
        .await
        .unwrap();

    // The leader refuses to place the forged record; every host (each
    // was given a worker of the tampered one) refuses the component.
    eventually(
        Duration::from_secs(30),
        "the refusals to be logged",
        || async {
            let logs = fabric.logs();
            let each_refused = ["h-a", "h-b", "h-c"].iter().all(|id| {
                let log = fabric.member(id).unwrap().host.weft.log();
                log.contains("does not match its name")
            });
            (logs.contains("svc.forged") && each_refused).then_some(())
        },
    )
    .await;
    // Give a wrongly trusting host time to start them, then look.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in ["h-a", "h-b", "h-c"] {
        let services = fabric.services_on(id).await;
        assert_eq!(services, vec!["pipeline".to_owned()], "on {id}");
    }
    let logs = fabric.logs();
    let forged_lines: Vec<&str> = logs.lines().filter(|l| l.contains("svc.forged")).collect();
    assert!(
        forged_lines
            .iter()
            .any(|l| l.contains("is not among the trusted keys")),
        "{forged_lines:?}"
    );
    let tampered_lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("does not match its name"))
        .collect();
    assert!(
        tampered_lines.iter().all(|l| l.contains(digest.short())),
        "{tampered_lines:?}"
    );
    // The fabric's status agrees: nothing of either runs, and the hosts
    // the leader gave the tampered one say why they refused it.
    let status = fabric.status();
    for service in ["forged", "tampered"] {
        for role in ["web", "worker"] {
            let running = ready_by_host(&status, service, role);
            assert!(running.is_empty(), "{service}/{role}: {running:?}");
        }
    }
    let forged = service(&status, "forged").unwrap();
    assert!(forged.placed_revision.is_none(), "{forged:?}");
    let tampered = service(&status, "tampered").unwrap();
    assert!(!tampered.refused.is_empty(), "{tampered:?}");
    assert!(
        tampered
            .refused
            .values()
            .all(|why| why.contains("does not match its name")),
        "{tampered:?}"
    );
}

/// The port of the first `listen = "IP:PORT"` in a manifest.
fn listen_port(manifest: &str) -> u16 {
    manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("listen = \""))
        .and_then(|rest| rest.trim_end_matches('"').rsplit(':').next())
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fabric_input_is_refused_on_one_line() {
    use crate::support::error_line;
    let fabric = Fabric::start(1).await;
    let scratch = fabric.dir.path().join("scratch");
    let limit = Duration::from_secs(30);

    // Nobody answers at the fabric's address.
    let mut args = fabric.host_args(1, &["--fabric-connect-timeout", "2"]);
    let closed = format!("nats://127.0.0.1:{}", crate::nats::free_port());
    harness::set_flag(&mut args, "--fabric", &closed);
    let out = fabric.host_that_exits(&scratch.join("1"), &args, limit);
    assert!(!out.ok, "{out:?}");
    assert!(
        error_line(&out.stderr).contains("cannot reach the fabric"),
        "{out:?}"
    );

    // A label that is not one.
    let args = fabric.host_args(1, &["--label", "Bad=x"]);
    let out = fabric.host_that_exits(&scratch.join("2"), &args, limit);
    assert!(!out.ok, "{out:?}");
    assert!(error_line(&out.stderr).contains("Bad"), "{out:?}");

    // An id that is already live (member 0's, from another folder).
    let mut args = fabric.host_args(1, &[]);
    harness::set_flag(&mut args, "--host-id", "h-a");
    let out = fabric.host_that_exits(&scratch.join("3"), &args, limit);
    assert!(!out.ok, "{out:?}");
    assert!(error_line(&out.stderr).contains("already live"), "{out:?}");
    let hosts = fabric.hosts();
    assert_eq!(hosts.hosts.len(), 1, "{hosts:?}");

    // Queues on one host's disk.
    let embedded = scratch.join("embedded");
    pipeline_dir(&embedded, "embedded", port_free_everywhere(), 1, 1, "");
    let manifest = embedded.join("weft.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace(
        "backend = \"nats\"\nack-wait-ms = 3000",
        "backend = \"embedded\"",
    );
    assert!(text.contains("backend = \"embedded\""), "{text}");
    std::fs::write(&manifest, text).unwrap();
    let out = fabric.signed_cli(&["deploy", embedded.to_str().unwrap()]);
    assert!(!out.ok, "{out:?}");
    assert!(
        error_line(&out.stderr).contains("cannot run in a fabric"),
        "{out:?}"
    );

    // Workers that no host can take.
    let nowhere = scratch.join("nowhere");
    pipeline_dir(
        &nowhere,
        "nowhere",
        port_free_everywhere(),
        1,
        3,
        "placement = { zone = \"nowhere\" }",
    );
    let out = fabric.signed_cli(&["deploy", nowhere.to_str().unwrap()]);
    assert!(!out.ok, "{out:?}");
    let line = error_line(&out.stderr);
    assert!(
        line.contains("needs 3 slots") && line.contains("zone=nowhere") && line.contains("0 hosts"),
        "{out:?}"
    );
    // Nothing was recorded.
    let status = fabric.status();
    assert!(
        service(&status, "embedded").is_none() && service(&status, "nowhere").is_none(),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_behind_haproxy_fails_no_request() {
    let fabric = Fabric::start(3).await;
    let port = port_free_everywhere();
    let v1 = fabric.dir.path().join("v1");
    pipeline_dir(&v1, "pipeline", port, 2, 3, "");
    let out = fabric.signed_cli(&["deploy", v1.to_str().unwrap()]);
    assert!(out.ok, "{out:?}\n{}", fabric.logs());
    fabric
        .until_role_ready(("pipeline", "web"), 2, &[], Duration::from_secs(60))
        .await;
    let generation = |fabric: &Fabric| {
        let status = fabric.status();
        service(&status, "pipeline").unwrap().generation
    };
    let before = generation(&fabric);
    let proxy = harness::Haproxy::start(&fabric, "pipeline/web");
    let base = proxy.url();

    let stop = Arc::new(AtomicBool::new(false));
    let (seen, clients) = status_load(base.clone(), 3, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Version 2: other components (the same code, another digest).
    let v2 = fabric.dir.path().join("v2");
    let web = marked_copy(PIPELINE_WEB, fabric.dir.path(), "v2");
    let worker = marked_copy(PIPELINE_WORKER, fabric.dir.path(), "v2");
    pipeline_dir_with(
        &v2,
        "pipeline",
        port,
        (web.to_str().unwrap(), worker.to_str().unwrap()),
        2,
        3,
        "",
    );
    let out = fabric.signed_cli(&["upgrade", v2.to_str().unwrap()]);
    assert!(out.ok, "{out:?}\n{}", fabric.dump().await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(generation(&fabric) > before, "{:?}", fabric.status());
    fabric
        .until_role_ready(("pipeline", "web"), 2, &[], Duration::from_secs(30))
        .await;
    eprintln!("through haproxy: {seen:?}");
    let total: u64 = seen.values().sum();
    assert!(total >= 50, "too little load to tell: {seen:?}");
    assert_eq!(
        seen.get(&202).copied().unwrap_or(0),
        total,
        "{seen:?}\n{}",
        proxy.log()
    );
}

/// Answers seen by a load: HTTP status (0: a connection error) → count.
type Statuses = Arc<Mutex<BTreeMap<u16, u64>>>;

/// Clients posting jobs to `base` until `stop`.
fn status_load(
    base: String,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> (Statuses, Vec<tokio::task::JoinHandle<()>>) {
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let tasks = (0..clients)
        .map(|client| {
            let (base, stop, seen) = (base.clone(), stop.clone(), seen.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let text = format!("request {client} {n}");
                    let status = http("POST", &format!("{base}/jobs"), &text)
                        .await
                        .map_or(0, |r| r.status);
                    *seen.lock().unwrap().entry(status).or_default() += 1;
                }
            })
        })
        .collect();
    (seen, tasks)
}

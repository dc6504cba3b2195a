//! [`Member`]: a `weft host` as a member of a fabric. Joining connects to
//! the fabric's JetStream, registers `host.<id>` (refusing an id another
//! live process beats under), and starts the host's four tasks: the
//! elector (the leader's lease), the leader (placement, while it holds
//! the lease), and the agent's beat and apply loops; and, given the
//! host's guest output, the logs responder (`weft logs --fabric`).
//! Leaving stops them all: the elector steps down so another host leads
//! at once, and the host's record stays with its last state. A task that
//! ends on its own, or panics, makes the member leave the same way
//! (`supervise`), and [`Member::failed`] tells the process why.

mod supervise;

use crate::agent::{self, Agent, AgentIdentity};
use crate::error::FabricError;
use crate::leader::{self, LeaderSettings};
use crate::lease;
use crate::model::{Capacity, HostRecord};
use crate::names::{beat_key, check_host_id, check_label_part, host_key};
use crate::signing::TrustedKeys;
use crate::store::{Bucket, ConnectOptions, FabricStore};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_host::Controller;
use weft_host::guest_output::GuestOutput;

/// How long a joining host watches the heartbeats under its id: a live
/// process beats every second, so two beats at least fall in it.
const LIVE_CHECK: Duration = Duration::from_millis(2500);
/// Between reads of those heartbeats.
const LIVE_POLL: Duration = Duration::from_millis(250);
/// The longest silence before the leader calls a host suspect.
const SUSPECT_AFTER: Duration = Duration::from_secs(3);
/// How long leaving waits for the tasks to stop.
const LEAVE_WITHIN: Duration = Duration::from_secs(5);
/// How much longer leaving waits for the task watching them, which aborts
/// those that did not stop within [`LEAVE_WITHIN`].
const SUPERVISOR_SLACK: Duration = Duration::from_secs(1);

/// How a host joins a fabric (`weft host --fabric ...`).
#[derive(Clone)]
pub struct MemberOptions {
    /// How to reach the fabric.
    pub connect: ConnectOptions,
    /// The host's id (`--host-id`).
    pub host_id: String,
    /// The address its web roles listen on (`--advertise`).
    pub advertise: IpAddr,
    /// Its admin API, if it serves one.
    pub admin: Option<SocketAddr>,
    /// Its fault domain (`--fault-domain`).
    pub fault_domain: String,
    /// Its labels (`--label key=value`).
    pub labels: BTreeMap<String, String>,
    /// What it offers.
    pub capacity: Capacity,
    /// The file of the operators' public keys (`--fabric-trust`).
    pub trust: PathBuf,
    /// Silence after which the leader moves a host's instances elsewhere
    /// (`--fabric-down-after`).
    pub down_after: Duration,
    /// The host's guest output, served to `weft logs --fabric` (none: no
    /// logs responder).
    pub guest_output: Option<Arc<GuestOutput>>,
}

impl std::fmt::Debug for MemberOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberOptions")
            .field("connect", &self.connect)
            .field("host_id", &self.host_id)
            .field("advertise", &self.advertise)
            .field("admin", &self.admin)
            .field("fault_domain", &self.fault_domain)
            .field("labels", &self.labels)
            .field("capacity", &self.capacity)
            .field("trust", &self.trust)
            .field("down_after", &self.down_after)
            .field("guest_output", &self.guest_output.is_some())
            .finish()
    }
}

/// A host in a fabric, its tasks running.
pub struct Member {
    host_id: String,
    boot: String,
    store: FabricStore,
    leadership: watch::Receiver<Option<u64>>,
    shutdown: Arc<watch::Sender<bool>>,
    /// Watches the tasks (see `supervise`); ends once they all have.
    supervisor: Option<JoinHandle<()>>,
    /// Why the member left on its own, once it did.
    failure: watch::Receiver<Option<String>>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("host_id", &self.host_id)
            .field("boot", &self.boot)
            .field("fabric", &self.store.url())
            .finish_non_exhaustive()
    }
}

impl Member {
    /// Joins the fabric with `controller` as this host's: checks the
    /// names, loads the trusted keys, connects, registers `host.<id>`
    /// (taking over the record of a previous process under the same id,
    /// refusing one whose heartbeats still advance), then starts the
    /// elector, the leader and the agent.
    pub async fn join(
        options: MemberOptions,
        controller: Arc<Controller>,
    ) -> Result<Member, FabricError> {
        check_names(&options)?;
        let trust = Arc::new(TrustedKeys::load(&options.trust)?);
        let store = FabricStore::connect(&options.connect).await?;
        let boot = format!("{:016x}", rand::random::<u64>());
        let record = HostRecord {
            id: options.host_id.clone(),
            boot: boot.clone(),
            advertise: options.advertise,
            admin: options.admin,
            fault_domain: options.fault_domain.clone(),
            labels: options.labels.clone(),
            capacity: options.capacity,
            drain: false,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        register(&store, &record).await?;
        tracing::info!(host = %options.host_id, boot = %boot, fabric = %store.url(), "joined the fabric");

        let (shutdown, stop) = watch::channel(false);
        // First, so that a subscription that fails leaves nothing running.
        let logs = match &options.guest_output {
            Some(output) => Some(
                agent::logs::spawn_responder(
                    store.client().clone(),
                    &options.host_id,
                    output.clone(),
                    controller.clone(),
                    stop.clone(),
                )
                .await?,
            ),
            None => None,
        };
        let (leadership, elector) = lease::spawn_elector(
            store.clone(),
            options.host_id.clone(),
            boot.clone(),
            stop.clone(),
        );
        let settings = LeaderSettings {
            down_after: options.down_after,
            suspect_after: SUSPECT_AFTER.min(options.down_after / 3),
        };
        let leader = leader::spawn_leader(
            store.clone(),
            trust.clone(),
            leadership.clone(),
            settings,
            stop.clone(),
        );
        let identity = AgentIdentity {
            host_id: options.host_id.clone(),
            boot: boot.clone(),
            advertise: options.advertise,
            queues_url: options.connect.url.clone(),
        };
        let Agent { beat, apply } = agent::spawn_with_down_after(
            store.clone(),
            controller,
            trust,
            identity,
            options.down_after,
            stop,
        );
        let mut tasks = vec![
            ("elector", elector),
            ("leader", leader),
            ("beat", beat),
            ("apply", apply),
        ];
        tasks.extend(logs.map(|logs| ("logs", logs)));
        let shutdown = Arc::new(shutdown);
        let (failed, failure) = watch::channel(None);
        let supervisor = tokio::spawn(supervise::supervise(
            tasks,
            shutdown.clone(),
            failed,
            LEAVE_WITHIN,
        ));
        Ok(Member {
            host_id: options.host_id,
            boot,
            store,
            leadership,
            shutdown,
            supervisor: Some(supervisor),
            failure,
        })
    }

    /// This host's id.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// This process's boot id.
    pub fn boot(&self) -> &str {
        &self.boot
    }

    /// The fabric's store.
    pub fn store(&self) -> &FabricStore {
        &self.store
    }

    /// `Some(term)` while this host leads the fabric.
    pub fn leadership(&self) -> watch::Receiver<Option<u64>> {
        self.leadership.clone()
    }

    /// Resolves, with why, once one of the member's tasks ended on its
    /// own or panicked: the member has then left the fabric (stepped down,
    /// stopped beating), and the process should stop (its services keep
    /// running until it shuts its controller down). Never resolves while
    /// the member runs as it should, nor because it was asked to leave.
    pub fn failed(&self) -> impl Future<Output = String> + Send + 'static {
        let mut failure = self.failure.clone();
        async move {
            let why = failure
                .wait_for(Option::is_some)
                .await
                .map(|why| why.clone().unwrap_or_default());
            match why {
                Ok(why) => why,
                // The member is gone without failing.
                Err(_) => std::future::pending().await,
            }
        }
    }

    /// Leaves the fabric: stops the agent, the leader and the elector
    /// (which steps down, so another host leads at once), waiting at most
    /// a few seconds before aborting what has not stopped. The host's
    /// record stays; the services it runs keep running until the caller
    /// shuts its controller down.
    pub async fn leave(mut self) {
        self.shutdown.send_replace(true);
        if let Some(supervisor) = self.supervisor.take() {
            let abort = supervisor.abort_handle();
            let within = LEAVE_WITHIN + SUPERVISOR_SLACK;
            if tokio::time::timeout(within, supervisor).await.is_err() {
                abort.abort();
            }
        }
        tracing::info!(host = %self.host_id, "left the fabric");
    }
}

impl Drop for Member {
    /// A member dropped without leaving stops its tasks all the same.
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Checks the host id, the fault domain and the labels.
fn check_names(options: &MemberOptions) -> Result<(), FabricError> {
    let refused = |e: crate::names::NameError| FabricError::Refused(e.to_string());
    check_host_id(&options.host_id).map_err(refused)?;
    check_label_part("fault domain", &options.fault_domain).map_err(refused)?;
    for (key, value) in &options.labels {
        check_label_part("label", key).map_err(refused)?;
        check_label_part("label", value).map_err(refused)?;
    }
    Ok(())
}

/// Writes `record` at `host.<id>`: a new member's, or in place of a
/// previous process's once its heartbeats are seen to have stopped.
async fn register(store: &FabricStore, record: &HostRecord) -> Result<(), FabricError> {
    let key = host_key(&record.id);
    match store.create(Bucket::State, &key, record).await {
        Ok(_) => return Ok(()),
        Err(FabricError::Conflict(_)) => {}
        Err(e) => return Err(e),
    }
    refuse_if_live(store, &record.id).await?;
    // The revision of whatever is there, even a record this version cannot
    // read: it is this host's to replace.
    let revision = store.last_revision(Bucket::State, &key).await?;
    store
        .update(Bucket::State, &key, record, revision)
        .await
        .map_err(|e| match e {
            FabricError::Conflict(_) => FabricError::Conflict(format!(
                "another process registered host ID '{}' at the same moment; pick another --host-id or stop the other host",
                record.id
            )),
            e => e,
        })?;
    Ok(())
}

/// Refuses if heartbeats under `id` still advance: another live process
/// is that host.
async fn refuse_if_live(store: &FabricStore, id: &str) -> Result<(), FabricError> {
    let key = beat_key(id);
    let first = store.last_revision(Bucket::Beats, &key).await?;
    if first == 0 {
        return Ok(());
    }
    let started = Instant::now();
    while started.elapsed() < LIVE_CHECK {
        tokio::time::sleep(LIVE_POLL).await;
        if store.last_revision(Bucket::Beats, &key).await? != first {
            return Err(FabricError::Conflict(
                "host ID is already live in the fabric (its heartbeats still advance); pick another --host-id or stop the other host"
                    .into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(host_id: &str, fault_domain: &str, labels: &[(&str, &str)]) -> MemberOptions {
        MemberOptions {
            connect: ConnectOptions::new("nats://127.0.0.1:1"),
            host_id: host_id.into(),
            advertise: "127.0.0.1".parse().unwrap(),
            admin: None,
            fault_domain: fault_domain.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            capacity: Capacity {
                slots: 8,
                memory_mib: 1024,
                cpus: 2,
            },
            trust: PathBuf::from("/nonexistent"),
            down_after: Duration::from_secs(10),
            guest_output: None,
        }
    }

    fn record(boot: &str) -> HostRecord {
        HostRecord {
            id: "h1".into(),
            boot: boot.into(),
            advertise: "127.0.0.1".parse().unwrap(),
            admin: None,
            fault_domain: "rack-a".into(),
            labels: BTreeMap::new(),
            capacity: Capacity {
                slots: 8,
                memory_mib: 1024,
                cpus: 2,
            },
            drain: false,
            version: "0".into(),
        }
    }

    async fn registered_boot(store: &FabricStore) -> String {
        let key = host_key("h1");
        let read = store.get::<HostRecord>(Bucket::State, &key).await.unwrap();
        read.unwrap().value.boot
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_id_still_beating_is_refused_and_a_silent_one_taken_over() {
        let server = crate::test_support::NatsServer::start();
        let store = FabricStore::connect(&ConnectOptions::new(&server.url()))
            .await
            .unwrap();
        register(&store, &record("first")).await.unwrap();
        assert_eq!(registered_boot(&store).await, "first");

        // The first process beats: a second one under its id is refused.
        let beating = {
            let store = store.clone();
            tokio::spawn(async move {
                for seq in 0u64.. {
                    store
                        .put(Bucket::Beats, &beat_key("h1"), &seq)
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(400)).await;
        let refused = register(&store, &record("second")).await.unwrap_err();
        assert!(matches!(refused, FabricError::Conflict(_)), "{refused:?}");
        assert_eq!(
            refused.to_string(),
            "host ID is already live in the fabric (its heartbeats still advance); pick another --host-id or stop the other host"
        );
        assert_eq!(registered_boot(&store).await, "first", "nothing changed");

        // Once it is silent, a restarted host takes its record over.
        beating.abort();
        let _ = beating.await;
        register(&store, &record("second")).await.unwrap();
        assert_eq!(registered_boot(&store).await, "second");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_leads_alone_runs_what_it_places_and_steps_down_leaving() {
        use crate::agent::tests::{controller, desired, until};
        use crate::model::{Beat, LeaderRecord};
        use crate::names::{LEADER_KEY, service_key};
        use crate::signing::{SigningKey, keygen};
        use weft_host::controller::store::Digest;

        let server = crate::test_support::NatsServer::start();
        let (keys, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (key_file, trust_file) = keygen(keys.path()).unwrap();
        let key = SigningKey::load(&key_file).unwrap();
        let controller = controller(state.path());
        let output = Arc::new(GuestOutput::default());
        let options = MemberOptions {
            connect: ConnectOptions::new(&server.url()),
            trust: trust_file,
            guest_output: Some(output.clone()),
            ..options("h1", "rack-a", &[])
        };
        let member = Member::join(options.clone(), controller.clone())
            .await
            .unwrap();
        let store = member.store().clone();
        let failed = member.failed();
        let mut leadership = member.leadership();
        tokio::time::timeout(
            Duration::from_secs(30),
            leadership.wait_for(Option::is_some),
        )
        .await
        .unwrap()
        .unwrap();

        let component = std::fs::read(weft_test_artifacts::ROLLOUT_WORKER).unwrap();
        let digest = Digest::of(&component);
        crate::blobs::upload(&store, &digest, component.into())
            .await
            .unwrap();
        let signed = key.sign(&desired("part", &digest, None)).unwrap();
        let revision = store
            .create(Bucket::State, &service_key("part"), &signed)
            .await
            .unwrap();
        until("the leader places it here and it runs", || async {
            let beat = store.get::<Beat>(Bucket::Beats, &beat_key("h1")).await;
            beat.unwrap().is_some_and(|beat| {
                beat.value.services.get("part").is_some_and(|part| {
                    part.desired_revision == revision && part.roles["worker"].ready == 1
                })
            })
        })
        .await;

        // Its guest output, through its logs responder.
        output.push(
            "part",
            "worker",
            "0".into(),
            "stdout".into(),
            "hello".into(),
        );
        let operator = crate::ops::Operator::new(store.clone(), None);
        let logs = operator.logs("part", None, 10).await.unwrap();
        assert!(logs.silent.is_empty(), "{:?}", logs.silent);
        let lines: Vec<(&str, &str)> = logs
            .lines
            .iter()
            .map(|(host, line)| (host.as_str(), line.text.as_str()))
            .collect();
        assert_eq!(lines, [("h1", "hello")]);
        let after = operator
            .logs_after("part", Some("worker"), &logs.next)
            .await;
        assert!(after.unwrap().lines.is_empty());
        let unknown = operator.logs("nothing", None, 10).await.unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "service nothing is not deployed in the fabric"
        );

        // The same id again, while this one beats: refused.
        let again = Member::join(options, controller.clone()).await.unwrap_err();
        assert!(
            again.to_string().starts_with("host ID is already live"),
            "{again}"
        );

        member.leave().await;
        let not_failed = tokio::time::timeout(Duration::from_millis(200), failed).await;
        assert!(not_failed.is_err(), "leaving is no failure");
        let lease = store
            .get::<LeaderRecord>(Bucket::State, LEADER_KEY)
            .await
            .unwrap();
        assert_eq!(lease, None, "stepped down on leaving");
        let record = store
            .get::<HostRecord>(Bucket::State, &host_key("h1"))
            .await
            .unwrap();
        assert!(record.is_some(), "the host's record stays");
        assert_eq!(
            controller.service_names(),
            ["part"],
            "leaving stops no service"
        );
        controller.shutdown().await;
    }

    #[test]
    fn names_are_checked_before_anything_is_done() {
        assert!(check_names(&options("h-1", "rack-a", &[("zone", "a")])).is_ok());
        let dotted = check_names(&options("h.1", "rack-a", &[])).unwrap_err();
        assert!(
            dotted
                .to_string()
                .starts_with("host id 'h.1' may not contain '.'"),
            "{dotted}"
        );
        assert!(check_names(&options("h1", "Rack A", &[])).is_err());
        assert!(check_names(&options("h1", "rack-a", &[("zone", "A")])).is_err());
    }
}

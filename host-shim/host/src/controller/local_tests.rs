//! The controller running its part of a service that runs on many hosts:
//! deployed from a whole record with a local part, on a state folder that
//! keeps no record, scaled within its part, and upgraded to a whole record
//! (source, settings and part at once).

use super::Controller;
use super::context::HostContext;
use super::slots::SlotPool;
use super::status::RoleStatus;
use super::store::{DeploymentRecord, DeploymentSource, Digest, Layout, StateDir};
use crate::connections::{ConnectionLimits, Listening};
use crate::environment::Overrides;
use crate::local_part::LocalPart;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_sandbox::{EngineConfig, Runtime};

const MANIFEST: &str = r#"
[service]
name = "part"

[roles.worker]
kind = "worker"
component = "worker.wasm"
queues = ["jobs"]
buckets = ["ledger"]
[roles.worker.settings]
version = "1"
mode = "work"
start = "ok"

[roles.elsewhere]
kind = "worker"
component = "elsewhere.wasm"
instances = 5
"#;

/// Role `worker` of service `part`, once `done` says it is.
async fn wait_for(controller: &Controller, done: impl Fn(&RoleStatus) -> bool) -> RoleStatus {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let status = controller.status(Some("part")).await.unwrap();
        let roles = &status.services[0].roles;
        assert_eq!(roles.len(), 1, "only this host's part runs: {roles:#?}");
        if done(&roles[0]) {
            return roles[0].clone();
        }
        assert!(Instant::now() < give_up, "never happened: {roles:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A controller on a fabric host's state folder in `dir`, holding the
/// worker's component; and that component's digest.
async fn fabric_controller(dir: &std::path::Path) -> (Arc<Controller>, Digest) {
    let runtime = Arc::new(
        Runtime::new(EngineConfig {
            max_instances: 16,
            ..EngineConfig::default()
        })
        .unwrap(),
    );
    let controller = Controller::new(HostContext {
        slots: Arc::new(SlotPool::new(runtime.config().max_instances)),
        runtime,
        state: StateDir::open(dir, Layout::Fabric).unwrap(),
        grace: Duration::from_secs(5),
        only_roles: Vec::new(),
        web_pool: Listening::new(ConnectionLimits {
            max_connections: 16,
            idle_timeout: Duration::from_secs(5),
            min_body_rate: None,
        }),
    });
    let component = std::fs::read(weft_test_artifacts::ROLLOUT_WORKER).unwrap();
    let digest = Digest::of(&component);
    controller
        .put_blob(&digest, component.into())
        .await
        .unwrap();
    (controller, digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_deployed_from_a_record_runs_scales_and_is_never_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, digest) = fabric_controller(dir.path()).await;
    let record = |roles: &[(&str, u32)]| DeploymentRecord {
        source: DeploymentSource {
            manifest_file: "weft.toml".into(),
            manifest: MANIFEST.into(),
            environment: None,
            components: [("worker".to_owned(), digest.clone())].into(),
        },
        overrides: Overrides::default(),
        generation: 7,
        local: Some(LocalPart {
            roles: roles.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect(),
            ..LocalPart::default()
        }),
    };

    // A part that does not fit the manifest starts nothing.
    let refused = controller
        .deploy_record("part", record(&[("nope", 1)]))
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("local.roles.nope: the manifest has no such role"),
        "{refused}"
    );
    assert!(controller.service_names().is_empty());
    assert_eq!(controller.record("part"), None);

    let deployed = controller
        .deploy_record("part", record(&[("worker", 2)]))
        .await
        .unwrap();
    assert_eq!(deployed.generation, 7, "the record's own generation");
    wait_for(&controller, |role| role.ready == 2).await;
    assert_eq!(controller.service_names(), ["part"]);
    assert_eq!(controller.record("part"), Some(record(&[("worker", 2)])));

    controller.scale("part", "worker", 3).await.unwrap();
    let role = wait_for(&controller, |role| role.ready == 3).await;
    assert_eq!(role.declared, 3);
    let scaled = controller.record("part").unwrap();
    assert_eq!(
        scaled.local,
        record(&[("worker", 3)]).local,
        "the part scaled"
    );
    assert!(scaled.overrides.instances.is_empty(), "{scaled:?}");
    // No instance here, the role still present; then one again.
    controller.scale("part", "worker", 0).await.unwrap();
    let role = wait_for(&controller, |role| role.instances.is_empty()).await;
    assert_eq!((role.declared, role.ready), (0, 0));
    controller.scale("part", "worker", 1).await.unwrap();
    wait_for(&controller, |role| role.ready == 1).await;
    // A role that runs on other hosts is not this host's to scale.
    assert!(controller.scale("part", "elsewhere", 1).await.is_err());

    // The service has its folder, but the state folder records nothing.
    assert!(dir.path().join("services/part").is_dir());
    assert!(!dir.path().join("services/part/deployment.json").exists());
    assert!(controller.host.state.records().is_empty());

    controller.shutdown().await;
}

/// The versions whose start hook ran, one entry per instance started, from
/// the keys `hook/start/VERSION/NANOS` the worker writes to its ledger.
async fn started_versions(controller: &Controller) -> Vec<String> {
    let service = controller.service("part").unwrap();
    let bucket = weft_broker::scoped("part", "ledger");
    let (mut versions, mut cursor) = (Vec::new(), None);
    loop {
        let page = service
            .backends
            .kv
            .list_keys(&bucket, cursor)
            .await
            .unwrap();
        versions.extend(page.keys.iter().filter_map(|key| {
            let rest = key.strip_prefix("hook/start/")?;
            Some(rest.split('/').next()?.to_owned())
        }));
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return versions,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_to_a_record_starts_the_new_version_with_its_settings() {
    let dir = tempfile::tempdir().unwrap();
    let (controller, digest) = fabric_controller(dir.path()).await;
    let record = |manifest: &str, settings: &[(&str, &str)], count: u32| DeploymentRecord {
        source: DeploymentSource {
            manifest_file: "weft.toml".into(),
            manifest: manifest.into(),
            environment: None,
            components: [("worker".to_owned(), digest.clone())].into(),
        },
        overrides: Overrides {
            settings: [(
                "worker".to_owned(),
                settings
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )]
            .into(),
            ..Overrides::default()
        },
        generation: 3,
        local: Some(LocalPart {
            roles: [("worker".to_owned(), count)].into(),
            ..LocalPart::default()
        }),
    };
    controller
        .deploy_record("part", record(MANIFEST, &[], 2))
        .await
        .unwrap();
    wait_for(&controller, |role| role.ready == 2).await;

    // A new manifest whose default is "2", signed with the setting "3"
    // and one more instance here: one upgrade, straight to all of it.
    let upgraded = MANIFEST.replace("version = \"1\"", "version = \"2\"");
    assert_ne!(upgraded, MANIFEST);
    let target = record(&upgraded, &[("version", "3")], 3);
    let operation = controller
        .upgrade_record("part", target.clone())
        .await
        .unwrap();
    assert_eq!(operation.generation, 4, "this host's next generation");
    let role = wait_for(&controller, |role| role.generation == 4 && role.ready == 3).await;
    assert_eq!(role.settings["version"], "3");
    assert_eq!(role.declared, 3);
    let status = controller.status(Some("part")).await.unwrap();
    let done = status.services[0].operation.clone().unwrap();
    assert_eq!(done.state, super::status::OperationState::Done, "{done:?}");
    let running = controller.record("part").unwrap();
    assert_eq!(running.source, target.source);
    assert_eq!(running.overrides, target.overrides);
    assert_eq!(running.local, target.local);

    // Every new instance started with the signed setting: none ever ran
    // the new manifest's default.
    let started = started_versions(&controller).await;
    assert!(started.iter().any(|v| v == "3"), "{started:?}");
    assert!(!started.iter().any(|v| v == "2"), "{started:?}");
    assert_eq!(
        started.iter().filter(|v| *v == "1").count(),
        2,
        "{started:?}"
    );

    controller.shutdown().await;
}

//! The controller driven in process, without the `weft` binary: weft-host
//! is a library, so a test builds a [`Controller`] over a state folder of
//! its own, uploads a component, deploys and scales a worker role, and
//! reads the typed status the admin API would serialize.

use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_host::connections::{ConnectionLimits, Listening};
use weft_host::controller::instance::InstanceState;
use weft_host::controller::slots::SlotPool;
use weft_host::controller::status::{OperationKind, OperationState, RoleStatus};
use weft_host::controller::store::{DeploymentSource, Digest, Layout, StateDir};
use weft_host::controller::{Controller, HostContext};
use weft_host::manifest::RoleKind;
use weft_sandbox::{EngineConfig, Runtime};
use weft_test_artifacts::ROLLOUT_WORKER;

const MANIFEST: &str = r#"
[service]
name = "inproc"

[roles.worker]
kind = "worker"
component = "worker.wasm"
instances = 1
queues = ["jobs"]
buckets = ["ledger"]
[roles.worker.settings]
version = "1"
mode = "work"
start = "ok"
"#;

/// Role `worker` of service `inproc`, once `done` says it is.
async fn wait_for(controller: &Controller, done: impl Fn(&RoleStatus) -> bool) -> RoleStatus {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let status = controller.status(Some("inproc")).await.unwrap();
        let role = status.services[0].roles[0].clone();
        if done(&role) {
            return role;
        }
        assert!(Instant::now() < give_up, "never happened: {role:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_deployed_in_process_scales_and_reports_its_instances() {
    let dir = tempfile::tempdir().unwrap();
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
        state: StateDir::open(dir.path(), Layout::Host).unwrap(),
        grace: Duration::from_secs(5),
        only_roles: Vec::new(),
        web_pool: Listening::new(ConnectionLimits {
            max_connections: 16,
            idle_timeout: Duration::from_secs(5),
            min_body_rate: None,
        }),
    });
    let component = std::fs::read(ROLLOUT_WORKER).unwrap();
    let digest = Digest::of(&component);
    controller
        .put_blob(&digest, component.into())
        .await
        .unwrap();
    assert!(controller.has_blob(&digest).await);
    let source = DeploymentSource {
        manifest_file: "weft.toml".into(),
        manifest: MANIFEST.into(),
        environment: None,
        components: [("worker".to_owned(), digest.clone())].into(),
    };
    let deployed = controller.deploy("inproc", source).await.unwrap();
    assert_eq!(deployed.generation, 1);
    assert_eq!(deployed.roles[0].kind, RoleKind::Worker);
    assert_eq!(deployed.roles[0].component, digest.to_string());
    wait_for(&controller, |role| role.ready == 1).await;

    let scaled = controller.scale("inproc", "worker", 3).await.unwrap();
    assert_eq!(
        (scaled.kind, scaled.state),
        (OperationKind::Scale, OperationState::Done)
    );
    let role = wait_for(&controller, |role| role.ready == 3).await;
    assert_eq!(role.declared, 3);
    assert!(
        role.instances
            .iter()
            .all(|i| i.state == InstanceState::Ready && i.restarts == 0),
        "{role:#?}"
    );
    // A role the service does not have is refused.
    assert!(controller.scale("inproc", "nope", 1).await.is_err());

    controller.shutdown().await;
    let stopped = controller.status(Some("inproc")).await.unwrap();
    assert!(
        stopped.services[0].roles[0].instances.is_empty(),
        "{stopped:#?}"
    );
}

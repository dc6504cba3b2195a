//! The fabric as a member host's admin API reports it: the operator's
//! reads ([`Operator::hosts`], [`Operator::status`],
//! [`Operator::endpoints`]) behind weft-host's [`FabricView`], so any
//! member answers `GET /v1/fabric/*` and a web role's endpoints for the
//! whole fabric. It holds no signing key: through a host's admin API the
//! fabric is read, never changed.

use crate::error::FabricError;
use crate::ops::Operator;
use crate::store::FabricStore;
use weft_host::admin::fabric_view::{EndpointsReport, FabricView, FabricViewError, ViewFuture};

/// A member's read-only view of its fabric, for its admin API.
pub struct FabricAdminView {
    operator: Operator,
}

impl FabricAdminView {
    /// A view reading the fabric through `store` (the member's own
    /// connection); it cannot sign, so it cannot change desired state.
    pub fn new(store: FabricStore) -> Self {
        Self {
            operator: Operator::new(store, None),
        }
    }
}

impl FabricView for FabricAdminView {
    fn hosts(&self) -> ViewFuture<'_> {
        Box::pin(async move { to_json(&self.operator.hosts().await.map_err(view_error)?) })
    }

    fn status<'a>(&'a self, service: Option<&'a str>) -> ViewFuture<'a> {
        Box::pin(async move { to_json(&self.operator.status(service).await.map_err(view_error)?) })
    }

    fn endpoints<'a>(&'a self, service: &'a str, role: &'a str) -> ViewFuture<'a> {
        Box::pin(async move {
            let endpoints = self
                .operator
                .endpoints(service, role)
                .await
                .map_err(view_error)?;
            to_json(&EndpointsReport {
                service: service.to_owned(),
                role: role.to_owned(),
                addrs: endpoints.addrs,
                health: endpoints.health,
            })
        })
    }
}

/// How the admin API answers a fabric error: what is not there is 404, a
/// question that cannot be answered (a worker role's endpoints) is 400,
/// and a fabric that cannot be read now is 503.
fn view_error(e: FabricError) -> FabricViewError {
    match e {
        FabricError::NotFound(why) => FabricViewError::NotFound(why),
        FabricError::Refused(why) => FabricViewError::Invalid(why),
        other => FabricViewError::Unavailable(other.to_string()),
    }
}

fn to_json(report: &impl serde::Serialize) -> Result<serde_json::Value, FabricViewError> {
    serde_json::to_value(report)
        .map_err(|e| FabricViewError::Unavailable(format!("the report cannot be written: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Assignment, Beat, Capacity, Desired, HostRecord, RolePart, ServicePart, SignedDesired,
    };
    use crate::names::{assignment_key, beat_key, host_key, service_key};
    use crate::store::{Bucket, ConnectOptions};
    use crate::test_support::NatsServer;
    use std::collections::BTreeMap;
    use weft_host::controller::store::{DeploymentRecord, DeploymentSource, Digest};
    use weft_host::environment::Overrides;

    const MANIFEST: &str = r#"
[service]
name = "shop"

[roles.web]
kind = "web"
component = "web.wasm"
listen = "127.0.0.1:8080"
health = "/healthz"

[roles.worker]
kind = "worker"
component = "worker.wasm"
"#;

    /// A fabric with host `a` (beating, running `shop`'s web role ready on
    /// 10.0.0.1:8080) and `shop` placed on it.
    async fn fabric(store: &FabricStore) {
        let host = HostRecord {
            id: "a".into(),
            boot: "b".into(),
            advertise: "10.0.0.1".parse().unwrap(),
            admin: None,
            fault_domain: "rack-a".into(),
            labels: BTreeMap::new(),
            capacity: Capacity {
                slots: 16,
                memory_mib: 1024,
                cpus: 2,
            },
            drain: false,
            version: "1".into(),
        };
        store
            .create(Bucket::State, &host_key("a"), &host)
            .await
            .unwrap();
        let desired = Desired {
            service: "shop".into(),
            record: DeploymentRecord {
                source: DeploymentSource {
                    manifest_file: "weft.toml".into(),
                    manifest: MANIFEST.into(),
                    environment: None,
                    components: BTreeMap::from([
                        ("web".to_owned(), Digest::of(b"web")),
                        ("worker".to_owned(), Digest::of(b"worker")),
                    ]),
                },
                overrides: Overrides::default(),
                generation: 1,
                local: None,
            },
            replaces: 0,
            signed_at_ms: 1,
        };
        let signed = SignedDesired {
            body: serde_json::to_string(&desired).unwrap(),
            key_id: "k".into(),
            signature: "s".into(),
        };
        let revision = store
            .create(Bucket::State, &service_key("shop"), &signed)
            .await
            .unwrap();
        let assignment = Assignment {
            term: 1,
            desired_revision: revision,
            roles: BTreeMap::from([
                ("web".into(), BTreeMap::from([(0, "a".into())])),
                ("worker".into(), BTreeMap::from([(0, "a".into())])),
            ]),
            unplaced: BTreeMap::new(),
            held: BTreeMap::new(),
            rollout: None,
        };
        store
            .create(Bucket::State, &assignment_key("shop"), &assignment)
            .await
            .unwrap();
        let role = |ready, listen: Option<&str>| RolePart {
            declared: 1,
            ready,
            listen: listen.map(|l| l.parse().unwrap()),
            health: None,
        };
        let beat = Beat {
            boot: "b".into(),
            seq: 1,
            sent_ms: 5,
            slots_used: 2,
            services: BTreeMap::from([(
                "shop".to_owned(),
                ServicePart {
                    desired_revision: revision,
                    generation: 1,
                    operation: None,
                    roles: BTreeMap::from([
                        ("web".to_owned(), role(1, Some("10.0.0.1:8080"))),
                        ("worker".to_owned(), role(1, None)),
                    ]),
                },
            )]),
            refused: BTreeMap::new(),
            retrying: BTreeMap::new(),
            apply_rounds: 0,
        };
        store
            .put(Bucket::Beats, &beat_key("a"), &beat)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_view_reports_the_fabric_as_the_operator_reads_it() {
        let server = NatsServer::start();
        let store = FabricStore::connect(&ConnectOptions::new(&server.url()))
            .await
            .unwrap();
        let view = FabricAdminView::new(store.clone());

        // An empty fabric: no members, no services, nothing to look up.
        let hosts = view.hosts().await.unwrap();
        assert_eq!(hosts["hosts"], serde_json::json!([]), "{hosts}");
        assert_eq!(hosts["leader"], serde_json::Value::Null);
        assert_eq!(
            view.status(None).await.unwrap()["services"],
            serde_json::json!([])
        );

        fabric(&store).await;
        let hosts = view.hosts().await.unwrap();
        assert_eq!(hosts["hosts"][0]["id"], "a", "{hosts}");
        assert_eq!(hosts["hosts"][0]["state"], "ready", "{hosts}");
        assert_eq!(
            hosts["hosts"][0]["runs"],
            serde_json::json!(["shop/web", "shop/worker"])
        );

        let status = view.status(None).await.unwrap();
        assert_eq!(status["services"][0]["name"], "shop", "{status}");
        assert_eq!(status["services"][0]["converged"], true, "{status}");
        let one = view.status(Some("shop")).await.unwrap();
        assert_eq!(one["services"].as_array().map(Vec::len), Some(1), "{one}");
        assert_eq!(
            view.status(Some("nope")).await,
            Err(FabricViewError::NotFound(
                "service nope is not deployed in the fabric".into()
            ))
        );

        let endpoints = view.endpoints("shop", "web").await.unwrap();
        assert_eq!(
            endpoints,
            serde_json::json!({
                "service": "shop",
                "role": "web",
                "addrs": ["10.0.0.1:8080"],
                "health": "/healthz",
            })
        );
        assert!(matches!(
            view.endpoints("shop", "worker").await,
            Err(FabricViewError::Invalid(why)) if why.contains("worker role")
        ));
        assert!(matches!(
            view.endpoints("shop", "nope").await,
            Err(FabricViewError::NotFound(_))
        ));
        assert!(matches!(
            view.endpoints("nope", "web").await,
            Err(FabricViewError::NotFound(_))
        ));
    }
}

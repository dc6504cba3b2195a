//! The admin address's routes: one table, [`ROUTES`], that the server
//! matches requests against and that a test holds the OpenAPI document
//! (`openapi.json`) to, both ways.
//!
//! Path parameters are checked before anything else reads them: service and
//! role names as the manifest's names are (so `..` and anything with a `/`,
//! `%` or `.` is refused), queue and bucket names likewise (a queue's may
//! be its poison queue's, `NAME-poison`), blob digests as 64 hex digits.

use crate::controller::store::Digest;
use crate::manifest::check_name;
use http::Method;
use weft_broker::POISON_SUFFIX;

/// Every route: method and path template.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/services"),
    ("GET", "/v1/services/{service}"),
    ("PUT", "/v1/services/{service}"),
    ("DELETE", "/v1/services/{service}"),
    ("POST", "/v1/services/{service}/upgrade"),
    ("PUT", "/v1/services/{service}/roles/{role}/instances"),
    ("PUT", "/v1/services/{service}/roles/{role}/settings"),
    ("GET", "/v1/services/{service}/roles/{role}/logs"),
    ("HEAD", "/v1/blobs/{digest}"),
    ("PUT", "/v1/blobs/{digest}"),
    ("GET", "/v1/services/{service}/roles/{role}/endpoints"),
    ("GET", "/v1/fabric/hosts"),
    ("GET", "/v1/fabric/services"),
    ("GET", "/v1/fabric/services/{service}"),
    ("GET", "/v1/services/{service}/queues"),
    ("POST", "/v1/services/{service}/queues/{queue}/messages"),
    ("GET", "/v1/services/{service}/queues/{queue}/messages"),
    ("DELETE", "/v1/services/{service}/queues/{queue}/messages"),
    ("POST", "/v1/services/{service}/queues/{queue}/redrive"),
    ("GET", "/v1/services/{service}/buckets"),
    ("GET", "/v1/services/{service}/buckets/{bucket}/keys"),
    (
        "POST",
        "/v1/services/{service}/buckets/{bucket}/keys/delete",
    ),
    ("DELETE", "/v1/services/{service}/buckets/{bucket}/keys"),
    ("GET", "/v1/services/{service}/buckets/{bucket}/value"),
    ("GET", "/v1/services/{service}/source"),
];

/// A matched request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Prometheus text.
    Metrics,
    /// Liveness.
    Healthz,
    /// The OpenAPI document.
    OpenApi,
    /// Every service's status.
    ListServices,
    /// One service's status.
    GetService(String),
    /// Deploy a new service.
    Deploy(String),
    /// Stop and remove a service.
    Remove(String),
    /// Start a rolling upgrade.
    Upgrade(String),
    /// Set a worker role's instance count.
    Scale(String, String),
    /// Change a role's settings.
    Settings(String, String),
    /// Read a role's guest output.
    Logs(String, String),
    /// Whether a blob is stored.
    HasBlob(Digest),
    /// Store a blob.
    PutBlob(Digest),
    /// Where a web role is served and ready (across the fabric, in one).
    Endpoints(String, String),
    /// The fabric's members, and who leads.
    FabricHosts,
    /// Every service's fabric-wide status.
    FabricServices,
    /// One service's fabric-wide status.
    FabricService(String),
    /// A service's queues: lengths and their recent history.
    Queues(String),
    /// Send a message to a service's queue.
    SendMessage(String, String),
    /// Peek at a queue's next messages (a poison queue's too).
    PeekMessages(String, String),
    /// Delete every message of a queue.
    PurgeQueue(String, String),
    /// Move a queue's poison messages back to it.
    Redrive(String, String),
    /// A service's buckets.
    Buckets(String),
    /// One page of a bucket's keys.
    BucketKeys(String, String),
    /// Delete some keys of a bucket.
    DeleteKeys(String, String),
    /// Delete every key of a bucket.
    PurgeBucket(String, String),
    /// The value under one key of a bucket.
    BucketValue(String, String),
    /// The deployment source a service runs now.
    Source(String),
}

impl Route {
    /// Whether the route is open without a token (read-only operator
    /// endpoints that reveal no deployment).
    pub fn is_open(&self) -> bool {
        matches!(self, Route::Metrics | Route::Healthz | Route::OpenApi)
    }
}

/// Why a request matched no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// No route has this path (404).
    NotFound,
    /// The path exists with other methods (405), listed.
    Method(Vec<&'static str>),
    /// The path's parameters are invalid (400), with why.
    BadParameter(String),
}

/// Matches `method path` against [`ROUTES`].
pub fn route(method: &Method, path: &str) -> Result<Route, Miss> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut allowed = Vec::new();
    for (index, (route_method, template)) in ROUTES.iter().enumerate() {
        let Some(params) = match_template(template, &segments) else {
            continue;
        };
        if method.as_str() != *route_method {
            allowed.push(*route_method);
            continue;
        }
        return build(index, &params);
    }
    if allowed.is_empty() {
        Err(Miss::NotFound)
    } else {
        Err(Miss::Method(allowed))
    }
}

/// The parameters of `segments` if they fit `template`.
fn match_template<'a>(
    template: &str,
    segments: &[&'a str],
) -> Option<Vec<(&'static str, &'a str)>> {
    let parts: Vec<&str> = template.split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (part, segment) in parts.iter().zip(segments) {
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) => params.push((param_name(name), *segment)),
            None if part == segment => {}
            None => return None,
        }
    }
    Some(params)
}

fn param_name(name: &str) -> &'static str {
    match name {
        "service" => "service",
        "role" => "role",
        "queue" => "queue",
        "bucket" => "bucket",
        _ => "digest",
    }
}

fn build(index: usize, params: &[(&'static str, &str)]) -> Result<Route, Miss> {
    let name = |which: &str| -> Result<String, Miss> {
        let value = params
            .iter()
            .find(|(n, _)| *n == which)
            .map_or("", |(_, v)| *v);
        check_name(value).map_err(|why| {
            let shown: String = value.chars().take(64).collect();
            Miss::BadParameter(format!("{which} name '{shown}' {why}"))
        })?;
        Ok(value.to_owned())
    };
    // A queue's name, or its poison queue's (`NAME-poison`, which may be
    // longer than a name may be).
    let queue = || -> Result<String, Miss> {
        let value = params
            .iter()
            .find(|(n, _)| *n == "queue")
            .map_or("", |(_, v)| *v);
        match value.strip_suffix(POISON_SUFFIX) {
            Some(of) if check_name(of).is_ok() => Ok(value.to_owned()),
            _ => name("queue"),
        }
    };
    let digest = || -> Result<Digest, Miss> {
        let value = params
            .iter()
            .find(|(n, _)| *n == "digest")
            .map_or("", |(_, v)| *v);
        Digest::parse(value).map_err(|e| Miss::BadParameter(e.to_string()))
    };
    Ok(match index {
        0 => Route::Metrics,
        1 => Route::Healthz,
        2 => Route::OpenApi,
        3 => Route::ListServices,
        4 => Route::GetService(name("service")?),
        5 => Route::Deploy(name("service")?),
        6 => Route::Remove(name("service")?),
        7 => Route::Upgrade(name("service")?),
        8 => Route::Scale(name("service")?, name("role")?),
        9 => Route::Settings(name("service")?, name("role")?),
        10 => Route::Logs(name("service")?, name("role")?),
        11 => Route::HasBlob(digest()?),
        12 => Route::PutBlob(digest()?),
        13 => Route::Endpoints(name("service")?, name("role")?),
        14 => Route::FabricHosts,
        15 => Route::FabricServices,
        16 => Route::FabricService(name("service")?),
        17 => Route::Queues(name("service")?),
        18 => Route::SendMessage(name("service")?, queue()?),
        19 => Route::PeekMessages(name("service")?, queue()?),
        20 => Route::PurgeQueue(name("service")?, queue()?),
        21 => Route::Redrive(name("service")?, queue()?),
        22 => Route::Buckets(name("service")?),
        23 => Route::BucketKeys(name("service")?, name("bucket")?),
        24 => Route::DeleteKeys(name("service")?, name("bucket")?),
        25 => Route::PurgeBucket(name("service")?, name("bucket")?),
        26 => Route::BucketValue(name("service")?, name("bucket")?),
        27 => Route::Source(name("service")?),
        // Past the table's end: [`route`] never builds one.
        _ => return Err(Miss::NotFound),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_with_their_parameters_checked() {
        assert_eq!(
            route(&Method::PUT, "/v1/services/shop/roles/web/instances"),
            Ok(Route::Scale("shop".into(), "web".into()))
        );
        assert_eq!(route(&Method::GET, "/v1/services"), Ok(Route::ListServices));
        assert_eq!(route(&Method::GET, "/v1/nothing"), Err(Miss::NotFound));
        assert_eq!(
            route(&Method::GET, "/v1/services/shop/roles/web/endpoints"),
            Ok(Route::Endpoints("shop".into(), "web".into()))
        );
        assert_eq!(
            route(&Method::GET, "/v1/fabric/hosts"),
            Ok(Route::FabricHosts)
        );
        assert_eq!(
            route(&Method::GET, "/v1/fabric/services"),
            Ok(Route::FabricServices)
        );
        assert_eq!(
            route(&Method::GET, "/v1/fabric/services/shop"),
            Ok(Route::FabricService("shop".into()))
        );
        assert_eq!(
            route(&Method::PUT, "/v1/fabric/hosts"),
            Err(Miss::Method(vec!["GET"]))
        );
        assert!(matches!(
            route(&Method::GET, "/v1/fabric/services/..%2Fx"),
            Err(Miss::BadParameter(_))
        ));
        assert!(matches!(
            route(&Method::GET, "/v1/services/shop/roles/Web/endpoints"),
            Err(Miss::BadParameter(_))
        ));
        assert_eq!(
            route(&Method::POST, "/v1/services/shop"),
            Err(Miss::Method(vec!["GET", "PUT", "DELETE"]))
        );
        for crafted in [
            "/v1/services/..",
            "/v1/services/..%2F..%2Fetc",
            "/v1/services/%2e%2e",
            "/v1/services/Shop",
            "/v1/services/",
        ] {
            assert!(
                matches!(route(&Method::PUT, crafted), Err(Miss::BadParameter(_))),
                "{crafted}"
            );
        }
        // More segments than any route: not a route at all.
        assert_eq!(
            route(&Method::GET, "/v1/services/../../etc/passwd"),
            Err(Miss::NotFound)
        );
        assert!(matches!(
            route(&Method::PUT, "/v1/blobs/sha256:..%2Fkey"),
            Err(Miss::BadParameter(_))
        ));
    }

    #[test]
    fn queue_and_bucket_routes_check_their_names_and_take_poison_queues() {
        let long = "q".repeat(64);
        assert_eq!(
            route(&Method::GET, "/v1/services/shop/queues/jobs/messages"),
            Ok(Route::PeekMessages("shop".into(), "jobs".into()))
        );
        assert_eq!(
            route(
                &Method::GET,
                "/v1/services/shop/queues/jobs-poison/messages"
            ),
            Ok(Route::PeekMessages("shop".into(), "jobs-poison".into()))
        );
        // The poison queue of a queue whose name is as long as may be.
        let poison = format!("/v1/services/shop/queues/{long}-poison/messages");
        assert_eq!(
            route(&Method::DELETE, &poison),
            Ok(Route::PurgeQueue("shop".into(), format!("{long}-poison")))
        );
        assert_eq!(
            route(&Method::POST, "/v1/services/shop/queues/jobs/redrive"),
            Ok(Route::Redrive("shop".into(), "jobs".into()))
        );
        assert_eq!(
            route(
                &Method::POST,
                "/v1/services/shop/buckets/results/keys/delete"
            ),
            Ok(Route::DeleteKeys("shop".into(), "results".into()))
        );
        assert_eq!(
            route(&Method::GET, "/v1/services/shop/buckets/results/value"),
            Ok(Route::BucketValue("shop".into(), "results".into()))
        );
        assert_eq!(
            route(&Method::GET, "/v1/services/shop/source"),
            Ok(Route::Source("shop".into()))
        );
        for crafted in [
            "/v1/services/shop/queues/..%2Fother/messages",
            "/v1/services/shop/queues/Jobs/messages",
            "/v1/services/shop/queues/-poison/messages",
            "/v1/services/shop/queues/..-poison/messages",
            "/v1/services/shop/queues/%2e%2e/messages",
            &format!("/v1/services/shop/queues/{long}q/messages"),
            &format!("/v1/services/shop/queues/{long}q-poison/messages"),
        ] {
            assert!(
                matches!(route(&Method::GET, crafted), Err(Miss::BadParameter(why)) if why.starts_with("queue name")),
                "{crafted}"
            );
        }
        for crafted in [
            "/v1/services/shop/buckets/..%2Fother/keys",
            "/v1/services/shop/buckets/results-poison%2F/keys",
            "/v1/services/shop/buckets/.results/keys",
        ] {
            assert!(
                matches!(route(&Method::GET, crafted), Err(Miss::BadParameter(why)) if why.starts_with("bucket name")),
                "{crafted}"
            );
        }
        assert_eq!(
            route(&Method::PUT, "/v1/services/shop/queues/jobs/messages"),
            Err(Miss::Method(vec!["POST", "GET", "DELETE"]))
        );
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_routes_the_server_has() {
        let document: serde_json::Value =
            serde_json::from_str(include_str!("openapi.json")).unwrap();
        let mut documented = Vec::new();
        for (path, operations) in document["paths"].as_object().unwrap() {
            for method in operations.as_object().unwrap().keys() {
                if method != "parameters" {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        documented.sort();
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        served.sort();
        assert_eq!(documented, served);
    }

    /// The document names both ways in (the token and the dashboard's
    /// cookie), and the 403 a session's change without its CSRF header
    /// gets, on every change under /v1 (a read is never 403).
    #[test]
    fn the_openapi_document_names_the_session_cookie_and_its_403() {
        let document: serde_json::Value =
            serde_json::from_str(include_str!("openapi.json")).unwrap();
        let schemes = &document["components"]["securitySchemes"];
        assert_eq!(schemes["cookie"]["in"], "cookie");
        assert_eq!(schemes["cookie"]["name"], super::super::session::COOKIE);
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(
            document["security"],
            serde_json::json!([{ "bearer": [] }, { "cookie": [] }])
        );
        for (method, path) in ROUTES {
            let operation = &document["paths"][path][method.to_lowercase()];
            let open = operation["security"] == serde_json::json!([]);
            let change = !matches!(*method, "GET" | "HEAD");
            let forbidden = operation["responses"].get("403").is_some();
            assert_eq!(forbidden, change && !open, "{method} {path}");
        }
    }
}

//! The admin address's routes: one table, [`ROUTES`], that the server
//! matches requests against and that a test holds the OpenAPI document
//! (`openapi.json`) to, both ways.
//!
//! Path parameters are checked before anything else reads them: service and
//! role names as the manifest's names are (so `..` and anything with a `/`,
//! `%` or `.` is refused), blob digests as 64 hex digits.

use crate::controller::store::Digest;
use crate::manifest::check_name;
use http::Method;

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
        _ => Route::FabricService(name("service")?),
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
}

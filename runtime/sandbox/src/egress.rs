//! A web role's one way out over HTTP: every outgoing request passes the
//! role's allowlist (deny by default) and its `egress` rate limits, and its
//! bodies pass the egress bytes bucket in both directions.
//!
//! There is no second path: WASI sockets and name lookup are off for every
//! guest ([`crate::sandbox`]), worker roles have no `wasi:http` at all, and
//! `wasi:http/outgoing-handler` reaches the network only through
//! [`EgressHooks::send_request`]. The allowed origins come from the manifest
//! alone: nothing in an incoming request (its `Host` header, say) widens
//! them, unlike Spin's `self` origin that CVE-2024-32980 abused. The guest
//! cannot set `Host` either (wasi-http forbids the header), so the request
//! goes to exactly the origin that was checked.
//!
//! Nor does a name reach past its origin: egress resolves it once, refuses
//! the addresses that are the host's own or its networks' (loopback,
//! private, link-local, the metadata service: [`address::is_internal`])
//! unless the allowlist names that address itself, and connects to the
//! address it checked ([`send`]), so DNS cannot rebind it in between.

mod address;
mod send;

use crate::body::MeteredBody;
use crate::rate_limit::{Interface, RoleLimiter};
use crate::usage::{Flow, RoleUsage};
use http_body_util::BodyExt;
use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// An allowlist entry that does not name an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidOrigin(String);

/// An origin a role may send HTTP requests to: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    https: bool,
    /// Lower-case, as `http::Uri` gives it (IPv6 hosts keep their brackets).
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `http://host[:port]` or `https://host[:port]`; a missing port
    /// is the scheme's default. Paths, queries and credentials are refused:
    /// an allowlist entry names a whole origin.
    pub fn parse(text: &str) -> Result<Self, InvalidOrigin> {
        let bad = |why: String| InvalidOrigin(why);
        let uri: http::Uri = text.parse().map_err(|_| {
            bad(format!(
                "'{text}' is not a URL like https://api.example.com"
            ))
        })?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad(format!("'{text}' must start with http:// or https://"))),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| bad(format!("'{text}' names no host")))?;
        if authority.as_str().contains('@') {
            return Err(bad(format!("'{text}' must not carry credentials")));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(bad(format!(
                "'{text}' must name an origin only, without a path or query"
            )));
        }
        Self::of(https, authority.host(), authority.port_u16())
            .ok_or_else(|| bad(format!("'{text}' names no host")))
    }

    fn of(https: bool, host: &str, port: Option<u16>) -> Option<Self> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(Self {
            https,
            host,
            port: port.unwrap_or(if https { 443 } else { 80 }),
        })
    }

    /// The origin a request goes to, if its URI names one.
    fn of_uri(uri: &http::Uri) -> Option<Self> {
        let https = match uri.scheme_str()? {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        Self::of(https, authority.host(), authority.port_u16())
    }

    /// The address this origin names, if its host is an IP literal.
    fn literal(&self) -> Option<IpAddr> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.parse().ok()
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// The origins a role may reach; empty means no outgoing HTTP at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressAllowlist {
    origins: BTreeSet<Origin>,
}

impl EgressAllowlist {
    /// An allowlist of these origins.
    pub fn new(origins: impl IntoIterator<Item = Origin>) -> Self {
        Self {
            origins: origins.into_iter().collect(),
        }
    }

    /// Parses every entry, naming the first bad one.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, InvalidOrigin> {
        entries
            .iter()
            .map(|entry| Origin::parse(entry.as_ref()))
            .collect::<Result<BTreeSet<_>, _>>()
            .map(|origins| Self { origins })
    }

    /// Whether a request to `uri` may leave.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        Origin::of_uri(uri).is_some_and(|origin| self.origins.contains(&origin))
    }

    /// Whether a connection to `address`, resolved from an allowed origin's
    /// name, may be made: a public address may; one of the host's own or
    /// its networks' ([`address::is_internal`]) only if some allowed origin
    /// names that IP literally, on that port.
    pub fn permits_address(&self, address: SocketAddr) -> bool {
        !address::is_internal(address.ip())
            || self
                .origins
                .iter()
                .any(|o| o.port == address.port() && o.literal() == Some(address.ip()))
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// The allowed origins.
    pub fn origins(&self) -> impl Iterator<Item = &Origin> {
        self.origins.iter()
    }
}

/// The `wasi:http` hooks of a guest: outgoing requests pass the allowlist
/// and the role's egress limits, then go out to a checked address ([`send`]).
pub(crate) struct EgressHooks {
    pub(crate) allow: Arc<crate::config::Grants>,
    pub(crate) limiter: Arc<RoleLimiter>,
    pub(crate) usage: Arc<RoleUsage>,
}

type SendFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type SendResult = wasmtime_wasi_http::Result<(http::Response<WasiBody>, SendFuture)>;

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: SendFuture,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let allowed = self.allow.egress.allows(request.uri());
        let grants = self.allow.clone();
        let limiter = self.limiter.clone();
        let usage = self.usage.clone();
        let role = self.allow.role.clone();
        Box::new(async move {
            if !allowed {
                tracing::debug!(%role, uri = %request.uri(), "outgoing request denied: origin not allowed");
                return Err(HttpError::HttpRequestDenied);
            }
            if limiter.admit(Interface::Egress, 0).await.is_err() {
                return Err(HttpError::ConnectionLimitReached);
            }
            let request = request.map(|body| {
                MeteredBody::new(body, limiter.clone(), usage.clone(), Flow::EgressOut)
                    .boxed_unsync()
            });
            let (response, io) = send::send(&grants.egress, request, options).await?;
            let response = response
                .map(|body| MeteredBody::new(body, limiter, usage, Flow::EgressIn).boxed_unsync());
            Ok((response, Box::new(io) as SendFuture))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(text: &str) -> http::Uri {
        text.parse().unwrap()
    }

    #[test]
    fn origins_parse_and_default_their_ports() {
        let https = Origin::parse("https://API.Example.com").unwrap();
        assert_eq!(https.to_string(), "https://api.example.com:443");
        let http = Origin::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(http.to_string(), "http://127.0.0.1:8080");
        for bad in [
            "api.example.com",
            "ftp://example.com",
            "https://example.com/path",
            "https://example.com?q=1",
            "https://user:pw@example.com",
            "https://",
            "not a url",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let allow =
            EgressAllowlist::parse(&["https://api.example.com", "http://127.0.0.1:9000"]).unwrap();
        assert!(allow.allows(&uri("https://api.example.com/v1/things?x=1")));
        assert!(allow.allows(&uri("https://api.example.com:443/")));
        assert!(allow.allows(&uri("https://API.example.com./")));
        assert!(allow.allows(&uri("http://127.0.0.1:9000/x")));
        for denied in [
            "http://api.example.com/",          // another scheme
            "https://api.example.com:8443/",    // another port
            "https://evil.example.com/",        // another host
            "https://api.example.com.evil.io/", // a suffix is not a match
            "http://127.0.0.1:9001/",
            "http://localhost:9000/",
            "/relative",
        ] {
            assert!(!allow.allows(&uri(denied)), "{denied}");
        }
        assert!(!EgressAllowlist::default().allows(&uri("https://api.example.com/")));
    }

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_addresses_pass_only_when_named_literally() {
        let allow = EgressAllowlist::parse(&[
            "https://api.example.com",
            "http://localhost:9000",
            "http://127.0.0.1:8080",
            "http://[::1]:8081",
        ])
        .unwrap();
        assert!(allow.permits_address(at("93.184.216.34:443")));
        // A name is not a grant of the addresses it resolves to.
        assert!(!allow.permits_address(at("127.0.0.1:9000")));
        assert!(!allow.permits_address(at("[::1]:9000")));
        assert!(!allow.permits_address(at("169.254.169.254:80")));
        assert!(!allow.permits_address(at("10.0.0.1:443")));
        // An IP literal is, on its own port only.
        assert!(allow.permits_address(at("127.0.0.1:8080")));
        assert!(!allow.permits_address(at("127.0.0.1:8081")));
        assert!(allow.permits_address(at("[::1]:8081")));
        assert!(!allow.permits_address(at("[::1]:8080")));
    }
}

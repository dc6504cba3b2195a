//! The origins a web role may send HTTP requests to ([`EgressAllowlist`]),
//! as parsed from the manifest's `egress.allow` entries ([`Origin`]). Data
//! only: [`super`] holds the hooks that enforce it, and
//! [`super::address`] says which addresses are internal.

use super::address;
use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

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
    /// its networks' (`address::is_internal`) only if some allowed origin
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

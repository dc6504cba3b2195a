//! [`QueuesConfig`]: which backend holds a service's queues and key-value
//! buckets, as data (the manifest's `[queues]` table).

use crate::limits::QueueSettings;
use serde::Deserialize;

/// Where queues and buckets live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// On this host's disk, in the service's state folder (the default: no
    /// set-up, durable, one host).
    #[default]
    Embedded,
    /// On a NATS JetStream server, shared by every host that points at it.
    Nats,
}

/// The manifest's `[queues]` table. Every field is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct QueuesConfig {
    /// `embedded` or `nats`, as declared; `None` when the table names no
    /// backend, which is embedded on one host (see [`Self::kind`]) and
    /// lets a fabric host put the service on its NATS server.
    pub backend: Option<BackendKind>,
    /// NATS only: the server's URL. Default `nats://127.0.0.1:4222`.
    pub url: Option<String>,
    /// Deliveries after which a message moves to `<queue>-poison`. Default 5,
    /// as the classic fabric's queues: enough for transient faults, few
    /// enough that a poison message stops burning worker time quickly.
    pub max_deliveries: u32,
    /// Messages one queue may hold. Default 100,000; a send to a full queue
    /// gets `unavailable`, so a flooding guest cannot exhaust the store.
    pub max_messages: u32,
    /// Body bytes one queue may hold, in MiB. Default 256.
    pub max_mib: u32,
    /// NATS only: how long a message received by a host that then vanished
    /// stays hidden before the server delivers it again, in milliseconds
    /// (JetStream's ack wait). Default 30,000, the SDK's default visibility
    /// timeout. Leases of hosts that stay up follow each receive's own
    /// visibility timeout, whatever this says.
    pub ack_wait_ms: u64,
    /// NATS only: copies the server keeps of each stream and bucket. Default
    /// 1, all a single server can keep; a production cluster wants 3.
    pub replicas: u8,
    /// NATS only: how long `weft up` keeps retrying a server it cannot reach
    /// at start, in seconds, before it gives up. Default 60.
    pub connect_timeout_secs: u64,
}

/// Why a `[queues]` table is refused. Each message starts with the field's
/// name, so a manifest loader can prefix it with the table's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueuesConfigError {
    /// `max-deliveries` out of range.
    #[error("max-deliveries must be 1 to 1000, not {0}")]
    MaxDeliveries(u32),
    /// `max-messages` is zero.
    #[error("max-messages must be at least 1")]
    MaxMessages,
    /// `max-mib` out of range.
    #[error("max-mib must be 1 to 4096, not {0}")]
    MaxMib(u32),
    /// A NATS-only field set for the embedded backend.
    #[error("{field} applies only to backend = \"nats\"")]
    NatsOnly {
        /// The field's name.
        field: &'static str,
    },
    /// A URL of another scheme.
    #[error("url '{0}' must start with nats:// or tls://")]
    Url(String),
    /// `ack-wait-ms` out of range.
    #[error("ack-wait-ms must be 100 to 43200000 (12 h), not {0}")]
    AckWait(u64),
    /// `replicas` out of range.
    #[error("replicas must be 1 to 5, not {0}")]
    Replicas(u8),
    /// `connect-timeout-secs` over its maximum.
    #[error("connect-timeout-secs must be at most 3600, not {0}")]
    ConnectTimeout(u64),
}

impl QueuesConfigError {
    /// The field the error is about, as the manifest spells it.
    pub fn field(&self) -> &'static str {
        match self {
            Self::MaxDeliveries(_) => "max-deliveries",
            Self::MaxMessages => "max-messages",
            Self::MaxMib(_) => "max-mib",
            Self::NatsOnly { field } => field,
            Self::Url(_) => "url",
            Self::AckWait(_) => "ack-wait-ms",
            Self::Replicas(_) => "replicas",
            Self::ConnectTimeout(_) => "connect-timeout-secs",
        }
    }
}

/// The URL of a NATS server on this machine, with its default port.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// A NATS URL (or a comma-separated list of them) fit to log and show:
/// a password is replaced by `***` (`nats://user:***@host`), and so is a
/// token given as the user (`nats://***@host`), which is a secret too.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = match one.split_once("://") {
                Some((scheme, rest)) => (Some(scheme), rest),
                None => (None, one),
            };
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            let Some((userinfo, host)) = authority.rsplit_once('@') else {
                return one.to_owned();
            };
            let shown = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_owned(),
            };
            match scheme {
                Some(scheme) => format!("{scheme}://{shown}@{host}{tail}"),
                None => format!("{shown}@{host}{tail}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Default for QueuesConfig {
    fn default() -> Self {
        let settings = QueueSettings::default();
        Self {
            backend: None,
            url: None,
            max_deliveries: settings.max_deliveries,
            max_messages: u32::try_from(settings.max_messages).unwrap_or(u32::MAX),
            max_mib: 256,
            ack_wait_ms: 30_000,
            replicas: 1,
            connect_timeout_secs: 60,
        }
    }
}

impl QueuesConfig {
    /// The backend in force: the one declared, else embedded.
    pub fn kind(&self) -> BackendKind {
        self.backend.unwrap_or_default()
    }

    /// The table as in force: the backend named even where it was left
    /// out, so that two tables putting the queues in the same place
    /// compare equal whether or not they spelled out `embedded`.
    pub fn in_force(&self) -> Self {
        Self {
            backend: Some(self.kind()),
            ..self.clone()
        }
    }

    /// The settings every queue of this backend gets.
    pub fn settings(&self) -> QueueSettings {
        QueueSettings {
            max_deliveries: self.max_deliveries,
            max_messages: usize::try_from(self.max_messages).unwrap_or(usize::MAX),
            max_bytes: usize::try_from(u64::from(self.max_mib) * 1024 * 1024).unwrap_or(usize::MAX),
        }
    }

    /// The NATS server's URL.
    pub fn nats_url(&self) -> &str {
        self.url.as_deref().unwrap_or(DEFAULT_NATS_URL)
    }

    /// The NATS server's URL without its secrets, to log and show.
    pub fn shown_url(&self) -> String {
        redact_url(self.nats_url())
    }

    /// Checks the values make sense; the error names the field.
    pub fn validate(&self) -> Result<(), QueuesConfigError> {
        if !(1..=1000).contains(&self.max_deliveries) {
            return Err(QueuesConfigError::MaxDeliveries(self.max_deliveries));
        }
        if self.max_messages == 0 {
            return Err(QueuesConfigError::MaxMessages);
        }
        if !(1..=4096).contains(&self.max_mib) {
            return Err(QueuesConfigError::MaxMib(self.max_mib));
        }
        let defaults = Self::default();
        let nats_only = [
            ("url", self.url.is_some()),
            ("ack-wait-ms", self.ack_wait_ms != defaults.ack_wait_ms),
            ("replicas", self.replicas != defaults.replicas),
            (
                "connect-timeout-secs",
                self.connect_timeout_secs != defaults.connect_timeout_secs,
            ),
        ];
        if self.kind() == BackendKind::Embedded
            && let Some((field, _)) = nats_only.iter().find(|(_, set)| *set)
        {
            return Err(QueuesConfigError::NatsOnly { field });
        }
        if let Some(url) = &self.url
            && !(url.starts_with("nats://") || url.starts_with("tls://"))
        {
            return Err(QueuesConfigError::Url(redact_url(url)));
        }
        if !(100..=12 * 60 * 60 * 1000).contains(&self.ack_wait_ms) {
            return Err(QueuesConfigError::AckWait(self.ack_wait_ms));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(QueuesConfigError::Replicas(self.replicas));
        }
        if self.connect_timeout_secs > 3600 {
            return Err(QueuesConfigError::ConnectTimeout(self.connect_timeout_secs));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<QueuesConfig, String> {
        let config: QueuesConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn defaults_are_embedded_with_five_deliveries() {
        let config = parse("").unwrap();
        assert_eq!(config, QueuesConfig::default());
        assert_eq!(config.backend, None, "not declared");
        assert_eq!(config.kind(), BackendKind::Embedded);
        assert_eq!(config.settings(), QueueSettings::default());
    }

    #[test]
    fn a_declared_backend_is_kept_apart_from_the_default() {
        let embedded = parse("backend = \"embedded\"").unwrap();
        assert_eq!(embedded.backend, Some(BackendKind::Embedded));
        assert_eq!(embedded.kind(), BackendKind::Embedded);
        assert_ne!(embedded, QueuesConfig::default());
        assert_eq!(embedded.in_force(), QueuesConfig::default().in_force());
        let nats = parse("backend = \"nats\"").unwrap();
        assert_eq!(nats.backend, Some(BackendKind::Nats));
        assert_eq!(nats.kind(), BackendKind::Nats);
        let err = parse("backend = \"embedded\"\nreplicas = 3").unwrap_err();
        assert!(err.contains("replicas applies only"), "{err}");
    }

    #[test]
    fn nats_settings_need_the_nats_backend() {
        let config =
            parse("backend = \"nats\"\nurl = \"nats://10.0.0.1:4222\"\nreplicas = 3\n").unwrap();
        assert_eq!(config.nats_url(), "nats://10.0.0.1:4222");
        assert_eq!(config.replicas, 3);
        let err = parse("url = \"nats://127.0.0.1:4222\"").unwrap_err();
        assert!(err.contains("url applies only"), "{err}");
        assert!(parse("backend = \"nats\"\nurl = \"http://x\"").is_err());
        assert!(parse("backend = \"kafka\"").is_err());
        assert!(parse("max-deliveries = 0").is_err());
        assert!(parse("colour = 1").unwrap_err().contains("colour"));
    }

    #[test]
    fn credentials_in_a_url_are_never_shown() {
        let cases = [
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
            (
                "nats://weft:hunter2@10.0.0.1:4222",
                "nats://weft:***@10.0.0.1:4222",
            ),
            ("tls://s3cr3t-token@nats.example", "tls://***@nats.example"),
            (
                "nats://a:p@w@x:1/path?q=1,nats://b:pw2@y:2",
                "nats://a:***@x:1/path?q=1,nats://b:***@y:2",
            ),
            ("user:pw@host:4222", "user:***@host:4222"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown);
        }
        let config: QueuesConfig =
            toml::from_str("backend = \"nats\"\nurl = \"http://weft:hunter2@x:1\"").unwrap();
        assert_eq!(config.shown_url(), "http://weft:***@x:1");
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("weft:***@x") && !error.contains("hunter2"),
            "{error}"
        );
    }

    #[test]
    fn each_error_names_its_field_first() {
        let cases = [
            ("max-deliveries = 1001", "max-deliveries"),
            ("max-messages = 0", "max-messages"),
            ("max-mib = 0", "max-mib"),
            ("replicas = 2", "replicas"),
            ("ack-wait-ms = 5000", "ack-wait-ms"),
            ("backend = \"nats\"\nurl = \"http://x\"", "url"),
            ("backend = \"nats\"\nack-wait-ms = 1", "ack-wait-ms"),
            ("backend = \"nats\"\nreplicas = 9", "replicas"),
            (
                "backend = \"nats\"\nconnect-timeout-secs = 3601",
                "connect-timeout-secs",
            ),
        ];
        for (text, field) in cases {
            let config: QueuesConfig = toml::from_str(text).unwrap();
            let error = config.validate().unwrap_err();
            assert_eq!(error.field(), field, "{text}");
            let message = error.to_string();
            assert!(message.starts_with(field), "{text}: {message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }
}

//! A role's rate limits as data: [`RateLimits`], each [`Interface`]'s
//! [`InterfaceLimits`], read from the manifest's `rate-limits` table.
//!
//! The table's form: one sub-table per interface, named as
//! [`Interface::name`] says (`[rate-limits.queue]`), each giving `ops` and
//! `bytes` buckets, and `max-wait-ms`. Each bucket given replaces its
//! default; a `size` of 0 removes the limit; every interface has a default
//! ([`Interface::default_limits`]), so a role nobody configured cannot
//! flood the host.

use super::interface::{BucketConfig, Interface, InterfaceLimits};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::fmt;
use std::ops::{Index, IndexMut};

/// The longest refill period a bucket may have: a day.
pub const MAX_REFILL_MS: u64 = 24 * 60 * 60 * 1000;
/// The longest `max-wait-ms` a role may set: a minute.
const MAX_WAIT_MS: u64 = 60_000;
/// The key of the maximum wait in a role's `rate-limits` table.
const MAX_WAIT_KEY: &str = "max-wait-ms";
/// The keys a role's `rate-limits` table may hold: each interface's name,
/// and the maximum wait.
static TABLE_KEYS: [&str; Interface::ALL.len() + 1] = {
    let mut keys = [MAX_WAIT_KEY; Interface::ALL.len() + 1];
    let mut i = 0;
    while i < Interface::ALL.len() {
        keys[i] = Interface::ALL[i].name();
        i += 1;
    }
    keys
};

/// A role's rate limits: the buckets of each [`Interface`] (index it:
/// `limits[Interface::Queue].ops`), and how long a call may wait for its
/// tokens. Deserialized from a role's `rate-limits` table (see the module
/// docs); its default is every interface's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    interfaces: [InterfaceLimits; Interface::ALL.len()],
    /// How long a call may wait for its tokens before it gets
    /// `rate-limited`, in milliseconds. Default 100: backpressure smooths
    /// bursts without holding a guest (and its deadline) for long.
    pub max_wait_ms: u64,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            interfaces: Interface::ALL.map(Interface::default_limits),
            max_wait_ms: 100,
        }
    }
}

impl Index<Interface> for RateLimits {
    type Output = InterfaceLimits;

    fn index(&self, interface: Interface) -> &InterfaceLimits {
        &self.interfaces[interface.index()]
    }
}

impl IndexMut<Interface> for RateLimits {
    fn index_mut(&mut self, interface: Interface) -> &mut InterfaceLimits {
        &mut self.interfaces[interface.index()]
    }
}

impl RateLimits {
    /// These limits with `interface`'s buckets replaced by `limits`.
    #[must_use]
    pub fn with(mut self, interface: Interface, limits: InterfaceLimits) -> Self {
        self[interface] = limits;
        self
    }

    /// These limits with a `max_wait_ms` of `ms`.
    #[must_use]
    pub fn with_max_wait_ms(mut self, ms: u64) -> Self {
        self.max_wait_ms = ms;
        self
    }
}

/// One interface's table in the manifest: only the buckets it overrides.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawInterface {
    ops: Option<BucketConfig>,
    bytes: Option<BucketConfig>,
}

impl RawInterface {
    /// A refill period past a day is a typo, and its instants overflow.
    fn check(&self, name: &str) -> Result<(), String> {
        for (kind, bucket) in [("ops", &self.ops), ("bytes", &self.bytes)] {
            if let Some(bucket) = bucket
                && bucket.refill_ms > MAX_REFILL_MS
            {
                return Err(format!(
                    "{name}.{kind}.refill-ms must be at most {MAX_REFILL_MS} (a day), not {}",
                    bucket.refill_ms
                ));
            }
        }
        Ok(())
    }

    fn over(self, default: InterfaceLimits) -> InterfaceLimits {
        let pick = |given: Option<BucketConfig>, default| match given {
            Some(config) if config.size == 0 || config.refill_ms == 0 => None,
            Some(config) => Some(config),
            None => default,
        };
        InterfaceLimits {
            ops: pick(self.ops, default.ops),
            bytes: pick(self.bytes, default.bytes),
        }
    }
}

impl<'de> Deserialize<'de> for RateLimits {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("RateLimits", &TABLE_KEYS, TableVisitor)
    }
}

/// Reads a `rate-limits` table key by key: each interface's by its name.
struct TableVisitor;

impl<'de> Visitor<'de> for TableVisitor {
    type Value = RateLimits;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of rate limits")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RateLimits, A::Error> {
        let mut given: [Option<RawInterface>; Interface::ALL.len()] = std::array::from_fn(|_| None);
        let mut max_wait_ms = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == MAX_WAIT_KEY {
                if max_wait_ms.is_some() {
                    return Err(de::Error::duplicate_field(MAX_WAIT_KEY));
                }
                max_wait_ms = Some(map.next_value::<u64>()?);
            } else if let Some(interface) = Interface::named(&key) {
                let slot = &mut given[interface.index()];
                if slot.is_some() {
                    return Err(de::Error::duplicate_field(interface.name()));
                }
                *slot = Some(map.next_value()?);
            } else {
                return Err(de::Error::unknown_field(&key, &TABLE_KEYS));
            }
        }
        build(given, max_wait_ms).map_err(de::Error::custom)
    }
}

/// The limits a table gives: each interface's defaults, overridden.
fn build(
    given: [Option<RawInterface>; Interface::ALL.len()],
    max_wait_ms: Option<u64>,
) -> Result<RateLimits, String> {
    let default = RateLimits::default();
    let max_wait_ms = max_wait_ms.unwrap_or(default.max_wait_ms);
    if max_wait_ms > MAX_WAIT_MS {
        return Err(format!(
            "{MAX_WAIT_KEY} must be at most {MAX_WAIT_MS}, not {max_wait_ms}"
        ));
    }
    for (interface, raw) in Interface::ALL.into_iter().zip(&given) {
        if let Some(raw) = raw {
            raw.check(interface.name())?;
        }
    }
    let mut limits = RateLimits {
        max_wait_ms,
        ..default
    };
    for (interface, raw) in Interface::ALL.into_iter().zip(given) {
        limits[interface] = raw.unwrap_or_default().over(default[interface]);
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_overrides_replace_single_buckets() {
        let limits: RateLimits = toml::from_str(
            "max-wait-ms = 5\n[queue]\nops = { size = 50, refill-ms = 1000 }\n[kv]\nbytes = { size = 0, refill-ms = 1 }\n",
        )
        .unwrap();
        let default = RateLimits::default();
        let (queue, kv) = (limits[Interface::Queue], limits[Interface::Kv]);
        assert_eq!(queue.ops, Some(BucketConfig::per_second(50)));
        assert_eq!(
            queue.bytes,
            default[Interface::Queue].bytes,
            "an unnamed bucket keeps its default"
        );
        assert_eq!(kv.bytes, None, "size 0 removes the limit");
        assert_eq!(kv.ops, default[Interface::Kv].ops);
        assert_eq!(limits.max_wait_ms, 5);
        assert!(toml::from_str::<RateLimits>("[queue]\nopps = 1\n").is_err());
    }

    #[test]
    fn every_interface_is_a_table_and_nothing_else_is() {
        for interface in Interface::ALL {
            let text = format!(
                "[{}]\nops = {{ size = 7, refill-ms = 1000 }}\n",
                interface.name()
            );
            let limits: RateLimits = toml::from_str(&text).unwrap();
            assert_eq!(limits[interface].ops, Some(BucketConfig::per_second(7)));
        }
        assert_eq!(
            toml::from_str::<RateLimits>("").unwrap(),
            RateLimits::default()
        );
        let unknown = toml::from_str::<RateLimits>("[queues]\n").unwrap_err();
        assert!(
            unknown
                .message()
                .starts_with("unknown field `queues`, expected one of `queue`"),
            "{unknown}"
        );
    }

    #[test]
    fn numbers_past_their_bounds_are_refused() {
        let wait = toml::from_str::<RateLimits>("max-wait-ms = 60001\n").unwrap_err();
        assert_eq!(
            wait.message(),
            "max-wait-ms must be at most 60000, not 60001"
        );
        let refill =
            toml::from_str::<RateLimits>("[log]\nbytes = { size = 1, refill-ms = 86400001 }\n")
                .unwrap_err();
        assert_eq!(
            refill.message(),
            "log.bytes.refill-ms must be at most 86400000 (a day), not 86400001"
        );
    }
}

//! W3C trace context: trace and span ids, parsing and writing the
//! `traceparent` header (<https://www.w3.org/TR/trace-context/>).
//!
//! Parsing is strict, on bytes (never on `str` indices, so no input can
//! land between a character's bytes): version `00` is exactly 55 bytes of
//! lowercase hex fields joined by `-`; ids may not be all zero; version
//! `ff` is invalid. A later version is read as far as version 00's fields
//! go, as the specification asks, if a `-` follows them. Ids come from a
//! per-thread `SmallRng` seeded from the OS: uniqueness is what matters,
//! not secrecy.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::fmt;

/// A trace's id: 16 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A span's id: 8 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

/// A `traceparent` as received: the trace, the caller's span, its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace the caller's span belongs to.
    pub trace_id: TraceId,
    /// The caller's span: the parent of the span that receives it.
    pub parent_id: SpanId,
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

/// The context of a span Weft made: what goes out as its `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    /// Its trace.
    pub trace_id: TraceId,
    /// The span itself.
    pub span_id: SpanId,
    /// The trace flags passed on from its parent (sampled for a new trace).
    pub flags: u8,
}

/// Why a `traceparent` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadTraceParent {
    /// Not 55 bytes (or, for a later version, shorter, or not followed by `-`).
    #[error("traceparent has the wrong length")]
    Length,
    /// A `-` is missing between fields.
    #[error("traceparent's fields are not separated by '-'")]
    Separator,
    /// A field is not lowercase hexadecimal.
    #[error("traceparent's {0} is not lowercase hex")]
    Hex(&'static str),
    /// Version `ff`, which the specification forbids.
    #[error("traceparent version ff is invalid")]
    Version,
    /// An all-zero trace or parent id.
    #[error("traceparent's {0} is all zeros")]
    Zero(&'static str),
}

/// The length of a version-00 `traceparent`.
const LEN: usize = 55;

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

fn random<const N: usize>() -> [u8; N] {
    RNG.with(|rng| {
        let mut rng = rng.borrow_mut();
        loop {
            let bytes: [u8; N] = rng.random();
            if bytes.iter().any(|b| *b != 0) {
                return bytes;
            }
        }
    })
}

impl TraceId {
    /// A new random trace id.
    pub fn random() -> Self {
        Self(random())
    }
}

impl SpanId {
    /// A new random span id.
    pub fn random() -> Self {
        Self(random())
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

/// One lowercase hex digit's value.
fn nibble(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

/// Decodes `text` (exactly twice `N` lowercase hex digits) into bytes.
fn hex<const N: usize>(text: &[u8], field: &'static str) -> Result<[u8; N], BadTraceParent> {
    let mut out = [0u8; N];
    if text.len() != 2 * N {
        return Err(BadTraceParent::Length);
    }
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let (Some(high), Some(low)) = (nibble(pair[0]), nibble(pair[1])) else {
            return Err(BadTraceParent::Hex(field));
        };
        *byte = (high << 4) | low;
    }
    Ok(out)
}

impl TraceParent {
    /// Parses a `traceparent` header's value (see the module docs).
    pub fn parse(value: &str) -> Result<Self, BadTraceParent> {
        let bytes = value.as_bytes();
        if bytes.len() < LEN {
            return Err(BadTraceParent::Length);
        }
        let [version] = hex::<1>(&bytes[..2], "version")?;
        if version == 0xff {
            return Err(BadTraceParent::Version);
        }
        // Version 00 is exactly 55 bytes; a later one may add fields after a '-'.
        if bytes.len() > LEN && (version == 0 || bytes[LEN] != b'-') {
            return Err(BadTraceParent::Length);
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(BadTraceParent::Separator);
        }
        let trace_id = hex::<16>(&bytes[3..35], "trace-id")?;
        let parent_id = hex::<8>(&bytes[36..52], "parent-id")?;
        let [flags] = hex::<1>(&bytes[53..55], "trace-flags")?;
        if trace_id == [0; 16] {
            return Err(BadTraceParent::Zero("trace-id"));
        }
        if parent_id == [0; 8] {
            return Err(BadTraceParent::Zero("parent-id"));
        }
        Ok(Self {
            trace_id: TraceId(trace_id),
            parent_id: SpanId(parent_id),
            flags,
        })
    }
}

impl SpanContext {
    /// A new span in a new trace, sampled.
    pub fn root() -> Self {
        Self {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            flags: 1,
        }
    }

    /// A new span in the trace of `parent`, with its flags.
    pub fn child_of_remote(parent: &TraceParent) -> Self {
        Self {
            trace_id: parent.trace_id,
            span_id: SpanId::random(),
            flags: parent.flags,
        }
    }

    /// A new span in this span's trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: SpanId::random(),
            ..*self
        }
    }

    /// Its `traceparent` (version 00).
    pub fn traceparent(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SpanContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_parses_and_round_trips() {
        let parsed = TraceParent::parse(GOOD).unwrap();
        assert_eq!(
            parsed.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parsed.parent_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(parsed.flags, 1);
        let ctx = SpanContext {
            trace_id: parsed.trace_id,
            span_id: parsed.parent_id,
            flags: parsed.flags,
        };
        assert_eq!(ctx.traceparent(), GOOD);
        let child = SpanContext::child_of_remote(&parsed);
        assert_eq!(child.trace_id, parsed.trace_id);
        assert_ne!(child.span_id, parsed.parent_id);
        assert_eq!(
            TraceParent::parse(&child.traceparent()).unwrap().parent_id,
            child.span_id
        );
    }

    #[test]
    fn each_malformed_field_is_refused() {
        let cases: [(&str, BadTraceParent); 10] = [
            ("", BadTraceParent::Length),
            (&GOOD[..54], BadTraceParent::Length),
            (
                "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                BadTraceParent::Hex("version"),
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                BadTraceParent::Version,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                BadTraceParent::Separator,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                BadTraceParent::Hex("trace-id"),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
                BadTraceParent::Hex("parent-id"),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                BadTraceParent::Hex("trace-flags"),
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                BadTraceParent::Zero("trace-id"),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                BadTraceParent::Zero("parent-id"),
            ),
        ];
        for (text, why) in cases {
            assert_eq!(TraceParent::parse(text), Err(why), "{text:?}");
        }
    }

    #[test]
    fn uppercase_hex_is_refused() {
        let upper = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
        assert_eq!(
            TraceParent::parse(upper),
            Err(BadTraceParent::Hex("trace-id"))
        );
        let upper_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01";
        assert_eq!(
            TraceParent::parse(upper_parent),
            Err(BadTraceParent::Hex("parent-id"))
        );
    }

    #[test]
    fn too_long_is_refused_for_version_00_and_read_for_later_versions() {
        let long = format!("{GOOD}-extra");
        assert_eq!(TraceParent::parse(&long), Err(BadTraceParent::Length));
        assert_eq!(
            TraceParent::parse(&format!("{GOOD}0")),
            Err(BadTraceParent::Length)
        );
        let later = format!("01{}-whatever", &GOOD[2..]);
        assert_eq!(TraceParent::parse(&later).unwrap().flags, 1);
        assert_eq!(
            TraceParent::parse(&format!("01{}x", &GOOD[2..])),
            Err(BadTraceParent::Length)
        );
        let huge = "0".repeat(1 << 20);
        assert_eq!(TraceParent::parse(&huge), Err(BadTraceParent::Length));
    }

    #[test]
    fn hostile_bytes_never_panic() {
        // Multi-byte characters straddling every field boundary.
        let mut text = String::from(GOOD);
        for at in 0..GOOD.len() {
            text.replace_range(at..=at, "é");
            let _ = TraceParent::parse(&text);
            text = String::from(GOOD);
        }
        assert!(TraceParent::parse(&"é".repeat(28)).is_err());
        assert!(TraceParent::parse(&"-".repeat(55)).is_err());
    }

    #[test]
    fn new_ids_are_never_zero_and_differ() {
        let a = SpanContext::root();
        let b = SpanContext::root();
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.span_id, b.span_id);
        assert_ne!(a.trace_id.0, [0; 16]);
        assert_eq!(a.child().trace_id, a.trace_id);
        assert_eq!(
            TraceParent::parse(&a.traceparent()).unwrap().trace_id,
            a.trace_id
        );
    }
}

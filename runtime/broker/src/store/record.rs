//! A message's row in the store: its byte layout, written and read back.
//! A row this version cannot read is refused, never misread.
//!
//! Two layouts are read: version 1 (before messages carried a
//! `traceparent`) and version 2 (with one). A message without a
//! `traceparent` is still written as version 1, so a store that never saw
//! one stays readable by the Weft that wrote it.

use crate::message::Message;

/// The layout of a message without a `traceparent`.
const V1: u8 = 1;
/// The layout of a message with one.
const V2: u8 = 2;

/// The byte layout of a message: the version (1 or 2), then inserted-at,
/// expires-at (`u64::MAX`: never) and visible-at as little-endian u64s,
/// the dequeue count (u32), the id's length (u16) and bytes, the poison
/// reason's length (u32, `u32::MAX`: none) and bytes; in version 2 only,
/// the `traceparent`'s length (u16) and bytes; then the body.
pub(super) fn encode(message: &Message) -> Vec<u8> {
    let reason = message.poison_reason.as_deref().unwrap_or("");
    let trace = message.trace_parent.as_deref();
    let mut out = Vec::with_capacity(
        1 + 8 * 3
            + 4
            + 2
            + message.id.len()
            + 4
            + reason.len()
            + trace.map_or(0, |t| 2 + t.len())
            + message.body.len(),
    );
    out.push(if trace.is_some() { V2 } else { V1 });
    out.extend_from_slice(&message.inserted_at_ms.to_le_bytes());
    out.extend_from_slice(&message.expires_at_ms.unwrap_or(u64::MAX).to_le_bytes());
    out.extend_from_slice(&message.visible_at_ms.to_le_bytes());
    out.extend_from_slice(&message.dequeue_count.to_le_bytes());
    // Ids are 32 hex digits, reasons one short line, traceparents at most
    // `MAX_TRACE_PARENT_BYTES` (checked at send): all far inside their
    // length fields.
    let id_len = u16::try_from(message.id.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&id_len.to_le_bytes());
    out.extend_from_slice(&message.id.as_bytes()[..usize::from(id_len)]);
    match &message.poison_reason {
        Some(reason) => {
            let len = u32::try_from(reason.len()).unwrap_or(u32::MAX - 1);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&reason.as_bytes()[..usize::try_from(len).unwrap_or(0)]);
        }
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    if let Some(trace) = trace {
        let len = u16::try_from(trace.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&trace.as_bytes()[..usize::from(len)]);
    }
    out.extend_from_slice(&message.body);
    out
}

/// Reads [`encode`]'s layout; `None` if the bytes do not follow it.
pub(super) fn decode(bytes: &[u8]) -> Option<Message> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = bytes.split_at_checked(n)?;
        *bytes = rest;
        Some(head)
    }
    fn u64_le(bytes: &mut &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(take(bytes, 8)?.try_into().ok()?))
    }
    let mut rest = bytes;
    let version = *take(&mut rest, 1)?.first()?;
    if version != V1 && version != V2 {
        return None;
    }
    let inserted_at_ms = u64_le(&mut rest)?;
    let expires = u64_le(&mut rest)?;
    let visible_at_ms = u64_le(&mut rest)?;
    let dequeue_count = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?);
    let id_len = u16::from_le_bytes(take(&mut rest, 2)?.try_into().ok()?);
    let id = std::str::from_utf8(take(&mut rest, usize::from(id_len))?).ok()?;
    let reason_len = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?);
    let poison_reason = if reason_len == u32::MAX {
        None
    } else {
        let len = usize::try_from(reason_len).ok()?;
        Some(std::str::from_utf8(take(&mut rest, len)?).ok()?.to_owned())
    };
    let trace_parent = if version == V2 {
        let len = u16::from_le_bytes(take(&mut rest, 2)?.try_into().ok()?);
        Some(
            std::str::from_utf8(take(&mut rest, usize::from(len))?)
                .ok()?
                .to_owned(),
        )
    } else {
        None
    };
    Some(Message {
        id: id.to_owned(),
        body: rest.to_vec(),
        inserted_at_ms,
        expires_at_ms: (expires != u64::MAX).then_some(expires),
        visible_at_ms,
        dequeue_count,
        poison_reason,
        trace_parent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let message = Message {
            id: "0123456789abcdef0123456789abcdef".into(),
            body: b"hello".to_vec(),
            inserted_at_ms: 1_700_000_000_000,
            expires_at_ms: Some(1_700_000_060_000),
            visible_at_ms: 1_700_000_030_000,
            dequeue_count: 4,
            poison_reason: Some("delivered 5 times".into()),
            trace_parent: Some(TRACE.into()),
        };
        let traced = encode(&message);
        assert_eq!(traced[0], V2);
        assert_eq!(decode(&traced), Some(message.clone()));
        let plain = Message {
            expires_at_ms: None,
            poison_reason: None,
            trace_parent: None,
            body: Vec::new(),
            ..message.clone()
        };
        // Without a traceparent, the layout a Weft before traces reads.
        assert_eq!(encode(&plain)[0], V1);
        assert_eq!(decode(&encode(&plain)), Some(plain.clone()));
        for (bytes, body) in [(encode(&plain), 0), (traced, message.body.len())] {
            for cut in 0..bytes.len() - body {
                // Truncated before the body: refused, never a panic.
                assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
            }
        }
        assert_eq!(decode(&[2, 0, 0]), None);
        assert_eq!(decode(&[3]), None, "an unknown version");
    }

    /// A row exactly as a Weft before traces wrote it (version 1, written
    /// out by hand here so a change to `encode` cannot hide a break): it
    /// reads back whole, with no traceparent.
    #[test]
    fn a_row_written_before_traces_reads_with_no_traceparent() {
        let mut old = vec![1u8];
        old.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
        old.extend_from_slice(&u64::MAX.to_le_bytes());
        old.extend_from_slice(&1_700_000_030_000u64.to_le_bytes());
        old.extend_from_slice(&3u32.to_le_bytes());
        old.extend_from_slice(&4u16.to_le_bytes());
        old.extend_from_slice(b"abcd");
        old.extend_from_slice(&6u32.to_le_bytes());
        old.extend_from_slice(b"reason");
        old.extend_from_slice(b"the body");
        assert_eq!(
            decode(&old),
            Some(Message {
                id: "abcd".into(),
                body: b"the body".to_vec(),
                inserted_at_ms: 1_700_000_000_000,
                expires_at_ms: None,
                visible_at_ms: 1_700_000_030_000,
                dequeue_count: 3,
                poison_reason: Some("reason".into()),
                trace_parent: None,
            })
        );
    }
}

//! A message's row in the store: its byte layout, written and read back.
//! A row this version cannot read is refused, never misread.

use crate::message::Message;

/// The byte layout of a message, version 1: inserted-at, expires-at
/// (`u64::MAX`: never) and visible-at as little-endian u64s, the dequeue
/// count (u32), the id's length (u16) and bytes, the poison reason's length
/// (u32, `u32::MAX`: none) and bytes, then the body.
pub(super) fn encode(message: &Message) -> Vec<u8> {
    let reason = message.poison_reason.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(
        1 + 8 * 3 + 4 + 2 + message.id.len() + 4 + reason.len() + message.body.len(),
    );
    out.push(1);
    out.extend_from_slice(&message.inserted_at_ms.to_le_bytes());
    out.extend_from_slice(&message.expires_at_ms.unwrap_or(u64::MAX).to_le_bytes());
    out.extend_from_slice(&message.visible_at_ms.to_le_bytes());
    out.extend_from_slice(&message.dequeue_count.to_le_bytes());
    // Ids are 32 hex digits, reasons one short line: both far inside their
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
    if take(&mut rest, 1)? != [1] {
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
    Some(Message {
        id: id.to_owned(),
        body: rest.to_vec(),
        inserted_at_ms,
        expires_at_ms: (expires != u64::MAX).then_some(expires),
        visible_at_ms,
        dequeue_count,
        poison_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        assert_eq!(decode(&encode(&message)), Some(message.clone()));
        let plain = Message {
            expires_at_ms: None,
            poison_reason: None,
            body: Vec::new(),
            ..message
        };
        assert_eq!(decode(&encode(&plain)), Some(plain.clone()));
        let bytes = encode(&plain);
        for cut in 0..bytes.len() {
            // Truncated inside the fixed part: refused, never a panic.
            if cut < bytes.len() - plain.body.len() {
                assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
            }
        }
        assert_eq!(decode(&[2, 0, 0]), None);
    }
}

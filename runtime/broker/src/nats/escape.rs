//! Weft's names in NATS's alphabet: queue and bucket names as stream,
//! subject and bucket names, a guest's keys as NATS keys, each reversibly.

/// A name in the alphabet NATS allows in stream names, subjects' tokens and
/// bucket names: letters, digits and `-` stay; every other byte becomes
/// `_xx` (its hex), so distinct names never meet.
pub(super) fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// A guest's key as a NATS key: `k` (so it is never empty), then the key
/// with letters, digits, `-` and `/` kept and every other byte as `_xx`.
pub(super) fn kv_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 1);
    out.push('k');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'/' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The guest's key a NATS key stands for (`None`: not one of ours).
pub(super) fn guest_key(key: &str) -> Option<String> {
    let rest = key.strip_prefix('k')?;
    let mut bytes = Vec::with_capacity(rest.len());
    let mut chars = rest.bytes();
    while let Some(b) = chars.next() {
        if b == b'_' {
            let hex = [chars.next()?, chars.next()?];
            bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys_escape_reversibly() {
        assert_eq!(token("svc/jobs-poison"), "svc_2fjobs-poison");
        assert_ne!(token("a_/b"), token("a/_b"));
        for key in ["", "a.b", "seen/x y", "ünï", "_x_", "k", "a=b+c"] {
            let escaped = kv_key(key);
            assert!(
                escaped
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-/_".contains(&b)),
                "{escaped}"
            );
            assert_eq!(guest_key(&escaped).as_deref(), Some(key));
        }
        assert_eq!(guest_key("x"), None);
        assert_eq!(guest_key("k_4"), None);
    }
}

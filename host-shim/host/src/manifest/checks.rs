//! The manifest's small checks: names safe in paths, URLs and backend keys,
//! health paths, setting names, and one-line TOML errors with their line.

/// A health path: an absolute path (with an optional query) of printable
/// ASCII, at most 256 bytes.
pub fn check_health_path(path: String) -> Result<String, (&'static str, String)> {
    let valid = path.starts_with('/')
        && path.len() <= 256
        && path.bytes().all(|b| b.is_ascii_graphic())
        && path.parse::<http::uri::PathAndQuery>().is_ok();
    if valid {
        Ok(path)
    } else {
        Err((
            "health",
            format!("'{path}' is not a path like /health (absolute, printable, at most 256 bytes)"),
        ))
    }
}

/// A setting's name: 1 to 128 bytes of printable ASCII without spaces.
pub fn check_setting_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be 1 to 128 printable characters without spaces".into());
    }
    Ok(())
}

/// The 1-based line of byte offset `at` in `text`.
pub fn line_of(text: &str, at: usize) -> usize {
    let before = &text.as_bytes()[..at.min(text.len())];
    before.iter().filter(|b| **b == b'\n').count() + 1
}

/// Service, role, queue and bucket names: short, and safe in paths, URLs
/// and backend keys.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err("may hold only a-z, 0-9, '-' and '_'".into());
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err("must start with a letter or digit".into());
    }
    Ok(())
}

/// One line: `line L, column C: message`, with `KEY: ` before the message
/// when the error is about a value (a number out of its type's range, a
/// wrong type), so it names the field as the semantic errors do.
pub fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let start = floor_char_boundary(text, span.start);
            let before = &text[..start];
            let line = line_of(text, start);
            let current = before.rsplit('\n').next().unwrap_or("");
            let column = current.chars().count() + 1;
            match key_before(current) {
                Some(key) if !message.contains(key) => {
                    format!("line {line}, column {column}: {key}: {message}")
                }
                _ => format!("line {line}, column {column}: {message}"),
            }
        }
        None => message,
    }
}

/// The largest char boundary of `text` at or before `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The bare key whose value starts where `line` ends (`key = ` or, in an
/// inline table, `{ a = 1, key = `), if that is what precedes it.
fn key_before(line: &str) -> Option<&str> {
    let left = line.trim_end().strip_suffix('=')?.trim_end();
    let key = left
        .rsplit(|c: char| c.is_whitespace() || c == '{' || c == ',')
        .next()?;
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    bare.then_some(key)
}

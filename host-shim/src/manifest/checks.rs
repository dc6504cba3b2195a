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

/// One line: `line L, column C: message`.
pub fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = line_of(text, span.start);
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

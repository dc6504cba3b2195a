//! The runtime's typed errors: why a component could not be loaded or run,
//! and why one guest invocation ended badly.

use std::path::PathBuf;
use std::time::Duration;

/// Why the runtime could not set something up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The component file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The bytes are not a valid Wasm component (or failed to compile).
    #[error("{}: not a valid Wasm component: {reason}", path.display())]
    InvalidComponent {
        /// The file.
        path: PathBuf,
        /// What the compiler said, on one line.
        reason: String,
    },
    /// The component does not fit the role it was given: a missing export,
    /// or an import this kind of role does not provide.
    #[error("{}: cannot run as a {kind} role: {reason}", path.display())]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// The role kind it was loaded for.
        kind: &'static str,
        /// What is missing, on one line.
        reason: String,
    },
    /// Limits that make no sense, alone or for this engine.
    #[error("invalid limits: {0}")]
    Limits(String),
    /// The engine could not be built (an unsupported configuration).
    #[error("cannot build the wasmtime engine: {0}")]
    Engine(String),
    /// A grant that cannot be honoured (a scratch folder that cannot be opened).
    #[error("cannot grant {what}: {reason}")]
    Grant {
        /// The grant.
        what: String,
        /// Why.
        reason: String,
    },
}

impl RuntimeError {
    /// This error's message with the component named `name` where the
    /// message names the file it was loaded from: a host that loaded a copy
    /// (a blob in its state folder) names the file the user knows, without
    /// rewriting text. Built from the fields, as the `Display` text is.
    pub fn naming(&self, name: &str) -> String {
        match self {
            Self::Read { source, .. } => format!("{name}: cannot read: {source}"),
            Self::InvalidComponent { reason, .. } => {
                format!("{name}: not a valid Wasm component: {reason}")
            }
            Self::Incompatible { kind, reason, .. } => {
                format!("{name}: cannot run as a {kind} role: {reason}")
            }
            Self::Limits(_) | Self::Engine(_) | Self::Grant { .. } => self.to_string(),
        }
    }
}

/// Why one guest invocation (an HTTP request, a worker run) ended badly.
/// Only that invocation ends; the host and other guests go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuestFailure {
    /// The invocation used its whole fuel budget.
    #[error("fuel budget exhausted")]
    OutOfFuel,
    /// The invocation ran past its wall-clock deadline.
    #[error("deadline of {} ms exceeded", .0.as_millis())]
    Deadline(Duration),
    /// The guest trapped after its memory cap refused a growth.
    #[error("memory limit of {0} MiB reached")]
    MemoryCap(u64),
    /// The guest trapped (a panic, an unreachable, a bad access...).
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The guest called `exit` with a non-zero status.
    #[error("guest exited with status {0}")]
    Exit(i32),
    /// The guest could not be instantiated (its start function trapped, say).
    #[error("cannot instantiate guest: {0}")]
    Instantiate(String),
    /// The host had no room to start the guest: the instance pool was
    /// full, or the role's memory cap left too little for a new instance.
    /// It passes as other invocations end.
    #[error("no room to start the guest: {0}")]
    Capacity(String),
    /// The guest's `start` hook returned an error.
    #[error("start hook failed: {0}")]
    Start(String),
    /// The guest finished without producing what was asked of it (an HTTP
    /// response, say).
    #[error("{0}")]
    Protocol(String),
}

impl GuestFailure {
    /// A short name for the kind of failure, for metrics and headers:
    /// `fuel`, `deadline`, `memory`, `trap`, `exit`, `instantiate`,
    /// `capacity`, `start` or `protocol`.
    pub fn kind(&self) -> &'static str {
        match self {
            GuestFailure::OutOfFuel => "fuel",
            GuestFailure::Deadline(_) => "deadline",
            GuestFailure::MemoryCap(_) => "memory",
            GuestFailure::Trap(_) => "trap",
            GuestFailure::Exit(_) => "exit",
            GuestFailure::Instantiate(_) => "instantiate",
            GuestFailure::Capacity(_) => "capacity",
            GuestFailure::Start(_) => "start",
            GuestFailure::Protocol(_) => "protocol",
        }
    }
}

/// Renders a wasmtime error on one line: the first line of each cause.
pub(crate) fn one_line(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    let mut parts = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut out = parts.next().unwrap_or("unknown error").to_owned();
    if out.len() > 300 {
        out.truncate(out.char_indices().nth(300).map_or(out.len(), |(i, _)| i));
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `naming` given the error's own path says what `Display` says.
    #[test]
    fn naming_the_path_itself_is_the_display_text() {
        let path = PathBuf::from("/state/blobs/abc");
        let errors = [
            RuntimeError::Read {
                path: path.clone(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            },
            RuntimeError::InvalidComponent {
                path: path.clone(),
                reason: "bad magic".into(),
            },
            RuntimeError::Incompatible {
                path: path.clone(),
                kind: "web",
                reason: "no handler".into(),
            },
            RuntimeError::Limits("fuel".into()),
        ];
        for error in errors {
            assert_eq!(error.naming("/state/blobs/abc"), error.to_string());
            assert!(!error.naming("app.wasm").contains("/state/"), "{error}");
        }
    }
}

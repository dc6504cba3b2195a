//! Where an instance is in its lifecycle: a worker instance
//! ([`super::workers`]) or a web role's version ([`super::web`]) go through
//! the same states, and the status report ([`super::status`]) carries them
//! as they are named here.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where an instance is in its lifecycle. Serialized as its
/// [`InstanceState::name`] (`starting`, `ready`, `draining`, `stopped`,
/// `failed`), the admin API's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    /// Instantiating, or in its start hook (a web version: until its
    /// health path answers 2xx too).
    Starting,
    /// Taking work.
    Ready,
    /// Asked to stop, finishing what it holds.
    Draining,
    /// Not running.
    Stopped,
    /// Failed (trapped, returned, or its start failed); a worker instance
    /// waits to restart.
    Failed,
}

impl InstanceState {
    /// The state's name in status reports.
    pub fn name(self) -> &'static str {
        match self {
            InstanceState::Starting => "starting",
            InstanceState::Ready => "ready",
            InstanceState::Draining => "draining",
            InstanceState::Stopped => "stopped",
            InstanceState::Failed => "failed",
        }
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_name_is_the_display_name() {
        for state in [
            InstanceState::Starting,
            InstanceState::Ready,
            InstanceState::Draining,
            InstanceState::Stopped,
            InstanceState::Failed,
        ] {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.name()));
            assert_eq!(serde_json::from_str::<InstanceState>(&json).unwrap(), state);
        }
    }
}

//! Runs the build commands a manifest gives its roles, each distinct command
//! once, in the manifest's folder.

use crate::manifest::Manifest;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};

/// Why a role's build did not produce its component.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The shell could not be started.
    #[error("{}: role '{role}': cannot run build command: {reason}", manifest.display())]
    Spawn {
        /// The manifest file.
        manifest: PathBuf,
        /// The role whose command it was.
        role: String,
        /// What the OS said.
        reason: std::io::Error,
    },
    /// The command ran and failed.
    #[error("{}: role '{role}': build command `{command}` failed ({status})", manifest.display())]
    Failed {
        /// The manifest file.
        manifest: PathBuf,
        /// The role whose command it was.
        role: String,
        /// The command.
        command: String,
        /// How it ended.
        status: ExitStatus,
    },
}

/// Runs every distinct build command; the first failure stops the start.
pub fn build_roles(manifest: &Manifest) -> Result<(), BuildError> {
    let mut done: Vec<&str> = Vec::new();
    for (name, role) in &manifest.roles {
        let Some(command) = role.build.as_deref() else {
            continue;
        };
        if done.contains(&command) {
            continue;
        }
        done.push(command);
        tracing::info!(role = %name, %command, "building");
        // The build's output goes to stderr: weft's stdout carries only
        // its own status lines, which scripts read.
        let status = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(manifest.folder())
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::io::stderr()))
            .status()
            .map_err(|reason| BuildError::Spawn {
                manifest: manifest.path.clone(),
                role: name.clone(),
                reason,
            })?;
        if !status.success() {
            return Err(BuildError::Failed {
                manifest: manifest.path.clone(),
                role: name.clone(),
                command: command.to_owned(),
                status,
            });
        }
    }
    Ok(())
}

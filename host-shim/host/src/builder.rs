//! Runs the build commands a manifest gives its roles, each distinct command
//! once, in the manifest's folder.

use crate::manifest::Manifest;
use anyhow::{Context, bail};
use std::process::{Command, Stdio};

/// Runs every distinct build command; the first failure stops the start.
pub fn build_roles(manifest: &Manifest) -> anyhow::Result<()> {
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
            .with_context(|| {
                format!(
                    "{}: role '{name}': cannot run build command",
                    manifest.path.display()
                )
            })?;
        if !status.success() {
            bail!(
                "{}: role '{name}': build command `{command}` failed ({status})",
                manifest.path.display()
            );
        }
    }
    Ok(())
}

//! Per-environment configuration: an overlay file beside a service's
//! `weft.toml`, and the changes an operator makes through the admin API.
//!
//! The manifest is the service definition: its roles, their kinds,
//! endpoints and limits, and the settings each role declares (with default
//! values). An environment overlay, `weft.ENV.toml` in the same folder
//! (`--env ENV`), gives the values that differ between environments, and
//! only those:
//!
//! ```toml
//! [roles.worker]
//! instances = 4
//!
//! [roles.web.settings]
//! greeting = "hola"
//! ```
//!
//! It is validated up front, against the manifest: an unknown key, a role
//! the manifest does not have, instances for a web role, or a setting the
//! role does not declare is a one-line error naming the file, the line and
//! the field. [`Overrides`] are the same two kinds of change made later
//! through the admin API (`weft scale`, `weft settings`), checked the same way.

use crate::manifest::{
    MAX_INSTANCES, Manifest, ManifestError, Role, RoleByKind, check_name, line_of,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// An environment overlay: its name, file and text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// The environment's name (`prod` for `weft.prod.toml`).
    pub name: String,
    /// The file it came from, for messages.
    pub file: String,
    /// The overlay's TOML text.
    pub text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverlay {
    #[serde(default)]
    roles: BTreeMap<Spanned<String>, RawRoleOverlay>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoleOverlay {
    instances: Option<Spanned<u32>>,
    #[serde(default)]
    settings: BTreeMap<Spanned<String>, String>,
}

impl Environment {
    /// The overlay file for environment `name` of the manifest at `manifest`.
    pub fn file_for(manifest: &Path, name: &str) -> PathBuf {
        manifest
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!("weft.{name}.toml"))
    }

    /// Reads environment `name`'s overlay for the manifest at `manifest`.
    pub fn load(manifest: &Path, name: &str) -> Result<Self, ManifestError> {
        let path = Self::file_for(manifest, name);
        check_name(name).map_err(|why| ManifestError {
            path: path.clone(),
            message: format!("--env {name}: the environment's name {why}"),
        })?;
        let text = std::fs::read_to_string(&path).map_err(|e| ManifestError {
            path: path.clone(),
            message: format!("cannot read environment '{name}': {e}"),
        })?;
        Ok(Self {
            name: name.to_owned(),
            file: path.display().to_string(),
            text,
        })
    }

    /// Checks the overlay against `manifest` and applies it.
    pub fn apply(&self, manifest: &mut Manifest) -> Result<(), ManifestError> {
        let fail = |message: String| ManifestError {
            path: PathBuf::from(&self.file),
            message,
        };
        let raw: RawOverlay = toml::from_str(&self.text)
            .map_err(|e| fail(crate::manifest::describe_toml_error(&self.text, &e)))?;
        for (key, overlay) in raw.roles {
            let line = line_of(&self.text, key.span().start);
            let name = key.into_inner();
            let Some(role) = manifest.roles.get_mut(&name) else {
                return Err(fail(format!(
                    "line {line}: roles.{name}: no such role in {}",
                    manifest.path.display()
                )));
            };
            if let Some(instances) = overlay.instances {
                let line = line_of(&self.text, instances.span().start);
                set_instances(role, *instances.get_ref())
                    .map_err(|why| fail(format!("line {line}: roles.{name}.instances: {why}")))?;
            }
            for (key, value) in overlay.settings {
                let line = line_of(&self.text, key.span().start);
                let key = key.into_inner();
                set_setting(role, &key, value).map_err(|why| {
                    fail(format!("line {line}: roles.{name}.settings.{key}: {why}"))
                })?;
            }
        }
        Ok(())
    }
}

/// Changes made through the admin API since the deployment: instance counts
/// and setting values, by role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    /// Worker instance counts.
    #[serde(default)]
    pub instances: BTreeMap<String, u32>,
    /// Setting values.
    #[serde(default)]
    pub settings: BTreeMap<String, BTreeMap<String, String>>,
}

/// Why [`Overrides`] do not fit a manifest: the field (`roles.web.settings.colour`)
/// and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
#[non_exhaustive]
pub struct OverrideError {
    /// The field, as `roles.NAME` or `roles.NAME.instances` or
    /// `roles.NAME.settings.KEY`.
    pub field: String,
    /// What is wrong with it.
    pub why: String,
}

impl Overrides {
    /// Checks the overrides against `manifest` and applies them; errors name
    /// the field (`roles.web.settings.colour`).
    pub fn apply(&self, manifest: &mut Manifest) -> Result<(), OverrideError> {
        fn role<'m>(manifest: &'m mut Manifest, name: &str) -> Result<&'m mut Role, OverrideError> {
            manifest.roles.get_mut(name).ok_or_else(|| OverrideError {
                field: format!("roles.{name}"),
                why: "no such role".into(),
            })
        }
        for (name, count) in &self.instances {
            set_instances(role(manifest, name)?, *count).map_err(|why| OverrideError {
                field: format!("roles.{name}.instances"),
                why,
            })?;
        }
        for (name, settings) in &self.settings {
            let role = role(manifest, name)?;
            for (key, value) in settings {
                set_setting(role, key, value.clone()).map_err(|why| OverrideError {
                    field: format!("roles.{name}.settings.{key}"),
                    why,
                })?;
            }
        }
        Ok(())
    }
}

/// Why a web role's instances cannot change outside its manifest: what
/// they mean, and where they are changed.
pub(crate) const WEB_INSTANCES: &str = "a web role gets a fresh instance per request, and in a fabric a web role's instances is its number of hosts, set in weft.toml (change it with weft upgrade)";

/// Sets worker role `role`'s instance count, 1 to [`MAX_INSTANCES`]; a web
/// role has none to set.
pub(crate) fn set_instances(role: &mut Role, count: u32) -> Result<(), String> {
    let RoleByKind::Worker(worker) = &mut role.by_kind else {
        return Err(format!("applies to worker roles; {WEB_INSTANCES}"));
    };
    if !(1..=MAX_INSTANCES).contains(&count) {
        return Err(format!("must be 1 to {MAX_INSTANCES}, not {count}"));
    }
    worker.instances = count;
    Ok(())
}

fn set_setting(role: &mut Role, key: &str, value: String) -> Result<(), String> {
    match role.settings.get_mut(key) {
        Some(slot) => {
            *slot = value;
            Ok(())
        }
        None => Err(
            "not declared by the role: declare it, with a default, in its settings table in weft.toml"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
[service]
name = "shop"

[roles.web]
kind = "web"
component = "web.wasm"
listen = "127.0.0.1:8080"
[roles.web.settings]
greeting = "hi"

[roles.worker]
kind = "worker"
component = "worker.wasm"
"#;

    fn manifest() -> Manifest {
        Manifest::parse(Path::new("dir/weft.toml"), MANIFEST).unwrap()
    }

    fn overlay(text: &str) -> Environment {
        Environment {
            name: "prod".into(),
            file: "dir/weft.prod.toml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn an_overlay_sets_instances_and_declared_settings() {
        let mut m = manifest();
        overlay("[roles.worker]\ninstances = 4\n\n[roles.web.settings]\ngreeting = \"hola\"\n")
            .apply(&mut m)
            .unwrap();
        assert_eq!(m.roles["worker"].instances(), 4);
        assert_eq!(m.roles["web"].settings["greeting"], "hola");
    }

    #[test]
    fn overlay_errors_name_the_file_line_and_field() {
        let cases = [
            (
                "[roles.worker]\ninstances = 4\ncolour = 1\n",
                "dir/weft.prod.toml: line 3, column 1: unknown field `colour`",
            ),
            (
                "\n[roles.nope]\ninstances = 2\n",
                "dir/weft.prod.toml: line 2: roles.nope: no such role in dir/weft.toml",
            ),
            (
                "[roles.web]\ninstances = 2\n",
                "dir/weft.prod.toml: line 2: roles.web.instances: applies to worker roles",
            ),
            (
                "[roles.worker]\n\ninstances = 0\n",
                "dir/weft.prod.toml: line 3: roles.worker.instances: must be 1",
            ),
            (
                "[roles.web.settings]\ngreeting = \"x\"\ncolour = \"red\"\n",
                "dir/weft.prod.toml: line 3: roles.web.settings.colour: not declared",
            ),
            (
                "[service]\nname = \"other\"\n",
                "dir/weft.prod.toml: line 1, column 2: unknown field `service`",
            ),
        ];
        for (text, expected) in cases {
            let err = overlay(text)
                .apply(&mut manifest())
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(expected),
                "expected {expected:?} in {err:?}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn overrides_are_checked_like_an_overlay() {
        let mut m = manifest();
        let mut overrides = Overrides::default();
        overrides.instances.insert("worker".into(), 3);
        overrides
            .settings
            .insert("web".into(), [("greeting".into(), "yo".into())].into());
        overrides.apply(&mut m).unwrap();
        assert_eq!(m.roles["worker"].instances(), 3);
        assert_eq!(m.roles["web"].settings["greeting"], "yo");
        let mut bad = Overrides::default();
        bad.settings
            .insert("web".into(), [("colour".into(), "red".into())].into());
        let err = bad.apply(&mut manifest()).unwrap_err().to_string();
        assert!(
            err.starts_with("roles.web.settings.colour: not declared"),
            "{err}"
        );
        let mut bad = Overrides::default();
        bad.instances.insert("web".into(), 2);
        let err = bad.apply(&mut manifest()).unwrap_err().to_string();
        assert!(err.contains("applies to worker roles"), "{err}");
        assert!(
            err.ends_with("in a fabric a web role's instances is its number of hosts, set in weft.toml (change it with weft upgrade)"),
            "{err}"
        );
    }
}

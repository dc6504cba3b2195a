//! The settings change's pure part: a declared key set as the next
//! generation, anything else refused by name with nothing changed.

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
colour = "blue"

[roles.worker]
kind = "worker"
component = "worker.wasm"
"#;

fn record() -> DeploymentRecord {
    DeploymentRecord {
        source: DeploymentSource {
            manifest_file: "weft.toml".into(),
            manifest: MANIFEST.into(),
            environment: None,
            components: BTreeMap::from([
                ("web".to_owned(), Digest::of(b"web")),
                ("worker".to_owned(), Digest::of(b"worker")),
            ]),
        },
        overrides: Overrides::default(),
        generation: 4,
        local: None,
    }
}

fn pairs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn a_declared_setting_is_set_as_the_next_generation() {
    let changed = with_settings(record(), "shop", "web", &pairs(&[("greeting", "hello")])).unwrap();
    assert_eq!(changed.generation, 5);
    assert_eq!(
        changed.overrides.settings["web"],
        pairs(&[("greeting", "hello")])
    );
    let manifest = resolved(&changed.source, &changed.overrides).unwrap();
    assert_eq!(manifest.roles["web"].settings["greeting"], "hello");
    assert_eq!(manifest.roles["web"].settings["colour"], "blue");
    // A second change keeps the first.
    let again = with_settings(changed, "shop", "web", &pairs(&[("colour", "red")])).unwrap();
    assert_eq!(again.generation, 6);
    assert_eq!(
        again.overrides.settings["web"],
        pairs(&[("colour", "red"), ("greeting", "hello")])
    );
}

#[test]
fn an_undeclared_key_an_unknown_role_or_no_change_is_refused() {
    let undeclared = with_settings(record(), "shop", "web", &pairs(&[("size", "9")])).unwrap_err();
    assert!(
        matches!(undeclared, FabricError::Refused(_)),
        "{undeclared:?}"
    );
    assert!(
        undeclared
            .to_string()
            .starts_with("roles.web.settings.size: not declared by the role"),
        "{undeclared}"
    );
    assert!(!undeclared.to_string().contains('\n'));
    let role = with_settings(record(), "shop", "cron", &pairs(&[("greeting", "x")])).unwrap_err();
    assert_eq!(role.to_string(), "roles.cron: no such role");
    let same = with_settings(record(), "shop", "web", &pairs(&[("greeting", "hi")])).unwrap_err();
    assert_eq!(
        same.to_string(),
        "service shop role web has those settings already; nothing was written"
    );
    let none = with_settings(record(), "shop", "web", &BTreeMap::new()).unwrap_err();
    assert_eq!(none.to_string(), "no setting to change: give KEY=VALUE");
}

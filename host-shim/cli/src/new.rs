//! `weft new TEMPLATE NAME`: makes a service folder from one of the
//! templates embedded in the binary ([`templates`]), and `weft new --list`.
//!
//! Nothing is written unless everything checks out first: the template
//! exists, NAME's last part is a valid service name ([`names`]), Weft's
//! source root is found with the template's SDK in it (the new service's
//! build reads its `wit/` and `sdk/`), and NAME is not a folder with
//! something in it; then the folder is written whole or not at all
//! ([`write`]).

mod names;
mod templates;
mod write;

use crate::args::{NewArgs, NewService};
use anyhow::{Context as _, bail};
use std::ffi::OsString;
use std::path::PathBuf;
use templates::{Language, Placeholders, Template};

/// Weft's source root as this binary was built from it.
const BUILT_FROM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The files that show a folder is Weft's source root, whatever the
/// template; its language's SDK ([`Language::sdk_file`]) must be there too.
const ROOT_FILES: &[&str] = &["Cargo.toml", "wit/vmbus.wit", "sdk/rust/Cargo.toml"];

pub fn run(args: NewArgs) -> anyhow::Result<()> {
    // clap gives a service to make unless --list is set (args/new.rs).
    let Some(NewService { template, folder }) = args.service else {
        print!("{}", templates::listing());
        return Ok(());
    };
    let template = Template::find(&template).map_err(anyhow::Error::msg)?;
    let language = template.language();
    let name = names::service_name(&folder, language)?;
    let weft = weft_root(args.weft_dir, std::env::var_os("WEFT_DIR"), language)?;
    let values = Placeholders::new(&name, &weft);
    let rendered = template.render(&values).map_err(anyhow::Error::msg)?;
    write::make(&folder, &rendered)?;

    let shown = folder.display();
    println!("made {shown} from the template {}:", template.name);
    for (path, _) in &rendered {
        println!("  {shown}/{path}");
    }
    let here = std::env::current_dir()
        .and_then(|dir| dir.canonicalize())
        .ok();
    if here.is_some() && folder.canonicalize().ok() == here {
        println!("next: weft up");
    } else {
        println!("next: cd {shown} && weft up");
    }
    if let Some(needs) = template.needs(&values) {
        println!("{needs}");
    }
    Ok(())
}

/// Weft's source root: `--weft-dir`, else `$WEFT_DIR`, else the tree this
/// binary was built from; absolute, holding [`ROOT_FILES`] and the SDK of
/// the template's `language`, and a path safe to write unquoted.
fn weft_root(
    given: Option<PathBuf>,
    env: Option<OsString>,
    language: Option<Language>,
) -> anyhow::Result<String> {
    let (dir, from) = match (given, env) {
        (Some(dir), _) => (dir, "--weft-dir"),
        (None, Some(dir)) if !dir.is_empty() => (PathBuf::from(dir), "WEFT_DIR"),
        _ => (
            PathBuf::from(BUILT_FROM),
            "the source tree weft was built from",
        ),
    };
    let root = dir.canonicalize().with_context(|| {
        format!(
            "{} ({from}) is not Weft's source root: pass --weft-dir DIR",
            dir.display()
        )
    })?;
    let mut wanted = ROOT_FILES.to_vec();
    if let Some(sdk) = language.map(Language::sdk_file)
        && !wanted.contains(&sdk)
    {
        wanted.push(sdk);
    }
    let missing: Vec<&str> = wanted
        .into_iter()
        .filter(|file| !root.join(file).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} ({from}) is not Weft's source root with this template's SDK: it has no {}: pass --weft-dir DIR",
            dir.display(),
            missing.join(", ")
        );
    }
    // The path goes into TOML strings and shell command lines unquoted.
    let plain = root.to_str().filter(|text| {
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._+,:@=-".contains(&b))
    });
    match plain {
        Some(text) => Ok(text.to_owned()),
        None => bail!(
            "Weft's source root {} has characters other than A-Z a-z 0-9 / . _ + , : @ = -: pass --weft-dir DIR (a plain path to it, e.g. a symlink)",
            root.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A folder holding what marks Weft's source root, and the given SDK
    /// files.
    fn fake_root(folder: &Path, sdks: &[&str]) {
        for file in ROOT_FILES.iter().chain(sdks) {
            let file = folder.join(file);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, "").unwrap();
        }
    }

    #[test]
    fn the_weft_root_must_hold_its_files_and_the_templates_sdk() {
        let empty = tempfile::tempdir().unwrap();
        let refused = weft_root(Some(empty.path().into()), None, None)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("pass --weft-dir DIR"), "{refused}");
        assert!(refused.contains("(--weft-dir)"), "{refused}");
        assert!(
            refused.contains("no Cargo.toml, wit/vmbus.wit, sdk/rust/Cargo.toml"),
            "{refused}"
        );
        let refused = weft_root(None, Some(empty.path().into()), None)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("(WEFT_DIR)"), "{refused}");

        // A folder that is not there: the OS's reason is kept.
        let gone = empty.path().join("gone");
        let refused = format!("{:#}", weft_root(Some(gone), None, None).unwrap_err());
        assert!(refused.contains("pass --weft-dir DIR: "), "{refused}");
        assert!(refused.contains("No such file"), "{refused}");

        let root = empty.path().join("weft");
        fake_root(&root, &[]);
        let found = weft_root(None, Some(root.clone().into()), Some(Language::Rust)).unwrap();
        assert_eq!(Path::new(&found), root.canonicalize().unwrap());
        // Without the template's own SDK, refused, naming it.
        for language in [Language::Python, Language::JavaScript] {
            let refused = weft_root(Some(root.clone()), None, Some(language))
                .unwrap_err()
                .to_string();
            assert!(
                refused.ends_with(&format!(
                    "it has no {}: pass --weft-dir DIR",
                    language.sdk_file()
                )),
                "{refused}"
            );
        }
        fake_root(&root, &["sdk/python/weft/__init__.py"]);
        weft_root(Some(root.clone()), None, Some(Language::Python)).unwrap();
        // --weft-dir wins over WEFT_DIR.
        assert!(weft_root(Some(empty.path().into()), Some(root.into()), None).is_err());

        // Without either: the tree this binary was built from, absolute,
        // with every SDK.
        for language in [Language::Rust, Language::Python, Language::JavaScript] {
            let built_from = weft_root(None, None, Some(language)).unwrap();
            assert!(Path::new(&built_from).join("wit/vmbus.wit").is_file());
            assert!(!built_from.ends_with('/') && !built_from.contains(".."));
        }
    }

    /// The root goes unquoted into shell lines: only a plain path is taken.
    #[test]
    fn a_weft_root_with_shell_characters_is_refused() {
        let parent = tempfile::tempdir().unwrap();
        for odd in ["a b", "a'b", "a\"b", "a$b", "a;b", "a*b", "a\\b", "a\tb"] {
            let root = parent.path().join(odd);
            fake_root(&root, &[]);
            let refused = weft_root(Some(root), None, None).unwrap_err().to_string();
            assert!(
                refused.contains("characters other than"),
                "{odd:?}: {refused}"
            );
        }
        let root = parent.path().join("weft-1.0_b+c,d:e@f=g");
        fake_root(&root, &[]);
        weft_root(Some(root), None, None).unwrap();
    }

    /// Every template, made, holds a manifest weft accepts, naming the
    /// service after its folder and reading Weft's SDK from its root.
    #[test]
    fn every_template_makes_a_manifest_weft_accepts() {
        let parent = tempfile::tempdir().unwrap();
        for template in templates::EMBEDDED {
            let weft = weft_root(None, None, template.language()).unwrap();
            let folder = parent.path().join(format!("svc-{}", template.name));
            let name = names::service_name(&folder, template.language()).unwrap();
            let values = Placeholders::new(&name, &weft);
            write::make(&folder, &template.render(&values).unwrap()).unwrap();
            let manifest = weft_host::Manifest::load(&folder)
                .unwrap_or_else(|e| panic!("{}: {e}", template.name));
            assert_eq!(manifest.service, name, "{}", template.name);
            let text = std::fs::read_to_string(folder.join("weft.toml")).unwrap();
            assert!(!text.contains("{{"), "{}: {text}", template.name);
        }
    }
}

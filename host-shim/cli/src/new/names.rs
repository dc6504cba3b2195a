//! The name `weft new` gives a service: its folder's last part, checked as a
//! manifest checks a service's name and, for a Rust template (whose packages
//! are named after the service), as cargo checks a package's name.

use super::templates::Language;
use anyhow::bail;
use std::path::Path;

/// Names cargo refuses for a package (`cargo new` says why), or that clash
/// with a crate every Rust role's build has: Rust's keywords, cargo's build
/// folders (`deps`, `examples`, `build`, `incremental`), Rust's own
/// libraries, and the Rust SDK with the crates it depends on directly.
/// Compared with `-` read as `_`, as cargo compares crate names.
const NOT_FOR_RUST: &[&str] = &[
    // Rust's keywords, reserved ones included.
    "abstract",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
    // The folders of cargo's target directory.
    "deps",
    "examples",
    "build",
    "incremental",
    // Rust's own libraries.
    "alloc",
    "core",
    "proc_macro",
    "std",
    "test",
    // The Rust SDK (sdk/rust) and what it depends on.
    "weft_sdk",
    "wit_bindgen",
    "wstd",
    "wasip2",
];

/// The service's name: `folder`'s last part (for `.` or a path ending in
/// `..`, the last part of the folder it names), checked as a manifest checks
/// a service's name, and as cargo checks a package's for a Rust template.
pub fn service_name(folder: &Path, language: Option<Language>) -> anyhow::Result<String> {
    let named = match folder.file_name() {
        Some(last) => Path::new(last).to_owned(),
        // `.`, `..`, `/`: the folder's own name, if it has one.
        None => folder.canonicalize().unwrap_or_default(),
    };
    let Some(last) = named.file_name() else {
        bail!("'{}' does not end in a folder name", folder.display());
    };
    let Some(name) = last.to_str() else {
        bail!("'{}' is not UTF-8", folder.display());
    };
    weft_host::manifest::check_name(name)
        .map_err(|why| anyhow::anyhow!("service name '{name}' {why}"))?;
    if language == Some(Language::Rust) {
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            bail!("service name '{name}' must start with a letter: it names a Rust package");
        }
        if NOT_FOR_RUST.contains(&name.replace('-', "_").as_str()) {
            bail!(
                "service name '{name}' cannot name a Rust package: cargo reserves it, or the SDK's build already has a crate of that name"
            );
        }
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::new::templates::Template;

    fn name(path: &Path, language: Option<Language>) -> Result<String, String> {
        service_name(path, language).map_err(|e| e.to_string())
    }

    #[test]
    fn the_service_name_is_the_folders_last_part_checked_as_a_manifests() {
        let plain = |path: &str| name(Path::new(path), Some(Language::Python));
        assert_eq!(plain("svc").unwrap(), "svc");
        assert_eq!(plain("a/b/my-svc_2").unwrap(), "my-svc_2");
        assert_eq!(plain("a/b/svc/.").unwrap(), "svc");
        assert_eq!(plain("1svc").unwrap(), "1svc");
        assert_eq!(plain("build").unwrap(), "build");
        assert!(plain("My").unwrap_err().contains("'My' may hold only"));
        assert!(plain("has space").is_err());
        assert!(plain("-x").is_err());
        assert!(plain(&"x".repeat(65)).is_err());
        assert!(
            plain("/")
                .unwrap_err()
                .contains("does not end in a folder name")
        );
    }

    /// `.` and a path ending in `..` name the folder they are: what
    /// `weft new rust-web .` needs.
    #[test]
    fn a_path_without_a_last_name_is_named_after_the_folder_it_is() {
        let parent = tempfile::tempdir().unwrap();
        let svc = parent.path().join("my-svc");
        std::fs::create_dir_all(svc.join("inner")).unwrap();
        assert_eq!(name(&svc.join("inner/.."), None).unwrap(), "my-svc");
        assert_eq!(name(&svc.join("inner/."), None).unwrap(), "inner");
        // `..` of a folder that does not exist names nothing.
        assert!(
            name(&svc.join("missing/.."), None)
                .unwrap_err()
                .contains("does not end in a folder name")
        );
    }

    /// The Rust rules hang on the template's language, not on which
    /// placeholder its Cargo.toml uses: rust-worker names its package
    /// `{{name}}`, rust-web `{{name}}` and its output `{{crate}}`.
    #[test]
    fn a_rust_template_takes_only_a_name_cargo_takes() {
        for template in ["rust-worker", "rust-web", "rust-web-p3", "pipeline"] {
            let language = Template::find(template).unwrap().language();
            let rust = |path: &str| name(Path::new(path), language);
            assert!(
                rust("1svc")
                    .unwrap_err()
                    .contains("must start with a letter"),
                "{template}"
            );
            for reserved in [
                "build",
                "deps",
                "examples",
                "incremental",
                "test",
                "std",
                "fn",
            ] {
                let refused = rust(reserved).unwrap_err();
                assert!(refused.contains("cannot name a Rust package"), "{refused}");
            }
            for clash in ["weft-sdk", "weft_sdk", "wstd", "wit-bindgen", "wasip2"] {
                assert!(rust(clash).is_err(), "{template}: {clash}");
            }
            assert_eq!(rust("my-svc").unwrap(), "my-svc");
            assert_eq!(rust("builder").unwrap(), "builder");
        }
    }
}

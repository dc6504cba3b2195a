//! Embeds every template folder under the repository's `templates/` into the
//! `weft` binary, for `weft new`: writes `$OUT_DIR/templates.rs`, a table of
//! each template's files as `include_bytes!`, so the binary needs no source
//! tree to make a service (only to build one).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The `expect` of a write to a `String`, which cannot fail.
const TO_STRING: &str = "writing to a String";

/// Folders a template's own trial builds leave behind (as are `*.wasm`
/// files), and files editors and file managers leave; never part of it.
const SKIPPED: &[&str] = &["target", "node_modules", "__pycache__", ".git", ".DS_Store"];

/// Endings of files editors leave beside the ones they edit (vim's swap
/// files, backups), and of built components.
const SKIPPED_ENDINGS: &[&str] = &[".swp", ".swo", "~", ".wasm"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let templates = manifest_dir.join("../../templates");
    // A folder here makes cargo rerun this script when anything under it
    // changes, a template added or removed included.
    println!("cargo::rerun-if-changed={}", templates.display());
    let templates = templates
        .canonicalize()
        .unwrap_or_else(|e| panic!("weft new's templates folder {}: {e}", templates.display()));

    let mut folders: Vec<PathBuf> = read_dir(&templates)
        .into_iter()
        .filter(|path| file_type(path).is_dir() && !skipped(path))
        .collect();
    folders.sort();

    let mut out = String::from("/// Every template folder under `templates/`, by name.\n");
    out.push_str("pub static EMBEDDED: &[Template] = &[\n");
    for folder in &folders {
        let mut files = Vec::new();
        collect(folder, &mut files);
        files.sort();
        let name = utf8(folder.file_name().map(Path::new).unwrap_or(folder));
        writeln!(out, "    Template {{ name: {name:?}, files: &[").expect(TO_STRING);
        for file in &files {
            let relative = file.strip_prefix(folder).expect("found under the folder");
            let relative: Vec<&str> = relative
                .components()
                .map(|c| utf8(Path::new(c.as_os_str())))
                .collect();
            let relative = relative.join("/");
            let absolute = utf8(file);
            writeln!(
                out,
                "        TemplateFile {{ path: {relative:?}, bytes: include_bytes!({absolute:?}) }},"
            )
            .expect(TO_STRING);
        }
        out.push_str("    ] },\n");
    }
    out.push_str("];\n");

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    std::fs::write(out_dir.join("templates.rs"), out).expect("writing templates.rs");
}

/// Every file under `folder`, recursively, but for what [`skipped`] says
/// and symlinks (a template is copied as plain files and folders; a link
/// could reach outside it).
fn collect(folder: &Path, files: &mut Vec<PathBuf>) {
    for path in read_dir(folder) {
        if skipped(&path) {
            continue;
        }
        let kind = file_type(&path);
        if kind.is_dir() {
            collect(&path, files);
        } else if kind.is_file() {
            files.push(path);
        }
    }
}

/// What `path` itself is: a symlink is neither a folder nor a file here.
fn file_type(path: &Path) -> std::fs::FileType {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .file_type()
}

/// Whether `path` is named in [`SKIPPED`] or ends as [`SKIPPED_ENDINGS`] say.
fn skipped(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    SKIPPED.contains(&name) || SKIPPED_ENDINGS.iter().any(|end| name.ends_with(end))
}

fn read_dir(folder: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("reading {}: {e}", folder.display()))
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("reading {}: {e}", folder.display()))
                .path()
        })
        .collect()
}

/// Template paths become string literals: they must be UTF-8.
fn utf8(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("template path is not UTF-8: {}", path.display()))
}

//! Runs the build commands a manifest gives its roles, each distinct command
//! once, in the manifest's folder.
//!
//! Before running one, it checks that the command's program is on `PATH`
//! (and, for a cargo build for `wasm32-wasip2`, that rustup has that
//! target), so a missing toolchain is one line saying how to get it rather
//! than the shell's "not found" in the middle of a build's output.

use crate::manifest::Manifest;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// The Rust target every Rust role is built for.
const WASM_TARGET: &str = "wasm32-wasip2";

/// The componentize-py that Python roles (`sdk/python`) are built and
/// tested with; a build-time tool whose generated bindings change between
/// releases, so the hint for a missing one names this version.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

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
    /// The command's program is not on `PATH`.
    #[error(
        "{}: role '{role}': its build needs `{tool}`, which is not on PATH: {hint}",
        manifest.display()
    )]
    MissingTool {
        /// The manifest file.
        manifest: PathBuf,
        /// The role whose command it was.
        role: String,
        /// The program the command runs.
        tool: String,
        /// How to get it, one line.
        hint: String,
    },
    /// A cargo build for `wasm32-wasip2`, and rustup lacks that target.
    #[error(
        "{}: role '{role}': the Rust target {WASM_TARGET} is not installed: run `rustup target add {WASM_TARGET}`",
        manifest.display()
    )]
    MissingRustTarget {
        /// The manifest file.
        manifest: PathBuf,
        /// The role whose command it was.
        role: String,
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
    let path = std::env::var_os("PATH");
    let mut done: Vec<&str> = Vec::new();
    for (name, role) in &manifest.roles {
        let Some(command) = role.build.as_deref() else {
            continue;
        };
        if done.contains(&command) {
            continue;
        }
        done.push(command);
        check_tools(command, manifest.folder(), path.as_deref())
            .map_err(|missing| missing.into_error(manifest.path.clone(), name.clone()))?;
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

/// What [`check_tools`] found missing.
#[derive(Debug, PartialEq, Eq)]
enum Missing {
    Tool { tool: String, hint: String },
    RustTarget,
}

impl Missing {
    fn into_error(self, manifest: PathBuf, role: String) -> BuildError {
        match self {
            Missing::Tool { tool, hint } => BuildError::MissingTool {
                manifest,
                role,
                tool,
                hint,
            },
            Missing::RustTarget => BuildError::MissingRustTarget { manifest, role },
        }
    }
}

/// Checks that `command`'s program is on `path` and, when it is a cargo
/// build for `wasm32-wasip2` and rustup is there too, that rustup (asked in
/// `folder`, where a toolchain file may choose the toolchain) has the target.
/// A command whose program cannot be told (a shell builtin first, a path, a
/// quote) is left for the shell to judge.
fn check_tools(command: &str, folder: &Path, path: Option<&OsStr>) -> Result<(), Missing> {
    let Some(program) = program(command) else {
        return Ok(());
    };
    if find_on_path(program, path).is_none() {
        return Err(Missing::Tool {
            tool: program.to_owned(),
            hint: how_to_get(program, command),
        });
    }
    if program == "cargo" && command.contains(WASM_TARGET) {
        let Some(rustup) = find_on_path("rustup", path) else {
            return Ok(());
        };
        // Only a clear answer counts: if rustup itself fails, cargo's own
        // error will say more than a guess here.
        let installed = Command::new(rustup)
            .args(["target", "list", "--installed"])
            .current_dir(folder)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        if let Ok(output) = installed
            && output.status.success()
            && !String::from_utf8_lossy(&output.stdout)
                .lines()
                .any(|line| line.trim() == WASM_TARGET)
        {
            return Err(Missing::RustTarget);
        }
    }
    Ok(())
}

/// The program a shell command line runs: its first word after any
/// `NAME=value` words. `None` when that cannot be told without a shell: a
/// quote, `$` or other shell syntax in it, a builtin or keyword (`cd`,
/// `if`), a path (`./build.sh`), or a `PATH=` assignment before it.
fn program(command: &str) -> Option<&str> {
    const SHELL_WORDS: &[&str] = &[
        "cd", "export", "set", "unset", ".", "source", "exec", "eval", "if", "for", "while",
        "until", "case", "test", "[", "true", "false", "command", "umask", "!", "{", "(",
    ];
    let mut words = command.split_whitespace();
    let program = loop {
        let word = words.next()?;
        match word.split_once('=') {
            Some((name, _)) if is_variable_name(name) => {
                if name == "PATH" || word.contains(['"', '\'', '$', '`']) {
                    return None;
                }
            }
            _ => break word,
        }
    };
    let plain = program
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b));
    (plain && !SHELL_WORDS.contains(&program)).then_some(program)
}

/// A shell variable's name: a letter or `_`, then letters, digits or `_`.
fn is_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The executable file `program` names in one of `path`'s folders (a
/// `PATH`-like list, e.g. `std::env::var_os("PATH")`), as a shell finds it;
/// `None` when no folder has one, or there is no `path`.
pub fn find_on_path(program: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::split_paths(path?)
        .filter(|folder| !folder.as_os_str().is_empty())
        .map(|folder| folder.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// How to get `program`, one line; `command` may say where Weft's JS SDK is.
fn how_to_get(program: &str, command: &str) -> String {
    match program {
        "cargo" => {
            format!("install Rust (https://rustup.rs), then `rustup target add {WASM_TARGET}`")
        }
        "componentize-py" => {
            format!("run `pip install componentize-py=={COMPONENTIZE_PY_VERSION}`")
        }
        "node" | "npm" => {
            // The JS build line runs `node WEFT/sdk/js/build.mjs`.
            let sdk = command
                .split_whitespace()
                .find_map(|word| {
                    word.find("/sdk/js/")
                        .map(|at| &word[..at + "/sdk/js".len()])
                })
                .unwrap_or("<weft>/sdk/js");
            format!("install Node.js 20 or later, then `npm ci --prefix {sdk}`")
        }
        _ => "install it, or change the role's `build` line".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn the_program_is_the_first_word_after_assignments() {
        let cases = [
            ("cargo build --release", Some("cargo")),
            (
                "  RUSTFLAGS=-Copt-level=s CC=clang cargo build",
                Some("cargo"),
            ),
            (
                "componentize-py -d /w/wit componentize app",
                Some("componentize-py"),
            ),
            ("node /w/sdk/js/build.mjs web app.js app.wasm", Some("node")),
            ("python3.12 -m build", Some("python3.12")),
            ("cd web && cargo build", None),
            ("./build.sh", None),
            ("/usr/bin/make", None),
            ("PATH=/opt/bin:$PATH cargo build", None),
            ("X=\"a b\" cargo build", None),
            ("$CARGO build", None),
            ("\"cargo\" build", None),
            ("a==b cargo", Some("cargo")),
            ("1X=2 cargo", None),
            ("X=1", None),
            ("", None),
        ];
        for (command, expected) in cases {
            assert_eq!(program(command), expected, "{command:?}");
        }
    }

    /// A PATH of temp folders: a tool is found only as an executable file
    /// in one of them.
    #[test]
    fn tools_are_looked_up_on_the_path_given() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let path = std::env::join_paths([first.path(), second.path()]).unwrap();
        let path = Some(path.as_os_str());
        assert_eq!(find_on_path("mytool", path), None);

        let tool = second.path().join("mytool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        assert_eq!(find_on_path("mytool", path), None, "not executable yet");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_on_path("mytool", path), Some(tool));
        std::fs::create_dir(first.path().join("adir")).unwrap();
        assert_eq!(find_on_path("adir", path), None, "a folder is no tool");
        assert_eq!(find_on_path("mytool", None), None);
    }

    /// Puts an executable shell script `name` running `script` in
    /// `folder`. A child shell writes it under a temp name and renames it
    /// into place: were it written here, a test thread spawning a process
    /// meanwhile could leave a child holding the file open for writing, and
    /// running the script would fail at random with ETXTBSY ("text file
    /// busy"); the rename makes replacing a script atomic.
    fn executable(folder: &Path, name: &str, script: &str) {
        let file = folder.join(name);
        let status = Command::new("sh")
            .args([
                "-c",
                r#"printf '#!/bin/sh\n%s\n' "$1" > "$2.tmp" && chmod 755 "$2.tmp" && mv "$2.tmp" "$2""#,
                "sh",
            ])
            .arg(script)
            .arg(&file)
            .status()
            .unwrap();
        assert!(status.success(), "writing {}", file.display());
    }

    #[test]
    fn a_missing_tool_is_named_with_how_to_get_it() {
        let bin = tempfile::tempdir().unwrap();
        let path = Some(bin.path().as_os_str());
        let folder = bin.path();
        let missing = |command| match check_tools(command, folder, path) {
            Err(Missing::Tool { tool, hint }) => (tool, hint),
            other => panic!("{command}: {other:?}"),
        };
        let (tool, hint) = missing("cargo build --release --target wasm32-wasip2");
        assert_eq!(tool, "cargo");
        assert!(hint.contains("rustup target add wasm32-wasip2"), "{hint}");
        let (_, hint) = missing("componentize-py -d /w/wit componentize app -o app.wasm");
        assert_eq!(
            hint,
            format!("run `pip install componentize-py=={COMPONENTIZE_PY_VERSION}`")
        );
        let (_, hint) = missing("node /opt/weft/sdk/js/build.mjs web app.js app.wasm");
        assert!(
            hint.ends_with("`npm ci --prefix /opt/weft/sdk/js`"),
            "{hint}"
        );
        let (tool, hint) = missing("npm run build");
        assert_eq!(tool, "npm");
        assert!(hint.contains("Node.js 20 or later"), "{hint}");
        assert!(missing("make wasm").1.contains("install it"));
        // What cannot be told is left to the shell.
        assert_eq!(check_tools("cd x && make", folder, path), Ok(()));

        executable(bin.path(), "make", "exit 0");
        assert_eq!(check_tools("make wasm", folder, path), Ok(()));
    }

    /// rustup is asked which targets it has only for a cargo build for
    /// wasm32-wasip2, and only its clear answer counts.
    #[test]
    fn a_missing_rust_target_is_named_when_rustup_says_so() {
        let bin = tempfile::tempdir().unwrap();
        let path = Some(bin.path().as_os_str());
        let folder = bin.path();
        let build = "cargo build --release --target wasm32-wasip2 --target-dir target";
        executable(bin.path(), "cargo", "exit 0");
        // No rustup: nothing to ask.
        assert_eq!(check_tools(build, folder, path), Ok(()));

        executable(bin.path(), "rustup", "echo x86_64-unknown-linux-gnu");
        assert_eq!(check_tools(build, folder, path), Err(Missing::RustTarget));
        assert_eq!(check_tools("cargo build --release", folder, path), Ok(()));

        executable(
            bin.path(),
            "rustup",
            "printf 'x86_64-unknown-linux-gnu\\nwasm32-wasip2\\n'",
        );
        assert_eq!(check_tools(build, folder, path), Ok(()));
        executable(bin.path(), "rustup", "exit 1");
        assert_eq!(check_tools(build, folder, path), Ok(()));
    }

    #[test]
    fn the_errors_are_one_line() {
        let manifest = PathBuf::from("svc/weft.toml");
        let errors = [
            Missing::Tool {
                tool: "cargo".into(),
                hint: how_to_get("cargo", "cargo build"),
            }
            .into_error(manifest.clone(), "web".into()),
            Missing::RustTarget.into_error(manifest, "web".into()),
        ];
        for error in errors {
            let text = error.to_string();
            assert!(!text.contains('\n'), "{text}");
            assert!(text.starts_with("svc/weft.toml: role 'web': "), "{text}");
        }
    }
}

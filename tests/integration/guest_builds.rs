//! The Python and JavaScript guests of the tests, built with their real tool
//! chains (componentize-py; node and the JS SDK's `build.mjs`) once per test
//! run and shared by every test that asks for them.
//!
//! Each component lands in `CARGO_TARGET_TMPDIR/polyglot/<hash>/`, where the
//! hash covers every input of its build (the app's folder, the SDK, `wit/`,
//! the tool's version), so a run with nothing changed builds nothing. A
//! missing tool fails the test with what to install: `tests/run.sh`
//! installs them, and a polyglot test that skipped would prove nothing.

use crate::support::{cache_dir, on_path, weft_command};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Python test worker (`tests/guests/py-worker`), whose setting `mode`
/// picks what it does: `echo`, `raise` or `ungranted`.
pub fn py_worker() -> &'static str {
    static BUILT: OnceLock<Result<String, String>> = OnceLock::new();
    shared(
        &BUILT,
        &Guest::python("py-worker", "tests/guests/py-worker", Kind::Worker),
    )
}

/// The pipeline's worker role in Python (`examples/pipeline/worker-py`).
pub fn pipeline_worker_py() -> &'static str {
    static BUILT: OnceLock<Result<String, String>> = OnceLock::new();
    shared(
        &BUILT,
        &Guest::python(
            "pipeline-worker-py",
            "examples/pipeline/worker-py",
            Kind::Worker,
        ),
    )
}

/// The pipeline's web role in JavaScript (`examples/pipeline/web-js`).
pub fn pipeline_web_js() -> &'static str {
    static BUILT: OnceLock<Result<String, String>> = OnceLock::new();
    shared(
        &BUILT,
        &Guest::js("pipeline-web-js", "examples/pipeline/web-js", Kind::Web),
    )
}

/// Weft's source root.
pub fn weft_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the source root exists")
}

/// The component of `guest`, built on first use; later callers (and
/// callers racing the first) get the same path, or the same failure.
fn shared(cell: &'static OnceLock<Result<String, String>>, guest: &Guest) -> &'static str {
    match cell.get_or_init(|| guest.build()) {
        Ok(path) => path,
        Err(why) => panic!("{why}"),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Web,
    Worker,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Web => "web",
            Kind::Worker => "worker",
        }
    }
}

#[derive(Clone, Copy)]
enum Language {
    Python,
    Js,
}

/// One guest to build: its name, its folder (relative to the source root),
/// its language and kind.
struct Guest {
    name: &'static str,
    folder: &'static str,
    language: Language,
    kind: Kind,
}

impl Guest {
    fn python(name: &'static str, folder: &'static str, kind: Kind) -> Self {
        Self {
            name,
            folder,
            language: Language::Python,
            kind,
        }
    }

    fn js(name: &'static str, folder: &'static str, kind: Kind) -> Self {
        Self {
            name,
            folder,
            language: Language::Js,
            kind,
        }
    }

    /// Builds the component unless a build of the same inputs exists.
    fn build(&self) -> Result<String, String> {
        let root = weft_root();
        let app = root.join(self.folder);
        if !app.is_dir() {
            return Err(format!("{}: the guest's folder is missing", app.display()));
        }
        let (mut command, inputs, tool) = match self.language {
            Language::Python => self.python_command(&root)?,
            Language::Js => self.js_command(&root)?,
        };
        let digest = digest_of(&root, &inputs, &tool)?;
        let folder = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("polyglot")
            .join(&digest[..16]);
        let wasm = folder.join(format!("{}.wasm", self.name));
        if !wasm.is_file() {
            self.run_build(&mut command, &app, &folder, &wasm)?;
            self.forget_older_builds(&folder);
        }
        self.precompile(&wasm)?;
        Ok(wasm.display().to_string())
    }

    /// Runs the build `command` (its output path added last) in `app`,
    /// into `wasm` in `folder`.
    fn run_build(
        &self,
        command: &mut Command,
        app: &Path,
        folder: &Path,
        wasm: &Path,
    ) -> Result<(), String> {
        std::fs::create_dir_all(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        // Built beside its final name, then renamed: another test process
        // building the same inputs at once never sees half a file.
        let partial = folder.join(format!("{}.wasm.{}.partial", self.name, std::process::id()));
        let output = command
            .arg(&partial)
            .current_dir(app)
            .output()
            .map_err(|e| format!("cannot run the build of {}: {e}", self.name))?;
        if !output.status.success() || !partial.is_file() {
            return Err(format!(
                "building {} ({}) failed ({}): {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.name,
                self.folder,
                output.status,
                command,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
            ));
        }
        std::fs::rename(&partial, wasm).map_err(|e| format!("{}: {e}", wasm.display()))?;
        Ok(())
    }

    /// Deletes this guest's builds of other inputs (~18 MB each), so edits
    /// do not pile them up. Folders stay: another guest may be building
    /// into one this moment.
    fn forget_older_builds(&self, current: &Path) {
        let Some(parent) = current.parent() else {
            return;
        };
        let Ok(folders) = std::fs::read_dir(parent) else {
            return;
        };
        for folder in folders.filter_map(Result::ok).map(|e| e.path()) {
            if folder == current {
                continue;
            }
            let _ = std::fs::remove_file(folder.join(format!("{}.wasm", self.name)));
        }
    }

    /// Compiles `wasm` into the tests' shared component cache with `weft
    /// check`, which has no deadline: a Python or JS component takes a
    /// debug `weft` tens of seconds to compile, and two tests' hosts
    /// compiling it at once, each against its start-up deadline, would
    /// both time out on a busy machine.
    fn precompile(&self, wasm: &Path) -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let listen = match self.kind {
            Kind::Web => "listen = \"127.0.0.1:0\"",
            Kind::Worker => "",
        };
        let manifest = format!(
            "[service]\nname = \"precompile\"\n\n[roles.{}]\nkind = \"{}\"\ncomponent = {:?}\n{listen}\n",
            self.kind.name(),
            self.kind.name(),
            wasm.display().to_string(),
        );
        std::fs::write(dir.path().join("weft.toml"), manifest).map_err(|e| e.to_string())?;
        let output = weft_command()
            .args(["check", "--no-build", "--cache-dir"])
            .arg(cache_dir())
            .arg(dir.path())
            .env("WEFT_LOG", "warn")
            .output()
            .map_err(|e| format!("cannot run weft check: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "weft check refused {} ({}): {}{}",
                self.name,
                wasm.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
            ));
        }
        Ok(())
    }

    /// `componentize-py ... -o` (the output is added last), its inputs and
    /// the tool's version.
    fn python_command(&self, root: &Path) -> Result<(Command, Vec<PathBuf>, String), String> {
        let Some(tool) = on_path("componentize-py") else {
            return Err(format!(
                "componentize-py is not on PATH: the Python guests need it. Install it with \
                 `pip install componentize-py=={}` (tests/run.sh does)",
                weft_host::builder::COMPONENTIZE_PY_VERSION
            ));
        };
        let version = Command::new(&tool)
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
        let mut command = Command::new(tool);
        command
            .arg("-d")
            .arg(root.join("wit"))
            .args([
                "-w",
                &format!("weft:vmbus/{}-role-with-hooks", self.kind.name()),
            ])
            .arg("componentize")
            .arg("-p")
            .arg(root.join("sdk/python"))
            .args(["-p", ".", "app", "-o"]);
        let inputs = vec![
            root.join(self.folder),
            root.join("sdk/python"),
            root.join("wit"),
        ];
        Ok((
            command,
            inputs,
            String::from_utf8_lossy(&version.stdout).into_owned(),
        ))
    }

    /// `node sdk/js/build.mjs KIND app.js` (the output is added last), its
    /// inputs and node's version.
    fn js_command(&self, root: &Path) -> Result<(Command, Vec<PathBuf>, String), String> {
        let Some(node) = on_path("node") else {
            return Err(
                "node is not on PATH: the JavaScript guests need Node.js 20 or later \
                 (`apt-get install nodejs npm`), then `npm ci --prefix sdk/js` (tests/run.sh \
                 does)"
                    .to_owned(),
            );
        };
        let sdk = root.join("sdk/js");
        if !sdk.join("node_modules").is_dir() {
            return Err(format!(
                "{}/node_modules is missing: the JavaScript guests are built with the SDK's \
                 dependencies. Run `npm ci --prefix sdk/js` in {} (tests/run.sh does)",
                sdk.display(),
                root.display()
            ));
        }
        let version = Command::new(&node)
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", node.display()))?;
        let mut command = Command::new(node);
        command
            .arg(sdk.join("build.mjs"))
            .args([self.kind.name(), "app.js"]);
        let inputs = vec![
            root.join(self.folder),
            sdk.join("src"),
            sdk.join("build.mjs"),
            sdk.join("package-lock.json"),
            root.join("wit"),
        ];
        Ok((
            command,
            inputs,
            String::from_utf8_lossy(&version.stdout).into_owned(),
        ))
    }
}

/// SHA-256 over `tool` and every file under `inputs` (names relative to
/// `root`, then contents), in a stable order, in hex.
fn digest_of(root: &Path, inputs: &[PathBuf], tool: &str) -> Result<String, String> {
    let mut files = Vec::new();
    for input in inputs {
        collect(input, &mut files).map_err(|e| format!("{}: {e}", input.display()))?;
    }
    files.sort();
    let mut hasher = Sha256::new();
    hasher.update(tool.as_bytes());
    for file in files {
        let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let name = file.strip_prefix(root).unwrap_or(&file);
        hasher.update(name.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Every source file under `path` (or `path` itself), leaving out what
/// builds and runs leave behind.
fn collect(path: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_file() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let generated = matches!(
            name.as_ref(),
            "__pycache__" | "node_modules" | "target" | "state" | ".pytest_cache"
        ) || name.ends_with(".wasm")
            || name.ends_with(".pyc");
        if generated {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

//! `weft new`: every template it lists becomes a service folder that `weft
//! up` builds (with the template's own build line, not `--no-build`) and
//! runs: web templates greet and echo, worker templates drain a queue into
//! a bucket, the pipeline template does a job. `weft new` refuses a folder
//! that holds something, and a role whose build tool is missing fails
//! `weft up` with one line naming the tool.
//!
//! The Rust templates share one cargo target folder (each template's
//! `target` is a link to it), so their dependencies compile once per run;
//! components are compiled once into the shared cache.

use crate::guest_builds::weft_root;
use crate::hosting::{Host, token_file};
use crate::support::{Weft, cache_dir, error_line, eventually, http, on_path, weft_command};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// Every template `weft new` offers.
const TEMPLATES: [&str; 8] = [
    "js-web",
    "js-worker",
    "pipeline",
    "python-web",
    "python-worker",
    "rust-web",
    "rust-web-p3",
    "rust-worker",
];

/// `weft new ARGS` run in `dir`, with this checkout as the Weft source.
fn weft_new(dir: &Path, args: &[&str]) -> Output {
    let mut command = weft_command();
    command.arg("new").args(args);
    if !args.contains(&"--list") {
        command.arg("--weft-dir").arg(weft_root());
    }
    command
        .current_dir(dir)
        .env("WEFT_LOG", "warn")
        .output()
        .unwrap()
}

/// A service folder `dir/name` made from `template`, listening on port 0,
/// its cargo target (if it has one) the run's shared one.
fn new_service(dir: &Path, template: &str, name: &str) -> PathBuf {
    let made = weft_new(dir, &[template, name]);
    assert!(
        made.status.success(),
        "weft new {template} {name}: {}{}",
        String::from_utf8_lossy(&made.stdout),
        String::from_utf8_lossy(&made.stderr)
    );
    let folder = dir.join(name);
    let manifest = folder.join("weft.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(
        !text.contains("{{"),
        "{template}: a placeholder is left:\n{text}"
    );
    let text: String = text
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("listen =") {
                "listen = \"127.0.0.1:0\"".to_owned()
            } else {
                line.to_owned()
            }
        })
        .map(|line| line + "\n")
        .collect();
    std::fs::write(&manifest, text).unwrap();
    if folder.join("Cargo.toml").is_file() {
        let shared = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("templates-target");
        std::fs::create_dir_all(&shared).unwrap();
        std::os::unix::fs::symlink(&shared, folder.join("target")).unwrap();
    }
    folder
}

/// The folder's manifest, parsed.
fn manifest(folder: &Path) -> toml::Table {
    let text = std::fs::read_to_string(folder.join("weft.toml")).unwrap();
    text.parse().unwrap()
}

/// The roles of `kind` in the folder's manifest, with their tables.
fn roles(folder: &Path, kind: &str) -> Vec<(String, toml::Table)> {
    manifest(folder)["roles"]
        .as_table()
        .unwrap()
        .iter()
        .filter(|(_, role)| role["kind"].as_str() == Some(kind))
        .map(|(name, role)| (name.clone(), role.as_table().unwrap().clone()))
        .collect()
}

/// `weft up` in `folder` with its build, the shared compile cache and the
/// test token; the service's name with the running host.
fn up_building(folder: &Path) -> (String, Host) {
    let token = token_file(folder);
    let cache = cache_dir().display().to_string();
    let state = folder.join("state");
    // Builds and compiles run before `ready`: give them minutes.
    let weft = Weft::start_within(
        &[
            "up",
            "--cache-dir",
            &cache,
            "--state-dir",
            state.to_str().unwrap(),
            "--token-file",
            token.to_str().unwrap(),
            folder.to_str().unwrap(),
        ],
        Duration::from_secs(600),
    )
    .unwrap();
    let admin = weft
        .admin
        .clone()
        .expect("weft up announces its admin address");
    let service = manifest(folder)["service"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let host = Host {
        weft,
        token_file: token,
        admin,
    };
    (service, host)
}

/// Makes, starts and checks each of `templates` (at once, each its own
/// `weft up`), naming each service after its template.
async fn exercise(templates: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let folders: Vec<PathBuf> = templates
        .iter()
        .map(|template| new_service(dir.path(), template, &format!("t-{template}")))
        .collect();
    let hosts: Vec<(String, Host)> = std::thread::scope(|scope| {
        let started: Vec<_> = folders
            .iter()
            .map(|folder| scope.spawn(|| up_building(folder)))
            .collect();
        started
            .into_iter()
            .map(|up| up.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for ((template, folder), (service, host)) in templates.iter().zip(&folders).zip(&hosts) {
        match *template {
            "pipeline" => pipeline_does_a_job(host).await,
            _ if template.contains("-web") => web_greets_and_echoes(host, service).await,
            _ => worker_drains_its_queue(folder, host, service).await,
        }
    }
}

/// `GET /` greets the service by name; `POST /echo` answers its body.
async fn web_greets_and_echoes(host: &Host, name: &str) {
    let web = host.weft.url("web");
    let hello = http("GET", &format!("{web}/"), "").await.unwrap();
    assert_eq!(
        (hello.status, hello.body.trim_end()),
        (200, format!("Hello from {name}!").as_str()),
        "{name}: {hello:?}"
    );
    let text = "echo me: ünïcode ✓\nand a second line";
    let echo = http("POST", &format!("{web}/echo"), text).await.unwrap();
    assert_eq!((echo.status, echo.body.as_str()), (200, text), "{name}");
}

/// Five messages sent to the worker's queue are all taken, and the bucket
/// holds a result under each one's id.
async fn worker_drains_its_queue(folder: &Path, host: &Host, service: &str) {
    let workers = roles(folder, "worker");
    assert_eq!(workers.len(), 1, "{service}: {workers:?}");
    let role = &workers[0].1;
    let queue = role["queues"][0].as_str().unwrap();
    let bucket = role["buckets"][0].as_str().unwrap();
    let cli = |args: &[&str]| {
        let (ok, stdout, stderr) = host.cli(args);
        assert!(ok, "weft {args:?}: {stdout}{stderr}");
        stdout
    };
    let mut sent = BTreeSet::new();
    for n in 1..=5 {
        let text = format!("message {n} of five from the test");
        let id = cli(&["queue", "send", service, queue, &text]);
        sent.insert(id.trim().to_owned());
    }
    eventually(
        Duration::from_secs(60),
        "the worker to drain its queue",
        || async {
            let waiting = cli(&["queue", "peek", service, queue]);
            let keys: BTreeSet<String> = cli(&["bucket", "keys", service, bucket])
                .lines()
                .map(str::to_owned)
                .collect();
            (waiting.is_empty() && keys == sent).then_some(())
        },
    )
    .await;
    assert_eq!(
        cli(&["queue", "peek", service, &format!("{queue}-poison")]),
        "",
        "{service}"
    );
}

/// A job posted to the web role is counted by the worker.
async fn pipeline_does_a_job(host: &Host) {
    let web = host.weft.url("web");
    let accepted = http("POST", &format!("{web}/jobs"), "one two three")
        .await
        .unwrap();
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let job: serde_json::Value = serde_json::from_str(&accepted.body).unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["status"], "pending", "{job}");
    let url = format!("{web}/jobs/{id}");
    let done = eventually(Duration::from_secs(60), "the job to be done", || {
        let url = url.clone();
        async move {
            let reply = http("GET", &url, "").await.ok()?;
            let value: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
            (value["status"] == "done").then_some(value)
        }
    })
    .await;
    assert_eq!(
        (done["id"].as_str(), done["words"].as_u64()),
        (Some(id.as_str()), Some(3)),
        "{done}"
    );
}

#[test]
fn weft_new_lists_every_template_and_refuses_a_folder_that_holds_something() {
    let dir = tempfile::tempdir().unwrap();
    let listed = weft_new(dir.path(), &["--list"]);
    assert!(listed.status.success(), "{listed:?}");
    let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, TEMPLATES, "{names:?}");

    let taken = dir.path().join("taken");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("notes.txt"), "mine").unwrap();
    let refused = weft_new(dir.path(), &["rust-web", "taken"]);
    assert!(!refused.status.success(), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let line = error_line(&stderr);
    assert!(line.contains("taken"), "{line}");
    let left: Vec<_> = std::fs::read_dir(&taken)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["notes.txt"], "the folder was written to");
    assert_eq!(
        std::fs::read_to_string(taken.join("notes.txt")).unwrap(),
        "mine"
    );

    // An empty folder is fine: it is filled.
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let made = weft_new(dir.path(), &["rust-web", "empty"]);
    assert!(made.status.success(), "{made:?}");
    assert!(dir.path().join("empty/weft.toml").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_templates_build_and_run() {
    exercise(&["rust-web", "rust-web-p3", "rust-worker", "pipeline"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_templates_build_and_run() {
    exercise(&["python-web", "python-worker"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_templates_build_and_run() {
    exercise(&["js-web", "js-worker"]).await;
}

#[test]
fn a_build_tool_missing_from_path_is_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let folder = new_service(dir.path(), "python-web", "t-no-tool");
    // Everything a build could need but componentize-py.
    let tool_dir = on_path("componentize-py").and_then(|p| p.parent().map(Path::to_path_buf));
    let mut dirs: Vec<PathBuf> = Vec::new();
    for program in ["sh", "env", "cargo", "node", "mkdir"] {
        let Some(dir) = on_path(program).and_then(|p| p.parent().map(Path::to_path_buf)) else {
            continue;
        };
        if Some(&dir) != tool_dir.as_ref() && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    assert!(
        dirs.iter().all(|d| !d.join("componentize-py").exists()),
        "{dirs:?}"
    );
    let path = std::env::join_paths(&dirs).unwrap();
    let cache = cache_dir().display().to_string();
    let mut child = weft_command()
        .args([
            "up",
            "--admin-addr",
            "127.0.0.1:0",
            "--cache-dir",
            &cache,
            "--state-dir",
        ])
        .arg(folder.join("state"))
        .arg(&folder)
        .env("PATH", path)
        .env_remove("WEFT_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must end on its own; if it served instead, stop it and fail.
    let give_up = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > give_up {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    // The host's own log lines start with a timestamp; what is left is
    // what a user reads: one line.
    let said: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.starts_with("20"))
        .collect();
    assert_eq!(said.len(), 1, "{stderr}");
    let line = error_line(&stderr);
    assert_eq!(said[0], line);
    assert!(line.contains("componentize-py"), "{line}");
    assert_eq!(
        stderr
            .lines()
            .filter(|line| line.contains("componentize-py"))
            .count(),
        1,
        "more than one line names the tool:\n{stderr}"
    );
}

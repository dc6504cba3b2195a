//! The state folder is private whatever the umask: `weft up` and `weft
//! host`, run under umask 002 and 022, make every folder 0700 and every
//! file 0600; a folder another user owns or could write to is refused on
//! one line; a blob whose bytes no longer match its digest is refused when
//! loaded and replaced by the next deploy's upload; temporary files a
//! killed writer left in the blob folder are removed at start.

use crate::controller::service_dir;
use crate::hosting::{Host, token_file};
use crate::support::{Weft, cache_dir, error_line, eventually, http, run_weft};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use weft_test_artifacts::{HELLO_WEB, ROLLOUT_WEB, ROLLOUT_WORKER};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A wrapper for [`Weft::start_wrapped`] that sets the umask, then execs
/// `weft` with the rest of the arguments.
fn under_umask(umask: &str) -> [String; 3] {
    [
        "sh".into(),
        "-c".into(),
        format!("umask {umask} && exec \"$0\" \"$@\""),
    ]
}

/// Asserts every folder is 0700 and every file 0600.
fn assert_private(folders: &[PathBuf], files: &[PathBuf], umask: &str) {
    for folder in folders {
        assert_eq!(
            mode(folder),
            0o700,
            "umask {umask}: folder {}",
            folder.display()
        );
    }
    for file in files {
        assert_eq!(mode(file), 0o600, "umask {umask}: file {}", file.display());
    }
}

/// The files in `folder`.
fn files_in(folder: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_up_keeps_its_state_private_whatever_the_umask() {
    for umask in ["002", "022"] {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("weft.toml");
        std::fs::write(
            &manifest,
            format!(
                "[service]\nname = \"sealed\"\n\n[roles.web]\nkind = \"web\"\n\
                 component = \"{HELLO_WEB}\"\nlisten = \"127.0.0.1:0\"\nscratch = true\n"
            ),
        )
        .unwrap();
        // The default folders, none of them there yet: weft makes them
        // and their parents.
        let state_home = dir.path().join("xdg-state");
        let cache_home = dir.path().join("xdg-cache");
        let wrapper = under_umask(umask);
        let state_env = format!("XDG_STATE_HOME={}", state_home.display());
        let cache_env = format!("XDG_CACHE_HOME={}", cache_home.display());
        let mut wrapped = vec!["env", &state_env, &cache_env];
        wrapped.extend(wrapper.iter().map(String::as_str));
        let weft = Weft::start_wrapped(&wrapped, &["up", "--no-build", manifest.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("umask {umask}: {e}"));
        let reply = http("GET", &format!("{}/", weft.url("web")), "")
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");

        let state = state_home.join("weft/sealed");
        let cache = cache_home.join("weft/components");
        let folders: Vec<PathBuf> = [
            state_home.clone(),
            state_home.join("weft"),
            state.clone(),
            state.join("blobs"),
            state.join("blobs/sha256"),
            state.join("scratch"),
            state.join("scratch/sealed"),
            state.join("scratch/sealed/web"),
            cache_home.clone(),
            cache_home.join("weft"),
            cache.clone(),
        ]
        .into();
        let mut files = vec![state.join("admin-token"), state.join("queues.redb")];
        files.extend(files_in(&state.join("blobs/sha256")));
        let entries = files_in(&cache);
        assert!(
            entries.len() >= 2,
            "a key and an entry in the cache: {entries:?}"
        );
        files.extend(entries);
        assert_private(&folders, &files, umask);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_host_keeps_its_state_private_whatever_the_umask() {
    for umask in ["002", "022"] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let cache = cache_dir().display().to_string();
        let wrapper = under_umask(umask);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        // No token given: the host makes its own, in the state folder.
        let weft = Weft::start_wrapped(
            &wrapper,
            &[
                "host",
                "--state-dir",
                state.to_str().unwrap(),
                "--cache-dir",
                &cache,
            ],
        )
        .unwrap_or_else(|e| panic!("umask {umask}: {e}"));
        let admin = weft.admin.clone().unwrap();
        let host = Host {
            weft,
            token_file: state.join("admin-token"),
            admin,
        };
        let folder = dir.path().join("svc");
        service_dir(&folder, "sealed", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
        let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", folder.to_str().unwrap()]);
        assert!(
            ok && stdout.contains("deployed sealed generation 1"),
            "{stdout}{stderr}"
        );

        let service = state.join("services/sealed");
        let folders: Vec<PathBuf> = [
            state.clone(),
            state.join("blobs"),
            state.join("blobs/sha256"),
            state.join("services"),
            service.clone(),
        ]
        .into();
        let mut files = vec![
            state.join("admin-token"),
            service.join("deployment.json"),
            service.join("queues.redb"),
        ];
        let blobs = files_in(&state.join("blobs/sha256"));
        assert_eq!(blobs.len(), 2, "{blobs:?}");
        files.extend(blobs);
        assert_private(&folders, &files, umask);
    }
}

/// Runs `weft ARGS` to its end; returns whether it succeeded and its
/// `weft: error:` line (there must be exactly one when it failed).
fn fails_with(args: &[&str]) -> String {
    let (ok, stderr) = run_weft(args);
    assert!(!ok, "weft {args:?} started:\n{stderr}");
    error_line(&stderr).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_folder_another_user_owns_or_could_write_to_is_refused_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cache = cache_dir().display().to_string();
    let host = |state: &Path| {
        fails_with(&[
            "host",
            "--state-dir",
            state.to_str().unwrap(),
            "--cache-dir",
            &cache,
            "--admin-addr",
            "127.0.0.1:0",
        ])
    };
    // Made by a first start, then opened up to the group, one folder at a
    // time: each is refused by name before anything in it is used.
    {
        let tokens = token_file(dir.path());
        let mut first = Host::start(&state, &tokens);
        assert!(first.weft.terminate().unwrap().success());
    }
    for folder in ["", "blobs/sha256", "services"] {
        let folder = if folder.is_empty() {
            state.clone()
        } else {
            state.join(folder)
        };
        chmod(&folder, 0o775);
        let line = host(&state);
        assert!(
            line.contains(&format!("{}: writable by other users", folder.display())),
            "{line}"
        );
        chmod(&folder, 0o700);
    }
    assert!(
        !state.join("admin-token").exists(),
        "no token was made in a refused folder"
    );

    // A folder of another user, private as it may be.
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let line = host(&state);
    assert!(
        line.contains(&format!("{}: owned by user 65534", state.display())),
        "{line}"
    );
    std::os::unix::fs::chown(&state, Some(0), Some(0)).unwrap();

    // `weft up`'s folder and the component cache alike.
    let manifest = dir.path().join("weft.toml");
    std::fs::write(
        &manifest,
        format!(
            "[service]\nname = \"sealed\"\n\n[roles.web]\nkind = \"web\"\n\
             component = \"{HELLO_WEB}\"\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let up_state = dir.path().join("up-state");
    std::fs::create_dir(&up_state).unwrap();
    chmod(&up_state, 0o770);
    let line = fails_with(&[
        "up",
        "--no-build",
        "--cache-dir",
        &cache,
        "--state-dir",
        up_state.to_str().unwrap(),
        manifest.to_str().unwrap(),
    ]);
    assert!(
        line.contains(&format!("{}: writable by other users", up_state.display())),
        "{line}"
    );
    let open_cache = dir.path().join("open-cache");
    std::fs::create_dir(&open_cache).unwrap();
    chmod(&open_cache, 0o777);
    chmod(&up_state, 0o700);
    let line = fails_with(&[
        "up",
        "--no-build",
        "--cache-dir",
        open_cache.to_str().unwrap(),
        "--state-dir",
        up_state.to_str().unwrap(),
        manifest.to_str().unwrap(),
    ]);
    assert!(
        line.contains(&format!(
            "{}: writable by other users",
            open_cache.display()
        )),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_blob_is_refused_when_loaded_and_a_redeploy_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let tokens = token_file(dir.path());
    let folder = dir.path().join("svc");
    service_dir(&folder, "sealed", ROLLOUT_WEB, ROLLOUT_WORKER, 1);
    let mut host = Host::start(&state, &tokens);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", folder.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    let url = host.url("sealed", "web").await;
    assert_eq!(
        http("GET", &format!("{url}/"), "").await.unwrap().body,
        "version=1"
    );
    assert!(host.weft.terminate().unwrap().success());

    // Another component's bytes where the web role's blob was: a valid
    // component that would run with the web role's grants.
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state.join("services/sealed/deployment.json")).unwrap(),
    )
    .unwrap();
    let web = record["source"]["components"]["web"].as_str().unwrap();
    let blob = state
        .join("blobs/sha256")
        .join(web.trim_start_matches("sha256:"));
    std::fs::write(&blob, std::fs::read(HELLO_WEB).unwrap()).unwrap();
    // And what an upload killed mid-write left behind, long ago and now.
    let blobs = state.join("blobs/sha256");
    let stale = blobs.join(".weft-tmp-0123456789abcdef");
    let young = blobs.join(".weft-tmp-fedcba9876543210");
    std::fs::write(&stale, b"half an upload").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    std::fs::write(&young, b"an upload under way").unwrap();

    let host = Host::start(&state, &tokens);
    assert!(!stale.exists(), "a stale temporary file was left");
    assert!(young.exists(), "a young temporary file was removed");
    let log = eventually(
        Duration::from_secs(30),
        "the refused redeploy in the log",
        || async {
            let log = host.weft.log();
            log.contains("cannot redeploy the service").then_some(log)
        },
    )
    .await;
    assert!(
        log.contains(&format!(
            "roles.web: component {web} is damaged in the host's state folder"
        )),
        "{log}"
    );
    assert_eq!(host.api("GET", "/v1/services/sealed", "").await.status, 404);
    let head = host.api("HEAD", &format!("/v1/blobs/{web}"), "").await;
    assert_eq!(head.status, 404, "a damaged blob is offered: {head:?}");

    // Deploying again uploads the component again, which repairs the blob.
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", folder.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("uploaded web"), "{stdout}");
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        std::fs::read(ROLLOUT_WEB).unwrap()
    );
    let url = host.url("sealed", "web").await;
    assert_eq!(
        http("GET", &format!("{url}/"), "").await.unwrap().body,
        "version=1"
    );
}

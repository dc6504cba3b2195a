//! A full disk under the state folder is survived, not latched: sends
//! answer 503 while it is full, the host's status and `/metrics` say why,
//! and once room is made sends succeed again without a restart.

use crate::support::{eventually, http, http_as, up};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use weft_test_artifacts::PROBE;

/// A small tmpfs mounted on a fresh folder, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Writes a file until the filesystem has no room left.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    for chunk in [1 << 16, 1 << 12, 1 << 9, 1] {
        let bytes = vec![0xa5; chunk];
        while file.write_all(&bytes).is_ok() {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_disk_is_reported_and_survived_without_a_restart() {
    let Some(disk) = Tmpfs::mount("16m") else {
        eprintln!("SKIPPED: mounting a tmpfs is not permitted here (the test needs root)");
        return;
    };
    let manifest = disk.0.path().join("weft.toml");
    std::fs::write(
        &manifest,
        format!(
            "[service]\nname = \"full\"\n\n[roles.web]\nkind = \"web\"\ncomponent = {PROBE:?}\nlisten = \"127.0.0.1:0\"\nqueues = [\"jobs\"]\n"
        ),
    )
    .unwrap();
    let weft = up(&manifest);
    let send = format!("{}/queue/jobs", weft.url("web"));
    let admin = weft.admin.clone().unwrap();
    let token = std::fs::read_to_string(disk.0.path().join("state").join("admin-token")).unwrap();
    let status = || {
        let (admin, token) = (admin.clone(), token.trim().to_owned());
        async move {
            let reply = http_as(
                Some(&token),
                "GET",
                &format!("{admin}/v1/services/full"),
                "",
            )
            .await
            .unwrap();
            serde_json::from_str::<serde_json::Value>(&reply.body).unwrap()
        }
    };
    let writable = |value: u8| {
        let admin = admin.clone();
        async move {
            let metrics = http("GET", &format!("{admin}/metrics"), "").await.ok()?;
            let line = format!("weft_store_writable{{service=\"full\"}} {value}\n");
            metrics.body.contains(&line).then_some(())
        }
    };
    assert_eq!(http("POST", &send, "first").await.unwrap().status, 200);
    writable(1).await.expect("the store is writable at start");

    fill(&disk.0.path().join("filler"));
    let body = "x".repeat(16 * 1024);
    let mut refused = false;
    for _ in 0..2000 {
        let reply = http("POST", &send, &body).await.unwrap();
        match reply.status {
            200 | 429 => {}
            503 => {
                refused = true;
                break;
            }
            _ => panic!("{reply:?}"),
        }
    }
    assert!(refused, "no send was refused on a full disk");
    eventually(
        Duration::from_secs(5),
        "metrics to say the store cannot write",
        || writable(0),
    )
    .await;
    let failing = status().await;
    let reason = failing["store_failing"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "{failing}");
    eprintln!("store_failing: {reason}");

    std::fs::remove_file(disk.0.path().join("filler")).unwrap();
    eventually(Duration::from_secs(10), "sends to succeed again", || {
        let send = send.clone();
        async move { (http("POST", &send, "after").await.ok()?.status == 200).then_some(()) }
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "metrics to say the store writes",
        || writable(1),
    )
    .await;
    assert!(status().await.get("store_failing").is_none());
}

#[tokio::test]
async fn components_uploaded_and_never_deployed_are_bounded() {
    use crate::hosting::{Host, token_file};
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(&dir.path().join("state"), &token_file(dir.path()));
    let upload = |i: usize| {
        let bytes = format!("not a component {i}").into_bytes();
        let hex: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let url = format!("{}/v1/blobs/sha256:{hex}", host.admin);
        async move {
            crate::support::http_bytes(Some(crate::hosting::TOKEN), "PUT", &url, bytes)
                .await
                .unwrap()
        }
    };
    // 64 are kept (for an hour, unless deployed); the next is refused, on
    // one line, and the folder holds no more.
    for i in 0..64 {
        let reply = upload(i).await;
        assert_eq!(reply.status, 201, "{i}: {reply:?}");
    }
    let refused = upload(64).await;
    assert_eq!(refused.status, 409, "{refused:?}");
    assert!(refused.body.contains("not deployed"), "{refused:?}");
    let stored = std::fs::read_dir(dir.path().join("state/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(stored, 64);
    // Uploading one it holds again is fine.
    assert_eq!(upload(0).await.status, 201);
}

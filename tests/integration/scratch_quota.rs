//! A role's scratch folder has a quota: a guest writing past it by any
//! `wasi:filesystem` path gets an error (not a trap, not a full host disk),
//! and a neighbour role's scratch folder still takes its writes.

use crate::support::{call, runtime, spec};
use std::path::Path;
use std::time::Duration;
use weft_sandbox::{SandboxLimits, WebRole};
use weft_test_artifacts::PROBE;

/// What a folder holds: file bytes, recursively.
fn bytes_in(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                bytes_in(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

fn role_with_scratch(name: &str, dir: &Path, scratch_mib: u64) -> WebRole {
    let limits = SandboxLimits {
        scratch_mib,
        ..SandboxLimits::default()
    };
    let (mut spec, _) = spec(name, &[], &[], limits);
    spec.grants.scratch_dir = Some(dir.to_path_buf());
    runtime().web_role(Path::new(PROBE), spec).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_scratch_quota_fail_by_every_path_and_a_neighbour_still_writes() {
    const QUOTA: u64 = 1024 * 1024;
    let (small, roomy) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let tight = role_with_scratch("tight", small.path(), 1);
    let neighbour = role_with_scratch("neighbour", roomy.path(), 64);
    for via in ["write", "stream", "append", "size", "std", "files"] {
        // Twice the quota, by one path: an error from the guest's own
        // call, and the folder holds no more than the quota.
        let reply = call(
            &tight,
            "GET",
            &format!("/fill?name={via}&kib=2048&via={via}"),
            "",
        )
        .await;
        assert_eq!(reply.status, 200, "{via}: the guest trapped: {reply:?}");
        assert!(reply.body.starts_with("error after"), "{via}: {reply:?}");
        // The host answers `insufficient-space`; Rust's std (through
        // wasi-libc's streams) reports any failed file write as EIO.
        if via != "std" {
            assert!(
                reply.body.contains("insufficient-space"),
                "{via}: {reply:?}"
            );
        }
        let held = bytes_in(small.path());
        assert!(held <= QUOTA, "{via}: the folder holds {held} bytes");
        // Room is made again for the next path (the quota measures the
        // folder again once a charge would pass its estimate).
        for entry in std::fs::read_dir(small.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                std::fs::remove_dir_all(path).unwrap();
            } else {
                std::fs::remove_file(path).unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Under the quota, a write goes through.
    let fits = call(&tight, "GET", "/fill?name=fits&kib=512&via=write", "").await;
    assert_eq!(fits.body, "wrote 524288 bytes", "{fits:?}");
    // The neighbour's folder is its own: twice the other's quota fits.
    let roomy_write = call(&neighbour, "GET", "/fill?name=big&kib=2048&via=stream", "").await;
    assert_eq!(roomy_write.body, "wrote 2097152 bytes", "{roomy_write:?}");
    assert_eq!(bytes_in(roomy.path()), 2 * QUOTA);
}

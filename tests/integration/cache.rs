//! The compiled-component cache: a restarted host loads what an earlier one
//! compiled, and an unusable entry is recompiled rather than trusted.

use std::path::Path;
use weft_sandbox::{CacheStats, EngineConfig, Runtime, SandboxLimits};
use weft_test_artifacts::HELLO_WEB;

fn runtime_with_cache(dir: &Path) -> Runtime {
    Runtime::new(EngineConfig {
        cache_dir: Some(dir.to_path_buf()),
        ..EngineConfig::default()
    })
    .unwrap()
}

async fn assert_serves(role: &weft_sandbox::WebRole) {
    assert_eq!(crate::support::call(role, "GET", "/", "").await.status, 200);
}

#[tokio::test]
async fn a_restarted_host_does_not_recompile() {
    let dir = tempfile::tempdir().unwrap();
    let load = |runtime: &Runtime| {
        let (spec, _) = crate::support::spec("web", &[], &[], SandboxLimits::default());
        runtime.web_role(Path::new(HELLO_WEB), spec).unwrap()
    };

    let first = runtime_with_cache(dir.path());
    let role = load(&first);
    assert_eq!(
        first.cache_stats(),
        CacheStats {
            hits: 0,
            compiles: 1
        }
    );
    assert_serves(&role).await;
    drop((role, first));

    let second = runtime_with_cache(dir.path());
    let role = load(&second);
    let _again = load(&second);
    assert_eq!(
        second.cache_stats(),
        CacheStats {
            hits: 2,
            compiles: 0
        }
    );
    assert_serves(&role).await;
    drop((role, _again, second));

    // A damaged entry is not trusted: it is compiled again and replaced.
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    std::fs::write(&entries[0], b"not a compiled component").unwrap();
    let third = runtime_with_cache(dir.path());
    let role = load(&third);
    assert_eq!(
        third.cache_stats(),
        CacheStats {
            hits: 0,
            compiles: 1
        }
    );
    assert_serves(&role).await;
    assert_ne!(
        std::fs::read(&entries[0]).unwrap(),
        b"not a compiled component"
    );
}

#[tokio::test]
async fn an_empty_key_left_by_a_crash_costs_a_recompile_not_a_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let load = |runtime: &Runtime| {
        let (spec, _) = crate::support::spec("web", &[], &[], SandboxLimits::default());
        runtime.web_role(Path::new(HELLO_WEB), spec).unwrap()
    };
    drop(load(&runtime_with_cache(dir.path())));
    // What a kill -9 during an in-place write of the key leaves.
    let key = dir.path().join("key");
    std::fs::write(&key, b"").unwrap();
    let second = runtime_with_cache(dir.path());
    let role = load(&second);
    assert_eq!(
        second.cache_stats(),
        CacheStats {
            hits: 0,
            compiles: 1
        }
    );
    assert_serves(&role).await;
    drop((role, second));
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!((meta.len(), meta.permissions().mode() & 0o777), (32, 0o600));
    // The new key is kept, and with it the entry made under it.
    let third = runtime_with_cache(dir.path());
    drop(load(&third));
    assert_eq!(
        third.cache_stats(),
        CacheStats {
            hits: 1,
            compiles: 0
        }
    );
}

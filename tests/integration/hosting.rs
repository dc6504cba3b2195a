//! Shared machinery for the controller's tests: a `weft host` with its own
//! state folder and admin token, its admin API called directly or through
//! the `weft` CLI, and service folders whose manifests name test guests.

use crate::support::{Reply, Weft, cache_dir, eventually, http_as, http_bytes, weft_command};
use anyhow::Context;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The token every test host is given.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A `weft host` and where it keeps things.
pub struct Host {
    pub weft: Weft,
    pub token_file: PathBuf,
    pub admin: String,
}

/// Writes the test token to `dir/token`, readable by its owner only.
pub fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, TOKEN).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

impl Host {
    /// Starts `weft host` on `state` (a restart when it was used before).
    pub fn start(state: &Path, token_file: &Path) -> Self {
        Self::start_with(state, token_file, &[])
    }

    /// [`Host::start`] with more arguments for `weft host`.
    pub fn start_with(state: &Path, token_file: &Path, extra: &[&str]) -> Self {
        let cache = cache_dir().display().to_string();
        let mut args = vec![
            "host",
            "--state-dir",
            state.to_str().unwrap(),
            "--token-file",
            token_file.to_str().unwrap(),
            "--cache-dir",
            &cache,
            "--grace-secs",
            "10",
        ];
        args.extend_from_slice(extra);
        let weft = Weft::start(&args).unwrap();
        let admin = weft
            .admin
            .clone()
            .expect("the host announces its admin address");
        Self {
            weft,
            token_file: token_file.to_path_buf(),
            admin,
        }
    }

    /// Calls the admin API with the token (or `token`, if given).
    pub async fn api(&self, method: &str, path: &str, body: &str) -> Reply {
        self.api_as(Some(TOKEN), method, path, body).await.unwrap()
    }

    /// Calls the admin API presenting `token` (none: no header).
    pub async fn api_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: &str,
    ) -> anyhow::Result<Reply> {
        http_as(token, method, &format!("{}{path}", self.admin), body).await
    }

    /// Uploads the component at `path`; returns its digest (`sha256:HEX`).
    pub async fn put_blob(&self, path: &Path) -> String {
        use sha2::Digest as _;
        let bytes = std::fs::read(path).unwrap();
        let hex: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let digest = format!("sha256:{hex}");
        let url = format!("{}/v1/blobs/{digest}", self.admin);
        let reply = http_bytes(Some(TOKEN), "PUT", &url, bytes).await.unwrap();
        assert_eq!(reply.status, 201, "{reply:?}");
        digest
    }

    /// The status of service `name`, as JSON.
    pub async fn service(&self, name: &str) -> serde_json::Value {
        let reply = self.api("GET", &format!("/v1/services/{name}"), "").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        serde_json::from_str(&reply.body).unwrap()
    }

    /// Runs the `weft` CLI against this host; returns success, stdout and stderr.
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let output = weft_command()
            .args(args)
            .args(["--admin", &self.admin, "--token-file"])
            .arg(&self.token_file)
            .env("WEFT_LOG", "warn")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// The URL role `role` of `service` listens on.
    pub async fn url(&self, service: &str, role: &str) -> String {
        let status = self.service(service).await;
        status["roles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == role)
            .and_then(|r| r["url"].as_str())
            .with_context(|| format!("role {role} has no url: {status}"))
            .unwrap()
            .to_owned()
    }

    /// Waits until every role of `service` has its declared instances ready.
    pub async fn ready(&self, service: &str) -> serde_json::Value {
        eventually(
            Duration::from_secs(60),
            "every instance to be ready",
            || async {
                let status = self.service(service).await;
                let ready = status["roles"]
                    .as_array()?
                    .iter()
                    .all(|r| r["ready"].as_u64() >= r["declared"].as_u64());
                ready.then_some(status)
            },
        )
        .await
    }
}

/// A copy of the component at `from`, in `dir`, made different (a custom
/// section named `weft-test-version` holding `mark` appended) so that it has
/// a digest of its own while behaving the same.
pub fn marked_copy(from: &str, dir: &Path, mark: &str) -> PathBuf {
    let mut bytes = std::fs::read(from).unwrap();
    let name = b"weft-test-version";
    let mut payload = leb128(name.len());
    payload.extend_from_slice(name);
    payload.extend_from_slice(mark.as_bytes());
    bytes.push(0); // a custom section
    bytes.extend(leb128(payload.len()));
    bytes.extend(payload);
    let stem = Path::new(from).file_stem().unwrap().to_str().unwrap();
    let path = dir.join(format!("{stem}-{mark}.wasm"));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn leb128(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = u8::try_from(n & 0x7f).unwrap();
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

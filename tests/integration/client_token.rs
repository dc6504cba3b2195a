//! The CLI and the local host's admin token, through the real binaries: the
//! token a client finds in the default host state folder goes only to the
//! admin address that host recorded there; pointed anywhere else, the CLI
//! sends nothing, and a token given explicitly is sent as given.

use crate::support::{Weft, cache_dir, weft_command};
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// A listener standing in for someone else's admin address: it records
/// the head of every request and answers 401.
fn stranger() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            // Recorded before the answer, so the client cannot exit first.
            if tx
                .send(String::from_utf8_lossy(&head).into_owned())
                .is_err()
            {
                return;
            }
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 15\r\nconnection: close\r\n\r\n{\"error\":\"no\"}\n",
            );
        }
    });
    (url, rx)
}

/// `weft status --admin URL` as a user whose state folder is `xdg`.
fn status(xdg: &Path, admin: &str, token: Option<&str>) -> (bool, String) {
    let mut command = weft_command();
    command
        .args(["status", "--admin", admin])
        .env("XDG_STATE_HOME", xdg)
        .env_remove("WEFT_ADMIN_TOKEN")
        .env_remove("WEFT_ADMIN")
        .env("WEFT_LOG", "warn");
    if let Some(token) = token {
        command.env("WEFT_ADMIN_TOKEN", token);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_the_local_token_only_to_the_address_its_host_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().join("xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    let cache = cache_dir().display().to_string();
    // A host on its default state folder: it makes the token and records
    // its admin address beside it.
    let host = Weft::start_with(
        &["host", "--cache-dir", &cache, "--grace-secs", "1"],
        &[("XDG_STATE_HOME", xdg.to_str().unwrap())],
    )
    .unwrap();
    let admin = host.admin.clone().unwrap();
    let folder = xdg.join("weft/_host");
    let secret = std::fs::read_to_string(folder.join("admin-token")).unwrap();
    let secret = secret.trim();
    assert!(secret.len() >= 16);
    let recorded = std::fs::read_to_string(folder.join("admin-address")).unwrap();
    assert_eq!(format!("http://{}", recorded.trim()), admin);

    // Its own address: the found token is sent, and admitted.
    let (ok, out) = status(&xdg, &admin, None);
    assert!(ok, "{out}");

    // Another address: nothing is sent, and the user is told why.
    let (elsewhere, heads) = stranger();
    let (ok, out) = status(&xdg, &elsewhere, None);
    assert!(!ok, "{out}");
    assert!(out.contains("not sent to"), "{out}");
    assert!(!out.contains(secret), "{out}");
    let seen: Vec<String> = heads.try_iter().collect();
    assert!(
        seen.iter().all(|head| !head.contains(secret)),
        "the local token reached another address: {seen:?}"
    );

    // A token given explicitly is sent as given, wherever it is pointed.
    let explicit = "explicit-token-0123456789";
    let (ok, out) = status(&xdg, &elsewhere, Some(explicit));
    assert!(!ok, "the stranger answers 401: {out}");
    let head = heads.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("authorization: bearer {explicit}")),
        "{head}"
    );
    assert!(!head.contains(secret), "{head}");
}

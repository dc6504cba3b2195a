//! Clients that hold the host's connections: a flood of idle connections
//! on a host with few descriptors, and a body trickled in a byte at a time.
//! Each runs the real `weft` binary with the fault injected for real (a
//! lowered `RLIMIT_NOFILE`, a real slow socket).

use crate::support::{Weft, cache_dir, eventually, http};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use weft_test_artifacts::PROBE;

/// The descriptor limit the flooded host runs under, soft and hard.
const DESCRIPTORS: usize = 512;
/// More idle connections than the host has descriptors.
const FLOOD: usize = 560;

fn serve_args<'a>(cache: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["serve", "--addr", "127.0.0.1:0", "--cache-dir", cache];
    args.extend_from_slice(extra);
    args.push(PROBE);
    args
}

/// Whether the server has closed `stream`: it reads the end of the stream
/// (or a reset) within `wait`.
async fn closed_by_server(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// 560 idle connections to the web port of a host limited to 512
/// descriptors: the admin API answers throughout (its connections are not
/// the web role's), the host never runs out of descriptors (the web
/// listener stops accepting at its cap, derived from the limit), the idle
/// connections are closed by the idle timeout, and the web role answers
/// again while the flood is still held open.
#[tokio::test]
async fn a_connection_flood_leaves_the_admin_api_and_the_web_role_answering() {
    let cache = cache_dir().display().to_string();
    let limit = format!("--nofile={DESCRIPTORS}:{DESCRIPTORS}");
    let weft = Weft::start_wrapped(
        &["prlimit", &limit, "--"],
        &serve_args(&cache, &["--idle-timeout-secs", "2"]),
    )
    .unwrap();
    let web = weft.url("web");
    let admin = weft.admin.clone().unwrap();
    assert!(
        weft.log().contains("descriptors=512"),
        "the caps were derived from the lowered limit: {}",
        weft.log()
    );

    let address = web.trim_start_matches("http://").to_owned();
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(TcpStream::connect(&address).await.unwrap());
    }
    // The flood is held open; the admin API still answers at once.
    let healthz = tokio::time::timeout(
        Duration::from_secs(10),
        http("GET", &format!("{admin}/healthz"), ""),
    )
    .await
    .expect("the admin API answered under the flood")
    .unwrap();
    assert_eq!(healthz.status, 200, "{healthz:?}");

    // The web role answers again, the flood still held by the client: the
    // host closed the idle connections it had accepted, then those it took
    // from the backlog after them.
    let ok = format!("{web}/ok");
    eventually(
        Duration::from_secs(60),
        "the web role to answer",
        || async {
            let reply = tokio::time::timeout(Duration::from_secs(5), http("GET", &ok, ""));
            match reply.await {
                Ok(Ok(reply)) if reply.status == 200 => Some(()),
                _ => None,
            }
        },
    )
    .await;
    let mut closed = 0;
    for stream in &mut flood {
        if closed_by_server(stream, Duration::from_secs(30)).await {
            closed += 1;
        }
    }
    assert_eq!(
        closed, FLOOD,
        "every idle connection was closed by the host"
    );
    let healthz = http("GET", &format!("{admin}/healthz"), "").await.unwrap();
    assert_eq!(healthz.status, 200);
    let log = weft.log();
    assert!(
        !log.contains("accept failed"),
        "the host ran out of descriptors: {log}"
    );
    assert!(log.contains("connection cap reached"), "{log}");
}

/// A request body trickled at 5 bytes a second, against a minimum of 1000
/// after a one-second grace, is cut and its connection closed, long before
/// the guest's deadline would have ended it; the same request sent at once
/// is read whole.
#[tokio::test]
async fn a_trickled_request_body_is_cut() {
    let cache = cache_dir().display().to_string();
    let weft = Weft::start(&serve_args(
        &cache,
        &[
            "--min-body-rate",
            "1000",
            "--body-grace-secs",
            "1",
            "--deadline-ms",
            "120000",
        ],
    ))
    .unwrap();
    let address = weft.url("web").trim_start_matches("http://").to_owned();
    let head = |length: usize| {
        format!("POST /queue/none HTTP/1.1\r\nhost: test\r\ncontent-length: {length}\r\n\r\n")
    };

    // At once: the body is read, and the guest answers (the queue is not
    // granted under `weft serve`, so 403, but the body was read whole: a
    // body that failed to read would be a 500).
    let mut fast = TcpStream::connect(&address).await.unwrap();
    fast.write_all(head(100).as_bytes()).await.unwrap();
    fast.write_all(&[b'x'; 100]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(30), fast.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

    // A byte every 200 ms, for at most 60 s (half the deadline): the host
    // must close the connection before the trickle ends.
    let mut slow = TcpStream::connect(&address).await.unwrap();
    slow.write_all(head(1000).as_bytes()).await.unwrap();
    let mut sent = 0;
    let mut buffer = [0u8; 4096];
    let mut answer = Vec::new();
    let cut = loop {
        if sent == 300 {
            break false;
        }
        if slow.write_all(b"x").await.is_err() {
            break true;
        }
        sent += 1;
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => {}
        }
    };
    assert!(cut, "a 5 B/s body was still being read after {sent} bytes");
    // 1 s of grace and 1 ms per byte: cut after a few bytes, not hundreds.
    assert!(sent < 50, "cut only after {sent} bytes");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 "),
        "{answer}"
    );
}

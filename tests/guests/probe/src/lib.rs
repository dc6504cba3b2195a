//! Test guest: a web role whose routes probe the sandbox's limits and grants,
//! for the host's integration tests. Each route tries one thing and reports
//! the outcome in a short text body:
//!
//! | route | does | answers |
//! |---|---|---|
//! | `GET /ok` | nothing | `ok` |
//! | `GET /spin` | loops forever | (the host must interrupt it) |
//! | `GET /grow/{mib}` | `memory.grow` by that many MiB | `granted` or `refused` |
//! | `GET /alloc/{mib}` | allocates and touches a `Vec` | `allocated {mib} MiB` (or aborts) |
//! | `GET /read?path=P` | `std::fs::read` | `read {n} bytes` or `error: ..` |
//! | `GET /list-dir?path=P` | `std::fs::read_dir` | one name per line, or `error: ..` |
//! | `GET /fill?name=N&kib=K&via=V` | writes `K` KiB to `/scratch/N` by one write path (`scratch.rs`) | `wrote {n} bytes` or `error after {n} bytes: ..` |
//! | `GET /connect?addr=A` | `std::net::TcpStream::connect` | `connected` or `error: ..` |
//! | `GET /env` | `std::env::vars` | the count, then one name per line |
//! | `GET /fetch?url=U` | an outgoing HTTP GET | `status {n}` or `error: ..` |
//! | `GET /sleep/{ms}` | prints `probe: sleeping {ms} ms` to stderr, then an async sleep | `slept` |
//! | `POST /queue/{name}` | `queue::send` of the body | the message id; 403/429/413/503/400 with the error |
//! | `POST /flood/{name}?n=N` | `queue::send` of the body N times, as fast as it may | `sent={ok} limited={n} other={n}` |
//! | `POST /drain/{name}` | one `queue::receive` of up to 32 messages (no wait), then one `queue::complete_batch` of them | `received={n} completed={n}`; or the error's status |
//! | `GET /kv/{bucket}/{key}` | `Bucket::get` | the value, 404, or 403 if denied |
//! | `PUT /kv/{bucket}/{key}` | `Bucket::set` of the body | 204 |
//! | `POST /kv-fill/{bucket}/{prefix}?kib=K&n=N` | `Bucket::set` of `K` KiB under keys `{prefix}0`.. until `N` are stored or one fails | `stored={i}`; or, after a failure, its status with `stored={i} error: ..` |
//! | `GET /config/{key}` | `config::get` | the value or 404 |
//! | `GET /print/{text}` | prints `text` to stdout and stderr | 200 |
//! | `GET /spam/{n}` | prints `n` lines of about 100 bytes to stdout | `printed {n} lines` |
//! | `GET /lines/{n}/{text}` | writes `n` lines of `text` (may be empty: bare newlines) to stdout in one write | `wrote {n} lines` |
//! | `GET /stream/{kib}` | streams a body of `kib` KiB in 16 KiB chunks | the bytes (`x`s) |
//! | `GET /fetch-self?path=P` | an outgoing GET to `http://{its own Host header}{P}` | as `/fetch` |
//! | `GET /usage` | `weft_sdk::usage::get` | `name=value` lines, or `error: ..` |
//! | `GET /hold/{mib}?ms=N` | `memory.grow` by that many MiB, prints `probe: holding`, sleeps | `granted` or `refused` |
//! | `GET /burn/{n}` | `n` million rounds of integer hashing | the result |
//! | `GET /handles/{n}` | creates `n` `wasi:http` header maps and keeps them | `created {n}` (or traps) |
//! | `GET /visit/{token}` | counts the visits this instance has had and keeps `token` | `visits={n} last={the previous visit's token, or -}` |
//!
//! Path segments and query values are `%XX`-decoded. `/visit` keeps its
//! state in the instance's memory: a fresh instance answers `visits=1
//! last=-`, so tests can tell whether an instance served an earlier request.

mod burn;
mod scratch;

use std::sync::Mutex;
use std::time::Duration;

use weft_sdk::kv::{self, Bucket};
use weft_sdk::wstd::http::{Body, Client, Error, Method, Request, Response, StatusCode};

async fn handle(request: Request<Body>) -> Result<Response<Body>, Error> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let arg = |name: &str| query_arg(&query, name).unwrap_or_default();
    let (first, rest) = match path.trim_start_matches('/').split_once('/') {
        Some((first, rest)) => (first.to_owned(), Some(rest.to_owned())),
        None => (path.trim_start_matches('/').to_owned(), None),
    };
    let method = request.method().clone();
    match (method, first.as_str(), rest) {
        (Method::GET, "ok", None) => text(StatusCode::OK, "ok"),
        (Method::GET, "spin", None) => loop {
            std::hint::black_box(());
        },
        (Method::GET, "grow", Some(mib)) => match mib.parse::<usize>() {
            Ok(mib) => text(
                StatusCode::OK,
                if grow(mib) { "granted" } else { "refused" },
            ),
            Err(_) => bad_number(),
        },
        (Method::GET, "alloc", Some(mib)) => match mib.parse::<usize>() {
            Ok(mib) => alloc(mib),
            Err(_) => bad_number(),
        },
        (Method::GET, "read", None) => text(
            StatusCode::OK,
            match std::fs::read(arg("path")) {
                Ok(bytes) => format!("read {} bytes", bytes.len()),
                Err(e) => format!("error: {e}"),
            },
        ),
        (Method::GET, "list-dir", None) => text(StatusCode::OK, list_dir(&arg("path"))),
        (Method::GET, "fill", None) => text(
            StatusCode::OK,
            scratch::fill(&arg("name"), &arg("kib"), &arg("via")),
        ),
        (Method::GET, "connect", None) => text(
            StatusCode::OK,
            match std::net::TcpStream::connect(arg("addr")) {
                Ok(_) => "connected".to_owned(),
                Err(e) => format!("error: {e}"),
            },
        ),
        (Method::GET, "env", None) => {
            let names: Vec<String> = std::env::vars().map(|(name, _)| name).collect();
            text(
                StatusCode::OK,
                format!("{}\n{}", names.len(), names.join("\n")),
            )
        }
        (Method::GET, "fetch", None) => text(StatusCode::OK, fetch(&arg("url")).await),
        (Method::GET, "sleep", Some(ms)) => match ms.parse::<u64>() {
            Ok(ms) => {
                // Announced, so a test can act while the request is in flight.
                eprintln!("probe: sleeping {ms} ms");
                weft_sdk::wstd::task::sleep(Duration::from_millis(ms).into()).await;
                text(StatusCode::OK, "slept")
            }
            Err(_) => bad_number(),
        },
        (Method::POST, "queue", Some(name)) => {
            let body = request.into_body().contents().await?.to_vec();
            match weft_sdk::queue::send(&decode(&name), body) {
                Ok(id) => text(StatusCode::OK, id),
                Err(e) => text(queue_status(&e), e.to_string()),
            }
        }
        (Method::POST, "flood", Some(name)) => {
            let body = request.into_body().contents().await?.to_vec();
            let Some(count) = query_arg(&query, "n").and_then(|n| n.parse::<u32>().ok()) else {
                return bad_number();
            };
            let (mut sent, mut limited, mut other) = (0, 0, 0);
            for _ in 0..count {
                match weft_sdk::queue::send(&decode(&name), &body) {
                    Ok(_) => sent += 1,
                    Err(weft_sdk::Error::RateLimited) => limited += 1,
                    Err(_) => other += 1,
                }
            }
            text(
                StatusCode::OK,
                format!("sent={sent} limited={limited} other={other}"),
            )
        }
        (Method::POST, "drain", Some(name)) => {
            // One receive of up to a full batch, then one complete-batch:
            // two queue calls, however many messages.
            let queue = decode(&name);
            let options = weft_sdk::queue::ReceiveOptions {
                max_messages: weft_sdk::queue::MAX_BATCH,
                wait: Duration::ZERO,
                ..Default::default()
            };
            let batch = match weft_sdk::queue::receive(&queue, &options) {
                Ok(batch) => batch,
                Err(e) => return text(queue_status(&e), e.to_string()),
            };
            let completed = if batch.is_empty() {
                0
            } else {
                let messages: Vec<_> = batch.iter().collect();
                match weft_sdk::queue::complete_batch(&queue, &messages) {
                    Ok(outcomes) => outcomes.iter().filter(|o| o.is_ok()).count(),
                    Err(e) => return text(queue_status(&e), e.to_string()),
                }
            };
            text(
                StatusCode::OK,
                format!("received={} completed={completed}", batch.len()),
            )
        }
        (Method::GET, "kv", Some(rest)) => {
            let Some((bucket, key)) = kv_path(&rest) else {
                return text(StatusCode::NOT_FOUND, "use /kv/{bucket}/{key}");
            };
            match Bucket::open(&bucket).and_then(|b| b.get(&key)) {
                Ok(Some(value)) => Ok(Response::new(value.into())),
                Ok(None) => text(StatusCode::NOT_FOUND, "no such key"),
                Err(e) => kv_error(&e),
            }
        }
        (Method::PUT, "kv", Some(rest)) => {
            let Some((bucket, key)) = kv_path(&rest) else {
                return text(StatusCode::NOT_FOUND, "use /kv/{bucket}/{key}");
            };
            let body = request.into_body().contents().await?.to_vec();
            match Bucket::open(&bucket).and_then(|b| b.set(&key, body)) {
                Ok(()) => text(StatusCode::NO_CONTENT, ""),
                Err(e) => kv_error(&e),
            }
        }
        (Method::POST, "kv-fill", Some(rest)) => {
            let Some((bucket, prefix)) = kv_path(&rest) else {
                return text(StatusCode::NOT_FOUND, "use /kv-fill/{bucket}/{prefix}");
            };
            let (Ok(kib), Ok(n)) = (arg("kib").parse::<usize>(), arg("n").parse::<u32>()) else {
                return bad_number();
            };
            kv_fill(&bucket, &prefix, kib, n)
        }
        (Method::GET, "config", Some(key)) => match weft_sdk::config::get(&decode(&key)) {
            Ok(Some(value)) => text(StatusCode::OK, value),
            Ok(None) => text(StatusCode::NOT_FOUND, "not set"),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("error: {e}")),
        },
        (Method::GET, "spam", Some(n)) => match n.parse::<u32>() {
            Ok(n) => {
                for i in 0..n {
                    println!("spam-line {i:06} {}", "x".repeat(80));
                }
                text(StatusCode::OK, format!("printed {n} lines"))
            }
            Err(_) => bad_number(),
        },
        (Method::GET, "lines", Some(rest)) => {
            let (count, line) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
            match count.parse::<usize>() {
                Ok(n) if n <= 16 << 20 => {
                    let mut line = decode(line).into_bytes();
                    line.push(b'\n');
                    let flood = line.repeat(n);
                    let wrote = std::io::Write::write_all(&mut std::io::stdout().lock(), &flood);
                    match wrote {
                        Ok(()) => text(StatusCode::OK, format!("wrote {n} lines")),
                        Err(e) => text(StatusCode::OK, format!("error: {e}")),
                    }
                }
                _ => bad_number(),
            }
        }
        (Method::GET, "stream", Some(kib)) => match kib.parse::<usize>() {
            Ok(kib) => {
                const CHUNK: usize = 16 * 1024;
                let total = kib.saturating_mul(1024);
                let chunks = futures_lite::stream::iter(
                    (0..total)
                        .step_by(CHUNK)
                        .map(move |start| vec![b'x'; (total - start).min(CHUNK)]),
                );
                Ok(Response::new(Body::from_stream(chunks)))
            }
            Err(_) => bad_number(),
        },
        (Method::GET, "fetch-self", None) => {
            // wasi:http hands the Host header over as the URI's authority.
            let host = request
                .uri()
                .authority()
                .map(|a| a.as_str().to_owned())
                .or_else(|| {
                    let header = request.headers().get("host")?;
                    header.to_str().ok().map(str::to_owned)
                })
                .unwrap_or_default();
            text(
                StatusCode::OK,
                fetch(&format!("http://{host}{}", arg("path"))).await,
            )
        }
        (Method::GET, "usage", None) => match weft_sdk::usage::get() {
            Ok(u) => text(
                StatusCode::OK,
                format!(
                    "fuel-used={}\nfuel-left={}\ncpu-share={}\nweight={}\nparked-ms={}\nthrottled-ms={}\ncalls={}\ncalls-rate-limited={}\nmemory-bytes={}\nmemory-cap-bytes={}\nrole-memory-bytes={}\nrole-memory-cap-bytes={}\ndeadline-left-ms={}\n",
                    u.fuel_used(),
                    u.fuel_left(),
                    u.cpu_share(),
                    u.weight(),
                    u.parked().as_millis(),
                    u.throttled().as_millis(),
                    u.calls(),
                    u.calls_rate_limited(),
                    u.memory_bytes(),
                    u.memory_cap_bytes(),
                    u.role_memory_bytes(),
                    u.role_memory_cap_bytes()
                        .map_or("none".into(), |c| c.to_string()),
                    u.deadline_left()
                        .map_or("none".into(), |d| d.as_millis().to_string()),
                ),
            ),
            Err(e) => text(StatusCode::OK, format!("error: {e}")),
        },
        (Method::GET, "hold", Some(mib)) => {
            let (Ok(mib), Ok(ms)) = (mib.parse::<usize>(), arg("ms").parse::<u64>()) else {
                return bad_number();
            };
            let granted = grow(mib);
            eprintln!("probe: holding");
            weft_sdk::wstd::task::sleep(Duration::from_millis(ms).into()).await;
            text(StatusCode::OK, if granted { "granted" } else { "refused" })
        }
        (Method::GET, "burn", Some(n)) => match n.parse::<u64>() {
            Ok(n) => text(StatusCode::OK, format!("burnt {}", burn::burn(n))),
            Err(_) => bad_number(),
        },
        (Method::GET, "handles", Some(n)) => match n.parse::<usize>() {
            Ok(n) => {
                let held: Vec<_> = (0..n).map(|_| wasip2::http::types::Fields::new()).collect();
                std::hint::black_box(&held);
                text(StatusCode::OK, format!("created {}", held.len()))
            }
            Err(_) => bad_number(),
        },
        (Method::GET, "visit", Some(token)) => {
            let mut visits = VISITS.lock().unwrap_or_else(|p| p.into_inner());
            visits.0 += 1;
            let last = std::mem::replace(&mut visits.1, decode(&token));
            let last = if last.is_empty() {
                "-".to_owned()
            } else {
                last
            };
            text(StatusCode::OK, format!("visits={} last={last}", visits.0))
        }
        (Method::GET, "print", Some(words)) => {
            let words = decode(&words);
            println!("{words}");
            eprintln!("{words}");
            text(StatusCode::OK, "printed")
        }
        _ => text(StatusCode::NOT_FOUND, "no such probe"),
    }
}

/// This instance's visits so far, and the token the last one left.
static VISITS: Mutex<(u64, String)> = Mutex::new((0, String::new()));

/// Grows linear memory 0 by `mib` MiB; whether the host allowed it.
#[cfg(target_arch = "wasm32")]
fn grow(mib: usize) -> bool {
    const PAGES_PER_MIB: usize = 16; // 64 KiB pages
    mib.checked_mul(PAGES_PER_MIB)
        .is_some_and(|pages| core::arch::wasm32::memory_grow(0, pages) != usize::MAX)
}

#[cfg(not(target_arch = "wasm32"))]
fn grow(_mib: usize) -> bool {
    false
}

/// Allocates `mib` MiB and writes every byte; a refused allocation aborts.
fn alloc(mib: usize) -> Result<Response<Body>, Error> {
    let Some(len) = mib.checked_mul(1 << 20) else {
        return bad_number();
    };
    let block = vec![1u8; len];
    std::hint::black_box(&block);
    text(StatusCode::OK, format!("allocated {mib} MiB"))
}

fn list_dir(path: &str) -> String {
    match std::fs::read_dir(path) {
        Ok(entries) => entries
            .map(|entry| match entry {
                Ok(entry) => entry.file_name().to_string_lossy().into_owned(),
                Err(e) => format!("error: {e}"),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("error: {e}"),
    }
}

async fn fetch(url: &str) -> String {
    let request = match Request::get(url).body(Body::empty()) {
        Ok(request) => request,
        Err(e) => return format!("error: {e}"),
    };
    match Client::new().send(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.into_body().contents().await {
                Ok(_) => format!("status {status}"),
                Err(e) => format!("error reading the body: {e:#}"),
            }
        }
        Err(e) => format!("error: {e:#}"),
    }
}

fn queue_status(e: &weft_sdk::Error) -> StatusCode {
    match e {
        weft_sdk::Error::Denied(_) => StatusCode::FORBIDDEN,
        weft_sdk::Error::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        weft_sdk::Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        weft_sdk::Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        weft_sdk::Error::Invalid(_) => StatusCode::BAD_REQUEST,
        weft_sdk::Error::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `{bucket}/{key}`, decoded; the key may contain `/`.
fn kv_path(rest: &str) -> Option<(String, String)> {
    let (bucket, key) = rest.split_once('/')?;
    Some((decode(bucket), decode(key)))
}

/// 403 for a denied bucket, 404 for an unknown one, 500 otherwise.
/// The status a key-value error answers: a full bucket is 507.
fn kv_status(e: &kv::Error) -> StatusCode {
    match e {
        kv::Error::AccessDenied => StatusCode::FORBIDDEN,
        kv::Error::NoSuchStore => StatusCode::NOT_FOUND,
        kv::Error::BucketFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn kv_error(e: &kv::Error) -> Result<Response<Body>, Error> {
    text(kv_status(e), format!("error: {e}"))
}

/// Stores `n` values of `kib` KiB in `bucket`, stopping at the first error.
fn kv_fill(bucket: &str, prefix: &str, kib: usize, n: u32) -> Result<Response<Body>, Error> {
    let bucket = match Bucket::open(bucket) {
        Ok(bucket) => bucket,
        Err(e) => return kv_error(&e),
    };
    let value = vec![b'v'; kib.saturating_mul(1024)];
    for i in 0..n {
        if let Err(e) = bucket.set(&format!("{prefix}{i}"), &value) {
            return text(kv_status(&e), format!("stored={i} error: {e}"));
        }
    }
    text(StatusCode::OK, format!("stored={n}"))
}

fn bad_number() -> Result<Response<Body>, Error> {
    text(StatusCode::BAD_REQUEST, "not a number")
}

fn text(status: StatusCode, body: impl Into<String>) -> Result<Response<Body>, Error> {
    Ok(Response::builder()
        .status(status)
        .body(body.into().into())?)
}

/// The `%XX`-decoded value of `name` in a query string.
fn query_arg(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| decode(value))
}

/// Decodes `%XX` escapes; anything malformed is kept as is.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

weft_sdk::web_role!(handle);

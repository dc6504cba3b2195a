//! WASIp3 web roles: a `wasi:http/handler@0.3.0` component built by another
//! toolchain than Weft's SDK (`tests/guests/p3-hello`, plain wit-bindgen
//! 0.60, the version wasmtime 48 builds its own p3 test programs with) runs
//! on wasmtime's own p3 host, is served by `weft serve` and as a web role,
//! and is held to every limit a p2 role is: its deadline, fuel, memory cap,
//! egress allowlist and admission, while a p2 neighbour keeps answering.
//! How one instance serves several requests is tested in `p3_instances.rs`.

use crate::support::{Upstream, call, eventually, http, runtime, serve, spec, up, web_role};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_sandbox::{EgressAllowlist, SandboxLimits, WebRole};
use weft_test_artifacts::{HELLO_WEB, P3_HELLO, P3_SDK_WEB};

pub(crate) fn limits() -> SandboxLimits {
    SandboxLimits {
        deadline_ms: 1500,
        ..SandboxLimits::default()
    }
}

/// The instance counters the guest reports: (served, peak in flight).
pub(crate) fn counters(reply: &crate::support::Reply) -> (u32, u32) {
    let read = |name: &str| {
        reply.headers[name]
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (read("x-served"), read("x-peak"))
}

/// A host of wasmtime's own making (its p3 `wasi:http` and WASI, nothing
/// of Weft's), as wasmtime 48's `crates/wasi-http/tests/all/p3` runs its
/// p3 test programs: the guest is a valid p3 component by wasmtime's
/// measure before Weft serves it.
mod bare_host {
    use wasmtime::component::ResourceTable;
    use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
    use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

    pub struct Ctx {
        pub table: ResourceTable,
        pub wasi: WasiCtx,
        pub http: WasiHttpCtx,
    }

    impl WasiView for Ctx {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView {
                ctx: &mut self.wasi,
                table: &mut self.table,
            }
        }
    }

    impl WasiHttpView for Ctx {
        fn http(&mut self) -> WasiHttpCtxView<'_> {
            WasiHttpCtxView {
                ctx: &mut self.http,
                table: &mut self.table,
                hooks: Default::default(),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_p3_component_answers_on_wasmtimes_own_p3_host() -> wasmtime::Result<()> {
    use wasmtime::component::{Component, Linker, ResourceTable};
    use wasmtime::{Config, Engine, Store};
    use wasmtime_wasi_http::WasiHttpView as _;
    use wasmtime_wasi_http::p3::Request;
    use wasmtime_wasi_http::p3::bindings::Service;

    let mut config = Config::new();
    config.wasm_component_model_async(true);
    let engine = Engine::new(&config)?;
    let component = Component::from_file(&engine, P3_HELLO)?;
    let mut linker = Linker::new(&engine);
    // Rust's wasm32-wasip2 std imports WASIp2; the handler, WASIp3.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    // Its one VMBus import (`wasi:config/store`) is Weft's: stubs here,
    // which `/` never calls.
    let mut config = linker.instance("wasi:config/store@0.2.0-rc.1")?;
    for name in ["get", "get-all"] {
        config.func_new(name, |_, _, _, _| {
            Err(wasmtime::format_err!("no settings on this host"))
        })?;
    }
    let mut store = Store::new(
        &engine,
        bare_host::Ctx {
            table: ResourceTable::new(),
            wasi: wasmtime_wasi::WasiCtx::builder().build(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
        },
    );
    let service = Service::instantiate_async(&mut store, &component, &linker).await?;
    let request = http::Request::builder()
        .uri("http://localhost/")
        .body(Empty::<Bytes>::new())?;
    let (request, io) = Request::from_http(store.data_mut().http().hooks, request);
    let (status, served, body) = store
        .run_concurrent(async |store| {
            let (answer, ()) = tokio::try_join!(
                async {
                    let response = match service.handle(store, request).await? {
                        Ok(response) => response,
                        Err(code) => return Err(wasmtime::format_err!("error code {code:?}")),
                    };
                    let response =
                        store.with(|store| response.into_http(store, async { Ok(()) }))?;
                    let (parts, body) = response.into_parts();
                    let body = body.collect().await?.to_bytes();
                    wasmtime::error::Ok((parts.status, parts.headers["x-served"].clone(), body))
                },
                async { wasmtime::error::Ok(io.await?) }
            )?;
            wasmtime::error::Ok(answer)
        })
        .await??;
    assert_eq!(status, 200);
    assert_eq!(served, "1");
    assert_eq!(&body[..], b"hello from p3\n");
    Ok(())
}

#[tokio::test]
async fn weft_serve_serves_a_foreign_p3_component() {
    let weft = serve(P3_HELLO, &[]);
    for _ in 0..3 {
        let reply = http("GET", &format!("{}/", weft.url("web")), "")
            .await
            .unwrap();
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "hello from p3\n"),
            "{reply:?}"
        );
        // A fresh instance for each request, as for a p2 role.
        assert_eq!(counters(&reply), (1, 1), "{reply:?}");
    }
    let missing = http("GET", &format!("{}/nowhere", weft.url("web")), "")
        .await
        .unwrap();
    assert_eq!(missing.status, 404, "{missing:?}");
}

#[tokio::test]
async fn a_p3_roles_bodies_pass_the_size_limit_and_the_meters() {
    let role = web_role(
        P3_HELLO,
        SandboxLimits {
            max_request_body_kib: 1,
            ..limits()
        },
    );
    let body = "x".repeat(2048);
    let declared = http::Request::builder()
        .method("POST")
        .uri("http://localhost/")
        .header("host", "localhost")
        .header("content-length", body.len())
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let too_large = role.handle(declared).await;
    assert_eq!(too_large.status(), 413);
    let hello = call(&role, "POST", "/", "small").await;
    assert_eq!(hello.status, 200, "{hello:?}");
    let bytes = role.usage().counters.bytes;
    assert_eq!(bytes.http_out, 14, "{bytes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_up_runs_a_p3_role_beside_a_p2_one_from_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.toml");
    std::fs::write(
        &path,
        format!(
            "[service]\nname = \"mixed\"\n\n\
             [roles.p3]\nkind = \"web\"\ncomponent = {P3_SDK_WEB:?}\nlisten = \"127.0.0.1:0\"\n\
             [roles.p3.limits]\nrequests-per-instance = 4\nconcurrent-requests-per-instance = 2\n\
             instance-idle-timeout-ms = 5000\n\n\
             [roles.p2]\nkind = \"web\"\ncomponent = {HELLO_WEB:?}\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let weft = up(&path);
    let p3 = http("GET", &format!("{}/", weft.url("p3")), "")
        .await
        .unwrap();
    assert_eq!(
        (p3.status, p3.body.as_str()),
        (200, "hello from the p3 SDK\n"),
        "{p3:?}"
    );
    let p2 = http("GET", &format!("{}/", weft.url("p2")), "")
        .await
        .unwrap();
    assert_eq!(p2.status, 200, "{p2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p3_spin_is_cut_at_its_deadline_while_a_p2_neighbour_keeps_answering() {
    // Fuel to spare: a tight loop burns billions of units a second, and it
    // is the deadline that must stop this one.
    let hog = Arc::new(web_role(
        P3_HELLO,
        SandboxLimits {
            fuel: 1_000_000_000_000,
            ..limits()
        },
    ));
    assert!(hog.is_p3());
    let neighbour = web_role(HELLO_WEB, SandboxLimits::default());
    assert!(!neighbour.is_p3());
    let spinning = {
        let hog = hog.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let reply = call(&hog, "GET", "/spin", "").await;
            (reply, started.elapsed())
        })
    };
    let mut answered = 0;
    while !spinning.is_finished() {
        let reply = call(&neighbour, "GET", "/", "").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        answered += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (cut, took) = spinning.await.unwrap();
    assert_eq!(cut.status, 504, "{cut:?}");
    assert_eq!(cut.headers["x-weft-failure"], "deadline");
    let deadline = limits().deadline();
    assert!(
        took >= deadline && took <= deadline + deadline / 4,
        "cut after {took:?}; the deadline is {deadline:?}"
    );
    assert!(answered >= 5, "the neighbour answered only {answered}");
    // The instance is gone; the role serves its next request afresh.
    let next = call(&hog, "GET", "/", "").await;
    assert_eq!((next.status, counters(&next)), (200, (1, 1)), "{next:?}");
    // Its instance ends once the body is read (its store dropped just after).
    eventually(Duration::from_secs(2), "no instance left", || {
        let gone = hog.usage().counters.instances_live == 0;
        async move { gone.then_some(()) }
    })
    .await;
    let failures = hog.usage().counters.failures;
    assert!(failures.contains(&("deadline", 1)), "{failures:?}");
}

#[tokio::test]
async fn a_p3_role_runs_out_of_fuel() {
    let role = web_role(
        P3_HELLO,
        SandboxLimits {
            fuel: 50_000_000,
            ..limits()
        },
    );
    let burnt = call(&role, "GET", "/spin", "").await;
    assert_eq!(burnt.status, 500, "{burnt:?}");
    assert_eq!(burnt.headers["x-weft-failure"], "fuel");
    let next = call(&role, "GET", "/", "").await;
    assert_eq!(next.status, 200, "{next:?}");
}

#[tokio::test]
async fn a_p3_roles_memory_cap_bites_and_ends_only_its_request() {
    let role = web_role(
        P3_HELLO,
        SandboxLimits {
            memory_mib: 32,
            ..limits()
        },
    );
    let aborted = call(&role, "GET", "/grow?mib=64", "").await;
    assert_eq!(aborted.status, 500, "{aborted:?}");
    assert_eq!(aborted.headers["x-weft-failure"], "memory");
    let small = call(&role, "GET", "/grow?mib=8", "").await;
    assert_eq!(
        (small.status, small.body.as_str()),
        (200, "grew 2048 pages\n"),
        "{small:?}"
    );
}

fn egress_role(allow: &[String]) -> WebRole {
    let (mut spec, _) = spec("web", &[], &[], limits());
    spec.grants.egress = EgressAllowlist::parse(allow).unwrap();
    runtime().web_role(Path::new(P3_HELLO), spec).unwrap()
}

#[tokio::test]
async fn a_p3_roles_outgoing_requests_pass_the_egress_allowlist() {
    let (allowed, other) = (Upstream::start().await, Upstream::start().await);
    let role = egress_role(&[allowed.origin()]);
    let url = |upstream: &Upstream| format!("/fetch?url={}/x", upstream.origin());
    let through = call(&role, "GET", &url(&allowed), "").await;
    assert_eq!(
        (through.status, through.body.as_str()),
        (200, "upstream 200, 5 bytes\n"),
        "{through:?}"
    );
    let denied = call(&role, "GET", &url(&other), "").await;
    assert_eq!(denied.status, 502, "{denied:?}");
    assert!(denied.body.contains("HttpRequestDenied"), "{denied:?}");
    assert_eq!(other.connections(), 0);
    assert_eq!(allowed.connections(), 1);
    assert_eq!(role.usage().counters.bytes.egress_in, 5);
    // No grant, no way out.
    let closed = egress_role(&[]);
    let denied = call(&closed, "GET", &url(&allowed), "").await;
    assert!(denied.body.contains("HttpRequestDenied"), "{denied:?}");
    assert_eq!(allowed.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p3_role_is_held_to_its_in_flight_slots() {
    let role = Arc::new(web_role(
        P3_HELLO,
        SandboxLimits {
            max_in_flight: 1,
            max_queued: 0,
            ..limits()
        },
    ));
    let slow = {
        let role = role.clone();
        tokio::spawn(async move { call(&role, "GET", "/sleep?ms=600", "").await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let turned_away = call(&role, "GET", "/", "").await;
    assert_eq!(turned_away.status, 503, "{turned_away:?}");
    assert_eq!(turned_away.headers["x-weft-failure"], "capacity");
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 200, "{slow:?}");
    let after = call(&role, "GET", "/", "").await;
    assert_eq!(after.status, 200, "{after:?}");
}

#[tokio::test]
async fn a_p3_role_reads_its_settings_over_the_vmbus() {
    let (mut spec, _) = spec("web", &[], &[], limits());
    spec.grants
        .settings
        .insert("greeting".into(), "hello".into());
    let role = runtime().web_role(Path::new(P3_HELLO), spec).unwrap();
    let setting = call(&role, "GET", "/setting?name=greeting", "").await;
    assert_eq!(
        (setting.status, setting.body.as_str()),
        (200, "greeting=hello\n"),
        "{setting:?}"
    );
    let missing = call(&role, "GET", "/setting?name=other", "").await;
    assert_eq!(missing.status, 404, "{missing:?}");
    // Each call passed the role's VMBus limiter, as a p2 guest's does.
    let config = role
        .usage()
        .calls
        .into_iter()
        .find(|c| c.interface.name() == "config")
        .expect("config is a metered interface");
    assert_eq!(config.admitted, 2, "{config:?}");
}

#[tokio::test]
async fn a_p3_role_written_with_the_sdk_reads_its_body_and_its_settings() {
    let (mut spec, _) = spec("web", &[], &[], limits());
    spec.grants.settings.insert("greeting".into(), "hi".into());
    let role = runtime().web_role(Path::new(P3_SDK_WEB), spec).unwrap();
    assert!(role.is_p3());
    let hello = call(&role, "GET", "/", "").await;
    assert_eq!(
        (hello.status, hello.body.as_str()),
        (200, "hi from the p3 SDK\n"),
        "{hello:?}"
    );
    let echo = call(&role, "POST", "/echo", "ping").await;
    assert_eq!((echo.status, echo.body.as_str()), (200, "ping"), "{echo:?}");
    assert_eq!(echo.headers["content-type"], "text/plain");
    let missing = call(&role, "GET", "/nowhere", "").await;
    assert_eq!(missing.status, 404, "{missing:?}");
}

#[tokio::test]
async fn a_p3_roles_lifecycle_hooks_run_in_sandboxes_of_their_own() {
    let (spec_ok, _) = spec("web", &[], &[], limits());
    let role = runtime().web_role(Path::new(P3_SDK_WEB), spec_ok).unwrap();
    assert!(role.has_hooks());
    role.start_hook().await.unwrap();
    role.stop_hook().await.unwrap();
    let (mut refusing, _) = spec("web", &[], &[], limits());
    refusing
        .grants
        .settings
        .insert("refuse-start".into(), "not today".into());
    let role = runtime().web_role(Path::new(P3_SDK_WEB), refusing).unwrap();
    let refused = role.start_hook().await.unwrap_err().to_string();
    assert!(refused.contains("not today"), "{refused}");
}

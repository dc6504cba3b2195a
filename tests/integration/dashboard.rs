//! The dashboard at `/ui`, tested in a real browser (headless Chromium
//! through chromedriver) on the pipeline example (its web and worker roles,
//! the queue `jobs` and the bucket `jobs`): before signing in it shows the
//! sign-in form and nothing of the services; a wrong token is refused on
//! the page; the right one shows the pipeline's roles ready. Then, from the
//! page: the worker scaled from 2 to 3, every instance ready; a job posted
//! to the web role seen as a key in the bucket panel; a message sent from
//! the queue panel seen in the depth chart, in the worker's recent output
//! and in the bucket; an upgrade from the form (the web role's memory)
//! shown step by step until done. Screenshots of the dashboard at
//! 1280×800 are kept in `target/test-artefacts/` (`dashboard.png`, the
//! page's top; `dashboard-pipeline.png`, its roles, queue and bucket);
//! signing out ends the session.
//!
//! The page is read only through the DOM contract of issue 16 (ids and
//! `data-*` attributes, form fields by name), never through its wording or
//! layout; roles are found by name, never by position.

mod browser;
mod page;

use crate::hosting::{Host, TOKEN, token_file};
use crate::support::{eventually, http, pipeline_manifest, write_manifest};
use browser::Browser;
use fantoccini::Locator;
use page::{SERVICE, SIGN_IN, bucket_keys, role_ready, service_script, sign_in, upgrade};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// How long the page gets to show a change (it polls every 2 s; instances
/// start and rollouts settle in a few seconds).
const LIMIT: Duration = Duration::from_secs(60);

/// How long the message sent from the queue panel waits before a worker
/// may take it: long enough for the host's queue history (a sample every
/// 5 s) to see it in the queue twice, so that the chart shows it.
const SEND_DELAY_MS: u64 = 12_000;

/// Writes the pipeline example's manifest for [`SERVICE`] into `dir`, with
/// the components tests/artifacts built: two upgrade domains (so an
/// upgrade moves domain by domain), two workers, the web role at 64 MiB.
fn pipeline_dir(dir: &Path) {
    let manifest = pipeline_manifest(
        SERVICE,
        "upgrade-domains = 2\nupgrade-settle-ms = 300\nupgrade-timeout-secs = 30",
        "\n[roles.web.limits]\nmemory-mib = 64\n\n[buckets.jobs]\nttl-seconds = 3600\n",
    );
    write_manifest(dir, &manifest);
}

/// Each role of a service's status and its declared instance count.
fn declared(status: &Value) -> Vec<(String, usize)> {
    status["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let count = r["declared"].as_u64().unwrap();
            (
                r["name"].as_str().unwrap().to_owned(),
                usize::try_from(count).unwrap(),
            )
        })
        .collect()
}

/// Role `name` of a service's status, found by name.
fn api_role<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["roles"]
        .as_array()
        .and_then(|roles| roles.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no role {name} in {status}"))
}

/// Waits until the page shows every role of the status's roles with its
/// declared instances, all ready.
async fn all_ready(browser: &Browser, status: &Value) -> Value {
    let declared = declared(status);
    browser
        .wait_until(
            LIMIT,
            &format!("the roles with their instances {declared:?}, all ready"),
            &service_script(),
            |v| declared.iter().all(|(role, n)| role_ready(v, role, *n)),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_and_works_the_pipeline_in_a_real_browser() {
    // First, so that a machine without Chromium fails in one line.
    let browser = Browser::start().await.unwrap();
    let client = &browser.client;
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(&dir.path().join("state"), &token_file(dir.path()));
    let folder = dir.path().join("svc");
    pipeline_dir(&folder);
    let (ok, stdout, stderr) = host.cli(&["deploy", "--no-build", folder.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    let status = host.ready(SERVICE).await;
    assert_eq!(api_role(&status, "worker")["declared"], 2, "{status}");
    let web = host.url(SERVICE, "web").await;
    let ui = format!("{}/ui", host.admin);

    // a. Not signed in: the sign-in form, nothing of the services, and the
    // API refuses.
    client.goto(&ui).await.unwrap();
    let page = browser
        .wait_until(LIMIT, "the sign-in form", SIGN_IN, |p| {
            p["form"] == true && p["token"] == true && p["button"] == true
        })
        .await;
    assert_eq!(page["services"], false, "the services show before sign-in");
    let html = page["html"].as_str().unwrap();
    assert!(
        !html.contains(SERVICE),
        "the sign-in page names the service"
    );
    let refused = http("GET", &format!("{}/v1/services", host.admin), "")
        .await
        .unwrap();
    assert_eq!(refused.status, 401, "{refused:?}");

    // b. A wrong token: the form says so, and still nothing of the services.
    sign_in(&browser, "not-the-token").await;
    let page = browser
        .wait_until(LIMIT, "#signin-error shown, with a reason", SIGN_IN, |p| {
            p["error_shown"] == true && p["error_text"].as_str().is_some_and(|t| !t.is_empty())
        })
        .await;
    assert_eq!(page["services"], false, "a wrong token shows the services");
    let html = page["html"].as_str().unwrap();
    assert!(!html.contains(SERVICE), "a wrong token shows the service");

    // c. The right token: the pipeline's roles, every instance ready (as
    // many as the API declares: the web role's upgrade domains, the
    // worker's two), each role with its recent output panel.
    sign_in(&browser, TOKEN).await;
    let view = all_ready(&browser, &status).await;
    assert_eq!(view["hosts"], 1, "one [data-host] outside a fabric: {view}");
    for role in ["web", "worker"] {
        assert!(view["roles"][role]["logs"].is_string(), "{role}: {view}");
    }
    let session = client.get_named_cookie("weft_session").await.unwrap();
    let cookie = session.to_string();
    assert!(
        session.value().len() == 64 && session.value().bytes().all(|b| b.is_ascii_hexdigit()),
        "{cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    // d. Scale the worker from 2 to 3 from the page: three ready.
    page::scale(&browser, "worker", 3).await;
    let status = host.service(SERVICE).await;
    assert_eq!(api_role(&status, "worker")["declared"], 3, "{status}");

    // e. A job posted to the web role: the worker's result is stored under
    // its id, which the bucket panel lists.
    let posted = http("POST", &format!("{web}/jobs"), "seen from the dashboard")
        .await
        .unwrap();
    assert_eq!(posted.status, 202, "{posted:?}");
    let posted: Value = serde_json::from_str(&posted.body).unwrap();
    let job = posted["id"].as_str().unwrap().to_owned();
    eventually(LIMIT, "the posted job to be done", || async {
        let reply = http("GET", &format!("{web}/jobs/{job}"), "").await.ok()?;
        (reply.status == 200 && reply.body.contains(r#""status":"done""#)).then_some(())
    })
    .await;
    bucket_keys(&browser, "jobs", &job).await;

    // f. A message sent from the queue panel, delayed: the depth chart
    // shows it waiting (a sample taken after the send above the line's
    // floor); then a worker takes it and, as it names a job but carries no
    // text, says so on its output (shown in the worker's panel) and records
    // the job as failed (a key in the bucket panel).
    let sent = format!("dash-{}", std::process::id());
    let before = page::chart_samples(&browser, "jobs").await;
    page::send(
        &browser,
        "jobs",
        &serde_json::json!({ "id": sent }).to_string(),
        SEND_DELAY_MS,
    )
    .await;
    page::chart_rises(&browser, "jobs", before).await;
    page::peek(&browser, "jobs").await;
    browser
        .wait_until(
            LIMIT,
            &format!("the worker's output naming job {sent}"),
            &service_script(),
            |v| {
                v["roles"]["worker"]["logs"]
                    .as_str()
                    .is_some_and(|logs| logs.contains(&format!("job {sent} failed")))
            },
        )
        .await;
    bucket_keys(&browser, "jobs", &sent).await;

    // g. Upgrade from the page's form: the web role's memory, 64 → 96 MiB.
    upgrade(&browser, |manifest| {
        manifest.replace("memory-mib = 64", "memory-mib = 96")
    })
    .await;
    let status = eventually(LIMIT, "the upgrade to end", || async {
        let status = host.service(SERVICE).await;
        let operation = &status["operation"];
        (operation["kind"] == "upgrade" && operation["state"] != "running").then_some(status)
    })
    .await;
    assert_eq!(status["operation"]["state"], "done", "{status}");
    assert_eq!(status["generation"], 2, "{status}");
    let source = host
        .api("GET", &format!("/v1/services/{SERVICE}/source"), "")
        .await;
    assert!(source.body.contains("memory-mib = 96"), "{source:?}");
    // The page shows that operation (not the scale before it): its state
    // and each of its steps, done.
    let steps: Vec<String> = status["operation"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    assert!(!steps.is_empty(), "{status}");
    page::operation_done(&browser, &steps).await;
    all_ready(&browser, &host.ready(SERVICE).await).await;
    // The job's result outlived the upgrade.
    let reply = http("GET", &format!("{web}/jobs/{job}"), "").await.unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");

    // h. The screenshots CI keeps (.ci/run lists target/test-artefacts), at
    // 1280×800: the page's top (the hosts, the pipeline, its finished
    // upgrade and the top of its roles, each shown within it), then the
    // pipeline's roles, queue chart and bucket further down.
    browser
        .eval("window.scrollTo(0, 0); return null;")
        .await
        .unwrap();
    let within = browser
        .eval(&format!(
            "const height = window.innerHeight;
             const top = css => {{ const e = document.querySelector(css); return e ? e.getBoundingClientRect().top : null; }};
             return [top({operation}), top({web}), top({worker})].map(t => t !== null && t >= 0 && t < height);",
            operation = Value::from(format!(r#"section[data-service="{SERVICE}"] [data-operation]"#)),
            web = Value::from(format!(r#"section[data-service="{SERVICE}"] [data-role="web"]"#)),
            worker = Value::from(format!(r#"section[data-service="{SERVICE}"] [data-role="worker"]"#)),
        ))
        .await
        .unwrap();
    assert_eq!(
        within,
        serde_json::json!([true, true, true]),
        "the operation, web and worker do not all begin within the page's top"
    );
    browser.screenshot("dashboard.png").await.unwrap();
    browser
        .eval(&format!(
            "document.querySelector({}).scrollIntoView(); return null;",
            Value::from(format!(
                r#"section[data-service="{SERVICE}"] [data-role="worker"]"#
            ))
        ))
        .await
        .unwrap();
    browser.screenshot("dashboard-pipeline.png").await.unwrap();

    // Signing out ends the session: the sign-in form again, on a reload too.
    browser
        .act("sign out", || async {
            client.find(Locator::Css("#signout")).await?.click().await
        })
        .await;
    browser
        .wait_until(LIMIT, "the sign-in form after signing out", SIGN_IN, |p| {
            p["form"] == true && p["services"] == false
        })
        .await;
    client.goto(&ui).await.unwrap();
    let page = browser
        .wait_until(LIMIT, "the sign-in form on a reload", SIGN_IN, |p| {
            p["form"] == true
        })
        .await;
    assert_eq!(page["services"], false, "the session outlived sign-out");
    browser.close().await.unwrap();
}

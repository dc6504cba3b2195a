//! The dashboard's DOM contract (issue 16), as the browser test reads and
//! works it: scripts that read the sign-in page, a service's roles and
//! operation, a queue's chart; and the page's actions (sign in, scale,
//! upgrade, send, peek, list a bucket's keys), each followed by a bounded
//! wait for what it should show.
//!
//! Parts are found by `data-*` attributes, ids and form field names only,
//! never by wording, position or layout.

use super::LIMIT;
use super::browser::Browser;
use fantoccini::Locator;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The service's name: the pipeline's, and found nowhere in the sign-in
/// page (which the test checks).
pub const SERVICE: &str = "pipeline";

/// Reads the sign-in page's parts, and whether anything of the app shows.
pub const SIGN_IN: &str = r#"
const error = document.querySelector('#signin-error');
return {
    form: !!document.querySelector('form#signin'),
    token: !!document.querySelector('input#token[name=token]'),
    button: !!document.querySelector('button#signin-button'),
    error_shown: !!error && error.getClientRects().length > 0,
    error_text: error ? error.innerText.trim() : null,
    services: !!document.querySelector('#services'),
    html: document.documentElement.outerHTML,
};"#;

/// Reads the service's section: each role's counts, its instances' states
/// and its recent output, and the operation shown, if any.
/// Expects `name` to be defined before it (see [`service_script`]).
const SERVICE_VIEW: &str = r#"
const section = document.querySelector(`#services section[data-service="${name}"]`);
if (!section) { return null; }
const roles = {};
for (const role of section.querySelectorAll('[data-role]')) {
    const logs = section.querySelector(`pre[data-logs="${CSS.escape(role.dataset.role)}"]`);
    roles[role.dataset.role] = {
        ready: role.dataset.ready,
        declared: role.dataset.declared,
        instances: [...role.querySelectorAll('[data-instance]')].map(i => i.dataset.state),
        logs: logs ? logs.textContent : null,
    };
}
const operation = section.querySelector('[data-operation]');
return {
    hosts: document.querySelectorAll('#hosts [data-host]').length,
    roles,
    operation: operation && {
        state: operation.dataset.state,
        // textContent: a finished operation's steps are folded in a
        // closed <details>, which renders (and innerText reads) nothing.
        steps: [...operation.querySelectorAll('li[data-step]')].map(s => ({
            text: s.textContent.trim(),
            done: s.dataset.done,
        })),
    },
};"#;

/// Reads a panel (`card`, a CSS selector, defined before it): whether it is
/// there, its text, whether a form of its own is open, and the y of each
/// point of each line of its chart (y grows downwards).
const PANEL_VIEW: &str = r#"
const panel = document.querySelector(card);
if (!panel) { return null; }
const svg = panel.querySelector('svg');
return {
    text: panel.innerText,
    form_open: !!panel.querySelector('form[data-form]'),
    lines: svg && [...svg.querySelectorAll('polyline')].map(line =>
        (line.getAttribute('points') || '').trim().split(/\s+/).filter(p => p)
            .map(p => Number(p.split(',')[1]))),
};"#;

/// [`SERVICE_VIEW`] for [`SERVICE`], its name given as a JSON string.
pub fn service_script() -> String {
    format!("const name = {};\n{SERVICE_VIEW}", Value::from(SERVICE))
}

/// [`PANEL_VIEW`] of the panel `css` selects.
fn panel_script(css: &str) -> String {
    format!("const card = {};\n{PANEL_VIEW}", Value::from(css))
}

/// The CSS selector of [`SERVICE`]'s section.
fn section() -> String {
    format!(r#"#services section[data-service="{SERVICE}"]"#)
}

/// The CSS selector of queue `queue`'s panel.
fn queue_panel(queue: &str) -> String {
    format!(r#"{} [data-queue="{queue}"]"#, section())
}

/// Whether role `role` in a [`SERVICE_VIEW`] value has `count` instances
/// declared, ready, and shown ready.
pub fn role_ready(view: &Value, role: &str, count: usize) -> bool {
    let role = &view["roles"][role];
    let count = count.to_string();
    let states = role["instances"].as_array();
    role["declared"] == count.as_str()
        && role["ready"] == count.as_str()
        && states.is_some_and(|s| s.len().to_string() == count && s.iter().all(|s| s == "ready"))
}

/// Clicks the element `css` selects (again, should the page have redrawn
/// it or not drawn it yet).
async fn click(browser: &Browser, what: &str, css: &str) {
    let client = &browser.client;
    browser
        .act(what, || async {
            client.find(Locator::Css(css)).await?.click().await
        })
        .await;
}

/// Types `token` into the sign-in form and submits it.
pub async fn sign_in(browser: &Browser, token: &str) {
    let client = &browser.client;
    browser
        .act("sign in", || async {
            let field = client.find(Locator::Css("input#token")).await?;
            field.clear().await?;
            field.send_keys(token).await?;
            client
                .find(Locator::Css("button#signin-button"))
                .await?
                .click()
                .await
        })
        .await;
}

/// Sets `role`'s instance count to `count` with its scale control, and
/// waits until the page shows that many declared and ready.
pub async fn scale(browser: &Browser, role: &str, count: usize) {
    let client = &browser.client;
    let role_css = format!(r#"{} [data-role="{role}"]"#, section());
    let input = format!(r#"{role_css} input[data-action="scale-count"]"#);
    let button = format!(r#"{role_css} button[data-action="scale"]"#);
    browser
        .act(&format!("scale {role} to {count}"), || async {
            let field = client.find(Locator::Css(&input)).await?;
            field.clear().await?;
            field.send_keys(&count.to_string()).await?;
            client.find(Locator::Css(&button)).await?.click().await
        })
        .await;
    browser
        .wait_until(
            LIMIT,
            &format!("{role} shown with {count} instances declared and ready"),
            &service_script(),
            |v| role_ready(v, role, count),
        )
        .await;
}

/// Opens the upgrade form, waits for its manifest (prefilled from the
/// service's `/source`), replaces it with `edit` of it, and submits.
pub async fn upgrade(browser: &Browser, edit: impl Fn(&str) -> String) {
    let client = &browser.client;
    let open = format!(r#"{} button[data-action="upgrade"]"#, section());
    let form = format!(r#"{} form[data-form="upgrade"]"#, section());
    let textarea = format!("{form} textarea[name=manifest]");
    let submit = format!("{form} button[type=submit]");
    click(browser, "open the upgrade form", &open).await;
    let prefilled = browser
        .wait_until(
            LIMIT,
            "the upgrade form's manifest, prefilled from /source",
            &format!(
                "const t = document.querySelector({}); return t ? t.value : null;",
                Value::from(textarea.as_str())
            ),
            |v| v.as_str().is_some_and(|t| t.contains("[service]")),
        )
        .await;
    let prefilled = prefilled.as_str().unwrap_or_default();
    let manifest = edit(prefilled);
    assert_ne!(manifest, prefilled, "the edit changes nothing");
    browser
        .act("submit the upgrade form", || async {
            let field = client.find(Locator::Css(&textarea)).await?;
            field.clear().await?;
            field.send_keys(&manifest).await?;
            client.find(Locator::Css(&submit)).await?.click().await
        })
        .await;
}

/// Waits until the page shows the operation done, with `steps` (the API's)
/// each shown and done, in order.
pub async fn operation_done(browser: &Browser, steps: &[String]) {
    browser
        .wait_until(
            LIMIT,
            &format!("the upgrade shown done, with its steps {steps:?} all done"),
            &service_script(),
            |v| {
                let operation = &v["operation"];
                let shown = operation["steps"].as_array();
                operation["state"] == "done"
                    && shown.is_some_and(|shown| {
                        shown.len() == steps.len()
                            && shown.iter().zip(steps).all(|(shown, step)| {
                                shown["text"].as_str().is_some_and(|t| t.contains(step))
                                    && shown["done"].is_string()
                                    && shown["done"] != "false"
                            })
                    })
            },
        )
        .await;
}

/// Sends `body` to `queue` from its panel's send form, delayed by
/// `delay_ms`, and waits until the form closes (it stays open, with the
/// reason in the panel, when the send fails).
pub async fn send(browser: &Browser, queue: &str, body: &str, delay_ms: u64) {
    let client = &browser.client;
    let panel = queue_panel(queue);
    let form = format!(r#"{panel} form[data-form="send"]"#);
    let (text, delay) = (
        format!("{form} textarea[name=body]"),
        format!("{form} input[name=delay_ms]"),
    );
    let submit = format!("{form} button[type=submit]");
    click(
        browser,
        &format!("open {queue}'s send form"),
        &format!(r#"{panel} button[data-action="send"]"#),
    )
    .await;
    browser
        .act(
            &format!("fill in and submit {queue}'s send form"),
            || async {
                let field = client.find(Locator::Css(&text)).await?;
                field.clear().await?;
                field.send_keys(body).await?;
                let field = client.find(Locator::Css(&delay)).await?;
                field.clear().await?;
                field.send_keys(&delay_ms.to_string()).await?;
                client.find(Locator::Css(&submit)).await?.click().await
            },
        )
        .await;
    browser
        .wait_until(
            LIMIT,
            &format!("{queue}'s send form to close, the message sent"),
            &panel_script(&panel),
            |v| v["form_open"] == false,
        )
        .await;
}

/// How many samples `queue`'s depth chart shows now (its longest line's
/// points; 0 when it has none yet).
pub async fn chart_samples(browser: &Browser, queue: &str) -> usize {
    let seen = browser
        .eval(&panel_script(&queue_panel(queue)))
        .await
        .unwrap_or_else(|e| json!({ "script error": e.to_string() }));
    seen["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_array)
        .map(Vec::len)
        .max()
        .unwrap_or(0)
}

/// Waits until `queue`'s depth chart (an `<svg>` in its panel) shows a
/// sample after the first `before` higher than the line's floor: the
/// queue deeper after a send than at some other time of the chart.
pub async fn chart_rises(browser: &Browser, queue: &str, before: usize) {
    browser
        .wait_until(
            LIMIT,
            &format!(
                "a line of {queue}'s chart to rise above its floor after its first {before} points"
            ),
            &panel_script(&queue_panel(queue)),
            |v| {
                v["lines"].as_array().is_some_and(|lines| {
                    lines.iter().filter_map(Value::as_array).any(|ys| {
                        let ys: Vec<f64> = ys.iter().filter_map(Value::as_f64).collect();
                        let floor = ys.iter().copied().fold(f64::MIN, f64::max);
                        ys.iter().skip(before).any(|y| *y < floor)
                    })
                })
            },
        )
        .await;
}

/// Peeks `queue` from its panel: the panel then shows what the queue and
/// its poison queue hold (naming both).
pub async fn peek(browser: &Browser, queue: &str) {
    let panel = queue_panel(queue);
    click(
        browser,
        &format!("peek {queue}"),
        &format!(r#"{panel} button[data-action="peek"]"#),
    )
    .await;
    let poison = format!("{queue}-poison");
    browser
        .wait_until(
            LIMIT,
            &format!("{queue}'s panel to show the peek of {queue} and {poison}"),
            &panel_script(&panel),
            |v| v["text"].as_str().is_some_and(|t| t.contains(&poison)),
        )
        .await;
}

/// Lists `bucket`'s keys from its panel until `key` shows among them
/// (listing again every few seconds: a key written after a listing shows
/// only in the next).
pub async fn bucket_keys(browser: &Browser, bucket: &str, key: &str) {
    let panel = format!(r#"{} [data-bucket="{bucket}"]"#, section());
    let list = format!(r#"{panel} button[data-action="keys"]"#);
    let give_up = Instant::now() + LIMIT;
    let mut seen = Value::Null;
    while Instant::now() < give_up {
        click(browser, &format!("list {bucket}'s keys"), &list).await;
        let relist = Instant::now() + Duration::from_secs(3);
        while Instant::now() < relist {
            seen = browser
                .eval(&panel_script(&panel))
                .await
                .unwrap_or_else(|e| json!({ "script error": e.to_string() }));
            if seen["text"].as_str().is_some_and(|t| t.contains(key)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    browser
        .fail(
            &format!("key {key} listed in bucket {bucket}'s panel (waited {LIMIT:?})"),
            &seen,
        )
        .await;
}

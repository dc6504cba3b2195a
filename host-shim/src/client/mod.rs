//! The CLI commands that drive a host through its admin API, like any other
//! client: `weft deploy`, `upgrade`, `status`, `scale`, `settings`, `logs`
//! and `remove`.
//!
//! A deploy or upgrade builds the roles (unless `--no-build`), uploads each
//! component the host does not have yet (by SHA-256), sends the manifest
//! and overlay naming them, then follows the operation, printing each step
//! until it is done or rolled back (a non-zero exit). Roles are named
//! `SERVICE/ROLE`, or just `ROLE` when one service on the host has it.

mod http;
mod table;

use crate::controller::status::{HostStatus, OperationStatus, ServiceStatus};
use crate::controller::store::{DeploymentSource, Digest};
use crate::logbook::LogLine;
use crate::{ClientArgs, DeployArgs, LogsArgs, RemoveArgs, ScaleArgs, SettingsArgs, StatusArgs};
use ::http::Method;
use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::Client;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often progress is polled.
const POLL: Duration = Duration::from_millis(200);
/// How long `deploy` and `scale` wait for instances to be ready.
const READY_WAIT: Duration = Duration::from_secs(300);

fn client(args: &ClientArgs) -> anyhow::Result<Client> {
    let url = args
        .admin
        .clone()
        .or_else(|| std::env::var("WEFT_ADMIN").ok())
        .unwrap_or_else(|| "http://127.0.0.1:9070".into());
    let default_state = crate::local::default_host_state_dir();
    let token =
        crate::admin::auth::client_token(args.token_file.as_deref(), default_state.as_deref())?;
    Client::new(&url, token)
}

/// Builds and uploads the components of the service in `args.manifest`;
/// returns its name and what to deploy.
async fn prepare(client: &Client, args: &DeployArgs) -> anyhow::Result<(String, DeploymentSource)> {
    let (manifest, environment) = crate::local::load_manifest(&args.manifest, args.env.as_deref())?;
    if !args.no_build {
        crate::builder::build_roles(&manifest)?;
    }
    let mut components = BTreeMap::new();
    for (name, role) in &manifest.roles {
        let bytes = std::fs::read(&role.component)
            .with_context(|| format!("{}: cannot read", role.component.display()))?;
        let digest = Digest::of(&bytes);
        let path = format!("/v1/blobs/{digest}");
        let (status, _) = client
            .call(Method::HEAD, &path, "application/wasm", Bytes::new())
            .await?;
        if status == ::http::StatusCode::NOT_FOUND {
            let size = bytes.len();
            let (status, body) = client
                .call(Method::PUT, &path, "application/wasm", Bytes::from(bytes))
                .await?;
            http::check(status, &body)?;
            println!("uploaded {name} {} ({} KiB)", digest.short(), size / 1024);
        } else {
            http::check(status, &[])?;
        }
        components.insert(name.clone(), digest);
    }
    let text = std::fs::read_to_string(&manifest.path)
        .with_context(|| format!("{}: cannot read", manifest.path.display()))?;
    Ok((
        manifest.service.clone(),
        DeploymentSource {
            manifest_file: manifest.path.display().to_string(),
            manifest: text,
            environment,
            components,
        },
    ))
}

/// `weft deploy DIR`: deploys a new service and waits for it to be ready.
pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let client = client(&args.client)?;
    let (name, source) = prepare(&client, &args).await?;
    let status: ServiceStatus = client
        .json(Method::PUT, &format!("/v1/services/{name}"), Some(&source))
        .await?;
    println!("deployed {name} generation {}", status.generation);
    for role in &status.roles {
        if let Some(url) = &role.url {
            println!("  {} listening {url}", role.name);
        }
    }
    if args.no_wait {
        return Ok(());
    }
    wait_ready(&client, &name).await
}

/// Waits until every role of `name` has its declared instances ready.
async fn wait_ready(client: &Client, name: &str) -> anyhow::Result<()> {
    let give_up = Instant::now() + READY_WAIT;
    let mut last = String::new();
    loop {
        let status: ServiceStatus = client
            .json(Method::GET, &format!("/v1/services/{name}"), None::<&()>)
            .await?;
        let progress: Vec<String> = status
            .roles
            .iter()
            .map(|r| format!("{} {}/{} ready", r.name, r.ready, r.declared))
            .collect();
        let progress = progress.join(", ");
        if progress != last {
            println!("  {progress}");
            last = progress;
        }
        if status.roles.iter().all(|r| r.ready >= r.declared) {
            println!("ready");
            return Ok(());
        }
        if Instant::now() >= give_up {
            bail!(
                "{name} is not ready after {} s: see `weft status {name}`",
                READY_WAIT.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `weft upgrade DIR`: a rolling upgrade, followed to its end.
pub async fn upgrade(args: DeployArgs) -> anyhow::Result<()> {
    let client = client(&args.client)?;
    let (name, source) = prepare(&client, &args).await?;
    let operation: OperationStatus = client
        .json(
            Method::POST,
            &format!("/v1/services/{name}/upgrade"),
            Some(&source),
        )
        .await?;
    follow(&client, &name, operation).await
}

/// Prints an operation's steps until it ends; an error if it was rolled back.
async fn follow(client: &Client, name: &str, started: OperationStatus) -> anyhow::Result<()> {
    println!(
        "{} of {name} to generation {}",
        started.kind, started.generation
    );
    let mut printed = 0;
    loop {
        let status: ServiceStatus = client
            .json(Method::GET, &format!("/v1/services/{name}"), None::<&()>)
            .await?;
        let Some(operation) = status
            .operation
            .filter(|op| op.generation == started.generation && op.kind == started.kind)
        else {
            bail!("the operation is no longer reported: see `weft status {name}`");
        };
        for step in operation.steps.iter().skip(printed) {
            println!("  {step}");
        }
        printed = printed.max(operation.steps.len());
        match operation.state.as_str() {
            "done" => return Ok(()),
            "rolled-back" => bail!(
                "rolled back: {}",
                operation.reason.unwrap_or_else(|| "no reason given".into())
            ),
            _ => {}
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Finds the service of `spec` (`SERVICE/ROLE`, or `ROLE` when one service has it).
async fn resolve_role(client: &Client, spec: &str) -> anyhow::Result<(String, String)> {
    if let Some((service, role)) = spec.split_once('/') {
        return Ok((service.to_owned(), role.to_owned()));
    }
    let host: HostStatus = client
        .json(Method::GET, "/v1/services", None::<&()>)
        .await?;
    let owners: Vec<&str> = host
        .services
        .iter()
        .filter(|s| s.roles.iter().any(|r| r.name == spec))
        .map(|s| s.name.as_str())
        .collect();
    match owners.as_slice() {
        [one] => Ok(((*one).to_owned(), spec.to_owned())),
        [] => bail!("no service on this host has a role '{spec}'"),
        many => bail!(
            "several services have a role '{spec}' ({}): say SERVICE/{spec}",
            many.join(", ")
        ),
    }
}

/// `weft status [SERVICE]`: a table (or `--json`).
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let client = client(&args.client)?;
    let host: HostStatus = match &args.service {
        Some(name) => HostStatus {
            services: vec![
                client
                    .json(Method::GET, &format!("/v1/services/{name}"), None::<&()>)
                    .await?,
            ],
        },
        None => {
            client
                .json(Method::GET, "/v1/services", None::<&()>)
                .await?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&host)?);
    } else {
        print!("{}", table::render(&host));
    }
    Ok(())
}

/// `weft scale [SERVICE/]ROLE N`.
pub async fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    let client = client(&args.client)?;
    let (service, role) = resolve_role(&client, &args.role).await?;
    let operation: OperationStatus = client
        .json(
            Method::PUT,
            &format!("/v1/services/{service}/roles/{role}/instances"),
            Some(&serde_json::json!({ "count": args.count })),
        )
        .await?;
    println!("{}", operation.step);
    wait_ready(&client, &service).await
}

/// `weft settings [SERVICE/]ROLE KEY=VALUE...`: a rolling settings change.
pub async fn settings(args: SettingsArgs) -> anyhow::Result<()> {
    let client = client(&args.client)?;
    let (service, role) = resolve_role(&client, &args.role).await?;
    let mut settings = BTreeMap::new();
    for pair in &args.settings {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("'{pair}' is not KEY=VALUE"))?;
        settings.insert(key.to_owned(), value.to_owned());
    }
    let operation: OperationStatus = client
        .json(
            Method::PUT,
            &format!("/v1/services/{service}/roles/{role}/settings"),
            Some(&serde_json::json!({ "settings": settings })),
        )
        .await?;
    follow(&client, &service, operation).await
}

#[derive(serde::Deserialize)]
struct LogPage {
    lines: Vec<LogLine>,
    next: u64,
}

/// `weft logs [SERVICE/]ROLE [-f]`: the role's last lines, then new ones.
pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let client = client(&args.client)?;
    let (service, role) = resolve_role(&client, &args.role).await?;
    let path = |after: u64, wait_ms: u64| {
        format!(
            "/v1/services/{service}/roles/{role}/logs?after={after}&limit=1000&wait_ms={wait_ms}"
        )
    };
    let page: LogPage = client.json(Method::GET, &path(0, 0), None::<&()>).await?;
    let skip = page.lines.len().saturating_sub(args.lines);
    for line in &page.lines[skip..] {
        print_line(line);
    }
    if !args.follow {
        return Ok(());
    }
    let mut next = page.next;
    loop {
        let page: LogPage = client
            .json(Method::GET, &path(next, 10_000), None::<&()>)
            .await?;
        for line in &page.lines {
            print_line(line);
        }
        next = page.next;
    }
}

fn print_line(line: &LogLine) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[{}] {}", line.instance, line.text);
    let _ = out.flush();
}

/// `weft remove SERVICE`.
pub async fn remove(args: RemoveArgs) -> anyhow::Result<()> {
    let client = client(&args.client)?;
    let _: serde_json::Value = client
        .json(
            Method::DELETE,
            &format!("/v1/services/{}", args.service),
            None::<&()>,
        )
        .await?;
    println!("removed {}", args.service);
    Ok(())
}

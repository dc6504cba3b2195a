//! The CLI commands that drive a host through its admin API, like any other
//! client: `weft deploy`, `upgrade`, `status`, `scale`, `settings`, `logs`
//! and `remove`, and an operator's `weft queue` and `weft bucket` on a
//! service's data (`data`).
//!
//! A deploy or upgrade builds the roles (unless `--no-build`), uploads each
//! component the host does not have yet (by SHA-256), sends the manifest
//! and overlay naming them, then follows the operation, printing each step
//! until it is done or rolled back (a non-zero exit). Roles are named
//! `SERVICE/ROLE`, or just `ROLE` when one service on the host has it.

mod data;
mod http;
mod table;

pub use data::{bucket, queue};

use crate::args::{
    ClientArgs, DeployArgs, LogsArgs, RemoveArgs, ScaleArgs, ServiceSource, SettingsArgs,
    StatusArgs,
};
use ::http::Method;
use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::Client;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};
use weft_host::admin::auth;
use weft_host::controller::status::{HostStatus, OperationState, OperationStatus, ServiceStatus};
use weft_host::controller::store::{DeploymentSource, Digest};
use weft_host::guest_output::LogLine;

/// How often progress is polled.
const POLL: Duration = Duration::from_millis(200);
/// How long `deploy` and `scale` wait for instances to be ready.
const READY_WAIT: Duration = Duration::from_secs(300);

fn client(args: &ClientArgs) -> anyhow::Result<Client> {
    client_for(args, None)
}

/// [`client`] for a command about `service`: without a token given, the
/// token of a `weft up` running that service (its default state folder's)
/// is tried before the long-lived host's, each only for the address its
/// host recorded.
fn client_for(args: &ClientArgs, service: Option<&str>) -> anyhow::Result<Client> {
    let url = args
        .admin
        .clone()
        .or_else(|| std::env::var("WEFT_ADMIN").ok())
        .unwrap_or_else(|| "http://127.0.0.1:9070".into());
    let token = match (&args.token_file, std::env::var_os(auth::TOKEN_ENV)) {
        // Given explicitly: sent as given, wherever the user points it.
        (Some(_), _) | (None, Some(_)) => auth::client_token(args.token_file.as_deref(), None)?,
        (None, None) => {
            // Only a valid name: it becomes a folder name.
            let of_service = service
                .filter(|name| weft_host::manifest::check_name(name).is_ok())
                .and_then(weft_host::launch::dirs::default_state_dir)
                .and_then(|dir| local_token(&url, Some(&dir)).ok());
            match of_service {
                Some(token) => token,
                None => local_token(
                    &url,
                    weft_host::launch::dirs::default_host_state_dir().as_deref(),
                )?,
            }
        }
    };
    Client::new(&url, token)
}

/// The service a `[SERVICE/]ROLE` argument names, if it names one.
fn service_of(role: &str) -> Option<&str> {
    role.split_once('/').map(|(service, _)| service)
}

/// The token of the local host (its default state folder's), but only for
/// the address that host recorded beside it: sent anywhere else, it would
/// hand a stranger, or a host on another machine, the key to this one.
fn local_token(url: &str, state: Option<&Path>) -> anyhow::Result<String> {
    let missing = || {
        anyhow::anyhow!(
            "no admin token: pass --token-file FILE or set {}",
            auth::TOKEN_ENV
        )
    };
    let state = state.ok_or_else(missing)?;
    if !state.join(auth::TOKEN_FILE).exists() {
        return Err(missing());
    }
    let recorded = std::fs::read_to_string(state.join(auth::ADMIN_ADDRESS_FILE))
        .ok()
        .and_then(|text| text.trim().parse::<SocketAddr>().ok());
    if !recorded.is_some_and(|recorded| admin_url_is(url, recorded)) {
        let owner = recorded.map_or_else(
            || "a host that recorded no address".to_owned(),
            |addr| format!("the host at http://{addr}"),
        );
        bail!(
            "{}: this token belongs to {owner}, so it is not sent to {url}: pass --token-file FILE or set {}",
            state.join(auth::TOKEN_FILE).display(),
            auth::TOKEN_ENV
        );
    }
    Ok(auth::client_token(None, Some(state))?)
}

/// Whether the admin URL `url` names `recorded`, the address a host listens
/// on: the same address and port, or, for a host listening on every
/// address, a loopback one (`localhost` counts as loopback).
fn admin_url_is(url: &str, recorded: SocketAddr) -> bool {
    let Ok(uri) = url.parse::<::http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    if uri.port_u16().unwrap_or(80) != recorded.port() {
        return false;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let named: Vec<IpAddr> = if host.eq_ignore_ascii_case("localhost") {
        vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from(Ipv6Addr::LOCALHOST),
        ]
    } else {
        host.parse::<IpAddr>().into_iter().collect()
    };
    named
        .iter()
        .any(|ip| *ip == recorded.ip() || (recorded.ip().is_unspecified() && ip.is_loopback()))
}

/// A service's folder, read: its name, what to deploy, and each role's
/// component (name, digest, bytes).
pub(crate) struct ReadService {
    /// The service's name.
    pub name: String,
    /// What to deploy.
    pub source: DeploymentSource,
    /// Each role's component: its role, digest and bytes.
    pub components: Vec<(String, Digest, Bytes)>,
}

/// Builds the roles of the service in `source` (unless `--no-build`) and
/// reads its manifest and components (`deploy` and `upgrade`, to a host
/// or a fabric).
pub(crate) fn read_service(source: &ServiceSource) -> anyhow::Result<ReadService> {
    let (manifest, environment) =
        weft_host::launch::load_manifest(&source.manifest, source.env.as_deref())?;
    if !source.no_build {
        weft_host::builder::build_roles(&manifest)?;
    }
    let mut components = Vec::new();
    for (name, role) in &manifest.roles {
        let bytes = std::fs::read(&role.component)
            .with_context(|| format!("{}: cannot read", role.component.display()))?;
        components.push((name.clone(), Digest::of(&bytes), Bytes::from(bytes)));
    }
    let text = std::fs::read_to_string(&manifest.path)
        .with_context(|| format!("{}: cannot read", manifest.path.display()))?;
    Ok(ReadService {
        name: manifest.service.clone(),
        source: DeploymentSource {
            manifest_file: manifest.path.display().to_string(),
            manifest: text,
            environment,
            components: components
                .iter()
                .map(|(name, digest, _)| (name.clone(), digest.clone()))
                .collect(),
        },
        components,
    })
}

/// Builds and uploads the components of the service in `args.source.manifest`;
/// returns its name and what to deploy.
async fn prepare(client: &Client, args: &DeployArgs) -> anyhow::Result<(String, DeploymentSource)> {
    let service = read_service(&args.source)?;
    for (name, digest, bytes) in service.components {
        let path = format!("/v1/blobs/{digest}");
        let (status, _) = client
            .call(Method::HEAD, &path, "application/wasm", Bytes::new())
            .await?;
        if status == ::http::StatusCode::NOT_FOUND {
            let size = bytes.len();
            let (status, body) = client
                .call(Method::PUT, &path, "application/wasm", bytes)
                .await?;
            http::check(status, &body)?;
            println!("uploaded {name} {} ({} KiB)", digest.short(), size / 1024);
        } else {
            http::check(status, &[])?;
        }
    }
    Ok((service.name, service.source))
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
        match operation.state {
            OperationState::Done => return Ok(()),
            OperationState::RolledBack => bail!(
                "rolled back: {}",
                operation.reason.unwrap_or_else(|| "no reason given".into())
            ),
            OperationState::Failed => bail!(
                "{}",
                operation
                    .reason
                    .unwrap_or_else(|| "the operation failed".into())
            ),
            OperationState::Running => {}
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
    let services = host.services.iter().map(|service| {
        let roles = service.roles.iter().map(|role| role.name.as_str());
        (service.name.as_str(), roles)
    });
    Ok((pick_owner(spec, services, "on this host")?, spec.to_owned()))
}

/// The one service among `services` (each a name and its roles' names)
/// that has a role named `role`; `place` says where they run in the error
/// (`on this host`, `in the fabric`).
pub(crate) fn pick_owner<'a, Roles>(
    role: &str,
    services: impl IntoIterator<Item = (&'a str, Roles)>,
    place: &str,
) -> anyhow::Result<String>
where
    Roles: IntoIterator<Item = &'a str>,
{
    let owners: Vec<&str> = services
        .into_iter()
        .filter_map(|(service, roles)| roles.into_iter().any(|r| r == role).then_some(service))
        .collect();
    match owners.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => bail!("no service {place} has a role '{role}'"),
        many => bail!(
            "several services have a role '{role}' ({}): say SERVICE/{role}",
            many.join(", ")
        ),
    }
}

/// `KEY=VALUE` pairs (`weft settings`), by key.
pub(crate) fn parse_settings(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut settings = BTreeMap::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("'{pair}' is not KEY=VALUE"))?;
        settings.insert(key.to_owned(), value.to_owned());
    }
    Ok(settings)
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
            pending: Vec::new(),
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
    let client = client_for(&args.client, service_of(&args.role))?;
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
    let settings = parse_settings(&args.settings)?;
    let client = client_for(&args.client, service_of(&args.role))?;
    let (service, role) = resolve_role(&client, &args.role).await?;
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
    let client = client_for(&args.client, service_of(&args.role))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_role_names_the_one_service_that_has_it() {
        let services = [("shop", vec!["web", "mailer"]), ("blog", vec!["web"])];
        let pick = |role| pick_owner(role, services.iter().map(|(s, r)| (*s, r.clone())), "here");
        assert_eq!(pick("mailer").unwrap(), "shop");
        assert_eq!(
            pick("web").unwrap_err().to_string(),
            "several services have a role 'web' (shop, blog): say SERVICE/web"
        );
        assert_eq!(
            pick("cron").unwrap_err().to_string(),
            "no service here has a role 'cron'"
        );
    }

    #[test]
    fn settings_are_key_value_pairs() {
        let pairs = ["greeting=hi=there".to_owned(), "empty=".to_owned()];
        let settings = parse_settings(&pairs).unwrap();
        assert_eq!(settings["greeting"], "hi=there");
        assert_eq!(settings["empty"], "");
        let refused = parse_settings(&["greeting".to_owned()]).unwrap_err();
        assert_eq!(refused.to_string(), "'greeting' is not KEY=VALUE");
    }

    #[test]
    fn the_local_token_goes_only_to_the_address_its_host_recorded() {
        let at = |text: &str| text.parse::<SocketAddr>().unwrap();
        assert!(admin_url_is("http://127.0.0.1:9070", at("127.0.0.1:9070")));
        assert!(admin_url_is("http://localhost:9070/", at("127.0.0.1:9070")));
        assert!(admin_url_is("http://[::1]:9070", at("[::1]:9070")));
        assert!(admin_url_is("http://127.0.0.1:9070", at("0.0.0.0:9070")));
        assert!(admin_url_is("http://192.0.2.2:9070", at("192.0.2.2:9070")));
        assert!(!admin_url_is("http://127.0.0.1:9071", at("127.0.0.1:9070")));
        assert!(!admin_url_is("http://127.0.0.2:9070", at("127.0.0.1:9070")));
        assert!(!admin_url_is("http://192.0.2.2:9070", at("0.0.0.0:9070")));
        assert!(!admin_url_is(
            "http://evil.example:9070",
            at("127.0.0.1:9070")
        ));
        assert!(!admin_url_is("http://127.0.0.1", at("127.0.0.1:9070")));
        assert!(!admin_url_is("not a url", at("127.0.0.1:9070")));

        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        std::fs::write(state.join(auth::TOKEN_FILE), "local-secret-0123456789\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(state.join(auth::TOKEN_FILE), private).unwrap();
        // No recorded address (a host of an earlier release): never sent.
        let refused = local_token("http://127.0.0.1:9070", Some(state)).unwrap_err();
        assert!(refused.to_string().contains("not sent to"), "{refused}");
        std::fs::write(state.join(auth::ADMIN_ADDRESS_FILE), "127.0.0.1:9070").unwrap();
        assert_eq!(
            local_token("http://127.0.0.1:9070", Some(state)).unwrap(),
            "local-secret-0123456789"
        );
        let refused = local_token("http://10.1.2.3:9070", Some(state))
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("belongs to the host at http://127.0.0.1:9070")
                && !refused.contains("local-secret"),
            "{refused}"
        );
    }
}

//! The CLI commands that drive a fabric of hosts through its NATS server
//! ([`weft_fabric::ops::Operator`]): `weft deploy`, `upgrade`, `scale`,
//! `settings`, `status`, `logs` ([`logs`]) and `remove` with `--fabric
//! URL`, `weft endpoints`, and `weft fabric keygen|hosts|drain`; and
//! ([`join`]) how `weft host --fabric` joins one.
//!
//! A change (deploy, upgrade, scale, settings) is signed with the operator's key
//! (`--fabric-key`), written, then followed until every host runs it,
//! ready, printing a line whenever progress changes. The fabric's URL is
//! shown without credentials, and the credentials file is never shown.

mod join;
pub mod logs;
mod table;

pub use join::member_options;

use crate::args::{
    DeployArgs, EndpointsArgs, FabricCommand, FabricConnectArgs, FabricSigner, RemoveArgs,
    ScaleArgs, SettingsArgs, StatusArgs,
};
use crate::client::{parse_settings, pick_owner, read_service};
use anyhow::{Context as _, bail};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use weft_fabric::ops::{Operator, ServiceReport, Written, check_backend_name, haproxy_backend};
use weft_fabric::signing::{self, SigningKey, TrustedKeys};
use weft_fabric::store::{ConnectOptions, FabricStore, shown_url};
use weft_host::controller::store::Digest;

/// How long `weft scale --fabric` waits for the fabric to run the new count.
const SCALE_WAIT: Duration = Duration::from_secs(60);
/// How long `weft settings --fabric` waits for the fabric to run the new
/// settings (a rolling change on each host, one host after another).
const SETTINGS_WAIT: Duration = Duration::from_secs(300);

/// Connects to the fabric at `url`, signing with `key` if given and
/// trusting the keys in `trust` (default: the signing key's own).
async fn operator(
    url: &str,
    connect: &FabricConnectArgs,
    key: Option<SigningKey>,
    trust: Option<&Path>,
) -> anyhow::Result<Operator> {
    let trust = trust.map(TrustedKeys::load).transpose()?;
    let options = ConnectOptions {
        url: url.to_owned(),
        creds: connect.fabric_creds.clone(),
        tls_ca: connect.fabric_tls_ca.clone(),
        timeout: Duration::from_secs(connect.fabric_connect_timeout),
        replicas: 1,
    };
    Ok(Operator::with_trust(
        FabricStore::connect(&options).await?,
        key,
        trust,
    ))
}

/// The operator's key, needed for a change; read first, so a key that
/// cannot be used stops the command before it builds anything or connects.
fn signing_key(args: &FabricSigner) -> anyhow::Result<SigningKey> {
    let key = args
        .fabric_key
        .as_deref()
        .context("a change to the fabric must be signed: pass --fabric-key FILE")?;
    Ok(SigningKey::load(key)?)
}

/// Connects to the fabric at `url` as the operator `args` names: signing
/// with its key, trusting its `--fabric-trust` keys (default its own).
async fn signing_operator(url: &str, args: &FabricSigner) -> anyhow::Result<Operator> {
    let key = signing_key(args)?;
    operator(
        url,
        &args.target.connect,
        Some(key),
        args.fabric_trust.as_deref(),
    )
    .await
}

/// Which change of a service's source `deploy_or_upgrade` writes.
#[derive(Debug, Clone, Copy)]
pub enum SourceChange {
    /// `weft deploy`: a new service, or a new version written whole.
    Deploy,
    /// `weft upgrade`: a new version rolled out host by host.
    Upgrade,
}

/// `weft deploy|upgrade DIR --fabric URL --fabric-key FILE`: builds the
/// service, uploads the components the fabric lacks, writes the signed
/// change, then (unless `--no-wait`) follows it until every host runs it.
pub async fn deploy_or_upgrade(
    url: &str,
    args: DeployArgs,
    change: SourceChange,
) -> anyhow::Result<()> {
    // The key and the fabric first: a key that cannot be used, or a fabric
    // that cannot be reached, stops the command before it builds anything.
    let operator = signing_operator(url, &args.fabric).await?;
    let service = read_service(&args.source)?;
    let blobs = blobs(&service.components);
    let written = match change {
        SourceChange::Deploy => operator.deploy(service.source, blobs).await?,
        SourceChange::Upgrade => operator.upgrade(service.source, blobs).await?,
    };
    print_uploaded(&service.components, &written);
    match change {
        SourceChange::Deploy => println!(
            "deployed {} generation {} to the fabric at {} (revision {})",
            written.service,
            written.generation,
            shown_url(url),
            written.revision
        ),
        SourceChange::Upgrade => println!(
            "upgrading {} to generation {} (revision {})",
            written.service, written.generation, written.revision
        ),
    }
    if args.no_wait {
        return Ok(());
    }
    wait(&operator, &written, Duration::from_secs(args.wait_secs)).await
}

/// `weft scale [SERVICE/]ROLE N --fabric URL --fabric-key FILE`.
pub async fn scale(url: &str, args: ScaleArgs) -> anyhow::Result<()> {
    let operator = signing_operator(url, &args.fabric).await?;
    let (service, role) = resolve_role(&operator, &args.role).await?;
    let written = operator.scale(&service, &role, args.count).await?;
    println!(
        "scaling {service}/{role} to {} instances (revision {})",
        args.count, written.revision
    );
    wait(&operator, &written, SCALE_WAIT).await
}

/// `weft settings [SERVICE/]ROLE KEY=VALUE... --fabric URL --fabric-key FILE`.
pub async fn settings(url: &str, args: SettingsArgs) -> anyhow::Result<()> {
    let settings = parse_settings(&args.settings)?;
    let operator = signing_operator(url, &args.fabric).await?;
    let (service, role) = resolve_role(&operator, &args.role).await?;
    let written = operator.settings(&service, &role, &settings).await?;
    println!(
        "changing {service}/{role}'s settings: generation {} (revision {}), host by host",
        written.generation, written.revision
    );
    wait(&operator, &written, SETTINGS_WAIT).await
}

/// The service and role `spec` names: `SERVICE/ROLE`, or `ROLE` when one
/// service in the fabric has it.
async fn resolve_role(operator: &Operator, spec: &str) -> anyhow::Result<(String, String)> {
    if let Some((service, role)) = spec.split_once('/') {
        return Ok((service.to_owned(), role.to_owned()));
    }
    let status = operator.status(None).await?;
    let services = status.services.iter().map(|service| {
        let roles = service.roles.iter().map(|role| role.name.as_str());
        (service.name.as_str(), roles)
    });
    Ok((
        pick_owner(spec, services, "in the fabric")?,
        spec.to_owned(),
    ))
}

/// `weft status [SERVICE] --fabric URL [--json]`.
pub async fn status(url: &str, args: StatusArgs) -> anyhow::Result<()> {
    let operator = operator(url, &args.fabric.connect, None, None).await?;
    let status = operator.status(args.service.as_deref()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", table::status(&status));
    }
    Ok(())
}

/// `weft remove SERVICE --fabric URL`.
pub async fn remove(url: &str, args: RemoveArgs) -> anyhow::Result<()> {
    let operator = operator(url, &args.fabric.connect, None, None).await?;
    operator.remove(&args.service).await?;
    println!("removed {}", args.service);
    Ok(())
}

/// `weft endpoints SERVICE/ROLE --fabric URL [--haproxy BACKEND]`.
pub async fn endpoints(args: EndpointsArgs) -> anyhow::Result<()> {
    let Some((service, role)) = args.role.split_once('/') else {
        bail!("'{}' is not SERVICE/ROLE", args.role);
    };
    if let Some(name) = &args.haproxy {
        check_backend_name(name)?;
    }
    let operator = operator(&args.fabric.fabric, &args.fabric.connect, None, None).await?;
    let found = operator.endpoints(service, role).await?;
    match &args.haproxy {
        Some(name) => print!(
            "{}",
            haproxy_backend(name, &found.addrs, found.health.as_deref())
        ),
        None => found.addrs.iter().for_each(|addr| println!("{addr}")),
    }
    Ok(())
}

/// `weft fabric keygen|hosts|drain`.
pub async fn command(command: FabricCommand) -> anyhow::Result<()> {
    match command {
        FabricCommand::Keygen(args) => {
            let (key, public) = signing::keygen(&args.out)?;
            println!(
                "private key {} (signs changes: --fabric-key)",
                key.display()
            );
            println!(
                "public key {} (add it to every host's --fabric-trust file)",
                public.display()
            );
        }
        FabricCommand::Hosts(args) => {
            let operator = operator(&args.fabric.fabric, &args.fabric.connect, None, None).await?;
            let hosts = operator.hosts().await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&hosts)?);
            } else {
                print!("{}", table::hosts(&hosts));
            }
        }
        FabricCommand::Drain(args) => {
            let operator = operator(&args.fabric.fabric, &args.fabric.connect, None, None).await?;
            operator.drain(&args.host).await?;
            println!("draining {}: its instances move to other hosts", args.host);
        }
    }
    Ok(())
}

/// Each component's bytes, by digest.
fn blobs(components: &[(String, Digest, Bytes)]) -> BTreeMap<Digest, Bytes> {
    components
        .iter()
        .map(|(_, digest, bytes)| (digest.clone(), bytes.clone()))
        .collect()
}

/// `uploaded ROLE DIGEST (N KiB)` for each component the fabric did not have.
fn print_uploaded(components: &[(String, Digest, Bytes)], written: &Written) {
    for (role, digest, bytes) in components {
        if written.uploaded.contains(digest) {
            println!(
                "uploaded {role} {} ({} KiB)",
                digest.short(),
                bytes.len() / 1024
            );
        }
    }
}

/// Follows `written` until the fabric runs it, printing progress; `ready`
/// at the end.
async fn wait(operator: &Operator, written: &Written, timeout: Duration) -> anyhow::Result<()> {
    let mut last = String::new();
    let mut progress = |report: &ServiceReport| {
        let line = report.progress();
        if line != last {
            println!("  {line}");
            last = line;
        }
    };
    operator
        .wait_converged(&written.service, written.revision, timeout, &mut progress)
        .await?;
    println!("ready");
    Ok(())
}

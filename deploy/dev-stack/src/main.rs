//! `cargo run -p tether-dev`: the whole platform on one machine.
//!
//! Starts identity, tenancy, authz and audit on loopback (ports 50051-50054 unless
//! `TETHER_<SVC>_LISTEN_ADDR` says otherwise), each with its own SQLite file under
//! `TETHER_DATA_DIR` (default `./.tether-data`), and stops them all on Ctrl-C. The services are
//! in one process for convenience only: they reach each other through their configured
//! addresses, exactly as separate deployments do. Every setting a service binary reads from the
//! environment is read here the same way. `TETHER_DEV_SERVICES=audit` (a comma-separated list)
//! runs only those services, so each can have a process of its own.

use std::{future::Future, process::ExitCode};

use base64::Engine;

use tether_runtime::{
    ConfigSource, ServiceHost, ServiceSettings, StartError,
    access::ServiceToken,
    config::service_key,
    telemetry::{self, TelemetrySettings},
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether-dev: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-dev: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), StartError> {
    let mut source = ConfigSource::from_env()?;
    if source.get(ServiceToken::KEY).is_none() {
        // The services of this one process share a fresh secret for the calls they make to each
        // other on their own account; a real deployment sets TETHER_SERVICE_TOKEN itself.
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| StartError::Other(format!("random source: {e}")))?;
        source = source.with(ServiceToken::KEY, hex::encode(bytes));
    }
    let _telemetry = telemetry::init(&TelemetrySettings::load(&source, "tether-dev")?)
        .map_err(|e| StartError::Other(e.to_string()))?;

    let source = dev_secrets(wire_addresses(source)?)?;
    let only = selected(&source)?;
    let owner_email = identity_svc::Config::load(&source)?.bootstrap_owner.email.to_string();
    let mut owner = None;
    let mut hosts = Vec::new();
    for name in only {
        let host = match name {
            "identity" => {
                let identity = identity_svc::prepare(identity_svc::Config::load(&source)?).await?;
                owner = identity.bootstrap_owner;
                identity.host
            }
            "tenancy" => tenancy_svc::prepare(tenancy_svc::Config::load(&source)?).await?,
            "authz" => authz_svc::prepare(authz_svc::Config::load(&source)?).await?,
            _ => audit_svc::prepare(audit_svc::Config::load(&source)?).await?,
        };
        hosts.push((name, host));
    }

    // Bind every port before serving any, so a busy port fails the whole start cleanly.
    let mut bound = Vec::new();
    for (name, host) in hosts {
        let addr = host.settings.listen_addr;
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
        bound.push((name, host, listener));
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    println!();
    println!("Tether dev stack");
    let bound_names: Vec<&str> = bound.iter().map(|(name, _, _)| *name).collect();
    let mut tasks: Vec<(&str, JoinHandle<Result<(), StartError>>)> = Vec::new();
    for (name, host, listener) in bound {
        let addr = listener.local_addr().map_err(|e| StartError::Other(e.to_string()))?;
        let database = match &host.settings.database {
            tether_runtime::config::DatabaseTarget::Sqlite(path) => path.display().to_string(),
            tether_runtime::config::DatabaseTarget::Postgres(_) => "PostgreSQL".to_owned(),
        };
        println!("  {name:<9} http://{addr}   ({database})");
        tasks.push((name, spawn(host, listener, stopped())));
    }
    match (&owner, bound_names.contains(&"identity")) {
        (Some(owner), _) => println!("  {owner}"),
        (None, true) => println!("  MSP owner: {owner_email}  (password as set or shown at first start)"),
        (None, false) => {}
    }
    println!("  Ctrl-C stops {}.", if bound_names.len() == 4 { "all four" } else { "them" });
    println!();

    tether_runtime::shutdown::signal().await;
    let _ = stop_tx.send(true);
    let mut result = Ok(());
    for (name, task) in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("{name}: {e}");
                result = Err(e);
            }
            Err(e) => result = Err(StartError::Other(format!("{name} task failed: {e}"))),
        }
    }
    result
}

/// identity-svc requires `TETHER_IDENTITY_TOTP_KEYS` (it encrypts TOTP secrets), and audit-svc
/// signs its checkpoints with `TETHER_AUDIT_SIGNING_KEY`. Unless they are set, the dev stack
/// generates each on the first start and keeps it in the data dir (`identity-totp-keys`,
/// `audit-signing-key`, readable by their owner only), so secrets enrolled and checkpoints signed
/// before a restart still verify after it.
fn dev_secrets(source: ConfigSource) -> Result<ConfigSource, StartError> {
    let source = kept_secret(source, identity_svc::config::TOTP_KEYS, "identity-totp-keys", |bytes| {
        format!("dev-1:{}", hex::encode(bytes))
    })?;
    kept_secret(source, audit_svc::config::SIGNING_KEY, "audit-signing-key", |bytes| {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    })
}

/// `key` from the environment, else from `file` in the data dir, else 32 random bytes spelled
/// by `spell` and written there.
fn kept_secret(
    source: ConfigSource,
    key: &str,
    file: &str,
    spell: impl FnOnce([u8; 32]) -> String,
) -> Result<ConfigSource, StartError> {
    if source.get(key).is_some() {
        return Ok(source);
    }
    let dir = std::path::PathBuf::from(source.get("TETHER_DATA_DIR").unwrap_or(".tether-data"));
    let path = dir.join(file);
    let failed = |e: std::io::Error| StartError::Other(format!("{}: {e}", path.display()));
    let value = match std::fs::read_to_string(&path) {
        Ok(value) => value.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| StartError::Other(format!("random source: {e}")))?;
            let value = spell(bytes);
            std::fs::create_dir_all(&dir).map_err(failed)?;
            let mut file = std::fs::OpenOptions::new();
            file.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
            std::io::Write::write_all(&mut file.open(&path).map_err(failed)?, format!("{value}\n").as_bytes())
                .map_err(failed)?;
            value
        }
        Err(e) => return Err(failed(e)),
    };
    Ok(source.with(key, value))
}

/// `TETHER_DEV_SERVICES`: which services this process runs (comma separated, default all four),
/// so each can run in its own process, e.g. to stop or kill one while the others go on.
fn selected(source: &ConfigSource) -> Result<Vec<&'static str>, StartError> {
    const KEY: &str = "TETHER_DEV_SERVICES";
    const ALL: [&str; 4] = ["identity", "tenancy", "authz", "audit"];
    let Some(raw) = source.get(KEY) else { return Ok(ALL.to_vec()) };
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let name = ALL.iter().find(|n| **n == part).ok_or_else(|| {
            tether_runtime::config::invalid(KEY, raw, "a comma-separated list of identity, tenancy, authz, audit")
        })?;
        if !out.contains(name) {
            out.push(*name);
        }
    }
    if out.is_empty() {
        return Err(tether_runtime::config::invalid(KEY, raw, "at least one service").into());
    }
    Ok(out)
}

/// Tells each service where the others listen (unless the environment already says), so moving
/// a service to another port needs only its own `TETHER_<SVC>_LISTEN_ADDR`.
fn wire_addresses(mut source: ConfigSource) -> Result<ConfigSource, StartError> {
    const SERVICES: [(&str, u16); 4] = [("identity", 50051), ("tenancy", 50052), ("authz", 50053), ("audit", 50054)];
    let mut listen = Vec::new();
    for (service, port) in SERVICES {
        listen.push(ServiceSettings::load(&source, service, port)?.listen_addr);
    }
    for (caller, _) in SERVICES {
        for ((callee, _), addr) in SERVICES.iter().zip(&listen) {
            let key = service_key(caller, &format!("{}_ADDR", callee.to_uppercase()));
            if caller != *callee && source.get(&key).is_none() {
                source = source.with(key, format!("http://{addr}"));
            }
        }
    }
    Ok(source)
}

fn spawn(
    host: ServiceHost,
    listener: TcpListener,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<Result<(), StartError>> {
    tokio::spawn(host.serve(listener, stopped))
}

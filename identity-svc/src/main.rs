use std::process::ExitCode;

fn main() -> ExitCode {
    tether_runtime::run_binary("identity-svc", |source| async move {
        let config = identity_svc::Config::load(&source)?;
        let prepared = identity_svc::prepare(config).await?;
        if let Some(owner) = &prepared.bootstrap_owner {
            // Shown once, on the console only (never in the log stream).
            println!("{owner}");
        }
        prepared.host.run(tether_runtime::shutdown::signal()).await
    })
}

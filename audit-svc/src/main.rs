use std::process::ExitCode;

fn main() -> ExitCode {
    tether_runtime::run_binary("audit-svc", |source| async move {
        let config = audit_svc::Config::load(&source)?;
        audit_svc::prepare(config).await?.run(tether_runtime::shutdown::signal()).await
    })
}

use std::process::ExitCode;

fn main() -> ExitCode {
    tether_runtime::run_binary("authz-svc", |source| async move {
        let config = authz_svc::Config::load(&source)?;
        authz_svc::prepare(config).await?.run(tether_runtime::shutdown::signal()).await
    })
}

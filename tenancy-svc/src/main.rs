use std::process::ExitCode;

fn main() -> ExitCode {
    tether_runtime::run_binary("tenancy-svc", |source| async move {
        let config = tenancy_svc::Config::load(&source)?;
        tenancy_svc::prepare(config).await?.run(tether_runtime::shutdown::signal()).await
    })
}

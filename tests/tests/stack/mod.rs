//! The four services, prepared against one test database.

use tether_runtime::{ConfigSource, ServiceHost};

pub async fn prepare_all(source: &ConfigSource) -> Vec<(&'static str, ServiceHost)> {
    vec![
        ("identity", identity_svc::prepare(identity_svc::Config::load(source).unwrap()).await.unwrap().host),
        ("tenancy", tenancy_svc::prepare(tenancy_svc::Config::load(source).unwrap()).await.unwrap()),
        ("authz", authz_svc::prepare(authz_svc::Config::load(source).unwrap()).await.unwrap()),
        ("audit", audit_svc::prepare(audit_svc::Config::load(source).unwrap()).await.unwrap()),
    ]
}

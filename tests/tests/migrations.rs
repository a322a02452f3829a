//! Migrations apply to an empty database, and a second start is a no-op: no migration runs
//! twice and no bootstrap row is created twice.

use sqlx::Row;
mod stack;

use stack::prepare_all;
use tether_tests::TestDatabase;

async fn applied_versions(db: &TestDatabase, service: &str) -> Vec<i64> {
    let pool = db.inspect(service).await;
    let rows = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success = TRUE ORDER BY version")
        .fetch_all(&pool)
        .await
        .unwrap();
    rows.iter().map(|r| r.get::<i64, _>(0)).collect()
}

async fn count(db: &TestDatabase, service: &str, sql: &'static str) -> i64 {
    let pool = db.inspect(service).await;
    sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap()
}

#[tokio::test]
async fn migrations_apply_once_and_a_second_start_changes_nothing() {
    let db = TestDatabase::fresh().await;
    let source = db.config().with(tether_runtime::access::ServiceToken::KEY, stack::SERVICE_TOKEN);

    let first = identity_svc::prepare(identity_svc::Config::load(&source).unwrap()).await.unwrap();
    assert!(first.bootstrap_owner.is_some(), "the first start creates the MSP owner");
    drop(first);
    drop(prepare_all(&source).await);

    let mut before = Vec::new();
    for service in ["identity", "tenancy", "authz", "audit"] {
        let versions = applied_versions(&db, service).await;
        assert!(!versions.is_empty(), "{service}: no migration recorded");
        before.push(versions);
    }

    let again = identity_svc::prepare(identity_svc::Config::load(&source).unwrap()).await.unwrap();
    assert!(again.bootstrap_owner.is_none(), "a second start must not create another owner");
    drop(again);
    drop(prepare_all(&source).await);

    for (i, service) in ["identity", "tenancy", "authz", "audit"].into_iter().enumerate() {
        assert_eq!(applied_versions(&db, service).await, before[i], "{service}: migrations changed");
    }
    assert_eq!(count(&db, "identity", "SELECT COUNT(*) FROM accounts").await, 1);
    assert_eq!(count(&db, "tenancy", "SELECT COUNT(*) FROM tenants WHERE kind = 'admin'").await, 1);
}

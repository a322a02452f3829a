//! Storage: one sqlx pool per service, SQLite by default, PostgreSQL in production.
//!
//! Services write portable SQL (`$1` placeholders, `TEXT` and `BIGINT` columns, times as unix
//! microseconds) and run it through sqlx's `Any` driver, so one query set serves both backends.
//! On PostgreSQL each service keeps its tables in a schema named after itself, so several
//! services may share one database without seeing each other's tables. Migrations are embedded
//! in each service's binary and applied at start-up; applying them again is a no-op.

use std::{borrow::Cow, sync::Arc, time::Duration};

use sqlx::{
    AnyPool, Executor, SqlSafeStr,
    any::{Any, AnyPoolOptions},
    migrate::{Migration, MigrationType, Migrator},
};

use tokio::sync::Notify;

use crate::config::DatabaseTarget;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One migration compiled into the service (`include_str!` of its SQL file). Most are one
/// portable text; a migration that needs what only PostgreSQL has (partitions, extensions)
/// carries a second text for it, and each database applies its own under the same version.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedMigration {
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
    pub postgres_sql: Option<&'static str>,
}

impl EmbeddedMigration {
    /// One SQL text for both backends.
    pub const fn portable(version: i64, description: &'static str, sql: &'static str) -> Self {
        Self { version, description, sql, postgres_sql: None }
    }

    /// `sqlite_sql` on SQLite, `postgres_sql` on PostgreSQL.
    pub const fn per_backend(
        version: i64,
        description: &'static str,
        sqlite_sql: &'static str,
        postgres_sql: &'static str,
    ) -> Self {
        Self { version, description, sql: sqlite_sql, postgres_sql: Some(postgres_sql) }
    }

    fn sql_for(&self, backend: Backend) -> &'static str {
        match (backend, self.postgres_sql) {
            (Backend::Postgres, Some(sql)) => sql,
            _ => self.sql,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("invalid schema name {0:?}")]
    SchemaName(String),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    /// Woken after every committed write (see [`crate::events::Write`]): local change-stream
    /// watchers and relays wait on it instead of polling.
    committed: Arc<Notify>,
}

impl Database {
    /// Connects to `target`, creating the SQLite file or the PostgreSQL schema `schema` if needed,
    /// and applies `migrations` in order.
    pub async fn open(
        target: &DatabaseTarget,
        schema: &'static str,
        migrations: &[EmbeddedMigration],
    ) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        if schema.is_empty() || !schema.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(DbError::SchemaName(schema.to_owned()));
        }
        let database = match target {
            DatabaseTarget::Sqlite(path) => Self::open_sqlite(path).await?,
            DatabaseTarget::Postgres(url) => Self::open_postgres(url, schema).await?,
        };
        database.migrate(migrations).await?;
        Ok(database)
    }

    async fn open_sqlite(path: &std::path::Path) -> Result<Self, DbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| DbError::DataDir { path: dir.display().to_string(), source })?;
        }
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the one writer; busy_timeout makes a second
                    // writer wait for the lock instead of failing at once; statement journals
                    // stay in memory (they spilled to files in profiles of large writes).
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(DbError::Connect)?;
        Ok(Self { pool, backend: Backend::Sqlite, committed: Arc::default() })
    }

    async fn open_postgres(url: &str, schema: &'static str) -> Result<Self, DbError> {
        let create = sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {schema}"));
        let setup = AnyPoolOptions::new().max_connections(1).connect(url).await.map_err(DbError::Connect)?;
        setup.execute(create.into_sql_str()).await.map_err(DbError::Connect)?;
        setup.close().await;
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    let set = sqlx::AssertSqlSafe(format!("SET search_path TO {schema}"));
                    conn.execute(set.into_sql_str()).await?;
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(DbError::Connect)?;
        Ok(Self { pool, backend: Backend::Postgres, committed: Arc::default() })
    }

    async fn migrate(&self, migrations: &[EmbeddedMigration]) -> Result<(), DbError> {
        let migrations = migrations
            .iter()
            .map(|m| {
                Migration::new(
                    m.version,
                    Cow::Borrowed(m.description),
                    MigrationType::Simple,
                    m.sql_for(self.backend).into_sql_str(),
                    false,
                )
            })
            .collect();
        let migrator = Migrator::with_migrations(migrations);
        migrator.run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`), so two writers queue on busy_timeout instead of one failing when
    /// it upgrades from reading.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Starts a read-only transaction that sees one consistent state of every table (a
    /// snapshot with its revision): REPEATABLE READ on PostgreSQL; on SQLite any transaction
    /// reads one state.
    pub async fn begin_snapshot(&self) -> Result<sqlx::Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin().await,
            Backend::Postgres => self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ").await,
        }
    }

    /// Wakes whoever waits for a commit; call after a write committed.
    pub fn notify_committed(&self) {
        self.committed.notify_waiters();
    }

    /// Resolves at the next [`Self::notify_committed`] (of this process).
    pub fn committed(&self) -> tokio::sync::futures::Notified<'_> {
        self.committed.notified()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A stored time (unix microseconds) as a protobuf timestamp.
pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        // Below 1e9 by construction: rem_euclid is in 0..1e6.
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or_default(),
    }
}

/// A protobuf timestamp as stored: unix microseconds (the inverse of [`timestamp`]; nanoseconds
/// below a microsecond are dropped, out-of-range ones clamped).
pub fn micros(t: &prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1_000_000).saturating_add(i64::from(t.nanos.clamp(0, 999_999_999) / 1000))
}

/// Now, as stored: unix time in microseconds.
pub fn now_micros() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
}

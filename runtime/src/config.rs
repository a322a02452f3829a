//! Configuration from environment variables, optionally seeded from a file.
//!
//! Every key has one name (`TETHER_<SERVICE>_<KEY>` for per-service keys, `TETHER_<KEY>` for
//! process-wide ones), a documented default, and is parsed once at start-up into typed settings.
//! A malformed value stops start-up with an error naming the key and what was expected.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

/// Names the file of `KEY=VALUE` lines read before the environment (the environment wins).
pub const CONFIG_FILE_KEY: &str = "TETHER_CONFIG_FILE";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("configuration key {key} is required ({expected})")]
    Missing { key: String, expected: String },
    #[error("configuration key {key} has an invalid value {value:?}: expected {expected}")]
    Invalid { key: String, value: String, expected: String },
    #[error("configuration file {path}: {reason}")]
    File { path: String, reason: String },
}

/// The raw key/value pairs a process was configured with.
#[derive(Clone, Default)]
pub struct ConfigSource {
    values: BTreeMap<String, String>,
}

impl fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be secrets; only the keys are shown.
        f.debug_struct("ConfigSource").field("keys", &self.values.keys().collect::<Vec<_>>()).finish()
    }
}

impl ConfigSource {
    /// Reads `TETHER_CONFIG_FILE` (if set), then every environment variable on top of it.
    pub fn from_env() -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let mut source = Self::default();
        if let Some(path) = env.get(CONFIG_FILE_KEY) {
            source.merge_file(Path::new(path))?;
        }
        source.values.extend(env);
        Ok(source)
    }

    /// A source made of explicit pairs only (tests, the dev stack); the environment is not read.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self { values: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    /// Returns a copy with `key` set to `value`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.values.insert(key.into(), value.into());
        self
    }

    fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::File { path: path.display().to_string(), reason: e.to_string() })?;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(ConfigError::File {
                    path: path.display().to_string(),
                    reason: format!("line {}: expected KEY=VALUE", number + 1),
                });
            };
            let value = value.trim().trim_matches('"');
            self.values.insert(key.trim().to_owned(), value.to_owned());
        }
        Ok(())
    }

    /// The raw value of `key`, if set and not blank.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str).filter(|v| !v.trim().is_empty())
    }

    /// Parses `key` as `T`, or returns `default` when it is unset.
    pub fn parse_or<T: FromStr>(&self, key: &str, default: T, expected: &str) -> Result<T, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|_| invalid(key, raw, expected)),
        }
    }

    /// Parses `key` as `T` if it is set.
    pub fn parse_opt<T: FromStr>(&self, key: &str, expected: &str) -> Result<Option<T>, ConfigError> {
        self.get(key).map(|raw| raw.trim().parse().map_err(|_| invalid(key, raw, expected))).transpose()
    }

    /// A duration given in milliseconds, bounded to `range_ms`.
    pub fn millis_or(
        &self,
        key: &str,
        default: Duration,
        range_ms: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        let expected = format!("milliseconds between {} and {}", range_ms.start(), range_ms.end());
        let ms: u64 = self.parse_or(key, default.as_millis() as u64, &expected)?;
        if !range_ms.contains(&ms) {
            return Err(invalid(key, &ms.to_string(), &expected));
        }
        Ok(Duration::from_millis(ms))
    }

    /// A count bounded to `range`.
    pub fn count_or(
        &self,
        key: &str,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
    ) -> Result<usize, ConfigError> {
        let expected = format!("an integer between {} and {}", range.start(), range.end());
        let n: usize = self.parse_or(key, default, &expected)?;
        if !range.contains(&n) {
            return Err(invalid(key, &n.to_string(), &expected));
        }
        Ok(n)
    }
}

pub fn invalid(key: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), value: value.to_owned(), expected: expected.to_owned() }
}

/// Where a service keeps its data.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// One SQLite file per service (the embedded default).
    Sqlite(PathBuf),
    /// A PostgreSQL URL; the service keeps its tables in a schema named after itself.
    Postgres(String),
}

impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
            // The URL may carry a password.
            Self::Postgres(_) => f.write_str("Postgres(..)"),
        }
    }
}

/// The settings every service shares, read under its `TETHER_<SERVICE>_` prefix.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Short name: `identity`, `tenancy`, `authz`, `audit`.
    pub service: &'static str,
    pub listen_addr: SocketAddr,
    pub database: DatabaseTarget,
    /// Longest a unary call may run before it is answered DEADLINE_EXCEEDED.
    pub request_timeout: Duration,
    /// Calls served at once, per class of call; beyond its budget a call is shed.
    pub budgets: CallBudgets,
    /// Vouches for the client address a forwarding service names (see [`CallBudgets`]).
    pub service_token: crate::access::ServiceToken,
    /// How long in-flight calls may finish after a shutdown signal before connections are cut.
    pub shutdown_grace: Duration,
}

impl ServiceSettings {
    /// Reads the shared keys for `service`:
    ///
    /// | key | default |
    /// |---|---|
    /// | `TETHER_<SVC>_LISTEN_ADDR` | `127.0.0.1:<default_port>` |
    /// | `TETHER_<SVC>_DATABASE_URL`, else `DATABASE_URL` | `sqlite` file `<TETHER_DATA_DIR>/<svc>.db` |
    /// | `TETHER_DATA_DIR` | `./.tether-data` |
    /// | `TETHER_<SVC>_REQUEST_TIMEOUT_MS` | 10000 |
    /// | `TETHER_<SVC>_MAX_CONCURRENT_REQUESTS` | 1024 (calls of no other class) |
    /// | `TETHER_<SVC>_MAX_CONCURRENT_HOT_REQUESTS` | 1024 |
    /// | `TETHER_<SVC>_MAX_CONCURRENT_EXPENSIVE_REQUESTS` | 64 |
    /// | `TETHER_<SVC>_MAX_CONCURRENT_EXPENSIVE_REQUESTS_PER_CLIENT` | 8 |
    /// | `TETHER_<SVC>_SHUTDOWN_GRACE_MS` | 4000 |
    pub fn load(source: &ConfigSource, service: &'static str, default_port: u16) -> Result<Self, ConfigError> {
        let key = |k: &str| service_key(service, k);
        let listen_addr = source.parse_or(
            &key("LISTEN_ADDR"),
            SocketAddr::from(([127, 0, 0, 1], default_port)),
            "a socket address such as 127.0.0.1:50051",
        )?;
        let database = database_target(source, service)?;
        Ok(Self {
            service,
            listen_addr,
            database,
            request_timeout: source.millis_or(&key("REQUEST_TIMEOUT_MS"), Duration::from_secs(10), 1..=600_000)?,
            budgets: CallBudgets::load(source, service)?,
            service_token: crate::access::ServiceToken::load(source)?,
            shutdown_grace: source.millis_or(&key("SHUTDOWN_GRACE_MS"), Duration::from_secs(4), 0..=120_000)?,
        })
    }
}

/// How many calls of each class a server runs at once (see `server::budget`): the hot path
/// other services call on every request, the expensive calls (password hashing), and the rest.
/// Health and reflection are never limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallBudgets {
    pub hot_path: usize,
    pub expensive: usize,
    /// One client address's share of `expensive`.
    pub expensive_per_client: usize,
    pub standard: usize,
}

impl CallBudgets {
    fn load(source: &ConfigSource, service: &str) -> Result<Self, ConfigError> {
        let key = |k: &str| service_key(service, k);
        let expensive = source.count_or(&key("MAX_CONCURRENT_EXPENSIVE_REQUESTS"), 64, 1..=1_000_000)?;
        let per_client_key = key("MAX_CONCURRENT_EXPENSIVE_REQUESTS_PER_CLIENT");
        let expensive_per_client = source.count_or(&per_client_key, 8.min(expensive), 1..=1_000_000)?;
        if expensive_per_client > expensive {
            let expected = format!("at most MAX_CONCURRENT_EXPENSIVE_REQUESTS ({expensive})");
            return Err(invalid(&per_client_key, &expensive_per_client.to_string(), &expected));
        }
        Ok(Self {
            hot_path: source.count_or(&key("MAX_CONCURRENT_HOT_REQUESTS"), 1024, 1..=1_000_000)?,
            expensive,
            expensive_per_client,
            standard: source.count_or(&key("MAX_CONCURRENT_REQUESTS"), 1024, 1..=1_000_000)?,
        })
    }
}

/// The address of another Tether service this one calls: `TETHER_<SERVICE>_<UPSTREAM>_ADDR`,
/// default `http://127.0.0.1:<default_port>`. Services find each other only this way.
pub fn upstream_addr(
    source: &ConfigSource,
    service: &str,
    upstream: &str,
    default_port: u16,
) -> Result<String, ConfigError> {
    let key = service_key(service, &format!("{}_ADDR", upstream.to_ascii_uppercase()));
    match source.get(&key) {
        None => Ok(format!("http://127.0.0.1:{default_port}")),
        Some(addr) => {
            let addr = addr.trim().trim_end_matches('/');
            let rest = addr.strip_prefix("http://").or_else(|| addr.strip_prefix("https://"));
            match rest {
                Some(host_port) if !host_port.is_empty() && !host_port.contains('/') => Ok(addr.to_owned()),
                _ => Err(invalid(&key, addr, "a URL such as http://127.0.0.1:50051")),
            }
        }
    }
}

/// `TETHER_<SERVICE>_<KEY>`.
pub fn service_key(service: &str, key: &str) -> String {
    format!("TETHER_{}_{}", service.to_ascii_uppercase(), key)
}

fn database_target(source: &ConfigSource, service: &str) -> Result<DatabaseTarget, ConfigError> {
    let service_url_key = service_key(service, "DATABASE_URL");
    let (key, url) = match source.get(&service_url_key) {
        Some(url) => (service_url_key, Some(url)),
        None => ("DATABASE_URL".to_owned(), source.get("DATABASE_URL")),
    };
    let expected = "postgres://… or sqlite://<path>";
    match url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(DatabaseTarget::Postgres(url.to_owned()))
        }
        Some(url) => match url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            Some(path) if !path.is_empty() => Ok(DatabaseTarget::Sqlite(PathBuf::from(path))),
            _ => Err(invalid(&key, url, expected)),
        },
        None => {
            let dir = PathBuf::from(source.get("TETHER_DATA_DIR").unwrap_or(".tether-data"));
            Ok(DatabaseTarget::Sqlite(dir.join(format!("{service}.db"))))
        }
    }
}

/// A value that must never be printed (passwords, SMTP credentials).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The given values and the service token every service requires.
    fn with_token<const N: usize>(pairs: [(&str, &str); N]) -> ConfigSource {
        ConfigSource::from_pairs(pairs).with(crate::access::ServiceToken::KEY, "s".repeat(32))
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = ServiceSettings::load(&with_token([]), "identity", 50051).unwrap();
        assert_eq!(s.listen_addr, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(s.database, DatabaseTarget::Sqlite(PathBuf::from(".tether-data/identity.db")));
        assert_eq!(s.request_timeout, Duration::from_secs(10));
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let src = ConfigSource::from_pairs([("TETHER_AUTHZ_LISTEN_ADDR", "not-an-address")]);
        let err = ServiceSettings::load(&src, "authz", 50053).unwrap_err();
        assert!(err.to_string().contains("TETHER_AUTHZ_LISTEN_ADDR"), "{err}");
        let src = ConfigSource::from_pairs([("TETHER_AUDIT_REQUEST_TIMEOUT_MS", "0")]);
        let err = ServiceSettings::load(&src, "audit", 50054).unwrap_err();
        assert!(err.to_string().contains("TETHER_AUDIT_REQUEST_TIMEOUT_MS"), "{err}");
    }

    #[test]
    fn service_database_url_wins_over_the_shared_one() {
        let src = with_token([
            ("DATABASE_URL", "postgres://shared/db"),
            ("TETHER_TENANCY_DATABASE_URL", "sqlite:///tmp/t.db"),
        ]);
        let s = ServiceSettings::load(&src, "tenancy", 50052).unwrap();
        assert_eq!(s.database, DatabaseTarget::Sqlite(PathBuf::from("/tmp/t.db")));
        let s = ServiceSettings::load(&src, "identity", 50051).unwrap();
        assert_eq!(s.database, DatabaseTarget::Postgres("postgres://shared/db".into()));
        let bad = ConfigSource::from_pairs([("DATABASE_URL", "mysql://x")]);
        let err = ServiceSettings::load(&bad, "identity", 50051).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn upstream_addresses_default_to_loopback_and_are_checked() {
        let src = ConfigSource::from_pairs([("TETHER_AUTHZ_TENANCY_ADDR", "http://tenancy.internal:7000/")]);
        assert_eq!(upstream_addr(&src, "authz", "identity", 50051).unwrap(), "http://127.0.0.1:50051");
        assert_eq!(upstream_addr(&src, "authz", "tenancy", 50052).unwrap(), "http://tenancy.internal:7000");
        let bad = ConfigSource::from_pairs([("TETHER_AUTHZ_TENANCY_ADDR", "tenancy:50052")]);
        let err = upstream_addr(&bad, "authz", "tenancy", 50052).unwrap_err();
        assert!(err.to_string().contains("TETHER_AUTHZ_TENANCY_ADDR"), "{err}");
    }

    #[test]
    fn file_values_are_read_and_the_environment_wins() {
        let dir = std::env::temp_dir().join(format!("tether-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tether.env");
        std::fs::write(&file, "# comment\nTETHER_IDENTITY_LISTEN_ADDR=127.0.0.1:6000\n").unwrap();
        let mut src = ConfigSource::default();
        src.merge_file(&file).unwrap();
        assert_eq!(src.get("TETHER_IDENTITY_LISTEN_ADDR"), Some("127.0.0.1:6000"));
        std::fs::write(&file, "garbage line\n").unwrap();
        let err = ConfigSource::default().merge_file(&file).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }
}

//! Plumbing shared by Tether's four services.
//!
//! Every service starts the same way: typed configuration from the environment ([`config`]),
//! telemetry installed once per process ([`telemetry`]), a database opened and migrated
//! ([`db`]), and a gRPC server with health, reflection, tracing, timeouts and load shedding
//! ([`server`]). Outbound calls go through [`client`] so the W3C trace context travels with
//! them, and every handler error becomes a gRPC status through [`error`].

pub mod access;
pub mod client;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod host;
pub mod server;
pub mod shutdown;
pub mod telemetry;

pub use config::{ConfigError, ConfigSource, ServiceSettings};
pub use error::ApiError;
pub use host::{ServiceHost, StartError, run_binary};

//! Plumbing shared by Tether's four services.
//!
//! Every service starts the same way: typed configuration from the environment ([`config`]),
//! telemetry installed once per process ([`telemetry`]), a database opened and migrated
//! (`db`), and a gRPC server with health, reflection, tracing, timeouts and load shedding
//! (`server`). Outbound calls go through [`client`] so the W3C trace context travels with
//! them, and every handler error becomes a gRPC status through [`error`].
//!
//! The `server` feature (on by default) carries storage, the outbox, the server and telemetry
//! installation. Without it the crate is the client part a program that only calls Tether needs:
//! [`access`] (the service token, callers, the identity and authz clients), [`client`],
//! [`config`], [`error`] and the trace id of [`telemetry`], with no database, OpenTelemetry SDK
//! or log subscriber behind them.

pub mod access;
pub mod client;
pub mod config;
#[cfg(feature = "server")]
pub mod db;
pub mod error;
#[cfg(feature = "server")]
pub mod events;
#[cfg(feature = "server")]
pub mod host;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod shutdown;
pub mod telemetry;

pub use config::{ConfigError, ConfigSource, ServiceSettings};
pub use error::ApiError;
#[cfg(feature = "server")]
pub use host::{ServiceHost, StartError, run_binary};

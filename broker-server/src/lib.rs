//! `broker serve`: broker's REST API over HTTP (axum on tokio).
//!
//! Two faces on one inventory and one `targets.yaml`:
//! - Razor's broker routes (`/broker`, `/broker/{uuid}`, `/broker/plugins`), with its `json_hash`
//!   parameter and its response envelope, so Razor's clients keep working ([`razor`]);
//! - the native API under `/api/v1`: handoff kinds and targets, inventory hosts, checkouts run as
//!   operations a client polls ([`api`]); its errors are RFC 7807 problem documents ([`problem`]).
//!
//! Every route but `GET /health` takes a bearer token ([`tokens`]: kept hashed in the settings
//! file, each with a [`Role`]). Secrets come back only as fingerprints; tokens, secrets and query
//! strings never reach the log.
//!
//! The library installs no signal handler and no logger: [`Server::run`] stops when the future it is
//! given completes (the CLI gives it Ctrl-C and SIGTERM).

mod access;
pub mod api;
mod auth;
mod body;
mod listen;
pub mod openapi;
pub mod options;
pub mod problem;
pub mod razor;
mod state;
mod tls;
pub mod tokens;

pub use listen::Server;
pub use options::{DEFAULT_LISTEN, ServeOptions, TlsFiles, check_listen};
pub use tokens::{Role, TokenInfo};

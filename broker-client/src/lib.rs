//! A client of `broker serve`: the inventory and handoff targets of a broker server, used as the
//! library uses its own.
//!
//! [`RemoteBroker`] speaks the server's native API (`/api/v1`). What it returns is broker-core's:
//! [`HostRecord`]s, [`Target`]s, handoff reports as mappings, and [`broker_core::Error`] — each
//! refusal mapped to the error the same failure is locally, so a caller (and the CLI's exit code)
//! cannot tell a remote `no such host` from a local one.
//!
//! **Why not a remote [`broker_core::InventoryStore`].** A store is written record by record by
//! whoever checks hosts out; a remote inventory is written by the server alone, which checks hosts
//! out itself. So a checkout here is an operation on the server (`POST /api/v1/checkouts`, then
//! polled until it ends), never a local checkout recording into a remote file: the hosts are the
//! server's providers', made with its settings and credentials, and a client that goes away stops
//! nothing. Likewise targets: the server makes their ids and keeps their secrets, which it shows
//! only as fingerprints, so a [`Target`] read here has its secrets as `secret sha256:…` text and is
//! for showing, not for running a handoff.
//!
//! **The token** is a [`SecretString`]: it goes in the `Authorization` header of requests to the
//! configured server only (marked sensitive; redirects are not followed, so it never reaches
//! another origin), and never into an error, a log line or `Debug`.
//!
//! ```no_run
//! # async fn example() -> broker_core::Result<()> {
//! use broker_client::{RemoteBroker, RemoteCheckout};
//! use secrecy::SecretString;
//!
//! let token = SecretString::from(std::env::var("BROKER_SERVER_TOKEN").unwrap_or_default());
//! let server = RemoteBroker::new("http://127.0.0.1:8420", token)?;
//! let hosts = server
//!     .checkout(&RemoteCheckout::new().arg("test_action", "basic"))
//!     .await?;
//! for host in &hosts {
//!     server.checkin(host.id().as_str()).await?;
//! }
//! # Ok(())
//! # }
//! ```

mod http;
mod targets;

use broker_core::{Error, HostRecord, Mapping, Result, Value};
use reqwest::Method;
use secrecy::SecretString;
use serde::Deserialize;

pub use secrecy;
pub use targets::TargetSpec;

use crate::http::Http;

/// A broker server, reached over HTTP(S) with a bearer token.
#[derive(Debug)]
pub struct RemoteBroker {
    http: Http,
}

/// A checkout to run on the server: a nick of the server's settings and/or provider arguments, a
/// count, a handoff target.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct RemoteCheckout {
    nick: Option<String>,
    arguments: Mapping,
    count: Option<usize>,
    handoff: Option<String>,
    keep_failed_handoff: bool,
}

impl RemoteCheckout {
    /// An empty checkout: give a nick or arguments.
    pub fn new() -> Self {
        Self::default()
    }

    /// A nick of the server's settings.
    pub fn nick(mut self, nick: impl Into<String>) -> Self {
        self.nick = Some(nick.into());
        self
    }

    /// One provider argument (`test_action: basic`), over the nick's.
    pub fn arg(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.arguments
            .insert(Value::String(key.into()), value.into());
        self
    }

    /// Provider arguments, over those given before.
    pub fn args(mut self, arguments: Mapping) -> Self {
        self.arguments.extend(arguments);
        self
    }

    /// How many hosts, all or none (default 1).
    pub fn count(mut self, count: usize) -> Self {
        self.count = Some(count);
        self
    }

    /// Hands each host to this target once it is ready.
    pub fn handoff(mut self, target: impl Into<String>) -> Self {
        self.handoff = Some(target.into());
        self
    }

    /// Keeps hosts whose handoff failed instead of failing the checkout.
    pub fn keep_failed_handoff(mut self, keep: bool) -> Self {
        self.keep_failed_handoff = keep;
        self
    }

    fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "arguments": broker_core::value::to_json(&self.arguments),
            "keep_failed_handoff": self.keep_failed_handoff,
        });
        if let Some(nick) = &self.nick {
            body["nick"] = nick.clone().into();
        }
        if let Some(count) = self.count {
            body["count"] = count.into();
        }
        if let Some(target) = &self.handoff {
            body["handoff"] = target.clone().into();
        }
        body
    }
}

/// Where a checkout operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OperationState {
    /// Under way on the server.
    Running,
    /// Done: its hosts are checked out.
    Succeeded,
    /// Done: nothing is checked out.
    Failed,
    /// Stopped by the server's stop (or found under way after its restart): what it made was given
    /// back, or is `pending` in the server's inventory for `broker recover` there.
    Interrupted,
    /// A state this client does not know (a newer server's).
    #[serde(other)]
    Unknown,
}

/// A checkout operation as the server shows it.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct Operation {
    /// Its id (`o` and 16 hex digits).
    pub id: String,
    /// Where it is.
    pub state: OperationState,
    /// The hosts, once it succeeded (secret-looking fields masked).
    #[serde(default)]
    hosts: Vec<serde_json::Value>,
    /// Why it failed.
    #[serde(default)]
    error: Option<Problem>,
}

/// An RFC 7807 problem document, as far as a client needs it.
#[derive(Debug, Clone, Deserialize)]
struct Problem {
    status: u16,
    detail: String,
}

impl RemoteBroker {
    /// A client of the server at `server` (`http://HOST:PORT`, `https://…`; `HOST:PORT` alone is
    /// taken as `http://`) showing it `token`. Nothing is sent yet.
    ///
    /// # Errors
    /// [`Error::Usage`] for an address that is not an http(s) URL, or that carries a user or
    /// password (the token is the only credential sent).
    pub fn new(server: &str, token: SecretString) -> Result<Self> {
        Ok(RemoteBroker {
            http: Http::new(server, token, None)?,
        })
    }

    /// As [`RemoteBroker::new`], trusting the certificates in `ca_pem` (PEM, one or more) for the
    /// server's HTTPS besides the system's: for a server whose certificate a private CA signed, or
    /// a self-signed one.
    ///
    /// # Errors
    /// As [`RemoteBroker::new`]; [`Error::Configuration`] when `ca_pem` holds no PEM certificate.
    pub fn trusting(server: &str, token: SecretString, ca_pem: &[u8]) -> Result<Self> {
        Ok(RemoteBroker {
            http: Http::new(server, token, Some(ca_pem))?,
        })
    }

    /// The server's address, as messages show it.
    pub fn server(&self) -> String {
        self.http.shown()
    }

    /// Every record of the server's inventory, in order (secret-looking fields masked).
    ///
    /// # Errors
    /// The server cannot be reached ([`Error::Internal`]), refuses the token
    /// ([`Error::Authentication`]), or fails.
    pub async fn hosts(&self) -> Result<Vec<HostRecord>> {
        let listed: Vec<serde_json::Value> = self
            .http
            .json(Method::GET, "api/v1/hosts", &[], None)
            .await?;
        listed.iter().map(record).collect()
    }

    /// Checks the hosts out on the server and waits until they are: all of them, or none and the
    /// error that the server's checkout failed with. The checkout is the server's: it goes on when
    /// this future is dropped (see [`RemoteBroker::start_checkout`]).
    ///
    /// # Errors
    /// As [`RemoteBroker::hosts`]; the checkout's failure (an unknown nick: [`Error::User`]; a
    /// provider's: [`Error::Provider`]).
    pub async fn checkout(&self, checkout: &RemoteCheckout) -> Result<Vec<HostRecord>> {
        let started = self.start_checkout(checkout).await?;
        let ended = self.wait(&started.id).await?;
        self.hosts_of(ended)
    }

    /// Starts a checkout on the server and returns its operation at once.
    ///
    /// # Errors
    /// As [`RemoteBroker::hosts`]; a request the server refuses before starting ([`Error::User`]
    /// for no nick and no arguments).
    pub async fn start_checkout(&self, checkout: &RemoteCheckout) -> Result<Operation> {
        let body = checkout.body();
        self.http
            .json(Method::POST, "api/v1/checkouts", &[], Some(&body))
            .await
    }

    /// Waits until the operation `id` has ended (the server answers within 10 minutes; this asks
    /// again until it has ended).
    ///
    /// # Errors
    /// As [`RemoteBroker::hosts`]; [`Error::User`] for an operation the server does not know.
    pub async fn wait(&self, id: &str) -> Result<Operation> {
        let path = format!("api/v1/operations/{}", segment(id));
        loop {
            let operation: Operation = self
                .http
                .json(Method::GET, &path, &[("wait", "true")], None)
                .await?;
            if operation.state != OperationState::Running {
                return Ok(operation);
            }
        }
    }

    /// The hosts of an ended operation, or the error it failed with.
    ///
    /// # Errors
    /// The operation's failure, mapped as a refused request is; [`Error::Usage`] for one still
    /// running.
    pub fn hosts_of(&self, operation: Operation) -> Result<Vec<HostRecord>> {
        match operation.state {
            OperationState::Succeeded => operation.hosts.iter().map(record).collect(),
            OperationState::Failed => {
                let problem = operation.error.unwrap_or(Problem {
                    status: 500,
                    detail: "the checkout failed without saying why".into(),
                });
                let status = reqwest::StatusCode::from_u16(problem.status)
                    .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
                Err(http::problem_error(
                    &self.http.shown(),
                    status,
                    &problem.detail,
                ))
            }
            OperationState::Interrupted => Err(Error::Interrupted {
                message: format!(
                    "the broker server at {} stopped checkout operation {}: {}",
                    self.http.shown(),
                    operation.id,
                    operation.error.map(|p| p.detail).unwrap_or_default()
                ),
            }),
            OperationState::Running => Err(Error::usage(format!(
                "operation {} is still running; wait for it first",
                operation.id
            ))),
            OperationState::Unknown => Err(Error::internal(
                format!(
                    "the broker server at {} says operation {} is in a state this broker does                      not know; is it a broker server of the same version?",
                    self.http.shown(),
                    operation.id
                ),
                "unknown operation state",
            )),
        }
    }

    /// Checks in the host `id` (its `_broker_id`, or a hostname or name only one host has). A host
    /// already gone at its provider counts as checked in.
    ///
    /// # Errors
    /// As [`RemoteBroker::hosts`]; [`Error::User`] for no such host or one still being checked
    /// out; the provider's failure.
    pub async fn checkin(&self, id: &str) -> Result<()> {
        let path = format!("api/v1/hosts/{}", segment(id));
        self.http.send(Method::DELETE, &path, &[], None).await?;
        Ok(())
    }

    /// Extends the host `id` with the provider's extend arguments (and broker's `lease`); the
    /// record as it is then.
    ///
    /// # Errors
    /// As [`RemoteBroker::checkin`]; [`Error::Usage`] for an argument the provider does not take.
    pub async fn extend(&self, id: &str, arguments: &Mapping) -> Result<HostRecord> {
        let path = format!("api/v1/hosts/{}/extend", segment(id));
        let body = serde_json::json!({ "arguments": broker_core::value::to_json(arguments) });
        let shown: serde_json::Value = self
            .http
            .json(Method::POST, &path, &[], Some(&body))
            .await?;
        record(&shown)
    }

    /// The handoff fields of the host `id` (`broker handoff status`); empty when never handed off.
    ///
    /// # Errors
    /// As [`RemoteBroker::checkin`].
    pub async fn handoff_status(&self, id: &str) -> Result<Mapping> {
        let path = format!("api/v1/hosts/{}/handoff", segment(id));
        let shown: serde_json::Value = self.http.json(Method::GET, &path, &[], None).await?;
        mapping(&shown)
    }

    /// Hands the host `id` to `target` (default: the one it was last handed to) on the server, or
    /// again after a failure (`retry`), and answers when the run has ended: its report, as
    /// [`broker_core::handoff::run::RunReport::to_mapping`] gives it. A failed handoff is a
    /// report, not an error.
    ///
    /// # Errors
    /// As [`RemoteBroker::checkin`]; [`Error::User`] for an unknown target.
    pub async fn handoff(&self, id: &str, target: Option<&str>, retry: bool) -> Result<Mapping> {
        let path = format!("api/v1/hosts/{}/handoff", segment(id));
        let mut body = serde_json::json!({ "retry": retry });
        if let Some(target) = target {
            body["target"] = target.into();
        }
        let shown: serde_json::Value = self
            .http
            .json(Method::POST, &path, &[], Some(&body))
            .await?;
        mapping(&shown)
    }
}

/// A record of the server's, as broker-core's type.
fn record(shown: &serde_json::Value) -> Result<HostRecord> {
    Ok(HostRecord::from_mapping(mapping(shown)?))
}

fn mapping(shown: &serde_json::Value) -> Result<Mapping> {
    match broker_core::value::to_yaml(shown) {
        Value::Mapping(fields) => Ok(fields),
        _ => Err(Error::internal(
            "the broker server answered with something that is not a record",
            format!("expected an object, got `{shown}`"),
        )),
    }
}

/// `text` as one path segment: percent-encoded, so an id or name cannot reach another route.
pub(crate) fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkout_body_holds_what_was_asked() {
        let body = RemoteCheckout::new()
            .nick("N")
            .arg("test_action", "basic")
            .count(2)
            .handoff("hook")
            .body();
        assert_eq!(
            body,
            serde_json::json!({"arguments": {"test_action": "basic"}, "keep_failed_handoff": false,
                "nick": "N", "count": 2, "handoff": "hook"})
        );
    }

    #[test]
    fn ids_and_names_stay_one_path_segment() {
        assert_eq!(segment("0"), "0");
        assert_eq!(segment("../tokens"), "..%2Ftokens");
        assert_eq!(segment("a b?c"), "a%20b%3Fc");
    }
}

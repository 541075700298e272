//! Commands on a Foreman host that SSH cannot reach: Foreman remote execution. A job invocation of
//! `Run Command - Script Default` targets the host by its exact name, is polled until it ends, and
//! its output for that host is read: the `Exit status: N` line Foreman's SSH provider writes gives
//! the exit status, the other `stdout` chunks the output.

use std::time::{Duration, Instant};

use broker_core::session::ExecOutput;
use broker_core::{Error, Result};
use serde_json::{Value as Json, json};

use super::api::Api;

/// The job template that runs a shell command.
pub(crate) const COMMAND_TEMPLATE: &str = "Run Command - Script Default";

/// How long a command may run when the caller gives no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// A session that runs commands through Foreman remote execution.
#[derive(Debug)]
pub(crate) struct RexSession {
    api: Api,
    host: String,
    scope: (u64, u64),
    poll_interval: Duration,
}

impl RexSession {
    /// A session for the host `host`, in the organisation and location `scope`.
    pub(crate) fn new(api: Api, host: &str, scope: (u64, u64), poll_interval: Duration) -> Self {
        RexSession {
            api,
            host: host.to_owned(),
            scope,
            poll_interval,
        }
    }

    fn error(&self, message: String) -> Error {
        Error::provider(super::NAME, message).with_host(&self.host)
    }

    async fn template_id(&self) -> Result<u64> {
        let found = self
            .api
            .all(
                &["job_templates"],
                Some(&format!("name = \"{COMMAND_TEMPLATE}\"")),
            )
            .await
            .map_err(|e| e.into_error("listing job templates"))?;
        found
            .iter()
            .find(|t| t["name"].as_str() == Some(COMMAND_TEMPLATE))
            .and_then(|t| t["id"].as_u64())
            .ok_or_else(|| {
                self.error(format!(
                    "Foreman has no job template `{COMMAND_TEMPLATE}`; remote execution needs it"
                ))
            })
    }

    /// Starts the job and returns its id.
    async fn invoke(&self, command: &str) -> Result<u64> {
        let template = self.template_id().await?;
        let body = json!({
            "organization_id": self.scope.0,
            "location_id": self.scope.1,
            "job_invocation": {
                "job_template_id": template,
                "targeting_type": "static_query",
                "search_query": format!("name = \"{}\"", self.host),
                "inputs": {"command": command},
            },
        });
        let job = self
            .api
            .post(&["job_invocations"], &body)
            .await
            .map_err(|e| e.into_error("starting a remote execution job"))?;
        job["id"]
            .as_u64()
            .ok_or_else(|| self.error("Foreman answered a job invocation without an id".into()))
    }

    /// Polls the job until it is no longer running.
    async fn wait(&self, id: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let id = id.to_string();
        loop {
            let job = match self.api.get(&["job_invocations", &id]).await {
                Ok(job) => job,
                Err(e) if e.transient() && Instant::now() < deadline => continue,
                Err(e) => return Err(e.into_error(&format!("reading job {id}"))),
            };
            let status = job["status_label"].as_str().unwrap_or("running");
            if !matches!(status, "running" | "queued" | "pending" | "scheduled") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    operation: format!("remote execution job {id} on `{}`", self.host),
                    after: timeout,
                });
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }
}

/// The output and exit status of one host's part of a job, from its output chunks.
pub(crate) fn parse_output(chunks: &[Json]) -> Option<ExecOutput> {
    let mut stdout = String::new();
    let mut status = None;
    for chunk in chunks {
        let text = chunk["output"].as_str().unwrap_or_default();
        if chunk["output_type"].as_str() != Some("stdout") {
            continue;
        }
        match text.trim().strip_prefix("Exit status: ") {
            Some(code) => status = code.trim().parse().ok(),
            None => stdout.push_str(text),
        }
    }
    Some(ExecOutput {
        stdout,
        stderr: String::new(),
        status: status?,
    })
}

#[async_trait::async_trait]
impl broker_core::Session for RexSession {
    async fn execute(&self, command: &str, timeout: Option<Duration>) -> Result<ExecOutput> {
        let id = self.invoke(command).await?;
        self.wait(id, timeout.unwrap_or(DEFAULT_TIMEOUT)).await?;
        let outputs = self
            .api
            .get(&["job_invocations", &id.to_string(), "outputs"])
            .await
            .map_err(|e| e.into_error(&format!("reading the output of job {id}")))?;
        let ours = outputs["outputs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["host_name"].as_str() == Some(self.host.as_str()));
        let chunks = ours
            .and_then(|o| o["output"].as_array())
            .map(Vec::as_slice)
            .unwrap_or_default();
        parse_output(chunks).ok_or_else(|| {
            self.error(format!(
                "remote execution job {id} reported no exit status for `{}`",
                self.host
            ))
        })
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        Err(self.error(format!(
            "cannot read `{path}`: the host is not reachable over SSH, and Foreman remote execution carries no files"
        )))
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<()> {
        let _ = contents;
        Err(self.error(format!(
            "cannot write `{path}`: the host is not reachable over SSH, and Foreman remote execution carries no files"
        )))
    }
}

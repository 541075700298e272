//! What every request handler shares.

use std::sync::Arc;

use broker_core::Broker;
use broker_core::handoff::TargetStore;

use crate::api::operations::Operations;
use crate::options::ServeOptions;
use crate::problem::Problem;
use crate::tokens::TokenSource;

/// The server's state: the broker (inventory, providers, settings), the target store, the tokens
/// (read again when the settings file changes), the checkouts under way, and the limits.
#[derive(Clone)]
pub(crate) struct AppState {
    pub broker: Broker,
    pub targets: Arc<dyn TargetStore>,
    pub tokens: Arc<TokenSource>,
    pub operations: Arc<Operations>,
    pub options: Arc<ServeOptions>,
}

impl AppState {
    /// Runs `work` — file I/O: the inventory, `targets.yaml`, their locks — on a blocking thread,
    /// so that a lock another process holds stalls this request only, never the server.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&AppState) -> Result<T, Problem> + Send + 'static,
    ) -> Result<T, Problem> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || work(&state))
            .await
            .unwrap_or_else(|_| {
                Err(Problem::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "the request's work failed",
                ))
            })
    }
}

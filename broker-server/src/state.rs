//! What every request handler shares.

use std::sync::Arc;

use broker_core::Broker;
use broker_core::handoff::TargetStore;

use crate::api::operations::Operations;
use crate::options::ServeOptions;
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

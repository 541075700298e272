//! The listener: HTTP/1.1 connections served by hyper with a header read timeout (slow or idle
//! clients are cut off), and a graceful stop — no new connections, checkouts under way stopped
//! and given back (or left `pending` for `broker recover`), requests under way answered.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use broker_core::handoff::YamlTargetStore;
use broker_core::{Broker, Error, Result};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::api::operations::Operations;
use crate::options::{ServeOptions, check_listen};
use crate::state::AppState;
use crate::tokens::TokenSource;

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    state: AppState,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.listener.local_addr().ok())
            .field("tokens", &self.state.tokens)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Checks the address ([`check_listen`]; the warning for `--insecure` is logged), reads the
    /// tokens from the settings file of the broker's directory (again whenever it changes) and
    /// binds.
    ///
    /// # Errors
    /// [`Error::Usage`] for an address refused; [`Error::Configuration`] for malformed tokens or
    /// settings; [`Error::Io`] when the address cannot be bound.
    pub async fn bind(broker: Broker, options: ServeOptions) -> Result<Self> {
        if let Some(warning) = check_listen(&options.listen, options.insecure)? {
            tracing::warn!("{warning}");
        }
        let tokens = TokenSource::open(broker.settings())?;
        if tokens.current().is_empty() {
            tracing::warn!(
                "no tokens in the settings: every route but /health answers 401 until one is \
                 added with `broker serve token add NAME --role read|write|admin`"
            );
        }
        let targets = Arc::new(YamlTargetStore::for_settings(broker.settings())?);
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|e| Error::io_without_path("listening on the serve address", e))?;
        let operations = Arc::new(Operations::new(broker.settings())?);
        Ok(Server {
            listener,
            state: AppState {
                broker,
                targets,
                tokens: Arc::new(tokens),
                operations,
                options: Arc::new(options),
            },
        })
    }

    /// The address bound (the port chosen when the options asked for port 0).
    ///
    /// # Errors
    /// [`Error::Io`] when the socket cannot say.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io_without_path("reading the listening address", e))
    }

    /// Serves until `shutdown` completes, then stops gracefully: stops taking connections, stops
    /// the checkouts under way (they give back what they made, as a cancelled checkout does),
    /// answers the requests under way, and returns.
    ///
    /// # Errors
    /// None yet: connection errors are logged, not returned.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let Server { listener, state } = self;
        let app = crate::api::router(state.clone());
        let graceful = GracefulShutdown::new();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(state.options.header_timeout);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let service = TowerToHyperService::new(app.clone());
                        let connection = http.serve_connection(TokioIo::new(stream), service);
                        let watched = graceful.watch(connection);
                        tokio::spawn(async move {
                            if let Err(e) = watched.await {
                                tracing::debug!("connection ended: {e}");
                            }
                        });
                    }
                    // Out of file descriptors, a connection reset before it was taken: go on.
                    Err(e) => {
                        tracing::warn!("cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        tracing::info!("stopping: checkouts under way are stopped, requests under way answered");
        state.operations.cancel_all();
        let bound = state.operations.stop_bound();
        if tokio::time::timeout(bound, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still under way after {bound:?}; stopping without them");
        }
        state.operations.wait_all(bound).await;
        Ok(())
    }
}

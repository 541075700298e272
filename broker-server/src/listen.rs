//! The listener: HTTP/1.1 connections served by hyper with a header read timeout (slow or idle
//! clients are cut off), and a graceful stop — no new connections, checkouts under way stopped
//! and given back (or left `pending` for `broker recover`), requests under way answered.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use broker_core::{Broker, Error, Result};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::api::operations::Operations;
use crate::options::{ServeOptions, check_listen};
use crate::state::AppState;
use crate::tokens::TokenSource;

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
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
    /// Reads the TLS certificate and key when given, or else checks the address
    /// ([`check_listen`]; the warning for `--insecure` is logged), reads the tokens from the
    /// settings file of the broker's directory (again whenever it changes) and binds.
    ///
    /// # Errors
    /// [`Error::Usage`] for an address refused; [`Error::Configuration`] for malformed tokens or
    /// settings, or a TLS certificate or key that cannot be read or do not go together;
    /// [`Error::Io`] when the address cannot be bound.
    pub async fn bind(broker: Broker, options: ServeOptions) -> Result<Self> {
        let tls = match &options.tls {
            Some(files) => Some(crate::tls::acceptor(files)?),
            None => {
                if let Some(warning) = check_listen(&options.listen, options.insecure)? {
                    tracing::warn!("{warning}");
                }
                None
            }
        };
        let tokens = TokenSource::open(broker.settings())?;
        if tokens.current().is_empty() {
            tracing::warn!(
                "no tokens in the settings: every route but /health answers 401 until one is \
                 added with `broker serve token add NAME --role read|write|admin`"
            );
        }
        let targets = Arc::clone(broker.target_store());
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|e| Error::io_without_path("listening on the serve address", e))?;
        let operations = Arc::new(Operations::new(broker.settings())?);
        Ok(Server {
            listener,
            tls,
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

    /// `https` when serving TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Serves until `shutdown` completes, then stops gracefully: stops taking connections, stops
    /// the checkouts under way (they give back what they made, as a cancelled checkout does),
    /// answers the requests under way, and returns.
    ///
    /// # Errors
    /// None yet: connection errors are logged, not returned.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let Server {
            listener,
            tls,
            state,
        } = self;
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
                        let connection = Connection {
                            http: http.clone(),
                            app: app.clone(),
                            watcher: graceful.watcher(),
                        };
                        match &tls {
                            Some(acceptor) => connection.spawn_tls(
                                acceptor.clone(),
                                stream,
                                state.options.header_timeout,
                            ),
                            None => {
                                tokio::spawn(connection.serve(stream));
                            }
                        }
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

/// What serving one accepted connection needs.
struct Connection {
    http: hyper::server::conn::http1::Builder,
    app: axum::Router,
    watcher: Watcher,
}

impl Connection {
    /// Serves HTTP/1.1 on `io` until the connection ends (or the stop lets it end).
    async fn serve<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, io: I) {
        let service = TowerToHyperService::new(self.app);
        let connection = self.http.serve_connection(TokioIo::new(io), service);
        if let Err(e) = self.watcher.watch(connection).await {
            tracing::debug!("connection ended: {e}");
        }
    }

    /// The TLS handshake (within `limit`, as a request's headers), then [`Connection::serve`]. A
    /// client that does not speak TLS — plain HTTP on the HTTPS port — is dropped.
    fn spawn_tls(self, acceptor: TlsAcceptor, stream: TcpStream, limit: Duration) {
        tokio::spawn(async move {
            match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => self.serve(tls).await,
                Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                Err(_) => tracing::debug!("TLS handshake not done within {limit:?}"),
            }
        });
    }
}

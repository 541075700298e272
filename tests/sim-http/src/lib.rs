//! What broker's API simulators (`tests/awx-sim`, `tests/openstack-sim`) share: a hyper server on
//! its own thread, stopped when dropped; JSON replies; faults asked for on demand and taken by the
//! requests they match.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::Value;

/// An answer.
pub type Reply = Response<Full<Bytes>>;

/// A server running on its own thread; dropping it stops the server.
#[derive(Debug)]
pub struct Served {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves `listener` (HTTPS through `tls` when given) on a thread of its own, each request answered
/// by `handle(state, request)`; an `Err` from `handle` closes the connection without an answer.
///
/// # Errors
/// When the listener cannot be made non-blocking or the runtime cannot be built.
pub fn serve<S, F, Fut, E>(
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<S>,
    handle: F,
) -> std::io::Result<Served>
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let state = Arc::clone(&state);
                        let tls = tls.clone();
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&state), req));
                            let http = hyper::server::conn::http1::Builder::new();
                            match tls {
                                Some(acceptor) => {
                                    // A client that refuses the certificate ends here.
                                    let Ok(stream) = acceptor.accept(stream).await else { return };
                                    let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                                }
                                None => {
                                    let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                                }
                            }
                        });
                    }
                }
            }
        });
    });
    Ok(Served {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// The state behind `mutex`, also after a panic poisoned it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A JSON answer.
pub fn reply(status: u16, body: Value) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `204 No Content`.
pub fn no_content() -> Reply {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// A fault for the next matching requests; `K` is what it does (each simulator has its own kinds).
#[derive(Debug, Clone)]
pub struct Fault<K> {
    /// Requests whose path contains this.
    pub path_contains: String,
    /// Only this method, or any.
    pub method: Option<String>,
    /// What happens.
    pub kind: K,
    /// How many requests it hits.
    pub times: u32,
}

/// The kind of the first fault in `faults` that a `method` request of `path` matches, used up by one
/// (and removed when it has hit all its requests).
pub fn take_fault<K: Clone>(faults: &mut Vec<Fault<K>>, method: &str, path: &str) -> Option<K> {
    let i = faults.iter().position(|f| {
        path.contains(&f.path_contains) && f.method.as_deref().is_none_or(|m| m == method)
    })?;
    let fault = &mut faults[i];
    let kind = fault.kind.clone();
    fault.times = fault.times.saturating_sub(1);
    if fault.times == 0 {
        faults.remove(i);
    }
    Some(kind)
}

//! What broker's API simulators (`tests/awx-sim`, `tests/openstack-sim`, `tests/beaker-sim`,
//! `tests/foreman-sim`) share: a hyper server on its own thread, stopped when dropped; requests read
//! whole; JSON replies; faults asked for on
//! demand and taken by the requests they match; the time of day in UTC as servers write it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::{Value, json};

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

/// A simulator's state (its "world", which keeps the faults asked for) served on a port of its own:
/// what a simulator's `Sim` wraps. Dropping it stops the server.
pub struct Simulated<W> {
    addr: SocketAddr,
    world: Arc<Mutex<W>>,
    _served: Served,
}

impl<W> std::fmt::Debug for Simulated<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulated")
            .field("addr", &self.addr)
            .finish()
    }
}

/// A world that keeps faults of kind `Kind` for [`Simulated::inject`].
pub trait Faulty {
    /// What a fault does.
    type Kind: Clone;
    /// The faults asked for and not yet used up.
    fn faults(&mut self) -> &mut Vec<Fault<Self::Kind>>;
}

impl<W: Faulty + Send + 'static> Simulated<W> {
    /// Binds `bind` (e.g. `127.0.0.1:0`), makes the world from the origin it is served on
    /// (`http://127.0.0.1:PORT`) and serves it over plain HTTP, each request answered by `handle`.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn start_on<F, Fut, E>(
        bind: &str,
        world: impl FnOnce(String) -> W,
        handle: F,
    ) -> std::io::Result<Self>
    where
        F: Fn(Arc<Mutex<W>>, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = std::net::TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let world = Arc::new(Mutex::new(world(format!("http://{addr}"))));
        let served = serve(listener, None, Arc::clone(&world), handle)?;
        Ok(Simulated {
            addr,
            world,
            _served: served,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The simulator's state, to arrange or inspect.
    pub fn world(&self) -> MutexGuard<'_, W> {
        lock(&self.world)
    }

    /// Makes the next `times` requests whose path contains `path_contains` meet `kind`.
    pub fn inject(&self, method: Option<&str>, path_contains: &str, kind: W::Kind, times: u32) {
        self.world().faults().push(Fault {
            path_contains: path_contains.into(),
            method: method.map(str::to_owned),
            kind,
            times,
        });
    }

    /// The faults injected and not yet used up: a test that injects faults asserts this is empty,
    /// or a fault that was never served would let it pass without exercising what it is about.
    pub fn unused_faults(&self) -> Vec<Fault<W::Kind>> {
        self.world().faults().clone()
    }
}

/// The `main` of a simulator's binary: starts it on the address given as the first argument
/// (default `127.0.0.1:0`), prints the URL `start` returns on stdout, and serves until killed.
pub fn serve_until_killed(
    name: &str,
    start: impl FnOnce(&str) -> std::io::Result<String>,
) -> std::process::ExitCode {
    use std::io::Write as _;
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let url = match start(&bind) {
        Ok(url) => url,
        Err(e) => {
            eprintln!("{name}: cannot bind {bind}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{url}");
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}

/// The state behind `mutex`, also after a panic poisoned it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The query parameters of a request, decoded, in order.
pub fn query(uri: &hyper::Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// A request read whole.
#[derive(Debug, Clone)]
pub struct Received {
    /// `GET`, `POST`…
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The query's pairs, decoded, in order.
    pub query: Vec<(String, String)>,
    /// Its headers.
    pub headers: HeaderMap,
    /// The body as JSON: `null` when empty, `{"_raw": TEXT}` when it is not JSON.
    pub body: Value,
}

impl Received {
    /// The first value of a query parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A header's value, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The user and password of a `Basic` `Authorization` header.
    pub fn basic_credentials(&self) -> Option<(String, String)> {
        let encoded = self.header("authorization")?.strip_prefix("Basic ")?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, password) = text.split_once(':')?;
        Some((user.to_owned(), password.to_owned()))
    }
}

/// Reads `req` whole, its body as JSON.
///
/// # Errors
/// When the body cannot be read (the client went away).
pub async fn receive(req: Request<Incoming>) -> Result<Received, hyper::Error> {
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"_raw": String::from_utf8_lossy(&bytes)}))
    };
    Ok(Received {
        query: query(&parts.uri),
        method: parts.method,
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
    })
}

/// A JSON answer.
pub fn reply(status: u16, body: Value) -> Reply {
    reply_typed(status, "application/json", body.to_string())
}

/// An answer of another type than JSON (`text/xml`, `application/atom+xml`…).
pub fn reply_typed(status: u16, content_type: &'static str, body: String) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
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

/// Returned by a simulator's service to make hyper close the connection without an answer (a
/// dropped-connection fault).
#[derive(Debug)]
pub struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

/// A moment in UTC, split into the fields servers write dates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// The year (2026).
    pub year: i64,
    /// The month, 1 to 12.
    pub month: i64,
    /// The day of the month, 1 to 31.
    pub day: i64,
    /// 0 to 23.
    pub hour: u64,
    /// 0 to 59.
    pub minute: u64,
    /// 0 to 59.
    pub second: u64,
    /// The microseconds into the second.
    pub micros: u32,
}

impl UtcTime {
    /// Now.
    pub fn now() -> UtcTime {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UtcTime::from_unix(now.as_secs(), now.subsec_micros())
    }

    /// `secs` seconds (and `micros`) after 1970-01-01 00:00:00 UTC.
    pub fn from_unix(secs: u64, micros: u32) -> UtcTime {
        let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        UtcTime {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rem / 3_600,
            minute: rem % 3_600 / 60,
            second: rem % 60,
            micros,
        }
    }
}

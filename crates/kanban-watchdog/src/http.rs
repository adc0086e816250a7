//! The read-only HTTP endpoint: `/metrics` (Prometheus text format),
//! `/healthz` (the watchdog is alive), `/readyz` (it has a board and the
//! dispatcher is not stalled), `/status` (JSON). Loopback by default.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::daemon::Shared;
use crate::metrics;
use crate::status::DispatchState;

// Limits, as hyper servers in production set them. Without them, about
// 1,100 idle loopback connections under systemd's default of 1,024 open
// files left hyper waiting forever for request headers, the accept loop
// spinning on EMFILE and the core unable to open the record directory.

/// At most this many connections are served at once; a connection beyond
/// it is closed as soon as it is accepted (the file descriptor is given
/// back at once, and nothing waits in the kernel's backlog behind idle
/// peers). The endpoint's clients are a scraper, `kanban-watchdog status`
/// and an operator's curl: a handful.
pub const MAX_CONNECTIONS: usize = 64;

/// A client must send a complete request head within this, on a new
/// connection and between keep-alive requests (hyper's
/// `header_read_timeout`, which needs a timer to take effect; Go servers
/// set `ReadHeaderTimeout` for the same reason). Loopback clients send
/// their request at once.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection lives at most this long, however it is used (a client that
/// sends a request and then never reads the response holds it no longer).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// After an accept error other than a peer that gave up (EMFILE, ENFILE,
/// ENOBUFS, ENOMEM), the loop sleeps this long instead of spinning: hyper
/// 0.14's `AddrIncoming::sleep_on_errors` and tokio's accept-loop examples
/// do the same.
pub const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// A repeated problem of the accept loop is logged at most this often,
/// with the number of occurrences since the last line.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// The largest request head kept in memory per connection (hyper's
/// minimum is 8 KiB; its default, ~400 KiB, times the connection limit
/// would be 25 MiB for a read-only endpoint).
const MAX_BUF: usize = 16 * 1024;

/// One log line per [`LOG_EVERY`] for a problem that can repeat thousands
/// of times a second.
struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    fn new() -> Throttled {
        Throttled {
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line is due: `n` occurrences since the last one
    /// (this one included).
    fn hit(&mut self) -> Option<u64> {
        self.suppressed += 1;
        let due = self.last.is_none_or(|t| t.elapsed() >= LOG_EVERY);
        if !due {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// A per-connection accept error: the peer went away between its connect
/// and our accept. The next accept works; no reason to wait (hyper 0.14's
/// `is_connection_error`).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Binds `listen` and serves until the runtime stops. Returns the bound
/// address (useful with port 0).
pub async fn serve(
    listen: SocketAddr,
    shared: Shared,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(accept_loop(listener, shared));
    Ok((addr, handle))
}

async fn accept_loop(listener: TcpListener, shared: Shared) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut refused_log = Throttled::new();
    let mut error_log = Throttled::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_BUF);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                if let Some(n) = error_log.hit() {
                    tracing::warn!(
                        "http: accept failed: {e} ({n} failure(s) since the last report); \
                         retrying every {}s, reported at most every {}s",
                        ACCEPT_BACKOFF.as_secs(),
                        LOG_EVERY.as_secs()
                    );
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            drop(stream);
            if let Some(n) = refused_log.hit() {
                tracing::warn!(
                    "http: {MAX_CONNECTIONS} connections already open; new ones are closed at once \
                     ({n} since the last report; reported at most every {}s)",
                    LOG_EVERY.as_secs()
                );
            }
            continue;
        };
        let shared = shared.clone();
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&req, &shared)) }
            }),
        );
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("http connection ended: {e}"),
                Err(_) => tracing::debug!("http connection closed after {CONNECTION_LIFETIME:?}"),
            }
        });
    }
}

fn route(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "read-only endpoint\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics::encode(&shared.registry),
        ),
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let (ready, why) = match shared.status.read() {
                Ok(s) if s.dispatcher.state == DispatchState::Unknown => {
                    (false, "board not available")
                }
                Ok(s) if s.dispatcher.stalled => (false, "dispatcher stalled"),
                Ok(_) => (true, "ok"),
                Err(_) => (false, "state unavailable"),
            };
            let code = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            respond(code, "text/plain", format!("{why}\n"))
        }
        "/status" => match shared.status.read() {
            Ok(s) => respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&*s).unwrap_or_else(|_| "{}".into()),
            ),
            Err(_) => respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "state unavailable\n".into(),
            ),
        },
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz, /readyz, /status\n".into(),
        ),
    }
}

fn respond(code: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

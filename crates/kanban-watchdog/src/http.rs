//! The read-only HTTP endpoint: `/metrics` (Prometheus text format),
//! `/healthz` (the watchdog is alive), `/readyz` (it has a board and the
//! dispatcher is not stalled), `/status` (JSON). Loopback by default.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::daemon::Shared;
use crate::metrics;

/// Binds `listen` and serves until the runtime stops. Returns the bound
/// address (useful with port 0).
pub async fn serve(
    listen: SocketAddr,
    shared: Shared,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("http accept failed: {e}");
                    continue;
                }
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(route(&req, &shared)) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    tracing::debug!("http connection ended: {e}");
                }
            });
        }
    });
    Ok((addr, handle))
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
                Ok(s) if s.dispatcher.state == "unknown" => (false, "board not available"),
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

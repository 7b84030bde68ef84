//! The admin server of the long-running agent: `/healthz`, `/readyz` and Prometheus
//! `/metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::registry::Registry;

/// What the admin server serves.
pub struct AdminState {
    /// The metrics registry.
    pub registry: Registry,
    /// Set once the loop has run (a pass as leader, or a standby check).
    pub ready: AtomicBool,
}

/// Serves until the process ends. Returns the bound address.
pub async fn serve(addr: SocketAddr, state: Arc<AdminState>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(req, state.clone()));
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(bound)
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    state: Arc<AdminState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body, content_type) = match req.uri().path() {
        "/healthz" | "/livez" => (StatusCode::OK, "ok".to_string(), "text/plain"),
        "/readyz" if state.ready.load(Ordering::SeqCst) => {
            (StatusCode::OK, "ok".to_string(), "text/plain")
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no pass yet".to_string(),
            "text/plain",
        ),
        "/metrics" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
                Ok(()) => (
                    StatusCode::OK,
                    text,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                Err(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "failed to encode metrics".into(),
                    "text/plain",
                ),
            }
        }
        _ => (StatusCode::NOT_FOUND, "not found".to_string(), "text/plain"),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(resp)
}

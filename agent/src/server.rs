//! `/healthz`, `/readyz` and Prometheus `/metrics` of the long-running agent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::plan::Phase;

/// Labels of per-phase metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// The phase.
    pub phase: String,
}

/// The agent's metrics, registered under the `tidemark_` prefix.
pub struct Metrics {
    /// Passes by the phase they ended in.
    pub passes: Family<PhaseLabel, Counter>,
    /// Pass duration in seconds.
    pub pass_duration: Histogram,
    /// 1 for the current phase, 0 for the others.
    pub phase: Family<PhaseLabel, Gauge>,
    /// Provider requests issued.
    pub steps: Counter,
    /// Passes that ended Failed or Blocked.
    pub errors: Family<PhaseLabel, Counter>,
    /// 1 while this replica holds the Lease.
    pub leader: Gauge,
    /// `helm template` processes started.
    pub helm_renders: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            passes: Family::default(),
            pass_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            phase: Family::default(),
            steps: Counter::default(),
            errors: Family::default(),
            leader: Gauge::default(),
            helm_renders: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("tidemark");
        r.register(
            "passes",
            "Passes of the control loop, by resulting phase",
            m.passes.clone(),
        );
        r.register(
            "pass_duration_seconds",
            "Duration of a pass",
            m.pass_duration.clone(),
        );
        r.register(
            "phase",
            "Current phase (1) of this cluster",
            m.phase.clone(),
        );
        r.register("steps", "Provider requests issued", m.steps.clone());
        r.register(
            "errors",
            "Passes that ended Failed or Blocked",
            m.errors.clone(),
        );
        r.register(
            "leader",
            "Whether this replica holds the Lease",
            m.leader.clone(),
        );
        r.register(
            "helm_renders",
            "helm template processes started (unchanged components start none)",
            m.helm_renders.clone(),
        );
        m
    }

    /// Records one finished pass.
    pub fn record_pass(&self, phase: Phase, seconds: f64, steps: usize) {
        let label = PhaseLabel {
            phase: phase.to_string(),
        };
        self.passes.get_or_create(&label).inc();
        self.pass_duration.observe(seconds);
        // The counter of this process's helm runs, mirrored.
        let renders = crate::component::helm::RENDERS.load(std::sync::atomic::Ordering::Relaxed);
        let seen = self.helm_renders.get();
        if renders > seen {
            self.helm_renders.inc_by(renders - seen);
        }
        for p in [
            Phase::Converged,
            Phase::Progressing,
            Phase::Waiting,
            Phase::Blocked,
            Phase::Failed,
            Phase::Paused,
        ] {
            self.phase
                .get_or_create(&PhaseLabel {
                    phase: p.to_string(),
                })
                .set(i64::from(p == phase));
        }
        self.steps.inc_by(u64::try_from(steps).unwrap_or(0));
        if matches!(phase, Phase::Failed | Phase::Blocked) {
            self.errors.get_or_create(&label).inc();
        }
    }
}

/// Shared state of the server.
pub struct Health {
    /// The metrics registry.
    pub registry: Registry,
    /// Set once the loop has run (a pass as leader, or a standby check).
    pub ready: AtomicBool,
}

/// Serves until the process ends. Returns the bound address.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let health = health.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(req, health.clone()));
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
    health: Arc<Health>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body, content_type) = match req.uri().path() {
        "/healthz" | "/livez" => (StatusCode::OK, "ok".to_string(), "text/plain"),
        "/readyz" if health.ready.load(Ordering::SeqCst) => {
            (StatusCode::OK, "ok".to_string(), "text/plain")
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no pass yet".to_string(),
            "text/plain",
        ),
        "/metrics" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, &health.registry) {
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

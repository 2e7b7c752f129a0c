//! Observability at the HTTP edge: one `tracing` span per request and Prometheus metrics,
//! served at `GET /metrics` (text format; not part of the OpenAPI document) to a scraper that
//! sends `Authorization: Bearer <--metrics-token>`; without a configured token the endpoint is
//! off (404). Metrics describe the business (orders, rates, lag) and must not be public.
//!
//! Requests are labelled by poem-openapi's operation id, never by raw path (one series per
//! id or order would be unbounded); routes outside the API get a fixed label and anything
//! that matched no route is `unmatched`. Metrics live in Prometheus's process-wide default
//! registry, registered once per process (tests build many apps in one process); the
//! application layer adds its own there (`crate::app::metrics`). A scrape reads memory only:
//! projection lag is refreshed from the database by a background task every
//! [`LAG_REFRESH_EVERY`], so scraping (or hammering) `/metrics` costs the database nothing.

use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use poem::endpoint::make_sync;
use poem::http::StatusCode;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use poem_openapi::OperationId;
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tracing::field::Empty;
use tracing::Instrument;

use crate::app::metrics::counter_vec;

/// Seconds; from a cached read to a slow command under contention.
const DURATION_BUCKETS: &[f64] = &[
    0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How long the refresh waits for the projection lag query.
const LAG_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the projection lag gauges are read from the database.
pub const LAG_REFRESH_EVERY: Duration = Duration::from_secs(10);

struct Metrics {
    requests: Option<IntCounterVec>,
    duration: Option<HistogramVec>,
    rate_limited: Option<IntCounterVec>,
    replays: Option<IntCounterVec>,
    lag_events: Option<IntGaugeVec>,
    lag_seconds: Option<GaugeVec>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    requests: counter_vec(
        "http_requests_total",
        "HTTP requests answered, by method, operation and status.",
        &["method", "operation", "status"],
    ),
    duration: register(
        HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer HTTP requests, by method and operation.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["method", "operation"],
        ),
        "http_request_duration_seconds",
    ),
    rate_limited: counter_vec(
        "shopfront_rate_limited_total",
        "Requests refused with 429, by the limit that refused them.",
        &["limit"],
    ),
    replays: counter_vec(
        "shopfront_idempotent_replays_total",
        "Responses replayed for a retried Idempotency-Key, by operation.",
        &["operation"],
    ),
    lag_events: register(
        IntGaugeVec::new(
            Opts::new(
                "shopfront_projection_lag_events",
                "Events in the log not yet applied by a projection (refreshed every 10 s).",
            ),
            &["projection"],
        ),
        "shopfront_projection_lag_events",
    ),
    lag_seconds: register(
        GaugeVec::new(
            Opts::new(
                "shopfront_projection_lag_seconds",
                "Age of the oldest event a projection has not applied yet (refreshed every 10 s).",
            ),
            &["projection"],
        ),
        "shopfront_projection_lag_seconds",
    ),
});

fn register<M>(metric: prometheus::Result<M>, name: &str) -> Option<M>
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let registered = metric.and_then(|metric| {
        prometheus::register(Box::new(metric.clone()))?;
        Ok(metric)
    });
    registered
        .inspect_err(|err| tracing::error!(error = %err, metric = name, "metric not registered"))
        .ok()
}

/// Counts a request refused by the rate limit `limit`.
pub fn rate_limited(limit: &str) {
    if let Some(counter) = &METRICS.rate_limited {
        counter.with_label_values(&[limit]).inc();
    }
}

/// Counts a response replayed for an idempotency key.
pub fn idempotent_replay(operation: &str) {
    if let Some(counter) = &METRICS.replays {
        counter.with_label_values(&[operation]).inc();
    }
}

/// The operation a replayed response belongs to (a replay never reaches the operation, so
/// poem-openapi's [`OperationId`] is not there to read).
#[derive(Clone, Debug)]
pub struct ReplayedOperation(pub String);

/// `GET /metrics`: the default registry in Prometheus's text format, for a caller presenting
/// `token` as its bearer token (401 otherwise; 404 when no token is configured). Starts the
/// background refresh of the projection lag gauges when on a runtime; it ends when the
/// endpoint is dropped.
pub fn endpoint(pool: PgPool, token: Option<SecretString>) -> impl Endpoint {
    LazyLock::force(&METRICS);
    let alive = Arc::new(());
    if token.is_some() {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(refresh_projection_lag(pool, Arc::downgrade(&alive)));
        }
    } else {
        tracing::info!("GET /metrics is off: set SHOPFRONT_METRICS_TOKEN to serve it");
    }
    // Compared as digests: equal-length, so the comparison time says nothing about the token.
    let expected: Option<[u8; 32]> =
        token.map(|token| Sha256::digest(token.expose_secret().as_bytes()).into());
    make_sync(move |req| {
        let _alive = &alive;
        let Some(expected) = expected else {
            return super::Problem::new("not-found", "Not found", 404, None).to_response();
        };
        let presented = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.get(..7)
                    .filter(|s| s.eq_ignore_ascii_case("bearer "))
                    .map(|_| &v[7..])
            })
            .map(|token| <[u8; 32]>::from(Sha256::digest(token.trim().as_bytes())));
        if presented != Some(expected) {
            let mut response = super::Problem::new(
                "unauthorized",
                "Unauthorized",
                401,
                "send `Authorization: Bearer <metrics token>`".to_owned(),
            )
            .to_response();
            response.headers_mut().insert(
                "www-authenticate",
                poem::http::HeaderValue::from_static("Bearer realm=\"metrics\""),
            );
            return response;
        }
        let encoder = prometheus::TextEncoder::new();
        match encoder.encode_to_string(&prometheus::gather()) {
            Ok(text) => Response::builder()
                .content_type(prometheus::TEXT_FORMAT)
                .body(text),
            Err(err) => {
                tracing::error!(error = %err, "cannot encode metrics");
                Response::builder()
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .finish()
            }
        }
    })
}

/// Reads projection lag into its gauges now and every [`LAG_REFRESH_EVERY`]; ends when `alive`
/// (the endpoint) is dropped or the pool is closed.
async fn refresh_projection_lag(pool: PgPool, alive: Weak<()>) {
    let mut ticks = tokio::time::interval(LAG_REFRESH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if alive.upgrade().is_none() || pool.is_closed() {
            return;
        }
        update_projection_lag(&pool).await;
    }
}

async fn update_projection_lag(pool: &PgPool) {
    let (Some(events), Some(seconds)) = (&METRICS.lag_events, &METRICS.lag_seconds) else {
        return;
    };
    let names = projections::read_models::names();
    let status = projections::maintenance::status(pool, &names);
    match tokio::time::timeout(LAG_QUERY_TIMEOUT, status).await {
        Ok(Ok(statuses)) => {
            for status in statuses {
                events
                    .with_label_values(&[status.name.as_str()])
                    .set(status.lag_events);
                seconds
                    .with_label_values(&[status.name.as_str()])
                    .set(status.lag_seconds);
            }
        }
        Ok(Err(err)) => tracing::warn!(error = %err, "cannot read projection lag for metrics"),
        Err(_) => {
            tracing::warn!("projection lag query timed out; the gauges keep their last values")
        }
    }
    // The audit chain's sealer follows the log as projections do.
    let sealing = crate::app::audit::sealing_lag(pool);
    match tokio::time::timeout(LAG_QUERY_TIMEOUT, sealing).await {
        Ok(Ok((lag_events, lag_seconds))) => {
            events
                .with_label_values(&[crate::app::audit::sealer::SEALER])
                .set(lag_events);
            seconds
                .with_label_values(&[crate::app::audit::sealer::SEALER])
                .set(lag_seconds);
        }
        Ok(Err(err)) => tracing::warn!(error = %err, "cannot read the sealing lag for metrics"),
        Err(_) => tracing::warn!("the sealing lag query timed out"),
    }
}

/// The per-request span and metrics middleware. Sits outside the error catcher, so it sees
/// every final status, 4xx problems and 429s included.
pub struct Observe;

impl<E: Endpoint> Middleware<E> for Observe {
    type Output = ObserveEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        ObserveEndpoint { inner }
    }
}

pub struct ObserveEndpoint<E> {
    inner: E,
}

/// The request id of `req`: the one the request-id middleware (outermost, in `routes()`)
/// accepted or generated and keeps in the request's extensions.
fn request_id(req: &Request) -> Option<&str> {
    req.extensions()
        .get::<super::RequestId>()
        .map(|id| id.0.as_str())
}

/// The low-cardinality label of a route that has no operation id.
fn route_label(path: &str, status: StatusCode) -> &'static str {
    match path {
        _ if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED => {
            "unmatched"
        }
        "/metrics" => "metrics",
        "/openapi.json" => "openapi",
        p if p == "/docs" || p.starts_with("/docs/") => "docs",
        _ => "unmatched",
    }
}

impl<E: Endpoint> Endpoint for ObserveEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let span = tracing::info_span!(
            "request",
            method = %method,
            path = %path,
            request_id = request_id(&req),
            operation = Empty,
            status = Empty,
            latency_ms = Empty,
        );
        async move {
            let started = Instant::now();
            let result = self.inner.call(req).await.map(IntoResponse::into_response);
            let elapsed = started.elapsed();
            let (status, operation) = match &result {
                Ok(response) => (
                    response.status(),
                    response
                        .data::<OperationId>()
                        .map(|id| id.0.to_owned())
                        .or_else(|| {
                            response
                                .data::<ReplayedOperation>()
                                .map(|replayed| replayed.0.clone())
                        }),
                ),
                Err(err) => (
                    err.status(),
                    err.data::<OperationId>().map(|id| id.0.to_owned()),
                ),
            };
            let operation = operation.unwrap_or_else(|| route_label(&path, status).to_owned());
            let latency_ms = elapsed.as_secs_f64() * 1000.0;
            let span = tracing::Span::current();
            span.record("operation", operation.as_str());
            span.record("status", status.as_u16());
            span.record("latency_ms", latency_ms);
            tracing::info!(status = status.as_u16(), latency_ms, "response");
            if let Some(requests) = &METRICS.requests {
                requests
                    .with_label_values(&[method.as_str(), operation.as_str(), status.as_str()])
                    .inc();
            }
            if let Some(duration) = &METRICS.duration {
                duration
                    .with_label_values(&[method.as_str(), operation.as_str()])
                    .observe(elapsed.as_secs_f64());
            }
            result
        }
        .instrument(span)
        .await
    }
}

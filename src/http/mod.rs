//! The HTTP adapter: poem + poem-openapi. Routes, the OpenAPI document, Swagger UI, and the
//! request-id middleware. Endpoints translate HTTP to application-service calls and back; they
//! hold no business rules.

// `ApiError` carries its problem body inline, as a poem-openapi response does; it is only built
// on the error path, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]
// Likewise a command's answer holds either its view or, when the read model lags, a small
// `Pending`: one value per request, moved straight into the response.
#![allow(clippy::large_enum_variant)]

mod alerts;
mod analytics;
mod api_tokens;
mod audit;
mod audit_chain;
mod audit_history;
mod auth;
mod client;
mod context;
mod customers;
mod error;
mod health;
pub mod idempotency;
pub mod metrics;
mod notifications;
mod orders;
mod problem;
pub mod problems;
mod products;
pub mod rate_limit;
mod receipts;
mod stores;
mod telegram_auth;
mod types;
mod users;
pub mod ws;

use poem::endpoint::make_sync;
use poem::web::Html;
use poem::{Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Request, Response, Route};
use poem_openapi::OpenApiService;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::config::EdgeSettings;
use uuid::Uuid;

pub use context::{caller, origin_of, ClientRequestId, RequestId};
pub use error::{ApiError, BEARER_CHALLENGE};
pub use problem::{Problem, PROBLEM_TYPE_BASE};

/// Header carrying the request id in and out; the id lands in every event's metadata.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

type Apis = (
    health::HealthApi,
    auth::AuthApi,
    stores::StoresApi,
    products::ProductsApi,
    orders::OrdersApi,
    receipts::ReceiptsApi,
    alerts::AlertsApi,
    analytics::AnalyticsApi,
    // Nested: poem-openapi takes at most 16 APIs in one tuple.
    (
        audit::AuditApi,
        audit_chain::AuditChainApi,
        audit_history::AuditHistoryApi,
    ),
    customers::CustomersApi,
    telegram_auth::TelegramAuthApi,
    api_tokens::ApiTokensApi,
    users::UsersApi,
    notifications::NotificationsApi,
);

fn api_service(app: Arc<App>) -> OpenApiService<Apis, ()> {
    let apis = (
        health::HealthApi {
            pool: app.pool.clone(),
        },
        auth::AuthApi { app: app.clone() },
        stores::StoresApi { app: app.clone() },
        products::ProductsApi { app: app.clone() },
        orders::OrdersApi { app: app.clone() },
        receipts::ReceiptsApi { app: app.clone() },
        alerts::AlertsApi { app: app.clone() },
        analytics::AnalyticsApi { app: app.clone() },
        (
            audit::AuditApi { app: app.clone() },
            audit_chain::AuditChainApi { app: app.clone() },
            audit_history::AuditHistoryApi { app: app.clone() },
        ),
        customers::CustomersApi { app: app.clone() },
        telegram_auth::TelegramAuthApi { app: app.clone() },
        api_tokens::ApiTokensApi { app: app.clone() },
        users::UsersApi { app: app.clone() },
        notifications::NotificationsApi { app },
    );
    OpenApiService::new(apis, "shopfront", env!("CARGO_PKG_VERSION"))
        .description("Event-sourced, Telegram-first multi-store commerce backend.")
}

/// Largest request body accepted (JSON commands are small); receipt uploads have their own
/// limit, see [`BodyRules`].
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Room for the multipart framing and the small fields around an uploaded file.
const MULTIPART_OVERHEAD_BYTES: usize = 64 * 1024;

/// What the edge allows a request body: how large, and how long it may take to arrive.
///
/// Only the upload route (`POST /api/v1/orders/{id}/receipts`) may send a large body, and only
/// a caller whose credential authenticates: the edge answers any other upload 401 before a byte
/// of its body is read. Every body is streamed through a guard that cuts it off past its limit
/// (413), when it stalls for the idle timeout or is not complete within the read timeout (408,
/// connection closed); the guard itself buffers nothing, so slow or oversized senders hold no
/// memory.
#[derive(Clone, Copy, Debug)]
pub struct BodyRules {
    /// Any route but the upload one.
    pub max_bytes: usize,
    /// The upload route: the largest receipt plus the multipart framing.
    pub max_upload_bytes: usize,
    /// From the request's arrival to the body's last byte.
    pub read_timeout: Duration,
    /// The longest silence while the body is being read.
    pub idle_timeout: Duration,
}

impl BodyRules {
    fn new(max_receipt_bytes: u64, edge: &EdgeSettings) -> Self {
        Self {
            max_bytes: MAX_BODY_BYTES,
            max_upload_bytes: usize::try_from(max_receipt_bytes)
                .unwrap_or(usize::MAX)
                .saturating_add(MULTIPART_OVERHEAD_BYTES),
            read_timeout: Duration::from_secs(edge.body_read_timeout_seconds),
            idle_timeout: Duration::from_secs(edge.idle_timeout_seconds),
        }
    }

    /// The largest body `request` may have.
    pub fn limit_for(&self, request: &Request) -> usize {
        if is_upload_route(request) {
            self.max_upload_bytes
        } else {
            self.max_bytes
        }
    }
}

/// `POST /api/v1/orders/{id}/receipts`, the one route that takes a large body.
fn is_upload_route(request: &Request) -> bool {
    let path = request.uri().path().trim_end_matches('/');
    request.method() == poem::http::Method::POST
        && path.starts_with("/api/v1/orders/")
        && path.ends_with("/receipts")
}

// What the body guard found, kept in an `AtomicU8` shared with its stream: the stream cuts the
// body off, the guard answers for it.
const BODY_OK: u8 = 0;
const BODY_TOO_LARGE: u8 = 1;
const BODY_TIMED_OUT: u8 = 2;

/// The edge's body rules (see [`BodyRules`]) around `endpoint`.
async fn guard_body<E: Endpoint>(
    endpoint: Arc<E>,
    mut request: Request,
    rules: BodyRules,
    app: Arc<App>,
    trust_forwarded_for: bool,
) -> poem::Result<Response> {
    let started = tokio::time::Instant::now();
    let limit = rules.limit_for(&request);
    let declared = request
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Ok(body_problem(BODY_TOO_LARGE, rules));
    }
    if is_upload_route(&request) {
        let client = client::Client::of(&mut request, &app, trust_forwarded_for).await;
        if client.principal.is_none() {
            // Refused before its body is read: an upload costs nothing until its sender is
            // known.
            return Ok(ApiError::unauthorized(
                "unauthorized",
                "uploads need `Authorization: Bearer <token>` with a valid access or API token",
            )
            .into_response());
        }
    }
    let body = request.take_body();
    if body.is_empty() {
        request.set_body(body);
        return endpoint
            .call(request)
            .await
            .map(IntoResponse::into_response);
    }
    let verdict = Arc::new(AtomicU8::new(BODY_OK));
    let body = guarded(
        body,
        limit,
        started + rules.read_timeout,
        rules.idle_timeout,
        verdict.clone(),
    );
    request.set_body(body);
    let response = endpoint
        .call(request)
        .await
        .map(IntoResponse::into_response);
    match verdict.load(Ordering::Acquire) {
        BODY_OK => response,
        // Whatever the endpoint made of a body cut short, this is what happened.
        cut => Ok(body_problem(cut, rules)),
    }
}

/// The 413 or 408 problem for a body the guard refused. A 408 closes the connection: the rest
/// of the body may still be on its way.
fn body_problem(verdict: u8, rules: BodyRules) -> Response {
    if verdict == BODY_TOO_LARGE {
        return Problem::new(
            "payload-too-large",
            "Payload too large",
            413,
            "the request body is larger than this endpoint accepts".to_owned(),
        )
        .to_response();
    }
    let mut response = Problem::new(
        "request-timeout",
        "Request timeout",
        408,
        format!(
            "the request body did not arrive in time (complete within {} s, no pause over {} s)",
            rules.read_timeout.as_secs(),
            rules.idle_timeout.as_secs()
        ),
    )
    .to_response();
    response.headers_mut().insert(
        poem::http::header::CONNECTION,
        poem::http::HeaderValue::from_static("close"),
    );
    response
}

/// `body` as a stream that ends in an error, recording why in `verdict`, once it exceeds
/// `limit` bytes, pauses longer than `idle`, or is still arriving at `deadline`. It holds no
/// more than the chunk in hand; dropping the inner body on a cut tells the server to stop
/// reading the connection.
fn guarded(
    body: poem::Body,
    limit: usize,
    deadline: tokio::time::Instant,
    idle: Duration,
    verdict: Arc<AtomicU8>,
) -> poem::Body {
    let inner = Box::pin(body.into_bytes_stream());
    let stream = futures::stream::unfold(Some((inner, 0usize)), move |state| {
        let verdict = verdict.clone();
        async move {
            let (mut inner, seen) = state?;
            let wait = idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            let cut = |why: u8, kind: std::io::ErrorKind, message: &str| {
                verdict.store(why, Ordering::Release);
                Some((Err(std::io::Error::new(kind, message.to_owned())), None))
            };
            match tokio::time::timeout(wait, futures::StreamExt::next(&mut inner)).await {
                Err(_) => cut(
                    BODY_TIMED_OUT,
                    std::io::ErrorKind::TimedOut,
                    "the request body did not arrive in time",
                ),
                Ok(None) => None,
                Ok(Some(Err(err))) => Some((Err(err), None)),
                Ok(Some(Ok(chunk))) => {
                    let seen = seen.saturating_add(chunk.len());
                    if seen > limit {
                        cut(
                            BODY_TOO_LARGE,
                            std::io::ErrorKind::InvalidData,
                            "the request body is too large",
                        )
                    } else {
                        Some((Ok(chunk), Some((inner, seen))))
                    }
                }
            }
        }
    });
    poem::Body::from_bytes_stream(stream)
}

/// The OpenAPI document, as served at `/openapi.json` and checked in at `openapi/openapi.json`:
/// poem-openapi's, with what the edge middlewares add to every operation documented.
pub fn openapi_spec(app: Arc<App>) -> String {
    idempotency::document(&api_service(app).spec())
}

/// Every route of the service.
pub fn routes(app: Arc<App>, edge: &EdgeSettings) -> impl Endpoint {
    let api = api_service(app.clone());
    let generated = api.spec();
    let spec = idempotency::document(&generated);
    // Swagger UI embeds the document: show the one that is served.
    let docs_html = api.swagger_ui_html().replacen(&generated, &spec, 1);
    let trust_forwarded_for = edge.trust_forwarded_for;
    let body_rules = BodyRules::new(app.max_receipt_bytes, edge);
    let guard_app = app.clone();
    // Outermost first: request id and client IP, metrics, problem bodies, panics, rate limits,
    // the body guard (authenticates uploads before reading them), idempotency (authenticates
    // before it buffers, claims or replays anything), the routes.
    Route::new()
        .nest("/", api)
        .at(
            "/openapi.json",
            make_sync(move |_| {
                Response::builder()
                    .content_type("application/json")
                    .body(spec.clone())
            }),
        )
        .at("/docs", make_sync(move |_| Html(docs_html.clone())))
        .at("/api/v1/ws", poem::get(ws::ws))
        .nest(
            crate::console::PREFIX,
            crate::console::routes(app.clone(), edge.secure_cookies),
        )
        .at(
            "/metrics",
            metrics::endpoint(app.pool.clone(), edge.metrics_token.clone()),
        )
        .data(app.clone())
        // The live feed reads the console's cookie under the console's cookie policy.
        .data(crate::console::CookiePolicy {
            secure: edge.secure_cookies,
        })
        .with(idempotency::Idempotency::new(app.clone(), edge, body_rules))
        .around(move |endpoint, request| {
            guard_body(
                endpoint,
                request,
                body_rules,
                guard_app.clone(),
                trust_forwarded_for,
            )
        })
        .with(rate_limit::RateLimit::new(app, edge))
        // A bug that panics answers a 500 problem instead of dropping the connection.
        .with(poem::middleware::CatchPanic::new().with_handler(error::panic_response))
        .catch_all_error(error::problem_response)
        .with(metrics::Observe)
        .around(move |endpoint, request: Request| async move {
            // Our own id for every request; the client's, if any, is kept beside it (anyone can
            // send anything, so it never stands for ours in the log or the audit trail).
            let id = Uuid::now_v7().to_string();
            let mut request = request;
            let client_id = request
                .headers()
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|v| {
                    !v.is_empty() && v.len() <= 200 && v.bytes().all(|b| b.is_ascii_graphic())
                })
                .map(str::to_owned);
            if let Some(client_id) = client_id {
                request
                    .extensions_mut()
                    .insert(context::ClientRequestId(client_id));
            }
            request.extensions_mut().insert(RequestId(id.clone()));
            let ip = client::client_ip(&request, trust_forwarded_for);
            request.extensions_mut().insert(context::ClientIp(ip));
            let mut response = endpoint.call(request).await?;
            if let Ok(value) = id.parse() {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            Ok(response)
        })
        .into_endpoint()
}

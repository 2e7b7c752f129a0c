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
mod auth;
mod client;
mod context;
mod customers;
mod error;
mod health;
pub mod idempotency;
pub mod metrics;
mod orders;
mod problem;
mod products;
pub mod rate_limit;
mod receipts;
mod stores;
mod telegram_auth;
mod types;
mod users;

use poem::endpoint::make_sync;
use poem::web::Html;
use poem::{Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Request, Response, Route};
use poem_openapi::OpenApiService;
use std::sync::Arc;

use crate::app::App;
use crate::config::EdgeSettings;
use uuid::Uuid;

pub use context::{caller, ClientRequestId, RequestId};
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
    audit::AuditApi,
    customers::CustomersApi,
    telegram_auth::TelegramAuthApi,
    api_tokens::ApiTokensApi,
    users::UsersApi,
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
        audit::AuditApi { app: app.clone() },
        customers::CustomersApi { app: app.clone() },
        telegram_auth::TelegramAuthApi { app: app.clone() },
        api_tokens::ApiTokensApi { app: app.clone() },
        users::UsersApi { app },
    );
    OpenApiService::new(apis, "shopfront", env!("CARGO_PKG_VERSION"))
        .description("Event-sourced, Telegram-first multi-store commerce backend.")
}

/// Largest request body accepted (JSON commands are small); receipt uploads have their own
/// limit, see [`body_limit`].
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Room for the multipart framing and the small fields around an uploaded file.
const MULTIPART_OVERHEAD_BYTES: usize = 64 * 1024;

/// The largest body `request` may have: receipt uploads (`POST …/orders/{id}/receipts`) may
/// carry a file of up to the configured size, everything else `MAX_BODY_BYTES`.
fn body_limit(request: &Request, max_receipt_bytes: u64) -> usize {
    let path = request.uri().path();
    let is_upload = request.method() == poem::http::Method::POST
        && path.starts_with("/api/v1/orders/")
        && path.ends_with("/receipts");
    if is_upload {
        upload_limit(max_receipt_bytes)
    } else {
        MAX_BODY_BYTES
    }
}

/// The largest upload body: the largest file plus the multipart framing around it.
fn upload_limit(max_receipt_bytes: u64) -> usize {
    usize::try_from(max_receipt_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(MULTIPART_OVERHEAD_BYTES)
}

/// Refuses bodies over their route's limit with 413, by `Content-Length` or, for chunked
/// bodies, while reading them, so no request can make the service buffer an unbounded body.
async fn limit_body<E: Endpoint>(
    endpoint: std::sync::Arc<E>,
    mut request: Request,
    max_receipt_bytes: u64,
) -> poem::Result<poem::Response> {
    let limit = body_limit(&request, max_receipt_bytes);
    let too_large = || poem::Error::from_status(poem::http::StatusCode::PAYLOAD_TOO_LARGE);
    let declared = request
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(length) if length > limit => return Err(too_large()),
        Some(_) => {}
        None => {
            let body = request
                .take_body()
                .into_bytes_limit(limit)
                .await
                .map_err(|_| too_large())?;
            request.set_body(body);
        }
    }
    Ok(endpoint.call(request).await?.into_response())
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
    let max_receipt_bytes = app.max_receipt_bytes;
    let trust_forwarded_for = edge.trust_forwarded_for;
    let body_limits = idempotency::BodyLimits {
        other: MAX_BODY_BYTES,
        multipart: upload_limit(max_receipt_bytes),
    };
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
        .at("/metrics", metrics::endpoint(app.pool.clone()))
        .data(app.clone())
        .around(move |endpoint, request| limit_body(endpoint, request, max_receipt_bytes))
        .with(idempotency::Idempotency::new(
            app.clone(),
            edge,
            body_limits,
        ))
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

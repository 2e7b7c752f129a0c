//! The HTTP adapter: poem + poem-openapi. Routes, the OpenAPI document, Swagger UI, and the
//! request-id middleware. Endpoints translate HTTP to application-service calls and back; they
//! hold no business rules.

mod api_tokens;
mod auth;
mod error;
mod health;
mod problem;
mod telegram_auth;

use poem::middleware::Tracing;
use poem::{Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Request, Route};
use poem_openapi::OpenApiService;
use std::sync::Arc;

use crate::app::App;
use uuid::Uuid;

pub use error::{ApiError, BEARER_CHALLENGE};
pub use problem::{Problem, PROBLEM_TYPE_BASE};

/// Header carrying the request id in and out; the id lands in every event's metadata.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

type Apis = (
    health::HealthApi,
    auth::AuthApi,
    telegram_auth::TelegramAuthApi,
    api_tokens::ApiTokensApi,
);

fn api_service(app: Arc<App>) -> OpenApiService<Apis, ()> {
    let apis = (
        health::HealthApi {
            pool: app.pool.clone(),
        },
        auth::AuthApi { app: app.clone() },
        telegram_auth::TelegramAuthApi { app: app.clone() },
        api_tokens::ApiTokensApi { app },
    );
    OpenApiService::new(apis, "shopfront", env!("CARGO_PKG_VERSION"))
        .description("Event-sourced, Telegram-first multi-store commerce backend.")
}

/// Largest request body accepted (JSON commands are small; receipt uploads will have their own
/// streamed limit on their route).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Refuses bodies over `MAX_BODY_BYTES` with 413, by `Content-Length` or, for chunked bodies,
/// while reading them, so no request can make the service buffer an unbounded body.
async fn limit_body<E: Endpoint>(
    endpoint: std::sync::Arc<E>,
    mut request: Request,
) -> poem::Result<poem::Response> {
    let too_large = || poem::Error::from_status(poem::http::StatusCode::PAYLOAD_TOO_LARGE);
    let declared = request
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(length) if length > MAX_BODY_BYTES => return Err(too_large()),
        Some(_) => {}
        None => {
            let body = request
                .take_body()
                .into_bytes_limit(MAX_BODY_BYTES)
                .await
                .map_err(|_| too_large())?;
            request.set_body(body);
        }
    }
    Ok(endpoint.call(request).await?.into_response())
}

/// The OpenAPI document, as served at `/openapi.json` and checked in at `openapi/openapi.json`.
pub fn openapi_spec(app: Arc<App>) -> String {
    api_service(app).spec()
}

/// Every route of the service.
pub fn routes(app: Arc<App>) -> impl Endpoint {
    let api = api_service(app.clone());
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    Route::new()
        .nest("/", api)
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .data(app)
        .around(limit_body)
        .catch_all_error(error::problem_response)
        .with(Tracing)
        .around(|endpoint, request: Request| async move {
            let id = request
                .headers()
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 200 && v.is_ascii())
                .map(str::to_owned)
                .unwrap_or_else(|| Uuid::now_v7().to_string());
            let mut response = endpoint.call(request).await?;
            if let Ok(value) = id.parse() {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            Ok(response)
        })
        .into_endpoint()
}

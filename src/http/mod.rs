//! The HTTP adapter: poem + poem-openapi. Routes, the OpenAPI document, Swagger UI, and the
//! request-id middleware. Endpoints translate HTTP to application-service calls and back; they
//! hold no business rules.

mod auth;
mod caller;
mod error;
mod health;
pub mod idempotency;
pub mod metrics;
mod problem;
pub mod rate_limit;

use poem::endpoint::make_sync;
use poem::web::Html;
use poem::{Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Request, Response, Route};
use poem_openapi::OpenApiService;
use std::sync::Arc;

use crate::app::App;
use crate::config::EdgeSettings;
use uuid::Uuid;

pub use error::{ApiError, BEARER_CHALLENGE};
pub use problem::{Problem, PROBLEM_TYPE_BASE};

/// Header carrying the request id in and out; the id lands in every event's metadata.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

type Apis = (health::HealthApi, auth::AuthApi);

fn api_service(app: Arc<App>) -> OpenApiService<Apis, ()> {
    let apis = (
        health::HealthApi {
            pool: app.pool.clone(),
        },
        auth::AuthApi { app },
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
    let body_limits = idempotency::BodyLimits {
        other: MAX_BODY_BYTES,
        multipart: idempotency::MAX_MULTIPART_BYTES,
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
        .around(limit_body)
        .with(idempotency::Idempotency::new(app.clone(), edge, body_limits))
        .with(rate_limit::RateLimit::new(app, edge))
        .catch_all_error(error::problem_response)
        .with(metrics::Observe)
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

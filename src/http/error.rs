//! The HTTP layer's one error type: every failure becomes `application/problem+json` with a
//! stable `type` (RFC 9457). Domain errors map by variant; infrastructure errors never leak
//! detail; a 401 always carries `WWW-Authenticate`.

use poem::http::StatusCode;
use poem::Response;
use poem_openapi::payload::Json;
use poem_openapi::ApiResponse;

use super::problem::Problem;
use crate::app::{AppError, AuthError};

/// The challenge sent with every 401.
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"shopfront\"";

/// `Retry-After` of a 503 `database-unavailable`, in seconds: a database restart or failover
/// usually takes a few seconds, and the request that got the 503 has already waited up to the
/// pool's acquire timeout.
pub const DATABASE_RETRY_AFTER_SECONDS: u64 = 2;

#[derive(ApiResponse, Debug)]
pub enum ApiError {
    /// The request is malformed.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// Missing, invalid or revoked credentials.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>, #[oai(header = "WWW-Authenticate")] String),
    /// Authenticated, but not allowed.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Problem>),
    /// No such resource (or not visible to the caller).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// The request conflicts with the current state.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// It existed, but is over for good (an expired or completed login).
    #[oai(status = 410, content_type = "application/problem+json")]
    Gone(Json<Problem>),
    /// The body is larger than this endpoint accepts.
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// The body's type (by content, not by its name) is not one this endpoint accepts.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// The request is well-formed but refused by a business rule or validation.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(Json<Problem>),
    /// Too many requests from this client or caller; retry after `Retry-After` seconds.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] u64),
    /// Something failed on our side; nothing about the request was wrong.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    /// The database is unavailable (retry after `Retry-After` seconds), or Telegram is not
    /// configured (no `Retry-After`).
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] Option<u64>),
}

impl ApiError {
    /// A 400 with its own problem type.
    pub fn bad_request(slug: &str, detail: impl Into<String>) -> Self {
        ApiError::BadRequest(Json(Problem::new(slug, "Bad request", 400, detail.into())))
    }

    /// A 404 with its own problem type, e.g. `order-not-found`.
    pub fn not_found(slug: &str, detail: impl Into<String>) -> Self {
        ApiError::NotFound(Json(Problem::new(slug, "Not found", 404, detail.into())))
    }

    /// A 422 with its own problem type.
    pub fn unprocessable(slug: &str, detail: impl Into<String>) -> Self {
        ApiError::Unprocessable(Json(Problem::new(slug, "Refused", 422, detail.into())))
    }

    /// The problem document this error answers with.
    pub fn problem(&self) -> Problem {
        match self {
            ApiError::BadRequest(p)
            | ApiError::Unauthorized(p, _)
            | ApiError::Forbidden(p)
            | ApiError::NotFound(p)
            | ApiError::Conflict(p)
            | ApiError::Gone(p)
            | ApiError::PayloadTooLarge(p)
            | ApiError::UnsupportedMediaType(p)
            | ApiError::Unprocessable(p)
            | ApiError::TooManyRequests(p, _)
            | ApiError::Internal(p)
            | ApiError::Unavailable(p, _) => p.0.clone(),
        }
    }

    pub fn unauthorized(slug: &str, detail: impl Into<String>) -> Self {
        ApiError::Unauthorized(
            Json(Problem::new(slug, "Unauthorized", 401, detail.into())),
            BEARER_CHALLENGE.to_owned(),
        )
    }
}

impl ApiError {
    /// 503 `database-unavailable` with `Retry-After`: the database cannot be reached (or is
    /// restarting) right now; nothing about the request was wrong. A command whose connection
    /// broke while it committed may still have taken effect: clients retry with the same
    /// `Idempotency-Key`.
    pub fn database_unavailable() -> Self {
        ApiError::Unavailable(
            Json(Problem::new(
                "database-unavailable",
                "Database unavailable",
                503,
                "the database is unavailable; retry later".to_owned(),
            )),
            Some(DATABASE_RETRY_AFTER_SECONDS),
        )
    }

    /// 429 `rate-limited`: the `limit` rule refused the request for `wait` (rounded up to
    /// whole seconds in `Retry-After`, at least 1).
    pub fn rate_limited(limit: &str, wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let seconds = seconds.max(1);
        ApiError::TooManyRequests(
            Json(Problem::new(
                "rate-limited",
                "Too many requests",
                429,
                format!("the {limit} rate limit is reached; retry in {seconds} s"),
            )),
            seconds,
        )
    }
}

impl From<AppError> for ApiError {
    fn from(err: AppError) -> Self {
        let detail = err.to_string();
        let problem = |slug: &str, title: &str, status: u16| {
            Json(Problem::new(slug, title, status, detail.clone()))
        };
        match &err {
            AppError::Auth(auth) => match auth {
                AuthError::InvalidCredentials => {
                    ApiError::unauthorized("invalid-credentials", detail)
                }
                AuthError::InvalidToken => ApiError::unauthorized("invalid-token", detail),
                AuthError::RefreshTokenReused => {
                    ApiError::unauthorized("refresh-token-reused", detail)
                }
                AuthError::AccountBlocked => {
                    ApiError::Forbidden(problem("account-blocked", "Account blocked", 403))
                }
                AuthError::EmailTaken => {
                    ApiError::Conflict(problem("email-taken", "E-mail taken", 409))
                }
                AuthError::WeakPassword => {
                    ApiError::Unprocessable(problem("weak-password", "Weak password", 422))
                }
                AuthError::InvalidEmail => {
                    ApiError::Unprocessable(problem("invalid-email", "Invalid e-mail", 422))
                }
                AuthError::TelegramNotConfigured => ApiError::Unavailable(
                    problem("telegram-not-configured", "Telegram not configured", 503),
                    None,
                ),
                AuthError::InvalidTelegramSignature => {
                    ApiError::unauthorized("invalid-telegram-signature", detail)
                }
                AuthError::TelegramAuthExpired => {
                    ApiError::unauthorized("telegram-auth-expired", detail)
                }
                AuthError::UnknownTelegramUser => {
                    ApiError::unauthorized("unknown-telegram-user", detail)
                }
                AuthError::TelegramAlreadyLinked => ApiError::Conflict(problem(
                    "telegram-already-linked",
                    "Telegram already linked",
                    409,
                )),
                AuthError::TelegramNotLinked => {
                    ApiError::Conflict(problem("telegram-not-linked", "Telegram not linked", 409))
                }
                AuthError::SecondFactorRequired => {
                    ApiError::unauthorized("second-factor-required", detail)
                }
                AuthError::LoginNotFound => {
                    ApiError::NotFound(problem("login-not-found", "Not found", 404))
                }
                AuthError::LoginExpired => {
                    ApiError::Gone(problem("login-expired", "Login expired", 410))
                }
                AuthError::LoginCompleted => {
                    ApiError::Gone(problem("login-completed", "Login completed", 410))
                }
                AuthError::LoginDenied => ApiError::unauthorized("login-denied", detail),
                AuthError::LoginAlreadyDecided => ApiError::Conflict(problem(
                    "login-already-decided",
                    "Login already decided",
                    409,
                )),
                AuthError::SessionRequired => {
                    ApiError::Forbidden(problem("session-required", "Session required", 403))
                }
                AuthError::SessionNotFound => {
                    ApiError::NotFound(problem("session-not-found", "Not found", 404))
                }
                AuthError::ApiTokenNotFound => {
                    ApiError::NotFound(problem("api-token-not-found", "Not found", 404))
                }
            },
            AppError::Invalid { field, .. } => ApiError::Unprocessable(Json(
                problem(
                    &format!("invalid-{}", field.replace('_', "-")),
                    "Invalid input",
                    422,
                )
                .0
                .with_field(*field),
            )),
            AppError::InvalidValue(_) => {
                ApiError::Unprocessable(problem("invalid-value", "Invalid input", 422))
            }
            AppError::Forbidden(_) => ApiError::Forbidden(problem("forbidden", "Forbidden", 403)),
            AppError::Conflict { .. } => {
                ApiError::Conflict(problem("concurrent-change", "Concurrent change", 409))
            }
            AppError::UnsupportedMediaType
            | AppError::Receipt(aggregates::receipt::ReceiptError::UnsupportedMediaType(_)) => {
                ApiError::UnsupportedMediaType(problem(
                    "unsupported-media-type",
                    "Unsupported media type",
                    415,
                ))
            }
            AppError::FileTooLarge { .. } => {
                ApiError::PayloadTooLarge(problem("payload-too-large", "Payload too large", 413))
            }
            AppError::SkuTaken(_) => ApiError::Conflict(problem("sku-taken", "SKU taken", 409)),
            AppError::CustomerNotFound => {
                ApiError::Unprocessable(problem("customer-not-found", "Unknown customer", 422))
            }
            AppError::SubjectErased => {
                ApiError::Conflict(problem("subject-erased", "Personal data erased", 409))
            }
            AppError::FileErased => {
                ApiError::Gone(problem("receipt-file-erased", "File erased", 410))
            }
            AppError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                ApiError::database_unavailable()
            }
            AppError::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                ApiError::Internal(Json(Problem::new("internal", "Internal error", 500, None)))
            }
            // Domain refusals: 404 for "does not exist", 422 otherwise; the slug names the rule.
            domain => {
                let slug = domain_slug(domain);
                if slug.ends_with("not-found") {
                    ApiError::NotFound(problem(&slug, "Not found", 404))
                } else {
                    ApiError::Unprocessable(problem(&slug, "Refused", 422))
                }
            }
        }
    }
}

/// `aggregate-variant` in kebab case, e.g. `stock-out-of-stock`, `order-not-found`.
fn domain_slug(err: &AppError) -> String {
    let (aggregate, debug) = match err {
        AppError::Store(e) => ("store", format!("{e:?}")),
        AppError::Product(e) => ("product", format!("{e:?}")),
        AppError::Stock(e) => ("stock", format!("{e:?}")),
        AppError::Order(e) => ("order", format!("{e:?}")),
        AppError::Receipt(e) => ("receipt", format!("{e:?}")),
        AppError::Account(e) => ("account", format!("{e:?}")),
        _ => ("error", "Unknown".to_owned()),
    };
    let variant: String = debug.chars().take_while(|c| c.is_alphanumeric()).collect();
    let mut slug = String::from(aggregate);
    for c in variant.chars() {
        if c.is_uppercase() {
            slug.push('-');
        }
        slug.push(c.to_ascii_lowercase());
    }
    slug
}

/// The answer to a handler that panicked: logged, and a 500 problem without details.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "a request handler panicked");
    Problem::new("internal", "Internal error", 500, None).to_response()
}

/// The parameter poem-openapi names in a parse error ("failed to parse parameter `limit`: …").
fn parameter_name(message: &str) -> Option<String> {
    let rest = message.split_once("parameter `")?.1;
    let (name, _) = rest.split_once('`')?;
    Some(name.to_owned())
}

/// Turns any error that reached the top (unknown route, unparsable body, missing credentials)
/// into problem+json; responses that already are problems pass through.
pub async fn problem_response(err: poem::Error) -> Response {
    let message = err.to_string();
    let mut response = err.into_response();
    let is_problem = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    if is_problem {
        return response;
    }
    let status = response.status();
    let field = if status == StatusCode::BAD_REQUEST {
        parameter_name(&message)
    } else {
        None
    };
    let (slug, title) = match status {
        StatusCode::UNAUTHORIZED => ("unauthorized", "Unauthorized"),
        StatusCode::NOT_FOUND => ("not-found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "Method not allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "Payload too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type"),
        StatusCode::TOO_MANY_REQUESTS => ("rate-limited", "Too many requests"),
        s if s.is_client_error() => ("invalid-request", "Invalid request"),
        _ => ("internal", "Internal error"),
    };
    let detail = if status.is_server_error() {
        None
    } else if status == StatusCode::UNAUTHORIZED {
        // poem-openapi's own text for a missing or malformed credential says nothing useful.
        Some(
            "send `Authorization: Bearer <token>` with an access token from \
             POST /api/v1/auth/login or an API token"
                .to_owned(),
        )
    } else {
        Some(message)
    };
    let mut problem = Problem::new(slug, title, status.as_u16(), detail);
    problem.field = field;
    // The extensions (the operation id, for metrics) survive the rewrite.
    let extensions = std::mem::take(response.extensions_mut());
    let mut response = problem.to_response();
    *response.extensions_mut() = extensions;
    if status == StatusCode::UNAUTHORIZED {
        if let Ok(value) = BEARER_CHALLENGE.parse() {
            response.headers_mut().insert("www-authenticate", value);
        }
    }
    response
}

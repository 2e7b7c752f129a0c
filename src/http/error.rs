//! The HTTP layer's one error type: every failure becomes `application/problem+json` with a
//! stable `type` (RFC 9457). Domain errors map by variant; infrastructure errors never leak
//! detail; a 401 always carries `WWW-Authenticate`.

use poem::http::StatusCode;
use poem::Response;
use poem_openapi::payload::Json;
use poem_openapi::ApiResponse;

use super::problem::Problem;
use crate::app::{AppError, AuthError};

/// What a client is told about a value the database refused (SQLSTATE class 22), instead of
/// the database's message.
const INVALID_VALUE_DETAIL: &str = "a value in the request cannot be stored: text with a NUL \
     character, or a date or number outside the supported range";

/// The challenge sent with every 401.
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"shopfront\"";

/// `Retry-After` of a 503 `busy`, in seconds: a verification of the audit chain takes seconds.
pub const BUSY_RETRY_AFTER_SECONDS: u64 = 10;

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
        let seconds = whole_seconds(wait);
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

/// A wait as `Retry-After` says it: whole seconds, rounded up, at least 1.
fn whole_seconds(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
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
                AuthError::TooManyAttempts { retry_after } => {
                    super::metrics::rate_limited("login_account");
                    ApiError::TooManyRequests(
                        problem("login-throttled", "Too many sign-in attempts", 429),
                        whole_seconds(*retry_after),
                    )
                }
                AuthError::ReauthenticationRequired => ApiError::Forbidden(problem(
                    "reauthentication-required",
                    "Re-authentication required",
                    403,
                )),
                AuthError::ReauthenticationFailed => ApiError::Forbidden(problem(
                    "reauthentication-failed",
                    "Re-authentication failed",
                    403,
                )),
                AuthError::PasswordNotSet => {
                    ApiError::Conflict(problem("password-not-set", "No password", 409))
                }
                AuthError::MiniAppCustomersOnly => {
                    ApiError::Forbidden(problem("mini-app-customers-only", "Customers only", 403))
                }
                AuthError::TelegramDataReplayed => {
                    ApiError::unauthorized("telegram-data-replayed", detail)
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
            AppError::InvalidValue(message) => {
                // The database's own words stay in the log: they describe our schema, not the
                // caller's mistake.
                tracing::warn!(error = %message, "a value was refused by the database");
                ApiError::Unprocessable(Json(Problem::new(
                    "invalid-value",
                    "Invalid input",
                    422,
                    INVALID_VALUE_DETAIL.to_owned(),
                )))
            }
            AppError::Forbidden(_) => ApiError::Forbidden(problem("forbidden", "Forbidden", 403)),
            AppError::Conflict { .. } => {
                ApiError::Conflict(problem("concurrent-change", "Concurrent change", 409))
            }
            AppError::UnsupportedMediaType => ApiError::UnsupportedMediaType(problem(
                "unsupported-media-type",
                "Unsupported media type",
                415,
            )),
            AppError::FileTooLarge { .. } => {
                ApiError::PayloadTooLarge(problem("payload-too-large", "Payload too large", 413))
            }
            AppError::SkuTaken(_) => ApiError::Conflict(problem("sku-taken", "SKU taken", 409)),
            AppError::CustomerNotFound => ApiError::Unprocessable(problem(
                "customer-unknown-to-store",
                "Unknown customer",
                422,
            )),
            AppError::SubjectErased => {
                ApiError::Conflict(problem("subject-erased", "Personal data erased", 409))
            }
            AppError::FileErased => {
                ApiError::Gone(problem("receipt-file-erased", "File erased", 410))
            }
            AppError::TooSoon { what, retry_after } => ApiError::rate_limited(what, *retry_after),
            AppError::Busy(detail) => ApiError::Unavailable(
                Json(Problem::new("busy", "Busy", 503, detail.clone())),
                Some(BUSY_RETRY_AFTER_SECONDS),
            ),
            AppError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                ApiError::database_unavailable()
            }
            AppError::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                ApiError::Internal(Json(Problem::new("internal", "Internal error", 500, None)))
            }
            // Domain refusals: each variant's slug and status are written out below.
            domain => {
                let Some((slug, class)) = domain_problem(domain) else {
                    tracing::error!(error = ?domain, "an application error has no problem type");
                    return ApiError::Internal(Json(Problem::new(
                        "internal",
                        "Internal error",
                        500,
                        None,
                    )));
                };
                match class {
                    Refusal::NotFound => ApiError::NotFound(problem(slug, "Not found", 404)),
                    Refusal::State => ApiError::Conflict(problem(slug, "Conflict", 409)),
                    Refusal::Input => ApiError::Unprocessable(problem(slug, "Refused", 422)),
                    Refusal::MediaType => {
                        ApiError::UnsupportedMediaType(problem(slug, "Unsupported media type", 415))
                    }
                }
            }
        }
    }
}

/// Why a domain rule said no, which decides the status: the resource does not exist (404), its
/// current state does not allow it (409: already decided, not payable now, out of stock), or
/// the input is invalid whatever the state (422).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    State,
    Input,
    MediaType,
}

/// The problem `type` slug and class of every domain refusal, written out per variant: part of
/// the public API (docs/problems.md, checked by a test), so renaming a variant changes nothing
/// a client sees. `None` for errors that are not domain refusals.
pub fn domain_problem(err: &AppError) -> Option<(&'static str, Refusal)> {
    use aggregates::account::AccountError as A;
    use aggregates::order::OrderError as O;
    use aggregates::product::ProductError as P;
    use aggregates::receipt::ReceiptError as R;
    use aggregates::stock::StockError as K;
    use aggregates::store::StoreError as S;
    use Refusal::{Input, MediaType, NotFound, State};
    Some(match err {
        AppError::Store(e) => match e {
            S::NotFound => ("store-not-found", NotFound),
            S::AlreadyExists => ("store-already-exists", State),
            S::InvalidName => ("store-invalid-name", Input),
            S::InvalidTimezone(_) => ("store-invalid-timezone", Input),
            S::InvalidPaymentInstructions => ("store-invalid-payment-instructions", Input),
            S::InvalidReservationTtl(_) => ("store-invalid-reservation-ttl", Input),
            S::InvalidLowStockThreshold(_) => ("store-invalid-low-stock-threshold", Input),
            S::NotStaff => ("store-not-staff", State),
            S::LastOwner => ("store-last-owner", State),
            S::CustomerAlreadyBlocked => ("store-customer-already-blocked", State),
            S::CustomerNotBlocked => ("store-customer-not-blocked", State),
            S::CurrencyImmutable => ("store-currency-immutable", Input),
            S::CustomerBlocked => ("store-customer-blocked", State),
            S::InvalidBlockReason => ("store-invalid-block-reason", Input),
        },
        AppError::Product(e) => match e {
            P::NotFound => ("product-not-found", NotFound),
            P::AlreadyExists => ("product-already-exists", State),
            P::InvalidName => ("product-invalid-name", Input),
            P::InvalidDescription => ("product-invalid-description", Input),
            P::InvalidSku => ("product-invalid-sku", Input),
            P::InvalidPrice => ("product-invalid-price", Input),
            P::CurrencyMismatch { .. } => ("product-currency-mismatch", Input),
            P::Archived => ("product-archived", State),
            P::AlreadyArchived => ("product-already-archived", State),
            P::NotArchived => ("product-not-archived", State),
        },
        AppError::Stock(e) => match e {
            K::NotFound => ("stock-not-found", NotFound),
            K::AlreadyExists => ("stock-already-exists", State),
            K::InvalidQuantity => ("stock-invalid-quantity", Input),
            K::InvalidAdjustment => ("stock-invalid-adjustment", Input),
            K::NoteTooLong => ("stock-note-too-long", Input),
            K::OutOfStock { .. } => ("stock-out-of-stock", State),
            K::AdjustmentBelowReserved { .. } => ("stock-adjustment-below-reserved", State),
            K::ReservationMismatch { .. } => ("stock-reservation-mismatch", State),
            K::InvalidThreshold => ("stock-invalid-threshold", Input),
            K::NoOpenAlert => ("stock-no-open-alert", State),
            K::AlertAlreadyAcknowledged => ("stock-alert-already-acknowledged", State),
        },
        AppError::Order(e) => match e {
            O::NotFound => ("order-not-found", NotFound),
            O::AlreadyPlaced => ("order-already-placed", State),
            O::InvalidLineCount => ("order-invalid-line-count", Input),
            O::InvalidQuantity => ("order-invalid-quantity", Input),
            O::DuplicateProduct(_) => ("order-duplicate-product", Input),
            O::InvalidPrice => ("order-invalid-price", Input),
            O::CurrencyMismatch { .. } => ("order-currency-mismatch", Input),
            O::TotalOverflow => ("order-total-overflow", Input),
            O::InvalidDeadline => ("order-invalid-deadline", Input),
            O::ForeignPersonalData => ("order-foreign-personal-data", Input),
            O::InvalidReason => ("order-invalid-reason", Input),
            O::InvalidTransition { .. } => ("order-invalid-transition", State),
            O::UnknownReceipt(_) => ("order-unknown-receipt", State),
            O::ReceiptRejected(_) => ("order-receipt-rejected", State),
            O::NotYetDue { .. } => ("order-not-yet-due", State),
        },
        AppError::Receipt(e) => match e {
            R::NotFound => ("receipt-not-found", NotFound),
            R::AlreadyExists => ("receipt-already-exists", State),
            R::OrderNotPayable => ("receipt-order-not-payable", State),
            R::InvalidFile => ("receipt-invalid-file", Input),
            R::UnsupportedMediaType(_) => ("unsupported-media-type", MediaType),
            R::CurrencyMismatch { .. } => ("receipt-currency-mismatch", Input),
            R::InvalidAmount => ("receipt-invalid-amount", Input),
            R::ReasonRequired => ("receipt-reason-required", Input),
            R::AlreadyDecided { .. } => ("receipt-already-decided", State),
        },
        AppError::Account(e) => match e {
            A::NotFound => ("account-not-found", NotFound),
            A::AlreadyExists => ("account-already-exists", State),
            A::NoIdentity => ("account-no-identity", Input),
            A::InvalidTelegramUserId(_) => ("account-invalid-telegram-user-id", Input),
            A::ForeignPersonalData => ("account-foreign-personal-data", Input),
            A::Blocked => ("account-blocked", State),
            A::AlreadyBlocked => ("account-already-blocked", State),
            A::NotBlocked => ("account-not-blocked", State),
            A::ReasonRequired => ("account-reason-required", Input),
            A::SecondFactorNeedsTelegram => ("account-second-factor-needs-telegram", State),
            A::Erased => ("account-erased", State),
        },
        _ => return None,
    })
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

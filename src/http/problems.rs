//! The catalog of problem types the API answers with, rendered into docs/problems.md
//! (`shopfront problems`; a test fails when the document and the code disagree). Every entry
//! comes from the real mapping ([`ApiError::from`]) of a sample error, so the document cannot
//! say something the service does not do. A slug is part of the public API: renaming an error
//! variant must not change it, and adding one means adding it here.

use aggregates::account::AccountError;
use aggregates::order::{OrderError, OrderStatus};
use aggregates::product::ProductError;
use aggregates::receipt::{ReceiptError, ReceiptStatus};
use aggregates::stock::StockError;
use aggregates::store::StoreError;
use aggregates::{Currency, OrderId, ProductId, ReceiptId};

use super::error::ApiError;
use crate::app::{AppError, AuthError};

/// One problem type: its slug, status and title, and when it is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    pub slug: String,
    pub status: u16,
    pub title: String,
    pub when: String,
}

/// A sample of every application error a request can end in.
fn samples() -> Vec<AppError> {
    let (Ok(rub), Ok(usd)) = ("RUB".parse::<Currency>(), "USD".parse::<Currency>()) else {
        return Vec::new();
    };
    let mut errors: Vec<AppError> = Vec::new();
    errors.extend(
        [
            StoreError::NotFound,
            StoreError::AlreadyExists,
            StoreError::InvalidName,
            StoreError::InvalidTimezone("Mars/Olympus".into()),
            StoreError::InvalidPaymentInstructions,
            StoreError::InvalidReservationTtl(1),
            StoreError::InvalidLowStockThreshold(2_000_000),
            StoreError::NotStaff,
            StoreError::LastOwner,
            StoreError::CustomerAlreadyBlocked,
            StoreError::CustomerNotBlocked,
            StoreError::CurrencyImmutable,
            StoreError::CustomerBlocked,
            StoreError::InvalidBlockReason,
        ]
        .map(AppError::from),
    );
    errors.extend(
        [
            ProductError::NotFound,
            ProductError::AlreadyExists,
            ProductError::InvalidName,
            ProductError::InvalidDescription,
            ProductError::InvalidSku,
            ProductError::InvalidPrice,
            ProductError::CurrencyMismatch {
                expected: rub,
                got: usd,
            },
            ProductError::Archived,
            ProductError::AlreadyArchived,
            ProductError::NotArchived,
        ]
        .map(AppError::from),
    );
    errors.extend(
        [
            StockError::NotFound,
            StockError::AlreadyExists,
            StockError::InvalidQuantity,
            StockError::InvalidAdjustment,
            StockError::NoteTooLong,
            StockError::OutOfStock {
                requested: 3,
                available: 1,
            },
            StockError::AdjustmentBelowReserved {
                on_hand: 3,
                reserved: 2,
                would_be_available: -1,
            },
            StockError::ReservationMismatch {
                order_id: OrderId::default(),
                held: 1,
                requested: 2,
            },
            StockError::InvalidThreshold,
            StockError::NoOpenAlert,
            StockError::AlertAlreadyAcknowledged,
        ]
        .map(AppError::from),
    );
    errors.extend(
        [
            OrderError::NotFound,
            OrderError::AlreadyPlaced,
            OrderError::InvalidLineCount,
            OrderError::InvalidQuantity,
            OrderError::DuplicateProduct(ProductId::default()),
            OrderError::InvalidPrice,
            OrderError::CurrencyMismatch {
                expected: rub,
                got: usd,
            },
            OrderError::TotalOverflow,
            OrderError::InvalidDeadline,
            OrderError::ForeignPersonalData,
            OrderError::InvalidReason,
            OrderError::InvalidTransition {
                action: "fulfil",
                status: OrderStatus::AwaitingPayment,
            },
            OrderError::UnknownReceipt(ReceiptId::default()),
            OrderError::ReceiptRejected(ReceiptId::default()),
            OrderError::NotYetDue {
                payment_due_by: chrono::DateTime::UNIX_EPOCH,
            },
        ]
        .map(AppError::from),
    );
    errors.extend(
        [
            ReceiptError::NotFound,
            ReceiptError::AlreadyExists,
            ReceiptError::OrderNotPayable,
            ReceiptError::InvalidFile,
            ReceiptError::UnsupportedMediaType("text/plain".into()),
            ReceiptError::CurrencyMismatch {
                expected: rub,
                got: usd,
            },
            ReceiptError::InvalidAmount,
            ReceiptError::ReasonRequired,
            ReceiptError::AlreadyDecided {
                status: ReceiptStatus::Verified,
            },
        ]
        .map(AppError::from),
    );
    errors.extend(
        [
            AccountError::NotFound,
            AccountError::AlreadyExists,
            AccountError::NoIdentity,
            AccountError::InvalidTelegramUserId(0),
            AccountError::ForeignPersonalData,
            AccountError::Blocked,
            AccountError::AlreadyBlocked,
            AccountError::NotBlocked,
            AccountError::ReasonRequired,
            AccountError::SecondFactorNeedsTelegram,
            AccountError::Erased,
        ]
        .map(AppError::from),
    );
    errors.extend(
        [
            AuthError::InvalidCredentials,
            AuthError::InvalidToken,
            AuthError::RefreshTokenReused,
            AuthError::AccountBlocked,
            AuthError::EmailTaken,
            AuthError::WeakPassword,
            AuthError::InvalidEmail,
            AuthError::TelegramNotConfigured,
            AuthError::InvalidTelegramSignature,
            AuthError::TelegramAuthExpired,
            AuthError::UnknownTelegramUser,
            AuthError::TelegramAlreadyLinked,
            AuthError::TelegramNotLinked,
            AuthError::SecondFactorRequired,
            AuthError::LoginNotFound,
            AuthError::LoginExpired,
            AuthError::LoginDenied,
            AuthError::LoginCompleted,
            AuthError::LoginAlreadyDecided,
            AuthError::SessionRequired,
            AuthError::SessionNotFound,
            AuthError::ApiTokenNotFound,
            AuthError::TooManyAttempts {
                retry_after: std::time::Duration::from_secs(60),
            },
            AuthError::ReauthenticationRequired,
            AuthError::ReauthenticationFailed,
            AuthError::PasswordNotSet,
            AuthError::MiniAppCustomersOnly,
            AuthError::TelegramDataReplayed,
        ]
        .map(AppError::from),
    );
    errors.extend([
        AppError::invalid("field_name", "what is wrong with it"),
        AppError::UnsupportedMediaType,
        AppError::FileTooLarge { max_bytes: 1024 },
        AppError::CustomerNotFound,
        AppError::SkuTaken("TEA-1".into()),
        AppError::Forbidden("ViewOrders is not allowed in this store".into()),
        AppError::SubjectErased,
        AppError::FileErased,
        AppError::InvalidValue("a value cannot be stored".into()),
        AppError::Conflict {
            aggregate: "Stock",
            id: "01934c4e-0000-7000-8000-000000000000".into(),
        },
        AppError::Busy("a verification of the audit chain is already running".into()),
        AppError::Unavailable("the pool timed out".into()),
        AppError::Internal("a bug".into()),
    ]);
    errors
}

/// Problems the edge answers before any application service runs.
const EDGE: &[(&str, u16, &str, &str)] = &[
    (
        "unauthorized",
        401,
        "Unauthorized",
        "no `Authorization: Bearer …` header",
    ),
    ("not-found", 404, "Not found", "no such route"),
    (
        "method-not-allowed",
        405,
        "Method not allowed",
        "the route exists for other methods",
    ),
    (
        "bad-request",
        400,
        "Bad request",
        "a malformed body or parameter (`field` names it)",
    ),
    (
        "payload-too-large",
        413,
        "Payload too large",
        "a body over its route's limit",
    ),
    (
        "rate-limited",
        429,
        "Too many requests",
        "a rate limit is reached (`Retry-After`)",
    ),
    (
        "invalid-cursor",
        400,
        "Bad request",
        "a `cursor` that is not one this API gave out",
    ),
    (
        "invalid-idempotency-key",
        400,
        "Bad request",
        "an `Idempotency-Key` that is not 1–255 visible ASCII characters",
    ),
    (
        "idempotency-key-reused",
        422,
        "Refused",
        "the same `Idempotency-Key` with another request",
    ),
    (
        "idempotency-key-in-flight",
        409,
        "Conflict",
        "the same `Idempotency-Key` while the first request runs",
    ),
    // Made by handlers for what is not an application error.
    ("alert-not-found", 404, "Not found", "no such alert"),
    (
        "alert-resolved",
        422,
        "Refused",
        "the alert is resolved: stock recovered",
    ),
    (
        "customer-not-found",
        404,
        "Not found",
        "no such customer in this store",
    ),
    (
        "notification-not-found",
        404,
        "Not found",
        "no such notification of yours",
    ),
    ("order-not-found", 404, "Not found", "no such order"),
    ("product-not-found", 404, "Not found", "no such product"),
    ("receipt-not-found", 404, "Not found", "no such receipt"),
    ("user-not-found", 404, "Not found", "no such account"),
    (
        "invalid-upload",
        400,
        "Bad request",
        "the multipart body cannot be read",
    ),
    (
        "did-not-exist-then",
        404,
        "Not found",
        "an aggregate's state at version 0 or before its first event; a store's KPIs as of a day before it existed",
    ),
    (
        "not-reached-yet",
        409,
        "Conflict",
        "an aggregate's state past its last version or at a future instant; KPIs as of a day to come",
    ),
    (
        "version-or-as-of",
        400,
        "Bad request",
        "both `version` and `as_of` for an aggregate's past state",
    ),
    (
        "sum-out-of-range",
        422,
        "Refused",
        "an analytics sum past the int64 minor units amounts are shown in",
    ),
];

/// Every problem type, by slug.
pub fn catalog() -> Vec<CatalogEntry> {
    let mut entries: Vec<CatalogEntry> = samples()
        .into_iter()
        .map(|err| {
            let when = err.to_string();
            let problem = ApiError::from(err).problem();
            CatalogEntry {
                slug: problem
                    .problem_type
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                status: problem.status,
                title: problem.title,
                when,
            }
        })
        .collect();
    entries.extend(EDGE.iter().map(|(slug, status, title, when)| CatalogEntry {
        slug: (*slug).to_owned(),
        status: *status,
        title: (*title).to_owned(),
        when: (*when).to_owned(),
    }));
    entries.sort_by(|a, b| a.slug.cmp(&b.slug));
    entries.dedup_by(|a, b| a.slug == b.slug);
    entries
}

/// docs/problems.md, rendered from the catalog.
pub fn render_markdown() -> String {
    let mut out = String::from(
        "# Problem types\n\n\
         Generated from `src/http/problems.rs` by `shopfront problems`; a test fails when this\n\
         file and the code disagree. Every error is `application/problem+json` (RFC 9457) with\n\
         `type` = `https://shopfront.dev/problems/<slug>`. A slug never changes meaning.\n\n\
         Statuses: **404** the resource does not exist (or is not visible to the caller); **409**\n\
         the resource's current state does not allow it (already decided, not payable now, out of\n\
         stock) — the same request may succeed later; **422** the input is invalid whatever the\n\
         state; **503** retry after `Retry-After`.\n\n\
         | slug | status | title | for example |\n|---|---:|---|---|\n",
    );
    for entry in catalog() {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            entry.slug,
            entry.status,
            entry.title,
            entry.when.replace('|', "\\|")
        ));
    }
    out
}

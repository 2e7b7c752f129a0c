//! The application layer's error: every way a command can be refused or fail.
//!
//! Domain errors stay typed (one enum per aggregate) so the HTTP layer can map each to a stable
//! problem `type`; infrastructure failures are kept apart so they are never shown as the
//! caller's fault.

use aggregates::account::AccountError;
use aggregates::order::OrderError;
use aggregates::product::ProductError;
use aggregates::receipt::ReceiptError;
use aggregates::stock::StockError;
use aggregates::store::StoreError;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Product(#[from] ProductError),
    #[error(transparent)]
    Stock(#[from] StockError),
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Auth(#[from] super::AuthError),
    /// Input that no aggregate would accept, caught before any command ran.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// An uploaded file's content is not of a type this endpoint accepts.
    #[error("the file is not a JPEG, PNG or WebP image or a PDF (judged by its content)")]
    UnsupportedMediaType,
    /// An uploaded file is larger than accepted.
    #[error("the file is larger than {max_bytes} bytes")]
    FileTooLarge { max_bytes: u64 },
    /// Staff named a customer their store does not know.
    #[error("no customer of this store has this id (leave it out for a walk-in customer)")]
    CustomerNotFound,
    /// Another product of the store already has this sku.
    #[error("another product of this store already has the sku '{0}'")]
    SkuTaken(String),
    /// The caller's role does not allow this (or the store is not theirs).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The personal data of this person was erased; nothing new can be sealed for them.
    #[error("the personal data of this person has been erased")]
    SubjectErased,
    /// The file belonged to a person whose personal data was erased: it is gone for good.
    #[error("this receipt's file was erased with the personal data of its customer")]
    FileErased,
    /// A value the database refuses to store or compare (SQLSTATE class 22: a NUL character,
    /// a date out of range, …): the caller's input, never a server fault.
    #[error("a value cannot be stored: {0}")]
    InvalidValue(String),
    /// Optimistic concurrency kept failing after every retry.
    #[error("{aggregate} {id} is being changed by others right now; try again")]
    Conflict { aggregate: &'static str, id: String },
    /// The caller did this too recently (`what` names the limit); again after `retry_after`.
    #[error("the {what} limit is reached")]
    TooSoon {
        what: &'static str,
        retry_after: std::time::Duration,
    },
    /// A job that runs one at a time per instance (verifying the audit chain) is running.
    #[error("{0}")]
    Busy(String),
    /// The database could not be reached.
    #[error("the database is unavailable")]
    Unavailable(#[source] BoxError),
    /// A bug or corrupted data: never the caller's fault.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl AppError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        AppError::Invalid {
            field,
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        Self::from_persistence(Box::new(err))
    }
}

impl AppError {
    /// Classifies a failure of the database layer (a `sqlx::Error`, or an error of postgres-es
    /// wrapping one): the caller's value, the database not being there, or a fault of ours.
    pub(crate) fn from_persistence(err: BoxError) -> Self {
        if let Some(message) = data_exception(err.as_ref()) {
            AppError::InvalidValue(message)
        } else if database_unavailable(err.as_ref()) {
            AppError::Unavailable(err)
        } else {
            AppError::Internal(err)
        }
    }
}

/// True when `err` (or an error it wraps) says the database cannot serve us right now, a
/// condition that passes by itself (a restart, a failover, a network cut), so the request may
/// be retried: no connection could be had in time, the connection broke mid-query, or the
/// server refused or ended it because it is starting up or shutting down.
fn database_unavailable(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if let Some(err) = err.downcast_ref::<sqlx::Error>() {
            return match err {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    // Class 08: connection exception. 57P01 admin_shutdown, 57P02
                    // crash_shutdown, 57P03 cannot_connect_now ("the database system is
                    // starting up / shutting down"), 53300 too_many_connections.
                    code.starts_with("08")
                        || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
                }),
                _ => false,
            };
        }
        cause = err.source();
    }
    false
}

/// The database's message when `err` is a data exception (SQLSTATE class 22), which only a
/// value from the request can cause: text with a NUL character, a date Postgres cannot hold.
pub(crate) fn data_exception(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let sqlx::Error::Database(db) = err.downcast_ref::<sqlx::Error>()? else {
        return None;
    };
    db.code()
        .is_some_and(|code| code.starts_with("22"))
        .then(|| db.message().to_owned())
}

/// The constraint a database error names (a unique or check violation), to map it to a domain
/// refusal by name rather than by parsing messages.
pub(crate) fn constraint(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}

//! Shapes shared by many endpoints: amounts, pages and their cursors, and the answer of a
//! command whose view is not in its read model yet.

use aggregates::{Currency, Money};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use poem_openapi::payload::Json;
use poem_openapi::types::{ParseFromJSON, ToJSON};
use poem_openapi::{ApiResponse, Object};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use super::error::ApiError;
use super::problem::Problem;
use crate::app::AppError;

/// An amount of money: integer minor units (kopecks, cents) and an ISO 4217 code.
#[derive(Clone, Debug, PartialEq, Eq, Object)]
#[oai(rename = "Money")]
pub struct MoneyView {
    /// Minor units (e.g. 89000 = 890.00 RUB).
    pub amount_minor: i64,
    /// ISO 4217 code, e.g. `RUB`.
    #[oai(validator(min_length = 3, max_length = 3))]
    pub currency: String,
}

impl From<Money> for MoneyView {
    fn from(money: Money) -> Self {
        Self {
            amount_minor: money.amount_minor,
            currency: money.currency.code().to_owned(),
        }
    }
}

impl MoneyView {
    pub fn new(amount_minor: i64, currency: impl Into<String>) -> Self {
        Self {
            amount_minor,
            currency: currency.into(),
        }
    }

    /// The domain value; an unknown currency code is refused naming `field`.
    pub fn to_money(&self, field: &'static str) -> Result<Money, AppError> {
        Ok(Money::new(
            self.amount_minor,
            parse_currency(&self.currency, field)?,
        ))
    }
}

/// An ISO 4217 currency code, or a 422 naming `field`.
pub fn parse_currency(code: &str, field: &'static str) -> Result<Currency, AppError> {
    code.parse::<Currency>()
        .map_err(|_| AppError::invalid(field, format!("'{code}' is not an ISO 4217 currency code")))
}

/// A command that took effect, answered before the read model showing it caught up with it
/// (docs/adr/0006-read-your-writes.md): its view is at `location` shortly. The change is made:
/// sending the command again would make it twice.
#[derive(Debug, Object)]
#[oai(rename = "Pending")]
pub struct PendingView {
    /// Where the view of the change is read (also in `Location`).
    pub location: String,
    /// Global position of the command's last event in the log: the read model shows the change
    /// once it has reached it.
    #[oai(skip_serializing_if_is_none)]
    pub position: Option<i64>,
}

impl PendingView {
    pub fn new(location: String, position: Option<i64>) -> Self {
        Self { location, position }
    }
}

/// The answer of a command that shows what it changed: the view a GET of the resource gives,
/// read from the read model once it has the change.
#[derive(ApiResponse)]
pub enum Changed<T: ParseFromJSON + ToJSON + Send + Sync> {
    /// The resource after the change.
    #[oai(status = 200)]
    Ok(Json<T>),
    /// The change is made, but the read model did not show it in time (2 s by default): GET
    /// `Location` shortly (do not repeat the command).
    #[oai(status = 202)]
    Pending(Json<PendingView>, #[oai(header = "Location")] String),
}

impl<T: ParseFromJSON + ToJSON + Send + Sync> Changed<T> {
    /// The view when the read model had it in time, else `Pending` pointing at `location`.
    pub fn of(view: Option<T>, location: String, position: Option<i64>) -> Self {
        match view {
            Some(view) => Changed::Ok(Json(view)),
            None => Changed::Pending(Json(PendingView::new(location.clone(), position)), location),
        }
    }
}

/// One page of a list. Pass `next_cursor` back as `cursor` for the next page; it is absent on
/// the last page.
#[derive(Debug, Object)]
#[oai(rename = "Page")]
pub struct Page<T: ParseFromJSON + ToJSON + Send + Sync> {
    pub items: Vec<T>,
    #[oai(skip_serializing_if_is_none)]
    pub next_cursor: Option<String>,
}

/// Default and largest page sizes.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 200;

/// The page size asked for, within bounds.
pub fn page_size(limit: Option<u32>) -> i64 {
    i64::from(limit.unwrap_or(DEFAULT_PAGE_SIZE).clamp(1, MAX_PAGE_SIZE))
}

/// Builds a page from `rows` fetched with `limit + 1`: the extra row only says there is more,
/// and the cursor names the last row shown.
pub fn page_of<R, T, K>(
    mut rows: Vec<R>,
    limit: i64,
    key: impl Fn(&R) -> K,
    view: impl FnMut(R) -> T,
) -> Page<T>
where
    T: ParseFromJSON + ToJSON + Send + Sync,
    K: Serialize,
{
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if more {
        rows.last().map(|row| encode_cursor(&key(row)))
    } else {
        None
    };
    Page {
        items: rows.into_iter().map(view).collect(),
        next_cursor,
    }
}

/// An opaque cursor: the keyset position of the last row shown, as URL-safe base64 JSON.
pub fn encode_cursor<K: Serialize>(key: &K) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).unwrap_or_default())
}

/// The keyset position in a cursor, or a 400 `invalid-cursor`.
pub fn decode_cursor<K: DeserializeOwned>(cursor: &str) -> Result<K, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            ApiError::bad_request("invalid-cursor", "the cursor is not one this API gave out")
        })
}

/// The outcome for one item of a bulk request.
#[derive(Debug, Object)]
pub struct BulkOutcome {
    pub id: Uuid,
    pub ok: bool,
    #[oai(skip_serializing_if_is_none)]
    pub problem: Option<Problem>,
}

/// Per-item outcomes, in request order.
#[derive(Debug, Object)]
pub struct BulkResponse {
    pub succeeded: u32,
    pub failed: u32,
    pub results: Vec<BulkOutcome>,
}

impl BulkResponse {
    /// Collects per-item results.
    pub fn of(results: Vec<(Uuid, Result<(), ApiError>)>) -> Self {
        let results: Vec<BulkOutcome> = results
            .into_iter()
            .map(|(id, outcome)| match outcome {
                Ok(()) => BulkOutcome {
                    id,
                    ok: true,
                    problem: None,
                },
                Err(err) => BulkOutcome {
                    id,
                    ok: false,
                    problem: Some(err.problem()),
                },
            })
            .collect();
        let succeeded = results.iter().filter(|r| r.ok).count() as u32;
        Self {
            failed: results.len() as u32 - succeeded,
            succeeded,
            results,
        }
    }
}

//! Queries of the receipts read model: one receipt and a store's receipts (the verification
//! queue), each with its order's total and status from the orders read model.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A payment receipt as the verifier sees it (`receipts`, with its order's total and status).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Receipt {
    pub receipt_id: Uuid,
    pub order_id: Uuid,
    pub store_id: Uuid,
    /// `SUBMITTED`, `VERIFIED`, `REJECTED` or `VOIDED`.
    pub status: String,
    pub media_type: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub claimed_amount_minor: Option<i64>,
    pub claimed_currency: Option<String>,
    pub submitted_by: Uuid,
    pub channel: String,
    pub submitted_at: DateTime<Utc>,
    pub decided_by: Option<Uuid>,
    pub decided_at: Option<DateTime<Utc>>,
    pub rejection_reason: Option<String>,
    pub void_reason: Option<String>,
    /// Earlier receipts of the same store with the same file, for other orders.
    pub duplicate_of: Vec<Uuid>,
    /// How many earlier receipts of other stores had the same file.
    pub duplicates_elsewhere: i32,
    pub order_total_minor: Option<i64>,
    pub order_currency: Option<String>,
    pub order_status: Option<String>,
}

impl Receipt {
    /// Whether the same file was submitted for another order before.
    pub fn possible_duplicate(&self) -> bool {
        !self.duplicate_of.is_empty() || self.duplicates_elsewhere > 0
    }
}

const RECEIPT_QUERY: &str = "select r.receipt_id, r.order_id, r.store_id, r.status, r.media_type, \
     r.size_bytes, r.sha256, r.claimed_amount_minor, r.claimed_currency, r.submitted_by, \
     r.channel, r.submitted_at, r.decided_by, r.decided_at, r.rejection_reason, r.void_reason, \
     r.duplicate_of, r.duplicates_elsewhere, o.total_minor as order_total_minor, \
     o.currency as order_currency, o.status as order_status \
     from receipts r left join orders o on o.order_id = r.order_id";

/// One receipt, whatever its store (the caller authorizes on the row's `store_id`).
pub async fn receipt(pool: &PgPool, receipt_id: Uuid) -> Result<Option<Receipt>, sqlx::Error> {
    sqlx::query_as(&format!("{RECEIPT_QUERY} where r.receipt_id = $1"))
        .bind(receipt_id)
        .fetch_optional(pool)
        .await
}

/// Which receipts [`receipts`] lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptFilter {
    /// `SUBMITTED` (the queue), `VERIFIED`, `REJECTED` or `VOIDED`.
    pub status: &'static str,
    /// Only those flagged (or only those not flagged) as possible duplicates.
    pub possible_duplicate: Option<bool>,
}

/// A store's receipts by submission (oldest first), keyed by `(submitted_at, receipt_id)`.
pub async fn receipts(
    pool: &PgPool,
    store_id: Uuid,
    filter: &ReceiptFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Receipt>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{RECEIPT_QUERY} where r.store_id = $1 and r.status = $2 \
           and ($3::boolean is null or \
                (cardinality(r.duplicate_of) > 0 or r.duplicates_elsewhere > 0) = $3) \
           and ($4::timestamptz is null or (r.submitted_at, r.receipt_id) > ($4, $5)) \
         order by r.submitted_at, r.receipt_id limit $6"
    ))
    .bind(store_id)
    .bind(filter.status)
    .bind(filter.possible_duplicate)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await
}

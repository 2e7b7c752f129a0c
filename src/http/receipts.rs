//! Payment receipts: upload (multipart, bounded, type sniffed from content), download, the
//! verification queue, verify / reject, one by one or in bulk.

use std::sync::Arc;

use aggregates::{OrderId, ReceiptId, StoreId};
use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Attachment, AttachmentType, Json};
use poem_openapi::types::multipart::Upload;
use poem_openapi::{ApiResponse, Enum, Multipart, Object, OpenApi, Tags};
use uuid::Uuid;

use projections::read_models::receipts::queries::{self as receipts, ReceiptFilter};

use super::auth::BearerAuth;
use super::context::{caller, on_resource};
use super::error::ApiError;
use super::types::{
    decode_cursor, page_of, page_size, parse_currency, BulkResponse, Changed, MoneyView, Page,
    PendingView,
};
use crate::app::{grant, App, AppError, Caller, Grant, ReceiptUpload, Resource, StoreAccess};

/// The read models a receipt's view comes from: the receipt, with its order's total and status.
const RECEIPT_READ_MODELS: &[&str] = &["receipts", "orders"];

#[derive(Tags)]
enum ApiTags {
    /// Payment receipts and their verification.
    Receipts,
}

/// A receipt upload: the file (JPEG, PNG, WebP or PDF, judged by content) and optionally the
/// amount the customer says they paid, in the order's currency.
#[derive(Debug, Multipart)]
pub struct UploadReceiptForm {
    pub file: Upload,
    /// Minor units, e.g. `178000`.
    pub amount: Option<i64>,
    /// ISO 4217 code of `amount`; the order's currency when absent.
    pub currency: Option<String>,
}

/// A receipt, as the verifier sees it.
#[derive(Debug, Object)]
#[oai(rename = "Receipt")]
pub struct ReceiptView {
    pub receipt_id: Uuid,
    pub order_id: Uuid,
    pub store_id: Uuid,
    /// `SUBMITTED`, `VERIFIED`, `REJECTED` or `VOIDED` (its order was cancelled or expired
    /// before anyone decided it).
    pub status: String,
    pub media_type: String,
    pub size_bytes: i64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    #[oai(skip_serializing_if_is_none)]
    pub claimed_amount: Option<MoneyView>,
    pub submitted_by: Uuid,
    /// `api` or `telegram`.
    pub channel: String,
    pub submitted_at: DateTime<Utc>,
    #[oai(skip_serializing_if_is_none)]
    pub decided_by: Option<Uuid>,
    #[oai(skip_serializing_if_is_none)]
    pub decided_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub rejection_reason: Option<String>,
    /// Why the receipt was voided: `order_cancelled` or `order_expired`.
    #[oai(skip_serializing_if_is_none)]
    pub void_reason: Option<String>,
    /// The same file was already submitted for another order: check before verifying.
    pub possible_duplicate: bool,
    /// Earlier receipts of this store with the same file, for other orders.
    pub duplicate_of: Vec<Uuid>,
    /// The order's total, to compare with the receipt (queue and detail views).
    #[oai(skip_serializing_if_is_none)]
    pub order_total: Option<MoneyView>,
    #[oai(skip_serializing_if_is_none)]
    pub order_status: Option<String>,
}

impl From<receipts::Receipt> for ReceiptView {
    fn from(row: receipts::Receipt) -> Self {
        Self {
            possible_duplicate: row.possible_duplicate(),
            receipt_id: row.receipt_id,
            order_id: row.order_id,
            store_id: row.store_id,
            status: row.status,
            media_type: row.media_type,
            size_bytes: row.size_bytes,
            sha256: row.sha256,
            claimed_amount: row
                .claimed_amount_minor
                .zip(row.claimed_currency)
                .map(|(amount, currency)| MoneyView::new(amount, currency)),
            submitted_by: row.submitted_by,
            channel: row.channel,
            submitted_at: row.submitted_at,
            decided_by: row.decided_by,
            decided_at: row.decided_at,
            rejection_reason: row.rejection_reason,
            void_reason: row.void_reason,
            duplicate_of: row.duplicate_of,
            order_total: row
                .order_total_minor
                .zip(row.order_currency)
                .map(|(amount, currency)| MoneyView::new(amount, currency)),
            order_status: row.order_status,
        }
    }
}

/// A rejection.
#[derive(Debug, Object)]
pub struct RejectRequest {
    /// Shown to the customer.
    #[oai(validator(min_length = 1, max_length = 2000))]
    pub reason: String,
}

/// What to do with many receipts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum BulkAction {
    Verify,
    Reject,
}

/// Verify or reject many receipts at once; each succeeds or fails on its own.
#[derive(Debug, Object)]
pub struct BulkReceiptsRequest {
    pub action: BulkAction,
    #[oai(validator(min_items = 1, max_items = 100, unique_items))]
    pub receipt_ids: Vec<Uuid>,
    /// Required to reject.
    #[oai(validator(min_length = 1, max_length = 2000))]
    pub reason: Option<String>,
}

/// Receipt status for filtering the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum ReceiptStatusFilter {
    Submitted,
    Verified,
    Rejected,
    Voided,
}

#[derive(ApiResponse)]
pub enum ReceiptUploaded {
    /// The receipt is submitted; the order awaits its verification. `possible_duplicate` says
    /// whether the same file was already used for another order.
    #[oai(status = 201)]
    Created(Json<ReceiptView>, #[oai(header = "Location")] String),
    /// The receipt is submitted, but the receipts read model did not show it in time (2 s by
    /// default): GET `Location` shortly (do not upload it again).
    #[oai(status = 202)]
    Pending(Json<PendingView>, #[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
pub enum ReceiptFile {
    /// The file as uploaded (its type is in the receipt's `media_type`).
    #[oai(status = 200)]
    File(
        Attachment<Vec<u8>>,
        #[oai(header = "X-Receipt-Media-Type")] String,
        #[oai(header = "X-Content-Type-Options")] String,
    ),
}

pub struct ReceiptsApi {
    pub app: Arc<App>,
}

fn receipt_not_found() -> ApiError {
    ApiError::not_found("receipt-not-found", "no such receipt")
}

impl ReceiptsApi {
    /// Proof of `P` on a receipt's store; other stores' receipts do not exist for the caller.
    async fn on_receipt<P: Grant>(
        &self,
        caller: &Caller,
        receipt_id: ReceiptId,
    ) -> Result<StoreAccess<P>, ApiError> {
        on_resource(
            &self.app,
            caller,
            Resource::Receipt(receipt_id),
            receipt_not_found,
        )
        .await
    }

    /// The receipt's view once the receipts and orders read models have reached `position`
    /// (`None`: not within the wait).
    async fn receipt_after(
        &self,
        receipt_id: ReceiptId,
        position: Option<i64>,
    ) -> Result<Option<ReceiptView>, ApiError> {
        let receipt = self
            .app
            .read_after(RECEIPT_READ_MODELS, position, || {
                receipts::receipt(&self.app.pool, receipt_id.0)
            })
            .await?;
        Ok(receipt.map(ReceiptView::from))
    }

    /// Applies `action` to one receipt, as the single-receipt endpoints do; the global
    /// position of the decision's last event.
    async fn decide(
        &self,
        caller: &Caller,
        receipt_id: ReceiptId,
        action: BulkAction,
        reason: Option<String>,
    ) -> Result<Option<i64>, ApiError> {
        let access = self
            .on_receipt::<grant::ReviewReceipts>(caller, receipt_id)
            .await?;
        let written = match action {
            BulkAction::Verify => self.app.verify_receipt(&access, receipt_id).await?,
            BulkAction::Reject => {
                let reason = reason.ok_or_else(|| {
                    ApiError::from(AppError::invalid("reason", "a rejection needs a reason"))
                })?;
                self.app.reject_receipt(&access, receipt_id, reason).await?
            }
        };
        Ok(written.position)
    }

    /// The answer to a decision on one receipt: its view once the read models show it.
    async fn decided(
        &self,
        caller: &Caller,
        receipt_id: ReceiptId,
        action: BulkAction,
        reason: Option<String>,
    ) -> Result<Changed<ReceiptView>, ApiError> {
        let position = self.decide(caller, receipt_id, action, reason).await?;
        Ok(Changed::of(
            self.receipt_after(receipt_id, position).await?,
            format!("/api/v1/receipts/{receipt_id}"),
            position,
        ))
    }
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Receipts")]
impl ReceiptsApi {
    /// Upload a payment receipt for an order awaiting payment (staff on a customer's behalf, or
    /// the customer themselves). At most 10 MiB by default; JPEG, PNG, WebP or PDF by content.
    #[oai(
        path = "/orders/:order_id/receipts",
        method = "post",
        operation_id = "receipts_upload"
    )]
    async fn upload(
        &self,
        req: &Request,
        auth: BearerAuth,
        order_id: Path<Uuid>,
        form: UploadReceiptForm,
    ) -> Result<ReceiptUploaded, ApiError> {
        let caller = caller(req, auth.0);
        let order_id = OrderId(order_id.0);
        if form.file.size() as u64 > self.app.max_receipt_bytes {
            return Err(AppError::FileTooLarge {
                max_bytes: self.app.max_receipt_bytes,
            }
            .into());
        }
        let claimed_currency = form
            .currency
            .as_deref()
            .map(|code| parse_currency(code, "currency"))
            .transpose()?;
        let content = form.file.into_vec().await.map_err(|e| {
            ApiError::bad_request("invalid-upload", format!("cannot read the file: {e}"))
        })?;
        let written = self
            .app
            .upload_receipt(
                &caller,
                ReceiptUpload {
                    order_id,
                    content: content.into(),
                    claimed_amount_minor: form.amount,
                    claimed_currency,
                },
            )
            .await?;
        let receipt_id = written.outcome;
        let location = format!("/api/v1/receipts/{receipt_id}");
        Ok(
            match self.receipt_after(receipt_id, written.position).await? {
                Some(view) => ReceiptUploaded::Created(Json(view), location),
                None => ReceiptUploaded::Pending(
                    Json(PendingView::new(location.clone(), written.position)),
                    location,
                ),
            },
        )
    }

    /// One receipt, with the order's total and the duplicate flag.
    #[oai(
        path = "/receipts/:receipt_id",
        method = "get",
        operation_id = "receipts_get"
    )]
    async fn get(
        &self,
        req: &Request,
        auth: BearerAuth,
        receipt_id: Path<Uuid>,
    ) -> Result<Json<ReceiptView>, ApiError> {
        let caller = caller(req, auth.0);
        let receipt_id = receipt_id.0;
        // A receipt uploaded a moment ago may not be in the read model yet: wait for it, briefly.
        let row = self
            .app
            .read_projected(
                &["receipts"],
                "PaymentReceipt",
                &receipt_id.to_string(),
                || receipts::receipt(&self.app.pool, receipt_id),
            )
            .await?
            .ok_or_else(receipt_not_found)?;
        self.app
            .authorize_visible::<grant::ViewReceipts>(&caller, StoreId(row.store_id))
            .await?
            .ok_or_else(receipt_not_found)?;
        Ok(Json(row.into()))
    }

    /// Download the receipt's file.
    #[oai(
        path = "/receipts/:receipt_id/file",
        method = "get",
        operation_id = "receipts_file"
    )]
    async fn file(
        &self,
        req: &Request,
        auth: BearerAuth,
        receipt_id: Path<Uuid>,
    ) -> Result<ReceiptFile, ApiError> {
        let caller = caller(req, auth.0);
        let receipt_id = ReceiptId(receipt_id.0);
        let access = self
            .on_receipt::<grant::ViewReceipts>(&caller, receipt_id)
            .await?;
        let (file, content) = self.app.receipt_file(&access, receipt_id).await?;
        let extension = match file.media_type.as_str() {
            "image/jpeg" => "jpg",
            "image/png" => "png",
            "image/webp" => "webp",
            "application/pdf" => "pdf",
            _ => "bin",
        };
        Ok(ReceiptFile::File(
            Attachment::new(content.to_vec())
                .attachment_type(AttachmentType::Attachment)
                .filename(format!("receipt-{receipt_id}.{extension}")),
            file.media_type.clone(),
            "nosniff".to_owned(),
        ))
    }

    /// Verify a receipt: the order is paid.
    #[oai(
        path = "/receipts/:receipt_id/verify",
        method = "post",
        operation_id = "receipts_verify"
    )]
    async fn verify(
        &self,
        req: &Request,
        auth: BearerAuth,
        receipt_id: Path<Uuid>,
    ) -> Result<Changed<ReceiptView>, ApiError> {
        let caller = caller(req, auth.0);
        self.decided(&caller, ReceiptId(receipt_id.0), BulkAction::Verify, None)
            .await
    }

    /// Reject a receipt with a reason: the order awaits payment again.
    #[oai(
        path = "/receipts/:receipt_id/reject",
        method = "post",
        operation_id = "receipts_reject"
    )]
    async fn reject(
        &self,
        req: &Request,
        auth: BearerAuth,
        receipt_id: Path<Uuid>,
        body: Json<RejectRequest>,
    ) -> Result<Changed<ReceiptView>, ApiError> {
        let caller = caller(req, auth.0);
        self.decided(
            &caller,
            ReceiptId(receipt_id.0),
            BulkAction::Reject,
            Some(body.0.reason),
        )
        .await
    }

    /// Verify or reject up to 100 receipts; each gets its own result (a refusal of one does
    /// not stop the others).
    #[oai(
        path = "/receipts/bulk",
        method = "post",
        operation_id = "receipts_bulk"
    )]
    async fn bulk(
        &self,
        req: &Request,
        auth: BearerAuth,
        body: Json<BulkReceiptsRequest>,
    ) -> Result<Json<BulkResponse>, ApiError> {
        let caller = caller(req, auth.0);
        let body = body.0;
        if body.action == BulkAction::Reject && body.reason.is_none() {
            return Err(AppError::invalid("reason", "a rejection needs a reason").into());
        }
        let mut results = Vec::with_capacity(body.receipt_ids.len());
        let mut last = None;
        for receipt_id in body.receipt_ids {
            let outcome = self
                .decide(
                    &caller,
                    ReceiptId(receipt_id),
                    body.action,
                    body.reason.clone(),
                )
                .await;
            last = outcome.as_ref().ok().copied().flatten().max(last);
            results.push((receipt_id, outcome.map(|_| ())));
        }
        // Answered once the queue shows the decisions (or after the wait, regardless).
        self.app.reached(RECEIPT_READ_MODELS, last).await?;
        Ok(Json(BulkResponse::of(results)))
    }

    /// The store's receipts: by default the verification queue (submitted, oldest first).
    #[oai(
        path = "/stores/:store_id/receipts",
        method = "get",
        operation_id = "receipts_list"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
        /// `submitted` (default: the queue), `verified`, `rejected` or `voided`.
        status: Query<Option<ReceiptStatusFilter>>,
        /// Only receipts flagged as possible duplicates.
        possible_duplicate: Query<Option<bool>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<u32>>,
    ) -> Result<Json<Page<ReceiptView>>, ApiError> {
        let caller = caller(req, auth.0);
        let access = self
            .app
            .authorize::<grant::ViewReceipts>(&caller, StoreId(store_id.0))
            .await?;
        let filter = ReceiptFilter {
            status: match status.0.unwrap_or(ReceiptStatusFilter::Submitted) {
                ReceiptStatusFilter::Submitted => "SUBMITTED",
                ReceiptStatusFilter::Verified => "VERIFIED",
                ReceiptStatusFilter::Rejected => "REJECTED",
                ReceiptStatusFilter::Voided => "VOIDED",
            },
            possible_duplicate: possible_duplicate.0,
        };
        let limit = page_size(limit.0);
        let after: Option<(DateTime<Utc>, Uuid)> =
            cursor.0.as_deref().map(decode_cursor).transpose()?;
        let rows = receipts::receipts(
            &self.app.pool,
            access.store_id().0,
            &filter,
            after,
            limit + 1,
        )
        .await
        .map_err(AppError::from)?;
        Ok(Json(page_of(
            rows,
            limit,
            |r| (r.submitted_at, r.receipt_id),
            ReceiptView::from,
        )))
    }
}

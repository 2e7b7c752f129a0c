//! Payment receipts: submitted by customers, verified or rejected by staff.
//!
//! The Order is the serialisation point: verifying first confirms payment on the order, then
//! marks the receipt verified; rejecting first sends the order back to awaiting payment. Two
//! staff deciding one receipt at once therefore cannot leave a paid order with a rejected
//! receipt: the second decision is refused by the order.

use aggregates::order::{OrderCommand, OrderError, OrderStatus};
use aggregates::receipt::{ReceiptCommand, ReceiptError, ReceiptFile, ReceiptStatus};
use aggregates::{AccountId, Money, OrderId, ReceiptId};

use bytes::Bytes;

use super::files::{StoredFile, RECEIPT_MEDIA_TYPES};
use super::{App, AppError, CommandContext};

/// A receipt to submit for an order (the file is already stored, content-addressed).
#[derive(Clone, Debug)]
pub struct SubmitReceipt {
    pub order_id: OrderId,
    pub file: ReceiptFile,
    pub claimed_amount: Option<Money>,
    pub submitted_by: AccountId,
}

/// A receipt file as a customer (or staff on their behalf) uploads it, not stored yet.
#[derive(Clone, Debug)]
pub struct ReceiptUpload {
    pub order_id: OrderId,
    pub content: Bytes,
    pub claimed_amount: Option<Money>,
    pub submitted_by: AccountId,
}

/// An earlier receipt with the same file, for another order.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct FileReuse {
    pub receipt_id: uuid::Uuid,
    pub order_id: uuid::Uuid,
    /// Whether that order is in the same store (only then are its ids shown to staff).
    pub same_store: bool,
}

/// What an upload produced.
#[derive(Clone, Debug)]
pub struct UploadedReceipt {
    pub receipt_id: ReceiptId,
    pub file: StoredFile,
    /// Earlier receipts with the same content for other orders: a possible duplicate.
    pub reused: Vec<FileReuse>,
}

impl App {
    /// Stores an uploaded receipt file (type judged from its content, content-addressed) and
    /// submits it for the order. Said whether the same file was used for other orders before,
    /// so a reused screenshot is flagged to the verifier (the receipts read model keeps the
    /// flag too).
    #[tracing::instrument(skip(self, ctx, upload), fields(order_id = %upload.order_id, bytes = upload.content.len()))]
    pub async fn upload_receipt(
        &self,
        ctx: &CommandContext,
        upload: ReceiptUpload,
    ) -> Result<UploadedReceipt, AppError> {
        if upload.content.len() as u64 > self.max_receipt_bytes {
            return Err(AppError::FileTooLarge {
                max_bytes: self.max_receipt_bytes,
            });
        }
        if upload.content.is_empty() {
            return Err(AppError::invalid("file", "the file is empty"));
        }
        let file = self
            .files
            .store(upload.content, &RECEIPT_MEDIA_TYPES)
            .await?;
        let receipt_id = self
            .submit_receipt(
                ctx,
                SubmitReceipt {
                    order_id: upload.order_id,
                    file: ReceiptFile {
                        storage_key: file.storage_key.clone(),
                        sha256: file.sha256.clone(),
                        size_bytes: file.size_bytes,
                        media_type: file.media_type.clone(),
                    },
                    claimed_amount: upload.claimed_amount,
                    submitted_by: upload.submitted_by,
                },
            )
            .await?;
        let order = self.orders.load(&upload.order_id.to_string()).await?;
        let reused = sqlx::query_as(
            "select receipt_id, order_id, store_id = $3 as same_store from receipts \
             where sha256 = $1 and order_id <> $2 order by submitted_at",
        )
        .bind(&file.sha256)
        .bind(upload.order_id.0)
        .bind(order.store_id.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(UploadedReceipt {
            receipt_id,
            file,
            reused,
        })
    }

    /// Submits a receipt; refused unless the order is awaiting payment.
    #[tracing::instrument(skip(self, ctx, receipt), fields(order_id = %receipt.order_id))]
    pub async fn submit_receipt(
        &self,
        ctx: &CommandContext,
        receipt: SubmitReceipt,
    ) -> Result<ReceiptId, AppError> {
        let order = self.orders.load(&receipt.order_id.to_string()).await?;
        let currency = order
            .currency
            .ok_or(AppError::Order(aggregates::order::OrderError::NotFound))?;
        let receipt_id = ReceiptId::new();
        let at = super::now();
        let submit = ReceiptCommand::Submit {
            receipt_id,
            order_id: receipt.order_id,
            store_id: order.store_id,
            file: receipt.file,
            claimed_amount: receipt.claimed_amount,
            order_currency: currency,
            order_payable: order.status.accepts_receipt(),
            submitted_by: receipt.submitted_by,
            channel: ctx.channel,
            at,
        };
        self.receipts
            .execute(&receipt_id.to_string(), submit, ctx)
            .await?;
        let record = OrderCommand::RecordReceiptSubmitted { receipt_id, at };
        match self
            .orders
            .execute(&receipt.order_id.to_string(), record, ctx)
            .await
        {
            Ok(()) => Ok(receipt_id),
            // The order stopped accepting receipts between our check and now: the receipt is
            // closed at once, so it never waits in the verification queue.
            Err(AppError::Order(refusal)) => {
                let reject = ReceiptCommand::Reject {
                    rejected_by: AccountId::default(),
                    reason: format!("the order no longer accepts a receipt: {refusal}"),
                    at,
                };
                if let Err(err) = self
                    .receipts
                    .execute(&receipt_id.to_string(), reject, ctx)
                    .await
                {
                    tracing::warn!(%receipt_id, error = %err, "closing a receipt the order refused failed");
                }
                Err(AppError::Order(refusal))
            }
            // Infrastructure failure: the receipt stays submitted; verifying it still pays the
            // order (ConfirmPayment accepts an order still awaiting payment).
            Err(err) => Err(err),
        }
    }

    /// Verifies a receipt: the order is paid.
    #[tracing::instrument(skip(self, ctx))]
    pub async fn verify_receipt(
        &self,
        ctx: &CommandContext,
        receipt_id: ReceiptId,
    ) -> Result<(), AppError> {
        let receipt = self.receipts.load(&receipt_id.to_string()).await?;
        if !receipt.is_created() {
            return Err(ReceiptError::NotFound.into());
        }
        if let Some(status) = receipt.status().filter(|s| *s != ReceiptStatus::Submitted) {
            return Err(ReceiptError::AlreadyDecided { status }.into());
        }
        let at = super::now();
        let order_key = receipt.order_id().to_string();
        let order = self.orders.load(&order_key).await?;
        // A retry after stopping between the two steps finds the order already paid with this
        // receipt: only the receipt is left to mark.
        if order.paid_with != Some(receipt_id) {
            let confirm = OrderCommand::ConfirmPayment { receipt_id, at };
            self.orders.execute(&order_key, confirm, ctx).await?;
        }
        let verify = ReceiptCommand::Verify {
            verified_by: ctx.actor.account_id.unwrap_or_default(),
            at,
        };
        self.receipts
            .execute(&receipt_id.to_string(), verify, ctx)
            .await
    }

    /// Rejects a receipt with a reason: the order awaits payment again.
    #[tracing::instrument(skip(self, ctx, reason))]
    pub async fn reject_receipt(
        &self,
        ctx: &CommandContext,
        receipt_id: ReceiptId,
        reason: String,
    ) -> Result<(), AppError> {
        let receipt = self.receipts.load(&receipt_id.to_string()).await?;
        if !receipt.is_created() {
            return Err(ReceiptError::NotFound.into());
        }
        let order_key = receipt.order_id().to_string();
        let order = self.orders.load(&order_key).await?;
        let at = super::now();
        match order.status {
            // Under review: the order goes back to awaiting payment, with the reason.
            OrderStatus::ReceiptSubmitted if order.receipt_under_review == Some(receipt_id) => {
                let record = OrderCommand::RecordReceiptRejected {
                    receipt_id,
                    reason: reason.clone(),
                    at,
                };
                self.orders.execute(&order_key, record, ctx).await?;
            }
            // Paid (by this or another receipt): a rejection now would contradict the payment.
            OrderStatus::Paid | OrderStatus::Fulfilled | OrderStatus::Completed => {
                return Err(OrderError::InvalidTransition {
                    action: "reject a receipt of",
                    status: order.status,
                }
                .into());
            }
            // Never recorded on the order (the process stopped between the two steps), or the
            // order has ended: only the receipt is closed.
            _ => {}
        }
        let reject = ReceiptCommand::Reject {
            rejected_by: ctx.actor.account_id.unwrap_or_default(),
            reason,
            at,
        };
        self.receipts
            .execute(&receipt_id.to_string(), reject, ctx)
            .await
    }
}

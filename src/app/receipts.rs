//! Payment receipts: submitted by customers, verified or rejected by staff.
//!
//! The Order is the serialisation point: verifying first confirms payment on the order, then
//! marks the receipt verified; rejecting first sends the order back to awaiting payment. Two
//! staff deciding one receipt at once therefore cannot leave a paid order with a rejected
//! receipt: the second decision is refused by the order.

use aggregates::order::{OrderCommand, OrderError, OrderStatus};
use aggregates::receipt::{ReceiptCommand, ReceiptError, ReceiptFile, ReceiptStatus};
use aggregates::{AccountId, Money, OrderId, ReceiptId};

use super::{App, AppError, CommandContext};

/// A receipt to submit for an order (the file is already stored, content-addressed).
#[derive(Clone, Debug)]
pub struct SubmitReceipt {
    pub order_id: OrderId,
    pub file: ReceiptFile,
    pub claimed_amount: Option<Money>,
    pub submitted_by: AccountId,
}

impl App {
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

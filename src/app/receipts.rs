//! Payment receipts: submitted by customers, verified or rejected by staff.
//!
//! A receipt and its order always change together, in one commit
//! (docs/adr/0005-one-decision-one-transaction.md): submitting records the receipt and puts the
//! order under review; verifying marks the receipt verified and the order paid; rejecting marks
//! the receipt rejected and sends the order back to awaiting payment. So an order is paid
//! exactly when the receipt that paid it is verified, however staff race.

use aggregates::order::{Order, OrderCommand, OrderError};
use aggregates::receipt::{PaymentReceipt, ReceiptCommand, ReceiptError, ReceiptFile};
use aggregates::{AccountId, ActorRole, Currency, Money, OrderId, ReceiptId, StoreId};
use chrono::{DateTime, Utc};

use bytes::Bytes;

use super::authz::{grant, StoreAccess};
use super::event_store::{Decided, Decision, Stored, UnitOfWork};
use super::files::RECEIPT_MEDIA_TYPES;
use super::{App, AppError, Caller, CommandContext};

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
    /// The amount the customer says they paid, in minor units.
    pub claimed_amount_minor: Option<i64>,
    /// Its currency; the order's when not given.
    pub claimed_currency: Option<Currency>,
}

impl App {
    /// Stores an uploaded receipt file (type judged from its content, content-addressed) and
    /// submits it for the order: a customer for their own order, signed in themselves, or staff
    /// whose role allows `SubmitReceipts` in the order's store (an API token always takes the
    /// staff path: it acts only within its stores and role). Anyone else is told the order does
    /// not exist. Whether the same file was used for other orders before (a reused screenshot)
    /// is the receipts read model's to say: it flags the receipt for the verifier.
    #[tracing::instrument(skip(self, caller, upload), fields(order_id = %upload.order_id, bytes = upload.content.len()))]
    pub async fn upload_receipt(
        &self,
        caller: &Caller,
        upload: ReceiptUpload,
    ) -> Result<Decided<ReceiptId>, AppError> {
        let order = self.orders.load(&upload.order_id.to_string()).await?;
        let currency = order.currency.ok_or(OrderError::NotFound)?;
        let own_order =
            order.customer_id == caller.account_id() && caller.principal().token_scope().is_none();
        let ctx = if own_order {
            caller.context(ActorRole::Customer)
        } else {
            match self
                .authorize_visible::<grant::SubmitReceipts>(caller, order.store_id)
                .await?
            {
                Some(access) => access.ctx().clone(),
                None => return Err(OrderError::NotFound.into()),
            }
        };
        if upload.content.len() as u64 > self.max_receipt_bytes {
            return Err(AppError::FileTooLarge {
                max_bytes: self.max_receipt_bytes,
            });
        }
        if upload.content.is_empty() {
            return Err(AppError::invalid("file", "the file is empty"));
        }
        let claimed_amount = upload
            .claimed_amount_minor
            .map(|amount| Money::new(amount, upload.claimed_currency.unwrap_or(currency)));
        let file = self
            .files
            .store(upload.content, &RECEIPT_MEDIA_TYPES)
            .await?;
        self.submit_receipt(
            &ctx,
            SubmitReceipt {
                order_id: upload.order_id,
                file: ReceiptFile {
                    storage_key: file.storage_key.clone(),
                    sha256: file.sha256.clone(),
                    size_bytes: file.size_bytes,
                    media_type: file.media_type.clone(),
                },
                claimed_amount,
                submitted_by: caller.account_id(),
            },
        )
        .await
    }

    /// A receipt's file (its description and content), for staff who may view the store's
    /// receipts.
    pub async fn receipt_file(
        &self,
        access: &StoreAccess<grant::ViewReceipts>,
        receipt_id: ReceiptId,
    ) -> Result<(ReceiptFile, Bytes), AppError> {
        let receipt = self.receipts.load(&receipt_id.to_string()).await?;
        if receipt.store_of() != Some(access.store_id()) {
            return Err(ReceiptError::NotFound.into());
        }
        let file = receipt.file.ok_or(ReceiptError::NotFound)?;
        // The file of an erased person's receipt is not served, even where the same bytes are
        // kept for someone else's receipt (erasure deletes it otherwise).
        let customer = self
            .orders
            .load(&receipt.order_id.to_string())
            .await?
            .customer_id;
        let owners: Vec<AccountId> = receipt.submitted_by.into_iter().chain([customer]).collect();
        let keys = self.personal_data.keys(&owners).await?;
        if owners.iter().any(|owner| keys.is_erased(*owner)) {
            return Err(AppError::FileErased);
        }
        let content = self.files.load(&file.storage_key).await?;
        Ok((file, content))
    }

    /// Submits a receipt: it is recorded and its order is put under review in one commit, or
    /// neither happens (refused unless the order is awaiting payment).
    #[tracing::instrument(skip(self, ctx, receipt), fields(order_id = %receipt.order_id))]
    pub(crate) async fn submit_receipt(
        &self,
        ctx: &CommandContext,
        receipt: SubmitReceipt,
    ) -> Result<Decided<ReceiptId>, AppError> {
        let submission = Submission {
            receipt_id: ReceiptId::new(),
            receipt,
            channel: ctx.channel(),
            at: super::now(),
        };
        let decided = self.events.decide(ctx, &submission).await?;
        Ok(decided.map(|()| submission.receipt_id))
    }

    /// Verifies a receipt of the store: the receipt is verified and its order paid, in one
    /// commit.
    #[tracing::instrument(skip(self, access))]
    pub async fn verify_receipt(
        &self,
        access: &StoreAccess<grant::ReviewReceipts>,
        receipt_id: ReceiptId,
    ) -> Result<Decided<()>, AppError> {
        let decision = ReceiptDecision {
            store_id: access.store_id(),
            receipt_id,
            verdict: Verdict::Verify,
            by: access.account_id(),
            at: super::now(),
        };
        self.events.decide(access.ctx(), &decision).await
    }

    /// Rejects a receipt of the store with a reason: the receipt is rejected and its order
    /// awaits payment again, in one commit.
    #[tracing::instrument(skip(self, access, reason))]
    pub async fn reject_receipt(
        &self,
        access: &StoreAccess<grant::ReviewReceipts>,
        receipt_id: ReceiptId,
        reason: String,
    ) -> Result<Decided<()>, AppError> {
        let decision = ReceiptDecision {
            store_id: access.store_id(),
            receipt_id,
            verdict: Verdict::Reject(reason),
            by: access.account_id(),
            at: super::now(),
        };
        self.events.decide(access.ctx(), &decision).await
    }
}

/// A new receipt and its order's move to review.
struct Submission {
    receipt_id: ReceiptId,
    receipt: SubmitReceipt,
    channel: aggregates::Channel,
    at: DateTime<Utc>,
}

impl Decision for Submission {
    type Outcome = ();

    async fn decide(&self, uow: &mut UnitOfWork<'_>) -> Result<(), AppError> {
        let mut order = uow.load::<Order>(self.receipt.order_id).await?;
        let currency = order.currency.ok_or(OrderError::NotFound)?;
        let mut receipt = uow.create::<PaymentReceipt>(self.receipt_id);
        let submit = ReceiptCommand::Submit {
            receipt_id: self.receipt_id,
            order_id: self.receipt.order_id,
            store_id: order.store_id,
            file: self.receipt.file.clone(),
            claimed_amount: self.receipt.claimed_amount,
            order_currency: currency,
            order_payable: order.status.accepts_receipt(),
            submitted_by: self.receipt.submitted_by,
            channel: self.channel,
            at: self.at,
        };
        uow.execute(&mut receipt, submit).await?;
        let record = OrderCommand::RecordReceiptSubmitted {
            receipt_id: self.receipt_id,
            at: self.at,
        };
        uow.execute(&mut order, record).await
    }
}

/// What staff decided about a receipt.
enum Verdict {
    Verify,
    Reject(String),
}

/// A receipt's verdict and its order's transition. Two staff deciding one receipt at once
/// both load it undecided, but only the first commit lands: the second finds the receipt's
/// (and the order's) sequence taken, decides again on fresh state and is refused
/// (`AlreadyDecided`).
struct ReceiptDecision {
    store_id: StoreId,
    receipt_id: ReceiptId,
    verdict: Verdict,
    by: AccountId,
    at: DateTime<Utc>,
}

impl Decision for ReceiptDecision {
    type Outcome = ();

    async fn decide(&self, uow: &mut UnitOfWork<'_>) -> Result<(), AppError> {
        let mut receipt = uow
            .load_in::<PaymentReceipt>(self.store_id, self.receipt_id)
            .await?;
        let mut order = uow.load::<Order>(receipt.order_id()).await?;
        let (on_receipt, on_order) = match &self.verdict {
            Verdict::Verify => (
                ReceiptCommand::Verify {
                    verified_by: self.by,
                    at: self.at,
                },
                OrderCommand::ConfirmPayment {
                    receipt_id: self.receipt_id,
                    at: self.at,
                },
            ),
            Verdict::Reject(reason) => (
                ReceiptCommand::Reject {
                    rejected_by: self.by,
                    reason: reason.clone(),
                    at: self.at,
                },
                OrderCommand::RecordReceiptRejected {
                    receipt_id: self.receipt_id,
                    reason: reason.clone(),
                    at: self.at,
                },
            ),
        };
        uow.execute(&mut receipt, on_receipt).await?;
        uow.execute(&mut order, on_order).await
    }
}

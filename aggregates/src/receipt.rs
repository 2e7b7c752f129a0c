//! The `PaymentReceipt` aggregate: a customer's proof of a bank transfer for one order.
//!
//! Invariants guarded here:
//! - a receipt is submitted once, only for an order that accepts a receipt now (the application
//!   layer loads the order and passes `order_payable`);
//! - its file is an accepted image or PDF (`image/jpeg`, `image/png`, `image/webp`,
//!   `application/pdf`) of 1 byte to 50 MiB, with a storage key and a SHA-256 digest
//!   (stored as 64 lowercase hex characters);
//! - a claimed amount, when given, is positive and in the order's currency;
//! - a receipt is decided (verified or rejected) exactly once, and a rejection has a reason;
//! - a receipt still waiting when its order is cancelled or expires is voided (it can no
//!   longer pay anything), and a voided receipt cannot be decided.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::values::{
    non_empty_text, AccountId, Channel, Currency, Money, OrderId, ReceiptId, StoreId, MAX_TEXT_LEN,
};

/// Largest accepted receipt file, in bytes (50 MiB).
pub const MAX_RECEIPT_FILE_BYTES: u64 = 52_428_800;
/// Longest accepted storage key, in characters.
pub const MAX_STORAGE_KEY_LEN: usize = 1024;
/// Media types a receipt file may have.
pub const ACCEPTED_MEDIA_TYPES: [&str; 4] =
    ["image/jpeg", "image/png", "image/webp", "application/pdf"];

/// Where a receipt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReceiptStatus {
    Submitted,
    Verified,
    Rejected,
    /// Its order ended (cancelled or expired) before anyone decided it.
    Voided,
}

impl std::fmt::Display for ReceiptStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReceiptStatus::Submitted => "submitted",
            ReceiptStatus::Verified => "verified",
            ReceiptStatus::Rejected => "rejected",
            ReceiptStatus::Voided => "voided",
        })
    }
}

/// Why a receipt was voided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoidReason {
    OrderCancelled,
    OrderExpired,
}

impl VoidReason {
    /// The stable name used in events, read models and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            VoidReason::OrderCancelled => "order_cancelled",
            VoidReason::OrderExpired => "order_expired",
        }
    }
}

/// The uploaded file, already stored by the application layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptFile {
    /// Where the file content lives in blob storage.
    pub storage_key: String,
    /// SHA-256 of the content, 64 lowercase hex characters.
    pub sha256: String,
    pub size_bytes: u64,
    /// e.g. `image/jpeg`.
    pub media_type: String,
}

/// State of one receipt, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PaymentReceipt {
    pub receipt_id: ReceiptId,
    pub order_id: OrderId,
    pub store_id: StoreId,
    /// `None` only before submission.
    pub status: Option<ReceiptStatus>,
    pub file: Option<ReceiptFile>,
    pub claimed_amount: Option<Money>,
    pub submitted_by: Option<AccountId>,
    pub channel: Option<Channel>,
    pub submitted_at: Option<DateTime<Utc>>,
    /// Who verified or rejected the receipt.
    pub decided_by: Option<AccountId>,
    pub decided_at: Option<DateTime<Utc>>,
    pub rejection_reason: Option<String>,
    /// Why it was voided, if it was.
    #[serde(default)]
    pub void_reason: Option<VoidReason>,
}

impl PaymentReceipt {
    /// Whether `Submit` has happened.
    pub fn is_created(&self) -> bool {
        self.status.is_some()
    }

    /// The receipt's status (`None` before submission).
    pub fn status(&self) -> Option<ReceiptStatus> {
        self.status
    }

    pub fn order_id(&self) -> OrderId {
        self.order_id
    }

    pub fn store_id(&self) -> StoreId {
        self.store_id
    }
}

/// What can be asked of a receipt.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiptCommand {
    Submit {
        receipt_id: ReceiptId,
        order_id: OrderId,
        store_id: StoreId,
        file: ReceiptFile,
        /// The amount the customer says they transferred, if they said.
        claimed_amount: Option<Money>,
        /// The order's currency, loaded by the application layer.
        order_currency: Currency,
        /// Whether the order accepts a receipt now, decided by the application layer.
        order_payable: bool,
        submitted_by: AccountId,
        channel: Channel,
        at: DateTime<Utc>,
    },
    Verify {
        verified_by: AccountId,
        at: DateTime<Utc>,
    },
    Reject {
        rejected_by: AccountId,
        reason: String,
        at: DateTime<Utc>,
    },
    /// The order ended while this receipt waited for review (decided by the application
    /// layer in the same commit as the order's end).
    Void {
        reason: VoidReason,
        at: DateTime<Utc>,
    },
}

/// What happened to a receipt.
/// Stored as `{"VariantName": {...}}`; the variant name is the event type (`strum`
/// derives it, so the two cannot drift apart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum ReceiptEvent {
    PaymentReceiptSubmitted {
        receipt_id: ReceiptId,
        order_id: OrderId,
        store_id: StoreId,
        file: ReceiptFile,
        claimed_amount: Option<Money>,
        submitted_by: AccountId,
        channel: Channel,
        submitted_at: DateTime<Utc>,
    },
    PaymentReceiptVerified {
        order_id: OrderId,
        verified_by: AccountId,
        verified_at: DateTime<Utc>,
    },
    PaymentReceiptRejected {
        order_id: OrderId,
        rejected_by: AccountId,
        reason: String,
        rejected_at: DateTime<Utc>,
    },
    PaymentReceiptVoided {
        order_id: OrderId,
        reason: VoidReason,
        voided_at: DateTime<Utc>,
    },
}

/// Why a receipt command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("payment receipt not found")]
    NotFound,
    #[error("the payment receipt already exists")]
    AlreadyExists,
    #[error("the order does not accept a payment receipt now")]
    OrderNotPayable,
    #[error(
        "the receipt file is invalid: it must be 1 byte to 50 MiB, have a storage key and a \
         SHA-256 digest of 64 hexadecimal characters"
    )]
    InvalidFile,
    #[error("'{0}' files are not accepted; send a JPEG, PNG or WebP image or a PDF")]
    UnsupportedMediaType(String),
    #[error("the claimed amount must be in {expected}, not {got}")]
    CurrencyMismatch { expected: Currency, got: Currency },
    #[error("the claimed amount must be greater than zero")]
    InvalidAmount,
    #[error("a rejection reason of 1 to 2000 characters is required")]
    ReasonRequired,
    #[error("the payment receipt has already been {status}")]
    AlreadyDecided { status: ReceiptStatus },
}

/// Checks the file and returns it normalised (trimmed key, lowercase digest and media type).
fn valid_file(file: ReceiptFile) -> Result<ReceiptFile, ReceiptError> {
    let media_type = file.media_type.trim().to_ascii_lowercase();
    if !ACCEPTED_MEDIA_TYPES.contains(&media_type.as_str()) {
        return Err(ReceiptError::UnsupportedMediaType(file.media_type));
    }
    let storage_key =
        non_empty_text(&file.storage_key, MAX_STORAGE_KEY_LEN).ok_or(ReceiptError::InvalidFile)?;
    let sha256 = file.sha256.trim().to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ReceiptError::InvalidFile);
    }
    if file.size_bytes == 0 || file.size_bytes > MAX_RECEIPT_FILE_BYTES {
        return Err(ReceiptError::InvalidFile);
    }
    Ok(ReceiptFile {
        storage_key,
        sha256,
        size_bytes: file.size_bytes,
        media_type,
    })
}

impl PaymentReceipt {
    /// The order id if the receipt can still be decided.
    fn undecided_order(&self) -> Result<OrderId, ReceiptError> {
        match self.status {
            None => Err(ReceiptError::NotFound),
            Some(ReceiptStatus::Submitted) => Ok(self.order_id),
            Some(status) => Err(ReceiptError::AlreadyDecided { status }),
        }
    }
}

impl Aggregate for PaymentReceipt {
    const TYPE: &'static str = "PaymentReceipt";
    type Command = ReceiptCommand;
    type Event = ReceiptEvent;
    type Error = ReceiptError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            ReceiptCommand::Submit {
                receipt_id,
                order_id,
                store_id,
                file,
                claimed_amount,
                order_currency,
                order_payable,
                submitted_by,
                channel,
                at,
            } => {
                if self.is_created() {
                    return Err(ReceiptError::AlreadyExists);
                }
                if !order_payable {
                    return Err(ReceiptError::OrderNotPayable);
                }
                let file = valid_file(file)?;
                if let Some(claimed) = claimed_amount {
                    if claimed.currency != order_currency {
                        return Err(ReceiptError::CurrencyMismatch {
                            expected: order_currency,
                            got: claimed.currency,
                        });
                    }
                    if claimed.amount_minor <= 0 {
                        return Err(ReceiptError::InvalidAmount);
                    }
                }
                let event = ReceiptEvent::PaymentReceiptSubmitted {
                    receipt_id,
                    order_id,
                    store_id,
                    file,
                    claimed_amount,
                    submitted_by,
                    channel,
                    submitted_at: at,
                };
                sink.write(event, self).await;
            }
            ReceiptCommand::Verify { verified_by, at } => {
                let order_id = self.undecided_order()?;
                let event = ReceiptEvent::PaymentReceiptVerified {
                    order_id,
                    verified_by,
                    verified_at: at,
                };
                sink.write(event, self).await;
            }
            ReceiptCommand::Reject {
                rejected_by,
                reason,
                at,
            } => {
                let order_id = self.undecided_order()?;
                let reason =
                    non_empty_text(&reason, MAX_TEXT_LEN).ok_or(ReceiptError::ReasonRequired)?;
                let event = ReceiptEvent::PaymentReceiptRejected {
                    order_id,
                    rejected_by,
                    reason,
                    rejected_at: at,
                };
                sink.write(event, self).await;
            }
            ReceiptCommand::Void { reason, at } => {
                let order_id = self.undecided_order()?;
                let event = ReceiptEvent::PaymentReceiptVoided {
                    order_id,
                    reason,
                    voided_at: at,
                };
                sink.write(event, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ReceiptEvent::PaymentReceiptSubmitted {
                receipt_id,
                order_id,
                store_id,
                file,
                claimed_amount,
                submitted_by,
                channel,
                submitted_at,
            } => {
                self.receipt_id = receipt_id;
                self.order_id = order_id;
                self.store_id = store_id;
                self.status = Some(ReceiptStatus::Submitted);
                self.file = Some(file);
                self.claimed_amount = claimed_amount;
                self.submitted_by = Some(submitted_by);
                self.channel = Some(channel);
                self.submitted_at = Some(submitted_at);
            }
            ReceiptEvent::PaymentReceiptVerified {
                verified_by,
                verified_at,
                ..
            } => {
                self.status = Some(ReceiptStatus::Verified);
                self.decided_by = Some(verified_by);
                self.decided_at = Some(verified_at);
            }
            ReceiptEvent::PaymentReceiptRejected {
                rejected_by,
                reason,
                rejected_at,
                ..
            } => {
                self.status = Some(ReceiptStatus::Rejected);
                self.decided_by = Some(rejected_by);
                self.decided_at = Some(rejected_at);
                self.rejection_reason = Some(reason);
            }
            ReceiptEvent::PaymentReceiptVoided {
                reason, voided_at, ..
            } => {
                self.status = Some(ReceiptStatus::Voided);
                self.decided_at = Some(voided_at);
                self.void_reason = Some(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;
    use cqrs_es::DomainEvent as _;
    use uuid::Uuid;

    type ReceiptTest = TestFramework<PaymentReceipt>;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    fn receipt_id() -> ReceiptId {
        ReceiptId(Uuid::from_u128(3))
    }

    fn order_id() -> OrderId {
        OrderId(Uuid::from_u128(4))
    }

    fn store_id() -> StoreId {
        StoreId(Uuid::from_u128(1))
    }

    fn customer() -> AccountId {
        AccountId(Uuid::from_u128(20))
    }

    fn vendor() -> AccountId {
        AccountId(Uuid::from_u128(21))
    }

    fn rub() -> Currency {
        "RUB".parse().unwrap()
    }

    fn digest() -> String {
        "ab".repeat(32)
    }

    fn file() -> ReceiptFile {
        ReceiptFile {
            storage_key: "receipts/3.jpg".into(),
            sha256: digest(),
            size_bytes: 120_000,
            media_type: "image/jpeg".into(),
        }
    }

    fn submit_with(
        edit: impl FnOnce(&mut ReceiptFile, &mut Option<Money>, &mut bool),
    ) -> ReceiptCommand {
        let mut file = file();
        let mut claimed = Some(Money::new(90_000, rub()));
        let mut payable = true;
        edit(&mut file, &mut claimed, &mut payable);
        ReceiptCommand::Submit {
            receipt_id: receipt_id(),
            order_id: order_id(),
            store_id: store_id(),
            file,
            claimed_amount: claimed,
            order_currency: rub(),
            order_payable: payable,
            submitted_by: customer(),
            channel: Channel::Telegram,
            at: at(),
        }
    }

    fn submit() -> ReceiptCommand {
        submit_with(|_, _, _| {})
    }

    fn submitted_with(claimed_amount: Option<Money>) -> ReceiptEvent {
        ReceiptEvent::PaymentReceiptSubmitted {
            receipt_id: receipt_id(),
            order_id: order_id(),
            store_id: store_id(),
            file: file(),
            claimed_amount,
            submitted_by: customer(),
            channel: Channel::Telegram,
            submitted_at: at(),
        }
    }

    fn submitted() -> ReceiptEvent {
        submitted_with(Some(Money::new(90_000, rub())))
    }

    fn verified() -> ReceiptEvent {
        ReceiptEvent::PaymentReceiptVerified {
            order_id: order_id(),
            verified_by: vendor(),
            verified_at: at(),
        }
    }

    fn rejected() -> ReceiptEvent {
        ReceiptEvent::PaymentReceiptRejected {
            order_id: order_id(),
            rejected_by: vendor(),
            reason: "amount does not match".into(),
            rejected_at: at(),
        }
    }

    fn verify() -> ReceiptCommand {
        ReceiptCommand::Verify {
            verified_by: vendor(),
            at: at(),
        }
    }

    fn reject(reason: &str) -> ReceiptCommand {
        ReceiptCommand::Reject {
            rejected_by: vendor(),
            reason: reason.into(),
            at: at(),
        }
    }

    #[test]
    fn submitting_a_receipt_records_it() {
        ReceiptTest::with(())
            .given_no_previous_events()
            .when(submit())
            .then_expect_events(vec![submitted()]);
    }

    #[test]
    fn submitting_a_receipt_without_a_claimed_amount_records_it() {
        ReceiptTest::with(())
            .given_no_previous_events()
            .when(submit_with(|_, claimed, _| *claimed = None))
            .then_expect_events(vec![submitted_with(None)]);
    }

    #[test]
    fn submitting_a_receipt_normalises_the_digest_and_media_type() {
        ReceiptTest::with(())
            .given_no_previous_events()
            .when(submit_with(|file, _, _| {
                file.sha256 = "AB".repeat(32);
                file.media_type = " Image/JPEG ".into();
            }))
            .then_expect_events(vec![submitted()]);
    }

    #[test]
    fn every_accepted_media_type_is_accepted() {
        for media_type in ACCEPTED_MEDIA_TYPES {
            let result = ReceiptTest::with(())
                .given_no_previous_events()
                .when(submit_with(|file, _, _| {
                    file.media_type = media_type.into()
                }))
                .inspect_result();
            assert!(result.is_ok(), "{media_type} was refused");
        }
    }

    #[test]
    fn submitting_a_receipt_twice_is_refused() {
        ReceiptTest::with(())
            .given(vec![submitted()])
            .when(submit())
            .then_expect_error(ReceiptError::AlreadyExists);
    }

    #[test]
    fn submitting_a_receipt_for_an_order_that_is_not_payable_is_refused() {
        ReceiptTest::with(())
            .given_no_previous_events()
            .when(submit_with(|_, _, payable| *payable = false))
            .then_expect_error(ReceiptError::OrderNotPayable);
    }

    #[test]
    fn submitting_a_receipt_of_an_unsupported_media_type_is_refused() {
        ReceiptTest::with(())
            .given_no_previous_events()
            .when(submit_with(|file, _, _| {
                file.media_type = "image/gif".into()
            }))
            .then_expect_error(ReceiptError::UnsupportedMediaType("image/gif".into()));
    }

    #[test]
    fn submitting_an_empty_file_is_refused() {
        ReceiptTest::with(())
            .given_no_previous_events()
            .when(submit_with(|file, _, _| file.size_bytes = 0))
            .then_expect_error(ReceiptError::InvalidFile);
    }

    #[test]
    fn submitting_a_file_over_50_mib_is_refused() {
        ReceiptTest::with(())
            .given_no_previous_events()
            .when(submit_with(|file, _, _| {
                file.size_bytes = MAX_RECEIPT_FILE_BYTES + 1
            }))
            .then_expect_error(ReceiptError::InvalidFile);
    }

    #[test]
    fn submitting_a_file_of_exactly_50_mib_is_accepted() {
        let result = ReceiptTest::with(())
            .given_no_previous_events()
            .when(submit_with(|file, _, _| {
                file.size_bytes = MAX_RECEIPT_FILE_BYTES
            }))
            .inspect_result();
        assert!(result.is_ok());
    }

    #[test]
    fn submitting_a_file_with_a_malformed_digest_is_refused() {
        for sha256 in ["ab".repeat(31), "zz".repeat(32), "ab".repeat(33)] {
            ReceiptTest::with(())
                .given_no_previous_events()
                .when(submit_with(|file, _, _| file.sha256 = sha256))
                .then_expect_error(ReceiptError::InvalidFile);
        }
    }

    #[test]
    fn submitting_a_file_without_a_storage_key_is_refused() {
        ReceiptTest::with(())
            .given_no_previous_events()
            .when(submit_with(|file, _, _| file.storage_key = " ".into()))
            .then_expect_error(ReceiptError::InvalidFile);
    }

    #[test]
    fn submitting_a_claimed_amount_in_another_currency_is_refused() {
        let usd: Currency = "USD".parse().unwrap();
        ReceiptTest::with(())
            .given_no_previous_events()
            .when(submit_with(|_, claimed, _| {
                *claimed = Some(Money::new(1_000, usd))
            }))
            .then_expect_error(ReceiptError::CurrencyMismatch {
                expected: rub(),
                got: usd,
            });
    }

    #[test]
    fn submitting_a_zero_claimed_amount_is_refused() {
        ReceiptTest::with(())
            .given_no_previous_events()
            .when(submit_with(|_, claimed, _| {
                *claimed = Some(Money::new(0, rub()))
            }))
            .then_expect_error(ReceiptError::InvalidAmount);
    }

    #[test]
    fn verifying_a_submitted_receipt_records_it_with_its_order() {
        ReceiptTest::with(())
            .given(vec![submitted()])
            .when(verify())
            .then_expect_events(vec![verified()]);
    }

    #[test]
    fn verifying_a_missing_receipt_is_refused() {
        ReceiptTest::with(())
            .given_no_previous_events()
            .when(verify())
            .then_expect_error(ReceiptError::NotFound);
    }

    #[test]
    fn verifying_a_verified_receipt_is_refused() {
        ReceiptTest::with(())
            .given(vec![submitted(), verified()])
            .when(verify())
            .then_expect_error(ReceiptError::AlreadyDecided {
                status: ReceiptStatus::Verified,
            });
    }

    #[test]
    fn verifying_a_rejected_receipt_is_refused() {
        ReceiptTest::with(())
            .given(vec![submitted(), rejected()])
            .when(verify())
            .then_expect_error(ReceiptError::AlreadyDecided {
                status: ReceiptStatus::Rejected,
            });
    }

    #[test]
    fn rejecting_a_submitted_receipt_records_the_trimmed_reason() {
        ReceiptTest::with(())
            .given(vec![submitted()])
            .when(reject("  amount does not match "))
            .then_expect_events(vec![rejected()]);
    }

    #[test]
    fn rejecting_without_a_reason_is_refused() {
        ReceiptTest::with(())
            .given(vec![submitted()])
            .when(reject("   "))
            .then_expect_error(ReceiptError::ReasonRequired);
    }

    #[test]
    fn rejecting_with_a_reason_over_2000_characters_is_refused() {
        ReceiptTest::with(())
            .given(vec![submitted()])
            .when(reject(&"r".repeat(MAX_TEXT_LEN + 1)))
            .then_expect_error(ReceiptError::ReasonRequired);
    }

    #[test]
    fn rejecting_a_missing_receipt_is_refused() {
        ReceiptTest::with(())
            .given_no_previous_events()
            .when(reject("no"))
            .then_expect_error(ReceiptError::NotFound);
    }

    #[test]
    fn rejecting_a_rejected_receipt_is_refused() {
        ReceiptTest::with(())
            .given(vec![submitted(), rejected()])
            .when(reject("again"))
            .then_expect_error(ReceiptError::AlreadyDecided {
                status: ReceiptStatus::Rejected,
            });
    }

    #[test]
    fn rejecting_a_verified_receipt_is_refused() {
        ReceiptTest::with(())
            .given(vec![submitted(), verified()])
            .when(reject("changed my mind"))
            .then_expect_error(ReceiptError::AlreadyDecided {
                status: ReceiptStatus::Verified,
            });
    }

    #[test]
    fn state_reflects_submission_and_decision() {
        let mut receipt = PaymentReceipt::default();
        assert_eq!(receipt.status(), None);
        receipt.apply(submitted());
        assert_eq!(receipt.status(), Some(ReceiptStatus::Submitted));
        assert_eq!(receipt.order_id(), order_id());
        assert_eq!(receipt.store_id(), store_id());
        receipt.apply(rejected());
        assert_eq!(receipt.status(), Some(ReceiptStatus::Rejected));
        assert_eq!(receipt.decided_by, Some(vendor()));
        assert_eq!(
            receipt.rejection_reason.as_deref(),
            Some("amount does not match")
        );
        let json = serde_json::to_string(&receipt).unwrap();
        assert_eq!(
            serde_json::from_str::<PaymentReceipt>(&json).unwrap(),
            receipt
        );
    }

    fn voided() -> ReceiptEvent {
        ReceiptEvent::PaymentReceiptVoided {
            order_id: order_id(),
            reason: VoidReason::OrderCancelled,
            voided_at: at(),
        }
    }

    fn void() -> ReceiptCommand {
        ReceiptCommand::Void {
            reason: VoidReason::OrderCancelled,
            at: at(),
        }
    }

    #[test]
    fn a_waiting_receipt_is_voided_when_its_order_ends() {
        ReceiptTest::with(())
            .given(vec![submitted()])
            .when(void())
            .then_expect_events(vec![voided()]);
    }

    #[test]
    fn a_voided_receipt_cannot_be_verified_nor_rejected() {
        ReceiptTest::with(())
            .given(vec![submitted(), voided()])
            .when(verify())
            .then_expect_error(ReceiptError::AlreadyDecided {
                status: ReceiptStatus::Voided,
            });
        ReceiptTest::with(())
            .given(vec![submitted(), voided()])
            .when(reject("too late"))
            .then_expect_error(ReceiptError::AlreadyDecided {
                status: ReceiptStatus::Voided,
            });
    }

    #[test]
    fn a_decided_receipt_is_not_voided() {
        ReceiptTest::with(())
            .given(vec![submitted(), verified()])
            .when(void())
            .then_expect_error(ReceiptError::AlreadyDecided {
                status: ReceiptStatus::Verified,
            });
    }

    #[test]
    fn already_decided_error_names_the_status() {
        let error = ReceiptError::AlreadyDecided {
            status: ReceiptStatus::Verified,
        };
        assert_eq!(
            error.to_string(),
            "the payment receipt has already been verified"
        );
    }

    #[test]
    fn events_serialise_externally_tagged_by_their_variant_name() {
        let event = submitted();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(event.event_type(), "PaymentReceiptSubmitted");
        assert_eq!(event.event_version(), crate::EVENT_VERSION_1);
        let body = &json["PaymentReceiptSubmitted"];
        assert_eq!(body["channel"], "telegram");
        assert_eq!(body["file"]["media_type"], "image/jpeg");
        assert_eq!(body["claimed_amount"]["currency"], "RUB");
        assert_eq!(serde_json::from_value::<ReceiptEvent>(json).unwrap(), event);

        for event in [verified(), rejected(), voided()] {
            let json = serde_json::to_value(&event).unwrap();
            let object = json.as_object().unwrap();
            assert_eq!(object.len(), 1);
            assert!(object.contains_key(&event.event_type()));
            assert_eq!(serde_json::from_value::<ReceiptEvent>(json).unwrap(), event);
        }
        assert_eq!(
            serde_json::to_value(ReceiptStatus::Submitted).unwrap(),
            "SUBMITTED"
        );
    }
}

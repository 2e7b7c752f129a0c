//! Read model "receipts": each payment receipt with its file, claimed amount and decision, and a
//! duplicate flag: a receipt whose file (by SHA-256) was already submitted for another order is
//! marked with those earlier receipts, so the verifier sees a reused screenshot at a glance.

pub mod queries;

use std::collections::{BTreeSet, HashMap};

use aggregates::receipt::ReceiptEvent;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::copy_in::copy_row;
use super::{load_typed, replace_keyed};
use crate::event::{DomainEvent, Envelope};
use crate::{Projection, ProjectionError};

pub struct Receipts;

/// A row of `receipts`.
#[derive(Clone, Debug, sqlx::FromRow)]
struct ReceiptRow {
    receipt_id: Uuid,
    order_id: Uuid,
    store_id: Uuid,
    status: String,
    media_type: String,
    size_bytes: i64,
    sha256: String,
    storage_key: String,
    claimed_amount_minor: Option<i64>,
    claimed_currency: Option<String>,
    submitted_by: Uuid,
    channel: String,
    submitted_at: DateTime<Utc>,
    decided_by: Option<Uuid>,
    decided_at: Option<DateTime<Utc>>,
    rejection_reason: Option<String>,
    void_reason: Option<String>,
    duplicate_of: Vec<Uuid>,
    duplicates_elsewhere: i32,
    last_position: i64,
}

copy_row!(ReceiptRow {
    receipt_id,
    order_id,
    store_id,
    status,
    media_type,
    size_bytes,
    sha256,
    storage_key,
    claimed_amount_minor,
    claimed_currency,
    submitted_by,
    channel,
    submitted_at,
    decided_by,
    decided_at,
    rejection_reason,
    void_reason,
    duplicate_of,
    duplicates_elsewhere,
    last_position,
});

/// An earlier use of a file.
#[derive(Clone, Debug, Deserialize)]
struct FileUse {
    receipt_id: Uuid,
    order_id: Uuid,
    store_id: Uuid,
    sha256: String,
}

#[async_trait]
impl Projection for Receipts {
    fn name(&self) -> &'static str {
        "receipts"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["receipts"]
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let mut decided = BTreeSet::new();
        let mut hashes = BTreeSet::new();
        for envelope in events {
            match &envelope.event {
                DomainEvent::Receipt(ReceiptEvent::PaymentReceiptSubmitted { file, .. }) => {
                    hashes.insert(file.sha256.clone());
                }
                DomainEvent::Receipt(_) => {
                    decided.insert(envelope.aggregate_uuid()?);
                }
                _ => {}
            }
        }
        if decided.is_empty() && hashes.is_empty() {
            return Ok(());
        }
        let decided: Vec<Uuid> = decided.into_iter().collect();
        let mut receipts: HashMap<Uuid, ReceiptRow> =
            load_typed::<ReceiptRow>(conn, "receipts", "receipt_id", &decided, "")
                .await?
                .into_iter()
                .map(|row| (row.receipt_id, row))
                .collect();
        let hashes: Vec<String> = hashes.into_iter().collect();
        let mut uses: HashMap<String, Vec<FileUse>> = HashMap::new();
        if !hashes.is_empty() {
            let rows: Vec<sqlx::types::Json<FileUse>> = sqlx::query_scalar(
                "select jsonb_build_object('receipt_id', receipt_id, 'order_id', order_id, \
                 'store_id', store_id, 'sha256', sha256) from receipts \
                 where sha256 = any($1) order by last_position",
            )
            .bind(&hashes)
            .fetch_all(&mut *conn)
            .await?;
            for row in rows {
                uses.entry(row.0.sha256.clone()).or_default().push(row.0);
            }
        }
        let mut changed = BTreeSet::new();
        for envelope in events {
            let DomainEvent::Receipt(event) = &envelope.event else {
                continue;
            };
            let receipt_id = envelope.aggregate_uuid()?;
            let position = envelope.raw.global_position;
            match event {
                ReceiptEvent::PaymentReceiptSubmitted {
                    order_id,
                    store_id,
                    file,
                    claimed_amount,
                    submitted_by,
                    channel,
                    submitted_at,
                    ..
                } => {
                    let earlier = uses.entry(file.sha256.clone()).or_default();
                    let others = earlier.iter().filter(|u| u.order_id != order_id.0);
                    let mut duplicate_of: Vec<Uuid> = others
                        .clone()
                        .filter(|u| u.store_id == store_id.0)
                        .map(|u| u.receipt_id)
                        .collect();
                    // By id (time-ordered), not by load order: the same whatever the batches.
                    duplicate_of.sort();
                    let elsewhere = others.filter(|u| u.store_id != store_id.0).count();
                    earlier.push(FileUse {
                        receipt_id,
                        order_id: order_id.0,
                        store_id: store_id.0,
                        sha256: file.sha256.clone(),
                    });
                    receipts.insert(
                        receipt_id,
                        ReceiptRow {
                            receipt_id,
                            order_id: order_id.0,
                            store_id: store_id.0,
                            status: "SUBMITTED".into(),
                            media_type: file.media_type.clone(),
                            size_bytes: i64::try_from(file.size_bytes).unwrap_or(i64::MAX),
                            sha256: file.sha256.clone(),
                            storage_key: file.storage_key.clone(),
                            claimed_amount_minor: claimed_amount.map(|m| m.amount_minor),
                            claimed_currency: claimed_amount.map(|m| m.currency.code().to_owned()),
                            submitted_by: submitted_by.0,
                            channel: channel.as_str().to_owned(),
                            submitted_at: *submitted_at,
                            decided_by: None,
                            decided_at: None,
                            rejection_reason: None,
                            void_reason: None,
                            duplicate_of,
                            duplicates_elsewhere: i32::try_from(elsewhere).unwrap_or(i32::MAX),
                            last_position: position,
                        },
                    );
                }
                ReceiptEvent::PaymentReceiptVerified {
                    verified_by,
                    verified_at,
                    ..
                } => {
                    if let Some(row) = receipts.get_mut(&receipt_id) {
                        row.status = "VERIFIED".into();
                        row.decided_by = Some(verified_by.0);
                        row.decided_at = Some(*verified_at);
                        row.last_position = position;
                    }
                }
                ReceiptEvent::PaymentReceiptRejected {
                    rejected_by,
                    reason,
                    rejected_at,
                    ..
                } => {
                    if let Some(row) = receipts.get_mut(&receipt_id) {
                        row.status = "REJECTED".into();
                        row.decided_by = Some(rejected_by.0);
                        row.decided_at = Some(*rejected_at);
                        row.rejection_reason = Some(reason.clone());
                        row.last_position = position;
                    }
                }
                ReceiptEvent::PaymentReceiptVoided {
                    reason, voided_at, ..
                } => {
                    if let Some(row) = receipts.get_mut(&receipt_id) {
                        row.status = "VOIDED".into();
                        row.decided_at = Some(*voided_at);
                        row.void_reason = Some(reason.as_str().into());
                        row.last_position = position;
                    }
                }
            }
            changed.insert(receipt_id);
        }
        let rows: Vec<&ReceiptRow> = changed.iter().filter_map(|id| receipts.get(id)).collect();
        let keys = rows.iter().map(|row| row.receipt_id).collect();
        replace_keyed(conn, "receipts", "receipt_id", keys, rows).await?;
        Ok(())
    }
}

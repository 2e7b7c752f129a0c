//! The hash chain over the log, for auditors (docs/auditing.md): its state, its signed
//! checkpoints, the public key that signs them, and verification.
//!
//! The chain covers every store; what these endpoints show (positions, hashes, counts) reveals
//! no store's events. A caller names a store where they may read the audit trail (an AUDITOR
//! API token's store), or is a platform admin.

use std::sync::Arc;

use aggregates::StoreId;
use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Tags};
use uuid::Uuid;

use super::auth::BearerAuth;
use super::context::caller;
use super::error::ApiError;
use super::types::{decode_cursor, page_of, page_size, Page};
use crate::app::audit::chain::Checkpoint;
use crate::app::audit::verify::{ChainPoint, TamperKind, Tampering, VerifyOptions, VerifyReport};
use crate::app::audit::{ChainStatus, SigningKeyUse};
use crate::app::App;

#[derive(Tags)]
enum ApiTags {
    /// The audit trail.
    Audit,
}

/// A signed statement: after `chain_index` events, the last at `global_position`, the chain
/// hash was `hash`. Keep exported checkpoints outside the database.
#[derive(Clone, Debug, Object)]
#[oai(rename = "AuditCheckpoint")]
pub struct CheckpointView {
    /// How many events the chain holds at this point.
    pub chain_index: i64,
    pub global_position: i64,
    pub transaction_id: i64,
    /// The chain hash, hex (SHA-256).
    #[oai(validator(max_length = 64))]
    pub hash: String,
    pub signed_at: DateTime<Utc>,
    /// The ed25519 public key that signed it, hex.
    #[oai(validator(max_length = 64))]
    pub public_key: String,
    /// The ed25519 signature, hex.
    #[oai(validator(max_length = 128))]
    pub signature: String,
}

impl From<Checkpoint> for CheckpointView {
    fn from(c: Checkpoint) -> Self {
        Self {
            chain_index: c.chain_index,
            global_position: c.global_position,
            transaction_id: c.transaction_id,
            hash: c.hash,
            signed_at: c.signed_at,
            public_key: c.public_key,
            signature: c.signature,
        }
    }
}

impl From<CheckpointView> for Checkpoint {
    fn from(c: CheckpointView) -> Self {
        Self {
            chain_index: c.chain_index,
            global_position: c.global_position,
            transaction_id: c.transaction_id,
            hash: c.hash,
            signed_at: c.signed_at,
            public_key: c.public_key,
            signature: c.signature,
        }
    }
}

/// A place in the chain.
#[derive(Debug, Object)]
#[oai(rename = "AuditChainPoint")]
pub struct ChainPointView {
    pub chain_index: i64,
    pub global_position: i64,
    pub transaction_id: i64,
    /// The chain hash there, hex.
    pub hash: String,
}

impl From<ChainPoint> for ChainPointView {
    fn from(p: ChainPoint) -> Self {
        Self {
            chain_index: p.chain_index,
            global_position: p.global_position,
            transaction_id: p.transaction_id,
            hash: p.hash,
        }
    }
}

/// Where sealing stands.
#[derive(Debug, Object)]
#[oai(rename = "AuditChainStatus")]
pub struct ChainStatusView {
    /// The last event sealed.
    #[oai(skip_serializing_if_is_none)]
    pub sealed_through: Option<ChainPointView>,
    /// Events committed after it, not sealed yet.
    pub unsealed_events: i64,
    #[oai(skip_serializing_if_is_none)]
    pub latest_checkpoint: Option<CheckpointView>,
}

impl From<ChainStatus> for ChainStatusView {
    fn from(s: ChainStatus) -> Self {
        Self {
            sealed_through: s.sealed_through.map(Into::into),
            unsealed_events: s.unsealed_events,
            latest_checkpoint: s.latest_checkpoint.map(Into::into),
        }
    }
}

/// The key checkpoints are signed with, and every key that signed one here.
#[derive(Debug, Object)]
#[oai(rename = "AuditPublicKey")]
pub struct PublicKeyView {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The key this instance signs new checkpoints with, hex.
    #[oai(skip_serializing_if_is_none)]
    pub public_key: Option<String>,
    /// Every key that signed checkpoints in this database, oldest first.
    pub keys: Vec<KeyUseView>,
}

/// A key that signed checkpoints.
#[derive(Debug, Object)]
#[oai(rename = "AuditKeyUse")]
pub struct KeyUseView {
    pub public_key: String,
    pub first_chain_index: i64,
    pub last_chain_index: i64,
    pub checkpoints: i64,
}

impl From<SigningKeyUse> for KeyUseView {
    fn from(k: SigningKeyUse) -> Self {
        Self {
            public_key: k.public_key,
            first_chain_index: k.first_chain_index,
            last_chain_index: k.last_chain_index,
            checkpoints: k.checkpoints,
        }
    }
}

/// What to verify against besides the database (`{}`: the database alone).
#[derive(Debug, Object)]
#[oai(rename = "AuditVerifyRequest")]
pub struct VerifyRequest {
    /// Start from this checkpoint (kept outside the database, verified before) instead of the
    /// first event; the chain must still hold it.
    #[oai(skip_serializing_if_is_none)]
    pub from_checkpoint: Option<CheckpointView>,
    /// More checkpoints kept outside the database; each must match the chain.
    #[oai(default, validator(max_items = 1000))]
    pub anchors: Vec<CheckpointView>,
    /// Public keys (hex) checkpoints may be signed with; none: any key whose signature
    /// verifies (the report says so).
    #[oai(default, validator(max_items = 16))]
    pub trusted_keys: Vec<String>,
}

/// How the log differs from what was sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename = "AuditTamperKind", rename_all = "snake_case")]
pub enum TamperKindView {
    /// The event at a sealed position hashes differently.
    Modified,
    /// The chain holds a position no event has any more.
    Deleted,
    /// An event sits inside the sealed range where the chain has none.
    Inserted,
    /// An event exists but sorts elsewhere (its transaction id changed).
    Reordered,
    /// Chain rows are missing, or disagree with a checkpoint you kept.
    ChainRewritten,
    /// Events and chain agree, a signed checkpoint does not.
    CheckpointMismatch,
    /// A checkpoint's signature does not verify.
    BadSignature,
    /// A checkpoint is signed by a key you do not trust.
    UntrustedKey,
}

impl From<TamperKind> for TamperKindView {
    fn from(kind: TamperKind) -> Self {
        match kind {
            TamperKind::Modified => Self::Modified,
            TamperKind::Deleted => Self::Deleted,
            TamperKind::Inserted => Self::Inserted,
            TamperKind::Reordered => Self::Reordered,
            TamperKind::ChainRewritten => Self::ChainRewritten,
            TamperKind::CheckpointMismatch => Self::CheckpointMismatch,
            TamperKind::BadSignature => Self::BadSignature,
            TamperKind::UntrustedKey => Self::UntrustedKey,
        }
    }
}

/// The first difference found.
#[derive(Debug, Object)]
#[oai(rename = "AuditTampering")]
pub struct TamperingView {
    pub kind: TamperKindView,
    pub global_position: i64,
    #[oai(skip_serializing_if_is_none)]
    pub chain_index: Option<i64>,
    pub detail: String,
}

impl From<Tampering> for TamperingView {
    fn from(t: Tampering) -> Self {
        Self {
            kind: t.kind.into(),
            global_position: t.global_position,
            chain_index: t.chain_index,
            detail: t.detail,
        }
    }
}

/// What verification found.
#[derive(Debug, Object)]
#[oai(rename = "AuditVerifyReport")]
pub struct VerifyReportView {
    /// No difference found.
    pub intact: bool,
    #[oai(skip_serializing_if_is_none)]
    pub problem: Option<TamperingView>,
    /// Where recomputation started (0: the first event).
    pub started_after_chain_index: i64,
    #[oai(skip_serializing_if_is_none)]
    pub sealed_through: Option<ChainPointView>,
    pub verified_events: i64,
    /// Events committed after the chain's head, not sealed yet (not an error).
    pub unsealed_events: i64,
    pub checkpoints_checked: i64,
    /// Export it: it is the anchor for the next verification.
    #[oai(skip_serializing_if_is_none)]
    pub latest_checkpoint: Option<CheckpointView>,
    /// Whether checkpoint keys were checked against `trusted_keys`.
    pub keys_pinned: bool,
    pub seconds: f64,
    pub events_per_second: f64,
}

impl From<VerifyReport> for VerifyReportView {
    fn from(r: VerifyReport) -> Self {
        Self {
            intact: r.intact,
            problem: r.problem.map(Into::into),
            started_after_chain_index: r.started_after_chain_index,
            sealed_through: r.sealed_through.map(Into::into),
            verified_events: r.verified_events,
            unsealed_events: r.unsealed_events,
            checkpoints_checked: r.checkpoints_checked,
            latest_checkpoint: r.latest_checkpoint.map(Into::into),
            keys_pinned: r.keys_pinned,
            seconds: r.seconds,
            events_per_second: r.events_per_second,
        }
    }
}

pub struct AuditChainApi {
    pub app: Arc<App>,
}

#[OpenApi(prefix_path = "/api/v1/audit", tag = "ApiTags::Audit")]
impl AuditChainApi {
    /// The public key signed checkpoints verify with (no authentication: anyone holding a
    /// checkpoint may check it), and every key that signed checkpoints here.
    #[oai(
        path = "/public-key",
        method = "get",
        operation_id = "audit_public_key"
    )]
    async fn public_key(&self) -> Result<Json<PublicKeyView>, ApiError> {
        let keys = self.app.audit_signing_keys().await?;
        Ok(Json(PublicKeyView {
            algorithm: "ed25519".into(),
            public_key: self.app.audit_public_key().map(str::to_owned),
            keys: keys.into_iter().map(Into::into).collect(),
        }))
    }

    /// Where sealing stands: the last event sealed, how many wait, the latest checkpoint.
    /// `store_id`: a store where the caller may read the audit trail (else platform admins).
    #[oai(path = "/chain", method = "get", operation_id = "audit_chain_status")]
    async fn status(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Query<Option<Uuid>>,
    ) -> Result<Json<ChainStatusView>, ApiError> {
        let caller = caller(req, auth.0);
        let auditor = self
            .app
            .authorize_log_auditor(&caller, store_id.0.map(StoreId))
            .await?;
        Ok(Json(self.app.audit_chain_status(&auditor).await?.into()))
    }

    /// The signed checkpoints, oldest first: export them and keep them outside the database
    /// (`shopfront audit verify --from-checkpoint` starts from one).
    #[oai(
        path = "/checkpoints",
        method = "get",
        operation_id = "audit_checkpoints"
    )]
    async fn checkpoints(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Query<Option<Uuid>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<u32>>,
    ) -> Result<Json<Page<CheckpointView>>, ApiError> {
        let caller = caller(req, auth.0);
        let auditor = self
            .app
            .authorize_log_auditor(&caller, store_id.0.map(StoreId))
            .await?;
        let limit = page_size(limit.0);
        let after: i64 = cursor
            .0
            .as_deref()
            .map(decode_cursor)
            .transpose()?
            .unwrap_or(0);
        let rows = self
            .app
            .audit_checkpoints(&auditor, after, limit + 1)
            .await?;
        Ok(Json(page_of(rows, limit, |c| c.chain_index, Into::into)))
    }

    /// Recomputes the hash chain from the events and checks every signed checkpoint; the
    /// report names the first modified, deleted, inserted or reordered event. One verification
    /// runs at a time (another answers 503 with `Retry-After`).
    #[oai(path = "/verify", method = "post", operation_id = "audit_verify")]
    async fn verify(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Query<Option<Uuid>>,
        body: Json<VerifyRequest>,
    ) -> Result<Json<VerifyReportView>, ApiError> {
        let caller = caller(req, auth.0);
        let auditor = self
            .app
            .authorize_log_auditor(&caller, store_id.0.map(StoreId))
            .await?;
        let body = body.0;
        let options = VerifyOptions {
            from: body.from_checkpoint.map(Into::into),
            anchors: body.anchors.into_iter().map(Into::into).collect(),
            trusted_keys: body.trusted_keys,
        };
        Ok(Json(
            self.app.verify_audit_chain(&auditor, options).await?.into(),
        ))
    }
}

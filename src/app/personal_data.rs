//! Crypto-shredding: personal data is sealed with a per-person key before it enters a command,
//! and erasing the person deletes the key (ARCHITECTURE rule 3).
//!
//! Keys live in `personal_data_keys`, an ordinary table outside the log. Sealing uses
//! XChaCha20-Poly1305 with a random nonce and the subject's id as associated data, so a sealed
//! value cannot be passed off as someone else's.
//!
//! Erasing deletes the key row itself (nothing of the key survives, not even a null column);
//! the tombstone in `erasures` says the person was erased, so no key is ever made for them
//! again and their sealed values read as [`Revealed::Erased`]. Erasing a person as a whole
//! (credentials, sessions, Telegram identity, request origins, receipt files) is
//! `App::erase_person` (`erasure.rs`), which calls [`PersonalDataVault::erase_in`] in its
//! transaction.

use aggregates::{AccountId, SealedPersonalData};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::PgPool;

use super::AppError;

const ALGORITHM: &str = "xchacha20poly1305";

/// Whether the stored payload of an event of `aggregate_type` in `event_version` holds personal
/// data in clear, and so is handed to nobody (live feeds, exports): `Account` events of version
/// 1.0 carried the Telegram user id in clear (docs/events.md), and the log is never rewritten.
/// Every other payload seals personal data, so it may leave as stored: ciphertext that nobody
/// can open once the person is erased.
pub fn payload_holds_clear_personal_data(aggregate_type: &str, event_version: &str) -> bool {
    aggregate_type == "Account" && event_version == "1.0"
}

/// What opening sealed personal data gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revealed<T> {
    Data(T),
    /// The person was erased: the data is gone for good.
    Erased,
}

/// Keys of several subjects, fetched at once by [`PersonalDataVault::keys`]: a subject's key, or
/// `None` when they were erased (never sealed for: absent).
#[derive(Debug, Default)]
pub struct SubjectKeys(std::collections::HashMap<uuid::Uuid, Option<Vec<u8>>>);

impl SubjectKeys {
    /// Whether `subject` was erased.
    pub fn is_erased(&self, subject: AccountId) -> bool {
        matches!(self.0.get(&subject.0), Some(None))
    }
}

/// Opens `sealed` with a key from `keys`; `Erased` when the subject's key is gone.
pub fn open_with<T: DeserializeOwned>(
    keys: &SubjectKeys,
    sealed: &SealedPersonalData,
) -> Result<Revealed<T>, AppError> {
    let Some(Some(key)) = keys.0.get(&sealed.subject_id.0) else {
        return Ok(Revealed::Erased);
    };
    let corrupt = |what: &str| AppError::Internal(format!("sealed personal data: {what}").into());
    if sealed.algorithm != ALGORITHM {
        return Err(corrupt("unknown algorithm"));
    }
    let cipher = XChaCha20Poly1305::new_from_slice(key).map_err(|_| corrupt("bad key"))?;
    let nonce = BASE64
        .decode(&sealed.nonce)
        .map_err(|_| corrupt("bad nonce"))?;
    if nonce.len() != 24 {
        return Err(corrupt("bad nonce length"));
    }
    let ciphertext = BASE64
        .decode(&sealed.ciphertext)
        .map_err(|_| corrupt("bad ciphertext"))?;
    let plaintext = cipher
        .decrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &ciphertext,
                aad: sealed.subject_id.0.as_bytes(),
            },
        )
        .map_err(|_| corrupt("authentication failed"))?;
    serde_json::from_slice(&plaintext)
        .map(Revealed::Data)
        .map_err(|e| AppError::Internal(Box::new(e)))
}

/// Seals, opens and erases personal data.
#[derive(Clone, Debug)]
pub struct PersonalDataVault {
    pool: PgPool,
}

impl PersonalDataVault {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Seals `value` with `subject`'s key, creating the key on first use.
    pub async fn seal<T: Serialize>(
        &self,
        subject: AccountId,
        value: &T,
    ) -> Result<SealedPersonalData, AppError> {
        let key = self.key_for_sealing(subject).await?;
        let cipher = XChaCha20Poly1305::new_from_slice(&key)
            .map_err(|e| AppError::Internal(e.to_string().into()))?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let plaintext = serde_json::to_vec(value).map_err(|e| AppError::Internal(Box::new(e)))?;
        let subject_bytes = subject.0.as_bytes();
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plaintext,
                    aad: subject_bytes,
                },
            )
            .map_err(|e| AppError::Internal(e.to_string().into()))?;
        Ok(SealedPersonalData {
            subject_id: subject,
            algorithm: ALGORITHM.into(),
            nonce: BASE64.encode(nonce),
            ciphertext: BASE64.encode(ciphertext),
        })
    }

    /// Opens a sealed value; `Erased` once the subject's key is gone.
    pub async fn open<T: DeserializeOwned>(
        &self,
        sealed: &SealedPersonalData,
    ) -> Result<Revealed<T>, AppError> {
        let keys = self.keys(&[sealed.subject_id]).await?;
        open_with(&keys, sealed)
    }

    /// The keys of `subjects`, for [`open_with`]: one query for a whole page of people. An
    /// erased subject maps to `None`; one never sealed for is absent.
    pub async fn keys(&self, subjects: &[AccountId]) -> Result<SubjectKeys, AppError> {
        let ids: Vec<uuid::Uuid> = subjects.iter().map(|s| s.0).collect();
        // An erasure wins over a key (a seal racing an erasure may have left one behind).
        let rows: Vec<(uuid::Uuid, Option<Vec<u8>>)> = sqlx::query_as(
            "select s.id, case when e.subject_id is null then k.key end
               from unnest($1::uuid[]) as s(id)
               left join personal_data_keys k on k.subject_id = s.id
               left join erasures e on e.subject_id = s.id
              where k.subject_id is not null or e.subject_id is not null",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(SubjectKeys(rows.into_iter().collect()))
    }

    /// Whether `subject` was erased.
    pub async fn is_erased(&self, subject: AccountId) -> Result<bool, AppError> {
        Ok(self.keys(&[subject]).await?.is_erased(subject))
    }

    /// Erases `subject`'s key inside the caller's transaction: deletes the key row, so every
    /// sealed copy of their data is unreadable, and records the tombstone. Returns whether
    /// there was a key to delete. The log is untouched.
    pub(crate) async fn erase_in(
        conn: &mut sqlx::PgConnection,
        subject: AccountId,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, AppError> {
        // The tombstone first: a seal that starts now finds it and is refused.
        sqlx::query(
            "insert into erasures (subject_id, erased_at) values ($1, $2) on conflict do nothing",
        )
        .bind(subject.0)
        .bind(at)
        .execute(&mut *conn)
        .await?;
        let deleted = sqlx::query("delete from personal_data_keys where subject_id = $1")
            .bind(subject.0)
            .execute(&mut *conn)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// The subject's key, made on first use; `SubjectErased` for an erased subject (no key is
    /// made for them ever again).
    async fn key_for_sealing(&self, subject: AccountId) -> Result<Vec<u8>, AppError> {
        let fresh = XChaCha20Poly1305::generate_key(&mut OsRng);
        // The inserted row is not visible to the outer select of the same statement, hence the
        // union with the row that was already there.
        let key: Option<Vec<u8>> = sqlx::query_scalar(
            "with erased as (select 1 from erasures where subject_id = $1),
                  made as (insert into personal_data_keys (subject_id, key)
                           select $1, $2 where not exists (select 1 from erased)
                           on conflict do nothing
                           returning key)
             select key from made
             union all
             select key from personal_data_keys
              where subject_id = $1 and not exists (select 1 from erased)
             limit 1",
        )
        .bind(subject.0)
        .bind(fresh.as_slice())
        .fetch_optional(&self.pool)
        .await?;
        key.ok_or(AppError::SubjectErased)
    }
}

//! Crypto-shredding: personal data is sealed with a per-person key before it enters a command,
//! and erasing the person deletes the key (ARCHITECTURE rule 3).
//!
//! Keys live in `personal_data_keys`, an ordinary table outside the log. Sealing uses
//! XChaCha20-Poly1305 with a random nonce and the subject's id as associated data, so a sealed
//! value cannot be passed off as someone else's.

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

/// What opening sealed personal data gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revealed<T> {
    Data(T),
    /// The person was erased: the data is gone for good.
    Erased,
}

/// Keys of several subjects, fetched at once by [`PersonalDataVault::keys`].
#[derive(Debug, Default)]
pub struct SubjectKeys(std::collections::HashMap<uuid::Uuid, Option<Vec<u8>>>);

impl SubjectKeys {
    /// Whether `subject` was erased (their key row is kept, without the key).
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
        let rows: Vec<(uuid::Uuid, Option<Vec<u8>>)> = sqlx::query_as(
            "select subject_id, key from personal_data_keys where subject_id = any($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(SubjectKeys(rows.into_iter().collect()))
    }

    /// Erases a person: deletes their key, so every sealed copy of their data is unreadable.
    /// Returns whether there was a key to erase. The log is untouched.
    pub async fn erase(&self, subject: AccountId) -> Result<bool, AppError> {
        let erased = sqlx::query(
            "insert into personal_data_keys (subject_id, key, erased_at) values ($1, null, now())
             on conflict (subject_id) do update set key = null, erased_at = now()
             where personal_data_keys.key is not null",
        )
        .bind(subject.0)
        .execute(&self.pool)
        .await?;
        Ok(erased.rows_affected() > 0)
    }

    async fn key_for_sealing(&self, subject: AccountId) -> Result<Vec<u8>, AppError> {
        let fresh = XChaCha20Poly1305::generate_key(&mut OsRng);
        sqlx::query("insert into personal_data_keys (subject_id, key) values ($1, $2) on conflict do nothing")
            .bind(subject.0)
            .bind(fresh.as_slice())
            .execute(&self.pool)
            .await?;
        let key: Option<Vec<u8>> =
            sqlx::query_scalar("select key from personal_data_keys where subject_id = $1")
                .bind(subject.0)
                .fetch_one(&self.pool)
                .await?;
        key.ok_or(AppError::SubjectErased)
    }
}

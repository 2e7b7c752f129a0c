//! Erasing a person (ARCHITECTURE rule 3; docs/operations.md, "Erasing a person"): one
//! application service that forgets everything personal the service holds of someone, reachable
//! by a platform admin over the API and by the operator on the console.
//!
//! In one transaction (one decision, ADR 0005):
//! 1. `PersonalDataErased` on their Account (once), so every read model drops their e-mail,
//!    name and Telegram id — on a rebuild from zero too;
//! 2. their key row is deleted (not updated) and a tombstone written to `erasures`: every value
//!    sealed for them, in every event, is noise from now on, and nothing is sealed for them again;
//! 3. their login e-mail (`credentials` row: password log-in ends), sessions with their refresh
//!    tokens (IP, user agent; every access token stops working at once), pending Telegram
//!    log-ins, second-factor setting, Telegram identity (Telegram log-in ends; the id is free for
//!    a new account) and `request_origins` rows (the IP and user agent of each of their requests)
//!    are deleted; their API tokens are revoked.
//!
//! Then, outside the transaction (files are not in the database), the receipt files of their
//! receipts (submitted by them or for their orders) are deleted unless a receipt of someone not
//! erased uses the same file (files are stored by content). A receipt of an erased person never
//! serves its file again (`App::receipt_file` answers `FileErased`). Erasing again is harmless
//! and finishes what an interrupted run left (say, files whose deletion failed).
//!
//! What stays: ids, amounts, statuses and times (not personal data), store roles, and the
//! events themselves, byte for byte.

use std::sync::{Arc, Mutex};

use aggregates::account::{Account, AccountCommand, AccountError};
use aggregates::AccountId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use super::event_store::{Decision, UnitOfWork};
use super::personal_data::PersonalDataVault;
use super::{App, AppError, CommandContext, PlatformAdmin};

/// What an erasure removed. Counts, flags and the subject's id only: the report itself holds no
/// personal data (it is printed and returned).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ErasureReport {
    pub subject_id: AccountId,
    /// `PersonalDataErased` was recorded now (false: erased before, or no account).
    pub event_recorded: bool,
    /// Their key row was deleted now (false: there was none left).
    pub key_deleted: bool,
    /// Their login e-mail and password were deleted (password log-in is over).
    pub login_email_deleted: bool,
    /// Sessions deleted (with their refresh tokens, IP addresses and user agents).
    pub sessions_deleted: u64,
    /// Pending or past Telegram log-ins (QR, second factor) deleted.
    pub login_requests_deleted: u64,
    /// Telegram identities unlinked (Telegram log-in is over).
    pub telegram_identities_deleted: u64,
    pub api_tokens_revoked: u64,
    /// Rows of `request_origins` (IP address and user agent of a request) deleted.
    pub request_origins_deleted: u64,
    pub receipt_files_deleted: u64,
    /// Receipt files kept because a receipt of someone not erased has the same file.
    pub receipt_files_kept: u64,
}

impl App {
    /// Erases `subject`'s personal data, as a platform admin (never their own: an admin who
    /// could erase themselves could also lock the platform out of its last admin).
    #[tracing::instrument(skip(self, admin), fields(admin = %admin.account_id()))]
    pub async fn erase_person(
        &self,
        admin: &PlatformAdmin,
        subject: AccountId,
    ) -> Result<ErasureReport, AppError> {
        if subject == admin.account_id() {
            return Err(AppError::invalid(
                "account_id",
                "you cannot erase your own personal data",
            ));
        }
        self.erase(admin.ctx(), subject).await
    }

    /// Erases `subject`'s personal data on the operator's authority (`shopfront personal-data
    /// erase`: whoever can run it holds the database credentials anyway).
    #[tracing::instrument(skip(self))]
    pub async fn erase_person_from_console(
        &self,
        subject: AccountId,
    ) -> Result<ErasureReport, AppError> {
        self.erase(&CommandContext::system("personal-data-erase"), subject)
            .await
    }

    async fn erase(
        &self,
        ctx: &CommandContext,
        subject: AccountId,
    ) -> Result<ErasureReport, AppError> {
        if !self.is_known_subject(subject).await? {
            return Err(AccountError::NotFound.into());
        }
        let removed = Arc::new(Mutex::new(Removed::default()));
        let decision = Erasure {
            subject,
            at: super::now(),
            removed: removed.clone(),
        };
        let event_recorded = self.events.decide(ctx, &decision).await?.outcome;
        let removed = removed
            .lock()
            .map_err(|_| AppError::Internal("erasure report lock poisoned".into()))?
            .clone();
        let (receipt_files_deleted, receipt_files_kept) = self.erase_receipt_files(subject).await?;
        let report = ErasureReport {
            subject_id: subject,
            event_recorded,
            key_deleted: removed.key_deleted,
            login_email_deleted: removed.login_email_deleted,
            sessions_deleted: removed.sessions,
            login_requests_deleted: removed.login_requests,
            telegram_identities_deleted: removed.telegram_identities,
            api_tokens_revoked: removed.api_tokens,
            request_origins_deleted: removed.request_origins,
            receipt_files_deleted,
            receipt_files_kept,
        };
        tracing::info!(
            %subject,
            event_recorded,
            receipt_files_deleted,
            "personal data erased"
        );
        Ok(report)
    }

    /// Someone this service knows: an account, or a person whose data was sealed or erased
    /// (a customer may have sealed order details before their account is projected).
    async fn is_known_subject(&self, subject: AccountId) -> Result<bool, AppError> {
        if self.accounts.load(&subject.to_string()).await?.is_created() {
            return Ok(true);
        }
        Ok(sqlx::query_scalar(
            "select exists (select 1 from personal_data_keys where subject_id = $1)
                 or exists (select 1 from erasures where subject_id = $1)",
        )
        .bind(subject.0)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Deletes the files of `subject`'s receipts that no receipt of a person still on record
    /// uses; returns (deleted, kept). Reads the log, not the receipts read model, so a receipt
    /// submitted a moment ago is not missed. A file already gone counts as deleted.
    async fn erase_receipt_files(&self, subject: AccountId) -> Result<(u64, u64), AppError> {
        // A receipt belongs to whoever submitted it and to its order's customer. A file may go
        // when every receipt that has it belongs to someone erased.
        let files: Vec<(String, bool)> = sqlx::query_as(
            "with receipts as (
               select r.payload -> 'PaymentReceiptSubmitted' -> 'file' ->> 'storage_key' as storage_key,
                      (r.payload -> 'PaymentReceiptSubmitted' ->> 'submitted_by')::uuid as submitted_by,
                      (o.payload -> 'OrderPlaced' ->> 'customer_id')::uuid as customer_id
                 from events r
                 left join events o
                   on o.aggregate_type = 'Order' and o.event_type = 'OrderPlaced'
                  and o.aggregate_id = r.payload -> 'PaymentReceiptSubmitted' ->> 'order_id'
                where r.aggregate_type = 'PaymentReceipt'
                  and r.event_type = 'PaymentReceiptSubmitted')
             select storage_key,
                    bool_and(exists (select 1 from erasures e
                                      where e.subject_id in (submitted_by, customer_id)))
               from receipts
              where storage_key in (select storage_key from receipts
                                     where $1 in (submitted_by, customer_id))
              group by storage_key",
        )
        .bind(subject.0)
        .fetch_all(&self.pool)
        .await?;
        let (mut deleted, mut kept) = (0, 0);
        for (storage_key, unused) in files {
            if unused {
                self.files.delete(&storage_key).await?;
                deleted += 1;
            } else {
                kept += 1;
            }
        }
        Ok((deleted, kept))
    }
}

/// What the transaction's side write removed, handed back to [`App::erase`].
#[derive(Clone, Debug, Default)]
struct Removed {
    key_deleted: bool,
    login_email_deleted: bool,
    sessions: u64,
    login_requests: u64,
    telegram_identities: u64,
    api_tokens: u64,
    request_origins: u64,
}

/// The erasure as one decision: the event (if the account exists and is not erased yet) and
/// every row removal commit together. Its outcome: whether the event was recorded.
struct Erasure {
    subject: AccountId,
    at: DateTime<Utc>,
    removed: Arc<Mutex<Removed>>,
}

impl Decision for Erasure {
    type Outcome = bool;

    async fn decide(&self, uow: &mut UnitOfWork<'_>) -> Result<bool, AppError> {
        let mut account = uow.load::<Account>(self.subject).await?;
        let record = account.is_created() && !account.is_erased();
        if record {
            uow.execute(
                &mut account,
                AccountCommand::ErasePersonalData { at: self.at },
            )
            .await?;
        }
        let (subject, at, removed) = (self.subject, self.at, self.removed.clone());
        uow.also(Box::new(move |conn| {
            Box::pin(async move {
                let done = remove_personal_rows(conn, subject, at).await?;
                *removed
                    .lock()
                    .map_err(|_| AppError::Internal("erasure report lock poisoned".into()))? = done;
                Ok(())
            })
        }));
        Ok(record)
    }
}

/// Deletes every row outside the log that holds `subject`'s personal data, in the erasure's
/// transaction.
async fn remove_personal_rows(
    conn: &mut PgConnection,
    subject: AccountId,
    at: DateTime<Utc>,
) -> Result<Removed, AppError> {
    let id = subject.0;
    let key_deleted = PersonalDataVault::erase_in(conn, subject, at).await?;
    let count = |result: sqlx::postgres::PgQueryResult| result.rows_affected();
    let login_email_deleted = count(
        sqlx::query("delete from credentials where account_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?,
    ) > 0;
    sqlx::query(
        "delete from refresh_tokens
          where session_id in (select session_id from auth_sessions where account_id = $1)",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    let sessions = count(
        sqlx::query("delete from auth_sessions where account_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?,
    );
    let login_requests = count(
        sqlx::query(
            "delete from auth_login_challenges
              where account_id = $1
                 or telegram_user_id in (select telegram_user_id from telegram_identities
                                          where account_id = $1)",
        )
        .bind(id)
        .execute(&mut *conn)
        .await?,
    );
    // The bot's conversation with them (its chat id is their Telegram user id).
    sqlx::query(
        "delete from telegram_chats
          where account_id = $1
             or chat_id in (select telegram_user_id from telegram_identities where account_id = $1)",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    let telegram_identities = count(
        sqlx::query("delete from telegram_identities where account_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?,
    );
    sqlx::query("delete from auth_account_settings where account_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let api_tokens = count(
        sqlx::query(
            "update api_tokens set revoked_at = $2 where account_id = $1 and revoked_at is null",
        )
        .bind(id)
        .bind(at)
        .execute(&mut *conn)
        .await?,
    );
    let request_origins = count(
        sqlx::query("delete from request_origins where account_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?,
    );
    Ok(Removed {
        key_deleted,
        login_email_deleted,
        sessions,
        login_requests,
        telegram_identities,
        api_tokens,
        request_origins,
    })
}

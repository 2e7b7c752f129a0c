//! The platform's user directory, for platform admins: every account (staff and customers) with
//! contact details, platform role, block status and store roles; search; platform-wide block
//! and unblock, one by one or in bulk with a result per account; erasure of a person's personal
//! data. Store roles are assigned per store (`/stores/{id}/staff`).

use std::collections::HashMap;
use std::sync::Arc;

use aggregates::AccountId;
use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};
use uuid::Uuid;

use projections::read_models::accounts::queries as accounts;
use projections::read_models::catalog::queries as catalog;

use super::auth::BearerAuth;
use super::context::caller;
use super::customers::{BlockAction, BlockRequest, ContactView};
use super::error::ApiError;
use super::types::{decode_cursor, page_of, page_size, BulkOutcome, BulkResponse, Page};
use crate::app::{App, AppError, Contact, ErasureReport, PlatformAdmin, UserQuery};

#[derive(Tags)]
enum ApiTags {
    /// Accounts across the platform (platform admins).
    Users,
}

/// An account on the platform.
#[derive(Debug, Object)]
#[oai(rename = "User")]
pub struct UserView {
    pub account_id: Uuid,
    pub contact: ContactView,
    /// How the account came: `api` (staff) or `telegram` (customers).
    pub channel: String,
    pub platform_admin: bool,
    pub blocked: bool,
    #[oai(skip_serializing_if_is_none)]
    pub blocked_reason: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub blocked_at: Option<DateTime<Utc>>,
    pub registered_at: DateTime<Utc>,
}

/// A role the account holds in a store.
#[derive(Debug, Object)]
pub struct UserStoreRole {
    pub store_id: Uuid,
    pub store_name: String,
    pub role: String,
}

impl From<catalog::StoreRoleOf> for UserStoreRole {
    fn from(role: catalog::StoreRoleOf) -> Self {
        Self {
            store_id: role.store_id,
            store_name: role.store_name,
            role: role.role,
        }
    }
}

/// An account with its store roles.
#[derive(Debug, Object)]
pub struct UserProfile {
    pub user: UserView,
    pub store_roles: Vec<UserStoreRole>,
}

/// Block or unblock many accounts at once.
#[derive(Debug, Object)]
pub struct BulkUsersRequest {
    pub action: BlockAction,
    #[oai(validator(min_items = 1, max_items = 100, unique_items))]
    pub account_ids: Vec<Uuid>,
    /// Required to block.
    #[oai(validator(min_length = 1, max_length = 2000))]
    pub reason: Option<String>,
}

/// What erasing a person removed. Counts and flags only; erasing again is harmless (and
/// finishes what an interrupted erasure left).
#[derive(Debug, Object)]
pub struct Erasure {
    pub account_id: Uuid,
    /// `PersonalDataErased` was recorded by this request (false: erased before, or no account).
    pub event_recorded: bool,
    /// Their key was deleted by this request: everything sealed for them is unreadable.
    pub key_deleted: bool,
    /// Their login e-mail and password are gone: they can no longer log in with them.
    pub login_email_deleted: bool,
    /// Sessions deleted (with their IP addresses and user agents); their tokens stop working.
    pub sessions_deleted: u64,
    /// Telegram log-ins (QR, second factor) deleted.
    pub login_requests_deleted: u64,
    /// Telegram identities unlinked: Telegram log-in is over.
    pub telegram_identities_deleted: u64,
    pub api_tokens_revoked: u64,
    /// Request origins (IP address and user agent per request) deleted.
    pub request_origins_deleted: u64,
    pub receipt_files_deleted: u64,
    /// Receipt files kept because a receipt of someone not erased has the same file.
    pub receipt_files_kept: u64,
}

impl From<ErasureReport> for Erasure {
    fn from(report: ErasureReport) -> Self {
        Self {
            account_id: report.subject_id.0,
            event_recorded: report.event_recorded,
            key_deleted: report.key_deleted,
            login_email_deleted: report.login_email_deleted,
            sessions_deleted: report.sessions_deleted,
            login_requests_deleted: report.login_requests_deleted,
            telegram_identities_deleted: report.telegram_identities_deleted,
            api_tokens_revoked: report.api_tokens_revoked,
            request_origins_deleted: report.request_origins_deleted,
            receipt_files_deleted: report.receipt_files_deleted,
            receipt_files_kept: report.receipt_files_kept,
        }
    }
}

impl UserView {
    fn of(row: accounts::Account, contacts: &mut HashMap<Uuid, Contact>) -> Self {
        let contact = contacts.remove(&row.account_id).unwrap_or_default();
        Self {
            account_id: row.account_id,
            contact: contact.into(),
            channel: row.channel,
            platform_admin: row.platform_admin,
            blocked: row.blocked_at.is_some(),
            blocked_reason: row.blocked_reason,
            blocked_at: row.blocked_at,
            registered_at: row.registered_at,
        }
    }
}

fn user_not_found() -> ApiError {
    ApiError::not_found("user-not-found", "no such account")
}

pub struct UsersApi {
    pub app: Arc<App>,
}

impl UsersApi {
    async fn set_blocked(
        &self,
        admin: &PlatformAdmin,
        account_id: Uuid,
        action: BlockAction,
        reason: Option<String>,
    ) -> Result<(), ApiError> {
        self.app
            .set_account_blocked(
                admin,
                AccountId(account_id),
                action == BlockAction::Block,
                reason,
            )
            .await?;
        Ok(())
    }
}

#[OpenApi(prefix_path = "/api/v1/users", tag = "ApiTags::Users")]
impl UsersApi {
    /// Every account, newest first. `q` finds a login e-mail (substring, case-insensitive), a
    /// linked Telegram user id or an account id (erased people are found by account id only).
    #[oai(path = "/", method = "get", operation_id = "users_list")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        req: &Request,
        auth: BearerAuth,
        #[oai(validator(max_length = 254))] q: Query<Option<String>>,
        /// Only blocked (true) or only not blocked (false) accounts.
        blocked: Query<Option<bool>>,
        /// Only platform admins (true) or only other accounts (false).
        platform_admin: Query<Option<bool>>,
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<u32>>,
    ) -> Result<Json<Page<UserView>>, ApiError> {
        let caller = caller(req, auth.0);
        let admin = self.app.require_platform_admin(&caller).await?;
        let limit = page_size(limit.0);
        let after: Option<(DateTime<Utc>, Uuid)> =
            cursor.0.as_deref().map(decode_cursor).transpose()?;
        let query = UserQuery {
            text: q.0,
            blocked: blocked.0,
            platform_admin: platform_admin.0,
        };
        let rows = self.app.users(&admin, &query, after, limit + 1).await?;
        let people: Vec<Uuid> = rows.iter().map(|r| r.account_id).collect();
        let mut contacts = self.app.contacts(&people).await?;
        Ok(Json(page_of(
            rows,
            limit,
            |r| (r.registered_at, r.account_id),
            |row| UserView::of(row, &mut contacts),
        )))
    }

    /// One account with its contact details and its roles in every store.
    #[oai(path = "/:account_id", method = "get", operation_id = "users_get")]
    async fn get(
        &self,
        req: &Request,
        auth: BearerAuth,
        account_id: Path<Uuid>,
    ) -> Result<Json<UserProfile>, ApiError> {
        let caller = caller(req, auth.0);
        let admin = self.app.require_platform_admin(&caller).await?;
        let row = self
            .app
            .user(&admin, AccountId(account_id.0))
            .await?
            .ok_or_else(user_not_found)?;
        let mut contacts = self.app.contacts(&[row.account_id]).await?;
        let store_roles = catalog::roles_of(&self.app.pool, row.account_id, None)
            .await
            .map_err(AppError::from)?;
        Ok(Json(UserProfile {
            user: UserView::of(row, &mut contacts),
            store_roles: store_roles.into_iter().map(UserStoreRole::from).collect(),
        }))
    }

    /// Block an account platform-wide: it can no longer sign in, and its sessions end now.
    #[oai(
        path = "/:account_id/block",
        method = "post",
        operation_id = "users_block"
    )]
    async fn block(
        &self,
        req: &Request,
        auth: BearerAuth,
        account_id: Path<Uuid>,
        body: Json<BlockRequest>,
    ) -> Result<Json<BulkOutcome>, ApiError> {
        let caller = caller(req, auth.0);
        let admin = self.app.require_platform_admin(&caller).await?;
        self.set_blocked(
            &admin,
            account_id.0,
            BlockAction::Block,
            Some(body.0.reason),
        )
        .await?;
        Ok(Json(BulkOutcome {
            id: account_id.0,
            ok: true,
            problem: None,
        }))
    }

    /// Let a blocked account sign in again.
    #[oai(
        path = "/:account_id/unblock",
        method = "post",
        operation_id = "users_unblock"
    )]
    async fn unblock(
        &self,
        req: &Request,
        auth: BearerAuth,
        account_id: Path<Uuid>,
    ) -> Result<Json<BulkOutcome>, ApiError> {
        let caller = caller(req, auth.0);
        let admin = self.app.require_platform_admin(&caller).await?;
        self.set_blocked(&admin, account_id.0, BlockAction::Unblock, None)
            .await?;
        Ok(Json(BulkOutcome {
            id: account_id.0,
            ok: true,
            problem: None,
        }))
    }

    /// Erase a person's personal data (platform admins; never their own): their e-mail, name,
    /// phone and address (sealed in the log: their key is deleted), Telegram id, login
    /// credentials and sessions, the IP addresses and user agents of their requests, and their
    /// receipt files. Ids, amounts and statuses stay; every view shows them as erased.
    #[oai(
        path = "/:account_id/personal-data",
        method = "delete",
        operation_id = "users_erase_personal_data"
    )]
    async fn erase(
        &self,
        req: &Request,
        auth: BearerAuth,
        account_id: Path<Uuid>,
    ) -> Result<Json<Erasure>, ApiError> {
        let caller = caller(req, auth.0);
        let admin = self.app.require_platform_admin(&caller).await?;
        let report = self
            .app
            .erase_person(&admin, AccountId(account_id.0))
            .await?;
        Ok(Json(report.into()))
    }

    /// Block or unblock up to 100 accounts; each gets its own result.
    #[oai(path = "/bulk", method = "post", operation_id = "users_bulk")]
    async fn bulk(
        &self,
        req: &Request,
        auth: BearerAuth,
        body: Json<BulkUsersRequest>,
    ) -> Result<Json<BulkResponse>, ApiError> {
        let caller = caller(req, auth.0);
        // A caller who may not do this at all is refused as a whole.
        let admin = self.app.require_platform_admin(&caller).await?;
        let body = body.0;
        if body.action == BlockAction::Block && body.reason.is_none() {
            return Err(AppError::invalid("reason", "a block needs a reason").into());
        }
        let mut results = Vec::with_capacity(body.account_ids.len());
        for account_id in body.account_ids {
            let outcome = self
                .set_blocked(&admin, account_id, body.action, body.reason.clone())
                .await;
            results.push((account_id, outcome));
        }
        Ok(Json(BulkResponse::of(results)))
    }
}

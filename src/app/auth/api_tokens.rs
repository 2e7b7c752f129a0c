//! Long-lived API tokens for admin API clients and auditors (docs/adr/0004-authentication.md).
//!
//! A token is `sfp_` + 32 random bytes (base64url), shown once and stored as its SHA-256. It
//! acts for the account that made it, and only within its scope: its stores, its role, and
//! read-only if asked. [`App::authorize`] gives it the permissions both the token's role and
//! the account's *current* role in the store allow, so a token never outlives a revoked or
//! lowered role; a blocked account's tokens stop working; a revoked or expired token is an
//! invalid token at once.

use std::collections::BTreeSet;

use aggregates::{AccountId, StoreId, StoreRole};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{random_secret, token_hash};
use crate::app::authz::covers;
use crate::app::{App, AppError, AuthError, Principal};

/// Every API token starts with this, so it is recognisable (in logs, by secret scanners) and
/// told apart from a JWT by the bearer checker.
pub const API_TOKEN_PREFIX: &str = "sfp_";
/// Longest token name.
pub const MAX_TOKEN_NAME_LEN: usize = 100;
/// Most stores one token may cover.
pub const MAX_TOKEN_STORES: usize = 100;

/// The limits of an API token, carried by its [`Principal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenScope {
    pub token_id: Uuid,
    pub store_ids: Vec<StoreId>,
    pub role: StoreRole,
    /// Only `View*` permissions.
    pub read_only: bool,
}

/// A token to create.
#[derive(Clone, Debug)]
pub struct NewApiToken {
    pub name: String,
    pub store_ids: Vec<StoreId>,
    pub role: StoreRole,
    pub read_only: bool,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A token as its owner sees it (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    pub token_id: Uuid,
    pub name: String,
    /// The first characters of the secret, to recognise it.
    pub token_prefix: String,
    pub store_ids: Vec<StoreId>,
    pub role: StoreRole,
    pub read_only: bool,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token just made: the secret is in `token`, this once.
#[derive(Clone, Debug)]
pub struct CreatedApiToken {
    pub token: String,
    pub info: ApiToken,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    token_id: Uuid,
    account_id: Uuid,
    name: String,
    token_prefix: String,
    role: String,
    read_only: bool,
    store_ids: Vec<Uuid>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TokenRow {
    fn into_token(self) -> Result<ApiToken, AppError> {
        Ok(ApiToken {
            token_id: self.token_id,
            name: self.name,
            token_prefix: self.token_prefix,
            store_ids: self.store_ids.into_iter().map(StoreId).collect(),
            role: parse_role(&self.role)?,
            read_only: self.read_only,
            created_at: self.created_at,
            expires_at: self.expires_at,
            last_used_at: self.last_used_at,
            revoked_at: self.revoked_at,
        })
    }
}

const COLUMNS: &str = "token_id, account_id, name, token_prefix, role, read_only, store_ids, \
                       created_at, expires_at, last_used_at, revoked_at";

fn parse_role(role: &str) -> Result<StoreRole, AppError> {
    match role {
        "OWNER" => Ok(StoreRole::Owner),
        "ADMIN" => Ok(StoreRole::Admin),
        "VENDOR" => Ok(StoreRole::Vendor),
        "AUDITOR" => Ok(StoreRole::Auditor),
        other => Err(AppError::Internal(
            format!("unknown role {other:?} in api_tokens").into(),
        )),
    }
}

impl App {
    /// Creates a token for the caller (a signed-in session, not another token). The caller must
    /// hold, in every store of the scope, a role whose permissions include all of the requested
    /// role's (an owner any role, an admin ADMIN or VENDOR, an auditor AUDITOR).
    #[tracing::instrument(skip(self, new), fields(role = %new.role, stores = new.store_ids.len()))]
    pub async fn create_api_token(
        &self,
        principal: &Principal,
        new: NewApiToken,
    ) -> Result<CreatedApiToken, AppError> {
        principal.require_session()?;
        let name = new.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > MAX_TOKEN_NAME_LEN {
            return Err(AppError::invalid(
                "name",
                format!("1 to {MAX_TOKEN_NAME_LEN} characters"),
            ));
        }
        let store_ids: Vec<StoreId> = new
            .store_ids
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if store_ids.is_empty() || store_ids.len() > MAX_TOKEN_STORES {
            return Err(AppError::invalid(
                "store_ids",
                format!("1 to {MAX_TOKEN_STORES} stores"),
            ));
        }
        let now = crate::app::now();
        if new.expires_at.is_some_and(|at| at <= now) {
            return Err(AppError::invalid("expires_at", "must be in the future"));
        }
        for store_id in &store_ids {
            let store = self.stores.load(&store_id.to_string()).await?;
            match store.role_of(principal.account_id()) {
                Some(held) if covers(held, new.role) => {}
                Some(held) => {
                    return Err(AppError::Forbidden(format!(
                        "a {held} cannot make a {} token for store {store_id}",
                        new.role
                    )))
                }
                None => {
                    return Err(AppError::Forbidden(format!(
                        "you hold no role in store {store_id}"
                    )))
                }
            }
        }
        // An auditor's role allows only viewing anyway; say so in the token.
        let read_only = new.read_only || new.role == StoreRole::Auditor;
        let token = format!("{API_TOKEN_PREFIX}{}", random_secret());
        let token_prefix: String = token.chars().take(API_TOKEN_PREFIX.len() + 6).collect();
        let row: TokenRow = sqlx::query_as(&format!(
            "insert into api_tokens (token_id, account_id, name, token_hash, token_prefix, role,
                                     read_only, store_ids, created_at, expires_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             returning {COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(principal.account_id().0)
        .bind(&name)
        .bind(token_hash(&token))
        .bind(&token_prefix)
        .bind(new.role.to_string())
        .bind(read_only)
        .bind(store_ids.iter().map(|s| s.0).collect::<Vec<_>>())
        .bind(now)
        .bind(new.expires_at)
        .fetch_one(&self.pool)
        .await?;
        tracing::info!(token_id = %row.token_id, "API token created");
        Ok(CreatedApiToken {
            token,
            info: row.into_token()?,
        })
    }

    /// The caller's tokens, newest first, revoked ones included (with `revoked_at`).
    pub async fn api_tokens(&self, principal: &Principal) -> Result<Vec<ApiToken>, AppError> {
        principal.require_session()?;
        let rows: Vec<TokenRow> = sqlx::query_as(&format!(
            "select {COLUMNS} from api_tokens where account_id = $1 order by created_at desc"
        ))
        .bind(principal.account_id().0)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TokenRow::into_token).collect()
    }

    /// Revokes one of the caller's tokens; it stops working at once. Someone else's token, or
    /// one already revoked, is `ApiTokenNotFound`.
    pub async fn revoke_api_token(
        &self,
        principal: &Principal,
        token_id: Uuid,
    ) -> Result<(), AppError> {
        principal.require_session()?;
        let revoked = sqlx::query(
            "update api_tokens set revoked_at = $3
              where token_id = $1 and account_id = $2 and revoked_at is null",
        )
        .bind(token_id)
        .bind(principal.account_id().0)
        .bind(crate::app::now())
        .execute(&self.pool)
        .await?;
        if revoked.rows_affected() == 0 {
            return Err(AuthError::ApiTokenNotFound.into());
        }
        Ok(())
    }

    /// The principal of an API token: unknown, revoked and expired tokens are `InvalidToken`; a
    /// blocked account's are `AccountBlocked`.
    pub(super) async fn authenticate_api_token(
        &self,
        token: &str,
    ) -> Result<(Principal, Option<chrono::DateTime<chrono::Utc>>), AppError> {
        let row: Option<TokenRow> = sqlx::query_as(&format!(
            "select {COLUMNS} from api_tokens where token_hash = $1"
        ))
        .bind(token_hash(token))
        .fetch_optional(&self.pool)
        .await?;
        let now = crate::app::now();
        let row = match row {
            Some(row) if row.revoked_at.is_none() && row.expires_at.is_none_or(|at| at > now) => {
                row
            }
            _ => return Err(AuthError::InvalidToken.into()),
        };
        let account_id = AccountId(row.account_id);
        let account = self.accounts.load(&account_id.to_string()).await?;
        if account.is_blocked() {
            return Err(AuthError::AccountBlocked.into());
        }
        // At most one write a minute per token, however busy it is.
        sqlx::query(
            "update api_tokens set last_used_at = $2
              where token_id = $1 and (last_used_at is null or last_used_at < $2 - interval '1 minute')",
        )
        .bind(row.token_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let token_id = row.token_id;
        let expires_at = row.expires_at;
        let token = row.into_token()?;
        let principal = Principal::api_token(
            account_id,
            TokenScope {
                token_id,
                store_ids: token.store_ids,
                role: token.role,
                read_only: token.read_only,
            },
        );
        Ok((principal, expires_at))
    }
}

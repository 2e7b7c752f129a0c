//! Reads that need more than a read model: the stores a caller sees (their roles, a platform
//! admin's reach, an API token's scope), staff with the e-mails they sign in with, and the
//! platform's user directory searched by those e-mails. Login e-mails live in `credentials`, an
//! authentication table of this layer that no read model holds; the read models' own rows come
//! through their query functions (`projections::read_models::*::queries`).

use std::collections::HashMap;

use aggregates::{AccountId, StoreId, StoreRole};
use chrono::{DateTime, Utc};
use projections::read_models::accounts::queries::{self as accounts, AccountFilter, AccountSearch};
use projections::read_models::catalog::queries::{self as catalog, MemberStore, StoreFilter};
use uuid::Uuid;

use super::authz::{can_assign, grant, Grant, StoreAccess};
use super::users::PlatformAdmin;
use super::{App, AppError, Caller};

/// Someone on a store's staff, with the e-mail they sign in with (absent for accounts without
/// a login, or once erased).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaffMember {
    pub member: catalog::StaffMember,
    pub email: Option<String>,
}

/// What the user directory is asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserQuery {
    /// A login e-mail substring (case-insensitive), a Telegram user id or an account id.
    pub text: Option<String>,
    pub blocked: Option<bool>,
    pub platform_admin: Option<bool>,
}

impl App {
    /// The stores `caller` works in, with their role there (a platform admin signed in
    /// themselves sees every store; an API token only its own stores), oldest first.
    pub async fn stores_of(
        &self,
        caller: &Caller,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<MemberStore>, AppError> {
        let principal = caller.principal();
        let filter = StoreFilter {
            account_id: principal.account_id().0,
            every_store: self.require_platform_admin(caller).await.is_ok(),
            only: principal
                .token_scope()
                .map(|scope| scope.store_ids.iter().map(|id| id.0).collect()),
        };
        Ok(catalog::stores(&self.pool, &filter, after, limit).await?)
    }

    /// The store's staff with their login e-mails, by assignment (oldest first).
    pub async fn staff(
        &self,
        access: &StoreAccess<grant::ViewStaff>,
    ) -> Result<Vec<StaffMember>, AppError> {
        let members = catalog::staff(&self.pool, access.store_id().0).await?;
        let ids: Vec<Uuid> = members.iter().map(|m| m.account_id).collect();
        let mut emails = self.login_emails(&ids).await?;
        Ok(members
            .into_iter()
            .map(|member| StaffMember {
                email: emails.remove(&member.account_id),
                member,
            })
            .collect())
    }

    /// One account's place on the store's staff, with its login e-mail (`None`: no role there).
    pub async fn staff_member<P: Grant>(
        &self,
        access: &StoreAccess<P>,
        account_id: AccountId,
    ) -> Result<Option<StaffMember>, AppError> {
        self.member_with_email(access.store_id(), account_id).await
    }

    /// A store's staff member, as a platform admin (who holds no role in it) sees them.
    pub async fn store_member(
        &self,
        _admin: &PlatformAdmin,
        store_id: StoreId,
        account_id: AccountId,
    ) -> Result<Option<StaffMember>, AppError> {
        self.member_with_email(store_id, account_id).await
    }

    /// A staff member of `store_id` with their login e-mail.
    async fn member_with_email(
        &self,
        store_id: StoreId,
        account_id: AccountId,
    ) -> Result<Option<StaffMember>, AppError> {
        let Some(member) = catalog::staff_member(&self.pool, store_id.0, account_id.0).await?
        else {
            return Ok(None);
        };
        let email = self
            .login_emails(&[account_id.0])
            .await?
            .remove(&account_id.0);
        Ok(Some(StaffMember { member, email }))
    }

    /// The account to be given `role` by the holder of `access`, found by its
    /// login e-mail (case-insensitive). Staff managers type e-mails of people outside their
    /// store, so this must not tell them which e-mails have accounts:
    /// - a role the caller may not give at all is refused first, whatever the e-mail;
    /// - "no account has this e-mail" and "that account may not be added" (it is blocked) are
    ///   the same `None`, found by the same single query, so neither the answer nor its timing
    ///   differs. Only an account that can be added is returned, and adding it shows it anyway.
    pub async fn staff_account_by_email(
        &self,
        access: &StoreAccess<grant::ManageStaff>,
        role: StoreRole,
        email: &str,
    ) -> Result<Option<AccountId>, AppError> {
        let assigner = access.role();
        if !can_assign(assigner, role) {
            return Err(AppError::Forbidden(format!(
                "a {assigner} cannot make someone {role}"
            )));
        }
        let found: Option<uuid::Uuid> = sqlx::query_scalar(
            "select c.account_id from credentials c
              where c.email = lower($1)
                and not exists (select 1 from accounts a
                                 where a.account_id = c.account_id and a.blocked_at is not null)",
        )
        .bind(email.trim())
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.map(AccountId))
    }

    /// The account that signs in with `email` (case-insensitive), as a platform admin looks
    /// it up (to name a store's owner, say).
    pub async fn account_by_email(
        &self,
        _admin: &PlatformAdmin,
        email: &str,
    ) -> Result<Option<AccountId>, AppError> {
        self.account_by_login_email(email).await
    }

    /// The account that signs in with `email` (case-insensitive), if any.
    pub(crate) async fn account_by_login_email(
        &self,
        email: &str,
    ) -> Result<Option<AccountId>, AppError> {
        let id: Option<Uuid> =
            sqlx::query_scalar("select account_id from credentials where email = lower($1)")
                .bind(email.trim())
                .fetch_optional(&self.pool)
                .await?;
        Ok(id.map(AccountId))
    }

    /// The platform's accounts, newest first, as a platform admin asks for them.
    pub async fn users(
        &self,
        _admin: &PlatformAdmin,
        query: &UserQuery,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<accounts::Account>, AppError> {
        let text = query
            .text
            .as_deref()
            .map(str::trim)
            .filter(|text| !text.is_empty());
        let search = match text {
            Some(text) => {
                let mut among = self.accounts_by_email_part(text).await?;
                if let Ok(telegram_user_id) = text.parse::<i64>() {
                    among.extend(
                        self.account_by_telegram(telegram_user_id)
                            .await?
                            .map(|a| a.0),
                    );
                }
                Some(AccountSearch {
                    account_id: text.parse().ok(),
                    among,
                })
            }
            None => None,
        };
        let filter = AccountFilter {
            blocked: query.blocked,
            platform_admin: query.platform_admin,
            search,
        };
        Ok(accounts::accounts(&self.pool, &filter, after, limit).await?)
    }

    /// One account of the platform, as a platform admin asks for it; `None`: no such account.
    pub async fn user(
        &self,
        _admin: &PlatformAdmin,
        account_id: AccountId,
    ) -> Result<Option<accounts::Account>, AppError> {
        let id = account_id.0;
        self.read_projected(&["accounts"], "Account", &id.to_string(), || {
            accounts::account(&self.pool, id)
        })
        .await
    }

    /// The login e-mails of those of `people` who have one.
    async fn login_emails(&self, people: &[Uuid]) -> Result<HashMap<Uuid, String>, AppError> {
        let rows: Vec<(Uuid, String)> =
            sqlx::query_as("select account_id, email from credentials where account_id = any($1)")
                .bind(people)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// The accounts whose login e-mail contains `part` (case-insensitive).
    async fn accounts_by_email_part(&self, part: &str) -> Result<Vec<Uuid>, AppError> {
        Ok(sqlx::query_scalar(
            "select account_id from credentials where strpos(email, lower($1)) > 0",
        )
        .bind(part)
        .fetch_all(&self.pool)
        .await?)
    }
}

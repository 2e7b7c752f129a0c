//! The platform's user directory: platform admins block and unblock accounts platform-wide.
//! A block refuses every sign-in and ends the account's sessions at once; its API tokens stop
//! working too (they are checked against the account on every use), and an access token of a
//! session opened while the block was being recorded is refused once the `accounts` read model
//! shows the block (`App::authenticate`).

use aggregates::account::{AccountCommand, AccountError};
use aggregates::AccountId;

use aggregates::ActorRole;

use super::{App, AppError, Caller, CommandContext};

/// Proof that a caller is a platform admin, as [`App::require_platform_admin`] found, with the
/// context its commands run in: only it makes one, so what takes one needs no second check (a
/// bulk request checks once).
#[derive(Debug)]
pub struct PlatformAdmin {
    account_id: AccountId,
    ctx: CommandContext,
}

impl PlatformAdmin {
    pub fn account_id(&self) -> AccountId {
        self.account_id
    }

    pub(crate) fn ctx(&self) -> &CommandContext {
        &self.ctx
    }
}

impl App {
    /// Refuses anyone but a platform admin signed in themselves (API tokens never act as one);
    /// checked on the Account aggregate, so a revoked admin's older token does not count.
    pub async fn require_platform_admin(&self, caller: &Caller) -> Result<PlatformAdmin, AppError> {
        let principal = caller.principal();
        let account = self
            .accounts
            .load(&principal.account_id().to_string())
            .await?;
        if !account.is_platform_admin() || principal.token_scope().is_some() {
            return Err(AppError::Forbidden(
                "only platform admins may do this (create stores, manage accounts)".into(),
            ));
        }
        Ok(PlatformAdmin {
            account_id: principal.account_id(),
            ctx: caller.context(ActorRole::PlatformAdmin),
        })
    }

    /// Blocks (with a reason) or unblocks `account_id` platform-wide, as `admin`. An admin
    /// never blocks themselves. Blocking revokes every open session of the account.
    #[tracing::instrument(skip(self, admin, reason))]
    pub async fn set_account_blocked(
        &self,
        admin: &PlatformAdmin,
        account_id: AccountId,
        blocked: bool,
        reason: Option<String>,
    ) -> Result<(), AppError> {
        if blocked && account_id == admin.account_id {
            return Err(AppError::invalid("account_id", "you cannot block yourself"));
        }
        let at = super::now();
        let by = admin.account_id;
        let command = match (blocked, reason) {
            (true, Some(reason)) => AccountCommand::Block {
                blocked_by: by,
                reason,
                at,
            },
            (true, None) => return Err(AppError::invalid("reason", "a block needs a reason")),
            (false, _) => AccountCommand::Unblock {
                unblocked_by: by,
                at,
            },
        };
        let result = self
            .accounts
            .execute(&account_id.to_string(), command, &admin.ctx)
            .await;
        // Sessions are revoked after the block commits; a retry of a block whose revocation
        // failed finds the account already blocked and revokes them then.
        let already = matches!(result, Err(AppError::Account(AccountError::AlreadyBlocked)));
        if blocked && (result.is_ok() || already) {
            sqlx::query(
                "update auth_sessions set revoked_at = now(), revoked_reason = 'account blocked' \
                 where account_id = $1 and revoked_at is null",
            )
            .bind(account_id.0)
            .execute(&self.pool)
            .await?;
        }
        result
    }
}

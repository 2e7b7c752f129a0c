//! The Telegram bot's door into the application layer: who a Telegram update comes from.
//!
//! Telegram vouches for the sender of every update it delivers to the bot (only it and we know
//! the bot's token), so a Telegram user id is a credential ([`Credential::Telegram`]). A user
//! writing for the first time becomes a customer (registered through the Account aggregate, as
//! Mini App sign-in does); staff are accounts that linked their Telegram user. Either way the
//! bot then goes through the same authorization as the HTTP API.

use aggregates::{AccountId, ActorRole, Channel};

use super::TelegramUser;
use super::{App, AppError, AuthError, Caller, CommandContext, Origin, Principal};

impl App {
    /// The caller behind a Telegram update from `user` (`request_id` names the update in the
    /// log and the events' metadata). A blocked account is refused.
    pub async fn telegram_caller(
        &self,
        user: &TelegramUser,
        request_id: String,
    ) -> Result<Caller, AppError> {
        let account_id = match self.account_by_telegram(user.id).await? {
            Some(account_id) => account_id,
            None => {
                let ctx = CommandContext::for_actor(
                    AccountId::new(),
                    ActorRole::Customer,
                    Channel::Telegram,
                );
                self.register_telegram_customer(&ctx, user).await?
            }
        };
        let account = self.accounts.load(&account_id.to_string()).await?;
        if account.is_blocked() {
            return Err(AuthError::AccountBlocked.into());
        }
        let origin = Origin {
            request_id,
            ..Origin::new(Channel::Telegram)
        };
        Ok(Caller::new(
            Principal::telegram(account_id, user.id),
            origin,
        ))
    }
}

/// A second-factor request waiting to be put to its Telegram user.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct SecondFactorPrompt {
    pub login_id: uuid::Uuid,
    /// `login` (someone signs in) or `reauthentication` (a signed-in session wants to change
    /// how the account signs in).
    pub purpose: String,
    pub telegram_user_id: i64,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

impl App {
    /// An order of the caller's own, as the write side holds it: what the bot shows right
    /// after the customer placed it (before the read model has it).
    pub async fn own_order(
        &self,
        caller: &Caller,
        order_id: aggregates::OrderId,
    ) -> Result<aggregates::order::Order, AppError> {
        let order = self.orders.load(&order_id.to_string()).await?;
        if order.currency.is_none() || order.customer_id != caller.account_id() {
            return Err(aggregates::order::OrderError::NotFound.into());
        }
        Ok(order)
    }

    /// Pending second-factor requests nobody has put to Telegram yet, oldest first.
    pub async fn second_factor_prompts(
        &self,
        limit: i64,
    ) -> Result<Vec<SecondFactorPrompt>, AppError> {
        Ok(sqlx::query_as(
            "select login_id, purpose, telegram_user_id, client_ip, user_agent
               from auth_login_challenges
              where kind = 'second_factor' and status = 'pending' and notified_at is null
                and expires_at > now() and telegram_user_id is not null
              order by created_at limit $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records that a second-factor request was put to Telegram.
    pub async fn second_factor_prompted(&self, login_id: uuid::Uuid) -> Result<(), AppError> {
        sqlx::query("update auth_login_challenges set notified_at = now() where login_id = $1")
            .bind(login_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

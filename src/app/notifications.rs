//! Deliveries of the notification outbox (`projections::outbox` records who is to be told
//! what): expanded into one delivery per recipient and channel, sent at least once by a
//! delivery worker (`src/notify/`), retried with backoff, and marked with their outcome so
//! failures stay visible.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use aggregates::{AccountId, Channel, StoreId};

use super::authz::{grant, MATRIX};
use super::{App, AppError, Caller, Origin, Principal};

/// Attempts before a delivery is given up (marked `failed`).
pub const MAX_DELIVERY_ATTEMPTS: i32 = 8;

/// A delivery whose time has come.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct DueDelivery {
    pub delivery_id: Uuid,
    pub account_id: Uuid,
    /// The Telegram user (and private chat) to write to.
    pub telegram_user_id: i64,
    pub kind: String,
    pub params: serde_json::Value,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    /// For staff notifications: the store and the permission its recipients need.
    pub store_id: Option<Uuid>,
    pub permission: Option<String>,
}

/// An outbox row to expand: one account, or the staff of a store holding a permission.
#[derive(sqlx::FromRow)]
struct OutboxRow {
    outbox_id: i64,
    account_id: Option<Uuid>,
    store_id: Option<Uuid>,
    permission: Option<String>,
}

impl App {
    /// Turns outbox rows not yet expanded into deliveries: one per recipient account with a
    /// Telegram identity (staff recipients are the store's staff *now*, by the matrix); a
    /// recipient without one gets a `skipped` delivery. Returns how many rows were expanded.
    pub async fn expand_outbox(&self, limit: i64) -> Result<usize, AppError> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "select outbox_id, account_id, store_id, permission from notification_outbox
              where expanded_at is null order by outbox_id limit $1 for update skip locked",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let recipients: Vec<Uuid> = match (&row.account_id, &row.store_id, &row.permission) {
                (Some(account), _, _) => vec![*account],
                (None, Some(store), Some(permission)) => {
                    let roles = roles_allowed(permission);
                    sqlx::query_scalar(
                        "select account_id from store_staff where store_id = $1 and role = any($2)",
                    )
                    .bind(store)
                    .bind(&roles)
                    .fetch_all(&mut *tx)
                    .await?
                }
                _ => Vec::new(),
            };
            sqlx::query(
                "insert into notification_deliveries
                        (delivery_id, outbox_id, account_id, channel, status, next_attempt_at)
                 select gen_random_uuid(), $1, r.account_id, 'telegram',
                        case when t.telegram_user_id is null then 'skipped' else 'pending' end,
                        now()
                   from unnest($2::uuid[]) as r(account_id)
                   left join telegram_identities t on t.account_id = r.account_id
                 on conflict do nothing",
            )
            .bind(row.outbox_id)
            .bind(&recipients)
            .execute(&mut *tx)
            .await?;
            sqlx::query("update notification_outbox set expanded_at = now() where outbox_id = $1")
                .bind(row.outbox_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }

    /// Pending deliveries due now, oldest first.
    pub async fn due_deliveries(&self, limit: i64) -> Result<Vec<DueDelivery>, AppError> {
        Ok(sqlx::query_as(
            "select d.delivery_id, d.account_id, t.telegram_user_id, o.kind, o.params, d.attempts,
                    o.created_at, o.store_id, o.permission
               from notification_deliveries d
               join notification_outbox o on o.outbox_id = d.outbox_id
               join telegram_identities t on t.account_id = d.account_id
              where d.status = 'pending' and d.next_attempt_at <= now()
              order by d.next_attempt_at, o.outbox_id limit $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The recipient of `delivery` as a caller, if they may still be told: not a blocked
    /// account, and for a staff notification still holding its permission in the store (a
    /// role revoked since the event counts). What the notification then shows (a receipt's
    /// file, say) goes through the same authorization as any request, with their roles *now*.
    pub async fn recipient(&self, delivery: &DueDelivery) -> Result<Option<Caller>, AppError> {
        let account_id = AccountId(delivery.account_id);
        let account = self.accounts.load(&account_id.to_string()).await?;
        if account.is_blocked() {
            return Ok(None);
        }
        let origin = Origin {
            request_id: format!("notification-{}", delivery.delivery_id),
            ..Origin::new(Channel::Telegram)
        };
        let caller = Caller::new(
            Principal::telegram(account_id, delivery.telegram_user_id),
            origin,
        );
        let (Some(store_id), Some(permission)) = (delivery.store_id, &delivery.permission) else {
            return Ok(Some(caller));
        };
        let store_id = StoreId(store_id);
        let allowed = match permission.as_str() {
            "ReviewReceipts" => self
                .authorize_visible::<grant::ReviewReceipts>(&caller, store_id)
                .await?
                .is_some(),
            "ViewOrders" => self
                .authorize_visible::<grant::ViewOrders>(&caller, store_id)
                .await?
                .is_some(),
            "ManageStock" => self
                .authorize_visible::<grant::ManageStock>(&caller, store_id)
                .await?
                .is_some(),
            _ => false,
        };
        Ok(allowed.then_some(caller))
    }

    /// Marks a delivery sent.
    pub async fn delivery_sent(&self, delivery_id: Uuid) -> Result<(), AppError> {
        sqlx::query(
            "update notification_deliveries set status = 'sent', sent_at = now(),
                    attempts = attempts + 1, last_error = null
              where delivery_id = $1",
        )
        .bind(delivery_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a delivery skipped: nothing was sent, on purpose (see `recipient`).
    pub async fn delivery_skipped(&self, delivery_id: Uuid) -> Result<(), AppError> {
        sqlx::query(
            "update notification_deliveries set status = 'skipped', attempts = attempts + 1
              where delivery_id = $1",
        )
        .bind(delivery_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed attempt: retried after `retry_in` (`None`: now failed for good, as
    /// after [`MAX_DELIVERY_ATTEMPTS`]).
    pub async fn delivery_failed(
        &self,
        delivery_id: Uuid,
        error: &str,
        retry_in: Option<std::time::Duration>,
    ) -> Result<(), AppError> {
        let seconds = retry_in.map(|d| d.as_secs_f64());
        sqlx::query(
            "update notification_deliveries
                set attempts = attempts + 1, last_error = left($2, 2000),
                    status = case when $3::float8 is null or attempts + 1 >= $4 then 'failed'
                                  else 'pending' end,
                    next_attempt_at = now() + make_interval(secs => coalesce($3, 0))
              where delivery_id = $1",
        )
        .bind(delivery_id)
        .bind(error)
        .bind(seconds)
        .bind(MAX_DELIVERY_ATTEMPTS)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The store roles a permission (named as in the matrix, e.g. `ReviewReceipts`) is granted to.
fn roles_allowed(permission: &str) -> Vec<&'static str> {
    MATRIX
        .iter()
        .filter(|(p, _, _)| p.as_str() == permission)
        .flat_map(|(_, _, roles)| roles.iter().map(|r| r.as_str()))
        .collect()
}

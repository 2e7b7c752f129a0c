//! The owners' daily summary: once a store's local day has ended, a low-priority notification
//! for its owners with the day's figures from the `kpis` read model (orders placed, paid,
//! revenue). Run by a leader job (`daily-summaries`, `src/startup.rs`); recorded in the
//! notification outbox like any other notification, so the delivery worker puts it in the
//! owners' notification centers (low priority: no push channel).
//!
//! Once per store and day: `daily_summaries (store_id, day)` is claimed in the transaction that
//! records the outbox row. A day before the store was opened is not summarised.

use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;
use projections::outbox::Priority;
use projections::read_models::catalog::queries as catalog;
use projections::read_models::kpis::queries as kpis;
use serde_json::json;

use super::{App, AppError};

/// How often the job looks for ended days.
pub const DAILY_SUMMARY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

impl App {
    /// Records the summary of the last ended local day of every store not summarised yet for
    /// it; returns how many were recorded.
    #[tracing::instrument(skip(self))]
    pub async fn record_daily_summaries(&self, now: DateTime<Utc>) -> Result<usize, AppError> {
        let mut recorded = 0;
        for store in catalog::store_zones(&self.pool).await? {
            let Ok(zone) = store.timezone.parse::<Tz>() else {
                continue;
            };
            let Some(day) = now.with_timezone(&zone).date_naive().pred_opt() else {
                continue;
            };
            let day_start = zone
                .from_local_datetime(&day.and_time(chrono::NaiveTime::MIN))
                .earliest()
                .map(|start| start.with_timezone(&Utc))
                .unwrap_or(now - Duration::days(1));
            if store.created_at > day_start {
                continue;
            }
            let figures = kpis::dashboard(&self.pool, store.store_id, day, day).await?;
            let (orders, paid, revenue, currency) = figures
                .map(|d| {
                    (
                        d.orders_placed,
                        d.orders_paid,
                        i64::try_from(d.revenue_minor).unwrap_or(i64::MAX),
                        d.currency,
                    )
                })
                .unwrap_or_default();
            let mut tx = self.pool.begin().await?;
            let claimed = sqlx::query(
                "insert into daily_summaries (store_id, day) values ($1, $2)
                 on conflict do nothing",
            )
            .bind(store.store_id)
            .bind(day)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 0 {
                continue;
            }
            let head = projections::log::last_committed(&mut *tx)
                .await?
                .map_or(0, |p| p.global_position);
            // To the store's owners (a store, no permission); never replayed, like the rest of
            // the outbox. A platform without a single event since the last summary has nothing
            // new at this log position: the row is then not recorded again.
            sqlx::query(
                "insert into notification_outbox
                        (global_position, store_id, kind, params, created_at, priority)
                 values ($1, $2, 'daily_summary', $3, $4, $5)
                 on conflict do nothing",
            )
            .bind(head)
            .bind(store.store_id)
            .bind(json!({
                "store_id": store.store_id,
                "day": day.to_string(),
                "orders": orders,
                "paid": paid,
                "revenue_minor": revenue,
                "currency": currency,
            }))
            .bind(now)
            .bind(Priority::Low)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            recorded += 1;
        }
        Ok(recorded)
    }
}

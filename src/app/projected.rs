//! Read-your-writes for queries: a resource created a moment ago may not be in its read model
//! yet. Rather than answer 404 (or read the write side), a query waits, briefly, for the
//! projection to apply the resource's events.

use std::time::Duration;

use projections::runtime::CheckpointWatch;
use projections::LogPosition;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::{App, AppError};

/// How long a query waits for a projection to catch up with a resource that exists.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(2);

impl App {
    /// Reads the read-model row that `query` (one `$1` = `id`) selects; when it is not there
    /// yet but the aggregate `aggregate_type`/`id` exists, waits for `projection` to apply it
    /// (see [`App::await_projected`]) and reads again. `None`: no such resource.
    pub async fn fetch_projected<T>(
        &self,
        projection: &str,
        aggregate_type: &str,
        id: Uuid,
        query: &str,
    ) -> Result<Option<T>, AppError>
    where
        T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        let fetch = || {
            sqlx::query_as::<_, T>(query)
                .bind(id)
                .fetch_optional(&self.pool)
        };
        let row = fetch().await?;
        if row.is_none()
            && self
                .await_projected(projection, aggregate_type, &id.to_string())
                .await?
        {
            // Created a moment ago: projected now.
            return Ok(fetch().await?);
        }
        Ok(row)
    }

    /// Waits until `projection` has applied the last event of the aggregate `aggregate_type`
    /// / `aggregate_id`, at most [`READ_YOUR_WRITES_WAIT`]. `false` when the aggregate has no
    /// events (it does not exist) or the projection did not get there in time.
    pub async fn await_projected(
        &self,
        projection: &str,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<bool, AppError> {
        let last: Option<(i64, i64)> = sqlx::query_as(
            "select transaction_id::text::bigint, global_position from events \
             where aggregate_type = $1 and aggregate_id = $2 order by sequence desc limit 1",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((transaction_id, global_position)) = last else {
            return Ok(false);
        };
        let watch = self
            .checkpoints
            .get_or_init(|| async { CheckpointWatch::start(self.pool.clone()) })
            .await;
        let position = LogPosition {
            transaction_id,
            global_position,
        };
        Ok(watch
            .wait_for_position(&[projection], position, READ_YOUR_WRITES_WAIT)
            .await?)
    }
}

//! Read-your-writes (docs/adr/0006-read-your-writes.md): what a caller reads right after a
//! write comes from the read models once they have reached the write's place in the global
//! log; nothing is ever read from the write side instead. The wait is brief
//! ([`App::read_your_writes_wait`]) and woken by checkpoint notifications on the process's one
//! listener.
//!
//! - A command knows its position: [`Decided::position`], the global position of its last
//!   event. An adapter answering with a view waits for the read models it shows
//!   ([`App::read_after`]), then reads them through the same query function a query uses.
//! - A query for one resource by id that its read model does not hold yet (written a moment
//!   ago through another door: the bot, a process manager) looks up the position of the
//!   resource's last event in the log (never loading the aggregate) and waits for that
//!   ([`App::read_projected`]); a resource with no events is simply not found.

use std::future::Future;
use std::time::Duration;

use projections::runtime::CheckpointWatch;
use projections::LogPosition;

use super::{App, AppError, Decided};

/// How long a read waits for the read models to catch up with a write, unless configured
/// otherwise (`--read-your-writes-wait-ms`, `App::read_your_writes_wait`).
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(2);

impl<T> Decided<T> {
    /// The same decision with its outcome mapped (the position stays).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Decided<U> {
        Decided {
            outcome: f(self.outcome),
            position: self.position,
        }
    }
}

impl App {
    /// Reads what `read` returns from the read models `read_models` once they reflect a write
    /// whose last event is at global position `position` (`None`: it wrote nothing, so there
    /// is nothing to wait for). `None` when they did not get there within
    /// [`App::read_your_writes_wait`] (or `read` finds nothing): the write stands, only its view is
    /// not there yet.
    pub async fn read_after<T, F, Fut>(
        &self,
        read_models: &[&str],
        position: Option<i64>,
        read: F,
    ) -> Result<Option<T>, AppError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, sqlx::Error>>,
    {
        if !self.reached(read_models, position).await? {
            return Ok(None);
        }
        Ok(read().await?)
    }

    /// Waits until every one of `read_models` has applied the event at global position
    /// `position`, at most [`App::read_your_writes_wait`]; `false` if they did not in time.
    pub async fn reached(
        &self,
        read_models: &[&str],
        position: Option<i64>,
    ) -> Result<bool, AppError> {
        let Some(position) = position else {
            return Ok(true);
        };
        let Some(position) = projections::log::position_of(&self.pool, position).await? else {
            return Err(AppError::Internal(
                format!("no event at global position {position}").into(),
            ));
        };
        self.wait_for(read_models, position).await
    }

    /// What `read` returns from the read models `read_models`; when it finds nothing but the
    /// aggregate `aggregate_type`/`id` has events, waits for the read models to apply its last
    /// one (see [`App::await_projected`]) and reads again. `None`: no such resource.
    pub async fn read_projected<T, F, Fut>(
        &self,
        read_models: &[&str],
        aggregate_type: &str,
        id: &str,
        read: F,
    ) -> Result<Option<T>, AppError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<T>, sqlx::Error>>,
    {
        if let Some(row) = read().await? {
            return Ok(Some(row));
        }
        if self.await_resource(read_models, aggregate_type, id).await? {
            // Written a moment ago: projected now.
            return Ok(read().await?);
        }
        Ok(None)
    }

    /// Waits until `projection` has applied the last event of the aggregate `aggregate_type`
    /// / `aggregate_id`, at most [`App::read_your_writes_wait`]. `false` when the aggregate has no
    /// events (it does not exist) or the projection did not get there in time.
    pub async fn await_projected(
        &self,
        projection: &str,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<bool, AppError> {
        self.await_resource(&[projection], aggregate_type, aggregate_id)
            .await
    }

    async fn await_resource(
        &self,
        read_models: &[&str],
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
        let position = LogPosition {
            transaction_id,
            global_position,
        };
        self.wait_for(read_models, position).await
    }

    pub(super) async fn wait_for(
        &self,
        read_models: &[&str],
        position: LogPosition,
    ) -> Result<bool, AppError> {
        let watch = self
            .checkpoints
            .get_or_init(|| async { CheckpointWatch::start(self.pool.clone()) })
            .await;
        Ok(watch
            .wait_for_position(read_models, position, self.read_your_writes_wait)
            .await?)
    }
}

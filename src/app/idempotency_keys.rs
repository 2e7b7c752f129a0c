//! The `idempotency_keys` table: what the HTTP edge's `Idempotency-Key` middleware
//! (`src/http/idempotency.rs`) remembers of each keyed request. A row is claimed by the first
//! request (`in_progress`, leased), completed with its sealed response, or released so a retry
//! runs again; expired rows count as absent and are purged in batches. The middleware hashes and
//! seals; this module only keeps the rows.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Rows deleted per purge statement, so a purge never holds many locks at once.
const PURGE_BATCH: i64 = 1000;

/// A row as a replay needs it.
#[derive(Debug, sqlx::FromRow)]
pub struct StoredResponse {
    pub fingerprint: Vec<u8>,
    pub state: String,
    pub operation: Option<String>,
    pub status: Option<i16>,
    pub headers: Option<Value>,
    /// Sealed by the middleware.
    pub body: Option<Vec<u8>>,
}

/// What became of a claim on a key.
#[derive(Debug)]
pub enum Claim {
    /// This request runs; `claim_id` lets only it complete or release the row.
    Owned { claim_id: Uuid },
    /// The first request with this key and fingerprint completed: answer what it answered.
    Replay(StoredResponse),
    /// The first request is still running.
    InFlight,
    /// The key was used for a request with another fingerprint.
    Reused,
}

/// Claims key `id` for a request with `fingerprint`, or says what became of the request that
/// did. A claim older than `lease` that is still in progress (its instance died) and an expired
/// row are taken over; a completed row is kept for `ttl`.
pub async fn claim(
    pool: &PgPool,
    id: &[u8],
    fingerprint: &[u8],
    lease: Duration,
    ttl: Duration,
) -> Result<Claim, sqlx::Error> {
    // Between a failed claim and the read, the row may be released or expire: try again.
    for _ in 0..3 {
        let claim_id = Uuid::now_v7();
        let claimed: Option<Uuid> = sqlx::query_scalar(
            "insert into idempotency_keys (id, claim_id, fingerprint, state, locked_until, expires_at)
             values ($1, $2, $3, 'in_progress', now() + $4 * interval '1 second',
                     now() + $5 * interval '1 second')
             on conflict (id) do update
                set claim_id = excluded.claim_id, fingerprint = excluded.fingerprint,
                    state = 'in_progress', operation = null, status = null, headers = null,
                    body = null, created_at = now(), locked_until = excluded.locked_until,
                    expires_at = excluded.expires_at
              where idempotency_keys.expires_at <= now()
                 or (idempotency_keys.state = 'in_progress' and idempotency_keys.locked_until <= now())
             returning claim_id",
        )
        .bind(id)
        .bind(claim_id)
        .bind(fingerprint)
        .bind(lease.as_secs_f64())
        .bind(ttl.as_secs_f64())
        .fetch_optional(pool)
        .await?;
        if claimed.is_some() {
            return Ok(Claim::Owned { claim_id });
        }
        let stored: Option<StoredResponse> = sqlx::query_as(
            "select fingerprint, state, operation, status, headers, body from idempotency_keys
              where id = $1 and expires_at > now()",
        )
        .bind(id)
        .fetch_optional(pool)
        .await?;
        match stored {
            None => continue,
            Some(stored) if stored.fingerprint != fingerprint => return Ok(Claim::Reused),
            Some(stored) if stored.state != "completed" => return Ok(Claim::InFlight),
            Some(stored) => return Ok(Claim::Replay(stored)),
        }
    }
    Ok(Claim::InFlight)
}

/// Records the response of the request holding claim `claim_id` on key `id`.
pub async fn complete(
    pool: &PgPool,
    id: &[u8],
    claim_id: Uuid,
    status: i16,
    headers: Value,
    sealed_body: Vec<u8>,
    operation: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update idempotency_keys
            set state = 'completed', status = $3, headers = $4, body = $5, operation = $6
          where id = $1 and claim_id = $2",
    )
    .bind(id)
    .bind(claim_id)
    .bind(status)
    .bind(headers)
    .bind(sealed_body)
    .bind(operation)
    .execute(pool)
    .await?;
    Ok(())
}

/// Gives key `id` back (only if claim `claim_id` still holds it), so a retry runs again.
pub async fn release(pool: &PgPool, id: &[u8], claim_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("delete from idempotency_keys where id = $1 and claim_id = $2")
        .bind(id)
        .bind(claim_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes every expired key, a batch at a time; returns how many.
pub async fn purge(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut purged = 0;
    loop {
        let deleted = sqlx::query(
            "delete from idempotency_keys where id in
               (select id from idempotency_keys where expires_at <= now() limit $1)",
        )
        .bind(PURGE_BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        purged += deleted;
        if deleted < PURGE_BATCH as u64 {
            return Ok(purged);
        }
    }
}

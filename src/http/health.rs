//! Liveness and readiness probes.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use sqlx::PgPool;

use super::error::DATABASE_RETRY_AFTER_SECONDS;
use super::problem::Problem;

#[derive(Tags)]
enum ApiTags {
    /// Probes for orchestrators and load balancers.
    Health,
}

/// The service's state.
#[derive(Debug, Clone, Object)]
pub struct HealthStatus {
    /// `ok` when the check passed.
    pub status: String,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// The service can serve requests: the database answers.
    #[oai(status = 200)]
    Ready(Json<HealthStatus>),
    /// The database does not answer; probe again after `Retry-After` seconds.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] u64),
}

pub struct HealthApi {
    pub pool: PgPool,
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness: the process is up and serving HTTP.
    #[oai(path = "/health/live", method = "get", operation_id = "health_live")]
    async fn live(&self) -> Json<HealthStatus> {
        Json(HealthStatus {
            status: "ok".into(),
        })
    }

    /// Readiness: the database answers a query within two seconds.
    #[oai(path = "/health/ready", method = "get", operation_id = "health_ready")]
    async fn ready(&self) -> ReadyResponse {
        let check = sqlx::query_scalar::<_, i32>("select 1").fetch_one(&self.pool);
        match tokio::time::timeout(std::time::Duration::from_secs(2), check).await {
            Ok(Ok(_)) => ReadyResponse::Ready(Json(HealthStatus {
                status: "ok".into(),
            })),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "readiness check failed");
                not_ready("the database did not answer")
            }
            Err(_) => not_ready("the database did not answer within 2 s"),
        }
    }
}

/// 503 `database-unavailable`, as every endpoint answers while the database is away.
fn not_ready(detail: &str) -> ReadyResponse {
    ReadyResponse::Unavailable(
        Json(Problem::new(
            "database-unavailable",
            "Database unavailable",
            503,
            detail.to_owned(),
        )),
        DATABASE_RETRY_AFTER_SECONDS,
    )
}

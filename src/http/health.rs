//! Liveness and readiness probes.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use projections::maintenance::{self, FailedProjection};
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
    /// `ok` when the check passed. Readiness says `degraded` when a projection has stopped at
    /// an event it cannot apply: the service still serves, but that read model no longer
    /// advances until it is rebuilt or restarted (docs/operations.md).
    pub status: String,
    /// What is degraded, in words: which projection stopped, at which event, and why.
    #[oai(skip_serializing_if_is_none)]
    pub detail: Option<String>,
    /// The projections stopped at an event, by name.
    #[oai(default, skip_serializing_if_is_empty)]
    pub failed_projections: Vec<FailedProjectionView>,
}

impl HealthStatus {
    fn ok() -> Self {
        Self {
            status: "ok".into(),
            detail: None,
            failed_projections: Vec::new(),
        }
    }
}

/// A projection stopped at an event it cannot apply (`shopfront projections status` shows the
/// same).
#[derive(Debug, Clone, Object)]
pub struct FailedProjectionView {
    pub name: String,
    /// Global position of the event it stopped at.
    #[oai(skip_serializing_if_is_none)]
    pub failed_position: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub failed_event_type: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<String>,
}

impl From<FailedProjection> for FailedProjectionView {
    fn from(failed: FailedProjection) -> Self {
        Self {
            name: failed.name,
            failed_position: failed.failed_position,
            failed_event_type: failed.failed_event_type,
            error: failed.last_error,
        }
    }
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// The service can serve requests: the database answers. `status` is `degraded` (and
    /// `failed_projections` names them) when a projection has stopped.
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
        Json(HealthStatus::ok())
    }

    /// Readiness: the database answers a query within two seconds. A stopped projection is
    /// reported (`degraded`) but does not make the service unready: it is shared by every
    /// instance, so failing readiness would take them all out of the load balancer together,
    /// and hold back the very deploy that fixes it.
    #[oai(path = "/health/ready", method = "get", operation_id = "health_ready")]
    async fn ready(&self) -> ReadyResponse {
        let names = projections::read_models::names();
        let check = maintenance::failed(&self.pool, &names);
        match tokio::time::timeout(std::time::Duration::from_secs(2), check).await {
            Ok(Ok(failed)) if failed.is_empty() => ReadyResponse::Ready(Json(HealthStatus::ok())),
            Ok(Ok(failed)) => {
                let detail = failed
                    .iter()
                    .map(|f| {
                        format!(
                            "projection {} stopped at global position {} ({}): {}",
                            f.name,
                            f.failed_position
                                .map_or_else(|| "?".to_owned(), |p| p.to_string()),
                            f.failed_event_type.as_deref().unwrap_or("?"),
                            f.last_error.as_deref().unwrap_or("no error recorded")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                ReadyResponse::Ready(Json(HealthStatus {
                    status: "degraded".into(),
                    detail: Some(detail),
                    failed_projections: failed.into_iter().map(Into::into).collect(),
                }))
            }
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

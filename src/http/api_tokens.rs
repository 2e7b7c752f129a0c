//! `/api/v1/api-tokens`: long-lived tokens for API clients and auditors, scoped to stores and a
//! role, optionally read-only; shown once, revocable. Managing them needs a signed-in session.

use std::sync::Arc;

use aggregates::{StoreId, StoreRole};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use uuid::Uuid;

use super::auth::{ApiTags, BearerAuth};
use super::error::ApiError;
use crate::app::{ApiToken, App, NewApiToken};

/// The store role an API token acts in (never more than its owner's current role).
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApiTokenRole {
    Owner,
    Admin,
    Vendor,
    Auditor,
}

impl From<StoreRole> for ApiTokenRole {
    fn from(role: StoreRole) -> Self {
        match role {
            StoreRole::Owner => ApiTokenRole::Owner,
            StoreRole::Admin => ApiTokenRole::Admin,
            StoreRole::Vendor => ApiTokenRole::Vendor,
            StoreRole::Auditor => ApiTokenRole::Auditor,
        }
    }
}

impl From<ApiTokenRole> for StoreRole {
    fn from(role: ApiTokenRole) -> Self {
        match role {
            ApiTokenRole::Owner => StoreRole::Owner,
            ApiTokenRole::Admin => StoreRole::Admin,
            ApiTokenRole::Vendor => StoreRole::Vendor,
            ApiTokenRole::Auditor => StoreRole::Auditor,
        }
    }
}

/// A token to create.
#[derive(Object)]
pub struct CreateApiTokenRequest {
    /// What the token is for (e.g. "accounting export").
    #[oai(validator(min_length = 1, max_length = 100))]
    pub name: String,
    /// The stores it may act in; the caller needs a role at least as strong in each.
    #[oai(validator(min_items = 1, max_items = 100))]
    pub store_ids: Vec<Uuid>,
    pub role: ApiTokenRole,
    /// Only viewing permissions (always so for AUDITOR).
    #[oai(default)]
    pub read_only: bool,
    /// When it stops working; never, if absent.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A token as listed (never its secret).
#[derive(Object)]
pub struct ApiTokenView {
    pub token_id: Uuid,
    pub name: String,
    /// The first characters of the token, to recognise it.
    pub token_prefix: String,
    pub store_ids: Vec<Uuid>,
    pub role: ApiTokenRole,
    pub read_only: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<ApiToken> for ApiTokenView {
    fn from(token: ApiToken) -> Self {
        Self {
            token_id: token.token_id,
            name: token.name,
            token_prefix: token.token_prefix,
            store_ids: token.store_ids.into_iter().map(|s| s.0).collect(),
            role: token.role.into(),
            read_only: token.read_only,
            created_at: token.created_at,
            expires_at: token.expires_at,
            last_used_at: token.last_used_at,
            revoked_at: token.revoked_at,
        }
    }
}

/// A token just created.
#[derive(Object)]
pub struct CreatedApiTokenView {
    /// The secret, shown this once: send as `Authorization: Bearer <token>`.
    pub token: String,
    #[oai(flatten)]
    pub info: ApiTokenView,
}

#[derive(ApiResponse)]
pub enum CreatedResponse {
    /// Created; store `token` now, it is not shown again.
    #[oai(status = 201)]
    Created(Json<CreatedApiTokenView>),
}

#[derive(ApiResponse)]
pub enum Revoked {
    /// Revoked; the token stops working at once.
    #[oai(status = 204)]
    Done,
}

pub struct ApiTokensApi {
    pub app: Arc<App>,
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::ApiTokens")]
impl ApiTokensApi {
    /// Create an API token scoped to stores and a role.
    #[oai(
        path = "/api-tokens",
        method = "post",
        operation_id = "api_tokens_create"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        body: Json<CreateApiTokenRequest>,
    ) -> Result<CreatedResponse, ApiError> {
        let body = body.0;
        let created = self
            .app
            .create_api_token(
                &auth.0,
                NewApiToken {
                    name: body.name,
                    store_ids: body.store_ids.into_iter().map(StoreId).collect(),
                    role: body.role.into(),
                    read_only: body.read_only,
                    expires_at: body.expires_at,
                },
            )
            .await?;
        Ok(CreatedResponse::Created(Json(CreatedApiTokenView {
            token: created.token,
            info: created.info.into(),
        })))
    }

    /// The caller's API tokens, newest first (revoked ones too, with `revoked_at`).
    #[oai(path = "/api-tokens", method = "get", operation_id = "api_tokens_list")]
    async fn list(&self, auth: BearerAuth) -> Result<Json<Vec<ApiTokenView>>, ApiError> {
        let tokens = self.app.api_tokens(&auth.0).await?;
        Ok(Json(tokens.into_iter().map(Into::into).collect()))
    }

    /// Revoke one of the caller's API tokens.
    #[oai(
        path = "/api-tokens/:token_id",
        method = "delete",
        operation_id = "api_tokens_revoke"
    )]
    async fn revoke(&self, auth: BearerAuth, token_id: Path<Uuid>) -> Result<Revoked, ApiError> {
        self.app.revoke_api_token(&auth.0, token_id.0).await?;
        Ok(Revoked::Done)
    }
}

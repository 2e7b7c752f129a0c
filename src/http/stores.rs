//! `/api/v1/stores`: create stores, read and change their settings, list and manage staff.

use std::sync::Arc;

use aggregates::store::{StoreName, TimeZone};
use aggregates::{AccountId, StoreId, StoreRole};
use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Tags};
use uuid::Uuid;

use projections::read_models::catalog::queries::{self as catalog, MemberStore};

use super::auth::BearerAuth;
use super::context::caller;
use super::error::ApiError;
use super::types::{
    decode_cursor, page_of, page_size, parse_currency, BulkResponse, Changed, Page, PendingView,
};
use crate::app::grant;
use crate::app::{App, AppError, NewStore, StaffMember, StoreSettingsChange};

/// The read model store and staff views come from.
const CATALOG: &str = "catalog";

#[derive(Tags)]
enum ApiTags {
    /// Stores, their settings and staff.
    Stores,
}

/// A staff role within one store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename = "StoreRole", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RoleName {
    Owner,
    Admin,
    Vendor,
    Auditor,
}

impl From<RoleName> for StoreRole {
    fn from(role: RoleName) -> Self {
        match role {
            RoleName::Owner => StoreRole::Owner,
            RoleName::Admin => StoreRole::Admin,
            RoleName::Vendor => StoreRole::Vendor,
            RoleName::Auditor => StoreRole::Auditor,
        }
    }
}

/// A store to create.
#[derive(Debug, Object)]
pub struct CreateStoreRequest {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: String,
    /// ISO 4217; fixed for the store's lifetime.
    #[oai(validator(min_length = 3, max_length = 3))]
    pub currency: String,
    /// IANA time zone, e.g. `Europe/Moscow`; days in analytics are local days.
    #[oai(validator(max_length = 64))]
    pub timezone: String,
    /// Bank details shown to customers when they pay.
    #[oai(validator(min_length = 1, max_length = 2000))]
    pub payment_instructions: String,
    /// Default 5.
    #[oai(validator(maximum(value = "1000000")))]
    pub default_low_stock_threshold: Option<u32>,
    /// How long an unpaid order holds its stock. Default 60 (5 to 43200).
    pub reservation_ttl_minutes: Option<u32>,
    /// The account to become the store's owner; the creator when absent.
    pub owner_id: Option<Uuid>,
}

/// Settings to change; absent fields stay as they are, unknown ones are refused.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct UpdateStoreRequest {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Option<String>,
    /// Fixed at creation: only the store's own currency is accepted here (anything else is 422
    /// `store-currency-immutable`).
    #[oai(validator(max_length = 3))]
    pub currency: Option<String>,
    #[oai(validator(max_length = 64))]
    pub timezone: Option<String>,
    #[oai(validator(min_length = 1, max_length = 2000))]
    pub payment_instructions: Option<String>,
    #[oai(validator(maximum(value = "1000000")))]
    pub default_low_stock_threshold: Option<u32>,
    pub reservation_ttl_minutes: Option<u32>,
}

/// A store and its settings.
#[derive(Debug, Object)]
#[oai(rename = "Store")]
pub struct StoreView {
    pub store_id: Uuid,
    pub name: String,
    pub currency: String,
    pub timezone: String,
    pub payment_instructions: String,
    pub default_low_stock_threshold: i32,
    pub reservation_ttl_minutes: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The caller's role in this store (absent for a platform admin without one).
    #[oai(skip_serializing_if_is_none)]
    pub my_role: Option<String>,
}

impl StoreView {
    fn of(store: catalog::Store, my_role: Option<String>) -> Self {
        Self {
            store_id: store.store_id,
            name: store.name,
            currency: store.currency,
            timezone: store.timezone,
            payment_instructions: store.payment_instructions,
            default_low_stock_threshold: store.default_low_stock_threshold,
            reservation_ttl_minutes: store.reservation_ttl_minutes,
            created_at: store.created_at,
            updated_at: store.updated_at,
            my_role,
        }
    }
}

impl From<MemberStore> for StoreView {
    fn from(member: MemberStore) -> Self {
        Self::of(member.store, member.role)
    }
}

/// Someone on a store's staff.
#[derive(Debug, Object)]
#[oai(rename = "StaffMember")]
pub struct StaffView {
    pub account_id: Uuid,
    pub role: String,
    /// The login e-mail, for staff who log in with one (absent once erased).
    #[oai(skip_serializing_if_is_none)]
    pub email: Option<String>,
    pub assigned_by: Uuid,
    pub assigned_at: DateTime<Utc>,
}

impl From<StaffMember> for StaffView {
    fn from(staff: StaffMember) -> Self {
        Self {
            account_id: staff.member.account_id,
            role: staff.member.role,
            email: staff.email,
            assigned_by: staff.member.assigned_by,
            assigned_at: staff.member.assigned_at,
        }
    }
}

/// Give someone a role (or change theirs). Name them by account id or by login e-mail.
#[derive(Debug, Object)]
pub struct AssignRoleRequest {
    pub account_id: Option<Uuid>,
    #[oai(validator(max_length = 254))]
    pub email: Option<String>,
    pub role: RoleName,
}

/// An account to make an owner of a store, by account id or by login e-mail.
#[derive(Debug, Object)]
pub struct OwnerRequest {
    pub account_id: Option<Uuid>,
    #[oai(validator(max_length = 254))]
    pub email: Option<String>,
}

/// One change of a bulk staff request: a role to give, or (without `role`) a role to take.
#[derive(Debug, Object)]
pub struct StaffChange {
    pub account_id: Uuid,
    /// Absent: revoke the account's role.
    pub role: Option<RoleName>,
}

/// Many staff changes at once; each succeeds or fails on its own.
#[derive(Debug, Object)]
pub struct BulkStaffRequest {
    #[oai(validator(min_items = 1, max_items = 100))]
    pub changes: Vec<StaffChange>,
}

#[derive(ApiResponse)]
pub enum StoreCreated {
    /// The store exists; its creator (or `owner_id`) is its owner.
    #[oai(status = 201)]
    Created(Json<StoreView>, #[oai(header = "Location")] String),
    /// The store exists, but the catalog did not show it in time (2 s by default): GET
    /// `Location` shortly (do not create it again).
    #[oai(status = 202)]
    Pending(Json<PendingView>, #[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
pub enum StaffRemoved {
    /// The role is revoked.
    #[oai(status = 204)]
    Done,
}

pub struct StoresApi {
    pub app: Arc<App>,
}

/// How a request names an account: by id or by login e-mail.
enum NamedAccount<'a> {
    Id(AccountId),
    Email(&'a str),
}

/// The account a body names by exactly one of `account_id` and `email` (else 422).
fn named_account(id: Option<Uuid>, email: Option<&str>) -> Result<NamedAccount<'_>, ApiError> {
    match (id, email) {
        (Some(id), None) => Ok(NamedAccount::Id(AccountId(id))),
        (None, Some(email)) => Ok(NamedAccount::Email(email)),
        _ => Err(AppError::invalid(
            "account_id",
            "name the account by exactly one of account_id or email",
        )
        .into()),
    }
}

fn store_not_found() -> ApiError {
    AppError::Store(aggregates::store::StoreError::NotFound).into()
}

#[OpenApi(prefix_path = "/api/v1/stores", tag = "ApiTags::Stores")]
impl StoresApi {
    /// Create a store (platform admins only). Its currency is fixed from now on.
    #[oai(path = "/", method = "post", operation_id = "stores_create")]
    async fn create(
        &self,
        req: &Request,
        auth: BearerAuth,
        body: Json<CreateStoreRequest>,
    ) -> Result<StoreCreated, ApiError> {
        let caller = caller(req, auth.0);
        let body = body.0;
        let admin = self.app.require_platform_admin(&caller).await?;
        let store = NewStore {
            owner_id: body.owner_id.map(AccountId).unwrap_or(caller.account_id()),
            name: StoreName::parse(&body.name).map_err(AppError::from)?,
            currency: parse_currency(&body.currency, "currency")?,
            timezone: TimeZone::parse(&body.timezone).map_err(AppError::from)?,
            payment_instructions: body.payment_instructions,
            default_low_stock_threshold: body.default_low_stock_threshold.unwrap_or(5),
            reservation_ttl_minutes: body.reservation_ttl_minutes.unwrap_or(60),
        };
        let owner = store.owner_id;
        let written = self.app.create_store(&admin, store).await?;
        let store_id = written.outcome;
        let role = (owner == caller.account_id()).then(|| StoreRole::Owner.to_string());
        let location = format!("/api/v1/stores/{store_id}");
        let store = self
            .app
            .read_after(&[CATALOG], written.position, || {
                catalog::store(&self.app.pool, store_id.0)
            })
            .await?;
        Ok(match store {
            Some(store) => StoreCreated::Created(Json(StoreView::of(store, role)), location),
            None => StoreCreated::Pending(
                Json(PendingView::new(location.clone(), written.position)),
                location,
            ),
        })
    }

    /// The stores the caller works in, with their role; a platform admin sees every store.
    #[oai(path = "/", method = "get", operation_id = "stores_list")]
    async fn list(
        &self,
        req: &Request,
        auth: BearerAuth,
        /// From `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<u32>>,
    ) -> Result<Json<Page<StoreView>>, ApiError> {
        let limit = page_size(limit.0);
        let after: Option<(DateTime<Utc>, Uuid)> =
            cursor.0.as_deref().map(decode_cursor).transpose()?;
        let caller = caller(req, auth.0);
        let rows = self.app.stores_of(&caller, after, limit + 1).await?;
        Ok(Json(page_of(
            rows,
            limit,
            |s| (s.store.created_at, s.store.store_id),
            StoreView::from,
        )))
    }

    /// One store and its settings.
    #[oai(path = "/:store_id", method = "get", operation_id = "stores_get")]
    async fn get(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
    ) -> Result<Json<StoreView>, ApiError> {
        let caller = caller(req, auth.0);
        let store_id = StoreId(store_id.0);
        let role = self
            .app
            .authorize::<grant::ViewStore>(&caller, store_id)
            .await?
            .role();
        // A store created a moment ago may not be in the catalog yet: wait for it, briefly.
        let store = self
            .app
            .read_projected(&[CATALOG], "Store", &store_id.to_string(), || {
                catalog::store(&self.app.pool, store_id.0)
            })
            .await?
            .ok_or_else(store_not_found)?;
        Ok(Json(StoreView::of(store, Some(role.to_string()))))
    }

    /// Change settings (name, time zone, payment instructions, default low-stock threshold,
    /// reservation time). The currency cannot change.
    #[oai(path = "/:store_id", method = "patch", operation_id = "stores_update")]
    async fn update(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
        body: Json<UpdateStoreRequest>,
    ) -> Result<Changed<StoreView>, ApiError> {
        let caller = caller(req, auth.0);
        let store_id = StoreId(store_id.0);
        let access = self
            .app
            .authorize::<grant::ChangeStoreSettings>(&caller, store_id)
            .await?;
        let body = body.0;
        let changes = StoreSettingsChange {
            name: body
                .name
                .as_deref()
                .map(StoreName::parse)
                .transpose()
                .map_err(AppError::from)?,
            currency: body
                .currency
                .map(|code| parse_currency(&code.to_ascii_uppercase(), "currency"))
                .transpose()?,
            timezone: body
                .timezone
                .as_deref()
                .map(TimeZone::parse)
                .transpose()
                .map_err(AppError::from)?,
            payment_instructions: body.payment_instructions,
            default_low_stock_threshold: body.default_low_stock_threshold,
            reservation_ttl_minutes: body.reservation_ttl_minutes,
        };
        let written = self.app.change_store_settings(&access, changes).await?;
        let store = self
            .app
            .read_after(&[CATALOG], written.position, || {
                catalog::store(&self.app.pool, access.store_id().0)
            })
            .await?;
        Ok(Changed::of(
            store.map(|store| StoreView::of(store, Some(access.role().to_string()))),
            format!("/api/v1/stores/{store_id}"),
            written.position,
        ))
    }

    /// The store's staff and their roles.
    #[oai(
        path = "/:store_id/staff",
        method = "get",
        operation_id = "stores_staff_list"
    )]
    async fn staff(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
    ) -> Result<Json<Vec<StaffView>>, ApiError> {
        let caller = caller(req, auth.0);
        let access = self
            .app
            .authorize::<grant::ViewStaff>(&caller, StoreId(store_id.0))
            .await?;
        let staff = self.app.staff(&access).await?;
        Ok(Json(staff.into_iter().map(StaffView::from).collect()))
    }

    /// Give someone a role in the store, or change theirs: owners may assign any role, admins
    /// only VENDOR and AUDITOR (and cannot touch owners or admins).
    #[oai(
        path = "/:store_id/staff",
        method = "post",
        operation_id = "stores_staff_assign"
    )]
    async fn assign(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
        body: Json<AssignRoleRequest>,
    ) -> Result<Changed<StaffView>, ApiError> {
        let caller = caller(req, auth.0);
        let store_id = StoreId(store_id.0);
        let access = self
            .app
            .authorize::<grant::ManageStaff>(&caller, store_id)
            .await?;
        let new_role: StoreRole = body.0.role.into();
        let account_id = match named_account(body.0.account_id, body.0.email.as_deref())? {
            NamedAccount::Id(id) => id,
            // One answer for "no such account" and "that account may not be added", so the
            // e-mails of people outside the store cannot be probed.
            NamedAccount::Email(email) => self
                .app
                .staff_account_by_email(&access, new_role, email)
                .await?
                .ok_or_else(|| {
                    ApiError::unprocessable(
                        "account-not-found",
                        "no account that can be given a role has this e-mail",
                    )
                })?,
        };
        let written = self
            .app
            .assign_staff_role(&access, account_id, new_role)
            .await?;
        let member = if self.app.reached(&[CATALOG], written.position).await? {
            self.app.staff_member(&access, account_id).await?
        } else {
            None
        };
        Ok(Changed::of(
            member.map(StaffView::from),
            format!("/api/v1/stores/{store_id}/staff"),
            written.position,
        ))
    }

    /// Assign or revoke up to 100 roles at once (each within the caller's powers, exactly as
    /// one by one), with a result per account.
    #[oai(
        path = "/:store_id/staff/bulk",
        method = "post",
        operation_id = "stores_staff_bulk"
    )]
    async fn bulk(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
        body: Json<BulkStaffRequest>,
    ) -> Result<Json<BulkResponse>, ApiError> {
        let caller = caller(req, auth.0);
        let store_id = StoreId(store_id.0);
        let access = self
            .app
            .authorize::<grant::ManageStaff>(&caller, store_id)
            .await?;
        let mut results = Vec::with_capacity(body.0.changes.len());
        let mut last = None;
        for change in body.0.changes {
            let account_id = AccountId(change.account_id);
            let outcome = match change.role {
                Some(role) => {
                    self.app
                        .assign_staff_role(&access, account_id, role.into())
                        .await
                }
                None => self.app.revoke_staff_role(&access, account_id).await,
            };
            last = outcome.as_ref().ok().and_then(|w| w.position).max(last);
            results.push((
                change.account_id,
                outcome.map(|_| ()).map_err(ApiError::from),
            ));
        }
        // Answered once the staff list shows the changes (or after the wait, regardless).
        self.app.reached(&[CATALOG], last).await?;
        Ok(Json(BulkResponse::of(results)))
    }

    /// Make an account an OWNER of the store (platform admins only, whether or not they hold
    /// a role there): how a store whose owners are gone, or a demo store, gets one.
    #[oai(
        path = "/:store_id/owners",
        method = "post",
        operation_id = "stores_owner_assign"
    )]
    async fn assign_owner(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
        body: Json<OwnerRequest>,
    ) -> Result<Changed<StaffView>, ApiError> {
        let caller = caller(req, auth.0);
        let admin = self.app.require_platform_admin(&caller).await?;
        let store_id = StoreId(store_id.0);
        let account_id = match named_account(body.0.account_id, body.0.email.as_deref())? {
            NamedAccount::Id(id) => id,
            NamedAccount::Email(email) => self
                .app
                .account_by_email(&admin, email)
                .await?
                .ok_or_else(|| {
                    ApiError::unprocessable("account-not-found", "no staff account has this e-mail")
                })?,
        };
        let written = self
            .app
            .assign_store_owner(&admin, store_id, account_id)
            .await?;
        let member = if self.app.reached(&[CATALOG], written.position).await? {
            self.app.store_member(&admin, store_id, account_id).await?
        } else {
            None
        };
        Ok(Changed::of(
            member.map(StaffView::from),
            format!("/api/v1/stores/{store_id}/staff"),
            written.position,
        ))
    }

    /// Take someone's role in the store away (within the caller's powers; the last owner
    /// cannot be removed).
    #[oai(
        path = "/:store_id/staff/:account_id",
        method = "delete",
        operation_id = "stores_staff_revoke"
    )]
    async fn revoke(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Path<Uuid>,
        account_id: Path<Uuid>,
    ) -> Result<StaffRemoved, ApiError> {
        let caller = caller(req, auth.0);
        let store_id = StoreId(store_id.0);
        let access = self
            .app
            .authorize::<grant::ManageStaff>(&caller, store_id)
            .await?;
        let written = self
            .app
            .revoke_staff_role(&access, AccountId(account_id.0))
            .await?;
        // Answered once the staff list shows it (or after the wait, regardless).
        self.app.reached(&[CATALOG], written.position).await?;
        Ok(StaffRemoved::Done)
    }
}

//! Authorization: one permission matrix for every adapter (HTTP, WebSocket, bot), enforced here
//! in the application layer. Rendered into docs/rbac.md (`shopfront rbac`; a test fails when the
//! document drifts from this table).
//!
//! Roles are per store (`StoreRole`, held by the Store aggregate, the source of truth, so a
//! role granted a moment ago counts at once). A platform admin may create stores; inside a store
//! they have no rights unless they also hold a role there.

use std::marker::PhantomData;

use aggregates::store::{Store, StoreCommand};
use aggregates::{AccountId, OrderId, ProductId, ReceiptId, StoreId, StoreRole};

use projections::read_models::catalog::queries as catalog;

use super::event_store::{Decided, Decision, UnitOfWork};
use super::{App, AppError, Caller, CommandContext};

/// Something a caller may do in a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    ViewStore,
    ChangeStoreSettings,
    ViewStaff,
    ManageStaff,
    ViewProducts,
    ManageProducts,
    ViewStock,
    ManageStock,
    AcknowledgeAlerts,
    ViewOrders,
    PlaceOrdersForCustomers,
    CancelOrders,
    FulfilOrders,
    ViewReceipts,
    SubmitReceipts,
    ReviewReceipts,
    ViewCustomers,
    ManageCustomers,
    ViewAnalytics,
    ViewAuditTrail,
}

use Permission::*;
use StoreRole::{Admin, Auditor, Owner, Vendor};

/// The matrix: who may do what in their own store. Nobody may do anything in another store.
pub const MATRIX: &[(Permission, &str, &[StoreRole])] = &[
    (
        ViewStore,
        "see the store and its settings",
        &[Owner, Admin, Vendor, Auditor],
    ),
    (
        ChangeStoreSettings,
        "change name, timezone, payment instructions, thresholds, reservation TTL",
        &[Owner, Admin],
    ),
    (
        ViewStaff,
        "list staff and their roles",
        &[Owner, Admin, Auditor],
    ),
    (
        ManageStaff,
        "assign and revoke roles (only roles below one's own; owners any)",
        &[Owner, Admin],
    ),
    (
        ViewProducts,
        "list and read products",
        &[Owner, Admin, Vendor, Auditor],
    ),
    (
        ManageProducts,
        "create, edit, reprice, archive products",
        &[Owner, Admin, Vendor],
    ),
    (
        ViewStock,
        "read stock levels, history and alerts",
        &[Owner, Admin, Vendor, Auditor],
    ),
    (
        ManageStock,
        "receive, adjust, set thresholds",
        &[Owner, Admin, Vendor],
    ),
    (
        AcknowledgeAlerts,
        "acknowledge low/out-of-stock alerts",
        &[Owner, Admin, Vendor],
    ),
    (
        ViewOrders,
        "list orders, read an order and its timeline",
        &[Owner, Admin, Vendor, Auditor],
    ),
    (
        PlaceOrdersForCustomers,
        "place an order on behalf of a customer",
        &[Owner, Admin, Vendor],
    ),
    (
        CancelOrders,
        "cancel an order before fulfilment",
        &[Owner, Admin],
    ),
    (
        FulfilOrders,
        "mark orders fulfilled and completed",
        &[Owner, Admin, Vendor],
    ),
    (
        ViewReceipts,
        "see payment receipts and download their files",
        &[Owner, Admin, Vendor, Auditor],
    ),
    (
        SubmitReceipts,
        "upload a payment receipt for a customer's order (customers upload their own)",
        &[Owner, Admin, Vendor],
    ),
    (
        ReviewReceipts,
        "verify or reject receipts (also in bulk)",
        &[Owner, Admin],
    ),
    (
        ViewCustomers,
        "list customers, profiles and lifetime value",
        &[Owner, Admin, Auditor],
    ),
    (
        ManageCustomers,
        "block and unblock customers",
        &[Owner, Admin],
    ),
    (
        ViewAnalytics,
        "KPIs, revenue, store comparison, inventory analytics",
        &[Owner, Admin, Auditor],
    ),
    (
        ViewAuditTrail,
        "the audit trail of the store's events; an aggregate's history and past states, the KPIs as of a day (`/api/v1/audit/…`)",
        &[Owner, Auditor],
    ),
];

/// Whether `role` may exercise `permission` in its store.
pub fn allows(role: StoreRole, permission: Permission) -> bool {
    MATRIX
        .iter()
        .any(|(p, _, roles)| *p == permission && roles.contains(&role))
}

impl Permission {
    /// The permission's stable name (docs/rbac.md, the notification outbox).
    pub fn as_str(self) -> &'static str {
        match self {
            ViewStore => "ViewStore",
            ChangeStoreSettings => "ChangeStoreSettings",
            ViewStaff => "ViewStaff",
            ManageStaff => "ManageStaff",
            ViewProducts => "ViewProducts",
            ManageProducts => "ManageProducts",
            ViewStock => "ViewStock",
            ManageStock => "ManageStock",
            AcknowledgeAlerts => "AcknowledgeAlerts",
            ViewOrders => "ViewOrders",
            PlaceOrdersForCustomers => "PlaceOrdersForCustomers",
            CancelOrders => "CancelOrders",
            FulfilOrders => "FulfilOrders",
            ViewReceipts => "ViewReceipts",
            SubmitReceipts => "SubmitReceipts",
            ReviewReceipts => "ReviewReceipts",
            ViewCustomers => "ViewCustomers",
            ManageCustomers => "ManageCustomers",
            ViewAnalytics => "ViewAnalytics",
            ViewAuditTrail => "ViewAuditTrail",
        }
    }

    /// Whether this only reads (what a read-only API token may still do).
    pub fn is_read(self) -> bool {
        matches!(
            self,
            ViewStore
                | ViewStaff
                | ViewProducts
                | ViewStock
                | ViewOrders
                | ViewReceipts
                | ViewCustomers
                | ViewAnalytics
                | ViewAuditTrail
        )
    }
}

/// Whether `held` allows everything `requested` allows: who may make an API token of which
/// role (an owner any; an admin ADMIN or VENDOR; an auditor AUDITOR — an admin lacks the
/// audit trail, so cannot mint an auditor's token). Derived from the matrix, so it follows it.
pub fn covers(held: StoreRole, requested: StoreRole) -> bool {
    MATRIX
        .iter()
        .all(|(_, _, roles)| !roles.contains(&requested) || roles.contains(&held))
}

/// The role to act in when an API token of role `token` is used by an account holding
/// `account` (permissions are checked against both; this is the role reported and used for
/// assigning roles): the lower on Owner > Admin > Vendor, and Auditor if either is one.
fn weaker(account: StoreRole, token: StoreRole) -> StoreRole {
    let rank = |role: StoreRole| match role {
        Owner => 3,
        Admin => 2,
        Vendor => 1,
        Auditor => 0,
    };
    if rank(token) < rank(account) {
        token
    } else {
        account
    }
}

/// Whether someone holding `assigner` may give (or take away) `role`: owners any role, admins
/// only vendor and auditor, nobody else any.
pub fn can_assign(assigner: StoreRole, role: StoreRole) -> bool {
    match assigner {
        Owner => true,
        Admin => matches!(role, Vendor | Auditor),
        Vendor | Auditor => false,
    }
}

/// docs/rbac.md, rendered from the matrix.
pub fn render_markdown() -> String {
    let roles = [Owner, Admin, Vendor, Auditor];
    let mut out = String::from(
        "# Roles and permissions\n\n\
         Generated from `src/app/authz.rs` by `shopfront rbac`; a test fails when this file and the\n\
         code disagree. Roles are per store: every permission applies to the caller's own store\n\
         only, never another one. A platform admin may create stores and name their owners, and\n\
         manages accounts platform-wide (`/api/v1/users`: find, block, unblock, erase), reads\n\
         an account's history (`/api/v1/audit/aggregates/Account/{id}/events`) and sees\n\
         notification deliveries (`/api/v1/admin/notification-deliveries`); inside a\n\
         store they need a role like anyone else. API tokens never act as a platform admin.\n\n",
    );
    out.push_str("| permission | what it allows |");
    for role in roles {
        out.push_str(&format!(" {} |", role.as_str()));
    }
    out.push_str("\n|---|---|");
    for _ in roles {
        out.push_str(":---:|");
    }
    out.push('\n');
    for (permission, what, _) in MATRIX {
        out.push_str(&format!("| {permission:?} | {what} |"));
        for role in roles {
            out.push_str(if allows(role, *permission) {
                " ✓ |"
            } else {
                " |"
            });
        }
        out.push('\n');
    }
    out.push_str(
        "\n## Assigning roles\n\n\
         | assigner | may assign or revoke |\n|---|---|\n",
    );
    for assigner in roles {
        let assignable: Vec<&str> = roles
            .iter()
            .filter(|r| can_assign(assigner, **r))
            .map(|r| r.as_str())
            .collect();
        let list = if assignable.is_empty() {
            "—".to_owned()
        } else {
            assignable.join(", ")
        };
        out.push_str(&format!("| {} | {list} |\n", assigner.as_str()));
    }
    out.push_str(
        "\nAn admin can neither create an owner or admin nor change the role of one; a store always\n\
         keeps at least one owner (enforced by the Store aggregate).\n",
    );
    out
}

/// A permission as a type, so a service can demand proof of exactly the permission it needs:
/// `StoreAccess<grant::ManageProducts>` is only made by [`App::authorize`] for a caller whose
/// role (and API token) allows `ManageProducts` in that store.
pub trait Grant: Send + Sync + 'static {
    const PERMISSION: Permission;
}

macro_rules! grants {
    ($($permission:ident),* $(,)?) => {
        /// One marker type per [`Permission`] (see [`Grant`]).
        pub mod grant {
            $(
                #[doc = concat!("Proof marker for [`Permission::", stringify!($permission), "`](super::Permission).")]
                #[derive(Debug)]
                pub enum $permission {}
                impl super::Grant for $permission {
                    const PERMISSION: super::Permission = super::Permission::$permission;
                }
            )*
        }
    };
}

grants!(
    ViewStore,
    ChangeStoreSettings,
    ViewStaff,
    ManageStaff,
    ViewProducts,
    ManageProducts,
    ViewStock,
    ManageStock,
    AcknowledgeAlerts,
    ViewOrders,
    PlaceOrdersForCustomers,
    CancelOrders,
    FulfilOrders,
    ViewReceipts,
    SubmitReceipts,
    ReviewReceipts,
    ViewCustomers,
    ManageCustomers,
    ViewAnalytics,
    ViewAuditTrail,
);

/// Proof that a caller may exercise permission `P` in one store, and the context its commands
/// run in. Only [`App::authorize`] (and its variants) make one; every store-scoped service
/// takes one, so no adapter reaches a command without it.
#[derive(Debug)]
pub struct StoreAccess<P: Grant> {
    store_id: StoreId,
    /// The Store as it was loaded to authorize the caller, for the command that follows in the
    /// same request (its currency, settings, blocked customers): loaded once per request.
    store: Store,
    role: StoreRole,
    ctx: CommandContext,
    grant: PhantomData<fn() -> P>,
}

impl<P: Grant> StoreAccess<P> {
    pub fn store_id(&self) -> StoreId {
        self.store_id
    }

    /// The role the caller acts in (for an API token, the weaker of the token's and the
    /// account's).
    pub fn role(&self) -> StoreRole {
        self.role
    }

    /// The account acting.
    pub fn account_id(&self) -> AccountId {
        self.ctx.actor_id.unwrap_or_default()
    }

    pub(crate) fn ctx(&self) -> &CommandContext {
        &self.ctx
    }

    /// The Store as it stood when the caller was authorized.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }
}

/// A resource addressed by its own id, whose store decides who may see it.
#[derive(Clone, Copy, Debug)]
pub enum Resource {
    Product(ProductId),
    Order(OrderId),
    Receipt(ReceiptId),
}

impl App {
    /// Proof that `caller` may exercise `P` in `store_id`; `Forbidden` otherwise (also for
    /// stores that do not exist, so a caller cannot probe other stores' ids).
    ///
    /// Roles are read from the Store aggregate (no lag: a role granted or revoked a moment ago
    /// counts). An API token narrows them further: the store must be in its scope, the token's
    /// role must allow the permission too (and the account's current role still must, so a
    /// token never outlives a revoked role), and a read-only token only views.
    pub async fn authorize<P: Grant>(
        &self,
        caller: &Caller,
        store_id: StoreId,
    ) -> Result<StoreAccess<P>, AppError> {
        let permission = P::PERMISSION;
        let principal = caller.principal();
        if let Some(scope) = principal.token_scope() {
            let in_scope = scope.store_ids.contains(&store_id)
                && allows(scope.role, permission)
                && (!scope.read_only || permission.is_read());
            if !in_scope {
                return Err(AppError::Forbidden(format!(
                    "{permission:?} is not allowed with this API token in this store"
                )));
            }
        }
        let store = self.stores.load(&store_id.to_string()).await?;
        let role = match (
            store.role_of(principal.account_id()),
            principal.token_scope(),
        ) {
            (Some(role), None) if allows(role, permission) => role,
            (Some(role), Some(scope)) if allows(role, permission) => weaker(role, scope.role),
            _ => {
                return Err(AppError::Forbidden(format!(
                    "{permission:?} is not allowed in this store"
                )))
            }
        };
        Ok(StoreAccess {
            store_id,
            store,
            role,
            ctx: caller.context(role.into()),
            grant: PhantomData,
        })
    }

    /// Like [`App::authorize`] for a resource found by its own id: `None` when the resource
    /// does not exist or the caller holds no role in its store (the adapter answers "not
    /// found", so other stores' ids cannot be probed), `Forbidden` when they hold a role that
    /// does not allow `P`.
    pub async fn authorize_resource<P: Grant>(
        &self,
        caller: &Caller,
        resource: Resource,
    ) -> Result<Option<StoreAccess<P>>, AppError> {
        let store_id = match resource {
            Resource::Product(id) => {
                let product = self.products.load(&id.to_string()).await?;
                product.is_created().then(|| product.store_id())
            }
            Resource::Order(id) => {
                let order = self.orders.load(&id.to_string()).await?;
                order.currency.is_some().then_some(order.store_id)
            }
            Resource::Receipt(id) => {
                let receipt = self.receipts.load(&id.to_string()).await?;
                receipt.is_created().then(|| receipt.store_id())
            }
        };
        match store_id {
            Some(store_id) => self.authorize_visible(caller, store_id).await,
            None => Ok(None),
        }
    }

    /// The stores in which `caller` may exercise `P` (by their role there, within an API
    /// token's stores and role), in id order. Roles come from the catalog read model (the
    /// `store_staff` table), so a role granted a moment ago may show a moment later; which of
    /// them allow `P` is this module's matrix to say (never a role list in SQL). Acting in a
    /// store still goes through [`App::authorize`].
    pub async fn stores_allowing<P: Grant>(
        &self,
        caller: &Caller,
    ) -> Result<Vec<StoreId>, AppError> {
        let principal = caller.principal();
        let token_allows = principal.token_scope().is_none_or(|scope| {
            allows(scope.role, P::PERMISSION) && (!scope.read_only || P::PERMISSION.is_read())
        });
        if !token_allows {
            return Ok(Vec::new());
        }
        let token_stores: Option<Vec<uuid::Uuid>> = principal
            .token_scope()
            .map(|scope| scope.store_ids.iter().map(|id| id.0).collect());
        let held = catalog::roles_of(
            &self.pool,
            principal.account_id().0,
            token_stores.as_deref(),
        )
        .await?;
        let mut ids: Vec<StoreId> = held
            .iter()
            .filter(|held| {
                held.store_role()
                    .is_some_and(|role| allows(role, P::PERMISSION))
            })
            .map(|held| StoreId(held.store_id))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// [`App::authorize`], answering `None` instead of `Forbidden` when the caller holds no role
    /// at all in the store.
    pub async fn authorize_visible<P: Grant>(
        &self,
        caller: &Caller,
        store_id: StoreId,
    ) -> Result<Option<StoreAccess<P>>, AppError> {
        match self.authorize::<P>(caller, store_id).await {
            Ok(access) => Ok(Some(access)),
            Err(AppError::Forbidden(reason)) => {
                let store = self.stores.load(&store_id.to_string()).await?;
                if store.role_of(caller.account_id()).is_some() {
                    Err(AppError::Forbidden(reason))
                } else {
                    Ok(None)
                }
            }
            Err(other) => Err(other),
        }
    }

    /// Gives `account_id` `role` in the store (or changes theirs), within the caller's powers:
    /// an admin cannot make an owner or admin, nor touch one. Both roles are checked on the
    /// Store state the change commits on, not on an earlier read.
    pub async fn assign_staff_role(
        &self,
        access: &StoreAccess<grant::ManageStaff>,
        account_id: AccountId,
        role: StoreRole,
    ) -> Result<Decided<()>, AppError> {
        if !self
            .accounts
            .load(&account_id.to_string())
            .await?
            .is_created()
        {
            return Err(AppError::invalid("account_id", "no account has this id"));
        }
        let change = StaffChange {
            store_id: access.store_id(),
            by: access.account_id(),
            token_role: access.role(),
            account_id,
            role: Some(role),
        };
        self.events.decide(access.ctx(), &change).await
    }

    /// Takes a role away from `account_id`, within the caller's powers (the same rule as
    /// assigning: an admin cannot touch an owner or another admin).
    pub async fn revoke_staff_role(
        &self,
        access: &StoreAccess<grant::ManageStaff>,
        account_id: AccountId,
    ) -> Result<Decided<()>, AppError> {
        let change = StaffChange {
            store_id: access.store_id(),
            by: access.account_id(),
            token_role: access.role(),
            account_id,
            role: None,
        };
        self.events.decide(access.ctx(), &change).await
    }
}

/// A staff role assigned (`Some`) or revoked (`None`), judged on the Store it commits on.
struct StaffChange {
    store_id: StoreId,
    by: AccountId,
    /// The role the proof was made for (an API token's may be weaker than the account's).
    token_role: StoreRole,
    account_id: AccountId,
    role: Option<StoreRole>,
}

impl Decision for StaffChange {
    type Outcome = ();

    async fn decide(&self, uow: &mut UnitOfWork<'_>) -> Result<(), AppError> {
        let mut store = uow.load::<Store>(self.store_id).await?;
        let held = store
            .role_of(self.by)
            .filter(|role| allows(*role, ManageStaff))
            .ok_or_else(|| {
                AppError::Forbidden("ManageStaff is not allowed in this store".into())
            })?;
        let own = weaker(held, self.token_role);
        let current = store.role_of(self.account_id);
        let at = super::now();
        let command = match self.role {
            Some(role) => {
                if !can_assign(own, role) || current.is_some_and(|r| !can_assign(own, r)) {
                    return Err(AppError::Forbidden(format!(
                        "a {} cannot make someone {}{}",
                        own.as_str(),
                        role.as_str(),
                        current
                            .map(|r| format!(" (they are {})", r.as_str()))
                            .unwrap_or_default()
                    )));
                }
                StoreCommand::AssignStaffRole {
                    account_id: self.account_id,
                    role,
                    assigned_by: self.by,
                    at,
                }
            }
            None => {
                if let Some(current) = current.filter(|r| !can_assign(own, *r)) {
                    return Err(AppError::Forbidden(format!(
                        "a {} cannot revoke the role of a {}",
                        own.as_str(),
                        current.as_str()
                    )));
                }
                StoreCommand::RevokeStaffRole {
                    account_id: self.account_id,
                    revoked_by: self.by,
                    at,
                }
            }
        };
        uow.execute(&mut store, command).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permission_appears_once_in_the_matrix() {
        let mut seen = std::collections::HashSet::new();
        for (permission, _, _) in MATRIX {
            assert!(seen.insert(*permission), "{permission:?} twice");
        }
        assert_eq!(seen.len(), 20);
    }

    #[test]
    fn auditors_read_but_never_change() {
        for (permission, _, roles) in MATRIX {
            let name = format!("{permission:?}");
            if roles.contains(&Auditor) {
                assert!(
                    name.starts_with("View"),
                    "auditors may only view, not {name}"
                );
            }
        }
        assert!(allows(Auditor, ViewAuditTrail));
        assert!(!allows(Vendor, ViewAuditTrail));
    }

    #[test]
    fn read_permissions_are_exactly_the_view_ones() {
        for (permission, _, _) in MATRIX {
            assert_eq!(
                permission.is_read(),
                format!("{permission:?}").starts_with("View"),
                "{permission:?}"
            );
        }
    }

    #[test]
    fn a_role_covers_the_roles_whose_rights_it_has() {
        assert!(covers(Owner, Owner) && covers(Owner, Auditor));
        assert!(covers(Admin, Admin) && covers(Admin, Vendor));
        assert!(!covers(Admin, Owner) && !covers(Admin, Auditor));
        assert!(covers(Vendor, Vendor) && !covers(Vendor, Admin) && !covers(Vendor, Auditor));
        assert!(covers(Auditor, Auditor) && !covers(Auditor, Vendor));
        assert_eq!(weaker(Owner, Admin), Admin);
        assert_eq!(weaker(Vendor, Owner), Vendor);
        assert_eq!(weaker(Admin, Auditor), Auditor);
        assert_eq!(weaker(Auditor, Owner), Auditor);
    }

    #[test]
    fn admins_cannot_make_owners_or_admins() {
        assert!(!can_assign(Admin, Owner));
        assert!(!can_assign(Admin, Admin));
        assert!(can_assign(Admin, Vendor));
        assert!(can_assign(Owner, Owner));
        assert!(!can_assign(Vendor, Vendor));
    }
}

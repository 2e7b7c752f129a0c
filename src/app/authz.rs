//! Authorization: one permission matrix for every adapter (HTTP, WebSocket, bot), enforced here
//! in the application layer. Rendered into docs/rbac.md (`shopfront rbac`; a test fails when the
//! document drifts from this table).
//!
//! Roles are per store (`StoreRole`, held by the Store aggregate, the source of truth, so a
//! role granted a moment ago counts at once). A platform admin may create stores; inside a store
//! they have no rights unless they also hold a role there.

use aggregates::store::StoreCommand;
use aggregates::{AccountId, StoreId, StoreRole};

use super::{App, AppError, CommandContext, Principal};

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
        "the audit trail of the store's events",
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

fn role_name(role: StoreRole) -> &'static str {
    match role {
        Owner => "OWNER",
        Admin => "ADMIN",
        Vendor => "VENDOR",
        Auditor => "AUDITOR",
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
         manages accounts platform-wide (`/api/v1/users`: find, block, unblock); inside a store\n\
         they need a role like anyone else. API tokens never act as a platform admin.\n\n",
    );
    out.push_str("| permission | what it allows |");
    for role in roles {
        out.push_str(&format!(" {} |", role_name(role)));
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
            .map(|r| role_name(*r))
            .collect();
        let list = if assignable.is_empty() {
            "—".to_owned()
        } else {
            assignable.join(", ")
        };
        out.push_str(&format!("| {} | {list} |\n", role_name(assigner)));
    }
    out.push_str(
        "\nAn admin can neither create an owner or admin nor change the role of one; a store always\n\
         keeps at least one owner (enforced by the Store aggregate).\n",
    );
    out
}

impl App {
    /// The caller's role in `store_id` if it allows `permission`; `Forbidden` otherwise (also
    /// for stores that do not exist, so a caller cannot probe other stores' ids).
    ///
    /// An API token (`principal.token_scope`) narrows this further: the store must be in its
    /// scope, the token's role must allow the permission too (the account's current role still
    /// must, so a token never outlives a revoked role), and a read-only token only views.
    pub async fn authorize(
        &self,
        principal: &Principal,
        store_id: StoreId,
        permission: Permission,
    ) -> Result<StoreRole, AppError> {
        let forbidden =
            || AppError::Forbidden(format!("{permission:?} is not allowed in this store"));
        if let Some(scope) = &principal.token_scope {
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
        match (store.role_of(principal.account_id), &principal.token_scope) {
            (Some(role), None) if allows(role, permission) => Ok(role),
            (Some(role), Some(scope)) if allows(role, permission) => Ok(weaker(role, scope.role)),
            _ => Err(forbidden()),
        }
    }

    /// Like [`App::authorize`], for a resource found by its own id: `None` when the caller holds
    /// no role in the resource's store (the adapter answers "not found", so other stores' ids
    /// cannot be probed), `Forbidden` when they do but the role does not allow `permission`.
    pub async fn authorize_visible(
        &self,
        principal: &Principal,
        store_id: StoreId,
        permission: Permission,
    ) -> Result<Option<StoreRole>, AppError> {
        match self.authorize(principal, store_id, permission).await {
            Ok(role) => Ok(Some(role)),
            Err(AppError::Forbidden(reason)) => {
                let store = self.stores.load(&store_id.to_string()).await?;
                if store.role_of(principal.account_id).is_some() {
                    Err(AppError::Forbidden(reason))
                } else {
                    Ok(None)
                }
            }
            Err(other) => Err(other),
        }
    }

    /// Assigns `role` to `account_id` in a store, within the caller's powers.
    pub async fn assign_staff_role_as(
        &self,
        principal: &Principal,
        ctx: &CommandContext,
        store_id: StoreId,
        account_id: AccountId,
        role: StoreRole,
    ) -> Result<(), AppError> {
        let own = self.authorize(principal, store_id, ManageStaff).await?;
        if !self
            .accounts
            .load(&account_id.to_string())
            .await?
            .is_created()
        {
            return Err(AppError::invalid("account_id", "no account has this id"));
        }
        let store = self.stores.load(&store_id.to_string()).await?;
        let current = store.role_of(account_id);
        if !can_assign(own, role) || current.is_some_and(|r| !can_assign(own, r)) {
            return Err(AppError::Forbidden(format!(
                "a {} cannot make someone {}{}",
                role_name(own),
                role_name(role),
                current
                    .map(|r| format!(" (they are {})", role_name(r)))
                    .unwrap_or_default()
            )));
        }
        let command = StoreCommand::AssignStaffRole {
            account_id,
            role,
            assigned_by: principal.account_id,
            at: super::now(),
        };
        self.stores
            .execute(&store_id.to_string(), command, ctx)
            .await
    }
}

impl App {
    /// Takes a role away from `account_id`, within the caller's powers (the same rule as
    /// assigning: an admin cannot touch an owner or another admin).
    pub async fn revoke_staff_role_as(
        &self,
        principal: &Principal,
        ctx: &CommandContext,
        store_id: StoreId,
        account_id: AccountId,
    ) -> Result<(), AppError> {
        let own = self.authorize(principal, store_id, ManageStaff).await?;
        let store = self.stores.load(&store_id.to_string()).await?;
        if let Some(current) = store.role_of(account_id) {
            if !can_assign(own, current) {
                return Err(AppError::Forbidden(format!(
                    "a {} cannot revoke the role of a {}",
                    role_name(own),
                    role_name(current)
                )));
            }
        }
        let command = StoreCommand::RevokeStaffRole {
            account_id,
            revoked_by: principal.account_id,
            at: super::now(),
        };
        self.stores
            .execute(&store_id.to_string(), command, ctx)
            .await
    }

    /// Creates a store: only platform admins may (checked on the Account aggregate, so a
    /// revoked platform admin cannot with a token issued before). The owner is `owner_id` when
    /// given (an existing account), otherwise the creator.
    pub async fn create_store_as(
        &self,
        principal: &Principal,
        ctx: &CommandContext,
        mut store: super::NewStore,
    ) -> Result<StoreId, AppError> {
        self.require_platform_admin(principal).await?;
        if store.owner_id == AccountId::default() {
            store.owner_id = principal.account_id;
        }
        if store.owner_id != principal.account_id {
            let owner = self.accounts.load(&store.owner_id.to_string()).await?;
            if !owner.is_created() {
                return Err(AppError::invalid("owner_id", "no account has this id"));
            }
        }
        self.create_store(ctx, store).await
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

//! The stores a console page works across: those where the user holds a role allowing `P`,
//! each proved against the store itself (the list comes from a read model that may lag a
//! moment; the proof does not).

use aggregates::{StoreId, StoreRole};

use super::session::Staff;
use crate::app::authz::{allows, Permission};
use crate::app::{App, AppError, Grant};

/// A store as a page shows it.
pub struct StaffStore {
    pub store_id: StoreId,
    pub name: String,
    /// IANA time zone: the store's times are shown in it.
    pub time_zone: String,
    pub role: StoreRole,
}

impl StaffStore {
    /// Whether the user's role here allows `permission` (what the page offers; the action
    /// is authorized again when it is taken).
    pub fn allows(&self, permission: Permission) -> bool {
        allows(self.role, permission)
    }
}

/// The stores where `staff` may do `P`, by id.
pub async fn stores_allowing<P: Grant>(
    app: &App,
    staff: &Staff,
) -> Result<Vec<StaffStore>, AppError> {
    let mut stores = Vec::new();
    for store_id in app.stores_allowing::<P>(&staff.caller).await? {
        let Ok(access) = app.authorize::<P>(&staff.caller, store_id).await else {
            continue;
        };
        let store = access.store();
        stores.push(StaffStore {
            store_id,
            name: store.name().to_owned(),
            time_zone: store.timezone().to_owned(),
            role: access.role(),
        });
    }
    Ok(stores)
}

/// The store a page's `store_id` filter names (empty: none).
pub fn wanted(store_id: &Option<String>) -> Result<Option<uuid::Uuid>, crate::app::AppError> {
    store_id
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse()
                .map_err(|_| crate::app::AppError::invalid("store_id", "not a store id"))
        })
        .transpose()
}

/// The one store of `stores` a page was asked for (`None`: all of them).
pub fn chosen(stores: &[StaffStore], wanted: Option<uuid::Uuid>) -> Vec<&StaffStore> {
    stores
        .iter()
        .filter(|s| wanted.is_none_or(|id| s.store_id.0 == id))
        .collect()
}

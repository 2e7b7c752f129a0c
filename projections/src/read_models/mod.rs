//! The read models, each a [`Projection`](crate::Projection) owning its tables (see docs/read-models.md).

mod audit;
mod customers;
mod deadlines;
mod kpis;
mod orders;
mod stock;

use std::sync::Arc;

pub use audit::AuditTrail;
pub use customers::Customers;
pub use deadlines::OrderDeadlines;
pub use kpis::Kpis;
pub use orders::Orders;
pub use stock::StockLevels;

use crate::Projection;

/// Every projection the service runs, in a stable order.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(Orders),
        Arc::new(StockLevels),
        Arc::new(AuditTrail),
        Arc::new(OrderDeadlines),
        Arc::new(Kpis),
        Arc::new(Customers),
    ]
}

/// The projection called `name`.
pub fn by_name(name: &str) -> Option<Arc<dyn Projection>> {
    all().into_iter().find(|p| p.name() == name)
}

/// The names of every projection.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|p| p.name()).collect()
}

/// The inner object of an externally tagged payload (`{"Type": {...}}` → `{...}`), without the
/// sealed contact block: what a timeline or audit row may show.
pub(crate) fn event_detail(payload: &serde_json::Value) -> serde_json::Value {
    let mut detail = payload
        .as_object()
        .and_then(|o| o.values().next())
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    if let Some(object) = detail.as_object_mut() {
        object.remove("contact");
    }
    detail
}

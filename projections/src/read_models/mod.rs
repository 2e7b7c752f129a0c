//! The read models, each a [`Projection`] owning its tables, and each with
//! a `queries` module: the row types and query functions (lists with filters and keyset pages,
//! lookups by id) through which everything else reads those tables (see docs/read-models.md).
//! Adapters map the rows to their own response types; no adapter holds SQL of its own.

pub mod accounts;
pub mod audit;
pub mod catalog;
pub(crate) mod copy_in;
pub mod customers;
pub mod deadlines;
pub mod kpis;
pub mod orders;
pub mod receipts;
pub mod stock;

use std::sync::Arc;

pub use accounts::Accounts;
pub use audit::AuditTrail;
pub use catalog::Catalog;
pub use customers::Customers;
pub use deadlines::OrderDeadlines;
pub use kpis::Kpis;
pub use orders::Orders;
pub use receipts::Receipts;
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
        Arc::new(Catalog),
        Arc::new(Receipts),
        Arc::new(Accounts),
    ]
}

/// The non-unique indexes that projections read through while they apply a batch. A rebuild
/// keeps these (and every unique index) on its scratch tables from the start, and builds the
/// others once after the replay, which costs less than maintaining them row by row.
pub const INDEXES_READ_WHILE_APPLYING: &[&str] = &[
    // customers: a batch loads its customers by id
    "customers_customer_idx",
    // receipts: earlier receipts with the same file
    "receipts_sha256_idx",
    // audit: an erasure blanks its account's older rows
    "audit_events_aggregate_idx",
];

/// The projection called `name`.
pub fn by_name(name: &str) -> Option<Arc<dyn Projection>> {
    all().into_iter().find(|p| p.name() == name)
}

/// The names of every projection.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|p| p.name()).collect()
}

/// A money sum Postgres returned as text (`sum(…)::text`, `numeric::text`), as exact minor
/// units.
pub(crate) fn minor(row: &sqlx::postgres::PgRow, column: &str) -> Result<i128, sqlx::Error> {
    use sqlx::Row;
    let text: String = row.try_get(column)?;
    text.parse().map_err(|err| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: Box::new(err),
    })
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

/// Writes `rows` into `table` (by unqualified name, so a rebuild's `search_path` applies),
/// replacing existing rows with the same `key` columns: one delete and one insert, both from a
/// single JSON recordset whose field names are the table's column names.
pub(crate) async fn replace_rows<T: serde::Serialize + Sync>(
    conn: &mut sqlx::PgConnection,
    table: &str,
    key: &[&str],
    rows: &[T],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let rows = sqlx::types::Json(rows);
    if !key.is_empty() {
        let matches: Vec<String> = key.iter().map(|k| format!("t.{k} = r.{k}")).collect();
        sqlx::query(&format!(
            "delete from {table} t using jsonb_populate_recordset(null::{table}, $1) r where {}",
            matches.join(" and ")
        ))
        .bind(rows)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(&format!(
        "insert into {table} select * from jsonb_populate_recordset(null::{table}, $1)"
    ))
    .bind(rows)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Loads rows of `table` whose `column` is in `ids`, through JSON into `T`.
pub(crate) async fn load_rows<T: serde::de::DeserializeOwned + Send + Unpin + 'static>(
    conn: &mut sqlx::PgConnection,
    table: &str,
    column: &str,
    ids: &[uuid::Uuid],
    only: &str,
) -> Result<Vec<T>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<sqlx::types::Json<T>> = sqlx::query_scalar(&format!(
        "select to_jsonb(t) from {table} t where {column} = any($1) {only}"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Loads the rows of `table` whose `column` is in `ids` (all of `T`'s columns), typed.
pub(crate) async fn load_typed<T>(
    conn: &mut sqlx::PgConnection,
    table: &str,
    column: &str,
    ids: &[uuid::Uuid],
    only: &str,
) -> Result<Vec<T>, sqlx::Error>
where
    T: copy_in::CopyRow + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(&format!(
        "select {} from {table} where {column} = any($1) {only}",
        T::COLUMNS.join(", ")
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
}

/// Writes `rows` into `table` (by unqualified name, so a rebuild's `search_path` applies),
/// replacing the existing rows whose `key` column is in `keys` (the rows' own keys): one
/// delete, then one binary `COPY`.
pub(crate) async fn replace_keyed<T, K>(
    conn: &mut sqlx::PgConnection,
    table: &str,
    key: &str,
    keys: Vec<K>,
    rows: impl IntoIterator<Item = T>,
) -> Result<(), sqlx::Error>
where
    T: copy_in::CopyRow,
    K: for<'q> sqlx::Encode<'q, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>
        + sqlx::postgres::PgHasArrayType
        + Send
        + 'static,
{
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!("delete from {table} where {key} = any($1)"))
        .bind(keys)
        .execute(&mut *conn)
        .await?;
    copy_in::copy_rows(conn, table, rows).await
}

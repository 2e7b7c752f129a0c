//! Read model "catalog": stores and their settings (`stores`), who works where in what role
//! (`store_staff`), and products with their current price and status (`products`). Lists and
//! searches of the HTTP API read these; commands still decide on the aggregates.

pub mod queries;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aggregates::product::ProductEvent;
use aggregates::store::StoreEvent;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{load_rows, replace_rows};
use crate::event::{DomainEvent, Envelope};
use crate::{Projection, ProjectionError};

pub struct Catalog;

/// A row of `stores`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoreRow {
    store_id: Uuid,
    name: String,
    currency: String,
    timezone: String,
    payment_instructions: String,
    default_low_stock_threshold: i32,
    reservation_ttl_minutes: i32,
    created_by: Uuid,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_position: i64,
}

/// A row of `store_staff`.
#[derive(Clone, Debug, Serialize)]
struct StaffRow {
    store_id: Uuid,
    account_id: Uuid,
    role: String,
    assigned_by: Uuid,
    assigned_at: DateTime<Utc>,
}

/// A row of `customer_blocks`.
#[derive(Clone, Debug, Serialize)]
struct BlockRow {
    store_id: Uuid,
    customer_id: Uuid,
    reason: String,
    blocked_by: Uuid,
    blocked_at: DateTime<Utc>,
}

/// A row of `products`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ProductRow {
    product_id: Uuid,
    store_id: Uuid,
    name: String,
    description: String,
    sku: String,
    price_minor: i64,
    currency: String,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_position: i64,
}

#[async_trait]
impl Projection for Catalog {
    fn name(&self) -> &'static str {
        "catalog"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["stores", "store_staff", "products", "customer_blocks"]
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let mut store_ids = BTreeSet::new();
        let mut product_ids = BTreeSet::new();
        for envelope in events {
            match &envelope.event {
                DomainEvent::Store(StoreEvent::StoreSettingsChanged { .. }) => {
                    store_ids.insert(envelope.aggregate_uuid()?);
                }
                DomainEvent::Product(event)
                    if !matches!(event, ProductEvent::ProductCreated { .. }) =>
                {
                    product_ids.insert(envelope.aggregate_uuid()?);
                }
                _ => {}
            }
        }
        let store_ids: Vec<Uuid> = store_ids.into_iter().collect();
        let product_ids: Vec<Uuid> = product_ids.into_iter().collect();
        let mut stores: HashMap<Uuid, StoreRow> =
            load_rows::<StoreRow>(conn, "stores", "store_id", &store_ids, "")
                .await?
                .into_iter()
                .map(|row| (row.store_id, row))
                .collect();
        let mut products: HashMap<Uuid, ProductRow> =
            load_rows::<ProductRow>(conn, "products", "product_id", &product_ids, "")
                .await?
                .into_iter()
                .map(|row| (row.product_id, row))
                .collect();
        let mut changed_stores = BTreeSet::new();
        let mut changed_products = BTreeSet::new();
        // (store, account) → the role now held, or `None` once revoked.
        let mut staff: BTreeMap<(Uuid, Uuid), Option<StaffRow>> = BTreeMap::new();
        // (store, customer) → the block in force, or `None` once lifted.
        let mut blocks: BTreeMap<(Uuid, Uuid), Option<BlockRow>> = BTreeMap::new();
        for envelope in events {
            let position = envelope.raw.global_position;
            match &envelope.event {
                DomainEvent::Store(event) => {
                    let store_id = envelope.aggregate_uuid()?;
                    apply_store_event(&mut stores, &mut staff, store_id, event, position);
                    record_block(&mut blocks, store_id, event);
                    changed_stores.insert(store_id);
                }
                DomainEvent::Product(event) => {
                    let product_id = envelope.aggregate_uuid()?;
                    apply_product_event(&mut products, product_id, event, position);
                    changed_products.insert(product_id);
                }
                _ => {}
            }
        }
        let store_rows: Vec<&StoreRow> = changed_stores
            .iter()
            .filter_map(|id| stores.get(id))
            .collect();
        replace_rows(conn, "stores", &["store_id"], &store_rows).await?;
        let product_rows: Vec<&ProductRow> = changed_products
            .iter()
            .filter_map(|id| products.get(id))
            .collect();
        replace_rows(conn, "products", &["product_id"], &product_rows).await?;
        write_pairs(conn, "customer_blocks", "customer_id", &blocks).await?;
        write_pairs(conn, "store_staff", "account_id", &staff).await?;
        Ok(())
    }
}

/// Rows of `table` keyed by `(store_id, second)`: each touched key's row is deleted, and
/// written again where the batch ended with one (`None` = the row is gone).
async fn write_pairs<T: Serialize + Sync>(
    conn: &mut PgConnection,
    table: &str,
    second: &str,
    rows: &BTreeMap<(Uuid, Uuid), Option<T>>,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let (stores, seconds): (Vec<Uuid>, Vec<Uuid>) = rows.keys().copied().unzip();
    sqlx::query(&format!(
        "delete from {table} t using unnest($1::uuid[], $2::uuid[]) as k(store_id, {second}) \
         where t.store_id = k.store_id and t.{second} = k.{second}"
    ))
    .bind(&stores)
    .bind(&seconds)
    .execute(&mut *conn)
    .await?;
    let current: Vec<&T> = rows.values().flatten().collect();
    replace_rows(conn, table, &[], &current).await
}

fn apply_store_event(
    stores: &mut HashMap<Uuid, StoreRow>,
    staff: &mut BTreeMap<(Uuid, Uuid), Option<StaffRow>>,
    store_id: Uuid,
    event: &StoreEvent,
    position: i64,
) {
    match event {
        StoreEvent::StoreCreated {
            owner_id,
            name,
            currency,
            timezone,
            payment_instructions,
            default_low_stock_threshold,
            reservation_ttl_minutes,
            created_at,
            ..
        } => {
            stores.insert(
                store_id,
                StoreRow {
                    store_id,
                    name: name.clone(),
                    currency: currency.code().to_owned(),
                    timezone: timezone.clone(),
                    payment_instructions: payment_instructions.clone(),
                    default_low_stock_threshold: saturating_i32(*default_low_stock_threshold),
                    reservation_ttl_minutes: saturating_i32(*reservation_ttl_minutes),
                    created_by: owner_id.0,
                    created_at: *created_at,
                    updated_at: *created_at,
                    last_position: position,
                },
            );
            staff.insert(
                (store_id, owner_id.0),
                Some(StaffRow {
                    store_id,
                    account_id: owner_id.0,
                    role: "OWNER".into(),
                    assigned_by: owner_id.0,
                    assigned_at: *created_at,
                }),
            );
        }
        StoreEvent::StoreSettingsChanged {
            name,
            timezone,
            payment_instructions,
            default_low_stock_threshold,
            reservation_ttl_minutes,
            at,
            ..
        } => {
            let Some(store) = stores.get_mut(&store_id) else {
                return;
            };
            if let Some(name) = name {
                store.name = name.clone();
            }
            if let Some(timezone) = timezone {
                store.timezone = timezone.clone();
            }
            if let Some(instructions) = payment_instructions {
                store.payment_instructions = instructions.clone();
            }
            if let Some(threshold) = default_low_stock_threshold {
                store.default_low_stock_threshold = saturating_i32(*threshold);
            }
            if let Some(ttl) = reservation_ttl_minutes {
                store.reservation_ttl_minutes = saturating_i32(*ttl);
            }
            store.updated_at = *at;
            store.last_position = position;
        }
        StoreEvent::StaffRoleAssigned {
            account_id,
            role,
            assigned_by,
            at,
            ..
        } => {
            staff.insert(
                (store_id, account_id.0),
                Some(StaffRow {
                    store_id,
                    account_id: account_id.0,
                    role: role.to_string(),
                    assigned_by: assigned_by.0,
                    assigned_at: *at,
                }),
            );
        }
        StoreEvent::StaffRoleRevoked { account_id, .. } => {
            staff.insert((store_id, account_id.0), None);
        }
        StoreEvent::CustomerBlocked { .. } | StoreEvent::CustomerUnblocked { .. } => {}
    }
}

fn record_block(
    blocks: &mut BTreeMap<(Uuid, Uuid), Option<BlockRow>>,
    store_id: Uuid,
    event: &StoreEvent,
) {
    match event {
        StoreEvent::CustomerBlocked {
            customer_id,
            blocked_by,
            reason,
            at,
        } => {
            blocks.insert(
                (store_id, customer_id.0),
                Some(BlockRow {
                    store_id,
                    customer_id: customer_id.0,
                    reason: reason.clone(),
                    blocked_by: blocked_by.0,
                    blocked_at: *at,
                }),
            );
        }
        StoreEvent::CustomerUnblocked { customer_id, .. } => {
            blocks.insert((store_id, customer_id.0), None);
        }
        _ => {}
    }
}

fn apply_product_event(
    products: &mut HashMap<Uuid, ProductRow>,
    product_id: Uuid,
    event: &ProductEvent,
    position: i64,
) {
    if let ProductEvent::ProductCreated {
        store_id,
        name,
        description,
        sku,
        price,
        created_at,
        ..
    } = event
    {
        products.insert(
            product_id,
            ProductRow {
                product_id,
                store_id: store_id.0,
                name: name.clone(),
                description: description.clone(),
                sku: sku.clone(),
                price_minor: price.amount_minor,
                currency: price.currency.code().to_owned(),
                status: "ACTIVE".into(),
                created_at: *created_at,
                updated_at: *created_at,
                last_position: position,
            },
        );
        return;
    }
    let Some(product) = products.get_mut(&product_id) else {
        return;
    };
    let at = match event {
        ProductEvent::ProductCreated { .. } => return,
        ProductEvent::ProductDetailsChanged {
            name,
            description,
            sku,
            at,
        } => {
            if let Some(name) = name {
                product.name = name.clone();
            }
            if let Some(description) = description {
                product.description = description.clone();
            }
            if let Some(sku) = sku {
                product.sku = sku.clone();
            }
            at
        }
        ProductEvent::ProductPriceChanged { price, at, .. } => {
            product.price_minor = price.amount_minor;
            at
        }
        ProductEvent::ProductArchived { at } => {
            product.status = "ARCHIVED".into();
            at
        }
        ProductEvent::ProductReactivated { at } => {
            product.status = "ACTIVE".into();
            at
        }
    };
    product.updated_at = *at;
    product.last_position = position;
}

fn saturating_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

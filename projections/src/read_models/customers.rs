//! Read model "customers": per store and currency, each customer's first and last order, order
//! counts and lifetime value (revenue of paid orders). New vs returning customers in a period
//! follow from `first_order_at`; "overall" sums stores per currency (never across currencies).
//! A lifetime value is an `i128` in the fold and `numeric(38, 0)` in the table (ten of the
//! largest orders placement accepts already pass `i64`), added up with checked arithmetic.

pub mod queries;

use std::collections::BTreeMap;

use aggregates::order::OrderEvent;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::copy_in::{copy_row, copy_rows};
use super::{load_rows, load_typed, replace_rows};
use crate::event::{DomainEvent, Envelope};
use crate::{Projection, ProjectionError};

pub struct Customers;

/// A row of `customer_orders`: which store/currency an order counts for.
#[derive(Clone, sqlx::FromRow)]
struct CustomerOrder {
    order_id: Uuid,
    store_id: Uuid,
    customer_id: Uuid,
    currency: String,
    total_minor: i64,
}

copy_row!(CustomerOrder {
    order_id,
    store_id,
    customer_id,
    currency,
    total_minor
});

/// A row of `customers`.
#[derive(Serialize, Deserialize)]
struct Customer {
    store_id: Uuid,
    customer_id: Uuid,
    currency: String,
    first_order_at: DateTime<Utc>,
    last_order_at: DateTime<Utc>,
    orders: i32,
    paid_orders: i32,
    revenue_minor: i128,
}

type Key = (Uuid, Uuid, String);

#[async_trait]
impl Projection for Customers {
    fn name(&self) -> &'static str {
        "customers"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["customers", "customer_orders"]
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let paid: Vec<Uuid> = events
            .iter()
            .filter(|e| matches!(e.event, DomainEvent::Order(OrderEvent::OrderPaid { .. })))
            .filter_map(|e| e.aggregate_uuid().ok())
            .collect();
        let mut orders: BTreeMap<Uuid, CustomerOrder> =
            load_typed::<CustomerOrder>(conn, "customer_orders", "order_id", &paid, "")
                .await?
                .into_iter()
                .map(|o| (o.order_id, o))
                .collect();
        let mut new_orders = Vec::new();
        for envelope in events {
            if let DomainEvent::Order(OrderEvent::OrderPlaced {
                store_id,
                customer_id,
                total_minor,
                currency,
                ..
            }) = &envelope.event
            {
                let order = CustomerOrder {
                    order_id: envelope.aggregate_uuid()?,
                    store_id: store_id.0,
                    customer_id: customer_id.0,
                    currency: currency.code().to_owned(),
                    total_minor: *total_minor,
                };
                orders.insert(order.order_id, order.clone());
                new_orders.push(order);
            }
        }
        let customer_ids: Vec<Uuid> = orders.values().map(|o| o.customer_id).collect();
        let mut customers: BTreeMap<Key, Customer> =
            load_rows::<Customer>(conn, "customers", "customer_id", &customer_ids, "")
                .await?
                .into_iter()
                .map(|c| ((c.store_id, c.customer_id, c.currency.clone()), c))
                .collect();
        let mut changed: BTreeMap<Key, ()> = BTreeMap::new();
        for envelope in events {
            let DomainEvent::Order(event) = &envelope.event else {
                continue;
            };
            match event {
                OrderEvent::OrderPlaced {
                    store_id,
                    customer_id,
                    currency,
                    placed_at,
                    ..
                } => {
                    let key = (store_id.0, customer_id.0, currency.code().to_owned());
                    let customer = customers.entry(key.clone()).or_insert_with(|| Customer {
                        store_id: store_id.0,
                        customer_id: customer_id.0,
                        currency: currency.code().to_owned(),
                        first_order_at: *placed_at,
                        last_order_at: *placed_at,
                        orders: 0,
                        paid_orders: 0,
                        revenue_minor: 0,
                    });
                    customer.orders += 1;
                    customer.first_order_at = customer.first_order_at.min(*placed_at);
                    customer.last_order_at = customer.last_order_at.max(*placed_at);
                    changed.insert(key, ());
                }
                OrderEvent::OrderPaid { amount_minor, .. } => {
                    let Some(order) = orders.get(&envelope.aggregate_uuid()?) else {
                        continue;
                    };
                    let key = (order.store_id, order.customer_id, order.currency.clone());
                    if let Some(customer) = customers.get_mut(&key) {
                        customer.paid_orders += 1;
                        customer.revenue_minor = customer
                            .revenue_minor
                            .checked_add(i128::from(*amount_minor))
                            .ok_or(ProjectionError::OutOfRange("revenue_minor"))?;
                        changed.insert(key, ());
                    }
                }
                _ => {}
            }
        }
        copy_rows(conn, "customer_orders", &new_orders).await?;
        let rows: Vec<&Customer> = changed.keys().filter_map(|k| customers.get(k)).collect();
        replace_rows(
            conn,
            "customers",
            &["store_id", "customer_id", "currency"],
            &rows,
        )
        .await?;
        Ok(())
    }
}

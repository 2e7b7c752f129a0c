//! Read model "customers": per store and currency, each customer's first and last order, order
//! counts and lifetime value (revenue of paid orders). New vs returning customers in a period
//! follow from `first_order_at`; "overall" sums stores per currency (never across currencies).

use aggregates::order::OrderEvent;
use async_trait::async_trait;
use sqlx::PgConnection;

use crate::event::{DomainEvent, Envelope};
use crate::{Projection, ProjectionError};

pub struct Customers;

#[async_trait]
impl Projection for Customers {
    fn name(&self) -> &'static str {
        "customers"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["customers", "customer_orders"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        let DomainEvent::Order(event) = &envelope.event else {
            return Ok(());
        };
        let order_id = envelope.aggregate_uuid()?;
        match event {
            OrderEvent::OrderPlaced {
                store_id,
                customer_id,
                total_minor,
                currency,
                placed_at,
                ..
            } => {
                sqlx::query(
                    "insert into customer_orders (order_id, store_id, customer_id, currency, total_minor)
                     values ($1, $2, $3, $4, $5)",
                )
                .bind(order_id)
                .bind(store_id.0)
                .bind(customer_id.0)
                .bind(currency.code())
                .bind(total_minor)
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "insert into customers (store_id, customer_id, currency, first_order_at, last_order_at,
                                            orders, paid_orders, revenue_minor)
                     values ($1, $2, $3, $4, $4, 1, 0, 0)
                     on conflict (store_id, customer_id, currency) do update
                        set orders = customers.orders + 1,
                            first_order_at = least(customers.first_order_at, excluded.first_order_at),
                            last_order_at = greatest(customers.last_order_at, excluded.last_order_at)",
                )
                .bind(store_id.0)
                .bind(customer_id.0)
                .bind(currency.code())
                .bind(placed_at)
                .execute(&mut *conn)
                .await?;
            }
            OrderEvent::OrderPaid { amount_minor, .. } => {
                sqlx::query(
                    "update customers c set paid_orders = c.paid_orders + 1, revenue_minor = c.revenue_minor + $2
                       from customer_orders o
                      where o.order_id = $1 and c.store_id = o.store_id and c.customer_id = o.customer_id
                        and c.currency = o.currency",
                )
                .bind(order_id)
                .bind(amount_minor)
                .execute(&mut *conn)
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

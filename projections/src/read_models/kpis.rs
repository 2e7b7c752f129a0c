//! Read model "kpis": incremental rollups per store, currency and day (in the store's
//! timezone): orders placed/paid/cancelled/expired/fulfilled/completed, revenue (paid orders),
//! receipts; per product and day: units and revenue; per store: orders by current status; per
//! verified receipt: seconds from submission to verification. Queries (`crate::queries`) sum
//! these rows; they never scan orders.

use aggregates::order::{OrderEvent, OrderLine, OrderStatus};
use aggregates::receipt::ReceiptEvent;
use aggregates::store::StoreEvent;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::event::{DomainEvent, Envelope};
use crate::{Projection, ProjectionError};

pub struct Kpis;

#[async_trait]
impl Projection for Kpis {
    fn name(&self) -> &'static str {
        "kpis"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "kpi_stores",
            "kpi_orders",
            "kpi_daily",
            "kpi_product_daily",
            "kpi_products",
            "kpi_receipt_verifications",
            "kpi_order_status",
        ]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        match &envelope.event {
            DomainEvent::Store(event) => {
                store_event(conn, envelope.aggregate_uuid()?, event).await?
            }
            DomainEvent::Order(event) => {
                order_event(conn, envelope.aggregate_uuid()?, event).await?
            }
            DomainEvent::Receipt(event) => {
                receipt_event(conn, envelope.aggregate_uuid()?, event).await?
            }
            _ => {}
        }
        Ok(())
    }
}

async fn store_event(
    conn: &mut PgConnection,
    store_id: Uuid,
    event: &StoreEvent,
) -> Result<(), sqlx::Error> {
    match event {
        StoreEvent::StoreCreated {
            name,
            currency,
            timezone,
            ..
        } => {
            sqlx::query("insert into kpi_stores (store_id, name, timezone, currency) values ($1, $2, $3, $4)")
                .bind(store_id)
                .bind(name)
                .bind(timezone)
                .bind(currency.code())
                .execute(&mut *conn)
                .await?;
        }
        StoreEvent::StoreSettingsChanged { name, timezone, .. } => {
            sqlx::query(
                "update kpi_stores set name = coalesce($2, name), timezone = coalesce($3, timezone) where store_id = $1",
            )
            .bind(store_id)
            .bind(name)
            .bind(timezone)
            .execute(&mut *conn)
            .await?;
        }
        _ => {}
    }
    Ok(())
}

async fn order_event(
    conn: &mut PgConnection,
    order_id: Uuid,
    event: &OrderEvent,
) -> Result<(), sqlx::Error> {
    if let OrderEvent::OrderPlaced {
        store_id,
        customer_id,
        lines,
        total_minor,
        currency,
        placed_at,
        ..
    } = event
    {
        sqlx::query(
            "insert into kpi_orders (order_id, store_id, customer_id, currency, total_minor, lines, placed_at)
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(order_id)
        .bind(store_id.0)
        .bind(customer_id.0)
        .bind(currency.code())
        .bind(total_minor)
        .bind(serde_json::to_value(lines).unwrap_or_default())
        .bind(placed_at)
        .execute(&mut *conn)
        .await?;
        bump(
            conn,
            store_id.0,
            *placed_at,
            &[("orders_placed", 1), ("placed_minor", *total_minor)],
        )
        .await?;
        move_status(conn, store_id.0, None, OrderStatus::AwaitingPayment).await?;
        return Ok(());
    }
    let Some((store_id, lines)) = sqlx::query_as::<_, (Uuid, sqlx::types::Json<Vec<OrderLine>>)>(
        "select store_id, lines from kpi_orders where order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(());
    };
    let (previous, next, at) = match event {
        OrderEvent::OrderPlaced { .. } => return Ok(()),
        OrderEvent::OrderReceiptSubmitted {
            previous_status,
            at,
            ..
        } => {
            sqlx::query("update kpi_orders set receipt_submitted_at = $2 where order_id = $1")
                .bind(order_id)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            (previous_status, OrderStatus::ReceiptSubmitted, at)
        }
        OrderEvent::OrderReceiptRejected {
            previous_status,
            at,
            ..
        } => (previous_status, OrderStatus::AwaitingPayment, at),
        OrderEvent::OrderPaid {
            amount_minor,
            previous_status,
            at,
            ..
        } => {
            bump(
                conn,
                store_id,
                *at,
                &[("orders_paid", 1), ("revenue_minor", *amount_minor)],
            )
            .await?;
            for line in lines.iter() {
                sold(conn, store_id, line, *at).await?;
            }
            (previous_status, OrderStatus::Paid, at)
        }
        OrderEvent::OrderCancelled {
            previous_status,
            at,
            ..
        } => {
            bump(conn, store_id, *at, &[("orders_cancelled", 1)]).await?;
            (previous_status, OrderStatus::Cancelled, at)
        }
        OrderEvent::OrderExpired {
            previous_status,
            at,
            ..
        } => {
            bump(conn, store_id, *at, &[("orders_expired", 1)]).await?;
            (previous_status, OrderStatus::Expired, at)
        }
        OrderEvent::OrderFulfilled {
            previous_status,
            at,
        } => {
            bump(conn, store_id, *at, &[("orders_fulfilled", 1)]).await?;
            (previous_status, OrderStatus::Fulfilled, at)
        }
        OrderEvent::OrderCompleted {
            previous_status,
            at,
        } => {
            bump(conn, store_id, *at, &[("orders_completed", 1)]).await?;
            (previous_status, OrderStatus::Completed, at)
        }
    };
    let _ = at;
    move_status(conn, store_id, Some(*previous), next).await
}

async fn receipt_event(
    conn: &mut PgConnection,
    receipt_id: Uuid,
    event: &ReceiptEvent,
) -> Result<(), sqlx::Error> {
    match event {
        ReceiptEvent::PaymentReceiptSubmitted {
            store_id,
            submitted_at,
            ..
        } => {
            bump(
                conn,
                store_id.0,
                *submitted_at,
                &[("receipts_submitted", 1)],
            )
            .await
        }
        ReceiptEvent::PaymentReceiptVerified {
            order_id,
            verified_at,
            ..
        } => {
            let order: Option<(Uuid, Option<DateTime<Utc>>)> = sqlx::query_as(
                "select store_id, receipt_submitted_at from kpi_orders where order_id = $1",
            )
            .bind(order_id.0)
            .fetch_optional(&mut *conn)
            .await?;
            let Some((store_id, submitted_at)) = order else {
                return Ok(());
            };
            bump(conn, store_id, *verified_at, &[("receipts_verified", 1)]).await?;
            if let Some(submitted_at) = submitted_at {
                sqlx::query(
                    "insert into kpi_receipt_verifications (receipt_id, store_id, day, seconds)
                     select $1, $2, ($3 at time zone s.timezone)::date, $4 from kpi_stores s where s.store_id = $2",
                )
                .bind(receipt_id)
                .bind(store_id)
                .bind(verified_at)
                .bind((*verified_at - submitted_at).num_milliseconds() as f64 / 1000.0)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }
        ReceiptEvent::PaymentReceiptRejected {
            order_id,
            rejected_at,
            ..
        } => {
            let store_id: Option<Uuid> =
                sqlx::query_scalar("select store_id from kpi_orders where order_id = $1")
                    .bind(order_id.0)
                    .fetch_optional(&mut *conn)
                    .await?;
            match store_id {
                Some(store_id) => {
                    bump(conn, store_id, *rejected_at, &[("receipts_rejected", 1)]).await
                }
                None => Ok(()),
            }
        }
    }
}

/// Adds to counters of the store's row for the day (in its timezone) of `at`.
async fn bump(
    conn: &mut PgConnection,
    store_id: Uuid,
    at: DateTime<Utc>,
    add: &[(&'static str, i64)],
) -> Result<(), sqlx::Error> {
    let columns: Vec<&str> = add.iter().map(|(c, _)| *c).collect();
    let values: Vec<String> = (0..add.len()).map(|i| format!("${}", i + 3)).collect();
    let updates: Vec<String> = columns
        .iter()
        .map(|c| format!("{c} = kpi_daily.{c} + excluded.{c}"))
        .collect();
    let statement = format!(
        "insert into kpi_daily (store_id, currency, day, {})
         select $1, s.currency, ($2 at time zone s.timezone)::date, {} from kpi_stores s where s.store_id = $1
         on conflict (store_id, currency, day) do update set {}",
        columns.join(", "),
        values.join(", "),
        updates.join(", ")
    );
    let mut query = sqlx::query(&statement).bind(store_id).bind(at);
    for (_, value) in add {
        query = query.bind(value);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

async fn sold(
    conn: &mut PgConnection,
    store_id: Uuid,
    line: &OrderLine,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into kpi_product_daily (store_id, product_id, day, units_sold, revenue_minor)
         select $1, $2, ($3 at time zone s.timezone)::date, $4, $5 from kpi_stores s where s.store_id = $1
         on conflict (store_id, product_id, day) do update
            set units_sold = kpi_product_daily.units_sold + excluded.units_sold,
                revenue_minor = kpi_product_daily.revenue_minor + excluded.revenue_minor",
    )
    .bind(store_id)
    .bind(line.product_id.0)
    .bind(at)
    .bind(line.quantity)
    .bind(line.line_total_minor)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "insert into kpi_products (product_id, store_id, units_sold, last_sold_at) values ($1, $2, $3, $4)
         on conflict (product_id) do update
            set units_sold = kpi_products.units_sold + excluded.units_sold,
                last_sold_at = greatest(kpi_products.last_sold_at, excluded.last_sold_at)",
    )
    .bind(line.product_id.0)
    .bind(store_id)
    .bind(line.quantity)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn move_status(
    conn: &mut PgConnection,
    store_id: Uuid,
    from: Option<OrderStatus>,
    to: OrderStatus,
) -> Result<(), sqlx::Error> {
    if let Some(from) = from {
        sqlx::query(
            "update kpi_order_status set orders = orders - 1 where store_id = $1 and status = $2",
        )
        .bind(store_id)
        .bind(from.as_str())
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "insert into kpi_order_status (store_id, status, orders) values ($1, $2, 1)
         on conflict (store_id, status) do update set orders = kpi_order_status.orders + 1",
    )
    .bind(store_id)
    .bind(to.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

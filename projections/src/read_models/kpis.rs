//! Read model "kpis": incremental rollups per store, currency and day (in the store's
//! timezone): orders placed/paid/cancelled/expired/fulfilled/completed, revenue (paid orders),
//! receipts; per product and day: units and revenue; per store: orders by current status; per
//! verified receipt: seconds from submission to verification. Its queries (`kpis::queries`) sum
//! these rows; they never scan orders. The figures as they stood at a past instant are replayed
//! from the log through this same fold (`kpis::as_of`).
//!
//! A batch is folded in memory (counters added up per row) and written with one set-based
//! statement per table. Money sums are `i128` in the fold and `numeric(38, 0)` in the tables:
//! one order can total 10^18 minor units, so a day of them passes `i64`. Every addition to a
//! sum is checked; one that does not fit fails the projection instead of wrapping.

pub mod as_of;
pub mod queries;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aggregates::order::{OrderEvent, OrderLine, OrderStatus};
use aggregates::receipt::ReceiptEvent;
use aggregates::store::StoreEvent;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use sqlx::types::Json;
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

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let mut fold = Fold::load(conn, events).await?;
        for envelope in events {
            match &envelope.event {
                DomainEvent::Store(event) => fold.store_event(envelope.aggregate_uuid()?, event),
                DomainEvent::Order(event) => fold.order_event(envelope.aggregate_uuid()?, event)?,
                DomainEvent::Receipt(event) => {
                    fold.receipt_event(envelope.aggregate_uuid()?, event)?
                }
                _ => {}
            }
        }
        fold.write(conn).await?;
        Ok(())
    }
}

struct StoreRow {
    name: String,
    timezone: String,
    tz: Option<Tz>,
    currency: String,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    order_id: Uuid,
    store_id: Uuid,
    customer_id: Uuid,
    currency: String,
    total_minor: i64,
    lines: Json<Vec<OrderLine>>,
    placed_at: DateTime<Utc>,
    receipt_submitted_at: Option<DateTime<Utc>>,
}

/// Counter columns of `kpi_daily`, in table order.
const DAILY: [&str; 11] = [
    "orders_placed",
    "placed_minor",
    "orders_paid",
    "revenue_minor",
    "orders_cancelled",
    "orders_expired",
    "orders_fulfilled",
    "orders_completed",
    "receipts_submitted",
    "receipts_verified",
    "receipts_rejected",
];

#[derive(Default)]
struct Fold {
    stores: HashMap<Uuid, StoreRow>,
    stores_changed: BTreeSet<Uuid>,
    orders: HashMap<Uuid, OrderRow>,
    orders_changed: BTreeSet<Uuid>,
    /// Counters (and the two money sums) per store, currency and local day.
    daily: BTreeMap<(Uuid, String, NaiveDate), [i128; DAILY.len()]>,
    /// Units and revenue per store, product and local day.
    product_daily: BTreeMap<(Uuid, Uuid, NaiveDate), (i64, i128)>,
    products: BTreeMap<Uuid, (Uuid, i64, DateTime<Utc>)>,
    verifications: Vec<(Uuid, Uuid, NaiveDate, f64)>,
    status: BTreeMap<(Uuid, &'static str), i64>,
}

impl Fold {
    /// Loads every store (few rows) and the orders this batch touches.
    async fn load(conn: &mut PgConnection, events: &[Envelope]) -> Result<Fold, sqlx::Error> {
        let stores: Vec<(Uuid, String, String, String)> =
            sqlx::query_as("select store_id, name, timezone, currency from kpi_stores")
                .fetch_all(&mut *conn)
                .await?;
        let touched: Vec<Uuid> = events
            .iter()
            .filter_map(|e| match &e.event {
                DomainEvent::Order(OrderEvent::OrderPlaced { .. }) => None,
                DomainEvent::Order(_) => e.aggregate_uuid().ok(),
                DomainEvent::Receipt(ReceiptEvent::PaymentReceiptVerified { order_id, .. })
                | DomainEvent::Receipt(ReceiptEvent::PaymentReceiptRejected { order_id, .. }) => {
                    Some(order_id.0)
                }
                _ => None,
            })
            .collect();
        let orders: Vec<OrderRow> = if touched.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(
                "select order_id, store_id, customer_id, currency, total_minor, lines, placed_at, receipt_submitted_at
                   from kpi_orders where order_id = any($1)",
            )
            .bind(&touched)
            .fetch_all(&mut *conn)
            .await?
        };
        Ok(Fold {
            stores: stores
                .into_iter()
                .map(|(id, name, timezone, currency)| {
                    let tz = timezone.parse().ok();
                    (
                        id,
                        StoreRow {
                            name,
                            timezone,
                            tz,
                            currency,
                        },
                    )
                })
                .collect(),
            orders: orders.into_iter().map(|o| (o.order_id, o)).collect(),
            ..Fold::default()
        })
    }

    /// Adds to the store's counters for the local day of `at` (unknown stores are skipped).
    fn bump(
        &mut self,
        store_id: Uuid,
        at: DateTime<Utc>,
        add: &[(&'static str, i64)],
    ) -> Result<(), ProjectionError> {
        let Some((currency, day)) = self.local_day(store_id, at) else {
            return Ok(());
        };
        let row = self.daily.entry((store_id, currency, day)).or_default();
        for &(column, value) in add {
            if let Some(i) = DAILY.iter().position(|c| *c == column) {
                row[i] = row[i]
                    .checked_add(i128::from(value))
                    .ok_or(ProjectionError::OutOfRange(column))?;
            }
        }
        Ok(())
    }

    fn local_day(&self, store_id: Uuid, at: DateTime<Utc>) -> Option<(String, NaiveDate)> {
        let store = self.stores.get(&store_id)?;
        let day = match store.tz {
            Some(tz) => at.with_timezone(&tz).date_naive(),
            None => at.date_naive(),
        };
        Some((store.currency.clone(), day))
    }

    fn move_status(&mut self, store_id: Uuid, from: Option<OrderStatus>, to: OrderStatus) {
        if let Some(from) = from {
            *self.status.entry((store_id, from.as_str())).or_default() -= 1;
        }
        *self.status.entry((store_id, to.as_str())).or_default() += 1;
    }

    fn store_event(&mut self, store_id: Uuid, event: &StoreEvent) {
        match event {
            StoreEvent::StoreCreated {
                name,
                currency,
                timezone,
                ..
            } => {
                self.stores.insert(
                    store_id,
                    StoreRow {
                        name: name.clone(),
                        timezone: timezone.clone(),
                        tz: timezone.parse().ok(),
                        currency: currency.code().to_owned(),
                    },
                );
                self.stores_changed.insert(store_id);
            }
            StoreEvent::StoreSettingsChanged { name, timezone, .. } => {
                if let Some(store) = self.stores.get_mut(&store_id) {
                    if let Some(name) = name {
                        store.name = name.clone();
                    }
                    if let Some(timezone) = timezone {
                        store.timezone = timezone.clone();
                        store.tz = timezone.parse().ok();
                    }
                    self.stores_changed.insert(store_id);
                }
            }
            _ => {}
        }
    }

    fn order_event(&mut self, order_id: Uuid, event: &OrderEvent) -> Result<(), ProjectionError> {
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
            self.orders.insert(
                order_id,
                OrderRow {
                    order_id,
                    store_id: store_id.0,
                    customer_id: customer_id.0,
                    currency: currency.code().to_owned(),
                    total_minor: *total_minor,
                    lines: Json(lines.clone()),
                    placed_at: *placed_at,
                    receipt_submitted_at: None,
                },
            );
            self.orders_changed.insert(order_id);
            self.bump(
                store_id.0,
                *placed_at,
                &[("orders_placed", 1), ("placed_minor", *total_minor)],
            )?;
            self.move_status(store_id.0, None, OrderStatus::AwaitingPayment);
            return Ok(());
        }
        let Some(store_id) = self.orders.get(&order_id).map(|o| o.store_id) else {
            return Ok(());
        };
        let (previous, next) = match event {
            OrderEvent::OrderPlaced { .. } => return Ok(()),
            OrderEvent::OrderReceiptSubmitted {
                previous_status,
                at,
                ..
            } => {
                if let Some(order) = self.orders.get_mut(&order_id) {
                    order.receipt_submitted_at = Some(*at);
                    self.orders_changed.insert(order_id);
                }
                (previous_status, OrderStatus::ReceiptSubmitted)
            }
            OrderEvent::OrderReceiptRejected {
                previous_status, ..
            } => (previous_status, OrderStatus::AwaitingPayment),
            OrderEvent::OrderPaid {
                amount_minor,
                previous_status,
                at,
                ..
            } => {
                self.bump(
                    store_id,
                    *at,
                    &[("orders_paid", 1), ("revenue_minor", *amount_minor)],
                )?;
                let lines = self
                    .orders
                    .get(&order_id)
                    .map(|o| o.lines.0.clone())
                    .unwrap_or_default();
                if let Some((_, day)) = self.local_day(store_id, *at) {
                    for line in lines {
                        let sold = self
                            .product_daily
                            .entry((store_id, line.product_id.0, day))
                            .or_default();
                        sold.0 = sold
                            .0
                            .checked_add(line.quantity)
                            .ok_or(ProjectionError::OutOfRange("units_sold"))?;
                        sold.1 = sold
                            .1
                            .checked_add(i128::from(line.line_total_minor))
                            .ok_or(ProjectionError::OutOfRange("revenue_minor"))?;
                        let product = self
                            .products
                            .entry(line.product_id.0)
                            .or_insert((store_id, 0, *at));
                        product.1 = product
                            .1
                            .checked_add(line.quantity)
                            .ok_or(ProjectionError::OutOfRange("units_sold"))?;
                        product.2 = product.2.max(*at);
                    }
                }
                (previous_status, OrderStatus::Paid)
            }
            OrderEvent::OrderCancelled {
                previous_status,
                at,
                ..
            } => {
                self.bump(store_id, *at, &[("orders_cancelled", 1)])?;
                (previous_status, OrderStatus::Cancelled)
            }
            OrderEvent::OrderExpired {
                previous_status,
                at,
                ..
            } => {
                self.bump(store_id, *at, &[("orders_expired", 1)])?;
                (previous_status, OrderStatus::Expired)
            }
            OrderEvent::OrderFulfilled {
                previous_status,
                at,
            } => {
                self.bump(store_id, *at, &[("orders_fulfilled", 1)])?;
                (previous_status, OrderStatus::Fulfilled)
            }
            OrderEvent::OrderCompleted {
                previous_status,
                at,
            } => {
                self.bump(store_id, *at, &[("orders_completed", 1)])?;
                (previous_status, OrderStatus::Completed)
            }
        };
        self.move_status(store_id, Some(*previous), next);
        Ok(())
    }

    fn receipt_event(
        &mut self,
        receipt_id: Uuid,
        event: &ReceiptEvent,
    ) -> Result<(), ProjectionError> {
        match event {
            ReceiptEvent::PaymentReceiptSubmitted {
                store_id,
                submitted_at,
                ..
            } => self.bump(store_id.0, *submitted_at, &[("receipts_submitted", 1)])?,
            ReceiptEvent::PaymentReceiptVerified {
                order_id,
                verified_at,
                ..
            } => {
                let Some((store_id, submitted_at)) = self
                    .orders
                    .get(&order_id.0)
                    .map(|o| (o.store_id, o.receipt_submitted_at))
                else {
                    return Ok(());
                };
                self.bump(store_id, *verified_at, &[("receipts_verified", 1)])?;
                if let (Some(submitted_at), Some((_, day))) =
                    (submitted_at, self.local_day(store_id, *verified_at))
                {
                    let seconds = (*verified_at - submitted_at).num_milliseconds() as f64 / 1000.0;
                    self.verifications
                        .push((receipt_id, store_id, day, seconds));
                }
            }
            ReceiptEvent::PaymentReceiptRejected {
                order_id,
                rejected_at,
                ..
            } => {
                if let Some(store_id) = self.orders.get(&order_id.0).map(|o| o.store_id) {
                    self.bump(store_id, *rejected_at, &[("receipts_rejected", 1)])?;
                }
            }
            // Nobody decided it: its order's cancellation or expiry is what the KPIs count.
            ReceiptEvent::PaymentReceiptVoided { .. } => {}
        }
        Ok(())
    }

    /// Writes the fold: one statement per table.
    async fn write(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if !self.stores_changed.is_empty() {
            let rows: Vec<&StoreRow> = self
                .stores_changed
                .iter()
                .filter_map(|id| self.stores.get(id))
                .collect();
            let ids: Vec<Uuid> = self.stores_changed.iter().copied().collect();
            sqlx::query(
                "insert into kpi_stores (store_id, name, timezone, currency)
                 select * from unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
                 on conflict (store_id) do update set name = excluded.name, timezone = excluded.timezone",
            )
            .bind(&ids)
            .bind(rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.timezone.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.currency.as_str()).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !self.orders_changed.is_empty() {
            let rows: Vec<&OrderRow> = self
                .orders_changed
                .iter()
                .filter_map(|id| self.orders.get(id))
                .collect();
            sqlx::query(
                "insert into kpi_orders (order_id, store_id, customer_id, currency, total_minor, lines, placed_at,
                                         receipt_submitted_at)
                 select * from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::bigint[], $6::jsonb[],
                                      $7::timestamptz[], $8::timestamptz[])
                 on conflict (order_id) do update set receipt_submitted_at = excluded.receipt_submitted_at",
            )
            .bind(rows.iter().map(|r| r.order_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.store_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.customer_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.currency.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.total_minor).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| serde_json::to_value(&r.lines.0).unwrap_or_default()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.placed_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.receipt_submitted_at).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !self.daily.is_empty() {
            // Bound as text: sqlx has no `numeric` without another crate, and text is exact.
            // The counters' integer columns take their values by assignment cast.
            let counters: Vec<String> = (0..DAILY.len())
                .map(|i| format!("${}::text[]::numeric[]", i + 4))
                .collect();
            let updates: Vec<String> = DAILY
                .iter()
                .map(|c| format!("{c} = kpi_daily.{c} + excluded.{c}"))
                .collect();
            let statement = format!(
                "insert into kpi_daily (store_id, currency, day, {})
                 select * from unnest($1::uuid[], $2::text[], $3::date[], {})
                 on conflict (store_id, currency, day) do update set {}",
                DAILY.join(", "),
                counters.join(", "),
                updates.join(", ")
            );
            let keys: Vec<&(Uuid, String, NaiveDate)> = self.daily.keys().collect();
            let mut query = sqlx::query(&statement)
                .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
                .bind(keys.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
                .bind(keys.iter().map(|k| k.2).collect::<Vec<_>>());
            for i in 0..DAILY.len() {
                query = query.bind(
                    self.daily
                        .values()
                        .map(|v| v[i].to_string())
                        .collect::<Vec<String>>(),
                );
            }
            query.execute(&mut *conn).await?;
        }
        if !self.product_daily.is_empty() {
            sqlx::query(
                "insert into kpi_product_daily (store_id, product_id, day, units_sold, revenue_minor)
                 select * from unnest($1::uuid[], $2::uuid[], $3::date[], $4::bigint[], $5::text[]::numeric[])
                 on conflict (store_id, product_id, day) do update
                    set units_sold = kpi_product_daily.units_sold + excluded.units_sold,
                        revenue_minor = kpi_product_daily.revenue_minor + excluded.revenue_minor",
            )
            .bind(self.product_daily.keys().map(|k| k.0).collect::<Vec<_>>())
            .bind(self.product_daily.keys().map(|k| k.1).collect::<Vec<_>>())
            .bind(self.product_daily.keys().map(|k| k.2).collect::<Vec<_>>())
            .bind(self.product_daily.values().map(|v| v.0).collect::<Vec<_>>())
            .bind(
                self.product_daily
                    .values()
                    .map(|v| v.1.to_string())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *conn)
            .await?;
        }
        if !self.products.is_empty() {
            sqlx::query(
                "insert into kpi_products (product_id, store_id, units_sold, last_sold_at)
                 select * from unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::timestamptz[])
                 on conflict (product_id) do update
                    set units_sold = kpi_products.units_sold + excluded.units_sold,
                        last_sold_at = greatest(kpi_products.last_sold_at, excluded.last_sold_at)",
            )
            .bind(self.products.keys().copied().collect::<Vec<_>>())
            .bind(self.products.values().map(|v| v.0).collect::<Vec<_>>())
            .bind(self.products.values().map(|v| v.1).collect::<Vec<_>>())
            .bind(self.products.values().map(|v| v.2).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !self.verifications.is_empty() {
            sqlx::query(
                "insert into kpi_receipt_verifications (receipt_id, store_id, day, seconds)
                 select * from unnest($1::uuid[], $2::uuid[], $3::date[], $4::float8[])",
            )
            .bind(self.verifications.iter().map(|v| v.0).collect::<Vec<_>>())
            .bind(self.verifications.iter().map(|v| v.1).collect::<Vec<_>>())
            .bind(self.verifications.iter().map(|v| v.2).collect::<Vec<_>>())
            .bind(self.verifications.iter().map(|v| v.3).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        // Rows with a net change of zero are written too: which rows exist must not depend on
        // where batch boundaries fall (a live runner and a rebuild batch differently).
        let status: Vec<(&(Uuid, &str), &i64)> = self.status.iter().collect();
        if !status.is_empty() {
            sqlx::query(
                "insert into kpi_order_status (store_id, status, orders)
                 select * from unnest($1::uuid[], $2::text[], $3::int[])
                 on conflict (store_id, status) do update set orders = kpi_order_status.orders + excluded.orders",
            )
            .bind(status.iter().map(|(k, _)| k.0).collect::<Vec<_>>())
            .bind(status.iter().map(|(k, _)| k.1).collect::<Vec<_>>())
            .bind(status.iter().map(|(_, v)| **v as i32).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

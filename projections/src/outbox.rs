//! The notification outbox (ARCHITECTURE rule 7): a process manager on the global log that
//! records, in the same transaction as its checkpoint, who is to be told what. A delivery
//! worker (`src/notify/`) sends each row at least once, with retries, and marks the result; the
//! outbox itself never talks to the outside world, so a crash anywhere loses no notification
//! and sends none twice from here.
//!
//! Recipients are an account (the customer of an order) or a store's staff holding a
//! permission (expanded into accounts by the worker at sending time, so a role granted later
//! still counts). Rows carry everything the message needs that the log knows (order, amounts,
//! reasons); the worker renders them in the recipient's language.
//!
//! Each row carries a **priority** decided by its kind ([`priority_of`]), which the worker routes
//! by: `urgent` goes to every channel the recipient enabled, `normal` to Telegram and the
//! notification center, `low` to the notification center only.
//!
//! Unlike a read model this is **not rebuilt**: replaying it would queue every notification of
//! the past again. Its checkpoint starts at the head of the log when it is first installed
//! (migration), and `projections rebuild` / `verify` do not know it.

use std::collections::HashMap;

use aggregates::order::{CancelledBy, OrderEvent};
use aggregates::receipt::ReceiptEvent;
use aggregates::stock::StockEvent;
use async_trait::async_trait;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::event::{DomainEvent, Envelope};
use crate::{Projection, ProjectionError};

/// The name of the outbox's checkpoint (and its leader lock).
pub const OUTBOX: &str = "notification-outbox";

/// How pressing a notification is: decides its channels (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Priority {
    Urgent,
    Normal,
    Low,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Urgent, Priority::Normal, Priority::Low];

    /// As stored (`notification_outbox.priority`) and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == value)
    }
}

/// The kinds of notification this process manager records, with their priority: what someone
/// must act on or hear at once (a receipt to review, stock gone, money confirmed or refused) is
/// urgent; the rest of an order's life and a low stock level are normal; summaries are low.
pub const KINDS: &[(&str, Priority)] = &[
    ("receipt_submitted", Priority::Urgent),
    ("stock_out", Priority::Urgent),
    ("order_paid", Priority::Urgent),
    ("receipt_rejected", Priority::Urgent),
    ("order_cancelled", Priority::Normal),
    ("order_cancelled_by_customer", Priority::Normal),
    ("stock_low", Priority::Normal),
    ("order_fulfilled", Priority::Normal),
    ("order_expired", Priority::Normal),
    ("daily_summary", Priority::Low),
];

/// The priority of a kind of notification ([`KINDS`]; an unknown kind is normal).
pub fn priority_of(kind: &str) -> Priority {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(Priority::Normal, |(_, p)| *p)
}

/// Who a notification is for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Recipient {
    Account(Uuid),
    /// Everyone on the store's staff whose role allows the named permission.
    Staff {
        store_id: Uuid,
        permission: &'static str,
    },
}

/// One row to record.
struct Delivery {
    position: i64,
    recipient: Recipient,
    kind: &'static str,
    params: serde_json::Value,
    at: chrono::DateTime<chrono::Utc>,
}

/// The process manager that fills `notification_outbox`.
pub struct NotificationOutbox;

#[async_trait]
impl Projection for NotificationOutbox {
    fn name(&self) -> &'static str {
        OUTBOX
    }

    fn tables(&self) -> &'static [&'static str] {
        &["notification_outbox", "outbox_orders", "outbox_products"]
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        // Orders and products seen in this batch, then those known from earlier batches.
        let mut orders: HashMap<Uuid, (Uuid, Uuid)> = HashMap::new();
        let mut products: HashMap<Uuid, Uuid> = HashMap::new();
        let mut deliveries = Vec::new();
        for envelope in events {
            let id = envelope.aggregate_uuid()?;
            let position = envelope.raw.global_position;
            let at = envelope.raw.recorded_at;
            match &envelope.event {
                DomainEvent::Order(OrderEvent::OrderPlaced {
                    store_id,
                    customer_id,
                    ..
                }) => {
                    orders.insert(id, (store_id.0, customer_id.0));
                    sqlx::query(
                        "insert into outbox_orders (order_id, store_id, customer_id) \
                         values ($1, $2, $3) on conflict do nothing",
                    )
                    .bind(id)
                    .bind(store_id.0)
                    .bind(customer_id.0)
                    .execute(&mut *conn)
                    .await?;
                }
                DomainEvent::Stock(StockEvent::StockTracked { store_id, .. }) => {
                    products.insert(id, store_id.0);
                    sqlx::query(
                        "insert into outbox_products (product_id, store_id) values ($1, $2) \
                         on conflict do nothing",
                    )
                    .bind(id)
                    .bind(store_id.0)
                    .execute(&mut *conn)
                    .await?;
                }
                DomainEvent::Order(event) => {
                    let Some((store_id, customer_id)) = order_of(conn, &orders, id).await? else {
                        continue;
                    };
                    let order = json!({ "order_id": id, "store_id": store_id });
                    let to_customer = |kind, params| Delivery {
                        position,
                        recipient: Recipient::Account(customer_id),
                        kind,
                        params,
                        at,
                    };
                    match event {
                        OrderEvent::OrderPaid {
                            amount_minor,
                            currency,
                            ..
                        } => deliveries.push(to_customer(
                            "order_paid",
                            merge(
                                &order,
                                json!({"amount_minor": amount_minor, "currency": currency}),
                            ),
                        )),
                        OrderEvent::OrderReceiptRejected { reason, .. } => {
                            deliveries.push(to_customer(
                                "receipt_rejected",
                                merge(&order, json!({"reason": reason})),
                            ))
                        }
                        OrderEvent::OrderCancelled { by, reason, .. } => match by {
                            CancelledBy::Staff => deliveries.push(to_customer(
                                "order_cancelled",
                                merge(&order, json!({"reason": reason})),
                            )),
                            CancelledBy::Customer => deliveries.push(Delivery {
                                position,
                                recipient: Recipient::Staff {
                                    store_id,
                                    permission: "ViewOrders",
                                },
                                kind: "order_cancelled_by_customer",
                                params: merge(&order, json!({"reason": reason})),
                                at,
                            }),
                        },
                        OrderEvent::OrderExpired { .. } => {
                            deliveries.push(to_customer("order_expired", order.clone()))
                        }
                        OrderEvent::OrderFulfilled { .. } => {
                            deliveries.push(to_customer("order_fulfilled", order.clone()))
                        }
                        _ => {}
                    }
                }
                DomainEvent::Receipt(ReceiptEvent::PaymentReceiptSubmitted {
                    order_id,
                    store_id,
                    claimed_amount,
                    ..
                }) => deliveries.push(Delivery {
                    position,
                    recipient: Recipient::Staff {
                        store_id: store_id.0,
                        permission: "ReviewReceipts",
                    },
                    kind: "receipt_submitted",
                    params: json!({
                        "receipt_id": id,
                        "order_id": order_id.0,
                        "store_id": store_id.0,
                        "claimed_amount_minor": claimed_amount.map(|m| m.amount_minor),
                    }),
                    at,
                }),
                DomainEvent::Stock(
                    event @ (StockEvent::StockLevelLow { .. } | StockEvent::StockDepleted { .. }),
                ) => {
                    let Some(store_id) = product_of(conn, &products, id).await? else {
                        continue;
                    };
                    let (kind, available, threshold) = match event {
                        StockEvent::StockLevelLow {
                            available,
                            threshold,
                            ..
                        } => ("stock_low", *available, *threshold),
                        StockEvent::StockDepleted { threshold, .. } => ("stock_out", 0, *threshold),
                        _ => continue,
                    };
                    deliveries.push(Delivery {
                        position,
                        recipient: Recipient::Staff {
                            store_id,
                            permission: "ManageStock",
                        },
                        kind,
                        params: json!({
                            "product_id": id,
                            "store_id": store_id,
                            "available": available,
                            "threshold": threshold,
                        }),
                        at,
                    });
                }
                _ => {}
            }
        }
        insert(conn, deliveries).await?;
        Ok(())
    }
}

fn merge(base: &serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    let mut merged = base.clone();
    if let (Some(target), serde_json::Value::Object(extra)) = (merged.as_object_mut(), extra) {
        target.extend(extra);
    }
    merged
}

async fn order_of(
    conn: &mut PgConnection,
    batch: &HashMap<Uuid, (Uuid, Uuid)>,
    order_id: Uuid,
) -> Result<Option<(Uuid, Uuid)>, sqlx::Error> {
    if let Some(known) = batch.get(&order_id) {
        return Ok(Some(*known));
    }
    sqlx::query_as("select store_id, customer_id from outbox_orders where order_id = $1")
        .bind(order_id)
        .fetch_optional(conn)
        .await
}

async fn product_of(
    conn: &mut PgConnection,
    batch: &HashMap<Uuid, Uuid>,
    product_id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    if let Some(store_id) = batch.get(&product_id) {
        return Ok(Some(*store_id));
    }
    sqlx::query_scalar("select store_id from outbox_products where product_id = $1")
        .bind(product_id)
        .fetch_optional(conn)
        .await
}

async fn insert(conn: &mut PgConnection, deliveries: Vec<Delivery>) -> Result<(), sqlx::Error> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let mut positions = Vec::new();
    let mut accounts = Vec::new();
    let mut stores = Vec::new();
    let mut permissions = Vec::new();
    let mut kinds = Vec::new();
    let mut params = Vec::new();
    let mut ats = Vec::new();
    let mut priorities = Vec::new();
    for delivery in deliveries {
        positions.push(delivery.position);
        match delivery.recipient {
            Recipient::Account(account) => {
                accounts.push(Some(account));
                stores.push(None);
                permissions.push(None);
            }
            Recipient::Staff {
                store_id,
                permission,
            } => {
                accounts.push(None);
                stores.push(Some(store_id));
                permissions.push(Some(permission));
            }
        }
        priorities.push(priority_of(delivery.kind).as_str());
        kinds.push(delivery.kind);
        params.push(delivery.params);
        ats.push(delivery.at);
    }
    sqlx::query(
        "insert into notification_outbox
                (global_position, account_id, store_id, permission, kind, params, created_at,
                 priority)
         select * from unnest($1::bigint[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
                              $6::jsonb[], $7::timestamptz[], $8::text[])
         on conflict do nothing",
    )
    .bind(positions)
    .bind(accounts)
    .bind(stores)
    .bind(permissions)
    .bind(kinds)
    .bind(params)
    .bind(ats)
    .bind(priorities)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_the_documented_priorities_and_the_names_round_trip() {
        assert_eq!(priority_of("receipt_submitted"), Priority::Urgent);
        assert_eq!(priority_of("stock_low"), Priority::Normal);
        assert_eq!(priority_of("daily_summary"), Priority::Low);
        assert_eq!(priority_of("something_new"), Priority::Normal);
        for priority in Priority::ALL {
            assert_eq!(Priority::parse(priority.as_str()), Some(priority));
        }
    }
}

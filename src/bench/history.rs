//! A realistic event history for benchmarks, made by the real aggregates.
//!
//! Commands run in memory against the pure aggregates (the same `handle` the service runs), so
//! every event, amount and level is one the domain would really emit; the events are then
//! bulk-inserted into the event store with ordinary metadata. Several stores in two currencies,
//! a catalogue per store, customers, and orders through every lifecycle: paid and completed,
//! cancelled, expired, rejected-then-paid, and left unpaid; stock restocked when it runs low.

use std::collections::HashMap;

use aggregates::account::{Account, AccountCommand};
use aggregates::order::{CancelledBy, LineRequest, Order, OrderCommand};
use aggregates::product::{Product, ProductCommand, Sku};
use aggregates::receipt::{PaymentReceipt, ReceiptCommand, ReceiptFile};
use aggregates::stock::{ReleaseReason, Stock, StockCommand};
use aggregates::store::{Store, StoreCommand, StoreName, TimeZone as StoreTimeZone};
use aggregates::{
    AccountId, Channel, Currency, EventMetadata, Money, OrderId, ProductId, ReceiptId, StoreId,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use sqlx::PgPool;

/// Rows written per insert statement (and transaction).
const BATCH: usize = 5_000;

/// One event, serialised, ready for the event store.
struct EventRow {
    aggregate_type: &'static str,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
}

/// Buffers events and writes them in bulk, keeping each aggregate's sequence.
struct Writer<'a> {
    pool: &'a PgPool,
    sequences: HashMap<(&'static str, String), i64>,
    rows: Vec<EventRow>,
    written: u64,
    metadata: String,
}

impl<'a> Writer<'a> {
    fn new(pool: &'a PgPool, metadata: &EventMetadata) -> anyhow::Result<Self> {
        Ok(Writer {
            pool,
            sequences: HashMap::new(),
            rows: Vec::with_capacity(BATCH + 64),
            written: 0,
            metadata: serde_json::to_string(&metadata.to_map())?,
        })
    }

    async fn push<A: Aggregate>(&mut self, id: &str, events: Vec<A::Event>) -> anyhow::Result<()> {
        for event in events {
            let sequence = self.sequences.entry((A::TYPE, id.to_owned())).or_insert(0);
            *sequence += 1;
            self.rows.push(EventRow {
                aggregate_type: A::TYPE,
                aggregate_id: id.to_owned(),
                sequence: *sequence,
                event_type: event.event_type(),
                event_version: event.event_version(),
                payload: serde_json::to_string(&event)?,
            });
        }
        if self.rows.len() >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.rows);
        self.written += rows.len() as u64;
        let column = |f: fn(&EventRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
        let sequences: Vec<i64> = rows.iter().map(|r| r.sequence).collect();
        sqlx::query(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             select t, id, seq, ty, v, p::json, $7::json
               from unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[]) as u(t, id, seq, ty, v, p)",
        )
        .bind(column(|r| r.aggregate_type))
        .bind(column(|r| &r.aggregate_id))
        .bind(&sequences)
        .bind(column(|r| &r.event_type))
        .bind(column(|r| &r.event_version))
        .bind(column(|r| &r.payload))
        .bind(&self.metadata)
        .execute(self.pool)
        .await?;
        Ok(())
    }
}

/// Runs a command on an in-memory aggregate; the emitted events (empty if refused).
async fn run<A: Aggregate<Services = ()>>(aggregate: &mut A, command: A::Command) -> Vec<A::Event> {
    let sink = EventSink::default();
    match aggregate.handle(command, &(), &sink).await {
        Ok(()) => sink.collect().await,
        Err(_) => Vec::new(),
    }
}

struct Catalogue {
    store_id: StoreId,
    currency: Currency,
    products: Vec<(ProductId, i64)>,
}

/// Writes a history of about `target` events; returns how many were written.
pub async fn generate(pool: &PgPool, target: u64) -> anyhow::Result<u64> {
    let metadata = EventMetadata {
        actor_id: Some(AccountId::new()),
        actor_role: aggregates::ActorRole::Owner,
        channel: Channel::Api,
        request_id: "bench".into(),
        client_request_id: None,
        correlation_id: uuid::Uuid::now_v7(),
        causation_position: None,
    };
    let mut writer = Writer::new(pool, &metadata)?;
    let start: DateTime<Utc> = Utc
        .with_ymd_and_hms(2025, 11, 1, 8, 0, 0)
        .single()
        .unwrap_or_else(Utc::now);
    let owner = AccountId::new();
    let rub: Currency = "RUB".parse()?;
    let eur: Currency = "EUR".parse()?;

    let mut stocks: HashMap<ProductId, Stock> = HashMap::new();
    let mut catalogues = Vec::new();
    for (n, (currency, timezone)) in [
        (rub, "Europe/Moscow"),
        (rub, "Asia/Yekaterinburg"),
        (eur, "Europe/Berlin"),
        (rub, "Europe/Moscow"),
    ]
    .into_iter()
    .enumerate()
    {
        let store_id = StoreId::new();
        let mut store = Store::default();
        let events = run(
            &mut store,
            StoreCommand::CreateStore {
                store_id,
                owner_id: owner,
                name: StoreName::parse(&format!("Bench store {n}"))
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                currency,
                timezone: StoreTimeZone::parse(timezone).map_err(|e| anyhow::anyhow!("{e}"))?,
                payment_instructions: "Bench bank, account 1".into(),
                default_low_stock_threshold: 10,
                reservation_ttl_minutes: 60,
                at: start,
            },
        )
        .await;
        writer.push::<Store>(&store_id.to_string(), events).await?;
        let mut products = Vec::new();
        for p in 0..250 {
            let product_id = ProductId::new();
            let price = 100_00 + (p as i64 * 37) % 5_000_00;
            let mut product = Product::default();
            let events = run(
                &mut product,
                ProductCommand::CreateProduct {
                    product_id,
                    store_id,
                    store_currency: currency,
                    name: format!("Product {p}"),
                    description: String::new(),
                    sku: Sku::parse(&format!("SKU-{n}-{p}")).map_err(|e| anyhow::anyhow!("{e}"))?,
                    price: Money::new(price, currency),
                    at: start,
                },
            )
            .await;
            writer
                .push::<Product>(&product_id.to_string(), events)
                .await?;
            let mut stock = Stock::default();
            let mut events = run(
                &mut stock,
                StockCommand::Track {
                    product_id,
                    store_id,
                    store_default_threshold: 10,
                    at: start,
                },
            )
            .await;
            events.extend(
                run(
                    &mut stock,
                    StockCommand::Receive {
                        quantity: 200,
                        note: None,
                        at: start,
                    },
                )
                .await,
            );
            writer
                .push::<Stock>(&product_id.to_string(), events)
                .await?;
            stocks.insert(product_id, stock);
            products.push((product_id, price));
        }
        catalogues.push(Catalogue {
            store_id,
            currency,
            products,
        });
    }

    let customers: Vec<AccountId> = (0..20_000).map(|_| AccountId::new()).collect();
    for (n, customer) in customers.iter().enumerate() {
        let mut account = Account::default();
        let events = run(
            &mut account,
            AccountCommand::Register {
                account_id: *customer,
                // A stand-in for the sealed id: nothing in a benchmark opens it.
                telegram_user: Some(aggregates::SealedPersonalData {
                    subject_id: *customer,
                    algorithm: "xchacha20poly1305".into(),
                    nonce: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
                    ciphertext: format!("bench-{n}"),
                }),
                email: None,
                display_name: None,
                platform_admin: false,
                channel: Channel::Telegram,
                at: start,
            },
        )
        .await;
        writer
            .push::<Account>(&customer.to_string(), events)
            .await?;
    }

    // About ten events an order; spread over a year.
    let orders = (target.saturating_sub(writer.written + writer.rows.len() as u64) / 10).max(1);
    let spacing = Duration::seconds((365 * 24 * 3600 / orders as i64).max(1));
    let mut i: u64 = 0;
    while writer.written + (writer.rows.len() as u64) < target {
        let at = start + spacing * i as i32;
        let catalogue = &catalogues[(i % catalogues.len() as u64) as usize];
        let customer = customers[(i * 7919 % customers.len() as u64) as usize];
        let lines: Vec<LineRequest> = (0..1 + i % 3)
            .map(|k| {
                let (product_id, price) = catalogue.products
                    [((i * 31 + k * 97) % catalogue.products.len() as u64) as usize];
                LineRequest {
                    product_id,
                    quantity: 1 + (i % 2) as i64,
                    unit_price: Money::new(price, catalogue.currency),
                }
            })
            .collect();
        let mut lines = lines;
        lines.sort_by_key(|l| l.product_id);
        lines.dedup_by_key(|l| l.product_id);
        let order_id = OrderId::new();
        for line in &lines {
            let stock = stocks
                .get_mut(&line.product_id)
                .ok_or_else(|| anyhow::anyhow!("unknown product"))?;
            if stock.available() < line.quantity + 5 {
                let events = run(
                    stock,
                    StockCommand::Receive {
                        quantity: 200,
                        note: Some("restock".into()),
                        at,
                    },
                )
                .await;
                writer
                    .push::<Stock>(&line.product_id.to_string(), events)
                    .await?;
            }
            let events = run(
                stock,
                StockCommand::Reserve {
                    order_id,
                    quantity: line.quantity,
                    at,
                },
            )
            .await;
            writer
                .push::<Stock>(&line.product_id.to_string(), events)
                .await?;
        }
        let mut order = Order::default();
        let mut events = run(
            &mut order,
            OrderCommand::Place {
                order_id,
                store_id: catalogue.store_id,
                customer_id: customer,
                currency: catalogue.currency,
                lines: lines.clone(),
                contact: None,
                payment_due_by: at + Duration::minutes(60),
                at,
            },
        )
        .await;
        let minutes = |m: i64| at + Duration::minutes(m);
        let mut receipt_events = Vec::new();
        let submit = |order: &Order, n: i64| {
            let receipt_id = ReceiptId::new();
            let command = ReceiptCommand::Submit {
                receipt_id,
                order_id,
                store_id: catalogue.store_id,
                file: ReceiptFile {
                    storage_key: format!("receipts/{order_id}/{n}"),
                    sha256: format!("{:064x}", i * 10 + n as u64),
                    size_bytes: 120_000,
                    media_type: "image/jpeg".into(),
                },
                claimed_amount: order.total(),
                order_currency: catalogue.currency,
                order_payable: true,
                submitted_by: customer,
                channel: Channel::Telegram,
                at: minutes(5 * n),
            };
            (receipt_id, command)
        };
        let mut release = None;
        let mut commit = false;
        match i % 10 {
            6 => {
                events.extend(
                    run(
                        &mut order,
                        OrderCommand::Cancel {
                            by: CancelledBy::Customer,
                            actor_id: customer,
                            reason: None,
                            at: minutes(3),
                        },
                    )
                    .await,
                );
                release = Some(ReleaseReason::OrderCancelled);
            }
            7 => {
                events.extend(run(&mut order, OrderCommand::Expire { now: minutes(61) }).await);
                release = Some(ReleaseReason::OrderExpired);
            }
            9 => {}
            lifecycle => {
                let mut attempt = 1;
                if lifecycle == 8 {
                    let (receipt_id, command) = submit(&order, attempt);
                    let mut receipt = PaymentReceipt::default();
                    let mut r = run(&mut receipt, command).await;
                    events.extend(
                        run(
                            &mut order,
                            OrderCommand::RecordReceiptSubmitted {
                                receipt_id,
                                at: minutes(5),
                            },
                        )
                        .await,
                    );
                    events.extend(
                        run(
                            &mut order,
                            OrderCommand::RecordReceiptRejected {
                                receipt_id,
                                reason: "amount differs".into(),
                                at: minutes(20),
                            },
                        )
                        .await,
                    );
                    r.extend(
                        run(
                            &mut receipt,
                            ReceiptCommand::Reject {
                                rejected_by: owner,
                                reason: "amount differs".into(),
                                at: minutes(20),
                            },
                        )
                        .await,
                    );
                    receipt_events.push((receipt_id, r));
                    attempt += 1;
                }
                let (receipt_id, command) = submit(&order, attempt);
                let mut receipt = PaymentReceipt::default();
                let mut r = run(&mut receipt, command).await;
                events.extend(
                    run(
                        &mut order,
                        OrderCommand::RecordReceiptSubmitted {
                            receipt_id,
                            at: minutes(5 * attempt),
                        },
                    )
                    .await,
                );
                events.extend(
                    run(
                        &mut order,
                        OrderCommand::ConfirmPayment {
                            receipt_id,
                            at: minutes(30),
                        },
                    )
                    .await,
                );
                r.extend(
                    run(
                        &mut receipt,
                        ReceiptCommand::Verify {
                            verified_by: owner,
                            at: minutes(30),
                        },
                    )
                    .await,
                );
                receipt_events.push((receipt_id, r));
                events.extend(
                    run(
                        &mut order,
                        OrderCommand::Fulfil {
                            at: minutes(24 * 60),
                        },
                    )
                    .await,
                );
                if lifecycle <= 4 {
                    events.extend(
                        run(
                            &mut order,
                            OrderCommand::Complete {
                                at: minutes(4 * 24 * 60),
                            },
                        )
                        .await,
                    );
                }
                commit = true;
            }
        }
        writer.push::<Order>(&order_id.to_string(), events).await?;
        for (receipt_id, r) in receipt_events {
            writer
                .push::<PaymentReceipt>(&receipt_id.to_string(), r)
                .await?;
        }
        for line in &lines {
            let Some(stock) = stocks.get_mut(&line.product_id) else {
                continue;
            };
            let events = match (release, commit) {
                (Some(reason), _) => {
                    run(
                        stock,
                        StockCommand::Release {
                            order_id,
                            reason,
                            at: minutes(61),
                        },
                    )
                    .await
                }
                (None, true) => {
                    run(
                        stock,
                        StockCommand::Commit {
                            order_id,
                            at: minutes(24 * 60),
                        },
                    )
                    .await
                }
                _ => Vec::new(),
            };
            writer
                .push::<Stock>(&line.product_id.to_string(), events)
                .await?;
        }
        i += 1;
    }
    writer.flush().await?;
    Ok(writer.written)
}

/// Writes the history of one hot product: about `target` Stock events (receipts, then
/// reservations of which most are released or committed). Returns the product id.
pub async fn hot_product(pool: &PgPool, target: u64) -> anyhow::Result<ProductId> {
    let metadata = EventMetadata {
        actor_id: None,
        actor_role: aggregates::ActorRole::System,
        channel: Channel::System,
        request_id: "bench".into(),
        client_request_id: None,
        correlation_id: uuid::Uuid::now_v7(),
        causation_position: None,
    };
    let mut writer = Writer::new(pool, &metadata)?;
    let at = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_else(Utc::now);
    let product_id = ProductId::new();
    let id = product_id.to_string();
    let mut stock = Stock::default();
    let mut events = run(
        &mut stock,
        StockCommand::Track {
            product_id,
            store_id: StoreId::new(),
            store_default_threshold: 10,
            at,
        },
    )
    .await;
    events.extend(
        run(
            &mut stock,
            StockCommand::Receive {
                quantity: 1_000_000,
                note: None,
                at,
            },
        )
        .await,
    );
    writer.push::<Stock>(&id, events).await?;
    let mut n: u64 = 0;
    while writer.written + (writer.rows.len() as u64) < target {
        let order_id = OrderId::new();
        let mut events = run(
            &mut stock,
            StockCommand::Reserve {
                order_id,
                quantity: 1,
                at,
            },
        )
        .await;
        let settle = if n % 3 == 0 {
            StockCommand::Commit { order_id, at }
        } else {
            StockCommand::Release {
                order_id,
                reason: ReleaseReason::OrderExpired,
                at,
            }
        };
        // One in ten reservations stays open, so the saved state carries live reservations.
        if n % 10 != 0 {
            events.extend(run(&mut stock, settle).await);
        }
        writer.push::<Stock>(&id, events).await?;
        n += 1;
    }
    writer.flush().await?;
    Ok(product_id)
}

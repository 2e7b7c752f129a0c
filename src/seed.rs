//! `shopfront seed-demo`: a demo store with products, stock and orders in every state, so a
//! newcomer has data to look at. Running it again does nothing.

use aggregates::order::CancelledBy;
use aggregates::receipt::ReceiptFile;
use aggregates::{Channel, Money};
use sha2::{Digest, Sha256};

use crate::app::{
    App, AppError, CommandContext, ContactDetails, NewProduct, NewStore, OrderLineInput,
    PlaceOrder, SubmitReceipt,
};

/// The demo store's name (also how a second run recognises the first).
pub const DEMO_STORE_NAME: &str = "Demo Coffee Roasters";

/// Seeds the demo data; returns a one-line JSON summary.
pub async fn seed_demo(app: &App) -> Result<String, AppError> {
    let exists: bool = sqlx::query_scalar(
        "select exists(select 1 from events
                        where event_type = 'StoreCreated'
                          and payload -> 'StoreCreated' ->> 'name' = $1)",
    )
    .bind(DEMO_STORE_NAME)
    .fetch_one(&app.pool)
    .await?;
    if exists {
        return Ok(
            serde_json::json!({ "seeded": false, "reason": "the demo store exists" }).to_string(),
        );
    }

    let system = CommandContext::system("seed-demo");
    let owner_id = app
        .register_account(&system, Some("owner@demo.shopfront.dev"), None, false)
        .await?;
    let owner = CommandContext::for_actor(owner_id, "OWNER", Channel::Api);
    let rub = "RUB"
        .parse()
        .map_err(|_| AppError::invalid("currency", "RUB"))?;
    let store_id = app
        .create_store(
            &owner,
            NewStore {
                owner_id,
                name: DEMO_STORE_NAME.into(),
                currency: rub,
                timezone: "Europe/Moscow".into(),
                payment_instructions: "Transfer to Demo Bank, account 40817810000000000001, \
                                       recipient Demo Coffee Roasters LLC; put the order number \
                                       in the payment note."
                    .into(),
                default_low_stock_threshold: 5,
                reservation_ttl_minutes: 60,
            },
        )
        .await?;

    let catalogue = [
        ("Ethiopia Yirgacheffe 250 g", "ETH-YIR-250", 890_00, 40),
        ("Colombia Huila 250 g", "COL-HUI-250", 790_00, 25),
        ("Kenya AA 250 g", "KEN-AA-250", 990_00, 4),
        ("Espresso blend 1 kg", "ESP-BLD-1000", 2_490_00, 12),
        ("Paper filters, 100 pcs", "FLT-100", 350_00, 0),
    ];
    let mut products = Vec::new();
    for (name, sku, price, units) in catalogue {
        let product_id = app
            .create_product(
                &owner,
                store_id,
                NewProduct {
                    name: name.into(),
                    description: String::new(),
                    sku: sku.into(),
                    price: Money::new(price, rub),
                    initial_stock: (units > 0).then_some(units),
                    low_stock_threshold: None,
                },
            )
            .await?;
        products.push(product_id);
    }

    let mut orders = Vec::new();
    for (n, email) in ["anna@example.com", "boris@example.com", "vera@example.com"]
        .iter()
        .enumerate()
    {
        let customer_id = app
            .register_account(&system, Some(email), Some(1_000_000 + n as i64), false)
            .await?;
        let customer = CommandContext::for_actor(customer_id, "CUSTOMER", Channel::Telegram);
        for lines in [vec![(0, 1), (1, 2)], vec![(3, 1)]] {
            let order_id = app
                .place_order(
                    &customer,
                    PlaceOrder {
                        store_id,
                        customer_id,
                        lines: lines
                            .iter()
                            .map(|&(p, quantity)| OrderLineInput {
                                product_id: products[p],
                                quantity,
                            })
                            .collect(),
                        contact: Some(ContactDetails {
                            recipient: Some(format!("Demo customer {}", n + 1)),
                            phone: Some(format!("+7 900 000-00-0{}", n + 1)),
                            address: Some("Moscow, Tverskaya 1".into()),
                            note: None,
                        }),
                    },
                )
                .await?;
            orders.push((order_id, customer_id, customer.clone()));
        }
    }

    // Move the orders through their lifecycle: one of each state.
    let steps = orders.len();
    for (i, (order_id, customer_id, customer)) in orders.iter().enumerate() {
        match i {
            0 => {} // awaiting payment
            1 => {
                app.cancel_order(
                    customer,
                    *order_id,
                    CancelledBy::Customer,
                    Some("ordered twice".into()),
                )
                .await?
            }
            _ => {
                let content = format!("demo receipt for order {order_id}");
                let receipt_id = app
                    .submit_receipt(
                        customer,
                        SubmitReceipt {
                            order_id: *order_id,
                            file: ReceiptFile {
                                storage_key: format!("demo/{order_id}.pdf"),
                                sha256: hex::encode(Sha256::digest(content.as_bytes())),
                                size_bytes: content.len() as u64,
                                media_type: "application/pdf".into(),
                            },
                            claimed_amount: None,
                            submitted_by: *customer_id,
                        },
                    )
                    .await?;
                if i >= 3 {
                    app.verify_receipt(&owner, receipt_id).await?;
                }
                if i >= 4 {
                    app.fulfil_order(&owner, *order_id).await?;
                }
                if i >= 5 {
                    app.complete_order(&owner, *order_id).await?;
                }
            }
        }
    }

    Ok(serde_json::json!({
        "seeded": true,
        "store_id": store_id,
        "owner_id": owner_id,
        "products": products.len(),
        "orders": steps,
    })
    .to_string())
}

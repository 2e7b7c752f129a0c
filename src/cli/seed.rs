//! `shopfront seed-demo [--owner-email E]`: a demo store with products, stock and orders in
//! every state, and an owner who can sign in, so a newcomer has data to look at and a login to
//! look at it with. Running it again seeds nothing (but makes a given e-mail an owner).

use aggregates::product::Sku;
use aggregates::store::{StoreName, TimeZone};
use aggregates::{AccountId, Channel, Money, OrderId, StoreId};
use bytes::Bytes;
use secrecy::SecretString;

use crate::app::{
    grant, App, AppError, Caller, CommandContext, ContactDetails, NewProduct, NewStore,
    OrderLineInput, PlaceOrder, ReceiptUpload,
};

/// The demo store's name (also how a second run recognises the first).
pub const DEMO_STORE_NAME: &str = "Demo Coffee Roasters";

/// The login the demo store's owner gets when no `--owner-email` is given.
pub const DEMO_OWNER_EMAIL: &str = "owner@demo.shopfront.dev";

/// Seeds the demo data; returns a one-line JSON summary. The store's owner signs in with
/// `owner_email`: an existing staff account, or a new one whose generated password the summary
/// shows (once). When the demo store exists already, nothing is seeded, but a given
/// `owner_email` is made an owner of it.
pub async fn seed_demo(app: &App, owner_email: Option<&str>) -> Result<String, AppError> {
    let system = CommandContext::system("seed-demo");
    let existing: Option<String> = sqlx::query_scalar(
        "select aggregate_id from events
          where event_type = 'StoreCreated'
            and payload -> 'StoreCreated' ->> 'name' = $1
          order by global_position limit 1",
    )
    .bind(DEMO_STORE_NAME)
    .fetch_optional(&app.pool)
    .await?;
    if let Some(store_id) = existing {
        let store_id: StoreId = store_id
            .parse()
            .map_err(|_| AppError::Internal("the demo store's id is not a UUID".into()))?;
        let Some(email) = owner_email else {
            return Ok(
                serde_json::json!({ "seeded": false, "reason": "the demo store exists" })
                    .to_string(),
            );
        };
        let (owner_id, password) = staff_login(app, email).await?;
        app.grant_owner(&system, store_id, owner_id).await?;
        return Ok(serde_json::json!({
            "seeded": false, "reason": "the demo store exists", "store_id": store_id,
            "owner": { "account_id": owner_id, "email": email, "password": password },
        })
        .to_string());
    }

    let owner_email = owner_email.unwrap_or(DEMO_OWNER_EMAIL);
    let (owner_id, password) = staff_login(app, owner_email).await?;
    let rub = "RUB"
        .parse()
        .map_err(|_| AppError::invalid("currency", "RUB"))?;
    let store_id = app
        .open_store(
            &system,
            NewStore {
                owner_id,
                name: StoreName::parse(DEMO_STORE_NAME)?,
                currency: rub,
                timezone: TimeZone::parse("Europe/Moscow")?,
                payment_instructions: "Transfer to Demo Bank, account 40817810000000000001, \
                                       recipient Demo Coffee Roasters LLC; put the order number \
                                       in the payment note."
                    .into(),
                default_low_stock_threshold: 5,
                reservation_ttl_minutes: 60,
            },
        )
        .await?
        .outcome;
    // From here on the owner acts through the same door as over HTTP.
    let owner = Caller::service(owner_id, Channel::Api);

    let catalogue = [
        ("Ethiopia Yirgacheffe 250 g", "ETH-YIR-250", 890_00, 40),
        ("Colombia Huila 250 g", "COL-HUI-250", 790_00, 25),
        ("Kenya AA 250 g", "KEN-AA-250", 990_00, 4),
        ("Espresso blend 1 kg", "ESP-BLD-1000", 2_490_00, 12),
        ("Paper filters, 100 pcs", "FLT-100", 350_00, 0),
    ];
    let manage = app
        .authorize::<grant::ManageProducts>(&owner, store_id)
        .await?;
    let mut products = Vec::new();
    for (name, sku, price, units) in catalogue {
        let product_id = app
            .create_product(
                &manage,
                NewProduct {
                    name: name.into(),
                    description: String::new(),
                    sku: Sku::parse(sku)?,
                    price: Money::new(price, rub),
                    initial_stock: (units > 0).then_some(units),
                    low_stock_threshold: None,
                },
            )
            .await?
            .outcome;
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
        let customer = Caller::service(customer_id, Channel::Telegram);
        for lines in [vec![(0, 1), (1, 2)], vec![(3, 1)]] {
            let order_id = app
                .place_order(
                    &customer,
                    PlaceOrder {
                        store_id,
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
                .await?
                .outcome;
            orders.push((order_id, customer.clone()));
        }
    }

    // Move the orders through their lifecycle: one of each state.
    let review = app
        .authorize::<grant::ReviewReceipts>(&owner, store_id)
        .await?;
    let fulfil = app
        .authorize::<grant::FulfilOrders>(&owner, store_id)
        .await?;
    let steps = orders.len();
    for (i, (order_id, customer)) in orders.iter().enumerate() {
        match i {
            0 => {} // awaiting payment
            1 => {
                app.cancel_own_order(customer, *order_id, Some("ordered twice".into()))
                    .await?;
            }
            _ => {
                let receipt_id = app
                    .upload_receipt(
                        customer,
                        ReceiptUpload {
                            order_id: *order_id,
                            content: demo_receipt(*order_id),
                            claimed_amount_minor: None,
                            claimed_currency: None,
                        },
                    )
                    .await?
                    .outcome;
                if i >= 3 {
                    app.verify_receipt(&review, receipt_id).await?;
                }
                if i >= 4 {
                    app.fulfil_order(&fulfil, *order_id).await?;
                }
                if i >= 5 {
                    app.complete_order(&fulfil, *order_id).await?;
                }
            }
        }
    }

    Ok(serde_json::json!({
        "seeded": true,
        "store_id": store_id,
        "owner": { "account_id": owner_id, "email": owner_email, "password": password },
        "products": products.len(),
        "orders": steps,
    })
    .to_string())
}

/// The staff account that signs in with `email`, created with a generated password (returned,
/// to be shown once) if there is none.
async fn staff_login(app: &App, email: &str) -> Result<(AccountId, Option<String>), AppError> {
    if let Some(account_id) = app.account_by_login_email(email).await? {
        return Ok((account_id, None));
    }
    let password: String =
        rand::Rng::sample_iter(rand::thread_rng(), &rand::distributions::Alphanumeric)
            .take(20)
            .map(char::from)
            .collect();
    let account_id = app
        .create_staff_account(email, SecretString::from(password.clone()), false)
        .await?;
    Ok((account_id, Some(password)))
}

/// A small, valid PDF naming the order: a receipt the demo customers "upload".
fn demo_receipt(order_id: OrderId) -> Bytes {
    Bytes::from(format!(
        "%PDF-1.4\n% demo receipt for order {order_id}\n1 0 obj << /Type /Catalog >> endobj\n\
         trailer << /Root 1 0 R >>\n%%EOF\n"
    ))
}

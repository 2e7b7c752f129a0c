use aggregates::receipt::ReceiptFile;
use aggregates::{AccountId, OrderId};
use shopfront::app::{
    grant, App, ContactDetails, OrderLineInput, PlaceOrder, Revealed, SubmitReceipt,
};

use crate::helpers::{customer, open_shop, TestDb};
use shopfront::testing;

/// A receipt for `order_id` as the customer would upload it.
pub fn receipt_for(order_id: OrderId, submitted_by: AccountId) -> SubmitReceipt {
    SubmitReceipt {
        order_id,
        file: ReceiptFile {
            storage_key: format!("receipts/{order_id}"),
            sha256: "ab".repeat(32),
            size_bytes: 12_345,
            media_type: "image/png".into(),
        },
        claimed_amount: None,
        submitted_by,
    }
}

#[tokio::test]
async fn erasing_a_person_makes_their_data_unreadable_while_the_log_stays_intact() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let product = shop.product(&app, "GIFT", 500_00, 3).await;
    let (customer_id, ctx) = customer();
    let contact = ContactDetails {
        recipient: Some("Maria Ivanova".into()),
        phone: Some("+7 999 123-45-67".into()),
        address: Some("Nevsky prospekt 28, Saint Petersburg".into()),
        note: Some("ring twice".into()),
    };
    let order_id = app
        .place_order(
            &ctx,
            PlaceOrder {
                store_id: shop.store_id,
                lines: vec![OrderLineInput {
                    product_id: product,
                    quantity: 1,
                }],
                contact: Some(contact.clone()),
            },
        )
        .await
        .expect("placed")
        .outcome;

    // The clear text never reaches the log.
    let log_text: String =
        sqlx::query_scalar("select string_agg(payload::text || metadata::text, '') from events")
            .fetch_one(&db.pool)
            .await
            .expect("log text");
    for secret in ["Maria", "999 123", "Nevsky", "ring twice"] {
        assert!(
            !log_text.contains(secret),
            "{secret} is in the log in clear"
        );
    }

    let order = testing::load::<aggregates::order::Order>(&app, order_id)
        .await
        .expect("load");
    assert_eq!(order.customer_id, customer_id);
    let sealed: aggregates::SealedPersonalData = serde_json::from_value(
        sqlx::query_scalar::<_, serde_json::Value>(
            "select payload -> 'OrderPlaced' -> 'contact' from events where event_type = 'OrderPlaced'",
        )
        .fetch_one(&db.pool)
        .await
        .expect("sealed contact"),
    )
    .expect("a sealed value");
    assert_eq!(sealed.subject_id, customer_id);
    assert_eq!(
        app.personal_data
            .open::<ContactDetails>(&sealed)
            .await
            .expect("open"),
        Revealed::Data(contact)
    );

    let checksum = "select md5(string_agg(global_position::text || payload::text || metadata::text, ',' order by global_position)), count(*) from events";
    let before: (String, i64) = sqlx::query_as(checksum)
        .fetch_one(&db.pool)
        .await
        .expect("checksum");
    // The customer has sealed data but no account yet: erasing still deletes their key.
    let first = app
        .erase_person_from_console(customer_id)
        .await
        .expect("erase");
    assert!(first.key_deleted);
    assert!(!first.event_recorded, "no account to record it on");
    let again = app
        .erase_person_from_console(customer_id)
        .await
        .expect("erase again");
    assert!(!again.key_deleted, "erasing twice is a no-op");
    let key_rows: i64 =
        sqlx::query_scalar("select count(*) from personal_data_keys where subject_id = $1")
            .bind(customer_id.0)
            .fetch_one(&db.pool)
            .await
            .expect("key rows");
    assert_eq!(key_rows, 0, "the key row is deleted, not emptied");

    assert_eq!(
        app.personal_data
            .open::<ContactDetails>(&sealed)
            .await
            .expect("open"),
        Revealed::Erased
    );
    let after: (String, i64) = sqlx::query_as(checksum)
        .fetch_one(&db.pool)
        .await
        .expect("checksum");
    assert_eq!(before, after, "the log is byte-for-byte unchanged");
    // The order itself still works: ids, amounts and statuses are not personal data.
    let receipt = testing::submit_receipt(&app, &ctx, receipt_for(order_id, customer_id))
        .await
        .expect("receipt");
    app.verify_receipt(&shop.access::<grant::ReviewReceipts>(&app).await, receipt)
        .await
        .expect("verify");
    // Nothing new can be sealed for an erased person.
    assert!(matches!(
        app.personal_data.seal(customer_id, &"x").await,
        Err(shopfront::app::AppError::SubjectErased)
    ));
}

#[tokio::test]
async fn a_sealed_value_cannot_be_opened_as_someone_elses() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let (alice, _) = customer();
    let (bob, _) = customer();
    let mut sealed = app
        .personal_data
        .seal(alice, &"alice@example.com")
        .await
        .expect("seal");
    app.personal_data
        .seal(bob, &"bob@example.com")
        .await
        .expect("seal");
    sealed.subject_id = bob;
    assert!(matches!(
        app.personal_data.open::<String>(&sealed).await,
        Err(shopfront::app::AppError::Internal(_))
    ));
}

#[tokio::test]
async fn a_receipt_for_an_order_that_no_longer_accepts_one_is_refused() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let product = shop.product(&app, "R", 100, 3).await;
    let (customer_id, ctx) = customer();
    let order_id = shop
        .place(&app, &ctx, &[(product, 1)])
        .await
        .expect("placed");
    app.cancel_own_order(&ctx, order_id, None)
        .await
        .expect("cancelled");
    let refused = testing::submit_receipt(&app, &ctx, receipt_for(order_id, customer_id)).await;
    assert!(matches!(
        refused,
        Err(shopfront::app::AppError::Receipt(
            aggregates::receipt::ReceiptError::OrderNotPayable
        ))
    ));
    assert_eq!(
        crate::helpers::count_events(&db.pool, "PaymentReceiptSubmitted").await,
        0
    );
}

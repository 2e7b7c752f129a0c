use aggregates::order::OrderStatus;
use aggregates::receipt::{ReceiptError, ReceiptStatus};
use shopfront::app::{grant, App, AppError};

use crate::helpers::{customer, open_shop, TestDb};
use crate::personal_data::receipt_for;
use shopfront::testing;

#[tokio::test]
async fn a_receipt_for_an_order_under_review_is_refused_and_nothing_is_written() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let product = shop.product(&app, "P", 100_00, 2).await;
    let (customer_id, ctx) = customer();
    let order_id = shop
        .place(&app, &ctx, &[(product, 2)])
        .await
        .expect("placed");
    testing::submit_receipt(&app, &ctx, receipt_for(order_id, customer_id))
        .await
        .expect("submitted");

    // The receipt and the order's move to review are one decision: a second receipt while the
    // first is under review is refused as a whole, and no receipt is left behind.
    let second = testing::submit_receipt(&app, &ctx, receipt_for(order_id, customer_id)).await;
    assert!(
        matches!(
            second,
            Err(AppError::Receipt(ReceiptError::OrderNotPayable))
        ),
        "{second:?}"
    );
    assert_eq!(
        crate::helpers::count_events(&db.pool, "PaymentReceiptSubmitted").await,
        1
    );
    assert_eq!(
        crate::helpers::count_events(&db.pool, "OrderReceiptSubmitted").await,
        1
    );
    let order = testing::load::<aggregates::order::Order>(&app, order_id)
        .await
        .expect("load");
    assert_eq!(order.status, OrderStatus::ReceiptSubmitted);
}

#[tokio::test]
async fn a_rejected_receipt_sends_the_order_back_to_awaiting_payment() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let product = shop.product(&app, "P", 100_00, 2).await;
    let (customer_id, ctx) = customer();
    let order_id = shop
        .place(&app, &ctx, &[(product, 1)])
        .await
        .expect("placed");
    let first = testing::submit_receipt(&app, &ctx, receipt_for(order_id, customer_id))
        .await
        .expect("submitted");
    app.reject_receipt(
        &shop.access::<grant::ReviewReceipts>(&app).await,
        first,
        "amount does not match".into(),
    )
    .await
    .expect("rejected");
    let order = testing::load::<aggregates::order::Order>(&app, order_id)
        .await
        .expect("load");
    assert_eq!(order.status, OrderStatus::AwaitingPayment);
    let again = app
        .verify_receipt(&shop.access::<grant::ReviewReceipts>(&app).await, first)
        .await;
    assert!(matches!(
        again,
        Err(AppError::Receipt(
            aggregates::receipt::ReceiptError::AlreadyDecided {
                status: ReceiptStatus::Rejected
            }
        ))
    ));
    // A second receipt can be submitted and verified.
    let second = testing::submit_receipt(&app, &ctx, receipt_for(order_id, customer_id))
        .await
        .expect("submitted");
    app.verify_receipt(&shop.access::<grant::ReviewReceipts>(&app).await, second)
        .await
        .expect("verified");
    let order = testing::load::<aggregates::order::Order>(&app, order_id)
        .await
        .expect("load");
    assert_eq!(
        (order.status, order.paid_with),
        (OrderStatus::Paid, Some(second))
    );
}

use aggregates::order::{OrderCommand, OrderError, OrderStatus};
use aggregates::receipt::ReceiptStatus;
use chrono::Utc;
use shopfront::app::{App, AppError};

use crate::helpers::{customer, open_shop, TestDb};
use crate::personal_data::receipt_for;

#[tokio::test]
async fn a_verification_interrupted_after_paying_the_order_completes_on_retry_and_blocks_rejection()
{
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let product = shop.product(&app, "P", 100_00, 2).await;
    let (customer_id, ctx) = customer();
    let order_id = shop
        .place(&app, &ctx, customer_id, &[(product, 2)])
        .await
        .expect("placed");
    let receipt_id = app
        .submit_receipt(&ctx, receipt_for(order_id, customer_id))
        .await
        .expect("submitted");

    // The verifier's process stopped after the order step: the order is paid, the receipt is not.
    app.orders
        .execute(
            &order_id.to_string(),
            OrderCommand::ConfirmPayment {
                receipt_id,
                at: Utc::now(),
            },
            &shop.owner,
        )
        .await
        .expect("order paid");

    // Rejecting now would contradict the payment.
    let refused = app
        .reject_receipt(&shop.owner, receipt_id, "looks fake".into())
        .await;
    assert!(matches!(
        refused,
        Err(AppError::Order(OrderError::InvalidTransition {
            status: OrderStatus::Paid,
            ..
        }))
    ));

    // Retrying the verification finishes the job without a second payment event.
    app.verify_receipt(&shop.owner, receipt_id)
        .await
        .expect("verified on retry");
    let receipt = app
        .receipts
        .load(&receipt_id.to_string())
        .await
        .expect("load");
    assert_eq!(receipt.status(), Some(ReceiptStatus::Verified));
    assert_eq!(crate::helpers::count_events(&db.pool, "OrderPaid").await, 1);
    assert_eq!(
        crate::helpers::count_events(&db.pool, "PaymentReceiptRejected").await,
        0
    );
}

#[tokio::test]
async fn a_rejected_receipt_sends_the_order_back_to_awaiting_payment() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let product = shop.product(&app, "P", 100_00, 2).await;
    let (customer_id, ctx) = customer();
    let order_id = shop
        .place(&app, &ctx, customer_id, &[(product, 1)])
        .await
        .expect("placed");
    let first = app
        .submit_receipt(&ctx, receipt_for(order_id, customer_id))
        .await
        .expect("submitted");
    app.reject_receipt(&shop.owner, first, "amount does not match".into())
        .await
        .expect("rejected");
    let order = app.orders.load(&order_id.to_string()).await.expect("load");
    assert_eq!(order.status, OrderStatus::AwaitingPayment);
    let again = app.verify_receipt(&shop.owner, first).await;
    assert!(matches!(
        again,
        Err(AppError::Receipt(
            aggregates::receipt::ReceiptError::AlreadyDecided {
                status: ReceiptStatus::Rejected
            }
        ))
    ));
    // A second receipt can be submitted and verified.
    let second = app
        .submit_receipt(&ctx, receipt_for(order_id, customer_id))
        .await
        .expect("submitted");
    app.verify_receipt(&shop.owner, second)
        .await
        .expect("verified");
    let order = app.orders.load(&order_id.to_string()).await.expect("load");
    assert_eq!(
        (order.status, order.paid_with),
        (OrderStatus::Paid, Some(second))
    );
}

//! Command folding (docs/adr/0010-command-folding.md): placements queued on one hot product are
//! decided one after another on one load and committed together, each with its own answer and
//! its own metadata, and never oversell.

use std::sync::Arc;
use std::time::Duration;

use aggregates::stock::{Stock, StockError};
use aggregates::ProductId;
use shopfront::app::{App, AppError, Caller, OrderLineInput, PlaceOrder};
use sqlx::PgPool;

use crate::helpers::{count_events, customer, eventually, open_shop, spawn_app, Shop, TestDb};
use shopfront::testing;

/// A customer's caller whose request came with a client address and user agent (kept beside
/// the log in `request_origins`, one row per request).
fn customer_with_origin(n: usize) -> Caller {
    let (_, mut caller) = customer();
    caller.origin.client_ip = Some(format!("10.0.0.{}", n % 250));
    caller.origin.user_agent = Some(format!("test-agent/{n}"));
    caller
}

fn one_line(shop: &Shop, product: ProductId, quantity: i64) -> PlaceOrder {
    PlaceOrder {
        store_id: shop.store_id,
        lines: vec![OrderLineInput {
            product_id: product,
            quantity,
        }],
        contact: None,
    }
}

/// Holds the Stock's saved-state row locked in an open transaction, so the next commit on it
/// waits, holding the product's in-process lock: whatever is placed meanwhile queues behind it
/// and is folded into one batch when the transaction ends.
async fn stall_commits_on(
    pool: &PgPool,
    product: ProductId,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut stall = pool.begin().await.expect("begin");
    sqlx::query(
        "select 1 from snapshots where aggregate_type = 'Stock' and aggregate_id = $1 for update",
    )
    .bind(product.to_string())
    .execute(&mut *stall)
    .await
    .expect("lock the saved state");
    stall
}

/// Waits until a commit is blocked on the stalled row (the batch's leader is in its commit).
async fn a_commit_waits(pool: &PgPool) {
    let waiting = eventually(Duration::from_secs(10), || async {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity
              where datname = current_database() and wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .expect("activity");
        waiting > 0
    })
    .await;
    assert!(waiting, "the leader's commit waits on the stalled row");
}

/// The metadata of every event of `order_id` (its OrderPlaced and its reservations), with the
/// transaction it was committed in.
async fn metadata_of_order(
    pool: &PgPool,
    order_id: impl ToString,
) -> Vec<(String, Option<String>, Option<String>, String)> {
    sqlx::query_as(
        "select event_type, metadata->>'actor_id', metadata->>'request_id',
                transaction_id::text
           from events
          where (aggregate_type = 'Order' and aggregate_id = $1)
             or (event_type = 'StockReserved' and payload->'StockReserved'->>'order_id' = $1)
          order by global_position",
    )
    .bind(order_id.to_string())
    .fetch_all(pool)
    .await
    .expect("events of the order")
}

#[tokio::test]
async fn a_thousand_orders_on_a_hundred_units_fold_into_exactly_a_hundred_placements_in_the_log_and_the_read_models(
) {
    // The real service (projections running) and a second instance on the same database: each
    // folds its own placements, and only the database keeps the two apart.
    let test_app = spawn_app().await;
    let second = TestDb::another_handle(&test_app.db).await;
    let instances = [
        test_app.app.clone(),
        Arc::new(App::new(second.pool.clone())),
    ];
    let app = &instances[0];
    let pool = &test_app.db.pool;
    let shop = open_shop(app).await;
    let product = shop.product(app, "HOT", 100_00, 100).await;

    let attempts: Vec<_> = (0..1000)
        .map(|n| {
            let app = instances[n % 2].clone();
            let order = one_line(&shop, product, 1);
            let caller = customer_with_origin(n);
            tokio::spawn(async move {
                let placed = app.place_order(&caller, order).await;
                (caller, placed)
            })
        })
        .collect();
    let mut placed = Vec::new();
    let mut out_of_stock = 0;
    for attempt in attempts {
        match attempt.await.expect("task") {
            (caller, Ok(decided)) => {
                let position = decided.position.expect("a placement appends events");
                placed.push((caller, decided.outcome, position));
            }
            (
                _,
                Err(AppError::Stock(StockError::OutOfStock {
                    requested: 1,
                    available: 0,
                })),
            ) => out_of_stock += 1,
            (_, Err(other)) => panic!("unexpected refusal: {other:?}"),
        }
    }
    assert_eq!(placed.len(), 100);
    assert_eq!(out_of_stock, 900);

    // The event store: the Stock's saved state is its events' replay, exactly the placed
    // orders hold a unit each, and nothing else was written.
    let stock = testing::load::<Stock>(app, product).await.expect("stock");
    assert_eq!(
        stock,
        testing::replay::<Stock>(app, product)
            .await
            .expect("replay")
    );
    assert_eq!(
        (stock.on_hand, stock.reserved, stock.available()),
        (100, 100, 0)
    );
    assert_eq!(stock.reservations.len(), 100);
    for (_, order_id, _) in &placed {
        assert_eq!(stock.reservations.get(order_id), Some(&1));
    }
    assert_eq!(count_events(pool, "OrderPlaced").await, 100);
    assert_eq!(count_events(pool, "StockReserved").await, 100);
    assert_eq!(count_events(pool, "StockDepleted").await, 1);
    let (max_sequence, stock_events): (i64, i64) = sqlx::query_as(
        "select max(sequence), count(*) from events
          where aggregate_type = 'Stock' and aggregate_id = $1",
    )
    .bind(product.to_string())
    .fetch_one(pool)
    .await
    .expect("sequences");
    assert_eq!(
        max_sequence, stock_events,
        "the stock's sequence has no gaps"
    );
    // Folded: far fewer commits than placements.
    let commits: i64 = sqlx::query_scalar(
        "select count(distinct transaction_id) from events where event_type = 'StockReserved'",
    )
    .fetch_one(pool)
    .await
    .expect("transactions");
    assert!(commits < 100, "100 placements in {commits} commits");

    // Each order's events carry its own request's metadata, and the position it was told is
    // that of its own last event; each request has its own origin row.
    for (caller, order_id, position) in &placed {
        let events = metadata_of_order(pool, order_id).await;
        assert_eq!(events.len(), 2, "{events:?}");
        for (event_type, actor_id, request_id, _) in &events {
            assert_eq!(
                actor_id.as_deref(),
                Some(caller.account_id().to_string().as_str()),
                "{event_type}"
            );
            assert_eq!(
                request_id.as_deref(),
                Some(caller.origin.request_id.as_str())
            );
        }
        let last: i64 = sqlx::query_scalar(
            "select max(global_position) from events
              where (aggregate_type = 'Order' and aggregate_id = $1)
                 or (event_type = 'StockReserved'
                     and payload->'StockReserved'->>'order_id' = $1)",
        )
        .bind(order_id.to_string())
        .fetch_one(pool)
        .await
        .expect("last position");
        assert_eq!(*position, last);
        let origin: (Option<String>, Option<String>) = sqlx::query_as(
            "select client_ip, user_agent from request_origins where request_id = $1",
        )
        .bind(&caller.origin.request_id)
        .fetch_one(pool)
        .await
        .expect("the request's origin row");
        assert_eq!(origin.0, caller.origin.client_ip);
        assert_eq!(origin.1, caller.origin.user_agent);
    }
    let origins: i64 = sqlx::query_scalar("select count(*) from request_origins")
        .fetch_one(pool)
        .await
        .expect("origins");
    assert_eq!(origins, 100, "refused requests wrote no origin");

    // The read models agree.
    test_app.wait_for_projections().await;
    let level: (i64, i64, i64) = sqlx::query_as(
        "select on_hand, reserved, available from stock_levels where product_id = $1",
    )
    .bind(product.0)
    .fetch_one(pool)
    .await
    .expect("stock level");
    assert_eq!(level, (100, 100, 0));
    let reservations: i64 = sqlx::query_scalar(
        "select count(*) from stock_reservations where product_id = $1 and quantity = 1",
    )
    .bind(product.0)
    .fetch_one(pool)
    .await
    .expect("reservations");
    assert_eq!(reservations, 100);
    let orders: i64 = sqlx::query_scalar("select count(*) from orders where store_id = $1")
        .bind(shop.store_id.0)
        .fetch_one(pool)
        .await
        .expect("orders");
    assert_eq!(orders, 100);
    let reservation_history: i64 = sqlx::query_scalar(
        "select count(*) from stock_history h
           join orders o on o.order_id = h.order_id and o.customer_id = h.actor_id
          where h.product_id = $1 and h.reserved_delta = 1",
    )
    .bind(product.0)
    .fetch_one(pool)
    .await
    .expect("history");
    assert_eq!(
        reservation_history, 100,
        "every reservation in the history names its own customer as the actor"
    );
    drop(second);
    test_app.stop().await;
}

#[tokio::test]
async fn a_refused_order_in_the_middle_of_a_fold_leaves_the_others_placed_with_their_own_metadata()
{
    let db = TestDb::new().await;
    let app = Arc::new(App::new(db.pool.clone()));
    let shop = open_shop(&app).await;
    let product = shop.product(&app, "HOT", 100_00, 10).await;

    // The leader takes 1 unit and stalls in its commit; then, queued behind it in this order:
    // four orders of 1, one of 50 (more than there is: refused wherever it lands), four of 1.
    let stall = stall_commits_on(&db.pool, product).await;
    let place = |quantity: i64| {
        let app = app.clone();
        let order = one_line(&shop, product, quantity);
        let caller = customer_with_origin(quantity as usize);
        tokio::spawn(async move {
            let placed = app.place_order(&caller, order).await;
            (caller, placed)
        })
    };
    let leader = place(1);
    a_commit_waits(&db.pool).await;
    let mut followers = Vec::new();
    let mut queued = testing::queued_decisions(&app);
    for (n, quantity) in [1, 1, 1, 1, 50, 1, 1, 1, 1].into_iter().enumerate() {
        followers.push(place(quantity));
        // Each reaches the queue before the next is sent (they queue in arrival order).
        queued_at_least(&mut queued, n + 1).await;
    }
    stall.commit().await.expect("release the stall");

    let (_, leader) = leader.await.expect("task");
    let leader_position = leader.expect("the leader is placed").position;
    let mut placed = Vec::new();
    for follower in followers {
        match follower.await.expect("task") {
            (caller, Ok(decided)) => placed.push((caller, decided)),
            (caller, Err(err)) => {
                assert!(
                    matches!(
                        err,
                        AppError::Stock(StockError::OutOfStock {
                            requested: 50,
                            available: 5
                        })
                    ),
                    "{err:?}"
                );
                let written: i64 = sqlx::query_scalar(
                    "select count(*) from events where metadata->>'request_id' = $1",
                )
                .bind(&caller.origin.request_id)
                .fetch_one(&db.pool)
                .await
                .expect("count");
                assert_eq!(written, 0, "the refused order left no event");
            }
        }
    }
    assert_eq!(placed.len(), 8, "every order but the refused one is placed");

    // The eight followers went in one commit after the leader's, each event with its own
    // order's actor and request id.
    let mut transactions = std::collections::HashSet::new();
    for (caller, decided) in &placed {
        assert!(decided.position > leader_position);
        let events = metadata_of_order(&db.pool, decided.outcome).await;
        assert_eq!(events.len(), 2, "{events:?}");
        for (event_type, actor_id, request_id, transaction) in events {
            assert_eq!(
                actor_id,
                Some(caller.account_id().to_string()),
                "{event_type}"
            );
            assert_eq!(
                request_id.as_deref(),
                Some(caller.origin.request_id.as_str())
            );
            transactions.insert(transaction);
        }
    }
    assert_eq!(
        transactions.len(),
        1,
        "the followers were folded into one commit"
    );

    let stock = testing::load::<Stock>(&app, product).await.expect("stock");
    assert_eq!(
        stock,
        testing::replay::<Stock>(&app, product)
            .await
            .expect("replay")
    );
    assert_eq!(
        (stock.on_hand, stock.reserved, stock.available()),
        (10, 9, 1)
    );
    let sequences: Vec<i64> = sqlx::query_scalar(
        "select sequence from events where aggregate_type = 'Stock' and aggregate_id = $1
          order by sequence",
    )
    .bind(product.to_string())
    .fetch_all(&db.pool)
    .await
    .expect("sequences");
    assert_eq!(sequences, (1..=sequences.len() as i64).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_folded_commit_that_fails_fails_every_order_folded_into_it() {
    let db = TestDb::new().await;
    let app = Arc::new(App::new(db.pool.clone()));
    let shop = open_shop(&app).await;
    let product = shop.product(&app, "HOT", 100_00, 100).await;
    let events_before = sqlx::query_scalar::<_, i64>("select count(*) from events")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    sqlx::query(
        "create function inject_failure() returns trigger language plpgsql as $$
         begin raise exception 'injected failure'; end $$",
    )
    .execute(&db.pool)
    .await
    .expect("failure function");
    sqlx::query(
        // At COMMIT (a deferred constraint trigger): after the leader's insert, so it stalls
        // in its saved-state update first.
        "create constraint trigger inject_failure after insert on events
         deferrable initially deferred for each row
         when (new.event_type = 'OrderPlaced') execute function inject_failure()",
    )
    .execute(&db.pool)
    .await
    .expect("install the fault");

    let stall = stall_commits_on(&db.pool, product).await;
    let place = || {
        let app = app.clone();
        let order = one_line(&shop, product, 1);
        tokio::spawn(async move { app.place_order(&customer().1, order).await })
    };
    let leader = place();
    a_commit_waits(&db.pool).await;
    let mut queued = testing::queued_decisions(&app);
    let followers: Vec<_> = (0..20).map(|_| place()).collect();
    // The followers wait in the queue behind the stalled leader.
    queued_at_least(&mut queued, 20).await;
    stall.commit().await.expect("release the stall");

    for attempt in std::iter::once(leader).chain(followers) {
        let failed = attempt.await.expect("task");
        assert!(matches!(failed, Err(AppError::Internal(_))), "{failed:?}");
    }
    let events_after = sqlx::query_scalar::<_, i64>("select count(*) from events")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(events_after, events_before, "nothing was written");
    let stock = testing::load::<Stock>(&app, product).await.expect("stock");
    assert_eq!((stock.reserved, stock.available()), (0, 100));

    // With the fault gone, orders go through again.
    sqlx::query("drop trigger inject_failure on events")
        .execute(&db.pool)
        .await
        .expect("remove the fault");
    let results: Vec<_> = (0..20).map(|_| place()).collect();
    for placed in results {
        placed.await.expect("task").expect("placed");
    }
    let stock = testing::load::<Stock>(&app, product).await.expect("stock");
    assert_eq!((stock.reserved, stock.available()), (20, 80));
}

/// Waits until at least `n` decisions are queued behind a running one; fails the test after
/// 20 s.
async fn queued_at_least(queued: &mut tokio::sync::watch::Receiver<usize>, n: usize) {
    tokio::time::timeout(Duration::from_secs(20), queued.wait_for(|&q| q >= n))
        .await
        .unwrap_or_else(|_| panic!("{n} decisions never queued"))
        .expect("the event store is alive");
}

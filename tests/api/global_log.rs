use std::collections::BTreeSet;
use std::time::Duration;

use projections::{GlobalLog, LogPosition};
use shopfront::app::{grant, App, StoreSettingsChange};
use sqlx::Executor;

use crate::helpers::{eventually, open_shop, TestDb};

async fn insert_raw(
    conn: impl Executor<'_, Database = sqlx::Postgres>,
    id: &str,
    sequence: i64,
) -> i64 {
    sqlx::query_scalar(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         values ('Probe', $1, $2, 'Probed', '1.0', '{}', '{}') returning global_position",
    )
    .bind(id)
    .bind(sequence)
    .fetch_one(conn)
    .await
    .expect("insert event")
}

async fn read_all(log: &GlobalLog, after: LogPosition) -> Vec<projections::LoggedEvent> {
    log.read_after(after, 1000).await.expect("read")
}

#[tokio::test]
async fn an_event_whose_transaction_commits_late_is_not_skipped() {
    let db = TestDb::new().await;
    let log = GlobalLog::new(db.pool.clone());

    // T1 takes the lower global position, T2 the higher; T2 commits first.
    let mut t1 = db.pool.begin().await.expect("begin t1");
    let first = insert_raw(&mut *t1, "a", 1).await;
    let mut t2 = db.pool.begin().await.expect("begin t2");
    let second = insert_raw(&mut *t2, "b", 1).await;
    assert!(first < second);
    t2.commit().await.expect("commit t2");

    // While T1 is open, T2's later-numbered event must not be handed out.
    assert!(read_all(&log, LogPosition::START).await.is_empty());
    assert_eq!(log.head().await.expect("head"), None);

    t1.commit().await.expect("commit t1");
    assert!(
        eventually(Duration::from_secs(10), || async {
            read_all(&log, LogPosition::START).await.len() == 2
        })
        .await,
        "both events become visible once both transactions ended"
    );
    let events = read_all(&log, LogPosition::START).await;
    assert_eq!(
        events.iter().map(|e| e.global_position).collect::<Vec<_>>(),
        vec![first, second]
    );
    assert!(events[0].position() < events[1].position());
    assert_eq!(log.head().await.expect("head"), Some(events[1].position()));
    // Nothing is returned twice.
    assert!(read_all(&log, events[1].position()).await.is_empty());
}

#[tokio::test]
async fn readers_see_every_event_exactly_once_while_writers_race() {
    let db = TestDb::new().await;
    let log = GlobalLog::new(db.pool.clone());

    let writers: Vec<_> = (0..8)
        .map(|w| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                for n in 0..40 {
                    // Some transactions hold several events, some commit slowly.
                    let mut tx = pool.begin().await.expect("begin");
                    insert_raw(&mut *tx, &format!("w{w}-{n}"), 1).await;
                    if n % 3 == 0 {
                        insert_raw(&mut *tx, &format!("w{w}-{n}"), 2).await;
                    }
                    if n % 5 == 0 {
                        tokio::task::yield_now().await;
                    }
                    tx.commit().await.expect("commit");
                }
            })
        })
        .collect();

    let expected_total = 8 * (40 + 14);
    let mut seen = Vec::new();
    let mut position = LogPosition::START;
    let reader = async {
        while seen.len() < expected_total {
            let batch = log.read_after(position, 7).await.expect("read");
            for event in &batch {
                assert!(event.position() > position, "positions only increase");
                position = event.position();
                seen.push(event.global_position);
            }
            if batch.is_empty() {
                tokio::task::yield_now().await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the reader catches up");
    for writer in writers {
        writer.await.expect("writer");
    }
    let all: BTreeSet<i64> = sqlx::query_scalar("select global_position from events")
        .fetch_all(&db.pool)
        .await
        .expect("all positions")
        .into_iter()
        .collect();
    let unique: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(seen.len(), unique.len(), "no event was returned twice");
    assert_eq!(unique, all, "every stored event was returned");
}

#[tokio::test]
async fn appending_events_notifies_listeners_at_commit() {
    let db = TestDb::new().await;
    let log = GlobalLog::new(db.pool.clone());
    let mut listener = log.listen().await.expect("listen");
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    let notification = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("notified within 10 s")
        .expect("notification");
    assert_eq!(notification.channel(), projections::NOTIFY_CHANNEL);
    let _ = shop;
}

#[tokio::test]
async fn events_written_through_the_application_carry_their_metadata_and_no_personal_data() {
    let db = TestDb::new().await;
    let app = App::new(db.pool.clone());
    let shop = open_shop(&app).await;
    // The owner changes a setting in a request with ids, an address and a browser.
    let mut caller = shopfront::testing::caller_for(shop.owner_id, aggregates::Channel::Api);
    caller.origin.request_id = "req-42".into();
    caller.origin.client_request_id = Some("client-7".into());
    caller.origin.client_ip = Some("203.0.113.9".into());
    caller.origin.user_agent = Some("curl/8".into());
    let access = app
        .authorize::<grant::ChangeStoreSettings>(&caller, shop.store_id)
        .await
        .expect("the owner may");
    app.change_store_settings(
        &access,
        StoreSettingsChange {
            name: Some(aggregates::store::StoreName::parse("Renamed").expect("name")),
            ..StoreSettingsChange::default()
        },
    )
    .await
    .expect("changed");
    let metadata: serde_json::Value =
        sqlx::query_scalar("select metadata from events where event_type = 'StoreSettingsChanged'")
            .fetch_one(&db.pool)
            .await
            .expect("metadata");
    assert_eq!(metadata["actor_id"], shop.owner_id.to_string());
    // The role comes from the authorization proof, not from the adapter.
    assert_eq!(metadata["actor_role"], "OWNER");
    assert_eq!(metadata["channel"], "api");
    assert_eq!(metadata["request_id"], "req-42");
    assert_eq!(metadata["client_request_id"], "client-7");
    assert!(metadata["correlation_id"].is_string());
    // The address and the browser are personal data: beside the log, never in it.
    let text: String = sqlx::query_scalar("select string_agg(metadata::text, '') from events")
        .fetch_one(&db.pool)
        .await
        .expect("all metadata");
    assert!(
        !text.contains("203.0.113.9") && !text.contains("curl/8"),
        "{text}"
    );
    let origin: (Option<uuid::Uuid>, String, String) = sqlx::query_as(
        "select account_id, client_ip, user_agent from request_origins where request_id = 'req-42'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("the request's origin");
    assert_eq!(
        origin,
        (
            Some(shop.owner_id.0),
            "203.0.113.9".to_owned(),
            "curl/8".to_owned()
        )
    );
    let recorded: Vec<(i64, String)> = sqlx::query_as(
        "select transaction_id::text::bigint, to_char(recorded_at, 'YYYY') from events",
    )
    .fetch_all(&db.pool)
    .await
    .expect("log columns");
    assert!(recorded.iter().all(|(tx, year)| *tx > 0 && year.len() == 4));
}

//! The hash chain as an attacker with database access would test it: edit a payload, delete an
//! event, insert one into the past, reorder two, forge a checkpoint, rewrite events together
//! with their chain — each found at the right global position, through the API and the CLI,
//! and an untouched log (also after an erasure) verifies.

use std::time::Duration;

use serde_json::{json, Value};
use shopfront::app::audit::chain::{canonical, next_hash, ChainEvent, Hash};
use shopfront::config::ServeSettings;
use sqlx::postgres::PgListener;
use sqlx::PgPool;

use crate::cli::shopfront;
use crate::helpers::{customer, expect_json, spawn_app_with, Shop, Staff, TestApp};

/// Waits (woken by the sealer's commits) until the chain holds the last committed event;
/// returns the chain's length.
async fn wait_sealed(pool: &PgPool) -> i64 {
    let mut listener = PgListener::connect_with(pool).await.expect("listener");
    listener
        .listen(projections::runtime::CHECKPOINT_CHANNEL)
        .await
        .expect("listen");
    let head = projections::log::last_committed(pool)
        .await
        .expect("head")
        .expect("events");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let sealed: Option<i64> =
            sqlx::query_scalar("select chain_index from audit_chain where global_position = $1")
                .bind(head.global_position)
                .fetch_optional(pool)
                .await
                .expect("chain");
        if let Some(length) = sealed {
            return length;
        }
        tokio::time::timeout_at(deadline, listener.recv())
            .await
            .expect("the sealer reaches the head within 20 s")
            .expect("notification");
    }
}

/// `shopfront audit ARGS` against the app's database: asserts its exit code, returns what it
/// printed as JSON (null when nothing) and what it said on standard error.
fn audit_cli(app: &TestApp, args: &[&str], code: i32) -> (Value, String) {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    let out = shopfront(&all, &[("DATABASE_URL", app.db.url.as_str())]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).expect("one JSON report")
    };
    (json, stderr)
}

/// A shop with 25 orders, sealed, checkpoints every 10 events; and a platform admin.
async fn sealed_shop() -> (TestApp, Staff, Shop) {
    sealed_shop_with(ServeSettings::for_tests(), 25).await
}

/// [`sealed_shop`] on `settings` (checkpoints every 10 events) with `orders` orders.
async fn sealed_shop_with(mut settings: ServeSettings, orders: usize) -> (TestApp, Staff, Shop) {
    settings.audit.audit_checkpoint_events = 10;
    let app = spawn_app_with(settings).await;
    let admin = app.staff("admin@example.com", true).await;
    let owner = app.staff("owner@example.com", false).await;
    let shop = app.shop_of(&owner, "Chain shop").await;
    let product = shop.product(&app.app, "SKU-1", 1_000, 100).await;
    place_orders(&app, &shop, product, orders).await;
    wait_sealed(&app.db.pool).await;
    (app, admin, shop)
}

/// `n` orders of one unit of `product`, each by a new customer.
async fn place_orders(app: &TestApp, shop: &Shop, product: aggregates::ProductId, n: usize) {
    for _ in 0..n {
        let (_, caller) = customer();
        shop.place(&app.app, &caller, &[(product, 1)])
            .await
            .expect("order");
    }
}

async fn verify(app: &TestApp, token: &str, body: Value) -> Value {
    let response = app
        .call(
            reqwest::Method::POST,
            token,
            "/api/v1/audit/verify",
            Some(body),
        )
        .await;
    expect_json(response, 200, "verify").await
}

/// The `n`-th event in log order (0-based): its global and transaction positions.
async fn nth_event(pool: &PgPool, n: i64) -> (i64, i64) {
    sqlx::query_as(
        "select global_position, transaction_id::text::bigint from events
          order by transaction_id, global_position offset $1 limit 1",
    )
    .bind(n)
    .fetch_one(pool)
    .await
    .expect("event")
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::query(sql).execute(pool).await.expect(sql);
}

fn assert_found(report: &Value, kind: &str, position: i64) {
    assert_eq!(report["intact"], false, "{report}");
    assert_eq!(report["problem"]["kind"], kind, "{report}");
    assert_eq!(report["problem"]["global_position"], position, "{report}");
}

fn assert_intact(report: &Value, events: i64) {
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["verified_events"], events, "{report}");
}

#[tokio::test]
async fn every_kind_of_tampering_is_found_at_its_position_and_an_untouched_log_verifies() {
    let (app, admin, _shop) = sealed_shop().await;
    let pool = &app.db.pool;
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(pool)
        .await
        .expect("count");
    assert!(events > 30, "a busy enough log: {events}");
    let token = &admin.token;

    let report = verify(&app, token, json!({})).await;
    assert_intact(&report, events);
    assert!(
        report["checkpoints_checked"].as_i64().expect("count") >= 3,
        "{report}"
    );
    assert_eq!(report["unsealed_events"], 0);
    // Over the API, checkpoints must be signed by this instance's key unless the caller names
    // the keys they trust.
    assert_eq!(report["keys_pinned"], true);

    // A payload edited (and put back).
    let (edited, _) = nth_event(pool, 12).await;
    let original: String =
        sqlx::query_scalar("select payload::text from events where global_position = $1")
            .bind(edited)
            .fetch_one(pool)
            .await
            .expect("payload");
    exec(pool, &format!("update events set payload = (payload::jsonb || '{{\"note\":\"x\"}}')::json where global_position = {edited}")).await;
    assert_found(&verify(&app, token, json!({})).await, "modified", edited);
    sqlx::query("update events set payload = $1::json where global_position = $2")
        .bind(&original)
        .bind(edited)
        .execute(pool)
        .await
        .expect("restore");
    assert_intact(&verify(&app, token, json!({})).await, events);

    // Only the spacing and key order changed (compact, keys in byte order, where Postgres
    // wrote them with spaces and shorter keys first): the same value hashes
    // the same.
    let compact = serde_json::to_string(&serde_json::from_str::<Value>(&original).expect("json"))
        .expect("compact");
    sqlx::query("update events set payload = $1::json where global_position = $2")
        .bind(&compact)
        .bind(edited)
        .execute(pool)
        .await
        .expect("respace");
    let respaced: String =
        sqlx::query_scalar("select payload::text from events where global_position = $1")
            .bind(edited)
            .fetch_one(pool)
            .await
            .expect("payload");
    assert_ne!(respaced, original, "the stored text changed");
    assert_intact(&verify(&app, token, json!({})).await, events);

    // An event deleted (and put back).
    let (deleted, _) = nth_event(pool, 20).await;
    let mut conn = pool.acquire().await.expect("conn");
    sqlx::query(&format!(
        "create temporary table kept as select * from events where global_position = {deleted}"
    ))
    .execute(&mut *conn)
    .await
    .expect("keep");
    sqlx::query(&format!(
        "delete from events where global_position = {deleted}"
    ))
    .execute(&mut *conn)
    .await
    .expect("delete");
    assert_found(&verify(&app, token, json!({})).await, "deleted", deleted);
    sqlx::query("insert into events select * from kept")
        .execute(&mut *conn)
        .await
        .expect("put back");
    drop(conn);
    assert_intact(&verify(&app, token, json!({})).await, events);

    // An event inserted into the sealed past: a copy of one, given an old transaction id.
    let (copied, transaction) = nth_event(pool, 25).await;
    let inserted = copied + 1_000_000;
    exec(
        pool,
        &format!(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, global_position, transaction_id, recorded_at)
         select aggregate_type, aggregate_id || '-forged', sequence, event_type, event_version,
                payload, metadata, {inserted}, '{transaction}'::xid8, recorded_at
           from events where global_position = {copied}"
        ),
    )
    .await;
    assert_found(&verify(&app, token, json!({})).await, "inserted", inserted);
    exec(
        pool,
        &format!("delete from events where global_position = {inserted}"),
    )
    .await;
    assert_intact(&verify(&app, token, json!({})).await, events);

    // Two events of different transactions swapped in log order (and swapped back).
    let mut n = 30;
    let ((first, first_tx), (second, second_tx)) = loop {
        let a = nth_event(pool, n).await;
        let b = nth_event(pool, n + 1).await;
        if a.1 != b.1 {
            break (a, b);
        }
        n += 1;
    };
    let swap = |a: i64, a_tx: i64, b: i64, b_tx: i64| {
        format!(
            "update events set transaction_id = case global_position when {a} then '{b_tx}'::xid8
                                                                      else '{a_tx}'::xid8 end
              where global_position in ({a}, {b})"
        )
    };
    exec(pool, &swap(first, first_tx, second, second_tx)).await;
    assert_found(&verify(&app, token, json!({})).await, "reordered", first);
    exec(pool, &swap(first, second_tx, second, first_tx)).await;
    assert_intact(&verify(&app, token, json!({})).await, events);

    // An event given a place before any real one (no follower ever reads there), yet part of
    // its aggregate's stream: found all the same.
    exec(
        pool,
        &format!(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, global_position, transaction_id, recorded_at)
         select aggregate_type, aggregate_id, sequence + 1000, event_type, event_version,
                payload, metadata, -5, '0'::xid8, recorded_at
           from events where global_position = {copied}"
        ),
    )
    .await;
    assert_found(&verify(&app, token, json!({})).await, "inserted", -5);
    exec(pool, "delete from events where global_position = -5").await;

    // The last sealed event deleted (and put back).
    let (last, _) = nth_event(pool, events - 1).await;
    exec(
        pool,
        &format!("create table kept_last as select * from events where global_position = {last}"),
    )
    .await;
    exec(
        pool,
        &format!("delete from events where global_position = {last}"),
    )
    .await;
    assert_found(&verify(&app, token, json!({})).await, "deleted", last);
    exec(pool, "insert into events select * from kept_last").await;
    exec(pool, "drop table kept_last").await;
    assert_intact(&verify(&app, token, json!({})).await, events);

    // A checkpoint row changed without the key: its signature no longer holds.
    let (index, position, hash): (i64, i64, String) = sqlx::query_as(
        "select chain_index, global_position, hash from audit_checkpoints
          order by chain_index offset 1 limit 1",
    )
    .fetch_one(pool)
    .await
    .expect("checkpoint");
    sqlx::query("update audit_checkpoints set hash = $1 where chain_index = $2")
        .bind("00".repeat(32))
        .bind(index)
        .execute(pool)
        .await
        .expect("forge");
    assert_found(
        &verify(&app, token, json!({})).await,
        "bad_signature",
        position,
    );
    sqlx::query("update audit_checkpoints set hash = $1 where chain_index = $2")
        .bind(&hash)
        .bind(index)
        .execute(pool)
        .await
        .expect("restore");

    // The same through the CLI: exit 0 on an intact log, 1 naming the position otherwise.
    let (report, _) = audit_cli(&app, &["verify"], 0);
    assert_intact(&report, events);
    exec(pool, &format!("update events set metadata = (metadata::jsonb || '{{\"actor_role\":\"OWNER\"}}')::json where global_position = {edited}")).await;
    let (report, stderr) = audit_cli(&app, &["verify"], 1);
    assert!(
        stderr.contains(&format!("modified at global position {edited}")),
        "{stderr}"
    );
    assert_found(&report, "modified", edited);
}

/// Recomputes the chain rows from chain index `from` on, as an attacker who knows the
/// algorithm would after editing an event (the signing key they do not have).
async fn rewrite_chain_from(pool: &PgPool, from: i64) {
    let previous: Vec<u8> =
        sqlx::query_scalar("select hash from audit_chain where chain_index = $1")
            .bind(from - 1)
            .fetch_one(pool)
            .await
            .expect("previous hash");
    let mut hash: Hash = previous.try_into().expect("32 bytes");
    type Row = (
        i64,
        i64,
        i64,
        String,
        String,
        i64,
        String,
        String,
        String,
        String,
        chrono::DateTime<chrono::Utc>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select c.chain_index, e.transaction_id::text::bigint, e.global_position, e.aggregate_type,
                e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload::text,
                e.metadata::text, e.recorded_at
           from audit_chain c join events e using (global_position)
          where c.chain_index >= $1 order by c.chain_index",
    )
    .bind(from)
    .fetch_all(pool)
    .await
    .expect("events");
    let mut bytes = Vec::new();
    for row in rows {
        let event = ChainEvent {
            transaction_id: row.1,
            global_position: row.2,
            aggregate_type: row.3.as_bytes(),
            aggregate_id: row.4.as_bytes(),
            sequence: row.5,
            event_type: row.6.as_bytes(),
            event_version: row.7.as_bytes(),
            payload: row.8.as_bytes(),
            metadata: row.9.as_bytes(),
            recorded_at_micros: row.10.timestamp_micros(),
        };
        canonical(&event, &mut bytes);
        hash = next_hash(&hash, &bytes);
        sqlx::query("update audit_chain set hash = $1 where chain_index = $2")
            .bind(hash.to_vec())
            .bind(row.0)
            .execute(pool)
            .await
            .expect("rewrite");
    }
}

#[tokio::test]
async fn a_rewrite_of_events_and_chain_is_caught_by_signed_checkpoints_and_exported_ones() {
    let (app, admin, _shop) = sealed_shop().await;
    let pool = &app.db.pool;
    let kept = std::env::temp_dir().join(format!("checkpoints-{}.ndjson", app.db.name));
    let path = kept.to_str().expect("path");
    audit_cli(&app, &["checkpoints", "--output", path], 0);
    let exported = std::fs::read_to_string(&kept).expect("exported");
    assert!(exported.lines().count() >= 3, "{exported}");

    // Edit an event and recompute every later chain row: the chain agrees with the events,
    // but the next signed checkpoint does not.
    let (edited, _) = nth_event(pool, 15).await;
    let index: i64 =
        sqlx::query_scalar("select chain_index from audit_chain where global_position = $1")
            .bind(edited)
            .fetch_one(pool)
            .await
            .expect("index");
    exec(pool, &format!("update events set payload = (payload::jsonb || '{{\"note\":\"x\"}}')::json where global_position = {edited}")).await;
    rewrite_chain_from(pool, index).await;
    let (checkpoint_index, checkpoint_position): (i64, i64) = sqlx::query_as(
        "select chain_index, global_position from audit_checkpoints where chain_index >= $1
          order by chain_index limit 1",
    )
    .bind(index)
    .fetch_one(pool)
    .await
    .expect("a checkpoint after the edit");
    let report = verify(&app, &admin.token, json!({})).await;
    assert_found(&report, "checkpoint_mismatch", checkpoint_position);
    assert_eq!(report["problem"]["chain_index"], checkpoint_index);

    // A superuser who also drops the checkpoints and lets the sealer sign the rewritten chain
    // again gets a database that verifies on its own: only checkpoints kept outside it tell.
    exec(
        pool,
        &format!("delete from audit_checkpoints where chain_index >= {index}"),
    )
    .await;
    exec(
        pool,
        &format!("delete from audit_chain where chain_index >= {index}"),
    )
    .await;
    wait_sealed(pool).await;
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_intact(&verify(&app, &admin.token, json!({})).await, events);
    let (report, _) = audit_cli(&app, &["verify", "--from-checkpoint", path], 1);
    assert_eq!(report["problem"]["kind"], "chain_rewritten", "{report}");
    // The same checkpoints given to the API.
    let checkpoints: Vec<Value> = exported
        .lines()
        .map(|line| serde_json::from_str(line).expect("checkpoint"))
        .collect();
    let (from, anchors) = checkpoints.split_last().expect("checkpoints");
    let report = verify(
        &app,
        &admin.token,
        json!({"from_checkpoint": from, "anchors": anchors}),
    )
    .await;
    assert_eq!(report["problem"]["kind"], "chain_rewritten", "{report}");
    std::fs::remove_file(kept).expect("remove");
}

#[tokio::test]
async fn auditors_verify_from_a_checkpoint_they_kept_with_a_pinned_key() {
    let (app, admin, shop) = sealed_shop().await;
    // An AUDITOR API token of the store: the chain is the whole log's, but naming a store
    // where the caller reads the audit trail is enough (it shows no store's events).
    let created = app
        .post_json(
            &app.staff_login("owner@example.com").await,
            "/api/v1/api-tokens",
            json!({"name": "auditor", "store_ids": [shop.store_id.0], "role": "AUDITOR"}),
            201,
        )
        .await;
    let auditor = created["token"].as_str().expect("token").to_owned();
    let store = shop.store_id.0;

    let key = app
        .client
        .get(format!("{}/api/v1/audit/public-key", app.address))
        .send()
        .await
        .expect("public key");
    let key = expect_json(key, 200, "public key").await;
    assert_eq!(key["algorithm"], "ed25519");
    let public_key = key["public_key"].as_str().expect("key").to_owned();
    assert_eq!(key["keys"][0]["public_key"], public_key.as_str());

    let status = app
        .get_json(&auditor, &format!("/api/v1/audit/chain?store_id={store}"))
        .await;
    let page = app
        .get_json(
            &auditor,
            &format!("/api/v1/audit/checkpoints?store_id={store}&limit=2"),
        )
        .await;
    let first = page["items"][0].clone();
    assert_eq!(first["public_key"], public_key.as_str());
    assert!(page["next_cursor"].is_string(), "{page}");
    let latest = status["latest_checkpoint"].clone();
    let sealed = status["sealed_through"]["chain_index"]
        .as_i64()
        .expect("head");
    assert_eq!(latest["chain_index"], sealed / 10 * 10, "{status}");

    // More orders after the checkpoint the auditor keeps; verify only what came after it.
    let product = shop.product(&app.app, "SKU-2", 500, 10).await;
    let (_, caller) = customer();
    shop.place(&app.app, &caller, &[(product, 1)])
        .await
        .expect("order");
    let length = wait_sealed(&app.db.pool).await;
    let path = format!("/api/v1/audit/verify?store_id={store}");
    let response = app
        .call(
            reqwest::Method::POST,
            &auditor,
            &path,
            Some(json!({"from_checkpoint": latest, "anchors": [first], "trusted_keys": [public_key]})),
        )
        .await;
    let report = expect_json(response, 200, "verify").await;
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["keys_pinned"], true);
    assert_eq!(
        report["verified_events"],
        length - latest["chain_index"].as_i64().expect("index"),
        "{report}"
    );

    // A store's auditor verifies at most once a minute (one tenant must not hold the
    // instance's one verification slot); platform admins are not limited.
    let response = app
        .call(reqwest::Method::POST, &auditor, &path, Some(json!({})))
        .await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let refused = expect_json(response, 429, "a second verification").await;
    assert_eq!(crate::helpers::problem_slug(&refused), "rate-limited");
    let admin_path = "/api/v1/audit/verify";

    // A key the caller does not trust: the database's checkpoints are not accepted.
    let report = verify(
        &app,
        &admin.token,
        json!({"trusted_keys": ["ab".repeat(32)]}),
    )
    .await;
    assert_eq!(report["problem"]["kind"], "untrusted_key", "{report}");

    // Bad input is the caller's problem, never a 500.
    for body in [
        json!({"trusted_keys": ["not hex"]}),
        json!({"from_checkpoint": {"chain_index": 1, "global_position": 1, "transaction_id": 1,
               "hash": "00", "signed_at": "2026-01-01T00:00:00Z", "public_key": "00",
               "signature": "00"}}),
    ] {
        let response = app
            .call(reqwest::Method::POST, &admin.token, admin_path, Some(body))
            .await;
        expect_json(response, 422, "bad verify input").await;
    }
    // A forged checkpoint (signed by someone else's key, or altered) is refused as input.
    let mut altered = latest.clone();
    altered["global_position"] = json!(1);
    let response = app
        .call(
            reqwest::Method::POST,
            &admin.token,
            admin_path,
            Some(json!({"from_checkpoint": altered})),
        )
        .await;
    expect_json(response, 422, "altered checkpoint").await;

    // The whole platform without a store: platform admins only; another store: refused.
    for (method, path) in [
        (reqwest::Method::POST, "/api/v1/audit/verify"),
        (reqwest::Method::GET, "/api/v1/audit/checkpoints"),
    ] {
        let body = (method == reqwest::Method::POST).then(|| json!({}));
        let response = app.call(method, &auditor, path, body).await;
        expect_json(response, 403, path).await;
    }
    for (token, path, status) in [
        (&auditor, "/api/v1/audit/chain".to_owned(), 403),
        (
            &auditor,
            format!("/api/v1/audit/chain?store_id={}", uuid::Uuid::now_v7()),
            403,
        ),
        (&admin.token, "/api/v1/audit/chain".to_owned(), 200),
    ] {
        let response = app.call(reqwest::Method::GET, token, &path, None).await;
        expect_json(response, status, &path).await;
    }
    // The log and its chain cut back from the end, checkpoints too: the database is
    // consistent again, but a checkpoint the auditor kept lies past its end.
    let (index, position) = (
        latest["chain_index"].as_i64().expect("index"),
        latest["global_position"].as_i64().expect("position"),
    );
    let pool = &app.db.pool;
    exec(
        pool,
        &format!("delete from audit_checkpoints where chain_index >= {index}"),
    )
    .await;
    exec(
        pool,
        &format!("delete from audit_chain where chain_index >= {index}"),
    )
    .await;
    exec(
        pool,
        &format!("delete from events where global_position >= {position}"),
    )
    .await;
    let report = verify(&app, &admin.token, json!({"anchors": [latest]})).await;
    assert_found(&report, "chain_rewritten", position);
}

#[tokio::test]
async fn erasing_a_person_leaves_the_chain_intact() {
    let (app, admin, shop) = sealed_shop().await;
    let product = shop.product(&app.app, "SKU-3", 700, 10).await;
    let (customer_id, caller) = customer();
    let mut order = shop.order(&[(product, 1)]);
    order.contact = Some(shopfront::app::ContactDetails {
        recipient: Some("Ivan Petrov".into()),
        phone: Some("+7 900 000 00 00".into()),
        address: Some("Moscow, Tverskaya 1".into()),
        note: None,
    });
    app.app.place_order(&caller, order).await.expect("order");
    // Sealed while the customer's contact could still be opened; then erased.
    wait_sealed(&app.db.pool).await;
    let sealed_contact: String = sqlx::query_scalar(
        "select payload::text from events where event_type = 'OrderPlaced'
          order by global_position desc limit 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("payload");
    let erased = app
        .app
        .erase_person_from_console(customer_id)
        .await
        .expect("erase");
    assert!(erased.key_deleted, "{erased:?}");
    let length = wait_sealed(&app.db.pool).await;
    // The sealed payload is untouched (its ciphertext can no longer be opened) …
    let after: String = sqlx::query_scalar(
        "select payload::text from events where event_type = 'OrderPlaced'
          order by global_position desc limit 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("payload");
    assert_eq!(after, sealed_contact);
    assert!(!after.contains("Ivan Petrov"), "sealed, never in clear");
    // … and every event sealed before the erasure still verifies.
    let report = verify(&app, &admin.token, json!({})).await;
    assert_intact(&report, length);
}

#[tokio::test]
async fn each_new_checkpoint_is_posted_to_the_admins_chat_and_verifies_from_there() {
    use crate::fake_telegram::{FakeTelegram, TgUser};
    use crate::telegram_auth::BOT_TOKEN;

    // The admins' chat: one the bot can write to (the fake, like Telegram, refuses a chat
    // that never wrote to the bot).
    let admin = TgUser::en(777_000_111, "Audit admin");
    const ADMINS: i64 = 777_000_111;
    let fake = FakeTelegram::start(BOT_TOKEN).await;
    fake.text(&admin, "hello");
    let mut settings = ServeSettings::for_tests();
    settings.telegram_bot_token = Some(secrecy::SecretString::from(BOT_TOKEN));
    settings.telegram_bot_username = Some(fake.bot_username().to_owned());
    settings.telegram_api_url = fake.url();
    settings.audit.audit_checkpoint_chat = Some(ADMINS);
    let (app, _, _) = sealed_shop_with(settings, 8).await;
    let latest: i64 = sqlx::query_scalar("select max(chain_index) from audit_checkpoints")
        .fetch_one(&app.db.pool)
        .await
        .expect("latest");

    // Messages arrive in order; the one holding the latest checkpoint comes last.
    let posted = loop {
        let message = fake.next_message_to(ADMINS).await;
        if !message.text.starts_with("shopfront audit checkpoint") {
            continue; // the bot's answer to "hello"
        }
        let line = message.text.lines().last().expect("a line").to_owned();
        let checkpoint: Value = serde_json::from_str(&line).expect("the checkpoint as JSON");
        if checkpoint["chain_index"] == latest {
            break line;
        }
    };
    // The copy in the chat is what an auditor starts from.
    let kept = std::env::temp_dir().join(format!("posted-{}.ndjson", app.db.name));
    std::fs::write(&kept, format!("{posted}\n")).expect("write");
    let path = kept.to_str().expect("path");
    let (report, _) = audit_cli(&app, &["verify", "--from-checkpoint", path], 0);
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["started_after_chain_index"], latest);
    let length: i64 = sqlx::query_scalar("select max(chain_index) from audit_chain")
        .fetch_one(&app.db.pool)
        .await
        .expect("length");
    assert_eq!(report["verified_events"], length - latest, "{report}");
    // Marked once Telegram took it (nothing announces that: looked for).
    let pool = app.db.pool.clone();
    let all_marked = crate::helpers::eventually(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from audit_checkpoints where posted_at is null",
            )
            .fetch_one(&pool)
            .await
            .expect("count")
                == 0
        }
    })
    .await;
    assert!(all_marked, "every checkpoint is marked posted");
    std::fs::remove_file(kept).expect("remove");
}

#[tokio::test]
async fn sealers_racing_each_other_leave_one_chain_without_a_fork_or_a_gap() {
    use shopfront::app::audit::sealer::{seal_batch, SealerSettings};

    let (app, admin, shop) = sealed_shop().await;
    let product = shop.product(&app.app, "SKU-RACE", 1_000, 1_000).await;
    // Four more sealers, as if leadership had been lost and taken by several instances at
    // once, race the service's own while orders keep committing.
    let sealers: Vec<_> = (0..4)
        .map(|n| {
            let pool = app.db.pool.clone();
            tokio::spawn(async move {
                let settings = SealerSettings {
                    key: ed25519_dalek::SigningKey::from_bytes(&[n + 1; 32]),
                    checkpoint_events: 10,
                    checkpoint_interval: Duration::from_secs(600),
                    poll_interval: Duration::from_millis(100),
                };
                let mut conn = pool.acquire().await.expect("connection");
                let (mut sealed, mut lost) = (0, 0);
                for _ in 0..40 {
                    match seal_batch(&mut conn, &settings, shopfront::app::now()).await {
                        Ok(n) => sealed += n,
                        // Another sealer wrote the same chain index first: nothing of this
                        // batch was committed.
                        Err(_) => lost += 1,
                    }
                    tokio::task::yield_now().await;
                }
                (sealed, lost)
            })
        })
        .collect();
    place_orders(&app, &shop, product, 30).await;
    for sealer in sealers {
        sealer.await.expect("sealer");
    }
    let length = wait_sealed(&app.db.pool).await;
    let (rows, events): (i64, i64) =
        sqlx::query_as("select (select count(*) from audit_chain), (select count(*) from events)")
            .fetch_one(&app.db.pool)
            .await
            .expect("counts");
    assert_eq!(
        (rows, length),
        (events, events),
        "one chain row per event, indexes 1..n"
    );
    // Whichever sealer won each batch, the chain is the one the events give; checkpoints
    // signed by the racers' keys verify too (they are named as trusted).
    let mut keys: Vec<String> = (0..4u8)
        .map(|n| {
            hex::encode(
                ed25519_dalek::SigningKey::from_bytes(&[n + 1; 32])
                    .verifying_key()
                    .as_bytes(),
            )
        })
        .collect();
    keys.extend(app.app.audit_public_key().map(str::to_owned));
    let report = verify(&app, &admin.token, json!({"trusted_keys": keys})).await;
    assert_intact(&report, events);
}

//! The `shopfront` binary as a user runs it.

use std::process::{Command, Output};

use crate::helpers::{server_url, TestDb};

pub(crate) fn shopfront(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shopfront"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env("SHOPFRONT_LOG", "warn");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run shopfront")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn migrate_creates_a_missing_database_and_is_idempotent() {
    let db = TestDb::empty().await;
    // A database that does not exist yet: `migrate` creates it.
    let name = format!("{}_new", db.name);
    let url = format!("{}/{name}", server_url());
    for _ in 0..2 {
        let out = shopfront(&["migrate"], &[("DATABASE_URL", &url)]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains(&format!(
            "migrations applied to postgres://postgres@127.0.0.1:5432/{name}"
        )));
    }
    let tables: i64 = sqlx::query_scalar("select count(*) from information_schema.tables where table_name in ('events', 'snapshots', 'personal_data_keys')")
        .fetch_one(&sqlx::PgPool::connect(&url).await.expect("connect"))
        .await
        .expect("tables");
    assert_eq!(tables, 3);
    let mut conn =
        <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{}/postgres", server_url()))
            .await
            .expect("admin");
    sqlx::query(&format!("drop database \"{name}\" with (force)"))
        .execute(&mut conn)
        .await
        .expect("drop");
}

#[test]
fn a_malformed_database_url_is_a_clear_error() {
    let out = shopfront(&["migrate"], &[("DATABASE_URL", "mysql://nope")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("DATABASE_URL is not a valid postgres:// URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn without_a_server_or_binaries_the_error_says_what_to_install() {
    let out = shopfront(
        &["migrate"],
        &[
            (
                "SHOPFRONT_LOCAL_DATABASE_URL",
                "postgres://postgres@127.0.0.1:1/shopfront",
            ),
            ("SHOPFRONT_PG_BIN_DIR", "/nonexistent"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("install PostgreSQL"), "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

#[test]
fn without_a_local_server_a_private_cluster_is_started_from_the_system_binaries() {
    if !std::path::Path::new("/usr/lib/postgresql").exists() {
        panic!("this test needs PostgreSQL server binaries under /usr/lib/postgresql");
    }
    let dir = std::env::temp_dir().join(format!(
        "shopfront-cluster-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).expect("data dir");
    let data_dir = dir.to_string_lossy().into_owned();
    let env = [
        (
            "SHOPFRONT_LOCAL_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/shopfront",
        ),
        ("SHOPFRONT_DATA_DIR", data_dir.as_str()),
    ];
    // First run: initdb + start + create database + migrate, then the cluster is stopped again.
    let first = shopfront(&["migrate"], &env);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(dir.join("pg/PG_VERSION").exists());
    let port: u16 = std::fs::read_to_string(dir.join("pg.port"))
        .expect("port file")
        .trim()
        .parse()
        .expect("port");
    assert!(text(&first.stdout).contains(&format!("127.0.0.1:{port}/shopfront")));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the cluster stops with the command"
    );
    // Second run reuses the cluster and its data.
    let second = shopfront(&["seed-demo"], &env);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(text(&second.stdout).contains("\"seeded\":true"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn seed_demo_fills_an_empty_database_once() {
    let db = TestDb::empty().await;
    let first = shopfront(&["seed-demo"], &[("DATABASE_URL", &db.url)]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(text(&first.stdout).trim()).expect("json summary");
    assert_eq!(summary["seeded"], true);
    assert_eq!(summary["products"], 5);
    assert_eq!(summary["orders"], 6);
    let statuses: i64 = sqlx::query_scalar(
        "select count(distinct event_type) from events where aggregate_type = 'Order'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("order event types");
    assert!(
        statuses >= 6,
        "orders went through their lifecycle ({statuses} event types)"
    );

    let second = shopfront(&["seed-demo"], &[("DATABASE_URL", &db.url)]);
    assert!(second.status.success());
    assert!(text(&second.stdout).contains("\"seeded\":false"));
}

#[test]
fn the_openapi_command_prints_the_checked_in_document() {
    let out = shopfront(&["openapi"], &[]);
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let checked_in: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("file"),
    )
    .expect("json");
    assert_eq!(
        printed, checked_in,
        "run `cargo run -- openapi > openapi/openapi.json`"
    );
}

#[tokio::test]
async fn projections_verify_names_the_projection_whose_tables_differ_and_rebuild_repairs_it() {
    let db = TestDb::empty().await;
    let env = [("DATABASE_URL", db.url.as_str())];
    let seeded = shopfront(&["seed-demo"], &env);
    assert!(seeded.status.success(), "{}", text(&seeded.stderr));
    // Build the read models once (the service is not running here).
    let rebuilt = shopfront(&["projections", "rebuild"], &env);
    assert!(rebuilt.status.success(), "{}", text(&rebuilt.stderr));
    let reports: Vec<serde_json::Value> = text(&rebuilt.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json report"))
        .collect();
    assert_eq!(reports.len(), projections::read_models::names().len());
    assert!(reports.iter().all(|r| r["events"].as_u64() > Some(0)));

    let status = shopfront(&["projections", "status", "--json"], &env);
    assert!(status.status.success());
    for line in text(&status.stdout).lines() {
        let s: serde_json::Value = serde_json::from_str(line).expect("json status");
        assert_eq!(
            (s["status"].as_str(), s["lag_events"].as_i64()),
            (Some("running"), Some(0)),
            "{s}"
        );
    }

    let verified = shopfront(&["projections", "verify"], &env);
    assert!(verified.status.success(), "{}", text(&verified.stderr));

    sqlx::query("update orders set total_minor = total_minor + 1 where status = 'PAID'")
        .execute(&db.pool)
        .await
        .expect("tamper");
    let tampered = shopfront(&["projections", "verify"], &env);
    assert_eq!(tampered.status.code(), Some(1));
    let stderr = text(&tampered.stderr);
    assert!(
        stderr.contains("differ from a fresh replay for: orders ("),
        "{stderr}"
    );

    let repaired = shopfront(&["projections", "rebuild", "orders"], &env);
    assert!(repaired.status.success(), "{}", text(&repaired.stderr));
    let verified = shopfront(&["projections", "verify", "orders"], &env);
    assert!(verified.status.success(), "{}", text(&verified.stderr));

    let unknown = shopfront(&["projections", "rebuild", "nope"], &env);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown.stderr).contains(
        "no projection is called \"nope\"; known: orders, stock, audit, order_deadlines"
    ));
}

#[test]
fn the_rbac_command_prints_the_checked_in_matrix() {
    let out = shopfront(&["rbac"], &[]);
    assert!(out.status.success());
    let checked_in = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/rbac.md"))
        .expect("docs/rbac.md");
    assert!(
        text(&out.stdout) == checked_in,
        "docs/rbac.md is out of date: run `cargo run -- rbac > docs/rbac.md`"
    );
}

#[test]
fn the_problems_command_prints_the_checked_in_catalog() {
    let out = shopfront(&["problems"], &[]);
    assert!(out.status.success());
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/problems.md"))
            .expect("docs/problems.md");
    assert!(
        text(&out.stdout) == checked_in,
        "docs/problems.md is out of date: run `cargo run -- problems > docs/problems.md`"
    );
    // A few slugs clients rely on, with the status class they promise.
    for line in [
        "| `receipt-already-decided` | 409 |",
        "| `stock-out-of-stock` | 409 |",
        "| `order-invalid-transition` | 409 |",
        "| `order-invalid-quantity` | 422 |",
        "| `product-not-found` | 404 |",
        "| `database-unavailable` | 503 |",
    ] {
        assert!(checked_in.contains(line), "{line}");
    }
}

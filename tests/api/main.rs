//! Black-box tests: the real service and application layer against a real Postgres, one fresh
//! database per test.

mod api_tokens;
mod atomic;
mod auth;
mod authz;
mod bad_input;
mod cli;
mod commands_api;
mod database_restart;
mod docs;
mod edge;
mod erasure;
mod fake_telegram;
mod global_log;
mod health;
mod helpers;
mod idempotency;
mod insights_api;
mod metrics;
mod newcomer;
mod no_sql_in_http;
mod notifications;
mod orders;
mod personal_data;
mod projection_runtime;
mod rate_limit;
mod rbac_matrix;
mod read_side;
mod read_your_writes;
mod receipts;
mod receipts_api;
mod smtp_sink;
mod store_api;
mod telegram_auth;
mod telegram_bot;
mod users_api;

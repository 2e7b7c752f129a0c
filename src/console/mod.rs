//! The console: the staff's web interface, served by `shopfront serve` under `/console`
//! (docs/console.md).
//!
//! Server-rendered pages (maud) with htmx for partial updates and the live feed
//! (`/api/v1/ws`, authenticated by the session cookie) for what changes elsewhere. Like every
//! adapter it only translates: each page and action calls the application layer with the same
//! authorization proofs as the HTTP API, so a role's limits are the matrix's
//! (`app::authz`); what a role cannot do is not offered, and is refused anyway.
//!
//! - `session`: the cookie, the signed-in staff member ([`Staff`]), CSRF on every unsafe
//!   request, the security headers;
//! - `login`: password (with the Telegram second factor), QR login, the Telegram Login Widget;
//! - `layout`, `texts`, `assets`: the page frame, English and Russian, the vendored static files;
//! - one module per screen: `desk` (payment desk), `orders`, `inventory`, `dashboard`, `people`,
//!   `notifications`, and `settings` (the stores' settings).

// Handlers answer a rendered page or fragment on both paths; boxing errors would buy nothing.
#![allow(clippy::result_large_err)]

mod assets;
mod dashboard;
mod desk;
mod inventory;
mod layout;
mod login;
mod notifications;
mod orders;
mod people;
mod session;
mod settings;
mod stores;
mod texts;

use std::sync::Arc;

use poem::{get, post, EndpointExt, IntoEndpoint, Route};

use crate::app::App;

pub use session::{session_secret_for_websocket, CookiePolicy, SESSION_COOKIE};

/// Where the console is served.
pub const PREFIX: &str = "/console";

/// The console's routes (nested at [`PREFIX`]); `secure_cookies` marks cookies `Secure` (the
/// service is reached over TLS).
pub fn routes(app: Arc<App>, secure_cookies: bool) -> impl poem::Endpoint {
    Route::new()
        .at("/", get(layout::home))
        .at("/assets/:name", get(assets::asset))
        .at("/language", post(layout::set_language))
        .at("/login", get(login::page).post(login::password))
        .at("/login/wait/:login_id", get(login::wait))
        .at("/login/qr", post(login::qr))
        .at("/login/telegram", get(login::telegram_widget))
        .at("/logout", post(login::logout))
        .at("/desk", get(desk::page))
        .at("/desk/queue", get(desk::queue))
        .at("/desk/bulk", post(desk::bulk))
        .at("/receipts/:receipt_id/file", get(desk::file))
        .at("/receipts/:receipt_id/verify", post(desk::verify))
        .at("/receipts/:receipt_id/reject", post(desk::reject))
        .at("/orders", get(orders::list))
        .at("/orders/new", post(orders::place))
        .at("/orders/:order_id", get(orders::detail))
        .at("/orders/:order_id/:action", post(orders::act))
        .at("/inventory", get(inventory::page))
        .at("/inventory/alerts", get(inventory::alerts))
        .at("/inventory/products", post(inventory::create_product))
        .at(
            "/inventory/alerts/:product_id/acknowledge",
            post(inventory::acknowledge),
        )
        .at("/inventory/:product_id", get(inventory::history))
        .at("/inventory/:product_id/:action", post(inventory::change))
        .at("/dashboard", get(dashboard::page))
        .at("/stores", get(settings::page))
        .at("/stores/:store_id", post(settings::change))
        .at("/people", get(people::page))
        .at("/people/staff", post(people::assign))
        .at("/people/staff/remove", post(people::remove))
        .at("/people/users/block", post(people::block))
        .at(
            "/people/sessions/:session_id/revoke",
            post(people::revoke_session),
        )
        .at("/people/tokens", post(people::create_token))
        .at(
            "/people/tokens/:token_id/revoke",
            post(people::revoke_token),
        )
        .at("/notifications", get(notifications::page))
        .at("/notifications/list", get(notifications::list))
        .at("/notifications/badge", get(notifications::badge))
        .at("/notifications/read-all", post(notifications::read_all))
        .at(
            "/notifications/:notification_id/read",
            post(notifications::read),
        )
        .at("/notifications/settings", post(notifications::settings))
        .around(move |endpoint, request| session::guard(endpoint, request, secure_cookies))
        .data(session::CookiePolicy {
            secure: secure_cookies,
        })
        .data(app)
        .into_endpoint()
}

//! The console (`/console`) against the real server and real Postgres: in a real browser
//! (headless Chromium through chromedriver) for what a person does, and over plain HTTP for
//! what an attacker does (forged posts, missing cookies) and for the headers every answer
//! carries.

use aggregates::{OrderId, ProductId, ReceiptId, StoreRole};
use bytes::Bytes;
use fantoccini::key::Key;
use projections::read_models::orders::queries as orders;
use projections::read_models::receipts::queries as receipts;
use shopfront::app::{grant, ReceiptUpload};

use crate::browser::Browser;
use crate::helpers::{customer, spawn_app, spawn_app_with, Shop, Staff, TestApp, STAFF_PASSWORD};

/// A receipt's file: a real PNG, made unique by `seed` after its end (so two receipts are not
/// flagged as duplicates of each other).
fn receipt_png(seed: u8) -> Bytes {
    let mut png = include_bytes!("fixtures/receipt.png").to_vec();
    png.extend_from_slice(&[seed; 4]);
    Bytes::from(png)
}

/// A shop with a product, its owner signed up with e-mail and password.
struct World {
    app: TestApp,
    owner: Staff,
    shop: Shop,
    product: ProductId,
}

async fn world() -> World {
    let app = spawn_app().await;
    let owner = app.staff("owner@example.com", false).await;
    let shop = app.shop_of(&owner, "Tea House").await;
    let product = shop.product(&app.app, "TEA-1", 890_00, 100).await;
    World {
        app,
        owner,
        shop,
        product,
    }
}

impl World {
    /// A staff account (e-mail and password) given `role` in the shop by its owner.
    async fn staff_member(&self, email: &str, role: StoreRole) -> Staff {
        let member = self.app.staff(email, false).await;
        self.app
            .app
            .assign_staff_role(
                &self.shop.access::<grant::ManageStaff>(&self.app.app).await,
                member.account_id,
                role,
            )
            .await
            .expect("role assigned");
        member
    }
}

/// A customer orders `quantity` of `product` in `shop` and uploads a receipt for it.
async fn submitted_receipt(
    app: &TestApp,
    shop: &Shop,
    product: ProductId,
    seed: u8,
) -> (OrderId, ReceiptId) {
    let (_, customer) = customer();
    let order_id = shop
        .place(&app.app, &customer, &[(product, 2)])
        .await
        .expect("order placed");
    let receipt_id = app
        .app
        .upload_receipt(
            &customer,
            ReceiptUpload {
                order_id,
                content: receipt_png(seed),
                claimed_amount_minor: Some(1_780_00),
                claimed_currency: None,
            },
        )
        .await
        .expect("receipt uploaded")
        .outcome;
    (order_id, receipt_id)
}

/// Signs `email` in through the sign-in page, starting from `path` (the page it is sent back
/// to afterwards); checks the sign-in form is labelled.
async fn sign_in(browser: &Browser, address: &str, email: &str, path: &str) {
    browser
        .client
        .goto(&format!("{address}{path}"))
        .await
        .expect("open the console");
    browser.wait_for("form.sign-in").await;
    browser.screenshot("sign-in").await;
    assert!(
        browser.url().await.contains("/console/login?next="),
        "not signed in: the sign-in page, remembering where to go"
    );
    assert_accessible(browser).await;
    browser
        .wait_for("#email")
        .await
        .send_keys(email)
        .await
        .expect("e-mail");
    browser
        .wait_for("#password")
        .await
        .send_keys(STAFF_PASSWORD)
        .await
        .expect("password");
    browser
        .wait_for("form.sign-in button[type=submit]")
        .await
        .click()
        .await
        .expect("sign in");
    browser.wait_for("header.top nav").await;
    assert!(browser.url().await.ends_with(path), "back at {path}");
}

/// Accessibility basics of the page in the browser: every control has a name a screen reader
/// reads (a `<label for>`, a wrapping label or `aria-label`), nothing is taken out of the
/// keyboard's reach (`tabindex="-1"`) or given a custom tab order, actions are buttons or
/// links, and the page has a language and one `h1`.
async fn assert_accessible(browser: &Browser) {
    let problems = browser
        .run(
            r#"
            const problems = [];
            for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
              const labelled = (el.id && document.querySelector(`label[for="${el.id}"]`))
                || el.closest('label') || el.getAttribute('aria-label');
              if (!labelled) problems.push('unlabelled ' + el.outerHTML.slice(0, 80));
            }
            for (const el of document.querySelectorAll('[tabindex]')) {
              if (el.tabIndex !== 0) problems.push('tabindex ' + el.outerHTML.slice(0, 80));
            }
            for (const el of document.querySelectorAll('[onclick], div[hx-post], span[hx-post]')) {
              problems.push('not a button ' + el.outerHTML.slice(0, 80));
            }
            for (const el of document.querySelectorAll('button, a[href]')) {
              if (!el.textContent.trim() && !el.getAttribute('aria-label')) problems.push('nameless ' + el.outerHTML.slice(0, 80));
            }
            if (!document.documentElement.lang) problems.push('no lang');
            if (document.querySelectorAll('h1').length !== 1) problems.push('h1 count');
            return problems;
            "#,
        )
        .await;
    assert_eq!(
        problems,
        serde_json::json!([]),
        "on {}",
        browser.url().await
    );
}

/// A shop with one receipt waiting, and its owner signed in at the desk in a browser (`None`:
/// no browser on this machine).
async fn owner_at_desk(seed: u8) -> Option<(World, Browser, OrderId, ReceiptId)> {
    let w = world().await;
    let (order_id, receipt_id) = submitted_receipt(&w.app, &w.shop, w.product, seed).await;
    w.app.wait_for_projections().await;
    let browser = Browser::start().await?;
    sign_in(
        &browser,
        &w.app.address,
        "owner@example.com",
        "/console/desk",
    )
    .await;
    Some((w, browser, order_id, receipt_id))
}

async fn receipt_row(app: &TestApp, receipt_id: ReceiptId) -> receipts::Receipt {
    app.wait_for_projections().await;
    receipts::receipt(&app.db.pool, receipt_id.0)
        .await
        .expect("read")
        .expect("the receipt")
}

async fn order_row(app: &TestApp, order_id: OrderId) -> orders::Order {
    app.wait_for_projections().await;
    orders::order(&app.db.pool, order_id.0)
        .await
        .expect("read")
        .expect("the order")
}

#[tokio::test]
async fn an_owner_signs_in_verifies_a_receipt_from_the_queue_and_sees_the_order_paid() {
    let Some((w, browser, order_id, receipt_id)) = owner_at_desk(1).await else {
        return;
    };

    let card = format!("article[data-receipt-id=\"{}\"]", receipt_id.0);
    let title = browser.text_of(&format!("{card} h3")).await;
    assert!(
        title.contains(&order_id.number()) && title.contains("Tea House"),
        "{title}"
    );
    // (WebDriver reads the no-break space that groups digits as a space.)
    assert_eq!(
        browser.text_of(&format!("{card} dd.total")).await,
        "1 780.00 RUB"
    );
    assert!(browser
        .text_of(&format!("{card} table.lines"))
        .await
        .contains("Product TEA-1"));
    // The file is previewed from the console itself.
    let loaded = browser
        .run(&format!(
            "const img = document.querySelector('{card} .preview img'); return img.complete && img.naturalWidth;"
        ))
        .await;
    assert_eq!(loaded, serde_json::json!(240), "the receipt image shows");
    assert_accessible(&browser).await;
    browser.screenshot("desk").await;

    browser
        .wait_for(&format!("{card} button.verify"))
        .await
        .click()
        .await
        .expect("verify");
    let decided = browser
        .text_of(&format!("{card}[data-decision=\"verified\"] .order-status"))
        .await;
    assert_eq!(
        decided, "Paid",
        "the answer shows the order as the read model has it"
    );

    assert_eq!(receipt_row(&w.app, receipt_id).await.status, "VERIFIED");
    let order = order_row(&w.app, order_id).await;
    assert_eq!(order.status, "PAID");
    // The console's decisions are recorded as coming from the console, by the owner.
    let channel: String = sqlx::query_scalar(
        "select metadata->>'channel' from events where event_type = 'PaymentReceiptVerified'",
    )
    .fetch_one(&w.app.db.pool)
    .await
    .expect("the event");
    assert_eq!(channel, "console");
    browser.close().await;
}

#[tokio::test]
async fn a_receipt_is_rejected_with_a_reason_from_the_keyboard() {
    let Some((w, browser, order_id, receipt_id)) = owner_at_desk(2).await else {
        return;
    };

    let card = format!("article[data-receipt-id=\"{}\"]", receipt_id.0);
    // Keyboard only: type the reason and press Enter.
    let reason = browser
        .wait_for(&format!("{card} form.reject input[name=reason]"))
        .await;
    reason
        .send_keys(&format!(
            "The amount does not match{}",
            char::from(Key::Enter)
        ))
        .await
        .expect("type");
    browser
        .wait_for(&format!("{card}[data-decision=\"rejected\"]"))
        .await;

    let row = receipt_row(&w.app, receipt_id).await;
    assert_eq!(row.status, "REJECTED");
    assert_eq!(
        row.rejection_reason.as_deref(),
        Some("The amount does not match")
    );
    assert_eq!(order_row(&w.app, order_id).await.status, "AWAITING_PAYMENT");
    browser.close().await;
}

#[tokio::test]
async fn a_new_receipt_appears_on_the_desk_without_a_reload() {
    let w = world().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    sign_in(
        &browser,
        &w.app.address,
        "owner@example.com",
        "/console/desk",
    )
    .await;
    browser.wait_for("#queue p.empty").await;
    // The page follows the store's orders feed (over the session cookie) before anything
    // happens.
    browser
        .wait_for(&format!(
            "body[data-live-subscribed~=\"orders|{}\"]",
            w.shop.store_id.0
        ))
        .await;
    browser
        .run("window.sameDocument = 'yes'; return null;")
        .await;

    let (_, receipt_id) = submitted_receipt(&w.app, &w.shop, w.product, 3).await;

    browser
        .wait_for(&format!("article[data-receipt-id=\"{}\"]", receipt_id.0))
        .await;
    assert_eq!(
        browser.run("return window.sameDocument || null;").await,
        serde_json::json!("yes"),
        "the receipt came in without a reload"
    );
    assert_eq!(browser.text_of("#queue .count").await, "(1)");
    // The receipt's notification reaches the owner live too: the unread count moves.
    browser.wait_for("#unread-badge[data-unread=\"1\"]").await;
    browser.close().await;
}

#[tokio::test]
async fn a_vendor_sees_only_their_stores_queue_and_cannot_reach_another_or_decide() {
    let w = world().await;
    let other_owner = w.app.staff("other@example.com", false).await;
    let other = w.app.shop_of(&other_owner, "Coffee Corner").await;
    let other_product = other.product(&w.app.app, "COF-1", 450_00, 10).await;
    w.staff_member("vendor@example.com", StoreRole::Vendor)
        .await;
    let (_, own) = submitted_receipt(&w.app, &w.shop, w.product, 4).await;
    let (_, foreign) = submitted_receipt(&w.app, &other, other_product, 5).await;
    w.app.wait_for_projections().await;

    let Some(browser) = Browser::start().await else {
        return;
    };
    sign_in(
        &browser,
        &w.app.address,
        "vendor@example.com",
        "/console/desk",
    )
    .await;
    browser
        .wait_for(&format!("article[data-receipt-id=\"{}\"]", own.0))
        .await;
    let cards = browser
        .run("return Array.from(document.querySelectorAll('article.receipt')).map(a => a.dataset.receiptId);")
        .await;
    assert_eq!(
        cards,
        serde_json::json!([own.0.to_string()]),
        "only the vendor's store"
    );
    // A vendor may see receipts but not decide them: nothing to press...
    let buttons = browser
        .run("return document.querySelectorAll('article.receipt button').length;")
        .await;
    assert_eq!(buttons, serde_json::json!(0));
    // ...and pressing anyway, with the page's own CSRF token, is refused by the server: the
    // other store's receipt does not exist for them, their own store's may not be decided.
    let statuses = browser
        .run_async(&format!(
            r#"
            const done = arguments[0];
            const token = JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token'];
            const post = id => fetch(`/console/receipts/${{id}}/verify`,
              {{method: 'POST', headers: {{'X-CSRF-Token': token, 'HX-Request': 'true'}}}}).then(r => r.status);
            Promise.all([
              fetch('/console/receipts/{foreign}/file').then(r => r.status),
              post('{foreign}'),
              post('{own}'),
            ]).then(done);
            "#,
            foreign = foreign.0,
            own = own.0
        ))
        .await;
    assert_eq!(statuses, serde_json::json!([404, 404, 403]));
    assert_eq!(receipt_row(&w.app, own).await.status, "SUBMITTED");
    assert_eq!(receipt_row(&w.app, foreign).await.status, "SUBMITTED");
    browser.close().await;
}

#[tokio::test]
async fn a_post_without_the_sessions_csrf_token_is_refused_in_the_browser() {
    let Some((w, browser, _, receipt_id)) = owner_at_desk(6).await else {
        return;
    };
    // What a forged form would send: the browser's cookie, but no token or a guessed one.
    let statuses = browser
        .run_async(&format!(
            r#"
            const done = arguments[0];
            const url = '/console/receipts/{id}/verify';
            Promise.all([
              fetch(url, {{method: 'POST'}}).then(r => r.status),
              fetch(url, {{method: 'POST', headers: {{'X-CSRF-Token': '00'.repeat(32)}}}}).then(r => r.status),
              fetch(url, {{method: 'POST', body: new URLSearchParams({{csrf: 'forged'}})}}).then(r => r.status),
            ]).then(done);
            "#,
            id = receipt_id.0
        ))
        .await;
    assert_eq!(statuses, serde_json::json!([403, 403, 403]));
    assert_eq!(receipt_row(&w.app, receipt_id).await.status, "SUBMITTED");
    browser.close().await;
}

/// Every screen renders with real data for a store owner, in English and in Russian; the
/// pictures in docs/console/ come from here (`SHOPFRONT_CONSOLE_SCREENSHOTS=1`).
#[tokio::test]
async fn every_screen_serves_the_owners_day_in_english_and_russian() {
    let w = world().await;
    let second = w.app.shop_of(&w.owner, "Tea House Two").await;
    let _ = second;
    // Ordering 5 of 8 leaves 3, under the store's threshold of 5: a low-stock alert.
    let low = w.shop.product(&w.app.app, "TEA-2", 350_00, 8).await;
    let (_, someone) = customer();
    w.shop
        .place(&w.app.app, &someone, &[(low, 5)])
        .await
        .expect("order placed");
    let (order_id, receipt_id) = submitted_receipt(&w.app, &w.shop, w.product, 7).await;
    submitted_receipt(&w.app, &w.shop, w.product, 8).await;
    w.app
        .app
        .verify_receipt(
            &w.shop.access::<grant::ReviewReceipts>(&w.app.app).await,
            receipt_id,
        )
        .await
        .expect("verified");
    w.app.wait_for_projections().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    sign_in(
        &browser,
        &w.app.address,
        "owner@example.com",
        "/console/desk",
    )
    .await;
    for (path, name, shows) in [
        ("/console/orders", "orders", "table.orders tbody tr"),
        (
            &*format!("/console/orders/{}", order_id.0),
            "order",
            "table.timeline tbody tr",
        ),
        ("/console/inventory", "inventory", "#alerts li.alert"),
        (
            &*format!("/console/inventory/{}", w.product.0),
            "product",
            "table.history tbody tr",
        ),
        ("/console/dashboard", "dashboard", "dl.kpis dd.revenue"),
        ("/console/people", "people", "section.staff tbody tr"),
        ("/console/stores", "stores", "section.store textarea"),
        (
            "/console/notifications",
            "notifications",
            "ul.notifications li",
        ),
    ] {
        browser
            .client
            .goto(&format!("{}{path}", w.app.address))
            .await
            .expect("open");
        browser.wait_for(shows).await;
        assert_accessible(&browser).await;
        let flash = browser.text_of("#flash").await;
        assert!(flash.is_empty(), "{path}: {flash}");
        browser.screenshot(name).await;
    }
    browser
        .client
        .goto(&format!("{}/console/dashboard", w.app.address))
        .await
        .expect("open");
    assert_eq!(browser.text_of("dl.kpis dd.revenue").await, "1 780.00 RUB");
    assert_eq!(browser.text_of("dl.kpis dd.orders-paid").await, "1");

    // Switch to Russian: the choice sticks across pages.
    browser
        .wait_for("form[action=\"/console/language\"] button")
        .await
        .click()
        .await
        .expect("switch");
    browser
        .wait_for("form[action=\"/console/language\"] button[lang=en]")
        .await;
    assert_eq!(
        browser.run("return document.documentElement.lang;").await,
        "ru"
    );
    browser
        .client
        .goto(&format!("{}/console/desk", w.app.address))
        .await
        .expect("open");
    assert_eq!(browser.text_of("main h1").await, "Проверка оплат");
    browser.screenshot("desk-ru").await;
    browser.close().await;
}

// ---- Over plain HTTP: what the browser is protected by ----------------------------------

/// A console session opened over HTTP as a browser would: the sign-in page's CSRF cookie and
/// field, then the session cookie. Returns the `Cookie` header and the session's CSRF token.
async fn http_session(app: &TestApp, email: &str) -> (String, String) {
    let client = no_redirects();
    let page = client
        .get(format!("{}/console/login", app.address))
        .send()
        .await
        .expect("sign-in page");
    let login_cookie = set_cookie(&page, "sf_login").expect("a CSRF cookie");
    let signed_in = client
        .post(format!("{}/console/login", app.address))
        .header("cookie", format!("sf_login={login_cookie}"))
        .form(&[
            ("email", email),
            ("password", STAFF_PASSWORD),
            ("csrf", &login_cookie),
            ("next", "/console/desk"),
        ])
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed_in.status(), 303);
    let session = set_cookie(&signed_in, "sf_session").expect("a session cookie");
    let cookie = format!("sf_session={session}");
    let desk = client
        .get(format!("{}/console/desk", app.address))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("desk")
        .text()
        .await
        .expect("html");
    let csrf = desk
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page's CSRF token")
        .to_owned();
    (cookie, csrf)
}

/// The HTML of console page `url` for the session `cookie`.
async fn console_page(url: &str, cookie: &str) -> String {
    no_redirects()
        .get(url)
        .header("cookie", cookie)
        .send()
        .await
        .expect("the page")
        .text()
        .await
        .expect("html")
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The value `response` sets cookie `name` to, and checks its flags.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            assert!(v.contains("HttpOnly"), "{v}");
            assert!(v.contains("SameSite=Strict"), "{v}");
            v[name.len() + 1..]
                .split(';')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
}

#[tokio::test]
async fn console_pages_send_a_strict_content_security_policy_and_no_inline_code() {
    let w = world().await;
    let (cookie, _) = http_session(&w.app, "owner@example.com").await;
    for path in [
        "/console/login",
        "/console/desk",
        "/console/orders",
        "/console/people",
    ] {
        // The sign-in page is for those without a session.
        let cookie = if path == "/console/login" {
            ""
        } else {
            cookie.as_str()
        };
        let response = no_redirects()
            .get(format!("{}{path}", w.app.address))
            .header("cookie", cookie)
            .send()
            .await
            .expect("page");
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        let csp = headers["content-security-policy"].to_str().expect("csp");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["cache-control"], "no-store");
        let html = response.text().await.expect("html");
        for script in html.split("<script").skip(1) {
            let tag = script.split('>').next().unwrap_or_default();
            assert!(tag.contains("src="), "{path}: an inline script: {tag}");
        }
        assert!(!html.contains(" style=\""), "{path}: an inline style");
        for handler in [
            "onclick=",
            "onload=",
            "onsubmit=",
            "onchange=",
            "oninput=",
            "javascript:",
        ] {
            assert!(!html.contains(handler), "{path}: {handler}");
        }
    }
    // Assets are versioned and cached.
    let js = no_redirects()
        .get(format!("{}/console/assets/htmx.min.js", w.app.address))
        .send()
        .await
        .expect("asset");
    assert_eq!(
        js.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
}

#[tokio::test]
async fn forged_posts_are_refused_and_change_nothing() {
    let w = world().await;
    let (_, receipt_id) = submitted_receipt(&w.app, &w.shop, w.product, 9).await;
    let (cookie, csrf) = http_session(&w.app, "owner@example.com").await;
    let url = format!("{}/console/receipts/{}/verify", w.app.address, receipt_id.0);
    let client = no_redirects();
    // A cross-site form carrying the victim's cookie: no token, another session's token, a
    // token in a header with the wrong value.
    w.app.staff("other@example.com", false).await;
    let (_, other_csrf) = http_session(&w.app, "other@example.com").await;
    for (header, field) in [
        (None, None),
        (None, Some(other_csrf.as_str())),
        (Some("not-the-token"), None),
    ] {
        let mut request = client.post(&url).header("cookie", &cookie);
        if let Some(header) = header {
            request = request.header("x-csrf-token", header);
        }
        let response = request
            .form(&[("csrf", field.unwrap_or_default())])
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 403, "{header:?} {field:?}");
    }
    // A sign-in form posted without its cookie (login CSRF).
    let forged_login = client
        .post(format!("{}/console/login", w.app.address))
        .form(&[
            ("email", "owner@example.com"),
            ("password", STAFF_PASSWORD),
            ("csrf", "abc"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(forged_login.status(), 403);
    assert_eq!(receipt_row(&w.app, receipt_id).await.status, "SUBMITTED");

    // The real form, with the session's token, works.
    let response = client
        .post(&url)
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    assert_eq!(receipt_row(&w.app, receipt_id).await.status, "VERIFIED");
}

#[tokio::test]
async fn without_a_session_the_console_sends_you_to_sign_in_and_sign_out_ends_the_session() {
    let w = world().await;
    let client = no_redirects();
    let anonymous = client
        .get(format!("{}/console/orders?status=PAID", w.app.address))
        .send()
        .await
        .expect("get");
    assert_eq!(anonymous.status(), 303);
    assert_eq!(
        anonymous.headers()["location"],
        "/console/login?next=%2Fconsole%2Forders%3Fstatus%3DPAID"
    );

    let (cookie, csrf) = http_session(&w.app, "owner@example.com").await;
    // The browser session is one of the account's sessions.
    let sessions: i64 = sqlx::query_scalar(
        "select count(*) from auth_sessions s join browser_sessions b using (session_id) where s.revoked_at is null",
    )
    .fetch_one(&w.app.db.pool)
    .await
    .expect("count");
    assert_eq!(sessions, 1);
    // The cookie's secret opens the console, not the API: it is no bearer token.
    let secret = cookie.trim_start_matches("sf_session=");
    let as_bearer = client
        .get(format!("{}/api/v1/stores", w.app.address))
        .bearer_auth(secret)
        .send()
        .await
        .expect("get");
    assert_eq!(as_bearer.status(), 401);
    let out = client
        .post(format!("{}/console/logout", w.app.address))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("sign out");
    assert_eq!(out.status(), 303);
    assert!(
        set_cookie(&out, "sf_session").is_some_and(|v| v.is_empty()),
        "the cookie is cleared"
    );
    // The old cookie no longer opens anything, here or on the live feed.
    let after = client
        .get(format!("{}/console/desk", w.app.address))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(after.status(), 303);
    let revoked: Option<String> = sqlx::query_scalar(
        "select s.revoked_reason from auth_sessions s join browser_sessions b using (session_id)",
    )
    .fetch_one(&w.app.db.pool)
    .await
    .expect("the session");
    assert_eq!(revoked.as_deref(), Some("logout"));
}

#[tokio::test]
async fn cookies_are_secure_when_the_service_is_reached_over_tls() {
    let mut settings = shopfront::config::ServeSettings::for_tests();
    settings.edge.secure_cookies = true;
    let app = spawn_app_with(settings).await;
    let page = no_redirects()
        .get(format!("{}/console/login", app.address))
        .send()
        .await
        .expect("page");
    let cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.contains("sf_login="))
        .expect("the cookie")
        .to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
    // Under TLS the cookies carry the `__Host-` prefix: no sibling domain can plant them.
    assert!(cookie.starts_with("__Host-sf_login="), "{cookie}");
    assert!(page.headers()["strict-transport-security"]
        .to_str()
        .expect("hsts")
        .starts_with("max-age="));
}

#[tokio::test]
async fn a_wrong_password_is_answered_on_the_page_without_a_session() {
    let w = world().await;
    let client = no_redirects();
    let page = client
        .get(format!("{}/console/login", w.app.address))
        .send()
        .await
        .expect("page");
    let login_cookie = set_cookie(&page, "sf_login").expect("cookie");
    let response = client
        .post(format!("{}/console/login", w.app.address))
        .header("cookie", format!("sf_login={login_cookie}"))
        .form(&[
            ("email", "owner@example.com"),
            ("password", "not the password at all"),
            ("csrf", &login_cookie),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 401);
    assert!(set_cookie(&response, "sf_session").is_none());
    let html = response.text().await.expect("html");
    assert!(html.contains("The e-mail or password is wrong."), "{html}");
}

// ---- Signing in with Telegram --------------------------------------------------------------

/// QR login in the browser: the page shows the code and waits; the bot confirms (here the
/// application call the bot makes); the page signs in by itself.
#[tokio::test]
async fn a_qr_login_shown_in_the_console_signs_the_browser_in_once_confirmed_in_telegram() {
    let app = crate::telegram_auth::telegram_app().await;
    shopfront::testing::register_account(&app.app, Some("qr@example.com"), Some(9090), false)
        .await
        .expect("account");
    let Some(browser) = Browser::start().await else {
        return;
    };
    browser
        .client
        .goto(&format!("{}/console/login", app.address))
        .await
        .expect("open");
    browser
        .wait_for("form[action=\"/console/login/qr\"] button")
        .await
        .click()
        .await
        .expect("show the QR code");
    browser.wait_for("figure.qr svg").await;
    assert_accessible(&browser).await;
    browser.screenshot("sign-in-qr").await;
    let link = browser
        .wait_for("figure.qr a")
        .await
        .attr("href")
        .await
        .expect("attr")
        .expect("the deep link");
    let token = link
        .split("?start=")
        .nth(1)
        .expect("a start parameter")
        .to_owned();
    app.app
        .confirm_login(9090, &token)
        .await
        .expect("confirmed in Telegram");
    // The page's own polling collects the session and moves on.
    browser.wait_for("header.top nav").await;
    assert!(browser.url().await.ends_with("/console/desk"));
    assert_eq!(browser.text_of("main h1").await, "Payment desk");
    browser.close().await;
}

/// A password sign-in of an account with the Telegram second factor waits for the approval
/// of the account's own Telegram user.
#[tokio::test]
async fn the_second_factor_is_approved_in_telegram_while_the_sign_in_page_waits() {
    use crate::telegram_auth::{post, reauthenticate, send, signed_in_staff, telegram_app, widget};
    let app = telegram_app().await;
    let (_, access) = signed_in_staff(&app, "twofa@example.com").await;
    reauthenticate(&app, &access).await;
    let linked = post(
        &app,
        "/api/v1/auth/telegram/link",
        Some(&access),
        widget(6060),
    )
    .await;
    assert_eq!(linked.status(), 200);
    reauthenticate(&app, &access).await;
    let enabled = send(
        &app,
        reqwest::Method::PUT,
        "/api/v1/auth/second-factor",
        Some(&access),
        Some(serde_json::json!({"enabled": true})),
    )
    .await;
    assert_eq!(enabled.status(), 200);

    let Some(browser) = Browser::start().await else {
        return;
    };
    browser
        .client
        .goto(&format!("{}/console/login", app.address))
        .await
        .expect("open");
    browser
        .wait_for("#email")
        .await
        .send_keys("twofa@example.com")
        .await
        .expect("type");
    browser
        .wait_for("#password")
        .await
        .send_keys(STAFF_PASSWORD)
        .await
        .expect("type");
    browser
        .wait_for("form.sign-in button[type=submit]")
        .await
        .click()
        .await
        .expect("submit");
    browser.wait_for("#login-wait").await;
    let login_id: uuid::Uuid = sqlx::query_scalar(
        "select login_id from auth_login_challenges where kind = 'second_factor' and status = 'pending'",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("the pending login");
    app.app
        .approve_second_factor(6060, login_id, true)
        .await
        .expect("approved");
    browser.wait_for("header.top nav").await;
    assert!(browser.url().await.ends_with("/console/desk"));
    browser.close().await;
}

/// The Telegram Login Widget's callback signs a linked account in; forged data does not.
#[tokio::test]
async fn the_login_widgets_signed_callback_signs_in_and_forged_data_is_refused() {
    let app = crate::telegram_auth::telegram_app().await;
    shopfront::testing::register_account(&app.app, Some("widget@example.com"), Some(4242), false)
        .await
        .expect("account");
    let signed = crate::telegram_auth::widget(4242);
    let query = |fields: &serde_json::Value| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in fields.as_object().expect("fields") {
            let value = match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            query.append_pair(name, &value);
        }
        query.finish()
    };
    let client = no_redirects();
    let good = client
        .get(format!(
            "{}/console/login/telegram?{}",
            app.address,
            query(&signed)
        ))
        .send()
        .await
        .expect("callback");
    // Signed in; the page moves on as a navigation of this site (a redirect would still be
    // Telegram's cross-site navigation, without the new SameSite=Strict cookie).
    assert_eq!(good.status(), 200);
    assert!(set_cookie(&good, "sf_session").is_some_and(|v| v.starts_with("sfb_")));
    assert!(good
        .text()
        .await
        .expect("html")
        .contains("http-equiv=\"refresh\" content=\"0; url=/console/desk\""));
    // The same signed URL again (from history, a proxy's log): refused.
    let replayed = client
        .get(format!(
            "{}/console/login/telegram?{}",
            app.address,
            query(&signed)
        ))
        .send()
        .await
        .expect("callback");
    assert_eq!(replayed.status(), 401);
    assert!(set_cookie(&replayed, "sf_session").is_none());

    let mut forged = signed.clone();
    forged["id"] = serde_json::json!(4243);
    let bad = client
        .get(format!(
            "{}/console/login/telegram?{}",
            app.address,
            query(&forged)
        ))
        .send()
        .await
        .expect("callback");
    assert_eq!(bad.status(), 401);
    assert!(set_cookie(&bad, "sf_session").is_none());
}

// ---- The screens' actions, as a form post from the page ------------------------------------

/// A form post of the console with the session's token: (status, body).
async fn console_post(
    app: &TestApp,
    (cookie, csrf): &(String, String),
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let mut form: Vec<(&str, &str)> = fields.to_vec();
    form.push(("csrf", csrf));
    let response = no_redirects()
        .post(format!("{}{path}", app.address))
        .header("cookie", cookie)
        .header("hx-request", "true")
        .form(&form)
        .send()
        .await
        .expect("post");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn a_bulk_decision_reports_each_receipt_on_its_own() {
    let w = world().await;
    let (_, first) = submitted_receipt(&w.app, &w.shop, w.product, 10).await;
    let (_, second) = submitted_receipt(&w.app, &w.shop, w.product, 11).await;
    let other_owner = w.app.staff("other@example.com", false).await;
    let other = w.app.shop_of(&other_owner, "Coffee Corner").await;
    let other_product = other.product(&w.app.app, "COF-1", 450_00, 10).await;
    let (_, foreign) = submitted_receipt(&w.app, &other, other_product, 12).await;
    let session = http_session(&w.app, "owner@example.com").await;

    let ids = [
        first.0.to_string(),
        second.0.to_string(),
        foreign.0.to_string(),
    ];
    let mut fields = vec![("action", "reject"), ("reason", "Not our bank")];
    fields.extend(ids.iter().map(|id| ("receipt_ids", id.as_str())));
    let (status, html) = console_post(&w.app, &session, "/console/desk/bulk", &fields).await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(html.matches("class=\"ok\"").count(), 2, "{html}");
    assert_eq!(html.matches("class=\"failed\"").count(), 1, "{html}");
    assert!(html.contains(&format!("data-receipt-id=\"{}\"", foreign.0)));
    assert_eq!(receipt_row(&w.app, first).await.status, "REJECTED");
    assert_eq!(receipt_row(&w.app, second).await.status, "REJECTED");
    assert_eq!(receipt_row(&w.app, foreign).await.status, "SUBMITTED");

    // Rejecting needs a reason; nothing is decided without one.
    let (_, third) = submitted_receipt(&w.app, &w.shop, w.product, 13).await;
    let third_id = third.0.to_string();
    let (status, _) = console_post(
        &w.app,
        &session,
        "/console/desk/bulk",
        &[("action", "reject"), ("receipt_ids", &third_id)],
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = console_post(
        &w.app,
        &session,
        "/console/desk/bulk",
        &[("action", "verify"), ("receipt_ids", "not-an-id")],
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(receipt_row(&w.app, third).await.status, "SUBMITTED");
}

#[tokio::test]
async fn orders_are_fulfilled_and_completed_from_the_console_and_a_vendor_cannot_cancel() {
    let w = world().await;
    let (order_id, receipt_id) = submitted_receipt(&w.app, &w.shop, w.product, 14).await;
    let (other_order, _) = submitted_receipt(&w.app, &w.shop, w.product, 15).await;
    w.app
        .app
        .verify_receipt(
            &w.shop.access::<grant::ReviewReceipts>(&w.app.app).await,
            receipt_id,
        )
        .await
        .expect("verified");
    let owner = http_session(&w.app, "owner@example.com").await;
    let order = format!("/console/orders/{}", order_id.0);

    let (status, html) = console_post(&w.app, &owner, &format!("{order}/fulfil"), &[]).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("Fulfilled"),
        "the answer shows the new status"
    );
    assert_eq!(order_row(&w.app, order_id).await.status, "FULFILLED");
    let (status, _) = console_post(&w.app, &owner, &format!("{order}/complete"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(order_row(&w.app, order_id).await.status, "COMPLETED");
    // A completed order cannot be fulfilled again: a clear 4xx, not a 500.
    let (status, _) = console_post(&w.app, &owner, &format!("{order}/fulfil"), &[]).await;
    assert!((400..500).contains(&status), "{status}");
    let (status, _) = console_post(&w.app, &owner, &format!("{order}/teleport"), &[]).await;
    assert_eq!(status, 422);

    // The list filters by status.
    let list = console_page(
        &format!("{}/console/orders?status=COMPLETED", w.app.address),
        &owner.0,
    )
    .await;
    assert!(list.contains(&format!("data-order-id=\"{}\"", order_id.0)));
    assert!(!list.contains(&format!("data-order-id=\"{}\"", other_order.0)));

    // A vendor may fulfil but not cancel: the page offers no cancel, the server refuses one.
    w.staff_member("vendor@example.com", StoreRole::Vendor)
        .await;
    let vendor = http_session(&w.app, "vendor@example.com").await;
    let page = console_page(
        &format!("{}/console/orders/{}", w.app.address, other_order.0),
        &vendor.0,
    )
    .await;
    assert!(page.contains("table class=\"timeline\""));
    assert!(!page.contains("/cancel\""), "no cancel offered to a vendor");
    let (status, _) = console_post(
        &w.app,
        &vendor,
        &format!("/console/orders/{}/cancel", other_order.0),
        &[("reason", "because")],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        order_row(&w.app, other_order).await.status,
        "RECEIPT_SUBMITTED"
    );
}

#[tokio::test]
async fn stock_is_received_adjusted_and_thresholds_set_from_the_console() {
    let w = world().await;
    let session = http_session(&w.app, "owner@example.com").await;
    let product = format!("/console/inventory/{}", w.product.0);
    let (status, html) = console_post(
        &w.app,
        &session,
        &format!("{product}/receive"),
        &[("quantity", "25"), ("note", "delivery")],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<dd class=\"on-hand\">125</dd>"), "{html}");
    let (status, _) = console_post(
        &w.app,
        &session,
        &format!("{product}/adjust"),
        &[("quantity", "-5"), ("reason", "damage")],
    )
    .await;
    assert_eq!(status, 200);
    let (status, html) = console_post(
        &w.app,
        &session,
        &format!("{product}/threshold"),
        &[("quantity", "200")],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    w.app.wait_for_projections().await;
    let level = projections::read_models::stock::queries::level(&w.app.db.pool, w.product.0)
        .await
        .expect("read")
        .expect("level");
    assert_eq!(
        (
            level.on_hand,
            level.effective_threshold,
            level.level.as_str()
        ),
        (120, 200, "low")
    );
    // Bad input is a clear 422; nothing changes.
    for fields in [
        [("quantity", "lots"), ("reason", "count")],
        [("quantity", "1"), ("reason", "theft")],
    ] {
        let (status, _) =
            console_post(&w.app, &session, &format!("{product}/adjust"), &fields).await;
        assert_eq!(status, 422);
    }
    // The history shows every movement.
    let page = console_page(&format!("{}{product}", w.app.address), &session.0).await;
    assert!(page.contains("Received") && page.contains("Adjusted") && page.contains("delivery"));
}

#[tokio::test]
async fn staff_are_assigned_by_email_within_the_escalation_rules() {
    let w = world().await;
    w.app.staff("admin@example.com", false).await;
    w.app.staff("newbie@example.com", false).await;
    let owner = http_session(&w.app, "owner@example.com").await;
    let store = w.shop.store_id.0.to_string();
    // The People screen's "add a staff member" form, as `session` posts it.
    let assign = |session: &(String, String), email: &'static str, role: &'static str| {
        let (app, session, store) = (&w.app, session.clone(), store.clone());
        async move {
            console_post(
                app,
                &session,
                "/console/people/staff",
                &[("store_id", &store), ("email", email), ("role", role)],
            )
            .await
        }
    };
    let (status, html) = assign(&owner, "admin@example.com", "ADMIN").await;
    assert_eq!(status, 303, "{html}");
    let admin_session = http_session(&w.app, "admin@example.com").await;
    // An admin may add vendors and auditors, not owners or admins: not offered, and refused.
    let people = console_page(
        &format!("{}/console/people", w.app.address),
        &admin_session.0,
    )
    .await;
    let staff_section = people
        .split(&format!("id=\"staff-{store}\""))
        .nth(1)
        .and_then(|rest| rest.split("</section>").next())
        .expect("the store's staff");
    assert!(staff_section.contains("<option value=\"VENDOR\">"));
    assert!(
        !staff_section.contains("<option value=\"OWNER\">"),
        "no owner offered to an admin"
    );
    let (status, _) = assign(&admin_session, "newbie@example.com", "OWNER").await;
    assert_eq!(status, 403);
    let (status, _) = assign(&admin_session, "newbie@example.com", "VENDOR").await;
    assert_eq!(status, 303);
    // Nor may they remove the owner.
    let (status, _) = console_post(
        &w.app,
        &admin_session,
        "/console/people/staff/remove",
        &[
            ("store_id", &store),
            ("account_id", &w.owner.account_id.0.to_string()),
        ],
    )
    .await;
    assert_eq!(status, 403);
    w.app.wait_for_projections().await;
    let staff =
        projections::read_models::catalog::queries::staff(&w.app.db.pool, w.shop.store_id.0)
            .await
            .expect("staff");
    let mut roles: Vec<&str> = staff.iter().map(|m| m.role.as_str()).collect();
    roles.sort();
    assert_eq!(roles, ["ADMIN", "OWNER", "VENDOR"]);
}

#[tokio::test]
async fn notifications_are_marked_read_and_the_sound_setting_is_kept() {
    let w = world().await;
    submitted_receipt(&w.app, &w.shop, w.product, 16).await;
    let session = http_session(&w.app, "owner@example.com").await;
    // The receipt's notification reaches the owner's center.
    let unread = || async {
        w.app
            .app
            .notification_center(
                &shopfront::testing::caller_for(w.owner.account_id, aggregates::Channel::Console),
                &shopfront::app::NotificationFilter {
                    unread_only: true,
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .expect("center")
            .unread_count
    };
    assert!(
        crate::helpers::eventually(std::time::Duration::from_secs(20), || async {
            unread().await == 1
        })
        .await,
        "the notification arrived"
    );
    let (status, html) =
        console_post(&w.app, &session, "/console/notifications/read-all", &[]).await;
    assert_eq!(status, 200);
    assert!(html.contains("data-unread=\"0\""), "{html}");
    assert_eq!(unread().await, 0);

    let (status, _) = console_post(&w.app, &session, "/console/notifications/settings", &[]).await;
    assert_eq!(status, 303);
    let page = console_page(
        &format!("{}/console/notifications", w.app.address),
        &session.0,
    )
    .await;
    assert!(page.contains("data-sound=\"off\""));
    let (status, _) =
        console_post(&w.app, &session, "/console/notifications/99999/read", &[]).await;
    assert_eq!(status, 404);
}

/// Erasing a person who used the console removes their browser sessions with the rest.
#[tokio::test]
async fn a_person_who_signed_in_to_the_console_can_still_be_erased() {
    let w = world().await;
    let clerk = w.app.staff("clerk@example.com", false).await;
    let (cookie, _) = http_session(&w.app, "clerk@example.com").await;
    let report = w
        .app
        .app
        .erase_person_from_console(clerk.account_id)
        .await
        .expect("erased");
    assert!(report.sessions_deleted >= 2, "{report:?}");
    let left: i64 = sqlx::query_scalar("select count(*) from browser_sessions")
        .fetch_one(&w.app.db.pool)
        .await
        .expect("count");
    assert_eq!(left, 0);
    let after = no_redirects()
        .get(format!("{}/console/desk", w.app.address))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(after.status(), 303, "the cookie opens nothing any more");
}

#[tokio::test]
async fn a_platform_admin_blocks_users_in_bulk_and_anyone_makes_an_api_token_once() {
    let w = world().await;
    w.app.staff("root@example.com", true).await;
    let first = w.app.staff("first@example.com", false).await;
    let second = w.app.staff("second@example.com", false).await;
    let admin = http_session(&w.app, "root@example.com").await;
    w.app.wait_for_projections().await;
    let people = console_page(
        &format!("{}/console/people?q=example.com", w.app.address),
        &admin.0,
    )
    .await;
    assert!(
        people.contains("id=\"users\""),
        "platform admins see the platform's users"
    );
    let (first_id, second_id) = (
        first.account_id.0.to_string(),
        second.account_id.0.to_string(),
    );
    // Blocking needs a reason; then both are blocked, each reported.
    let (status, _) = console_post(
        &w.app,
        &admin,
        "/console/people/users/block",
        &[("action", "block"), ("account_ids", &first_id)],
    )
    .await;
    assert_eq!(status, 200);
    let (status, html) = console_post(
        &w.app,
        &admin,
        "/console/people/users/block",
        &[
            ("action", "block"),
            ("reason", "left the company"),
            ("account_ids", &first_id),
            ("account_ids", &second_id),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(html.matches(": done").count(), 2, "{html}");
    w.app.wait_for_projections().await;
    let blocked: i64 = sqlx::query_scalar(
        "select count(*) from accounts where blocked_at is not null and account_id = any($1)",
    )
    .bind(vec![first.account_id.0, second.account_id.0])
    .fetch_one(&w.app.db.pool)
    .await
    .expect("count");
    assert_eq!(blocked, 2);
    // An owner who is no platform admin sees no users and may not block anyone.
    let owner = http_session(&w.app, "owner@example.com").await;
    let (status, _) = console_post(
        &w.app,
        &owner,
        "/console/people/users/block",
        &[("action", "unblock"), ("account_ids", &first_id)],
    )
    .await;
    assert_eq!(status, 403);

    // An API token made in the console is shown once and works on the API.
    let store = w.shop.store_id.0.to_string();
    let (status, html) = console_post(
        &w.app,
        &owner,
        "/console/people/tokens",
        &[
            ("name", "bookkeeping"),
            ("store_id", &store),
            ("role", "AUDITOR"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    let token = html
        .split("id=\"new-token\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the new token")
        .to_owned();
    assert!(token.starts_with("sfp_"));
    let stores = w
        .app
        .client
        .get(format!("{}/api/v1/stores", w.app.address))
        .bearer_auth(&token)
        .send()
        .await
        .expect("api");
    assert_eq!(stores.status(), 200);
}

/// A page that cannot be shown is still a page, with the error's status and a clear message
/// (a fragment asked for by htmx gets the message alone, for the page's flash area).
#[tokio::test]
async fn a_missing_order_is_a_404_page_and_a_bad_filter_a_422_page() {
    let w = world().await;
    let (cookie, _) = http_session(&w.app, "owner@example.com").await;
    let client = no_redirects();
    let missing = client
        .get(format!(
            "{}/console/orders/{}",
            w.app.address,
            uuid::Uuid::now_v7()
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    let html = missing.text().await.expect("html");
    assert!(
        html.contains("<nav") && html.contains("role=\"alert\""),
        "{html}"
    );
    let bad = client
        .get(format!(
            "{}/console/orders?status=LOST&from=yesterday",
            w.app.address
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(bad.status(), 422);
    let fragment = client
        .get(format!(
            "{}/console/orders/{}",
            w.app.address,
            uuid::Uuid::now_v7()
        ))
        .header("cookie", &cookie)
        .header("hx-request", "true")
        .send()
        .await
        .expect("get");
    assert_eq!(fragment.status(), 404);
    assert_eq!(fragment.headers()["hx-retarget"], "#flash");
    assert!(!fragment.text().await.expect("html").contains("<nav"));
}

#[tokio::test]
async fn products_are_created_repriced_and_archived_from_the_console() {
    let w = world().await;
    let session = http_session(&w.app, "owner@example.com").await;
    let store = w.shop.store_id.0.to_string();
    let (status, html) = console_post(
        &w.app,
        &session,
        "/console/inventory/products",
        &[
            ("store_id", &store),
            ("name", "Oolong"),
            ("sku", "OOL-1"),
            ("price", "1 250,50"),
            ("initial_stock", "12"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{html}");
    w.app.wait_for_projections().await;
    let products = projections::read_models::catalog::queries::products(
        &w.app.db.pool,
        w.shop.store_id.0,
        &Default::default(),
        None,
        10,
    )
    .await
    .expect("products");
    let oolong = products.iter().find(|p| p.sku == "OOL-1").expect("created");
    assert_eq!((oolong.price_minor, oolong.on_hand), (1250_50, Some(12)));

    let product = format!("/console/inventory/{}", oolong.product_id);
    let page = console_page(&format!("{}{product}", w.app.address), &session.0).await;
    assert!(
        page.contains("value=\"1250.50\""),
        "the price as it is typed back"
    );
    let (status, html) = console_post(
        &w.app,
        &session,
        &format!("{product}/edit"),
        &[("name", "Oolong tea"), ("price", "990"), ("archived", "on")],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("990.00 RUB"), "{html}");
    // A price with more decimals than the currency has is refused, nothing changes.
    let (status, _) = console_post(
        &w.app,
        &session,
        &format!("{product}/edit"),
        &[("name", "Oolong tea"), ("price", "9.999")],
    )
    .await;
    assert_eq!(status, 422);
    w.app.wait_for_projections().await;
    let row =
        projections::read_models::catalog::queries::product(&w.app.db.pool, oolong.product_id)
            .await
            .expect("read")
            .expect("product");
    assert_eq!(
        (row.name.as_str(), row.price_minor, row.status.as_str()),
        ("Oolong tea", 990_00, "ARCHIVED")
    );

    // An auditor sees the catalog but may not change it: nothing offered, and refused.
    w.staff_member("auditor@example.com", StoreRole::Auditor)
        .await;
    let auditor = http_session(&w.app, "auditor@example.com").await;
    let page = console_page(&format!("{}{product}", w.app.address), &auditor.0).await;
    assert!(
        !page.contains("/edit\""),
        "nothing to edit offered to an auditor"
    );
    let (status, _) = console_post(
        &w.app,
        &auditor,
        &format!("{product}/edit"),
        &[("name", "Mine now"), ("price", "1")],
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn store_settings_change_from_the_console_and_a_customer_is_blocked_from_an_order() {
    let w = world().await;
    let (order_id, _) = submitted_receipt(&w.app, &w.shop, w.product, 17).await;
    let owner = http_session(&w.app, "owner@example.com").await;
    let store = format!("/console/stores/{}", w.shop.store_id.0);
    let settings = |zone: &'static str, ttl: &'static str| {
        [
            ("name", "Tea House Central"),
            ("timezone", zone),
            ("payment_instructions", "Bank Y, account 2"),
            ("default_low_stock_threshold", "7"),
            ("reservation_ttl_minutes", ttl),
        ]
    };
    let (status, _) = console_post(&w.app, &owner, &store, &settings("Mars/Olympus", "45")).await;
    assert_eq!(status, 422, "an unknown time zone");
    let (status, html) = console_post(&w.app, &owner, &store, &settings("Asia/Tokyo", "45")).await;
    assert_eq!(status, 303, "{html}");
    w.app.wait_for_projections().await;
    let row = projections::read_models::catalog::queries::store(&w.app.db.pool, w.shop.store_id.0)
        .await
        .expect("read")
        .expect("store");
    assert_eq!(
        (
            row.name.as_str(),
            row.timezone.as_str(),
            row.payment_instructions.as_str()
        ),
        ("Tea House Central", "Asia/Tokyo", "Bank Y, account 2")
    );
    assert_eq!(
        (row.default_low_stock_threshold, row.reservation_ttl_minutes),
        (7, 45)
    );

    // The customer of an order is blocked in the store from the order's page.
    let order = format!("/console/orders/{}", order_id.0);
    let (status, html) = console_post(
        &w.app,
        &owner,
        &format!("{order}/block-customer"),
        &[("reason", "fake receipts")],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("/unblock-customer"), "{html}");
    let customer = order_row(&w.app, order_id).await.customer_id;
    let again = w
        .shop
        .place(
            &w.app.app,
            &shopfront::testing::caller_for(
                aggregates::AccountId(customer),
                aggregates::Channel::Telegram,
            ),
            &[(w.product, 1)],
        )
        .await;
    assert!(again.is_err(), "a blocked customer cannot order: {again:?}");

    // A vendor may not change settings or block customers.
    w.staff_member("vendor@example.com", StoreRole::Vendor)
        .await;
    let vendor = http_session(&w.app, "vendor@example.com").await;
    let (status, _) = console_post(&w.app, &vendor, &store, &settings("Europe/Moscow", "30")).await;
    assert_eq!(status, 403);
    let (status, _) =
        console_post(&w.app, &vendor, &format!("{order}/unblock-customer"), &[]).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn an_order_is_placed_at_the_counter_and_stock_is_never_oversold() {
    let w = world().await;
    let tea2 = w.shop.product(&w.app.app, "TEA-2", 350_00, 3).await;
    let session = http_session(&w.app, "owner@example.com").await;
    let store = w.shop.store_id.0.to_string();
    let (tea, tea2) = (w.product.0.to_string(), tea2.0.to_string());
    let (status, html) = console_post(
        &w.app,
        &session,
        "/console/orders/new",
        &[
            ("store_id", &store),
            ("customer_id", ""),
            ("product", &tea),
            ("quantity", "2"),
            ("product", ""),
            ("quantity", "1"),
            ("product", &tea2),
            ("quantity", "3"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{html}");
    w.app.wait_for_projections().await;
    let placed = orders::orders(
        &w.app.db.pool,
        w.shop.store_id.0,
        &Default::default(),
        None,
        10,
    )
    .await
    .expect("orders");
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].status, "AWAITING_PAYMENT");
    assert_eq!(placed[0].total_minor, 2 * 890_00 + 3 * 350_00);

    // The last three units of TEA-2 are reserved: one more is refused, clearly, and nothing
    // is placed.
    let (status, html) = console_post(
        &w.app,
        &session,
        "/console/orders/new",
        &[("store_id", &store), ("product", &tea2), ("quantity", "1")],
    )
    .await;
    assert!((400..500).contains(&status), "{status}: {html}");
    // A customer id the store does not know, and no lines at all: refused too.
    let stranger = uuid::Uuid::now_v7().to_string();
    let (status, _) = console_post(
        &w.app,
        &session,
        "/console/orders/new",
        &[
            ("store_id", &store),
            ("customer_id", &stranger),
            ("product", &tea),
            ("quantity", "1"),
        ],
    )
    .await;
    assert!((400..500).contains(&status), "{status}");
    let (status, _) = console_post(
        &w.app,
        &session,
        "/console/orders/new",
        &[("store_id", &store)],
    )
    .await;
    assert_eq!(status, 422);
    w.app.wait_for_projections().await;
    let count = orders::orders(
        &w.app.db.pool,
        w.shop.store_id.0,
        &Default::default(),
        None,
        10,
    )
    .await
    .expect("orders")
    .len();
    assert_eq!(count, 1);

    // An auditor is offered no counter and refused one.
    w.staff_member("auditor@example.com", StoreRole::Auditor)
        .await;
    let auditor = http_session(&w.app, "auditor@example.com").await;
    let list = console_page(&format!("{}/console/orders", w.app.address), &auditor.0).await;
    assert!(!list.contains("/console/orders/new"));
    let (status, _) = console_post(
        &w.app,
        &auditor,
        "/console/orders/new",
        &[("store_id", &store), ("product", &tea), ("quantity", "1")],
    )
    .await;
    assert_eq!(status, 403);
}

/// Two people at the desk decide the same receipts at the same moment, one verifying, the
/// other rejecting: for each receipt exactly one decision lands, the other is told it was
/// already decided (a 4xx, never a 500), and the order follows the decision that landed.
#[tokio::test]
async fn two_staff_deciding_the_same_receipts_at_once_leave_one_decision_each() {
    let w = world().await;
    w.staff_member("admin@example.com", StoreRole::Admin).await;
    let mut receipts = Vec::new();
    for seed in 20..28 {
        receipts.push(submitted_receipt(&w.app, &w.shop, w.product, seed).await);
    }
    let owner = http_session(&w.app, "owner@example.com").await;
    let admin = http_session(&w.app, "admin@example.com").await;
    let races = receipts.iter().map(|(_, receipt_id)| {
        let verify = format!("/console/receipts/{}/verify", receipt_id.0);
        let reject = format!("/console/receipts/{}/reject", receipt_id.0);
        let (app, owner, admin) = (&w.app, &owner, &admin);
        async move {
            tokio::join!(
                console_post(app, owner, &verify, &[]),
                console_post(app, admin, &reject, &[("reason", "not our bank")]),
            )
        }
    });
    let outcomes = futures::future::join_all(races).await;
    for (((verified, _), (rejected, _)), (order_id, receipt_id)) in outcomes.iter().zip(&receipts) {
        let statuses = [*verified, *rejected];
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "one decision lands: {statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == 200 || (400..500).contains(s)),
            "the other is refused clearly: {statuses:?}"
        );
        let receipt = receipt_row(&w.app, *receipt_id).await;
        let order = order_row(&w.app, *order_id).await;
        match (
            *verified == 200,
            receipt.status.as_str(),
            order.status.as_str(),
        ) {
            (true, "VERIFIED", "PAID") | (false, "REJECTED", "AWAITING_PAYMENT") => {}
            other => panic!("the order does not follow the decision that landed: {other:?}"),
        }
        let decisions: i64 = sqlx::query_scalar(
            "select count(*) from events where aggregate_id = $1
               and event_type in ('PaymentReceiptVerified', 'PaymentReceiptRejected')",
        )
        .bind(receipt_id.0.to_string())
        .fetch_one(&w.app.db.pool)
        .await
        .expect("count");
        assert_eq!(decisions, 1);
    }
}

//! Orders: the list across the user's stores with filters (store, status, placed between two
//! of the store's local days, customer), each order's detail with its timeline from the read
//! model, and cancel / fulfil / complete where the role allows and the status permits.

use std::sync::Arc;

use aggregates::order::{OrderError, OrderStatus};
use aggregates::{OrderId, ProductId};
use chrono::{DateTime, NaiveDate, Utc};
use maud::{html, Markup};
use poem::web::{Data, Form, Path, Query};
use poem::{handler, Response};
use serde::Deserialize;
use uuid::Uuid;

use projections::read_models::catalog::queries as catalog;
use projections::read_models::orders::queries::{self as orders, OrderFilter};

use super::layout::{self, columns, Screen};
use super::session::{FormFields, Staff};
use super::stores::{self, chosen, stores_allowing, StaffStore};
use super::texts::{at, money, t, Language};
use crate::app::authz::Permission;
use crate::app::{grant, App, AppError, OrderFor, OrderLineInput, Resource, StaffOrder};

/// Orders per page.
const PAGE: usize = 50;

/// The list's filters, as the form sends them (empty fields are "any").
#[derive(Debug, Default, Deserialize)]
pub struct OrdersQuery {
    store_id: Option<String>,
    status: Option<String>,
    /// A local day of the store (`YYYY-MM-DD`), inclusive.
    from: Option<String>,
    to: Option<String>,
    customer_id: Option<String>,
    /// Older than this order (the next page): `placed_at|order_id`.
    before: Option<String>,
}

fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// `GET /console/orders`.
#[handler]
pub async fn list(
    staff: Staff,
    app: Data<&Arc<App>>,
    Query(query): Query<OrdersQuery>,
) -> Response {
    match render_list(&app, &staff, &query).await {
        Ok(body) => layout::page(&staff, Screen::Orders, body),
        Err(err) => layout::failed(&staff, Screen::Orders, err),
    }
}

fn parse_day(field: &'static str, value: Option<&str>) -> Result<Option<NaiveDate>, AppError> {
    value
        .map(|v| {
            NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .map_err(|_| AppError::invalid(field, "a date, YYYY-MM-DD"))
        })
        .transpose()
}

/// The start of local day `day` in `time_zone`, as UTC.
fn day_start(day: NaiveDate, time_zone: &str) -> DateTime<Utc> {
    let tz: chrono_tz::Tz = time_zone.parse().unwrap_or(chrono_tz::UTC);
    day.and_hms_opt(0, 0, 0)
        .and_then(|midnight| midnight.and_local_timezone(tz).earliest())
        .map(|local| local.with_timezone(&Utc))
        .unwrap_or_else(|| day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
}

async fn render_list(app: &App, staff: &Staff, query: &OrdersQuery) -> Result<Markup, AppError> {
    let language = staff.language;
    let stores = stores_allowing::<grant::ViewOrders>(app, staff).await?;
    let wanted = stores::wanted(&query.store_id)?;
    let status = present(&query.status)
        .map(|s| {
            OrderStatus::ALL
                .into_iter()
                .find(|status| status.as_str() == s)
                .map(OrderStatus::as_str)
                .ok_or_else(|| AppError::invalid("status", "not an order status"))
        })
        .transpose()?;
    let from = parse_day("from", present(&query.from))?;
    let to = parse_day("to", present(&query.to))?;
    let customer_id = present(&query.customer_id)
        .map(|id| {
            id.parse::<Uuid>()
                .map_err(|_| AppError::invalid("customer_id", "not an account id"))
        })
        .transpose()?;
    let before = present(&query.before)
        .map(|cursor| {
            cursor
                .split_once('|')
                .and_then(|(at, id)| {
                    Some((at.parse::<DateTime<Utc>>().ok()?, id.parse::<Uuid>().ok()?))
                })
                .ok_or_else(|| AppError::invalid("before", "not a cursor"))
        })
        .transpose()?;
    let mut rows = Vec::new();
    for store in chosen(&stores, wanted) {
        let filter = OrderFilter {
            status,
            customer_id,
            from: from.map(|day| day_start(day, &store.time_zone)),
            to: to
                .and_then(|day| day.succ_opt())
                .map(|day| day_start(day, &store.time_zone)),
            ascending: false,
        };
        for row in orders::orders(
            &app.pool,
            store.store_id.0,
            &filter,
            before,
            PAGE as i64 + 1,
        )
        .await?
        {
            rows.push((store, row));
        }
    }
    rows.sort_by_key(|(_, row)| std::cmp::Reverse((row.placed_at, row.order_id)));
    let more = rows.len() > PAGE;
    rows.truncate(PAGE);
    let next = rows
        .last()
        .filter(|_| more)
        .map(|(_, row)| format!("{}|{}", row.placed_at.to_rfc3339(), row.order_id));
    let store_ids: Vec<String> = stores.iter().map(|s| s.store_id.0.to_string()).collect();
    let next_link = next.map(|cursor| {
        let mut link = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("store_id", &query.store_id),
            ("status", &query.status),
            ("from", &query.from),
            ("to", &query.to),
            ("customer_id", &query.customer_id),
        ] {
            if let Some(value) = present(value) {
                link.append_pair(name, value);
            }
        }
        link.append_pair("before", &cursor);
        format!("/console/orders?{}", link.finish())
    });
    let counter = counter_form(app, staff, &stores).await?;
    Ok(html! {
        (counter)
        form.filters method="get" action="/console/orders" aria-label=(t(language, "filters")) {
            label for="f-store" { (t(language, "store")) }
            select #f-store name="store_id" {
                option value="" { (t(language, "all_stores")) }
                @for store in &stores {
                    option value=(store.store_id.0) selected[wanted == Some(store.store_id.0)] { (store.name) }
                }
            }
            label for="f-status" { (t(language, "order_status")) }
            select #f-status name="status" {
                option value="" { (t(language, "any_status")) }
                @for s in OrderStatus::ALL.iter().filter(|s| **s != OrderStatus::New) {
                    option value=(s.as_str()) selected[status == Some(s.as_str())] {
                        (t(language, &format!("status_{}", s.as_str())))
                    }
                }
            }
            label for="f-from" { (t(language, "placed_from")) }
            input #f-from type="date" name="from" value=[present(&query.from)];
            label for="f-to" { (t(language, "placed_to")) }
            input #f-to type="date" name="to" value=[present(&query.to)];
            label for="f-customer" { (t(language, "customer_id")) }
            input #f-customer type="text" name="customer_id" value=[present(&query.customer_id)] size="36";
            button type="submit" { (t(language, "apply")) }
        }
        section #orders-list data-live-topic="orders" data-live-stores=(store_ids.join(","))
            aria-live="polite" {
            @if rows.is_empty() {
                p.empty { (t(language, "orders_empty")) }
            } @else {
                table.orders {
                    (columns(language, &["order", "store", "order_status", "order_total", "placed_at"]))
                    tbody {
                        @for (store, row) in &rows {
                            tr data-order-id=(row.order_id) {
                                td { a href={"/console/orders/" (row.order_id)} { "#" (OrderId(row.order_id).number()) } }
                                td { (store.name) }
                                td.order-status { (t(language, &format!("status_{}", row.status))) }
                                td { (money(row.total_minor, &row.currency)) }
                                td { (at(row.placed_at, Some(&store.time_zone))) }
                            }
                        }
                    }
                }
            }
            @if let Some(link) = next_link {
                p { a href=(link) rel="next" { (t(language, "older")) } }
            }
        }
    })
}

/// Lines a counter order may have in the form.
const COUNTER_LINES: usize = 5;

/// The form for an order placed by staff at the counter (a walk-in, or a customer of the
/// store by account id), in the stores where the role may; empty elsewhere.
async fn counter_form(app: &App, staff: &Staff, stores: &[StaffStore]) -> Result<Markup, AppError> {
    let language = staff.language;
    let counters: Vec<&StaffStore> = stores
        .iter()
        .filter(|s| s.allows(Permission::PlaceOrdersForCustomers))
        .collect();
    if counters.is_empty() {
        return Ok(html! {});
    }
    let mut products = Vec::new();
    for store in &counters {
        let filter = catalog::ProductFilter {
            status: Some("ACTIVE"),
            ..Default::default()
        };
        for product in catalog::products(&app.pool, store.store_id.0, &filter, None, 200).await? {
            products.push((*store, product));
        }
    }
    Ok(html! {
        details.new-order {
            summary { (t(language, "counter_order")) }
            form method="post" action="/console/orders/new" {
                input type="hidden" name="csrf" value=(staff.csrf);
                fieldset {
                    legend { (t(language, "counter_order")) }
                    label for="co-store" { (t(language, "store")) }
                    select #co-store name="store_id" {
                        @for s in &counters { option value=(s.store_id.0) { (s.name) } }
                    }
                    label for="co-customer" { (t(language, "counter_customer")) }
                    input #co-customer type="text" name="customer_id" size="36";
                    @for line in 1..=COUNTER_LINES {
                        label for={"co-product-" (line)} { (t(language, "product")) " " (line) }
                        select #{"co-product-" (line)} name="product" {
                            option value="" { "—" }
                            @for (store, product) in &products {
                                option value=(product.product_id) {
                                    (product.name) " · " (money(product.price_minor, &product.currency)) " · " (store.name)
                                }
                            }
                        }
                        label for={"co-quantity-" (line)} { (t(language, "quantity")) " " (line) }
                        input #{"co-quantity-" (line)} type="number" name="quantity" min="1" value="1";
                    }
                    button type="submit" { (t(language, "place_order")) }
                }
            }
        }
    })
}

/// `POST /console/orders/new`: an order placed at the counter; then its page.
#[handler]
pub async fn place(staff: Staff, app: Data<&Arc<App>>, form: FormFields) -> Response {
    let result = async {
        let store_id = aggregates::StoreId(form.id("store_id")?);
        let customer = match form.get("customer_id") {
            None => OrderFor::WalkIn,
            Some(id) => {
                OrderFor::KnownCustomer(aggregates::AccountId(id.parse().map_err(|_| {
                    AppError::invalid("customer_id", "an account id, or empty for a walk-in")
                })?))
            }
        };
        // Lines pair each `product` with the `quantity` after it; rows left at "—" are skipped.
        let mut lines = Vec::new();
        for (product, quantity) in form.all("product").zip(form.all("quantity")) {
            if product.is_empty() {
                continue;
            }
            lines.push(OrderLineInput {
                product_id: ProductId(
                    product
                        .parse()
                        .map_err(|_| AppError::invalid("product", "not a product id"))?,
                ),
                quantity: quantity
                    .trim()
                    .parse()
                    .map_err(|_| AppError::invalid("quantity", "a whole number"))?,
            });
        }
        if lines.is_empty() {
            return Err(AppError::invalid("product", "choose at least one product"));
        }
        let access = app
            .authorize::<grant::PlaceOrdersForCustomers>(&staff.caller, store_id)
            .await?;
        let placed = app
            .place_order_for(
                &access,
                customer,
                StaffOrder {
                    lines,
                    contact: None,
                },
            )
            .await?;
        app.reached(&["orders"], placed.position).await?;
        Ok(placed.outcome)
    }
    .await;
    match result {
        Ok(order_id) => poem::Response::builder()
            .status(poem::http::StatusCode::SEE_OTHER)
            .header(
                poem::http::header::LOCATION,
                format!("/console/orders/{}", order_id.0),
            )
            .finish(),
        Err(err) => layout::error_response(staff.language, err),
    }
}

/// `GET /console/orders/{id}`.
#[handler]
pub async fn detail(staff: Staff, app: Data<&Arc<App>>, Path(order_id): Path<Uuid>) -> Response {
    match render_detail(&app, &staff, order_id).await {
        Ok(body) => layout::page(&staff, Screen::Orders, body),
        Err(err) => layout::failed(&staff, Screen::Orders, err),
    }
}

async fn render_detail(app: &App, staff: &Staff, order_id: Uuid) -> Result<Markup, AppError> {
    let language = staff.language;
    let order = app
        .read_projected(&["orders"], "Order", &order_id.to_string(), || {
            orders::order(&app.pool, order_id)
        })
        .await?
        .ok_or(AppError::Order(OrderError::NotFound))?;
    let access = app
        .authorize_visible::<grant::ViewOrders>(&staff.caller, aggregates::StoreId(order.store_id))
        .await?
        .ok_or(AppError::Order(OrderError::NotFound))?;
    let store = StaffStore {
        store_id: access.store_id(),
        name: access.store().name().to_owned(),
        time_zone: access.store().timezone().to_owned(),
        role: access.role(),
    };
    let timeline = orders::timeline(&app.pool, order_id).await?;
    let mut names = Vec::new();
    for line in &order.lines {
        names.push(
            catalog::product(&app.pool, line.product_id)
                .await?
                .map(|p| p.name)
                .unwrap_or_else(|| line.product_id.to_string()),
        );
    }
    let status = order.status.as_str();
    let can_cancel = store.allows(Permission::CancelOrders)
        && matches!(status, "AWAITING_PAYMENT" | "RECEIPT_SUBMITTED" | "PAID");
    let can_fulfil = store.allows(Permission::FulfilOrders) && status == "PAID";
    let can_complete = store.allows(Permission::FulfilOrders) && status == "FULFILLED";
    let manages_customers = store.allows(Permission::ManageCustomers);
    let customer_blocked = access
        .store()
        .is_customer_blocked(aggregates::AccountId(order.customer_id));
    let tz = Some(store.time_zone.as_str());
    Ok(html! {
        section #order aria-labelledby="order-title" data-live-topic="orders"
            data-live-stores=(store.store_id.0) hx-get={"/console/orders/" (order_id)}
            hx-trigger="sf-orders from:body delay:300ms" hx-select="#order" hx-swap="outerHTML" {
            h2 #order-title { (t(language, "order")) " #" (OrderId(order_id).number()) " · " (store.name) }
            dl.facts {
                dt { (t(language, "order_status")) }
                dd.order-status { (t(language, &format!("status_{}", order.status))) }
                dt { (t(language, "order_total")) }
                dd { (money(order.total_minor, &order.currency)) }
                dt { (t(language, "placed_at")) }
                dd { (at(order.placed_at, tz)) }
                dt { (t(language, "payment_due")) }
                dd { (at(order.payment_due_by, tz)) }
                dt { (t(language, "customer_id")) }
                dd { a href={"/console/orders?customer_id=" (order.customer_id)} { (order.customer_id) } }
                @if let Some(reason) = &order.status_reason {
                    dt { (t(language, "reason")) }
                    dd { (reason) }
                }
            }
            table.lines {
                caption { (t(language, "order_lines")) }
                (columns(language, &["product", "quantity", "unit_price", "line_total"]))
                tbody {
                    @for (line, name) in order.lines.iter().zip(&names) {
                        tr {
                            td { (name) }
                            td { (line.quantity) }
                            td { (money(line.unit_price_minor, &order.currency)) }
                            td { (money(line.line_total_minor, &order.currency)) }
                        }
                    }
                }
            }
            @if can_cancel || can_fulfil || can_complete {
                div.actions {
                    @if can_fulfil {
                        form hx-post={"/console/orders/" (order_id) "/fulfil"} hx-target="#order" hx-swap="outerHTML" {
                            button type="submit" { (t(language, "fulfil")) }
                        }
                    }
                    @if can_complete {
                        form hx-post={"/console/orders/" (order_id) "/complete"} hx-target="#order" hx-swap="outerHTML" {
                            button type="submit" { (t(language, "complete")) }
                        }
                    }
                    @if can_cancel {
                        form.cancel hx-post={"/console/orders/" (order_id) "/cancel"} hx-target="#order" hx-swap="outerHTML" {
                            label for="cancel-reason" { (t(language, "reason")) }
                            input #cancel-reason type="text" name="reason" maxlength="2000";
                            button type="submit" { (t(language, "cancel_order")) }
                        }
                    }
                }
            }
            @if manages_customers {
                form.customer hx-post={"/console/orders/" (order_id) (if customer_blocked { "/unblock-customer" } else { "/block-customer" })}
                    hx-target="#order" hx-swap="outerHTML" {
                    @if customer_blocked {
                        p.warning { (t(language, "customer_blocked")) }
                        button type="submit" { (t(language, "unblock_customer")) }
                    } @else {
                        label for="block-reason" { (t(language, "block_reason")) }
                        input #block-reason type="text" name="reason" maxlength="500";
                        button type="submit" { (t(language, "block_customer")) }
                    }
                }
            }
            (timeline_table(language, &timeline, tz))
        }
    })
}

fn timeline_table(
    language: Language,
    timeline: &[orders::TimelineEntry],
    tz: Option<&str>,
) -> Markup {
    html! {
        table.timeline {
            caption { (t(language, "timeline")) }
            (columns(language, &["when", "event", "order_status", "by"]))
            tbody {
                @for entry in timeline {
                    tr data-position=(entry.global_position) {
                        td { (at(entry.recorded_at, tz)) }
                        td { code { (entry.event_type) } }
                        td { (t(language, &format!("status_{}", entry.status_after))) }
                        td { (entry.actor_role.to_lowercase()) " · " (entry.channel) }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct ActForm {
    reason: Option<String>,
}

/// `POST /console/orders/{id}/{cancel|fulfil|complete}`: the action, then the order as it
/// now stands.
#[handler]
pub async fn act(
    staff: Staff,
    app: Data<&Arc<App>>,
    Path((order_id, action)): Path<(Uuid, String)>,
    Form(form): Form<ActForm>,
) -> Response {
    let language = staff.language;
    let result = async {
        let id = OrderId(order_id);
        let not_found = || AppError::Order(OrderError::NotFound);
        let written = match action.as_str() {
            "cancel" => {
                let access = app
                    .authorize_resource::<grant::CancelOrders>(&staff.caller, Resource::Order(id))
                    .await?
                    .ok_or_else(not_found)?;
                let reason = form.reason.clone().filter(|r| !r.trim().is_empty());
                app.cancel_order(&access, id, reason).await?
            }
            "fulfil" => {
                let access = app
                    .authorize_resource::<grant::FulfilOrders>(&staff.caller, Resource::Order(id))
                    .await?
                    .ok_or_else(not_found)?;
                app.fulfil_order(&access, id).await?
            }
            "complete" => {
                let access = app
                    .authorize_resource::<grant::FulfilOrders>(&staff.caller, Resource::Order(id))
                    .await?
                    .ok_or_else(not_found)?;
                app.complete_order(&access, id).await?
            }
            "block-customer" | "unblock-customer" => {
                let access = app
                    .authorize_resource::<grant::ManageCustomers>(
                        &staff.caller,
                        Resource::Order(id),
                    )
                    .await?
                    .ok_or_else(not_found)?;
                let customer = orders::order(&app.pool, order_id)
                    .await?
                    .filter(|order| order.store_id == access.store_id().0)
                    .ok_or_else(not_found)?
                    .customer_id;
                let reason = form.reason.clone().filter(|r| !r.trim().is_empty());
                app.set_customer_blocked(
                    &access,
                    aggregates::AccountId(customer),
                    action == "block-customer",
                    reason,
                )
                .await?
            }
            _ => return Err(AppError::invalid("action", "cancel, fulfil or complete")),
        };
        app.reached(&["orders", "catalog"], written.position)
            .await?;
        render_detail(&app, &staff, order_id).await
    }
    .await;
    match result {
        Ok(markup) => layout::fragment(markup),
        Err(err) => layout::error_response(language, err),
    }
}

//! Inventory: stock levels with their thresholds across the user's stores, the open low-stock
//! alerts (reloaded live from the stores' `inventory` feed), and per product its history and
//! the forms to receive stock, adjust it and set its threshold.

use std::sync::Arc;

use aggregates::product::ProductError;
use aggregates::stock::AdjustmentReason;
use aggregates::{ProductId, StoreId};
use maud::{html, Markup};
use poem::web::{Data, Form, Path, Query};
use poem::{handler, Response};
use serde::Deserialize;
use uuid::Uuid;

use projections::read_models::catalog::queries::{self as catalog, ProductFilter};
use projections::read_models::stock::queries::{self as stock, AlertState};

use super::layout::{self, columns, Screen};
use super::session::Staff;
use super::stores::{self, chosen, stores_allowing, StaffStore};
use super::texts::{amount_text, at, parse_amount, t, tf, Language};
use crate::app::authz::Permission;
use crate::app::{grant, App, AppError, NewProduct, ProductChange, Resource};

/// Products listed per store.
const PRODUCTS_PER_STORE: i64 = 200;
/// Alerts listed per store.
const ALERTS_PER_STORE: i64 = 50;
/// Movements shown of a product's history.
const HISTORY: i64 = 100;

#[derive(Debug, Default, Deserialize)]
pub struct InventoryQuery {
    store_id: Option<String>,
    /// `low`, `out` or empty.
    level: Option<String>,
    text: Option<String>,
}

/// `GET /console/inventory`.
#[handler]
pub async fn page(
    staff: Staff,
    app: Data<&Arc<App>>,
    Query(query): Query<InventoryQuery>,
) -> Response {
    let language = staff.language;
    let result = async {
        let stores = stores_allowing::<grant::ViewStock>(&app, &staff).await?;
        let wanted = stores::wanted(&query.store_id)?;
        let level = match query.level.as_deref().unwrap_or_default() {
            "" => None,
            "low" | "out" | "normal" => query.level.clone(),
            _ => return Err(AppError::invalid("level", "low, out or normal")),
        };
        let text = query.text.clone().filter(|v| !v.trim().is_empty());
        let mut rows = Vec::new();
        for store in chosen(&stores, wanted) {
            let filter = ProductFilter {
                status: Some("ACTIVE"),
                text: text.clone(),
                level: level.clone(),
            };
            for product in
                catalog::products(&app.pool, store.store_id.0, &filter, None, PRODUCTS_PER_STORE)
                    .await?
            {
                rows.push((store, product));
            }
        }
        let panel = render_alerts(&app, &staff, &stores).await?;
        let catalog_stores: Vec<&StaffStore> = stores
            .iter()
            .filter(|s| s.allows(Permission::ManageProducts))
            .collect();
        Ok::<_, AppError>(html! {
            (panel)
            @if !catalog_stores.is_empty() {
                details.new-product {
                    summary { (t(language, "new_product")) }
                    form method="post" action="/console/inventory/products" {
                        input type="hidden" name="csrf" value=(staff.csrf);
                        fieldset {
                            legend { (t(language, "new_product")) }
                            label for="np-store" { (t(language, "store")) }
                            select #np-store name="store_id" {
                                @for s in &catalog_stores { option value=(s.store_id.0) { (s.name) } }
                            }
                            label for="np-name" { (t(language, "name")) }
                            input #np-name type="text" name="name" required maxlength="200";
                            label for="np-sku" { (t(language, "sku")) }
                            input #np-sku type="text" name="sku" required maxlength="64";
                            label for="np-price" { (t(language, "price")) }
                            input #np-price type="text" name="price" required inputmode="decimal";
                            label for="np-stock" { (t(language, "initial_stock")) }
                            input #np-stock type="number" name="initial_stock" min="0";
                            label for="np-description" { (t(language, "description")) }
                            input #np-description type="text" name="description" maxlength="2000";
                            button type="submit" { (t(language, "create")) }
                        }
                    }
                }
            }
            form.filters method="get" action="/console/inventory" aria-label=(t(language, "filters")) {
                label for="i-store" { (t(language, "store")) }
                select #i-store name="store_id" {
                    option value="" { (t(language, "all_stores")) }
                    @for store in &stores {
                        option value=(store.store_id.0) selected[wanted == Some(store.store_id.0)] { (store.name) }
                    }
                }
                label for="i-level" { (t(language, "stock_level")) }
                select #i-level name="level" {
                    option value="" { (t(language, "any_level")) }
                    @for l in ["low", "out", "normal"] {
                        option value=(l) selected[level.as_deref() == Some(l)] { (t(language, &format!("level_{l}"))) }
                    }
                }
                label for="i-text" { (t(language, "search")) }
                input #i-text type="search" name="text" value=[text.as_deref()];
                button type="submit" { (t(language, "apply")) }
            }
            table.stock {
                caption { (t(language, "stock_levels")) }
                (columns(language, &["product", "sku", "store", "on_hand", "reserved", "available", "threshold", "stock_level"]))
                tbody {
                    @for (store, product) in &rows {
                        tr data-product-id=(product.product_id) {
                            td { a href={"/console/inventory/" (product.product_id)} { (product.name) } }
                            td { (product.sku) }
                            td { (store.name) }
                            td { (product.on_hand.unwrap_or(0)) }
                            td { (product.reserved.unwrap_or(0)) }
                            td { (product.available.unwrap_or(0)) }
                            td { (product.effective_threshold.map(|t| t.to_string()).unwrap_or_default()) }
                            td class={"level " (product.level.as_deref().unwrap_or("normal"))} {
                                (t(language, &format!("level_{}", product.level.as_deref().unwrap_or("normal"))))
                            }
                        }
                    }
                }
            }
        })
    }
    .await;
    match result {
        Ok(body) => layout::page(&staff, Screen::Inventory, body),
        Err(err) => layout::failed(&staff, Screen::Inventory, err),
    }
}

/// `GET /console/inventory/alerts`: the alerts panel alone (what the live feed reloads).
#[handler]
pub async fn alerts(staff: Staff, app: Data<&Arc<App>>) -> Response {
    let result = async {
        let stores = stores_allowing::<grant::ViewStock>(&app, &staff).await?;
        render_alerts(&app, &staff, &stores).await
    }
    .await;
    match result {
        Ok(panel) => layout::fragment(panel),
        Err(err) => layout::error_response(staff.language, err),
    }
}

async fn render_alerts(
    app: &App,
    staff: &Staff,
    stores: &[StaffStore],
) -> Result<Markup, AppError> {
    let language = staff.language;
    let mut open = Vec::new();
    for store in stores {
        for alert in stock::alerts(
            &app.pool,
            store.store_id.0,
            AlertState::Open,
            None,
            ALERTS_PER_STORE,
        )
        .await?
        {
            open.push((store, alert));
        }
    }
    open.sort_by_key(|(_, alert)| std::cmp::Reverse(alert.opened_at));
    let store_ids: Vec<String> = stores.iter().map(|s| s.store_id.0.to_string()).collect();
    Ok(html! {
        section #alerts.alerts hx-get="/console/inventory/alerts"
            hx-trigger="sf-inventory from:body delay:300ms" hx-swap="outerHTML"
            data-live-topic="inventory" data-live-stores=(store_ids.join(","))
            aria-labelledby="alerts-title" {
            h2 #alerts-title { (t(language, "alerts")) " (" (open.len()) ")" }
            @if open.is_empty() {
                p.empty { (t(language, "alerts_empty")) }
            }
            ul {
                @for (store, alert) in &open {
                    li class={"alert " (alert.level)} data-product-id=(alert.product_id) {
                        a href={"/console/inventory/" (alert.product_id)} {
                            (alert.product_name.clone().unwrap_or_else(|| alert.product_id.to_string()))
                        }
                        " · " (store.name) " · "
                        (tf(language, &format!("alert_{}", alert.level), &[
                            ("available", &alert.available_now.unwrap_or(alert.available).to_string()),
                            ("threshold", &alert.threshold.to_string()),
                        ]))
                        " · " (at(alert.opened_at, Some(&store.time_zone)))
                        @if alert.acknowledged_at.is_some() {
                            " · " (t(language, "acknowledged"))
                        } @else if store.allows(Permission::AcknowledgeAlerts) {
                            form.inline hx-post={"/console/inventory/alerts/" (alert.product_id) "/acknowledge"}
                                hx-target="#alerts" hx-swap="outerHTML" {
                                button type="submit" { (t(language, "acknowledge")) }
                            }
                        }
                    }
                }
            }
        }
    })
}

/// `POST /console/inventory/alerts/{product_id}/acknowledge`.
#[handler]
pub async fn acknowledge(
    staff: Staff,
    app: Data<&Arc<App>>,
    Path(product_id): Path<Uuid>,
) -> Response {
    let result = async {
        let access = app
            .authorize_resource::<grant::AcknowledgeAlerts>(
                &staff.caller,
                Resource::Product(ProductId(product_id)),
            )
            .await?
            .ok_or(AppError::Product(ProductError::NotFound))?;
        let written = app
            .acknowledge_stock_alert(&access, ProductId(product_id))
            .await?;
        app.reached(&["stock"], written.position).await?;
        let stores = stores_allowing::<grant::ViewStock>(&app, &staff).await?;
        render_alerts(&app, &staff, &stores).await
    }
    .await;
    match result {
        Ok(panel) => layout::fragment(panel),
        Err(err) => layout::error_response(staff.language, err),
    }
}

/// `GET /console/inventory/{product_id}`: the product's stock, history and forms.
#[handler]
pub async fn history(staff: Staff, app: Data<&Arc<App>>, Path(product_id): Path<Uuid>) -> Response {
    match render_product(&app, &staff, product_id).await {
        Ok(body) => layout::page(&staff, Screen::Inventory, body),
        Err(err) => layout::failed(&staff, Screen::Inventory, err),
    }
}

async fn render_product(app: &App, staff: &Staff, product_id: Uuid) -> Result<Markup, AppError> {
    let language = staff.language;
    let product = catalog::product(&app.pool, product_id)
        .await?
        .ok_or(AppError::Product(ProductError::NotFound))?;
    let access = app
        .authorize_visible::<grant::ViewStock>(&staff.caller, StoreId(product.store_id))
        .await?
        .ok_or(AppError::Product(ProductError::NotFound))?;
    let tz = access.store().timezone().to_owned();
    let level = stock::level(&app.pool, product_id).await?;
    let movements = stock::history(&app.pool, product.store_id, product_id, None, HISTORY).await?;
    let manages = crate::app::authz::allows(access.role(), Permission::ManageStock);
    let edits = crate::app::authz::allows(access.role(), Permission::ManageProducts);
    // As a person would type it back: `890.00`.
    let price = access.store().currency().map_or_else(
        || product.price_minor.to_string(),
        |currency| amount_text(product.price_minor, currency),
    );
    Ok(html! {
        section #product aria-labelledby="product-title" data-live-topic="inventory"
            data-live-stores=(product.store_id) hx-get={"/console/inventory/" (product_id)}
            hx-trigger="sf-inventory from:body delay:300ms" hx-select="#product" hx-swap="outerHTML" {
            h2 #product-title { (product.name) " · " (access.store().name()) }
            dl.facts {
                dt { (t(language, "price")) } dd.price { (super::texts::money(product.price_minor, &product.currency)) }
                dt { (t(language, "on_hand")) } dd.on-hand { (level.as_ref().map_or(0, |l| l.on_hand)) }
                dt { (t(language, "reserved")) } dd { (level.as_ref().map_or(0, |l| l.reserved)) }
                dt { (t(language, "available")) } dd.available { (level.as_ref().map_or(0, |l| l.available)) }
                dt { (t(language, "threshold")) } dd { (level.as_ref().map_or(0, |l| l.effective_threshold)) }
            }
            @if edits {
                details.edit-product {
                    summary { (t(language, "edit_product")) }
                    form hx-post={"/console/inventory/" (product_id) "/edit"} hx-target="#product" hx-swap="outerHTML" {
                        fieldset {
                            legend { (t(language, "edit_product")) }
                            label for="ep-name" { (t(language, "name")) }
                            input #ep-name type="text" name="name" value=(product.name) required maxlength="200";
                            label for="ep-price" { (t(language, "price")) }
                            input #ep-price type="text" name="price" value=(price) required inputmode="decimal";
                            label for="ep-description" { (t(language, "description")) }
                            input #ep-description type="text" name="description" value=(product.description) maxlength="2000";
                            label.check {
                                input type="checkbox" name="archived" value="on" checked[product.status == "ARCHIVED"];
                                " " (t(language, "archived"))
                            }
                            button type="submit" { (t(language, "save")) }
                        }
                    }
                }
            }
            @if manages {
                div.stock-forms {
                    form hx-post={"/console/inventory/" (product_id) "/receive"} hx-target="#product" hx-swap="outerHTML" {
                        fieldset {
                            legend { (t(language, "receive_stock")) }
                            label for="receive-quantity" { (t(language, "quantity")) }
                            input #receive-quantity type="number" name="quantity" min="1" required;
                            label for="receive-note" { (t(language, "note")) }
                            input #receive-note type="text" name="note" maxlength="500";
                            button type="submit" { (t(language, "receive")) }
                        }
                    }
                    form hx-post={"/console/inventory/" (product_id) "/adjust"} hx-target="#product" hx-swap="outerHTML" {
                        fieldset {
                            legend { (t(language, "adjust_stock")) }
                            label for="adjust-delta" { (t(language, "delta")) }
                            input #adjust-delta type="number" name="quantity" required;
                            label for="adjust-reason" { (t(language, "reason")) }
                            select #adjust-reason name="reason" {
                                option value="count" { (t(language, "reason_count")) }
                                option value="damage" { (t(language, "reason_damage")) }
                                option value="return" { (t(language, "reason_return")) }
                            }
                            label for="adjust-note" { (t(language, "note")) }
                            input #adjust-note type="text" name="note" maxlength="500";
                            button type="submit" { (t(language, "adjust")) }
                        }
                    }
                    form hx-post={"/console/inventory/" (product_id) "/threshold"} hx-target="#product" hx-swap="outerHTML" {
                        fieldset {
                            legend { (t(language, "set_threshold")) }
                            label for="threshold" { (t(language, "threshold_hint")) }
                            input #threshold type="number" name="quantity" min="0";
                            button type="submit" { (t(language, "save")) }
                        }
                    }
                }
            }
            (history_table(language, &movements, &tz))
        }
    })
}

fn history_table(language: Language, movements: &[stock::Movement], tz: &str) -> Markup {
    html! {
        table.history {
            caption { (t(language, "stock_history")) }
            (columns(language, &["when", "movement", "on_hand", "reserved", "available", "note"]))
            tbody {
                @for m in movements {
                    tr {
                        td { (at(m.recorded_at, Some(tz))) }
                        td { (t(language, &format!("movement_{}", m.movement))) }
                        td { (signed(m.on_hand_delta)) " → " (m.on_hand_after) }
                        td { (signed(m.reserved_delta)) " → " (m.reserved_after) }
                        td { (m.available_after) }
                        td { (m.reason.clone().unwrap_or_default()) " " (m.note.clone().unwrap_or_default()) }
                    }
                }
            }
        }
    }
}

fn signed(delta: i64) -> String {
    if delta > 0 {
        format!("+{delta}")
    } else {
        delta.to_string()
    }
}

#[derive(Deserialize)]
pub struct StockForm {
    quantity: Option<String>,
    reason: Option<String>,
    note: Option<String>,
    // The product's own fields (`edit`).
    name: Option<String>,
    description: Option<String>,
    price: Option<String>,
    archived: Option<String>,
}

/// A price typed into a form, in `currency`'s minor units.
fn price_in(
    text: Option<&str>,
    currency: Option<aggregates::Currency>,
) -> Result<aggregates::Money, AppError> {
    let currency =
        currency.ok_or_else(|| AppError::invalid("price", "the store has no currency"))?;
    let amount = text
        .and_then(|text| parse_amount(text, currency))
        .ok_or_else(|| AppError::invalid("price", "an amount such as 890.00"))?;
    Ok(aggregates::Money::new(amount, currency))
}

#[derive(Deserialize)]
pub struct NewProductForm {
    store_id: Uuid,
    name: String,
    sku: String,
    price: String,
    initial_stock: Option<String>,
    description: Option<String>,
}

/// `POST /console/inventory/products`: a new product, then its page.
#[handler]
pub async fn create_product(
    staff: Staff,
    app: Data<&Arc<App>>,
    Form(form): Form<NewProductForm>,
) -> Response {
    let result = async {
        let access = app
            .authorize::<grant::ManageProducts>(&staff.caller, StoreId(form.store_id))
            .await?;
        let price = price_in(Some(&form.price), access.store().currency())?;
        let initial_stock = form
            .initial_stock
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| AppError::invalid("initial_stock", "a whole number"))
            })
            .transpose()?
            .filter(|units| *units > 0);
        let sku = aggregates::product::Sku::parse(form.sku.trim()).map_err(AppError::from)?;
        let created = app
            .create_product(
                &access,
                NewProduct {
                    name: form.name.trim().to_owned(),
                    description: form.description.clone().unwrap_or_default(),
                    sku,
                    price,
                    initial_stock,
                    low_stock_threshold: None,
                },
            )
            .await?;
        app.reached(&["catalog", "stock"], created.position).await?;
        Ok(created.outcome)
    }
    .await;
    match result {
        Ok(product_id) => poem::Response::builder()
            .status(poem::http::StatusCode::SEE_OTHER)
            .header(
                poem::http::header::LOCATION,
                format!("/console/inventory/{}", product_id.0),
            )
            .finish(),
        Err(err) => layout::error_response(staff.language, err),
    }
}

/// Changes a product's name, price, description or archived state (`edit`).
async fn edit_product(
    app: &App,
    staff: &Staff,
    id: ProductId,
    form: &StockForm,
) -> Result<(), AppError> {
    let access = app
        .authorize_resource::<grant::ManageProducts>(&staff.caller, Resource::Product(id))
        .await?
        .ok_or(AppError::Product(ProductError::NotFound))?;
    let price = price_in(form.price.as_deref(), access.store().currency())?;
    let written = app
        .update_product(
            &access,
            id,
            ProductChange {
                name: form.name.clone().map(|n| n.trim().to_owned()),
                description: form.description.clone(),
                sku: None,
                price: Some(price),
                archived: Some(form.archived.is_some()),
            },
        )
        .await?;
    app.reached(&["catalog"], written.position).await?;
    Ok(())
}

/// `POST /console/inventory/{product_id}/{receive|adjust|threshold}`.
#[handler]
pub async fn change(
    staff: Staff,
    app: Data<&Arc<App>>,
    Path((product_id, action)): Path<(Uuid, String)>,
    Form(form): Form<StockForm>,
) -> Response {
    let result = async {
        let id = ProductId(product_id);
        if action == "edit" {
            edit_product(&app, &staff, id, &form).await?;
            return render_product(&app, &staff, product_id).await;
        }
        let access = app
            .authorize_resource::<grant::ManageStock>(&staff.caller, Resource::Product(id))
            .await?
            .ok_or(AppError::Product(ProductError::NotFound))?;
        let quantity = form
            .quantity
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(|q| {
                q.parse::<i64>()
                    .map_err(|_| AppError::invalid("quantity", "a whole number"))
            })
            .transpose()?;
        let note = form.note.clone().filter(|n| !n.trim().is_empty());
        let written = match action.as_str() {
            "receive" => {
                let quantity = quantity.ok_or_else(|| AppError::invalid("quantity", "required"))?;
                app.receive_stock(&access, id, quantity, note).await?
            }
            "adjust" => {
                let delta = quantity.ok_or_else(|| AppError::invalid("quantity", "required"))?;
                let reason = match form.reason.as_deref() {
                    Some("count") => AdjustmentReason::Count,
                    Some("damage") => AdjustmentReason::Damage,
                    Some("return") => AdjustmentReason::Return,
                    _ => return Err(AppError::invalid("reason", "count, damage or return")),
                };
                app.adjust_stock(&access, id, delta, reason, note).await?
            }
            "threshold" => {
                let threshold = quantity
                    .map(|q| {
                        u32::try_from(q).map_err(|_| AppError::invalid("quantity", "0 or more"))
                    })
                    .transpose()?;
                app.set_stock_threshold(&access, id, threshold).await?
            }
            _ => return Err(AppError::invalid("action", "receive, adjust or threshold")),
        };
        app.reached(&["stock"], written.position).await?;
        render_product(&app, &staff, product_id).await
    }
    .await;
    match result {
        Ok(markup) => layout::fragment(markup),
        Err(err) => layout::error_response(staff.language, err),
    }
}

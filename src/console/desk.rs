//! The payment desk: the receipts waiting for a decision in every store the user can see them
//! in, oldest first, with the file, the order, and (for roles that may see customers) the
//! customer's contact; verify or reject one by one or in bulk. The queue reloads when the
//! stores' `orders` feed moves (a receipt submitted, decided or voided anywhere).

use std::collections::HashMap;
use std::sync::Arc;

use aggregates::receipt::ReceiptError;
use aggregates::{OrderId, ReceiptId};
use maud::{html, Markup};
use poem::http::header;
use poem::web::{Data, Form, Path};
use poem::{handler, Response};
use serde::Deserialize;
use uuid::Uuid;

use projections::read_models::catalog::queries as catalog;
use projections::read_models::orders::queries as orders;
use projections::read_models::receipts::queries::{self as receipts, ReceiptFilter};

use super::layout::{self, columns, Screen};
use super::session::{FormFields, Staff};
use super::stores::{stores_allowing, StaffStore};
use super::texts::{at, money, t, tf, Language};
use crate::app::authz::Permission;
use crate::app::{grant, App, AppError, Contact, Resource};

/// Receipts shown per store (the oldest; the queue is worked from the top).
const QUEUE_PER_STORE: i64 = 50;
/// The read models a decision's answer is read from.
const DECIDED_READ_MODELS: &[&str] = &["receipts", "orders"];

/// `GET /console/desk`.
#[handler]
pub async fn page(staff: Staff, app: Data<&Arc<App>>) -> Response {
    let language = staff.language;
    let waiting = match render_queue(&app, &staff).await {
        Ok(waiting) => waiting,
        Err(err) => return layout::failed(&staff, Screen::Desk, err),
    };
    let body = html! {
        p.lead { (t(language, "desk_lead")) }
        form #bulk.bulk hx-post="/console/desk/bulk" hx-target="#bulk-results"
            aria-label=(t(language, "desk_bulk")) {
            fieldset {
                legend { (t(language, "desk_bulk")) }
                label for="bulk-action" { (t(language, "desk_bulk_action")) }
                select #bulk-action name="action" {
                    option value="verify" { (t(language, "verify")) }
                    option value="reject" { (t(language, "reject")) }
                }
                label for="bulk-reason" { (t(language, "reject_reason")) }
                input #bulk-reason type="text" name="reason" maxlength="2000";
                button type="submit" { (t(language, "desk_bulk_apply")) }
            }
        }
        div #bulk-results aria-live="polite" {}
        (waiting)
    };
    layout::page(&staff, Screen::Desk, body)
}

/// `GET /console/desk/queue`: the queue alone (what the live feed reloads).
#[handler]
pub async fn queue(staff: Staff, app: Data<&Arc<App>>) -> Response {
    match render_queue(&app, &staff).await {
        Ok(waiting) => layout::fragment(waiting),
        Err(err) => layout::error_response(staff.language, err),
    }
}

async fn render_queue(app: &App, staff: &Staff) -> Result<Markup, AppError> {
    let language = staff.language;
    let stores = stores_allowing::<grant::ViewReceipts>(app, staff).await?;
    let filter = ReceiptFilter {
        status: "SUBMITTED",
        possible_duplicate: None,
    };
    let mut waiting = Vec::new();
    for (index, store) in stores.iter().enumerate() {
        let rows =
            receipts::receipts(&app.pool, store.store_id.0, &filter, None, QUEUE_PER_STORE).await?;
        waiting.extend(rows.into_iter().map(|row| (index, row)));
    }
    waiting.sort_by_key(|(_, row)| (row.submitted_at, row.receipt_id));
    // Three queries for the whole queue, whatever its length: the orders, their products'
    // names, the customers' contacts.
    let order_ids: Vec<Uuid> = waiting.iter().map(|(_, row)| row.order_id).collect();
    let mut orders_by_id: HashMap<Uuid, orders::Order> =
        orders::orders_by_id(&app.pool, &order_ids)
            .await?
            .into_iter()
            .map(|order| (order.order_id, order))
            .collect();
    let mut product_ids: Vec<Uuid> = orders_by_id
        .values()
        .flat_map(|order| order.lines.iter().map(|line| line.product_id))
        .collect();
    product_ids.sort();
    product_ids.dedup();
    let names: HashMap<Uuid, String> = catalog::products_by_id(&app.pool, &product_ids)
        .await?
        .into_iter()
        .map(|product| (product.product_id, product.name))
        .collect();
    let mut cards = Vec::new();
    let mut customers = Vec::new();
    for (index, row) in waiting {
        let order = orders_by_id.remove(&row.order_id);
        if let Some(order) = &order {
            if stores[index].allows(Permission::ViewCustomers) {
                customers.push(order.customer_id);
            }
        }
        cards.push((index, row, order));
    }
    // Contacts are opened only for stores whose role may see customers (checked above).
    let contacts = app.contacts(&customers).await?;
    let store_ids: Vec<String> = stores.iter().map(|s| s.store_id.0.to_string()).collect();
    Ok(html! {
        section #queue hx-get="/console/desk/queue" hx-trigger="sf-orders from:body delay:300ms"
            hx-swap="outerHTML" data-live-topic="orders" data-live-stores=(store_ids.join(","))
            aria-labelledby="queue-title" {
            h2 #queue-title {
                (t(language, "desk_queue")) " "
                span.count data-count=(cards.len()) { "(" (cards.len()) ")" }
            }
            @if stores.is_empty() {
                p.empty { (t(language, "desk_no_stores")) }
            } @else if cards.is_empty() {
                p.empty { (t(language, "desk_empty")) }
            }
            @for (index, row, order) in &cards {
                (receipt_card(language, &stores[*index], row, order.as_ref(), &names, &contacts))
            }
        }
    })
}

fn receipt_card(
    language: Language,
    store: &StaffStore,
    row: &receipts::Receipt,
    order: Option<&orders::Order>,
    names: &HashMap<Uuid, String>,
    contacts: &HashMap<Uuid, Contact>,
) -> Markup {
    let id = row.receipt_id;
    let number = OrderId(row.order_id).number();
    let title = tf(
        language,
        "desk_receipt_title",
        &[("number", &number), ("store", &store.name)],
    );
    let file_url = format!("/console/receipts/{id}/file");
    html! {
        article.receipt #{"receipt-" (id)} aria-labelledby={"receipt-" (id) "-title"}
            data-receipt-id=(id) {
            h3 #{"receipt-" (id) "-title"} { (title) }
            @if store.allows(Permission::ReviewReceipts) {
                label.select {
                    input type="checkbox" name="receipt_ids" value=(id) form="bulk";
                    " " (t(language, "desk_select"))
                }
            }
            @if row.possible_duplicate() {
                p.warning role="note" { (t(language, "desk_duplicate")) }
            }
            div.preview {
                @if row.media_type == "application/pdf" {
                    iframe src=(file_url) title=(tf(language, "desk_preview_of", &[("number", &number)])) {}
                } @else {
                    img src=(file_url) alt=(tf(language, "desk_preview_of", &[("number", &number)]));
                }
                a href=(file_url) target="_blank" rel="noopener" { (t(language, "desk_open_file")) }
            }
            dl.facts {
                dt { (t(language, "order_total")) }
                dd.total {
                    @match (row.order_total_minor, &row.order_currency) {
                        (Some(total), Some(currency)) => (money(total, currency)),
                        _ => "—",
                    }
                }
                @if let (Some(claimed), Some(currency)) = (row.claimed_amount_minor, &row.claimed_currency) {
                    dt { (t(language, "desk_claimed")) }
                    dd { (money(claimed, currency)) }
                }
                dt { (t(language, "desk_submitted")) }
                dd { time datetime=(row.submitted_at.to_rfc3339()) { (at(row.submitted_at, Some(&store.time_zone))) } }
                @if let Some(order) = order {
                    dt { (t(language, "order_status")) }
                    dd.order-status { (t(language, &format!("status_{}", order.status))) }
                    @if store.allows(Permission::ViewCustomers) {
                        dt { (t(language, "customer")) }
                        dd.contact { (contact_line(language, contacts.get(&order.customer_id))) }
                    }
                }
            }
            @if let Some(order) = order {
                table.lines {
                    caption { (t(language, "order_lines")) }
                    (columns(language, &["product", "quantity", "line_total"]))
                    tbody {
                        @for line in &order.lines {
                            tr {
                                td { (names.get(&line.product_id).cloned().unwrap_or_else(|| line.product_id.to_string())) }
                                td { (line.quantity) }
                                td { (money(line.line_total_minor, &order.currency)) }
                            }
                        }
                    }
                }
            }
            @if store.allows(Permission::ReviewReceipts) {
                div.actions {
                    form hx-post={"/console/receipts/" (id) "/verify"} hx-target={"#receipt-" (id)} hx-swap="outerHTML" {
                        button.verify type="submit" { (t(language, "verify")) }
                    }
                    form.reject hx-post={"/console/receipts/" (id) "/reject"} hx-target={"#receipt-" (id)} hx-swap="outerHTML" {
                        label for={"reason-" (id)} { (t(language, "reject_reason")) }
                        input #{"reason-" (id)} type="text" name="reason" required maxlength="2000";
                        button.reject type="submit" { (t(language, "reject")) }
                    }
                }
            }
        }
    }
}

/// A customer's contact as a line: name, e-mail, Telegram; or that it was erased.
pub fn contact_line(language: Language, contact: Option<&Contact>) -> String {
    match contact {
        None => "—".to_owned(),
        Some(contact) if contact.erased => t(language, "contact_erased"),
        Some(contact) => {
            let parts: Vec<String> = [
                contact.display_name.clone(),
                contact.email.clone(),
                contact.telegram_user_id.map(|id| format!("Telegram {id}")),
            ]
            .into_iter()
            .flatten()
            .collect();
            if parts.is_empty() {
                "—".to_owned()
            } else {
                parts.join(" · ")
            }
        }
    }
}

/// `GET /console/receipts/{id}/file`: the file, inline, for the preview (same checks as the
/// API's download).
#[handler]
pub async fn file(staff: Staff, app: Data<&Arc<App>>, Path(receipt_id): Path<Uuid>) -> Response {
    let language = staff.language;
    let result = async {
        let access = app
            .authorize_resource::<grant::ViewReceipts>(
                &staff.caller,
                Resource::Receipt(ReceiptId(receipt_id)),
            )
            .await?
            .ok_or(AppError::Receipt(ReceiptError::NotFound))?;
        app.receipt_file(&access, ReceiptId(receipt_id)).await
    }
    .await;
    match result {
        Ok((file, bytes)) => Response::builder()
            .content_type(file.media_type)
            .header(header::CONTENT_DISPOSITION, "inline")
            // Previews are framed by the desk itself.
            .header(header::X_FRAME_OPTIONS, "SAMEORIGIN")
            .body(bytes),
        Err(err) => layout::error_response(language, err),
    }
}

/// `POST /console/receipts/{id}/verify`.
#[handler]
pub async fn verify(staff: Staff, app: Data<&Arc<App>>, Path(receipt_id): Path<Uuid>) -> Response {
    decide(&app, &staff, receipt_id, None).await
}

#[derive(Deserialize)]
pub struct RejectForm {
    reason: String,
}

/// `POST /console/receipts/{id}/reject`.
#[handler]
pub async fn reject(
    staff: Staff,
    app: Data<&Arc<App>>,
    Path(receipt_id): Path<Uuid>,
    Form(form): Form<RejectForm>,
) -> Response {
    decide(&app, &staff, receipt_id, Some(form.reason)).await
}

/// Verifies (`reason` `None`) or rejects one receipt; answers the decided card.
async fn decide(app: &App, staff: &Staff, receipt_id: Uuid, reason: Option<String>) -> Response {
    let language = staff.language;
    match decide_one(app, staff, receipt_id, reason).await {
        Ok(card) => layout::fragment(card),
        Err(err) => layout::error_response(language, err),
    }
}

async fn decide_one(
    app: &App,
    staff: &Staff,
    receipt_id: Uuid,
    reason: Option<String>,
) -> Result<Markup, AppError> {
    let language = staff.language;
    let id = ReceiptId(receipt_id);
    let access = app
        .authorize_resource::<grant::ReviewReceipts>(&staff.caller, Resource::Receipt(id))
        .await?
        .ok_or(AppError::Receipt(ReceiptError::NotFound))?;
    let verified = reason.is_none();
    let written = match reason {
        None => app.verify_receipt(&access, id).await?,
        Some(reason) => {
            let reason = reason.trim().to_owned();
            if reason.is_empty() {
                return Err(AppError::invalid("reason", "a rejection needs a reason"));
            }
            app.reject_receipt(&access, id, reason).await?
        }
    };
    let row = app
        .read_after(DECIDED_READ_MODELS, written.position, || {
            receipts::receipt(&app.pool, receipt_id)
        })
        .await?;
    let number = row
        .as_ref()
        .map(|r| OrderId(r.order_id).number())
        .unwrap_or_default();
    let order_status = row
        .as_ref()
        .and_then(|r| r.order_status.clone())
        .map(|status| t(language, &format!("status_{status}")))
        .unwrap_or_else(|| t(language, "status_pending"));
    let key = if verified {
        "desk_verified"
    } else {
        "desk_rejected"
    };
    Ok(html! {
        article.receipt.decided #{"receipt-" (receipt_id)} data-receipt-id=(receipt_id)
            data-decision=(if verified { "verified" } else { "rejected" }) {
            p role="status" {
                (tf(language, key, &[("number", &number)])) " "
                span.order-status { (order_status) }
            }
        }
    })
}

/// Most receipts one bulk action takes (as the API's).
const MAX_BULK: usize = 100;

/// `POST /console/desk/bulk`: each receipt is decided on its own; the answer lists every
/// result, and the queue reloads.
#[handler]
pub async fn bulk(staff: Staff, app: Data<&Arc<App>>, form: FormFields) -> Response {
    let language = staff.language;
    let parsed = form
        .all("receipt_ids")
        .map(|id| id.parse::<Uuid>())
        .collect::<Result<Vec<_>, _>>();
    let Ok(mut receipt_ids) = parsed else {
        return layout::error_response(
            language,
            AppError::invalid("receipt_ids", "not a receipt id"),
        );
    };
    receipt_ids.dedup();
    let reason = match (form.get("action"), form.get("reason")) {
        (Some("verify"), _) => None,
        (Some("reject"), Some(reason)) => Some(reason.to_owned()),
        (Some("reject"), None) => {
            return layout::error_response(
                language,
                AppError::invalid("reason", "a rejection needs a reason"),
            )
        }
        _ => {
            return layout::error_response(
                language,
                AppError::invalid("action", "verify or reject"),
            )
        }
    };
    if receipt_ids.is_empty() || receipt_ids.len() > MAX_BULK {
        return layout::error_response(
            language,
            AppError::invalid("receipt_ids", "choose 1 to 100 receipts"),
        );
    }
    let mut results = Vec::new();
    for receipt_id in receipt_ids {
        let outcome = decide_one(&app, &staff, receipt_id, reason.clone())
            .await
            .map(drop)
            .map_err(|err| layout::error_message(language, err));
        results.push((receipt_id, outcome));
    }
    let markup = html! {
        ul.bulk-results aria-label=(t(language, "desk_bulk_results")) {
            @for (receipt_id, outcome) in &results {
                @match outcome {
                    Ok(_) => li.ok data-receipt-id=(receipt_id) { (receipt_id) ": " (t(language, "done")) },
                    Err(message) => li.failed data-receipt-id=(receipt_id) { (receipt_id) ": " (message) },
                }
            }
        }
    };
    let mut response = layout::fragment(markup);
    response.headers_mut().insert(
        "HX-Trigger",
        poem::http::HeaderValue::from_static("sf-orders"),
    );
    response
}

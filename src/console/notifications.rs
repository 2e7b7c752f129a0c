//! The notification center: the user's notifications (all or unread), the unread count in the
//! navigation, mark one or all read, and the console's own settings (a sound on arrival;
//! browser notifications are the browser's permission). New ones arrive live on the user's
//! `notifications` feed (`assets/console.js`).

use std::sync::Arc;

use maud::{html, Markup};
use poem::web::{Data, Form, Path, Query};
use poem::{handler, Response};
use serde::Deserialize;

use super::layout::{self, Screen};
use super::session::Staff;
use super::texts::{at, t, Language};
use crate::app::{App, AppError, NotificationFilter, NotificationView};

/// Notifications per page.
const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// `unread` for unread only.
    show: Option<String>,
}

/// `GET /console/notifications`.
#[handler]
pub async fn page(staff: Staff, app: Data<&Arc<App>>, Query(query): Query<ListQuery>) -> Response {
    let language = staff.language;
    let result = async {
        let listing = render_list(&app, &staff, &query).await?;
        let sound = staff.sound.unwrap_or(true);
        Ok::<_, AppError>(html! {
            form.settings method="post" action="/console/notifications/settings" {
                input type="hidden" name="csrf" value=(staff.csrf);
                fieldset {
                    legend { (t(language, "notification_settings")) }
                    label.check {
                        input #sound type="checkbox" name="sound" value="on" checked[sound];
                        " " (t(language, "sound_on_arrival"))
                    }
                    button type="submit" { (t(language, "save")) }
                }
            }
            button #browser-notifications type="button" data-label-on=(t(language, "browser_notifications_on")) {
                (t(language, "browser_notifications"))
            }
            nav.tabs aria-label=(t(language, "filters")) {
                a href="/console/notifications" aria-current=[(query.show.as_deref() != Some("unread")).then_some("page")] { (t(language, "all")) }
                " "
                a href="/console/notifications?show=unread" aria-current=[(query.show.as_deref() == Some("unread")).then_some("page")] { (t(language, "unread")) }
            }
            form.inline hx-post="/console/notifications/read-all" hx-target="#notifications" hx-swap="outerHTML" {
                button type="submit" { (t(language, "mark_all_read")) }
            }
            (listing)
        })
    }
    .await;
    match result {
        Ok(body) => layout::page(&staff, Screen::Notifications, body),
        Err(err) => layout::failed(&staff, Screen::Notifications, err),
    }
}

/// `GET /console/notifications/list`: the list alone (what a live arrival reloads).
#[handler]
pub async fn list(staff: Staff, app: Data<&Arc<App>>, Query(query): Query<ListQuery>) -> Response {
    match render_list(&app, &staff, &query).await {
        Ok(listing) => layout::fragment(listing),
        Err(err) => layout::error_response(staff.language, err),
    }
}

async fn render_list(app: &App, staff: &Staff, query: &ListQuery) -> Result<Markup, AppError> {
    let language = staff.language;
    let unread_only = query.show.as_deref() == Some("unread");
    let center = app
        .notification_center(
            &staff.caller,
            &NotificationFilter {
                unread_only,
                limit: PAGE,
                ..Default::default()
            },
        )
        .await?;
    let reload = if unread_only {
        "/console/notifications/list?show=unread"
    } else {
        "/console/notifications/list"
    };
    Ok(html! {
        section #notifications hx-get=(reload) hx-trigger="sf-notification from:body"
            hx-swap="outerHTML" aria-labelledby="notifications-title" {
            h2 #notifications-title {
                (t(language, "notifications")) " "
                span.count data-unread=(center.unread_count) { "(" (center.unread_count) " " (t(language, "unread")) ")" }
            }
            @if center.items.is_empty() {
                p.empty { (t(language, "notifications_empty")) }
            }
            ul.notifications {
                @for item in &center.items {
                    (notification(language, item))
                }
            }
        }
    })
}

fn notification(language: Language, item: &NotificationView) -> Markup {
    let unread = item.read_at.is_none();
    html! {
        li class={"notification " (item.priority.as_str()) @if unread { " unread" }}
            #{"notification-" (item.notification_id)} data-notification-id=(item.notification_id) {
            strong { (item.title) }
            " · " time datetime=(item.created_at.to_rfc3339()) { (at(item.created_at, None)) }
            p { (item.body) }
            @if let Some(link) = item.link.as_deref().and_then(console_link) {
                a href=(link) { (t(language, "open")) }
                " "
            }
            @if unread {
                form.inline hx-post={"/console/notifications/" (item.notification_id) "/read"}
                    hx-target={"#notification-" (item.notification_id)} hx-swap="outerHTML" {
                    button type="submit" { (t(language, "mark_read")) }
                }
            }
        }
    }
}

/// Where in the console a notification's API link leads.
fn console_link(api_link: &str) -> Option<String> {
    let rest = api_link.strip_prefix("/api/v1/")?;
    if let Some(_receipt) = rest.strip_prefix("receipts/") {
        return Some("/console/desk".to_owned());
    }
    if let Some(product) = rest.strip_prefix("products/") {
        return Some(format!("/console/inventory/{product}"));
    }
    if let Some(query) = rest.strip_prefix("analytics/dashboard") {
        return Some(format!("/console/dashboard{query}"));
    }
    rest.strip_prefix("orders/")
        .map(|order| format!("/console/orders/{order}"))
}

/// `GET /console/notifications/badge`: the unread count in the navigation.
#[handler]
pub async fn badge(staff: Staff, app: Data<&Arc<App>>) -> Response {
    let unread = app
        .notification_center(
            &staff.caller,
            &NotificationFilter {
                unread_only: true,
                limit: 1,
                ..Default::default()
            },
        )
        .await;
    match unread {
        Ok(center) => layout::fragment(html! {
            span #unread-badge.badge hx-get="/console/notifications/badge"
                hx-trigger="sf-notification from:body, sf-read from:body" hx-swap="outerHTML"
                data-unread=(center.unread_count)
                aria-label=(format!("{} {}", center.unread_count, t(staff.language, "unread"))) {
                @if center.unread_count > 0 { (center.unread_count) }
            }
        }),
        Err(err) => layout::error_response(staff.language, err),
    }
}

/// `POST /console/notifications/{id}/read`.
#[handler]
pub async fn read(
    staff: Staff,
    app: Data<&Arc<App>>,
    Path(notification_id): Path<i64>,
) -> Response {
    match app
        .mark_notification_read(&staff.caller, notification_id)
        .await
    {
        Ok(Some(item)) => {
            let mut response = layout::fragment(notification(staff.language, &item));
            response.headers_mut().insert(
                "HX-Trigger",
                poem::http::HeaderValue::from_static("sf-read"),
            );
            response
        }
        Ok(None) => layout::status_response(staff.language, poem::http::StatusCode::NOT_FOUND),
        Err(err) => layout::error_response(staff.language, err),
    }
}

/// `POST /console/notifications/read-all`.
#[handler]
pub async fn read_all(staff: Staff, app: Data<&Arc<App>>) -> Response {
    let result = async {
        app.mark_all_notifications_read(&staff.caller).await?;
        render_list(&app, &staff, &ListQuery::default()).await
    }
    .await;
    match result {
        Ok(listing) => {
            let mut response = layout::fragment(listing);
            response.headers_mut().insert(
                "HX-Trigger",
                poem::http::HeaderValue::from_static("sf-read"),
            );
            response
        }
        Err(err) => layout::error_response(staff.language, err),
    }
}

#[derive(Deserialize)]
pub struct SettingsForm {
    sound: Option<String>,
}

/// `POST /console/notifications/settings`.
#[handler]
pub async fn settings(
    staff: Staff,
    app: Data<&Arc<App>>,
    Form(form): Form<SettingsForm>,
) -> Response {
    match app
        .set_notification_sound(&staff.caller, form.sound.is_some())
        .await
    {
        Ok(()) => poem::Response::builder()
            .status(poem::http::StatusCode::SEE_OTHER)
            .header(poem::http::header::LOCATION, "/console/notifications")
            .finish(),
        Err(err) => layout::error_response(staff.language, err),
    }
}

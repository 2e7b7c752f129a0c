//! Stores: each store the user works in with its settings (name, time zone, payment
//! instructions customers are shown, the default low-stock threshold, how long an unpaid
//! order holds its stock), changeable by the roles that may change them; the currency is fixed
//! at creation.

use std::sync::Arc;

use aggregates::store::{StoreName, TimeZone};
use aggregates::StoreId;
use maud::html;
use poem::web::{Data, Form, Path};
use poem::{handler, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::layout::{self, Screen};
use super::session::Staff;
use super::stores::stores_allowing;
use super::texts::t;
use crate::app::authz::Permission;
use crate::app::{grant, App, AppError, StoreSettingsChange};

/// `GET /console/stores`.
#[handler]
pub async fn page(staff: Staff, app: Data<&Arc<App>>) -> Response {
    let language = staff.language;
    let result = async {
        let stores = stores_allowing::<grant::ViewStore>(&app, &staff).await?;
        let mut sections = Vec::new();
        for store in &stores {
            let access = app
                .authorize::<grant::ViewStore>(&staff.caller, store.store_id)
                .await?;
            let settings = access.store();
            let changes = store.allows(Permission::ChangeStoreSettings);
            let id = store.store_id.0;
            sections.push(html! {
                section.store #{"store-" (id)} aria-labelledby={"store-" (id) "-title"} {
                    h2 #{"store-" (id) "-title"} { (settings.name()) }
                    form method="post" action={"/console/stores/" (id)} {
                        input type="hidden" name="csrf" value=(staff.csrf);
                        fieldset disabled[!changes] {
                            legend { (t(language, "store_settings")) }
                            label for={"name-" (id)} { (t(language, "name")) }
                            input #{"name-" (id)} type="text" name="name" value=(settings.name()) required maxlength="200";
                            label for={"zone-" (id)} { (t(language, "time_zone")) }
                            input #{"zone-" (id)} type="text" name="timezone" value=(settings.timezone()) required;
                            label for={"currency-" (id)} { (t(language, "currency")) }
                            input #{"currency-" (id)} type="text" value=(settings.currency().map(|c| c.code()).unwrap_or_default()) readonly;
                            label for={"instructions-" (id)} { (t(language, "payment_instructions")) }
                            textarea #{"instructions-" (id)} name="payment_instructions" rows="3" maxlength="2000" {
                                (settings.payment_instructions())
                            }
                            label for={"threshold-" (id)} { (t(language, "default_threshold")) }
                            input #{"threshold-" (id)} type="number" name="default_low_stock_threshold" min="0"
                                value=(settings.default_low_stock_threshold());
                            label for={"ttl-" (id)} { (t(language, "reservation_ttl")) }
                            input #{"ttl-" (id)} type="number" name="reservation_ttl_minutes" min="1"
                                value=(settings.reservation_ttl_minutes());
                            @if changes {
                                button type="submit" { (t(language, "save")) }
                            }
                        }
                    }
                }
            });
        }
        Ok::<_, AppError>(html! {
            @if sections.is_empty() {
                p.empty { (t(language, "stores_empty")) }
            }
            @for section in sections { (section) }
        })
    }
    .await;
    match result {
        Ok(body) => layout::page(&staff, Screen::Stores, body),
        Err(err) => layout::failed(&staff, Screen::Stores, err),
    }
}

#[derive(Deserialize)]
pub struct SettingsForm {
    name: String,
    timezone: String,
    payment_instructions: String,
    default_low_stock_threshold: String,
    reservation_ttl_minutes: String,
}

fn number(field: &'static str, value: &str) -> Result<u32, AppError> {
    value
        .trim()
        .parse()
        .map_err(|_| AppError::invalid(field, "a whole number, 0 or more"))
}

/// `POST /console/stores/{id}`: the store's settings, as one change.
#[handler]
pub async fn change(
    staff: Staff,
    app: Data<&Arc<App>>,
    Path(store_id): Path<Uuid>,
    Form(form): Form<SettingsForm>,
) -> Response {
    let result = async {
        let access = app
            .authorize::<grant::ChangeStoreSettings>(&staff.caller, StoreId(store_id))
            .await?;
        let change = StoreSettingsChange {
            name: Some(StoreName::parse(form.name.trim())?),
            currency: None,
            timezone: Some(TimeZone::parse(form.timezone.trim())?),
            payment_instructions: Some(form.payment_instructions.trim().to_owned()),
            default_low_stock_threshold: Some(number(
                "default_low_stock_threshold",
                &form.default_low_stock_threshold,
            )?),
            reservation_ttl_minutes: Some(number(
                "reservation_ttl_minutes",
                &form.reservation_ttl_minutes,
            )?),
        };
        let written = app.change_store_settings(&access, change).await?;
        app.reached(&["catalog"], written.position).await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => poem::Response::builder()
            .status(poem::http::StatusCode::SEE_OTHER)
            .header(poem::http::header::LOCATION, "/console/stores")
            .finish(),
        Err(err) => layout::error_response(staff.language, err),
    }
}

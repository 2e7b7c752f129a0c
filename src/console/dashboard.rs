//! The dashboard: a store's KPI figures over a range of its local days, revenue by day, week or
//! month as an SVG bar chart (drawn here: no chart library, no script), and the comparison of
//! the user's stores side by side. Reloaded live from the store's `kpis` feed.

use std::sync::Arc;

use chrono::{Duration, NaiveDate, Utc};
use maud::{html, Markup};
use poem::web::{Data, Query};
use poem::{handler, Response};
use serde::Deserialize;
use uuid::Uuid;

use projections::read_models::kpis::queries::{self as kpis, Period, PeriodRevenue};

use super::layout::{self, columns, Screen};
use super::session::Staff;
use super::stores::{self, stores_allowing};
use super::texts::{money, t, tf, Language};
use crate::app::{grant, App, AppError};

/// Longest range shown (as the API's).
const MAX_DAYS: i64 = 3 * 366;

#[derive(Debug, Default, Deserialize)]
pub struct DashboardQuery {
    store_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// `day`, `week` or `month`.
    period: Option<String>,
}

/// `GET /console/dashboard`.
#[handler]
pub async fn page(
    staff: Staff,
    app: Data<&Arc<App>>,
    Query(query): Query<DashboardQuery>,
) -> Response {
    match render(&app, &staff, &query).await {
        Ok(body) => layout::page(&staff, Screen::Dashboard, body),
        Err(err) => layout::failed(&staff, Screen::Dashboard, err),
    }
}

fn day(field: &'static str, value: Option<&str>) -> Result<Option<NaiveDate>, AppError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .map_err(|_| AppError::invalid(field, "a date, YYYY-MM-DD"))
        })
        .transpose()
}

/// An amount that may exceed `i64` (sums), in the currency's minor units.
fn sum(amount: i128, currency: &str) -> String {
    match i64::try_from(amount) {
        Ok(amount) => money(amount, currency),
        Err(_) => format!("{amount} {currency}"),
    }
}

async fn render(app: &App, staff: &Staff, query: &DashboardQuery) -> Result<Markup, AppError> {
    let language = staff.language;
    let stores = stores_allowing::<grant::ViewAnalytics>(app, staff).await?;
    let Some(first) = stores.first() else {
        return Ok(html! { p.empty { (t(language, "dashboard_no_stores")) } });
    };
    let wanted = stores::wanted(&query.store_id)?;
    let store = match wanted {
        Some(id) => stores
            .iter()
            .find(|s| s.store_id.0 == id)
            .ok_or_else(|| AppError::Forbidden("no analytics role in this store".into()))?,
        None => first,
    };
    let tz: chrono_tz::Tz = store.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let today = Utc::now().with_timezone(&tz).date_naive();
    let to = day("to", query.to.as_deref())?.unwrap_or(today);
    let from = day("from", query.from.as_deref())?.unwrap_or(to - Duration::days(29));
    if from > to || (to - from).num_days() > MAX_DAYS {
        return Err(AppError::invalid(
            "from",
            "a range of at most three years, from before to",
        ));
    }
    let period = match query.period.as_deref().unwrap_or("day") {
        "day" => Period::Day,
        "week" => Period::Week,
        "month" => Period::Month,
        _ => return Err(AppError::invalid("period", "day, week or month")),
    };
    let period_name = query.period.clone().unwrap_or_else(|| "day".to_owned());
    let figures = kpis::dashboard(&app.pool, store.store_id.0, from, to).await?;
    let mut revenue = kpis::revenue(&app.pool, store.store_id.0, period, from, to).await?;
    if matches!(period, Period::Day) {
        let currency = store_currency(&figures, &revenue);
        revenue = every_day(revenue, from, to, &currency);
    }
    let this_page = format!(
        "/console/dashboard?store_id={}&from={from}&to={to}&period={}",
        store.store_id.0,
        query.period.as_deref().unwrap_or("day")
    );
    let ids: Vec<Uuid> = stores.iter().map(|s| s.store_id.0).collect();
    let comparison = if stores.len() > 1 {
        kpis::compare_stores(&app.pool, &ids, from, to).await?
    } else {
        Vec::new()
    };
    Ok(html! {
        form.filters method="get" action="/console/dashboard" aria-label=(t(language, "filters")) {
            label for="d-store" { (t(language, "store")) }
            select #d-store name="store_id" {
                @for s in &stores {
                    option value=(s.store_id.0) selected[s.store_id == store.store_id] { (s.name) }
                }
            }
            label for="d-from" { (t(language, "from")) }
            input #d-from type="date" name="from" value=(from);
            label for="d-to" { (t(language, "to")) }
            input #d-to type="date" name="to" value=(to);
            label for="d-period" { (t(language, "period")) }
            select #d-period name="period" {
                @for p in ["day", "week", "month"] {
                    option value=(p) selected[period_name == p] { (t(language, &format!("period_{p}"))) }
                }
            }
            button type="submit" { (t(language, "apply")) }
        }
        section #kpis data-live-topic="kpis" data-live-stores=(store.store_id.0)
            hx-get=(this_page) hx-trigger="sf-kpis from:body delay:1s" hx-select="#kpis" hx-swap="outerHTML"
            aria-labelledby="kpis-title" {
            h2 #kpis-title { (store.name) ": " (from) " – " (to) }
            @match &figures {
                None => p.empty { (t(language, "dashboard_empty")) },
                Some(f) => {
                    dl.kpis {
                        div { dt { (t(language, "kpi_revenue")) } dd.revenue { (sum(f.revenue_minor, &f.currency)) } }
                        div { dt { (t(language, "kpi_orders_placed")) } dd { (f.orders_placed) } }
                        div { dt { (t(language, "kpi_orders_paid")) } dd.orders-paid { (f.orders_paid) } }
                        div { dt { (t(language, "kpi_average")) } dd { (sum(f.average_order_value_minor, &f.currency)) } }
                        div { dt { (t(language, "kpi_conversion")) } dd { (format!("{:.1} %", f.conversion * 100.0)) } }
                        div { dt { (t(language, "kpi_cancelled")) } dd { (f.orders_cancelled) } }
                        div { dt { (t(language, "kpi_expired")) } dd { (f.orders_expired) } }
                        div { dt { (t(language, "kpi_verification_p50")) } dd { (minutes(f.receipt_verification_p50_seconds)) } }
                    }
                    (revenue_chart(language, &revenue, &period_name))
                }
            }
        }
        @if !comparison.is_empty() {
            table.comparison {
                caption { (t(language, "store_comparison")) }
                (columns(language, &["store", "kpi_revenue", "kpi_orders_placed", "kpi_orders_paid", "kpi_cancelled", "kpi_expired"]))
                tbody {
                    @for row in &comparison {
                        tr {
                            th scope="row" { (row.name) }
                            td { (sum(row.revenue_minor, &row.currency)) }
                            td { (row.orders_placed) }
                            td { (row.orders_paid) }
                            td { (row.orders_cancelled) }
                            td { (row.orders_expired) }
                        }
                    }
                }
            }
        }
    })
}

/// The store's currency as the figures name it.
fn store_currency(figures: &Option<kpis::Dashboard>, revenue: &[PeriodRevenue]) -> String {
    figures
        .as_ref()
        .map(|f| f.currency.clone())
        .or_else(|| revenue.first().map(|r| r.currency.clone()))
        .unwrap_or_default()
}

/// Revenue for every day of `from..=to`, days without sales at zero (the chart's axis is
/// time, not "days that had sales").
fn every_day(
    revenue: Vec<PeriodRevenue>,
    from: NaiveDate,
    to: NaiveDate,
    currency: &str,
) -> Vec<PeriodRevenue> {
    let mut by_day: std::collections::HashMap<NaiveDate, PeriodRevenue> =
        revenue.into_iter().map(|r| (r.period_start, r)).collect();
    from.iter_days()
        .take_while(|day| *day <= to)
        .map(|day| {
            by_day.remove(&day).unwrap_or(PeriodRevenue {
                period_start: day,
                currency: currency.to_owned(),
                revenue_minor: 0,
                orders_paid: 0,
                orders_placed: 0,
            })
        })
        .collect()
}

fn minutes(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) => format!("{:.0} min", s / 60.0),
        None => "—".to_owned(),
    }
}

/// Revenue per period as bars, with the figures also in a table for screen readers and copy.
fn revenue_chart(language: Language, revenue: &[PeriodRevenue], period: &str) -> Markup {
    const WIDTH: f64 = 720.0;
    const HEIGHT: f64 = 200.0;
    let max = revenue
        .iter()
        .map(|r| r.revenue_minor)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    // At least a week's room: one day's sales is a bar, not the whole chart.
    let slot = WIDTH / revenue.len().max(7) as f64;
    let title = tf(
        language,
        "revenue_by",
        &[("period", &t(language, &format!("period_{period}")))],
    );
    html! {
        figure.chart {
            svg xmlns="http://www.w3.org/2000/svg" viewBox={"0 0 " (WIDTH) " " (HEIGHT + 20.0)}
                role="img" aria-labelledby="revenue-title" {
                title #revenue-title { (title) }
                @for (i, r) in revenue.iter().enumerate() {
                    @let h = (r.revenue_minor as f64 / max * HEIGHT).max(if r.revenue_minor > 0 { 1.0 } else { 0.0 });
                    rect.bar x=(format!("{:.1}", i as f64 * slot + slot * 0.1)) y=(format!("{:.1}", HEIGHT - h))
                        width=(format!("{:.1}", slot * 0.8)) height=(format!("{:.1}", h)) {
                        title { (r.period_start) ": " (sum(r.revenue_minor, &r.currency)) }
                    }
                }
                line.axis x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) {}
                @if let (Some(first), Some(last)) = (revenue.first(), revenue.last()) {
                    text.label x="0" y=(HEIGHT + 16.0) { (first.period_start) }
                    text.label x=(WIDTH) y=(HEIGHT + 16.0) text-anchor="end" { (last.period_start) }
                    text.label x="4" y="12" { (sum(max as i128, &first.currency)) }
                }
            }
            figcaption { (title) }
        }
        details {
            summary { (t(language, "chart_table")) }
            table.revenue {
                (columns(language, &["period_start", "kpi_revenue", "kpi_orders_paid"]))
                tbody {
                    @for r in revenue {
                        tr { td { (r.period_start) } td { (sum(r.revenue_minor, &r.currency)) } td { (r.orders_paid) } }
                    }
                }
            }
        }
    }
}

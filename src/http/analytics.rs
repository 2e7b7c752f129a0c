//! `/api/v1/analytics/*`: KPIs read from the pre-aggregated read models (never by scanning
//! orders). Days are local days in the store's time zone; amounts are never summed across
//! currencies.

use std::sync::Arc;

use aggregates::StoreId;
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use poem::Request;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Tags};
use projections::read_models::catalog::queries as catalog;
use projections::read_models::customers::queries as customers;
use projections::read_models::kpis::queries::{self as kpis, Period};
use uuid::Uuid;

use super::auth::BearerAuth;
use super::context::caller;
use super::error::ApiError;
use super::types::MoneyView;
use crate::app::grant;
use crate::app::{App, AppError};

#[derive(Tags)]
enum ApiTags {
    /// KPIs, revenue, customers, store comparison, inventory.
    Analytics,
}

/// How revenue is grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum PeriodName {
    Day,
    Week,
    Month,
}

/// Units and revenue of a best seller.
#[derive(Debug, Object)]
pub struct TopProductView {
    pub product_id: Uuid,
    pub units_sold: i64,
    pub revenue: MoneyView,
}

/// Orders in one status.
#[derive(Debug, Object)]
pub struct StatusCount {
    pub status: String,
    pub orders: i64,
}

/// KPIs of one store over a range of local days.
#[derive(Debug, Object)]
pub struct DashboardView {
    pub store_id: Uuid,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub orders_placed: i64,
    pub orders_paid: i64,
    pub revenue: MoneyView,
    pub average_order_value: MoneyView,
    /// Paid orders per placed order (0 to 1).
    pub conversion: f64,
    pub orders_cancelled: i64,
    pub orders_expired: i64,
    pub receipts_verified: i64,
    /// Median seconds from receipt upload to verification.
    #[oai(skip_serializing_if_is_none)]
    pub receipt_verification_p50_seconds: Option<f64>,
    #[oai(skip_serializing_if_is_none)]
    pub receipt_verification_p90_seconds: Option<f64>,
    /// Current orders by status (not limited to the range).
    pub orders_by_status: Vec<StatusCount>,
    pub top_products: Vec<TopProductView>,
}

/// Revenue of one period.
#[derive(Debug, Object)]
pub struct RevenuePoint {
    /// First local day of the period (Monday for weeks).
    pub period_start: NaiveDate,
    pub revenue: MoneyView,
    pub orders_paid: i64,
    pub orders_placed: i64,
}

/// Customers of a store over a range, per currency.
#[derive(Debug, Object)]
pub struct CustomerSummaryView {
    pub customers: i64,
    /// First order within the range.
    pub new_customers: i64,
    pub returning_customers: i64,
    pub lifetime_value: MoneyView,
    pub average_lifetime_value: MoneyView,
}

/// One store beside the others.
#[derive(Debug, Object)]
pub struct StoreComparisonView {
    pub store_id: Uuid,
    pub name: String,
    pub orders_placed: i64,
    pub orders_paid: i64,
    /// In the store's own currency (compare like with like).
    pub revenue: MoneyView,
    pub orders_cancelled: i64,
    pub orders_expired: i64,
}

/// Stock turnover of one product.
#[derive(Debug, Object)]
pub struct InventoryView {
    pub product_id: Uuid,
    pub available: i64,
    pub on_hand: i64,
    pub units_sold: i64,
    /// Units sold per unit on hand over the range.
    pub turnover: f64,
    /// Days the available units last at the range's sales rate (absent without sales).
    #[oai(skip_serializing_if_is_none)]
    pub days_of_cover: Option<f64>,
    /// No sale within `dead_after_days` (or never).
    pub dead_stock: bool,
}

pub struct AnalyticsApi {
    pub app: Arc<App>,
}

/// Default range: the last 30 local days.
const DEFAULT_DAYS: i64 = 30;
/// Longest range one request may ask for.
const MAX_DAYS: i64 = 3 * 366;

impl AnalyticsApi {
    /// Authorizes analytics in `store_id` and resolves the local-day range (default: the last
    /// 30 days up to today in the store's time zone). Also gives the store (as the proof names
    /// it) and its currency.
    async fn range(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Uuid,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> Result<Range, ApiError> {
        let caller = caller(req, auth.0);
        let access = self
            .app
            .authorize::<grant::ViewAnalytics>(&caller, StoreId(store_id))
            .await?;
        // From the catalog read model; until the store is projected, UTC and no currency.
        let (timezone, currency) = catalog::store(&self.app.pool, access.store_id().0)
            .await
            .map_err(db)?
            .map(|store| (store.timezone, store.currency))
            .unwrap_or_default();
        let tz: chrono_tz::Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
        let (from, to) = days(from, to, local_today(tz))?;
        Ok(Range {
            store_id: access.store_id().0,
            from,
            to,
            tz,
            currency,
        })
    }
}

/// A store's analytics range: inclusive local days in its time zone.
struct Range {
    store_id: Uuid,
    from: NaiveDate,
    to: NaiveDate,
    tz: chrono_tz::Tz,
    currency: String,
}

/// Today in `tz`.
fn local_today(tz: chrono_tz::Tz) -> NaiveDate {
    Utc::now().with_timezone(&tz).date_naive()
}

/// The inclusive range of local days `from..=to` asked for: `to` defaults to `today`, `from` to
/// 29 days before `to`; refused (422 naming the field) outside the years 1–9999, backwards, or
/// longer than `MAX_DAYS`.
fn days(
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    today: NaiveDate,
) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let (from, to) = (plausible_day("from", from)?, plausible_day("to", to)?);
    let to = to.unwrap_or(today);
    let from = from.unwrap_or(to - Duration::days(DEFAULT_DAYS - 1));
    if from > to {
        return Err(AppError::invalid("from", "`from` must not be after `to`").into());
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(
            AppError::invalid("from", format!("a range may span at most {MAX_DAYS} days")).into(),
        );
    }
    Ok((from, to))
}

/// Refuses a day outside the years 1–9999 (422 naming `field`), so day arithmetic never
/// overflows and Postgres never sees a date it cannot hold.
fn plausible_day(
    field: &'static str,
    day: Option<NaiveDate>,
) -> Result<Option<NaiveDate>, ApiError> {
    match day {
        Some(day) if !(1..=9999).contains(&day.year()) => {
            Err(AppError::invalid(field, "a day between the years 1 and 9999").into())
        }
        day => Ok(day),
    }
}

fn db(err: sqlx::Error) -> ApiError {
    AppError::from(err).into()
}

/// A sum of money as the API shows it. The read models sum exactly (`i128`), but the API's
/// amounts are int64 minor units: a sum past that (only reachable with orders near the
/// placement limits) is refused with a clear problem rather than shown wrong.
pub(crate) fn sum(amount_minor: i128, currency: &str) -> Result<MoneyView, ApiError> {
    i64::try_from(amount_minor)
        .map(|amount| MoneyView::new(amount, currency))
        .map_err(|_| {
            ApiError::unprocessable(
                "sum-out-of-range",
                format!(
                    "the sum, {amount_minor} minor units of {currency}, is larger than the API's \
                     64-bit amounts can show; ask for a shorter range"
                ),
            )
        })
}

/// The instant a local day starts in `tz`.
fn day_start(tz: chrono_tz::Tz, day: NaiveDate) -> DateTime<Utc> {
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    tz.from_local_datetime(&midnight)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&midnight))
}

/// The view of `dashboard` (of `store_id`, local days `from..=to`); all zeros in `currency`
/// when the KPI read model has not seen the store (yet).
pub(crate) fn dashboard_view(
    dashboard: Option<kpis::Dashboard>,
    store_id: Uuid,
    from: NaiveDate,
    to: NaiveDate,
    currency: String,
) -> Result<DashboardView, ApiError> {
    let Some(d) = dashboard else {
        return Ok(DashboardView {
            store_id,
            from,
            to,
            orders_placed: 0,
            orders_paid: 0,
            revenue: MoneyView::new(0, currency.clone()),
            average_order_value: MoneyView::new(0, currency),
            conversion: 0.0,
            orders_cancelled: 0,
            orders_expired: 0,
            receipts_verified: 0,
            receipt_verification_p50_seconds: None,
            receipt_verification_p90_seconds: None,
            orders_by_status: Vec::new(),
            top_products: Vec::new(),
        });
    };
    let money = |amount| sum(amount, &d.currency);
    Ok(DashboardView {
        store_id: d.store_id,
        from,
        to,
        orders_placed: d.orders_placed,
        orders_paid: d.orders_paid,
        revenue: money(d.revenue_minor)?,
        average_order_value: money(d.average_order_value_minor)?,
        conversion: d.conversion,
        orders_cancelled: d.orders_cancelled,
        orders_expired: d.orders_expired,
        receipts_verified: d.receipts_verified,
        receipt_verification_p50_seconds: d.receipt_verification_p50_seconds,
        receipt_verification_p90_seconds: d.receipt_verification_p90_seconds,
        orders_by_status: d
            .orders_by_status
            .iter()
            .map(|(status, orders)| StatusCount {
                status: status.clone(),
                orders: *orders,
            })
            .collect(),
        top_products: d
            .top_products
            .iter()
            .map(|p| {
                Ok(TopProductView {
                    product_id: p.product_id,
                    units_sold: p.units_sold,
                    revenue: money(p.revenue_minor)?,
                })
            })
            .collect::<Result<_, ApiError>>()?,
    })
}

#[OpenApi(prefix_path = "/api/v1/analytics", tag = "ApiTags::Analytics")]
impl AnalyticsApi {
    /// The store's KPIs: orders, revenue, average order value, conversion, receipt
    /// verification times, best sellers.
    #[oai(
        path = "/dashboard",
        method = "get",
        operation_id = "analytics_dashboard"
    )]
    async fn dashboard(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Query<Uuid>,
        /// First local day (default: 29 days before `to`).
        from: Query<Option<NaiveDate>>,
        /// Last local day, inclusive (default: today in the store's time zone).
        to: Query<Option<NaiveDate>>,
    ) -> Result<Json<DashboardView>, ApiError> {
        let Range {
            store_id,
            from,
            to,
            currency,
            ..
        } = self.range(req, auth, store_id.0, from.0, to.0).await?;
        let dashboard = kpis::dashboard(&self.app.pool, store_id, from, to)
            .await
            .map_err(db)?;
        Ok(Json(dashboard_view(
            dashboard, store_id, from, to, currency,
        )?))
    }

    /// Revenue per day, week or month (local calendar), oldest first.
    #[oai(path = "/revenue", method = "get", operation_id = "analytics_revenue")]
    async fn revenue(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Query<Uuid>,
        /// `day` (default), `week` or `month`.
        period: Query<Option<PeriodName>>,
        from: Query<Option<NaiveDate>>,
        to: Query<Option<NaiveDate>>,
    ) -> Result<Json<Vec<RevenuePoint>>, ApiError> {
        let Range {
            store_id, from, to, ..
        } = self.range(req, auth, store_id.0, from.0, to.0).await?;
        let period = match period.0.unwrap_or(PeriodName::Day) {
            PeriodName::Day => Period::Day,
            PeriodName::Week => Period::Week,
            PeriodName::Month => Period::Month,
        };
        let rows = kpis::revenue(&self.app.pool, store_id, period, from, to)
            .await
            .map_err(db)?;
        Ok(Json(
            rows.into_iter()
                .map(|r| {
                    Ok(RevenuePoint {
                        period_start: r.period_start,
                        revenue: sum(r.revenue_minor, &r.currency)?,
                        orders_paid: r.orders_paid,
                        orders_placed: r.orders_placed,
                    })
                })
                .collect::<Result<_, ApiError>>()?,
        ))
    }

    /// Customers who ordered in the range: new and returning, lifetime value.
    #[oai(
        path = "/customers",
        method = "get",
        operation_id = "analytics_customers"
    )]
    async fn customers(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Query<Uuid>,
        from: Query<Option<NaiveDate>>,
        to: Query<Option<NaiveDate>>,
    ) -> Result<Json<Vec<CustomerSummaryView>>, ApiError> {
        let Range {
            store_id,
            from,
            to,
            tz,
            ..
        } = self.range(req, auth, store_id.0, from.0, to.0).await?;
        let rows = customers::summary(
            &self.app.pool,
            store_id,
            day_start(tz, from),
            day_start(tz, to + Duration::days(1)),
        )
        .await
        .map_err(db)?;
        Ok(Json(
            rows.into_iter()
                .map(|r| {
                    Ok(CustomerSummaryView {
                        customers: r.customers,
                        new_customers: r.new_customers,
                        returning_customers: r.returning_customers,
                        lifetime_value: sum(r.lifetime_value_minor, &r.currency)?,
                        average_lifetime_value: sum(r.average_lifetime_value_minor, &r.currency)?,
                    })
                })
                .collect::<Result<_, ApiError>>()?,
        ))
    }

    /// Stores side by side: every store where the caller may read analytics, or those named.
    #[oai(path = "/stores", method = "get", operation_id = "analytics_stores")]
    async fn stores(
        &self,
        req: &Request,
        auth: BearerAuth,
        /// Stores to compare (each needs analytics access); all of the caller's when absent.
        store_id: Query<Vec<Uuid>>,
        from: Query<Option<NaiveDate>>,
        to: Query<Option<NaiveDate>>,
    ) -> Result<Json<Vec<StoreComparisonView>>, ApiError> {
        let caller = caller(req, auth.0.clone());
        let mut ids = store_id.0;
        if ids.is_empty() {
            ids = self
                .app
                .stores_allowing::<grant::ViewAnalytics>(&caller)
                .await?
                .into_iter()
                .map(|id| id.0)
                .collect();
        }
        if ids.len() > 100 {
            return Err(AppError::invalid("store_id", "compare at most 100 stores").into());
        }
        let mut allowed = Vec::with_capacity(ids.len());
        for id in ids {
            let access = self
                .app
                .authorize::<grant::ViewAnalytics>(&caller, StoreId(id))
                .await?;
            allowed.push(access.store_id().0);
        }
        let ids = allowed;
        // Days are each store's local days: by default the range ends on the latest "today"
        // among the stores' time zones.
        let today = if to.0.is_some() {
            local_today(chrono_tz::UTC) // not used: `to` was given
        } else {
            let stores = catalog::stores_by_id(&self.app.pool, &ids)
                .await
                .map_err(db)?;
            stores
                .iter()
                .filter_map(|store| store.timezone.parse::<chrono_tz::Tz>().ok())
                .map(local_today)
                .max()
                .unwrap_or_else(|| local_today(chrono_tz::UTC))
        };
        let (from, to) = days(from.0, to.0, today)?;
        let rows = kpis::compare_stores(&self.app.pool, &ids, from, to)
            .await
            .map_err(db)?;
        Ok(Json(
            rows.into_iter()
                .map(|r| {
                    Ok(StoreComparisonView {
                        store_id: r.store_id,
                        name: r.name,
                        orders_placed: r.orders_placed,
                        orders_paid: r.orders_paid,
                        revenue: sum(r.revenue_minor, &r.currency)?,
                        orders_cancelled: r.orders_cancelled,
                        orders_expired: r.orders_expired,
                    })
                })
                .collect::<Result<_, ApiError>>()?,
        ))
    }

    /// Per product: turnover, days of cover, dead stock.
    #[oai(
        path = "/inventory",
        method = "get",
        operation_id = "analytics_inventory"
    )]
    async fn inventory(
        &self,
        req: &Request,
        auth: BearerAuth,
        store_id: Query<Uuid>,
        from: Query<Option<NaiveDate>>,
        to: Query<Option<NaiveDate>>,
        /// A product without a sale for this many days is dead stock (default 30).
        #[oai(validator(minimum(value = "1"), maximum(value = "3650")))]
        dead_after_days: Query<Option<i32>>,
    ) -> Result<Json<Vec<InventoryView>>, ApiError> {
        let Range {
            store_id, from, to, ..
        } = self.range(req, auth, store_id.0, from.0, to.0).await?;
        let rows = kpis::inventory(
            &self.app.pool,
            store_id,
            from,
            to,
            dead_after_days.0.unwrap_or(30),
        )
        .await
        .map_err(db)?;
        Ok(Json(
            rows.into_iter()
                .map(|r| InventoryView {
                    product_id: r.product_id,
                    available: r.available,
                    on_hand: r.on_hand,
                    units_sold: r.units_sold,
                    turnover: r.turnover,
                    days_of_cover: r.days_of_cover,
                    dead_stock: r.dead_stock,
                })
                .collect(),
        ))
    }
}

//! Queries of the kpis read model (the analytics): each sums pre-aggregated rows (per day or
//! product); none scans orders. Amounts are per currency and never summed across currencies.
//! `inventory` reads the stock read model's `stock_levels` beside the product rollups; the
//! customer summary is the customers read model's (`customers::queries::summary`).
//!
//! Money sums are `i128`: one order can total 10^18 minor units, so a few of them pass `i64`.
//! Postgres sums them as `numeric` and returns them as text (exact, and sqlx maps no `numeric`
//! without another crate), parsed exactly.

use chrono::NaiveDate;
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::read_models::minor;

/// KPIs of one store over a range of local days (inclusive).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dashboard {
    pub store_id: Uuid,
    pub currency: String,
    pub orders_placed: i64,
    pub orders_paid: i64,
    pub revenue_minor: i128,
    /// Revenue per paid order (integer division), 0 without paid orders.
    pub average_order_value_minor: i128,
    /// Paid orders per placed order, 0 without placed orders.
    pub conversion: f64,
    pub orders_cancelled: i64,
    pub orders_expired: i64,
    pub receipts_verified: i64,
    pub receipt_verification_p50_seconds: Option<f64>,
    pub receipt_verification_p90_seconds: Option<f64>,
    /// Orders by their current status (not limited to the range).
    pub orders_by_status: Vec<(String, i64)>,
    /// Best sellers in the range by units.
    pub top_products: Vec<TopProduct>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopProduct {
    pub product_id: Uuid,
    pub units_sold: i64,
    pub revenue_minor: i128,
}

impl FromRow<'_, PgRow> for TopProduct {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            product_id: row.try_get("product_id")?,
            units_sold: row.try_get("units_sold")?,
            revenue_minor: minor(row, "revenue_minor")?,
        })
    }
}

/// The dashboard of `store_id` for local days `from..=to`; `None` if the store is unknown.
pub async fn dashboard(
    pool: &PgPool,
    store_id: Uuid,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Option<Dashboard>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    dashboard_on(&mut conn, store_id, from, to).await
}

/// [`dashboard`] on one connection, by unqualified table names: inside a transaction whose
/// `search_path` leads to other copies of the tables (`as_of`'s temporary ones), it reads those.
pub async fn dashboard_on(
    conn: &mut PgConnection,
    store_id: Uuid,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Option<Dashboard>, sqlx::Error> {
    let Some(currency) =
        sqlx::query_scalar::<_, String>("select currency from kpi_stores where store_id = $1")
            .bind(store_id)
            .fetch_optional(&mut *conn)
            .await?
    else {
        return Ok(None);
    };
    let (placed, paid, revenue, cancelled, expired, verified): (i64, i64, String, i64, i64, i64) = sqlx::query_as(
        "select coalesce(sum(orders_placed), 0)::bigint, coalesce(sum(orders_paid), 0)::bigint,
                coalesce(sum(revenue_minor), 0)::text, coalesce(sum(orders_cancelled), 0)::bigint,
                coalesce(sum(orders_expired), 0)::bigint, coalesce(sum(receipts_verified), 0)::bigint
           from kpi_daily where store_id = $1 and day between $2 and $3",
    )
    .bind(store_id)
    .bind(from)
    .bind(to)
    .fetch_one(&mut *conn)
    .await?;
    let revenue: i128 = revenue
        .parse()
        .map_err(|err| sqlx::Error::Decode(Box::new(err)))?;
    let (p50, p90): (Option<f64>, Option<f64>) = sqlx::query_as(
        "select percentile_cont(0.5) within group (order by seconds),
                percentile_cont(0.9) within group (order by seconds)
           from kpi_receipt_verifications where store_id = $1 and day between $2 and $3",
    )
    .bind(store_id)
    .bind(from)
    .bind(to)
    .fetch_one(&mut *conn)
    .await?;
    let orders_by_status: Vec<(String, i64)> = sqlx::query_as(
        "select status, orders::bigint from kpi_order_status where store_id = $1 and orders > 0 order by status",
    )
    .bind(store_id)
    .fetch_all(&mut *conn)
    .await?;
    let top_products: Vec<TopProduct> = sqlx::query_as(
        "select product_id, sum(units_sold)::bigint as units_sold, sum(revenue_minor)::text as revenue_minor
           from kpi_product_daily where store_id = $1 and day between $2 and $3
          group by product_id order by units_sold desc, product_id limit 10",
    )
    .bind(store_id)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(Dashboard {
        store_id,
        currency,
        orders_placed: placed,
        orders_paid: paid,
        revenue_minor: revenue,
        average_order_value_minor: if paid > 0 {
            revenue / i128::from(paid)
        } else {
            0
        },
        conversion: if placed > 0 {
            paid as f64 / placed as f64
        } else {
            0.0
        },
        orders_cancelled: cancelled,
        orders_expired: expired,
        receipts_verified: verified,
        receipt_verification_p50_seconds: p50,
        receipt_verification_p90_seconds: p90,
        orders_by_status,
        top_products,
    }))
}

/// Calendar periods revenue is grouped by (in the store's timezone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    fn sql(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

/// Revenue and paid orders of one period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeriodRevenue {
    /// First local day of the period (Mondays for weeks).
    pub period_start: NaiveDate,
    pub currency: String,
    pub revenue_minor: i128,
    pub orders_paid: i64,
    pub orders_placed: i64,
}

impl FromRow<'_, PgRow> for PeriodRevenue {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            period_start: row.try_get("period_start")?,
            currency: row.try_get("currency")?,
            revenue_minor: minor(row, "revenue_minor")?,
            orders_paid: row.try_get("orders_paid")?,
            orders_placed: row.try_get("orders_placed")?,
        })
    }
}

/// Revenue of `store_id` per period over local days `from..=to`, oldest first.
pub async fn revenue(
    pool: &PgPool,
    store_id: Uuid,
    period: Period,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<PeriodRevenue>, sqlx::Error> {
    sqlx::query_as(
        "select date_trunc($2, day)::date as period_start, currency,
                sum(revenue_minor)::text as revenue_minor, sum(orders_paid)::bigint as orders_paid,
                sum(orders_placed)::bigint as orders_placed
           from kpi_daily where store_id = $1 and day between $3 and $4
          group by 1, 2 order by 1, 2",
    )
    .bind(store_id)
    .bind(period.sql())
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// One store's KPIs beside the others' (per currency; never summed across currencies).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoreComparison {
    pub store_id: Uuid,
    pub name: String,
    pub currency: String,
    pub orders_placed: i64,
    pub orders_paid: i64,
    pub revenue_minor: i128,
    pub orders_cancelled: i64,
    pub orders_expired: i64,
}

impl FromRow<'_, PgRow> for StoreComparison {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            store_id: row.try_get("store_id")?,
            name: row.try_get("name")?,
            currency: row.try_get("currency")?,
            orders_placed: row.try_get("orders_placed")?,
            orders_paid: row.try_get("orders_paid")?,
            revenue_minor: minor(row, "revenue_minor")?,
            orders_cancelled: row.try_get("orders_cancelled")?,
            orders_expired: row.try_get("orders_expired")?,
        })
    }
}

/// The stores in `store_ids` side by side over local days `from..=to`.
pub async fn compare_stores(
    pool: &PgPool,
    store_ids: &[Uuid],
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<StoreComparison>, sqlx::Error> {
    sqlx::query_as(
        "select s.store_id, s.name, s.currency,
                coalesce(sum(d.orders_placed), 0)::bigint as orders_placed,
                coalesce(sum(d.orders_paid), 0)::bigint as orders_paid,
                coalesce(sum(d.revenue_minor), 0)::text as revenue_minor,
                coalesce(sum(d.orders_cancelled), 0)::bigint as orders_cancelled,
                coalesce(sum(d.orders_expired), 0)::bigint as orders_expired
           from kpi_stores s
           left join kpi_daily d on d.store_id = s.store_id and d.day between $2 and $3
          where s.store_id = any($1)
          group by s.store_id, s.name, s.currency
          order by s.currency, coalesce(sum(d.revenue_minor), 0) desc, s.store_id",
    )
    .bind(store_ids)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// One product's movement and cover.
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
pub struct InventoryRow {
    pub product_id: Uuid,
    pub available: i64,
    pub on_hand: i64,
    /// Units sold in the range.
    pub units_sold: i64,
    /// Units sold per on-hand unit in the range.
    pub turnover: f64,
    /// Days the available units last at the range's daily sales rate (`None`: no sales).
    pub days_of_cover: Option<f64>,
    /// No sale within `dead_after_days` before `to` (or never).
    pub dead_stock: bool,
}

/// Inventory analytics of `store_id` over local days `from..=to`.
pub async fn inventory(
    pool: &PgPool,
    store_id: Uuid,
    from: NaiveDate,
    to: NaiveDate,
    dead_after_days: i32,
) -> Result<Vec<InventoryRow>, sqlx::Error> {
    sqlx::query_as(
        "select l.product_id, l.available, l.on_hand,
                coalesce(s.units, 0)::bigint as units_sold,
                case when l.on_hand > 0 then coalesce(s.units, 0)::float8 / l.on_hand else 0 end as turnover,
                case when coalesce(s.units, 0) > 0
                     then l.available / (s.units::float8 / ($3::date - $2::date + 1)) end as days_of_cover,
                (p.last_sold_at is null
                 or p.last_sold_at < (($3::date - $4::int)::timestamp at time zone st.timezone)) as dead_stock
           from stock_levels l
           join kpi_stores st on st.store_id = l.store_id
           left join (select product_id, sum(units_sold) as units from kpi_product_daily
                       where store_id = $1 and day between $2 and $3 group by product_id) s using (product_id)
           left join kpi_products p using (product_id)
          where l.store_id = $1
          order by l.product_id",
    )
    .bind(store_id)
    .bind(from)
    .bind(to)
    .bind(dead_after_days)
    .fetch_all(pool)
    .await
}

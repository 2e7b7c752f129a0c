-- read model "kpis": incremental rollups, so dashboards never scan orders at query time.
-- days are calendar days in the store's timezone at the time of the event.
create table kpi_stores
(
    store_id uuid primary key,
    name     text not null,
    timezone text not null,
    currency text not null
);

-- what the rollups need to remember about each order between its events.
create table kpi_orders
(
    order_id             uuid primary key,
    store_id             uuid        not null,
    customer_id          uuid        not null,
    currency             text        not null,
    total_minor          bigint      not null,
    lines                jsonb       not null,
    placed_at            timestamptz not null,
    receipt_submitted_at timestamptz
);

create table kpi_daily
(
    store_id          uuid    not null,
    currency          text    not null,
    day               date    not null,
    orders_placed     integer not null default 0,
    placed_minor      bigint  not null default 0,
    orders_paid       integer not null default 0,
    revenue_minor     bigint  not null default 0,
    orders_cancelled  integer not null default 0,
    orders_expired    integer not null default 0,
    orders_fulfilled  integer not null default 0,
    orders_completed  integer not null default 0,
    receipts_submitted integer not null default 0,
    receipts_verified integer not null default 0,
    receipts_rejected integer not null default 0,
    primary key (store_id, currency, day)
);

create index kpi_daily_day_idx on kpi_daily (day, store_id);

create table kpi_product_daily
(
    store_id      uuid   not null,
    product_id    uuid   not null,
    day           date   not null,
    units_sold    bigint not null,
    revenue_minor bigint not null,
    primary key (store_id, product_id, day)
);

create table kpi_products
(
    product_id    uuid primary key,
    store_id      uuid        not null,
    units_sold    bigint      not null,
    last_sold_at  timestamptz not null
);

-- seconds from a receipt's submission to its verification, for p50/p90 over any period.
create table kpi_receipt_verifications
(
    receipt_id  uuid primary key,
    store_id    uuid             not null,
    day         date             not null,
    seconds     double precision not null
);

create index kpi_receipt_verifications_store_day_idx on kpi_receipt_verifications (store_id, day);

-- orders per current status, moved on every transition (events name the status they leave).
create table kpi_order_status
(
    store_id uuid    not null,
    status   text    not null,
    orders   integer not null,
    primary key (store_id, status)
);

-- read model "stock": levels per product, every movement, and low/out-of-stock alerts.
create table stock_levels
(
    product_id              uuid primary key,
    store_id                uuid        not null,
    on_hand                 bigint      not null,
    reserved                bigint      not null,
    available               bigint      not null,
    threshold_override      integer,
    store_default_threshold integer     not null,
    effective_threshold     integer     not null,
    level                   text        not null,
    updated_at              timestamptz not null
);

create index stock_levels_store_idx on stock_levels (store_id, level, product_id);

create table stock_history
(
    product_id      uuid        not null,
    global_position bigint      not null,
    store_id        uuid        not null,
    movement        text        not null,
    on_hand_delta   bigint      not null,
    reserved_delta  bigint      not null,
    reason          text,
    note            text,
    order_id        uuid,
    on_hand_after   bigint      not null,
    reserved_after  bigint      not null,
    available_after bigint      not null,
    actor_id        uuid,
    recorded_at     timestamptz not null,
    primary key (product_id, global_position)
);

create index stock_history_store_idx on stock_history (store_id, recorded_at desc);

-- an alert is a period in which a product is not at its normal level: opened when available
-- stock falls to the threshold or to zero, escalated from low to out, resolved on replenishment.
-- its id is the global position of the event that opened it (deterministic across rebuilds).
create table stock_alerts
(
    alert_id          bigint primary key,
    product_id        uuid        not null,
    store_id          uuid        not null,
    level             text        not null check (level in ('low', 'out')),
    available         bigint      not null,
    threshold         integer     not null,
    opened_at         timestamptz not null,
    resolved_at       timestamptz,
    acknowledged_at   timestamptz,
    acknowledged_by   uuid
);

create index stock_alerts_store_open_idx on stock_alerts (store_id, resolved_at, alert_id desc);
create unique index stock_alerts_one_open_per_product on stock_alerts (product_id) where resolved_at is null;

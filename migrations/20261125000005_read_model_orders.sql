-- read model "orders": current state per order, and every event of each order (its timeline).
-- read-model tables hold no serial columns and no defaults that read the clock: a rebuild
-- copies them with `create table ... (like ... including all)` and must reproduce them exactly.
create table orders
(
    order_id            uuid primary key,
    store_id            uuid        not null,
    customer_id         uuid        not null,
    status              text        not null,
    currency            text        not null,
    total_minor         bigint      not null,
    lines               jsonb       not null,
    line_count          integer     not null,
    has_contact         boolean     not null,
    receipt_id          uuid,
    receipt_status      text,
    placed_at           timestamptz not null,
    payment_due_by      timestamptz not null,
    receipt_submitted_at timestamptz,
    paid_at             timestamptz,
    fulfilled_at        timestamptz,
    completed_at        timestamptz,
    cancelled_at        timestamptz,
    expired_at          timestamptz,
    cancelled_by        text,
    status_reason       text,
    updated_at          timestamptz not null,
    last_position       bigint      not null
);

create index orders_store_placed_idx on orders (store_id, placed_at desc, order_id);
create index orders_store_status_placed_idx on orders (store_id, status, placed_at desc, order_id);
create index orders_customer_placed_idx on orders (customer_id, placed_at desc, order_id);

create table order_timeline
(
    order_id        uuid        not null,
    global_position bigint      not null,
    aggregate_type  text        not null,
    event_type      text        not null,
    status_after    text        not null,
    actor_id        uuid,
    actor_role      text        not null,
    channel         text        not null,
    detail          jsonb       not null,
    recorded_at     timestamptz not null,
    primary key (order_id, global_position)
);

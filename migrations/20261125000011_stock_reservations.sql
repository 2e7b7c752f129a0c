-- read model "stock", continued: open reservations (one row per order and product), so the
-- reservation sweep finds candidates without scanning the event store.
create table stock_reservations
(
    product_id  uuid        not null,
    order_id    uuid        not null,
    store_id    uuid        not null,
    quantity    bigint      not null,
    reserved_at timestamptz not null,
    primary key (product_id, order_id)
);

create index stock_reservations_order_idx on stock_reservations (order_id);
create index stock_reservations_reserved_at_idx on stock_reservations (reserved_at);

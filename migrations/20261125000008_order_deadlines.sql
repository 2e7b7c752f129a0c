-- process manager "order expiry": durable payment deadlines. an order is due when it awaits
-- payment past its deadline; the expiry worker expires it through the application layer.
create table order_deadlines
(
    order_id    uuid primary key,
    store_id    uuid        not null,
    due_at      timestamptz not null,
    active      boolean     not null,
    placed_position bigint  not null
);

create index order_deadlines_due_idx on order_deadlines (due_at) where active;

-- read model "customers": per store and currency, a customer's first and last order, order
-- counts and lifetime value (paid orders). "overall" is the sum over stores, per currency.
create table customers
(
    store_id       uuid        not null,
    customer_id    uuid        not null,
    currency       text        not null,
    first_order_at timestamptz not null,
    last_order_at  timestamptz not null,
    orders         integer     not null,
    paid_orders    integer     not null,
    revenue_minor  bigint      not null,
    primary key (store_id, customer_id, currency)
);

create index customers_store_first_idx on customers (store_id, first_order_at);
create index customers_customer_idx on customers (customer_id);

-- which store/currency each order counts for, between its events.
create table customer_orders
(
    order_id    uuid primary key,
    store_id    uuid   not null,
    customer_id uuid   not null,
    currency    text   not null,
    total_minor bigint not null
);

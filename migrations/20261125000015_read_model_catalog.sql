-- read model "catalog": stores with their settings, their staff, and their products, so lists
-- and searches never load aggregates. (no serial columns and no clock defaults: a rebuild copies
-- these tables with `like ... including all`.)
create table stores
(
    store_id                    uuid primary key,
    name                        text        not null,
    currency                    text        not null,
    timezone                    text        not null,
    payment_instructions        text        not null,
    default_low_stock_threshold integer     not null,
    reservation_ttl_minutes     integer     not null,
    created_by                  uuid        not null,
    created_at                  timestamptz not null,
    updated_at                  timestamptz not null,
    last_position               bigint      not null
);

create index stores_created_idx on stores (created_at, store_id);

create table store_staff
(
    store_id    uuid        not null,
    account_id  uuid        not null,
    role        text        not null,
    assigned_by uuid        not null,
    assigned_at timestamptz not null,
    primary key (store_id, account_id)
);

create index store_staff_account_idx on store_staff (account_id, store_id);

create table products
(
    product_id    uuid primary key,
    store_id      uuid        not null,
    name          text        not null,
    description   text        not null,
    sku           text        not null,
    price_minor   bigint      not null,
    currency      text        not null,
    status        text        not null,
    created_at    timestamptz not null,
    updated_at    timestamptz not null,
    last_position bigint      not null
);

create index products_store_name_idx on products (store_id, name, product_id);
create index products_store_sku_idx on products (store_id, sku);

-- customers a store no longer takes orders from
create table customer_blocks
(
    store_id    uuid        not null,
    customer_id uuid        not null,
    reason      text        not null,
    blocked_by  uuid        not null,
    blocked_at  timestamptz not null,
    primary key (store_id, customer_id)
);

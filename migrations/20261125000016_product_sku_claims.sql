-- a sku is unique within its store (case-insensitive). the application layer claims a sku here
-- before the product's event is stored; a claim whose product never came to exist (the process
-- stopped in between) is taken over by the next product that asks for the sku.
create table product_sku_claims
(
    store_id   uuid not null,
    sku_key    text not null,
    product_id uuid not null,
    primary key (store_id, sku_key)
);

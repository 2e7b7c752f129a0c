-- read model "receipts": every payment receipt with its file and decision, and whether the same
-- file (by sha-256) was already submitted for another order: the verification queue.
create table receipts
(
    receipt_id            uuid primary key,
    order_id              uuid        not null,
    store_id              uuid        not null,
    status                text        not null,
    media_type            text        not null,
    size_bytes            bigint      not null,
    sha256                text        not null,
    storage_key           text        not null,
    claimed_amount_minor  bigint,
    claimed_currency      text,
    submitted_by          uuid        not null,
    channel               text        not null,
    submitted_at          timestamptz not null,
    decided_by            uuid,
    decided_at            timestamptz,
    rejection_reason      text,
    -- earlier receipts of the same store with the same file, for other orders
    duplicate_of          uuid[]      not null,
    -- how many earlier receipts of other stores had the same file
    duplicates_elsewhere  integer     not null,
    last_position         bigint      not null
);

create index receipts_store_status_idx on receipts (store_id, status, submitted_at, receipt_id);
create index receipts_order_idx on receipts (order_id);
create index receipts_sha256_idx on receipts (sha256);

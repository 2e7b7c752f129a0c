-- the notification outbox (docs/adr/0007-telegram-bot.md, ARCHITECTURE rule 7): the process
-- manager "notification-outbox" records who is to be told what, in its checkpoint's transaction;
-- a delivery worker expands each row into deliveries (one per recipient and channel) and sends
-- them at least once. not a read model: never rebuilt (that would send the past again).
create table notification_outbox
(
    outbox_id       bigserial primary key,
    global_position bigint      not null,
    -- the recipient: an account, or the staff of a store holding a permission
    account_id      uuid,
    store_id        uuid,
    permission      text,
    kind            text        not null,
    params          jsonb       not null,
    created_at      timestamptz not null,
    expanded_at     timestamptz,
    check ((account_id is null) <> (store_id is null and permission is null))
);

create unique index notification_outbox_event_idx
    on notification_outbox (global_position, kind, account_id, store_id) nulls not distinct;
create index notification_outbox_pending_idx on notification_outbox (outbox_id) where expanded_at is null;

-- the order and product facts the outbox needs to name recipients (its own copy: it is replayed
-- by nobody else)
create table outbox_orders
(
    order_id    uuid primary key,
    store_id    uuid not null,
    customer_id uuid not null
);

create table outbox_products
(
    product_id uuid primary key,
    store_id   uuid not null
);

create table notification_deliveries
(
    delivery_id     uuid primary key,
    outbox_id       bigint      not null references notification_outbox (outbox_id),
    account_id      uuid        not null,
    channel         text        not null,
    status          text        not null check (status in ('pending', 'sent', 'failed', 'skipped')),
    attempts        integer     not null default 0,
    next_attempt_at timestamptz not null,
    last_error      text,
    sent_at         timestamptz,
    unique (outbox_id, account_id, channel)
);

create index notification_deliveries_due_idx
    on notification_deliveries (next_attempt_at) where status = 'pending';

-- start at the head of the log: notify about what happens from now on, not about the past.
insert into projection_checkpoints (name, transaction_id, global_position)
select 'notification-outbox',
       coalesce((select transaction_id::text::bigint from events
                  order by transaction_id desc, global_position desc limit 1), 0),
       coalesce((select global_position from events
                  order by transaction_id desc, global_position desc limit 1), 0)
on conflict (name) do nothing;

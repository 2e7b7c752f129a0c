-- the notification center: one row per recipient of an outbox row, made when the delivery
-- worker expands it (linked to telegram or not), rendered in the recipient's language. unique
-- (account_id, outbox_id): exactly once per recipient however often expansion is retried.
create table notifications
(
    notification_id bigserial primary key,
    account_id      uuid        not null,
    outbox_id       bigint      not null references notification_outbox (outbox_id),
    -- the event that caused it
    global_position bigint      not null,
    kind            text        not null,
    priority        text        not null check (priority in ('urgent', 'normal', 'low')),
    title           text        not null,
    body            text        not null,
    -- where a web client takes the reader (a path of the api), if anywhere
    link            text,
    -- what a browser should sound like: 'alert', 'default' or 'none'
    sound           text        not null check (sound in ('alert', 'default', 'none')),
    params          jsonb       not null,
    created_at      timestamptz not null default now(),
    read_at         timestamptz,
    unique (account_id, outbox_id)
);

create index notifications_account_idx on notifications (account_id, notification_id desc);
create index notifications_unread_idx on notifications (account_id) where read_at is null;

-- every instance hears of new rows (websocket sessions are pushed theirs): the payload is the
-- recipient's account id; listeners read the rows after the last id they sent.
create function notifications_notify() returns trigger
    language plpgsql as
$$
begin
    perform pg_notify('shopfront_notifications', new.account_id::text);
    return null;
end;
$$;

create trigger notifications_notify
    after insert on notifications
    for each row
execute function notifications_notify();

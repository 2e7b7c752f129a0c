-- the global log (docs/adr/0001-global-log.md): every event gets a global position, the id of
-- the transaction that wrote it and the time it was recorded. readers follow
-- (transaction_id, global_position) and read only below pg_snapshot_xmin(pg_current_snapshot()),
-- so an event whose transaction commits after a later-numbered one is never skipped.
alter table events
    add column global_position bigserial   not null,
    add column transaction_id  xid8        not null default pg_current_xact_id(),
    add column recorded_at     timestamptz not null default now();

alter table events add constraint events_global_position_key unique (global_position);

create index events_log_order_idx on events (transaction_id, global_position);

-- readers listen on this channel; notify is delivered at commit, once per transaction and payload.
create function events_notify() returns trigger
    language plpgsql as
$$
begin
    perform pg_notify('shopfront_events', '');
    return null;
end;
$$;

create trigger events_notify_after_insert
    after insert on events
    for each statement
execute function events_notify();

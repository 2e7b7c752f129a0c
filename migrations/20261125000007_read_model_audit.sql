-- read model "audit": one row per event with who, through what, and the payload.
create table audit_events
(
    global_position    bigint primary key,
    transaction_id     bigint      not null,
    aggregate_type     text        not null,
    aggregate_id       text        not null,
    sequence           bigint      not null,
    event_type         text        not null,
    event_version      text        not null,
    store_id           uuid,
    actor_id           uuid,
    actor_role         text        not null,
    channel            text        not null,
    request_id         text        not null,
    correlation_id     uuid,
    causation_position bigint,
    client_ip          text,
    user_agent         text,
    payload            jsonb       not null,
    recorded_at        timestamptz not null
);

create index audit_events_actor_idx on audit_events (actor_id, global_position);
create index audit_events_store_idx on audit_events (store_id, global_position);
create index audit_events_aggregate_idx on audit_events (aggregate_type, aggregate_id, global_position);
create index audit_events_type_idx on audit_events (event_type, global_position);
create index audit_events_time_idx on audit_events (recorded_at);

-- which store each aggregate belongs to, learned from its first event.
create table audit_aggregate_stores
(
    aggregate_type text not null,
    aggregate_id   text not null,
    store_id       uuid not null,
    primary key (aggregate_type, aggregate_id)
);

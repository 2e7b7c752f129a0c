-- the projection runtime (docs/adr/0003-projection-runtime.md): one row per projection, advanced
-- in the same transaction as the projection's tables, so effects happen exactly once.
create table projection_checkpoints
(
    name            text primary key,
    transaction_id  bigint      not null default 0,
    global_position bigint      not null default 0,
    events_applied  bigint      not null default 0,
    status          text        not null default 'running' check (status in ('running', 'failed')),
    last_error      text,
    updated_at      timestamptz not null default now()
);

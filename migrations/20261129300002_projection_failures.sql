-- why a projection stopped or restarted, for `projections status` and `/health/ready`
-- (docs/adr/0003-projection-runtime.md): the event a failed projection stopped at (its global
-- position and type; `last_error` has the error), and how often its runner restarted after a
-- panic, with the last reason. `restarts` is never reset: a projection that keeps panicking
-- shows it.
alter table projection_checkpoints
    add column failed_position     bigint,
    add column failed_event_type   text,
    add column restarts            integer not null default 0,
    add column last_restart_reason text,
    add column last_restart_at     timestamptz;

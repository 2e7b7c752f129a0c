-- the owners' daily summary (a low-priority notification): one row per store and local day
-- summarised, written in the transaction that records the summary's outbox row, so a day is
-- summarised once however often, and on however many instances, the job runs.
create table daily_summaries
(
    store_id    uuid        not null,
    day         date        not null,
    recorded_at timestamptz not null default now(),
    primary key (store_id, day)
);

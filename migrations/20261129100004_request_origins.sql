-- where each request came from (client ip address and user agent): personal data, so kept
-- outside the event log, one row per request that wrote events, and deleted when the person is
-- erased. an event's metadata names its request_id; join here to see the device.
create table request_origins
(
    request_id  text primary key,
    account_id  uuid,
    client_ip   text,
    user_agent  text,
    recorded_at timestamptz not null default now()
);

create index request_origins_account_idx on request_origins (account_id);

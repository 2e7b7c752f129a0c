-- read model "audit": events no longer carry the client's ip address or user agent (they live in
-- request_origins, erasable); the client's own x-request-id is kept apart from the server's id.
-- rebuilt from the log like any read model (older events' ip/agent are not read back).
alter table audit_events
    drop column client_ip,
    drop column user_agent,
    add column client_request_id text;

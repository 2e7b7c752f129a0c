-- idempotency keys (src/http/idempotency.rs, docs/operations.md): the first response to a POST
-- sent with an `Idempotency-Key`, replayed to its retries until the row expires. A cache of
-- HTTP responses, not business state: it lives in an ordinary table, never in events.
-- Neither the key nor the response is readable from the row alone: `id` is a hash of the
-- caller's scope, method, path and key, and `body` is sealed with a key derived from them.
create table idempotency_keys
(
    id           bytea       primary key,
    -- which request claimed the row; only that request may complete or release it
    claim_id     uuid        not null,
    -- keyed sha-256 of the request's content type and body: same key, other body = reuse
    fingerprint  bytea       not null,
    state        text        not null check (state in ('in_progress', 'completed')),
    -- the operation that answered (poem-openapi operation id), for metrics on replays
    operation    text,
    status       smallint,
    -- [[name, value], ...] of the headers a replay repeats (content-type, location, ...)
    headers      jsonb,
    -- nonce || chacha20-poly1305 ciphertext of the response body
    body         bytea,
    created_at   timestamptz not null default now(),
    -- an in-progress row past this time was abandoned (its instance died): a retry takes over
    locked_until timestamptz not null,
    expires_at   timestamptz not null,
    check (state = 'in_progress' or (status is not null and headers is not null and body is not null))
);

-- the purge deletes expired rows in batches
create index idempotency_keys_expires_at on idempotency_keys (expires_at);

-- authentication (docs/adr/0004-authentication.md). credentials, sessions and tokens live in
-- ordinary tables, never in events: the log is forever, secrets must be revocable and erasable.
create table credentials
(
    account_id    uuid primary key,
    -- lowercased; personal data in an ordinary table, deleted when the person is erased
    email         text        not null unique,
    password_hash text        not null,
    created_at    timestamptz not null default now()
);

-- the key access tokens are signed with, made once per database (a deployment may instead
-- pass SHOPFRONT_JWT_SECRET).
create table auth_signing_keys
(
    id         smallint primary key check (id = 1),
    secret     bytea       not null check (octet_length(secret) >= 32),
    created_at timestamptz not null default now()
);

-- one row per login: the refresh-token family. revoking it ends the session everywhere.
create table auth_sessions
(
    session_id     uuid primary key,
    account_id     uuid        not null,
    created_at     timestamptz not null,
    last_seen_at   timestamptz not null,
    user_agent     text,
    client_ip      text,
    revoked_at     timestamptz,
    revoked_reason text
);

create index auth_sessions_account_idx on auth_sessions (account_id, created_at desc);

-- refresh tokens are opaque and stored hashed; each use rotates it. using an already rotated
-- token again means it leaked: the whole session is revoked.
create table refresh_tokens
(
    token_hash bytea primary key,
    session_id uuid        not null references auth_sessions (session_id),
    issued_at  timestamptz not null,
    expires_at timestamptz not null,
    rotated_at timestamptz
);

create index refresh_tokens_session_idx on refresh_tokens (session_id);

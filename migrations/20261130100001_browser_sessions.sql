-- sessions of the console in a browser (src/console/, docs/console.md). the browser holds an
-- opaque secret in an httponly cookie; only its sha-256 is kept. each row is one open session
-- of auth_sessions, so it is listed, revoked and blocked with the account's other sessions,
-- and erased with them.
create table browser_sessions
(
    secret_hash bytea primary key,
    session_id  uuid        not null unique references auth_sessions (session_id) on delete cascade,
    created_at  timestamptz not null,
    expires_at  timestamptz not null
);

-- telegram login widget data already used to sign a browser in: the signed callback url is
-- good once, not for as long as its auth_date is fresh.
create table telegram_widget_logins
(
    hash    text primary key,
    used_at timestamptz not null
);

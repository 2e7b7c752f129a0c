-- read model "accounts": who each account is, for profiles and staff lists. E-mail and display
-- name stay sealed (the same ciphertext as in the events), so erasing a person's key erases them
-- here too; the reader opens them with the vault. (no clock defaults: a rebuild copies this table
-- with `like ... including all`.)
create table accounts
(
    account_id       uuid primary key,
    telegram_user_id bigint,
    email            jsonb,
    display_name     jsonb,
    channel          text        not null,
    platform_admin   boolean     not null,
    blocked_reason   text,
    blocked_by       uuid,
    blocked_at       timestamptz,
    registered_at    timestamptz not null,
    updated_at       timestamptz not null
);

create index accounts_telegram_idx on accounts (telegram_user_id);
create index accounts_registered_idx on accounts (registered_at, account_id);

-- authentication extras (docs/adr/0004-authentication.md): telegram identities, the second-factor
-- setting, pending logins (qr and second factor) and long-lived api tokens. ordinary tables, never
-- events: they hold secrets (hashed) and must be revocable.

-- which account a telegram user is. the account aggregate records the id (AccountRegistered,
-- TelegramLinked); this table makes it unique across accounts and findable by telegram id. the
-- application layer reserves a row here before it registers or links an account.
create table telegram_identities
(
    telegram_user_id bigint primary key check (telegram_user_id > 0),
    account_id       uuid        not null unique,
    linked_at        timestamptz not null default now()
);

-- accounts that existed before this table: each account's latest telegram id, first come first
-- served if two accounts ever shared one.
insert into telegram_identities (telegram_user_id, account_id, linked_at)
select distinct on (telegram_user_id) telegram_user_id, account_id, recorded_at
  from (select distinct on (aggregate_id)
               coalesce((payload -> 'AccountRegistered' ->> 'telegram_user_id'),
                        (payload -> 'TelegramLinked' ->> 'telegram_user_id'))::bigint as telegram_user_id,
               aggregate_id::uuid as account_id,
               recorded_at,
               global_position
          from events
         where aggregate_type = 'Account'
           and event_type in ('AccountRegistered', 'TelegramLinked')
           and coalesce(payload -> 'AccountRegistered' ->> 'telegram_user_id',
                        payload -> 'TelegramLinked' ->> 'telegram_user_id') is not null
         order by aggregate_id, sequence desc) latest
 order by telegram_user_id, global_position
on conflict do nothing;

-- per-account authentication settings. a missing row means the defaults (no second factor).
create table auth_account_settings
(
    account_id           uuid primary key,
    second_factor_telegram boolean     not null default false,
    updated_at           timestamptz not null default now()
);

-- a login waiting for telegram: a qr login (kind 'qr': whoever confirms the deep link in the bot
-- logs in) or a second factor (kind 'second_factor': the account's own telegram user approves or
-- denies). the client that started it polls with a secret only it holds (poll_secret_hash); the
-- deep link of a qr login carries a different secret (deep_link_hash), so seeing the qr code is
-- not enough to collect the tokens. tokens are handed out once (status 'completed').
--
-- the telegram bot reads this table: pending second-factor rows with notified_at null are
-- prompts to send to telegram_user_id (approve/deny buttons carrying login_id); it sets
-- notified_at once sent. an insert also sends notify 'auth_login_challenges' (payload login_id).
create table auth_login_challenges
(
    login_id         uuid primary key,
    kind             text        not null check (kind in ('qr', 'second_factor')),
    status           text        not null default 'pending'
        check (status in ('pending', 'approved', 'denied', 'completed')),
    -- second factor: from the start; qr: the account that confirmed
    account_id       uuid,
    -- second factor: who must approve; qr: who confirmed
    telegram_user_id bigint,
    poll_secret_hash bytea       not null unique,
    deep_link_hash   bytea unique,
    -- the device that started the login (the bot shows it; the session records it)
    client_ip        text,
    user_agent       text,
    created_at       timestamptz not null,
    expires_at       timestamptz not null,
    decided_at       timestamptz,
    notified_at      timestamptz,
    completed_at     timestamptz,
    session_id       uuid,
    check ((kind = 'qr') = (deep_link_hash is not null)),
    check (kind = 'qr' or (account_id is not null and telegram_user_id is not null)),
    check (status = 'pending' or (account_id is not null and telegram_user_id is not null))
);

create index auth_login_challenges_pending_idx on auth_login_challenges (created_at)
    where status = 'pending' and kind = 'second_factor';

-- long-lived tokens for api clients and auditors: scoped to stores and a role, optionally read
-- only. the secret is shown once and stored as its sha-256; token_prefix (the first characters)
-- lets its owner recognise it in a list.
create table api_tokens
(
    token_id     uuid primary key,
    account_id   uuid        not null,
    name         text        not null check (length(name) between 1 and 100),
    token_hash   bytea       not null unique,
    token_prefix text        not null,
    role         text        not null check (role in ('OWNER', 'ADMIN', 'VENDOR', 'AUDITOR')),
    read_only    boolean     not null,
    store_ids    uuid[]      not null check (cardinality(store_ids) between 1 and 100),
    created_at   timestamptz not null,
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

create index api_tokens_account_idx on api_tokens (account_id, created_at desc);

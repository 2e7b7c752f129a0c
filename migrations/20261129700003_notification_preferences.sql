-- per account: which push channels are on (the notification center always is), whether e-mail
-- also carries normal notifications, quiet hours (local times in an iana time zone) and the
-- language notifications are written in. no row: the defaults (telegram and e-mail on, e-mail
-- for urgent only, no quiet hours, the telegram chat's language or english).
create table notification_preferences
(
    account_id       uuid primary key,
    telegram         boolean     not null default true,
    email            boolean     not null default true,
    email_for_normal boolean     not null default false,
    quiet_start      time,
    quiet_end        time,
    time_zone        text,
    language         text check (language in ('en', 'ru')),
    updated_at       timestamptz not null default now(),
    check ((quiet_start is null) = (quiet_end is null)
        and (quiet_start is null or time_zone is not null))
);

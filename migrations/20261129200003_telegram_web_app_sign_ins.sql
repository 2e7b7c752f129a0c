-- mini app initData already used to sign in (src/app/telegram_login.rs): each payload signs in
-- once. keyed by the payload's signature (the decoded hmac telegram computed over it); a row is
-- kept until the payload would be refused as too old anyway (--telegram-auth-max-age-seconds),
-- and older rows are deleted by the next sign-in.
create table telegram_web_app_sign_ins
(
    signature  bytea primary key,
    used_at    timestamptz not null,
    expires_at timestamptz not null
);

create index telegram_web_app_sign_ins_expires_idx on telegram_web_app_sign_ins (expires_at);

-- read model "accounts": the telegram user id is personal data. events of version 2.0 carry it
-- sealed with the person's key, so the read model keeps what the events hold (jsonb: a sealed
-- value, or the bare number of a version 1.0 event) instead of a clear bigint, and records when
-- the person was erased (PersonalDataErased blanks their id, e-mail and name). lookups by
-- telegram id go through telegram_identities, which erasure empties.
--
-- existing rows are converted in place to exactly what a replay gives (no erasure event
-- exists yet; version 1.0 ids become jsonb numbers).
alter table accounts
    add column telegram_user jsonb,
    add column erased_at     timestamptz;

update accounts
   set telegram_user = to_jsonb(telegram_user_id)
 where telegram_user_id is not null;

-- its index goes with it
alter table accounts
    drop column telegram_user_id;

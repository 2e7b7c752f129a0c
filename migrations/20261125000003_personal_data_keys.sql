-- crypto-shredding (ARCHITECTURE rule 3): one key per person. personal data enters events only
-- sealed with its subject's key. erasing a person deletes the key (the row stays, to record
-- when): every sealed copy in the log becomes unreadable while the log itself stays intact.
create table personal_data_keys
(
    subject_id uuid primary key,
    key        bytea check (key is null or octet_length(key) = 32),
    created_at timestamptz not null default now(),
    erased_at  timestamptz,
    check ((key is null) = (erased_at is not null))
);

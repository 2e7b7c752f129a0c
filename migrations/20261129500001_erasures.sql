-- erasing a person deletes their key row outright (architecture rule 3): nothing of the key
-- stays behind. that they were erased, which sealing and readers still need to know, is kept
-- here instead: no key is ever made again for a subject listed here, and every value sealed
-- for them reads as erased.
create table erasures
(
    subject_id uuid primary key,
    erased_at  timestamptz not null
);

-- people erased before this table existed: their emptied key rows become tombstones here.
insert into erasures (subject_id, erased_at)
select subject_id, erased_at
  from personal_data_keys
 where key is null;

delete from personal_data_keys where key is null;

-- a key row now always holds a key (dropping erased_at drops the check that paired the two).
alter table personal_data_keys
    drop column erased_at,
    alter column key set not null;

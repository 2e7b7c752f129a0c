-- one saved state per aggregate. postgres-es keyed snapshots by (type, id, last_sequence), so a
-- saved state it could not read was written again as a second row beside the first; the
-- application's event store (src/app/event_store.rs) rewrites an unreadable state in place,
-- and this key makes a second row impossible. keep the newest row of any duplicates.
delete from snapshots s
 using snapshots newer
 where newer.aggregate_type = s.aggregate_type
   and newer.aggregate_id = s.aggregate_id
   and newer.last_sequence > s.last_sequence;

alter table snapshots drop constraint snapshots_pkey;
alter table snapshots add constraint snapshots_pkey primary key (aggregate_type, aggregate_id);

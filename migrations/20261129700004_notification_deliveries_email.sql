-- deliveries by e-mail beside telegram, and why a delivery was skipped (no telegram user, no
-- e-mail address, the channel not configured, the recipient no longer to be told).
alter table notification_deliveries
    add column skipped_reason text,
    add constraint notification_deliveries_channel_check check (channel in ('telegram', 'email'));

create index notification_deliveries_failed_idx
    on notification_deliveries (outbox_id) where status = 'failed';

-- a priority per notification (docs/architecture.md, "Notifications"): the outbox decides it by
-- kind; the delivery worker routes by it (urgent: every channel the recipient enabled, normal:
-- telegram and the notification center, low: the notification center only). rows recorded
-- before this migration are normal.
alter table notification_outbox
    add column priority text not null default 'normal'
        check (priority in ('urgent', 'normal', 'low'));

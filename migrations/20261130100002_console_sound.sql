-- whether the console plays a sound when a notification arrives (per account, on by default).
alter table notification_preferences add column console_sound boolean not null default true;

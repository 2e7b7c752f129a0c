-- re-authentication of a session (docs/adr/0004-authentication.md): when the session last
-- proved itself again (the password, or an approval in telegram). changing how the account
-- signs in (linking telegram, the second factor) needs one younger than
-- --reauthentication-ttl-seconds and uses it up (sets it back to null).
alter table auth_sessions add column reauthenticated_at timestamptz;

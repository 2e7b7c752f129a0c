-- what a second-factor approval is for: 'login' (approving it lets the polling client collect
-- a new session) or 'reauthentication' (approving it re-authenticates session_id, the session
-- that asked, before a sensitive change; it never opens a session). the bot words its prompt
-- by it. existing rows are logins.
alter table auth_login_challenges
    add column purpose text not null default 'login'
        check (purpose in ('login', 'reauthentication'));

alter table auth_login_challenges
    add constraint auth_login_challenges_reauthentication_check
        check (purpose = 'login' or (kind = 'second_factor' and session_id is not null));

-- the hash chain over the global log (docs/auditing.md, src/app/audit/chain.rs): one row per
-- event, in log order, written by the sealer (one leader). h_n = sha-256(h_{n-1} || canonical
-- bytes of the n-th event). verification recomputes it from the events and compares.
create table audit_chain
(
    chain_index     bigint primary key check (chain_index > 0),
    transaction_id  bigint not null,
    global_position bigint not null unique,
    hash            bytea  not null check (length(hash) = 32)
);

-- signed checkpoints: every n events or t minutes, an ed25519 signature over
-- (chain_index, transaction_id, global_position, hash). exported (and posted to the admins'
-- telegram chat, `posted_at`) so a copy lives outside the database.
create table audit_checkpoints
(
    chain_index     bigint primary key references audit_chain (chain_index),
    transaction_id  bigint      not null,
    global_position bigint      not null,
    hash            text        not null,
    signed_at       timestamptz not null,
    public_key      text        not null,
    signature       text        not null,
    posted_at       timestamptz
);

create index audit_checkpoints_unposted_idx on audit_checkpoints (chain_index) where posted_at is null;

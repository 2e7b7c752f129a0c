-- the telegram bot's conversations (docs/adr/0007-telegram-bot.md): per private chat, the language
-- chosen, what the bot is waiting for (a receipt for an order, a rejection reason, ...) and the
-- cart. adapter state, not business state: the orders themselves are events.
create table telegram_chats
(
    chat_id    bigint primary key,
    account_id uuid,
    language   text        not null,
    state      jsonb       not null default '{"kind": "idle"}',
    cart       jsonb       not null default '{"lines": []}',
    updated_at timestamptz not null default now()
);


//! A fake Telegram Bot API server for the black-box tests, so that no test ever reaches Telegram.
//!
//! The bot under test is pointed at it with `Bot::new(token).set_api_url(fake.url())` (in the
//! service: the `telegram_api_url` setting). The fake speaks the dialect teloxide-core 0.13
//! speaks: `POST /bot<TOKEN>/<method>` with a JSON, `multipart/form-data` or url-encoded body
//! (or a query string), answered `{"ok":true,"result":…}` in the shapes Telegram sends, and
//! `GET /file/bot<TOKEN>/<file_path>` for downloads.
//!
//! How a test uses it:
//! 1. `FakeTelegram::start(token)` binds 127.0.0.1 on a free port, one server per test.
//! 2. The test plays the users: [`FakeTelegram::text`], [`FakeTelegram::command`],
//!    [`FakeTelegram::photo`], [`FakeTelegram::document`], [`FakeTelegram::callback`],
//!    [`FakeTelegram::press`] queue updates; a pending `getUpdates` long poll wakes at once.
//! 3. The test awaits what the bot did: [`FakeTelegram::next_message_to`],
//!    [`FakeTelegram::wait_for`], [`FakeTelegram::answered_callback`]. Waiting is driven by a
//!    `watch` channel the server bumps on every change, never by sleeping; each wait fails the
//!    test after [`WAIT`] with the list of requests the bot made, which is usually the diagnosis.
//! 4. Every request is kept ([`FakeTelegram::all_requests`]) with its parsed parameters, the
//!    bytes of uploaded files, and how it was answered.
//!
//! Where Telegram refuses a request, the fake refuses it the same way (status and the exact
//! description teloxide maps to an `ApiError`), so bugs that only Telegram would catch are caught
//! here too: sending to a chat that never wrote to the bot (`chat not found`), to a user who
//! blocked it, empty or over-long texts, callback data over 64 bytes, edits that change nothing
//! (`message is not modified`), a second answer to one callback query, `getFile` on a file over
//! 20 MB, a second bot instance polling at the same time (`409 Conflict` for the older poll).
//! What it does not do: parse HTML/MarkdownV2 (texts are stored as sent), groups and channels,
//! inline mode, webhooks, or per-chat rate limits (inject a 429 with
//! [`FakeTelegram::fail_next`] instead).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{Data, Multipart, Path};
use poem::{
    handler, Body, EndpointExt, FromRequest, Request, RequestBody, Response, Route, Server,
};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long every `await` of the test-side API waits before it fails the test. Generous: the
/// bot under test may go through the database and the projections before it answers, on a
/// machine shared with other test binaries.
pub const WAIT: Duration = Duration::from_secs(20);

/// The username [`FakeTelegram::start`] gives the bot (`getMe`); the same one the Telegram login
/// tests configure.
pub const BOT_USERNAME: &str = "shopfront_test_bot";

/// Telegram lets bots download files up to 20 MB through `getFile`; bigger ones are refused.
pub const GET_FILE_LIMIT: u32 = 20 * 1024 * 1024;

/// A Telegram user writing to the bot in a private chat (whose chat id is the user id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TgUser {
    pub id: i64,
    pub first_name: String,
    pub last_name: Option<String>,
    pub username: Option<String>,
    /// The IETF tag of the user's Telegram interface language (`ru`, `en`), which the bot may
    /// use to pick its language.
    pub language_code: Option<String>,
}

impl TgUser {
    /// A user with a Russian-language Telegram.
    pub fn ru(id: i64, first_name: &str) -> TgUser {
        TgUser::speaking(id, first_name, "ru")
    }

    /// A user with an English-language Telegram.
    pub fn en(id: i64, first_name: &str) -> TgUser {
        TgUser::speaking(id, first_name, "en")
    }

    fn speaking(id: i64, first_name: &str, language: &str) -> TgUser {
        TgUser {
            id,
            first_name: first_name.into(),
            last_name: None,
            username: None,
            language_code: Some(language.into()),
        }
    }

    /// The same user with a public @username.
    pub fn with_username(mut self, username: &str) -> TgUser {
        self.username = Some(username.into());
        self
    }

    fn user_json(&self) -> Value {
        let mut user = json!({"id": self.id, "is_bot": false, "first_name": self.first_name});
        insert_some(&mut user, "last_name", self.last_name.clone());
        insert_some(&mut user, "username", self.username.clone());
        insert_some(&mut user, "language_code", self.language_code.clone());
        user
    }

    fn chat_json(&self) -> Value {
        let mut chat = json!({"id": self.id, "type": "private", "first_name": self.first_name});
        insert_some(&mut chat, "last_name", self.last_name.clone());
        insert_some(&mut chat, "username", self.username.clone());
        chat
    }
}

/// A document a user sends, for [`FakeTelegram::document_with`].
#[derive(Clone, Debug)]
pub struct IncomingDocument {
    pub bytes: Vec<u8>,
    pub file_name: String,
    pub mime_type: String,
    pub caption: Option<String>,
    /// The `file_size` Telegram announces, when it should differ from `bytes.len()`: a test
    /// of the bot's size limits declares 25 MB without sending 25 MB. Downloads serve `bytes`;
    /// `getFile` refuses files declared over [`GET_FILE_LIMIT`] as Telegram does.
    pub declared_size: Option<u32>,
}

/// One button of an inline keyboard the bot sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Button {
    pub text: String,
    pub callback_data: Option<String>,
    pub url: Option<String>,
    /// The Mini App URL of a `web_app` button.
    pub web_app: Option<String>,
}

/// A file the bot sent along with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentFile {
    pub file_name: Option<String>,
    pub mime_type: Option<String>,
    /// The bytes uploaded (or those of the known file id re-sent); `None` when the bot sent an
    /// HTTP URL for Telegram to fetch, which the fake does not do.
    pub bytes: Option<Vec<u8>>,
}

/// A message as the bot made it look in a chat: sent, or after an edit.
#[derive(Clone, Debug, PartialEq)]
pub struct SentMessage {
    pub chat_id: i64,
    pub message_id: i32,
    /// The call that produced this state: `sendMessage`, `sendPhoto`, `sendDocument`,
    /// `editMessageText` or `editMessageCaption`.
    pub method: String,
    /// The text, or the caption of a photo or document (empty when it has none), as sent: the
    /// fake does not parse `parse_mode` markup.
    pub text: String,
    pub parse_mode: Option<String>,
    /// The inline keyboard, row by row (empty when there is none).
    pub buttons: Vec<Vec<Button>>,
    /// The `reply_markup` as sent, whatever its kind (also reply keyboards,
    /// `remove_keyboard`, `force_reply`, which `buttons` does not show).
    pub reply_markup: Option<Value>,
    pub photo: Option<SentFile>,
    pub document: Option<SentFile>,
}

impl SentMessage {
    /// The inline button labelled `text`, if the message has one.
    pub fn button(&self, text: &str) -> Option<&Button> {
        self.buttons.iter().flatten().find(|b| b.text == text)
    }

    /// The labels of the inline buttons, row after row.
    pub fn button_texts(&self) -> Vec<&str> {
        self.buttons
            .iter()
            .flatten()
            .map(|b| b.text.as_str())
            .collect()
    }
}

/// How the bot's answer to a callback query looked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnsweredCallback {
    pub text: Option<String>,
    pub show_alert: bool,
    pub url: Option<String>,
}

/// A way for a test to make the next call of a method fail, to test the bot's retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// `429 Too Many Requests` with `parameters.retry_after` seconds, as flood control does.
    RetryAfter(u32),
    /// `500 Internal Server Error`. Mind that teloxide-core sleeps 10 s after any 5xx before it
    /// even reads the answer.
    ServerError,
    /// Any other refusal, e.g. `403` `"Forbidden: bot was blocked by the user"`.
    Api { status: u16, description: String },
}

/// How the fake answered a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    /// Refused as Telegram would (bad token, unknown chat, message not modified…).
    Refused {
        status: u16,
        description: String,
    },
    /// Failed on purpose by [`FakeTelegram::fail_next`].
    Injected(Failure),
}

/// A file uploaded in a `multipart/form-data` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadedFile {
    /// The parameter that refers to it (`photo` for `"photo": "attach://<part>"`).
    pub field: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// One request the bot made.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Position in [`FakeTelegram::all_requests`].
    pub seq: usize,
    /// The method as the bot spelled it (`sendMessage`), or `download` for `GET /file/…`.
    pub method: String,
    /// The parameters as one JSON object, whatever the encoding: numbers, booleans and JSON
    /// values (`reply_markup`) sent as multipart or form text are parsed back, free-text
    /// parameters (`text`, `caption`, ids of files and queries) stay strings.
    pub params: Value,
    pub files: Vec<UploadedFile>,
    pub outcome: Outcome,
    pub received_at: Instant,
}

/// The fake server. Dropping it stops the server and wakes pending long polls.
pub struct FakeTelegram {
    shared: Arc<Shared>,
    url: url::Url,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

impl FakeTelegram {
    /// Starts a fake Bot API server for the bot with `token` (`<bot id>:<secret>`) on a free
    /// port of 127.0.0.1. Requests with any other token are refused `401 Unauthorized`.
    pub async fn start(token: &str) -> FakeTelegram {
        let bot_id = token
            .split(':')
            .next()
            .and_then(|id| id.parse::<i64>().ok())
            .expect("a bot token starts with the bot's numeric id and a colon");
        let (changes, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            bot_id,
            state: Mutex::new(State::default()),
            changes,
            stop: CancellationToken::new(),
        });
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .expect("bind the fake Telegram server");
        let port = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().map(|a| a.port()))
            .expect("the fake Telegram server has a TCP address");
        let routes = Route::new()
            .at("/file/:bot/*path", download)
            .at("/:bot/:method", api)
            .data(shared.clone());
        let stop = shared.stop.clone();
        tokio::spawn(async move {
            // Pending long polls end on `stop` too, so a short grace period suffices.
            let _ = Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(
                    routes,
                    stop.cancelled_owned(),
                    Some(Duration::from_secs(1)),
                )
                .await;
        });
        FakeTelegram {
            shared,
            url: format!("http://127.0.0.1:{port}/")
                .parse()
                .expect("a valid URL"),
        }
    }

    /// The API URL to give the bot (`Bot::set_api_url`, the `telegram_api_url` setting).
    pub fn url(&self) -> url::Url {
        self.url.clone()
    }

    /// The bot's @username as `getMe` reports it.
    pub fn bot_username(&self) -> &'static str {
        BOT_USERNAME
    }

    /// `user` sends `text`; returns the message id of the user's message.
    pub fn text(&self, user: &TgUser, text: &str) -> i32 {
        self.push_message(user, json!({"text": text}))
    }

    /// `user` sends a command line such as `/start store_…` (with the `bot_command` entity
    /// Telegram attaches); returns the message id.
    pub fn command(&self, user: &TgUser, command_line: &str) -> i32 {
        assert!(
            command_line.starts_with('/'),
            "a command starts with '/': {command_line:?}"
        );
        let command = command_line.split_whitespace().next().unwrap_or_default();
        let entity = json!({
            "type": "bot_command",
            "offset": 0,
            "length": command.encode_utf16().count(),
        });
        self.push_message(user, json!({"text": command_line, "entities": [entity]}))
    }

    /// `user` sends a photo with an optional caption; returns the message id. Telegram sends
    /// several sizes, smallest first: the fake sends a 90×90 thumbnail whose bytes are a
    /// placeholder, then the full size (declared 1280×960) carrying `bytes`, so a bot that takes
    /// the first size instead of the last gets the wrong file.
    pub fn photo(&self, user: &TgUser, bytes: impl Into<Vec<u8>>, caption: Option<&str>) -> i32 {
        let mut state = self.shared.lock();
        let thumbnail = state.register_file("photos", "jpg", b"thumbnail".to_vec(), None);
        let full = state.register_file("photos", "jpg", bytes.into(), None);
        let mut media = json!({"photo": [
            photo_size_json(&thumbnail, 90, 90),
            photo_size_json(&full, 1280, 960),
        ]});
        insert_some(&mut media, "caption", caption.map(str::to_owned));
        self.push_message_locked(&mut state, user, media)
    }

    /// `user` sends a file as a document; returns the message id.
    pub fn document(
        &self,
        user: &TgUser,
        bytes: impl Into<Vec<u8>>,
        file_name: &str,
        mime_type: &str,
        caption: Option<&str>,
    ) -> i32 {
        self.document_with(
            user,
            IncomingDocument {
                bytes: bytes.into(),
                file_name: file_name.into(),
                mime_type: mime_type.into(),
                caption: caption.map(str::to_owned),
                declared_size: None,
            },
        )
    }

    /// `user` sends a document described in full (e.g. with a declared size); returns the
    /// message id.
    pub fn document_with(&self, user: &TgUser, document: IncomingDocument) -> i32 {
        let mut state = self.shared.lock();
        let extension = document
            .file_name
            .rsplit_once('.')
            .map_or("bin", |(_, ext)| ext);
        let file = state.register_file(
            "documents",
            extension,
            document.bytes,
            document.declared_size,
        );
        let mut media = json!({"document": {
            "file_id": file.file_id,
            "file_unique_id": file.unique_id,
            "file_size": file.size,
            "file_name": document.file_name,
            "mime_type": document.mime_type,
        }});
        insert_some(&mut media, "caption", document.caption);
        self.push_message_locked(&mut state, user, media)
    }

    /// `user` presses an inline button carrying `data` under the bot's message `message_id` in
    /// their chat; returns the callback query id (for [`FakeTelegram::answered_callback`]). A
    /// message the bot never sent arrives as Telegram's "inaccessible message" (date 0).
    pub fn callback(&self, user: &TgUser, message_id: i32, data: &str) -> String {
        let mut state = self.shared.lock();
        state.chats.insert(user.id, user.clone());
        state.last_callback += 1;
        let id = format!("cbq-{}", state.last_callback);
        let message = match state.messages.get(&(user.id, message_id)) {
            Some(message) if !message.deleted => message.to_json(self.shared.bot_json(), user),
            _ => json!({"message_id": message_id, "chat": user.chat_json(), "date": 0}),
        };
        state.callbacks.insert(id.clone(), None);
        state.push_update(json!({"callback_query": {
            "id": id,
            "from": user.user_json(),
            "message": message,
            "chat_instance": format!("instance-{}", user.id),
            "data": data,
        }}));
        drop(state);
        self.shared.changed();
        id
    }

    /// `user` presses the inline button labelled `button_text` under `message`; returns the
    /// callback query id. Fails the test when there is no such callback button.
    pub fn press(&self, user: &TgUser, message: &SentMessage, button_text: &str) -> String {
        let button = message.button(button_text).unwrap_or_else(|| {
            panic!(
                "message {} has no button {button_text:?}; it has {:?}",
                message.message_id,
                message.button_texts()
            )
        });
        let data = button.callback_data.clone().unwrap_or_else(|| {
            panic!("button {button_text:?} is not a callback button: {button:?}")
        });
        self.callback(user, message.message_id, &data)
    }

    /// From now on `user` has blocked the bot: sending them anything is refused `403`.
    pub fn block(&self, user: &TgUser) {
        self.shared.lock().blocked.insert(user.id);
    }

    /// The next call of `method` (case-insensitive, as Telegram) fails with `failure`; several
    /// calls queue several failures, used one per call.
    pub fn fail_next(&self, method: &str, failure: Failure) {
        self.shared
            .lock()
            .failures
            .entry(method.to_ascii_lowercase())
            .or_default()
            .push_back(failure);
    }

    /// Awaits the next message the bot sends to `chat_id`, or edits there (`sendMessage`,
    /// `sendPhoto`, `sendDocument`, `editMessageText`, `editMessageCaption`), after the last
    /// one this returned for that chat.
    pub async fn next_message_to(&self, chat_id: i64) -> SentMessage {
        self.wait_until(
            || format!("message to chat {chat_id}"),
            |state| {
                let start = state.cursors.get(&chat_id).copied().unwrap_or(0);
                let offset = state.outputs[start..]
                    .iter()
                    .position(|m| m.chat_id == chat_id)?;
                state.cursors.insert(chat_id, start + offset + 1);
                Some(state.outputs[start + offset].clone())
            },
        )
        .await
    }

    /// Awaits a request for `method` (case-insensitive) that satisfies `predicate` and that no
    /// earlier `wait_for` returned; looks at the requests made so far first.
    pub async fn wait_for(
        &self,
        method: &str,
        predicate: impl Fn(&RecordedRequest) -> bool,
    ) -> RecordedRequest {
        self.wait_until(
            || format!("{method} request the test expects"),
            |state| {
                let found = state.requests.iter().find(|r| {
                    r.method.eq_ignore_ascii_case(method)
                        && !state.awaited.contains(&r.seq)
                        && predicate(r)
                })?;
                let found = found.clone();
                state.awaited.insert(found.seq);
                Some(found)
            },
        )
        .await
    }

    /// Awaits the bot's answer to the callback query `callback_id`.
    pub async fn answered_callback(&self, callback_id: &str) -> AnsweredCallback {
        self.wait_until(
            || format!("answer to callback query {callback_id}"),
            |state| state.callbacks.get(callback_id).cloned().flatten(),
        )
        .await
    }

    /// The bot's message `message_id` in `chat_id` as it looks now (after edits); `None` if the
    /// bot never sent it or deleted it.
    pub fn message(&self, chat_id: i64, message_id: i32) -> Option<SentMessage> {
        let state = self.shared.lock();
        let message = state.messages.get(&(chat_id, message_id))?;
        (!message.deleted).then(|| message.current.clone())
    }

    /// Every request the bot made, in order.
    pub fn all_requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The requests for `method` (case-insensitive), in order.
    pub fn requests(&self, method: &str) -> Vec<RecordedRequest> {
        let state = self.shared.lock();
        state
            .requests
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method))
            .cloned()
            .collect()
    }

    fn push_message(&self, user: &TgUser, content: Value) -> i32 {
        let mut state = self.shared.lock();
        self.push_message_locked(&mut state, user, content)
    }

    fn push_message_locked(&self, state: &mut State, user: &TgUser, content: Value) -> i32 {
        state.chats.insert(user.id, user.clone());
        let message_id = state.next_message_id();
        state.user_messages.insert((user.id, message_id));
        let mut message = json!({
            "message_id": message_id,
            "from": user.user_json(),
            "chat": user.chat_json(),
            "date": now(),
        });
        merge(&mut message, content);
        state.push_update(json!({ "message": message }));
        self.shared.changed();
        message_id
    }

    /// Checks `check` now and after every change until it yields, for at most [`WAIT`].
    async fn wait_until<T>(
        &self,
        what: impl Fn() -> String,
        mut check: impl FnMut(&mut State) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut changes = self.shared.changes.subscribe();
        loop {
            // Marking the version seen before looking means a change made after the look
            // wakes `changed()` below: nothing slips between the two.
            changes.borrow_and_update();
            if let Some(found) = check(&mut self.shared.lock()) {
                return found;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                let summary = summarize(&self.shared.lock().requests);
                panic!(
                    "fake Telegram: still no {} after {WAIT:?}; the bot's requests so far:\n\
                     {summary}",
                    what()
                );
            }
        }
    }
}

/// What the server and the test-side handle share.
struct Shared {
    token: String,
    bot_id: i64,
    state: Mutex<State>,
    /// Bumped after every change of `state`: what waiters (tests, long polls) await.
    changes: watch::Sender<u64>,
    stop: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; the state is still
        // worth reading for the other waiters' messages.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self) {
        self.changes.send_modify(|version| *version += 1);
    }

    fn bot_json(&self) -> Value {
        json!({
            "id": self.bot_id,
            "is_bot": true,
            "first_name": "Shopfront Test",
            "username": BOT_USERNAME,
        })
    }

    fn me_json(&self) -> Value {
        let mut me = self.bot_json();
        merge(
            &mut me,
            json!({
                "can_join_groups": true,
                "can_read_all_group_messages": false,
                "supports_inline_queries": false,
                "can_connect_to_business": false,
                "has_main_web_app": false,
            }),
        );
        me
    }
}

#[derive(Default)]
struct State {
    last_update_id: u32,
    /// Counts `getUpdates` calls: a pending long poll that sees a newer one ends.
    last_poll: u64,
    /// Updates not yet confirmed by a `getUpdates` offset past them.
    updates: VecDeque<(u32, Value)>,
    /// The update kinds the bot asked for (`allowed_updates` persists across calls, as in
    /// Telegram); `None` or empty means all.
    allowed_updates: Option<Vec<String>>,
    last_message_id: i32,
    last_file: u32,
    last_callback: u64,
    /// Private chats by id: the users who wrote to the bot.
    chats: HashMap<i64, TgUser>,
    blocked: HashSet<i64>,
    files: HashMap<String, StoredFile>,
    messages: HashMap<(i64, i32), StoredMessage>,
    user_messages: HashSet<(i64, i32)>,
    /// Callback queries sent to the bot, with the bot's answer once it came.
    callbacks: HashMap<String, Option<AnsweredCallback>>,
    requests: Vec<RecordedRequest>,
    /// Requests already returned by `wait_for`.
    awaited: HashSet<usize>,
    /// Messages and edits in the order the bot made them, for `next_message_to`.
    outputs: Vec<SentMessage>,
    /// Per chat: the index in `outputs` after the last one `next_message_to` returned.
    cursors: HashMap<i64, usize>,
    failures: HashMap<String, VecDeque<Failure>>,
}

#[derive(Clone, Debug)]
struct StoredFile {
    file_id: String,
    unique_id: String,
    path: String,
    bytes: Vec<u8>,
    size: u32,
}

/// A message the bot sent: its current look and what its JSON needs besides.
struct StoredMessage {
    current: SentMessage,
    /// `("photo", [sizes])` or `("document", {…})` for media messages.
    media: Option<(&'static str, Value)>,
    /// The inline keyboard as sent, echoed back in the message's JSON.
    inline_markup: Option<Value>,
    date: i64,
    edit_date: Option<i64>,
    deleted: bool,
}

impl StoredMessage {
    fn to_json(&self, bot: Value, chat: &TgUser) -> Value {
        let mut message = json!({
            "message_id": self.current.message_id,
            "from": bot,
            "chat": chat.chat_json(),
            "date": self.date,
        });
        match &self.media {
            Some((kind, media)) => {
                message[*kind] = media.clone();
                if !self.current.text.is_empty() {
                    message["caption"] = json!(self.current.text);
                }
            }
            None => message["text"] = json!(self.current.text),
        }
        insert_some(&mut message, "reply_markup", self.inline_markup.clone());
        insert_some(&mut message, "edit_date", self.edit_date);
        message
    }
}

impl State {
    fn next_message_id(&mut self) -> i32 {
        self.last_message_id += 1;
        self.last_message_id
    }

    fn push_update(&mut self, update: Value) {
        self.last_update_id += 1;
        let id = self.last_update_id;
        let mut update = update;
        update["update_id"] = json!(id);
        self.updates.push_back((id, update));
    }

    fn register_file(
        &mut self,
        folder: &str,
        extension: &str,
        bytes: Vec<u8>,
        declared_size: Option<u32>,
    ) -> StoredFile {
        self.last_file += 1;
        let n = self.last_file;
        let file = StoredFile {
            file_id: format!("fake-file-{n}"),
            unique_id: format!("fake-unique-{n}"),
            path: format!("{folder}/file_{n}.{extension}"),
            size: declared_size
                .unwrap_or_else(|| u32::try_from(bytes.len()).expect("test files are small")),
            bytes,
        };
        self.files.insert(file.file_id.clone(), file.clone());
        file
    }

    /// `getUpdates`: forgets what `offset` confirms, then returns at most `limit` updates of
    /// the allowed kinds.
    fn take_updates(&mut self, offset: i64, limit: usize) -> Vec<Value> {
        if offset > 0 {
            self.updates.retain(|(id, _)| i64::from(*id) >= offset);
        } else if offset < 0 {
            // "A negative offset can be specified to retrieve updates starting from -offset
            // update from the end of the updates queue. All previous updates will be forgotten."
            let keep = usize::try_from(offset.unsigned_abs()).unwrap_or(usize::MAX);
            while self.updates.len() > keep {
                self.updates.pop_front();
            }
        }
        if let Some(allowed) = self.allowed_updates.as_ref().filter(|a| !a.is_empty()) {
            // Telegram never delivers kinds the bot did not ask for.
            self.updates.retain(|(_, update)| {
                update
                    .as_object()
                    .is_some_and(|u| u.keys().any(|k| k != "update_id" && allowed.contains(k)))
            });
        }
        self.updates
            .iter()
            .take(limit)
            .map(|(_, update)| update.clone())
            .collect()
    }

    /// The private chat a sending method targets, refused as Telegram refuses it.
    fn chat_for(&self, params: &Map<String, Value>) -> Result<TgUser, Refusal> {
        let chat_id = int_param(params, "chat_id").ok_or_else(|| Refusal::bad("chat not found"))?;
        let chat = self
            .chats
            .get(&chat_id)
            .ok_or_else(|| Refusal::bad("chat not found"))?;
        if self.blocked.contains(&chat_id) {
            return Err(Refusal::new(403, "Forbidden: bot was blocked by the user"));
        }
        Ok(chat.clone())
    }

    /// The bot's message an edit targets.
    fn message_for_edit(
        &mut self,
        params: &Map<String, Value>,
    ) -> Result<&mut StoredMessage, Refusal> {
        let chat_id = int_param(params, "chat_id");
        let message_id = int_param(params, "message_id").and_then(|id| i32::try_from(id).ok());
        let (Some(chat_id), Some(message_id)) = (chat_id, message_id) else {
            return Err(Refusal::bad("message to edit not found"));
        };
        match self.messages.get_mut(&(chat_id, message_id)) {
            Some(message) if !message.deleted => Ok(message),
            _ => Err(Refusal::bad("message to edit not found")),
        }
    }

    /// Resolves the file a `sendPhoto`/`sendDocument` carries: an upload, a known file id, or
    /// a URL Telegram would fetch.
    fn input_file(
        &self,
        params: &Map<String, Value>,
        files: &[UploadedFile],
        field: &str,
    ) -> Result<SentFile, Refusal> {
        let value = params
            .get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| Refusal::bad(&format!("there is no {field} in the request")))?;
        if value.starts_with("attach://") {
            let upload = files
                .iter()
                .find(|f| f.field == field)
                .ok_or_else(|| Refusal::bad(&format!("there is no {field} in the request")))?;
            let file_name = upload.file_name.clone().filter(|n| !n.is_empty());
            // Telegram takes the MIME type from the upload, or guesses it from the name.
            let mime_type = upload
                .content_type
                .clone()
                .filter(|t| t != "application/octet-stream")
                .or_else(|| file_name.as_deref().map(guess_mime));
            return Ok(SentFile {
                file_name,
                mime_type,
                bytes: Some(upload.bytes.clone()),
            });
        }
        if value.starts_with("http://") || value.starts_with("https://") {
            return Ok(SentFile {
                file_name: None,
                mime_type: None,
                bytes: None,
            });
        }
        let known = self
            .files
            .get(value)
            .ok_or_else(|| Refusal::bad("wrong file identifier/HTTP URL specified"))?;
        Ok(SentFile {
            file_name: None,
            mime_type: None,
            bytes: Some(known.bytes.clone()),
        })
    }
}

/// A refusal in Telegram's words.
#[derive(Debug)]
struct Refusal {
    status: u16,
    description: String,
    retry_after: Option<u32>,
}

impl Refusal {
    fn new(status: u16, description: &str) -> Refusal {
        Refusal {
            status,
            description: description.into(),
            retry_after: None,
        }
    }

    /// `400 Bad Request: <what>`.
    fn bad(what: &str) -> Refusal {
        Refusal::new(400, &format!("Bad Request: {what}"))
    }

    fn injected(failure: &Failure) -> Refusal {
        match failure {
            Failure::RetryAfter(seconds) => Refusal {
                status: 429,
                description: format!("Too Many Requests: retry after {seconds}"),
                retry_after: Some(*seconds),
            },
            Failure::ServerError => Refusal::new(500, "Internal Server Error"),
            Failure::Api {
                status,
                description,
            } => Refusal::new(*status, description),
        }
    }

    fn response(&self) -> Response {
        let mut body = json!({
            "ok": false,
            "error_code": self.status,
            "description": self.description,
        });
        if let Some(seconds) = self.retry_after {
            body["parameters"] = json!({ "retry_after": seconds });
        }
        json_response(self.status, &body)
    }
}

/// `POST|GET /bot<token>/<method>`.
#[handler]
async fn api(
    req: &Request,
    body: Body,
    Path((bot, method)): Path<(String, String)>,
    Data(shared): Data<&Arc<Shared>>,
) -> Response {
    let (params, files, parse_error) = match read_params(req, body).await {
        Ok((params, files)) => (params, files, None),
        Err(error) => (Map::new(), Vec::new(), Some(error)),
    };
    let shown = Value::Object(params.clone()).to_string();
    tracing::debug!(%method, params = %shown, "fake Telegram request");
    let authorized = bot.strip_prefix("bot") == Some(shared.token.as_str());
    let long_poll = method.eq_ignore_ascii_case("getUpdates");
    match record_and_answer(shared, authorized, method, &params, files, parse_error) {
        Err(refusal) => refusal.response(),
        Ok(poll) if long_poll => match get_updates(shared, &params, &poll).await {
            Ok(updates) => json_response(200, &json!({"ok": true, "result": updates})),
            Err(refusal) => refusal.response(),
        },
        Ok(result) => json_response(200, &json!({"ok": true, "result": result})),
    }
}

/// Answers a request (all but the wait of `getUpdates`) and records it, under the state lock.
fn record_and_answer(
    shared: &Shared,
    authorized: bool,
    method: String,
    params: &Map<String, Value>,
    files: Vec<UploadedFile>,
    parse_error: Option<String>,
) -> Result<Value, Refusal> {
    let method_lc = method.to_ascii_lowercase();
    let mut state = shared.lock();
    let injected = if authorized {
        state
            .failures
            .get_mut(&method_lc)
            .and_then(VecDeque::pop_front)
    } else {
        None
    };
    let answer = if !authorized {
        Err(Refusal::new(401, "Unauthorized"))
    } else if let Some(error) = parse_error {
        Err(Refusal::bad(&error))
    } else if let Some(failure) = &injected {
        Err(Refusal::injected(failure))
    } else if method_lc == "getupdates" {
        // The caller waits for updates, outside the lock; a newer poll ends this one.
        state.last_poll += 1;
        Ok(json!({"poll": state.last_poll, "request": state.requests.len()}))
    } else {
        respond(shared, &mut state, &method_lc, params, &files)
    };
    let outcome = match (&answer, injected) {
        (Ok(_), _) => Outcome::Answered,
        (Err(_), Some(failure)) => Outcome::Injected(failure),
        (Err(refusal), None) => Outcome::Refused {
            status: refusal.status,
            description: refusal.description.clone(),
        },
    };
    let seq = state.requests.len();
    state.requests.push(RecordedRequest {
        seq,
        method,
        params: Value::Object(params.clone()),
        files,
        outcome,
        received_at: Instant::now(),
    });
    drop(state);
    shared.changed();
    answer
}

/// `GET /file/bot<token>/<file_path>`: the bytes of a file the test registered or the bot
/// uploaded, recorded as method `download`.
#[handler]
fn download(
    Path((bot, path)): Path<(String, String)>,
    Data(shared): Data<&Arc<Shared>>,
) -> Response {
    let mut state = shared.lock();
    let authorized = bot.strip_prefix("bot") == Some(shared.token.as_str());
    let answer = match state.files.values().find(|f| f.path == path) {
        _ if !authorized => Err(Refusal::new(401, "Unauthorized")),
        None => Err(Refusal::new(404, "Not Found")),
        Some(file) => Ok(file.bytes.clone()),
    };
    let seq = state.requests.len();
    state.requests.push(RecordedRequest {
        seq,
        method: "download".into(),
        params: json!({ "file_path": path }),
        files: Vec::new(),
        outcome: match &answer {
            Ok(_) => Outcome::Answered,
            Err(refusal) => Outcome::Refused {
                status: refusal.status,
                description: refusal.description.clone(),
            },
        },
        received_at: Instant::now(),
    });
    drop(state);
    shared.changed();
    match answer {
        Ok(bytes) => Response::builder()
            .content_type("application/octet-stream")
            .body(bytes),
        Err(refusal) => Response::builder()
            .status(poem::http::StatusCode::from_u16(refusal.status).unwrap_or_default())
            .body(()),
    }
}

/// Answers every method but `getUpdates`, under the state lock.
fn respond(
    shared: &Shared,
    state: &mut State,
    method: &str,
    params: &Map<String, Value>,
    files: &[UploadedFile],
) -> Result<Value, Refusal> {
    match method {
        "getme" => Ok(shared.me_json()),
        "getwebhookinfo" => Ok(json!({
            "url": "",
            "has_custom_certificate": false,
            "pending_update_count": state.updates.len(),
        })),
        "setmycommands" => {
            let valid = params
                .get("commands")
                .and_then(Value::as_array)
                .is_some_and(|commands| commands.iter().all(valid_command));
            if valid {
                Ok(json!(true))
            } else {
                Err(Refusal::bad("BOT_COMMAND_INVALID"))
            }
        }
        "getfile" => {
            let file = params
                .get("file_id")
                .and_then(Value::as_str)
                .and_then(|id| state.files.get(id))
                .ok_or_else(|| Refusal::bad("wrong file id"))?;
            if file.size > GET_FILE_LIMIT {
                return Err(Refusal::bad("file is too big"));
            }
            Ok(json!({
                "file_id": file.file_id,
                "file_unique_id": file.unique_id,
                "file_size": file.size,
                "file_path": file.path,
            }))
        }
        "sendmessage" => {
            let chat = state.chat_for(params)?;
            let text = str_param(params, "text").unwrap_or_default();
            check_text(&text)?;
            let message = outgoing(state, &chat, "sendMessage", text, params)?;
            Ok(store_and_show(shared, state, &chat, message, None))
        }
        "sendphoto" | "senddocument" => {
            let chat = state.chat_for(params)?;
            let kind = if method == "sendphoto" {
                "photo"
            } else {
                "document"
            };
            let mut file = state.input_file(params, files, kind)?;
            let caption = str_param(params, "caption").unwrap_or_default();
            check_caption(&caption)?;
            let method_name = if kind == "photo" {
                "sendPhoto"
            } else {
                "sendDocument"
            };
            let mut message = outgoing(state, &chat, method_name, caption, params)?;
            if kind == "document" && file.file_name.is_none() {
                file.file_name = str_param(params, "file_name");
            }
            let bytes = file.bytes.clone().unwrap_or_default();
            let media = if kind == "photo" {
                let stored = state.register_file("photos", "jpg", bytes, None);
                json!([photo_size_json(&stored, 1280, 960)])
            } else {
                let extension = file
                    .file_name
                    .as_deref()
                    .and_then(|n| n.rsplit_once('.'))
                    .map_or("bin", |(_, ext)| ext)
                    .to_owned();
                let stored = state.register_file("documents", &extension, bytes, None);
                let mut document = json!({
                    "file_id": stored.file_id,
                    "file_unique_id": stored.unique_id,
                    "file_size": stored.size,
                });
                insert_some(&mut document, "file_name", file.file_name.clone());
                insert_some(&mut document, "mime_type", file.mime_type.clone());
                document
            };
            if kind == "photo" {
                message.photo = Some(file);
            } else {
                message.document = Some(file);
            }
            Ok(store_and_show(
                shared,
                state,
                &chat,
                message,
                Some((kind, media)),
            ))
        }
        "editmessagetext" | "editmessagecaption" | "editmessagereplymarkup" => {
            edit(shared, state, method, params)
        }
        "answercallbackquery" => {
            let id = str_param(params, "callback_query_id").unwrap_or_default();
            let text = str_param(params, "text");
            if text.as_deref().is_some_and(|t| t.chars().count() > 200) {
                return Err(Refusal::bad("MESSAGE_TOO_LONG"));
            }
            match state.callbacks.get_mut(&id) {
                // Telegram accepts one answer per query.
                Some(answer @ None) => {
                    *answer = Some(AnsweredCallback {
                        text,
                        show_alert: params.get("show_alert") == Some(&json!(true)),
                        url: str_param(params, "url"),
                    });
                    Ok(json!(true))
                }
                _ => Err(Refusal::bad(
                    "query is too old and response timeout expired or query id is invalid",
                )),
            }
        }
        "deletemessage" => {
            let key = (
                int_param(params, "chat_id").unwrap_or_default(),
                int_param(params, "message_id")
                    .and_then(|id| i32::try_from(id).ok())
                    .unwrap_or_default(),
            );
            if state.user_messages.remove(&key) {
                return Ok(json!(true));
            }
            match state.messages.get_mut(&key) {
                Some(message) if !message.deleted => {
                    message.deleted = true;
                    Ok(json!(true))
                }
                _ => Err(Refusal::bad("message to delete not found")),
            }
        }
        // deleteWebhook, and whatever the bot calls that the fake does not model: recorded,
        // answered `true`.
        _ => Ok(json!(true)),
    }
}

/// The new message a sending method describes, before it gets its id.
fn outgoing(
    state: &mut State,
    chat: &TgUser,
    method: &str,
    text: String,
    params: &Map<String, Value>,
) -> Result<SentMessage, Refusal> {
    let markup = params.get("reply_markup").cloned();
    let buttons = inline_buttons(markup.as_ref())?;
    Ok(SentMessage {
        chat_id: chat.id,
        message_id: state.next_message_id(),
        method: method.into(),
        text,
        parse_mode: str_param(params, "parse_mode"),
        buttons,
        reply_markup: markup,
        photo: None,
        document: None,
    })
}

/// Stores a new bot message, lists it for `next_message_to`, and returns its JSON.
fn store_and_show(
    shared: &Shared,
    state: &mut State,
    chat: &TgUser,
    message: SentMessage,
    media: Option<(&'static str, Value)>,
) -> Value {
    let stored = StoredMessage {
        inline_markup: inline_markup(message.reply_markup.as_ref()),
        current: message.clone(),
        media,
        date: now(),
        edit_date: None,
        deleted: false,
    };
    let json = stored.to_json(shared.bot_json(), chat);
    state
        .messages
        .insert((message.chat_id, message.message_id), stored);
    state.outputs.push(message);
    json
}

/// `editMessageText`, `editMessageCaption`, `editMessageReplyMarkup` of a bot message in a
/// private chat. As in Telegram, an edit without `reply_markup` removes the inline keyboard,
/// and an edit that changes nothing is refused.
fn edit(
    shared: &Shared,
    state: &mut State,
    method: &str,
    params: &Map<String, Value>,
) -> Result<Value, Refusal> {
    let markup = params.get("reply_markup").cloned();
    let buttons = inline_buttons(markup.as_ref())?;
    let new_inline = inline_markup(markup.as_ref());
    let message = state.message_for_edit(params)?;
    let (text, shown_as) = match method {
        "editmessagetext" => {
            if message.media.is_some() {
                return Err(Refusal::bad("there is no text in the message to edit"));
            }
            let text = str_param(params, "text").unwrap_or_default();
            check_text(&text)?;
            (text, Some("editMessageText"))
        }
        "editmessagecaption" => {
            if message.media.is_none() {
                return Err(Refusal::bad("there is no caption in the message to edit"));
            }
            let caption = str_param(params, "caption").unwrap_or_default();
            check_caption(&caption)?;
            (caption, Some("editMessageCaption"))
        }
        _ => (message.current.text.clone(), None),
    };
    if text == message.current.text && new_inline == message.inline_markup {
        return Err(Refusal::bad(
            "message is not modified: specified new message content and reply markup are \
             exactly the same as a current content and reply markup of the message",
        ));
    }
    message.current.text = text;
    message.current.buttons = buttons;
    message.current.reply_markup = markup;
    message.inline_markup = new_inline;
    message.edit_date = Some(now());
    if let Some(shown_as) = shown_as {
        message.current.method = shown_as.into();
        message.current.parse_mode = str_param(params, "parse_mode");
    }
    let current = message.current.clone();
    let chat = state
        .chats
        .get(&current.chat_id)
        .cloned()
        .ok_or_else(|| Refusal::bad("chat not found"))?;
    let json =
        state.messages[&(current.chat_id, current.message_id)].to_json(shared.bot_json(), &chat);
    if shown_as.is_some() {
        state.outputs.push(current);
    }
    Ok(json)
}

/// `getUpdates` long polling: answers at once when updates are waiting, otherwise waits up to
/// `timeout` seconds for the test to push one (woken by the change channel, not by polling).
/// As in Telegram, a newer `getUpdates` ends a pending one with `409 Conflict`: two bot
/// instances polling at once show up in the test instead of sharing updates silently.
async fn get_updates(
    shared: &Shared,
    params: &Map<String, Value>,
    poll: &Value,
) -> Result<Value, Refusal> {
    let generation = poll["poll"].as_u64().unwrap_or_default();
    let offset = int_param(params, "offset").unwrap_or(0);
    let limit = int_param(params, "limit")
        .and_then(|l| usize::try_from(l).ok())
        .filter(|l| (1..=100).contains(l))
        .unwrap_or(100);
    let timeout = int_param(params, "timeout")
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(0);
    if let Some(allowed) = params.get("allowed_updates").and_then(Value::as_array) {
        shared.lock().allowed_updates = Some(
            allowed
                .iter()
                .filter_map(|kind| kind.as_str().map(str::to_owned))
                .collect(),
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let mut changes = shared.changes.subscribe();
    loop {
        changes.borrow_and_update();
        {
            let mut state = shared.lock();
            if state.last_poll != generation {
                let refusal = Refusal::new(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only \
                     one bot instance is running",
                );
                let seq = poll["request"]
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok());
                if let Some(request) = seq.and_then(|seq| state.requests.get_mut(seq)) {
                    request.outcome = Outcome::Refused {
                        status: refusal.status,
                        description: refusal.description.clone(),
                    };
                }
                return Err(refusal);
            }
            let updates = state.take_updates(offset, limit);
            if !updates.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(Value::Array(updates));
            }
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = shared.stop.cancelled() => return Ok(json!([])),
        }
    }
}

/// Reads the parameters of a Bot API request in any of the encodings Telegram accepts: the
/// query string plus a JSON, url-encoded or multipart body.
async fn read_params(
    req: &Request,
    body: Body,
) -> Result<(Map<String, Value>, Vec<UploadedFile>), String> {
    let mut params = Map::new();
    for (name, value) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        params.insert(name.to_string(), text_param(&name, value.into_owned()));
    }
    let content_type = req.content_type().unwrap_or("").to_ascii_lowercase();
    let mut files = Vec::new();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(req, &mut RequestBody::new(body))
            .await
            .map_err(|e| format!("bad multipart body: {e}"))?;
        let mut parts = Vec::new();
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| format!("bad multipart body: {e}"))?
        {
            let name = field.name().unwrap_or_default().to_owned();
            let file_name = field.file_name().map(str::to_owned);
            let part_type = field.content_type().map(str::to_owned);
            let bytes = field
                .bytes()
                .await
                .map_err(|e| format!("bad multipart part {name}: {e}"))?;
            parts.push((name, file_name, part_type, bytes));
        }
        // `"photo": "attach://<part>"` names the part carrying the photo's bytes.
        let attached: HashMap<String, String> = parts
            .iter()
            .filter_map(|(name, _, _, bytes)| {
                let value = std::str::from_utf8(bytes).ok()?;
                Some((value.strip_prefix("attach://")?.to_owned(), name.clone()))
            })
            .collect();
        for (name, file_name, part_type, bytes) in parts {
            if let Some(field) = attached.get(&name) {
                files.push(UploadedFile {
                    field: field.clone(),
                    file_name,
                    content_type: part_type,
                    bytes,
                });
            } else if file_name.is_some() {
                files.push(UploadedFile {
                    field: name,
                    file_name,
                    content_type: part_type,
                    bytes,
                });
            } else {
                let text = String::from_utf8(bytes)
                    .map_err(|_| format!("parameter {name} is not UTF-8 text"))?;
                params.insert(name.clone(), text_param(&name, text));
            }
        }
    } else {
        let bytes = body
            .into_vec()
            .await
            .map_err(|e| format!("cannot read the body: {e}"))?;
        if content_type.starts_with("application/json") && !bytes.is_empty() {
            match serde_json::from_slice(&bytes) {
                Ok(Value::Object(object)) => params.extend(object),
                Ok(_) => return Err("the JSON body is not an object".into()),
                Err(e) => return Err(format!("can't parse JSON: {e}")),
            }
        } else if content_type.starts_with("application/x-www-form-urlencoded") {
            for (name, value) in url::form_urlencoded::parse(&bytes) {
                params.insert(name.to_string(), text_param(&name, value.into_owned()));
            }
        }
    }
    Ok((params, files))
}

/// Parameters that are free text or opaque ids: never parsed as JSON even when they look like
/// a number (a caption "42" stays "42").
const TEXT_PARAMS: &[&str] = &[
    "text",
    "caption",
    "callback_query_id",
    "inline_message_id",
    "file_id",
    "photo",
    "document",
    "url",
    "file_name",
    "parse_mode",
    "language_code",
    "description",
    "short_description",
    "name",
];

/// A parameter sent as text (multipart, form, query): JSON values (numbers, booleans,
/// `reply_markup`) are parsed back to what a JSON body would have carried.
fn text_param(name: &str, text: String) -> Value {
    if TEXT_PARAMS.contains(&name) {
        return Value::String(text);
    }
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

fn str_param(params: &Map<String, Value>, name: &str) -> Option<String> {
    params.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// An integer parameter, sent as a number or as a numeric string (`"chat_id": "42"` is valid).
fn int_param(params: &Map<String, Value>, name: &str) -> Option<i64> {
    match params.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn check_text(text: &str) -> Result<(), Refusal> {
    if text.trim().is_empty() {
        return Err(Refusal::bad("message text is empty"));
    }
    if text.encode_utf16().count() > 4096 {
        return Err(Refusal::bad("message is too long"));
    }
    Ok(())
}

fn check_caption(caption: &str) -> Result<(), Refusal> {
    if caption.encode_utf16().count() > 1024 {
        return Err(Refusal::bad("message caption is too long"));
    }
    Ok(())
}

/// A command `setMyCommands` accepts: 1–32 of `a-z0-9_`, a description of 1–256 characters.
fn valid_command(command: &Value) -> bool {
    let name = command["command"].as_str().unwrap_or("");
    let description = command["description"].as_str().unwrap_or("");
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && (1..=256).contains(&description.chars().count())
}

/// The inline keyboard of a `reply_markup`, refused as Telegram refuses bad callback data.
fn inline_buttons(markup: Option<&Value>) -> Result<Vec<Vec<Button>>, Refusal> {
    let Some(rows) = markup
        .and_then(|m| m.get("inline_keyboard"))
        .and_then(Value::as_array)
    else {
        return Ok(Vec::new());
    };
    rows.iter()
        .map(|row| {
            row.as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|button| {
                    let callback_data = button["callback_data"].as_str().map(str::to_owned);
                    if callback_data
                        .as_ref()
                        .is_some_and(|d| d.is_empty() || d.len() > 64)
                    {
                        return Err(Refusal::bad("BUTTON_DATA_INVALID"));
                    }
                    Ok(Button {
                        text: button["text"].as_str().unwrap_or_default().to_owned(),
                        callback_data,
                        url: button["url"].as_str().map(str::to_owned),
                        web_app: button["web_app"]["url"].as_str().map(str::to_owned),
                    })
                })
                .collect()
        })
        .collect()
}

/// The `reply_markup` a message carries back: inline keyboards only, as in Telegram.
fn inline_markup(markup: Option<&Value>) -> Option<Value> {
    markup
        .filter(|m| m.get("inline_keyboard").is_some())
        .cloned()
}

/// The MIME type of a file name's extension, for uploads that do not say.
fn guess_mime(file_name: &str) -> String {
    let extension = file_name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "pdf" => "application/pdf",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
    .into()
}

fn photo_size_json(file: &StoredFile, width: u32, height: u32) -> Value {
    json!({
        "file_id": file.file_id,
        "file_unique_id": file.unique_id,
        "file_size": file.size,
        "width": width,
        "height": height,
    })
}

fn insert_some(object: &mut Value, key: &str, value: Option<impl Into<Value>>) {
    if let Some(value) = value {
        object[key] = value.into();
    }
}

fn merge(object: &mut Value, more: Value) {
    if let (Some(object), Value::Object(more)) = (object.as_object_mut(), more) {
        object.extend(more);
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn json_response(status: u16, body: &Value) -> Response {
    Response::builder()
        .status(poem::http::StatusCode::from_u16(status).unwrap_or_default())
        .content_type("application/json")
        .body(body.to_string())
}

/// The requests as a list a failing test prints; consecutive `getUpdates` are counted, not
/// listed.
fn summarize(requests: &[RecordedRequest]) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut polls = 0;
    for request in requests {
        if request.method.eq_ignore_ascii_case("getUpdates") && request.outcome == Outcome::Answered
        {
            polls += 1;
            continue;
        }
        if polls > 0 {
            lines.push(format!("  getUpdates ×{polls}"));
            polls = 0;
        }
        let mut params = request.params.to_string();
        if params.len() > 300 {
            let cut = (0..=300)
                .rev()
                .find(|&i| params.is_char_boundary(i))
                .unwrap_or(0);
            params.truncate(cut);
            params.push('…');
        }
        lines.push(format!(
            "  {} {params} → {:?}",
            request.method, request.outcome
        ));
    }
    if polls > 0 {
        lines.push(format!("  getUpdates ×{polls}"));
    }
    if lines.is_empty() {
        "  (none)".into()
    } else {
        lines.join("\n")
    }
}

/// The harness's own tests: a teloxide `Dispatcher`, a bare teloxide `Bot` and a raw HTTP
/// client against the fake, so that the harness is known to speak teloxide's dialect and
/// Telegram's rules before the real bot relies on it.
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use teloxide::adaptors::throttle::Limits;
    use teloxide::adaptors::Throttle;
    use teloxide::net::Download;
    use teloxide::prelude::*;
    use teloxide::types::{
        BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Me, UpdateKind,
    };
    use teloxide::{ApiError, RequestError};

    use super::{Failure, FakeTelegram, IncomingDocument, Outcome, TgUser};

    const TOKEN: &str = "123456789:fake-telegram-harness";

    type TestBot = Throttle<Bot>;
    type HandlerResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// The minimal bot: `/start <payload>` greets, `hello` offers an inline keyboard, a button
    /// press is answered and edits the menu, a photo is fetched and echoed, anything else is
    /// repeated.
    async fn on_message(bot: TestBot, me: Me, message: Message) -> HandlerResult {
        let chat = message.chat.id;
        if let Some(sizes) = message.photo() {
            let largest = sizes.last().ok_or("a photo without sizes")?;
            let file = bot.get_file(largest.file.id.clone()).await?;
            let mut bytes = Vec::new();
            bot.download_file(&file.path, &mut bytes).await?;
            let caption = message.caption().unwrap_or("photo");
            bot.send_photo(chat, InputFile::memory(bytes).file_name("echo.jpg"))
                .caption(format!("{caption}: {} bytes", file.size))
                .await?;
        } else if let Some(text) = message.text() {
            if let Some(payload) = text.strip_prefix("/start ") {
                bot.send_message(chat, format!("@{} opens {payload}", me.username()))
                    .await?;
            } else if text == "hello" {
                let keyboard = InlineKeyboardMarkup::new([[
                    InlineKeyboardButton::callback("Apples", "fruit:apples"),
                    InlineKeyboardButton::url("Shop", "https://example.com/shop".parse()?),
                ]]);
                bot.send_message(chat, "Pick a fruit")
                    .reply_markup(keyboard)
                    .await?;
            } else {
                bot.send_message(chat, format!("You said: {text}")).await?;
            }
        }
        Ok(())
    }

    async fn on_callback(bot: TestBot, query: CallbackQuery) -> HandlerResult {
        let fruit = query
            .data
            .as_deref()
            .and_then(|d| d.strip_prefix("fruit:"))
            .ok_or("unexpected callback data")?
            .to_owned();
        bot.answer_callback_query(query.id.clone())
            .text(format!("{fruit} it is"))
            .await?;
        if let Some(menu) = query.regular_message() {
            bot.edit_message_text(menu.chat.id, menu.id, format!("You picked {fruit}"))
                .await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_teloxide_dispatcher_converses_with_the_fake() {
        let fake = FakeTelegram::start(TOKEN).await;
        // Throttled as the real bot will be, so its retry on 429 is what is exercised; the
        // limits are raised so that throttling itself does not slow the test.
        let bot = Bot::new(TOKEN).set_api_url(fake.url()).throttle(Limits {
            messages_per_sec_chat: 100,
            messages_per_min_chat: 1000,
            messages_per_min_channel_or_supergroup: 1000,
            messages_per_sec_overall: 100,
        });
        let handler = dptree::entry()
            .branch(Update::filter_message().endpoint(on_message))
            .branch(Update::filter_callback_query().endpoint(on_callback));
        let mut dispatcher = Dispatcher::builder(bot, handler).build();
        let shutdown = dispatcher.shutdown_token();
        let running = tokio::spawn(async move { dispatcher.dispatch().await });
        let ann = TgUser::en(1001, "Ann").with_username("ann");

        // A command with a deep-link payload; the answer names the bot from `getMe`.
        fake.command(&ann, "/start store_42");
        let welcome = fake.next_message_to(ann.id).await;
        assert_eq!(welcome.method, "sendMessage");
        assert_eq!(
            welcome.text,
            format!("@{} opens store_42", fake.bot_username())
        );

        // A text answered with an inline keyboard.
        fake.text(&ann, "hello");
        let menu = fake.next_message_to(ann.id).await;
        assert_eq!(menu.text, "Pick a fruit");
        assert_eq!(menu.button_texts(), ["Apples", "Shop"]);
        let shop = menu.button("Shop").expect("a Shop button");
        assert_eq!(shop.url.as_deref(), Some("https://example.com/shop"));
        assert_eq!(shop.callback_data, None);
        assert_eq!(shop.web_app, None);

        // The button pressed: the query is answered and the menu edited, keyboard gone.
        let query = fake.press(&ann, &menu, "Apples");
        let answer = fake.answered_callback(&query).await;
        assert_eq!(answer.text.as_deref(), Some("apples it is"));
        assert!(!answer.show_alert);
        assert_eq!(answer.url, None);
        let edited = fake.next_message_to(ann.id).await;
        assert_eq!(edited.method, "editMessageText");
        assert_eq!(edited.message_id, menu.message_id);
        assert_eq!(edited.text, "You picked apples");
        assert!(edited.buttons.is_empty(), "an edit without markup drops it");
        assert_eq!(fake.message(ann.id, menu.message_id), Some(edited));

        // A photo: the largest size fetched with getFile + download, echoed with sendPhoto.
        let receipt = b"\x89PNG\r\n\x1a\n a receipt".to_vec();
        fake.photo(&ann, receipt.clone(), Some("my receipt"));
        let echo = fake.next_message_to(ann.id).await;
        assert_eq!(echo.method, "sendPhoto");
        assert_eq!(echo.text, format!("my receipt: {} bytes", receipt.len()));
        let photo = echo.photo.expect("a photo");
        assert_eq!(photo.bytes.as_deref(), Some(receipt.as_slice()));
        assert_eq!(photo.file_name.as_deref(), Some("echo.jpg"));
        assert_eq!(photo.mime_type.as_deref(), Some("image/jpeg"));
        let download = fake.wait_for("download", |_| true).await;
        assert_eq!(download.outcome, Outcome::Answered);
        assert!(download.params["file_path"]
            .as_str()
            .is_some_and(|p| p.starts_with("photos/")));
        let upload = fake.wait_for("sendPhoto", |_| true).await;
        assert_eq!(
            upload.params["chat_id"],
            json!(ann.id),
            "multipart text parsed"
        );
        assert_eq!(upload.files.len(), 1);
        assert_eq!(upload.files[0].field, "photo");
        assert_eq!(upload.files[0].bytes, receipt);

        // Flood control once: the throttled bot waits `retry_after` and sends again.
        fake.fail_next("sendMessage", Failure::RetryAfter(1));
        fake.text(&ann, "again");
        let repeated = fake.next_message_to(ann.id).await;
        assert_eq!(repeated.text, "You said: again");
        let first = fake
            .wait_for("sendMessage", |r| r.params["text"] == "You said: again")
            .await;
        let retry = fake
            .wait_for("sendMessage", |r| r.params["text"] == "You said: again")
            .await;
        assert_eq!(first.outcome, Outcome::Injected(Failure::RetryAfter(1)));
        assert_eq!(retry.outcome, Outcome::Answered);
        assert!(
            retry.received_at - first.received_at >= Duration::from_secs(1),
            "the retry came {:?} after the 429",
            retry.received_at - first.received_at
        );

        // Stopping confirms every update: the last poll's offset is past the fifth update.
        shutdown
            .shutdown()
            .expect("the dispatcher is running")
            .await;
        running.await.expect("the dispatcher stops cleanly");
        let last_poll = fake.requests("getUpdates").pop().expect("polls");
        assert_eq!(last_poll.params["offset"], json!(6));
        let first_poll = &fake.requests("getUpdates")[0];
        let mut allowed: Vec<&str> = first_poll.params["allowed_updates"]
            .as_array()
            .expect("the dispatcher names the updates it handles")
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect();
        allowed.sort_unstable();
        assert_eq!(allowed, ["callback_query", "message"]);
        // teloxide spells methods its own way (`GetMe`); Telegram, and the fake, do not mind.
        let startup: Vec<(String, Outcome)> = fake
            .all_requests()
            .into_iter()
            .filter(|r| {
                ["getme", "getwebhookinfo"].contains(&r.method.to_ascii_lowercase().as_str())
            })
            .map(|r| (r.method.to_ascii_lowercase(), r.outcome))
            .collect();
        assert_eq!(
            startup,
            [
                ("getwebhookinfo".to_owned(), Outcome::Answered),
                ("getme".to_owned(), Outcome::Answered)
            ]
        );
    }

    fn is_api_error(result: Result<impl std::fmt::Debug, RequestError>, expected: ApiError) {
        match result {
            Err(RequestError::Api(error)) => assert_eq!(error, expected),
            other => panic!("expected {expected:?}, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_fake_refuses_what_telegram_refuses() {
        let fake = FakeTelegram::start(TOKEN).await;
        let bot = Bot::new(TOKEN).set_api_url(fake.url());
        let ivan = TgUser::ru(2002, "Иван");
        let chat = ChatId(ivan.id);

        // Nobody wrote to the bot yet.
        is_api_error(bot.send_message(chat, "hi").await, ApiError::ChatNotFound);
        fake.text(&ivan, "привет");

        // Telegram's limits on what is sent.
        is_api_error(
            bot.send_message(chat, " ").await,
            ApiError::MessageTextIsEmpty,
        );
        let two_uuids = "order:0190f3a4-7a8e-7000-8000-000000000001:0190f3a4-7a8e-7000";
        is_api_error(
            bot.send_message(chat, "menu")
                .reply_markup(InlineKeyboardMarkup::new([[
                    InlineKeyboardButton::callback("Go", format!("{two_uuids}-8000")),
                ]]))
                .await,
            ApiError::ButtonDataInvalid,
        );
        let menu = bot
            .send_message(chat, "menu")
            .reply_markup(InlineKeyboardMarkup::new([[
                InlineKeyboardButton::callback("Go", "go"),
            ]]))
            .await
            .expect("a menu");
        assert_eq!(fake.next_message_to(ivan.id).await.text, "menu");
        is_api_error(
            bot.edit_message_text(chat, menu.id, "menu")
                .reply_markup(InlineKeyboardMarkup::new([[
                    InlineKeyboardButton::callback("Go", "go"),
                ]]))
                .await,
            ApiError::MessageNotModified,
        );
        let markup = bot
            .edit_message_reply_markup(chat, menu.id)
            .await
            .expect("the keyboard removed");
        assert!(markup.reply_markup().is_none());
        assert!(fake
            .message(ivan.id, menu.id.0)
            .expect("still there")
            .buttons
            .is_empty());

        // One answer per callback query.
        let query = fake.callback(&ivan, menu.id.0, "go");
        bot.answer_callback_query(query.clone().into())
            .show_alert(true)
            .await
            .expect("first answer");
        assert!(fake.answered_callback(&query).await.show_alert);
        is_api_error(
            bot.answer_callback_query(query.into()).await,
            ApiError::InvalidQueryId,
        );

        // A document up and back, with its caption edited.
        let sent = bot
            .send_document(
                chat,
                InputFile::memory(b"%PDF-1.7".to_vec()).file_name("receipt.pdf"),
            )
            .caption("first")
            .await
            .expect("a document");
        let document = sent.document().expect("a document message");
        assert_eq!(document.file_name.as_deref(), Some("receipt.pdf"));
        assert_eq!(document.file.size, 8);
        let shown = fake.next_message_to(ivan.id).await;
        assert_eq!(
            (shown.method.as_str(), shown.text.as_str()),
            ("sendDocument", "first")
        );
        let file = shown.document.expect("a document");
        assert_eq!(file.bytes.as_deref(), Some(b"%PDF-1.7".as_slice()));
        assert_eq!(file.mime_type.as_deref(), Some("application/pdf"));
        let upload = fake.wait_for("sendDocument", |_| true).await;
        assert_eq!(upload.files[0].file_name.as_deref(), Some("receipt.pdf"));
        assert_eq!(
            upload.files[0].content_type, None,
            "teloxide sends no part type"
        );
        bot.edit_message_caption(chat, sent.id)
            .caption("second")
            .await
            .expect("caption edited");
        let recaptioned = fake.next_message_to(ivan.id).await;
        assert_eq!(recaptioned.method, "editMessageCaption");
        assert_eq!(recaptioned.text, "second");
        is_api_error(
            bot.edit_message_text(chat, sent.id, "text").await,
            ApiError::Unknown("Bad Request: there is no text in the message to edit".into()),
        );

        // Documents from the user: small ones download, those over 20 MB are refused.
        let scan = fake.document(
            &ivan,
            b"scan".to_vec(),
            "scan.png",
            "image/png",
            Some("чек"),
        );
        fake.document_with(
            &ivan,
            IncomingDocument {
                bytes: b"not really 25 MB".to_vec(),
                file_name: "big.pdf".into(),
                mime_type: "application/pdf".into(),
                caption: None,
                declared_size: Some(25 * 1024 * 1024),
            },
        );
        let updates = bot.get_updates().await.expect("updates");
        let documents: Vec<&Message> = updates
            .iter()
            .filter_map(|u| match &u.kind {
                UpdateKind::Message(m) if m.document().is_some() => Some(m),
                _ => None,
            })
            .collect();
        assert_eq!(documents.len(), 2, "{updates:?}");
        assert_eq!(documents[0].id.0, scan);
        assert_eq!(documents[0].caption(), Some("чек"));
        let small = documents[0].document().expect("a document");
        assert_eq!(
            small.mime_type.as_ref().map(|m| m.as_ref()),
            Some("image/png")
        );
        let file = bot.get_file(small.file.id.clone()).await.expect("getFile");
        let mut bytes = Vec::new();
        bot.download_file(&file.path, &mut bytes)
            .await
            .expect("download");
        assert_eq!(bytes, b"scan");
        let big = documents[1].document().expect("a document");
        assert_eq!(big.file.size, 25 * 1024 * 1024);
        is_api_error(
            bot.get_file(big.file.id.clone()).await,
            ApiError::Unknown("Bad Request: file is too big".into()),
        );

        // Deleting: once.
        bot.delete_message(chat, menu.id).await.expect("deleted");
        assert_eq!(fake.message(ivan.id, menu.id.0), None);
        is_api_error(
            bot.delete_message(chat, menu.id).await,
            ApiError::MessageToDeleteNotFound,
        );

        // Commands Telegram accepts, and one it does not.
        bot.set_my_commands([BotCommand::new("start", "Открыть магазин")])
            .await
            .expect("valid commands");
        assert!(bot
            .set_my_commands([BotCommand::new("Start", "Open")])
            .await
            .is_err());

        // A method the fake does not model is recorded and answered `true`.
        bot.set_my_description()
            .description("Магазин")
            .await
            .expect("catch-all");
        let described = fake.wait_for("setMyDescription", |_| true).await;
        assert_eq!(described.params["description"], "Магазин");

        // A user who blocked the bot.
        fake.block(&ivan);
        is_api_error(
            bot.send_message(chat, "still there?").await,
            ApiError::BotBlocked,
        );
    }

    #[tokio::test]
    async fn the_fake_reads_every_encoding_long_polls_and_fails_on_request() {
        let fake = FakeTelegram::start(TOKEN).await;
        let client = reqwest::Client::new();
        let method = |name: &str| format!("{}bot{TOKEN}/{name}", fake.url());
        let maria = TgUser::ru(3003, "Мария");
        fake.text(&maria, "hi");

        // Url-encoded: numbers parsed back, free text kept as sent.
        let sent: serde_json::Value = client
            .post(method("sendMessage"))
            .form(&[("chat_id", "3003"), ("text", "42")])
            .send()
            .await
            .expect("sendMessage")
            .json()
            .await
            .expect("JSON");
        assert_eq!(sent["ok"], true, "{sent}");
        assert_eq!(sent["result"]["text"], "42");
        let recorded = fake.wait_for("sendMessage", |_| true).await;
        assert_eq!(recorded.params, json!({"chat_id": 3003, "text": "42"}));

        // Any refusal on request, recorded as injected.
        let blocked = Failure::Api {
            status: 403,
            description: "Forbidden: bot was blocked by the user".into(),
        };
        fake.fail_next("sendMessage", blocked.clone());
        let refused = client
            .post(method("sendMessage"))
            .json(&json!({"chat_id": 3003, "text": "hello?"}))
            .send()
            .await
            .expect("sendMessage");
        assert_eq!(refused.status(), 403);
        let body: serde_json::Value = refused.json().await.expect("JSON");
        assert_eq!(
            body["description"],
            "Forbidden: bot was blocked by the user"
        );
        let recorded = fake.wait_for("sendMessage", |_| true).await;
        assert_eq!(recorded.outcome, Outcome::Injected(blocked));

        // A query string, a wrong token, an injected server error.
        let me = client.get(method("getMe")).send().await.expect("getMe");
        assert_eq!(me.status(), 200);
        let wrong = client
            .get(format!("{}bot1:wrong/getMe", fake.url()))
            .send()
            .await
            .expect("getMe");
        assert_eq!(wrong.status(), 401);
        fake.fail_next("getme", Failure::ServerError);
        let failed = client.get(method("getMe")).send().await.expect("getMe");
        assert_eq!(failed.status(), 500);
        let body: serde_json::Value = failed.json().await.expect("JSON");
        assert_eq!(body["ok"], false);
        let again = client.get(method("getMe")).send().await.expect("getMe");
        assert_eq!(again.status(), 200, "a failure is used once");

        // Long polling: the pending update first, then a poll woken by the next push (well
        // before its 30 s timeout), then nothing once everything is confirmed.
        let updates = |query: String| {
            let client = client.clone();
            let url = method("getUpdates");
            async move {
                let body: serde_json::Value = client
                    .get(format!("{url}?{query}"))
                    .send()
                    .await
                    .expect("getUpdates")
                    .json()
                    .await
                    .expect("JSON");
                body["result"].as_array().expect("updates").clone()
            }
        };
        let first = updates("timeout=30".into()).await;
        assert_eq!(first.len(), 1);
        let first_id = first[0]["update_id"].as_i64().expect("an update id");
        let polled = fake.wait_for("getUpdates", |_| true).await;
        assert_eq!(polled.params["timeout"], 30);
        let next = tokio::spawn(updates(format!("offset={}&timeout=30", first_id + 1)));
        fake.wait_for("getUpdates", |r| r.params["offset"] == first_id + 1)
            .await;
        fake.text(&maria, "are you there?");
        let woken = tokio::time::timeout(Duration::from_secs(10), next)
            .await
            .expect("the long poll wakes when an update arrives")
            .expect("the poll task");
        assert_eq!(woken.len(), 1);
        assert_eq!(woken[0]["message"]["text"], "are you there?");
        assert_eq!(woken[0]["update_id"], first_id + 1);
        let confirmed = updates(format!("offset={}", first_id + 2)).await;
        assert!(confirmed.is_empty());
        assert!(
            updates(String::new()).await.is_empty(),
            "confirmed updates are gone"
        );

        // A second poller ends the pending poll of the first, as Telegram does.
        let older = tokio::spawn(
            client
                .get(format!("{}?timeout=30", method("getUpdates")))
                .send(),
        );
        let pending = fake
            .wait_for("getUpdates", |r| r.params["timeout"] == 30)
            .await;
        assert!(updates("timeout=0".into()).await.is_empty());
        let ended = tokio::time::timeout(Duration::from_secs(10), older)
            .await
            .expect("the older poll ends at once")
            .expect("the poll task")
            .expect("an answer");
        assert_eq!(ended.status(), 409);
        let refused = &fake.all_requests()[pending.seq];
        assert!(
            matches!(&refused.outcome, Outcome::Refused { status: 409, description }
                if description.starts_with("Conflict: terminated by other getUpdates")),
            "{refused:?}"
        );
    }
}

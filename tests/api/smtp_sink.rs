//! A tiny SMTP server for tests: speaks just enough SMTP for lettre (220, EHLO/HELO 250,
//! MAIL/RCPT 250, DATA 354 … "." 250, RSET/NOOP 250, QUIT 221) and keeps every message it
//! accepted. Each connection follows the next [`Behavior`] queued by the test (then accepts),
//! to test retries and failures: a connection dropped after the message was sent but before
//! the server's 250, or a permanent refusal.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the sink does with one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Accepts the message.
    Accept,
    /// Reads the whole message, then closes the connection without answering: the sender
    /// cannot know whether it arrived, and must send it again. Not kept.
    DropAfterData,
    /// Answers the end of the message with `550 <text>` (a permanent refusal). Not kept.
    Refuse550,
}

/// One accepted message.
#[derive(Clone, Debug)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent (headers and body, dot-unstuffed).
    pub data: String,
}

impl Mail {
    /// The value of header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with(' ') || line.starts_with('\t') {
                    v.push_str(line.trim_start());
                    continue;
                }
                return value;
            }
            if let Some((key, rest)) = line.split_once(':') {
                if key.eq_ignore_ascii_case(name) {
                    value = Some(rest.trim().to_owned());
                }
            }
        }
        value
    }

    /// The body (after the headers) as text, decoded from its `Content-Transfer-Encoding`
    /// (base64 or quoted-printable, as a sender picks for non-ASCII text).
    pub fn body(&self) -> String {
        let raw = self
            .data
            .split_once("\r\n\r\n")
            .map(|(_, body)| body)
            .unwrap_or_default();
        let encoding = self
            .header("Content-Transfer-Encoding")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let bytes = match encoding.as_str() {
            "base64" => {
                use base64::Engine;
                let compact: String = raw.split_whitespace().collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .expect("a base64 body")
            }
            "quoted-printable" => quoted_printable(raw),
            _ => raw.as_bytes().to_vec(),
        };
        String::from_utf8(bytes).expect("a UTF-8 body")
    }
}

#[derive(Default)]
struct State {
    behaviors: VecDeque<Behavior>,
    mails: Vec<Mail>,
    connections: usize,
}

/// The sink; dropping it stops listening.
pub struct SmtpSink {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl SmtpSink {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SMTP sink");
        let port = listener.local_addr().expect("address").port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = CancellationToken::new();
        let (shared, stopped) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stopped.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((socket, _)) = accepted else { continue };
                let behavior = {
                    let mut state = shared.lock().expect("sink state");
                    state.connections += 1;
                    state.behaviors.pop_front().unwrap_or(Behavior::Accept)
                };
                tokio::spawn(serve(socket, behavior, shared.clone()));
            }
        });
        SmtpSink { port, state, stop }
    }

    /// The URL to give the service (`--smtp-url`).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The next connections behave so, in turn (then accept again).
    pub fn next_connections(&self, behaviors: &[Behavior]) {
        self.state
            .lock()
            .expect("sink state")
            .behaviors
            .extend(behaviors.iter().cloned());
    }

    /// Every message accepted so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.state.lock().expect("sink state").mails.clone()
    }

    /// The accepted messages to `address`.
    pub fn mails_to(&self, address: &str) -> Vec<Mail> {
        self.mails()
            .into_iter()
            .filter(|m| m.to.iter().any(|to| to == address))
            .collect()
    }

    /// Connections made so far.
    pub fn connections(&self) -> usize {
        self.state.lock().expect("sink state").connections
    }
}

/// Decodes quoted-printable text: `=XX` bytes and `=` soft line breaks.
fn quoted_printable(text: &str) -> Vec<u8> {
    let text = text.replace("=\r\n", "");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(Ok(byte)) = hex.map(|h| u8::from_str_radix(h, 16)) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The address in `MAIL FROM:<a>` / `RCPT TO:<a> …`.
fn address_of(argument: &str) -> String {
    argument
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(address, _)| address.to_owned())
        .unwrap_or_default()
}

async fn serve(socket: tokio::net::TcpStream, behavior: Behavior, state: Arc<Mutex<State>>) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    if write
        .write_all(b"220 sink.test ESMTP ready\r\n")
        .await
        .is_err()
    {
        return;
    }
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = line.trim_end().to_owned();
        let verb = command
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let answer: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 sink.test\r\n",
            "MAIL" => {
                from = address_of(&command);
                to.clear();
                b"250 OK\r\n"
            }
            "RCPT" => {
                to.push(address_of(&command));
                b"250 OK\r\n"
            }
            "RSET" | "NOOP" => b"250 OK\r\n",
            "QUIT" => {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            }
            "DATA" => {
                if write.write_all(b"354 go ahead\r\n").await.is_err() {
                    return;
                }
                let mut data = String::new();
                loop {
                    line.clear();
                    match lines.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                    data.push_str(unstuffed);
                }
                match behavior {
                    Behavior::DropAfterData => return,
                    Behavior::Refuse550 => b"550 mailbox unavailable\r\n",
                    Behavior::Accept => {
                        state.lock().expect("sink state").mails.push(Mail {
                            from: from.clone(),
                            to: to.clone(),
                            data,
                        });
                        b"250 accepted\r\n"
                    }
                }
            }
            _ => b"502 not implemented\r\n",
        };
        if write.write_all(answer).await.is_err() {
            return;
        }
    }
}

//! The e-mail channel: lettre over SMTP (`--smtp-url`, e.g. `smtp://127.0.0.1:2525`, or
//! `smtps://user:password@host` / `smtp://…?tls=required` for TLS through rustls). The message
//! says what the recipient's notification center says (title as the subject, body, link), to
//! the address sealed in their account — none for an erased person.
//!
//! Idempotent for the receiver: the delivery id is the `Message-ID`
//! (`<delivery-id@sender-domain>`) and the `X-Shopfront-Delivery-Id` header, so a message sent
//! again after a crash between the server's 250 and our `sent` mark can be dropped as a
//! duplicate. Marked sent only after the server accepted the message. A permanent refusal (5xx)
//! fails the delivery at once; anything else is retried with backoff.

use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{backoff, Outcome};
use crate::app::{App, AppError, DueDelivery, EmailNotice};

/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Sends notification e-mails through one SMTP server.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The domain of `Message-ID`s: the sender's.
    domain: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("from", &self.from).finish()
    }
}

impl Mailer {
    /// A mailer for the SMTP server at `url`, sending as `from` (`Name <address>` or an
    /// address).
    pub fn new(url: &SecretString, from: &str) -> anyhow::Result<Self> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| anyhow::anyhow!("--smtp-from '{from}' is not an e-mail address: {e}"))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
            .map_err(|e| anyhow::anyhow!("--smtp-url is not an SMTP URL: {e}"))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        let domain = from.email.domain().to_owned();
        Ok(Self {
            transport,
            from,
            domain,
        })
    }

    /// Sends `notice` as the delivery `delivery_id`; `Ok` once the server accepted it.
    pub async fn send(&self, delivery_id: Uuid, notice: &EmailNotice) -> Result<(), MailError> {
        let to: Mailbox = notice.to.parse().map_err(|err| {
            MailError::Permanent(format!("the recipient's address cannot be used: {err}"))
        })?;
        let mut body = notice.body.clone();
        if let Some(link) = &notice.link {
            body.push_str(&format!("\n\n{link}"));
        }
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(notice.subject.clone())
            .message_id(Some(format!("<{delivery_id}@{}>", self.domain)))
            .header(DeliveryIdHeader(delivery_id.to_string()))
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|err| MailError::Permanent(format!("the message cannot be built: {err}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            // A permanent refusal (5xx) will not change by asking again.
            Err(err) if err.is_permanent() => Err(MailError::Permanent(format!("smtp: {err}"))),
            Err(err) => Err(MailError::Transient(format!("smtp: {err}"))),
        }
    }
}

/// Why an e-mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// Sending it again will not help (the server refused it for good, the address is bad).
    #[error("{0}")]
    Permanent(String),
    /// Worth another try later (the server is away, the connection broke, a 4xx).
    #[error("{0}")]
    Transient(String),
}

/// Sends one delivery by e-mail: to the recipient's address, if they still may be told and
/// have one.
pub async fn deliver(app: &App, mailer: &Mailer, delivery: &DueDelivery) -> Outcome {
    match email_for(app, delivery).await {
        Ok(Ok(notice)) => match mailer.send(delivery.delivery_id, &notice).await {
            Ok(()) => Outcome::Sent,
            Err(MailError::Permanent(error)) => Outcome::Failed {
                error,
                retry_in: None,
            },
            Err(MailError::Transient(error)) => Outcome::Failed {
                error,
                retry_in: Some(backoff(delivery.attempts)),
            },
        },
        Ok(Err(reason)) => Outcome::Skipped(reason.into()),
        Err(err) => Outcome::Failed {
            error: format!("database: {err}"),
            retry_in: Some(backoff(delivery.attempts)),
        },
    }
}

/// The e-mail to send for `delivery`, or why there is none.
async fn email_for(
    app: &App,
    delivery: &DueDelivery,
) -> Result<Result<EmailNotice, &'static str>, AppError> {
    if app.recipient(delivery).await?.is_none() {
        return Ok(Err("the recipient may no longer be told"));
    }
    Ok(app
        .email_notice(delivery)
        .await?
        .ok_or("the account has no e-mail address (or it was erased)"))
}

/// `X-Shopfront-Delivery-Id`: the delivery an e-mail is, for receivers that drop duplicates.
#[derive(Clone, Debug)]
struct DeliveryIdHeader(String);

impl Header for DeliveryIdHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Shopfront-Delivery-Id")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

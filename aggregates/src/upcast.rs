//! Upcasters: stored events of an older version, in the shape this build reads.
//!
//! A released event's shape never changes (docs/events.md); a new shape is a new
//! `event_version`, and every reader of the log (the event store loading an aggregate, the
//! projections decoding a batch) passes each stored payload through [`upcast`] before it
//! deserialises it. Pure JSON to JSON, so the rules live beside the events they evolve and are
//! tested without a database.
//!
//! | event | stored as | read as |
//! |---|---|---|
//! | `Account` / `AccountRegistered` 1.0 | `telegram_user_id: i64?` (clear) | 2.0 `telegram_user`: the number, as [`TelegramId::Legacy`](crate::TelegramId::Legacy) |
//! | `Account` / `TelegramLinked` 1.0 | `telegram_user_id: i64`, `previous_telegram_user_id: i64?` | 2.0 `telegram_user` (legacy number), `relinked` = whether there was a previous id |
//!
//! Upcasting cannot seal what an old event holds in clear (sealing needs the person's key, and
//! the log is never rewritten): those ids stay readable in the old events themselves; readers
//! drop them once the person is erased (`PersonalDataErased`).

use serde_json::{Map, Value};

use crate::EVENT_VERSION_1;

/// The version of events whose Telegram user id is sealed (`AccountRegistered`,
/// `TelegramLinked`).
pub const EVENT_VERSION_2: &str = "2.0";

/// Why a stored event cannot be brought to the current shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpcastError {
    #[error("unknown event version (an upcaster is needed)")]
    UnknownVersion,
    #[error("the payload is not a {0} of its version")]
    Malformed(&'static str),
}

/// The version this build writes for events of `event_type` of `aggregate_type`.
pub fn current_version(aggregate_type: &str, event_type: &str) -> &'static str {
    match (aggregate_type, event_type) {
        ("Account", "AccountRegistered" | "TelegramLinked") => EVENT_VERSION_2,
        _ => EVENT_VERSION_1,
    }
}

/// Whether a stored event of `event_version` holds personal data in clear: the older shapes in
/// the table above, written before the Telegram user id was sealed. Upcasting cannot seal them
/// (that needs the person's key), so whoever hands out payloads *as stored* — the live feeds,
/// an aggregate's audit history — withholds these; the one place that says which they are.
pub fn holds_clear_personal_data(
    aggregate_type: &str,
    event_type: &str,
    event_version: &str,
) -> bool {
    matches!(
        (aggregate_type, event_type, event_version),
        ("Account", "AccountRegistered" | "TelegramLinked", "1.0")
    )
}

/// `payload` (serde's externally tagged form, `{"EventType": {...}}`) of a stored event of
/// `event_version`, in the shape of the current version of its type.
pub fn upcast(
    aggregate_type: &str,
    event_type: &str,
    event_version: &str,
    payload: Value,
) -> Result<Value, UpcastError> {
    if event_version == current_version(aggregate_type, event_type) {
        return Ok(payload);
    }
    match (aggregate_type, event_type, event_version) {
        ("Account", "AccountRegistered", "1.0") => in_body(payload, "AccountRegistered", |body| {
            let id = body.remove("telegram_user_id").unwrap_or(Value::Null);
            body.insert("telegram_user".into(), id);
        }),
        ("Account", "TelegramLinked", "1.0") => in_body(payload, "TelegramLinked", |body| {
            let id = body.remove("telegram_user_id").unwrap_or(Value::Null);
            let previous = body
                .remove("previous_telegram_user_id")
                .unwrap_or(Value::Null);
            body.insert("telegram_user".into(), id);
            body.insert("relinked".into(), Value::Bool(!previous.is_null()));
        }),
        _ => Err(UpcastError::UnknownVersion),
    }
}

/// Applies `change` to the body of `{"<event_type>": {...}}`.
fn in_body(
    mut payload: Value,
    event_type: &'static str,
    change: impl FnOnce(&mut Map<String, Value>),
) -> Result<Value, UpcastError> {
    let body = payload
        .get_mut(event_type)
        .and_then(Value::as_object_mut)
        .ok_or(UpcastError::Malformed(event_type))?;
    change(body);
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::AccountEvent;
    use crate::{AccountId, TelegramId};
    use cqrs_es::DomainEvent as _;
    use serde_json::json;

    #[test]
    fn an_account_registered_in_version_1_reads_with_its_clear_id_as_legacy() {
        let stored = json!({"AccountRegistered": {
            "account_id": "0193a1b2-0000-7000-8000-000000000001",
            "telegram_user_id": 777, "email": null, "display_name": null,
            "platform_admin": false, "channel": "telegram",
            "registered_at": "2026-11-25T10:00:00Z"}});
        let current = upcast("Account", "AccountRegistered", "1.0", stored).expect("upcast");
        let AccountEvent::AccountRegistered { telegram_user, .. } =
            serde_json::from_value(current).expect("current shape")
        else {
            panic!("another event");
        };
        assert_eq!(telegram_user, Some(TelegramId::Legacy(777)));

        let without = json!({"AccountRegistered": {
            "account_id": "0193a1b2-0000-7000-8000-000000000001",
            "telegram_user_id": null, "email": null, "display_name": null,
            "platform_admin": true, "channel": "api",
            "registered_at": "2026-11-25T10:00:00Z"}});
        let current = upcast("Account", "AccountRegistered", "1.0", without).expect("upcast");
        let event: AccountEvent = serde_json::from_value(current).expect("current shape");
        assert!(matches!(
            event,
            AccountEvent::AccountRegistered {
                telegram_user: None,
                ..
            }
        ));
    }

    #[test]
    fn a_telegram_link_of_version_1_reads_as_relinked_when_it_replaced_an_id() {
        for (previous, relinked) in [(json!(777), true), (Value::Null, false)] {
            let stored = json!({"TelegramLinked": {"telegram_user_id": 888,
                "previous_telegram_user_id": previous, "at": "2026-11-25T10:00:00Z"}});
            let current = upcast("Account", "TelegramLinked", "1.0", stored).expect("upcast");
            let event: AccountEvent = serde_json::from_value(current).expect("current shape");
            let AccountEvent::TelegramLinked {
                telegram_user,
                relinked: read,
                ..
            } = event
            else {
                panic!("another event");
            };
            assert_eq!(telegram_user, TelegramId::Legacy(888));
            assert_eq!(read, relinked);
        }
    }

    #[test]
    fn current_events_pass_unchanged_and_unknown_versions_are_refused() {
        let event = AccountEvent::PersonalDataErased {
            subject_id: AccountId::default(),
            at: chrono::DateTime::UNIX_EPOCH,
        };
        let payload = serde_json::to_value(&event).expect("json");
        assert_eq!(event.event_version(), "1.0");
        assert_eq!(
            upcast("Account", &event.event_type(), "1.0", payload.clone()),
            Ok(payload.clone())
        );
        assert_eq!(
            upcast("Account", "AccountRegistered", "9.0", payload.clone()),
            Err(UpcastError::UnknownVersion)
        );
        assert_eq!(
            upcast("Order", "OrderTeleported", "9.0", payload),
            Err(UpcastError::UnknownVersion)
        );
        assert_eq!(
            upcast("Account", "TelegramLinked", "1.0", json!({"Other": {}})),
            Err(UpcastError::Malformed("TelegramLinked"))
        );
    }

    #[test]
    fn only_the_old_shapes_with_a_clear_telegram_id_hold_clear_personal_data() {
        let clear = |event_type, version| holds_clear_personal_data("Account", event_type, version);
        assert!(clear("AccountRegistered", "1.0"));
        assert!(clear("TelegramLinked", "1.0"));
        // Their current shapes seal the id; the other account events never held it.
        assert!(!clear("AccountRegistered", EVENT_VERSION_2));
        assert!(!clear("TelegramLinked", EVENT_VERSION_2));
        assert!(!clear("PersonalDataErased", "1.0"));
        assert!(!clear("AccountBlocked", "1.0"));
        assert!(!holds_clear_personal_data("Order", "OrderPlaced", "1.0"));
    }

    #[test]
    fn the_written_version_of_every_account_event_is_the_one_readers_expect() {
        let sealed = crate::SealedPersonalData {
            subject_id: AccountId::default(),
            algorithm: "xchacha20poly1305".into(),
            nonce: "bm9uY2U=".into(),
            ciphertext: "x".into(),
        };
        let registered = AccountEvent::AccountRegistered {
            account_id: AccountId::default(),
            telegram_user: Some(TelegramId::Sealed(sealed.clone())),
            email: None,
            display_name: None,
            platform_admin: false,
            channel: crate::Channel::Telegram,
            registered_at: chrono::DateTime::UNIX_EPOCH,
        };
        let linked = AccountEvent::TelegramLinked {
            telegram_user: TelegramId::Sealed(sealed),
            relinked: false,
            at: chrono::DateTime::UNIX_EPOCH,
        };
        for event in [registered, linked] {
            assert_eq!(event.event_version(), EVENT_VERSION_2);
            let payload = serde_json::to_value(&event).expect("json");
            let read =
                upcast("Account", &event.event_type(), EVENT_VERSION_2, payload).expect("current");
            assert_eq!(
                serde_json::from_value::<AccountEvent>(read).expect("shape"),
                event
            );
        }
    }
}

//! The metadata stored with every event (ARCHITECTURE rule 4).
//!
//! postgres-es stores metadata as a flat string map in its `metadata` column; this typed struct
//! is the one place that knows the keys, used by the application layer when it writes and by the
//! read side (audit trail) when it reads. Part of the storage format: keys never change meaning.
//!
//! No personal data: the client's IP address and user agent are kept outside the log, per
//! request, in a table erasure can empty (`request_origins`). Events written before that carry
//! `client_ip` / `user_agent` keys; [`EventMetadata::from_map`] ignores them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{AccountId, Channel, StoreRole};

/// In what capacity an actor issued a command. Stored by name (`OWNER`, `CUSTOMER`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActorRole {
    /// Staff acting through their role in the store.
    Owner,
    Admin,
    Vendor,
    Auditor,
    /// A customer acting on their own orders.
    Customer,
    /// A platform admin acting platform-wide (creating stores, managing accounts).
    PlatformAdmin,
    /// An account acting on itself (its sign-in methods, its tokens).
    #[serde(rename = "SELF")]
    Account,
    /// The system itself: process managers, seeding, benchmarks.
    System,
    /// A name this build does not know (metadata is read leniently; never written).
    Unknown,
}

impl ActorRole {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorRole::Owner => "OWNER",
            ActorRole::Admin => "ADMIN",
            ActorRole::Vendor => "VENDOR",
            ActorRole::Auditor => "AUDITOR",
            ActorRole::Customer => "CUSTOMER",
            ActorRole::PlatformAdmin => "PLATFORM_ADMIN",
            ActorRole::Account => "SELF",
            ActorRole::System => "SYSTEM",
            ActorRole::Unknown => "UNKNOWN",
        }
    }

    /// The role of a name as stored; [`ActorRole::Unknown`] for any other.
    pub fn from_name(name: &str) -> Self {
        [
            ActorRole::Owner,
            ActorRole::Admin,
            ActorRole::Vendor,
            ActorRole::Auditor,
            ActorRole::Customer,
            ActorRole::PlatformAdmin,
            ActorRole::Account,
            ActorRole::System,
        ]
        .into_iter()
        .find(|role| role.as_str() == name)
        .unwrap_or(ActorRole::Unknown)
    }
}

impl From<StoreRole> for ActorRole {
    fn from(role: StoreRole) -> Self {
        match role {
            StoreRole::Owner => ActorRole::Owner,
            StoreRole::Admin => ActorRole::Admin,
            StoreRole::Vendor => ActorRole::Vendor,
            StoreRole::Auditor => ActorRole::Auditor,
        }
    }
}

impl std::fmt::Display for ActorRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who did it, through what, and why: attached to every event a command emits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The account that issued the command; `None` for the system itself.
    pub actor_id: Option<AccountId>,
    /// The capacity the actor acted in.
    pub actor_role: ActorRole,
    pub channel: Channel,
    /// The id this service gave the request (HTTP), update (bot) or job (process managers):
    /// it appears in the service's log lines and in `X-Request-Id` of the response.
    pub request_id: String,
    /// The `X-Request-Id` the client sent, if any: kept apart, since anybody can send anything.
    pub client_request_id: Option<String>,
    /// Shared by every command issued for one user intent, across aggregates and processes.
    pub correlation_id: Uuid,
    /// For commands issued by a process manager: the global position of the causing event.
    pub causation_position: Option<i64>,
}

const ACTOR_ID: &str = "actor_id";
const ACTOR_ROLE: &str = "actor_role";
const CHANNEL: &str = "channel";
const REQUEST_ID: &str = "request_id";
const CLIENT_REQUEST_ID: &str = "client_request_id";
const CORRELATION_ID: &str = "correlation_id";
const CAUSATION_POSITION: &str = "causation_position";

impl EventMetadata {
    /// Every key this build writes and reads. A reader that hands stored metadata on (exports,
    /// live feeds) keeps these only: older events also carry `client_ip` and `user_agent`,
    /// personal data that is never handed out.
    pub const KEYS: [&'static str; 7] = [
        ACTOR_ID,
        ACTOR_ROLE,
        CHANNEL,
        REQUEST_ID,
        CLIENT_REQUEST_ID,
        CORRELATION_ID,
        CAUSATION_POSITION,
    ];

    /// The flat map postgres-es stores; absent values are left out.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::with_capacity(7);
        if let Some(actor) = self.actor_id {
            map.insert(ACTOR_ID.into(), actor.to_string());
        }
        map.insert(ACTOR_ROLE.into(), self.actor_role.as_str().into());
        map.insert(CHANNEL.into(), self.channel.as_str().into());
        map.insert(REQUEST_ID.into(), self.request_id.clone());
        if let Some(client_request_id) = &self.client_request_id {
            map.insert(CLIENT_REQUEST_ID.into(), client_request_id.clone());
        }
        map.insert(CORRELATION_ID.into(), self.correlation_id.to_string());
        if let Some(position) = self.causation_position {
            map.insert(CAUSATION_POSITION.into(), position.to_string());
        }
        map
    }

    /// Reads metadata back from the stored map. Unknown or malformed values become `None` or
    /// defaults rather than errors: metadata describes an event, it never decides its meaning.
    pub fn from_map(map: &HashMap<String, String>) -> Self {
        let channel = match map.get(CHANNEL).map(String::as_str) {
            Some("api") => Channel::Api,
            Some("telegram") => Channel::Telegram,
            Some("console") => Channel::Console,
            _ => Channel::System,
        };
        Self {
            actor_id: map.get(ACTOR_ID).and_then(|s| s.parse().ok()),
            actor_role: map
                .get(ACTOR_ROLE)
                .map_or(ActorRole::Unknown, |name| ActorRole::from_name(name)),
            channel,
            request_id: map.get(REQUEST_ID).cloned().unwrap_or_default(),
            client_request_id: map.get(CLIENT_REQUEST_ID).cloned(),
            correlation_id: map
                .get(CORRELATION_ID)
                .and_then(|s| s.parse().ok())
                .unwrap_or_default(),
            causation_position: map.get(CAUSATION_POSITION).and_then(|s| s.parse().ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_survives_the_round_trip_through_the_stored_map() {
        let metadata = EventMetadata {
            actor_id: Some(AccountId::new()),
            actor_role: ActorRole::Owner,
            channel: Channel::Telegram,
            request_id: "req-1".into(),
            client_request_id: Some("client-7".into()),
            correlation_id: Uuid::now_v7(),
            causation_position: Some(42),
        };
        let map = metadata.to_map();
        assert_eq!(map[ACTOR_ROLE], "OWNER");
        assert_eq!(EventMetadata::from_map(&map), metadata);
    }

    #[test]
    fn every_actor_role_is_read_back_by_its_stored_name() {
        for role in [
            ActorRole::Owner,
            ActorRole::Admin,
            ActorRole::Vendor,
            ActorRole::Auditor,
            ActorRole::Customer,
            ActorRole::PlatformAdmin,
            ActorRole::Account,
            ActorRole::System,
        ] {
            assert_eq!(ActorRole::from_name(role.as_str()), role);
            assert_eq!(
                serde_json::to_value(role).unwrap(),
                serde_json::json!(role.as_str())
            );
        }
        assert_eq!(ActorRole::from_name("BOSS"), ActorRole::Unknown);
    }

    #[test]
    fn personal_data_of_older_metadata_is_not_read() {
        let map: HashMap<String, String> = [
            ("actor_role", "CUSTOMER"),
            ("channel", "api"),
            ("request_id", "r"),
            ("client_ip", "203.0.113.9"),
            ("user_agent", "curl/8"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let metadata = EventMetadata::from_map(&map);
        assert_eq!(metadata.actor_role, ActorRole::Customer);
        assert!(!format!("{metadata:?}").contains("203.0.113.9"));
    }
}

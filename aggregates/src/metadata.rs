//! The metadata stored with every event (ARCHITECTURE rule 4).
//!
//! postgres-es stores metadata as a flat string map in its `metadata` column; this typed struct
//! is the one place that knows the keys, used by the application layer when it writes and by the
//! read side (audit trail) when it reads. Part of the storage format: keys never change meaning.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{AccountId, Channel};

/// Who did it, through what, and why: attached to every event a command emits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The account that issued the command; `None` for the system itself.
    pub actor_id: Option<AccountId>,
    /// The actor's role for this command (`OWNER`, `CUSTOMER`, `SYSTEM`, ...).
    pub actor_role: String,
    pub channel: Channel,
    /// The id of the request (HTTP `X-Request-Id`, bot update id) that carried the command.
    pub request_id: String,
    /// Shared by every command issued for one user intent, across aggregates and processes.
    pub correlation_id: Uuid,
    /// For commands issued by a process manager: the global position of the causing event.
    pub causation_position: Option<i64>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

const ACTOR_ID: &str = "actor_id";
const ACTOR_ROLE: &str = "actor_role";
const CHANNEL: &str = "channel";
const REQUEST_ID: &str = "request_id";
const CORRELATION_ID: &str = "correlation_id";
const CAUSATION_POSITION: &str = "causation_position";
const CLIENT_IP: &str = "client_ip";
const USER_AGENT: &str = "user_agent";

impl EventMetadata {
    /// The flat map postgres-es stores; absent values are left out.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::with_capacity(8);
        if let Some(actor) = self.actor_id {
            map.insert(ACTOR_ID.into(), actor.to_string());
        }
        map.insert(ACTOR_ROLE.into(), self.actor_role.clone());
        map.insert(CHANNEL.into(), self.channel.as_str().into());
        map.insert(REQUEST_ID.into(), self.request_id.clone());
        map.insert(CORRELATION_ID.into(), self.correlation_id.to_string());
        if let Some(position) = self.causation_position {
            map.insert(CAUSATION_POSITION.into(), position.to_string());
        }
        if let Some(ip) = &self.client_ip {
            map.insert(CLIENT_IP.into(), ip.clone());
        }
        if let Some(agent) = &self.user_agent {
            map.insert(USER_AGENT.into(), agent.clone());
        }
        map
    }

    /// Reads metadata back from the stored map. Unknown or malformed values become `None` or
    /// defaults rather than errors: metadata describes an event, it never decides its meaning.
    pub fn from_map(map: &HashMap<String, String>) -> Self {
        let channel = match map.get(CHANNEL).map(String::as_str) {
            Some("api") => Channel::Api,
            Some("telegram") => Channel::Telegram,
            _ => Channel::System,
        };
        Self {
            actor_id: map.get(ACTOR_ID).and_then(|s| s.parse().ok()),
            actor_role: map.get(ACTOR_ROLE).cloned().unwrap_or_default(),
            channel,
            request_id: map.get(REQUEST_ID).cloned().unwrap_or_default(),
            correlation_id: map
                .get(CORRELATION_ID)
                .and_then(|s| s.parse().ok())
                .unwrap_or_default(),
            causation_position: map.get(CAUSATION_POSITION).and_then(|s| s.parse().ok()),
            client_ip: map.get(CLIENT_IP).cloned(),
            user_agent: map.get(USER_AGENT).cloned(),
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
            actor_role: "OWNER".into(),
            channel: Channel::Telegram,
            request_id: "req-1".into(),
            correlation_id: Uuid::now_v7(),
            causation_position: Some(42),
            client_ip: Some("127.0.0.1".into()),
            user_agent: None,
        };
        let map = metadata.to_map();
        assert!(!map.contains_key(USER_AGENT));
        assert_eq!(EventMetadata::from_map(&map), metadata);
    }
}

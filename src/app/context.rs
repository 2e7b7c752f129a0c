//! Who is asking, and through what: the input every application service takes, from which
//! the metadata of every emitted event is built (ARCHITECTURE rule 4).

use aggregates::{AccountId, Channel, EventMetadata};
use uuid::Uuid;

/// The caller of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// `None` for the system itself (process managers, the CLI's demo seeding).
    pub account_id: Option<AccountId>,
    /// The role the actor acts in (`OWNER`, `CUSTOMER`, `SYSTEM`, ...).
    pub role: String,
}

/// One request's context. Build it in an adapter; pass it to application services.
#[derive(Clone, Debug)]
pub struct CommandContext {
    pub actor: Actor,
    pub channel: Channel,
    pub request_id: String,
    pub correlation_id: Uuid,
    pub causation_position: Option<i64>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

impl CommandContext {
    /// A context for work the system does on its own (sweeps, seeding).
    pub fn system(request_id: impl Into<String>) -> Self {
        Self {
            actor: Actor {
                account_id: None,
                role: "SYSTEM".into(),
            },
            channel: Channel::System,
            request_id: request_id.into(),
            correlation_id: Uuid::now_v7(),
            causation_position: None,
            client_ip: None,
            user_agent: None,
        }
    }

    /// A context for an account acting through a channel.
    pub fn for_actor(account_id: AccountId, role: impl Into<String>, channel: Channel) -> Self {
        Self {
            actor: Actor {
                account_id: Some(account_id),
                role: role.into(),
            },
            channel,
            request_id: Uuid::now_v7().to_string(),
            correlation_id: Uuid::now_v7(),
            causation_position: None,
            client_ip: None,
            user_agent: None,
        }
    }

    /// The same request, continuing from the event at `position` (for process managers).
    pub fn caused_by(&self, position: i64) -> Self {
        Self {
            causation_position: Some(position),
            ..self.clone()
        }
    }

    /// The metadata stored with every event this request emits.
    pub fn metadata(&self) -> EventMetadata {
        EventMetadata {
            actor_id: self.actor.account_id,
            actor_role: self.actor.role.clone(),
            channel: self.channel,
            request_id: self.request_id.clone(),
            correlation_id: self.correlation_id,
            causation_position: self.causation_position,
            client_ip: self.client_ip.clone(),
            user_agent: self.user_agent.clone(),
        }
    }
}

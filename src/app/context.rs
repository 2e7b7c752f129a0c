//! Who is asking, and through what.
//!
//! Adapters hand the application layer a [`Caller`]: the [`Principal`] authentication found and
//! the [`Origin`] of the request (channel, request ids, client address). From it the application
//! layer — and only it — builds the [`CommandContext`] whose metadata every emitted event
//! carries (ARCHITECTURE rule 4): the actor's role comes from an authorization proof, never from
//! the adapter.

use aggregates::{AccountId, ActorRole, Channel, EventMetadata};
use uuid::Uuid;

use super::Principal;

/// Where a request came from, as the adapter saw it.
#[derive(Clone, Debug)]
pub struct Origin {
    pub channel: Channel,
    /// The id this service gave the request (or bot update, or job); it is in the log lines.
    pub request_id: String,
    /// An id the client sent along (`X-Request-Id`), kept apart from ours.
    pub client_request_id: Option<String>,
    /// Personal data: kept outside the event log (`request_origins`), erasable.
    pub client_ip: Option<String>,
    /// Personal data, like the IP.
    pub user_agent: Option<String>,
}

impl Origin {
    /// A request through `channel` with a fresh request id and nothing else known.
    pub fn new(channel: Channel) -> Self {
        Self {
            channel,
            request_id: Uuid::now_v7().to_string(),
            client_request_id: None,
            client_ip: None,
            user_agent: None,
        }
    }
}

/// An authenticated caller and where the call comes from: what adapters pass to services.
#[derive(Clone, Debug)]
pub struct Caller {
    principal: Principal,
    pub origin: Origin,
}

impl Caller {
    pub fn new(principal: Principal, origin: Origin) -> Self {
        Self { principal, origin }
    }

    /// The service acting for `account_id` through `channel` (seeding, benchmarks): it goes
    /// through the same authorization as any caller.
    ///
    /// Public only for the bench binary (`src/bench/`, outside this library) and hidden from
    /// the docs: not part of the library's API.
    #[doc(hidden)]
    pub fn service(account_id: AccountId, channel: Channel) -> Self {
        Self::new(Principal::service(account_id), Origin::new(channel))
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn account_id(&self) -> AccountId {
        self.principal.account_id()
    }

    /// The context for commands this caller issues in the capacity `role` — which the
    /// application layer establishes (an authorization proof, the order's own customer, ...).
    pub(crate) fn context(&self, role: ActorRole) -> CommandContext {
        CommandContext {
            actor_id: Some(self.principal.account_id()),
            actor_role: role,
            origin: self.origin.clone(),
            correlation_id: Uuid::now_v7(),
            causation_position: None,
        }
    }
}

/// One request's context, from which the metadata of every event it emits is built. Only the
/// application layer makes one.
#[derive(Clone, Debug)]
pub struct CommandContext {
    pub(crate) actor_id: Option<AccountId>,
    pub(crate) actor_role: ActorRole,
    pub(crate) origin: Origin,
    pub(crate) correlation_id: Uuid,
    pub(crate) causation_position: Option<i64>,
}

impl CommandContext {
    /// Work the system does on its own (process managers, seeding, the CLI); `job` names it
    /// as the request id.
    ///
    /// Public only for the bench binary (`src/bench/`, outside this library) and hidden from
    /// the docs: not part of the library's API.
    #[doc(hidden)]
    pub fn system(job: impl Into<String>) -> Self {
        Self {
            actor_id: None,
            actor_role: ActorRole::System,
            origin: Origin {
                request_id: job.into(),
                ..Origin::new(Channel::System)
            },
            correlation_id: Uuid::now_v7(),
            causation_position: None,
        }
    }

    /// An account acting in `role` through `channel` without an HTTP request (seeding,
    /// benchmarks, the bot's own jobs).
    pub(crate) fn for_actor(account_id: AccountId, role: ActorRole, channel: Channel) -> Self {
        Self {
            actor_id: Some(account_id),
            actor_role: role,
            origin: Origin::new(channel),
            correlation_id: Uuid::now_v7(),
            causation_position: None,
        }
    }

    /// The same request, continuing from the event at `position` (for process managers).
    pub(crate) fn caused_by(&self, position: i64) -> Self {
        Self {
            causation_position: Some(position),
            ..self.clone()
        }
    }

    /// The account acting, if a person is.
    pub fn actor_id(&self) -> Option<AccountId> {
        self.actor_id
    }

    pub fn channel(&self) -> Channel {
        self.origin.channel
    }

    pub fn request_id(&self) -> &str {
        &self.origin.request_id
    }

    /// The metadata stored with every event this request emits.
    pub fn metadata(&self) -> EventMetadata {
        EventMetadata {
            actor_id: self.actor_id,
            actor_role: self.actor_role,
            channel: self.origin.channel,
            request_id: self.origin.request_id.clone(),
            client_request_id: self.origin.client_request_id.clone(),
            correlation_id: self.correlation_id,
            causation_position: self.causation_position,
        }
    }
}

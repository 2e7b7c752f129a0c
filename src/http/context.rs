//! From an HTTP request to the application layer's [`Caller`]: the authenticated principal and
//! the request's origin — the id this service gave the request (the outermost middleware makes
//! one for every request), the id the client sent (`X-Request-Id`, kept apart), the client's IP
//! and user agent. The application layer turns it into event metadata after authorizing.

use poem::Request;
use uuid::Uuid;

use super::error::ApiError;
use crate::app::{App, Caller, Grant, Origin, Principal, Resource, StoreAccess};
use aggregates::Channel;

/// The id this service gave the request being served (echoed in `X-Request-Id`).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The `X-Request-Id` the client sent, if it was a sensible one (1–200 visible ASCII).
#[derive(Clone, Debug)]
pub struct ClientRequestId(pub String);

/// The client's IP as the edge worked it out (honouring `--trust-forwarded-for`), set on every
/// request by the outermost middleware.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub std::net::IpAddr);

/// Where `req` came from: request ids, the client's IP and user agent (truncated to 512
/// characters).
pub fn origin_of(req: &Request) -> Origin {
    let ip = match req.extensions().get::<ClientIp>() {
        Some(ClientIp(ip)) => *ip,
        None => super::client::client_ip(req, false),
    };
    let user_agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(512).collect());
    Origin {
        channel: Channel::Api,
        request_id: req
            .extensions()
            .get::<RequestId>()
            .map(|id| id.0.clone())
            .unwrap_or_else(|| Uuid::now_v7().to_string()),
        client_request_id: req
            .extensions()
            .get::<ClientRequestId>()
            .map(|id| id.0.clone()),
        // No socket address (not a TCP peer): unknown rather than 0.0.0.0.
        client_ip: Some(ip)
            .filter(|ip| !ip.is_unspecified())
            .map(|ip| ip.to_string()),
        user_agent,
    }
}

/// The client's IP address and user agent (for sign-in endpoints, which have no caller yet).
pub fn client_of(req: &Request) -> (Option<String>, Option<String>) {
    let origin = origin_of(req);
    (origin.client_ip, origin.user_agent)
}

/// The caller of an authenticated request.
pub fn caller(req: &Request, principal: Principal) -> Caller {
    Caller::new(principal, origin_of(req))
}

/// Proof of `P` on a resource addressed by its own id; a resource the caller cannot see at all
/// (missing, or in a store where they hold no role) answers `not_found`.
pub async fn on_resource<P: Grant>(
    app: &App,
    caller: &Caller,
    resource: Resource,
    not_found: impl FnOnce() -> ApiError,
) -> Result<StoreAccess<P>, ApiError> {
    app.authorize_resource::<P>(caller, resource)
        .await?
        .ok_or_else(not_found)
}

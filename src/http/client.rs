//! Who is calling, as the HTTP edge sees it: the client's IP and, when the request carries a
//! bearer credential that [`App::authenticate`] accepts (an access token whose session is still
//! open, or a live API token, of an account that is not blocked), its principal. Rate limits are
//! keyed by it, idempotency keys are scoped by it and uploads are refused without it. It is
//! worked out once per request, by the first edge middleware that needs it, and kept in the
//! request's extensions; the endpoints' bearer checker reuses the principal, so a request is
//! authenticated once.
//!
//! A credential that does not authenticate counts for nothing: such a request is the anonymous
//! client at its IP, so inventing `Authorization` headers buys no quota and reaches no stored
//! response.

use std::net::{IpAddr, Ipv4Addr};

use poem::web::RemoteAddr;
use poem::Request;
use sha2::{Digest, Sha256};

use crate::app::{App, Principal};

/// The client of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// The peer address, or with `--trust-forwarded-for` the last `X-Forwarded-For` entry.
    pub ip: IpAddr,
    /// Set only when the request's bearer credential authenticated.
    pub principal: Option<Principal>,
}

/// The principal the edge authenticated, and a digest of the credential it came from (the
/// bearer checker reuses it only for that credential).
#[derive(Clone, Debug)]
struct Authenticated {
    credential: [u8; 32],
    principal: Principal,
}

impl Client {
    /// The client of `req`, identified on first use and then read from the request.
    pub async fn of(req: &mut Request, app: &App, trust_forwarded_for: bool) -> Client {
        if let Some(client) = req.extensions().get::<Client>() {
            return client.clone();
        }
        let ip = ip_of(req, trust_forwarded_for);
        let principal = match bearer_token(req).map(str::to_owned) {
            Some(token) => match app.authenticate(&token).await {
                Ok(principal) => {
                    req.extensions_mut().insert(Authenticated {
                        credential: Sha256::digest(token.as_bytes()).into(),
                        principal: principal.clone(),
                    });
                    Some(principal)
                }
                Err(err) => {
                    tracing::debug!(error = %err, "a bearer credential did not authenticate");
                    None
                }
            },
            None => None,
        };
        let client = Client { ip, principal };
        req.extensions_mut().insert(client.clone());
        client
    }
}

/// The principal the edge already authenticated for `token` in this request, if any.
pub fn authenticated(req: &Request, token: &str) -> Option<Principal> {
    let known = req.extensions().get::<Authenticated>()?;
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    (known.credential == presented).then(|| known.principal.clone())
}

/// The bearer token of `Authorization: Bearer <token>`, if the request has one.
fn bearer_token(req: &Request) -> Option<&str> {
    let bytes = req.headers().get("authorization")?.as_bytes();
    let scheme = bytes.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    std::str::from_utf8(&bytes[7..])
        .ok()
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// The client's IP as the outermost middleware worked it out, else worked out now.
pub fn ip_of(req: &Request, trust_forwarded_for: bool) -> IpAddr {
    match req.extensions().get::<super::context::ClientIp>() {
        Some(known) => known.0,
        None => client_ip(req, trust_forwarded_for),
    }
}

/// The client's IP: the peer address, or with `trust_forwarded_for` the last `X-Forwarded-For`
/// entry (what the trusted proxy saw).
pub fn client_ip(req: &Request, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for {
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .last()
            .and_then(|last| last.trim().parse::<IpAddr>().ok());
        if let Some(ip) = forwarded {
            return ip.to_canonical();
        }
    }
    match req.remote_addr() {
        RemoteAddr(poem::Addr::SocketAddr(addr)) => addr.ip().to_canonical(),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

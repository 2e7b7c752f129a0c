//! Who is calling, as far as the HTTP edge can tell without a database round trip: the
//! client's IP and, when the request carries credentials, whose they are. Rate limits are keyed
//! by it and idempotency keys are scoped by it. It is worked out once per request, by the first
//! edge middleware that needs it, and kept in the request's extensions.
//!
//! Nothing here authenticates: an access token is only checked for its signature (so a forged
//! one cannot borrow someone else's quota or idempotency keys); the endpoints still call
//! `App::authenticate`.

use std::net::{IpAddr, Ipv4Addr};

use poem::web::RemoteAddr;
use poem::Request;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::app::App;

/// The client of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// The peer address, or with `--trust-forwarded-for` the last `X-Forwarded-For` entry.
    pub ip: IpAddr,
    pub presented: Presented,
}

/// Whose credentials a request carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Presented {
    /// A validly signed, unexpired access token's account.
    Account(Uuid),
    /// Any other `Authorization` value (API tokens, expired or forged JWTs): its SHA-256.
    Credential([u8; 32]),
    /// No `Authorization` header.
    Anonymous,
}

impl Client {
    /// The client of `req`, identified on first use and then read from the request.
    pub async fn of(req: &mut Request, app: &App, trust_forwarded_for: bool) -> Client {
        if let Some(client) = req.extensions().get::<Client>() {
            return client.clone();
        }
        // The outermost middleware already worked the IP out for this request.
        let ip = match req.extensions().get::<super::context::ClientIp>() {
            Some(known) => known.0,
            None => client_ip(req, trust_forwarded_for),
        };
        let client = Client {
            ip,
            presented: presented(req, app).await,
        };
        req.extensions_mut().insert(client.clone());
        client
    }

    /// Names the caller for scoping stored state: the account when the token is verified (so
    /// a retry after a token refresh is still the same caller), else the credential's hash,
    /// else the client IP.
    pub fn scope(&self) -> String {
        match &self.presented {
            Presented::Account(id) => format!("account:{id}"),
            Presented::Credential(hash) => format!("credential:{}", hex::encode(hash)),
            Presented::Anonymous => format!("ip:{}", self.ip),
        }
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

async fn presented(req: &Request, app: &App) -> Presented {
    let Some(value) = req.headers().get("authorization") else {
        return Presented::Anonymous;
    };
    let bytes = value.as_bytes();
    let bearer = bytes
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        .and_then(|_| std::str::from_utf8(&bytes[7..]).ok())
        .map(str::trim);
    if let Some(token) = bearer {
        if let Some(account) = app.access_token_subject(token).await {
            return Presented::Account(account.0);
        }
    }
    Presented::Credential(Sha256::digest(bytes).into())
}

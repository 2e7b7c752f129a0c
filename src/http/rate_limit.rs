//! Rate limits at the HTTP edge (governor's GCRA, one in-memory keyed limiter per rule).
//!
//! | rule | applies to | key |
//! |---|---|---|
//! | per IP | every request except `/health/*` and `/metrics` | client IP (IPv6: its /64) |
//! | per user | requests whose bearer credential authenticates | the account |
//! | login | `POST /api/v1/auth/*` (log-ins, refreshes) | client IP |
//! | upload | multipart POSTs and `POST …/receipts` | the authenticated account, else client IP |
//!
//! Only a credential that authenticates ([`Client`]: the same check the endpoints make) names a
//! caller; any other `Authorization` header counts as the anonymous client at its IP, so made-up
//! credentials buy no quota of their own. The per-IP rule is checked first, so requests over it
//! cost no authentication. A request passes only if every rule that applies lets it; the first that does not answers
//! 429 `rate-limited` with `Retry-After` (whole seconds, rounded up). Probes and the metrics
//! scrape are never limited: an orchestrator must not see a busy instance as a dead one.
//! Limits are per instance (several instances each allow the full quota). Keys that have
//! been idle for a full quota period are purged every minute, so memory follows the number of
//! recently active clients.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use uuid::Uuid;

use super::client::{ip_of, Client};
use super::error::ApiError;
use crate::app::App;
use crate::config::{EdgeSettings, RateLimit as Limit};

/// How often idle keys are dropped from the limiters.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// What a limiter counts requests by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Account(Uuid),
}

impl Key {
    /// IPv6 clients usually own a whole /64, so that is what one IPv6 key covers.
    fn ip(ip: IpAddr) -> Key {
        match ip {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Key::Ip(IpAddr::V6(prefix.into()))
            }
            v4 => Key::Ip(v4),
        }
    }

    /// The authenticated account, if the request's credential authenticated.
    fn caller(client: &Client) -> Option<Key> {
        client
            .principal
            .as_ref()
            .map(|principal| Key::Account(principal.account_id().0))
    }
}

/// One rule: its name (the `limit` label of `shopfront_rate_limited_total`) and its limiter.
struct Rule {
    name: &'static str,
    limiter: DefaultKeyedRateLimiter<Key>,
}

impl Rule {
    fn new(name: &'static str, limit: Limit) -> Option<Rule> {
        let rate = NonZeroU32::new(limit.per_minute)?;
        let burst = NonZeroU32::new(limit.burst).unwrap_or(rate);
        Some(Rule {
            name,
            limiter: RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst)),
        })
    }

    /// `Err(wait)` when `key` is over its quota.
    fn check(&self, key: &Key) -> std::result::Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

struct Rules {
    app: Arc<App>,
    trust_forwarded_for: bool,
    per_ip: Option<Rule>,
    per_user: Option<Rule>,
    login: Option<Rule>,
    upload: Option<Rule>,
}

impl Rules {
    fn all(&self) -> impl Iterator<Item = &Rule> {
        [&self.per_ip, &self.per_user, &self.login, &self.upload]
            .into_iter()
            .flatten()
    }
}

/// The rate-limiting middleware. Also identifies the caller ([`Client`]) for the middlewares
/// and endpoints inside it.
#[derive(Clone)]
pub struct RateLimit {
    rules: Arc<Rules>,
}

impl RateLimit {
    /// The limits `settings` configure; starts the purge of idle keys when on a runtime.
    pub fn new(app: Arc<App>, settings: &EdgeSettings) -> Self {
        let rules = Arc::new(Rules {
            app,
            trust_forwarded_for: settings.trust_forwarded_for,
            per_ip: Rule::new("per_ip", settings.rate_limit_per_ip),
            per_user: Rule::new("per_user", settings.rate_limit_per_user),
            login: Rule::new("login", settings.rate_limit_login),
            upload: Rule::new("upload", settings.rate_limit_upload),
        });
        if rules.all().next().is_some() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(purge_idle_keys(Arc::downgrade(&rules)));
            }
        }
        Self { rules }
    }
}

/// Drops keys whose quota is full again; ends when the middleware is dropped.
async fn purge_idle_keys(rules: Weak<Rules>) {
    let mut ticks = tokio::time::interval(PURGE_EVERY);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(rules) = rules.upgrade() else {
            return;
        };
        for rule in rules.all() {
            rule.limiter.retain_recent();
            rule.limiter.shrink_to_fit();
        }
    }
}

impl<E: Endpoint> Middleware<E> for RateLimit {
    type Output = RateLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RateLimitEndpoint {
            inner,
            rules: self.rules.clone(),
        }
    }
}

pub struct RateLimitEndpoint<E> {
    inner: E,
    rules: Arc<Rules>,
}

/// Never limited: liveness/readiness probes and the metrics scrape.
fn exempt(path: &str) -> bool {
    path.starts_with("/health/") || path == "/metrics"
}

/// Sign-ins: the API's `POST /api/v1/auth/*`, the console's sign-in posts and its Telegram
/// Login Widget callback.
fn is_auth_post(req: &Request) -> bool {
    let path = req.uri().path();
    (req.method() == poem::http::Method::POST
        && (path.starts_with("/api/v1/auth/") || path.starts_with("/console/login")))
        || path == "/console/login/telegram"
}

fn is_upload(req: &Request) -> bool {
    let multipart = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/")
        });
    req.method() == poem::http::Method::POST
        && (multipart
            || req
                .uri()
                .path()
                .trim_end_matches('/')
                .ends_with("/receipts"))
}

impl<E: Endpoint> Endpoint for RateLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> Result<Response> {
        let rules = &self.rules;
        if rules.all().next().is_some() && !exempt(req.uri().path()) {
            let ip = Key::ip(ip_of(&req, rules.trust_forwarded_for));
            if let Some(rule) = &rules.per_ip {
                if let Err(wait) = rule.check(&ip) {
                    return Ok(refuse(rule, wait));
                }
            }
            let upload = is_upload(&req);
            let caller = if rules.per_user.is_some() || (upload && rules.upload.is_some()) {
                let client = Client::of(&mut req, &rules.app, rules.trust_forwarded_for).await;
                Key::caller(&client)
            } else {
                None
            };
            let checks = [
                (&rules.per_user, caller.as_ref()),
                (&rules.login, is_auth_post(&req).then_some(&ip)),
                (
                    &rules.upload,
                    upload.then(|| caller.as_ref().unwrap_or(&ip)),
                ),
            ];
            for (rule, key) in checks {
                let (Some(rule), Some(key)) = (rule, key) else {
                    continue;
                };
                if let Err(wait) = rule.check(key) {
                    return Ok(refuse(rule, wait));
                }
            }
        }
        self.inner.call(req).await.map(IntoResponse::into_response)
    }
}

/// The 429 of `rule`, counted and logged.
fn refuse(rule: &Rule, wait: Duration) -> Response {
    super::metrics::rate_limited(rule.name);
    // No IP address in the log line: it is personal data.
    tracing::debug!(limit = rule.name, "rate limited");
    ApiError::rate_limited(rule.name, wait).into_response()
}

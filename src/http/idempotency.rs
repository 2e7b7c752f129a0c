//! `Idempotency-Key` on the POSTs under `/api/v1` that act for a signed-in caller: a retry gets
//! the first response again and the handler (and so every command it would issue) does not run
//! twice.
//!
//! - Only for callers whose bearer credential authenticates (the same check the endpoints
//!   make: the session is open or the API token live, the account not blocked), done before
//!   anything is read, claimed or replayed. Keys are scoped to that principal: the account and
//!   the kind of credential (its sessions, or one API token), the method and the path. A
//!   request without valid credentials passes through untouched (its endpoint answers 401):
//!   it gets no replay and claims nothing, so nobody reaches a stored response by sharing an
//!   IP or guessing a key.
//! - `/api/v1/auth/*` is never deduplicated: a log-in, a refresh (whose reuse must revoke the
//!   session), a QR login's poll secret must each be answered afresh.
//! - A POST without the header passes through untouched. The key is 1–255 visible ASCII
//!   characters (else 400 `invalid-idempotency-key`).
//! - The first request claims the key (a row `in_progress`, unique per scope and key), runs the
//!   handler and stores its status, a few headers and the body. The handler runs in its own
//!   task, so a client that hangs up does not cancel it half-way: its outcome is still stored
//!   for the retry.
//! - A retry with the same body (SHA-256 of content type, query and body) gets the stored
//!   response with `Idempotent-Replayed: true`; a different body is 422
//!   `idempotency-key-reused`; a retry while the first is still running is 409
//!   `idempotency-key-in-flight`.
//! - Responses that mean "nothing was done, try again" are not kept, so the retry runs:
//!   5xx, 409 (a conflict with concurrent changes) and 429.
//! - Keys expire after `--idempotency-ttl-hours`: an expired row counts as absent and is
//!   purged in the background. A claim whose instance died is taken over after
//!   [`IN_FLIGHT_LEASE`].
//!
//! The stored response may hold secrets (API tokens are issued by POSTs), so the row keeps the
//! key only as part of a hash and the body sealed (XChaCha20-Poly1305) with a key derived from
//! the scope and the `Idempotency-Key`: the table alone reveals no response whose key cannot be
//! guessed. Clients should use random keys (UUIDs).
//!
//! The request body is buffered, after authentication, to fingerprint it (within its route's
//! limit, [`BodyRules`]) and then handed to the handler.

use std::borrow::Cow;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use poem::http::{Method, StatusCode};
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, Response};
use poem_openapi::payload::Json;
use poem_openapi::OperationId;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use super::client::Client;
use super::error::{problem_response, ApiError};
use super::metrics::{idempotent_replay, ReplayedOperation};
use super::problem::Problem;
use super::BodyRules;
use crate::app::idempotency_keys::{self as keys, Claim, StoredResponse};
use crate::app::{App, AppError, Principal};
use crate::config::EdgeSettings;

/// The request header naming a retryable request.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The response header marking a replayed response.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// How long a claim may stay `in_progress` before a retry may take it over (its instance is
/// taken to have died). Longer than any handler runs: the body is already read when a
/// claim is made, and command placement gives up after 30 s.
pub const IN_FLIGHT_LEASE: Duration = Duration::from_secs(120);

/// How often expired keys are purged.
const PURGE_EVERY: Duration = Duration::from_secs(300);

/// Headers a replay repeats; others (dates, request ids) belong to the retry's own response.
const STORED_HEADERS: &[&str] = &[
    "content-type",
    "location",
    "retry-after",
    "www-authenticate",
    "cache-control",
    "etag",
];

/// The middleware.
#[derive(Clone)]
pub struct Idempotency {
    shared: Arc<Shared>,
}

struct Shared {
    app: Arc<App>,
    ttl: Duration,
    body: BodyRules,
    trust_forwarded_for: bool,
}

impl Idempotency {
    /// Stores keys for `settings.idempotency_ttl_hours`; starts the purge when on a runtime.
    pub fn new(app: Arc<App>, settings: &EdgeSettings, body: BodyRules) -> Self {
        let shared = Arc::new(Shared {
            app,
            ttl: Duration::from_secs(settings.idempotency_ttl_hours * 3600),
            body,
            trust_forwarded_for: settings.trust_forwarded_for,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(purge_expired_keys(Arc::downgrade(&shared)));
        }
        Self { shared }
    }
}

impl<E: Endpoint + 'static> Middleware<E> for Idempotency {
    type Output = IdempotencyEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        IdempotencyEndpoint {
            inner: Arc::new(inner),
            shared: self.shared.clone(),
        }
    }
}

pub struct IdempotencyEndpoint<E> {
    inner: Arc<E>,
    shared: Arc<Shared>,
}

/// What the hashes of one keyed request are.
struct Keyed {
    /// The row: scope, method, path and key.
    id: [u8; 32],
    /// Seals the stored body; derived like `id` but under another label, never stored.
    seal_key: [u8; 32],
    /// The request itself: content type, query and body, keyed by `seal_key`.
    fingerprint: [u8; 32],
}

impl Keyed {
    fn new(scope: &str, req: &Request, key: &str, body: &[u8]) -> Self {
        let method = req.method().as_str();
        let path = req.uri().path();
        let derive = |label: &str| -> [u8; 32] {
            let mut hash = Sha256::new();
            for part in [label, scope, method, path, key] {
                hash.update((part.len() as u64).to_be_bytes());
                hash.update(part.as_bytes());
            }
            hash.finalize().into()
        };
        let seal_key = derive("shopfront idempotency seal v1");
        let mut fingerprint = Sha256::new();
        fingerprint.update(seal_key);
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let (content_type, body) = canonical(content_type, body);
        let query = req.uri().query().map(str::as_bytes);
        for part in [content_type.as_bytes(), query.unwrap_or_default(), &body] {
            fingerprint.update((part.len() as u64).to_be_bytes());
            fingerprint.update(part);
        }
        Self {
            id: derive("shopfront idempotency id v1"),
            seal_key,
            fingerprint: fingerprint.finalize().into(),
        }
    }
}

/// The content type and body as the fingerprint sees them: a multipart body without its
/// boundary, which a client picks at random each time it builds the form, so a retry of the
/// same upload matches however the client framed it. Only `multipart/*` with a boundary of 1
/// to 70 characters (RFC 2046) is rewritten, in one linear pass.
fn canonical<'a>(content_type: &'a str, body: &'a [u8]) -> (&'a str, Cow<'a, [u8]>) {
    let mut params = content_type.split(';');
    let essence = params.next().unwrap_or_default().trim();
    let boundary = params
        .filter_map(|param| param.trim().split_once('='))
        .find(|(name, _)| name.eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|b| (1..=70).contains(&b.len()));
    let multipart = essence
        .get(..10)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("multipart/"));
    let (true, Some(boundary)) = (multipart, boundary) else {
        return (content_type, Cow::Borrowed(body));
    };
    let finder = memchr::memmem::Finder::new(boundary.as_bytes());
    let mut out = Vec::with_capacity(body.len());
    let mut start = 0;
    for at in finder.find_iter(body) {
        out.extend_from_slice(&body[start..at]);
        start = at + boundary.len();
    }
    out.extend_from_slice(&body[start..]);
    (essence, Cow::Owned(out))
}

impl<E: Endpoint + 'static> Endpoint for IdempotencyEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        if !applies_to(&req) {
            return self.inner.call(req).await.map(IntoResponse::into_response);
        }
        let key = match idempotency_key(&req) {
            Ok(Some(key)) => key,
            Ok(None) => return self.inner.call(req).await.map(IntoResponse::into_response),
            Err(refused) => return Ok(refused.into_response()),
        };
        let shared = &self.shared;
        let client = Client::of(&mut req, &shared.app, shared.trust_forwarded_for).await;
        let Some(principal) = client.principal else {
            // No valid credentials: nothing is read, claimed or replayed; the endpoint says 401.
            return self.inner.call(req).await.map(IntoResponse::into_response);
        };
        let limit = shared.body.limit_for(&req);
        let body = match read_body(&mut req, limit).await {
            Ok(body) => body,
            Err(refused) => return Ok(refused),
        };
        let keyed = Keyed::new(&scope(&principal), &req, &key, &body);
        let claim = match keys::claim(
            &shared.app.pool,
            &keyed.id,
            &keyed.fingerprint,
            IN_FLIGHT_LEASE,
            shared.ttl,
        )
        .await
        {
            Ok(claim) => claim,
            Err(err) => return Ok(ApiError::from(AppError::from(err)).into_response()),
        };
        match claim {
            Claim::Owned { claim_id } => {
                req.set_body(body);
                Ok(self.run(req, &keyed, claim_id).await)
            }
            Claim::Replay(stored) => Ok(replay(stored, &keyed)),
            Claim::InFlight => Ok(ApiError::Conflict(Json(Problem::new(
                "idempotency-key-in-flight",
                "Request in progress",
                409,
                "a request with this Idempotency-Key is still being processed; retry later"
                    .to_owned(),
            )))
            .into_response()),
            Claim::Reused => Ok(ApiError::Unprocessable(Json(Problem::new(
                "idempotency-key-reused",
                "Idempotency-Key reused",
                422,
                "this Idempotency-Key was used for a different request".to_owned(),
            )))
            .into_response()),
        }
    }
}

impl<E: Endpoint + 'static> IdempotencyEndpoint<E> {
    /// Runs the handler for a claimed key and stores (or releases) the outcome.
    async fn run(&self, req: Request, keyed: &Keyed, claim_id: Uuid) -> Response {
        let pool = &self.shared.app.pool;
        let inner = self.inner.clone();
        let handler = tokio::spawn(
            async move {
                match inner.call(req).await {
                    Ok(response) => response.into_response(),
                    Err(err) => problem_response(err).await,
                }
            }
            .in_current_span(),
        );
        let response = match handler.await {
            Ok(response) => response,
            Err(err) => {
                tracing::error!(error = %err, "handler task failed");
                release(pool, keyed, claim_id).await;
                return problem_response(poem::Error::from_status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                ))
                .await;
            }
        };
        let status = response.status();
        if status.is_server_error()
            || status == StatusCode::CONFLICT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            release(pool, keyed, claim_id).await;
            return response;
        }
        let operation = response.data::<OperationId>().map(|id| id.0);
        let (parts, body) = response.into_parts();
        let bytes = match body.into_bytes().await {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the response to store it");
                release(pool, keyed, claim_id).await;
                return problem_response(poem::Error::from_status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                ))
                .await;
            }
        };
        let headers: Vec<(&str, &str)> = STORED_HEADERS
            .iter()
            .flat_map(|&name| {
                parts
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(move |value| value.to_str().ok().map(|value| (name, value)))
            })
            .collect();
        let stored = match seal(keyed, &bytes) {
            Ok(sealed) => keys::complete(
                pool,
                &keyed.id,
                claim_id,
                status.as_u16() as i16,
                json!(headers),
                sealed,
                operation,
            )
            .await
            .map_err(|err| err.to_string()),
            Err(err) => Err(err),
        };
        if let Err(err) = stored {
            // The handler's work is done and cannot be undone: answer it. The claim stays
            // in progress (retries get 409) until its lease ends.
            tracing::error!(error = %err, "cannot store the response for an idempotency key");
        }
        Response::from_parts(parts, Body::from(bytes))
    }
}

/// Whether `req` is deduplicated by its key: a POST under `/api/v1`, but not `/api/v1/auth/*`,
/// whose answers (sessions, refreshed tokens, poll secrets) must never be handed out twice.
fn applies_to(req: &Request) -> bool {
    let path = req.uri().path();
    req.method() == Method::POST && path.starts_with("/api/v1/") && !is_auth_path(path)
}

/// `/api/v1/auth` and below, however its slashes are doubled.
fn is_auth_path(path: &str) -> bool {
    let mut segments = path.split('/').filter(|segment| !segment.is_empty());
    matches!(
        (segments.next(), segments.next(), segments.next()),
        (Some("api"), Some("v1"), Some("auth"))
    )
}

/// The owner of a principal's keys: the account and the kind of credential. A session's keys
/// are the account's across its sessions (a retry after a new log-in still matches); an API
/// token's are that token's alone, as its scope may differ from the account's.
fn scope(principal: &Principal) -> String {
    match &principal.token_scope() {
        None => format!("account:{}:session", principal.account_id()),
        Some(token) => format!(
            "account:{}:api-token:{}",
            principal.account_id(),
            token.token_id
        ),
    }
}

/// The request's key: `Ok(None)` without the header, `Err` (400) when it is not 1–255
/// visible ASCII characters or is sent twice.
fn idempotency_key(req: &Request) -> Result<Option<String>, ApiError> {
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    let valid = values.next().is_none()
        && (1..=255).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(ApiError::BadRequest(Json(Problem::new(
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
            400,
            "Idempotency-Key must be sent once, as 1 to 255 visible ASCII characters".to_owned(),
        ))));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Buffers the body within its route's `limit` (413 beyond it, 400 if unreadable; a body the
/// edge's guard cut off is answered by the guard).
async fn read_body(req: &mut Request, limit: usize) -> Result<Bytes, Response> {
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let refuse = |status| async move { problem_response(poem::Error::from_status(status)).await };
    if declared.is_some_and(|length| length > limit) {
        return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE).await);
    }
    match req.take_body().into_bytes_limit(limit).await {
        Ok(bytes) => Ok(bytes),
        Err(poem::error::ReadBodyError::PayloadTooLarge) => {
            Err(refuse(StatusCode::PAYLOAD_TOO_LARGE).await)
        }
        Err(_) => Err(refuse(StatusCode::BAD_REQUEST).await),
    }
}

/// Gives the key back, so a retry runs the handler again.
async fn release(pool: &PgPool, keyed: &Keyed, claim_id: Uuid) {
    if let Err(err) = keys::release(pool, &keyed.id, claim_id).await {
        tracing::warn!(error = %err, "cannot release an idempotency key; it frees itself when its lease ends");
    }
}

/// The stored response again, marked as a replay.
fn replay(stored: StoredResponse, keyed: &Keyed) -> Response {
    let status = stored
        .status
        .and_then(|status| u16::try_from(status).ok())
        .and_then(|status| StatusCode::from_u16(status).ok());
    let body = stored
        .body
        .as_deref()
        .and_then(|sealed| open(keyed, sealed));
    let (Some(status), Some(body)) = (status, body) else {
        tracing::error!("a stored idempotent response cannot be read");
        return ApiError::from(AppError::Internal("unreadable idempotency row".into()))
            .into_response();
    };
    let operation = stored.operation.unwrap_or_else(|| "unmatched".to_owned());
    idempotent_replay(&operation);
    let mut response = Response::builder()
        .status(status)
        .header(REPLAYED_HEADER, "true")
        .extension(ReplayedOperation(operation));
    let headers: Vec<(String, String)> = stored
        .headers
        .and_then(|headers| serde_json::from_value(headers).ok())
        .unwrap_or_default();
    for (name, value) in headers {
        response = response.header(name, value);
    }
    response.body(body)
}

fn seal(keyed: &Keyed, plaintext: &[u8]) -> Result<Vec<u8>, String> {
    let cipher = XChaCha20Poly1305::new_from_slice(&keyed.seal_key).map_err(|e| e.to_string())?;
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: &keyed.id,
            },
        )
        .map_err(|e| e.to_string())?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&ciphertext);
    Ok(sealed)
}

fn open(keyed: &Keyed, sealed: &[u8]) -> Option<Vec<u8>> {
    let (nonce, ciphertext) = sealed.split_at_checked(24)?;
    let cipher = XChaCha20Poly1305::new_from_slice(&keyed.seal_key).ok()?;
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &keyed.id,
            },
        )
        .ok()
}

/// Deletes expired keys every [`PURGE_EVERY`]; ends when the middleware is dropped.
async fn purge_expired_keys(shared: Weak<Shared>) {
    let mut ticks = tokio::time::interval(PURGE_EVERY);
    loop {
        ticks.tick().await;
        let Some(pool) = shared.upgrade().map(|shared| shared.app.pool.clone()) else {
            return;
        };
        if pool.is_closed() {
            return;
        }
        match purge(&pool).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired idempotency keys purged"),
            Err(err) => tracing::warn!(error = %err, "cannot purge expired idempotency keys"),
        }
    }
}

/// Deletes every expired key, a batch at a time; returns how many.
pub async fn purge(pool: &PgPool) -> Result<u64, sqlx::Error> {
    keys::purge(pool).await
}

/// Documents the header on every POST under `/api/v1` but `/api/v1/auth/*` of the generated
/// OpenAPI document (`spec`, as poem-openapi renders it), with the 409 and 422 problems it can
/// cause where an operation does not list them already.
pub fn document(spec: &str) -> String {
    let Ok(mut document) = serde_json::from_str::<Value>(spec) else {
        return spec.to_owned();
    };
    let problem = |description: &str| {
        json!({
            "description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        })
    };
    if let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            if !path.starts_with("/api/v1/") || is_auth_path(path) {
                continue;
            }
            let Some(post) = item.get_mut("post").and_then(Value::as_object_mut) else {
                continue;
            };
            let parameters = post.entry("parameters").or_insert_with(|| json!([]));
            if let Some(parameters) = parameters.as_array_mut() {
                parameters.push(json!({
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": false,
                    "deprecated": false,
                    "explode": true,
                    "description": "Makes the request safe to retry: a retry with the same key \
                        and body, by the same authenticated caller, gets the first response \
                        again (marked `Idempotent-Replayed: true`) and does nothing twice. \
                        1–255 visible ASCII characters, e.g. a UUID; kept 24 h by default. \
                        Same key with another body: 422 `idempotency-key-reused`; while the \
                        first is running: 409 `idempotency-key-in-flight`. Ignored without \
                        valid credentials.",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}
                }));
            }
            if let Some(responses) = post.get_mut("responses").and_then(Value::as_object_mut) {
                responses
                    .entry("409")
                    .or_insert_with(|| problem("The request conflicts with the current state."));
                responses.entry("422").or_insert_with(|| {
                    problem(
                        "The request is well-formed but refused by a business rule or validation.",
                    )
                });
            }
        }
    }
    serde_json::to_string_pretty(&document).unwrap_or_else(|_| spec.to_owned())
}

#[cfg(test)]
mod tests {
    use super::{canonical, is_auth_path};

    #[test]
    fn the_auth_endpoints_are_told_apart_however_their_path_is_spelt() {
        for path in [
            "/api/v1/auth/refresh",
            "/api/v1//auth/refresh",
            "//api/v1/auth/qr",
            "/api/v1/auth",
        ] {
            assert!(is_auth_path(path), "{path}");
        }
        for path in ["/api/v1/stores", "/api/v1/authors", "/api/v2/auth/refresh"] {
            assert!(!is_auth_path(path), "{path}");
        }
    }

    #[test]
    fn a_multipart_body_is_fingerprinted_without_its_boundary() {
        let body = b"--abc\r\nfile\r\n--abc--\r\n";
        let (essence, canonical_body) = canonical("multipart/form-data; boundary=abc", body);
        assert_eq!(essence, "multipart/form-data");
        assert_eq!(&*canonical_body, b"--\r\nfile\r\n----\r\n");
        let (_, reframed) = canonical(
            "Multipart/Form-Data; boundary=\"xyz\"",
            b"--xyz\r\nfile\r\n--xyz--\r\n",
        );
        assert_eq!(reframed, canonical_body);
    }

    #[test]
    fn other_bodies_and_implausible_boundaries_are_left_alone() {
        let json = br#"{"r":"ab"}"#;
        let (essence, body) = canonical("application/json; boundary=b", json);
        assert_eq!(
            (essence, &*body),
            ("application/json; boundary=b", &json[..])
        );
        let long = "b".repeat(71);
        let content_type = format!("multipart/form-data; boundary={long}");
        let (essence, body) = canonical(&content_type, b"bbbb");
        assert_eq!((essence, &*body), (content_type.as_str(), &b"bbbb"[..]));
    }
}

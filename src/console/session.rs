//! Who is using the console, and the rules every request of it follows.
//!
//! - The session is an HttpOnly, SameSite=Strict cookie ([`SESSION_COOKIE`], `Secure` when the
//!   service is reached over TLS) holding a browser-session secret (`app::auth::browser`).
//! - Every unsafe request (anything but GET/HEAD) carries the CSRF token: htmx sends it as
//!   `X-CSRF-Token` (the page's `hx-headers`), a plain form as the `csrf` field. Before sign-in
//!   the token is a random value double-submitted in [`LOGIN_COOKIE`]. [`guard`] refuses any
//!   unsafe request without it, whatever the route, so no handler can forget it.
//! - Every answer gets the security headers: a Content-Security-Policy without inline scripts
//!   or styles, no framing, no sniffing, no caching of pages.

use std::sync::Arc;

use cookie::{Cookie, SameSite};
use poem::http::{header, HeaderValue, Method, StatusCode};
use poem::{Endpoint, FromRequest, IntoResponse, Request, RequestBody, Response};

use super::layout;
use super::texts::Language;
use crate::app::{App, AppError, Caller, Credential, Origin, Principal};
use aggregates::Channel;

/// The browser session's cookie.
pub const SESSION_COOKIE: &str = "sf_session";
/// The sign-in forms' CSRF value (double-submitted: cookie and field).
pub const LOGIN_COOKIE: &str = "sf_login";
/// The chosen language (`en`, `ru`); the browser's `Accept-Language` otherwise.
pub const LANGUAGE_COOKIE: &str = "sf_lang";
/// The header htmx sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field a plain form sends it in.
pub const CSRF_FIELD: &str = "csrf";

/// Whether cookies are marked `Secure`.
#[derive(Clone, Copy, Debug)]
pub struct CookiePolicy {
    pub secure: bool,
}

/// The Content-Security-Policy of every console answer: only the console's own scripts and
/// styles, the live feed on the same origin, receipt previews from the same origin, and the
/// Telegram Login Widget's script and frame.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; \
     script-src 'self' https://telegram.org/js/telegram-widget.js; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-src 'self' https://oauth.telegram.org; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/// A receipt's file: nothing in it runs, and only the desk itself frames it.
/// (`object-src`: Chromium's PDF viewer shows a PDF as a plugin of its own document.)
const FILE_POLICY: &str = "default-src 'none'; img-src 'self'; object-src 'self'; \
     style-src 'unsafe-inline'; frame-ancestors 'self'";

/// The name cookie `base` goes by under `policy`: with `Secure`, the `__Host-` prefix, which
/// browsers only accept from this very host over TLS (no sibling domain or plain-HTTP attacker
/// can plant it).
pub fn cookie_name(policy: CookiePolicy, base: &str) -> String {
    if policy.secure {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

/// The cookie policy serving `req` (plain cookies when none is set).
pub fn policy_of(req: &Request) -> CookiePolicy {
    req.data::<CookiePolicy>()
        .copied()
        .unwrap_or(CookiePolicy { secure: false })
}

/// The value of cookie `base` (under its name for this policy) in `req`.
pub fn cookie(req: &Request, base: &str) -> Option<String> {
    let name = cookie_name(policy_of(req), base);
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, the whole site, `Secure` per `policy`,
/// kept `max_age_seconds` (0 deletes it).
pub fn set_cookie(policy: CookiePolicy, base: &str, value: &str, max_age_seconds: i64) -> String {
    Cookie::build((cookie_name(policy, base), value.to_owned()))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(policy.secure)
        .path("/")
        .max_age(cookie::time::Duration::seconds(max_age_seconds))
        .build()
        .to_string()
}

/// A form's fields in order, repeated ones included (several `receipt_ids`, one `quantity` per
/// line), which `Form<T>` cannot collect. The body is already bounded by the edge.
pub struct FormFields(Vec<(String, String)>);

impl FormFields {
    /// The first value of `name`, trimmed; `None` when absent or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Every value of `name` in order, blank ones included (a form's rows pair up by position).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The id in field `name`; `required` when absent or not an id.
    pub fn id(&self, name: &'static str) -> Result<uuid::Uuid, AppError> {
        self.get(name)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| AppError::invalid(name, "required"))
    }
}

impl<'a> FromRequest<'a> for FormFields {
    async fn from_request(_req: &'a Request, body: &mut RequestBody) -> poem::Result<Self> {
        let bytes = body.take()?.into_bytes().await?;
        Ok(FormFields(
            url::form_urlencoded::parse(&bytes)
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect(),
        ))
    }
}

/// The browser-session secret a WebSocket upgrade to the live feed carries in its cookie, if
/// it comes from a page of this service (its `Origin` is this host): a cookie alone must not
/// let another site's page open a feed in the user's name.
pub fn session_secret_for_websocket(req: &Request) -> Option<String> {
    let secret = cookie(req, SESSION_COOKIE)?;
    let host = match req.headers().get(header::HOST) {
        Some(host) => host.to_str().ok()?.to_owned(),
        // HTTP/2 names the host in the request's authority.
        None => req.original_uri().authority()?.as_str().to_owned(),
    };
    let origin = req.headers().get(header::ORIGIN)?.to_str().ok()?;
    let origin_host = url::Url::parse(origin).ok()?;
    let origin_authority = match origin_host.port() {
        Some(port) => format!("{}:{port}", origin_host.host_str()?),
        None => origin_host.host_str()?.to_owned(),
    };
    (origin_authority.eq_ignore_ascii_case(&host)).then_some(secret)
}

/// The signed-in staff member a console request is from.
pub struct Staff {
    pub caller: Caller,
    pub session_id: uuid::Uuid,
    /// What this session's forms carry.
    pub csrf: String,
    pub language: Language,
    /// Whether the account is a platform admin (the People screen shows platform users).
    pub platform_admin: bool,
    /// Whether a notification's arrival plays a sound: read for whole pages only (`None` for
    /// fragments, which the live updates and actions ask for far more often and which never
    /// show it).
    pub sound: Option<bool>,
    /// Whether the request wants a fragment (htmx, not a boosted navigation): errors then go
    /// to the page's flash area rather than a page of their own.
    pub partial: bool,
}

impl Staff {
    pub fn account_id(&self) -> aggregates::AccountId {
        self.caller.account_id()
    }
}

/// The caller behind `req`'s session cookie, if it names an open session.
async fn signed_in(app: &App, req: &Request) -> Result<Option<Principal>, AppError> {
    let Some(secret) = cookie(req, SESSION_COOKIE) else {
        return Ok(None);
    };
    if !secret.starts_with(crate::app::BROWSER_SESSION_PREFIX) {
        return Ok(None);
    }
    match app.authenticate_browser(&secret).await {
        Ok((principal, _)) => Ok(Some(principal)),
        Err(AppError::Auth(_)) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The request's origin as the application layer records it, through the console.
pub fn origin_of(req: &Request) -> Origin {
    Origin {
        channel: Channel::Console,
        ..crate::http::origin_of(req)
    }
}

impl<'a> FromRequest<'a> for Staff {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let app = req
            .data::<Arc<App>>()
            .ok_or_else(|| poem::Error::from_status(StatusCode::INTERNAL_SERVER_ERROR))?;
        let language = language_of(req);
        let principal = match signed_in(app, req).await {
            Ok(Some(principal)) => principal,
            Ok(None) => return Err(poem::Error::from_response(to_sign_in(req))),
            Err(err) => {
                return Err(poem::Error::from_response(layout::error_response(
                    language, err,
                )))
            }
        };
        let Credential::Session(session_id) = principal.credential().clone() else {
            return Err(poem::Error::from_response(to_sign_in(req)));
        };
        let platform_admin = principal.claims_platform_admin();
        let csrf = app
            .csrf_token(session_id)
            .await
            .map_err(|err| poem::Error::from_response(layout::error_response(language, err)))?;
        let caller = Caller::new(principal, origin_of(req));
        let partial =
            req.headers().contains_key("hx-request") && !req.headers().contains_key("hx-boosted");
        let sound =
            if partial {
                None
            } else {
                Some(app.notification_sound(&caller).await.map_err(|err| {
                    poem::Error::from_response(layout::error_response(language, err))
                })?)
            };
        Ok(Staff {
            caller,
            sound,
            partial,
            session_id,
            csrf,
            language,
            platform_admin,
        })
    }
}

/// The language of `req`: the cookie, else the browser's first preference we speak.
pub fn language_of(req: &Request) -> Language {
    if let Some(language) = cookie(req, LANGUAGE_COOKIE).and_then(|c| Language::parse(&c)) {
        return language;
    }
    let accepted = req
        .headers()
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    accepted
        .split(',')
        .map(|part| part.split(';').next().unwrap_or_default().trim())
        .find_map(|tag| match tag.split('-').next() {
            Some("ru") => Some(Language::Ru),
            Some("en") => Some(Language::En),
            _ => None,
        })
        .unwrap_or(Language::En)
}

/// Back to the sign-in page, then to where the user was going. htmx requests are told to
/// navigate (`HX-Redirect`) rather than swap the sign-in page into a fragment.
fn to_sign_in(req: &Request) -> Response {
    let wanted = req
        .original_uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or(super::PREFIX);
    let target = format!(
        "{}/login?next={}",
        super::PREFIX,
        url::form_urlencoded::byte_serialize(wanted.as_bytes()).collect::<String>()
    );
    redirect(req, &target)
}

/// A redirect that works for both plain navigation and htmx requests.
pub fn redirect(req: &Request, target: &str) -> Response {
    if req.headers().contains_key("hx-request") {
        Response::builder()
            .status(StatusCode::OK)
            .header("HX-Redirect", target)
            .finish()
    } else {
        Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, target)
            .finish()
    }
}

/// Only paths inside the console are followed after sign-in (no open redirect).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.starts_with(super::PREFIX)
                && !next.starts_with("//")
                && !next.contains('\\')
                && !next.contains("/login") =>
        {
            next.to_owned()
        }
        _ => format!("{}/desk", super::PREFIX),
    }
}

/// Sign-in routes take the double-submitted login CSRF value rather than a session's token.
fn is_sign_in_route(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    ["/login", "/login/qr", "/language"]
        .iter()
        .any(|route| path == format!("{}{route}", super::PREFIX))
}

/// Every console request: CSRF for unsafe methods, then the security headers on the answer.
pub async fn guard<E: Endpoint>(
    endpoint: Arc<E>,
    mut req: Request,
    secure: bool,
) -> poem::Result<Response> {
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD);
    if unsafe_method {
        let language = language_of(&req);
        match csrf_verdict(&mut req).await {
            Ok(true) => {}
            Ok(false) => return Ok(with_headers(layout::forbidden_csrf(language), false)),
            Err(err) => return Ok(with_headers(layout::error_response(language, err), false)),
        }
    }
    let path = req.original_uri().path().to_owned();
    let language = language_of(&req);
    let response = match endpoint.call(req).await {
        Ok(response) => response.into_response(),
        Err(err) if err.is_from_response() => err.into_response(),
        Err(err) => layout::status_response(language, err.status()),
    };
    let file = path.starts_with("/console/receipts/") && path.ends_with("/file");
    let mut response = with_headers(response, file);
    if secure {
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    if !path.contains("/assets/") {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(response)
}

fn with_headers(mut response: Response, file: bool) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(if file {
            FILE_POLICY
        } else {
            CONTENT_SECURITY_POLICY
        }),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("DENY"));
    response
}

/// Whether an unsafe request carries its CSRF token. The form body is read (the edge already
/// bounds it) and put back for the handler.
async fn csrf_verdict(req: &mut Request) -> Result<bool, AppError> {
    let from_header = req
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let presented = match from_header {
        Some(token) => Some(token),
        None => {
            let body = req.take_body().into_bytes().await.unwrap_or_default();
            let field = url::form_urlencoded::parse(&body)
                .find(|(name, _)| name == CSRF_FIELD)
                .map(|(_, value)| value.into_owned());
            req.set_body(body);
            field
        }
    };
    let Some(presented) = presented.filter(|t| !t.is_empty()) else {
        return Ok(false);
    };
    if is_sign_in_route(req.original_uri().path()) {
        if let Some(expected) = cookie(req, LOGIN_COOKIE) {
            if constant_time_eq(expected.as_bytes(), presented.as_bytes()) {
                return Ok(true);
            }
        }
    }
    let Some(app) = req.data::<Arc<App>>().cloned() else {
        return Ok(false);
    };
    match signed_in(&app, req).await? {
        Some(principal) => match principal.credential() {
            Credential::Session(session_id) => {
                app.csrf_token_is_valid(*session_id, &presented).await
            }
            _ => Ok(false),
        },
        None => Ok(false),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

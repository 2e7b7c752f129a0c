//! Signing in and out of the console: e-mail and password (with the Telegram second factor
//! when the account has it), QR login (the QR shown on the page, approved in Telegram), and the
//! Telegram Login Widget. Every way ends in the same place: the application layer opens a
//! session and the browser gets its cookie (`app::auth::browser`), never a token.
//!
//! A login that waits for Telegram keeps its poll secret in an HttpOnly cookie of this browser
//! ([`PENDING_COOKIE`]): only the browser that started it can collect the session.

use std::collections::BTreeMap;
use std::sync::Arc;

use maud::{html, Markup};
use poem::http::{header, HeaderValue, StatusCode};
use poem::web::{Data, Form, Path, Query};
use poem::{handler, Request, Response};
use secrecy::SecretString;
use serde::Deserialize;
use uuid::Uuid;

use super::layout::{self, login_csrf};
use super::session::{
    self, cookie, language_of, policy_of, set_cookie, CSRF_FIELD, LOGIN_COOKIE, SESSION_COOKIE,
};
use super::texts::{t, Language};
use crate::app::{
    App, AppError, AuthError, LoginKind, LoginOutcome, LoginPoll, PendingLogin, Tokens,
};

/// A login waiting for Telegram: `kind.login_id.poll_secret`.
const PENDING_COOKIE: &str = "sf_pending";
/// How often the waiting page asks.
const POLL_EVERY: &str = "every 2s";

#[derive(Deserialize)]
pub struct SignInQuery {
    next: Option<String>,
}

/// `GET /console/login`.
#[handler]
pub async fn page(
    req: &Request,
    app: Data<&Arc<App>>,
    Query(query): Query<SignInQuery>,
) -> Response {
    let language = language_of(req);
    let next = session::safe_next(query.next.as_deref());
    if let Some(secret) = cookie(req, SESSION_COOKIE) {
        if app.authenticate_browser(&secret).await.is_ok() {
            return session::redirect(req, &next);
        }
    }
    sign_in_page(req, &app, language, &next, None)
}

fn sign_in_page(
    req: &Request,
    app: &App,
    language: Language,
    next: &str,
    error: Option<(StatusCode, String)>,
) -> Response {
    let (csrf, fresh) = login_csrf(req);
    let bot = app
        .auth
        .settings
        .telegram
        .as_ref()
        .and_then(|bot| bot.username.clone());
    let status = error.as_ref().map_or(StatusCode::OK, |(status, _)| *status);
    let body = html! {
        h1 { (t(language, "sign_in")) }
        @if let Some((_, message)) = &error {
            p.flash.error role="alert" { (message) }
        }
        form.sign-in method="post" action="/console/login" {
            input type="hidden" name=(CSRF_FIELD) value=(csrf);
            input type="hidden" name="next" value=(next);
            label for="email" { (t(language, "email")) }
            input #email type="email" name="email" autocomplete="username" required autofocus;
            label for="password" { (t(language, "password")) }
            input #password type="password" name="password" autocomplete="current-password" required;
            button type="submit" { (t(language, "sign_in")) }
        }
        @if let Some(bot) = bot {
            section.telegram aria-labelledby="telegram-title" {
                h2 #telegram-title { (t(language, "sign_in_telegram")) }
                form method="post" action="/console/login/qr" {
                    input type="hidden" name=(CSRF_FIELD) value=(csrf);
                    button type="submit" { (t(language, "sign_in_qr")) }
                }
                // The widget's own script, allowed by the CSP; it calls back with signed data.
                script async src="https://telegram.org/js/telegram-widget.js?22"
                    data-telegram-login=(bot) data-size="large"
                    data-auth-url="/console/login/telegram" data-request-access="write" {}
            }
        }
    };
    let mut response = layout::html_response(status, layout::public_page(language, &csrf, body));
    if fresh {
        append_cookie(
            &mut response,
            set_cookie(policy_of(req), LOGIN_COOKIE, &csrf, 3600),
        );
    }
    response
}

fn append_cookie(response: &mut Response, cookie: String) {
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

#[derive(Deserialize)]
pub struct PasswordForm {
    email: String,
    password: String,
    next: Option<String>,
}

/// `POST /console/login`: e-mail and password.
#[handler]
pub async fn password(
    req: &Request,
    app: Data<&Arc<App>>,
    Form(form): Form<PasswordForm>,
) -> Response {
    let language = language_of(req);
    let next = session::safe_next(form.next.as_deref());
    let (client_ip, user_agent) = client_of(req);
    let outcome = app
        .sign_in(
            &form.email,
            SecretString::from(form.password),
            client_ip,
            user_agent,
        )
        .await;
    match outcome {
        Ok(LoginOutcome::Tokens(tokens)) => signed_in(req, &app, language, tokens, &next).await,
        Ok(LoginOutcome::SecondFactorRequired(pending)) => {
            let mut response = waiting_page(
                req,
                language,
                pending.login_id,
                &t(language, "second_factor_wait"),
                None,
            );
            remember_pending(req, &mut response, "2fa", &pending);
            response
        }
        Err(err) => refused(req, &app, language, &next, err),
    }
}

/// Keeps a login waiting for Telegram in this browser: only it can collect the session.
fn remember_pending(req: &Request, response: &mut Response, kind: &str, pending: &PendingLogin) {
    let value = format!("{kind}.{}.{}", pending.login_id, pending.poll_secret);
    append_cookie(
        response,
        set_cookie(policy_of(req), PENDING_COOKIE, &value, 900),
    );
}

fn client_of(req: &Request) -> (Option<String>, Option<String>) {
    let origin = session::origin_of(req);
    (origin.client_ip, origin.user_agent)
}

/// A sign-in that failed: the sign-in page again, saying why, with the error's status.
fn refused(req: &Request, app: &App, language: Language, next: &str, err: AppError) -> Response {
    let (status, message) = match err {
        AppError::Auth(AuthError::InvalidCredentials) => {
            (StatusCode::UNAUTHORIZED, t(language, "error_credentials"))
        }
        err => layout::explained(language, err),
    };
    sign_in_page(req, app, language, next, Some((status, message)))
}

/// The session is open: the browser gets its cookie and goes to `next`.
async fn signed_in(
    req: &Request,
    app: &App,
    language: Language,
    tokens: Tokens,
    next: &str,
) -> Response {
    // A sign-in replaces the browser's session: the one it held ends.
    if let Some(old) = cookie(req, SESSION_COOKIE) {
        if let Err(err) = app.end_browser_session(&old).await {
            return layout::error_response(language, err);
        }
    }
    match app.open_browser_session(tokens).await {
        Ok(browser) => {
            let mut response = session::redirect(req, next);
            let max_age = (browser.expires_at - crate::app::now())
                .num_seconds()
                .max(0);
            let policy = policy_of(req);
            append_cookie(
                &mut response,
                set_cookie(policy, SESSION_COOKIE, &browser.secret, max_age),
            );
            append_cookie(&mut response, set_cookie(policy, LOGIN_COOKIE, "", 0));
            append_cookie(&mut response, set_cookie(policy, PENDING_COOKIE, "", 0));
            response
        }
        Err(err) => layout::error_response(language, err),
    }
}

/// The page of a login waiting for Telegram, asking every two seconds; `qr` shows the code.
fn waiting_page(
    req: &Request,
    language: Language,
    login_id: Uuid,
    message: &str,
    code: Option<(String, String)>,
) -> Response {
    let (csrf, _) = login_csrf(req);
    let body = html! {
        h1 { (t(language, "sign_in")) }
        @if let Some((svg, deep_link)) = code {
            figure.qr {
                div role="img" aria-label=(t(language, "qr_alt")) { (layout::trusted_svg(svg)) }
                figcaption {
                    (t(language, "qr_caption")) " "
                    a href=(deep_link) rel="noopener" { (t(language, "qr_open")) }
                }
            }
        }
        (waiting(login_id, message))
        p { a href="/console/login" { (t(language, "sign_in_other")) } }
    };
    layout::html_response(StatusCode::OK, layout::public_page(language, &csrf, body))
}

fn waiting(login_id: Uuid, message: &str) -> Markup {
    html! {
        p #login-wait hx-get={"/console/login/wait/" (login_id)} hx-trigger=(POLL_EVERY)
            hx-swap="outerHTML" role="status" { (message) }
    }
}

/// `POST /console/login/qr`: starts a QR login and shows its code.
#[handler]
pub async fn qr(req: &Request, app: Data<&Arc<App>>) -> Response {
    let language = language_of(req);
    let (client_ip, user_agent) = client_of(req);
    match app.start_qr_login(client_ip, user_agent).await {
        Ok(qr) => {
            let mut response = waiting_page(
                req,
                language,
                qr.pending.login_id,
                &t(language, "qr_wait"),
                Some((qr.qr_svg, qr.deep_link)),
            );
            remember_pending(req, &mut response, "qr", &qr.pending);
            response
        }
        Err(err) => refused(req, &app, language, "/console/desk", err),
    }
}

/// `GET /console/login/wait/{login_id}`: still waiting, or signed in (the cookie is set and
/// the page navigates on), or over (denied, expired).
#[handler]
pub async fn wait(req: &Request, app: Data<&Arc<App>>, Path(login_id): Path<Uuid>) -> Response {
    let language = language_of(req);
    let pending = cookie(req, PENDING_COOKIE).and_then(|value| {
        let mut parts = value.splitn(3, '.');
        let kind = match parts.next()? {
            "qr" => LoginKind::Qr,
            "2fa" => LoginKind::SecondFactor,
            _ => return None,
        };
        let id: Uuid = parts.next()?.parse().ok()?;
        let secret = parts.next()?.to_owned();
        (id == login_id).then_some((kind, secret))
    });
    let Some((kind, secret)) = pending else {
        return over(language, &t(language, "login_not_found"));
    };
    match app.poll_login(kind, login_id, &secret).await {
        Ok(LoginPoll::Pending { .. }) => layout::fragment(waiting(
            login_id,
            &t(
                language,
                match kind {
                    LoginKind::Qr => "qr_wait",
                    LoginKind::SecondFactor => "second_factor_wait",
                },
            ),
        )),
        Ok(LoginPoll::Completed(tokens)) => {
            signed_in(req, &app, language, tokens, "/console/desk").await
        }
        Err(err) => over(language, &layout::error_message(language, err)),
    }
}

/// The waiting is over without a session: the message, and no more polling.
fn over(language: Language, message: &str) -> Response {
    layout::fragment(html! {
        p #login-wait.flash.error role="alert" {
            (message) " "
            a href="/console/login" { (t(language, "sign_in_again")) }
        }
    })
}

/// The fields the Telegram Login Widget sends to its `data-auth-url`.
#[derive(Deserialize)]
pub struct WidgetQuery {
    id: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    username: Option<String>,
    photo_url: Option<String>,
    auth_date: Option<String>,
    hash: Option<String>,
}

/// `GET /console/login/telegram?…`: the Telegram Login Widget's callback (signed by Telegram
/// with the bot's token; only accounts already linked to that Telegram user sign in).
#[handler]
pub async fn telegram_widget(
    req: &Request,
    app: Data<&Arc<App>>,
    Query(query): Query<WidgetQuery>,
) -> Response {
    let language = language_of(req);
    let mut fields = BTreeMap::new();
    for (name, value) in [
        ("id", query.id),
        ("first_name", query.first_name),
        ("last_name", query.last_name),
        ("username", query.username),
        ("photo_url", query.photo_url),
        ("auth_date", query.auth_date),
        ("hash", query.hash),
    ] {
        if let Some(value) = value {
            fields.insert(name.to_owned(), value);
        }
    }
    let (client_ip, user_agent) = client_of(req);
    match app
        .login_with_telegram_once(&fields, client_ip, user_agent)
        .await
    {
        // The callback arrives by a navigation from Telegram's site, so a redirect would
        // still be cross-site and the browser would not send the new SameSite=Strict cookie:
        // the page moves on by itself, as a navigation of this site.
        Ok(tokens) => {
            let mut response = signed_in(req, &app, language, tokens, "/console/desk").await;
            if response.status() == StatusCode::SEE_OTHER {
                response.set_status(StatusCode::OK);
                response.headers_mut().remove(header::LOCATION);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                let (csrf, _) = login_csrf(req);
                let onward = layout::public_page(
                    language,
                    &csrf,
                    html! {
                        meta http-equiv="refresh" content="0; url=/console/desk";
                        h1 { (t(language, "sign_in")) }
                        p { a href="/console/desk" { (t(language, "continue")) } }
                    },
                );
                response.set_body(onward.into_string());
            }
            response
        }
        Err(err) => refused(req, &app, language, "/console/desk", err),
    }
}

/// `POST /console/logout`: the session ends, here and everywhere it was used.
#[handler]
pub async fn logout(req: &Request, app: Data<&Arc<App>>) -> Response {
    let language = language_of(req);
    if let Some(secret) = cookie(req, SESSION_COOKIE) {
        if let Err(err) = app.end_browser_session(&secret).await {
            return layout::error_response(language, err);
        }
    }
    let mut response = session::redirect(req, "/console/login");
    append_cookie(
        &mut response,
        set_cookie(policy_of(req), SESSION_COOKIE, "", 0),
    );
    response
}

//! The frame every console page shares, and how errors look.

use maud::{html, Markup, PreEscaped, DOCTYPE};
use poem::http::StatusCode;
use poem::web::{Data, Form};
use poem::{handler, Request, Response};
use serde::Deserialize;

use super::assets;
use super::session::{self, CookiePolicy, Staff, CSRF_FIELD, LANGUAGE_COOKIE, LOGIN_COOKIE};
use super::texts::{t, Language};
use crate::app::AppError;

/// The screens, in the order the navigation shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    Desk,
    Orders,
    Inventory,
    Dashboard,
    People,
    Stores,
    Notifications,
    SignIn,
}

impl Screen {
    const NAVIGATION: [Screen; 7] = [
        Screen::Desk,
        Screen::Orders,
        Screen::Inventory,
        Screen::Dashboard,
        Screen::People,
        Screen::Stores,
        Screen::Notifications,
    ];

    fn path(self) -> &'static str {
        match self {
            Screen::Desk => "/console/desk",
            Screen::Orders => "/console/orders",
            Screen::Inventory => "/console/inventory",
            Screen::Dashboard => "/console/dashboard",
            Screen::People => "/console/people",
            Screen::Stores => "/console/stores",
            Screen::Notifications => "/console/notifications",
            Screen::SignIn => "/console/login",
        }
    }

    fn title_key(self) -> &'static str {
        match self {
            Screen::Desk => "nav_desk",
            Screen::Orders => "nav_orders",
            Screen::Inventory => "nav_inventory",
            Screen::Dashboard => "nav_dashboard",
            Screen::People => "nav_people",
            Screen::Stores => "nav_stores",
            Screen::Notifications => "nav_notifications",
            Screen::SignIn => "sign_in",
        }
    }
}

/// `GET /console`: the payment desk is where the day starts.
#[handler]
pub fn home(req: &Request) -> Response {
    session::redirect(req, Screen::Desk.path())
}

/// htmx's settings: no `eval`, no inline styles (the CSP forbids both), and error answers
/// swapped like others (they carry their own target, the page's flash area).
const HTMX_CONFIG: &str = r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"historyCacheSize":0,"responseHandling":[{"code":"204","swap":false},{"code":"[2345]..","swap":true}]}"#;

fn head(language: Language, title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="htmx-config" content=(HTMX_CONFIG);
            title { (title) " · shopfront" }
            link rel="stylesheet" href=(assets::url("console.css"));
            link rel="icon" href="data:,";
            script src=(assets::url("htmx.min.js")) defer {}
            script src=(assets::url("console.js")) defer {}
        }
        @let _ = language;
    }
}

/// A whole page for a signed-in staff member: navigation, flash area, `body`.
pub fn page(staff: &Staff, screen: Screen, body: Markup) -> Response {
    let language = staff.language;
    let title = t(language, screen.title_key());
    let headers = format!(r#"{{"X-CSRF-Token":"{}"}}"#, staff.csrf);
    let markup = html! {
        (DOCTYPE)
        html lang=(language.code()) {
            (head(language, &title))
            body hx-headers=(headers) hx-boost="true" data-live="on" data-sound=(if staff.sound.unwrap_or(true) { "on" } else { "off" }) data-screen=(screen.path()) {
                a.skip href="#main" { (t(language, "skip_to_content")) }
                header.top {
                    span.brand { "shopfront" }
                    nav aria-label=(t(language, "nav_main")) {
                        ul {
                            @for item in Screen::NAVIGATION {
                                li {
                                    a href=(item.path())
                                        aria-current=[(item == screen).then_some("page")] {
                                        (t(language, item.title_key()))
                                        @if item == Screen::Notifications {
                                            " "
                                            span #unread-badge.badge
                                                hx-get="/console/notifications/badge"
                                                hx-trigger="load, sf-notification from:body, sf-read from:body"
                                                hx-swap="outerHTML" {}
                                        }
                                    }
                                }
                            }
                        }
                    }
                    (language_switch(language, &staff.csrf, screen.path()))
                    form.inline method="post" action="/console/logout" hx-boost="false" {
                        input type="hidden" name=(CSRF_FIELD) value=(staff.csrf);
                        button type="submit" { (t(language, "sign_out")) }
                    }
                }
                div #flash role="status" aria-live="polite" {}
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    html_response(StatusCode::OK, markup)
}

/// A page before sign-in (no navigation); `csrf` is the sign-in forms' value.
pub fn public_page(language: Language, csrf: &str, body: Markup) -> Markup {
    let title = t(language, "sign_in");
    html! {
        (DOCTYPE)
        html lang=(language.code()) {
            (head(language, &title))
            body.public {
                header.top {
                    span.brand { "shopfront" }
                    (language_switch(language, csrf, Screen::SignIn.path()))
                }
                div #flash role="status" aria-live="polite" {}
                main #main { (body) }
            }
        }
    }
}

fn language_switch(language: Language, csrf: &str, back: &str) -> Markup {
    let other = language.other();
    html! {
        form.inline method="post" action="/console/language" hx-boost="false" {
            input type="hidden" name=(CSRF_FIELD) value=(csrf);
            input type="hidden" name="language" value=(other.code());
            input type="hidden" name="back" value=(back);
            button type="submit" lang=(other.code()) {
                (t(other, "switch_language"))
            }
        }
    }
}

/// A table's header row: one column header per text key.
pub fn columns(language: Language, keys: &[&str]) -> Markup {
    html! {
        thead {
            tr {
                @for key in keys {
                    th scope="col" { (t(language, key)) }
                }
            }
        }
    }
}

/// A rendered fragment (an htmx answer).
pub fn fragment(markup: Markup) -> Response {
    html_response(StatusCode::OK, markup)
}

pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    Response::builder()
        .status(status)
        .content_type("text/html; charset=utf-8")
        .body(markup.into_string())
}

/// A one-line message in the page's flash area (htmx answers are retargeted there).
pub fn flash(status: StatusCode, kind: &str, message: &str) -> Response {
    let markup = html! {
        p class=(format!("flash {kind}")) role=(if kind == "error" { "alert" } else { "status" }) {
            (message)
        }
    };
    let mut response = html_response(status, markup);
    let headers = response.headers_mut();
    headers.insert(
        "HX-Retarget",
        poem::http::HeaderValue::from_static("#flash"),
    );
    headers.insert(
        "HX-Reswap",
        poem::http::HeaderValue::from_static("innerHTML"),
    );
    response
}

/// An application error as the console shows it: the API's status, title and detail (one
/// mapping of errors for every adapter), in the flash area for htmx requests or as a page.
pub fn error_response(language: Language, err: AppError) -> Response {
    let (status, message) = explained(language, err);
    flash(status, "error", &message)
}

/// An application error as one line for a person (a bulk action's item).
pub fn error_message(language: Language, err: AppError) -> String {
    explained(language, err).1
}

pub fn explained(language: Language, err: AppError) -> (StatusCode, String) {
    let problem = crate::http::ApiError::from(err).problem();
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(title = %problem.title, detail = ?problem.detail, "console request failed");
    }
    let message = match (&problem.detail, status.is_server_error()) {
        (_, true) => t(language, "error_internal"),
        (Some(detail), false) => format!("{}: {detail}", problem.title),
        (None, false) => problem.title.clone(),
    };
    (status, message)
}

/// A page that could not be shown: for a fragment (an htmx request that is no boosted
/// navigation) the message in the flash area; otherwise the page's frame with the message,
/// under the error's status.
pub fn failed(staff: &Staff, screen: Screen, err: AppError) -> Response {
    if staff.partial {
        return error_response(staff.language, err);
    }
    let (status, message) = explained(staff.language, err);
    let mut response = page(
        staff,
        screen,
        html! { p.flash.error role="alert" { (message) } },
    );
    response.set_status(status);
    response
}

/// The answer to an unsafe request without its CSRF token.
pub fn forbidden_csrf(language: Language) -> Response {
    flash(StatusCode::FORBIDDEN, "error", &t(language, "error_csrf"))
}

/// An answer of `status` with nothing more to say (no such page, a malformed form).
pub fn status_response(language: Language, status: StatusCode) -> Response {
    let key = match status {
        StatusCode::NOT_FOUND => "error_not_found",
        StatusCode::METHOD_NOT_ALLOWED => "error_method",
        s if s.is_client_error() => "error_bad_request",
        _ => "error_internal",
    };
    flash(status, "error", &t(language, key))
}

/// The language switch's form.
#[derive(Deserialize)]
pub struct LanguageForm {
    language: String,
    back: Option<String>,
}

/// `POST /console/language`: remembers the language and goes back.
#[handler]
pub fn set_language(
    req: &Request,
    Form(form): Form<LanguageForm>,
    policy: Data<&CookiePolicy>,
) -> Response {
    let language = Language::parse(&form.language).unwrap_or(Language::En);
    let back = match form.back.as_deref() {
        Some(back) if back == Screen::SignIn.path() => back.to_owned(),
        back => session::safe_next(back),
    };
    let mut response = session::redirect(req, &back);
    if let Ok(value) =
        session::set_cookie(**policy, LANGUAGE_COOKIE, language.code(), 365 * 24 * 3600).parse()
    {
        response
            .headers_mut()
            .append(poem::http::header::SET_COOKIE, value);
    }
    response
}

/// The value of the sign-in forms' CSRF cookie, or a new one to set.
pub fn login_csrf(req: &Request) -> (String, bool) {
    match session::cookie(req, LOGIN_COOKIE).filter(|v| v.len() >= 32) {
        Some(value) => (value, false),
        None => (hex::encode(rand::random::<[u8; 32]>()), true),
    }
}

/// Raw markup (an SVG the service drew itself).
pub fn trusted_svg(svg: String) -> Markup {
    PreEscaped(svg)
}

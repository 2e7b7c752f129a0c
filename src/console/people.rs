//! People: the staff of each store the user may see staff in, with their roles (assign by
//! e-mail, change, remove: only the roles the matrix lets this user give are offered, and the
//! store refuses the rest anyway); for platform admins the platform's users (search, block and
//! unblock, in bulk); and the user's own sessions and API tokens.

use std::sync::Arc;

use aggregates::{AccountId, StoreId, StoreRole};
use chrono::{NaiveDate, Utc};
use maud::{html, Markup};
use poem::web::{Data, Path, Query};
use poem::{handler, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::layout::{self, columns, Screen};
use super::session::{FormFields, Staff};
use super::stores::{stores_allowing, StaffStore};
use super::texts::{at, t, tf};
use crate::app::authz::{can_assign, Permission};
use crate::app::{grant, App, AppError, NewApiToken, UserQuery};

/// Every store role, strongest first.
const ROLES: [StoreRole; 4] = [
    StoreRole::Owner,
    StoreRole::Admin,
    StoreRole::Vendor,
    StoreRole::Auditor,
];
/// Platform users listed per search.
const USERS_PAGE: i64 = 50;

fn role_named(name: &str) -> Result<StoreRole, AppError> {
    ROLES
        .into_iter()
        .find(|role| role.as_str().eq_ignore_ascii_case(name))
        .ok_or_else(|| AppError::invalid("role", "OWNER, ADMIN, VENDOR or AUDITOR"))
}

#[derive(Debug, Default, Deserialize)]
pub struct PeopleQuery {
    /// Platform users: an e-mail substring, a Telegram user id or an account id.
    q: Option<String>,
    /// `blocked`, `active` or empty.
    state: Option<String>,
}

/// `GET /console/people`.
#[handler]
pub async fn page(
    staff: Staff,
    app: Data<&Arc<App>>,
    Query(query): Query<PeopleQuery>,
) -> Response {
    let result = async {
        let stores = stores_allowing::<grant::ViewStaff>(&app, &staff).await?;
        let mut sections = Vec::new();
        for store in &stores {
            sections.push(staff_section(&app, &staff, store).await?);
        }
        let users = if staff.platform_admin {
            Some(users_section(&app, &staff, &query).await?)
        } else {
            None
        };
        let own = own_section(&app, &staff, None).await?;
        Ok::<_, AppError>(html! {
            @for section in sections { (section) }
            @if let Some(users) = users { (users) }
            (own)
        })
    }
    .await;
    match result {
        Ok(body) => layout::page(&staff, Screen::People, body),
        Err(err) => layout::failed(&staff, Screen::People, err),
    }
}

async fn staff_section(app: &App, staff: &Staff, store: &StaffStore) -> Result<Markup, AppError> {
    let language = staff.language;
    let access = app
        .authorize::<grant::ViewStaff>(&staff.caller, store.store_id)
        .await?;
    let members = app.staff(&access).await?;
    let manages = store.allows(Permission::ManageStaff);
    let assignable: Vec<StoreRole> = ROLES
        .into_iter()
        .filter(|role| manages && can_assign(store.role, *role))
        .collect();
    let id = store.store_id.0;
    Ok(html! {
        section.staff #{"staff-" (id)} aria-labelledby={"staff-" (id) "-title"} {
            h2 #{"staff-" (id) "-title"} { (tf(language, "staff_of", &[("store", &store.name)])) }
            table {
                thead { tr {
                    th scope="col" { (t(language, "email")) }
                    th scope="col" { (t(language, "role")) }
                    th scope="col" { (t(language, "since")) }
                    @if manages { th scope="col" { (t(language, "actions")) } }
                } }
                tbody {
                    @for m in &members {
                        @let member_role = role_named(&m.member.role).ok();
                        // A role this user may not give is not theirs to change either.
                        @let changeable = member_role.is_some_and(|r| assignable.contains(&r))
                            && m.member.account_id != staff.account_id().0;
                        tr data-account-id=(m.member.account_id) {
                            td { (m.email.clone().unwrap_or_else(|| m.member.account_id.to_string())) }
                            td.role { (t(language, &format!("role_{}", m.member.role))) }
                            td { (at(m.member.assigned_at, Some(&store.time_zone))) }
                            @if manages {
                                td {
                                    @if changeable {
                                        form.inline method="post" action="/console/people/staff" {
                                            input type="hidden" name="csrf" value=(staff.csrf);
                                            input type="hidden" name="store_id" value=(id);
                                            input type="hidden" name="account_id" value=(m.member.account_id);
                                            label for={"role-" (id) "-" (m.member.account_id)} { (t(language, "change_role")) }
                                            select #{"role-" (id) "-" (m.member.account_id)} name="role" {
                                                @for role in &assignable {
                                                    option value=(role.as_str()) selected[Some(*role) == member_role] { (t(language, &format!("role_{}", role.as_str()))) }
                                                }
                                            }
                                            button type="submit" { (t(language, "save")) }
                                        }
                                        form.inline method="post" action="/console/people/staff/remove" {
                                            input type="hidden" name="csrf" value=(staff.csrf);
                                            input type="hidden" name="store_id" value=(id);
                                            input type="hidden" name="account_id" value=(m.member.account_id);
                                            button type="submit" { (t(language, "remove")) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if !assignable.is_empty() {
                form.assign method="post" action="/console/people/staff" {
                    input type="hidden" name="csrf" value=(staff.csrf);
                    input type="hidden" name="store_id" value=(id);
                    fieldset {
                        legend { (t(language, "add_staff")) }
                        label for={"email-" (id)} { (t(language, "email")) }
                        input #{"email-" (id)} type="email" name="email" required;
                        label for={"new-role-" (id)} { (t(language, "role")) }
                        select #{"new-role-" (id)} name="role" {
                            @for role in &assignable {
                                option value=(role.as_str()) { (t(language, &format!("role_{}", role.as_str()))) }
                            }
                        }
                        button type="submit" { (t(language, "assign")) }
                    }
                }
            }
        }
    })
}

async fn users_section(app: &App, staff: &Staff, query: &PeopleQuery) -> Result<Markup, AppError> {
    let language = staff.language;
    let admin = app.require_platform_admin(&staff.caller).await?;
    let filter = UserQuery {
        text: query.q.clone().filter(|q| !q.trim().is_empty()),
        blocked: match query.state.as_deref() {
            Some("blocked") => Some(true),
            Some("active") => Some(false),
            _ => None,
        },
        platform_admin: None,
    };
    let users = app.users(&admin, &filter, None, USERS_PAGE).await?;
    let ids: Vec<Uuid> = users.iter().map(|u| u.account_id).collect();
    let contacts = app.contacts(&ids).await?;
    Ok(html! {
        section #users aria-labelledby="users-title" {
            h2 #users-title { (t(language, "platform_users")) }
            form.filters method="get" action="/console/people" aria-label=(t(language, "filters")) {
                label for="u-q" { (t(language, "search")) }
                input #u-q type="search" name="q" value=[query.q.as_deref()];
                label for="u-state" { (t(language, "state")) }
                select #u-state name="state" {
                    option value="" { (t(language, "any")) }
                    option value="active" selected[query.state.as_deref() == Some("active")] { (t(language, "active")) }
                    option value="blocked" selected[query.state.as_deref() == Some("blocked")] { (t(language, "blocked")) }
                }
                button type="submit" { (t(language, "apply")) }
            }
            form #users-bulk method="post" action="/console/people/users/block" {
                input type="hidden" name="csrf" value=(staff.csrf);
                table {
                    (columns(language, &["select", "user", "registered", "state"]))
                    tbody {
                        @for user in &users {
                            tr data-account-id=(user.account_id) {
                                td {
                                    input #{"u-" (user.account_id)} type="checkbox" name="account_ids" value=(user.account_id)
                                        aria-label=(tf(language, "select_user", &[("user", &user.account_id.to_string())]));
                                }
                                td { (super::desk::contact_line(language, contacts.get(&user.account_id))) br; small { (user.account_id) } }
                                td { (at(user.registered_at, None)) }
                                td.state { @if user.blocked_at.is_some() { (t(language, "blocked")) } @else { (t(language, "active")) } }
                            }
                        }
                    }
                }
                label for="block-reason" { (t(language, "block_reason")) }
                input #block-reason type="text" name="reason" maxlength="500";
                button type="submit" name="action" value="block" { (t(language, "block")) }
                button type="submit" name="action" value="unblock" { (t(language, "unblock")) }
            }
        }
    })
}

/// The user's own sessions and API tokens; `created` is a token just made (shown once).
async fn own_section(app: &App, staff: &Staff, created: Option<&str>) -> Result<Markup, AppError> {
    let language = staff.language;
    let principal = staff.caller.principal();
    let sessions = app.sessions(principal).await?;
    let tokens = app.api_tokens(principal).await?;
    let token_stores = stores_allowing::<grant::ViewStore>(app, staff).await?;
    Ok(html! {
        section #sessions aria-labelledby="sessions-title" {
            h2 #sessions-title { (t(language, "your_sessions")) }
            table {
                (columns(language, &["device", "since", "last_seen", "actions"]))
                tbody {
                    @for s in &sessions {
                        tr data-session-id=(s.session_id) {
                            td { (s.user_agent.clone().unwrap_or_else(|| "—".into())) " · " (s.client_ip.clone().unwrap_or_default()) }
                            td { (at(s.created_at, None)) }
                            td { (at(s.last_seen_at, None)) }
                            td {
                                @if s.session_id == staff.session_id {
                                    (t(language, "this_session"))
                                } @else {
                                    form.inline method="post" action={"/console/people/sessions/" (s.session_id) "/revoke"} {
                                        input type="hidden" name="csrf" value=(staff.csrf);
                                        button type="submit" { (t(language, "revoke")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section #tokens aria-labelledby="tokens-title" {
            h2 #tokens-title { (t(language, "api_tokens")) }
            @if let Some(token) = created {
                p.flash.ok role="status" {
                    (t(language, "token_created")) " "
                    code #new-token { (token) }
                }
            }
            table {
                (columns(language, &["name", "role", "last_used", "actions"]))
                tbody {
                    @for token in &tokens {
                        tr data-token-id=(token.token_id) {
                            td { (token.name) " " code { (token.token_prefix) "…" } }
                            td { (t(language, &format!("role_{}", token.role.as_str()))) @if token.read_only { " · " (t(language, "read_only")) } }
                            td { (token.last_used_at.map(|at_| at(at_, None)).unwrap_or_else(|| "—".into())) }
                            td {
                                @if token.revoked_at.is_some() {
                                    (t(language, "revoked"))
                                } @else {
                                    form.inline method="post" action={"/console/people/tokens/" (token.token_id) "/revoke"} {
                                        input type="hidden" name="csrf" value=(staff.csrf);
                                        button type="submit" { (t(language, "revoke")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if !token_stores.is_empty() {
                form.token method="post" action="/console/people/tokens" {
                    input type="hidden" name="csrf" value=(staff.csrf);
                    fieldset {
                        legend { (t(language, "new_token")) }
                        label for="token-name" { (t(language, "name")) }
                        input #token-name type="text" name="name" required maxlength="100";
                        label for="token-store" { (t(language, "store")) }
                        select #token-store name="store_id" {
                            @for s in &token_stores { option value=(s.store_id.0) { (s.name) } }
                        }
                        label for="token-role" { (t(language, "role")) }
                        select #token-role name="role" {
                            @for role in ROLES { option value=(role.as_str()) { (t(language, &format!("role_{}", role.as_str()))) } }
                        }
                        label for="token-expires" { (t(language, "expires")) }
                        input #token-expires type="date" name="expires";
                        label.check { input type="checkbox" name="read_only" value="on"; " " (t(language, "read_only")) }
                        button type="submit" { (t(language, "create")) }
                    }
                }
            }
        }
    })
}

/// After a change made by a plain form: back to the page, with the change's outcome said.
fn done(staff: &Staff, outcome: Result<(), AppError>) -> Response {
    match outcome {
        Ok(()) => poem::Response::builder()
            .status(poem::http::StatusCode::SEE_OTHER)
            .header(poem::http::header::LOCATION, "/console/people")
            .finish(),
        Err(err) => layout::error_response(staff.language, err),
    }
}

/// `POST /console/people/staff`: assign a role (by e-mail) or change one (by account).
#[handler]
pub async fn assign(staff: Staff, app: Data<&Arc<App>>, form: FormFields) -> Response {
    let outcome = async {
        let store_id = StoreId(form.id("store_id")?);
        let role = role_named(form.get("role").unwrap_or_default())?;
        let access = app
            .authorize::<grant::ManageStaff>(&staff.caller, store_id)
            .await?;
        let account_id = match (form.get("account_id"), form.get("email")) {
            (Some(id), _) => AccountId(
                id.parse()
                    .map_err(|_| AppError::invalid("account_id", "not an account id"))?,
            ),
            (None, Some(email)) => app
                .staff_account_by_email(&access, role, email)
                .await?
                .ok_or_else(|| AppError::invalid("email", "no active account with this e-mail"))?,
            (None, None) => return Err(AppError::invalid("email", "required")),
        };
        let written = app.assign_staff_role(&access, account_id, role).await?;
        app.reached(&["catalog"], written.position).await?;
        Ok(())
    }
    .await;
    done(&staff, outcome)
}

/// `POST /console/people/staff/remove`.
#[handler]
pub async fn remove(staff: Staff, app: Data<&Arc<App>>, form: FormFields) -> Response {
    let outcome = async {
        let store_id = StoreId(form.id("store_id")?);
        let account_id = AccountId(form.id("account_id")?);
        let access = app
            .authorize::<grant::ManageStaff>(&staff.caller, store_id)
            .await?;
        let written = app.revoke_staff_role(&access, account_id).await?;
        app.reached(&["catalog"], written.position).await?;
        Ok(())
    }
    .await;
    done(&staff, outcome)
}

/// `POST /console/people/users/block`: block or unblock the chosen platform users, each on
/// its own; the answer lists every result.
#[handler]
pub async fn block(staff: Staff, app: Data<&Arc<App>>, form: FormFields) -> Response {
    let language = staff.language;
    let result = async {
        let admin = app.require_platform_admin(&staff.caller).await?;
        let blocked = match form.get("action") {
            Some("block") => true,
            Some("unblock") => false,
            _ => return Err(AppError::invalid("action", "block or unblock")),
        };
        let reason = form.get("reason").map(str::to_owned);
        let ids = form
            .all("account_ids")
            .map(|id| {
                id.parse()
                    .map(AccountId)
                    .map_err(|_| AppError::invalid("account_ids", "not an account id"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if ids.is_empty() || ids.len() > 100 {
            return Err(AppError::invalid("account_ids", "choose 1 to 100 users"));
        }
        let mut results = Vec::new();
        for id in ids {
            let outcome = app
                .set_account_blocked(&admin, id, blocked, reason.clone())
                .await
                .map_err(|err| layout::error_message(language, err));
            results.push((id, outcome));
        }
        Ok(results)
    }
    .await;
    match result {
        Ok(results) => layout::flash(
            poem::http::StatusCode::OK,
            "ok",
            &results
                .iter()
                .map(|(id, outcome)| match outcome {
                    Ok(()) => format!("{}: {}", id.0, t(language, "done")),
                    Err(message) => format!("{}: {message}", id.0),
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Err(err) => layout::error_response(language, err),
    }
}

/// `POST /console/people/sessions/{id}/revoke`.
#[handler]
pub async fn revoke_session(
    staff: Staff,
    app: Data<&Arc<App>>,
    Path(session_id): Path<Uuid>,
) -> Response {
    let outcome = app
        .revoke_session(staff.caller.principal(), session_id)
        .await;
    done(&staff, outcome)
}

/// `POST /console/people/tokens`: a new API token, shown once on the page it answers.
#[handler]
pub async fn create_token(staff: Staff, app: Data<&Arc<App>>, form: FormFields) -> Response {
    let result = async {
        let store_id = StoreId(form.id("store_id")?);
        let role = role_named(form.get("role").unwrap_or_default())?;
        let expires_at = form
            .get("expires")
            .map(|day| {
                NaiveDate::parse_from_str(day, "%Y-%m-%d")
                    .map(|day| day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
                    .map_err(|_| AppError::invalid("expires", "a date, YYYY-MM-DD"))
            })
            .transpose()?;
        if expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(AppError::invalid("expires", "a day after today"));
        }
        let created = app
            .create_api_token(
                staff.caller.principal(),
                NewApiToken {
                    name: form.get("name").unwrap_or_default().to_owned(),
                    store_ids: vec![store_id],
                    role,
                    read_only: form.get("read_only").is_some(),
                    expires_at,
                },
            )
            .await?;
        own_section(&app, &staff, Some(&created.token)).await
    }
    .await;
    match result {
        Ok(section) => layout::page(&staff, Screen::People, section),
        Err(err) => layout::failed(&staff, Screen::People, err),
    }
}

/// `POST /console/people/tokens/{id}/revoke`.
#[handler]
pub async fn revoke_token(
    staff: Staff,
    app: Data<&Arc<App>>,
    Path(token_id): Path<Uuid>,
) -> Response {
    let outcome = app
        .revoke_api_token(staff.caller.principal(), token_id)
        .await;
    done(&staff, outcome)
}

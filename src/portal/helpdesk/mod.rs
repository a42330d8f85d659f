//! The HELPDESK tab: find a user, see why they cannot log in, and unlock them, remove a lost
//! phone's token, or issue or revoke a temporary code. What may be seen and done, and the audit
//! trail of every action, are `auth::helpdesk`'s; this module decides who may, and shows it.
//!
//! The role comes from the directory only: membership of `[portal] helpdesk_groups`, asked at
//! sign-in (for the tab) and again on every helpdesk request (for access), so leaving the group
//! ends it at the next click, whatever the session remembers. Nothing the browser sends bears on
//! it. Anyone else gets 403 on every `/helpdesk...` URL — any method, any user named, existing or
//! not, any form; a visitor not signed in is sent to sign in.
//!
//! Pages by what they do: `search`, `view` (one user), `actions` (unlock, remove a token, revoke
//! codes: a confirmation page, then a CSRF-checked POST and a redirect with a notice) and
//! `temporary` (issue a code: the POST's answer is the only place the code ever appears).

mod actions;
mod search;
mod temporary;
mod view;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Form, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::Portal;
use super::extract::{CsrfForm, Refusal, SignedIn, Visit};
use super::i18n::Strings;
use super::limiter::LimitKey;
use super::pages::{self, Page, Tab, render};
use super::session::Stage;
use crate::auth::helpdesk::{Actor, HelpdeskError};

const HELPDESK: Option<Tab> = Some(Tab::Helpdesk);

/// Searches per helpdesk member and minute: more than a person types, too few for a script in a
/// member's session to page through the directory.
const SEARCHES_PER_MINUTE: u32 = 30;
/// Changes (unlock, remove, issue, revoke) per member in `CHANGE_WINDOW`: a busy morning's
/// tickets, not a sweep over every account by a script in a member's session.
const CHANGES_PER_WINDOW: u32 = 30;
const CHANGE_WINDOW: Duration = Duration::from_secs(600);

pub fn routes() -> Router<Arc<Portal>> {
    Router::new()
        .route("/helpdesk", get(search::search).fallback(wrong_method))
        .route("/helpdesk/users/{name}", get(view::user).fallback(wrong_method))
        .route("/helpdesk/users/{name}/unlock", get(actions::unlock_page).post(actions::unlock).fallback(wrong_method))
        .route(
            "/helpdesk/users/{name}/tokens/{id}/remove",
            get(actions::remove_token_page).post(actions::remove_token).fallback(wrong_method),
        )
        .route("/helpdesk/users/{name}/temporary-code", get(temporary::issue_page).post(temporary::issue).fallback(wrong_method))
        .route("/helpdesk/users/{name}/temporary-code/revoke", get(actions::revoke_page).post(actions::revoke).fallback(wrong_method))
        // Every other helpdesk URL: 403 to non-members like the rest, 404 to members.
        .route("/helpdesk/{*rest}", any(not_found))
}

/// A request from a member of a helpdesk group, as the directory says now.
pub struct Helpdesk {
    pub visit: Visit,
    /// The member's account id: the actor of what they do.
    pub member: String,
}

impl FromRequestParts<Arc<Portal>> for Helpdesk {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, portal: &Arc<Portal>) -> Result<Self, Refusal> {
        let SignedIn { mut visit, user, .. } = SignedIn::from_request_parts(parts, portal).await?;
        let member = match portal.auth.in_any_group(&user, &portal.settings.helpdesk_groups, visit.arrival.unix).await {
            Ok(member) => member,
            Err(e) => {
                tracing::warn!(error = %e, user, "portal: the directory could not say whether a user is in a helpdesk group");
                return Err(Refusal::Page(Box::new(unavailable(portal, visit))));
            }
        };
        remember_role(portal, &mut visit, member).await;
        if !member {
            // Once per account and minute: a script in a session must not fill the log.
            let key = LimitKey::HelpdeskRefused(user.clone());
            if portal.limits_audited.allow_at(&key, 1, Duration::from_secs(60), visit.arrival.instant) {
                tracing::warn!(target: "radmfa::audit", user, path = parts.uri.path(), "portal: helpdesk page refused: not in a helpdesk group (or the account is disabled, locked or expired)");
            }
            return Err(Refusal::Page(Box::new(message(portal, visit, StatusCode::FORBIDDEN, |s| s.helpdesk_only, "/general").await)));
        }
        Ok(Self { visit, member: user })
    }
}

/// Whether a user who just signed in is in a helpdesk group: whether the tab is shown. The
/// directory failing to say hides it (a helpdesk page asks again).
pub async fn role_at_sign_in(portal: &Portal, user: &str) -> bool {
    portal.auth.in_any_group(user, &portal.settings.helpdesk_groups, crate::clock::now()).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, user, "portal: the directory could not say whether a user is in a helpdesk group; no HELPDESK tab");
        false
    })
}

/// Keeps what the directory said in the session (and this request's copy), for the tab: a
/// write only when it changed.
async fn remember_role(portal: &Portal, visit: &mut Visit, member: bool) {
    let Some(held) = visit.held.as_mut() else { return };
    let Stage::SignedIn { helpdesk, .. } = &mut held.session.stage else { return };
    if *helpdesk == member {
        return;
    }
    *helpdesk = member;
    visit
        .modify(portal, |session| {
            if let Stage::SignedIn { helpdesk, .. } = &mut session.stage {
                *helpdesk = member;
            }
        })
        .await;
}

/// A posted helpdesk form: the role checked first (so anyone else gets 403 whatever they send),
/// then the path's parameters, then the form and its CSRF token (else "form expired", 403).
pub struct HelpdeskForm<P, T> {
    pub helpdesk: Helpdesk,
    pub path: P,
    pub form: T,
}

impl<P, T> FromRequest<Arc<Portal>> for HelpdeskForm<P, T>
where
    P: DeserializeOwned + Send + 'static,
    T: CsrfForm + Send,
{
    type Rejection = Refusal;

    async fn from_request(request: Request, portal: &Arc<Portal>) -> Result<Self, Refusal> {
        let (mut parts, body) = request.into_parts();
        let helpdesk = Helpdesk::from_request_parts(&mut parts, portal).await?;
        let Path(path) =
            Path::<P>::from_request_parts(&mut parts, portal).await.map_err(|e| Refusal::Malformed(Box::new(e.into_response())))?;
        let Form(form) = Form::<T>::from_request(Request::from_parts(parts, body), portal)
            .await
            .map_err(|e| Refusal::Malformed(Box::new(e.into_response())))?;
        if !helpdesk.visit.csrf_ok(form.csrf()) {
            return Err(Refusal::FormExpired(Box::new(pages::form_expired(portal, helpdesk.visit).await)));
        }
        Ok(Self { helpdesk, path, form })
    }
}

/// A form that carries nothing but its CSRF token; a missing token reads as a wrong one.
#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

impl CsrfForm for CsrfOnly {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Where the help desk sees `account`: its name percent-encoded as one path segment.
pub fn user_path(account: &str) -> String {
    /// Everything but RFC 3986's unreserved characters.
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    format!("/helpdesk/users/{}", utf8_percent_encode(account, SEGMENT))
}

/// The member as the audit trail names them.
fn actor(member: &str, from: IpAddr) -> Actor {
    Actor { name: member.to_owned(), via: "helpdesk", from: Some(from.to_string()) }
}

/// Counts a change by `member`; false when over the limit (logged once per window).
fn change_allowed(portal: &Portal, member: &str, visit: &Visit) -> bool {
    let key = LimitKey::HelpdeskChange(member.to_owned());
    let now = visit.arrival.instant;
    if portal.helpdesk_limits.allow_at(&key, CHANGES_PER_WINDOW, CHANGE_WINDOW, now) {
        return true;
    }
    if portal.limits_audited.allow_at(&key, 1, CHANGE_WINDOW, now) {
        tracing::warn!(target: "radmfa::audit", actor = member, limit = CHANGES_PER_WINDOW, "portal: helpdesk changes rate limited");
    }
    false
}

#[derive(Template)]
#[template(path = "helpdesk_message.html")]
struct MessagePage {
    page: Page,
    back: String,
}

/// A page that only says something (`text`), with the way back.
async fn message(portal: &Portal, visit: Visit, status: StatusCode, text: fn(&Strings) -> &'static str, back: &str) -> Response {
    let page = visit.page(portal, HELPDESK, Some(text(visit.s()))).await;
    visit.respond((status, render(MessagePage { page, back: back.to_owned() })))
}

/// The directory or the store could not answer: 503, try again later.
fn unavailable(portal: &Portal, visit: Visit) -> Response {
    let lang = visit.lang;
    visit.respond(pages::unavailable(&portal.settings.brand, lang))
}

/// What `auth` refused, as the help desk is told.
async fn failed(portal: &Portal, visit: Visit, error: HelpdeskError) -> Response {
    match error {
        HelpdeskError::NoSuchUser => message(portal, visit, StatusCode::NOT_FOUND, |s| s.no_such_user, "/helpdesk").await,
        HelpdeskError::Invalid(_) => message(portal, visit, StatusCode::BAD_REQUEST, |s| s.issue_invalid, "/helpdesk").await,
        HelpdeskError::AccountUnusable => message(portal, visit, StatusCode::CONFLICT, |s| s.account_unusable, "/helpdesk").await,
        HelpdeskError::Unavailable(reason) => {
            tracing::warn!(reason = reason.as_str(), "portal: a helpdesk page could not be answered: 503");
            unavailable(portal, visit)
        }
    }
}

/// A helpdesk URL with no page: 404 (after the role check, so non-members learn nothing).
async fn not_found(State(portal): State<Arc<Portal>>, helpdesk: Helpdesk) -> Response {
    message(&portal, helpdesk.visit, StatusCode::NOT_FOUND, |s| s.no_such_page, "/helpdesk").await
}

/// A method a helpdesk URL does not take: 405 (after the role check).
async fn wrong_method(helpdesk: Helpdesk) -> Response {
    helpdesk.visit.respond(StatusCode::METHOD_NOT_ALLOWED)
}

//! The help desk's changes that need no more than a yes: unlock (both factors' lockouts), remove
//! a token (a lost phone) and revoke temporary codes. Each is a confirmation page, then a
//! CSRF-checked POST that redirects to the user's page with a notice; `auth` writes the audit
//! trail with the member as the actor.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};

use super::{CsrfOnly, HELPDESK, Helpdesk, HelpdeskForm, actor, change_allowed, failed, message, user_path};
use crate::portal::Portal;
use crate::portal::client_addr::ClientAddr;
use crate::portal::extract::Visit;
use crate::portal::i18n::Strings;
use crate::portal::pages::{Page, render};
use crate::portal::session::Notice;

#[derive(Template)]
#[template(path = "helpdesk_confirm.html")]
struct ConfirmPage {
    page: Page,
    heading: &'static str,
    /// The account acted on.
    id: String,
    /// What in it, if not the whole account (a token's name).
    subject: Option<String>,
    question: &'static str,
    button: &'static str,
    /// Where the form posts.
    action: String,
    /// The user's page.
    back: String,
}

/// The words of one confirmation page.
struct Words {
    heading: &'static str,
    question: &'static str,
    button: &'static str,
}

async fn confirm(
    portal: &Portal,
    visit: Visit,
    account: String,
    words: fn(&'static Strings) -> Words,
    action: &str,
    subject: Option<String>,
) -> Response {
    let Words { heading, question, button } = words(visit.s());
    let back = user_path(&account);
    let page = visit.page(portal, HELPDESK, None).await;
    let action = format!("{back}{action}");
    visit.respond(render(ConfirmPage { page, heading, id: account, subject, question, button, action, back }))
}

/// After a change: back to the user's page, with what became of it.
async fn done(portal: &Portal, visit: Visit, account: &str, notice: Notice) -> Response {
    visit.modify(portal, |session| session.notice = Some(notice)).await;
    visit.respond(Redirect::to(&user_path(account)))
}

async fn too_many_changes(portal: &Portal, visit: Visit, name: &str) -> Response {
    message(portal, visit, StatusCode::TOO_MANY_REQUESTS, |s| s.too_many_changes, &user_path(name)).await
}

fn unlock_words(s: &'static Strings) -> Words {
    Words { heading: s.unlock, question: s.unlock_confirm, button: s.unlock }
}

fn remove_words(s: &'static Strings) -> Words {
    Words { heading: s.remove, question: s.remove_confirm, button: s.remove }
}

fn revoke_words(s: &'static Strings) -> Words {
    Words { heading: s.revoke, question: s.revoke_confirm, button: s.revoke }
}

pub async fn unlock_page(State(portal): State<Arc<Portal>>, helpdesk: Helpdesk, Path(name): Path<String>) -> Response {
    match portal.auth.lookup(&name).await {
        Ok(account) => confirm(&portal, helpdesk.visit, account.id, unlock_words, "/unlock", None).await,
        Err(e) => failed(&portal, helpdesk.visit, e).await,
    }
}

pub async fn unlock(State(portal): State<Arc<Portal>>, ClientAddr(from): ClientAddr, posted: HelpdeskForm<String, CsrfOnly>) -> Response {
    let HelpdeskForm { helpdesk: Helpdesk { visit, member }, path: name, .. } = posted;
    let (visit, account) = match change_target(&portal, visit, &member, &name).await {
        Ok(target) => target,
        Err(refused) => return refused,
    };
    let now = visit.arrival.unix;
    match portal.auth.unlock_user(&actor(&member, from), &account, now).await {
        Ok(true) => done(&portal, visit, &account, Notice::Unlocked).await,
        Ok(false) => done(&portal, visit, &account, Notice::NothingToUnlock).await,
        Err(e) => failed(&portal, visit, e).await,
    }
}

/// What every change begins with: the member within their limit, and the account the path
/// names; else the page that says why not.
async fn change_target(portal: &Portal, visit: Visit, member: &str, name: &str) -> Result<(Visit, String), Response> {
    if !change_allowed(portal, member, &visit) {
        return Err(too_many_changes(portal, visit, name).await);
    }
    match portal.auth.lookup(name).await {
        Ok(account) => Ok((visit, account.id)),
        Err(e) => Err(failed(portal, visit, e).await),
    }
}

/// A token id from the path; anything else names no token.
fn token_id(text: &str) -> Option<i64> {
    text.parse().ok()
}

pub async fn remove_token_page(
    State(portal): State<Arc<Portal>>,
    helpdesk: Helpdesk,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    let visit = helpdesk.visit;
    let Some(id) = token_id(&id) else {
        return message(&portal, visit, StatusCode::NOT_FOUND, |s| s.no_such_page, &user_path(&name)).await;
    };
    let view = match portal.auth.user_view(&name, &[], visit.arrival.unix).await {
        Ok(view) => view,
        Err(e) => return failed(&portal, visit, e).await,
    };
    let account = view.account.id;
    match view.tokens.into_iter().find(|t| t.id == id) {
        Some(token) => confirm(&portal, visit, account, remove_words, &format!("/tokens/{id}/remove"), Some(token.name)).await,
        None => done(&portal, visit, &account, Notice::NoSuchToken).await,
    }
}

pub async fn remove_token(
    State(portal): State<Arc<Portal>>,
    ClientAddr(from): ClientAddr,
    posted: HelpdeskForm<(String, String), CsrfOnly>,
) -> Response {
    let HelpdeskForm { helpdesk: Helpdesk { visit, member }, path: (name, id), .. } = posted;
    let (visit, account) = match change_target(&portal, visit, &member, &name).await {
        Ok(target) => target,
        Err(refused) => return refused,
    };
    let now = visit.arrival.unix;
    let Some(id) = token_id(&id) else { return done(&portal, visit, &account, Notice::NoSuchToken).await };
    match portal.auth.remove_user_token(&actor(&member, from), &account, id, now).await {
        Ok(true) => done(&portal, visit, &account, Notice::Removed).await,
        Ok(false) => done(&portal, visit, &account, Notice::NoSuchToken).await,
        Err(e) => failed(&portal, visit, e).await,
    }
}

pub async fn revoke_page(State(portal): State<Arc<Portal>>, helpdesk: Helpdesk, Path(name): Path<String>) -> Response {
    match portal.auth.lookup(&name).await {
        Ok(account) => confirm(&portal, helpdesk.visit, account.id, revoke_words, "/temporary-code/revoke", None).await,
        Err(e) => failed(&portal, helpdesk.visit, e).await,
    }
}

pub async fn revoke(State(portal): State<Arc<Portal>>, ClientAddr(from): ClientAddr, posted: HelpdeskForm<String, CsrfOnly>) -> Response {
    let HelpdeskForm { helpdesk: Helpdesk { visit, member }, path: name, .. } = posted;
    let (visit, account) = match change_target(&portal, visit, &member, &name).await {
        Ok(target) => target,
        Err(refused) => return refused,
    };
    let now = visit.arrival.unix;
    match portal.auth.revoke_temporary_codes(&actor(&member, from), &account, now).await {
        Ok(0) => done(&portal, visit, &account, Notice::NoneToRevoke).await,
        Ok(_) => done(&portal, visit, &account, Notice::Revoked).await,
        Err(e) => failed(&portal, visit, e).await,
    }
}

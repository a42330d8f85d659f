//! TOKENS: the signed-in user's authenticator apps — the list, adding one (name it, scan its
//! QR code, confirm a code from it) and removing one.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use serde::Deserialize;

use super::Portal;
use super::client_addr::ClientAddr;
use super::extract::{CsrfForm, Posted, Refusal, SignedIn, Visit};
use super::pages::{EnrollConfirmPage, EnrollNamePage, EnrollScanPage, RemovePage, Tab, TokenRow, TokensPage, date, render};
use super::session::{Notice, Stage};
use super::signin::{CodeForm, CsrfOnly};
use crate::auth::Reason;
use crate::auth::portal::Enrollment;

const TOKENS: Option<Tab> = Some(Tab::Tokens);

pub async fn tokens(State(portal): State<Arc<Portal>>, signed_in: SignedIn) -> Response {
    let SignedIn { visit, user, .. } = signed_in;
    let never = visit.s().never;
    let rows = match portal.auth.portal_tokens(&user).await {
        Ok(tokens) => tokens
            .into_iter()
            .map(|t| TokenRow { id: t.id, name: t.name, created: date(Some(t.created_at), never), last_used: date(t.last_used_at, never) })
            .collect(),
        Err(_) => return visit.respond(StatusCode::SERVICE_UNAVAILABLE),
    };
    let page = visit.page(&portal, TOKENS, None).await;
    visit.respond(render(TokensPage { page, tokens: rows }))
}

pub async fn enroll_name_page(State(portal): State<Arc<Portal>>, signed_in: SignedIn) -> Response {
    let visit = signed_in.visit;
    let page = visit.page(&portal, TOKENS, None).await;
    visit.respond(render(EnrollNamePage { page }))
}

#[derive(Deserialize)]
pub struct NameForm {
    csrf: String,
    name: String,
}

impl CsrfForm for NameForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn enroll_name(State(portal): State<Arc<Portal>>, posted: Posted<NameForm>) -> Result<Response, Refusal> {
    let Posted { visit, form } = posted;
    let SignedIn { visit, user, .. } = visit.into_signed_in()?;
    let name: String = form.name.trim().chars().filter(|c| !c.is_control()).take(64).collect();
    if name.is_empty() {
        let page = visit.page(&portal, TOKENS, None).await;
        return Ok(visit.respond((StatusCode::BAD_REQUEST, render(EnrollNamePage { page }))));
    }
    let settings = &portal.settings;
    Ok(match portal.auth.portal_enroll(&user, &name, &settings.issuer, settings.max_tokens, visit.arrival.unix).await {
        Ok(new) => {
            // The new enrollment takes the stored session's place, under its lock: whatever it
            // replaces — an unfinished one, or one another tab started at the same moment — is
            // given up (unless a code confirmed it meanwhile), and nothing is left unreferenced.
            let id = new.token_id;
            let swapped = visit
                .modify(&portal, |session| match &mut session.stage {
                    Stage::SignedIn { enrollment, .. } => Ok(enrollment.replace(new.clone())),
                    Stage::SecondFactor { .. } => Err(()),
                })
                .await;
            let given_up = match swapped {
                Some(Ok(replaced)) => replaced.map(|old| old.token_id),
                // Signed out meanwhile (or the store failed): the new one has no session to
                // finish in.
                _ => Some(id),
            };
            if let Some(old) = given_up {
                portal.auth.portal_abandon(&user, old).await;
            }
            visit.respond(Redirect::to("/tokens/new/scan"))
        }
        Err(Reason::TooManyTokens) => {
            let page = visit.page(&portal, TOKENS, Some(visit.s().too_many_tokens)).await;
            visit.respond((StatusCode::CONFLICT, render(EnrollNamePage { page })))
        }
        Err(_) => visit.respond(StatusCode::SERVICE_UNAVAILABLE),
    })
}

/// The token being added, if the visitor is signed in and adding one.
fn enrolling(visit: &Visit) -> Option<&Enrollment> {
    match visit.stage() {
        Some(Stage::SignedIn { enrollment, .. }) => enrollment.as_ref(),
        _ => None,
    }
}

pub async fn enroll_scan(State(portal): State<Arc<Portal>>, visit: Visit) -> Response {
    let Some(e) = enrolling(&visit) else { return visit.respond(Redirect::to("/tokens")) };
    let qr_svg = match qrcode::QrCode::new(e.uri.expose().as_bytes()) {
        Ok(qr) => qr.render::<qrcode::render::svg::Color>().min_dimensions(240, 240).quiet_zone(true).build(),
        Err(_) => return visit.respond(StatusCode::INTERNAL_SERVER_ERROR),
    };
    let secret = crate::otp::totp::base32(e.secret.expose());
    let secret_grouped =
        secret.expose().as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ");
    let page = visit.page(&portal, TOKENS, None).await;
    visit.respond(render(EnrollScanPage { page, qr_svg, secret_grouped }))
}

pub async fn enroll_confirm_page(State(portal): State<Arc<Portal>>, visit: Visit) -> Response {
    if enrolling(&visit).is_none() {
        return visit.respond(Redirect::to("/tokens"));
    }
    let page = visit.page(&portal, TOKENS, None).await;
    visit.respond(render(EnrollConfirmPage { page }))
}

pub async fn enroll_confirm(State(portal): State<Arc<Portal>>, ClientAddr(from): ClientAddr, posted: Posted<CodeForm>) -> Response {
    let Posted { visit, form } = posted;
    let (Some(Stage::SignedIn { user, .. }), Some(e)) = (visit.stage(), enrolling(&visit)) else {
        return visit.respond(Redirect::to("/tokens"));
    };
    let (user, e) = (user.clone(), e.clone());
    let (timeout, max_tokens) = (portal.settings.enrollment_timeout, portal.settings.max_tokens);
    let result = portal.auth.portal_confirm(&user, &e, &form.code, timeout, max_tokens, from, visit.arrival.unix).await;
    if matches!(result, Ok(()) | Err(Reason::StateExpired)) {
        let notice = result.is_ok().then_some(Notice::Enrolled);
        visit
            .modify(&portal, |session| {
                // Only this enrollment ends: one another tab started since stays to be finished.
                if let Stage::SignedIn { enrollment, .. } = &mut session.stage
                    && enrollment.as_ref().is_some_and(|current| current.token_id == e.token_id)
                {
                    *enrollment = None;
                }
                if notice.is_some() {
                    session.notice = notice;
                }
            })
            .await;
    }
    match result {
        Ok(()) => visit.respond(Redirect::to("/tokens")),
        Err(Reason::StateExpired) => {
            let page = visit.page(&portal, TOKENS, Some(visit.s().enrollment_expired)).await;
            visit.respond((StatusCode::GONE, render(EnrollNamePage { page })))
        }
        Err(_) => {
            let page = visit.page(&portal, TOKENS, Some(visit.s().wrong_code)).await;
            visit.respond((StatusCode::UNPROCESSABLE_ENTITY, render(EnrollConfirmPage { page })))
        }
    }
}

pub async fn remove_page(State(portal): State<Arc<Portal>>, Path(id): Path<i64>, signed_in: SignedIn) -> Response {
    let SignedIn { visit, user, .. } = signed_in;
    let Ok(tokens) = portal.auth.portal_tokens(&user).await else { return visit.respond(StatusCode::SERVICE_UNAVAILABLE) };
    let Some(token) = tokens.into_iter().find(|t| t.id == id) else { return visit.respond(Redirect::to("/tokens")) };
    let page = visit.page(&portal, TOKENS, None).await;
    visit.respond(render(RemovePage { page, id, name: token.name }))
}

pub async fn remove(
    State(portal): State<Arc<Portal>>,
    ClientAddr(from): ClientAddr,
    Path(id): Path<i64>,
    posted: Posted<CsrfOnly>,
) -> Result<Response, Refusal> {
    let SignedIn { visit, user, .. } = posted.visit.into_signed_in()?;
    if let Ok(true) = portal.auth.portal_remove(&user, id, from).await {
        visit.modify(&portal, |session| session.notice = Some(Notice::Removed)).await;
    }
    Ok(visit.respond(Redirect::to("/tokens")))
}

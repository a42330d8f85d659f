//! Signing in and out: the password form (rate limited per client and per name, every failure
//! answered at one time), the code from an app or an SMS, and signing out.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use serde::Deserialize;

use super::client_addr::ClientAddr;
use super::extract::{CsrfForm, CsrfKind, Posted, Visit};
use super::helpdesk;
use super::i18n::Strings;
use super::limiter::LimitKey;
use super::pages::{self, OtpPage, SigninPage, render};
use super::session::Stage;
use super::{LIMIT_WINDOW, Portal, listener};
use crate::auth::Reason;
use crate::auth::portal::{PortalUser, SmsChallenge};
use crate::store::StoreError;

#[derive(Deserialize)]
pub struct SignedOutQuery {
    /// Set by the redirect after signing out, for the "You are signed out" notice.
    signed_out: Option<String>,
}

pub async fn signin_page(State(portal): State<Arc<Portal>>, mut visit: Visit, Query(q): Query<SignedOutQuery>) -> Response {
    let notice = q.signed_out.is_some().then(|| visit.s().signed_out);
    let page = visit.signin_page(&portal, notice, None);
    visit.respond(render(SigninPage { page }))
}

#[derive(Deserialize)]
pub struct SigninForm {
    csrf: String,
    username: String,
    password: String,
}

impl CsrfForm for SigninForm {
    const KIND: CsrfKind = CsrfKind::Signin;
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn signin(State(portal): State<Arc<Portal>>, ClientAddr(from): ClientAddr, posted: Posted<SigninForm>) -> Response {
    let Posted { mut visit, form } = posted;
    let login = portal.auth.rate_key(&form.username);
    let error = if over_signin_limits(&portal, &login, from, &visit) {
        Some(visit.s().too_many_attempts)
    } else {
        // Run to its end even if the browser hangs up: a bind the directory made is counted.
        let (auth, now, SigninForm { username, password, .. }) = (Arc::clone(&portal.auth), visit.arrival.unix, form);
        let checked = tokio::spawn(async move { auth.portal_password(&username, password.as_bytes(), from, now).await }).await;
        match checked {
            Ok(Ok(user)) => return second_factor(&portal, visit, user, from).await,
            // The store down: "try again later" for every name, known or not (a 503 for known
            // names only would tell them apart), at the same time as any failure.
            Ok(Err(_)) | Err(_) if !portal.auth.store_available() => None,
            Ok(Err(Reason::StoreUnavailable)) => None,
            // A lock says the account exists: it gets the words of any other failure.
            Ok(Err(_)) | Err(_) => Some(visit.s().sign_in_failed),
        }
    };
    // Unknown name, wrong password, locked account: the answer leaves at one time after
    // arrival — held back by the listener, where the wait takes no request place.
    let not_before = tokio::time::Instant::from_std(visit.arrival.instant) + portal.settings.reject_delay;
    let Some(error) = error else {
        tracing::warn!("portal: the database cannot be used: sign-in answered 503");
        let lang = visit.lang;
        let mut response = visit.respond(pages::unavailable(&portal.settings.brand, lang));
        response.extensions_mut().insert(listener::NotBefore(not_before));
        return response;
    };
    let page = visit.signin_page(&portal, None, Some(error));
    let mut response = visit.respond((StatusCode::UNAUTHORIZED, render(SigninPage { page })));
    response.extensions_mut().insert(listener::NotBefore(not_before));
    response
}

/// Counts a sign-in against the client's and the name's limits; true when one is spent (then
/// audited once per window, so a client hammering past its limit does not fill the log).
fn over_signin_limits(portal: &Portal, login: &str, from: IpAddr, visit: &Visit) -> bool {
    let now = visit.arrival.instant;
    let by_address = LimitKey::signin_from(from);
    let by_name = LimitKey::SigninAs(login.to_owned());
    let limited = if !portal.address_limits.allow_at(&by_address, 20, LIMIT_WINDOW, now) {
        by_address
    } else if !portal.user_limits.allow_at(&by_name, 5, LIMIT_WINDOW, now) {
        by_name
    } else {
        return false;
    };
    if portal.limits_audited.allow_at(&limited, 1, LIMIT_WINDOW, now) {
        portal.auth.portal_rate_limited(login, from);
    }
    true
}

/// The password was right: on to a code from the user's app, or one sent by SMS now.
async fn second_factor(portal: &Portal, mut visit: Visit, user: PortalUser, from: IpAddr) -> Response {
    let PortalUser { account, profile, has_token } = user;
    let sms = if has_token {
        None
    } else if profile.mobile.is_some() {
        match portal.auth.portal_send_sms(&account, &profile, from, visit.arrival.unix).await {
            Ok(challenge) => Some(challenge),
            Err(Reason::SmsRateLimited) => return error_page(portal, visit, |s| s.too_many_attempts).await,
            Err(_) => return error_page(portal, visit, |s| s.sms_failed).await,
        }
    } else {
        // Neither an app nor a phone: never a way past the second factor.
        return error_page(portal, visit, |s| s.no_second_factor).await;
    };
    let sms_asked = sms.is_some();
    if let Err(e) = visit.start_session(portal, Stage::SecondFactor { user: account, profile, has_token, sms, sms_asked }).await {
        return unavailable(portal, visit, &e);
    }
    visit.respond(Redirect::to("/otp"))
}

/// The store could not keep or change a session: 503, and the reason in the log.
pub(super) fn unavailable(portal: &Portal, visit: Visit, e: &StoreError) -> Response {
    tracing::warn!(error = %e, "portal: a session could not be kept: answering 503");
    let lang = visit.lang;
    visit.respond(pages::unavailable(&portal.settings.brand, lang))
}

/// Back to the sign-in form with a message; a session in progress ends.
async fn error_page(portal: &Portal, mut visit: Visit, message: impl Fn(&Strings) -> &'static str) -> Response {
    if let Err(e) = visit.end_session(portal).await {
        return unavailable(portal, visit, &e);
    }
    let error = message(visit.s());
    let page = visit.signin_page(portal, None, Some(error));
    visit.respond(render(SigninPage { page }))
}

/// What the code page offers: where an SMS went, and whether one may be asked for instead.
fn otp_choices(stage: Option<&Stage>) -> Option<(Option<String>, bool)> {
    match stage {
        Some(Stage::SecondFactor { sms, has_token, profile, sms_asked, .. }) => {
            Some((sms.as_ref().map(|c| c.masked.clone()), *has_token && !sms_asked && profile.mobile.is_some()))
        }
        _ => None,
    }
}

pub async fn otp_page(State(portal): State<Arc<Portal>>, visit: Visit) -> Response {
    let Some((sms_to, offer_sms)) = otp_choices(visit.stage()) else { return visit.respond(Redirect::to("/")) };
    let page = visit.page(&portal, None, None).await;
    visit.respond(render(OtpPage { page, sms_to, offer_sms }))
}

#[derive(Deserialize)]
pub struct CodeForm {
    csrf: String,
    pub code: String,
}

impl CsrfForm for CodeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn otp(State(portal): State<Arc<Portal>>, ClientAddr(from): ClientAddr, posted: Posted<CodeForm>) -> Response {
    let Posted { mut visit, form } = posted;
    let Some(Stage::SecondFactor { user, profile, has_token, sms_asked, .. }) = visit.stage().cloned() else {
        return visit.respond(Redirect::to("/"));
    };
    if !portal.address_limits.allow_at(&LimitKey::code_from(from), 30, LIMIT_WINDOW, visit.arrival.instant) {
        return error_page(&portal, visit, |s| s.too_many_attempts).await;
    }
    let Some(mut sms) = spend_sms_try(&portal, &visit).await else { return visit.respond(Redirect::to("/")) };
    // Run to its end even if the browser hangs up: a wrong code is counted.
    let (auth, account, code, now) = (Arc::clone(&portal.auth), user.clone(), form.code, visit.arrival.unix);
    let checked = tokio::spawn(async move {
        let result = auth.portal_code(&account, &code, sms.as_mut(), from, now).await;
        (result, sms)
    });
    let Ok((result, sms)) = checked.await else { return visit.respond(StatusCode::INTERNAL_SERVER_ERROR) };
    match result {
        Ok(()) => match visit.sign_in(&portal, user.clone(), profile, helpdesk::role_at_sign_in(&portal, &user).await).await {
            Ok(true) => visit.respond(Redirect::to("/general")),
            Ok(false) => visit.respond(Redirect::to("/")),
            Err(e) => unavailable(&portal, visit, &e),
        },
        Err(Reason::SecondFactorLocked | Reason::StateExpired) => error_page(&portal, visit, |s| s.too_many_attempts).await,
        Err(_) if sms.as_ref().is_some_and(|c| c.tries_left == 0) => error_page(&portal, visit, |s| s.too_many_attempts).await,
        Err(_) => {
            let sms_to = sms.as_ref().map(|c| c.masked.clone());
            let offer_sms = has_token && !sms_asked && sms.is_none() && profile.mobile.is_some();
            let page = visit.page(&portal, None, Some(visit.s().wrong_code)).await;
            visit.respond((StatusCode::UNAUTHORIZED, render(OtpPage { page, sms_to, offer_sms })))
        }
    }
}

/// Spends one of the SMS code's tries in the stored session before the code is checked, so
/// parallel guesses with one cookie cannot share a try. Returns the challenge as it was (for
/// `portal_code`, which counts the try on its copy), `Some(None)` when no SMS was sent, and
/// `None` when the session is gone or past this stage.
async fn spend_sms_try(portal: &Portal, visit: &Visit) -> Option<Option<SmsChallenge>> {
    let spent = visit.modify(portal, |session| match &mut session.stage {
        Stage::SecondFactor { sms, .. } => {
            let before = sms.clone();
            if let Some(challenge) = sms {
                challenge.tries_left = challenge.tries_left.saturating_sub(1);
            }
            Some(before)
        }
        Stage::SignedIn { .. } => None,
    });
    spent.await.flatten()
}

/// A form that carries nothing but its CSRF token.
#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

impl CsrfForm for CsrfOnly {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn otp_sms(State(portal): State<Arc<Portal>>, ClientAddr(from): ClientAddr, posted: Posted<CsrfOnly>) -> Response {
    let visit = posted.visit;
    let Some(Stage::SecondFactor { user, profile, .. }) = visit.stage().cloned() else {
        return visit.respond(Redirect::to("/"));
    };
    // Claimed in the stored session before sending: of two clicks at once, one sends.
    let claimed = visit.modify(&portal, |session| match &mut session.stage {
        Stage::SecondFactor { sms_asked, .. } => !std::mem::replace(sms_asked, true),
        Stage::SignedIn { .. } => false,
    });
    if claimed.await != Some(true) {
        return visit.respond(Redirect::to("/otp"));
    }
    match portal.auth.portal_send_sms(&user, &profile, from, visit.arrival.unix).await {
        Ok(challenge) => {
            visit
                .modify(&portal, |session| {
                    if let Stage::SecondFactor { sms, .. } = &mut session.stage {
                        *sms = Some(challenge.clone());
                    }
                })
                .await;
            visit.respond(Redirect::to("/otp"))
        }
        Err(Reason::SmsRateLimited) => error_page(&portal, visit, |s| s.too_many_attempts).await,
        Err(_) => error_page(&portal, visit, |s| s.sms_failed).await,
    }
}

pub async fn signout(State(portal): State<Arc<Portal>>, posted: Posted<CsrfOnly>) -> Response {
    let mut visit = posted.visit;
    if let Err(e) = visit.end_session(&portal).await {
        return unavailable(&portal, visit, &e);
    }
    visit.respond(Redirect::to("/signin?signed_out=1"))
}

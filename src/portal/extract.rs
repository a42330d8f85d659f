//! What a portal handler is given before it runs (axum extractors, after kanidm's and axum's
//! `jwt` example): the request's arrival time, language, cookies and session (`Visit`), the
//! signed-in account (`SignedIn`), and a form whose CSRF token has been checked (`Posted`).
//! Refusals are responses of their own (`Refusal`): the sign-in redirect, the "form expired"
//! page, or axum's answer to a malformed query or form.
//!
//! A `Visit` holds a copy of the session as the request found it; changes go to the stored
//! session, on its version (`Visit::modify`, `sign_in`, `end_session`), and the cookies to set
//! leave with the handler's response (`Visit::jar`). A store that cannot be reached is a 503
//! page: never a session assumed, nor one assumed gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Form, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{CookieJar, SameSite};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::Portal;
use super::csrf::SigninCsrf;
use super::i18n::{Lang, Strings};
use super::pages::{self, Page, Tab};
use super::session::{self, Session, Stage};
use super::settings::CookieName;
use crate::directory::UserProfile;
use crate::store::{StoreError, UnixTime};

const LANG_COOKIE: &str = "lang";

/// When a request arrived, on both clocks: every decision about it uses these, not the clock
/// when the decision happens to be made.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// For rate limits and the reject delay (this node's own).
    pub instant: Instant,
    /// For `auth`, the store (session timeouts) and sign-in form lifetimes: what every node
    /// shares.
    pub unix: UnixTime,
}

impl Arrival {
    fn now() -> Self {
        Self { instant: Instant::now(), unix: crate::clock::now() }
    }
}

/// Middleware: stamps each request with its `Arrival`, once.
pub async fn stamp_arrival(mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(Arrival::now());
    next.run(request).await
}

#[derive(Deserialize, Default)]
struct LangQuery {
    lang: Option<String>,
}

/// A session as the request found it.
pub struct Held {
    pub id: String,
    pub session: Session,
}

/// One request as the handlers see it: when it came, in which language, the cookies to send
/// back (those changed since the request: a language chosen, a dead session id forgotten, ...),
/// and the session if the browser has a live one.
pub struct Visit {
    pub arrival: Arrival,
    pub lang: Lang,
    pub jar: CookieJar,
    pub held: Option<Held>,
}

impl FromRequestParts<Arc<Portal>> for Visit {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, portal: &Arc<Portal>) -> Result<Self, Refusal> {
        let arrival = parts.extensions.get::<Arrival>().copied().unwrap_or_else(Arrival::now);
        // Pages switch language by `?lang=`; forms post to addresses without one.
        let chosen = if parts.method == Method::GET || parts.method == Method::HEAD {
            let Query(query) = Query::<LangQuery>::try_from_uri(&parts.uri).map_err(|e| Refusal::Malformed(Box::new(e.into_response())))?;
            query.lang
        } else {
            None
        };
        let jar = CookieJar::from_headers(&parts.headers);
        Visit::open(portal, arrival, jar, &parts.headers, chosen.as_deref()).await
    }
}

impl Visit {
    async fn open(
        portal: &Portal,
        arrival: Arrival,
        mut jar: CookieJar,
        headers: &HeaderMap,
        chosen: Option<&str>,
    ) -> Result<Self, Refusal> {
        let settings = &portal.settings;
        let chosen = chosen.and_then(Lang::parse);
        if let Some(lang) = chosen {
            let year = Duration::from_secs(365 * 86_400);
            jar = jar.add(settings.cookie(LANG_COOKIE, lang.code().to_owned(), Some(year), SameSite::Lax));
        }
        let kept = jar.get(LANG_COOKIE).and_then(|c| Lang::parse(c.value()));
        let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).and_then(Lang::from_accept_language);
        let lang = chosen.or(kept).or(accept).unwrap_or(Lang::En);
        let name = settings.cookie_name(CookieName::Session);
        let id = jar.get(name).map(|c| c.value().to_owned());
        let held = match id {
            Some(id) => match portal.sessions.get(&id, arrival.unix).await {
                Ok(Some(session)) => Some(Held { id, session }),
                Ok(None) => {
                    // Timed out or signed out elsewhere: the browser may forget the id.
                    jar = jar.add(settings.removal(name));
                    None
                }
                Err(e) => return Err(Refusal::Unavailable(Arc::clone(&settings.brand), lang, e.to_string())),
            },
            None => None,
        };
        Ok(Self { arrival, lang, jar, held })
    }

    pub fn s(&self) -> &'static Strings {
        self.lang.strings()
    }

    pub fn stage(&self) -> Option<&Stage> {
        self.held.as_ref().map(|h| &h.session.stage)
    }

    /// This response with the cookies the request changed.
    pub fn respond(self, response: impl IntoResponse) -> Response {
        (self.jar, response).into_response()
    }

    /// Applies `change` to the stored session (not to this request's copy; see
    /// [`session::Sessions::modify`]); `None` when there is none, it went meanwhile, or the
    /// store could not be reached (then whatever the change was for does not happen).
    pub async fn modify<R>(&self, portal: &Portal, change: impl FnMut(&mut Session) -> R) -> Option<R> {
        let held = self.held.as_ref()?;
        portal.sessions.modify(&held.id, self.arrival.unix, change).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "portal: a session could not be changed");
            None
        })
    }

    /// What the layout of a page needs; a one-time notice is taken out of the stored session.
    pub async fn page(&self, portal: &Portal, tab: Option<Tab>, error: Option<&'static str>) -> Page {
        let (csrf, signed_in, notice) = match &self.held {
            Some(held) => (held.session.csrf.clone(), matches!(held.session.stage, Stage::SignedIn { .. }), held.session.notice),
            None => (String::new(), false, None),
        };
        let helpdesk_tab = matches!(self.stage(), Some(Stage::SignedIn { helpdesk: true, .. }));
        // Taken only when there is one: a page view is a read, not a write.
        let notice = match notice {
            Some(_) => self.modify(portal, |session| session.notice.take()).await.flatten(),
            None => None,
        };
        let mut page = Page::new(&portal.settings.brand, self.lang, csrf, signed_in, tab, notice.map(|n| n.text(self.s())), error);
        page.helpdesk_tab = helpdesk_tab;
        page
    }

    /// The sign-in form's page: a token for the browser's CSRF nonce cookie (set anew, so it
    /// lives as long as the newest form; made when missing). Nothing is stored server-side.
    pub fn signin_page(&mut self, portal: &Portal, notice: Option<&'static str>, error: Option<&'static str>) -> Page {
        let settings = &portal.settings;
        let name = settings.cookie_name(CookieName::SigninCsrf);
        let nonce = match self.jar.get(name) {
            Some(c) if SigninCsrf::is_nonce(c.value()) => c.value().to_owned(),
            _ => session::random_token(),
        };
        let lifetime = Some(portal.signin_csrf.lifetime());
        self.add_cookie(settings.cookie(name, nonce.clone(), lifetime, SameSite::Strict));
        let csrf = portal.signin_csrf.token(&nonce, self.arrival.unix);
        Page::new(&settings.brand, self.lang, csrf, false, None, notice, error)
    }

    fn add_cookie(&mut self, cookie: axum_extra::extract::cookie::Cookie<'static>) {
        self.jar = std::mem::take(&mut self.jar).add(cookie);
    }

    fn signin_csrf_ok(&self, portal: &Portal, token: &str) -> bool {
        let nonce = self.jar.get(portal.settings.cookie_name(CookieName::SigninCsrf));
        nonce.is_some_and(|nonce| portal.signin_csrf.verify(nonce.value(), token, self.arrival.unix))
    }

    pub(super) fn csrf_ok(&self, token: &str) -> bool {
        self.held.as_ref().is_some_and(|h| bool::from(h.session.csrf.as_bytes().ct_eq(token.as_bytes())))
    }

    fn set_session_cookie(&mut self, portal: &Portal, id: &str) {
        let settings = &portal.settings;
        self.add_cookie(settings.cookie(settings.cookie_name(CookieName::Session), id.to_owned(), None, SameSite::Strict));
    }

    /// The password was accepted: the first server-side state for this visitor, under a new id
    /// (a session the browser had before is ended). The sign-in form's nonce is done with.
    pub async fn start_session(&mut self, portal: &Portal, stage: Stage) -> Result<(), StoreError> {
        self.end_session(portal).await?;
        let session = Session::new(stage);
        let id = portal.sessions.create(&session, self.arrival.unix).await?;
        self.set_session_cookie(portal, &id);
        self.add_cookie(portal.settings.removal(portal.settings.cookie_name(CookieName::SigninCsrf)));
        self.held = Some(Held { id, session });
        Ok(())
    }

    /// Both factors passed: a new session id (an id planted before sign-in is worthless after)
    /// and CSRF token; `helpdesk` is whether the directory says the user is in a helpdesk group.
    /// False when the session went meanwhile (signed out, or a concurrent request signed in
    /// with it first).
    pub async fn sign_in(&mut self, portal: &Portal, user: String, profile: UserProfile, helpdesk: bool) -> Result<bool, StoreError> {
        let Some(held) = self.held.take() else { return Ok(false) };
        let rotated =
            portal.sessions.rotate(&held.id, self.arrival.unix, |session| session.sign_in(user.clone(), profile.clone(), helpdesk)).await?;
        let Some(id) = rotated else { return Ok(false) };
        self.set_session_cookie(portal, &id);
        Ok(true)
    }

    /// Ends the browser's session, in the store and in its cookie. A store that cannot be
    /// reached leaves the cookie as it is (the session is not known to be gone).
    pub async fn end_session(&mut self, portal: &Portal) -> Result<(), StoreError> {
        if let Some(held) = &self.held {
            portal.sessions.remove(&held.id).await?;
            self.held = None;
            self.add_cookie(portal.settings.removal(portal.settings.cookie_name(CookieName::Session)));
        }
        Ok(())
    }

    /// The signed-in account, or the refusal that sends the browser to sign in.
    pub fn into_signed_in(self) -> Result<SignedIn, Refusal> {
        let Some(Stage::SignedIn { user, profile, .. }) = self.stage().cloned() else {
            return Err(Refusal::NotSignedIn(self.jar));
        };
        Ok(SignedIn { visit: self, user, profile })
    }
}

/// A request from a signed-in user; otherwise the browser is sent to sign in.
pub struct SignedIn {
    pub visit: Visit,
    pub user: String,
    pub profile: UserProfile,
}

impl FromRequestParts<Arc<Portal>> for SignedIn {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, portal: &Arc<Portal>) -> Result<Self, Refusal> {
        Visit::from_request_parts(parts, portal).await?.into_signed_in()
    }
}

/// Which CSRF token a form carries.
pub enum CsrfKind {
    /// The session's (every form once a password has been accepted).
    Session,
    /// The sign-in form's signed double submit (`csrf`), before there is a session.
    Signin,
}

/// A form with a CSRF token.
pub trait CsrfForm: DeserializeOwned {
    const KIND: CsrfKind = CsrfKind::Session;
    fn csrf(&self) -> &str;
}

/// A posted form whose CSRF token is right; otherwise the "form expired" page (403).
pub struct Posted<T> {
    pub visit: Visit,
    pub form: T,
}

impl<T: CsrfForm + Send> FromRequest<Arc<Portal>> for Posted<T> {
    type Rejection = Refusal;

    async fn from_request(request: Request, portal: &Arc<Portal>) -> Result<Self, Refusal> {
        let (mut parts, body) = request.into_parts();
        let visit = Visit::from_request_parts(&mut parts, portal).await?;
        let Form(form) = Form::<T>::from_request(Request::from_parts(parts, body), portal)
            .await
            .map_err(|e| Refusal::Malformed(Box::new(e.into_response())))?;
        let genuine = match T::KIND {
            CsrfKind::Session => visit.csrf_ok(form.csrf()),
            CsrfKind::Signin => visit.signin_csrf_ok(portal, form.csrf()),
        };
        if !genuine {
            return Err(Refusal::FormExpired(Box::new(pages::form_expired(portal, visit).await)));
        }
        Ok(Self { visit, form })
    }
}

/// Why a handler did not run, as the browser is told.
pub enum Refusal {
    /// Not signed in: to the sign-in page (with the cookies the request changed).
    NotSignedIn(CookieJar),
    /// A form without its CSRF token: the "form expired" page.
    FormExpired(Box<Response>),
    /// axum's answer to a query or form it could not read.
    Malformed(Box<Response>),
    /// A page of its own: 403 for a helpdesk URL to anyone not in a helpdesk group, 503 when
    /// the directory cannot say.
    Page(Box<Response>),
    /// The store could not be reached to read the session (why, for the log): 503.
    Unavailable(Arc<super::brand::Brand>, Lang, String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::NotSignedIn(jar) => (jar, Redirect::to("/signin")).into_response(),
            Self::FormExpired(response) | Self::Malformed(response) | Self::Page(response) => *response,
            Self::Unavailable(brand, lang, why) => {
                tracing::warn!(error = why.as_str(), "portal: sessions cannot be read: answering 503");
                pages::unavailable(&brand, lang)
            }
        }
    }
}

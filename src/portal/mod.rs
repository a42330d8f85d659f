//! The self-service portal: users sign in with their directory password and a code (from an
//! enrolled app, or by SMS), see their profile, and add or remove authenticator apps by QR code —
//! the flow of the product radmfa replaces. axum + askama, plain HTML forms, no JavaScript.
//!
//! An edge like `server`: every decision goes through `auth`'s portal functions, with the same
//! directory, store, lockout and SMS limits as RADIUS. Nothing is stored for a visitor until a
//! password is accepted: the sign-in form carries a signed double-submit CSRF token (`csrf`)
//! and the language choice is a cookie. From then on the session is server-side (`session`)
//! and every form carries its CSRF token. Responses carry a strict CSP (and HSTS under https);
//! `listener` serves it with timeouts and connection caps.

mod client_addr;
mod csrf;
pub mod i18n;
mod limiter;
mod listener;
pub mod session;
pub mod settings;

use std::sync::Arc;
use std::time::{Duration, Instant};

use askama::Template;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::{CookieJar, SameSite};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tower_http::timeout::TimeoutLayer;

use crate::auth::{Authenticator, Reason};
use client_addr::ClientAddr;
use csrf::SigninCsrf;
use i18n::{Lang, Strings};
use limiter::RateLimiter;
use session::{Session, Sessions, Stage};

pub use listener::serve;
use settings::CookieName;
pub use settings::{PortalSection, PortalSettings, TlsFiles};

const LANG_COOKIE: &str = "lang";
/// Sign-in forms (and their cookie) stay valid this long.
const SIGNIN_FORM_LIFETIME: Duration = Duration::from_secs(3600);
/// Keys each rate limiter remembers (see `limiter` for what happens beyond).
const LIMITER_KEYS: usize = 50_000;
/// The largest form body: the portal's forms hold a few short fields.
const MAX_FORM_BYTES: usize = 16 * 1024;
const LIMIT_WINDOW: Duration = Duration::from_secs(300);

pub struct Portal {
    auth: Arc<Authenticator>,
    settings: PortalSettings,
    sessions: Sessions,
    signin_csrf: SigninCsrf,
    /// Per client address, and per typed user name: separate, so churn in one cannot push out
    /// the other's keys.
    address_limits: RateLimiter,
    user_limits: RateLimiter,
    /// One audit line per limited address or name and window: a client hammering past its limit
    /// must not fill the log as well.
    limits_audited: RateLimiter,
}

impl Portal {
    pub fn new(auth: Arc<Authenticator>, settings: PortalSettings) -> Arc<Self> {
        Arc::new(Self {
            sessions: Sessions::new(settings.max_sessions, settings.session_idle, settings.session_max),
            signin_csrf: SigninCsrf::new(SIGNIN_FORM_LIFETIME),
            auth,
            settings,
            address_limits: RateLimiter::new(LIMITER_KEYS),
            user_limits: RateLimiter::new(LIMITER_KEYS),
            limits_audited: RateLimiter::new(LIMITER_KEYS),
        })
    }
}

pub fn router(portal: Arc<Portal>) -> Router {
    let hsts = portal.settings.https();
    let request_timeout = portal.settings.request_timeout;
    Router::new()
        .route("/", get(home))
        .route("/signin", get(signin_page).post(signin))
        .route("/otp", get(otp_page).post(otp))
        .route("/otp/sms", post(otp_sms))
        .route("/general", get(general))
        .route("/tokens", get(tokens))
        .route("/tokens/new", get(enroll_name_page).post(enroll_name))
        .route("/tokens/new/scan", get(enroll_scan))
        .route("/tokens/new/confirm", get(enroll_confirm_page).post(enroll_confirm))
        .route("/tokens/{id}/remove", get(remove_page).post(remove))
        .route("/signout", post(signout))
        .route("/static/style.css", get(stylesheet))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout))
        .layer(axum::middleware::map_response_with_state(hsts, security_headers))
        .with_state(portal)
}

async fn security_headers(State(hsts): State<bool>, mut response: Response) -> Response {
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "no-referrer");
    set(h, "cache-control", "no-store");
    set(h, "cross-origin-opener-policy", "same-origin");
    if hsts {
        // Browsers heed it only over https, which public_url says users reach us by (directly,
        // or through the TLS proxy in front).
        set(h, "strict-transport-security", "max-age=31536000");
    }
    response
}

async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("style.css"))
}

/// A stored session and its id, as one request sees it.
struct OpenSession {
    id: String,
    session: Session,
}

/// One request's session (if the visitor has one), language and cookie jar; `finish` writes
/// back what the request changed and sets the cookies.
struct Ctx {
    open: Option<OpenSession>,
    /// The request changed its copy of the session, to be written back.
    dirty: bool,
    lang: Lang,
    jar: CookieJar,
}

#[derive(Deserialize, Default)]
struct LangQuery {
    lang: Option<String>,
}

impl Ctx {
    fn open(portal: &Portal, mut jar: CookieJar, headers: &HeaderMap, chosen: Option<&str>) -> Self {
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
        let open = id.as_deref().and_then(|id| Some(OpenSession { id: id.to_owned(), session: portal.sessions.get(id, Instant::now())? }));
        if id.is_some() && open.is_none() {
            // Timed out or signed out elsewhere: the browser may forget the id.
            jar = jar.add(settings.removal(name));
        }
        Self { open, dirty: false, lang, jar }
    }

    fn s(&self) -> &'static Strings {
        self.lang.strings()
    }

    fn stage(&self) -> Option<&Stage> {
        self.open.as_ref().map(|o| &o.session.stage)
    }

    /// The session, to change (written back by `finish`).
    fn session_mut(&mut self) -> Option<&mut Session> {
        self.dirty = true;
        self.open.as_mut().map(|o| &mut o.session)
    }

    fn page(&mut self, tab: &'static str, error: Option<&'static str>) -> Page {
        let (csrf, signed_in, notice) = match &mut self.open {
            Some(open) => {
                let notice = open.session.notice.take();
                self.dirty |= notice.is_some();
                (open.session.csrf.clone(), matches!(open.session.stage, Stage::SignedIn { .. }), notice)
            }
            None => (String::new(), false, None),
        };
        Page { s: self.s(), lang: self.lang.code(), other_lang: self.other_lang(), csrf, signed_in, tab, notice, error }
    }

    fn other_lang(&self) -> &'static str {
        if self.lang == Lang::En { "sv" } else { "en" }
    }

    /// The sign-in form's page: a token for the browser's CSRF nonce cookie (set anew, so it
    /// lives as long as the newest form; made when missing). Nothing is stored server-side.
    fn signin_page(&mut self, portal: &Portal, notice: Option<&'static str>, error: Option<&'static str>) -> Page {
        let settings = &portal.settings;
        let name = settings.cookie_name(CookieName::SigninCsrf);
        let nonce = match self.jar.get(name) {
            Some(c) if SigninCsrf::is_nonce(c.value()) => c.value().to_owned(),
            _ => session::random_token(),
        };
        let lifetime = Some(portal.signin_csrf.lifetime());
        self.jar = std::mem::take(&mut self.jar).add(settings.cookie(name, nonce.clone(), lifetime, SameSite::Strict));
        let csrf = portal.signin_csrf.token(&nonce, Instant::now());
        let (s, lang, other_lang) = (self.s(), self.lang.code(), self.other_lang());
        Page { s, lang, other_lang, csrf, signed_in: false, tab: "", notice, error }
    }

    fn signin_csrf_ok(&self, portal: &Portal, token: &str) -> bool {
        let nonce = self.jar.get(portal.settings.cookie_name(CookieName::SigninCsrf));
        nonce.is_some_and(|nonce| portal.signin_csrf.verify(nonce.value(), token, Instant::now()))
    }

    fn csrf_ok(&self, token: &str) -> bool {
        self.open.as_ref().is_some_and(|o| bool::from(o.session.csrf.as_bytes().ct_eq(token.as_bytes())))
    }

    fn set_session_cookie(&mut self, portal: &Portal, id: &str) {
        let settings = &portal.settings;
        let cookie = settings.cookie(settings.cookie_name(CookieName::Session), id.to_owned(), None, SameSite::Strict);
        self.jar = std::mem::take(&mut self.jar).add(cookie);
    }

    /// The password was accepted: the first server-side state for this visitor, under a new id
    /// (a session the browser had before is ended). The sign-in form's nonce is done with.
    fn start_session(&mut self, portal: &Portal, stage: Stage) {
        self.end_session(portal);
        let now = Instant::now();
        let session = Session::new(stage, now);
        let id = portal.sessions.create(session.clone(), now);
        self.set_session_cookie(portal, &id);
        let nonce = portal.settings.removal(portal.settings.cookie_name(CookieName::SigninCsrf));
        self.jar = std::mem::take(&mut self.jar).add(nonce);
        self.open = Some(OpenSession { id, session });
    }

    /// Both factors passed: a new session id (an id planted before sign-in is worthless after)
    /// and CSRF token. False when the session went meanwhile (signed out, or a concurrent
    /// request signed in with it first).
    fn sign_in(&mut self, portal: &Portal, user: String, profile: crate::directory::UserProfile) -> bool {
        let Some(open) = self.open.as_mut() else { return false };
        let now = Instant::now();
        open.session.sign_in(user, profile, now);
        let Some(id) = portal.sessions.rotate(&open.id, open.session.clone(), now) else {
            self.open = None;
            return false;
        };
        open.id.clone_from(&id);
        self.dirty = false;
        self.set_session_cookie(portal, &id);
        true
    }

    fn end_session(&mut self, portal: &Portal) {
        if let Some(open) = self.open.take() {
            portal.sessions.remove(&open.id);
            let removal = portal.settings.removal(portal.settings.cookie_name(CookieName::Session));
            self.jar = std::mem::take(&mut self.jar).add(removal);
        }
        self.dirty = false;
    }

    fn finish(self, portal: &Portal, response: impl IntoResponse) -> Response {
        if let (true, Some(open)) = (self.dirty, self.open) {
            portal.sessions.update(&open.id, open.session);
        }
        (self.jar, response).into_response()
    }

    fn signed_in(&self) -> Option<&str> {
        match self.stage()? {
            Stage::SignedIn { user, .. } => Some(user),
            Stage::SecondFactor { .. } => None,
        }
    }
}

/// What every page's layout needs.
struct Page {
    s: &'static Strings,
    lang: &'static str,
    other_lang: &'static str,
    csrf: String,
    signed_in: bool,
    tab: &'static str,
    notice: Option<&'static str>,
    error: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SigninPage {
    page: Page,
}

#[derive(Template)]
#[template(path = "otp.html")]
struct OtpPage {
    page: Page,
    sms_to: Option<String>,
    offer_sms: bool,
}

#[derive(Template)]
#[template(path = "general.html")]
struct GeneralPage {
    page: Page,
    username: String,
    given_name: String,
    surname: String,
    email: String,
    mobile: String,
}

struct TokenRow {
    id: i64,
    name: String,
    created: String,
    last_used: String,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    page: Page,
    tokens: Vec<TokenRow>,
}

#[derive(Template)]
#[template(path = "enroll_name.html")]
struct EnrollNamePage {
    page: Page,
}

#[derive(Template)]
#[template(path = "enroll_scan.html")]
struct EnrollScanPage {
    page: Page,
    qr_svg: String,
    secret_grouped: String,
}

#[derive(Template)]
#[template(path = "enroll_confirm.html")]
struct EnrollConfirmPage {
    page: Page,
}

#[derive(Template)]
#[template(path = "remove.html")]
struct RemovePage {
    page: Page,
    id: i64,
    name: String,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    page: Page,
}

fn render(t: impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "portal template failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

type Ctx0 = (State<Arc<Portal>>, CookieJar, HeaderMap);

fn forbidden(portal: &Portal, mut ctx: Ctx) -> Response {
    let error = ctx.s().form_expired;
    let page = ctx.page("", Some(error));
    let body = (StatusCode::FORBIDDEN, render(MessagePage { page }));
    ctx.finish(portal, body)
}

fn date(t: Option<i64>, never: &str) -> String {
    let Some(t) = t else { return never.to_owned() };
    let days = t.div_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), so no date crate is needed.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let secs = t.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", secs / 3600, (secs % 3600) / 60)
}

async fn home((State(portal), jar, headers): Ctx0, Query(q): Query<LangQuery>) -> Response {
    let ctx = Ctx::open(&portal, jar, &headers, q.lang.as_deref());
    let to = match ctx.stage() {
        Some(Stage::SignedIn { .. }) => "/general",
        Some(Stage::SecondFactor { .. }) => "/otp",
        None => "/signin",
    };
    ctx.finish(&portal, Redirect::to(to))
}

#[derive(Deserialize, Default)]
struct SigninQuery {
    lang: Option<String>,
    /// Set by the redirect after signing out, for the "You are signed out" notice.
    signed_out: Option<String>,
}

async fn signin_page((State(portal), jar, headers): Ctx0, Query(q): Query<SigninQuery>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, q.lang.as_deref());
    let notice = q.signed_out.is_some().then(|| ctx.s().signed_out);
    let page = ctx.signin_page(&portal, notice, None);
    ctx.finish(&portal, render(SigninPage { page }))
}

#[derive(Deserialize)]
struct SigninForm {
    csrf: String,
    username: String,
    password: String,
}

async fn signin((State(portal), jar, headers): Ctx0, ClientAddr(from): ClientAddr, Form(form): Form<SigninForm>) -> Response {
    let arrived = tokio::time::Instant::now();
    let mut ctx = Ctx::open(&portal, jar, &headers, None);
    if !ctx.signin_csrf_ok(&portal, &form.csrf) {
        return forbidden(&portal, ctx);
    }
    let login = portal.auth.rate_key(&form.username);
    let by_address = format!("signin:{}", ip_key(from));
    let by_name = format!("signin:{login}");
    let limited = if !portal.address_limits.allow(&by_address, 20, LIMIT_WINDOW) {
        Some(by_address)
    } else if !portal.user_limits.allow(&by_name, 5, LIMIT_WINDOW) {
        Some(by_name)
    } else {
        None
    };
    let error = if let Some(limit) = limited {
        if portal.limits_audited.allow(&limit, 1, LIMIT_WINDOW) {
            portal.auth.portal_rate_limited(&login, from);
        }
        ctx.s().too_many_attempts
    } else {
        // Run to its end even if the browser hangs up: a bind the directory made is counted.
        let (auth, SigninForm { username, password, .. }) = (Arc::clone(&portal.auth), form);
        let checked = tokio::spawn(async move { auth.portal_password(&username, password.as_bytes(), from).await }).await;
        match checked {
            Ok(Ok(user)) => return second_factor(&portal, ctx, user, from).await,
            // A lock says the account exists: it gets the words of any other failure.
            Ok(Err(_)) | Err(_) => ctx.s().sign_in_failed,
        }
    };
    let page = ctx.signin_page(&portal, None, Some(error));
    // Unknown name, wrong password, locked account: the answer leaves at one time after
    // arrival — held back by the listener, where the wait takes no request place.
    let mut response = ctx.finish(&portal, (StatusCode::UNAUTHORIZED, render(SigninPage { page })));
    response.extensions_mut().insert(listener::NotBefore(arrived + portal.settings.reject_delay));
    response
}

/// The password was right: on to a code from the user's app, or one sent by SMS now.
async fn second_factor(portal: &Portal, mut ctx: Ctx, user: crate::auth::portal::PortalUser, from: std::net::IpAddr) -> Response {
    let crate::auth::portal::PortalUser { account, profile, has_token } = user;
    let sms = if has_token {
        None
    } else if profile.mobile.is_some() {
        match portal.auth.portal_send_sms(&account, &profile, from).await {
            Ok(challenge) => Some(challenge),
            Err(Reason::SmsRateLimited) => return error_page(portal, ctx, |s| s.too_many_attempts),
            Err(_) => return error_page(portal, ctx, |s| s.sms_failed),
        }
    } else {
        // Neither an app nor a phone: never a way past the second factor.
        return error_page(portal, ctx, |s| s.no_second_factor);
    };
    ctx.start_session(portal, Stage::SecondFactor { user: account, profile, has_token, sms });
    ctx.finish(portal, Redirect::to("/otp"))
}

/// Back to the sign-in form with a message; a session in progress ends.
fn error_page(portal: &Portal, mut ctx: Ctx, message: impl Fn(&Strings) -> &'static str) -> Response {
    ctx.end_session(portal);
    let error = message(ctx.s());
    let page = ctx.signin_page(portal, None, Some(error));
    ctx.finish(portal, render(SigninPage { page }))
}

/// Rate-limit key for an address: IPv6 by /64, since one host holds a whole /64.
fn ip_key(ip: std::net::IpAddr) -> String {
    match client_addr::host_key(ip) {
        std::net::IpAddr::V6(net) => format!("{net}/64"),
        v4 => v4.to_string(),
    }
}

async fn otp_page((State(portal), jar, headers): Ctx0, Query(q): Query<LangQuery>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, q.lang.as_deref());
    let (sms_to, offer_sms) = match ctx.stage() {
        Some(Stage::SecondFactor { sms, has_token, profile, .. }) => {
            (sms.as_ref().map(|c| c.masked.clone()), *has_token && sms.is_none() && profile.mobile.is_some())
        }
        _ => return ctx.finish(&portal, Redirect::to("/")),
    };
    let page = ctx.page("", None);
    ctx.finish(&portal, render(OtpPage { page, sms_to, offer_sms }))
}

#[derive(Deserialize)]
struct CodeForm {
    csrf: String,
    code: String,
}

async fn otp((State(portal), jar, headers): Ctx0, ClientAddr(from): ClientAddr, Form(form): Form<CodeForm>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, None);
    if !ctx.csrf_ok(&form.csrf) {
        return forbidden(&portal, ctx);
    }
    let Some(Stage::SecondFactor { user, profile, has_token, .. }) = ctx.stage().cloned() else {
        return ctx.finish(&portal, Redirect::to("/"));
    };
    if !portal.address_limits.allow(&format!("otp:{}", ip_key(from)), 30, LIMIT_WINDOW) {
        return error_page(&portal, ctx, |s| s.too_many_attempts);
    }
    let Some(mut sms) = spend_sms_try(&portal, &ctx) else { return ctx.finish(&portal, Redirect::to("/")) };
    // Run to its end even if the browser hangs up: a wrong code is counted.
    let (auth, account, code) = (Arc::clone(&portal.auth), user.clone(), form.code);
    let checked = tokio::spawn(async move {
        let result = auth.portal_code(&account, &code, sms.as_mut(), from).await;
        (result, sms)
    });
    let Ok((result, sms)) = checked.await else { return ctx.finish(&portal, StatusCode::INTERNAL_SERVER_ERROR) };
    match result {
        Ok(()) => {
            let to = if ctx.sign_in(&portal, user, profile) { "/general" } else { "/" };
            ctx.finish(&portal, Redirect::to(to))
        }
        Err(Reason::SecondFactorLocked | Reason::StateExpired) => error_page(&portal, ctx, |s| s.too_many_attempts),
        Err(_) if sms.as_ref().is_some_and(|c| c.tries_left == 0) => error_page(&portal, ctx, |s| s.too_many_attempts),
        Err(_) => {
            let sms_to = sms.as_ref().map(|c| c.masked.clone());
            let offer_sms = has_token && sms.is_none() && profile.mobile.is_some();
            let error = ctx.s().wrong_code;
            let page = ctx.page("", Some(error));
            ctx.finish(&portal, (StatusCode::UNAUTHORIZED, render(OtpPage { page, sms_to, offer_sms })))
        }
    }
}

/// Spends one of the SMS code's tries in the stored session before the code is checked, so
/// parallel guesses with one cookie cannot share a try. Returns the challenge as it was (for
/// `portal_code`, which counts the try on its copy), `Some(None)` when no SMS was sent, and
/// `None` when the session is gone or past this stage.
fn spend_sms_try(portal: &Portal, ctx: &Ctx) -> Option<Option<crate::auth::portal::SmsChallenge>> {
    let open = ctx.open.as_ref()?;
    let spent = portal.sessions.modify(&open.id, Instant::now(), |session| match &mut session.stage {
        Stage::SecondFactor { sms, .. } => {
            let before = sms.clone();
            if let Some(challenge) = sms {
                challenge.tries_left = challenge.tries_left.saturating_sub(1);
            }
            Some(before)
        }
        Stage::SignedIn { .. } => None,
    });
    spent.flatten()
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn otp_sms((State(portal), jar, headers): Ctx0, ClientAddr(from): ClientAddr, Form(form): Form<CsrfForm>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, None);
    if !ctx.csrf_ok(&form.csrf) {
        return forbidden(&portal, ctx);
    }
    let Some(Stage::SecondFactor { user, profile, has_token, .. }) = ctx.stage().cloned() else {
        return ctx.finish(&portal, Redirect::to("/"));
    };
    match portal.auth.portal_send_sms(&user, &profile, from).await {
        Ok(challenge) => {
            if let Some(session) = ctx.session_mut() {
                session.stage = Stage::SecondFactor { user, profile, has_token, sms: Some(challenge) };
            }
            ctx.finish(&portal, Redirect::to("/otp"))
        }
        Err(Reason::SmsRateLimited) => error_page(&portal, ctx, |s| s.too_many_attempts),
        Err(_) => error_page(&portal, ctx, |s| s.sms_failed),
    }
}

async fn general((State(portal), jar, headers): Ctx0, Query(q): Query<LangQuery>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, q.lang.as_deref());
    let Some(Stage::SignedIn { profile, .. }) = ctx.stage() else { return ctx.finish(&portal, Redirect::to("/signin")) };
    let p = profile.clone();
    let page = ctx.page("general", None);
    let body = GeneralPage {
        page,
        username: p.username,
        given_name: p.given_name.unwrap_or_default(),
        surname: p.surname.unwrap_or_default(),
        email: p.email.unwrap_or_default(),
        mobile: p.mobile.unwrap_or_default(),
    };
    ctx.finish(&portal, render(body))
}

async fn tokens((State(portal), jar, headers): Ctx0, Query(q): Query<LangQuery>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, q.lang.as_deref());
    let Some(user) = ctx.signed_in().map(str::to_owned) else { return ctx.finish(&portal, Redirect::to("/signin")) };
    let never = ctx.s().never;
    let rows = match portal.auth.portal_tokens(&user).await {
        Ok(tokens) => tokens
            .into_iter()
            .map(|t| TokenRow { id: t.id, name: t.name, created: date(Some(t.created_at), never), last_used: date(t.last_used_at, never) })
            .collect(),
        Err(_) => return ctx.finish(&portal, StatusCode::SERVICE_UNAVAILABLE),
    };
    let page = ctx.page("tokens", None);
    ctx.finish(&portal, render(TokensPage { page, tokens: rows }))
}

async fn enroll_name_page((State(portal), jar, headers): Ctx0, Query(q): Query<LangQuery>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, q.lang.as_deref());
    if ctx.signed_in().is_none() {
        return ctx.finish(&portal, Redirect::to("/signin"));
    }
    let page = ctx.page("tokens", None);
    ctx.finish(&portal, render(EnrollNamePage { page }))
}

#[derive(Deserialize)]
struct NameForm {
    csrf: String,
    name: String,
}

async fn enroll_name((State(portal), jar, headers): Ctx0, ClientAddr(from): ClientAddr, Form(form): Form<NameForm>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, None);
    if !ctx.csrf_ok(&form.csrf) {
        return forbidden(&portal, ctx);
    }
    let Some(user) = ctx.signed_in().map(str::to_owned) else { return ctx.finish(&portal, Redirect::to("/signin")) };
    let name: String = form.name.trim().chars().filter(|c| !c.is_control()).take(64).collect();
    if name.is_empty() {
        let page = ctx.page("tokens", None);
        return ctx.finish(&portal, (StatusCode::BAD_REQUEST, render(EnrollNamePage { page })));
    }
    // A previous unfinished enrollment is abandoned (its token was never usable).
    if let Some(Stage::SignedIn { enrollment: Some(old), .. }) = ctx.stage() {
        let _ = portal.auth.portal_remove(&user, old.token_id, from).await;
    }
    match portal.auth.portal_enroll(&user, &name, &portal.settings.issuer, portal.settings.max_tokens).await {
        Ok(new) => {
            if let Some(Session { stage: Stage::SignedIn { enrollment, .. }, .. }) = ctx.session_mut() {
                *enrollment = Some(new);
            }
            ctx.finish(&portal, Redirect::to("/tokens/new/scan"))
        }
        Err(Reason::TooManyTokens) => {
            let error = ctx.s().too_many_tokens;
            let page = ctx.page("tokens", Some(error));
            ctx.finish(&portal, (StatusCode::CONFLICT, render(EnrollNamePage { page })))
        }
        Err(_) => ctx.finish(&portal, StatusCode::SERVICE_UNAVAILABLE),
    }
}

async fn enroll_scan((State(portal), jar, headers): Ctx0, Query(q): Query<LangQuery>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, q.lang.as_deref());
    let Some(Stage::SignedIn { enrollment: Some(e), .. }) = ctx.stage() else { return ctx.finish(&portal, Redirect::to("/tokens")) };
    let qr_svg = match qrcode::QrCode::new(e.uri.expose().as_bytes()) {
        Ok(qr) => qr.render::<qrcode::render::svg::Color>().min_dimensions(240, 240).quiet_zone(true).build(),
        Err(_) => return ctx.finish(&portal, StatusCode::INTERNAL_SERVER_ERROR),
    };
    let secret = crate::otp::totp::base32(e.secret.expose());
    let secret_grouped =
        secret.expose().as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ");
    let page = ctx.page("tokens", None);
    ctx.finish(&portal, render(EnrollScanPage { page, qr_svg, secret_grouped }))
}

async fn enroll_confirm_page((State(portal), jar, headers): Ctx0, Query(q): Query<LangQuery>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, q.lang.as_deref());
    if !matches!(ctx.stage(), Some(Stage::SignedIn { enrollment: Some(_), .. })) {
        return ctx.finish(&portal, Redirect::to("/tokens"));
    }
    let page = ctx.page("tokens", None);
    ctx.finish(&portal, render(EnrollConfirmPage { page }))
}

async fn enroll_confirm((State(portal), jar, headers): Ctx0, ClientAddr(from): ClientAddr, Form(form): Form<CodeForm>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, None);
    if !ctx.csrf_ok(&form.csrf) {
        return forbidden(&portal, ctx);
    }
    let Some(Stage::SignedIn { user, enrollment: Some(e), .. }) = ctx.stage() else { return ctx.finish(&portal, Redirect::to("/tokens")) };
    let (user, e) = (user.clone(), e.clone());
    let result = portal.auth.portal_confirm(&user, &e, &form.code, portal.settings.enrollment_timeout, from).await;
    if matches!(result, Ok(()) | Err(Reason::StateExpired))
        && let Some(Session { stage: Stage::SignedIn { enrollment, .. }, .. }) = ctx.session_mut()
    {
        *enrollment = None;
    }
    match result {
        Ok(()) => {
            let enrolled = ctx.s().enrolled;
            if let Some(session) = ctx.session_mut() {
                session.notice = Some(enrolled);
            }
            ctx.finish(&portal, Redirect::to("/tokens"))
        }
        Err(Reason::StateExpired) => {
            let error = ctx.s().enrollment_expired;
            let page = ctx.page("tokens", Some(error));
            ctx.finish(&portal, (StatusCode::GONE, render(EnrollNamePage { page })))
        }
        Err(_) => {
            let error = ctx.s().wrong_code;
            let page = ctx.page("tokens", Some(error));
            ctx.finish(&portal, (StatusCode::UNPROCESSABLE_ENTITY, render(EnrollConfirmPage { page })))
        }
    }
}

async fn remove_page((State(portal), jar, headers): Ctx0, Path(id): Path<i64>, Query(q): Query<LangQuery>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, q.lang.as_deref());
    let Some(user) = ctx.signed_in().map(str::to_owned) else { return ctx.finish(&portal, Redirect::to("/signin")) };
    let Ok(tokens) = portal.auth.portal_tokens(&user).await else { return ctx.finish(&portal, StatusCode::SERVICE_UNAVAILABLE) };
    let Some(token) = tokens.into_iter().find(|t| t.id == id) else { return ctx.finish(&portal, Redirect::to("/tokens")) };
    let page = ctx.page("tokens", None);
    ctx.finish(&portal, render(RemovePage { page, id, name: token.name }))
}

async fn remove(
    (State(portal), jar, headers): Ctx0,
    ClientAddr(from): ClientAddr,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, None);
    if !ctx.csrf_ok(&form.csrf) {
        return forbidden(&portal, ctx);
    }
    let Some(user) = ctx.signed_in().map(str::to_owned) else { return ctx.finish(&portal, Redirect::to("/signin")) };
    if let Ok(true) = portal.auth.portal_remove(&user, id, from).await {
        let removed = ctx.s().removed;
        if let Some(session) = ctx.session_mut() {
            session.notice = Some(removed);
        }
    }
    ctx.finish(&portal, Redirect::to("/tokens"))
}

async fn signout((State(portal), jar, headers): Ctx0, Form(form): Form<CsrfForm>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, None);
    if !ctx.csrf_ok(&form.csrf) {
        return forbidden(&portal, ctx);
    }
    ctx.end_session(&portal);
    ctx.finish(&portal, Redirect::to("/signin?signed_out=1"))
}

#[cfg(test)]
mod tests;

//! The self-service portal: users sign in with their directory password and a code (from an
//! enrolled app, or by SMS), see their profile, and add or remove authenticator apps by QR code —
//! the flow of the product radmfa replaces. axum + askama, plain HTML forms, no JavaScript.
//!
//! An edge like `server`: every decision goes through `auth`'s portal functions, with the same
//! directory, store, lockout and SMS limits as RADIUS. Sessions are server-side (`session`);
//! every form carries the session's CSRF token; responses carry a strict CSP.

pub mod i18n;
pub mod session;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::auth::{Authenticator, Reason};
use i18n::{Lang, Strings};
use session::{Session, Sessions, Stage};

const COOKIE: &str = "radmfa_session";

#[derive(Debug, Clone)]
pub struct PortalSettings {
    pub listen: SocketAddr,
    /// PEM certificate chain and key: the portal serves HTTPS itself. Without them it serves
    /// plain HTTP, on loopback only, behind a TLS reverse proxy.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub public_url: String,
    pub issuer: String,
    pub max_tokens: usize,
    pub session_idle: Duration,
    pub session_max: Duration,
    pub enrollment_timeout: Duration,
}

impl PortalSettings {
    fn secure_cookie(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

pub struct Portal {
    auth: Arc<Authenticator>,
    settings: PortalSettings,
    sessions: Sessions,
    limiter: RateLimiter,
}

impl Portal {
    pub fn new(auth: Arc<Authenticator>, settings: PortalSettings) -> Arc<Self> {
        Arc::new(Self {
            sessions: Sessions::new(settings.session_idle, settings.session_max),
            auth,
            settings,
            limiter: RateLimiter::default(),
        })
    }
}

pub fn router(portal: Arc<Portal>) -> Router {
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
        .layer(axum::middleware::map_response(security_headers))
        .with_state(portal)
}

/// Serves until `shutdown` is cancelled: HTTPS with the configured certificate, else HTTP.
pub async fn serve(
    portal: Arc<Portal>,
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let tls = portal.settings.tls.clone();
    let app = router(portal).into_make_service_with_connect_info::<SocketAddr>();
    let Some((cert, key)) = tls else {
        return axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    };
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
        .await
        .map_err(|e| std::io::Error::other(format!("portal TLS ({}, {}): {e}", cert.display(), key.display())))?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stopper.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    axum_server::from_tcp_rustls(listener.into_std()?, config).handle(handle).serve(app).await
}

async fn security_headers(mut response: Response) -> Response {
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
    response
}

async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("style.css"))
}

/// Per-key sliding-window limits, against password spraying and SMS pumping from the portal.
#[derive(Default)]
struct RateLimiter {
    hits: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    fn allow(&self, key: String, max: usize, window: Duration) -> bool {
        let now = Instant::now();
        let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        if hits.len() > 100_000 {
            hits.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < Duration::from_secs(3600)));
        }
        let queue = hits.entry(key).or_default();
        while queue.front().is_some_and(|t| now.duration_since(*t) >= window) {
            queue.pop_front();
        }
        if queue.len() >= max {
            return false;
        }
        queue.push_back(now);
        true
    }
}

/// One request's session, language and cookie jar; `finish` stores the session and sets the cookie.
struct Ctx {
    id: String,
    session: Session,
    lang: Lang,
    jar: CookieJar,
}

#[derive(Deserialize, Default)]
struct LangQuery {
    lang: Option<String>,
}

impl Ctx {
    fn open(portal: &Portal, jar: CookieJar, headers: &HeaderMap, query: Option<&LangQuery>) -> Self {
        let (id, mut session) = portal.sessions.take(jar.get(COOKIE).map(Cookie::value), Instant::now());
        if let Some(lang) = query.and_then(|q| q.lang.as_deref()).and_then(Lang::parse) {
            session.lang = Some(lang);
        }
        let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).and_then(Lang::from_accept_language);
        let lang = session.lang.or(accept).unwrap_or(Lang::En);
        Self { id, session, lang, jar }
    }

    fn s(&self) -> &'static Strings {
        self.lang.strings()
    }

    fn page(&mut self, tab: &'static str, error: Option<&'static str>) -> Page {
        let signed_in = matches!(self.session.stage, Stage::SignedIn { .. });
        Page {
            s: self.s(),
            lang: self.lang.code(),
            other_lang: if self.lang == Lang::En { "sv" } else { "en" },
            csrf: self.session.csrf.clone(),
            signed_in,
            tab,
            notice: self.session.notice.take(),
            error,
        }
    }

    /// A new session id (after sign-in), so an id planted before sign-in is worthless after.
    fn rotate(&mut self) {
        self.id = session::random_token();
    }

    fn finish(self, portal: &Portal, response: impl IntoResponse) -> Response {
        let mut cookie = Cookie::new(COOKIE, self.id.clone());
        cookie.set_http_only(true);
        cookie.set_same_site(SameSite::Strict);
        cookie.set_path("/");
        cookie.set_secure(portal.settings.secure_cookie());
        portal.sessions.put(self.id, self.session, Instant::now());
        (self.jar.add(cookie), response).into_response()
    }

    fn csrf_ok(&self, token: &str) -> bool {
        bool::from(self.session.csrf.as_bytes().ct_eq(token.as_bytes()))
    }

    fn signed_in(&self) -> Option<&str> {
        match &self.session.stage {
            Stage::SignedIn { user, .. } => Some(user),
            _ => None,
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
    let ctx = Ctx::open(&portal, jar, &headers, Some(&q));
    let to = match ctx.session.stage {
        Stage::SignedIn { .. } => "/general",
        Stage::SecondFactor { .. } => "/otp",
        Stage::Anonymous => "/signin",
    };
    ctx.finish(&portal, Redirect::to(to))
}

async fn signin_page((State(portal), jar, headers): Ctx0, Query(q): Query<LangQuery>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, Some(&q));
    let page = ctx.page("", None);
    ctx.finish(&portal, render(SigninPage { page }))
}

#[derive(Deserialize)]
struct SigninForm {
    csrf: String,
    username: String,
    password: String,
}

async fn signin((State(portal), jar, headers): Ctx0, ConnectInfo(peer): ConnectInfo<SocketAddr>, Form(form): Form<SigninForm>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, None);
    if !ctx.csrf_ok(&form.csrf) {
        return forbidden(&portal, ctx);
    }
    let from = client_ip(&portal, peer, &headers);
    let login = portal.auth.login_name(&form.username);
    let limited = !portal.limiter.allow(format!("signin-ip:{}", ip_key(from)), 20, Duration::from_secs(300))
        || !portal.limiter.allow(format!("signin-user:{login}"), 5, Duration::from_secs(300));
    let error = if limited {
        Some(ctx.s().too_many_attempts)
    } else {
        match portal.auth.portal_password(&form.username, form.password.as_bytes(), from).await {
            Ok(crate::auth::portal::PortalUser { account: user, profile, has_token }) => {
                let sms = if has_token {
                    None
                } else if profile.mobile.is_some() {
                    match portal.auth.portal_send_sms(&user, &profile, from).await {
                        Ok(challenge) => Some(challenge),
                        Err(Reason::SmsRateLimited) => return error_page(&portal, ctx, |s| s.too_many_attempts),
                        Err(_) => return error_page(&portal, ctx, |s| s.sms_failed),
                    }
                } else {
                    // Neither an app nor a phone: never a way past the second factor.
                    return error_page(&portal, ctx, |s| s.no_second_factor);
                };
                ctx.session.stage = Stage::SecondFactor { user, profile, has_token, sms };
                return ctx.finish(&portal, Redirect::to("/otp"));
            }
            Err(Reason::SecondFactorLocked | Reason::PasswordLocked) => Some(ctx.s().too_many_attempts),
            Err(_) => Some(ctx.s().sign_in_failed),
        }
    };
    let page = ctx.page("", error);
    ctx.finish(&portal, (StatusCode::UNAUTHORIZED, render(SigninPage { page })))
}

fn error_page(portal: &Portal, mut ctx: Ctx, message: impl Fn(&Strings) -> &'static str) -> Response {
    ctx.session.stage = Stage::Anonymous;
    let error = message(ctx.s());
    let page = ctx.page("", Some(error));
    ctx.finish(portal, render(SigninPage { page }))
}

/// The user's address. Serving plain HTTP, the portal sits behind a TLS reverse proxy on
/// loopback, so every connection comes from the proxy: then the address is the last entry of
/// X-Forwarded-For, the one our proxy added (earlier entries are the client's to forge).
fn client_ip(portal: &Portal, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let behind_proxy = portal.settings.tls.is_none() && peer.ip().is_loopback();
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| last.trim().parse::<IpAddr>().ok());
    match forwarded {
        Some(ip) if behind_proxy => ip,
        _ => peer.ip(),
    }
}

/// Rate-limit key for an address: IPv6 by /64, since one host holds a whole /64.
fn ip_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

async fn otp_page((State(portal), jar, headers): Ctx0, Query(q): Query<LangQuery>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, Some(&q));
    let (sms_to, offer_sms) = match &ctx.session.stage {
        Stage::SecondFactor { sms, has_token, profile, .. } => {
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

async fn otp((State(portal), jar, headers): Ctx0, ConnectInfo(peer): ConnectInfo<SocketAddr>, Form(form): Form<CodeForm>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, None);
    if !ctx.csrf_ok(&form.csrf) {
        return forbidden(&portal, ctx);
    }
    let Stage::SecondFactor { user, profile, has_token, mut sms } = ctx.session.stage.clone() else {
        return ctx.finish(&portal, Redirect::to("/"));
    };
    let from = client_ip(&portal, peer, &headers);
    if !portal.limiter.allow(format!("otp-ip:{}", ip_key(from)), 30, Duration::from_secs(300)) {
        return error_page(&portal, ctx, |s| s.too_many_attempts);
    }
    match portal.auth.portal_code(&user, &form.code, sms.as_mut(), from).await {
        Ok(()) => {
            ctx.rotate();
            ctx.session.sign_in(user, profile);
            ctx.finish(&portal, Redirect::to("/general"))
        }
        Err(Reason::SecondFactorLocked | Reason::StateExpired) => error_page(&portal, ctx, |s| s.too_many_attempts),
        Err(_) => {
            let exhausted = sms.as_ref().is_some_and(|c| c.tries_left == 0);
            if exhausted {
                return error_page(&portal, ctx, |s| s.too_many_attempts);
            }
            let sms_to = sms.as_ref().map(|c| c.masked.clone());
            let offer_sms = has_token && sms.is_none() && profile.mobile.is_some();
            ctx.session.stage = Stage::SecondFactor { user, profile, has_token, sms };
            let error = ctx.s().wrong_code;
            let page = ctx.page("", Some(error));
            ctx.finish(&portal, (StatusCode::UNAUTHORIZED, render(OtpPage { page, sms_to, offer_sms })))
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn otp_sms((State(portal), jar, headers): Ctx0, ConnectInfo(peer): ConnectInfo<SocketAddr>, Form(form): Form<CsrfForm>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, None);
    if !ctx.csrf_ok(&form.csrf) {
        return forbidden(&portal, ctx);
    }
    let Stage::SecondFactor { user, profile, has_token, .. } = ctx.session.stage.clone() else {
        return ctx.finish(&portal, Redirect::to("/"));
    };
    match portal.auth.portal_send_sms(&user, &profile, client_ip(&portal, peer, &headers)).await {
        Ok(challenge) => {
            ctx.session.stage = Stage::SecondFactor { user, profile, has_token, sms: Some(challenge) };
            ctx.finish(&portal, Redirect::to("/otp"))
        }
        Err(Reason::SmsRateLimited) => error_page(&portal, ctx, |s| s.too_many_attempts),
        Err(_) => error_page(&portal, ctx, |s| s.sms_failed),
    }
}

async fn general((State(portal), jar, headers): Ctx0, Query(q): Query<LangQuery>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, Some(&q));
    let Stage::SignedIn { profile, .. } = &ctx.session.stage else { return ctx.finish(&portal, Redirect::to("/signin")) };
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
    let mut ctx = Ctx::open(&portal, jar, &headers, Some(&q));
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
    let mut ctx = Ctx::open(&portal, jar, &headers, Some(&q));
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

async fn enroll_name(
    (State(portal), jar, headers): Ctx0,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<NameForm>,
) -> Response {
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
    if let Stage::SignedIn { enrollment: Some(old), .. } = &ctx.session.stage {
        let _ = portal.auth.portal_remove(&user, old.token_id, client_ip(&portal, peer, &headers)).await;
    }
    match portal.auth.portal_enroll(&user, &name, &portal.settings.issuer, portal.settings.max_tokens).await {
        Ok(new) => {
            if let Stage::SignedIn { enrollment, .. } = &mut ctx.session.stage {
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
    let mut ctx = Ctx::open(&portal, jar, &headers, Some(&q));
    let Stage::SignedIn { enrollment: Some(e), .. } = &ctx.session.stage else { return ctx.finish(&portal, Redirect::to("/tokens")) };
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
    let mut ctx = Ctx::open(&portal, jar, &headers, Some(&q));
    if !matches!(&ctx.session.stage, Stage::SignedIn { enrollment: Some(_), .. }) {
        return ctx.finish(&portal, Redirect::to("/tokens"));
    }
    let page = ctx.page("tokens", None);
    ctx.finish(&portal, render(EnrollConfirmPage { page }))
}

async fn enroll_confirm(
    (State(portal), jar, headers): Ctx0,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<CodeForm>,
) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, None);
    if !ctx.csrf_ok(&form.csrf) {
        return forbidden(&portal, ctx);
    }
    let Stage::SignedIn { user, enrollment: Some(e), .. } = &ctx.session.stage else { return ctx.finish(&portal, Redirect::to("/tokens")) };
    let (user, e) = (user.clone(), e.clone());
    let from = client_ip(&portal, peer, &headers);
    match portal.auth.portal_confirm(&user, &e, &form.code, portal.settings.enrollment_timeout, from).await {
        Ok(()) => {
            if let Stage::SignedIn { enrollment, .. } = &mut ctx.session.stage {
                *enrollment = None;
            }
            ctx.session.notice = Some(ctx.s().enrolled);
            ctx.finish(&portal, Redirect::to("/tokens"))
        }
        Err(Reason::StateExpired) => {
            if let Stage::SignedIn { enrollment, .. } = &mut ctx.session.stage {
                *enrollment = None;
            }
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
    let mut ctx = Ctx::open(&portal, jar, &headers, Some(&q));
    let Some(user) = ctx.signed_in().map(str::to_owned) else { return ctx.finish(&portal, Redirect::to("/signin")) };
    let Ok(tokens) = portal.auth.portal_tokens(&user).await else { return ctx.finish(&portal, StatusCode::SERVICE_UNAVAILABLE) };
    let Some(token) = tokens.into_iter().find(|t| t.id == id) else { return ctx.finish(&portal, Redirect::to("/tokens")) };
    let page = ctx.page("tokens", None);
    ctx.finish(&portal, render(RemovePage { page, id, name: token.name }))
}

async fn remove(
    (State(portal), jar, headers): Ctx0,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, None);
    if !ctx.csrf_ok(&form.csrf) {
        return forbidden(&portal, ctx);
    }
    let Some(user) = ctx.signed_in().map(str::to_owned) else { return ctx.finish(&portal, Redirect::to("/signin")) };
    if let Ok(true) = portal.auth.portal_remove(&user, id, client_ip(&portal, peer, &headers)).await {
        ctx.session.notice = Some(ctx.s().removed);
    }
    ctx.finish(&portal, Redirect::to("/tokens"))
}

async fn signout((State(portal), jar, headers): Ctx0, Form(form): Form<CsrfForm>) -> Response {
    let mut ctx = Ctx::open(&portal, jar, &headers, None);
    if !ctx.csrf_ok(&form.csrf) {
        return forbidden(&portal, ctx);
    }
    // The old session was taken out of the store when this request opened it: it is gone for good.
    ctx.session = portal.sessions.take(None, Instant::now()).1;
    ctx.rotate();
    ctx.session.notice = Some(ctx.s().signed_out);
    ctx.finish(&portal, Redirect::to("/signin"))
}

#[cfg(test)]
mod tests;

//! The self-service portal: users sign in with their directory password and a code (from an
//! enrolled app, or by SMS), see their profile, and add or remove authenticator apps by QR code —
//! the flow of the product radmfa replaces. axum + askama, plain HTML forms, no JavaScript.
//!
//! An edge like `server`: every decision goes through `auth`'s portal functions, with the same
//! directory, store, lockout and SMS limits as RADIUS. Nothing is stored for a visitor until a
//! password is accepted: the sign-in form carries a signed double-submit CSRF token (`csrf`)
//! and the language choice is a cookie. From then on the session is server-side, in the store
//! (`session`), and every form carries its CSRF token. Both work on every node that shares the
//! store and the key file, so the portal may sit behind a load balancer with no stickiness;
//! only the rate limits (`limiter`) are each node's own. Responses carry a strict CSP (and HSTS under https);
//! `listener` serves it with timeouts and connection caps.
//!
//! Handlers are by page: `signin` (password, code, SMS, sign-out), `tokens` (the TOKENS tab),
//! `helpdesk` (the HELPDESK tab, for members of `helpdesk_groups`) and `pages` (the templates,
//! the start and GENERAL). What they are given — the session, the
//! signed-in user, a CSRF-checked form, the time the request arrived — comes from `extract`.

pub mod brand;
mod client_addr;
mod csrf;
mod extract;
mod helpdesk;
pub mod i18n;
mod limiter;
mod listener;
mod pages;
pub mod session;
pub mod settings;
mod signin;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::timeout::TimeoutLayer;

use crate::auth::Authenticator;
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::store::Store;
use csrf::SigninCsrf;
use limiter::RateLimiter;
use session::Sessions;

pub use listener::serve;
pub use settings::{PortalSection, PortalSettings, TlsFiles};

/// Sign-in forms (and their cookie) stay valid this long.
const SIGNIN_FORM_LIFETIME: Duration = Duration::from_secs(3600);
/// Keys each rate limiter remembers (see `limiter` for what happens beyond).
const LIMITER_KEYS: usize = 50_000;
/// Keys the helpdesk limiter remembers: only members, whom the directory vouched for, make one.
const HELPDESK_LIMITER_KEYS: usize = 1_000;
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
    /// Per helpdesk member: searches, and changes.
    helpdesk_limits: RateLimiter,
    metrics: Arc<Metrics>,
}

impl Portal {
    /// The portal over `auth`, its sessions kept in `store` and its sign-in forms signed with a
    /// key derived from `keys`: what every node behind one load balancer shares.
    pub fn new(auth: Arc<Authenticator>, store: Arc<dyn Store>, keys: Arc<Keys>, settings: PortalSettings) -> Arc<Self> {
        Self::observed(auth, store, keys, settings, Arc::default())
    }

    /// As [`Portal::new`], its requests counted in `metrics`.
    pub fn observed(
        auth: Arc<Authenticator>,
        store: Arc<dyn Store>,
        keys: Arc<Keys>,
        settings: PortalSettings,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            sessions: Sessions::new(store, settings.max_sessions, settings.session_idle, settings.session_max),
            signin_csrf: SigninCsrf::new(keys, SIGNIN_FORM_LIFETIME),
            auth,
            settings,
            address_limits: RateLimiter::new(LIMITER_KEYS),
            user_limits: RateLimiter::new(LIMITER_KEYS),
            limits_audited: RateLimiter::new(LIMITER_KEYS),
            helpdesk_limits: RateLimiter::new(HELPDESK_LIMITER_KEYS),
        })
    }
}

pub fn router(portal: Arc<Portal>) -> Router {
    let hsts = portal.settings.https();
    let request_timeout = portal.settings.request_timeout;
    Router::new()
        .route("/", get(pages::home))
        .route("/signin", get(signin::signin_page).post(signin::signin))
        .route("/otp", get(signin::otp_page).post(signin::otp))
        .route("/otp/sms", post(signin::otp_sms))
        .route("/general", get(pages::general))
        .route("/tokens", get(tokens::tokens))
        .route("/tokens/new", get(tokens::enroll_name_page).post(tokens::enroll_name))
        .route("/tokens/new/scan", get(tokens::enroll_scan))
        .route("/tokens/new/confirm", get(tokens::enroll_confirm_page).post(tokens::enroll_confirm))
        .route("/tokens/{id}/remove", get(tokens::remove_page).post(tokens::remove))
        .route("/signout", post(signin::signout))
        .merge(helpdesk::routes())
        .route("/static/style.css", get(stylesheet))
        .route("/static/brand.css", get(brand_stylesheet))
        .route("/static/logo", get(logo))
        .layer(axum::middleware::from_fn(extract::stamp_arrival))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&portal.metrics), counted))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout))
        .layer(axum::middleware::map_response_with_state(hsts, security_headers))
        .with_state(portal)
}

/// Counts the request by its route's pattern (`/tokens/{id}/remove`), never the path as sent.
async fn counted(State(metrics): State<Arc<Metrics>>, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let route = request.extensions().get::<axum::extract::MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    metrics.portal_request(&route, method.as_str(), response.status().as_u16(), started.elapsed());
    response
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

/// The accent colour, as a stylesheet (pages may load no inline style).
async fn brand_stylesheet(State(portal): State<Arc<Portal>>) -> Response {
    match &portal.settings.brand.stylesheet {
        Some(css) => ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], css.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The logo, from memory. An SVG is shown through `<img>`, where scripts do not run; its own
/// policy forbids them should someone open it directly.
async fn logo(State(portal): State<Arc<Portal>>) -> Response {
    match &portal.settings.brand.logo {
        Some(logo) => (
            [
                (header::CONTENT_TYPE, logo.content_type),
                (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'; sandbox"),
            ],
            logo.bytes.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests;

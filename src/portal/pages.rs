//! The portal's pages as askama templates (`templates/`), what every page's layout needs
//! (`Page`), and the pages that belong to no flow: the start, GENERAL (the profile) and the
//! "form expired" page.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::Portal;
use super::brand::Brand;
use super::extract::{SignedIn, Visit};
use super::i18n::{Lang, Strings};
use super::session::Stage;

/// The tab of the navigation a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    General,
    Tokens,
    Helpdesk,
}

/// What every page's layout needs.
pub struct Page {
    pub s: &'static Strings,
    /// The organisation's title (radmfa's own if none), help text and whether it has a logo
    /// and an accent colour.
    pub title: String,
    pub help_text: Option<String>,
    pub has_logo: bool,
    pub has_brand_css: bool,
    pub lang: &'static str,
    pub other_lang: &'static str,
    pub csrf: String,
    pub signed_in: bool,
    /// The HELPDESK tab is shown (the directory said the user is in a helpdesk group).
    pub helpdesk_tab: bool,
    pub tab: Option<Tab>,
    pub notice: Option<&'static str>,
    pub error: Option<&'static str>,
}

impl Page {
    pub fn new(
        brand: &Brand,
        lang: Lang,
        csrf: String,
        signed_in: bool,
        tab: Option<Tab>,
        notice: Option<&'static str>,
        error: Option<&'static str>,
    ) -> Self {
        let other_lang = if lang == Lang::En { "sv" } else { "en" };
        let s = lang.strings();
        Self {
            s,
            title: brand.title(lang, s.title).to_owned(),
            help_text: brand.help_text(lang).map(str::to_owned),
            has_logo: brand.logo.is_some(),
            has_brand_css: brand.stylesheet.is_some(),
            lang: lang.code(),
            other_lang,
            csrf,
            signed_in,
            helpdesk_tab: false,
            tab,
            notice,
            error,
        }
    }

    /// For the layout's `aria-current`.
    pub fn on_general(&self) -> bool {
        self.tab == Some(Tab::General)
    }

    pub fn on_tokens(&self) -> bool {
        self.tab == Some(Tab::Tokens)
    }

    pub fn on_helpdesk(&self) -> bool {
        self.tab == Some(Tab::Helpdesk)
    }
}

#[derive(Template)]
#[template(path = "signin.html")]
pub struct SigninPage {
    pub page: Page,
}

#[derive(Template)]
#[template(path = "otp.html")]
pub struct OtpPage {
    pub page: Page,
    pub sms_to: Option<String>,
    pub offer_sms: bool,
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

pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub created: String,
    pub last_used: String,
}

#[derive(Template)]
#[template(path = "tokens.html")]
pub struct TokensPage {
    pub page: Page,
    pub tokens: Vec<TokenRow>,
}

#[derive(Template)]
#[template(path = "enroll_name.html")]
pub struct EnrollNamePage {
    pub page: Page,
}

#[derive(Template)]
#[template(path = "enroll_scan.html")]
pub struct EnrollScanPage {
    pub page: Page,
    pub qr_svg: String,
    pub secret_grouped: String,
}

#[derive(Template)]
#[template(path = "enroll_confirm.html")]
pub struct EnrollConfirmPage {
    pub page: Page,
}

#[derive(Template)]
#[template(path = "remove.html")]
pub struct RemovePage {
    pub page: Page,
    pub id: i64,
    pub name: String,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    page: Page,
}

pub fn render(t: impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "portal template failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// A form posted without its CSRF token (or with an old one): 403, and the way back.
pub async fn form_expired(portal: &Portal, visit: Visit) -> Response {
    let page = visit.page(portal, None, Some(visit.s().form_expired)).await;
    visit.respond((StatusCode::FORBIDDEN, render(MessagePage { page })))
}

/// The store cannot be reached (sessions cannot be read or kept): 503, try again later.
pub fn unavailable(brand: &Brand, lang: Lang) -> Response {
    let page = Page::new(brand, lang, String::new(), false, None, None, Some(lang.strings().unavailable));
    (StatusCode::SERVICE_UNAVAILABLE, render(MessagePage { page })).into_response()
}

/// A time as the TOKENS tab shows it, or `never`.
pub fn date(t: Option<i64>, never: &str) -> String {
    let Some(t) = t else { return never.to_owned() };
    crate::clock::format_utc(t)
}

/// `/`: wherever the visitor is in the flow.
pub async fn home(visit: Visit) -> Response {
    let to = match visit.stage() {
        Some(Stage::SignedIn { .. }) => "/general",
        Some(Stage::SecondFactor { .. }) => "/otp",
        None => "/signin",
    };
    visit.respond(Redirect::to(to))
}

/// GENERAL: the profile as the directory has it.
pub async fn general(State(portal): State<Arc<Portal>>, signed_in: SignedIn) -> Response {
    let SignedIn { visit, profile, .. } = signed_in;
    let page = visit.page(&portal, Some(Tab::General), None).await;
    let body = GeneralPage {
        page,
        username: profile.username,
        given_name: profile.given_name.unwrap_or_default(),
        surname: profile.surname.unwrap_or_default(),
        email: profile.email.unwrap_or_default(),
        mobile: profile.mobile.unwrap_or_default(),
    };
    visit.respond(render(body))
}

//! `/helpdesk`: the search form and, with `?q=`, the accounts whose name, display name or mail
//! contain the text — checked by `auth::helpdesk::search_text`, at most
//! `MAX_SEARCH_RESULTS`, and limited per member.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{HELPDESK, Helpdesk, SEARCHES_PER_MINUTE, failed, user_path};
use crate::auth::helpdesk::search_text;
use crate::directory::{Account, MAX_SEARCH_RESULTS};
use crate::portal::Portal;
use crate::portal::extract::Visit;
use crate::portal::i18n::Strings;
use crate::portal::limiter::LimitKey;
use crate::portal::pages::{Page, render};

#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

/// One account found, as the results list it.
struct Found {
    id: String,
    href: String,
    display_name: String,
    email: String,
}

impl Found {
    fn of(account: Account) -> Self {
        let p = &account.profile;
        Self {
            href: user_path(&account.id),
            display_name: display_name(p.given_name.as_deref(), p.surname.as_deref()),
            email: p.email.clone().unwrap_or_default(),
            id: account.id,
        }
    }
}

/// Given name and surname, as a display name.
pub fn display_name(given: Option<&str>, surname: Option<&str>) -> String {
    [given, surname].into_iter().flatten().filter(|n| !n.trim().is_empty()).collect::<Vec<_>>().join(" ")
}

#[derive(Template)]
#[template(path = "helpdesk_search.html")]
struct SearchPage {
    page: Page,
    /// The text searched for, to show in the form again.
    q: String,
    /// `None` before a search.
    results: Option<Vec<Found>>,
    /// The directory returned as many as it may: there may be more.
    more: bool,
}

pub async fn search(State(portal): State<Arc<Portal>>, helpdesk: Helpdesk, Query(query): Query<SearchQuery>) -> Response {
    let Helpdesk { visit, member } = helpdesk;
    let Some(q) = query.q else { return answer(&portal, visit, String::new(), StatusCode::OK, None, None).await };
    let Ok(text) = search_text(&q) else {
        return answer(&portal, visit, q, StatusCode::BAD_REQUEST, Some(|s| s.search_invalid), None).await;
    };
    let key = LimitKey::HelpdeskSearch(member.clone());
    let (minute, now) = (Duration::from_secs(60), visit.arrival.instant);
    if !portal.helpdesk_limits.allow_at(&key, SEARCHES_PER_MINUTE, minute, now) {
        if portal.limits_audited.allow_at(&key, 1, minute, now) {
            tracing::warn!(target: "radmfa::audit", actor = member, limit = SEARCHES_PER_MINUTE, "portal: helpdesk searches rate limited");
        }
        return answer(&portal, visit, q, StatusCode::TOO_MANY_REQUESTS, Some(|s| s.too_many_searches), None).await;
    }
    match portal.auth.find_users(text).await {
        Ok(accounts) => {
            let found = accounts.into_iter().map(Found::of).collect();
            answer(&portal, visit, q, StatusCode::OK, None, Some(found)).await
        }
        Err(e) => failed(&portal, visit, e).await,
    }
}

/// The search page: the form (with `q` in it), an error, and the accounts found, if searched.
async fn answer(
    portal: &Portal,
    visit: Visit,
    q: String,
    status: StatusCode,
    error: Option<fn(&Strings) -> &'static str>,
    results: Option<Vec<Found>>,
) -> Response {
    let more = results.as_ref().is_some_and(|r| r.len() >= MAX_SEARCH_RESULTS);
    let page = visit.page(portal, HELPDESK, error.map(|e| e(visit.s()))).await;
    visit.respond((status, render(SearchPage { page, q, results, more })))
}

//! A temporary code for a user who lost their phone: the form (a validity from a few choices up
//! to `[helpdesk] max_temporary_code_validity`, and a number of logins up to
//! `max_temporary_code_uses`) and its POST, whose answer shows the code once. The code is never
//! in a URL, a redirect, the session or a log; afterwards it exists only sealed in the store.
//! A member may not issue one to themselves: it would take them past their own second factor.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{HELPDESK, Helpdesk, HelpdeskForm, actor, change_allowed, failed, message, user_path};
use crate::auth::helpdesk::HelpdeskError;
use crate::auth::settings::HelpdeskSettings;
use crate::portal::Portal;
use crate::portal::client_addr::ClientAddr;
use crate::portal::extract::{CsrfForm, Visit};
use crate::portal::i18n::Strings;
use crate::portal::pages::{Page, render};

/// The validities offered (seconds), those up to the configured maximum; the maximum itself is
/// offered too.
const VALIDITIES: [u64; 4] = [3600, 8 * 3600, 86_400, 3 * 86_400];
/// Preselected: a day to get a new phone going.
const DEFAULT_VALIDITY: u64 = 86_400;
/// Preselected: a sign-in to the portal to enroll the new app, and a few logins meanwhile.
const DEFAULT_USES: u32 = 5;

struct Choice {
    seconds: u64,
    label: String,
    selected: bool,
}

/// The validities the form offers under `max`.
fn validities(max: Duration) -> Vec<u64> {
    let max = max.as_secs();
    let mut offered: Vec<u64> = VALIDITIES.into_iter().filter(|v| *v <= max).collect();
    if offered.last() != Some(&max) {
        offered.push(max);
    }
    offered
}

/// "3 days", "8 timmar": a validity as the form names it.
fn label(seconds: u64, s: &Strings) -> String {
    let (n, one, many) = match seconds {
        n if n % 86_400 == 0 => (n / 86_400, s.day, s.days),
        n if n % 3600 == 0 => (n / 3600, s.hour, s.hours),
        n if n % 60 == 0 => (n / 60, s.minute, s.minutes),
        n => return format!("{n} s"),
    };
    format!("{n} {}", if n == 1 { one } else { many })
}

#[derive(Template)]
#[template(path = "helpdesk_issue.html")]
struct IssuePage {
    page: Page,
    id: String,
    path: String,
    choices: Vec<Choice>,
    uses: u32,
    max_uses: u32,
}

impl IssuePage {
    /// The form, `chosen` (validity, uses) preselected where it is one the form offers.
    fn new(page: Page, id: String, limits: HelpdeskSettings, chosen: (Option<u64>, Option<u32>)) -> Self {
        let offered = validities(limits.max_temporary_code_validity);
        let selected = chosen
            .0
            .filter(|v| offered.contains(v))
            .or_else(|| offered.contains(&DEFAULT_VALIDITY).then_some(DEFAULT_VALIDITY))
            .or_else(|| offered.last().copied());
        let choices = offered
            .into_iter()
            .map(|seconds| Choice { seconds, label: label(seconds, page.s), selected: Some(seconds) == selected })
            .collect();
        let max_uses = limits.max_temporary_code_uses;
        let uses = chosen.1.filter(|u| (1..=max_uses).contains(u)).unwrap_or(DEFAULT_USES.min(max_uses));
        Self { path: user_path(&id), page, id, choices, uses, max_uses }
    }
}

#[derive(Template)]
#[template(path = "helpdesk_code.html")]
struct CodePage<'a> {
    page: Page,
    id: String,
    path: String,
    code: &'a str,
    valid_until: String,
    uses: u32,
}

#[derive(Deserialize)]
pub struct IssueForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    validity: String,
    #[serde(default)]
    uses: String,
}

impl CsrfForm for IssueForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// A member asking a code for themselves: refused, and logged.
async fn refuse_self(portal: &Portal, visit: Visit, member: &str) -> Response {
    tracing::warn!(target: "radmfa::audit", actor = member, via = "helpdesk", "portal: refused: a helpdesk member asked for a temporary code for themselves");
    message(portal, visit, StatusCode::FORBIDDEN, |s| s.issue_self, &user_path(member)).await
}

/// Why no code may be issued from the portal to an account.
enum NotIssuable {
    /// To oneself: past one's own second factor.
    ToSelf,
    /// To a helpdesk member: the role would pass a colleague's second factor (an admin issues
    /// theirs, with the CLI).
    ToMember,
    Failed(HelpdeskError),
}

impl NotIssuable {
    async fn answer(self, portal: &Portal, visit: Visit, member: &str) -> Response {
        match self {
            Self::ToSelf => refuse_self(portal, visit, member).await,
            Self::ToMember => {
                tracing::warn!(target: "radmfa::audit", actor = member, via = "helpdesk", "portal: refused: a temporary code for a helpdesk member");
                message(portal, visit, StatusCode::FORBIDDEN, |s| s.issue_member, "/helpdesk").await
            }
            Self::Failed(e) => failed(portal, visit, e).await,
        }
    }
}

/// The account `name` denotes, if the portal may issue it a code.
async fn issuable(portal: &Portal, name: &str, member: &str) -> Result<String, NotIssuable> {
    let account = portal.auth.lookup(name).await.map_err(NotIssuable::Failed)?;
    if account.id == member {
        return Err(NotIssuable::ToSelf);
    }
    let in_helpdesk = portal.auth.member_of(&account, &portal.settings.helpdesk_groups).await.map_err(NotIssuable::Failed)?;
    if !in_helpdesk.is_empty() {
        return Err(NotIssuable::ToMember);
    }
    Ok(account.id)
}

pub async fn issue_page(State(portal): State<Arc<Portal>>, helpdesk: Helpdesk, Path(name): Path<String>) -> Response {
    let Helpdesk { visit, member } = helpdesk;
    let account = match issuable(&portal, &name, &member).await {
        Ok(account) => account,
        Err(refused) => return refused.answer(&portal, visit, &member).await,
    };
    let page = visit.page(&portal, HELPDESK, None).await;
    let form = IssuePage::new(page, account, portal.auth.temporary_code_limits(), (None, None));
    visit.respond(render(form))
}

pub async fn issue(State(portal): State<Arc<Portal>>, ClientAddr(from): ClientAddr, posted: HelpdeskForm<String, IssueForm>) -> Response {
    let HelpdeskForm { helpdesk: Helpdesk { visit, member }, path: name, form } = posted;
    if !change_allowed(&portal, &member, &visit) {
        return message(&portal, visit, StatusCode::TOO_MANY_REQUESTS, |s| s.too_many_changes, &user_path(&name)).await;
    }
    let account = match issuable(&portal, &name, &member).await {
        Ok(account) => account,
        Err(refused) => return refused.answer(&portal, visit, &member).await,
    };
    let limits = portal.auth.temporary_code_limits();
    let validity = form.validity.trim().parse::<u64>().ok();
    let uses = form.uses.trim().parse::<u32>().ok();
    // Only what the form offers: a forged validity under the maximum is refused as well.
    let offered = validity.filter(|v| validities(limits.max_temporary_code_validity).contains(v));
    let issued = match (offered, uses) {
        (Some(validity), Some(uses)) => {
            portal.auth.issue_temporary_code(&actor(&member, from), &account, Duration::from_secs(validity), uses, visit.arrival.unix).await
        }
        _ => Err(HelpdeskError::Invalid(String::new())),
    };
    match issued {
        Ok(issued) => {
            let page = visit.page(&portal, HELPDESK, None).await;
            let shown = CodePage {
                page,
                path: user_path(&account),
                id: account,
                code: issued.code.expose(),
                valid_until: crate::clock::format_utc(issued.expires_at),
                uses: issued.uses,
            };
            visit.respond(render(shown))
        }
        Err(HelpdeskError::Invalid(_)) => {
            let page = visit.page(&portal, HELPDESK, Some(visit.s().issue_invalid)).await;
            visit.respond((StatusCode::BAD_REQUEST, render(IssuePage::new(page, account, limits, (validity, uses)))))
        }
        Err(e) => failed(&portal, visit, e).await,
    }
}

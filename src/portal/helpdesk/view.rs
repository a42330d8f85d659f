//! `/helpdesk/users/{name}`: everything the help desk sees of one account — what the directory
//! says of it (enabled, locked, expiry, the groups that matter), its tokens, both factors'
//! lockouts, live temporary codes, recent SMS sends and its last events — with the way to each
//! action.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;

use super::search::display_name;
use super::{HELPDESK, Helpdesk, failed, user_path};
use crate::auth::helpdesk::UserView;
use crate::directory::AccountStatus;
use crate::portal::Portal;
use crate::portal::client_addr::ClientAddr;
use crate::portal::i18n::Strings;
use crate::portal::pages::{Page, date, render};
use crate::store::{AuditEvent, LockoutState, UnixTime};

/// The reasons of the events that are SMS sends (or attempts), for "Recent SMS".
const SMS_REASONS: [&str; 4] = ["sms_sent", "sms_pending", "sms_failed", "sms_rate_limited"];

struct GroupRow {
    name: String,
    member: &'static str,
}

struct TokenRow {
    id: i64,
    name: String,
    created: String,
    last_used: String,
    confirmed: &'static str,
}

struct LockRow {
    factor: &'static str,
    failures: u32,
    locked_until: String,
}

struct CodeRow {
    issued_by: String,
    valid_until: String,
    uses_left: u32,
}

struct EventRow {
    time: String,
    action: String,
    client: String,
    from: String,
    result: String,
    reason: String,
    actor: String,
    detail: String,
}

impl EventRow {
    /// The row as shown: askama escapes HTML, and control, bidi and invisible characters (a
    /// Calling-Station-Id with a right-to-left override) are shown as escapes, as the CLI does.
    fn of(e: &AuditEvent) -> Self {
        let shown = |text: &str| crate::auth::shown(text).into_owned();
        Self {
            time: crate::clock::format_utc(e.at),
            action: shown(&e.action),
            client: shown(&e.client),
            from: shown(e.from.as_deref().unwrap_or_default()),
            result: shown(&e.result),
            reason: shown(&e.reason),
            actor: shown(e.actor.as_deref().unwrap_or_default()),
            detail: shown(e.detail.as_deref().unwrap_or_default()),
        }
    }
}

/// What the directory says of the account, in words.
struct StatusRows {
    /// Enabled, disabled, or "the directory could not say".
    state: &'static str,
    locked_in_directory: Option<&'static str>,
    expires: Option<String>,
    must_change_password: Option<&'static str>,
}

impl StatusRows {
    fn of(status: Option<&AccountStatus>, s: &'static Strings) -> Self {
        let yes_no = |b: bool| if b { s.yes } else { s.no };
        let Some(status) = status else {
            return Self { state: s.status_unknown, locked_in_directory: None, expires: None, must_change_password: None };
        };
        Self {
            state: if status.disabled { s.disabled } else { s.enabled },
            locked_in_directory: status.locked_in_directory.map(yes_no),
            expires: status.expires_at.map(crate::clock::format_utc),
            must_change_password: status.must_change_password.map(yes_no),
        }
    }
}

#[derive(Template)]
#[template(path = "helpdesk_user.html")]
struct UserPage {
    page: Page,
    /// This page's address, which the actions' addresses start with.
    path: String,
    id: String,
    display_name: String,
    email: String,
    mobile: String,
    status: StatusRows,
    groups: Vec<GroupRow>,
    tokens: Vec<TokenRow>,
    locks: Vec<LockRow>,
    codes: Vec<CodeRow>,
    sms: Vec<EventRow>,
    events: Vec<EventRow>,
    /// The member's own account: no temporary code for themselves.
    is_self: bool,
}

impl UserPage {
    fn of(page: Page, view: UserView, member: &str, now: UnixTime) -> Self {
        let s = page.s;
        let yes_no = |b: bool| if b { s.yes } else { s.no };
        let lock = |factor, state: LockoutState| LockRow {
            factor,
            failures: state.failures,
            locked_until: state.locked_until.filter(|until| *until > now).map_or_else(|| s.not_locked.to_owned(), crate::clock::format_utc),
        };
        let profile = &view.account.profile;
        Self {
            path: user_path(&view.account.id),
            display_name: display_name(profile.given_name.as_deref(), profile.surname.as_deref()),
            email: profile.email.clone().unwrap_or_default(),
            mobile: profile.mobile.clone().unwrap_or_default(),
            status: StatusRows::of(view.status.as_ref(), s),
            groups: view.groups.into_iter().map(|(name, member)| GroupRow { name, member: yes_no(member) }).collect(),
            tokens: view
                .tokens
                .into_iter()
                .map(|t| TokenRow {
                    id: t.id,
                    name: t.name,
                    created: date(Some(t.created_at), s.never),
                    last_used: date(t.last_used_at, s.never),
                    confirmed: yes_no(t.confirmed),
                })
                .collect(),
            locks: vec![lock(s.codes, view.code_lock), lock(s.password, view.password_lock)],
            codes: view
                .temporary_codes
                .into_iter()
                .map(|c| CodeRow { issued_by: c.issued_by, valid_until: crate::clock::format_utc(c.expires_at), uses_left: c.uses_left })
                .collect(),
            sms: view.events.iter().filter(|e| SMS_REASONS.contains(&e.reason.as_str())).map(EventRow::of).collect(),
            events: view.events.iter().map(EventRow::of).collect(),
            is_self: view.account.id == member,
            id: view.account.id,
            page,
        }
    }
}

/// The groups the help desk's view shows: the directory's required groups, then the helpdesk
/// groups, each once.
fn groups_that_matter(portal: &Portal) -> Vec<String> {
    let settings = &portal.settings;
    let mut groups: Vec<String> = Vec::new();
    for group in settings.required_groups.iter().chain(&settings.helpdesk_groups) {
        if !groups.iter().any(|g| g.eq_ignore_ascii_case(group)) {
            groups.push(group.clone());
        }
    }
    groups
}

pub async fn user(
    State(portal): State<Arc<Portal>>,
    ClientAddr(from): ClientAddr,
    helpdesk: Helpdesk,
    Path(name): Path<String>,
) -> Response {
    let Helpdesk { visit, member } = helpdesk;
    let now = visit.arrival.unix;
    match portal.auth.user_view(&name, &groups_that_matter(&portal), now).await {
        Ok(view) => {
            // Who looked at whom: the actions have the trail; a look is worth a log line.
            tracing::info!(target: "radmfa::audit", user = view.account.id.as_str(), actor = member.as_str(), via = "helpdesk", from = %from, "helpdesk view");
            // One event per member, account and 10 minutes: looks must not push the actions
            // off the user's last events.
            let key = crate::portal::limiter::LimitKey::HelpdeskViewed(member.clone(), view.account.id.clone());
            if portal.limits_audited.allow_at(&key, 1, std::time::Duration::from_secs(600), visit.arrival.instant) {
                portal.auth.record_view(&super::actor(&member, from), &view.account.id, now);
            }
            let page = visit.page(&portal, HELPDESK, None).await;
            visit.respond(render(UserPage::of(page, view, &member, now)))
        }
        Err(e) => failed(&portal, visit, e).await,
    }
}

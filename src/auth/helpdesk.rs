//! What the help desk may see and do, written once for every front end (the portal's HELPDESK
//! tab and `radmfa user show` / `temp-code`): find a user, see why they cannot log in (the
//! directory's view of the account, their tokens, locks, temporary codes and last events), and
//! unlock them, remove a token, or issue and revoke a temporary code. Every action is written
//! to the audit trail at once, with its actor; who may act is the front end's to decide (the
//! portal's `helpdesk_groups`, the CLI's access to the server).

use std::time::Duration;

use super::{Authenticator, Reason, directory_down, store_down};
use crate::directory::{Account, AccountStatus, MAX_SEARCH_RESULTS};
use crate::otp::temporary;
use crate::secret::Secret;
use crate::store::{AuditEvent, Factor, LockoutState, NewTemporaryCode, TemporaryCodeInfo, TokenInfo, UnixTime};

/// The longest search text the help desk may send.
pub const MAX_SEARCH_TEXT: usize = 64;
/// Events the user view shows.
pub const VIEW_EVENTS: usize = 50;

/// Who does an action, as the audit trail names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The helpdesk member's account id, or `cli:<local user>`.
    pub name: String,
    /// `helpdesk` (the portal) or `cli`.
    pub via: &'static str,
    /// The browser's address, for the portal.
    pub from: Option<String>,
}

/// Everything the help desk sees of one account.
#[derive(Debug)]
pub struct UserView {
    pub account: Account,
    /// What the directory says of the account; `None` if it could not say.
    pub status: Option<AccountStatus>,
    /// The groups that matter (required and helpdesk groups), each with whether the account is
    /// in it (nesting resolved); empty if none are configured or the directory could not say.
    pub groups: Vec<(String, bool)>,
    pub tokens: Vec<TokenInfo>,
    pub code_lock: LockoutState,
    pub password_lock: LockoutState,
    pub temporary_codes: Vec<TemporaryCodeInfo>,
    /// The last [`VIEW_EVENTS`] events, newest first.
    pub events: Vec<AuditEvent>,
}

/// A temporary code just issued: shown once to whoever issued it, then only sealed.
#[derive(Debug)]
pub struct IssuedCode {
    pub id: i64,
    pub code: Secret<String>,
    pub expires_at: UnixTime,
    pub uses: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum HelpdeskError {
    #[error("no such user")]
    NoSuchUser,
    /// What was asked cannot be done as asked (the message says why, for the form).
    #[error("{0}")]
    Invalid(String),
    /// The directory has the account disabled, locked or expired: no code is issued to it.
    #[error("the account is disabled, locked or expired in the directory: no code is issued")]
    AccountUnusable,
    /// The directory or the store could not answer.
    #[error("{}", .0.as_str())]
    Unavailable(Reason),
}

impl From<Reason> for HelpdeskError {
    fn from(reason: Reason) -> Self {
        match reason {
            Reason::Directory(crate::directory::Denial::NoSuchUser) => Self::NoSuchUser,
            other => Self::Unavailable(other),
        }
    }
}

/// Whether the directory lets the account log in now (not disabled, locked or expired).
fn usable(status: &AccountStatus, now: UnixTime) -> bool {
    !status.disabled && status.locked_in_directory != Some(true) && status.expires_at.is_none_or(|at| at > now)
}

/// Search text the directory may be asked for: trimmed, 2 to [`MAX_SEARCH_TEXT`] characters,
/// no control characters (LDAP escapes the rest).
pub fn search_text(text: &str) -> Result<&str, HelpdeskError> {
    let text = text.trim();
    let n = text.chars().count();
    if n < 2 {
        return Err(HelpdeskError::Invalid("type at least 2 characters".into()));
    }
    if n > MAX_SEARCH_TEXT || text.chars().any(char::is_control) {
        return Err(HelpdeskError::Invalid(format!("at most {MAX_SEARCH_TEXT} characters, no control characters")));
    }
    Ok(text)
}

impl Authenticator {
    /// What a temporary code may be issued for now (`[helpdesk]`): what a front end offers.
    pub fn temporary_code_limits(&self) -> super::settings::HelpdeskSettings {
        self.settings().helpdesk
    }

    /// Accounts whose name, display name or mail contains `text`, at most
    /// [`MAX_SEARCH_RESULTS`].
    pub async fn find_users(&self, text: &str) -> Result<Vec<Account>, HelpdeskError> {
        let text = search_text(text)?;
        self.directory().search(text, MAX_SEARCH_RESULTS).await.map_err(|e| HelpdeskError::Unavailable(directory_down(&e, "searched")))
    }

    /// The account `name` denotes (any spelling a user may type).
    pub async fn lookup(&self, name: &str) -> Result<Account, HelpdeskError> {
        let valid = super::valid_user_name(name.as_bytes()).ok_or(HelpdeskError::NoSuchUser)?;
        Ok(self.find(&self.settings().usernames.login_name(valid)).await?)
    }

    /// Which of `groups` the account is in (nesting resolved).
    pub async fn member_of(&self, account: &Account, groups: &[String]) -> Result<Vec<String>, HelpdeskError> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        self.directory().member_of(account, groups).await.map_err(|e| HelpdeskError::Unavailable(directory_down(&e, "read groups")))
    }

    /// Whether the account `id` (as a signed-in session names it) holds a role given by
    /// `groups`: in one of them, and usable — not disabled, locked or expired in the
    /// directory. Asked of the directory at each use, so that leaving the group, or an account
    /// disabled to offboard someone, ends it at the next request.
    pub async fn in_any_group(&self, id: &str, groups: &[String], now: UnixTime) -> Result<bool, HelpdeskError> {
        if groups.is_empty() {
            return Ok(false);
        }
        let account = match self.lookup(id).await {
            // A renamed or removed account holds no role, whatever its session says.
            Ok(account) if account.id == id => account,
            Ok(_) | Err(HelpdeskError::NoSuchUser) => return Ok(false),
            Err(e) => return Err(e),
        };
        let directory = self.directory();
        let (member, status) = tokio::join!(self.member_of(&account, groups), directory.account_status(&account));
        let status = status.map_err(|e| HelpdeskError::Unavailable(directory_down(&e, "read an account's status")))?;
        Ok(!member?.is_empty() && usable(&status, now))
    }

    /// Everything the help desk sees of the account `name` denotes. `groups` are those that
    /// matter (shown with whether the account is in each).
    pub async fn user_view(&self, name: &str, groups: &[String], now: UnixTime) -> Result<UserView, HelpdeskError> {
        let account = self.lookup(name).await?;
        let id = account.id.as_str();
        // Events of this node still queued are written first, so the view shows them.
        if let Err(e) = self.trail.flush(self.store.as_ref()).await {
            tracing::warn!(error = %e, "the audit trail could not be written before a helpdesk view");
        }
        let settings = self.settings();
        let store = &self.store;
        let directory = self.directory();
        let (status, member, tokens, code_lock, password_lock, temporary_codes, events) = tokio::join!(
            directory.account_status(&account),
            self.member_of(&account, groups),
            store.list_tokens(Some(id)),
            store.lockout_state(id, Factor::Code, now, settings.lockout),
            store.lockout_state(id, Factor::Password, now, settings.password_lockout),
            store.list_temporary_codes(Some(id), now),
            store.events(id, VIEW_EVENTS),
        );
        let status = status.inspect_err(|e| tracing::warn!(error = %e, "the directory could not tell an account's status")).ok();
        let member = member.unwrap_or_default();
        let groups = groups.iter().map(|g| (g.clone(), member.contains(g))).collect();
        let unavailable = |e| HelpdeskError::Unavailable(store_down(e));
        Ok(UserView {
            status,
            groups,
            tokens: tokens.map_err(unavailable)?,
            code_lock: code_lock.map_err(unavailable)?,
            password_lock: password_lock.map_err(unavailable)?,
            temporary_codes: temporary_codes.map_err(unavailable)?,
            events: events.map_err(unavailable)?,
            account,
        })
    }

    /// Clears both factors' locks and failure counts. True if there was anything to clear.
    pub async fn unlock_user(&self, actor: &Actor, account: &str, now: UnixTime) -> Result<bool, HelpdeskError> {
        let cleared = self.store.unlock(account).await.map_err(store_down)?;
        self.record_action(actor, account, "unlock", if cleared { "unlocked" } else { "nothing_to_unlock" }, None, now).await;
        Ok(cleared)
    }

    /// Removes one of the account's tokens (a lost phone). False if it has no such token.
    pub async fn remove_user_token(&self, actor: &Actor, account: &str, token_id: i64, now: UnixTime) -> Result<bool, HelpdeskError> {
        let name = self.store.list_tokens(Some(account)).await.map_err(store_down)?.into_iter().find(|t| t.id == token_id).map(|t| t.name);
        let Some(name) = name else { return Ok(false) };
        let removed = self.store.remove_token(account, token_id).await.map_err(store_down)?;
        if removed {
            // Whoever holds the lost phone may have a session opened with it.
            self.end_sessions(account).await;
            let detail = format!("token {token_id} \"{}\"", super::shown(&name));
            self.record_action(actor, account, "remove_token", "removed", Some(detail), now).await;
        }
        Ok(removed)
    }

    /// Issues a temporary code for `validity` and `uses` logins, in place of any the account
    /// had: accepted by RADIUS and the portal in place of an app's code.
    pub async fn issue_temporary_code(
        &self,
        actor: &Actor,
        account: &str,
        validity: Duration,
        uses: u32,
        now: UnixTime,
    ) -> Result<IssuedCode, HelpdeskError> {
        let limits = self.settings().helpdesk;
        if validity < Duration::from_secs(60) || validity > limits.max_temporary_code_validity {
            return Err(HelpdeskError::Invalid(format!(
                "the validity must be at least 1m and at most {}",
                humantime::format_duration(limits.max_temporary_code_validity)
            )));
        }
        // A code for an account that cannot log in would wait for it to be enabled again.
        let found = self.lookup(account).await?;
        let status = self
            .directory()
            .account_status(&found)
            .await
            .map_err(|e| HelpdeskError::Unavailable(directory_down(&e, "read an account's status")))?;
        if !usable(&status, now) {
            return Err(HelpdeskError::AccountUnusable);
        }
        if uses == 0 || uses > limits.max_temporary_code_uses {
            return Err(HelpdeskError::Invalid(format!("the uses must be from 1 to {}", limits.max_temporary_code_uses)));
        }
        let code = temporary::generate();
        let expires_at = now.saturating_add(validity.as_secs() as UnixTime);
        let new = NewTemporaryCode {
            username: account.to_owned(),
            code: code.clone(),
            issued_by: actor.name.clone(),
            issued_at: now,
            expires_at,
            uses,
        };
        let (id, replaced) = self.store.add_temporary_code(new).await.map_err(store_down)?;
        let mut detail = format!("code {id}, valid until {}, {uses} use(s)", crate::clock::format_utc(expires_at));
        if replaced > 0 {
            detail.push_str(&format!(", replacing {replaced}"));
            // A session the replaced code opened ends with it.
            self.end_sessions(account).await;
        }
        self.record_action(actor, account, "issue_temporary_code", "issued", Some(detail), now).await;
        Ok(IssuedCode { id, code, expires_at, uses })
    }

    /// Revokes the account's temporary codes. Returns how many were live.
    pub async fn revoke_temporary_codes(&self, actor: &Actor, account: &str, now: UnixTime) -> Result<usize, HelpdeskError> {
        let revoked = self.store.revoke_temporary_codes(account, None).await.map_err(store_down)?;
        // A code handed to the wrong caller must not leave them a session to enroll in.
        let ended = self.end_sessions(account).await;
        let detail = format!("{revoked} code(s), {ended} portal session(s) ended");
        self.record_action(actor, account, "revoke_temporary_code", if revoked > 0 { "revoked" } else { "none_live" }, Some(detail), now)
            .await;
        Ok(revoked)
    }

    /// Ends the account's portal sessions (what an action took away may have opened one).
    /// Returns how many; a store that fails is logged, the action done.
    async fn end_sessions(&self, account: &str) -> usize {
        self.store.end_sessions(account).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, user = account, "the account's portal sessions could not be ended");
            0
        })
    }

    /// That a helpdesk member looked at an account (in the trail, through the queue).
    pub fn record_view(&self, actor: &Actor, account: &str, now: UnixTime) {
        self.trail.push(AuditEvent {
            at: now,
            account: account.to_owned(),
            action: "helpdesk_view".to_owned(),
            client: actor.via.to_owned(),
            from: actor.from.clone(),
            result: "ok".to_owned(),
            reason: "viewed".to_owned(),
            actor: Some(actor.name.clone()),
            detail: None,
        });
    }

    /// Writes an action's event at once (not through the queue): an action is rare, and its
    /// record must not be lost with a queue. A store that fails here is logged: the action is
    /// done, and the log line has it.
    async fn record_action(&self, actor: &Actor, account: &str, action: &str, reason: &str, detail: Option<String>, now: UnixTime) {
        tracing::info!(
            target: "radmfa::audit",
            user = account,
            actor = actor.name.as_str(),
            via = actor.via,
            from = actor.from.as_deref().unwrap_or_default(),
            action,
            reason,
            detail = detail.as_deref().unwrap_or_default(),
            "helpdesk action"
        );
        let event = AuditEvent {
            at: now,
            account: account.to_owned(),
            action: action.to_owned(),
            client: actor.via.to_owned(),
            from: actor.from.clone(),
            result: "ok".to_owned(),
            reason: reason.to_owned(),
            actor: Some(actor.name.clone()),
            detail,
        };
        if let Err(e) = self.store.record_events(vec![event]).await {
            tracing::error!(error = %e, user = account, action, "a helpdesk action could not be written to the audit trail (the log line above has it)");
        }
    }
}

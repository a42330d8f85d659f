//! The help desk's work from a shell: `radmfa user show NAME` (the same view as the portal's
//! HELPDESK tab), `user unlock`, and `radmfa temp-code issue|revoke|list`. Each goes through
//! `auth::helpdesk`, as the portal does, so every action is in the audit trail — its actor
//! `cli:` and the local user who ran it.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::admin::runtime;
use super::{CliError, open_authenticator};
use crate::auth::helpdesk::{Actor, HelpdeskError, UserView};
use crate::auth::{Authenticator, shown};
use crate::clock::format_utc;
use crate::config::Config;
use crate::directory::settings::DirectorySettings;
use crate::store::AuditEvent;

/// Who runs the command, as the audit trail names them: the user behind `sudo` when there is
/// one (root alone says little about who it was) — which the environment says, so the uid the
/// command really runs as goes beside it.
fn actor() -> Actor {
    use std::os::unix::fs::MetadataExt;
    let user = ["SUDO_USER", "USER", "LOGNAME"].iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    // /proc/self belongs to the process's own user.
    let uid = std::fs::metadata("/proc/self").map_or_else(|_| "uid unknown".to_owned(), |m| format!("uid {}", m.uid()));
    let name = match user {
        Some(user) => format!("cli:{} ({uid})", crate::auth::shown(&user)),
        None => format!("cli:{uid}"),
    };
    Actor { name, via: "cli", from: None }
}

/// The groups whose membership the view shows: the directory's required groups and the
/// portal's helpdesk groups.
pub(crate) fn groups_that_matter(config: &Config) -> Vec<String> {
    let mut groups = match &config.directory {
        DirectorySettings::Ldap(ldap) => ldap.required_groups.clone(),
        DirectorySettings::File { .. } => Vec::new(),
    };
    for group in config.portal.iter().flat_map(|p| &p.helpdesk_groups) {
        if !groups.iter().any(|g| g.eq_ignore_ascii_case(group)) {
            groups.push(group.clone());
        }
    }
    groups
}

fn failed(e: HelpdeskError, user: &str) -> CliError {
    match e {
        HelpdeskError::NoSuchUser => format!("the directory has no user {}", shown(user)).into(),
        HelpdeskError::Invalid(why) => why.into(),
        HelpdeskError::AccountUnusable => HelpdeskError::AccountUnusable.to_string().into(),
        HelpdeskError::Unavailable(reason) => format!("could not be done now: {}", reason.as_str()).into(),
    }
}

/// The account id `user` denotes; the directory must know it (actions are on accounts).
async fn account(auth: &Authenticator, user: &str) -> Result<String, CliError> {
    auth.lookup(user).await.map(|a| a.id).map_err(|e| failed(e, user))
}

pub fn show(config_path: &Path, user: &str, events: usize) -> Result<(), CliError> {
    let config = Config::load(config_path)?;
    let rt = runtime()?;
    let (auth, _store) = rt.block_on(open_authenticator(&config))?;
    let now = crate::clock::now();
    let view = rt.block_on(auth.user_view(user, &groups_that_matter(&config), now)).map_err(|e| failed(e, user))?;
    print_view(&mut std::io::stdout().lock(), &view, events, now)?;
    Ok(())
}

fn print_view(out: &mut impl Write, view: &UserView, events: usize, now: i64) -> std::io::Result<()> {
    let p = &view.account.profile;
    let name = [p.given_name.as_deref(), p.surname.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
    writeln!(out, "User {}  {}", shown(&view.account.id), shown(&name))?;
    writeln!(out, "  entry:    {}", shown(&view.account.locator))?;
    writeln!(out, "  mail:     {}", shown(p.email.as_deref().unwrap_or("-")))?;
    writeln!(out, "  mobile:   {}", shown(p.mobile.as_deref().unwrap_or("-")))?;
    match &view.status {
        Some(s) => {
            let mut said = vec![if s.disabled { "DISABLED" } else { "enabled" }.to_owned()];
            if s.locked_in_directory == Some(true) {
                said.push("LOCKED in the directory".into());
            }
            if s.must_change_password == Some(true) {
                said.push("must change password".into());
            }
            if let Some(at) = s.expires_at {
                said.push(format!("{} {}", if at <= now { "EXPIRED" } else { "expires" }, format_utc(at)));
            }
            writeln!(out, "  account:  {}", said.join(", "))?;
        }
        None => writeln!(out, "  account:  (the directory could not say)")?,
    }
    for (group, member) in &view.groups {
        writeln!(out, "  group:    {} {}", if *member { "member of" } else { "NOT in" }, shown(group))?;
    }
    let lock = |l: &crate::store::LockoutState| match l.locked_until {
        Some(until) => format!("LOCKED until {} ({} failures)", format_utc(until), l.failures),
        None => format!("not locked ({} recent failures)", l.failures),
    };
    writeln!(out, "  codes:    {}", lock(&view.code_lock))?;
    writeln!(out, "  password: {}", lock(&view.password_lock))?;
    writeln!(out, "Tokens ({}):", view.tokens.len())?;
    for t in &view.tokens {
        let used = t.last_used_at.map_or_else(|| "never used".to_owned(), |at| format!("last used {}", format_utc(at)));
        let state = if t.confirmed { "" } else { "  (enrollment not confirmed)" };
        writeln!(out, "  {:>5}  {}  created {}, {used}{state}", t.id, shown(&t.name), format_utc(t.created_at))?;
    }
    writeln!(out, "Temporary codes ({}):", view.temporary_codes.len())?;
    for c in &view.temporary_codes {
        writeln!(
            out,
            "  {:>5}  valid until {}, {} use(s) left, issued {} by {}",
            c.id,
            format_utc(c.expires_at),
            c.uses_left,
            format_utc(c.issued_at),
            shown(&c.issued_by)
        )?;
    }
    writeln!(out, "Last events (newest first):")?;
    for e in view.events.iter().take(events) {
        writeln!(out, "  {}", event_line(e))?;
    }
    Ok(())
}

/// One event on one line: when, what, where from, how it went, and who did it.
fn event_line(e: &AuditEvent) -> String {
    let mut line =
        format!("{}  {:<22} {:<10} {:<9} {}", format_utc(e.at), shown(&e.action), shown(&e.client), shown(&e.result), shown(&e.reason));
    if let Some(from) = &e.from {
        line.push_str(&format!("  from {}", shown(from)));
    }
    if let Some(actor) = &e.actor {
        line.push_str(&format!("  by {}", shown(actor)));
    }
    if let Some(detail) = &e.detail {
        line.push_str(&format!("  ({})", shown(detail)));
    }
    line
}

pub fn unlock(config_path: &Path, user: &str) -> Result<(), CliError> {
    let config = Config::load(config_path)?;
    let rt = runtime()?;
    let (auth, _store) = rt.block_on(open_authenticator(&config))?;
    let id = rt.block_on(account(&auth, user))?;
    let cleared = rt.block_on(auth.unlock_user(&actor(), &id, crate::clock::now())).map_err(|e| failed(e, user))?;
    let mut out = std::io::stdout().lock();
    if cleared {
        writeln!(out, "{}: failure counts and locks cleared (password and code)", shown(&id))?;
    } else {
        writeln!(out, "{} was not locked", shown(&id))?;
    }
    Ok(())
}

pub fn issue(config_path: &Path, user: &str, validity: Duration, uses: u32) -> Result<(), CliError> {
    let config = Config::load(config_path)?;
    // Sealed with the key file's current key: not while `keys rotate` drops one.
    let _keys_kept = super::admin::lock_keys(&config, false)?;
    let rt = runtime()?;
    let (auth, _store) = rt.block_on(open_authenticator(&config))?;
    let id = rt.block_on(account(&auth, user))?;
    let issued = rt.block_on(auth.issue_temporary_code(&actor(), &id, validity, uses, crate::clock::now())).map_err(|e| failed(e, user))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Temporary code for {}: {}\nValid until {}, for {} login(s), in place of the app's code (appended to the password, or at the prompt).\nIt is shown only now; `radmfa temp-code revoke {}` ends it.",
        shown(&id),
        issued.code.expose(),
        format_utc(issued.expires_at),
        issued.uses,
        shown(&id)
    )?;
    Ok(())
}

pub fn revoke(config_path: &Path, user: &str) -> Result<(), CliError> {
    let config = Config::load(config_path)?;
    let rt = runtime()?;
    let (auth, _store) = rt.block_on(open_authenticator(&config))?;
    let id = rt.block_on(account(&auth, user))?;
    let revoked = rt.block_on(auth.revoke_temporary_codes(&actor(), &id, crate::clock::now())).map_err(|e| failed(e, user))?;
    let mut out = std::io::stdout().lock();
    match revoked {
        0 => writeln!(out, "{} had no live temporary code", shown(&id))?,
        n => writeln!(out, "{}: {n} temporary code(s) revoked", shown(&id))?,
    }
    Ok(())
}

pub fn list(config_path: &Path, user: Option<&str>) -> Result<(), CliError> {
    let config = Config::load(config_path)?;
    let rt = runtime()?;
    let (auth, store) = rt.block_on(open_authenticator(&config))?;
    let id = match user {
        Some(user) => Some(rt.block_on(account(&auth, user))?),
        None => None,
    };
    let codes = rt.block_on(store.list_temporary_codes(id.as_deref(), crate::clock::now()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:>5}  {:<20} {:<22} {:>9}  issued by", "id", "user", "valid until", "uses left")?;
    for c in codes {
        writeln!(
            out,
            "{:>5}  {:<20} {:<22} {:>9}  {}",
            c.id,
            shown(&c.username),
            format_utc(c.expires_at),
            c.uses_left,
            shown(&c.issued_by)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_line_escapes_what_clients_sent() {
        let e = AuditEvent {
            at: 0,
            account: "alice".into(),
            action: "radius".into(),
            client: "nas".into(),
            from: Some("evil\u{202e}txt".into()),
            result: "reject".into(),
            reason: "wrong_code".into(),
            actor: None,
            detail: Some("line\nbreak".into()),
        };
        let line = event_line(&e);
        assert!(line.starts_with("1970-01-01 00:00 UTC  radius"));
        assert!(line.contains("evil\\u{202e}txt") && line.contains("line\\nbreak"), "{line}");
    }
}

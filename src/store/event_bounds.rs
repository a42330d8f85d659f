//! How much of the audit trail a caller can make the store hold or hand back, the same in every
//! backend: each text field of an event cut to a fixed number of bytes (at a character
//! boundary), NUL characters replaced, and a read's row count clamped.
//!
//! The fields carry what clients send (a User-Name, a Calling-Station-Id) and what admins type
//! (a token's name in a detail), so without a bound one request could make every later read of
//! the account heavy. NUL goes because PostgreSQL's TEXT refuses it: one such event would fail
//! its whole batch, and the trail's writer would retry that batch for ever.

use std::borrow::Cow;

use super::AuditEvent;

/// The most events one read returns, whatever limit it asks for.
pub const MAX_EVENTS_READ: usize = 1_000;

/// Bytes kept of each field: names and addresses get room for the longest real ones (a UPN, an
/// IPv6 address with a zone, a Calling-Station-Id), the words radmfa writes itself less.
pub const MAX_ACCOUNT: usize = 256;
pub const MAX_ACTION: usize = 64;
pub const MAX_CLIENT: usize = 256;
pub const MAX_FROM: usize = 256;
pub const MAX_RESULT: usize = 32;
pub const MAX_REASON: usize = 128;
pub const MAX_ACTOR: usize = 256;
pub const MAX_DETAIL: usize = 1_024;

/// What takes a NUL's place (U+FFFD, the replacement character).
const NUL_STANDIN: &str = "\u{fffd}";

/// The event as the store keeps it: every field within its bound.
pub fn bounded(event: AuditEvent) -> AuditEvent {
    let AuditEvent { at, account, action, client, from, result, reason, actor, detail } = event;
    AuditEvent {
        at,
        account: kept(account, MAX_ACCOUNT),
        action: kept(action, MAX_ACTION),
        client: kept(client, MAX_CLIENT),
        from: from.map(|from| kept(from, MAX_FROM)),
        result: kept(result, MAX_RESULT),
        reason: kept(reason, MAX_REASON),
        actor: actor.map(|actor| kept(actor, MAX_ACTOR)),
        detail: detail.map(|detail| kept(detail, MAX_DETAIL)),
    }
}

/// The account as [`bounded`] keeps it, to look its events up by.
pub fn account_key(account: &str) -> Cow<'_, str> {
    if account.len() <= MAX_ACCOUNT && !account.contains('\0') {
        return Cow::Borrowed(account);
    }
    Cow::Owned(kept(account.to_owned(), MAX_ACCOUNT))
}

/// How many events a read asks for, at most [`MAX_EVENTS_READ`].
pub fn read_limit(limit: usize) -> usize {
    limit.min(MAX_EVENTS_READ)
}

/// `text` without NUL, cut to at most `max` bytes at a character boundary.
fn kept(text: String, max: usize) -> String {
    let mut text = if text.contains('\0') { text.replace('\0', NUL_STANDIN) } else { text };
    if text.len() > max {
        let end = (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(account: &str, detail: Option<&str>) -> AuditEvent {
        AuditEvent {
            at: 1,
            account: account.to_owned(),
            action: "radius".to_owned(),
            client: "vpn".to_owned(),
            from: Some("192.0.2.7".to_owned()),
            result: "reject".to_owned(),
            reason: "wrong_code".to_owned(),
            actor: None,
            detail: detail.map(str::to_owned),
        }
    }

    #[test]
    fn fields_within_their_bounds_are_kept_as_they_are() {
        let e = event("alice@example.test", Some("token \"phone\""));
        assert_eq!(bounded(e.clone()), e);
        assert!(matches!(account_key("alice@example.test"), Cow::Borrowed(_)));
    }

    #[test]
    fn long_fields_are_cut_at_a_character_boundary() {
        // "€" is three bytes: 256 is not a multiple of three, so the cut falls inside one.
        let long = "€".repeat(200);
        let kept = bounded(event(&long, Some(&"é".repeat(600))));
        assert_eq!(kept.account, "€".repeat(85), "255 bytes: the 86th euro would pass 256");
        assert_eq!(kept.detail.as_deref(), Some("é".repeat(512).as_str()), "1,024 bytes exactly");
        assert_eq!(account_key(&long), kept.account, "the account is looked up as it is kept");
        let ascii = bounded(event(&"a".repeat(300), None));
        assert_eq!(ascii.account.len(), MAX_ACCOUNT);
    }

    #[test]
    fn nul_is_replaced_before_the_cut() {
        let kept = bounded(event("bad\0name", Some("x\0y")));
        assert_eq!(kept.account, "bad\u{fffd}name");
        assert_eq!(kept.detail.as_deref(), Some("x\u{fffd}y"));
        assert_eq!(account_key("bad\0name"), "bad\u{fffd}name");
        // A NUL at the bound grows to three bytes: still within it.
        let at_bound = format!("{}\0", "a".repeat(MAX_ACCOUNT - 1));
        assert_eq!(bounded(event(&at_bound, None)).account, "a".repeat(MAX_ACCOUNT - 1));
    }

    #[test]
    fn reads_are_clamped() {
        assert_eq!(read_limit(0), 0);
        assert_eq!(read_limit(50), 50);
        assert_eq!(read_limit(usize::MAX), MAX_EVENTS_READ);
    }
}

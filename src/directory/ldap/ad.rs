//! What Active Directory says of an account: why it refused a bind (the sub-code in the
//! diagnostic text of result 49, `data 52e`, `data 775`, ..., which becomes the audit reason),
//! and whether it lets the account log in at all (`userAccountControl`, its lockout,
//! `accountExpires`, `pwdLastSet`), which the help desk sees. Other LDAP servers have none of
//! these attributes: nothing is known then, and nothing is wrong.

use ldap3::SearchEntry;

use super::values;
use crate::directory::{AccountStatus, Denial};

/// userAccountControl: ACCOUNTDISABLE.
const UF_ACCOUNTDISABLE: i64 = 0x2;
/// msDS-User-Account-Control-Computed: LOCKOUT.
const UF_LOCKOUT: i64 = 0x10;
/// A FILETIME (100 ns since 1601-01-01 UTC) of the Unix epoch, in seconds.
const FILETIME_UNIX_EPOCH_SECONDS: i64 = 11_644_473_600;
const FILETIME_TICKS_PER_SECOND: i64 = 10_000_000;
/// `accountExpires` of an account that never expires (besides 0).
const NEVER: i64 = 0x7FFF_FFFF_FFFF_FFFF;

/// What a base read of an account's entry asks for: AD's account state. The computed
/// attribute is given only when named, and only by a base read; it says whether the lockout is
/// still in force, which `lockoutTime` alone does not (AD clears it only at the next logon).
pub(super) const STATUS_ATTRIBUTES: [&str; 5] =
    ["userAccountControl", "msDS-User-Account-Control-Computed", "lockoutTime", "accountExpires", "pwdLastSet"];

/// Why AD refused a bind (result 49), from its diagnostic text; a wrong password when it says
/// no more.
pub(super) fn bind_denial(text: &str) -> Denial {
    ad_sub_code(text).map_or(Denial::WrongPassword, denial_of)
}

/// The AD sub-code in a bind error's diagnostic text: "... AcceptSecurityContext error, data 52e, v4563".
fn ad_sub_code(text: &str) -> Option<&str> {
    let rest = &text[text.find("data ")? + 5..];
    let code = rest.split([',', ' ']).next()?;
    (!code.is_empty() && code.chars().all(|c| c.is_ascii_hexdigit())).then_some(code)
}

/// The Active Directory bind sub-code (`data 52e` in the diagnostic text of result 49).
fn denial_of(code: &str) -> Denial {
    match code.to_ascii_lowercase().as_str() {
        "525" => Denial::NoSuchUser,
        "530" => Denial::NotPermittedNow,
        "531" => Denial::NotPermittedHere,
        "532" => Denial::PasswordExpired,
        "533" => Denial::AccountDisabled,
        "701" => Denial::AccountExpired,
        "773" => Denial::MustChangePassword,
        "775" => Denial::AccountLocked,
        _ => Denial::WrongPassword, // 52e, and anything AD adds later
    }
}

/// The account's state from its entry's [`STATUS_ATTRIBUTES`]. An attribute that is absent
/// (or holds no number) is not known: an LDAP server other than AD gives none of them.
pub(super) fn account_status(entry: &SearchEntry) -> AccountStatus {
    let number = |name: &str| {
        let value = values(entry, name).first()?;
        let parsed = value.trim().parse::<i64>();
        if parsed.is_err() {
            tracing::debug!(dn = %entry.dn, attribute = name, "not a number; taken as absent");
        }
        parsed.ok()
    };
    let control = number("userAccountControl");
    let locked = match (number("msDS-User-Account-Control-Computed"), number("lockoutTime")) {
        (Some(computed), _) => Some(computed & UF_LOCKOUT != 0),
        (None, Some(since)) => Some(since > 0),
        // AD writes lockoutTime at the first lockout only.
        (None, None) => control.map(|_| false),
    };
    AccountStatus {
        disabled: control.is_some_and(|c| c & UF_ACCOUNTDISABLE != 0),
        locked_in_directory: locked,
        expires_at: number("accountExpires").and_then(filetime_to_unix),
        must_change_password: number("pwdLastSet").map(|set| set == 0),
    }
}

/// A FILETIME as Unix time (seconds, negative before 1970); `None` for AD's "never" (0 and
/// the largest value) and for what is no time at all (negative).
fn filetime_to_unix(filetime: i64) -> Option<i64> {
    match filetime {
        0 | NEVER | i64::MIN..0 => None,
        ticks => Some(ticks / FILETIME_TICKS_PER_SECOND - FILETIME_UNIX_EPOCH_SECONDS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn entry(attrs: &[(&str, &str)]) -> SearchEntry {
        SearchEntry {
            dn: "CN=alice,CN=Users,DC=example,DC=test".into(),
            attrs: attrs.iter().map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()])).collect(),
            bin_attrs: HashMap::new(),
        }
    }

    #[test]
    fn filetimes_become_unix_time_and_never_is_none() {
        assert_eq!(filetime_to_unix(116_444_736_000_000_000), Some(0), "the Unix epoch");
        // 2030-01-01T00:00:00Z = 1893456000.
        assert_eq!(filetime_to_unix(135_379_296_000_000_000), Some(1_893_456_000), "2030-01-01");
        assert_eq!(filetime_to_unix(130_645_440_000_000_000), Some(1_420_070_400), "2015-01-01");
        assert_eq!(filetime_to_unix(130_645_440_009_999_999), Some(1_420_070_400), "within the second");
        assert_eq!(filetime_to_unix(1), Some(-FILETIME_UNIX_EPOCH_SECONDS), "1601: long expired");
        assert_eq!(filetime_to_unix(0), None);
        assert_eq!(filetime_to_unix(0x7FFF_FFFF_FFFF_FFFF), None);
        assert_eq!(filetime_to_unix(-5), None);
    }

    #[test]
    fn an_ad_account_state_is_read_from_its_attributes() {
        let well = account_status(&entry(&[
            ("userAccountControl", "512"),
            ("msDS-User-Account-Control-Computed", "0"),
            ("accountExpires", "9223372036854775807"),
            ("pwdLastSet", "133801344000000000"),
        ]));
        let expected =
            AccountStatus { disabled: false, locked_in_directory: Some(false), expires_at: None, must_change_password: Some(false) };
        assert_eq!(well, expected);
        let unwell = account_status(&entry(&[
            ("userAccountControl", "514"),
            ("msDS-User-Account-Control-Computed", "16"),
            ("lockoutTime", "0"),
            ("accountExpires", "130645440000000000"),
            ("pwdLastSet", "0"),
        ]));
        let expected = AccountStatus {
            disabled: true,
            locked_in_directory: Some(true),
            expires_at: Some(1_420_070_400),
            must_change_password: Some(true),
        };
        assert_eq!(unwell, expected, "the computed lockout wins over lockoutTime");
    }

    #[test]
    fn lockout_time_counts_only_without_the_computed_attribute() {
        let locked = account_status(&entry(&[("userAccountControl", "512"), ("lockoutTime", "133801344000000000")]));
        assert_eq!(locked.locked_in_directory, Some(true));
        let passed = account_status(&entry(&[
            ("userAccountControl", "512"),
            ("lockoutTime", "133801344000000000"),
            ("msDS-User-Account-Control-Computed", "0"),
        ]));
        assert_eq!(passed.locked_in_directory, Some(false), "the lockout duration has passed");
        let never = account_status(&entry(&[("userAccountControl", "512")]));
        assert_eq!(never.locked_in_directory, Some(false), "AD without lockoutTime: never locked");
    }

    #[test]
    fn another_ldap_server_gives_nothing_and_nothing_is_wrong() {
        assert_eq!(account_status(&entry(&[("cn", "alice"), ("mail", "alice@example.test")])), AccountStatus::default());
        let garbage = account_status(&entry(&[("userAccountControl", "x2"), ("accountExpires", ""), ("pwdLastSet", "soon")]));
        assert_eq!(garbage, AccountStatus::default(), "values that are no numbers are not known");
        let names_in_other_case = account_status(&entry(&[("useraccountcontrol", "514"), ("PWDLASTSET", "0")]));
        assert!(names_in_other_case.disabled);
        assert_eq!(names_in_other_case.must_change_password, Some(true));
    }

    #[test]
    fn ad_sub_codes_are_read_from_the_diagnostic_text() {
        let text = "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 52e, v1db1";
        assert_eq!(ad_sub_code(text), Some("52e"));
        assert_eq!(ad_sub_code("... data 775, v4563").map(denial_of), Some(Denial::AccountLocked));
        assert_eq!(denial_of("533"), Denial::AccountDisabled);
        assert_eq!(denial_of("773"), Denial::MustChangePassword);
        assert_eq!(ad_sub_code("Invalid credentials"), None);
        assert_eq!(ad_sub_code("data , v1"), None);
        assert_eq!(bind_denial("Invalid credentials"), Denial::WrongPassword);
        assert_eq!(bind_denial("AcceptSecurityContext error, data 533, v1db1"), Denial::AccountDisabled);
    }
}

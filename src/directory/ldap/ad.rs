//! What Active Directory's refused binds mean: the sub-code in the diagnostic text of result 49
//! (`data 52e`, `data 775`, ...) names why, and becomes the audit reason.

use crate::directory::Denial;

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

#[cfg(test)]
mod tests {
    use super::*;

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

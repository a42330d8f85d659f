//! Distinguished names as AD writes them (RFC 4514): split at the commas that are not escaped,
//! and values unescaped, so that `CN=Smith\, John,OU=Groups` is the group `Smith, John`.

use std::borrow::Cow;

/// The RDNs of a DN (`CN=x`, `OU=y`, ...), split at unescaped commas, as written.
pub fn rdns(dn: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in dn.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            out.push(&dn[start..i]);
            start = i + 1;
        }
    }
    out.push(&dn[start..]);
    out
}

/// An attribute value with its escapes (`\,`, `\+`, `\\`, `\2C`, UTF-8 as `\C3\A5`...) undone.
/// A value whose escapes do not make UTF-8 is returned as written.
pub fn unescape(value: &str) -> Cow<'_, str> {
    if !value.contains('\\') {
        return Cow::Borrowed(value);
    }
    let bytes = value.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            match (hex(bytes[i + 1]), bytes.get(i + 2).and_then(|&b| hex(b))) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                }
                _ => {
                    out.push(bytes[i + 1]);
                    i += 2;
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_or(Cow::Borrowed(value), Cow::Owned)
}

/// The `DC=` RDNs that end a DN (an AD domain's naming context), as written, if any.
pub fn domain_of(dn: &str) -> Option<&str> {
    let parts = rdns(dn);
    let mut start = None;
    let mut at = 0;
    for part in parts {
        let is_dc = part.trim_start().get(..3).is_some_and(|k| k.eq_ignore_ascii_case("dc="));
        match (is_dc, start) {
            (true, None) => start = Some(at + (part.len() - part.trim_start().len())),
            (false, Some(_)) => start = None,
            _ => {}
        }
        at += part.len() + 1;
    }
    start.map(|s| &dn[s..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_commas_do_not_split() {
        assert_eq!(rdns("CN=Smith\\, John,OU=Groups,DC=example"), vec!["CN=Smith\\, John", "OU=Groups", "DC=example"]);
        assert_eq!(rdns("CN=a\\\\,OU=b"), vec!["CN=a\\\\", "OU=b"], "an escaped backslash ends before the comma");
        assert_eq!(rdns("CN=a\\2C b,OU=c"), vec!["CN=a\\2C b", "OU=c"]);
        assert_eq!(rdns("CN=x"), vec!["CN=x"]);
    }

    #[test]
    fn values_are_unescaped() {
        assert_eq!(unescape("Smith\\, John"), "Smith, John");
        assert_eq!(unescape("VPN\\+Ops"), "VPN+Ops");
        assert_eq!(unescape("a\\2Cb"), "a,b");
        assert_eq!(unescape("\\C3\\85sa"), "Åsa");
        assert_eq!(unescape("back\\\\slash"), "back\\slash");
        assert_eq!(unescape("plain"), "plain");
        assert_eq!(unescape("bad\\FF"), "bad\\FF", "not UTF-8: as written");
        assert_eq!(unescape("trailing\\"), "trailing\\");
    }

    #[test]
    fn the_domain_is_the_dc_rdns_that_end_a_dn() {
        assert_eq!(domain_of("CN=Staff,OU=Groups,DC=example,DC=test"), Some("DC=example,DC=test"));
        assert_eq!(domain_of("cn=x, dc=Example, dc=test"), Some("dc=Example, dc=test"));
        assert_eq!(domain_of("CN=x\\, DC=foo,OU=a"), None, "an escaped comma is no RDN boundary");
        assert_eq!(domain_of("DC=a,CN=b,DC=c"), Some("DC=c"));
        assert_eq!(domain_of("CN=Staff,O=example"), None);
    }
}

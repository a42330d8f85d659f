//! Reply attributes for an Access-Accept, configured per client by dictionary name.
//!
//! A value may name the user (`{user}`), expand once per group (`{group}`), or carry all the
//! groups in one attribute (`{groups}`, joined by a separator): this is how NetScaler
//! (Citrix-User-Groups), FortiGate, Palo Alto and ASA learn a user's groups.

use std::borrow::Cow;

use crate::directory::UserProfile;
use crate::radius::Attribute;
use crate::radius::dict::{DataType, Dictionary, Sendable};

use super::ClientPolicy;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyTemplate {
    /// Encoded once at start-up.
    Fixed(Attribute),
    /// Text with `{user}`; one attribute.
    PerUser { def: Sendable, template: String },
    /// Text with `{group}` (and maybe `{user}`); one attribute per matching group.
    PerGroup { def: Sendable, template: String },
    /// Text with `{groups}`: one attribute, the matching groups joined by `separator`.
    Joined { def: Sendable, template: String, separator: String },
}

impl ReplyTemplate {
    /// Resolves a configured `{ name, value }` against the dictionary, so mistakes show at start-up.
    pub fn new(dict: &Dictionary, name: &str, value: &str) -> Result<Self, String> {
        Self::with_separator(dict, name, value, None)
    }

    /// As [`ReplyTemplate::new`], with the separator for `{groups}` (default `,`).
    pub fn with_separator(dict: &Dictionary, name: &str, value: &str, separator: Option<&str>) -> Result<Self, String> {
        let def = dict.attribute(name).ok_or_else(|| format!("unknown attribute {name:?} (not in the dictionaries)"))?;
        let sendable = dict.sendable(def).map_err(|why| format!("{} ({}) cannot be sent in a reply: {why}", def.name, def.oid))?;
        if separator.is_some() && !value.contains("{groups}") {
            return Err(format!("{name}: separator goes with a {{groups}} value"));
        }
        let templated = ["{user}", "{group}", "{groups}"].iter().any(|p| value.contains(p));
        if !templated {
            let bytes = dict.parse_value(def, value).map_err(|e| e.to_string())?;
            return check_len(&sendable, bytes.len()).map(|()| Self::Fixed(sendable.with_value(bytes)));
        }
        if !matches!(def.data_type, DataType::String | DataType::Octets) {
            return Err(format!("{name} is {:?}: only string and octets attributes take {{user}} or {{group}}", def.data_type));
        }
        if let Some(len) = def.flags.fixed_len {
            return Err(format!("{name} takes exactly {len} octets, so not {{user}} or {{group}}"));
        }
        let template = value.to_owned();
        Ok(if value.contains("{groups}") {
            Self::Joined { def: sendable, template, separator: separator.unwrap_or(",").to_owned() }
        } else if value.contains("{group}") {
            Self::PerGroup { def: sendable, template }
        } else {
            Self::PerUser { def: sendable, template }
        })
    }

    fn expand(&self, profile: &UserProfile, groups: &[Cow<'_, str>], out: &mut Vec<Attribute>) {
        match self {
            Self::Fixed(attribute) => out.push(attribute.clone()),
            Self::PerUser { def, template } => push_checked(def, template.replace("{user}", &profile.username), out),
            Self::PerGroup { def, template } => {
                for group in groups {
                    push_checked(def, template.replace("{user}", &profile.username).replace("{group}", group), out);
                }
            }
            Self::Joined { def, template, separator } => {
                if !groups.is_empty() {
                    push_checked(def, template.replace("{user}", &profile.username).replace("{groups}", &groups.join(separator)), out);
                }
            }
        }
    }
}

/// Whether an answer to this client names `group` (a DN or a name): `group_filter` lets it
/// through.
pub fn names_group(client: &ClientPolicy, group: &str) -> bool {
    client.group_filter.as_ref().is_none_or(|re| re.is_match(&group_name(group)))
}

/// Every reply attribute of the client, expanded for this user.
pub fn expand_all(client: &ClientPolicy, profile: &UserProfile) -> Vec<Attribute> {
    if client.reply_attributes.is_empty() {
        return Vec::new();
    }
    let groups: Vec<Cow<'_, str>> = profile.groups.iter().filter(|g| names_group(client, g)).map(|g| group_name(g)).collect();
    let mut out = Vec::new();
    for template in &client.reply_attributes {
        template.expand(profile, &groups, &mut out);
    }
    out
}

/// The name a NAS expects: the CN of a DN, unescaped (`CN=VPN-Users,OU=...` → `VPN-Users`,
/// `CN=Smith\, John,OU=...` → `Smith, John`), else as is.
pub fn group_name(group: &str) -> Cow<'_, str> {
    let rdns = crate::directory::dn::rdns(group);
    match rdns[0].split_once('=') {
        Some((key, value)) if key.trim().eq_ignore_ascii_case("cn") && rdns.len() > 1 => crate::directory::dn::unescape(value.trim_start()),
        _ => Cow::Borrowed(group),
    }
}

fn check_len(def: &Sendable, len: usize) -> Result<(), String> {
    if len > def.max_value_len() {
        Err(format!("value for {} is {len} octets, more than one attribute carries ({})", def.def().name, def.max_value_len()))
    } else {
        Ok(())
    }
}

fn push_checked(def: &Sendable, value: String, out: &mut Vec<Attribute>) {
    if value.len() > def.max_value_len() {
        tracing::warn!(attribute = %def.def().name, len = value.len(), "reply attribute value too long for RADIUS; left out");
        return;
    }
    out.push(def.with_value(value.into_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    fn policy(attrs: &[(&str, &str)], filter: Option<&str>) -> ClientPolicy {
        let dict = Dictionary::builtin().unwrap();
        ClientPolicy {
            reply_attributes: attrs.iter().map(|(n, v)| ReplyTemplate::new(&dict, n, v).unwrap()).collect(),
            group_filter: filter.map(|f| Regex::new(f).unwrap()),
            ..ClientPolicy::named("nas")
        }
    }

    #[test]
    fn groups_expand_one_attribute_each_through_the_filter() {
        let profile = UserProfile {
            username: "alice".into(),
            groups: vec!["CN=VPN-Users,OU=Groups,DC=example,DC=test".into(), "Staff".into(), "Citrix-Admins".into()],
            ..Default::default()
        };
        let p = policy(&[("Citrix-User-Groups", "{group}"), ("Class", "user={user}"), ("Session-Timeout", "3600")], Some("^(VPN|Citrix)-"));
        assert_eq!(
            expand_all(&p, &profile),
            vec![
                Attribute::vendor(66, 16, *b"VPN-Users"),
                Attribute::vendor(66, 16, *b"Citrix-Admins"),
                Attribute::standard(25, *b"user=alice"),
                Attribute::standard(27, 3600u32.to_be_bytes()),
            ]
        );
    }

    #[test]
    fn group_names_are_the_unescaped_cn() {
        assert_eq!(group_name("CN=Smith\\, John,OU=Groups,DC=example,DC=test"), "Smith, John");
        assert_eq!(group_name("CN=VPN\\+Ops,OU=Groups,DC=example,DC=test"), "VPN+Ops");
        assert_eq!(group_name("cn=VPN-Users,dc=x"), "VPN-Users");
        assert_eq!(group_name("Staff"), "Staff", "a name, not a DN");
        assert_eq!(group_name("CN=alone"), "CN=alone");
        let p = policy(&[("Citrix-User-Groups", "{group}")], Some("^(Smith, John|VPN\\+Ops)$"));
        let profile = UserProfile {
            username: "erin".into(),
            groups: vec!["CN=Smith\\, John,OU=G,DC=x".into(), "CN=VPN\\+Ops,OU=G,DC=x".into(), "CN=Smith\\, Jane,OU=G,DC=x".into()],
            ..Default::default()
        };
        let sent: Vec<Vec<u8>> = expand_all(&p, &profile).iter().map(|a| a.value().to_vec()).collect();
        assert_eq!(sent, vec![b"Smith, John".to_vec(), b"VPN+Ops".to_vec()]);
    }

    #[test]
    fn groups_can_travel_joined_in_one_attribute() {
        let dict = Dictionary::builtin().unwrap();
        let profile =
            UserProfile { username: "alice".into(), groups: vec!["CN=VPN-Users,DC=x".into(), "Staff".into()], ..Default::default() };
        let joined = ReplyTemplate::with_separator(&dict, "Fortinet-Group-Name", "{groups}", Some(";")).unwrap();
        let comma = ReplyTemplate::new(&dict, "Filter-Id", "groups={groups}").unwrap();
        let p = ClientPolicy { reply_attributes: vec![joined, comma], ..ClientPolicy::named("nas") };
        assert_eq!(
            expand_all(&p, &profile),
            vec![Attribute::vendor(12356, 1, *b"VPN-Users;Staff"), Attribute::standard(11, *b"groups=VPN-Users,Staff")]
        );
        let nobody = UserProfile { username: "bob".into(), ..Default::default() };
        assert!(expand_all(&p, &nobody).is_empty(), "no groups, no empty attribute");
        assert!(ReplyTemplate::with_separator(&dict, "Filter-Id", "{group}", Some(";")).is_err());
    }

    #[test]
    fn config_mistakes_are_caught_up_front() {
        let dict = Dictionary::builtin().unwrap();
        assert!(ReplyTemplate::new(&dict, "Citrix-User-Grups", "{group}").unwrap_err().contains("unknown attribute"));
        assert!(ReplyTemplate::new(&dict, "Session-Timeout", "{group}").unwrap_err().contains("only string and octets"));
        assert!(ReplyTemplate::new(&dict, "Session-Timeout", "an hour").is_err());
        assert!(ReplyTemplate::new(&dict, "Filter-Id", &"x".repeat(254)).is_err());
        let encrypted = ReplyTemplate::new(&dict, "MS-MPPE-Send-Key", "0x00").unwrap_err();
        assert_eq!(
            encrypted,
            "MS-MPPE-Send-Key (26.311.16) cannot be sent in a reply: its value is encrypted on the wire (encrypt=N), \
             which radmfa does not do for reply values"
        );
    }

    #[test]
    fn templates_use_the_vendor_s_layout_and_its_room() {
        let mut dict = Dictionary::builtin().unwrap();
        dict.load_str("inline", "VENDOR Lucent 4846 format=2,1\nATTRIBUTE Lucent-UU-Info 7 string Lucent\n").unwrap();
        let lucent = crate::radius::VendorFormat::new(2, 1, false).unwrap();
        let p = ClientPolicy {
            reply_attributes: vec![ReplyTemplate::new(&dict, "Lucent-UU-Info", "{group}").unwrap()],
            ..ClientPolicy::named("nas")
        };
        let profile = UserProfile { username: "alice".into(), groups: vec!["Staff".into(), "x".repeat(247)], ..Default::default() };
        let sent = expand_all(&p, &profile);
        assert_eq!(sent, vec![Attribute::vendor_in(lucent, 4846, 7, *b"Staff")], "247 octets do not fit Lucent's 246");
        assert!(ReplyTemplate::new(&dict, "Lucent-UU-Info", &"y".repeat(246)).is_ok());
        assert!(
            ReplyTemplate::new(&dict, "Lucent-UU-Info", &"y".repeat(247)).unwrap_err().contains("more than one attribute carries (246)")
        );
    }
}

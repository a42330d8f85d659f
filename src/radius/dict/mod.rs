//! FreeRADIUS-format dictionaries: attribute names, numbers, types and named values.
//!
//! The files shipped in `dictionaries/` are built in; an admin's own file loads on top at
//! start-up, so adding a vendor needs no rebuild, and FreeRADIUS 3's whole tree
//! (`/usr/share/freeradius/dictionary`) loads unchanged. It reads `$INCLUDE` and `$INCLUDE-`
//! (relative to the including file; bounded depth, cycles refused), `VENDOR` with
//! `format=T,L[,c]`, `BEGIN-VENDOR` (also `format=`/`parent=Extended-Vendor-Specific-N`),
//! `END-VENDOR`, `BEGIN-TLV`, `END-TLV`, `ATTRIBUTE` with dotted numbers (`241.5.1`), every
//! FreeRADIUS 3 type (`octets[N]`, `tlv`, `vsa`, `extended`, `long-extended`, `evs`, ...) and
//! flag (`has_tag`, `encrypt=N`, `secret`, `array`, `concat`, `virtual`), and `VALUE`. Every
//! error names the file and line.
//!
//! A name defined again for the same number is FreeRADIUS's rule: allowed, the later type and
//! flags win, and the latest name is the one the log shows for the number (likewise `VALUE`s).
//! A name defined again for another number is an error naming where it was first defined.
//!
//! What radmfa cannot put in a packet (TLV members, RFC 6929 extended attributes, FreeRADIUS's
//! internal ones, encrypted values) keeps its name, is logged as hex, is counted by
//! [`Dictionary::unsupported_summary`] for `check-config`, and is refused as a reply attribute.
//! Vendors of every layout are encoded and decoded ([`super::vendor`]).

mod load;
#[cfg(test)]
mod tests;
mod types;
mod values;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub use types::{AttributeDef, DataType, Flags, Oid, Sendable, Space, Unsupported};
pub use values::ValueError;

use super::packet::{Attribute, DecodeError, Packet, VENDOR_SPECIFIC};
use super::vendor::{VendorFormat, split_vendor_specific};
use load::{LoadState, Location, Source};
use values::hex;

/// A dictionary problem, located.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct DictError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Default, Clone)]
pub struct Dictionary {
    /// Vendor name (lower case) → id.
    vendors: HashMap<String, u32>,
    /// Vendor id → the name the log shows (the latest defined).
    vendor_names: HashMap<u32, String>,
    /// Vendor id → layout, for the vendors whose layout is not RFC 2865's.
    vendor_formats: HashMap<u32, VendorFormat>,
    attributes: Vec<AttributeDef>,
    /// Where each of `attributes` was (last) defined.
    defined_at: Vec<Location>,
    by_name: HashMap<String, usize>,
    /// The latest name defined for each number.
    by_oid: HashMap<Oid, usize>,
    /// Named values by attribute number, so every name of the number shares them.
    values: HashMap<Oid, NamedValues>,
}

/// An attribute's `VALUE`s: name (lower case) → number, and number → the name the log shows.
#[derive(Debug, Default, Clone)]
struct NamedValues {
    by_name: HashMap<String, u64>,
    by_number: HashMap<u64, String>,
}

impl Dictionary {
    /// The dictionaries shipped with radmfa.
    pub fn builtin() -> Result<Self, DictError> {
        let mut dict = Self::default();
        dict.load_source(&Source::Builtin("dictionary"), &mut LoadState::default())?;
        Ok(dict)
    }

    /// Loads an admin's dictionary file (and what it includes) on top of this one.
    pub fn load_file(&mut self, path: &Path) -> Result<(), DictError> {
        self.load_source(&Source::File(path.to_path_buf()), &mut LoadState::default())
    }

    /// Loads dictionary text held in memory on top of this one; errors name it `name`.
    ///
    /// Text has no folder to resolve an `$INCLUDE` against, so `$INCLUDE` is refused rather
    /// than resolved against the working directory: the fuzz target feeds arbitrary text here
    /// and must never make the parser read files from the machine.
    pub fn load_str(&mut self, name: &str, text: &str) -> Result<(), DictError> {
        self.load_source(&Source::Text { name: name.to_owned(), text: text.to_owned() }, &mut LoadState::default())
    }

    /// An attribute by name, case-insensitively as FreeRADIUS matches them.
    pub fn attribute(&self, name: &str) -> Option<&AttributeDef> {
        self.by_name.get(&name.to_ascii_lowercase()).and_then(|&i| self.attributes.get(i))
    }

    /// The attribute the log names this number after (the latest defined for it).
    pub fn attribute_by_oid(&self, oid: &Oid) -> Option<&AttributeDef> {
        self.by_oid.get(oid).and_then(|&i| self.attributes.get(i))
    }

    /// A top-level attribute: standard (`vendor` 0) or a vendor's.
    pub fn attribute_by_number(&self, vendor: u32, typ: u32) -> Option<&AttributeDef> {
        self.attribute_by_oid(&Oid::top(vendor, typ))
    }

    /// Every attribute name defined, in the order first defined.
    pub fn attributes(&self) -> impl Iterator<Item = &AttributeDef> {
        self.attributes.iter()
    }

    pub fn vendor_id(&self, name: &str) -> Option<u32> {
        self.vendors.get(&name.to_ascii_lowercase()).copied()
    }

    pub fn vendor_name(&self, id: u32) -> Option<&str> {
        self.vendor_names.get(&id).map(String::as_str)
    }

    /// How `vendor` lays out its sub-attributes: RFC 2865's unless its `VENDOR` line says.
    pub fn vendor_format(&self, vendor: u32) -> VendorFormat {
        self.vendor_formats.get(&vendor).copied().unwrap_or(VendorFormat::RFC2865)
    }

    /// `def` ready to go in a packet, or why it cannot.
    pub fn sendable(&self, def: &AttributeDef) -> Result<Sendable, Unsupported> {
        Sendable::new(def, self.vendor_format(def.vendor()))
    }

    /// Parses a datagram, reading each vendor's sub-attributes in the vendor's layout.
    pub fn decode(&self, datagram: &[u8]) -> Result<Packet, DecodeError> {
        Packet::decode_with(datagram, &|vendor| Some(self.vendor_format(vendor)))
    }

    /// Parses a config value for an attribute: named `VALUE`s, numbers, addresses, `0x` hex.
    pub fn parse_value(&self, def: &AttributeDef, text: &str) -> Result<Vec<u8>, ValueError> {
        let values = self.values.get(&def.oid);
        values::parse(def, text, |name| values.and_then(|v| v.by_name.get(&name.to_ascii_lowercase()).copied()))
    }

    /// `Name = value` for logs. Secret-bearing attributes print as `[hidden]`; what the
    /// dictionaries do not describe prints as hex.
    pub fn describe(&self, attribute: &Attribute) -> String {
        match attribute {
            Attribute::Standard { typ: VENDOR_SPECIFIC, value } => self.describe_vendor_specific(value),
            Attribute::Standard { typ, value } => self.describe_number(Oid::standard(u32::from(*typ)), value),
            Attribute::Vendor { vendor, typ, value } if !self.vendor_format(*vendor).is_rfc2865() => {
                // Read in RFC 2865's layout where the vendor's was not known (a kept answer):
                // its octets again, read in the vendor's.
                let mut octets = vendor.to_be_bytes().to_vec();
                octets.extend_from_slice(&[*typ, u8::try_from(value.len() + 2).unwrap_or(0)]);
                octets.extend_from_slice(value);
                self.describe_vendor_specific(&octets)
            }
            Attribute::Vendor { vendor, typ, value } => self.describe_number(Oid::top(*vendor, u32::from(*typ)), value),
            Attribute::FormattedVendor { vendor, typ, value, .. } => self.describe_number(Oid::top(*vendor, *typ), value),
        }
    }

    /// One line for `check-config`: how many attributes radmfa cannot send, by reason with an
    /// example each; `None` when it can send every one.
    pub fn unsupported_summary(&self) -> Option<String> {
        let mut by_reason: BTreeMap<Unsupported, (usize, &str)> = BTreeMap::new();
        for def in &self.attributes {
            if let Some(why) = def.unsupported {
                by_reason.entry(why).or_insert((0, &def.name)).0 += 1;
            }
        }
        let total: usize = by_reason.values().map(|(n, _)| n).sum();
        if total == 0 {
            return None;
        }
        let parts: Vec<String> =
            by_reason.iter().map(|(why, (n, example))| format!("{} {} (e.g. {example})", thousands(*n), why.label())).collect();
        Some(format!(
            "the dictionaries define {} attributes radmfa cannot send in a reply: {}; naming one in a [[client]] reply attribute is an error",
            thousands(total),
            parts.join(", ")
        ))
    }

    /// A Vendor-Specific attribute kept whole (its layout was not known where it was decoded,
    /// or it does not follow it): its sub-attributes if the vendor's layout reads it, else hex.
    fn describe_vendor_specific(&self, value: &[u8]) -> String {
        match split_vendor_specific(value, &|vendor| Some(self.vendor_format(vendor))) {
            Some(subs) => subs.iter().map(|sub| self.describe(sub)).collect::<Vec<_>>().join(", "),
            None => format!("Vendor-Specific = {}", hex(value)),
        }
    }

    fn describe_number(&self, oid: Oid, value: &[u8]) -> String {
        let Some(def) = self.attribute_by_oid(&oid) else {
            return format!("{} = {}", self.unknown_name(&oid), hex(value));
        };
        if def.is_secret() || is_credential(&oid) {
            return format!("{} = [hidden]", def.name);
        }
        if matches!(def.data_type, DataType::Extended | DataType::LongExtended) {
            return self.describe_extended(def, value);
        }
        let (tag, value) = split_tag(def, value);
        let name = match tag {
            Some(tag) => format!("{}:{tag}", def.name),
            None => def.name.clone(),
        };
        let named = self.values.get(&def.oid);
        let formatted = values::format(def, &value, |n| named.and_then(|v| v.by_number.get(&n).cloned()));
        format!("{name} = {formatted}")
    }

    /// An RFC 6929 extended attribute: named after the attribute inside when the dictionaries
    /// know it; its value as hex, since radmfa does not interpret what extended ones carry.
    fn describe_extended(&self, extended: &AttributeDef, value: &[u8]) -> String {
        let inner = value.first().and_then(|&typ| self.attribute_by_oid(&extended.oid.child(u32::from(typ))));
        match inner {
            Some(def) if def.is_secret() => format!("{} = [hidden]", def.name),
            Some(def) => format!("{} = {}", def.name, hex(value.get(1..).unwrap_or_default())),
            None => format!("{} = {}", extended.name, hex(value)),
        }
    }

    fn unknown_name(&self, oid: &Oid) -> String {
        let number = oid.path.first().copied().unwrap_or_default();
        match oid.space {
            Space::Vendor(vendor) | Space::ExtendedVendor { vendor, .. } => {
                format!("Vendor-{}-Attr-{number}", self.vendor_name(vendor).map_or_else(|| vendor.to_string(), str::to_owned))
            }
            Space::Standard => format!("Attr-{number}"),
        }
    }
}

/// A tagged attribute's tag (RFC 2868 §3) and the value without it: an integer's first octet,
/// or a string's first octet when it is 0x01-0x1f. `None` when untagged (tag 0, or none).
fn split_tag<'a>(def: &AttributeDef, value: &'a [u8]) -> (Option<u8>, std::borrow::Cow<'a, [u8]>) {
    use std::borrow::Cow;
    if !def.flags.has_tag {
        return (None, Cow::Borrowed(value));
    }
    match (def.data_type, value) {
        (DataType::Integer, &[tag, a, b, c]) => ((tag != 0).then_some(tag), Cow::Owned(vec![0, a, b, c])),
        (DataType::String, [tag @ 1..=0x1f, rest @ ..]) => (Some(*tag), Cow::Borrowed(rest)),
        _ => (None, Cow::Borrowed(value)),
    }
}

/// Attributes carrying a user's credentials, hidden in logs whatever a dictionary says.
fn is_credential(oid: &Oid) -> bool {
    use super::attr::{CHAP_PASSWORD, USER_PASSWORD, VENDOR_MICROSOFT as MICROSOFT};
    let standard = |typ: u8| Oid::standard(u32::from(typ));
    let microsoft = |typ: u32| Oid::top(MICROSOFT, typ);
    *oid == standard(USER_PASSWORD)
        || *oid == standard(CHAP_PASSWORD)
        || (1..=6).any(|t| *oid == microsoft(t))
        || *oid == microsoft(25)
        || *oid == microsoft(27)
}

/// `1234567` as `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

//! Attribute values as text: what a configured value means for an attribute's type (a
//! `[[client]]` reply attribute), and how a received value reads in the log.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::types::{AttributeDef, DataType};

/// A value that does not fit an attribute's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {data_type:?} value for {attribute}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
pub struct ValueError {
    pub attribute: String,
    pub data_type: DataType,
    pub value: String,
    /// What the attribute takes, where its type alone does not say.
    pub detail: Option<String>,
}

/// `text` as the octets of `def`'s value; `named` resolves the attribute's `VALUE` names.
pub(super) fn parse(def: &AttributeDef, text: &str, named: impl Fn(&str) -> Option<u64>) -> Result<Vec<u8>, ValueError> {
    let bad = |detail: Option<String>| ValueError { attribute: def.name.clone(), data_type: def.data_type, value: text.to_owned(), detail };
    let number = |max: u64| -> Result<u64, ValueError> {
        let n = named(text).or_else(|| parse_number(text)).ok_or_else(|| bad(None))?;
        if n > max { Err(bad(Some(format!("at most {max}")))) } else { Ok(n) }
    };
    let bytes = match def.data_type {
        DataType::String => {
            // A tag is an octet 0x01-0x1f before the text (RFC 2868 §3.5): text beginning with
            // one would be read as tagged.
            if def.flags.has_tag && text.as_bytes().first().is_some_and(|b| (1..=0x1f).contains(b)) {
                return Err(bad(Some("a tagged attribute's text cannot begin with a control character".into())));
            }
            text.as_bytes().to_vec()
        }
        DataType::Octets | DataType::Opaque | DataType::IfId | DataType::Ipv6Prefix => match text.strip_prefix("0x") {
            Some(hex) => parse_hex(hex).ok_or_else(|| bad(None))?,
            None if def.data_type == DataType::Octets => text.as_bytes().to_vec(),
            None => return Err(bad(Some("give it as 0x followed by hex digits".into()))),
        },
        DataType::IpAddr => text.parse::<Ipv4Addr>().map_err(|_| bad(None))?.octets().to_vec(),
        DataType::Ipv6Addr => text.parse::<Ipv6Addr>().map_err(|_| bad(None))?.octets().to_vec(),
        // A tagged integer's first octet is the tag (RFC 2868 §3.1): sent untagged, 24 bits remain.
        DataType::Integer if def.flags.has_tag => (number(0xff_ffff)? as u32).to_be_bytes().to_vec(),
        DataType::Integer | DataType::Date => (number(u64::from(u32::MAX))? as u32).to_be_bytes().to_vec(),
        DataType::Byte => vec![number(u64::from(u8::MAX))? as u8],
        DataType::Short => (number(u64::from(u16::MAX))? as u16).to_be_bytes().to_vec(),
        DataType::Integer64 => number(u64::MAX)?.to_be_bytes().to_vec(),
        DataType::Signed => text.parse::<i32>().map_err(|_| bad(None))?.to_be_bytes().to_vec(),
        DataType::Ether => {
            let parts: Option<Vec<u8>> = text.split([':', '-']).map(|p| u8::from_str_radix(p, 16).ok()).collect();
            parts.filter(|p| p.len() == 6).ok_or_else(|| bad(None))?
        }
        DataType::Tlv | DataType::Vsa | DataType::Extended | DataType::LongExtended | DataType::Evs => {
            return Err(bad(Some("it holds other attributes, not a value".into())));
        }
    };
    match def.flags.fixed_len {
        Some(len) if bytes.len() != usize::from(len) => Err(bad(Some(format!("exactly {len} octets")))),
        _ => Ok(bytes),
    }
}

/// A received value as the log shows it; `named` gives the attribute's `VALUE` names.
pub(super) fn format(def: &AttributeDef, value: &[u8], named: impl Fn(u64) -> Option<String>) -> String {
    // An array packs values of one size: each is shown.
    if let Some(size) = def.data_type.fixed_size()
        && def.flags.array
        && value.len() > size
        && value.len().is_multiple_of(size)
    {
        return value.chunks(size).map(|one| format_one(def.data_type, one, &named)).collect::<Vec<_>>().join(", ");
    }
    format_one(def.data_type, value, &named)
}

fn format_one(data_type: DataType, value: &[u8], named: &impl Fn(u64) -> Option<String>) -> String {
    let number = |n: u64| named(n).unwrap_or_else(|| n.to_string());
    match (data_type, value) {
        (DataType::String, _) => match std::str::from_utf8(value) {
            Ok(s) => format!("{s:?}"),
            Err(_) => hex(value),
        },
        (DataType::IpAddr, &[a, b, c, d]) => Ipv4Addr::from([a, b, c, d]).to_string(),
        (DataType::Ipv6Addr, _) => match <[u8; 16]>::try_from(value) {
            Ok(octets) => Ipv6Addr::from(octets).to_string(),
            Err(_) => hex(value),
        },
        (DataType::Integer | DataType::Date, &[a, b, c, d]) => number(u64::from(u32::from_be_bytes([a, b, c, d]))),
        (DataType::Byte, &[a]) => number(u64::from(a)),
        (DataType::Short, &[a, b]) => number(u64::from(u16::from_be_bytes([a, b]))),
        (DataType::Signed, &[a, b, c, d]) => i32::from_be_bytes([a, b, c, d]).to_string(),
        (DataType::Integer64, _) => match <[u8; 8]>::try_from(value) {
            Ok(octets) => u64::from_be_bytes(octets).to_string(),
            Err(_) => hex(value),
        },
        (DataType::Ether, &[a, b, c, d, e, f]) => format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}"),
        _ => hex(value),
    }
}

/// A number as dictionaries and configs write them: decimal, or hex after `0x`.
pub(super) fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| text.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

pub(super) fn hex(value: &[u8]) -> String {
    let mut s = String::with_capacity(2 + value.len() * 2);
    s.push_str("0x");
    for b in value {
        let _ = write!(s, "{b:02x}");
    }
    s
}

//! `--format pskc`: an RFC 6030 `KeyContainer`, as hardware TOTP tokens are delivered. Each
//! `KeyPackage` is one token: `Key/@Algorithm` must be TOTP (`...:pskc:totp`; HOTP keys are
//! refused one by one), its seed `Data/Secret/PlainValue` or an `EncryptedValue` (see
//! [`protection`]), its digits `AlgorithmParameters/ResponseFormat/@Length` (6 when absent), its
//! hash `AlgorithmParameters/Suite` (SHA1 when absent), its period `Data/TimeInterval` (30 s
//! when absent). Its user is `--map`'s for its `DeviceInfo/SerialNo`, else `Key/UserId`, else
//! `DeviceInfo/UserId`; a distinguished name there gives its `UID=` value. Its name is
//! "Manufacturer serial".
//!
//! Parsed by roxmltree with DTDs refused (no entity can expand the file) and a bound on its
//! nodes; the file's size is bounded before it is read.

mod protection;

use base64::Engine;
use roxmltree::Node;

use super::{Entry, Imported, Options, Place, Refused, number, token};
use crate::otp::{Algorithm, TotpParams};
use crate::secret::Secret;
use protection::Protection;

/// The most XML nodes read: a KeyPackage has about 60 (text between elements included).
const MAX_NODES: u32 = 20_000_000;

/// The most attributes an element may have: PSKC's have a handful. The XML parser checks
/// attribute names against each other, so thousands on one element cost it quadratic time.
const MAX_ATTRIBUTES: usize = 64;

/// The line of the first tag with more than `MAX_ATTRIBUTES` attributes (each `=` in a tag
/// outside a quoted value, in one pass, before the parser sees the text), if there is one.
fn crowded_element(text: &str) -> Option<usize> {
    let (mut in_tag, mut quote, mut count, mut line) = (false, None, 0, 1);
    for c in text.chars() {
        if c == '\n' {
            line += 1;
        }
        match (in_tag, quote, c) {
            (_, Some(open), c) if c == open => quote = None,
            (_, Some(_), _) => {}
            (false, None, '<') => (in_tag, count) = (true, 0),
            (true, None, '>') => in_tag = false,
            (true, None, '"' | '\'') => quote = Some(c),
            (true, None, '=') => {
                count += 1;
                if count > MAX_ATTRIBUTES {
                    return Some(line);
                }
            }
            _ => {}
        }
    }
    None
}

/// Every KeyPackage's entry; `Err` for a file that is not a PSKC container radmfa can open
/// (not XML, a DTD, another root, encrypted in a way it does not take or with another key).
pub fn read(text: &str, options: &Options<'_>) -> Result<Vec<Entry>, String> {
    if let Some(line) = crowded_element(text) {
        return Err(format!("line {line}: an element with more than {MAX_ATTRIBUTES} attributes: not a PSKC file radmfa reads"));
    }
    let parsing = roxmltree::ParsingOptions { allow_dtd: false, nodes_limit: MAX_NODES, ..roxmltree::ParsingOptions::default() };
    let document = roxmltree::Document::parse_with_options(text, parsing).map_err(|e| xml_error(&e))?;
    let container = document.root_element();
    let in_pskc = container.tag_name().namespace().is_some_and(|ns| ns.starts_with("urn:ietf:params:xml:ns:keyprov:pskc"));
    if container.tag_name().name() != "KeyContainer" || !in_pskc {
        return Err("not a PSKC file: its root is not an RFC 6030 KeyContainer".into());
    }
    if let Some(version) = container.attribute("Version").filter(|v| *v != "1.0") {
        return Err(format!("PSKC version {version:?}: radmfa reads version 1.0"));
    }
    let protection = Protection::of(container, options.psk)?;
    let packages = container.children().filter(|n| is(*n, "KeyPackage"));
    Ok(packages.enumerate().map(|(index, package)| key_package(package, index + 1, protection.as_ref(), options)).collect())
}

fn key_package(package: Node<'_, '_>, index: usize, protection: Option<&Protection>, options: &Options<'_>) -> Entry {
    let device = child(package, "DeviceInfo");
    let serial = device.and_then(|d| child_text(d, "SerialNo"));
    let place = Place::KeyPackage { index, serial: serial.clone() };
    Entry { place, read: key(package, device, serial.as_deref(), protection, options) }
}

fn key(
    package: Node<'_, '_>,
    device: Option<Node<'_, '_>>,
    serial: Option<&str>,
    protection: Option<&Protection>,
    options: &Options<'_>,
) -> Result<Imported, Refused> {
    let key = child(package, "Key").ok_or_else(|| Refused::new(None, "no Key"))?;
    let user = user_of(key, device, serial, options);
    let algorithm = key.attribute("Algorithm").unwrap_or_default();
    // RFC 6030's URN, and the URI of its drafts that some vendors still write: nothing else.
    let known = |kind: &str| {
        [format!("urn:ietf:params:xml:ns:keyprov:pskc:{kind}"), format!("http://www.ietf.org/keyprov/pskc#{kind}")]
            .iter()
            .any(|uri| uri.eq_ignore_ascii_case(algorithm))
    };
    let not_totp = if known("totp") {
        None
    } else if known("hotp") {
        Some("an HOTP (counter-based) key: radmfa takes TOTP only".to_owned())
    } else {
        Some(format!("algorithm {:?} is not TOTP", algorithm.chars().take(80).collect::<String>()))
    };
    if let Some(why) = not_totp {
        return Err(Refused::new(user.ok().flatten().as_deref(), why));
    }
    let user = user?;
    let refused = |reason: &str| Refused::new(user.as_deref(), reason);
    let Some(user) = user.as_deref() else {
        return Err(refused("no UserId: give the users of such tokens by serial number with --map"));
    };
    let params = params_of(key).map_err(|why| refused(&why))?;
    let data = child(key, "Data").ok_or_else(|| refused("no Data"))?;
    let secret = child(data, "Secret").ok_or_else(|| refused("no Data/Secret"))?;
    let secret = match (child(secret, "PlainValue"), protection) {
        (Some(plain), None) => base64_value(plain).map_err(|_| refused("the secret's PlainValue is not base64"))?,
        // The MAC covers encrypted values only: a clear seed in a protected file is one nobody
        // vouches for (put there after the vendor made the file?).
        (Some(_), Some(_)) => {
            return Err(refused("a seed in the clear in a file protected by a pre-shared key: no MAC covers it (was the file altered?)"));
        }
        (None, Some(protection)) => protection.open(secret).map_err(|why| refused(&format!("secret: {why}")))?,
        (None, None) => return Err(refused("the secret is encrypted, but the file names no EncryptionKey")),
    };
    let manufacturer = device.and_then(|d| child_text(d, "Manufacturer"));
    let name = match (manufacturer, serial) {
        (Some(made_by), Some(serial)) => format!("{made_by} {serial}"),
        (None, Some(serial)) => format!("Token {serial}"),
        (_, None) => child_text(key, "Issuer").unwrap_or_default(),
    };
    token(user, &name, options.default_name, params, secret)
}

/// Whose token it is: `--map`'s user for its serial, else the key's, else the device's. A
/// distinguished name gives its `UID=` value; one without is refused (it names no login).
fn user_of(
    key: Node<'_, '_>,
    device: Option<Node<'_, '_>>,
    serial: Option<&str>,
    options: &Options<'_>,
) -> Result<Option<String>, Refused> {
    if let Some(mapped) = serial.and_then(|s| options.serials?.get(s)) {
        return Ok(Some(mapped.clone()));
    }
    let Some(given) = child_text(key, "UserId").or_else(|| device.and_then(|d| child_text(d, "UserId"))) else { return Ok(None) };
    let rdns = crate::directory::dn::rdns(&given);
    let is_dn = rdns.len() > 1 || rdns.iter().any(|rdn| rdn.contains('=') && !rdn.contains('@'));
    if !is_dn {
        return Ok(Some(given));
    }
    let uid = rdns.iter().find_map(|rdn| rdn.split_once('=').filter(|(attribute, _)| attribute.trim().eq_ignore_ascii_case("uid")));
    match uid {
        Some((_, value)) => Ok(Some(crate::directory::dn::unescape(value.trim()).into_owned())),
        None => Err(Refused::new(Some(&given), "the UserId is a distinguished name without UID=: give the user with --map")),
    }
}

/// Digits, hash and period from the key's `AlgorithmParameters` and `Data`.
fn params_of(key: Node<'_, '_>) -> Result<TotpParams, String> {
    let mut params = TotpParams::default();
    if let Some(parameters) = child(key, "AlgorithmParameters") {
        if let Some(suite) = child_text(parameters, "Suite") {
            let hash = suite.strip_prefix("HMAC-").or_else(|| suite.strip_prefix("hmac-")).unwrap_or(&suite);
            params.algorithm = hash.parse::<Algorithm>().map_err(|_| format!("Suite {suite:?}: HMAC-SHA1, HMAC-SHA256 or HMAC-SHA512"))?;
        }
        if let Some(format) = child(parameters, "ResponseFormat") {
            if let Some(encoding) = format.attribute("Encoding").filter(|e| !e.eq_ignore_ascii_case("DECIMAL")) {
                return Err(format!("ResponseFormat Encoding {encoding:?}: radmfa checks decimal codes"));
            }
            if let Some(length) = format.attribute("Length") {
                params.digits = number("ResponseFormat Length", length)?;
            }
        }
    }
    if let Some(data) = child(key, "Data") {
        if let Some(interval) = plain_number(data, "TimeInterval")? {
            params.period = interval;
        }
        if let Some(start) = plain_number::<u64>(data, "Time")?.filter(|&t0| t0 != 0) {
            return Err(format!("Time (T0) is {start}: radmfa counts time steps from the Unix epoch (0)"));
        }
    }
    Ok(params)
}

/// A `Data` field's `PlainValue` as a number, if the field is there.
fn plain_number<T: std::str::FromStr>(data: Node<'_, '_>, field: &str) -> Result<Option<T>, String> {
    let Some(node) = child(data, field) else { return Ok(None) };
    let value = child_text(node, "PlainValue").ok_or_else(|| format!("{field} is not a PlainValue (an encrypted {field} is not read)"))?;
    number(field, &value).map(Some)
}

fn is(node: Node<'_, '_>, name: &str) -> bool {
    node.is_element() && node.tag_name().name() == name
}

/// The first child element called `name`, in whatever namespace (vendors differ).
fn child<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    node.children().find(|n| is(*n, name))
}

/// The trimmed text of the child element `name`, if it has any.
fn child_text(node: Node<'_, '_>, name: &str) -> Option<String> {
    child(node, name).and_then(|n| n.text()).map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned)
}

/// An element's base64 text (line breaks and spaces in it allowed, as the RFC's figures have).
fn base64_value(node: Node<'_, '_>) -> Result<Secret<Vec<u8>>, base64::DecodeError> {
    let text: zeroize::Zeroizing<String> =
        zeroize::Zeroizing::new(node.text().unwrap_or_default().chars().filter(|c| !c.is_ascii_whitespace()).collect());
    base64::engine::general_purpose::STANDARD.decode(text.as_bytes()).map(Secret::new)
}

/// The parser's error in words, with where but none of the text it was reading.
fn xml_error(e: &roxmltree::Error) -> String {
    match e {
        roxmltree::Error::DtdDetected => {
            "the file has a DTD (<!DOCTYPE>): refused, its entities could make the file expand without bound".into()
        }
        roxmltree::Error::NodesLimitReached => format!("more than {MAX_NODES} XML nodes: split the file"),
        roxmltree::Error::UnclosedRootNode => "not well-formed XML: the root element is not closed (a file cut short?)".into(),
        roxmltree::Error::NoRootNode => "no XML element in the file".into(),
        other => {
            let at = other.pos();
            format!("not well-formed XML (line {}, column {})", at.row, at.col)
        }
    }
}

#[cfg(test)]
mod tests;

//! FreeRADIUS-format dictionaries: attribute names, numbers, types and named values.
//!
//! The files shipped in `dictionaries/` are built in; an admin's own file (a new vendor, say)
//! loads on top at start-up, so adding a vendor needs no rebuild. Supported keywords:
//! `$INCLUDE`, `$INCLUDE-`, `VENDOR`, `BEGIN-VENDOR`, `END-VENDOR`, `ATTRIBUTE`, `VALUE`.
//! Every error names the file and line.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::packet::{Attribute, VENDOR_SPECIFIC};

/// The files in `dictionaries/`, compiled in. `dictionary` is the root that includes the rest.
const BUILTIN: &[(&str, &str)] = &[
    ("dictionary", include_str!("../../dictionaries/dictionary")),
    ("dictionary.rfc2865", include_str!("../../dictionaries/dictionary.rfc2865")),
    ("dictionary.rfc2866", include_str!("../../dictionaries/dictionary.rfc2866")),
    ("dictionary.rfc2869", include_str!("../../dictionaries/dictionary.rfc2869")),
    ("dictionary.rfc3162", include_str!("../../dictionaries/dictionary.rfc3162")),
    ("dictionary.rfc5997", include_str!("../../dictionaries/dictionary.rfc5997")),
    ("dictionary.citrix", include_str!("../../dictionaries/dictionary.citrix")),
    ("dictionary.microsoft", include_str!("../../dictionaries/dictionary.microsoft")),
    ("dictionary.cisco", include_str!("../../dictionaries/dictionary.cisco")),
    ("dictionary.cisco.asa", include_str!("../../dictionaries/dictionary.cisco.asa")),
    ("dictionary.fortinet", include_str!("../../dictionaries/dictionary.fortinet")),
    ("dictionary.paloalto", include_str!("../../dictionaries/dictionary.paloalto")),
];

const MAX_INCLUDE_DEPTH: usize = 16;

/// The value types of FreeRADIUS dictionaries that RADIUS (not DHCP, not TLV) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    String,
    Octets,
    IpAddr,
    Ipv6Addr,
    Ipv6Prefix,
    IfId,
    Integer,
    Date,
    Byte,
    Short,
    Signed,
    Integer64,
    Ether,
    /// Types we carry but do not interpret (abinary, combo-ip, ...): shown and taken as hex.
    Opaque,
}

impl DataType {
    fn parse(word: &str) -> Option<Self> {
        Some(match word.to_ascii_lowercase().as_str() {
            "string" | "text" => Self::String,
            "octets" => Self::Octets,
            "ipaddr" | "ipv4addr" => Self::IpAddr,
            "ipv6addr" => Self::Ipv6Addr,
            "ipv6prefix" => Self::Ipv6Prefix,
            "ifid" => Self::IfId,
            "integer" | "uint32" => Self::Integer,
            "date" => Self::Date,
            "byte" | "uint8" => Self::Byte,
            "short" | "uint16" => Self::Short,
            "signed" | "int32" => Self::Signed,
            "integer64" | "uint64" => Self::Integer64,
            "ether" => Self::Ether,
            "abinary" | "combo-ip" | "ipv4prefix" => Self::Opaque,
            _ => return None,
        })
    }
}

/// One `ATTRIBUTE` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeDef {
    pub name: String,
    /// 0 for the standard space.
    pub vendor: u32,
    pub typ: u8,
    pub data_type: DataType,
    /// The `encrypt=` flag: such values are secrets and never printed.
    pub encrypted: bool,
}

impl AttributeDef {
    /// An attribute of this definition carrying `value`.
    pub fn with_value(&self, value: Vec<u8>) -> Attribute {
        if self.vendor == 0 {
            Attribute::Standard { typ: self.typ, value }
        } else {
            Attribute::Vendor { vendor: self.vendor, typ: self.typ, value }
        }
    }
}

/// A dictionary problem, located.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct DictError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// A value that does not fit an attribute's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {data_type:?} value for {attribute}")]
pub struct ValueError {
    pub attribute: String,
    pub data_type: DataType,
    pub value: String,
}

#[derive(Debug, Default, Clone)]
pub struct Dictionary {
    vendors: HashMap<String, u32>,
    vendor_names: HashMap<u32, String>,
    attributes: Vec<AttributeDef>,
    by_name: HashMap<String, usize>,
    by_number: HashMap<(u32, u8), usize>,
    /// Per attribute index, its named values.
    values: HashMap<usize, NamedValues>,
}

impl Dictionary {
    /// The dictionaries shipped with radmfa.
    pub fn builtin() -> Result<Self, DictError> {
        let mut dict = Self::default();
        let mut state = LoadState::default();
        dict.load_source(&Source::Builtin("dictionary"), 0, &mut state)?;
        Ok(dict)
    }

    /// Loads an admin's dictionary file (and what it includes) on top of this one.
    pub fn load_file(&mut self, path: &Path) -> Result<(), DictError> {
        let mut state = LoadState::default();
        self.load_source(&Source::File(path.to_path_buf()), 0, &mut state)
    }

    /// Loads dictionary text held in memory on top of this one; errors name it `name`.
    ///
    /// Text has no folder to resolve an `$INCLUDE` against, so `$INCLUDE` is refused rather
    /// than resolved against the working directory: the fuzz target feeds arbitrary text here
    /// and must never make the parser read files from the machine.
    pub fn load_str(&mut self, name: &str, text: &str) -> Result<(), DictError> {
        let mut state = LoadState::default();
        self.load_source(&Source::Text { name: name.to_owned(), text: text.to_owned() }, 0, &mut state)
    }

    pub fn attribute(&self, name: &str) -> Option<&AttributeDef> {
        self.by_name.get(&name.to_ascii_lowercase()).and_then(|&i| self.attributes.get(i))
    }

    pub fn attribute_by_number(&self, vendor: u32, typ: u8) -> Option<&AttributeDef> {
        self.by_number.get(&(vendor, typ)).and_then(|&i| self.attributes.get(i))
    }

    pub fn vendor_id(&self, name: &str) -> Option<u32> {
        self.vendors.get(&name.to_ascii_lowercase()).copied()
    }

    /// Parses a config value for an attribute: named `VALUE`s, numbers, addresses, `0x` hex.
    pub fn parse_value(&self, def: &AttributeDef, text: &str) -> Result<Vec<u8>, ValueError> {
        let bad = || ValueError { attribute: def.name.clone(), data_type: def.data_type, value: text.to_owned() };
        let named = || {
            let index = *self.by_name.get(&def.name.to_ascii_lowercase())?;
            self.values.get(&index)?.0.get(&text.to_ascii_lowercase()).copied()
        };
        let number = |max: u64| -> Result<u64, ValueError> {
            let n = named().map(Ok).unwrap_or_else(|| parse_number(text).ok_or_else(bad))?;
            if n > max { Err(bad()) } else { Ok(n) }
        };
        Ok(match def.data_type {
            DataType::String => text.as_bytes().to_vec(),
            DataType::Octets | DataType::Opaque | DataType::IfId | DataType::Ipv6Prefix => match text.strip_prefix("0x") {
                Some(hex) => parse_hex(hex).ok_or_else(bad)?,
                None if def.data_type == DataType::Octets => text.as_bytes().to_vec(),
                None => return Err(bad()),
            },
            DataType::IpAddr => text.parse::<Ipv4Addr>().map_err(|_| bad())?.octets().to_vec(),
            DataType::Ipv6Addr => text.parse::<Ipv6Addr>().map_err(|_| bad())?.octets().to_vec(),
            DataType::Integer | DataType::Date => (number(u64::from(u32::MAX))? as u32).to_be_bytes().to_vec(),
            DataType::Byte => vec![number(u64::from(u8::MAX))? as u8],
            DataType::Short => (number(u64::from(u16::MAX))? as u16).to_be_bytes().to_vec(),
            DataType::Integer64 => number(u64::MAX)?.to_be_bytes().to_vec(),
            DataType::Signed => text.parse::<i32>().map_err(|_| bad())?.to_be_bytes().to_vec(),
            DataType::Ether => {
                let parts: Option<Vec<u8>> = text.split([':', '-']).map(|p| u8::from_str_radix(p, 16).ok()).collect();
                parts.filter(|p| p.len() == 6).ok_or_else(bad)?
            }
        })
    }

    /// `Name = value` for logs. Secret-bearing attributes print as `[hidden]`.
    pub fn describe(&self, attribute: &Attribute) -> String {
        let (vendor, typ, value) = match attribute {
            Attribute::Standard { typ, value } => (0, *typ, value),
            Attribute::Vendor { vendor, typ, value } => (*vendor, *typ, value),
        };
        let Some(def) = self.attribute_by_number(vendor, typ) else {
            let name = match (vendor, typ) {
                (0, VENDOR_SPECIFIC) => "Vendor-Specific".to_owned(),
                (0, t) => format!("Attr-{t}"),
                (v, t) => format!("Vendor-{}-Attr-{t}", self.vendor_names.get(&v).cloned().unwrap_or_else(|| v.to_string())),
            };
            return format!("{name} = {}", hex(value));
        };
        if def.encrypted || is_credential(vendor, typ) {
            return format!("{} = [hidden]", def.name);
        }
        format!("{} = {}", def.name, self.format_value(def, value))
    }

    fn format_value(&self, def: &AttributeDef, value: &[u8]) -> String {
        let index = self.by_name.get(&def.name.to_ascii_lowercase());
        let named = |n: u64| index.and_then(|i| self.values.get(i)).and_then(|(_, by_num)| by_num.get(&n).cloned());
        match (def.data_type, value.len()) {
            (DataType::String, _) => match std::str::from_utf8(value) {
                Ok(s) => format!("{s:?}"),
                Err(_) => hex(value),
            },
            (DataType::IpAddr, 4) => Ipv4Addr::from([value[0], value[1], value[2], value[3]]).to_string(),
            (DataType::Ipv6Addr, 16) => {
                let octets: [u8; 16] = value.try_into().unwrap_or_default();
                Ipv6Addr::from(octets).to_string()
            }
            (DataType::Integer | DataType::Date, 4) => {
                let n = u64::from(u32::from_be_bytes([value[0], value[1], value[2], value[3]]));
                named(n).unwrap_or_else(|| n.to_string())
            }
            (DataType::Byte, 1) => named(u64::from(value[0])).unwrap_or_else(|| value[0].to_string()),
            (DataType::Short, 2) => {
                let n = u64::from(u16::from_be_bytes([value[0], value[1]]));
                named(n).unwrap_or_else(|| n.to_string())
            }
            (DataType::Signed, 4) => i32::from_be_bytes([value[0], value[1], value[2], value[3]]).to_string(),
            _ => hex(value),
        }
    }

    fn load_source(&mut self, source: &Source, depth: usize, state: &mut LoadState) -> Result<(), DictError> {
        let file = source.display();
        if depth > MAX_INCLUDE_DEPTH {
            return Err(DictError { file, line: 0, message: format!("$INCLUDE nested deeper than {MAX_INCLUDE_DEPTH} (a loop?)") });
        }
        let text = source.read().map_err(|message| DictError { file: file.clone(), line: 0, message })?;
        let mut vendor_block: Option<u32> = None;
        for (number, raw_line) in text.lines().enumerate() {
            let line = number + 1;
            let err = |message: String| DictError { file: file.clone(), line, message };
            let content = raw_line.split('#').next().unwrap_or_default();
            let words: Vec<&str> = content.split_whitespace().collect();
            let Some((&keyword, args)) = words.split_first() else { continue };
            match keyword {
                "$INCLUDE" | "$INCLUDE-" => {
                    let [name] = args else {
                        return Err(err(format!("{keyword} takes one file name")));
                    };
                    let included =
                        source.include(name).ok_or_else(|| err(format!("{keyword} is not allowed in dictionary text given in memory")))?;
                    if keyword == "$INCLUDE-" && !included.exists() {
                        continue;
                    }
                    self.load_source(&included, depth + 1, state)?;
                }
                "VENDOR" => self.add_vendor(args).map_err(err)?,
                "BEGIN-VENDOR" => {
                    let [name, ..] = args else {
                        return Err(err("BEGIN-VENDOR takes a vendor name".into()));
                    };
                    let id = self.vendor_id(name).ok_or_else(|| err(format!("unknown vendor {name}")))?;
                    vendor_block = Some(id);
                }
                "END-VENDOR" => {
                    if vendor_block.take().is_none() {
                        return Err(err("END-VENDOR without BEGIN-VENDOR".into()));
                    }
                }
                "ATTRIBUTE" => self.add_attribute(args, vendor_block).map_err(err)?,
                "VALUE" => {
                    let [attribute, name, value] = args else {
                        return Err(err("VALUE takes an attribute, a name and a number".into()));
                    };
                    let n = parse_number(value).ok_or_else(|| err(format!("bad value number {value:?}")))?;
                    state.pending_values.push((file.clone(), line, (*attribute).to_owned(), (*name).to_owned(), n));
                }
                other => return Err(err(format!("unsupported keyword {other}"))),
            }
        }
        if vendor_block.is_some() {
            return Err(DictError { file, line: text.lines().count(), message: "BEGIN-VENDOR without END-VENDOR".into() });
        }
        if depth == 0 {
            // VALUE lines may precede their ATTRIBUTE (or stand in another file): resolve last.
            self.add_values(std::mem::take(&mut state.pending_values))?;
        }
        Ok(())
    }

    fn add_vendor(&mut self, args: &[&str]) -> Result<(), String> {
        let (name, id) = match args {
            [name, id] => (name, id),
            [name, id, format] if *format == "format=1,1" => (name, id),
            [_, _, format] => return Err(format!("vendor format {format:?} is not supported (only 1,1)")),
            _ => return Err("VENDOR takes a name and a number".into()),
        };
        let id = parse_number(id).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| format!("bad vendor number {id:?}"))?;
        if let Some(&existing) = self.vendors.get(&name.to_ascii_lowercase())
            && existing != id
        {
            return Err(format!("vendor {name} already defined as {existing}"));
        }
        self.vendors.insert(name.to_ascii_lowercase(), id);
        self.vendor_names.entry(id).or_insert_with(|| (*name).to_owned());
        Ok(())
    }

    fn add_values(&mut self, values: Vec<PendingValue>) -> Result<(), DictError> {
        for (file, line, attribute, name, n) in values {
            let index = *self.by_name.get(&attribute.to_ascii_lowercase()).ok_or_else(|| DictError {
                file,
                line,
                message: format!("VALUE for unknown attribute {attribute}"),
            })?;
            let (by_name, by_num) = self.values.entry(index).or_default();
            by_name.insert(name.to_ascii_lowercase(), n);
            by_num.entry(n).or_insert(name);
        }
        Ok(())
    }

    fn add_attribute(&mut self, args: &[&str], vendor_block: Option<u32>) -> Result<(), String> {
        let (name, number, type_word, extra) = match args {
            [name, number, typ] => (*name, *number, *typ, None),
            [name, number, typ, extra] => (*name, *number, *typ, Some(*extra)),
            _ => return Err("ATTRIBUTE takes a name, a number, a type and optional flags".into()),
        };
        let data_type = DataType::parse(type_word).ok_or_else(|| format!("unsupported type {type_word:?} for {name}"))?;
        let typ = parse_number(number)
            .and_then(|n| u8::try_from(n).ok())
            .ok_or_else(|| format!("attribute number {number:?} of {name} is not 0..=255 (TLVs are not supported)"))?;
        let mut vendor = vendor_block.unwrap_or(0);
        let mut encrypted = false;
        if let Some(extra) = extra {
            if let Some(id) = self.vendor_id(extra) {
                vendor = id; // old style: the vendor named after the type
            } else {
                for flag in extra.split(',') {
                    match flag.split_once('=') {
                        Some(("encrypt", level)) => encrypted = level != "0",
                        None if matches!(flag, "has_tag" | "concat" | "virtual" | "array" | "internal") => {}
                        _ => return Err(format!("unknown flag or vendor {flag:?} for {name}")),
                    }
                }
            }
        }
        let def = AttributeDef { name: name.to_owned(), vendor, typ, data_type, encrypted };
        let key = name.to_ascii_lowercase();
        if let Some(&existing) = self.by_name.get(&key) {
            let old = &self.attributes[existing];
            if (old.vendor, old.typ) != (vendor, typ) {
                return Err(format!("{name} is already defined as {}:{}", old.vendor, old.typ));
            }
            return Ok(());
        }
        let index = self.attributes.len();
        self.attributes.push(def);
        self.by_name.insert(key, index);
        // Several names may share a number (aliases): the first one names it in logs.
        self.by_number.entry((vendor, typ)).or_insert(index);
        Ok(())
    }
}

/// An attribute's `VALUE`s: name (lower case) → number, and number → display name.
type NamedValues = (HashMap<String, u64>, HashMap<u64, String>);

/// A `VALUE` line not yet resolved: file, line, attribute, name, number.
type PendingValue = (String, usize, String, String, u64);

#[derive(Default)]
struct LoadState {
    pending_values: Vec<PendingValue>,
}

enum Source {
    Builtin(&'static str),
    File(PathBuf),
    /// Text given in memory ([`Dictionary::load_str`]); it includes nothing.
    Text {
        name: String,
        text: String,
    },
}

impl Source {
    fn display(&self) -> String {
        match self {
            Self::Builtin(name) => format!("(built in) {name}"),
            Self::File(path) => path.display().to_string(),
            Self::Text { name, .. } => name.clone(),
        }
    }

    fn read(&self) -> Result<String, String> {
        match self {
            Self::Builtin(name) => BUILTIN
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, text)| (*text).to_owned())
                .ok_or_else(|| format!("no built-in dictionary {name}")),
            Self::File(path) => std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}")),
            Self::Text { text, .. } => Ok(text.clone()),
        }
    }

    /// An `$INCLUDE` resolves against the including file's folder; text in memory has none.
    fn include(&self, name: &str) -> Option<Source> {
        Some(match self {
            Self::Builtin(_) => match BUILTIN.iter().find(|(n, _)| *n == name) {
                Some((n, _)) => Self::Builtin(n),
                None => Self::File(PathBuf::from(name)),
            },
            Self::File(path) => Self::File(path.parent().unwrap_or(Path::new(".")).join(name)),
            Self::Text { .. } => return None,
        })
    }

    fn exists(&self) -> bool {
        match self {
            Self::Builtin(_) | Self::Text { .. } => true,
            Self::File(path) => path.exists(),
        }
    }
}

fn is_credential(vendor: u32, typ: u8) -> bool {
    use super::attr::{CHAP_PASSWORD, USER_PASSWORD, VENDOR_MICROSOFT as MICROSOFT};
    matches!((vendor, typ), (0, USER_PASSWORD | CHAP_PASSWORD) | (MICROSOFT, 1..=6) | (MICROSOFT, 25) | (MICROSOFT, 27))
}

fn parse_number(text: &str) -> Option<u64> {
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

fn hex(value: &[u8]) -> String {
    let mut s = String::with_capacity(2 + value.len() * 2);
    s.push_str("0x");
    for b in value {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_dictionary_knows_the_vendors_our_users_run() {
        let d = Dictionary::builtin().unwrap();
        let check = |name: &str, vendor: u32, typ: u8| {
            let def = d.attribute(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!((def.vendor, def.typ), (vendor, typ), "{name}");
        };
        check("User-Name", 0, 1);
        check("Reply-Message", 0, 18);
        check("Message-Authenticator", 0, 80);
        check("Acct-Status-Type", 0, 40);
        check("NAS-IPv6-Address", 0, 95);
        check("Citrix-User-Groups", 66, 16);
        check("Citrix-Group-Names", 66, 14);
        check("MS-CHAP2-Response", 311, 25);
        check("Cisco-AVPair", 9, 1);
        check("ASA-Group-Policy", 3076, 25);
        check("Fortinet-Group-Name", 12356, 1);
        check("PaloAlto-User-Group", 25461, 5);
        check("user-name", 0, 1); // names are case-insensitive, as in FreeRADIUS
    }

    #[test]
    fn values_parse_by_type_and_by_name() {
        let d = Dictionary::builtin().unwrap();
        let def = |n: &str| d.attribute(n).unwrap().clone();
        assert_eq!(d.parse_value(&def("Service-Type"), "Framed-User").unwrap(), vec![0, 0, 0, 2]);
        assert_eq!(d.parse_value(&def("Session-Timeout"), "3600").unwrap(), 3600u32.to_be_bytes());
        assert_eq!(d.parse_value(&def("Framed-IP-Address"), "10.1.2.3").unwrap(), vec![10, 1, 2, 3]);
        assert_eq!(d.parse_value(&def("Class"), "0x0102").unwrap(), vec![1, 2]);
        assert!(d.parse_value(&def("Session-Timeout"), "soon").is_err());
        assert!(d.parse_value(&def("Framed-IP-Address"), "10.1.2").is_err());
        assert!(d.parse_value(&def("Class"), "0x123").is_err());
    }

    #[test]
    fn describe_names_attributes_and_hides_credentials() {
        let d = Dictionary::builtin().unwrap();
        assert_eq!(d.describe(&Attribute::standard(1, *b"alice")), "User-Name = \"alice\"");
        assert_eq!(d.describe(&Attribute::standard(2, *b"secret")), "User-Password = [hidden]");
        assert_eq!(d.describe(&Attribute::standard(6, [0, 0, 0, 2])), "Service-Type = Framed-User");
        assert_eq!(d.describe(&Attribute::vendor(66, 16, *b"VPN")), "Citrix-User-Groups = \"VPN\"");
        assert_eq!(d.describe(&Attribute::vendor(99999, 3, [1])), "Vendor-99999-Attr-3 = 0x01");
        assert_eq!(d.describe(&Attribute::vendor(311, 16, [1, 2])), "MS-MPPE-Send-Key = [hidden]");
    }

    #[test]
    fn admin_file_adds_a_vendor_with_includes_and_located_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dictionary.local"), "$INCLUDE dictionary.acme\n").unwrap();
        std::fs::write(
            dir.path().join("dictionary.acme"),
            "VENDOR Acme 4242\nBEGIN-VENDOR Acme\nATTRIBUTE Acme-Role 1 integer\nEND-VENDOR Acme\nVALUE Acme-Role Admin 7\n",
        )
        .unwrap();
        let mut d = Dictionary::builtin().unwrap();
        d.load_file(&dir.path().join("dictionary.local")).unwrap();
        let role = d.attribute("Acme-Role").unwrap().clone();
        assert_eq!((role.vendor, role.typ), (4242, 1));
        assert_eq!(d.parse_value(&role, "Admin").unwrap(), vec![0, 0, 0, 7]);

        std::fs::write(dir.path().join("bad"), "# comment\nATTRIBUTE Broken 300 string\n").unwrap();
        let err = d.load_file(&dir.path().join("bad")).unwrap_err().to_string();
        assert!(err.ends_with("bad:2: attribute number \"300\" of Broken is not 0..=255 (TLVs are not supported)"), "{err}");

        std::fs::write(dir.path().join("clash"), "ATTRIBUTE User-Name 9 string\n").unwrap();
        let err = d.load_file(&dir.path().join("clash")).unwrap_err().to_string();
        assert!(err.contains("clash:1: User-Name is already defined as 0:1"), "{err}");

        std::fs::write(dir.path().join("loop"), "$INCLUDE loop\n").unwrap();
        assert!(d.load_file(&dir.path().join("loop")).unwrap_err().to_string().contains("nested deeper"));
    }

    #[test]
    fn text_in_memory_loads_but_includes_nothing() {
        let mut d = Dictionary::builtin().unwrap();
        d.load_str("inline", "VENDOR Acme 4242\nATTRIBUTE Acme-Role 1 integer Acme\nVALUE Acme-Role Admin 7\n").unwrap();
        let role = d.attribute("Acme-Role").unwrap().clone();
        assert_eq!((role.vendor, role.typ), (4242, 1));
        assert_eq!(d.parse_value(&role, "Admin").unwrap(), vec![0, 0, 0, 7]);
        for keyword in ["$INCLUDE", "$INCLUDE-"] {
            let err = d.load_str("inline", &format!("# a comment\n{keyword} /etc/passwd\n")).unwrap_err().to_string();
            assert_eq!(err, format!("inline:2: {keyword} is not allowed in dictionary text given in memory"));
        }
    }
}

//! Reading FreeRADIUS 3 dictionary files into a [`Dictionary`]: the keywords, the `$INCLUDE`
//! tree (bounded depth, cycles refused), vendor and TLV blocks, numbering (`26`, `0xBF38`,
//! `241.5.1`), types and flags, each checked as FreeRADIUS checks it. Errors name file and line.

use std::fmt;
use std::path::{Path, PathBuf};

use super::types::{AttributeDef, DataType, Flags, Oid, Space};
use super::values::parse_number;
use super::{DictError, Dictionary, NamedValues};
use crate::radius::vendor::VendorFormat;

/// The files in `dictionaries/`, compiled in. `dictionary` is the root that includes the rest.
const BUILTIN: &[(&str, &str)] = &[
    ("dictionary", include_str!("../../../dictionaries/dictionary")),
    ("dictionary.rfc2865", include_str!("../../../dictionaries/dictionary.rfc2865")),
    ("dictionary.rfc2866", include_str!("../../../dictionaries/dictionary.rfc2866")),
    ("dictionary.rfc2869", include_str!("../../../dictionaries/dictionary.rfc2869")),
    ("dictionary.rfc3162", include_str!("../../../dictionaries/dictionary.rfc3162")),
    ("dictionary.rfc5997", include_str!("../../../dictionaries/dictionary.rfc5997")),
    ("dictionary.citrix", include_str!("../../../dictionaries/dictionary.citrix")),
    ("dictionary.microsoft", include_str!("../../../dictionaries/dictionary.microsoft")),
    ("dictionary.cisco", include_str!("../../../dictionaries/dictionary.cisco")),
    ("dictionary.cisco.asa", include_str!("../../../dictionaries/dictionary.cisco.asa")),
    ("dictionary.fortinet", include_str!("../../../dictionaries/dictionary.fortinet")),
    ("dictionary.paloalto", include_str!("../../../dictionaries/dictionary.paloalto")),
];

/// FreeRADIUS's own tree nests two deep; this leaves admins room and stops a runaway chain.
pub(super) const MAX_INCLUDE_DEPTH: usize = 16;

/// Keywords of FreeRADIUS 4 dictionaries, which are another dialect.
const FREERADIUS_4_KEYWORDS: &[&str] =
    &["ALIAS", "BEGIN-PROTOCOL", "END-PROTOCOL", "PROTOCOL", "DEFINE", "ENUM", "FLAGS", "MEMBER", "STRUCT", "BEGIN", "END"];

/// A line of a dictionary file.
#[derive(Debug, Clone)]
pub(super) struct Location {
    file: String,
    line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// What one load carries across the files it reads.
#[derive(Default)]
pub(super) struct LoadState {
    /// `VALUE` lines may precede their `ATTRIBUTE` (or stand in another file): resolved last.
    pending_values: Vec<PendingValue>,
    /// The files being read, outermost first: including one of them again is a cycle.
    including: Vec<String>,
}

struct PendingValue {
    at: Location,
    attribute: String,
    name: String,
    number: u64,
}

/// The blocks open in one file.
#[derive(Default)]
struct Blocks {
    vendor: Option<VendorBlock>,
    /// `BEGIN-TLV` blocks, innermost last: numbers inside count from the TLV's.
    tlvs: Vec<(String, Oid)>,
}

struct VendorBlock {
    name: String,
    id: u32,
    space: Space,
}

pub(super) enum Source {
    Builtin(&'static str),
    File(PathBuf),
    /// Text given in memory ([`Dictionary::load_str`]); it includes nothing.
    Text {
        name: String,
        text: String,
    },
}

impl Dictionary {
    /// Reads `source` (and what it includes) into this dictionary.
    pub(super) fn load_source(&mut self, source: &Source, state: &mut LoadState) -> Result<(), DictError> {
        let text = source.read().map_err(|message| DictError { file: source.display(), line: 0, message })?;
        self.load_text(source, &text, 0, state)
    }

    fn load_text(&mut self, source: &Source, text: &str, depth: usize, state: &mut LoadState) -> Result<(), DictError> {
        let file = source.display();
        state.including.push(source.identity());
        let mut blocks = Blocks::default();
        for (number, raw_line) in text.lines().enumerate() {
            let at = Location { file: file.clone(), line: number + 1 };
            let err = |message: String| DictError { file: file.clone(), line: number + 1, message };
            let content = raw_line.split('#').next().unwrap_or_default();
            let words: Vec<&str> = content.split_whitespace().collect();
            let Some((&keyword, args)) = words.split_first() else { continue };
            match keyword.to_ascii_uppercase().as_str() {
                "$INCLUDE" | "$INCLUDE-" => {
                    let [name] = args else {
                        return Err(err(format!("{keyword} takes one file name")));
                    };
                    let included =
                        source.include(name).ok_or_else(|| err(format!("{keyword} is not allowed in dictionary text given in memory")))?;
                    if keyword.ends_with('-') && !included.exists() {
                        continue; // optional, and absent
                    }
                    if depth + 1 > MAX_INCLUDE_DEPTH {
                        return Err(err(format!("$INCLUDE nested deeper than {MAX_INCLUDE_DEPTH} files")));
                    }
                    let identity = included.identity();
                    if state.including.contains(&identity) {
                        let chain = [state.including.as_slice(), &[identity]].concat().join(" → ");
                        return Err(err(format!("$INCLUDE {name} is a cycle: {chain}")));
                    }
                    let text = included.read().map_err(|e| err(format!("$INCLUDE {name} ({}): {e}", included.display())))?;
                    self.load_text(&included, &text, depth + 1, state)?;
                }
                "VENDOR" => self.add_vendor(args).map_err(err)?,
                "BEGIN-VENDOR" => blocks.begin_vendor(self, args).map_err(err)?,
                "END-VENDOR" => blocks.end_vendor(self, args).map_err(err)?,
                "BEGIN-TLV" => blocks.begin_tlv(self, args).map_err(err)?,
                "END-TLV" => blocks.end_tlv(args).map_err(err)?,
                "ATTRIBUTE" => self.add_attribute(args, &blocks, at).map_err(err)?,
                "VALUE" => {
                    let [attribute, name, value] = args else {
                        return Err(err("VALUE takes an attribute, a name and a number".into()));
                    };
                    let number = parse_number(value).ok_or_else(|| err(format!("bad value number {value:?}")))?;
                    state.pending_values.push(PendingValue { at, attribute: (*attribute).to_owned(), name: (*name).to_owned(), number });
                }
                upper if FREERADIUS_4_KEYWORDS.contains(&upper) => {
                    return Err(err(format!("{keyword} is FreeRADIUS 4 syntax; radmfa reads FreeRADIUS 3 dictionaries")));
                }
                // Never quoted: a file named here by mistake (a secret file, /etc/shadow) must not
                // reach the log through its first word.
                _ => {
                    return Err(err(
                        "not a dictionary line: it starts with no keyword of FreeRADIUS 3 dictionaries (its text is not shown: is this a dictionary file?)"
                            .to_owned(),
                    ));
                }
            }
        }
        let last_line = text.lines().count();
        if let Some(block) = &blocks.vendor {
            return Err(DictError { file, line: last_line, message: format!("BEGIN-VENDOR {} without END-VENDOR", block.name) });
        }
        if let Some((name, _)) = blocks.tlvs.last() {
            return Err(DictError { file, line: last_line, message: format!("BEGIN-TLV {name} without END-TLV") });
        }
        state.including.pop();
        if depth == 0 {
            self.add_values(std::mem::take(&mut state.pending_values))?;
        }
        Ok(())
    }

    fn add_vendor(&mut self, args: &[&str]) -> Result<(), String> {
        let (name, id, options) = match args {
            [name, id, options @ ..] if options.len() <= 1 => (*name, *id, options),
            _ => return Err("VENDOR takes a name, a number and optionally format=T,L[,c]".into()),
        };
        let id = parse_number(id).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| format!("bad vendor number {id:?}"))?;
        if id == 0 {
            return Err(format!("vendor {name}: 0 is not a vendor number"));
        }
        let format = match options {
            [option] => parse_vendor_format(option)?,
            _ => VendorFormat::RFC2865,
        };
        if let Some(existing) = self.vendor_id(name)
            && existing != id
        {
            return Err(format!("vendor {name} is already defined as {existing}"));
        }
        let known = self.vendor_format(id);
        if known != format && self.vendor_names.contains_key(&id) {
            return Err(format!("vendor {name} ({id}) is already defined with format={known}, not format={format}"));
        }
        self.vendors.insert(name.to_ascii_lowercase(), id);
        self.vendor_names.insert(id, name.to_owned());
        if !format.is_rfc2865() {
            self.vendor_formats.insert(id, format);
        }
        Ok(())
    }

    fn add_attribute(&mut self, args: &[&str], blocks: &Blocks, at: Location) -> Result<(), String> {
        let (name, number, type_word, options) = match args {
            [name, number, typ] => (*name, *number, *typ, None),
            [name, number, typ, options] => (*name, *number, *typ, Some(*options)),
            _ => return Err("ATTRIBUTE takes a name, a number, a type and optional flags".into()),
        };
        let (data_type, fixed_len) = parse_type(type_word).ok_or_else(|| format!("unsupported type {type_word:?} for {name}"))?;
        let mut flags = Flags { fixed_len, ..Flags::default() };
        let mut old_style_vendor = None;
        if let Some(options) = options {
            match self.vendor_id(options) {
                // Before BEGIN-VENDOR existed, the vendor was named after the type.
                Some(id) if blocks.vendor.is_none() && blocks.tlvs.is_empty() => old_style_vendor = Some(id),
                _ => parse_flags(options, &mut flags).map_err(|e| format!("{e} for {name}"))?,
            }
        }
        let numbers = parse_oid(number).ok_or_else(|| format!("bad attribute number {number:?} for {name}"))?;
        let (space, mut path) = match (blocks.tlvs.last(), &blocks.vendor, old_style_vendor) {
            (Some((_, tlv)), _, _) => (tlv.space, tlv.path.clone()),
            (None, Some(block), _) => (block.space, Vec::new()),
            (None, None, Some(id)) => (Space::Vendor(id), Vec::new()),
            (None, None, None) => (Space::Standard, Vec::new()),
        };
        path.extend(numbers);
        let oid = Oid { space, path };
        self.check_placement(name, &oid, data_type, &flags)?;
        let unsupported = AttributeDef::classify(&oid, data_type, &flags);
        self.insert(AttributeDef { name: name.to_owned(), oid, data_type, flags, unsupported }, at)
    }

    /// FreeRADIUS's rules for where a number, a type and a flag may stand.
    fn check_placement(&self, name: &str, oid: &Oid, data_type: DataType, flags: &Flags) -> Result<(), String> {
        let top = oid.path.first().copied().unwrap_or_default();
        match oid.space {
            Space::Standard if top == 0 => return Err(format!("{name}: attribute number 0 does not exist")),
            Space::Standard if top > 255 && oid.path.len() > 1 => {
                return Err(format!("{name} ({oid}): only attributes 1-255 hold others"));
            }
            Space::Vendor(vendor) => {
                let format = self.vendor_format(vendor);
                if top > format.max_type() || (top == 0 && format.type_octets() != 1) {
                    return Err(format!("{name}: number {top} does not fit vendor {vendor}'s format={format}"));
                }
                if data_type == DataType::Tlv && (format.type_octets(), format.length_octets()) != (1, 1) {
                    return Err(format!("{name}: a tlv needs its vendor's format to be 1,1"));
                }
            }
            Space::ExtendedVendor { .. } if top == 0 || top > 255 => {
                return Err(format!("{name}: an extended vendor's attribute numbers are 1-255"));
            }
            _ => {}
        }
        if let Some(parent) = oid.parent() {
            let parent_def = self.attribute_by_oid(&parent).ok_or_else(|| format!("{name} ({oid}): its parent {parent} is not defined"))?;
            let holds = match parent_def.data_type {
                DataType::Tlv => true,
                DataType::Extended | DataType::LongExtended => parent.space == Space::Standard && parent.path.len() == 1,
                _ => false,
            };
            if !holds {
                return Err(format!(
                    "{name} ({oid}): its parent {} is {:?}, which holds no attributes",
                    parent_def.name, parent_def.data_type
                ));
            }
            if !(1..=255).contains(oid.path.last().unwrap_or(&0)) {
                return Err(format!("{name} ({oid}): numbers inside another attribute are 1-255"));
            }
        }
        let extended_slot = |p: &Oid| p.space == Space::Standard && matches!(p.path.as_slice(), [241..=246]);
        match data_type {
            DataType::Vsa if *oid != Oid::standard(u32::from(crate::radius::packet::VENDOR_SPECIFIC)) => {
                return Err(format!("{name}: type vsa is for Vendor-Specific (26) only"));
            }
            DataType::Extended | DataType::LongExtended if !extended_slot(oid) => {
                return Err(format!("{name}: types extended and long-extended are for attributes 241-246 only"));
            }
            DataType::Evs => {
                let in_extended = oid.parent().is_some_and(|p| {
                    extended_slot(&p)
                        && self.attribute_by_oid(&p).is_some_and(|d| matches!(d.data_type, DataType::Extended | DataType::LongExtended))
                });
                if !(in_extended && oid.path.last() == Some(&26)) {
                    return Err(format!("{name}: type evs is for 241.26 to 246.26 only"));
                }
            }
            _ => {}
        }
        if flags.has_tag && !matches!(data_type, DataType::Integer | DataType::String) {
            return Err(format!("{name}: only integer and string attributes have tags"));
        }
        if flags.concat && data_type != DataType::Octets {
            return Err(format!("{name}: only octets attributes take concat"));
        }
        Ok(())
    }

    /// Adds `def`; the same name again for the same number takes the new type and flags.
    fn insert(&mut self, def: AttributeDef, at: Location) -> Result<(), String> {
        let key = def.name.to_ascii_lowercase();
        let oid = def.oid.clone();
        let index = match self.by_name.get(&key) {
            Some(&index) => {
                let (old, first_at) = (&self.attributes[index], &self.defined_at[index]);
                if old.oid != def.oid {
                    return Err(format!("{} is already defined as {} at {first_at}, not {}", def.name, old.oid, def.oid));
                }
                self.attributes[index] = def;
                self.defined_at[index] = at;
                index
            }
            None => {
                self.attributes.push(def);
                self.defined_at.push(at);
                self.by_name.insert(key, self.attributes.len() - 1);
                self.attributes.len() - 1
            }
        };
        self.by_oid.insert(oid, index);
        Ok(())
    }

    fn add_values(&mut self, values: Vec<PendingValue>) -> Result<(), DictError> {
        for PendingValue { at, attribute, name, number } in values {
            let err = |message: String| DictError { file: at.file.clone(), line: at.line, message };
            let def = self.attribute(&attribute).ok_or_else(|| err(format!("VALUE for unknown attribute {attribute}")))?;
            let max = match def.data_type {
                DataType::Byte => u64::from(u8::MAX),
                DataType::Short => u64::from(u16::MAX),
                DataType::Integer => u64::from(u32::MAX),
                DataType::Octets => u64::MAX, // FreeRADIUS allows them (CableLabs' dictionary has some)
                other => return Err(err(format!("VALUE for {attribute}: {other:?} attributes have no named values"))),
            };
            if number > max {
                return Err(err(format!("VALUE {name} {number} does not fit {attribute} (at most {max})")));
            }
            let NamedValues { by_name, by_number } = self.values.entry(def.oid.clone()).or_default();
            by_name.insert(name.to_ascii_lowercase(), number);
            by_number.insert(number, name);
        }
        Ok(())
    }
}

impl Blocks {
    /// `BEGIN-VENDOR name`, or `... format=Extended-Vendor-Specific-N` (FreeRADIUS 3) or
    /// `... parent=Extended-Vendor-Specific-N` for a vendor's attributes inside that EVS.
    fn begin_vendor(&mut self, dict: &Dictionary, args: &[&str]) -> Result<(), String> {
        let (name, option) = match args {
            [name] => (*name, None),
            [name, option] => (*name, Some(*option)),
            _ => return Err("BEGIN-VENDOR takes a vendor name and optionally format=Extended-Vendor-Specific-N".into()),
        };
        if let Some(open) = &self.vendor {
            return Err(format!("BEGIN-VENDOR {name} inside BEGIN-VENDOR {}: END-VENDOR {} first", open.name, open.name));
        }
        let id = dict.vendor_id(name).ok_or_else(|| format!("unknown vendor {name}"))?;
        let space = match option {
            None => Space::Vendor(id),
            Some(option) => {
                let parent = option
                    .strip_prefix("format=")
                    .or_else(|| option.strip_prefix("parent="))
                    .ok_or_else(|| format!("unknown BEGIN-VENDOR option {option:?}"))?;
                let evs = dict.attribute(parent).ok_or_else(|| format!("BEGIN-VENDOR {name}: unknown attribute {parent}"))?;
                match (evs.data_type, evs.oid.path.first()) {
                    (DataType::Evs, Some(&extended)) => Space::ExtendedVendor { extended, vendor: id },
                    _ => return Err(format!("BEGIN-VENDOR {name}: {parent} is not of type evs")),
                }
            }
        };
        self.vendor = Some(VendorBlock { name: name.to_owned(), id, space });
        Ok(())
    }

    fn end_vendor(&mut self, dict: &Dictionary, args: &[&str]) -> Result<(), String> {
        let Some(open) = self.vendor.take() else {
            return Err("END-VENDOR without BEGIN-VENDOR".into());
        };
        if let Some((tlv, _)) = self.tlvs.last() {
            return Err(format!("END-VENDOR {} inside BEGIN-TLV {tlv}: END-TLV {tlv} first", open.name));
        }
        match args {
            [] => Ok(()),
            [name] if dict.vendor_id(name) == Some(open.id) => Ok(()),
            [name] => Err(format!("END-VENDOR {name} does not close BEGIN-VENDOR {}", open.name)),
            _ => Err("END-VENDOR takes the vendor name".into()),
        }
    }

    fn begin_tlv(&mut self, dict: &Dictionary, args: &[&str]) -> Result<(), String> {
        let [name] = args else {
            return Err("BEGIN-TLV takes an attribute name".into());
        };
        let tlv = dict.attribute(name).ok_or_else(|| format!("BEGIN-TLV for unknown attribute {name}"))?;
        if tlv.data_type != DataType::Tlv {
            return Err(format!("BEGIN-TLV {name}: it is {:?}, not tlv", tlv.data_type));
        }
        self.tlvs.push(((*name).to_owned(), tlv.oid.clone()));
        Ok(())
    }

    fn end_tlv(&mut self, args: &[&str]) -> Result<(), String> {
        let [name] = args else {
            return Err("END-TLV takes an attribute name".into());
        };
        match self.tlvs.pop() {
            Some((open, _)) if open.eq_ignore_ascii_case(name) => Ok(()),
            Some((open, _)) => Err(format!("END-TLV {name} does not close BEGIN-TLV {open}")),
            None => Err(format!("END-TLV {name} without BEGIN-TLV")),
        }
    }
}

/// `format=T,L` or `format=T,L,c`.
fn parse_vendor_format(option: &str) -> Result<VendorFormat, String> {
    let bad = || {
        format!(
            "bad vendor format {option:?}: FreeRADIUS takes format=T,L or format=T,L,c with T 1, 2 or 4, L 0, 1 or 2, and c only with 1,1"
        )
    };
    let spec = option.strip_prefix("format=").ok_or_else(bad)?;
    let parts: Vec<&str> = spec.split(',').collect();
    let (t, l, continuation) = match parts.as_slice() {
        [t, l] => (t, l, false),
        [t, l, "c"] => (t, l, true),
        _ => return Err(bad()),
    };
    let (Ok(t), Ok(l)) = (t.parse::<u8>(), l.parse::<u8>()) else { return Err(bad()) };
    VendorFormat::new(t, l, continuation).ok_or_else(bad)
}

/// A type word: `octets[N]` gives its fixed length too.
fn parse_type(word: &str) -> Option<(DataType, Option<u8>)> {
    match word.split_once('[') {
        Some((base, rest)) if base.eq_ignore_ascii_case("octets") => {
            let len: u8 = rest.strip_suffix(']')?.parse().ok()?;
            (1..=253).contains(&len).then_some((DataType::Octets, Some(len)))
        }
        Some(_) => None,
        None => DataType::parse(word).map(|t| (t, None)),
    }
}

fn parse_flags(options: &str, flags: &mut Flags) -> Result<(), String> {
    for flag in options.split(',') {
        match flag.split_once('=') {
            None if flag == "has_tag" => flags.has_tag = true,
            Some(("has_tag", "1")) => flags.has_tag = true,
            Some(("encrypt", level)) => {
                flags.encrypt = level.parse().ok().filter(|n| *n <= 3).ok_or_else(|| format!("bad encrypt={level} (0-3)"))?;
            }
            None if flag == "secret" => flags.secret = true,
            None if flag == "array" => flags.array = true,
            None if flag == "concat" => flags.concat = true,
            None if flag == "virtual" || flag == "internal" => flags.internal = true,
            _ => return Err(format!("unknown flag or vendor {flag:?}")),
        }
    }
    Ok(())
}

/// `26`, `0xBF38`, `241.5.1`: each part a number.
fn parse_oid(text: &str) -> Option<Vec<u32>> {
    text.split('.').map(|part| parse_number(part).and_then(|n| u32::try_from(n).ok())).collect()
}

impl Source {
    fn display(&self) -> String {
        match self {
            Self::Builtin(name) => format!("(built in) {name}"),
            Self::File(path) => path.display().to_string(),
            Self::Text { name, .. } => name.clone(),
        }
    }

    /// The same file however it was reached, for finding cycles.
    fn identity(&self) -> String {
        match self {
            Self::File(path) => std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()).display().to_string(),
            _ => self.display(),
        }
    }

    fn read(&self) -> Result<String, String> {
        match self {
            Self::Builtin(name) => BUILTIN
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, text)| (*text).to_owned())
                .ok_or_else(|| format!("no built-in dictionary {name}")),
            Self::File(path) => {
                crate::settings::read_text_file(path, crate::settings::MAX_FILE_BYTES).map_err(|e| format!("cannot read: {e}"))
            }
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

//! What one `ATTRIBUTE` line defines: its place in a packet ([`Oid`]), value type, flags, and
//! whether radmfa can put it in a packet at all ([`Unsupported`], [`Sendable`]).

use std::fmt;

use crate::radius::packet::{Attribute, MAX_VALUE_LEN};
use crate::radius::vendor::VendorFormat;

/// The value types of FreeRADIUS 3 dictionaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Types we carry but do not interpret (abinary, combo-ip, ipv4prefix): shown and taken as hex.
    Opaque,
    /// `tlv`: holds members (`1.2` under `1`), no value of its own.
    Tlv,
    /// `vsa`: Vendor-Specific (26) itself.
    Vsa,
    /// `extended` (241-244) and `long-extended` (245, 246) of RFC 6929: hold extended attributes.
    Extended,
    LongExtended,
    /// `evs`: the Extended-Vendor-Specific attribute (`241.26` ...) inside an extended one.
    Evs,
}

impl DataType {
    pub(super) fn parse(word: &str) -> Option<Self> {
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
            "abinary" | "combo-ip" | "ipv4prefix" | "cidr" => Self::Opaque,
            "tlv" => Self::Tlv,
            "vsa" => Self::Vsa,
            "extended" => Self::Extended,
            "long-extended" => Self::LongExtended,
            "evs" => Self::Evs,
            _ => return None,
        })
    }

    /// A structure of other attributes rather than a value.
    pub fn is_container(self) -> bool {
        matches!(self, Self::Tlv | Self::Vsa | Self::Extended | Self::LongExtended | Self::Evs)
    }

    /// Octets one value of this type takes, for the types of one fixed size.
    pub(super) fn fixed_size(self) -> Option<usize> {
        Some(match self {
            Self::Byte => 1,
            Self::Short => 2,
            Self::IpAddr | Self::Integer | Self::Date | Self::Signed => 4,
            Self::Ether => 6,
            Self::IfId | Self::Integer64 => 8,
            Self::Ipv6Addr => 16,
            _ => return None,
        })
    }
}

/// The options after an `ATTRIBUTE`'s type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    /// `has_tag`: a tunnel attribute's tag (RFC 2868 §3) leads the value.
    pub has_tag: bool,
    /// `encrypt=N`: 1 User-Password style, 2 Tunnel-Password style, 3 Ascend's; 0 none.
    pub encrypt: u8,
    /// `secret`: not encrypted on the wire, but never printed.
    pub secret: bool,
    /// `array`: one attribute may pack several values of the type.
    pub array: bool,
    /// `concat`: a long value is split across several attributes in a row.
    pub concat: bool,
    /// `virtual`, `internal`: FreeRADIUS computes or keeps it; never in a packet.
    pub internal: bool,
    /// `octets[N]`: values are exactly N octets.
    pub fixed_len: Option<u8>,
}

/// Where in a packet an attribute sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// Numbered among the standard attributes (and, above 255, FreeRADIUS's internal ones).
    Standard,
    /// A vendor's sub-attribute inside Vendor-Specific (26).
    Vendor(u32),
    /// A vendor's attribute inside Extended-Vendor-Specific (`extended.26`, RFC 6929 §2.4).
    ExtendedVendor { extended: u32, vendor: u32 },
}

/// An attribute's address: its space and the numbers down to it (a TLV member or an extended
/// attribute has more than one: `241.5.1`, WiMAX's `1.3`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Oid {
    pub space: Space,
    pub path: Vec<u32>,
}

impl Oid {
    pub fn standard(number: u32) -> Self {
        Self { space: Space::Standard, path: vec![number] }
    }

    /// A top-level attribute of `vendor` (0: the standard space).
    pub fn top(vendor: u32, number: u32) -> Self {
        let space = if vendor == 0 { Space::Standard } else { Space::Vendor(vendor) };
        Self { space, path: vec![number] }
    }

    /// The attribute this one sits in, within the same space.
    pub fn parent(&self) -> Option<Self> {
        let (_, above) = self.path.split_last()?;
        (!above.is_empty()).then(|| Self { space: self.space, path: above.to_vec() })
    }

    pub(super) fn child(&self, number: u32) -> Self {
        let mut path = self.path.clone();
        path.push(number);
        Self { space: self.space, path }
    }
}

impl fmt::Display for Oid {
    /// FreeRADIUS's numbering: `1`, `26.9.1`, `241.5.1`, `245.26.11344.1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.space {
            Space::Standard => {}
            Space::Vendor(vendor) => write!(f, "26.{vendor}.")?,
            Space::ExtendedVendor { extended, vendor } => write!(f, "{extended}.26.{vendor}.")?,
        }
        let parts: Vec<String> = self.path.iter().map(u32::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

/// Why radmfa cannot put an attribute in a packet: it keeps the name (requests are logged with
/// it, values as hex) but a reply cannot carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unsupported {
    /// FreeRADIUS's own (numbers above 255, `virtual`): never in a packet.
    Internal,
    /// Inside an RFC 6929 extended attribute (241-246), Extended-Vendor-Specific included.
    Extended,
    /// A member of a TLV.
    TlvMember,
    /// A structure (`tlv`, `vsa`, `extended`, `long-extended`, `evs`): no value of its own.
    Container,
    /// Encrypted on the wire (`encrypt=N`), which radmfa does not do for reply values.
    Encrypted,
}

impl Unsupported {
    /// What the summary counts them as.
    pub fn label(self) -> &'static str {
        match self {
            Self::Internal => "FreeRADIUS-internal (numbers above 255, virtual)",
            Self::Extended => "extended (241-246, RFC 6929)",
            Self::TlvMember => "TLV members",
            Self::Container => "containers (tlv, vsa, extended, evs)",
            Self::Encrypted => "encrypted on the wire (encrypt=N)",
        }
    }
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Internal => "it is FreeRADIUS-internal and never in a packet",
            Self::Extended => "it is an extended attribute (RFC 6929, 241-246), which radmfa does not encode",
            Self::TlvMember => "it is a member of a TLV, which radmfa does not encode",
            Self::Container => "it holds other attributes and has no value of its own",
            Self::Encrypted => "its value is encrypted on the wire (encrypt=N), which radmfa does not do for reply values",
        })
    }
}

/// One `ATTRIBUTE` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeDef {
    pub name: String,
    pub oid: Oid,
    pub data_type: DataType,
    pub flags: Flags,
    /// Why radmfa cannot send it, if it cannot.
    pub unsupported: Option<Unsupported>,
}

impl AttributeDef {
    /// The vendor it belongs to; 0 for the standard space.
    pub fn vendor(&self) -> u32 {
        match self.oid.space {
            Space::Standard => 0,
            Space::Vendor(vendor) | Space::ExtendedVendor { vendor, .. } => vendor,
        }
    }

    /// Its value must never be printed.
    pub fn is_secret(&self) -> bool {
        self.flags.encrypt != 0 || self.flags.secret
    }

    /// Why it cannot be sent, from where it sits, its type and its flags.
    pub(super) fn classify(oid: &Oid, data_type: DataType, flags: &Flags) -> Option<Unsupported> {
        let top = oid.path.first().copied().unwrap_or_default();
        Some(match oid.space {
            Space::Standard if top > 255 || flags.internal => Unsupported::Internal,
            Space::Vendor(_) if flags.internal => Unsupported::Internal,
            Space::Standard if oid.path.len() > 1 && (241..=246).contains(&top) => Unsupported::Extended,
            Space::ExtendedVendor { .. } => Unsupported::Extended,
            _ if oid.path.len() > 1 => Unsupported::TlvMember,
            _ if data_type.is_container() => Unsupported::Container,
            _ if flags.encrypt != 0 => Unsupported::Encrypted,
            _ => return None,
        })
    }
}

/// An attribute radmfa can put in a packet, with its vendor's layout: checked once (a
/// `[[client]]` reply attribute at start-up), so making one cannot fail later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sendable {
    def: AttributeDef,
    format: VendorFormat,
}

impl Sendable {
    /// `def` if it is sendable; `format` is its vendor's layout.
    pub(super) fn new(def: &AttributeDef, format: VendorFormat) -> Result<Self, Unsupported> {
        match def.unsupported {
            Some(why) => Err(why),
            None => Ok(Self { def: def.clone(), format }),
        }
    }

    pub fn def(&self) -> &AttributeDef {
        &self.def
    }

    fn number(&self) -> u32 {
        self.def.oid.path.first().copied().unwrap_or_default()
    }

    /// This attribute carrying `value`.
    pub fn with_value(&self, value: Vec<u8>) -> Attribute {
        match self.def.oid.space {
            // A sendable standard attribute is numbered 1..=255 (`classify`), so this holds.
            Space::Standard => Attribute::Standard { typ: u8::try_from(self.number()).unwrap_or_default(), value },
            Space::Vendor(vendor) | Space::ExtendedVendor { vendor, .. } => Attribute::vendor_in(self.format, vendor, self.number(), value),
        }
    }

    /// The longest value one attribute of this kind carries.
    pub fn max_value_len(&self) -> usize {
        match self.def.oid.space {
            Space::Standard => MAX_VALUE_LEN,
            _ => self.format.max_value_len(),
        }
    }
}

//! RADIUS packets and attributes (RFC 2865 §3, §5): the typed form and its wire encoding.
//!
//! Decoding is purely structural and keyless: it checks every length and never panics.
//! Signing and verifying, which need the shared secret, live in [`super::crypto`].

use super::attr::MESSAGE_AUTHENTICATOR;
use super::codec::Reader;
use super::vendor::{VendorFormat, split_vendor_specific};

pub const HEADER_LEN: usize = 20;
/// RFC 2865 §3: the largest packet a RADIUS peer may send.
pub const MAX_PACKET_LEN: usize = 4096;
/// An attribute's value fits in 255 octets minus its type and length octets.
pub const MAX_VALUE_LEN: usize = 253;
pub const VENDOR_SPECIFIC: u8 = 26;

/// The packet type (RFC 2865 §3, RFC 2866 §3, RFC 5997 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    AccessRequest,
    AccessAccept,
    AccessReject,
    AccountingRequest,
    AccountingResponse,
    AccessChallenge,
    StatusServer,
    StatusClient,
    Other(u8),
}

impl From<u8> for Code {
    fn from(value: u8) -> Self {
        match value {
            1 => Self::AccessRequest,
            2 => Self::AccessAccept,
            3 => Self::AccessReject,
            4 => Self::AccountingRequest,
            5 => Self::AccountingResponse,
            11 => Self::AccessChallenge,
            12 => Self::StatusServer,
            13 => Self::StatusClient,
            other => Self::Other(other),
        }
    }
}

impl From<Code> for u8 {
    fn from(code: Code) -> Self {
        match code {
            Code::AccessRequest => 1,
            Code::AccessAccept => 2,
            Code::AccessReject => 3,
            Code::AccountingRequest => 4,
            Code::AccountingResponse => 5,
            Code::AccessChallenge => 11,
            Code::StatusServer => 12,
            Code::StatusClient => 13,
            Code::Other(other) => other,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AccessRequest => f.write_str("Access-Request"),
            Self::AccessAccept => f.write_str("Access-Accept"),
            Self::AccessReject => f.write_str("Access-Reject"),
            Self::AccountingRequest => f.write_str("Accounting-Request"),
            Self::AccountingResponse => f.write_str("Accounting-Response"),
            Self::AccessChallenge => f.write_str("Access-Challenge"),
            Self::StatusServer => f.write_str("Status-Server"),
            Self::StatusClient => f.write_str("Status-Client"),
            Self::Other(code) => write!(f, "code {code}"),
        }
    }
}

/// One attribute, in the order it stood in the packet.
///
/// A Vendor-Specific attribute is split into one entry per sub-attribute, in the layout of its
/// vendor ([`Packet::decode_with`]): `Vendor` for RFC 2865 §5.26's, `FormattedVendor` for the
/// others. One that does not follow its vendor's layout is kept whole as `Standard { typ: 26 }`,
/// so nothing the client sent is lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribute {
    Standard {
        typ: u8,
        value: Vec<u8>,
    },
    Vendor {
        vendor: u32,
        typ: u8,
        value: Vec<u8>,
    },
    /// A sub-attribute of a vendor whose layout is not RFC 2865's (never `VendorFormat::RFC2865`:
    /// [`Attribute::vendor_in`] makes those `Vendor`).
    FormattedVendor {
        vendor: u32,
        format: VendorFormat,
        typ: u32,
        value: Vec<u8>,
    },
}

impl Attribute {
    pub fn standard(typ: u8, value: impl Into<Vec<u8>>) -> Self {
        Self::Standard { typ, value: value.into() }
    }

    pub fn vendor(vendor: u32, typ: u8, value: impl Into<Vec<u8>>) -> Self {
        Self::Vendor { vendor, typ, value: value.into() }
    }

    /// A vendor's sub-attribute in the vendor's layout: `Vendor` for RFC 2865's (and a type
    /// that fits it), `FormattedVendor` otherwise.
    pub fn vendor_in(format: VendorFormat, vendor: u32, typ: u32, value: impl Into<Vec<u8>>) -> Self {
        match u8::try_from(typ) {
            Ok(typ) if format.is_rfc2865() => Self::Vendor { vendor, typ, value: value.into() },
            _ => Self::FormattedVendor { vendor, format, typ, value: value.into() },
        }
    }

    pub fn value(&self) -> &[u8] {
        match self {
            Self::Standard { value, .. } | Self::Vendor { value, .. } | Self::FormattedVendor { value, .. } => value,
        }
    }

    fn is_message_authenticator(&self) -> bool {
        matches!(self, Self::Standard { typ: MESSAGE_AUTHENTICATOR, .. })
    }

    /// Octets the attribute takes in a packet (a vendor's inside its Vendor-Specific).
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Standard { value, .. } => value.len() + 2,
            Self::Vendor { value, .. } => value.len() + 8,
            Self::FormattedVendor { format, value, .. } => value.len() + 6 + format.header_len(),
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Self::Standard { typ, value } => {
                if value.len() > MAX_VALUE_LEN {
                    return Err(EncodeError::ValueTooLong { vendor: 0, typ: u32::from(*typ), len: value.len() });
                }
                out.push(*typ);
                out.push((value.len() + 2) as u8);
                out.extend_from_slice(value);
            }
            Self::Vendor { vendor, typ, value } => {
                VendorFormat::RFC2865.encode(*vendor, u32::from(*typ), value, out)?;
            }
            Self::FormattedVendor { vendor, format, typ, value } => format.encode(*vendor, *typ, value, out)?,
        }
        Ok(())
    }
}

/// Why a datagram is not a RADIUS packet. Each is a silent discard (RFC 2865 §3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer than 20 octets: not even a header.
    #[error("datagram of {0} octets is shorter than a RADIUS header")]
    TooShort(usize),
    /// The Length field is below 20 or above 4096.
    #[error("length field {0} is outside 20..=4096")]
    BadLengthField(u16),
    /// The Length field claims more octets than arrived.
    #[error("length field {claimed} exceeds the {received} octets received")]
    Truncated { claimed: u16, received: usize },
    /// An attribute's length octet is below 2 or runs past the packet's end.
    #[error("attribute at offset {offset} has a bad length")]
    BadAttributeLength { offset: usize },
}

/// Why a packet could not be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// An attribute value is longer than one attribute can carry.
    #[error("attribute {vendor}:{typ} value of {len} octets is too long for one attribute")]
    ValueTooLong { vendor: u32, typ: u32, len: usize },
    /// A vendor sub-attribute type wider than its vendor's type field.
    #[error("vendor {vendor} attribute type {typ} does not fit the vendor's type field")]
    TypeTooWide { vendor: u32, typ: u32 },
    /// The packet would exceed 4096 octets.
    #[error("packet of {0} octets exceeds the RADIUS maximum of 4096")]
    PacketTooLong(usize),
    /// A User-Password longer than 128 octets cannot be hidden (RFC 2865 §5.2).
    #[error("password of {0} octets exceeds the 128 octets RADIUS can carry")]
    PasswordTooLong(usize),
}

/// A decoded RADIUS packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub code: Code,
    pub identifier: u8,
    pub authenticator: [u8; 16],
    pub attributes: Vec<Attribute>,
}

impl Packet {
    pub fn new(code: Code, identifier: u8, authenticator: [u8; 16]) -> Self {
        Self { code, identifier, authenticator, attributes: Vec::new() }
    }

    /// Parses a datagram, reading every Vendor-Specific attribute in RFC 2865's layout.
    /// Octets beyond the Length field are padding and ignored (RFC 2865 §3).
    pub fn decode(datagram: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_with(datagram, &|_| Some(VendorFormat::RFC2865))
    }

    /// Parses a datagram, reading each Vendor-Specific attribute in the layout `format_of`
    /// gives its vendor (a dictionary's `VENDOR ... format=`); `None` keeps the attribute
    /// whole, as its octets came.
    pub fn decode_with(datagram: &[u8], format_of: &dyn Fn(u32) -> Option<VendorFormat>) -> Result<Self, DecodeError> {
        let body = packet_bytes(datagram)?;
        let mut r = Reader::new(body);
        let code = Code::from(r.u8().ok_or(DecodeError::TooShort(datagram.len()))?);
        let identifier = r.u8().ok_or(DecodeError::TooShort(datagram.len()))?;
        let _length = r.u16();
        let authenticator = r.array::<16>().ok_or(DecodeError::TooShort(datagram.len()))?;
        let mut attributes = Vec::new();
        for raw in RawAttributes::new(body) {
            let (typ, value) = raw?;
            if typ == VENDOR_SPECIFIC
                && let Some(subs) = split_vendor_specific(value, format_of)
            {
                attributes.extend(subs);
                continue;
            }
            attributes.push(Attribute::standard(typ, value));
        }
        Ok(Self { code, identifier, authenticator, attributes })
    }

    /// Encodes the packet with its authenticator field as it stands; the caller signs it.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        self.encode_as(&self.authenticator, MessageAuthenticatorSlot::AsGiven)
    }

    /// The one header-and-attributes encoder: the header with `authenticator` in its field,
    /// the attributes laid out as `slot` says, and the Length field set.
    pub(crate) fn encode_as(&self, authenticator: &[u8; 16], slot: MessageAuthenticatorSlot) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(HEADER_LEN + 18 + 64);
        out.push(u8::from(self.code));
        out.push(self.identifier);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(authenticator);
        if slot == MessageAuthenticatorSlot::First {
            out.extend_from_slice(&[MESSAGE_AUTHENTICATOR, 18]);
            out.extend_from_slice(&[0; 16]);
        }
        let keep = |a: &&Attribute| slot == MessageAuthenticatorSlot::AsGiven || !a.is_message_authenticator();
        for attribute in self.attributes.iter().filter(keep) {
            attribute.encode(&mut out)?;
        }
        set_length(&mut out)?;
        Ok(out)
    }

    /// The first standard attribute of this type.
    pub fn get(&self, typ: u8) -> Option<&[u8]> {
        self.get_all(typ).next()
    }

    /// Every standard attribute of this type, in packet order.
    pub fn get_all(&self, typ: u8) -> impl Iterator<Item = &[u8]> {
        self.attributes.iter().filter_map(move |a| match a {
            Attribute::Standard { typ: t, value } if *t == typ => Some(value.as_slice()),
            _ => None,
        })
    }

    pub fn get_vendor(&self, vendor: u32, typ: u8) -> Option<&[u8]> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Vendor { vendor: v, typ: t, value } if *v == vendor && *t == typ => Some(value.as_slice()),
            _ => None,
        })
    }

    pub fn push(&mut self, attribute: Attribute) {
        self.attributes.push(attribute);
    }
}

/// Where [`Packet::encode_as`] puts Message-Authenticator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageAuthenticatorSlot {
    /// The attributes exactly as the packet holds them.
    AsGiven,
    /// None at all: any the packet holds is left out.
    Omitted,
    /// A zeroed one first, for the signer to fill in; any other the packet holds is left out.
    First,
}

/// The part of a datagram the Length field covers, after checking it.
pub(crate) fn packet_bytes(datagram: &[u8]) -> Result<&[u8], DecodeError> {
    let mut r = Reader::new(datagram);
    let header = r.take(HEADER_LEN).ok_or(DecodeError::TooShort(datagram.len()))?;
    let length = u16::from_be_bytes([header[2], header[3]]);
    if !(HEADER_LEN..=MAX_PACKET_LEN).contains(&usize::from(length)) {
        return Err(DecodeError::BadLengthField(length));
    }
    datagram.get(..usize::from(length)).ok_or(DecodeError::Truncated { claimed: length, received: datagram.len() })
}

pub(crate) fn set_length(out: &mut [u8]) -> Result<(), EncodeError> {
    if out.len() > MAX_PACKET_LEN {
        return Err(EncodeError::PacketTooLong(out.len()));
    }
    let len = (out.len() as u16).to_be_bytes();
    out[2..4].copy_from_slice(&len);
    Ok(())
}

/// Walks the attribute area of a length-checked packet, yielding (type, value) with the
/// value's offset available for in-place work (the Message-Authenticator check).
pub(crate) struct RawAttributes<'a> {
    reader: Reader<'a>,
    failed: bool,
}

impl<'a> RawAttributes<'a> {
    pub(crate) fn new(packet: &'a [u8]) -> Self {
        let mut reader = Reader::new(packet);
        let _header = reader.take(HEADER_LEN);
        Self { reader, failed: false }
    }

    /// Offset of the next attribute's first octet.
    pub(crate) fn offset(&self) -> usize {
        self.reader.offset()
    }
}

impl<'a> Iterator for RawAttributes<'a> {
    type Item = Result<(u8, &'a [u8]), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.reader.is_empty() {
            return None;
        }
        let offset = self.reader.offset();
        let parsed = (|| {
            let typ = self.reader.u8()?;
            let len = usize::from(self.reader.u8()?);
            let value = self.reader.take(len.checked_sub(2)?)?;
            Some((typ, value))
        })();
        match parsed {
            Some(attribute) => Some(Ok(attribute)),
            None => {
                self.failed = true;
                Some(Err(DecodeError::BadAttributeLength { offset }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(code: u8, len: u16) -> Vec<u8> {
        let mut p = vec![code, 7];
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[0xaa; 16]);
        p
    }

    #[test]
    fn rejects_short_and_lying_lengths() {
        assert_eq!(Packet::decode(&[1, 2, 3]), Err(DecodeError::TooShort(3)));
        assert_eq!(Packet::decode(&header(1, 19)), Err(DecodeError::BadLengthField(19)));
        assert_eq!(Packet::decode(&header(1, 4097)), Err(DecodeError::BadLengthField(4097)));
        assert_eq!(Packet::decode(&header(1, 30)), Err(DecodeError::Truncated { claimed: 30, received: 20 }));
    }

    #[test]
    fn ignores_padding_beyond_the_length_field() {
        let mut p = header(1, 23);
        p.extend_from_slice(&[1, 3, b'a', 0xff, 0xff]);
        let packet = Packet::decode(&p).unwrap();
        assert_eq!(packet.get(1), Some(&b"a"[..]));
        assert_eq!(packet.attributes.len(), 1);
    }

    #[test]
    fn rejects_attribute_lengths_below_two_or_past_the_end() {
        for attrs in [&[1u8, 1][..], &[1, 0], &[1, 5, b'a'], &[1]] {
            let mut p = header(1, (20 + attrs.len()) as u16);
            p.extend_from_slice(attrs);
            assert!(matches!(Packet::decode(&p), Err(DecodeError::BadAttributeLength { offset: 20 })), "{attrs:?}");
        }
    }

    #[test]
    fn splits_vendor_specific_and_keeps_odd_layouts_whole() {
        let mut p = header(2, 0);
        // Citrix (66) with two sub-attributes in one VSA, then a VSA too short for a vendor id.
        p.extend_from_slice(&[26, 12, 0, 0, 0, 66, 16, 3, b'a', 16, 3, b'b']);
        p.extend_from_slice(&[26, 5, 1, 2, 3]);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        let packet = Packet::decode(&p).unwrap();
        assert_eq!(
            packet.attributes,
            vec![Attribute::vendor(66, 16, *b"a"), Attribute::vendor(66, 16, *b"b"), Attribute::standard(26, [1, 2, 3]),]
        );
    }

    #[test]
    fn vendors_of_other_layouts_split_as_their_layout_says() {
        // Lucent (format=2,1) type 2 = [3, 7]. Read in RFC 2865's layout, the same octets are
        // two sub-attributes (type 0 and type 5): the layout must come from the dictionary.
        let lucent = VendorFormat::new(2, 1, false).unwrap();
        let mut p = header(2, 0);
        p.extend_from_slice(&[26, 11, 0, 0, 0x12, 0xee, 0, 2, 5, 3, 7]);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        let layouts = |vendor: u32| Some(if vendor == 4846 { lucent } else { VendorFormat::RFC2865 });
        let packet = Packet::decode_with(&p, &layouts).unwrap();
        assert_eq!(packet.attributes, vec![Attribute::vendor_in(lucent, 4846, 2, [3, 7])]);
        assert_eq!(packet.encode().unwrap(), p, "the same octets again");
        assert_eq!(Packet::decode(&p).unwrap().attributes, vec![Attribute::vendor(4846, 0, []), Attribute::vendor(4846, 5, [7])]);
        let whole = Packet::decode_with(&p, &|_| None).unwrap();
        assert_eq!(whole.attributes, vec![Attribute::standard(26, p[22..].to_vec())]);
        assert_eq!(Attribute::vendor_in(VendorFormat::RFC2865, 9, 1, *b"x"), Attribute::vendor(9, 1, *b"x"));
        assert_eq!(Attribute::vendor_in(lucent, 4846, 2, [3, 7]).encoded_len(), 11);
    }

    #[test]
    fn encode_refuses_oversized_values_and_packets() {
        let mut p = Packet::new(Code::AccessAccept, 1, [0; 16]);
        p.push(Attribute::standard(18, vec![b'x'; 254]));
        assert!(matches!(p.encode(), Err(EncodeError::ValueTooLong { .. })));
        let mut p = Packet::new(Code::AccessAccept, 1, [0; 16]);
        for _ in 0..17 {
            p.push(Attribute::standard(18, vec![b'x'; 253]));
        }
        assert!(matches!(p.encode(), Err(EncodeError::PacketTooLong(_))));
        let mut p = Packet::new(Code::AccessAccept, 1, [0; 16]);
        p.push(Attribute::vendor(66, 16, vec![b'x'; 248]));
        assert!(matches!(p.encode(), Err(EncodeError::ValueTooLong { vendor: 66, .. })));
    }
}

//! Vendor-Specific layouts: RFC 2865 §5.26's one-octet type and length, and the others that
//! FreeRADIUS dictionaries declare with `VENDOR name id format=T,L[,c]` (USR `4,0`, Lucent
//! `2,1`, Starent `2,2`, WiMAX `1,1,c`). Splitting a received Vendor-Specific value into
//! sub-attributes and building one, in a given layout; both check every length.

use std::fmt;

use super::codec::Reader;
use super::packet::{Attribute, EncodeError, MAX_VALUE_LEN, VENDOR_SPECIFIC};

/// How a vendor lays out a sub-attribute inside Vendor-Specific: the octets of its type field,
/// of its length field (0: none, the sub-attribute runs to the end), and whether a
/// continuation octet follows (WiMAX).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VendorFormat {
    type_octets: u8,
    length_octets: u8,
    continuation: bool,
}

impl VendorFormat {
    /// RFC 2865 §5.26: one octet of type, one of length.
    pub const RFC2865: Self = Self { type_octets: 1, length_octets: 1, continuation: false };

    /// A layout FreeRADIUS accepts: type 1, 2 or 4 octets, length 0, 1 or 2, and a
    /// continuation octet only after a one-octet type and length.
    pub fn new(type_octets: u8, length_octets: u8, continuation: bool) -> Option<Self> {
        let valid =
            matches!(type_octets, 1 | 2 | 4) && matches!(length_octets, 0..=2) && (!continuation || (type_octets, length_octets) == (1, 1));
        valid.then_some(Self { type_octets, length_octets, continuation })
    }

    pub fn type_octets(self) -> u8 {
        self.type_octets
    }

    pub fn length_octets(self) -> u8 {
        self.length_octets
    }

    pub fn is_rfc2865(self) -> bool {
        self == Self::RFC2865
    }

    /// Octets before a sub-attribute's value.
    pub fn header_len(self) -> usize {
        usize::from(self.type_octets) + usize::from(self.length_octets) + usize::from(self.continuation)
    }

    /// The largest sub-attribute type the type field holds.
    pub fn max_type(self) -> u32 {
        match self.type_octets {
            1 => u32::from(u8::MAX),
            2 => u32::from(u16::MAX),
            _ => u32::MAX,
        }
    }

    /// The longest value one sub-attribute carries in one Vendor-Specific attribute.
    pub fn max_value_len(self) -> usize {
        MAX_VALUE_LEN - 4 - self.header_len()
    }

    /// One sub-attribute as a whole Vendor-Specific attribute (type 26, length, vendor id, the
    /// sub-attribute's header and value), appended to `out`.
    pub(crate) fn encode(self, vendor: u32, typ: u32, value: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if typ > self.max_type() {
            return Err(EncodeError::TypeTooWide { vendor, typ });
        }
        if value.len() > self.max_value_len() {
            return Err(EncodeError::ValueTooLong { vendor, typ, len: value.len() });
        }
        let sub_len = self.header_len() + value.len();
        out.push(VENDOR_SPECIFIC);
        out.push((2 + 4 + sub_len) as u8);
        out.extend_from_slice(&vendor.to_be_bytes());
        out.extend_from_slice(&typ.to_be_bytes()[4 - usize::from(self.type_octets)..]);
        match self.length_octets {
            1 => out.push(sub_len as u8),
            2 => out.extend_from_slice(&(sub_len as u16).to_be_bytes()),
            _ => {}
        }
        if self.continuation {
            out.push(0); // the whole value fits in this one: nothing continues it
        }
        out.extend_from_slice(value);
        Ok(())
    }

    /// The sub-attributes of a Vendor-Specific value (vendor id first) laid out in this format,
    /// or `None` when the value does not follow it exactly, or holds none, or continues into
    /// the next attribute: then the caller keeps the attribute whole, losing nothing.
    pub(crate) fn split(self, vendor: u32, subs: &[u8]) -> Option<Vec<Attribute>> {
        let mut r = Reader::new(subs);
        let mut out = Vec::new();
        while !r.is_empty() {
            let typ = match self.type_octets {
                1 => u32::from(r.u8()?),
                2 => u32::from(r.u16()?),
                _ => r.u32()?,
            };
            let len = match self.length_octets {
                0 => None,
                1 => Some(usize::from(r.u8()?)),
                _ => Some(usize::from(r.u16()?)),
            };
            if self.continuation && r.u8()? != 0 {
                return None; // a fragment of a value continued in the next attribute: kept whole
            }
            let value = match len {
                None => r.rest(),
                Some(len) => r.take(len.checked_sub(self.header_len())?)?,
            };
            out.push(Attribute::vendor_in(self, vendor, typ, value));
        }
        (!out.is_empty()).then_some(out)
    }
}

impl fmt::Display for VendorFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.type_octets, self.length_octets)?;
        if self.continuation {
            f.write_str(",c")?;
        }
        Ok(())
    }
}

/// Splits a Vendor-Specific value (vendor id, then sub-attributes) in the layout `format_of`
/// gives its vendor; `None` (keep it whole) when it has none or the value does not follow it.
pub(crate) fn split_vendor_specific(value: &[u8], format_of: &dyn Fn(u32) -> Option<VendorFormat>) -> Option<Vec<Attribute>> {
    let mut r = Reader::new(value);
    let vendor = r.u32()?;
    format_of(vendor)?.split(vendor, r.rest())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(t: u8, l: u8, c: bool) -> VendorFormat {
        VendorFormat::new(t, l, c).unwrap()
    }

    fn encoded(f: VendorFormat, vendor: u32, typ: u32, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        f.encode(vendor, typ, value, &mut out).unwrap();
        out
    }

    #[test]
    fn only_the_layouts_freeradius_accepts_exist() {
        for (t, l, c) in [(1, 1, false), (2, 1, false), (2, 2, false), (4, 0, false), (1, 0, false), (1, 1, true)] {
            assert!(VendorFormat::new(t, l, c).is_some(), "{t},{l},{c}");
        }
        for (t, l, c) in [(0, 1, false), (3, 1, false), (1, 3, false), (2, 1, true), (4, 0, true)] {
            assert!(VendorFormat::new(t, l, c).is_none(), "{t},{l},{c}");
        }
        assert_eq!(format(1, 1, true).to_string(), "1,1,c");
        assert_eq!(format(4, 0, false).to_string(), "4,0");
    }

    #[test]
    fn each_layout_builds_the_octets_its_vendors_expect() {
        // USR (429), format=4,0: a four-octet type, no length, the value to the end.
        assert_eq!(encoded(format(4, 0, false), 429, 0xBF38, &[0, 0, 0, 7]), [26, 14, 0, 0, 1, 0xad, 0, 0, 0xBF, 0x38, 0, 0, 0, 7]);
        // Lucent (4846), format=2,1: a two-octet type, a one-octet length covering the header.
        assert_eq!(encoded(format(2, 1, false), 4846, 0x0102, b"ab"), [26, 11, 0, 0, 0x12, 0xee, 1, 2, 5, b'a', b'b']);
        // Starent (8164), format=2,2: two-octet type and length.
        assert_eq!(encoded(format(2, 2, false), 8164, 3, b"x"), [26, 11, 0, 0, 0x1f, 0xe4, 0, 3, 0, 5, b'x']);
        // WiMAX (24757), format=1,1,c: a continuation octet, 0 when the value is whole.
        assert_eq!(encoded(format(1, 1, true), 24757, 21, &[1]), [26, 10, 0, 0, 0x60, 0xb5, 21, 4, 0, 1]);
    }

    #[test]
    fn values_and_types_beyond_the_layout_are_refused() {
        let mut out = Vec::new();
        assert_eq!(format(2, 1, false).max_value_len(), 246);
        assert_eq!(format(4, 0, false).max_value_len(), 245);
        assert!(matches!(
            format(2, 1, false).encode(4846, 1, &[0; 247], &mut out),
            Err(EncodeError::ValueTooLong { vendor: 4846, typ: 1, len: 247 })
        ));
        assert!(matches!(format(2, 1, false).encode(4846, 0x1_0000, b"", &mut out), Err(EncodeError::TypeTooWide { .. })));
        assert!(out.is_empty(), "nothing half-written");
        assert!(format(2, 1, false).encode(4846, 1, &[0; 246], &mut out).is_ok());
        assert_eq!(out.len(), 255);
    }

    #[test]
    fn splitting_reads_back_what_building_wrote() {
        for (f, vendor, typ, value) in [
            (format(4, 0, false), 429u32, 0xBF38u32, &[0u8, 0, 0, 7][..]),
            (format(4, 0, false), 429, 0x66, &[][..]),
            (format(2, 1, false), 4846, 0x0102, b"ab"),
            (format(2, 2, false), 8164, 3, b"x"),
            (format(1, 1, true), 24757, 21, &[1]),
            (format(1, 1, false), 9, 1, b"shell:priv-lvl=15"),
        ] {
            let wire = encoded(f, vendor, typ, value);
            let subs = split_vendor_specific(&wire[2..], &|v| (v == vendor).then_some(f)).unwrap();
            assert_eq!(subs, vec![Attribute::vendor_in(f, vendor, typ, value)], "{f}");
            assert!(split_vendor_specific(&wire[2..], &|_| None).is_none(), "no layout: kept whole");
        }
    }

    #[test]
    fn splitting_keeps_whole_what_does_not_follow_the_layout() {
        let lucent = format(2, 1, false);
        let whole = |subs: &[u8]| split_vendor_specific(&[&[0, 0, 0x12, 0xee][..], subs].concat(), &|_| Some(lucent));
        assert!(whole(&[]).is_none(), "no sub-attribute");
        assert!(whole(&[0, 1, 2]).is_none(), "length below the header");
        assert!(whole(&[0, 1, 6, b'a']).is_none(), "length past the end");
        assert!(whole(&[0, 1, 4, b'a', 0]).is_none(), "a stray octet after the last");
        assert_eq!(whole(&[0, 1, 4, b'a', 0, 2, 3]).unwrap().len(), 2, "two sub-attributes in one");
        let wimax = format(1, 1, true);
        let fragment = [0, 0, 0x60, 0xb5, 21, 4, 0x80, 1];
        assert!(split_vendor_specific(&fragment, &|_| Some(wimax)).is_none(), "a fragment that continues");
        assert!(split_vendor_specific(&[0, 0, 0x60, 0xb5, 21, 2], &|_| Some(wimax)).is_none(), "no room for the flags");
        assert!(split_vendor_specific(&[0, 0, 1], &|_| Some(VendorFormat::RFC2865)).is_none(), "no vendor id");
    }
}

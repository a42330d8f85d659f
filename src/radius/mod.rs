//! Our RADIUS codec: packets, attributes, vendor layouts, authenticators,
//! Message-Authenticator, User-Password hiding and FreeRADIUS dictionaries.
//!
//! Bytes in, typed packet out, and back. This module imports nothing else of radmfa and never
//! panics on input: malformed datagrams become [`DecodeError`]s the server counts and drops.

pub mod codec;
pub mod crypto;
pub mod dict;
pub mod packet;
pub mod v11;
pub mod vendor;

pub use crypto::{
    MessageAuthenticator, check_message_authenticator, encode_request, encode_response, hide_password, unhide_password,
    verify_accounting_request, verify_response,
};
pub use dict::{AttributeDef, Dictionary, Sendable};
pub use packet::{Attribute, Code, DecodeError, EncodeError, MAX_PACKET_LEN, Packet};
pub use vendor::VendorFormat;

/// Standard attribute numbers the server itself reads or writes.
pub mod attr {
    pub const USER_NAME: u8 = 1;
    pub const USER_PASSWORD: u8 = 2;
    pub const CHAP_PASSWORD: u8 = 3;
    pub const NAS_IP_ADDRESS: u8 = 4;
    pub const NAS_PORT: u8 = 5;
    pub const REPLY_MESSAGE: u8 = 18;
    pub const STATE: u8 = 24;
    pub const CLASS: u8 = 25;
    pub const CALLED_STATION_ID: u8 = 30;
    pub const CALLING_STATION_ID: u8 = 31;
    pub const NAS_IDENTIFIER: u8 = 32;
    pub const PROXY_STATE: u8 = 33;
    pub const ACCT_STATUS_TYPE: u8 = 40;
    pub const ACCT_SESSION_ID: u8 = 44;
    pub const CHAP_CHALLENGE: u8 = 60;
    pub const EAP_MESSAGE: u8 = 79;
    pub const MESSAGE_AUTHENTICATOR: u8 = 80;
    pub const NAS_IPV6_ADDRESS: u8 = 95;
    pub const VENDOR_MICROSOFT: u32 = 311;
    /// MS-CHAP-Response, MS-CHAP2-Response (RFC 2548): the marks of an MS-CHAP request.
    pub const MS_CHAP_RESPONSE: u8 = 1;
    pub const MS_CHAP2_RESPONSE: u8 = 25;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    // RFC 2865 §7.1: user "nemo", password "arctangent", secret "xyzzy5461".
    const RFC_REQUEST: &str = "01 00 00 38 0f 40 3f 94 73 97 80 57 bd 83 d5 cb 98 f4 22 7a 01 06 6e 65 6d 6f 02 12 0d be 70 8d
        93 d4 13 ce 31 96 e4 3f 78 2a 0a ee 04 06 c0 a8 01 10 05 06 00 00 00 03";
    const RFC_ACCEPT: &str = "02 00 00 26 86 fe 22 0e 76 24 ba 2a 10 05 f6 bf 9b 55 e0 b2 06 06 00 00 00 01 0f 06 00 00 00 00
        0e 06 c0 a8 01 03";
    const RFC_SECRET: &[u8] = b"xyzzy5461";

    #[test]
    fn rfc2865_section7_request_decodes_and_password_unhides() {
        let raw = unhex(RFC_REQUEST);
        let p = Packet::decode(&raw).unwrap();
        assert_eq!(p.code, Code::AccessRequest);
        assert_eq!(p.identifier, 0);
        assert_eq!(p.get(attr::USER_NAME), Some(&b"nemo"[..]));
        assert_eq!(p.get(attr::NAS_IP_ADDRESS), Some(&[192, 168, 1, 16][..]));
        assert_eq!(p.get(attr::NAS_PORT), Some(&[0, 0, 0, 3][..]));
        let hidden = p.get(attr::USER_PASSWORD).unwrap();
        let password = unhide_password(hidden, RFC_SECRET, &p.authenticator).unwrap();
        assert_eq!(password.as_slice(), b"arctangent");
        assert_eq!(hide_password(b"arctangent", RFC_SECRET, &p.authenticator).unwrap(), hidden);
        assert_eq!(p.encode().unwrap(), raw, "re-encoding reproduces the RFC bytes");
    }

    #[test]
    fn rfc2865_section7_accept_authenticator_verifies() {
        let request = Packet::decode(&unhex(RFC_REQUEST)).unwrap();
        let accept = unhex(RFC_ACCEPT);
        assert!(verify_response(&accept, &request.authenticator, RFC_SECRET).unwrap());
        assert!(!verify_response(&accept, &request.authenticator, b"wrong").unwrap());
        let p = Packet::decode(&accept).unwrap();
        assert_eq!(p.code, Code::AccessAccept);
        assert_eq!(p.get(6), Some(&[0, 0, 0, 1][..]), "Service-Type = Login-User");
    }

    #[test]
    fn responses_carry_a_valid_message_authenticator_first() {
        let request_auth = [7u8; 16];
        let mut reply = Packet::new(Code::AccessAccept, 42, [0; 16]);
        reply.push(Attribute::standard(attr::REPLY_MESSAGE, *b"welcome"));
        reply.push(Attribute::standard(attr::MESSAGE_AUTHENTICATOR, [9; 16])); // a stale one is replaced
        let wire = encode_response(&reply, Code::AccessRequest, &request_auth, b"s3cret").unwrap();
        assert!(verify_response(&wire, &request_auth, b"s3cret").unwrap());
        let decoded = Packet::decode(&wire).unwrap();
        assert!(matches!(decoded.attributes[0], Attribute::Standard { typ: attr::MESSAGE_AUTHENTICATOR, .. }));
        assert_eq!(decoded.attributes.len(), 2);
        assert_eq!(check_message_authenticator(&wire, b"s3cret", Some(&request_auth)), Ok(MessageAuthenticator::Valid));
        assert_eq!(check_message_authenticator(&wire, b"other", Some(&request_auth)), Ok(MessageAuthenticator::Invalid));
    }

    #[test]
    fn message_authenticator_is_checked_wherever_it_stands() {
        let mut req = Packet::new(Code::AccessRequest, 3, [5; 16]);
        req.push(Attribute::standard(attr::USER_NAME, *b"bob"));
        let first = encode_request(&req, b"k", true).unwrap();
        assert_eq!(check_message_authenticator(&first, b"k", None), Ok(MessageAuthenticator::Valid));
        // Move it last, as Debian's radclient does, and re-sign.
        let mut p = Packet::decode(&first).unwrap();
        p.attributes.rotate_left(1);
        let mut last = p.encode().unwrap();
        let ma_at = last.len() - 16;
        last[ma_at..].fill(0);
        let mac = {
            use hmac::{Hmac, Mac};
            let mut m = <Hmac<md5::Md5> as Mac>::new_from_slice(b"k").unwrap();
            m.update(&last);
            m.finalize().into_bytes()
        };
        last[ma_at..].copy_from_slice(&mac);
        assert_eq!(check_message_authenticator(&last, b"k", None), Ok(MessageAuthenticator::Valid));
        last[ma_at] ^= 1;
        assert_eq!(check_message_authenticator(&last, b"k", None), Ok(MessageAuthenticator::Invalid));
        let plain = encode_request(&req, b"k", false).unwrap();
        assert_eq!(check_message_authenticator(&plain, b"k", None), Ok(MessageAuthenticator::Absent));
    }

    #[test]
    fn two_or_short_message_authenticators_are_invalid() {
        let mut req = Packet::new(Code::AccessRequest, 3, [5; 16]);
        req.push(Attribute::standard(attr::MESSAGE_AUTHENTICATOR, [0; 16]));
        req.push(Attribute::standard(attr::MESSAGE_AUTHENTICATOR, [0; 16]));
        assert_eq!(check_message_authenticator(&req.encode().unwrap(), b"k", None), Ok(MessageAuthenticator::Invalid));
        let mut req = Packet::new(Code::AccessRequest, 3, [5; 16]);
        req.push(Attribute::standard(attr::MESSAGE_AUTHENTICATOR, [0; 4]));
        assert_eq!(check_message_authenticator(&req.encode().unwrap(), b"k", None), Ok(MessageAuthenticator::Invalid));
    }

    #[test]
    fn accounting_response_message_authenticator_uses_a_zero_basis_except_for_status_server() {
        let request_auth = [3u8; 16];
        let reply = Packet::new(Code::AccountingResponse, 1, [0; 16]);
        let to_acct = encode_response(&reply, Code::AccountingRequest, &request_auth, b"k").unwrap();
        assert!(verify_response(&to_acct, &request_auth, b"k").unwrap());
        assert_eq!(check_message_authenticator(&to_acct, b"k", Some(&[0; 16])), Ok(MessageAuthenticator::Valid));
        let to_status = encode_response(&reply, Code::StatusServer, &request_auth, b"k").unwrap();
        assert_eq!(check_message_authenticator(&to_status, b"k", Some(&request_auth)), Ok(MessageAuthenticator::Valid));
    }

    #[test]
    fn accounting_request_authenticator_round_trips() {
        let mut req = Packet::new(Code::AccountingRequest, 9, [0; 16]);
        req.push(Attribute::standard(attr::ACCT_STATUS_TYPE, [0, 0, 0, 1]));
        let wire = encode_request(&req, b"acct", false).unwrap();
        assert!(verify_accounting_request(&wire, b"acct").unwrap());
        assert!(!verify_accounting_request(&wire, b"nope").unwrap());
        let signed = encode_request(&req, b"acct", true).unwrap();
        assert!(verify_accounting_request(&signed, b"acct").unwrap());
        assert_eq!(check_message_authenticator(&signed, b"acct", Some(&[0; 16])), Ok(MessageAuthenticator::Valid));
    }

    #[test]
    fn passwords_of_every_length_round_trip_and_bad_lengths_fail() {
        let auth = [0x11; 16];
        for len in 0..=128usize {
            let pw: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) | 1).collect();
            let hidden = hide_password(&pw, b"secret", &auth).unwrap();
            assert_eq!(hidden.len(), len.div_ceil(16).max(1) * 16);
            assert_eq!(unhide_password(&hidden, b"secret", &auth).unwrap().as_slice(), pw.as_slice());
        }
        assert!(hide_password(&[b'x'; 129], b"s", &auth).is_err());
        for bad in [0, 15, 17, 144] {
            assert!(unhide_password(&vec![0; bad], b"s", &auth).is_err(), "{bad}");
        }
    }

    /// Vendors of other layouts than RFC 2865's, as FreeRADIUS's dictionaries declare them.
    const LAYOUTS: [(u32, u8, u8, bool); 5] =
        [(429, 4, 0, false), (4846, 2, 1, false), (8164, 2, 2, false), (24757, 1, 1, true), (7, 1, 0, false)];

    fn layout(vendor: u32) -> Option<VendorFormat> {
        match LAYOUTS.iter().find(|(v, ..)| *v == vendor) {
            Some(&(_, t, l, c)) => VendorFormat::new(t, l, c),
            None => Some(VendorFormat::RFC2865),
        }
    }

    fn arb_attribute() -> impl Strategy<Value = Attribute> {
        prop_oneof![
            ((0u8..=255).prop_filter("not VSA", |t| *t != packet::VENDOR_SPECIFIC), proptest::collection::vec(any::<u8>(), 0..=253))
                .prop_map(|(typ, value)| Attribute::Standard { typ, value }),
            (
                any::<u32>().prop_filter("RFC 2865 layout", |v| layout(*v) == Some(VendorFormat::RFC2865)),
                any::<u8>(),
                proptest::collection::vec(any::<u8>(), 0..=247)
            )
                .prop_map(|(vendor, typ, value)| Attribute::Vendor { vendor, typ, value }),
            (proptest::sample::select(LAYOUTS.to_vec()), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..=247)).prop_map(
                |((vendor, ..), typ, mut value)| {
                    let format = layout(vendor).unwrap();
                    value.truncate(format.max_value_len());
                    Attribute::vendor_in(format, vendor, (u64::from(typ) % (u64::from(format.max_type()) + 1)) as u32, value)
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let _ = Packet::decode(&bytes);
            let _ = Packet::decode_with(&bytes, &layout);
            let _ = check_message_authenticator(&bytes, b"k", None);
            let _ = verify_accounting_request(&bytes, b"k");
        }

        #[test]
        fn decode_never_panics_on_plausible_headers(code in any::<u8>(), id in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut bytes = vec![code, id];
            bytes.extend_from_slice(&((20 + body.len()) as u16).to_be_bytes());
            bytes.extend_from_slice(&[0; 16]);
            bytes.extend_from_slice(&body);
            let _ = Packet::decode(&bytes);
            if let Ok(packet) = Packet::decode_with(&bytes, &layout) {
                // Whatever the layouts make of it, encoding it again reads back the same.
                if let Ok(wire) = packet.encode() {
                    prop_assert_eq!(Packet::decode_with(&wire, &layout).unwrap(), packet);
                }
            }
            let _ = check_message_authenticator(&bytes, b"k", None);
        }

        #[test]
        fn encode_decode_round_trips(code in any::<u8>(), id in any::<u8>(), auth in any::<[u8; 16]>(),
                                     attributes in proptest::collection::vec(arb_attribute(), 0..12)) {
            let packet = Packet { code: Code::from(code), identifier: id, authenticator: auth, attributes };
            if let Ok(wire) = packet.encode() {
                prop_assert_eq!(Packet::decode_with(&wire, &layout).unwrap(), packet);
            }
        }
    }
}

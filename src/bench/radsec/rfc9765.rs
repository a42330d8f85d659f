//! The checks of a RADIUS/1.1 answer (RFC 9765): its request's Token echoed, Reserved-1 and
//! Reserved-2 zero, no Message-Authenticator, and nothing else MD5-signed (a Response
//! Authenticator would show in Reserved-2).
//!
//! Stricter than a NAS must be (RFC 9765 §4.1 and §5.2 have a receiver ignore the reserved
//! octets and drop a Message-Authenticator): a load generator is also a conformance check, so
//! a server that sends them is reported, its answers counted `invalid`.

use crate::radius::{DecodeError, Packet, attr};

/// What is wrong with a RADIUS/1.1 answer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("not a RADIUS packet: {0}")]
    Malformed(#[from] DecodeError),
    #[error("the Token is not the request's")]
    WrongToken,
    #[error("Reserved-1 (the old Identifier) is not zero")]
    Reserved1,
    #[error("Reserved-2 (the rest of the old Authenticator) is not zero")]
    Reserved2,
    #[error("it carries a Message-Authenticator, which RADIUS/1.1 never sends")]
    MessageAuthenticator,
}

/// The answer in `bytes` to the request sent with `token`, if RFC 9765 allows it.
pub fn check_answer(bytes: &[u8], token: [u8; 4]) -> Result<Packet, Violation> {
    // The header as RFC 2865 names its fields: Identifier, then Authenticator = Token + Reserved-2.
    let packet = Packet::decode(bytes)?;
    let (echoed, reserved2) = packet.authenticator.split_at(4);
    if echoed != token {
        return Err(Violation::WrongToken);
    }
    if packet.identifier != 0 {
        return Err(Violation::Reserved1);
    }
    if reserved2.iter().any(|&b| b != 0) {
        return Err(Violation::Reserved2);
    }
    if packet.get(attr::MESSAGE_AUTHENTICATOR).is_some() {
        return Err(Violation::MessageAuthenticator);
    }
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radius::{Attribute, Code};

    const TOKEN: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    /// An Access-Accept as RFC 9765 lays it out, written by hand: code, 0, length, Token, 12 zeros.
    fn accept(extra: &[u8]) -> Vec<u8> {
        let mut bytes = vec![2, 0, 0, 0];
        bytes.extend_from_slice(&TOKEN);
        bytes.extend_from_slice(&[0; 12]);
        bytes.extend_from_slice(&[18, 7, b'h', b'e', b'l', b'l', b'o']);
        bytes.extend_from_slice(extra);
        let len = u16::try_from(bytes.len()).unwrap();
        bytes[2..4].copy_from_slice(&len.to_be_bytes());
        bytes
    }

    #[test]
    fn a_conforming_answer_is_taken() {
        let packet = check_answer(&accept(&[]), TOKEN).unwrap();
        assert_eq!(packet.code, Code::AccessAccept);
        assert_eq!(packet.get(attr::REPLY_MESSAGE), Some(&b"hello"[..]));
    }

    #[test]
    fn a_wrong_token_nonzero_reserved_octets_or_a_message_authenticator_are_violations() {
        assert_eq!(check_answer(&accept(&[]), [0x12, 0x34, 0x56, 0x79]), Err(Violation::WrongToken));
        let mut reserved1 = accept(&[]);
        reserved1[1] = 1;
        assert_eq!(check_answer(&reserved1, TOKEN), Err(Violation::Reserved1));
        for i in 8..20 {
            let mut reserved2 = accept(&[]);
            reserved2[i] = 0x80;
            assert_eq!(check_answer(&reserved2, TOKEN), Err(Violation::Reserved2), "octet {i}");
        }
        let mut with_ma = vec![80, 18];
        with_ma.extend_from_slice(&[0xaa; 16]);
        assert_eq!(check_answer(&accept(&with_ma), TOKEN), Err(Violation::MessageAuthenticator));
    }

    #[test]
    fn an_answer_signed_as_radius_1_0_is_a_violation() {
        // What a server that ignored ALPN would send: a Response Authenticator and a
        // Message-Authenticator, with the Identifier where Reserved-1 is.
        let mut reply = Packet::new(Code::AccessAccept, 0, [0; 16]);
        reply.push(Attribute::standard(attr::REPLY_MESSAGE, *b"hello"));
        let mut request_authenticator = [0; 16];
        request_authenticator[..4].copy_from_slice(&TOKEN);
        let signed = crate::radius::encode_response(&reply, Code::AccessRequest, &request_authenticator, b"radsec").unwrap();
        assert!(check_answer(&signed, TOKEN).is_err());
    }

    #[test]
    fn bytes_that_are_no_packet_are_malformed() {
        let mut cut = accept(&[]);
        cut[2..4].copy_from_slice(&100u16.to_be_bytes());
        assert!(matches!(check_answer(&cut, TOKEN), Err(Violation::Malformed(_))));
        assert!(matches!(check_answer(&[2, 0, 0], TOKEN), Err(Violation::Malformed(_))));
    }
}

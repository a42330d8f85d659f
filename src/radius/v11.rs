//! RADIUS/1.1 (RFC 9765): the same packets without MD5. The Identifier octet is reserved and
//! the 16-octet Authenticator becomes a 4-octet Token (matching a response to its request) and
//! 12 reserved octets; nothing is signed with a shared secret, User-Password travels as the
//! plain string it is (TLS protects it), and Message-Authenticator is never sent and ignored
//! when received. Only TLS negotiated with ALPN `radius/1.1` carries these packets.

use super::attr;
use super::packet::{Attribute, EncodeError, Packet};

/// RFC 9765 §5.1.1: a User-Password's plain value is 1 to 128 octets.
pub const MAX_USER_PASSWORD: usize = 128;

/// The Token of a packet decoded from RADIUS/1.1 bytes: the first 4 octets of what RFC 2865
/// calls the Authenticator.
pub fn token(packet: &Packet) -> [u8; 4] {
    let a = &packet.authenticator;
    [a[0], a[1], a[2], a[3]]
}

/// The Authenticator field as a RADIUS/1.1 packet fills it: the Token, then zeros (Reserved-2).
pub fn header_field(token: [u8; 4]) -> [u8; 16] {
    let mut field = [0; 16];
    field[..4].copy_from_slice(&token);
    field
}

/// A received packet as RFC 9765 reads it: the reserved octets ignored (zeroed), and each
/// Message-Authenticator treated as an invalid attribute (§5.2: dropped, the packet kept).
pub fn normalize_received(packet: &mut Packet) {
    packet.identifier = 0;
    packet.authenticator = header_field(token(packet));
    packet.attributes.retain(|a| !matches!(a, Attribute::Standard { typ: attr::MESSAGE_AUTHENTICATOR, .. }));
}

/// `packet` on the wire as RADIUS/1.1: Reserved-1 and Reserved-2 zero, `token` in its place,
/// no Message-Authenticator, nothing hidden. A response carries its request's Token.
pub fn encode(packet: &Packet, token: [u8; 4]) -> Result<Vec<u8>, EncodeError> {
    let mut out = Packet::new(packet.code, 0, header_field(token));
    out.attributes =
        packet.attributes.iter().filter(|a| !matches!(a, Attribute::Standard { typ: attr::MESSAGE_AUTHENTICATOR, .. })).cloned().collect();
    out.encode()
}

/// A User-Password as RADIUS/1.1 carries it, if it is one: 1 to 128 octets, in the clear.
pub fn user_password(value: &[u8]) -> Option<&[u8]> {
    (1..=MAX_USER_PASSWORD).contains(&value.len()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radius::Code;

    #[test]
    fn the_header_carries_the_token_and_zeros_and_no_message_authenticator() {
        let mut request = Packet::new(Code::AccessRequest, 99, [0xee; 16]);
        request.push(Attribute::standard(attr::USER_NAME, *b"alice"));
        request.push(Attribute::standard(attr::MESSAGE_AUTHENTICATOR, [1; 16]));
        request.push(Attribute::standard(attr::USER_PASSWORD, *b"secret123456"));
        let wire = encode(&request, [1, 2, 3, 4]).unwrap();
        assert_eq!(wire[0], 1);
        assert_eq!(wire[1], 0, "Reserved-1 is zero");
        assert_eq!(u16::from_be_bytes([wire[2], wire[3]]) as usize, wire.len());
        assert_eq!(&wire[4..8], &[1, 2, 3, 4]);
        assert_eq!(&wire[8..20], &[0; 12], "Reserved-2 is zero");
        // User-Name (7 octets) then User-Password in the clear (14): nothing else.
        assert_eq!(wire.len(), 20 + 7 + 14);
        assert_eq!(&wire[29..41], b"secret123456");
    }

    #[test]
    fn received_reserved_octets_and_message_authenticators_are_ignored() {
        let mut wire = encode(&Packet::new(Code::StatusServer, 0, [0; 16]), [9, 9, 9, 9]).unwrap();
        wire[1] = 77;
        wire[10] = 5;
        let mut with_ma = Packet::decode(&wire).unwrap();
        with_ma.push(Attribute::standard(attr::MESSAGE_AUTHENTICATOR, [0; 16]));
        normalize_received(&mut with_ma);
        assert_eq!(with_ma.identifier, 0);
        assert_eq!(token(&with_ma), [9, 9, 9, 9]);
        assert_eq!(with_ma.authenticator[4..], [0; 12]);
        assert!(with_ma.attributes.is_empty());
    }

    #[test]
    fn user_passwords_are_one_to_128_octets() {
        assert_eq!(user_password(b"x"), Some(&b"x"[..]));
        assert!(user_password(b"").is_none());
        assert!(user_password(&[b'a'; 128]).is_some());
        assert!(user_password(&[b'a'; 129]).is_none());
    }
}

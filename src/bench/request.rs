//! The requests the workers send, described once and put on the wire as each transport wants
//! them: signed with the shared secret (UDP, and RADIUS/TLS with its secret `radsec`), or as
//! RADIUS/1.1 (RFC 9765: a Token, the password in the clear, nothing signed). And the check of
//! a signed answer.

use std::time::Duration;

use super::{Answer, BenchKind, BenchOptions};
use crate::radius::{self, Attribute, Code, MessageAuthenticator, Packet, attr};

/// What to send, before it has an Identifier and Authenticator, or a Token.
pub(super) struct Request<'a> {
    code: Code,
    user: &'a str,
    password: &'a [u8],
    state: Option<&'a [u8]>,
    /// Whether a signed request carries a Message-Authenticator.
    message_authenticator: bool,
}

impl<'a> Request<'a> {
    /// `--kind access` (as `user`, with the options' password) or `status-server`.
    pub(super) fn simple(options: &'a BenchOptions, user: &'a str) -> Self {
        let status = options.kind == BenchKind::StatusServer;
        Self {
            code: if status { Code::StatusServer } else { Code::AccessRequest },
            user,
            password: options.password.expose(),
            state: None,
            // RFC 5997 §3: a Status-Server always carries one.
            message_authenticator: options.message_authenticator || status,
        }
    }

    /// One step of a login: the password (with the code appended), or the code with the State
    /// of the challenge.
    pub(super) fn login(user: &'a str, password: &'a [u8], state: Option<&'a [u8]>) -> Self {
        Self { code: Code::AccessRequest, user, password, state, message_authenticator: true }
    }

    fn packet(&self, identifier: u8, authenticator: [u8; 16], password: Vec<u8>) -> Packet {
        let mut packet = Packet::new(self.code, identifier, authenticator);
        if self.code == Code::AccessRequest {
            packet.push(Attribute::standard(attr::USER_NAME, self.user.as_bytes()));
            packet.push(Attribute::standard(attr::USER_PASSWORD, password));
            if let Some(state) = self.state {
                packet.push(Attribute::standard(attr::STATE, state));
            }
        }
        packet.push(Attribute::standard(attr::NAS_IDENTIFIER, &b"radmfa-bench"[..]));
        packet
    }

    /// As UDP and RADIUS/TLS carry it: the password hidden with `secret` and `authenticator`,
    /// and a Message-Authenticator (first) unless turned off.
    pub(super) fn signed(&self, identifier: u8, authenticator: [u8; 16], secret: &[u8]) -> std::io::Result<Vec<u8>> {
        let hidden = radius::hide_password(self.password, secret, &authenticator).map_err(invalid_input)?;
        radius::encode_request(&self.packet(identifier, authenticator, hidden), secret, self.message_authenticator).map_err(invalid_input)
    }

    /// As RADIUS/1.1 carries it (RFC 9765): `token`, the password in the clear (§5.1.1: 1 to
    /// 128 octets), no Message-Authenticator (§5.2), reserved octets zero.
    pub(super) fn radius_1_1(&self, token: [u8; 4]) -> std::io::Result<Vec<u8>> {
        let password = match self.code {
            Code::AccessRequest => radius::v11::user_password(self.password).ok_or_else(|| {
                invalid_input(format!(
                    "a RADIUS/1.1 User-Password is 1 to {} octets (RFC 9765 §5.1.1), not {}",
                    radius::v11::MAX_USER_PASSWORD,
                    self.password.len()
                ))
            })?,
            _ => &[],
        };
        radius::v11::encode(&self.packet(0, [0; 16], password.to_vec()), token).map_err(invalid_input)
    }
}

fn invalid_input(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
}

/// `reply` (decoded from `bytes`), if it is signed as the answer to the request sent with
/// `authenticator`: the Response Authenticator, and the Message-Authenticator where there is
/// one (RFC 3579 §3.2: over the request's authenticator).
pub(super) fn check_signed(bytes: &[u8], reply: Packet, authenticator: &[u8; 16], secret: &[u8], latency: Duration) -> Answer {
    let response_authenticator = radius::verify_response(bytes, authenticator, secret).unwrap_or(false);
    let message_authenticator = radius::check_message_authenticator(bytes, secret, Some(authenticator));
    if response_authenticator && matches!(message_authenticator, Ok(MessageAuthenticator::Valid | MessageAuthenticator::Absent)) {
        Answer::Reply(reply, latency)
    } else {
        Answer::Invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"radsec";

    #[test]
    fn a_signed_login_hides_the_password_and_a_radius_1_1_one_carries_it_plain() {
        let login = Request::login("alice@example.test", b"alice-pw123456", None);
        let signed = login.signed(7, [3; 16], SECRET).unwrap();
        let packet = Packet::decode(&signed).unwrap();
        assert_eq!(packet.identifier, 7);
        let hidden = packet.get(attr::USER_PASSWORD).unwrap();
        assert_eq!(&*radius::unhide_password(hidden, SECRET, &[3; 16]).unwrap(), b"alice-pw123456");
        assert_eq!(radius::check_message_authenticator(&signed, SECRET, None).unwrap(), MessageAuthenticator::Valid);

        let plain = login.radius_1_1([1, 2, 3, 4]).unwrap();
        let packet = Packet::decode(&plain).unwrap();
        assert_eq!(packet.get(attr::USER_PASSWORD), Some(&b"alice-pw123456"[..]));
        assert!(packet.get(attr::MESSAGE_AUTHENTICATOR).is_none());
        assert_eq!((packet.identifier, packet.authenticator), (0, radius::v11::header_field([1, 2, 3, 4])));
    }

    #[test]
    fn a_radius_1_1_password_must_be_1_to_128_octets() {
        assert!(Request::login("alice", b"", None).radius_1_1([0; 4]).is_err());
        assert!(Request::login("alice", &[b'x'; 129], None).radius_1_1([0; 4]).is_err());
        assert!(Request::login("alice", &[b'x'; 128], None).radius_1_1([0; 4]).is_ok());
    }

    #[test]
    fn a_signed_answer_needs_its_response_and_message_authenticators() {
        let request_authenticator = [9; 16];
        let reply = Packet::new(Code::AccessAccept, 7, [0; 16]);
        let good = radius::encode_response(&reply, Code::AccessRequest, &request_authenticator, SECRET).unwrap();
        let check = |bytes: &[u8]| check_signed(bytes, Packet::decode(bytes).unwrap(), &request_authenticator, SECRET, Duration::ZERO);
        assert!(matches!(check(&good), Answer::Reply(..)));
        assert!(matches!(check_signed(&good, reply.clone(), &[8; 16], SECRET, Duration::ZERO), Answer::Invalid), "another request's");
        // The Message-Authenticator (the first attribute) altered, the Response Authenticator
        // made right over it: only the Message-Authenticator check can find it.
        use md5::Digest;
        let mut forged = good.clone();
        forged[22] ^= 1;
        forged[4..20].copy_from_slice(&request_authenticator);
        let response: [u8; 16] = md5::Md5::new().chain_update(&forged).chain_update(SECRET).finalize().into();
        forged[4..20].copy_from_slice(&response);
        assert!(radius::verify_response(&forged, &request_authenticator, SECRET).unwrap());
        assert!(matches!(check(&forged), Answer::Invalid), "a bad Message-Authenticator");
    }
}

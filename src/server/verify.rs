//! Whether a framed RADIUS packet from a known client deserves an answer: the checks of
//! RFC 2865, RFC 2866, RFC 3579, RFC 5080 and RFC 5997, with the BlastRADIUS rules, on the
//! bytes alone. No sockets, no cache, no clock: whatever carried the packet (a UDP datagram, a
//! RadSec record) and found its client, this decides the rest.
//!
//! A packet that fails is silently discarded (RFC 2865 §3); [`Discard`] says why, for the
//! counters and the debug log. Over TLS the [`Carrier`] vouches for integrity: a missing
//! Message-Authenticator is no reason to discard (BlastRADIUS forges UDP, not TLS), but one
//! present must still verify; RADIUS/1.1 has no MD5 to check at all (RFC 9765 §4, §5.2).

use super::settings::ClientSettings;
use super::stats::{Counter, Stats};
use super::{Carrier, PortKind};
use crate::radius::{self, Code, DecodeError, Dictionary, MessageAuthenticator, Packet, attr};

/// Why a packet is silently discarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Discard {
    /// More octets than a RADIUS packet may have.
    #[error("{0} octets, more than a RADIUS packet may have")]
    TooLong(usize),
    /// Not a RADIUS packet.
    #[error("malformed: {0}")]
    Malformed(DecodeError),
    /// A code this port does not serve (an Access-Accept sent to us, say).
    #[error("{code} is not served on the {} port", port.as_str())]
    UnexpectedCode { code: Code, port: PortKind },
    #[error("Message-Authenticator does not verify (wrong shared secret?)")]
    BadMessageAuthenticator,
    #[error("no Message-Authenticator, and this client requires one")]
    MissingMessageAuthenticator,
    /// RFC 5997 §3: a Status-Server must be signed, whatever the client's setting.
    #[error("Status-Server without Message-Authenticator")]
    StatusServerWithoutMessageAuthenticator,
    /// The BlastRADIUS rule: an Access-Request relayed without integrity protection.
    #[error("Proxy-State without Message-Authenticator")]
    ProxyStateWithoutMessageAuthenticator,
    #[error("Accounting-Request authenticator does not verify")]
    BadAccountingAuthenticator,
}

impl Discard {
    /// Whether a stream that carried this packet must be closed (RFC 6613 §2.6.4): anything
    /// malformed or unauthentic. A well-formed packet of a code we do not serve is only dropped.
    pub fn closes_stream(&self) -> bool {
        !matches!(self, Self::UnexpectedCode { .. })
    }
}

impl Discard {
    /// The counter this discard is told by.
    pub fn counter<'s>(&self, stats: &'s Stats) -> &'s Counter {
        match self {
            Self::TooLong(_) | Self::Malformed(_) => &stats.malformed,
            Self::UnexpectedCode { .. } => &stats.unexpected_code,
            Self::BadMessageAuthenticator => &stats.bad_message_authenticator,
            Self::MissingMessageAuthenticator | Self::StatusServerWithoutMessageAuthenticator => &stats.missing_message_authenticator,
            Self::ProxyStateWithoutMessageAuthenticator => &stats.proxy_state_without_message_authenticator,
            Self::BadAccountingAuthenticator => &stats.bad_accounting_authenticator,
        }
    }
}

/// The packet in `bytes`, if `client` sent it to `port` as the RFCs allow. `bytes` is what
/// arrived, padding included: the authenticators are computed over what the Length field covers.
/// `dictionary` says how each vendor lays out its Vendor-Specific attributes.
pub fn verify(bytes: &[u8], client: &ClientSettings, port: PortKind, carrier: Carrier, dictionary: &Dictionary) -> Result<Packet, Discard> {
    if bytes.len() > radius::MAX_PACKET_LEN {
        return Err(Discard::TooLong(bytes.len()));
    }
    let mut packet = dictionary.decode(bytes).map_err(Discard::Malformed)?;
    if !serves(port, packet.code) {
        return Err(Discard::UnexpectedCode { code: packet.code, port });
    }
    if carrier == Carrier::Radius11 {
        radius::v11::normalize_received(&mut packet);
        return Ok(packet);
    }
    let secret = client.secret.expose().as_slice();
    check_message_authenticator(bytes, &packet, client, carrier)?;
    if packet.code == Code::AccountingRequest && !radius::verify_accounting_request(bytes, secret).unwrap_or(false) {
        return Err(Discard::BadAccountingAuthenticator);
    }
    Ok(packet)
}

/// Whether a port takes packets of this code: Status-Server goes to either (RFC 5997 §3).
fn serves(port: PortKind, code: Code) -> bool {
    matches!(
        (port, code),
        (PortKind::Auth | PortKind::Both, Code::AccessRequest)
            | (PortKind::Accounting | PortKind::Both, Code::AccountingRequest)
            | (_, Code::StatusServer)
    )
}

/// Message-Authenticator (RFC 3579 §3.2): valid wherever it stands, and present where this
/// client, the code or a Proxy-State requires it.
fn check_message_authenticator(bytes: &[u8], packet: &Packet, client: &ClientSettings, carrier: Carrier) -> Result<(), Discard> {
    // An Accounting-Request's Message-Authenticator is computed over a zero authenticator.
    let zero = [0u8; 16];
    let basis = (packet.code == Code::AccountingRequest).then_some(&zero);
    let secret = client.secret.expose().as_slice();
    match radius::check_message_authenticator(bytes, secret, basis).map_err(Discard::Malformed)? {
        MessageAuthenticator::Valid => Ok(()),
        MessageAuthenticator::Invalid => Err(Discard::BadMessageAuthenticator),
        // TLS already authenticates the packet: the secret's signature is optional there.
        MessageAuthenticator::Absent if carrier != Carrier::Udp => Ok(()),
        MessageAuthenticator::Absent => {
            match packet.code {
                Code::StatusServer => return Err(Discard::StatusServerWithoutMessageAuthenticator),
                Code::AccessRequest if client.require_message_authenticator => return Err(Discard::MissingMessageAuthenticator),
                _ => {}
            }
            // The BlastRADIUS rule (FreeRADIUS's limit_proxy_state) guards Access-Requests, whose
            // only integrity check is Message-Authenticator. An Accounting-Request is already
            // signed by its Request Authenticator (checked next), and proxies such as FreeRADIUS
            // add Proxy-State to it without a Message-Authenticator.
            if packet.code == Code::AccessRequest && packet.get(attr::PROXY_STATE).is_some() {
                return Err(Discard::ProxyStateWithoutMessageAuthenticator);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::ClientPolicy;
    use crate::radius::Attribute;
    use crate::secret::Secret;

    const SECRET: &[u8] = b"s3cret";

    fn client(require_message_authenticator: bool) -> ClientSettings {
        ClientSettings {
            network: "127.0.0.1/32".parse().unwrap(),
            transport: crate::server::settings::Transport::Udp,
            certificate: Default::default(),
            secret: Secret::new(SECRET.to_vec()),
            require_message_authenticator,
            policy: Arc::new(ClientPolicy::named("nas")),
        }
    }

    fn access_request(attributes: &[Attribute], message_authenticator: bool) -> Vec<u8> {
        let mut packet = Packet::new(Code::AccessRequest, 7, [9; 16]);
        packet.attributes.extend_from_slice(attributes);
        radius::encode_request(&packet, SECRET, message_authenticator).unwrap()
    }

    #[test]
    fn a_signed_access_request_passes_and_padding_is_ignored() {
        let mut bytes = access_request(&[Attribute::standard(attr::USER_NAME, *b"alice")], true);
        bytes.extend_from_slice(&[0; 5]);
        let packet = verify(&bytes, &client(true), PortKind::Auth, Carrier::Udp, &Dictionary::default()).unwrap();
        assert_eq!(packet.get(attr::USER_NAME), Some(&b"alice"[..]));
    }

    #[test]
    fn vendor_specific_attributes_are_read_in_the_layout_the_dictionary_gives() {
        let mut dictionary = Dictionary::builtin().unwrap();
        dictionary.load_str("inline", "VENDOR Lucent 4846 format=2,1\n").unwrap();
        let lucent = radius::VendorFormat::new(2, 1, false).unwrap();
        let sub = Attribute::vendor_in(lucent, 4846, 2, [3, 7]);
        let bytes = access_request(std::slice::from_ref(&sub), true);
        assert!(verify(&bytes, &client(true), PortKind::Auth, Carrier::Udp, &dictionary).unwrap().attributes.contains(&sub));
        let plain = verify(&bytes, &client(true), PortKind::Auth, Carrier::Udp, &Dictionary::default()).unwrap();
        assert!(!plain.attributes.contains(&sub), "without the layout, the octets read otherwise");
    }

    #[test]
    fn each_rule_names_its_discard_and_counter() {
        let proxied = [Attribute::standard(attr::PROXY_STATE, *b"p")];
        let mut tampered = access_request(&[], true);
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let mut wrong_code = access_request(&[], true);
        wrong_code[0] = 2;
        let cases = [
            (vec![0; radius::MAX_PACKET_LEN + 1], true, PortKind::Auth, Discard::TooLong(4097)),
            (vec![1, 2, 3], false, PortKind::Auth, Discard::Malformed(DecodeError::TooShort(3))),
            (wrong_code, false, PortKind::Auth, Discard::UnexpectedCode { code: Code::AccessAccept, port: PortKind::Auth }),
            (
                access_request(&[], true),
                false,
                PortKind::Accounting,
                Discard::UnexpectedCode { code: Code::AccessRequest, port: PortKind::Accounting },
            ),
            (tampered, false, PortKind::Auth, Discard::BadMessageAuthenticator),
            (access_request(&[], false), true, PortKind::Auth, Discard::MissingMessageAuthenticator),
            (access_request(&proxied, false), false, PortKind::Auth, Discard::ProxyStateWithoutMessageAuthenticator),
        ];
        let stats = Stats::default();
        for (bytes, required, port, expected) in cases {
            let discard = verify(&bytes, &client(required), port, Carrier::Udp, &Dictionary::default()).unwrap_err();
            assert_eq!(discard, expected);
            discard.counter(&stats).inc();
        }
        assert_eq!(stats.malformed.get(), 2);
        assert_eq!(stats.unexpected_code.get(), 2);
        assert_eq!(stats.bad_message_authenticator.get(), 1);
        assert_eq!(stats.missing_message_authenticator.get(), 1);
        assert_eq!(stats.proxy_state_without_message_authenticator.get(), 1);
        assert!(
            verify(&access_request(&proxied, true), &client(false), PortKind::Auth, Carrier::Udp, &Dictionary::default()).is_ok(),
            "signed, it may carry Proxy-State"
        );
        assert!(
            verify(&access_request(&[], false), &client(false), PortKind::Auth, Carrier::Udp, &Dictionary::default()).is_ok(),
            "unsigned, when the client allows it"
        );
    }

    #[test]
    fn status_server_needs_a_message_authenticator_on_either_port() {
        let status = Packet::new(Code::StatusServer, 1, [4; 16]);
        let signed = radius::encode_request(&status, SECRET, true).unwrap();
        let bare = radius::encode_request(&status, SECRET, false).unwrap();
        for port in [PortKind::Auth, PortKind::Accounting] {
            assert!(verify(&signed, &client(false), port, Carrier::Udp, &Dictionary::default()).is_ok());
            assert_eq!(
                verify(&bare, &client(false), port, Carrier::Udp, &Dictionary::default()),
                Err(Discard::StatusServerWithoutMessageAuthenticator)
            );
        }
    }

    #[test]
    fn accounting_requests_are_signed_by_their_authenticator_and_may_carry_proxy_state() {
        let mut request = Packet::new(Code::AccountingRequest, 3, [0; 16]);
        request.push(Attribute::standard(attr::ACCT_STATUS_TYPE, [0, 0, 0, 1]));
        request.push(Attribute::standard(attr::PROXY_STATE, *b"p"));
        let bytes = radius::encode_request(&request, SECRET, false).unwrap();
        assert!(verify(&bytes, &client(true), PortKind::Accounting, Carrier::Udp, &Dictionary::default()).is_ok());
        let forged = radius::encode_request(&request, b"other", false).unwrap();
        let discard = verify(&forged, &client(false), PortKind::Accounting, Carrier::Udp, &Dictionary::default()).unwrap_err();
        assert_eq!(discard, Discard::BadAccountingAuthenticator);
        let stats = Stats::default();
        discard.counter(&stats).inc();
        assert_eq!(stats.bad_accounting_authenticator.get(), 1);
    }

    proptest::proptest! {
        #[test]
        fn verify_never_panics(code in proptest::sample::select(vec![1u8, 2, 4, 12, 99]), padding in 0usize..8,
                               body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), required: bool) {
            let mut bytes = vec![code, 1];
            bytes.extend_from_slice(&((20 + body.len()) as u16).to_be_bytes());
            bytes.extend_from_slice(&[0; 16]);
            bytes.extend_from_slice(&body);
            bytes.resize(bytes.len() + padding, 0);
            for port in [PortKind::Auth, PortKind::Accounting] {
                let _ = verify(&bytes, &client(required), port, Carrier::Udp, &Dictionary::default());
            }
        }
    }
}

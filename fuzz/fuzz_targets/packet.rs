//! A datagram as the server receives it: decoded, its Message-Authenticator and accounting
//! authenticator checked, User-Password unhidden, attributes described for the log, and the
//! decoded packet re-encoded and signed. None of it may panic, and every round trip must hold.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use radmfa::radius::{self, Code, Dictionary, MessageAuthenticator, Packet, attr};

/// The RFC 2865 §7 secret, so the seeds taken from the RFC's examples verify.
const SECRET: &[u8] = b"xyzzy5461";

/// Vendors of each layout FreeRADIUS's dictionaries declare, with an attribute each.
const LAYOUTS: &str = "\
VENDOR USR 429 format=4,0
VENDOR Lucent 4846 format=2,1
VENDOR Starent 8164 format=2,2
VENDOR WiMAX 24757 format=1,1,c
ATTRIBUTE USR-Connect-Speed 0x9023 integer USR
ATTRIBUTE Lucent-Max-Shared-Users 2 integer Lucent
ATTRIBUTE SN-VPN-Name 2 string Starent
ATTRIBUTE WiMAX-Session-Continue 21 integer WiMAX
";

/// The built-in dictionaries and the vendors above.
fn dictionary() -> Option<&'static Dictionary> {
    static DICT: OnceLock<Option<Dictionary>> = OnceLock::new();
    DICT.get_or_init(|| {
        let mut dict = Dictionary::builtin().ok()?;
        dict.load_str("layouts", LAYOUTS).ok()?;
        Some(dict)
    })
    .as_ref()
}

fuzz_target!(|datagram: &[u8]| {
    // What the server's admission step runs on the raw bytes, for both kinds of request.
    let as_request = radius::check_message_authenticator(datagram, SECRET, None);
    let as_accounting = radius::check_message_authenticator(datagram, SECRET, Some(&[0; 16]));
    let accounting_ok = radius::verify_accounting_request(datagram, SECRET);
    let _ = radius::verify_response(datagram, &[0; 16], SECRET);

    let Ok(packet) = Packet::decode(datagram) else { return };
    // Decoding succeeded, so the length field and every attribute length are sound: the keyed
    // checks, which walk the same attributes, must not call the packet malformed.
    assert!(as_request.is_ok() && as_accounting.is_ok() && accounting_ok.is_ok(), "{as_request:?} {as_accounting:?} {accounting_ok:?}");

    for hidden in packet.get_all(attr::USER_PASSWORD) {
        if let Ok(password) = radius::unhide_password(hidden, SECRET, &packet.authenticator) {
            // Hiding it again gives the received blocks back, up to the padding trimmed off.
            let again = radius::hide_password(&password, SECRET, &packet.authenticator).expect("unhidden password re-hides");
            assert_eq!(again.as_slice(), &hidden[..again.len()]);
        }
    }

    if let Some(dict) = dictionary() {
        for attribute in &packet.attributes {
            let _ = dict.describe(attribute);
        }
        // Read in each vendor's layout, as the server reads it: the same checks pass, and
        // decode → encode → decode is the identity there too.
        let by_layout = dict.decode(datagram).expect("a packet that decodes decodes in any layout");
        for attribute in &by_layout.attributes {
            let _ = dict.describe(attribute);
        }
        if let Ok(wire) = by_layout.encode() {
            assert_eq!(dict.decode(&wire).as_ref(), Ok(&by_layout));
        }
    }
    if let Some(name) = packet.get(attr::USER_NAME) {
        let name = String::from_utf8_lossy(name);
        let _ = radmfa::auth::shown(&name);
        let rules = radmfa::auth::username::UsernameRules { domains: vec!["EXAMPLE".into()], realms: vec!["example.test".into()] };
        let _ = rules.login_name(&name);
    }

    // decode → encode → decode is the identity (the bytes may differ: padding is dropped and a
    // Vendor-Specific holding several sub-attributes is re-encoded as one VSA each).
    if let Ok(wire) = packet.encode() {
        assert_eq!(Packet::decode(&wire).as_ref(), Ok(&packet));
    }

    // Signing what we decoded yields packets our own checks accept.
    if let Ok(wire) = radius::encode_response(&packet, Code::AccessRequest, &packet.authenticator, SECRET) {
        assert_eq!(radius::verify_response(&wire, &packet.authenticator, SECRET), Ok(true));
        let basis = if packet.code == Code::AccountingResponse { [0; 16] } else { packet.authenticator };
        assert_eq!(radius::check_message_authenticator(&wire, SECRET, Some(&basis)), Ok(MessageAuthenticator::Valid));
    }
    if let Ok(wire) = radius::encode_request(&packet, SECRET, true) {
        if packet.code == Code::AccountingRequest {
            assert_eq!(radius::verify_accounting_request(&wire, SECRET), Ok(true));
            assert_eq!(radius::check_message_authenticator(&wire, SECRET, Some(&[0; 16])), Ok(MessageAuthenticator::Valid));
        } else {
            assert_eq!(radius::check_message_authenticator(&wire, SECRET, None), Ok(MessageAuthenticator::Valid));
        }
    }
});

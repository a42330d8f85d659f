//! Our codec against the `radius` crate, both ways: what one encodes, the other decodes alike.

use radius::core::code::Code as TheirCode;
use radius::core::packet::Packet as TheirPacket;
use radius::core::{rfc2865, rfc2869};
use radmfa::radius::{self as ours, Attribute, Code, Packet, attr};

const SECRET: &[u8] = b"interop-secret";

#[test]
fn their_access_request_decodes_with_ours() {
    let mut theirs = TheirPacket::new(TheirCode::AccessRequest, SECRET);
    rfc2865::add_user_name(&mut theirs, "åsa@example.test");
    rfc2865::add_user_password(&mut theirs, "pässword-with-more-than-sixteen-bytes".as_bytes()).unwrap();
    rfc2865::add_nas_identifier(&mut theirs, "netscaler-1");
    rfc2865::add_proxy_state(&mut theirs, b"p1");
    rfc2869::add_message_authenticator(&mut theirs, &[0; 16]);
    let wire = theirs.encode().unwrap();

    let packet = Packet::decode(&wire).unwrap();
    assert_eq!(packet.code, Code::AccessRequest);
    assert_eq!(packet.identifier, theirs.get_identifier());
    assert_eq!(packet.authenticator.as_slice(), theirs.get_authenticator().as_slice());
    assert_eq!(packet.get(attr::USER_NAME), Some("åsa@example.test".as_bytes()));
    assert_eq!(packet.get(attr::NAS_IDENTIFIER), Some(&b"netscaler-1"[..]));
    assert_eq!(packet.get(attr::PROXY_STATE), Some(&b"p1"[..]));
    let password = ours::unhide_password(packet.get(attr::USER_PASSWORD).unwrap(), SECRET, &packet.authenticator).unwrap();
    assert_eq!(password.as_slice(), "pässword-with-more-than-sixteen-bytes".as_bytes());
    assert_eq!(packet.encode().unwrap(), wire, "re-encoding reproduces their bytes");
}

#[test]
fn our_request_and_response_decode_with_theirs() {
    let authenticator = [0x5a; 16];
    let mut request = Packet::new(Code::AccessRequest, 77, authenticator);
    request.push(Attribute::standard(attr::USER_NAME, *b"bob"));
    request.push(Attribute::standard(attr::USER_PASSWORD, ours::hide_password(b"hunter2", SECRET, &authenticator).unwrap()));
    let wire = ours::encode_request(&request, SECRET, true).unwrap();
    let theirs = TheirPacket::decode(&wire, SECRET).unwrap();
    assert_eq!(theirs.get_code(), TheirCode::AccessRequest);
    assert_eq!(rfc2865::lookup_user_name(&theirs).unwrap().unwrap(), "bob");
    assert_eq!(rfc2865::lookup_user_password(&theirs).unwrap().unwrap(), b"hunter2");

    let mut reply = Packet::new(Code::AccessAccept, 77, [0; 16]);
    reply.push(Attribute::standard(attr::REPLY_MESSAGE, *b"Welcome"));
    reply.push(Attribute::vendor(66, 16, *b"VPN-Users"));
    let response = ours::encode_response(&reply, Code::AccessRequest, &authenticator, SECRET).unwrap();
    assert!(TheirPacket::is_authentic_response(&response, &wire, SECRET));
    let theirs = TheirPacket::decode(&response, SECRET).unwrap();
    assert_eq!(theirs.get_code(), TheirCode::AccessAccept);
    assert_eq!(rfc2865::lookup_reply_message(&theirs).unwrap().unwrap(), "Welcome");
    assert!(rfc2869::lookup_message_authenticator(&theirs).is_some());
}

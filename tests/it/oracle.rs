//! An independent RADIUS client: packets built by the `radius` crate and Message-Authenticator
//! computed here with `hmac` + `md-5` directly, so our codec is checked against code we did
//! not write rather than against itself.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hmac::{Hmac, Mac};
use radius::core::code::Code;
use radius::core::packet::Packet;
use radius::core::{rfc2865, rfc2869};

use crate::harness::SECRET;

pub const MESSAGE_AUTHENTICATOR: u8 = 80;

pub fn access_request(user: &str, password: &str) -> Packet {
    let mut p = Packet::new(Code::AccessRequest, SECRET.as_bytes());
    rfc2865::add_user_name(&mut p, user);
    rfc2865::add_user_password(&mut p, password.as_bytes()).unwrap();
    p
}

/// Encodes an Access-Request with a Message-Authenticator, signed here.
pub fn encode_signed(mut packet: Packet) -> Vec<u8> {
    rfc2869::add_message_authenticator(&mut packet, &[0; 16]);
    let mut bytes = packet.encode().unwrap();
    let offset = attribute_offsets(&bytes).into_iter().find(|(t, _)| *t == MESSAGE_AUTHENTICATOR).unwrap().1;
    let mac = hmac_md5(SECRET.as_bytes(), &bytes);
    bytes[offset + 2..offset + 18].copy_from_slice(&mac);
    bytes
}

pub fn hmac_md5(key: &[u8], data: &[u8]) -> [u8; 16] {
    let mut mac = <Hmac<md5::Md5> as Mac>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// (type, offset) of each attribute of an encoded packet.
pub fn attribute_offsets(bytes: &[u8]) -> Vec<(u8, usize)> {
    let len = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
    let mut out = Vec::new();
    let mut at = 20;
    while at + 2 <= len {
        out.push((bytes[at], at));
        at += bytes[at + 1].max(2) as usize;
    }
    out
}

/// Checks a response the way a strict NAS does: Response Authenticator (by the `radius` crate),
/// and a valid Message-Authenticator standing first.
pub fn assert_authentic(response: &[u8], request: &[u8]) {
    assert!(Packet::is_authentic_response(response, request, SECRET.as_bytes()), "Response Authenticator does not verify");
    let attrs = attribute_offsets(response);
    assert_eq!(attrs.first().map(|a| a.0), Some(MESSAGE_AUTHENTICATOR), "Message-Authenticator must be the first attribute");
    let mut copy = response.to_vec();
    copy[4..20].copy_from_slice(&request[4..20]);
    copy[22..38].fill(0);
    assert_eq!(hmac_md5(SECRET.as_bytes(), &copy), response[22..38], "Message-Authenticator does not verify");
}

pub fn decode(response: &[u8]) -> Packet {
    Packet::decode(response, SECRET.as_bytes()).unwrap()
}

/// A UDP socket on `local` (e.g. 127.0.0.1:0) talking to `server`.
pub fn socket(local: &str, server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(local).unwrap();
    s.connect(server).unwrap();
    s
}

pub fn receive(socket: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut buf = vec![0; 8192];
    match socket.recv(&mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

pub fn exchange(socket: &UdpSocket, request: &[u8], wait: Duration) -> Option<Vec<u8>> {
    socket.send(request).unwrap();
    receive(socket, wait)
}

pub fn code(response: &[u8]) -> u8 {
    response[0]
}

pub const ACCESS_ACCEPT: u8 = 2;
pub const ACCESS_REJECT: u8 = 3;
pub const ACCOUNTING_RESPONSE: u8 = 5;

pub fn access_request_with_state(user: &str, password: &str, state: &[u8]) -> Packet {
    let mut p = access_request(user, password);
    rfc2865::add_state(&mut p, state);
    p
}

/// The State of a response, if any.
pub fn state_of(response: &[u8]) -> Option<Vec<u8>> {
    rfc2865::lookup_state(&decode(response))
}

pub fn reply_message(response: &[u8]) -> Option<String> {
    rfc2865::lookup_reply_message(&decode(response)).map(|m| m.unwrap())
}

pub const ACCESS_CHALLENGE: u8 = 11;

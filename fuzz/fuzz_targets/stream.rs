//! A RadSec stream as the server reads it: arbitrary octets arriving in arbitrary pieces,
//! framed into packets (RFC 6614 §3.4), each verified as RADIUS/TLS and as RADIUS/1.1 would
//! verify it. Nothing may panic; every packet framed is whole (20 to 4096 octets, its own
//! Length), the pieces' octets come out in order and unchanged, and a RADIUS/1.1 packet
//! re-encoded with its Token reads back the same.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use radmfa::auth::ClientPolicy;
use radmfa::radius::{self, Dictionary, Packet};
use radmfa::secret::Secret;
use radmfa::server::settings::{ClientSettings, Transport};
use radmfa::server::tls::framing::Frames;
use radmfa::server::{Carrier, PortKind, verify};

fuzz_target!(|input: &[u8]| {
    // The first octet sets the piece size the stream arrives in (1..=256 octets).
    let Some((&piece, stream)) = input.split_first() else { return };
    let piece = usize::from(piece) + 1;
    let client = ClientSettings {
        network: "127.0.0.1/32".parse().expect("a network"),
        transport: Transport::Tls,
        certificate: Default::default(),
        secret: Secret::new(b"radsec".to_vec()),
        require_message_authenticator: true,
        policy: Arc::new(ClientPolicy::named("fuzz")),
    };
    let dictionary = Dictionary::default();
    let mut frames = Frames::default();
    let mut framed = Vec::new();
    'stream: for chunk in stream.chunks(piece) {
        // As the reader does: never more than `wanted` at once.
        let mut rest = chunk;
        while !rest.is_empty() {
            let take = frames.wanted().min(rest.len());
            frames.push(&rest[..take]);
            rest = &rest[take..];
            loop {
                match frames.next_packet() {
                    Ok(Some(packet)) => {
                        assert!((20..=4096).contains(&packet.len()));
                        assert_eq!(usize::from(u16::from_be_bytes([packet[2], packet[3]])), packet.len());
                        framed.extend_from_slice(&packet);
                        check(&packet, &client, &dictionary);
                    }
                    Ok(None) => break,
                    Err(_) => break 'stream,
                }
            }
        }
    }
    assert_eq!(&stream[..framed.len()], framed.as_slice(), "packets are the stream's octets, in order");
});

fn check(packet: &[u8], client: &ClientSettings, dictionary: &Dictionary) {
    for port in [PortKind::Both, PortKind::Auth] {
        let _ = verify(packet, client, port, Carrier::Tls, dictionary);
        if let Ok(v11) = verify(packet, client, port, Carrier::Radius11, dictionary) {
            let token = radius::v11::token(&v11);
            if let Ok(wire) = radius::v11::encode(&v11, token) {
                let mut again = Packet::decode(&wire).expect("what we encode decodes");
                radius::v11::normalize_received(&mut again);
                assert_eq!(again, v11);
            }
        }
    }
}

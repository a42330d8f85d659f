//! Arbitrary text through the FreeRADIUS-format dictionary parser, alone and on top of the
//! built-in dictionaries (as an admin's `server.dictionary` file loads), then the loaded
//! definitions used as the config and the log use them. Errors are fine; panics are not.
//!
//! `Dictionary::load_str` refuses `$INCLUDE`, so no input makes the parser read a file.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use radmfa::radius::{Attribute, Code, Dictionary, Packet};

fn builtin() -> Option<&'static Dictionary> {
    static DICT: OnceLock<Option<Dictionary>> = OnceLock::new();
    DICT.get_or_init(|| Dictionary::builtin().ok()).as_ref()
}

/// Words looked at after a successful load, bounded so one input stays cheap.
const MAX_WORDS: usize = 48;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut alone = Dictionary::default();
    if alone.load_str("fuzz", &text).is_ok() {
        exercise(&alone, &text);
    }
    if let Some(builtin) = builtin() {
        let mut layered = builtin.clone();
        if layered.load_str("fuzz", &text).is_ok() {
            exercise(&layered, &text);
        }
    }
});

/// Every word of the input that names an attribute: parse the other words as its values (as a
/// `reply_attributes` entry does), encode what a reply could carry and read it back, and
/// describe the bytes that come out (as the log does).
fn exercise(dict: &Dictionary, text: &str) {
    let words: Vec<&str> = text.split_whitespace().take(MAX_WORDS).collect();
    for name in &words {
        let Some(def) = dict.attribute(name) else { continue };
        let _ = dict.vendor_id(name);
        if let Ok(sendable) = dict.sendable(def) {
            for value in &words {
                if let Ok(bytes) = dict.parse_value(def, value) {
                    let attribute = sendable.with_value(bytes);
                    let _ = dict.describe(&attribute);
                    round_trip(dict, attribute);
                }
            }
            let _ = dict.describe(&sendable.with_value(name.as_bytes().to_vec()));
        }
        let found = dict.attribute_by_oid(&def.oid);
        assert!(found.is_some(), "{name} is defined but its number {} is not", def.oid);
    }
    let _ = dict.unsupported_summary();
}

/// A reply attribute, encoded as the server sends it, decodes with the same dictionary to the
/// same attribute (a raw Vendor-Specific aside: its octets are read as the VSA they hold).
fn round_trip(dict: &Dictionary, attribute: Attribute) {
    if matches!(attribute, Attribute::Standard { typ: 26, .. }) {
        return;
    }
    let mut packet = Packet::new(Code::AccessAccept, 1, [0; 16]);
    packet.push(attribute);
    if let Ok(wire) = packet.encode() {
        let back = dict.decode(&wire).expect("what we encode decodes");
        assert_eq!(back.attributes, packet.attributes);
    }
}

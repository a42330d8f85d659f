//! Writes the seed corpus the fuzz targets start from: the packets, States and configs that the
//! repository's tests use, built with radmfa's own encoders. Run by `fuzz/seed-corpus`, which
//! also copies the shipped dictionaries and example configs.
//!
//! Usage: cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus -- <corpus dir>

use std::path::Path;

use radmfa::auth::state::{ChallengeState, Stage};
use radmfa::keys::KeyRing;
use radmfa::radius::{self, Attribute, Code, Packet, attr};

/// Must match `SECRET` in fuzz_targets/packet.rs (the RFC 2865 §7 secret).
const SECRET: &[u8] = b"xyzzy5461";
/// Must match `FUZZ_KEY_FILE` in fuzz_targets/state.rs.
const FUZZ_KEY_FILE: &str = "fuzz QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=\n";

// RFC 2865 §7.1, as in src/radius/mod.rs's tests.
const RFC_REQUEST: &str = "01 00 00 38 0f 40 3f 94 73 97 80 57 bd 83 d5 cb 98 f4 22 7a 01 06 6e 65 6d 6f 02 12 0d be 70 8d
    93 d4 13 ce 31 96 e4 3f 78 2a 0a ee 04 06 c0 a8 01 10 05 06 00 00 00 03";
const RFC_ACCEPT: &str = "02 00 00 26 86 fe 22 0e 76 24 ba 2a 10 05 f6 bf 9b 55 e0 b2 06 06 00 00 00 01 0f 06 00 00 00 00
    0e 06 c0 a8 01 03";

/// The configuration in src/config.rs's tests.
const MINIMAL: &str = r#"
[server]
listen = ["127.0.0.1:18120"]

[[client]]
name = "netscaler-1"
address = "127.0.0.1/32"
secret = "testing123"
require_message_authenticator = false

[directory]
kind = "file"
path = "users.toml"
"#;

/// tests/it/harness.rs's `write_config` with its default options and the SMS gateway set.
const HARNESS: &str = r#"
[server]
listen = ["127.0.0.1:0"]
accounting_listen = ["127.0.0.1:0"]
reject_delay = "0s"
max_in_flight = 64

[[client]]
name = "loopback"
address = "127.0.0.1/32"
secret = "testing123"
require_message_authenticator = true
mode = "auto"
no_token = "password_only"
reply_attributes = [{ name = "Citrix-User-Groups", value = "{group}" }]
group_filter = "^VPN-"

[[client]]
name = "loopback-v6"
address = "::1"
secret = "testing123"
require_message_authenticator = false
no_token = "password_only"

[directory]
kind = "file"
path = "users.toml"

[store]
kind = "sqlite"
path = "radmfa.db"
key_file = "master.key"

[totp]
issuer = "Example Region"
challenge_timeout = "120s"

[lockout]
duration = "5m"

[sms]
gateway = "http"
url = "http://127.0.0.1:9999/send"
method = "POST"
body = '{"to":"{to}","message":"{message}"}'
content_type = "application/json"

[[client]]
name = "latin1-nas"
address = "127.0.0.2"
secret = "testing123"
require_message_authenticator = false
no_token = "password_only"
password_encoding = "latin-1"
"#;

/// src/config.rs's LDAP contract test.
const LDAP: &str = r#"
[server]
listen = ["127.0.0.1:18120", "[::1]:18120"]

[[client]]
name = "netscaler-1"
address = "10.0.0.0/24"
secret = "testing123"
require_message_authenticator = false
group_filter = "^(VPN|Citrix)-"
reply_attributes = [ { name = "Citrix-User-Groups", value = "{group}" }, { name = "Class", value = "{groups}", separator = ";" } ]

[directory]
kind = "ldap"
urls = ["ldaps://dc1.example.test:636", "ldaps://dc2.example.test:636"]
bind_dn = "CN=svc-radmfa,CN=Users,DC=example,DC=test"
bind_password = "s3rvice"
base_dn = "DC=example,DC=test"
required_groups = ["CN=VPN-Users,CN=Users,DC=example,DC=test"]
tls_insecure_skip_verify = true
"#;

/// src/config.rs's portal and SMS gateway tests, together.
const PORTAL_SMS: &str = r#"
[server]
listen = ["127.0.0.1:18120"]

[[client]]
name = "netscaler-1"
address = "127.0.0.1/32"
secret = "testing123"
require_message_authenticator = false
mode = "challenge"

[directory]
kind = "file"
path = "users.toml"

[sms]
gateway = "46elks"
username = "u"
password = "p"
from = "radmfa"

[portal]
enabled = true
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
issuer = "Example Region"
"#;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).filter_map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

fn request(code: Code, id: u8, attributes: Vec<Attribute>) -> Packet {
    let mut p = Packet::new(code, id, [id.wrapping_mul(37) | 1; 16]);
    p.attributes = attributes;
    p
}

fn user_name(name: &str) -> Attribute {
    Attribute::standard(attr::USER_NAME, name.as_bytes())
}

fn password(p: &Packet, password: &[u8]) -> Attribute {
    Attribute::standard(attr::USER_PASSWORD, radius::hide_password(password, SECRET, &p.authenticator).unwrap())
}

fn packets() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![("rfc2865-7.1-access-request.bin", unhex(RFC_REQUEST)), ("rfc2865-7.1-access-accept.bin", unhex(RFC_ACCEPT))];

    // tests/it/codec.rs: bob / hunter2, Message-Authenticator first (as we sign).
    let mut bob = request(Code::AccessRequest, 77, vec![user_name("bob")]);
    bob.push(password(&bob, b"hunter2"));
    out.push(("access-request-ma-first.bin", radius::encode_request(&bob, SECRET, true).unwrap()));
    // Message-Authenticator last, as Debian's radclient sends it; re-signed.
    let mut last = Packet::decode(&radius::encode_request(&bob, SECRET, true).unwrap()).unwrap();
    last.attributes.rotate_left(1);
    let mut wire = last.encode().unwrap();
    let at = wire.len() - 16;
    wire[at..].fill(0);
    let mac = hmac_md5(SECRET, &wire);
    wire[at..].copy_from_slice(&mac);
    out.push(("access-request-ma-last.bin", wire));
    out.push(("access-request-no-ma.bin", radius::encode_request(&bob, SECRET, false).unwrap()));

    // Replies as the server sends them.
    let mut accept = Packet::new(Code::AccessAccept, 77, [0; 16]);
    accept.push(Attribute::standard(attr::REPLY_MESSAGE, *b"Welcome"));
    accept.push(Attribute::vendor(66, 16, *b"VPN-Users"));
    accept.push(Attribute::standard(attr::PROXY_STATE, *b"p1"));
    out.push(("access-accept-citrix.bin", radius::encode_response(&accept, Code::AccessRequest, &bob.authenticator, SECRET).unwrap()));
    // Vendors of the other layouts fuzz_targets/packet.rs declares: USR 4,0, Lucent 2,1,
    // Starent 2,2, WiMAX 1,1,c.
    let mut layouts = Packet::new(Code::AccessAccept, 77, [0; 16]);
    for (vendor, (t, l, c), typ, value) in [
        (429, (4, 0, false), 0x9023, &[0, 0, 0, 7][..]),
        (4846, (2, 1, false), 2, &[0, 0, 0, 3]),
        (8164, (2, 2, false), 2, b"corp"),
        (24757, (1, 1, true), 21, &[0, 0, 0, 1]),
    ] {
        layouts.push(Attribute::vendor_in(radius::VendorFormat::new(t, l, c).unwrap(), vendor, typ, value));
    }
    out.push((
        "access-accept-vendor-layouts.bin",
        radius::encode_response(&layouts, Code::AccessRequest, &bob.authenticator, SECRET).unwrap(),
    ));
    let mut challenge = Packet::new(Code::AccessChallenge, 78, [0; 16]);
    challenge.push(Attribute::standard(attr::REPLY_MESSAGE, *b"Enter the code from your authenticator app, or \"sms\""));
    challenge.push(Attribute::standard(attr::STATE, sealed_states()[0].1.clone()));
    out.push(("access-challenge.bin", radius::encode_response(&challenge, Code::AccessRequest, &bob.authenticator, SECRET).unwrap()));
    let reject = Packet::new(Code::AccessReject, 79, [0; 16]);
    out.push(("access-reject.bin", radius::encode_response(&reject, Code::AccessRequest, &bob.authenticator, SECRET).unwrap()));

    // tests/it/second_factor.rs: the answer to a challenge carries the State back.
    let mut answer = request(Code::AccessRequest, 80, vec![user_name("alice")]);
    answer.push(password(&answer, b"492039"));
    answer.push(Attribute::standard(attr::STATE, sealed_states()[0].1.clone()));
    answer.push(Attribute::standard(attr::NAS_IDENTIFIER, *b"netscaler-1"));
    out.push(("access-request-state.bin", radius::encode_request(&answer, SECRET, true).unwrap()));

    // A 128-octet password (the most RFC 2865 §5.2 allows) and a multi-block UTF-8 one.
    let mut long = request(Code::AccessRequest, 81, vec![user_name("åsa@example.test")]);
    long.push(password(&long, &[b'p'; 128]));
    out.push(("access-request-password-128.bin", radius::encode_request(&long, SECRET, true).unwrap()));
    let mut utf8 = request(Code::AccessRequest, 82, vec![user_name("EXAMPLE\\Åsa")]);
    utf8.push(password(&utf8, "pässword-with-more-than-sixteen-bytes".as_bytes()));
    utf8.push(Attribute::standard(attr::NAS_IPV6_ADDRESS, [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
    out.push(("access-request-utf8.bin", radius::encode_request(&utf8, SECRET, true).unwrap()));

    // tests/it/server.rs: accounting, Status-Server, Proxy-State, CHAP, a 4000-octet request.
    let acct = request(
        Code::AccountingRequest,
        83,
        vec![
            user_name("alice"),
            Attribute::standard(attr::ACCT_STATUS_TYPE, [0, 0, 0, 1]),
            Attribute::standard(attr::ACCT_SESSION_ID, *b"s-1"),
        ],
    );
    out.push(("accounting-request.bin", radius::encode_request(&acct, SECRET, false).unwrap()));
    out.push(("accounting-request-ma.bin", radius::encode_request(&acct, SECRET, true).unwrap()));
    let acct_reply = Packet::new(Code::AccountingResponse, 83, [0; 16]);
    out.push((
        "accounting-response.bin",
        radius::encode_response(&acct_reply, Code::AccountingRequest, &acct.authenticator, SECRET).unwrap(),
    ));
    let status = request(Code::StatusServer, 84, vec![]);
    out.push(("status-server-ma.bin", radius::encode_request(&status, SECRET, true).unwrap()));
    out.push(("status-server-bare.bin", radius::encode_request(&status, SECRET, false).unwrap()));
    let mut proxied = request(Code::AccessRequest, 85, vec![user_name("alice")]);
    proxied.push(password(&proxied, b"Secret123"));
    proxied.push(Attribute::standard(attr::PROXY_STATE, *b"first"));
    proxied.push(Attribute::standard(attr::PROXY_STATE, *b"second"));
    out.push(("access-request-proxy-state.bin", radius::encode_request(&proxied, SECRET, true).unwrap()));
    let chap = request(
        Code::AccessRequest,
        86,
        vec![user_name("alice"), Attribute::standard(attr::CHAP_PASSWORD, [1; 17]), Attribute::standard(attr::CHAP_CHALLENGE, [2; 16])],
    );
    out.push(("access-request-chap.bin", radius::encode_request(&chap, SECRET, false).unwrap()));
    let mschap = request(
        Code::AccessRequest,
        87,
        vec![
            user_name("alice"),
            Attribute::vendor(attr::VENDOR_MICROSOFT, 11, [3; 16]),
            Attribute::vendor(attr::VENDOR_MICROSOFT, attr::MS_CHAP2_RESPONSE, [4; 50]),
        ],
    );
    out.push(("access-request-mschapv2.bin", radius::encode_request(&mschap, SECRET, true).unwrap()));
    let eap = request(
        Code::AccessRequest,
        88,
        vec![user_name("alice"), Attribute::standard(attr::EAP_MESSAGE, [2, 0, 0, 10, 1, b'a', b'l', b'i', b'c', b'e'])],
    );
    out.push(("access-request-eap.bin", radius::encode_request(&eap, SECRET, true).unwrap()));
    let mut big = request(Code::AccessRequest, 89, vec![user_name("alice")]);
    big.push(password(&big, b"Secret123"));
    for _ in 0..15 {
        big.push(Attribute::standard(attr::CLASS, [b'c'; 253]));
    }
    let mut wire = radius::encode_request(&big, SECRET, true).unwrap();
    let room = 4096 - wire.len() - 2;
    big.push(Attribute::standard(attr::CLASS, vec![b'c'; room]));
    wire = radius::encode_request(&big, SECRET, true).unwrap();
    assert_eq!(wire.len(), 4096);
    out.push(("access-request-4096.bin", wire));

    // src/radius/packet.rs's tests: two sub-attributes in one VSA, a VSA of another layout,
    // and padding beyond the Length field.
    let mut odd = vec![2, 7, 0, 0];
    odd.extend_from_slice(&[0xaa; 16]);
    odd.extend_from_slice(&[26, 12, 0, 0, 0, 66, 16, 3, b'a', 16, 3, b'b']);
    odd.extend_from_slice(&[26, 5, 1, 2, 3]);
    let len = (odd.len() as u16).to_be_bytes();
    odd[2..4].copy_from_slice(&len);
    out.push(("vsa-layouts.bin", odd));
    let mut padded = vec![1, 7, 0, 23];
    padded.extend_from_slice(&[0xaa; 16]);
    padded.extend_from_slice(&[1, 3, b'a', 0xff, 0xff]);
    out.push(("padding-after-length.bin", padded));
    out
}

fn hmac_md5(key: &[u8], data: &[u8]) -> [u8; 16] {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<md5::Md5> as Mac>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn sealed_states() -> Vec<(&'static str, Vec<u8>)> {
    let keys = fuzz_keys();
    let mut totp = ChallengeState::new(Stage::Totp, "alice", "alice", "netscaler-1", 1_000_000, 0);
    totp.nonce = [1; 16];
    let mut sms = ChallengeState::new(Stage::Sms, "åsa@example.test", "åsa.öberg", "asa", 1_900_000_000, 3);
    sms.nonce = [2; 16];
    sms.code_salt = [3; 16];
    sms.code_hash = [4; 32];
    let retry = sms.retry();
    let expired = ChallengeState::new(Stage::Sms, "bob", "bob", "", -1, 255);
    vec![
        ("sealed-totp.state", totp.seal(&keys).unwrap()),
        ("sealed-sms.state", sms.seal(&keys).unwrap()),
        ("sealed-sms-retry.state", retry.seal(&keys).unwrap()),
        ("sealed-expired.state", expired.seal(&keys).unwrap()),
    ]
}

fn fuzz_keys() -> KeyRing {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.key");
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
    file.write_all(FUZZ_KEY_FILE.as_bytes()).unwrap();
    KeyRing::load(&path).unwrap()
}

/// FreeRADIUS 3 syntax the shipped dictionaries do not use: each vendor layout, TLVs, RFC 6929
/// extended attributes and an extended vendor, the flags.
const FREERADIUS3_SYNTAX: &str = "\
VENDOR Acme-Wide 64001 format=4,0
VENDOR Acme-Two 64002 format=2,1
VENDOR Acme-Long 64003 format=2,2
VENDOR Acme-Cont 64004 format=1,1,c
BEGIN-VENDOR Acme-Wide
ATTRIBUTE Acme-Wide-Speed 0xBF38 integer
END-VENDOR Acme-Wide
BEGIN-VENDOR Acme-Two
ATTRIBUTE Acme-Two-Users 2 integer
END-VENDOR Acme-Two
BEGIN-VENDOR Acme-Long
ATTRIBUTE Acme-Long-Name 300 string
END-VENDOR Acme-Long
BEGIN-VENDOR Acme-Cont
ATTRIBUTE Acme-Cont-Caps 1 tlv
ATTRIBUTE Acme-Cont-Release 1.1 string
ATTRIBUTE Acme-Cont-Flow 2 tlv
BEGIN-TLV Acme-Cont-Flow
ATTRIBUTE Acme-Cont-Flow-Id 1 short
END-TLV Acme-Cont-Flow
ATTRIBUTE Acme-Cont-Servers 3 ipaddr array
END-VENDOR Acme-Cont
ATTRIBUTE Extended-Attribute-1 241 extended
ATTRIBUTE Extended-Attribute-5 245 long-extended
ATTRIBUTE Acme-Frag 241.1 integer
ATTRIBUTE Extended-Vendor-Specific-5 245.26 evs
BEGIN-VENDOR Acme-Two format=Extended-Vendor-Specific-5
ATTRIBUTE Acme-Two-Nonce 1 octets[32]
END-VENDOR Acme-Two
ATTRIBUTE Acme-Tunnel-Type 64 integer has_tag
ATTRIBUTE Acme-Tunnel-Password 69 string has_tag,encrypt=2
ATTRIBUTE Acme-Eap 79 octets concat
ATTRIBUTE Acme-Token 3001 string secret
ATTRIBUTE Acme-Virtual 3002 string virtual
VALUE Acme-Tunnel-Type VLAN 13
VALUE Acme-Two-Users Many 0x10
";

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let corpus = std::env::args().nth(1).expect("usage: seed_corpus <corpus dir>");
    let corpus = Path::new(&corpus);
    for (name, bytes) in packets() {
        write(&corpus.join("packet"), name, &bytes);
    }
    for (name, bytes) in sealed_states() {
        write(&corpus.join("state"), name, &bytes);
    }
    // The state target also builds States from its input: flags, tries, expiry, nonce, salt,
    // hash, a bit to flip, then "user\0client".
    let mut built = vec![1, 3];
    built.extend_from_slice(&1_900_000_000i64.to_be_bytes());
    built.extend_from_slice(&[5; 16 + 16 + 32]);
    built.extend_from_slice(&[0, 77]);
    built.extend_from_slice("alice@example.test\0netscaler-1".as_bytes());
    write(&corpus.join("state"), "built-from-fields.bin", &built);
    for (name, text) in [("minimal.toml", MINIMAL), ("harness.toml", HARNESS), ("ldap.toml", LDAP), ("portal-sms.toml", PORTAL_SMS)] {
        write(&corpus.join("config"), name, text.as_bytes());
    }
    write(&corpus.join("dictionary"), "freeradius3-syntax.dict", FREERADIUS3_SYNTAX.as_bytes());
}

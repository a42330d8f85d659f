//! PSKC against RFC 6030's own examples (Figures 2 and 3 in the clear, Section 6.1's
//! pre-shared-key container) and radmfa's hardware-token fixtures, plain and encrypted.

use std::collections::HashMap;

use super::*;

const FIGURE2: &str = include_str!("../../../tests/fixtures/pskc/rfc6030-figure2.pskc");
const FIGURE3: &str = include_str!("../../../tests/fixtures/pskc/rfc6030-figure3.pskc");
const SECTION6_1: &str = include_str!("../../../tests/fixtures/pskc/rfc6030-section6.1-psk.pskc");
const HARDWARE: &str = include_str!("../../../tests/fixtures/pskc/totp-hardware.pskc");
const HARDWARE_PSK: &str = include_str!("../../../tests/fixtures/pskc/totp-hardware-psk.pskc");

/// RFC 6030's pre-shared key (Section 6.1).
fn rfc_psk() -> Secret<Vec<u8>> {
    Secret::new(data_encoding::HEXLOWER.decode(b"12345678901234567890123456789012").unwrap())
}

fn read_with(text: &str, psk: Option<&Secret<Vec<u8>>>, serials: Option<&HashMap<String, String>>) -> Result<Vec<Entry>, String> {
    read(text, &Options { default_name: "Authenticator", psk, serials })
}

fn refusal(entry: &Entry) -> (String, Option<&str>, &str) {
    let refused = entry.read.as_ref().unwrap_err();
    (entry.place.to_string(), refused.user.as_deref(), refused.reason.as_str())
}

fn imported(entry: &Entry) -> &Imported {
    entry.read.as_ref().unwrap_or_else(|e| panic!("{}: {e:?}", entry.place))
}

#[test]
fn rfc6030_figures_2_and_3_are_read_and_their_hotp_keys_refused() {
    let figure2 = read_with(FIGURE2, None, None).unwrap();
    assert_eq!(figure2.len(), 1);
    assert_eq!(refusal(&figure2[0]), ("KeyPackage 1".into(), None, "an HOTP (counter-based) key: radmfa takes TOTP only"));
    let figure3 = read_with(FIGURE3, None, None).unwrap();
    assert_eq!(
        refusal(&figure3[0]),
        ("KeyPackage 1 (serial 987654321)".into(), Some("jsmith"), "an HOTP (counter-based) key: radmfa takes TOTP only"),
        "Key/UserId is a DN: its UID"
    );
    // The same container with a TOTP key: every field read as the figure gives it.
    let as_totp = read_with(&FIGURE3.replace("pskc:hotp", "pskc:totp"), None, None).unwrap();
    let token = imported(&as_totp[0]);
    assert_eq!((token.user.as_str(), token.name.as_str()), ("jsmith", "Manufacturer 987654321"));
    assert_eq!(token.secret.expose(), b"12345678901234567890");
    assert_eq!(token.params, TotpParams { digits: 8, ..TotpParams::default() });
}

#[test]
fn rfc6030_section_6_1_opens_with_its_pre_shared_key_after_the_mac_is_checked() {
    let psk = rfc_psk();
    let entries = read_with(SECTION6_1, Some(&psk), None).unwrap();
    assert_eq!(
        refusal(&entries[0]),
        ("KeyPackage 1 (serial 987654321)".into(), None, "an HOTP (counter-based) key: radmfa takes TOTP only")
    );
    let as_totp = SECTION6_1.replace("pskc:hotp", "pskc:totp").replace("</Data>", "</Data><UserId>alice</UserId>");
    let entries = read_with(&as_totp, Some(&psk), None).unwrap();
    let token = imported(&entries[0]);
    assert_eq!(token.secret.expose(), b"12345678901234567890", "RFC 6030's secret");
    assert_eq!((token.user.as_str(), token.params.digits), ("alice", 8));

    // Without the key, or with another: the whole file is refused, naming the key it needs.
    let without = read_with(&as_totp, None, None).unwrap_err();
    assert_eq!(without, "the file is encrypted with the pre-shared key \"Pre-shared-key\": give it with --psk-file");
    let other = Secret::new(data_encoding::HEXLOWER.decode(b"00000000000000000000000000000001").unwrap());
    let wrong = read_with(&as_totp, Some(&other), None).unwrap_err();
    assert!(wrong.starts_with("the MAC key does not open with the pre-shared key"), "{wrong}");
    let short = Secret::new(vec![1; 10]);
    assert!(read_with(&as_totp, Some(&short), None).unwrap_err().contains("the pre-shared key is 10 bytes; "));

    // A MAC or a ciphertext altered: that key is refused before anything is decrypted.
    let tampered_mac = as_totp.replace("Su+NvtQfmvfJzF6bmQiJqoLRExc=", "Tu+NvtQfmvfJzF6bmQiJqoLRExc=");
    let tampered_value = as_totp.replace("AAECAwQFBgcICQoLDA0OD+cI", "AAECAwQFBgcICQoLDA0OD+cJ");
    for tampered in [tampered_mac, tampered_value] {
        let entries = read_with(&tampered, Some(&psk), None).unwrap();
        assert_eq!(refusal(&entries[0]).2, "secret: its ValueMAC does not match: the file was altered, or made for another pre-shared key");
    }
    let no_mac = as_totp.replace("<ValueMAC>Su+NvtQfmvfJzF6bmQiJqoLRExc=\n                    </ValueMAC>", "");
    assert_eq!(refusal(&read_with(&no_mac, Some(&psk), None).unwrap()[0]).2, "secret: an encrypted secret without its ValueMAC");
    let start = as_totp.find("<MACMethod").unwrap();
    let end = as_totp.find("</MACMethod>").unwrap() + "</MACMethod>".len();
    let no_method = format!("{}{}", &as_totp[..start], &as_totp[end..]);
    assert_eq!(
        read_with(&no_method, Some(&psk), None).unwrap_err(),
        "the file is encrypted without a MACMethod: radmfa takes encrypted values only with their MAC"
    );
}

#[test]
fn hardware_tokens_plain_and_encrypted_give_the_same_seeds() {
    let serials = HashMap::from([("100003".to_owned(), "erin@example.test".to_owned())]);
    let psk = rfc_psk();
    for (text, psk) in [(HARDWARE, None), (HARDWARE_PSK, Some(&psk))] {
        let without_map = read_with(text, psk, None).unwrap();
        assert_eq!(
            refusal(&without_map[2]),
            ("KeyPackage 3 (serial 100003)".into(), None, "no UserId: give the users of such tokens by serial number with --map")
        );
        let entries = read_with(text, psk, Some(&serials)).unwrap();
        assert_eq!(entries.len(), 4);
        let alice = imported(&entries[0]);
        assert_eq!((alice.user.as_str(), alice.name.as_str(), alice.params), ("alice", "Example Tokens 100001", TotpParams::default()));
        assert_eq!(alice.secret.expose(), b"Example-seed-alice-1");
        let carol = imported(&entries[1]);
        assert_eq!(
            (carol.user.as_str(), carol.secret.expose().as_slice()),
            ("carol", b"Example-seed-carol-2".as_slice()),
            "DeviceInfo/UserId's UID"
        );
        let erin = imported(&entries[2]);
        assert_eq!(erin.user, "erin@example.test");
        assert_eq!(erin.params, TotpParams { algorithm: Algorithm::Sha256, digits: 8, period: 60 });
        assert_eq!(erin.secret.expose(), b"Example-seed-erin-3-sha256-32byt");
        assert_eq!(
            refusal(&entries[3]),
            ("KeyPackage 4 (serial 100004)".into(), Some("dave"), "an HOTP (counter-based) key: radmfa takes TOTP only")
        );
    }
    // The map wins over the file's UserId.
    let remapped = HashMap::from([("100001".to_owned(), "alice.andersson".to_owned())]);
    assert_eq!(imported(&read_with(HARDWARE, None, Some(&remapped)).unwrap()[0]).user, "alice.andersson");
}

#[test]
fn files_that_are_not_a_container_radmfa_opens_are_refused_whole() {
    let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>
        <KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc"><KeyPackage/></KeyContainer>"#;
    for (text, error) in [
        (bomb, "the file has a DTD (<!DOCTYPE>): refused, its entities could make the file expand without bound"),
        ("user,secret\nalice,GEZDGNBV\n", "not well-formed XML (line 1, column 1)"),
        (
            "<KeyContainer Version=\"1.0\" xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\"><KeyPackage>",
            "not well-formed XML: the root element is not closed (a file cut short?)",
        ),
        ("<KeyContainer Version=\"1.0\"/>", "not a PSKC file: its root is not an RFC 6030 KeyContainer"),
        ("<Keys xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\"/>", "not a PSKC file: its root is not an RFC 6030 KeyContainer"),
        ("<KeyContainer Version=\"2.0\" xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\"/>", "PSKC version \"2.0\": radmfa reads version 1.0"),
    ] {
        assert_eq!(read_with(text, None, None).unwrap_err(), error, "{text}");
    }
    let derived = HARDWARE_PSK.replace("<ds:KeyName>Pre-shared-key</ds:KeyName>", "<DerivedKey/>");
    assert!(read_with(&derived, Some(&rfc_psk()), None).unwrap_err().contains("derived from a password"));
}

#[test]
fn every_bad_key_package_is_refused_by_itself_and_never_with_its_secret() {
    let package = |key: &str| format!("<KeyPackage><DeviceInfo><SerialNo>7</SerialNo></DeviceInfo>{key}</KeyPackage>");
    let totp = |inner: &str| package(&format!("<Key Algorithm=\"urn:ietf:params:xml:ns:keyprov:pskc:totp\">{inner}</Key>"));
    let secret = "<Data><Secret><PlainValue>RXhhbXBsZS1zZWVkLWFsaWNlLTE=</PlainValue></Secret></Data>";
    let with = |parameters: &str, data: &str, user: &str| {
        totp(&format!(
            "<AlgorithmParameters>{parameters}</AlgorithmParameters><Data><Secret><PlainValue>RXhhbXBsZS1zZWVkLWFsaWNlLTE=</PlainValue></Secret>{data}</Data><UserId>{user}</UserId>"
        ))
    };
    let cases = [
        (package(""), None, "no Key".to_owned()),
        (
            package(&format!("<Key Algorithm=\"http://www.rsa.com/rsalabs/otps/schemas/2005/09/otps-wst#SecurID-AES\">{secret}</Key>")),
            None,
            "algorithm \"http://www.rsa.com/rsalabs/otps/schemas/2005/09/otps-wst#SecurID-AES\" is not TOTP".into(),
        ),
        (totp(secret), None, "no UserId: give the users of such tokens by serial number with --map".into()),
        (totp("<UserId>alice</UserId>"), Some("alice"), "no Data".into()),
        (totp("<Data/><UserId>alice</UserId>"), Some("alice"), "no Data/Secret".into()),
        (
            totp("<Data><Secret><PlainValue>not base64!</PlainValue></Secret></Data><UserId>alice</UserId>"),
            Some("alice"),
            "the secret's PlainValue is not base64".into(),
        ),
        (
            totp("<Data><Secret><EncryptedValue/></Secret></Data><UserId>alice</UserId>"),
            Some("alice"),
            "the secret is encrypted, but the file names no EncryptionKey".into(),
        ),
        (
            with("<ResponseFormat Length=\"6\" Encoding=\"ALPHANUMERIC\"/>", "", "alice"),
            Some("alice"),
            "ResponseFormat Encoding \"ALPHANUMERIC\": radmfa checks decimal codes".into(),
        ),
        (with("<ResponseFormat Length=\"ten\"/>", "", "alice"), Some("alice"), "ResponseFormat Length: not a number".into()),
        (with("<ResponseFormat Length=\"10\"/>", "", "alice"), Some("alice"), "digits must be 6, 7 or 8".into()),
        (with("<Suite>HMAC-MD5</Suite>", "", "alice"), Some("alice"), "Suite \"HMAC-MD5\": HMAC-SHA1, HMAC-SHA256 or HMAC-SHA512".into()),
        (
            with("", "<TimeInterval><PlainValue>soon</PlainValue></TimeInterval>", "alice"),
            Some("alice"),
            "TimeInterval: not a number".into(),
        ),
        (
            with("", "<TimeInterval><EncryptedValue/></TimeInterval>", "alice"),
            Some("alice"),
            "TimeInterval is not a PlainValue (an encrypted TimeInterval is not read)".into(),
        ),
        (
            with("", "<Time><PlainValue>1000</PlainValue></Time>", "alice"),
            Some("alice"),
            "Time (T0) is 1000: radmfa counts time steps from the Unix epoch (0)".into(),
        ),
        (
            with("", "", "CN=Alice Andersson,OU=Staff,DC=example,DC=test"),
            Some("CN=Alice Andersson,OU=Staff,DC=example,DC=test"),
            "the UserId is a distinguished name without UID=: give the user with --map".into(),
        ),
        (with("", "", "a\tb"), None, "the user name is too long or holds control characters".into()),
    ];
    let text = format!(
        "<KeyContainer Version=\"1.0\" xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\">{}{}</KeyContainer>",
        cases.iter().map(|(p, ..)| p.as_str()).collect::<String>(),
        with("", "", "alice@example.test")
    );
    let entries = read_with(&text, None, None).unwrap();
    assert_eq!(entries.len(), cases.len() + 1);
    for (index, (entry, (_, user, reason))) in entries.iter().zip(&cases).enumerate() {
        assert_eq!(refusal(entry), (format!("KeyPackage {} (serial 7)", index + 1), *user, reason.as_str()));
        assert!(!format!("{entry:?}").contains("Example-seed") && !format!("{entry:?}").contains("RXhhbXBsZS1z"));
    }
    let last = imported(entries.last().unwrap());
    assert_eq!((last.user.as_str(), last.name.as_str()), ("alice@example.test", "Token 7"), "a UPN is no DN");
}

#[test]
fn a_seed_in_the_clear_in_a_protected_file_is_refused() {
    let psk = rfc_psk();
    let as_totp = SECTION6_1.replace("pskc:hotp", "pskc:totp").replace("</Data>", "</Data><UserId>carol</UserId>");
    // An attacker's seed put in the clear where the vendor's encrypted one was.
    let start = as_totp.find("<EncryptedValue>").unwrap();
    let end = as_totp.find("</ValueMAC>").unwrap() + "</ValueMAC>".len();
    let planted = format!("{}<PlainValue>QXR0YWNrZXItY2hvc2VuLXNlZWQ=</PlainValue>{}", &as_totp[..start], &as_totp[end..]);
    let entries = read_with(&planted, Some(&psk), None).unwrap();
    assert_eq!(
        refusal(&entries[0]).2,
        "a seed in the clear in a file protected by a pre-shared key: no MAC covers it (was the file altered?)"
    );
}

#[test]
fn only_pskcs_own_algorithm_names_are_totp() {
    for algorithm in
        ["urn:ietf:params:xml:ns:keyprov:pskc:totp", "http://www.ietf.org/keyprov/pskc#totp", "URN:IETF:PARAMS:XML:NS:KEYPROV:PSKC:TOTP"]
    {
        let entries = read_with(&FIGURE3.replace("urn:ietf:params:xml:ns:keyprov:pskc:hotp", algorithm), None, None).unwrap();
        assert!(entries[0].read.is_ok(), "{algorithm}");
    }
    for algorithm in ["urn:example:evil#totp", "https://attacker.example/totp", "totp"] {
        let entries = read_with(&FIGURE3.replace("urn:ietf:params:xml:ns:keyprov:pskc:hotp", algorithm), None, None).unwrap();
        assert!(refusal(&entries[0]).2.ends_with("is not TOTP"), "{algorithm}");
    }
}

#[test]
fn an_element_crowded_with_attributes_is_refused_before_parsing() {
    let attributes: String = (0..5000).map(|i| format!(" a{i}=\"x\"")).collect();
    let text =
        format!("<?xml version=\"1.0\"?>\n<KeyContainer Version=\"1.0\" xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\"{attributes}/>");
    let err = read_with(&text, None, None).unwrap_err();
    assert_eq!(err, "line 2: an element with more than 64 attributes: not a PSKC file radmfa reads");
    // However they are spaced.
    let spaced = text.replace("=\"x\"", "= \"x\"").replace(" a", "\n a");
    assert!(read_with(&spaced, None, None).unwrap_err().contains("more than 64 attributes"));
    assert!(read_with(FIGURE3, None, None).is_ok(), "real files have a handful");
}

#[test]
fn a_pre_shared_key_for_a_file_without_protection_is_refused() {
    let psk = rfc_psk();
    let err = read_with(HARDWARE, Some(&psk), None).unwrap_err();
    assert!(err.starts_with("--psk-file was given, but the file is not protected"), "{err}");
    assert!(read_with(HARDWARE, None, None).is_ok());
}

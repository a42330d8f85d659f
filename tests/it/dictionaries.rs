//! FreeRADIUS's own dictionary tree (Debian's freeradius-common) loaded unchanged on top of the
//! built-in dictionaries: every vendor and attribute of it known, vendors of every layout sent
//! and read back byte for byte, `check-config` summarising what a reply cannot carry, and
//! radclient, which reads the same tree, decoding the Accept radmfa builds from it.

use std::path::{Path, PathBuf};
use std::process::Command;

use radmfa::radius::{Attribute, Code, Dictionary, Packet};

use crate::harness::{ALICE_PASSWORD, Options, SECRET, TestServer, admin, binary, radclient, write_config, write_users};

const TREE: &str = "/usr/share/freeradius/dictionary";

/// The tree's root, if installed. On CI (CI=true) its absence fails the test; elsewhere the
/// test is skipped with a note.
fn tree() -> Option<&'static Path> {
    let root = Path::new(TREE);
    if root.is_file() {
        return Some(root);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{TREE} is missing: apt-get install freeradius-common (CI=true, so this fails rather than skips)");
    }
    eprintln!("SKIPPED: {TREE} not installed (apt-get install freeradius-common)");
    None
}

/// The words of every line starting with `keyword` in the files the tree's root includes.
fn lines_of(root: &Path, keyword: &str) -> Vec<Vec<String>> {
    let folder = root.parent().unwrap();
    let words = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .map(|l| l.split('#').next().unwrap().split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .filter(|w| !w.is_empty())
            .collect()
    };
    let files: Vec<PathBuf> =
        words(&std::fs::read_to_string(root).unwrap()).into_iter().filter(|w| w[0] == "$INCLUDE").map(|w| folder.join(&w[1])).collect();
    assert!(files.len() > 200, "the tree includes {} files", files.len());
    files.iter().flat_map(|f| words(&std::fs::read_to_string(f).unwrap())).filter(|w| w[0] == keyword).collect()
}

fn loaded(root: &Path) -> Dictionary {
    let mut d = Dictionary::builtin().unwrap();
    d.load_file(root).unwrap_or_else(|e| panic!("the tree must load unchanged: {e}"));
    d
}

#[test]
fn freeradius_s_tree_loads_unchanged_and_every_vendor_and_attribute_of_it_is_known() {
    let Some(root) = tree() else { return };
    let d = loaded(root);
    let vendors = lines_of(root, "VENDOR");
    assert!(vendors.len() > 150, "{} vendors", vendors.len());
    for v in &vendors {
        assert_eq!(d.vendor_id(&v[1]), Some(v[2].parse().unwrap()), "vendor {}", v[1]);
        let format = v.get(3).map_or("1,1", |f| f.trim_start_matches("format="));
        assert_eq!(d.vendor_format(v[2].parse().unwrap()).to_string(), format, "vendor {}", v[1]);
    }
    let attributes = lines_of(root, "ATTRIBUTE");
    assert!(attributes.len() > 7000, "{} attributes", attributes.len());
    for a in &attributes {
        let def = d.attribute(&a[1]).unwrap_or_else(|| panic!("{} is not known", a[1]));
        let number = |part: &str| match part.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16).unwrap(),
            None => part.parse().unwrap(),
        };
        assert_eq!(def.oid.path, a[2].split('.').map(number).collect::<Vec<_>>(), "{a:?}");
    }
    let named_values = lines_of(root, "VALUE");
    assert!(named_values.len() > 7000, "{} values", named_values.len());
    for v in named_values.iter().filter(|v| v[1] == "Tunnel-Type" || v[1] == "Acct-Terminate-Cause") {
        let def = d.attribute(&v[1]).unwrap();
        assert_eq!(d.parse_value(def, &v[2]).unwrap(), v[3].parse::<u32>().unwrap().to_be_bytes(), "{v:?}");
    }
    // What a reply cannot carry is kept, named and counted.
    let summary = d.unsupported_summary().unwrap();
    for part in ["FreeRADIUS-internal", "extended (241-246", "TLV members", "containers", "encrypted on the wire"] {
        assert!(summary.contains(part), "{summary}");
    }
    let frag = d.attribute("Frag-Status").unwrap();
    assert_eq!((frag.oid.to_string().as_str(), frag.unsupported.is_some()), ("241.1", true));
    assert_eq!(d.attribute("WiMAX-Release").unwrap().oid.to_string(), "26.24757.1.1");
    assert_eq!(d.attribute("FreeRADIUS-802.1X-Anonce").unwrap().oid.to_string(), "245.26.11344.1");
    // FreeRADIUS's later names for a number are the ones the log shows.
    assert_eq!(d.describe(&Attribute::standard(126, *b"example.test")), "Operator-Name = \"example.test\"");
    assert_eq!(d.describe(&Attribute::standard(40, [0, 0, 0, 3])), "Acct-Status-Type = Interim-Update");
}

/// `name = value` sent as a reply attribute would be: its octets in a packet, and what the
/// dictionary reads back from them.
fn sent(d: &Dictionary, name: &str, value: &str) -> (Vec<u8>, String) {
    let def = d.attribute(name).unwrap_or_else(|| panic!("{name} missing"));
    let attribute = d.sendable(def).unwrap().with_value(d.parse_value(def, value).unwrap());
    let mut packet = Packet::new(Code::AccessAccept, 1, [0; 16]);
    packet.push(attribute.clone());
    let wire = packet.encode().unwrap();
    let back = d.decode(&wire).unwrap();
    assert_eq!(back.attributes, vec![attribute], "{name}");
    (wire[20..].to_vec(), d.describe(&back.attributes[0]))
}

#[test]
fn vendor_attributes_of_every_layout_round_trip_byte_for_byte() {
    let Some(root) = tree() else { return };
    let d = loaded(root);
    let cases: [(&str, &str, &[u8], &str); 10] = [
        // format=1,1: RFC 2865's layout. Juniper 2636 = 0x0a4c, Aruba 14823 = 0x39e7.
        (
            "Juniper-Local-User-Name",
            "netadmin",
            &[26, 16, 0, 0, 0x0a, 0x4c, 1, 10, b'n', b'e', b't', b'a', b'd', b'm', b'i', b'n'],
            "Juniper-Local-User-Name = \"netadmin\"",
        ),
        ("Juniper-CTP-Group", "Admin", &[26, 12, 0, 0, 0x0a, 0x4c, 21, 6, 0, 0, 0, 2], "Juniper-CTP-Group = Admin"),
        ("Aruba-User-Role", "staff", &[26, 13, 0, 0, 0x39, 0xe7, 1, 7, b's', b't', b'a', b'f', b'f'], "Aruba-User-Role = \"staff\""),
        // format=4,0: USR 429 = 0x01ad, a four-octet type 0x9023 and no length.
        ("USR-Connect-Speed", "9600-BPS", &[26, 14, 0, 0, 0x01, 0xad, 0, 0, 0x90, 0x23, 0, 0, 0, 7], "USR-Connect-Speed = 9600-BPS"),
        // format=2,1: Lucent 4846 = 0x12ee, type 0x0002, length 7 (3 of header, 4 of value).
        ("Lucent-Max-Shared-Users", "3", &[26, 13, 0, 0, 0x12, 0xee, 0, 2, 7, 0, 0, 0, 3], "Lucent-Max-Shared-Users = 3"),
        // format=2,2: Starent 8164 = 0x1fe4, type 20, a two-octet length 8.
        (
            "SN-Subscriber-Permission",
            "Mobile-IP",
            &[26, 14, 0, 0, 0x1f, 0xe4, 0, 20, 0, 8, 0, 0, 0, 2],
            "SN-Subscriber-Permission = Mobile-IP",
        ),
        // format=1,1,c: WiMAX 24757 = 0x60b5, type 21, length 7, continuation 0.
        ("WiMAX-Session-Continue", "1", &[26, 13, 0, 0, 0x60, 0xb5, 21, 7, 0, 0, 0, 0, 1], "WiMAX-Session-Continue = 1"),
        // RFC 2868/3580, in the tree and not built in: a VLAN by tunnel attributes, untagged.
        ("Tunnel-Type", "VLAN", &[64, 6, 0, 0, 0, 13], "Tunnel-Type = VLAN"),
        ("Tunnel-Medium-Type", "IEEE-802", &[65, 6, 0, 0, 0, 6], "Tunnel-Medium-Type = IEEE-802"),
        ("Tunnel-Private-Group-Id", "10", &[81, 4, b'1', b'0'], "Tunnel-Private-Group-Id = \"10\""),
    ];
    for (name, value, octets, shown) in cases {
        let (wire, described) = sent(&d, name, value);
        assert_eq!(wire, octets, "{name} = {value}");
        assert_eq!(described, shown);
    }
    // Tagged on the way in: the tag is shown.
    assert_eq!(d.describe(&Attribute::standard(64, [1, 0, 0, 13])), "Tunnel-Type:1 = VLAN");
}

/// A config in `dir` loading the tree, the loopback client replying with `reply_attributes`.
fn config_with_tree(dir: &Path, reply_attributes: &str) -> PathBuf {
    write_users(dir);
    let options = Options { server_extra: "dictionary = \"/usr/share/freeradius/dictionary\"", ..Options::default() };
    let config = write_config(dir, &options);
    let text = std::fs::read_to_string(&config).unwrap();
    let line = text.lines().find(|l| l.starts_with("reply_attributes = ")).unwrap();
    std::fs::write(&config, text.replacen(line, &format!("reply_attributes = [{reply_attributes}]"), 1)).unwrap();
    config
}

const REPLY: &str = r#"{ name = "Tunnel-Type", value = "VLAN" }, { name = "Tunnel-Medium-Type", value = "IEEE-802" },
  { name = "Tunnel-Private-Group-Id", value = "10" }, { name = "Lucent-Max-Shared-Users", value = "3" },
  { name = "USR-Connect-Speed", value = "9600-BPS" }, { name = "SN-Subscriber-Permission", value = "Mobile-IP" },
  { name = "Aruba-User-Role", value = "{user}" }"#;

#[test]
fn check_config_on_the_tree_summarises_once_and_refuses_a_reply_attribute_it_cannot_send() {
    let Some(_) = tree() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_tree(dir.path(), REPLY);
    let check = || Command::new(binary()).args(["check-config", "--config"]).arg(&config).output().unwrap();
    let out = check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.matches("radmfa cannot send in a reply").count(), 1, "{stdout}");
    let note = stdout.lines().find(|l| l.contains("cannot send in a reply")).unwrap();
    assert!(note.starts_with("note: the dictionaries define ") && note.contains("TLV members"), "{note}");

    for (name, why) in [
        ("WiMAX-Release", "WiMAX-Release (26.24757.1.1) cannot be sent in a reply: it is a member of a TLV"),
        ("Frag-Status", "Frag-Status (241.1) cannot be sent in a reply: it is an extended attribute (RFC 6929, 241-246)"),
        ("Tunnel-Password", "Tunnel-Password (69) cannot be sent in a reply: its value is encrypted on the wire"),
        ("Virtual-Server", "Virtual-Server (1099) cannot be sent in a reply: it is FreeRADIUS-internal"),
    ] {
        config_with_tree(dir.path(), &format!("{{ name = \"{name}\", value = \"x\" }}"));
        let out = check();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}");
        assert!(stderr.contains("reply_attributes") && stderr.contains(why), "{name}: {stderr}");
    }
}

#[test]
fn radclient_reads_the_accept_radmfa_builds_from_the_tree() {
    let Some(_) = tree() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_tree(dir.path(), REPLY);
    let keygen = admin(&config, &["keygen"]);
    assert!(keygen.status.success(), "{}", String::from_utf8_lossy(&keygen.stderr));
    let mut server = TestServer::launch(dir, config, None, &[]);
    server.wait_listening(std::time::Duration::from_secs(20));
    let input = format!("User-Name = alice\nUser-Password = \"{ALICE_PASSWORD}\"\nMessage-Authenticator = 0x00\n");
    let Some(out) = radclient(server.auth, "auth", SECRET, &input) else { return };
    assert!(out.success, "radclient failed: {}\n{}", out.stdout, out.stderr);
    let received = out.stdout.split("Received Access-Accept").nth(1).unwrap_or_else(|| panic!("no Access-Accept: {}", out.stdout));
    // FreeRADIUS's decoder, with FreeRADIUS's dictionaries, reads each vendor's layout.
    for expected in [
        "Tunnel-Medium-Type",
        "= IEEE-802",
        "Tunnel-Private-Group-Id",
        "= \"10\"",
        "= VLAN",
        "Lucent-Max-Shared-Users = 3",
        "USR-Connect-Speed = 9600-BPS",
        "SN-Subscriber-Permission = Mobile-IP",
        "Aruba-User-Role = \"alice\"",
    ] {
        assert!(received.contains(expected), "{expected}: {received}");
    }
    assert!(!received.contains("Attr-26"), "no Vendor-Specific FreeRADIUS could not read: {received}");
}

use super::*;

fn builtin_with(text: &str) -> Dictionary {
    let mut d = Dictionary::builtin().unwrap();
    d.load_str("inline", text).unwrap_or_else(|e| panic!("{e}"));
    d
}

/// The error `text` gives, loaded on top of the built-in dictionaries.
fn error_of(text: &str) -> String {
    Dictionary::builtin().unwrap().load_str("inline", text).unwrap_err().to_string()
}

fn def<'a>(d: &'a Dictionary, name: &str) -> &'a AttributeDef {
    d.attribute(name).unwrap_or_else(|| panic!("{name} missing"))
}

/// `name = value` through the reply path: parsed, made an attribute, encoded in a packet.
fn sent(d: &Dictionary, name: &str, value: &str) -> Attribute {
    let def = def(d, name);
    d.sendable(def).unwrap().with_value(d.parse_value(def, value).unwrap())
}

fn wire(attribute: &Attribute) -> Vec<u8> {
    let mut packet = Packet::new(crate::radius::Code::AccessAccept, 1, [0; 16]);
    packet.push(attribute.clone());
    packet.encode().unwrap()[20..].to_vec()
}

const VENDORS: &str = "\
VENDOR USR 429 format=4,0
VENDOR Lucent 4846 format=2,1
VENDOR Starent 8164 format=2,2
VENDOR WiMAX 24757 format=1,1,c
BEGIN-VENDOR USR
ATTRIBUTE USR-Channel 0xBF38 integer
END-VENDOR USR
BEGIN-VENDOR Lucent
ATTRIBUTE Lucent-UU-Info 7 string
ATTRIBUTE Lucent-Wide 0x1234 string
END-VENDOR Lucent
BEGIN-VENDOR Starent
ATTRIBUTE SN-VPN-Name 2 string
END-VENDOR Starent
BEGIN-VENDOR WiMAX
ATTRIBUTE WiMAX-Capability 1 tlv
ATTRIBUTE WiMAX-Release 1.1 string
ATTRIBUTE WiMAX-Session-Continue 21 integer
END-VENDOR WiMAX
VALUE WiMAX-Session-Continue True 1
";

#[test]
fn builtin_dictionary_knows_the_vendors_our_users_run() {
    let d = Dictionary::builtin().unwrap();
    let check = |name: &str, vendor: u32, typ: u32| {
        let def = def(&d, name);
        assert_eq!((def.vendor(), def.oid.path.as_slice()), (vendor, &[typ][..]), "{name}");
    };
    check("User-Name", 0, 1);
    check("Reply-Message", 0, 18);
    check("Message-Authenticator", 0, 80);
    check("Acct-Status-Type", 0, 40);
    check("NAS-IPv6-Address", 0, 95);
    check("Citrix-User-Groups", 66, 16);
    check("Citrix-Group-Names", 66, 14);
    check("MS-CHAP2-Response", 311, 25);
    check("Cisco-AVPair", 9, 1);
    check("ASA-Group-Policy", 3076, 25);
    check("Fortinet-Group-Name", 12356, 1);
    check("PaloAlto-User-Group", 25461, 5);
    check("user-name", 0, 1); // names are case-insensitive, as in FreeRADIUS
}

#[test]
fn values_parse_by_type_and_by_name() {
    let d = Dictionary::builtin().unwrap();
    let def = |n: &str| d.attribute(n).unwrap().clone();
    assert_eq!(d.parse_value(&def("Service-Type"), "Framed-User").unwrap(), vec![0, 0, 0, 2]);
    assert_eq!(d.parse_value(&def("Session-Timeout"), "3600").unwrap(), 3600u32.to_be_bytes());
    assert_eq!(d.parse_value(&def("Framed-IP-Address"), "10.1.2.3").unwrap(), vec![10, 1, 2, 3]);
    assert_eq!(d.parse_value(&def("Class"), "0x0102").unwrap(), vec![1, 2]);
    assert!(d.parse_value(&def("Session-Timeout"), "soon").is_err());
    assert!(d.parse_value(&def("Framed-IP-Address"), "10.1.2").is_err());
    assert!(d.parse_value(&def("Class"), "0x123").is_err());
}

#[test]
fn describe_names_attributes_and_hides_credentials() {
    let d = Dictionary::builtin().unwrap();
    assert_eq!(d.describe(&Attribute::standard(1, *b"alice")), "User-Name = \"alice\"");
    assert_eq!(d.describe(&Attribute::standard(2, *b"secret")), "User-Password = [hidden]");
    assert_eq!(d.describe(&Attribute::standard(6, [0, 0, 0, 2])), "Service-Type = Framed-User");
    assert_eq!(d.describe(&Attribute::vendor(66, 16, *b"VPN")), "Citrix-User-Groups = \"VPN\"");
    assert_eq!(d.describe(&Attribute::vendor(99999, 3, [1])), "Vendor-99999-Attr-3 = 0x01");
    assert_eq!(d.describe(&Attribute::vendor(311, 16, [1, 2])), "MS-MPPE-Send-Key = [hidden]");
    assert_eq!(d.describe(&Attribute::standard(26, [0, 0, 0, 66, 16])), "Vendor-Specific = 0x0000004210", "not a VSA layout");
}

#[test]
fn admin_file_adds_a_vendor_with_includes_and_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("vendors")).unwrap();
    std::fs::write(dir.path().join("dictionary.local"), "$INCLUDE vendors/dictionary.acme\n$INCLUDE- dictionary.absent\n").unwrap();
    std::fs::write(
        dir.path().join("vendors/dictionary.acme"),
        "VENDOR Acme 4242\nBEGIN-VENDOR Acme\nATTRIBUTE Acme-Role 1 integer\nEND-VENDOR Acme\nVALUE Acme-Role Admin 7\n",
    )
    .unwrap();
    let mut d = Dictionary::builtin().unwrap();
    d.load_file(&dir.path().join("dictionary.local")).unwrap();
    let role = def(&d, "Acme-Role").clone();
    assert_eq!(role.oid, Oid::top(4242, 1));
    assert_eq!(d.parse_value(&role, "Admin").unwrap(), vec![0, 0, 0, 7]);

    std::fs::write(dir.path().join("bad"), "# comment\nATTRIBUTE Broken 1.2 string\n").unwrap();
    let err = d.load_file(&dir.path().join("bad")).unwrap_err().to_string();
    assert!(err.ends_with("bad:2: Broken (1.2): its parent User-Name is String, which holds no attributes"), "{err}");

    std::fs::write(dir.path().join("clash"), "ATTRIBUTE User-Name 9 string\n").unwrap();
    let err = d.load_file(&dir.path().join("clash")).unwrap_err().to_string();
    assert!(err.contains("clash:1: User-Name is already defined as 1 at (built in) dictionary.rfc2865:"), "{err}");
    assert!(err.ends_with(", not 9"), "{err}");

    std::fs::write(dir.path().join("missing"), "\n$INCLUDE dictionary.absent\n").unwrap();
    let err = d.load_file(&dir.path().join("missing")).unwrap_err().to_string();
    assert!(
        err.contains("missing:2: $INCLUDE dictionary.absent (")
            && err.ends_with("/dictionary.absent): cannot read: No such file or directory (os error 2)"),
        "{err}"
    );
}

#[test]
fn include_cycles_and_runaway_depth_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a"), "$INCLUDE b\n").unwrap();
    std::fs::write(dir.path().join("b"), "ATTRIBUTE Acme-B 3000 string\n$INCLUDE ./a\n").unwrap();
    let err = Dictionary::builtin().unwrap().load_file(&dir.path().join("a")).unwrap_err().to_string();
    assert!(err.contains("b:2: $INCLUDE ./a is a cycle: ") && err.contains("/a → ") && err.ends_with("/a"), "{err}");

    for n in 0..=MAX_DEPTH_FILES {
        std::fs::write(dir.path().join(format!("chain{n}")), format!("$INCLUDE chain{}\n", n + 1)).unwrap();
    }
    std::fs::write(dir.path().join(format!("chain{}", MAX_DEPTH_FILES + 1)), "").unwrap();
    let err = Dictionary::builtin().unwrap().load_file(&dir.path().join("chain0")).unwrap_err().to_string();
    assert!(err.contains("chain16:1: $INCLUDE nested deeper than 16 files"), "{err}");
    let mut d = Dictionary::builtin().unwrap();
    d.load_file(&dir.path().join("chain1")).unwrap();
}

const MAX_DEPTH_FILES: usize = load::MAX_INCLUDE_DEPTH;

#[test]
fn text_in_memory_loads_but_includes_nothing() {
    let mut d = Dictionary::builtin().unwrap();
    d.load_str("inline", "VENDOR Acme 4242\nATTRIBUTE Acme-Role 1 integer Acme\nVALUE Acme-Role Admin 7\n").unwrap();
    let role = def(&d, "Acme-Role").clone();
    assert_eq!(role.oid, Oid::top(4242, 1));
    assert_eq!(d.parse_value(&role, "Admin").unwrap(), vec![0, 0, 0, 7]);
    for keyword in ["$INCLUDE", "$INCLUDE-"] {
        let err = d.load_str("inline", &format!("# a comment\n{keyword} /etc/passwd\n")).unwrap_err().to_string();
        assert_eq!(err, format!("inline:2: {keyword} is not allowed in dictionary text given in memory"));
    }
}

#[test]
fn vendors_of_every_layout_encode_and_decode_in_it() {
    let d = builtin_with(VENDORS);
    assert_eq!(d.vendor_format(429).to_string(), "4,0");
    // USR: four octets of type, no length.
    let usr = sent(&d, "USR-Channel", "7");
    assert_eq!(wire(&usr), [26, 14, 0, 0, 0x01, 0xad, 0, 0, 0xbf, 0x38, 0, 0, 0, 7]);
    // Lucent: two octets of type, one of length; a type above 255.
    let wide = sent(&d, "Lucent-Wide", "ab");
    assert_eq!(wire(&wide), [26, 11, 0, 0, 0x12, 0xee, 0x12, 0x34, 5, b'a', b'b']);
    // Starent: two and two.
    let starent = sent(&d, "SN-VPN-Name", "x");
    assert_eq!(wire(&starent), [26, 11, 0, 0, 0x1f, 0xe4, 0, 2, 0, 5, b'x']);
    // WiMAX: the continuation octet, 0.
    let wimax = sent(&d, "WiMAX-Session-Continue", "True");
    assert_eq!(wire(&wimax), [26, 13, 0, 0, 0x60, 0xb5, 21, 7, 0, 0, 0, 0, 1]);
    for (attribute, shown) in [
        (&usr, "USR-Channel = 7"),
        (&wide, "Lucent-Wide = \"ab\""),
        (&starent, "SN-VPN-Name = \"x\""),
        (&wimax, "WiMAX-Session-Continue = True"),
    ] {
        let mut packet = Packet::new(crate::radius::Code::AccessRequest, 1, [0; 16]);
        packet.push(attribute.clone());
        let decoded = d.decode(&packet.encode().unwrap()).unwrap();
        assert_eq!(decoded.attributes, vec![attribute.clone()], "{shown}");
        assert_eq!(d.describe(&decoded.attributes[0]), shown);
        // Kept whole (decoded without the layouts, as a kept answer is): described the same.
        let whole = Packet::decode_with(&packet.encode().unwrap(), &|_| None).unwrap();
        assert_eq!(d.describe(&whole.attributes[0]), shown);
    }
    // A Lucent sub-attribute read in RFC 2865's layout (type 0, length 7): its octets are read
    // again in Lucent's.
    let misread = Packet::decode(&{
        let mut p = Packet::new(crate::radius::Code::AccessRequest, 1, [0; 16]);
        p.push(sent(&d, "Lucent-UU-Info", "abcd"));
        p.encode().unwrap()
    })
    .unwrap();
    assert!(matches!(misread.attributes[0], Attribute::Vendor { vendor: 4846, typ: 0, .. }));
    assert_eq!(d.describe(&misread.attributes[0]), "Lucent-UU-Info = \"abcd\"");
    // The longest value each layout carries.
    assert_eq!(d.sendable(def(&d, "USR-Channel")).unwrap().max_value_len(), 245);
    assert_eq!(d.sendable(def(&d, "Lucent-Wide")).unwrap().max_value_len(), 246);
    assert_eq!(d.sendable(def(&d, "User-Name")).unwrap().max_value_len(), 253);
    assert_eq!(d.sendable(def(&d, "Citrix-User-Groups")).unwrap().max_value_len(), 247);
}

#[test]
fn vendor_lines_are_checked() {
    for (text, expected) in [
        ("VENDOR X 77 format=3,1", "inline:1: bad vendor format \"format=3,1\": FreeRADIUS takes format=T,L"),
        ("VENDOR X 77 format=2,1,c", "bad vendor format \"format=2,1,c\""),
        ("VENDOR X 77 format=1", "bad vendor format \"format=1\""),
        ("VENDOR X 77 flavour=1,1", "bad vendor format \"flavour=1,1\""),
        ("VENDOR X", "inline:1: VENDOR takes a name, a number and optionally format=T,L[,c]"),
        ("VENDOR X 0", "vendor X: 0 is not a vendor number"),
        ("VENDOR X 4294967296", "bad vendor number \"4294967296\""),
        ("VENDOR Cisco 10", "vendor Cisco is already defined as 9"),
        ("VENDOR Cisco2 9 format=2,1", "vendor Cisco2 (9) is already defined with format=1,1, not format=2,1"),
        (
            "VENDOR L 4846 format=2,1\nBEGIN-VENDOR L\nATTRIBUTE L-Big 70000 string\nEND-VENDOR L",
            "inline:3: L-Big: number 70000 does not fit",
        ),
        ("VENDOR U 429 format=4,0\nBEGIN-VENDOR U\nATTRIBUTE U-Zero 0 string\nEND-VENDOR U", "U-Zero: number 0 does not fit"),
        (
            "BEGIN-VENDOR Cisco\nATTRIBUTE Cisco-Big 256 string\nEND-VENDOR Cisco",
            "Cisco-Big: number 256 does not fit vendor 9's format=1,1",
        ),
        ("VENDOR L 4846 format=2,1\nBEGIN-VENDOR L\nATTRIBUTE L-T 1 tlv\nEND-VENDOR L", "L-T: a tlv needs its vendor's format to be 1,1"),
        ("BEGIN-VENDOR Nobody", "inline:1: unknown vendor Nobody"),
        (
            "BEGIN-VENDOR Cisco\nBEGIN-VENDOR Microsoft",
            "inline:2: BEGIN-VENDOR Microsoft inside BEGIN-VENDOR Cisco: END-VENDOR Cisco first",
        ),
        ("BEGIN-VENDOR Cisco\nEND-VENDOR Microsoft", "inline:2: END-VENDOR Microsoft does not close BEGIN-VENDOR Cisco"),
        ("END-VENDOR Cisco", "END-VENDOR without BEGIN-VENDOR"),
        ("BEGIN-VENDOR Cisco\nATTRIBUTE Cisco-X 200 string", "inline:2: BEGIN-VENDOR Cisco without END-VENDOR"),
        ("BEGIN-VENDOR Cisco format=User-Name\nEND-VENDOR Cisco", "BEGIN-VENDOR Cisco: User-Name is not of type evs"),
        ("BEGIN-VENDOR Cisco colour=blue\nEND-VENDOR Cisco", "unknown BEGIN-VENDOR option \"colour=blue\""),
    ] {
        let err = error_of(text);
        assert!(err.contains(expected), "{text:?}: {err}");
    }
    // An alias of a vendor (FreeRADIUS's tree has Altiga and Cisco-ASA for 3076) closes its block.
    let d = builtin_with("VENDOR Altiga 3076\nBEGIN-VENDOR Altiga\nATTRIBUTE Altiga-X 250 string\nEND-VENDOR Cisco-ASA\n");
    assert_eq!(def(&d, "Altiga-X").oid, Oid::top(3076, 250));
    assert_eq!(d.vendor_name(3076), Some("Altiga"), "the latest name shows");
}

#[test]
fn tlvs_nest_by_dotted_numbers_or_blocks_and_are_kept_but_not_sent() {
    let d = builtin_with(&format!(
        "{VENDORS}\
BEGIN-VENDOR WiMAX
ATTRIBUTE WiMAX-QoS 2 tlv
BEGIN-TLV WiMAX-QoS
ATTRIBUTE WiMAX-QoS-Id 1 byte
ATTRIBUTE WiMAX-Inner 2 tlv
BEGIN-TLV WiMAX-Inner
ATTRIBUTE WiMAX-Deep 3 ipaddr
END-TLV WiMAX-Inner
END-TLV WiMAX-QoS
ATTRIBUTE WiMAX-After 4 integer
END-VENDOR WiMAX
"
    ));
    assert_eq!(def(&d, "WiMAX-Release").oid.to_string(), "26.24757.1.1");
    assert_eq!(def(&d, "WiMAX-QoS-Id").oid.to_string(), "26.24757.2.1");
    assert_eq!(def(&d, "WiMAX-Deep").oid.to_string(), "26.24757.2.2.3");
    assert_eq!(def(&d, "WiMAX-After").oid, Oid::top(24757, 4), "numbers count from the vendor again after END-TLV");
    assert_eq!(def(&d, "WiMAX-Release").unsupported, Some(Unsupported::TlvMember));
    assert_eq!(def(&d, "WiMAX-Capability").unsupported, Some(Unsupported::Container));
    assert_eq!(d.sendable(def(&d, "WiMAX-Deep")), Err(Unsupported::TlvMember));
    assert!(d.parse_value(def(&d, "WiMAX-Capability"), "0x01").unwrap_err().to_string().contains("holds other attributes"));
    // A received TLV is shown by its name, as hex.
    let tlv = Attribute::vendor_in(d.vendor_format(24757), 24757, 1, [1, 3, b'x']);
    assert_eq!(d.describe(&tlv), "WiMAX-Capability = 0x010378");
    for (text, expected) in [
        ("BEGIN-TLV User-Name", "inline:1: BEGIN-TLV User-Name: it is String, not tlv"),
        ("BEGIN-TLV Nothing-Such", "BEGIN-TLV for unknown attribute Nothing-Such"),
        ("END-TLV WiMAX-Capability", "END-TLV WiMAX-Capability without BEGIN-TLV"),
        ("BEGIN-TLV WiMAX-Capability\nEND-TLV WiMAX-QoS", "inline:2: END-TLV WiMAX-QoS does not close BEGIN-TLV WiMAX-Capability"),
        ("BEGIN-TLV WiMAX-Capability\n", "inline:1: BEGIN-TLV WiMAX-Capability without END-TLV"),
        ("BEGIN-VENDOR WiMAX\nBEGIN-TLV WiMAX-Capability\nEND-VENDOR WiMAX", "END-VENDOR WiMAX inside BEGIN-TLV WiMAX-Capability"),
        (
            "BEGIN-VENDOR WiMAX\nATTRIBUTE WiMAX-Orphan 9.1 string\nEND-VENDOR WiMAX",
            "WiMAX-Orphan (26.24757.9.1): its parent 26.24757.9 is not defined",
        ),
        ("BEGIN-VENDOR WiMAX\nATTRIBUTE WiMAX-Big 1.256 string\nEND-VENDOR WiMAX", "numbers inside another attribute are 1-255"),
        ("ATTRIBUTE Big-Parent 300.1 string", "Big-Parent (300.1): only attributes 1-255 hold others"),
        ("ATTRIBUTE Bad-Number 1..2 string", "bad attribute number \"1..2\" for Bad-Number"),
    ] {
        let mut d = d.clone();
        let err = d.load_str("inline", text).unwrap_err().to_string();
        assert!(err.contains(expected), "{text:?}: {err}");
    }
}

#[test]
fn extended_attributes_and_extended_vendors_are_kept_but_not_sent() {
    let d = builtin_with(
        "ATTRIBUTE Extended-Attribute-1 241 extended
ATTRIBUTE Extended-Attribute-5 245 long-extended
ATTRIBUTE Frag-Status 241.1 integer
ATTRIBUTE IP-Port-Limit-Info 241.5 tlv
ATTRIBUTE IP-Port-Type 241.5.1 integer
ATTRIBUTE Extended-Vendor-Specific-1 241.26 evs
ATTRIBUTE Extended-Vendor-Specific-5 245.26 evs
VENDOR Acme 4242
BEGIN-VENDOR Acme format=Extended-Vendor-Specific-5
ATTRIBUTE Acme-Anonce 1 octets
END-VENDOR Acme
BEGIN-VENDOR Acme parent=Extended-Vendor-Specific-1
ATTRIBUTE Acme-Other 2 string
END-VENDOR Acme
VALUE Frag-Status Reassembly-Required 1
",
    );
    assert_eq!(def(&d, "Frag-Status").oid.to_string(), "241.1");
    assert_eq!(def(&d, "Acme-Anonce").oid.to_string(), "245.26.4242.1");
    assert_eq!(def(&d, "Acme-Other").oid.to_string(), "241.26.4242.2");
    assert_eq!(def(&d, "Acme-Anonce").vendor(), 4242);
    for name in ["Frag-Status", "IP-Port-Limit-Info", "IP-Port-Type", "Extended-Vendor-Specific-1", "Acme-Anonce"] {
        assert_eq!(def(&d, name).unsupported, Some(Unsupported::Extended), "{name}");
    }
    assert_eq!(def(&d, "Extended-Attribute-1").unsupported, Some(Unsupported::Container));
    assert_eq!(d.attribute_by_number(4242, 1), None, "an extended vendor's attribute is not a VSA");
    // Received, an extended attribute is named after the one inside, its value as hex.
    assert_eq!(d.describe(&Attribute::standard(241, [1, 0, 0, 0, 1])), "Frag-Status = 0x00000001");
    assert_eq!(d.describe(&Attribute::standard(241, [99, 7])), "Extended-Attribute-1 = 0x6307");
    assert_eq!(d.describe(&Attribute::standard(241, [])), "Extended-Attribute-1 = 0x");
    for (text, expected) in [
        ("ATTRIBUTE Not-Extended 100 extended", "Not-Extended: types extended and long-extended are for attributes 241-246 only"),
        ("ATTRIBUTE Lost-Evs 241.27 evs", "Lost-Evs: type evs is for 241.26 to 246.26 only"),
        ("ATTRIBUTE Orphan-Evs 246.26 evs", "Orphan-Evs (246.26): its parent 246 is not defined"),
        ("ATTRIBUTE Not-Vsa 27 vsa", "Not-Vsa: type vsa is for Vendor-Specific (26) only"),
        ("ATTRIBUTE Zero 0 string", "Zero: attribute number 0 does not exist"),
        (
            "VENDOR V 7\nBEGIN-VENDOR V format=Extended-Vendor-Specific-1\nATTRIBUTE V-Big 256 string",
            "V-Big: an extended vendor's attribute numbers are 1-255",
        ),
    ] {
        let mut d = d.clone();
        let err = d.load_str("inline", text).unwrap_err().to_string();
        assert!(err.contains(expected), "{text:?}: {err}");
    }
}

#[test]
fn types_and_flags_of_freeradius_3_load_and_mean_what_they_say() {
    let d = builtin_with(
        "ATTRIBUTE Tunnel-Type 64 integer has_tag
VALUE Tunnel-Type VLAN 13
ATTRIBUTE Tunnel-Private-Group-Id 81 string has_tag
ATTRIBUTE Tunnel-Password 69 string has_tag,encrypt=2
ATTRIBUTE ARAP-Password 70 octets[16]
ATTRIBUTE EAP-Message 79 octets concat
ATTRIBUTE Client-Shortname 1024 string virtual
ATTRIBUTE Acme-Servers 3002 ipaddr array
VENDOR Acme 4242
BEGIN-VENDOR Acme
ATTRIBUTE Acme-Dns 1 ipaddr array
ATTRIBUTE Acme-Token 2 string secret
ATTRIBUTE Acme-Mac 3 ether
ATTRIBUTE Acme-Big 4 uint64
END-VENDOR Acme
",
    );
    // has_tag: an untagged integer leaves the tag octet 0; a received tag is shown.
    assert_eq!(wire(&sent(&d, "Tunnel-Type", "VLAN")), [64, 6, 0, 0, 0, 13]);
    assert!(d.parse_value(def(&d, "Tunnel-Type"), "16777216").unwrap_err().to_string().contains("at most 16777215"));
    assert_eq!(d.describe(&Attribute::standard(64, [1, 0, 0, 13])), "Tunnel-Type:1 = VLAN");
    assert_eq!(d.describe(&Attribute::standard(64, [0, 0, 0, 13])), "Tunnel-Type = VLAN");
    assert_eq!(wire(&sent(&d, "Tunnel-Private-Group-Id", "10")), [81, 4, b'1', b'0']);
    assert_eq!(d.describe(&Attribute::standard(81, [2, b'1', b'0'])), "Tunnel-Private-Group-Id:2 = \"10\"");
    assert!(d.parse_value(def(&d, "Tunnel-Private-Group-Id"), "\u{1}10").is_err(), "would read as a tag");
    // encrypt=N: hidden, and not sent (radmfa does not encrypt reply values).
    assert_eq!(d.describe(&Attribute::standard(69, [0, 1, 2])), "Tunnel-Password = [hidden]");
    assert_eq!(d.sendable(def(&d, "Tunnel-Password")), Err(Unsupported::Encrypted));
    // secret: hidden, but sendable.
    assert_eq!(d.describe(&Attribute::vendor(4242, 2, *b"pw")), "Acme-Token = [hidden]");
    assert!(d.sendable(def(&d, "Acme-Token")).is_ok());
    // octets[N]: exactly N octets.
    assert_eq!(def(&d, "ARAP-Password").flags.fixed_len, Some(16));
    assert!(d.parse_value(def(&d, "ARAP-Password"), "0x01").unwrap_err().to_string().contains("exactly 16 octets"));
    assert_eq!(d.parse_value(def(&d, "ARAP-Password"), &format!("0x{}", "ab".repeat(16))).unwrap().len(), 16);
    assert!(def(&d, "EAP-Message").flags.concat);
    // virtual and numbers above 255: FreeRADIUS's own.
    assert_eq!(def(&d, "Client-Shortname").unsupported, Some(Unsupported::Internal));
    assert_eq!(def(&d, "Acme-Servers").unsupported, Some(Unsupported::Internal));
    // array: each value shown.
    assert_eq!(d.describe(&Attribute::vendor(4242, 1, [10, 0, 0, 1, 10, 0, 0, 2])), "Acme-Dns = 10.0.0.1, 10.0.0.2");
    assert_eq!(d.describe(&Attribute::vendor(4242, 1, [10, 0, 0, 1, 10])), "Acme-Dns = 0x0a0000010a");
    assert_eq!(d.describe(&Attribute::vendor(4242, 3, [0, 0x11, 0x22, 0x33, 0x44, 0xff])), "Acme-Mac = 00:11:22:33:44:ff");
    assert_eq!(d.describe(&Attribute::vendor(4242, 4, 5u64.to_be_bytes())), "Acme-Big = 5");
    for (text, expected) in [
        ("ATTRIBUTE T 3003 ipaddr has_tag", "T: only integer and string attributes have tags"),
        ("ATTRIBUTE T 3003 string concat", "T: only octets attributes take concat"),
        ("ATTRIBUTE T 3003 string encrypt=9", "bad encrypt=9 (0-3) for T"),
        ("ATTRIBUTE T 3003 string sparkly", "unknown flag or vendor \"sparkly\" for T"),
        ("ATTRIBUTE T 3003 octets[0]", "unsupported type \"octets[0]\" for T"),
        ("ATTRIBUTE T 3003 octets[254]", "unsupported type \"octets[254]\" for T"),
        ("ATTRIBUTE T 3003 string[4]", "unsupported type \"string[4]\" for T"),
        ("ATTRIBUTE T 3003 struct", "unsupported type \"struct\" for T"),
        ("ATTRIBUTE T 3003", "ATTRIBUTE takes a name, a number, a type and optional flags"),
    ] {
        let err = error_of(text);
        assert!(err.starts_with("inline:1: ") && err.contains(expected), "{text:?}: {err}");
    }
}

#[test]
fn a_name_defined_again_for_its_number_takes_the_new_type_and_the_latest_name_shows() {
    let d = builtin_with(
        "ATTRIBUTE Class 25 string
ATTRIBUTE Vendor-Specific 26 vsa
ATTRIBUTE MS-CHAP-Response 1 octets[50] Microsoft
ATTRIBUTE Client-Id 4 ipaddr
VALUE Service-Type Login 1
VALUE User-Service-Type Dialout-Framed-User 5
ATTRIBUTE User-Service-Type 6 integer
",
    );
    assert_eq!(def(&d, "Class").data_type, DataType::String, "the later type wins");
    assert_eq!(def(&d, "Vendor-Specific").unsupported, Some(Unsupported::Container));
    assert_eq!(def(&d, "MS-CHAP-Response").flags.fixed_len, Some(50));
    // Two names for one number: either resolves, the latest names it in the log, and VALUEs
    // belong to the number, whichever name gave them.
    assert_eq!(def(&d, "NAS-IP-Address").oid, def(&d, "Client-Id").oid);
    assert_eq!(d.describe(&Attribute::standard(4, [10, 0, 0, 1])), "Client-Id = 10.0.0.1");
    assert_eq!(d.describe(&Attribute::standard(6, [0, 0, 0, 1])), "User-Service-Type = Login");
    assert_eq!(d.parse_value(def(&d, "Service-Type"), "Dialout-Framed-User").unwrap(), [0, 0, 0, 5]);
    // The built-in names are the latest until something else names the number.
    let builtin = Dictionary::builtin().unwrap();
    assert_eq!(builtin.describe(&Attribute::standard(4, [10, 0, 0, 1])), "NAS-IP-Address = 10.0.0.1");
}

#[test]
fn values_are_checked_against_their_attribute() {
    for (text, expected) in [
        ("VALUE Nothing-Such X 1", "inline:1: VALUE for unknown attribute Nothing-Such"),
        ("ATTRIBUTE B 3004 byte\nVALUE B Big 256", "inline:2: VALUE Big 256 does not fit B (at most 255)"),
        ("ATTRIBUTE S 3004 short\nVALUE S Big 65536", "VALUE Big 65536 does not fit S (at most 65535)"),
        ("VALUE User-Name Alice 1", "VALUE for User-Name: String attributes have no named values"),
        ("VALUE Service-Type Login", "VALUE takes an attribute, a name and a number"),
        ("VALUE Service-Type Login one", "bad value number \"one\""),
    ] {
        let err = error_of(text);
        assert!(err.contains(expected), "{text:?}: {err}");
    }
    let d = builtin_with("ATTRIBUTE B 3004 byte\nVALUE B Top 255\nATTRIBUTE O 3005 octets\nVALUE O Named 9\n");
    assert_eq!(d.parse_value(def(&d, "B"), "Top").unwrap(), [255]);
}

#[test]
fn other_dialects_and_unknown_keywords_are_named() {
    assert_eq!(
        error_of("\nBEGIN-PROTOCOL RADIUS"),
        "inline:2: BEGIN-PROTOCOL is FreeRADIUS 4 syntax; radmfa reads FreeRADIUS 3 dictionaries"
    );
    assert!(error_of("ALIAS Foo User-Name").contains("ALIAS is FreeRADIUS 4 syntax"));
    let not_a_line =
        "not a dictionary line: it starts with no keyword of FreeRADIUS 3 dictionaries (its text is not shown: is this a dictionary file?)";
    for line in ["FROBNICATE x", "root:$y$j9T$hashhashhash:20228:0:99999:7:::", "Tr0ub4dor-SECRET"] {
        assert_eq!(error_of(line), format!("inline:1: {not_a_line}"), "{line}");
    }
    // Keywords are case-insensitive, as FreeRADIUS reads them.
    let d = builtin_with("attribute Lower-Case 3006 string\n");
    assert!(d.attribute("Lower-Case").is_some());
}

#[test]
fn the_summary_counts_what_a_reply_cannot_carry() {
    let builtin = Dictionary::builtin().unwrap();
    let summary = builtin.unsupported_summary().unwrap();
    assert!(summary.starts_with("the dictionaries define 4 attributes radmfa cannot send in a reply: 4 encrypted"), "{summary}");
    let d = builtin_with(&format!("{VENDORS}ATTRIBUTE Frag-Status-Parent 241 extended\nATTRIBUTE Frag-Status 241.1 integer\n"));
    let summary = d.unsupported_summary().unwrap();
    assert_eq!(
        summary,
        "the dictionaries define 8 attributes radmfa cannot send in a reply: 1 extended (241-246, RFC 6929) (e.g. Frag-Status), \
         1 TLV members (e.g. WiMAX-Release), 2 containers (tlv, vsa, extended, evs) (e.g. WiMAX-Capability), \
         4 encrypted on the wire (encrypt=N) (e.g. User-Password); naming one in a [[client]] reply attribute is an error"
    );
    let mut plain = Dictionary::default();
    plain.load_str("inline", "ATTRIBUTE User-Name 1 string\n").unwrap();
    assert_eq!(plain.unsupported_summary(), None);
    assert_eq!(thousands(1234567), "1,234,567");
    assert_eq!(thousands(999), "999");
}

//! `radmfa token import` through the real binary on a users-file config: 10,000 CSV rows and a
//! PSKC container (encrypted with RFC 6030's pre-shared key), all-or-nothing, a dry run that
//! writes nothing, a second run that adds nothing, and logins over RADIUS with the imported
//! seeds.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::harness::{ALICE_PASSWORD, CAROL_PASSWORD, Options, TestServer, admin, totp_code, write_config, write_users};
use crate::oracle;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pskc");

/// Alice's seed in the CSV file: base32 of "12345678901234567890".
const ALICE_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn options() -> Options {
    Options { mode: "append", no_token: "reject", ..Options::default() }
}

/// A folder with the users file, a config and a key file, and no token yet.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write_users(dir.path());
    let config = write_config(dir.path(), &options());
    let keygen = admin(&config, &["keygen"]);
    assert!(keygen.status.success(), "{}", String::from_utf8_lossy(&keygen.stderr));
    (dir, config)
}

fn write_secret_file(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn import(config: &Path, args: &[&str]) -> Output {
    admin(config, &[&["token", "import"], args].concat())
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn token_count(config: &Path) -> usize {
    let list = admin(config, &["token", "list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    stdout(&list).lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())).count()
}

/// `rows` data rows of `user,name,secret,digits`: alice's first, then users of example.test
/// with seeds of their own.
fn csv(rows: usize) -> String {
    let mut text = format!("user,name,secret,digits\nalice,Old VPN,{ALICE_B32},6\n");
    for i in 1..rows {
        let seed: Vec<u8> = (0..20u8).map(|b| b.wrapping_mul(31).wrapping_add((i % 251) as u8) ^ (i / 251) as u8).collect();
        let b32 = totp_rs::Secret::Raw(seed).to_encoded().to_string();
        text.push_str(&format!("user{i:05}@example.test,Old VPN,{b32},{}\n", if i % 2 == 0 { 6 } else { 8 }));
    }
    text
}

fn login(server: &TestServer, user: &str, password: &str, code: &str) -> u8 {
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let request = oracle::encode_signed(oracle::access_request(user, &format!("{password}{code}")));
    oracle::code(&oracle::exchange(&socket, &request, Duration::from_secs(5)).expect("an answer"))
}

#[test]
fn ten_thousand_csv_rows_and_a_pskc_file_are_imported_once_and_log_in() {
    let (dir, config) = setup();
    let tokens_csv = dir.path().join("tokens.csv");
    let text = csv(10_000);

    // A file with one bad row writes nothing, names the row, and never shows a secret.
    let bad_secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PX!";
    let broken: String = text
        .lines()
        .enumerate()
        .map(|(i, line)| if i == 2 { format!("user00001@example.test,Old VPN,{bad_secret},8\n") } else { format!("{line}\n") })
        .collect();
    write_secret_file(&tokens_csv, &broken, 0o600);
    let broken = import(&config, &["--format", "csv", tokens_csv.to_str().unwrap()]);
    assert!(!broken.status.success());
    let said = stderr(&broken);
    assert!(said.contains("tokens.csv: line 3, user user00001@example.test: secret: not base32"), "{said}");
    assert!(said.contains("nothing was written: 1 of 10000 entries refused"), "{said}");
    assert!(!said.contains("JBSWY3DP") && !stdout(&broken).contains("JBSWY3DP"), "no secret in what is said: {said}");
    assert_eq!(token_count(&config), 0);

    // A dry run of the good file checks everything and writes nothing; others may read the
    // file, which is said.
    write_secret_file(&tokens_csv, &text, 0o644);
    let dry = import(&config, &["--format", "csv", "--dry-run", tokens_csv.to_str().unwrap()]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(stdout(&dry).contains("dry run: would add 10000, skip 0 (already there), refuse 0; nothing was written"), "{}", stdout(&dry));
    assert!(stderr(&dry).contains("others can read it (mode 644)"), "{}", stderr(&dry));
    assert_eq!(token_count(&config), 0);

    let started = std::time::Instant::now();
    let first = import(&config, &["--format", "csv", tokens_csv.to_str().unwrap()]);
    let took = started.elapsed();
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).contains("tokens.csv: added 10000, skipped 0 (already there), refused 0"), "{}", stdout(&first));
    assert!(stdout(&first).contains("delete it now"), "the admin is reminded the file holds seeds");
    eprintln!("10,000 CSV rows imported by the debug binary in {took:?}");
    let again = import(&config, &["--format", "csv", tokens_csv.to_str().unwrap()]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("added 0, skipped 10000 (already there), refused 0"), "{}", stdout(&again));
    assert_eq!(token_count(&config), 10_000);

    // PSKC, encrypted with RFC 6030's key: its HOTP token makes the file refused whole...
    let pskc = format!("{FIXTURES}/totp-hardware-psk.pskc");
    let psk = dir.path().join("vendor.psk");
    write_secret_file(&psk, &std::fs::read_to_string(format!("{FIXTURES}/rfc6030.psk")).unwrap(), 0o600);
    let map = format!("{FIXTURES}/serials.csv");
    let pskc_args = ["--format", "pskc", "--psk-file", psk.to_str().unwrap(), "--map", &map, &pskc];
    let refused = import(&config, &pskc_args);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("KeyPackage 4 (serial 100004), user dave: an HOTP (counter-based) key"), "{}", stderr(&refused));
    assert_eq!(token_count(&config), 10_000);
    // ...unless the admin takes the others.
    let hardware = import(&config, &[&pskc_args[..], &["--skip-invalid"]].concat());
    assert!(hardware.status.success(), "{}", stderr(&hardware));
    assert!(stdout(&hardware).contains("added 3, skipped 0 (already there), refused 1"), "{}", stdout(&hardware));
    let again = import(&config, &[&pskc_args[..], &["--skip-invalid"]].concat());
    assert!(stdout(&again).contains("added 0, skipped 3 (already there), refused 1"), "{}", stdout(&again));
    assert_eq!(token_count(&config), 10_003);

    // The server logs users in with the imported seeds.
    let mut server = TestServer::launch(dir, config, None, &[]);
    server.wait_listening(Duration::from_secs(20));
    assert_eq!(login(&server, "alice", ALICE_PASSWORD, &totp_code(ALICE_B32, 0)), oracle::ACCESS_ACCEPT, "the CSV seed");
    let carol = totp_rs::Secret::Raw(b"Example-seed-carol-2".to_vec()).to_encoded().to_string();
    assert_eq!(login(&server, "carol", CAROL_PASSWORD, &totp_code(&carol, 0)), oracle::ACCESS_ACCEPT, "the PSKC seed");
    assert_ne!(login(&server, "carol", CAROL_PASSWORD, "000000"), oracle::ACCESS_ACCEPT);
}

#[test]
fn check_users_files_under_the_account_and_refuses_names_the_directory_does_not_know() {
    let (dir, config) = setup();
    let uris = dir.path().join("tokens.txt");
    let text = format!(
        "# from the old product\n\
         otpauth://totp/Old%20VPN:ALICE?secret={ALICE_B32}&issuer=Old%20VPN\n\
         otpauth://totp/Old%20VPN:nobody?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\n"
    );
    write_secret_file(&uris, &text, 0o600);
    let path = uris.to_str().unwrap();
    let checked = import(&config, &["--format", "otpauth", "--check-users", path]);
    assert!(!checked.status.success());
    assert!(stderr(&checked).contains("tokens.txt: line 3, user nobody: the directory has no such user"), "{}", stderr(&checked));
    let checked = import(&config, &["--format", "otpauth", "--check-users", "--skip-invalid", path]);
    assert!(stdout(&checked).contains("added 1, skipped 0 (already there), refused 1"), "{}", stdout(&checked));
    let list = stdout(&admin(&config, &["token", "list"]));
    assert!(list.contains("alice") && list.contains("Old VPN") && !list.contains("ALICE"), "{list}");
    // Without the check, the unknown name is filed as a login would look for it first.
    let unchecked = import(&config, &["--format", "otpauth", path]);
    assert!(stdout(&unchecked).contains("added 1, skipped 1 (already there), refused 0"), "{}", stdout(&unchecked));
    assert!(stdout(&admin(&config, &["token", "list", "nobody"])).contains("Old VPN"));
    // A limit of one usable token each: alice's second is refused.
    let second = format!("otpauth://totp/alice?secret={}\n", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXQ");
    write_secret_file(&uris, &second, 0o600);
    let over = import(&config, &["--format", "otpauth", "--max-tokens", "1", path]);
    assert!(!over.status.success());
    assert!(stderr(&over).contains("line 1, user alice: the user would have more than 1 usable tokens"), "{}", stderr(&over));
}

#[test]
fn a_seed_another_user_holds_in_the_store_is_refused_in_a_later_file() {
    let (dir, config) = setup();
    let first = dir.path().join("first.csv");
    write_secret_file(&first, &format!("user,secret\nalice,{ALICE_B32}\n"), 0o600);
    let out = import(&config, &["--format", "csv", first.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The same seed for carol, in another file (a big file split, or a mistake): refused.
    let second = dir.path().join("second.csv");
    write_secret_file(&second, &format!("user,secret\ncarol,{ALICE_B32}\n"), 0o600);
    let out = import(&config, &["--format", "csv", second.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("line 2") && said.contains("the same seed as token") && said.contains("in the store, another user's"), "{said}");
    assert!(!said.contains(ALICE_B32), "{said}");
    // Nor with a zero byte appended: HMAC pads its key with zeros, so it gives the same codes.
    let padded = totp_rs::Secret::Raw([b"12345678901234567890".as_slice(), &[0]].concat()).to_encoded().to_string();
    write_secret_file(&second, &format!("user,secret\ncarol,{padded}\n"), 0o600);
    let out = import(&config, &["--format", "csv", second.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("the same seed as token"), "{}", stderr(&out));
    assert_eq!(token_count(&config), 1);
}

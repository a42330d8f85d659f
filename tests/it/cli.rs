//! The command line an admin uses: check-config, user hash, bench.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::harness::{ALICE_PASSWORD, Options, SECRET, TestServer, binary, write_config, write_users};

#[test]
fn check_config_names_a_misspelled_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    write_users(dir.path());
    let config = write_config(dir.path(), &Options::default());
    let ok = Command::new(binary()).args(["check-config", "--config"]).arg(&config).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("OK"));

    let text = std::fs::read_to_string(&config).unwrap().replace("reject_delay", "rejectdelay");
    std::fs::write(&config, text).unwrap();
    let bad = Command::new(binary()).args(["check-config", "--config"]).arg(&config).output().unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("unknown field `rejectdelay`"), "{stderr}");
    assert!(stderr.contains("radmfa.toml"), "the error names the file: {stderr}");
}

#[test]
fn check_config_accepts_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/radmfa.example.toml");
    let out = Command::new(binary()).args(["check-config", "--config", example]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_example_s_postgres_store_checks_and_a_node_without_the_shared_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let example = std::fs::read_to_string(format!("{root}/config/radmfa.example.toml")).unwrap();
    std::fs::copy(format!("{root}/config/users.example.toml"), dir.path().join("users.example.toml")).unwrap();
    let password = dir.path().join("store.password");
    std::fs::write(&password, "Store-Passw0rd!\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The example's PostgreSQL lines switched on, as the comments say (the CA file aside).
    let config = example
        .replace("path = \"radmfa.db\"\n", "kind = \"postgres\"\n")
        .replace("# url = ", "url = ")
        .replace("# password_file = \"/etc/radmfa/store.password\"", &format!("password_file = \"{}\"", password.display()))
        .replace("# pool_size = ", "pool_size = ")
        .replace("# timeout = ", "timeout = ");
    assert_ne!(config, example);
    let path = dir.path().join("radmfa.toml");
    std::fs::write(&path, &config).unwrap();
    let check = || Command::new(binary()).args(["check-config", "--config"]).arg(&path).output().unwrap();
    let refused = check();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("every node seals and opens seeds with the same key file"), "{stderr}");
    radmfa::keys::KeyRing::generate("k1").save(&dir.path().join("master.key")).unwrap();
    let out = check();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn user_hash_reads_stdin_and_prints_a_verifiable_argon2id_hash() {
    let mut child = Command::new(binary()).args(["user", "hash"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"S3cret-pass\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let parsed = PasswordHash::new(hash).unwrap();
    assert!(argon2::Argon2::default().verify_password(b"S3cret-pass", &parsed).is_ok());
    assert!(argon2::Argon2::default().verify_password(b"S3cret-pass\n", &parsed).is_err(), "the newline is not part of it");

    let empty = Command::new(binary()).args(["user", "hash"]).stdin(Stdio::null()).output().unwrap();
    assert!(!empty.status.success(), "an empty password is refused");
}

#[test]
fn bench_reports_its_figures() {
    // Room for all 90 of the open-loop run in flight at once: a debug server under the whole
    // suite's load takes up to a second per decision, and past max_in_flight drops (rightly).
    let server = TestServer::start(Options { max_in_flight: 256, ..Options::default() });
    let out = Command::new(binary())
        .args(["bench", "--server", &server.auth.to_string(), "--user", "alice", "--count", "200", "-n", "8", "--json"])
        .env("RADMFA_BENCH_SECRET", SECRET)
        .env("RADMFA_BENCH_PASSWORD", ALICE_PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["requests"], 200);
    assert_eq!(report["accepts"], 200, "{report}");
    assert!(report["p99_ms"].as_f64().unwrap() >= report["p50_ms"].as_f64().unwrap());
    assert_eq!(server.wait_for_audit(200).len(), 200);

    // Open-loop from another address, cycling through names: a spray as the server sees it.
    let names = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(names.path(), "alice\ncarol\nnobody\n").unwrap();
    let out = Command::new(binary())
        .args(["bench", "--server", &server.auth.to_string(), "--rate", "300", "--count", "90", "--bind", "127.0.0.1:0", "--json"])
        .arg("--users")
        .arg(names.path())
        .env("RADMFA_BENCH_SECRET", SECRET)
        .env("RADMFA_BENCH_PASSWORD", ALICE_PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let answered = (report["requests"].as_u64(), report["accepts"].as_u64(), report["rejects"].as_u64());
    if answered != (Some(90), Some(30), Some(60)) {
        // Say what the server did with the ones that went unanswered.
        let said: Vec<String> = server.logs().iter().filter(|v| v["level"] != "INFO").map(|v| v.to_string()).collect();
        panic!("{report}\nserver warnings and errors:\n{}", said.join("\n"));
    }
    let users: std::collections::HashSet<String> =
        server.wait_for_audit(290).iter().skip(200).map(|v| v["user"].as_str().unwrap().to_owned()).collect();
    assert_eq!(users.len(), 3, "{users:?}");
}

#[test]
fn first_start_creates_the_key_but_never_beside_an_existing_database() {
    let dir = tempfile::tempdir().unwrap();
    write_users(dir.path());
    let config = write_config(dir.path(), &Options::default());
    let check = crate::harness::admin(&config, &["check-config"]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(String::from_utf8_lossy(&check.stdout).contains("creates"), "check-config says the key comes at first start");
    // `serve` on a fresh install makes the key (and the database).
    let mut child = Command::new(binary()).args(["serve", "--config"]).arg(&config).stderr(Stdio::null()).spawn().unwrap();
    let key = dir.path().join("master.key");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(key.exists() && dir.path().join("radmfa.db").exists()) && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    // Key gone, database still there: refuse rather than make seeds unreadable.
    std::fs::remove_file(&key).unwrap();
    let out = Command::new(binary()).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("master.key"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!key.exists());
    let keygen = crate::harness::admin(&config, &["keygen"]);
    assert!(keygen.status.success());
    let again = crate::harness::admin(&config, &["keygen"]);
    assert!(!again.status.success(), "keygen never overwrites a key");
}

#[test]
fn token_commands_list_verify_remove_and_rotate_keys() {
    use crate::harness::{admin, enroll, totp_code};
    let server = TestServer::start(Options { mode: "append", no_token: "reject", lockout: "1h", ..Options::default() });
    let config = server.config.clone();
    let seed = enroll(&config, "Alice");
    assert!(!admin(&config, &["token", "add", "nobody"]).status.success(), "unknown users are refused without --force");
    // With --force, filed under the name lower-cased: the first login once the directory knows
    // the name moves it to the account.
    let forced = admin(&config, &["token", "add", "Nobody", "--force"]);
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    let list = String::from_utf8(admin(&config, &["token", "list", "NOBODY"]).stdout).unwrap();
    assert!(list.contains("nobody") && !list.contains("Nobody"), "{list}");
    assert!(admin(&config, &["token", "remove", "nobody", "2"]).status.success());

    let list = String::from_utf8(admin(&config, &["token", "list"]).stdout).unwrap();
    assert!(list.contains("alice") && list.contains("Test phone") && list.contains("active") && list.contains("never"), "{list}");
    let verify = admin(&config, &["token", "verify", "alice", &totp_code(&seed, 0)]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert!(!admin(&config, &["token", "verify", "alice", "000000"]).status.success());

    // Rotation: new key, seeds resealed, logins go on.
    let rotate = admin(&config, &["keys", "rotate"]);
    assert!(rotate.status.success(), "{}", String::from_utf8_lossy(&rotate.stderr));
    assert!(String::from_utf8_lossy(&rotate.stdout).contains("sealed 1 seed(s) with new key k2"));
    let key_file = std::fs::read_to_string(server.dir().join("master.key")).unwrap();
    assert!(key_file.contains("\nk2 ") && !key_file.contains("\nk1 "), "only the new key remains");
    let server = server.restart();
    let answer = crate::oracle::exchange(
        &crate::oracle::socket("127.0.0.1:0", server.auth),
        &crate::oracle::encode_signed(crate::oracle::access_request("alice", &format!("{ALICE_PASSWORD}{}", totp_code(&seed, 0)))),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(crate::oracle::code(&answer), crate::oracle::ACCESS_ACCEPT, "the resealed seed still logs in");

    // Lock alice out, then unlock her.
    for _ in 0..5 {
        crate::oracle::exchange(
            &crate::oracle::socket("127.0.0.1:0", server.auth),
            &crate::oracle::encode_signed(crate::oracle::access_request("alice", &format!("{ALICE_PASSWORD}000000"))),
            std::time::Duration::from_secs(5),
        );
    }
    let unlock = String::from_utf8(admin(&config, &["user", "unlock", "alice"]).stdout).unwrap();
    assert!(unlock.contains("cleared"), "{unlock}");

    // A name with a right-to-left override cannot reorder the listing around it.
    assert!(admin(&config, &["token", "add", "alice", "--name", "Phone\u{202e}evil"]).status.success());
    let listed = String::from_utf8(admin(&config, &["token", "list", "ALICE"]).stdout).unwrap();
    assert!(listed.contains("Phone\\u{202e}evil") && !listed.contains('\u{202e}'), "{listed}");
    let id = list.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    assert!(admin(&config, &["token", "remove", "alice", &id]).status.success());
    assert!(!admin(&config, &["token", "remove", "alice", &id]).status.success(), "already gone");
    let left = String::from_utf8(admin(&config, &["token", "list", "alice"]).stdout).unwrap();
    assert_eq!(left.lines().count(), 2, "one token left: {left}");
}

fn check_config(config: &std::path::Path) -> std::process::Output {
    Command::new(binary()).args(["check-config", "--config"]).arg(config).output().unwrap()
}

#[test]
fn config_errors_never_show_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    write_users(dir.path());
    let config = write_config(dir.path(), &Options::default());
    let good = std::fs::read_to_string(&config).unwrap();
    let secret_line = format!("secret = \"{SECRET}\"");
    for (broken, value) in [
        ("secret = \"Unterminated-S3cret-Value".to_owned(), "Unterminated-S3cret-Value"),
        ("secret = 80417263594".to_owned(), "80417263594"),
        ("secret = [\"Array-S3cret-Value\"]".to_owned(), "Array-S3cret-Value"),
        // A multi-line string left open: the parser stops lines later, on the secret's text.
        ("secret = \"\"\"line1\nS3CR3T-8 \"\" x".to_owned(), "S3CR3T-8"),
        // A secret under a misspelled key, and one typed where a choice was expected.
        ("secert = \"Misspelt-S3cret\"".to_owned(), "Misspelt-S3cret"),
        ("mode = \"Choice-S3cret\"".to_owned(), "Choice-S3cret"),
    ] {
        let mode_line = good.lines().find(|l| l.starts_with("mode = ")).unwrap();
        let good = if broken.starts_with("mode") { good.replacen(mode_line, "", 1) } else { good.clone() };
        std::fs::write(&config, good.replacen(&secret_line, &broken, 1)).unwrap();
        let out = check_config(&config);
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{broken}");
        assert!(!said.contains(value), "the value must not be echoed (ExecStartPre puts this in the journal): {said}");
        assert!(said.contains("line"), "it still says where: {said}");
    }
    // An SMS header value (a bearer token) in a table of its own.
    let with_headers = format!("{good}\n[sms.headers]\nAuthorization = Bearer Tok3n-Value\n");
    std::fs::write(&config, with_headers).unwrap();
    let out = check_config(&config);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("Tok3n-Value"), "{}", String::from_utf8_lossy(&out.stderr));
    // A misspelled key is named, with where it is and what was expected; its line is not shown.
    std::fs::write(&config, good.replace("reject_delay", "rejectdelay")).unwrap();
    let said = String::from_utf8_lossy(&check_config(&config).stderr).into_owned();
    assert!(said.contains("unknown field `rejectdelay`, expected one of") && said.contains("line "), "{said}");
    assert!(!said.contains("\"0s\""), "{said}");
    // The users file likewise: a clear-text password under a wrong key, a broken hash line.
    let users = dir.path().join("users.toml");
    let good_users = std::fs::read_to_string(&users).unwrap();
    std::fs::write(&config, &good).unwrap();
    for broken in ["password = \"Plain-S3cret-Pw\"", "password_hash = \"Plain-S3cret-Pw", "groups = \"Plain-S3cret-Pw\""] {
        std::fs::write(&users, good_users.replacen("[[user]]", &format!("[[user]]\n{broken}"), 1)).unwrap();
        let said = String::from_utf8_lossy(&check_config(&config).stderr).into_owned();
        assert!(said.contains("users.toml") && said.contains("line ") && !said.contains("Plain-S3cret-Pw"), "{said}");
    }
    std::fs::write(&users, good_users).unwrap();
    // A choice misspelled: the choices are listed, the value is not echoed.
    let mode_line = good.lines().find(|l| l.starts_with("mode = ")).unwrap();
    std::fs::write(&config, good.replacen(mode_line, "mode = \"chalenge\"", 1)).unwrap();
    let said = String::from_utf8_lossy(&check_config(&config).stderr).into_owned();
    assert!(said.contains("expected") && said.contains("challenge") && !said.contains("chalenge"), "{said}");
}

#[test]
fn check_config_warns_about_secrets_others_can_read_and_secret_files_hold_one_line() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    write_users(dir.path());
    let config = write_config(dir.path(), &Options::default());
    let secret_file = dir.path().join("loopback.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let text =
        std::fs::read_to_string(&config).unwrap().replacen(&format!("secret = \"{SECRET}\""), "secret_file = \"loopback.secret\"", 1);
    std::fs::write(&config, text).unwrap();
    for file in [&config, &secret_file, &dir.path().join("users.toml")] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let quiet = String::from_utf8(check_config(&config).stdout).unwrap();
    assert!(!quiet.contains("accessible to"), "{quiet}");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o604)).unwrap();
    let loud = String::from_utf8(check_config(&config).stdout).unwrap();
    for file in ["radmfa.toml", "loopback.secret"] {
        assert!(
            loud.lines().any(|l| l.starts_with("warning:") && l.contains(file) && l.contains("accessible to everyone")),
            "{file}: {loud}"
        );
    }
    // Behind a folder others cannot enter (/etc/radmfa is 0750 root:radmfa), nobody else can
    // read them: no warning (the advice would only make them unreadable by the service).
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
    let fenced = String::from_utf8(check_config(&config).stdout).unwrap();
    assert!(!fenced.contains("accessible to everyone"), "{fenced}");
    // A drop-in folder anyone can write to: anyone can add a client — once they can reach it.
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    std::fs::set_permissions(dir.path().join("conf.d"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let fenced = String::from_utf8(check_config(&config).stdout).unwrap();
    assert!(!fenced.contains("writable by everyone"), "{fenced}");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let open = String::from_utf8(check_config(&config).stdout).unwrap();
    assert!(open.lines().any(|l| l.starts_with("warning:") && l.contains("conf.d is writable by everyone")), "{open}");
    // The secret is the file's one line: a second line is a mistake worth stopping for.
    std::fs::write(&secret_file, format!("{SECRET}\nsecond line\n")).unwrap();
    let out = check_config(&config);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds more than one line"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("second line"));
}

#[test]
fn a_closed_stdout_is_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    write_users(dir.path());
    let config = write_config(dir.path(), &Options::default());
    // `radmfa check-config | head -0`: the reader is gone before radmfa writes.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out =
        Command::new(binary()).args(["check-config", "--config"]).arg(&config).stdout(writer).stderr(Stdio::piped()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
}

#[test]
fn a_token_whose_secret_nobody_saw_is_not_kept_and_rotations_do_not_overlap() {
    use crate::harness::admin;
    let server = TestServer::start(Options::default());
    let config = server.config.clone();
    // `radmfa token add bob | true`: the secret goes nowhere, so no token may be left behind.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(binary()).args(["token", "add", "carol", "--config"]).arg(&config).stdout(writer).output().unwrap();
    assert!(!out.status.success(), "it says it failed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("the token was not kept"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8(admin(&config, &["token", "list", "carol"]).stdout).unwrap().contains("no tokens"));
    // Two rotations at once: the second is refused instead of dropping the first one's key.
    let first = Command::new(binary())
        .args(["keys", "rotate", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let second = admin(&config, &["keys", "rotate"]);
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("is running"), "{}", String::from_utf8_lossy(&second.stderr));
    // Nor is a token sealed meanwhile with a key the rotation is about to drop.
    let add = admin(&config, &["token", "add", "alice"]);
    assert!(!add.status.success());
    assert!(String::from_utf8_lossy(&add.stderr).contains("`radmfa keys rotate` is running"), "{}", String::from_utf8_lossy(&add.stderr));
    assert!(first.wait_with_output().unwrap().status.success());
}

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
    let server = TestServer::start(Options::default());
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
}

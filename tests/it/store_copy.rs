//! `radmfa store copy` round trip, SQLite to PostgreSQL and back, with the real binary: the
//! tokens, used time steps and locks come across with their seeds still sealed, a second copy
//! changes nothing, a server on each store logs users in, and a destination whose key file is
//! not the source's is refused before anything is written.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::harness::{ALICE_PASSWORD, CAROL_PASSWORD, Options, TestServer, admin, enroll, totp_code, write_config, write_users};
use crate::oracle::{self, ACCESS_ACCEPT, ACCESS_REJECT};
use crate::postgres::{self, PASSWORD};

fn copy(from: &Path, to: &Path) -> Output {
    std::process::Command::new(crate::harness::binary()).args(["store", "copy", "--from"]).arg(from).arg("--to").arg(to).output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "store copy failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A config in a folder of its own with `store` and the key file of `key_from`.
fn node(store: &str, key_from: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write_users(dir.path());
    let config = write_config(dir.path(), &Options { mode: "append", no_token: "reject", store: Some(store.into()), ..Options::default() });
    std::fs::copy(key_from.join("master.key"), dir.path().join("master.key")).unwrap();
    (dir, config)
}

fn login(server: &TestServer, user: &str, password: &str) -> u8 {
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let request = oracle::encode_signed(oracle::access_request(user, password));
    oracle::code(&oracle::exchange(&socket, &request, std::time::Duration::from_secs(5)).expect("an answer"))
}

#[test]
fn a_store_copied_to_postgresql_and_back_logs_the_same_users_in() {
    let Some(pg) = postgres::server() else { return };
    let sqlite = TestServer::start(Options { mode: "append", no_token: "reject", lockout: "1h", ..Options::default() });
    let alice = enroll(&sqlite.config, "alice");
    let carol = enroll(&sqlite.config, "carol");
    let alice_first = format!("{ALICE_PASSWORD}{}", totp_code(&alice, 0));
    assert_eq!(login(&sqlite, "alice", &alice_first), ACCESS_ACCEPT);
    for _ in 0..5 {
        login(&sqlite, "dave", "wrong");
    }
    for _ in 0..5 {
        login(&sqlite, "carol", &format!("{CAROL_PASSWORD}000000"));
    }
    let (first_dir, first_config) = sqlite.into_parts();

    let store =
        format!("[store]\nkind = \"postgres\"\nurl = \"{}\"\npassword = \"{PASSWORD}\"\nkey_file = \"master.key\"\n", pg.fresh_database());
    let (pg_dir, pg_config) = node(&store, first_dir.path());
    let said = stdout(&copy(&first_config, &pg_config));
    assert!(said.contains("copied 2 token(s) of 2 user(s)"), "{said}");
    assert!(said.contains("verified") && said.contains("held 0 token(s) before, 2 now"), "{said}");
    let again = stdout(&copy(&first_config, &pg_config));
    assert!(again.contains("held 2 token(s) before, 2 now"), "a second copy adds nothing: {again}");
    // The same database under another host name: the same store, however spelled.
    let (_alias_dir, alias_config) = node(&store.replace("@127.0.0.1:", "@localhost:"), pg_dir.path());
    let same = copy(&pg_config, &alias_config);
    let said = String::from_utf8_lossy(&same.stderr);
    assert!(!same.status.success() && said.contains("name the same store") && said.contains("localhost"), "{said}");

    let on_postgres = TestServer::launch(pg_dir, pg_config.clone(), None, &[]);
    let mut on_postgres = on_postgres;
    on_postgres.wait_listening(std::time::Duration::from_secs(20));
    assert_eq!(login(&on_postgres, "alice", &alice_first), ACCESS_REJECT, "a code used before the copy stays used");
    let alice_next = format!("{ALICE_PASSWORD}{}", totp_code(&alice, 1));
    assert_eq!(login(&on_postgres, "alice", &alice_next), ACCESS_ACCEPT, "the seed, sealed, opens on PostgreSQL");
    let carol_code = format!("{CAROL_PASSWORD}{}", totp_code(&carol, 0));
    assert_eq!(login(&on_postgres, "carol", &carol_code), ACCESS_REJECT, "carol's lock came across");
    assert_eq!(on_postgres.wait_for_audit(3)[2]["reason"], "second_factor_locked");
    let (pg_dir, pg_config) = on_postgres.into_parts();
    let rollback = copy(&first_config, &pg_config);
    let said = String::from_utf8_lossy(&rollback.stderr);
    assert!(!rollback.status.success() && said.contains("changed since the last copy"), "a used destination is not rolled back: {said}");

    let (back_dir, back_config) = node("[store]\nkind = \"sqlite\"\npath = \"back.db\"\nkey_file = \"master.key\"\n", pg_dir.path());
    let said = stdout(&copy(&pg_config, &back_config));
    assert!(said.contains("copied 2 token(s) of 2 user(s) and 2 lockout counter(s)"), "{said}");
    assert!(back_dir.path().join("back.db").exists(), "a new SQLite file is made");
    let unlock = admin(&back_config, &["user", "unlock", "carol"]);
    assert!(unlock.status.success());
    let mut back = TestServer::launch(back_dir, back_config, None, &[]);
    back.wait_listening(std::time::Duration::from_secs(20));
    assert_eq!(login(&back, "alice", &alice_next), ACCESS_REJECT, "the step used on PostgreSQL came back");
    assert_eq!(login(&back, "carol", &carol_code), ACCESS_ACCEPT, "carol, unlocked, logs in on the copy back");
}

#[test]
fn a_copy_to_a_store_with_another_key_file_is_refused_before_anything_is_written() {
    let source = TestServer::start(Options::default());
    enroll(&source.config, "alice");
    let (source_dir, source_config) = source.into_parts();
    let (dir, config) = node("[store]\nkind = \"sqlite\"\npath = \"other.db\"\nkey_file = \"master.key\"\n", source_dir.path());
    std::fs::remove_file(dir.path().join("master.key")).unwrap();
    let keygen = admin(&config, &["keygen"]);
    assert!(keygen.status.success());
    let refused = copy(&source_config, &config);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("does not open 1 of the 1 seed(s)") && said.contains("Nothing was copied"), "{said}");
    let listed = admin(&config, &["token", "list"]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("alice"), "nothing was copied");
    let same = copy(&source_config, &source_config);
    assert!(!same.status.success() && String::from_utf8_lossy(&same.stderr).contains("the same store"));
}

//! The help desk from a shell against a running server: a temporary code issued with
//! `radmfa temp-code issue` logs carol in over RADIUS (radclient-independent raw client) for its
//! uses only; `radmfa user show` tells the story from the audit trail, actor included.

use std::time::Duration;

use crate::harness::{CAROL_PASSWORD, Options, TestServer, admin};
use crate::oracle::{ACCESS_ACCEPT, ACCESS_REJECT, access_request, code, encode_signed, exchange, socket};

fn login(server: &TestServer, user: &str, password: &str) -> u8 {
    let answer = exchange(&socket("127.0.0.1:0", server.auth), &encode_signed(access_request(user, password)), Duration::from_secs(5));
    code(&answer.expect("an answer"))
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn a_temporary_code_from_the_cli_logs_in_for_its_uses_and_the_trail_says_who_issued_it() {
    let server = TestServer::start(Options { no_token: "reject", ..Options::default() });
    let config = server.config.clone();
    assert_eq!(login(&server, "carol", CAROL_PASSWORD), ACCESS_REJECT, "no token, no code");

    let refused = admin(&config, &["temp-code", "issue", "carol", "--validity", "4d"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("at most 3days"), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(!admin(&config, &["temp-code", "issue", "nobody"]).status.success(), "only accounts the directory knows");

    let issued = stdout(&admin(&config, &["temp-code", "issue", "CAROL", "--validity", "2h", "--uses", "2"]));
    let code_line = issued.lines().next().unwrap();
    let temporary = code_line.rsplit(' ').next().unwrap().to_owned();
    assert!(code_line.starts_with("Temporary code for carol: ") && temporary.len() == 8, "{issued}");
    let listed = stdout(&admin(&config, &["temp-code", "list"]));
    assert!(listed.contains("carol") && !listed.contains(&temporary), "listed without the code: {listed}");

    assert_eq!(login(&server, "carol", &format!("{CAROL_PASSWORD}{temporary}")), ACCESS_ACCEPT);
    assert_eq!(login(&server, "carol", &format!("wrong{temporary}")), ACCESS_REJECT, "the password still counts");
    assert_eq!(login(&server, "Carol", &format!("{CAROL_PASSWORD}{temporary}")), ACCESS_ACCEPT, "second use");
    assert_eq!(login(&server, "carol", &format!("{CAROL_PASSWORD}{temporary}")), ACCESS_REJECT, "two uses only");

    let again = stdout(&admin(&config, &["temp-code", "issue", "carol"]));
    let temporary = again.lines().next().unwrap().rsplit(' ').next().unwrap().to_owned();
    assert!(stdout(&admin(&config, &["temp-code", "revoke", "carol"])).contains("1 temporary code(s) revoked"));
    assert_eq!(login(&server, "carol", &format!("{CAROL_PASSWORD}{temporary}")), ACCESS_REJECT, "revoked");

    // The decisions reach the store within about a second of being made.
    let shown = (0..50)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            stdout(&admin(&config, &["user", "show", "carol", "--events", "50"]))
        })
        .find(|s| s.matches("radius").count() >= 6)
        .expect("the decisions in the trail");
    assert!(shown.contains("User carol  Carol"), "{shown}");
    assert!(shown.contains("temporary_code"), "an Accept by temporary code: {shown}");
    assert!(shown.contains("wrong_password"), "{shown}");
    assert!(shown.contains("issue_temporary_code") && shown.contains("by cli:"), "the action with its actor: {shown}");
    assert!(shown.contains("revoke_temporary_code"), "{shown}");
    assert!(!shown.contains(&temporary), "never the code: {shown}");
    assert!(shown.contains("Temporary codes (0)"), "{shown}");
}

#[test]
fn the_server_purges_audit_events_past_the_retention_at_start_and_keeps_the_rest() {
    use radmfa::store::{AuditEvent, Store};
    let server = TestServer::start(Options { extra: "[audit]\nretention = \"90d\"\n".into(), ..Options::default() });
    let day = 86_400;
    let now = radmfa::clock::now();
    let event = |age_days: i64, reason: &str| AuditEvent {
        at: now - age_days * day,
        account: "carol".into(),
        action: "radius".into(),
        client: "nas".into(),
        from: None,
        result: "reject".into(),
        reason: reason.into(),
        actor: None,
        detail: None,
    };
    // Written beside the running server, as another node would.
    let keys = std::sync::Arc::new(radmfa::keys::Keys::load(&server.dir().join("master.key")).unwrap());
    let store = radmfa::store::sqlite::SqliteStore::open(&server.dir().join("radmfa.db"), keys).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(store.record_events(vec![event(91, "older_than_retention"), event(89, "within_retention")])).unwrap();
    drop(store);
    // The purge runs at start, then every 5 minutes.
    let server = server.restart();
    let shown = (0..50)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            stdout(&admin(&server.config, &["user", "show", "carol", "--events", "50"]))
        })
        .find(|s| !s.contains("older_than_retention"))
        .expect("the event past the retention purged");
    assert!(shown.contains("within_retention"), "{shown}");
}

//! One identity per account, against a real Active Directory (Samba): every name AD resolves to
//! one account — its sAMAccountName in any case, `EXAMPLE\name`, a UPN whose prefix differs and
//! whose suffix `[usernames] realms` does not list — meets the same token, lockout, SMS allowance
//! and password limit. Before, a UPN login of an enrolled user on a `password_only` client got in
//! with the password alone.

use std::time::Duration;

use crate::harness::{Options, SmsSink, TestServer, admin, enroll, totp_code};
use crate::oracle::{self, ACCESS_ACCEPT, ACCESS_CHALLENGE, ACCESS_REJECT};
use crate::samba::{self, BASE_DN, HENRY, HENRY_SHADOW, HENRY_UPN, KALLE, KELVIN, KELVIN_UPN};

const WAIT: Duration = Duration::from_secs(10);

fn ask_from(local: &str, server: &TestServer, user: &str, password: &str, state: Option<&[u8]>) -> Vec<u8> {
    let socket = oracle::socket(local, server.auth);
    let packet = match state {
        Some(state) => oracle::access_request_with_state(user, password, state),
        None => oracle::access_request(user, password),
    };
    oracle::exchange(&socket, &oracle::encode_signed(packet), WAIT).expect("an answer")
}

fn audit_users(server: &TestServer, n: usize) -> Vec<(String, String)> {
    server.wait_for_audit(n).iter().map(|v| (v["user"].as_str().unwrap().to_owned(), v["reason"].as_str().unwrap().to_owned())).collect()
}

#[test]
fn every_name_of_an_ad_account_meets_its_token_lockout_sms_allowance_and_password_limit() {
    let Some(dc) = samba::dc() else { return };
    let sms = SmsSink::start();
    // 127.0.0.1: append, and password_only for users without a token (a rollout).
    // 127.0.0.2: challenge mode, where a user may answer "sms".
    let server = TestServer::start(Options {
        directory: Some(dc.directory_section(std::slice::from_ref(&dc.url), "")),
        mode: "append",
        no_token: "password_only",
        sms_url: Some(sms.url.clone()),
        extra: "[[client]]\nname = \"challenger\"\naddress = \"127.0.0.2\"\nsecret = \"testing123\"\nmode = \"challenge\"\nno_token = \"sms\"\n\n\
                [usernames]\ndomains = [\"EXAMPLE\"]\nrealms = [\"example.test\", \"corp.example\"]\n"
            .into(),
        ..Options::default()
    });
    // Enrolled under one of the names; the token is filed under the account.
    let seed = enroll(&server.config, HENRY_UPN);
    let list = String::from_utf8(admin(&server.config, &["token", "list"]).stdout).unwrap();
    assert!(list.lines().nth(1).unwrap().split_whitespace().nth(1) == Some("henry"), "{list}");

    let ask = |user: &str, password: &str| ask_from("127.0.0.1:0", &server, user, password, None);
    let spellings = [HENRY_UPN, "HENRY.HANSSON@CORP.EXAMPLE", "EXAMPLE\\henry", "Henry", "henry@example.test"];
    for spelling in spellings {
        let answer = ask(spelling, HENRY.1);
        assert_eq!(oracle::code(&answer), ACCESS_REJECT, "{spelling}: an enrolled user never gets in with the password alone");
        assert_eq!(oracle::reply_message(&answer).as_deref(), Some("Authentication failed"));
    }
    let audit = audit_users(&server, spellings.len());
    assert!(audit.iter().all(|(user, reason)| user == "henry" && reason == "missing_code"), "{audit:?}");
    // henry's UPN is a UPN first: `henry.hansson`, the account its local part names, is not
    // reached through it (corp.example is one of our realms here), nor gets in with its password.
    assert_eq!(oracle::code(&ask(HENRY_UPN, &format!("{}123456", HENRY_SHADOW.1))), ACCESS_REJECT);
    let shadow = server.wait_for_audit(spellings.len() + 1).last().cloned().unwrap();
    assert_eq!((shadow["user"].as_str(), shadow["reason"].as_str()), (Some("henry"), Some("wrong_password")), "{shadow}");
    assert_eq!(oracle::code(&ask(HENRY_SHADOW.0, HENRY_SHADOW.1)), ACCESS_ACCEPT, "the other account is itself, and has no token");
    let seen = spellings.len() + 2;

    // The code works under any name, and once: one replay record.
    let code = totp_code(&seed, 0);
    assert_eq!(oracle::code(&ask(HENRY_UPN, &format!("{}{code}", HENRY.1))), ACCESS_ACCEPT);
    assert_eq!(oracle::code(&ask("henry", &format!("{}{code}", HENRY.1))), ACCESS_REJECT);
    let n = seen + 2;
    assert_eq!(audit_users(&server, n)[n - 1], ("henry".into(), "code_replayed".into()));

    // Wrong codes under different names add up to one lock, which holds under every name.
    for spelling in ["henry", HENRY_UPN, "EXAMPLE\\HENRY", "henry", HENRY_UPN] {
        assert_eq!(oracle::code(&ask(spelling, &format!("{}000000", HENRY.1))), ACCESS_REJECT);
    }
    for spelling in ["henry", HENRY_UPN] {
        assert_eq!(oracle::code(&ask(spelling, &format!("{}{}", HENRY.1, totp_code(&seed, 1)))), ACCESS_REJECT, "locked: {spelling}");
    }
    let n = n + 7;
    assert_eq!(audit_users(&server, n)[n - 1], ("henry".into(), "second_factor_locked".into()));
    let unlock = admin(&server.config, &["user", "unlock", "HENRY.HANSSON@corp.example"]);
    assert!(String::from_utf8_lossy(&unlock.stdout).contains("henry: failure counts and locks cleared"), "{unlock:?}");

    // One SMS allowance (3 per 15 min) for every name.
    let challenger = |user: &str, answer: &str, state: Option<&[u8]>| ask_from("127.0.0.2:0", &server, user, answer, state);
    for spelling in ["henry", HENRY_UPN, "EXAMPLE\\henry", "Henry"] {
        let challenge = challenger(spelling, HENRY.1, None);
        assert_eq!(oracle::code(&challenge), ACCESS_CHALLENGE, "{spelling}");
        let state = oracle::state_of(&challenge).unwrap();
        challenger(spelling, "sms", Some(&state));
    }
    assert_eq!(sms.messages().len(), 3, "the fourth name got no fourth SMS");
    let last = server.wait_for_audit(n + 8).last().cloned().unwrap();
    assert_eq!((last["user"].as_str(), last["reason"].as_str()), (Some("henry"), Some("sms_rate_limited")));

    // Wrong passwords: after four (across names), radmfa stops asking AD, so AD's own counter
    // stops at four and the AD account is not locked by a spray through radmfa.
    let henry_dn = format!("CN=henry,CN=Users,{BASE_DN}");
    samba::replace_attributes(dc, BASE_DN, &[("lockoutThreshold", "10")]).unwrap();
    let bad_before: u32 = samba::read_attribute(dc, &henry_dn, "badPwdCount").and_then(|v| v.parse().ok()).unwrap_or(0);
    for i in 0..12 {
        let spelling = [HENRY_UPN, "henry", "EXAMPLE\\henry"][i % 3];
        assert_eq!(oracle::code(&ask(spelling, "Spray-Passw0rd!123456")), ACCESS_REJECT);
    }
    let bad_after: u32 = samba::read_attribute(dc, &henry_dn, "badPwdCount").and_then(|v| v.parse().ok()).unwrap_or(0);
    samba::replace_attributes(dc, BASE_DN, &[("lockoutThreshold", "0")]).unwrap();
    assert_eq!(bad_after - bad_before, 4, "AD saw 4 wrong passwords of the 12 sent");
    let reasons: Vec<String> = server.wait_for_audit(n + 20).iter().skip(n + 8).map(|v| v["reason"].as_str().unwrap().to_owned()).collect();
    assert_eq!(reasons.iter().filter(|r| *r == "wrong_password").count(), 4, "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| *r == "password_locked").count(), 8, "{reasons:?}");
    let right = ask("henry", &format!("{}{}", HENRY.1, totp_code(&seed, 1)));
    assert_eq!(oracle::code(&right), ACCESS_REJECT, "locked for a while, even with the right password");
    assert!(admin(&server.config, &["user", "unlock", "henry"]).status.success());
    assert_eq!(oracle::code(&ask("henry", &format!("{}{}", HENRY.1, totp_code(&seed, 1)))), ACCESS_ACCEPT, "and in again after an unlock");
}

#[test]
fn two_accounts_that_unicode_lower_casing_would_merge_stay_two() {
    let Some(dc) = samba::dc() else { return };
    let server = TestServer::start(Options {
        directory: Some(dc.directory_section(std::slice::from_ref(&dc.url), "")),
        mode: "append",
        no_token: "password_only",
        ..Options::default()
    });
    let seed = enroll(&server.config, KALLE.0);
    // The KELVIN SIGN account is another person: no token of its own, so password_only lets it
    // in — it must not be taken for kalle (who would need his code) under any of its names.
    let ask = |user: &str, password: &str| ask_from("127.0.0.1:0", &server, user, password, None);
    for name in [KELVIN.0, KELVIN_UPN] {
        assert_eq!(oracle::code(&ask(name, KELVIN.1)), ACCESS_ACCEPT, "{name}");
    }
    assert!(audit_users(&server, 2).iter().all(|(user, reason)| user == KELVIN.0 && reason == "password_only"));
    // It enrolls a token of its own (the portal and the CLI resolve names the same way)...
    let planted = enroll(&server.config, KELVIN_UPN);
    let list = String::from_utf8(admin(&server.config, &["token", "list"]).stdout).unwrap();
    assert_eq!(list.lines().filter(|l| l.contains(KELVIN.0)).count(), 1, "filed under its own account: {list}");
    assert_eq!(list.lines().filter(|l| l.contains(" kalle ")).count(), 1, "and kalle's under his: {list}");
    // ...which is no second factor for kalle, whose own token still is.
    assert_eq!(oracle::code(&ask(KALLE.0, &format!("{}{}", KALLE.1, totp_code(&planted, 0)))), ACCESS_REJECT);
    assert_eq!(oracle::code(&ask(KALLE.0, &format!("{}{}", KALLE.1, totp_code(&seed, 0)))), ACCESS_ACCEPT);
    let audit = audit_users(&server, 4);
    assert_eq!(audit[2], (KALLE.0.into(), "wrong_code".into()));
}

//! A real Active Directory for the tests: a Samba AD DC provisioned into a temp dir, once per
//! test run (~5 s), serving LDAPS on 127.0.0.1:636 with a certificate from a CA the tests make,
//! so radmfa checks it as it would in production. The DC dies with the test process (a watchdog
//! shell kills it when its stdin, held by this process, closes).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ldap3::{LdapConnAsync, LdapConnSettings, Mod};

use crate::harness::{run, watchdog};

pub const BASE_DN: &str = "DC=example,DC=test";
pub const ADMIN_PASSWORD: &str = "Adm1n-Passw0rd!";
pub const SERVICE_DN: &str = "CN=svc-radmfa,CN=Users,DC=example,DC=test";
pub const SERVICE_PASSWORD: &str = "Svc-Passw0rd!42";
pub const VPN_USERS: &str = "CN=VPN-Users,CN=Users,DC=example,DC=test";

/// Test users: (sAMAccountName, password, given name, mobile, groups, userAccountControl and extra).
pub const ALICE: (&str, &str) = ("alice", "Alice-Passw0rd!");
pub const BOB: (&str, &str) = ("bob", "Bob-Passw0rd!");
pub const DORA_DISABLED: (&str, &str) = ("dora", "Dora-Passw0rd!");
pub const MIKE_MUST_CHANGE: (&str, &str) = ("mike", "Mike-Passw0rd!");
pub const EVE_EXPIRED: (&str, &str) = ("eve", "Eve-Passw0rd!");
pub const ASA: (&str, &str) = ("åsa.öberg", "Lösenord-ä1!");
/// henry's UPN has another prefix and a suffix no `[usernames] realms` lists: one account, many names.
pub const HENRY: (&str, &str) = ("henry", "Henry-Passw0rd!");
pub const HENRY_UPN: &str = "henry.hansson@corp.example";
/// Another account whose sAMAccountName is the local part of henry's UPN.
pub const HENRY_SHADOW: (&str, &str) = ("henry.hansson", "Shadow-Passw0rd!");
/// Two accounts AD keeps apart that Unicode lower-casing would merge: `kalle`, and `Kalle`
/// written with U+212A KELVIN SIGN.
/// In Remote-Staff, which is in Staff, which is in VPN-Users: a VPN user two levels down.
pub const NINA: (&str, &str) = ("nina", "Nina-Passw0rd!");
pub const REMOTE_STAFF: &str = "CN=Remote-Staff,CN=Users,DC=example,DC=test";
pub const STAFF: &str = "CN=Staff,CN=Users,DC=example,DC=test";
pub const KALLE: (&str, &str) = ("kalle", "Kalle-Passw0rd!");
/// For the help desk's view, each changed by its own test only: an agent in Helpdesk-Tier1,
/// which is in Helpdesk; and accounts to disable, expire and lock.
pub const HD_AGENT: (&str, &str) = ("hd.agent", "Agent-Passw0rd!");
pub const HELPDESK: &str = "CN=Helpdesk,CN=Users,DC=example,DC=test";
pub const HELPDESK_TIER1: &str = "CN=Helpdesk-Tier1,CN=Users,DC=example,DC=test";
pub const HD_TO_DISABLE: (&str, &str) = ("hd.disable", "Disable-Passw0rd!");
pub const HD_TO_EXPIRE: (&str, &str) = ("hd.expire", "Expire-Passw0rd!");
pub const HD_TO_LOCK: (&str, &str) = ("hd.lock", "Lock-Passw0rd!");
pub const KELVIN: (&str, &str) = ("\u{212a}alle", "Kelvin-Passw0rd!");
pub const KELVIN_UPN: &str = "kelvin.user@corp.example";

pub struct Dc {
    pub url: String,
    pub ca_file: PathBuf,
    dir: tempfile::TempDir,
    _watchdog: Mutex<(Child, ChildStdin)>,
}

impl Dc {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `[directory]` section for radmfa against this DC (or another URL list).
    pub fn directory_section(&self, urls: &[String], extra: &str) -> String {
        let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
        format!(
            "[directory]\nkind = \"ldap\"\nurls = [{}]\nbind_dn = \"{SERVICE_DN}\"\nbind_password = \"{SERVICE_PASSWORD}\"\nbase_dn = \"{BASE_DN}\"\nrequired_groups = [\"{VPN_USERS}\"]\nca_file = \"{}\"\ntimeout = \"2s\"\n{extra}\n",
            urls.join(", "),
            self.ca_file.display()
        )
    }
}

static DC: OnceLock<Result<Dc, String>> = OnceLock::new();

/// The shared DC, started on first use. `None` (test skipped) when Samba is not installed and
/// CI is not set; on CI a missing Samba fails the test.
pub fn dc() -> Option<&'static Dc> {
    crate::harness::system_tool("samba-tool", "samba samba-ad-dc samba-ad-provision")?;
    match DC.get_or_init(start) {
        Ok(dc) => Some(dc),
        Err(e) => panic!("the Samba AD DC did not start: {e}"),
    }
}

fn start() -> Result<Dc, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path();
    // A CA of our own and a DC certificate naming 127.0.0.1, so verification stays on.
    let ca_key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "radmfa test CA");
    let ca = ca_params.self_signed(&ca_key).map_err(|e| e.to_string())?;
    let dc_key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut dc_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "dc1.example.test".to_owned()]).map_err(|e| e.to_string())?;
    dc_params.subject_alt_names.push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    let dc_cert = dc_params.signed_by(&dc_key, &ca, &ca_key).map_err(|e| e.to_string())?;
    let ca_file = d.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).map_err(|e| e.to_string())?;
    std::fs::write(d.join("dc.pem"), dc_cert.pem()).map_err(|e| e.to_string())?;
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut key = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(d.join("dc.key"))
            .map_err(|e| e.to_string())?;
        key.write_all(dc_key.serialize_pem().as_bytes()).map_err(|e| e.to_string())?;
    }
    let opt = |o: String| format!("--option={o}");
    let started = Instant::now();
    run(Command::new("samba-tool")
        .args(["domain", "provision", "--realm=EXAMPLE.TEST", "--domain=EXAMPLE", "--server-role=dc", "--dns-backend=NONE"])
        .arg(format!("--adminpass={ADMIN_PASSWORD}"))
        .arg(format!("--targetdir={}", d.display()))
        // Pinned, so the machine's hostname (NetBIOS allows 15 characters) cannot break provisioning.
        .arg("--host-name=dc1")
        .arg(opt("netbios name=DC1".into()))
        .arg(opt("interfaces=lo".into()))
        .arg(opt("bind interfaces only=yes".into()))
        .arg(opt(format!("pid directory={}", d.display())))
        .arg(opt(format!("log file={}/log.%m", d.display())))
        .arg(opt("tls enabled=yes".into()))
        .arg(opt(format!("tls keyfile={}/dc.key", d.display())))
        .arg(opt(format!("tls certfile={}/dc.pem", d.display())))
        .arg(opt(format!("tls cafile={}", ca_file.display())))
        .arg(opt("server services=-dns -smb -nbt -winbindd -rpc -drepl -kcc -dnsupdate -wrepl -ntp_signd".into())))?;
    eprintln!("samba: provisioned in {:?}", started.elapsed());
    let conf = d.join("etc/smb.conf");
    let log = d.join("samba.log");
    let (watchdog, stdin) = watchdog("samba -i -M single -s \"$1\" > \"$2\" 2>&1", &[conf.as_os_str(), log.as_os_str()])?;
    let dc = Dc { url: "ldaps://127.0.0.1:636".into(), ca_file, dir, _watchdog: Mutex::new((watchdog, stdin)) };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(populate(&dc))?;
    eprintln!("samba: DC ready with test users after {:?}", started.elapsed());
    Ok(dc)
}

/// An attribute of an entry, read as the domain's Administrator (e.g. `badPwdCount`).
pub fn read_attribute(dc: &Dc, dn: &str, attribute: &str) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    runtime.block_on(async {
        let mut ldap = admin(dc).await.ok()?;
        let (entries, _) = ldap.search(dn, ldap3::Scope::Base, "(objectClass=*)", vec![attribute]).await.ok()?.success().ok()?;
        let entry = ldap3::SearchEntry::construct(entries.into_iter().next()?);
        entry.attrs.get(attribute)?.first().cloned()
    })
}

/// Runs `samba-tool` with `args` on the DC's own database (as an admin on the DC would).
pub fn samba_tool(dc: &Dc, args: &[&str]) -> Result<(), String> {
    let conf = dc.dir().join("etc/smb.conf");
    run(Command::new("samba-tool").args(args).arg("-s").arg(conf))
}

/// Binds as `dn` with `password` and returns the result code (49 for a wrong password).
pub fn bind_as(dc: &Dc, dn: &str, password: &str) -> Result<u32, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let (conn, mut ldap) = LdapConnAsync::with_settings(tls_settings(dc)?, &dc.url).await.map_err(|e| e.to_string())?;
        ldap3::drive!(conn);
        Ok(ldap.simple_bind(dn, password).await.map_err(|e| e.to_string())?.rc)
    })
}

/// Sets attributes on an entry as the domain's Administrator.
pub fn replace_attributes(dc: &Dc, dn: &str, values: &[(&str, &str)]) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut ldap = admin(dc).await?;
        let mods = values.iter().map(|(a, v)| Mod::Replace(a.as_bytes().to_vec(), set(&[v]))).collect();
        ldap.modify(dn, mods).await.map_err(|e| e.to_string())?.success().map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// Adds or removes a member of a group as the domain's Administrator.
pub fn set_member(dc: &Dc, group: &str, member: &str, present: bool) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut ldap = admin(dc).await?;
        let values = set(&[member]);
        let change = if present { Mod::Add(b"member".to_vec(), values) } else { Mod::Delete(b"member".to_vec(), values) };
        ldap.modify(group, vec![change]).await.map_err(|e| e.to_string())?.success().map_err(|e| e.to_string())?;
        Ok(())
    })
}

async fn admin(dc: &Dc) -> Result<ldap3::Ldap, String> {
    let (conn, mut ldap) = LdapConnAsync::with_settings(tls_settings(dc)?, &dc.url).await.map_err(|e| e.to_string())?;
    ldap3::drive!(conn);
    ldap.simple_bind("Administrator@example.test", ADMIN_PASSWORD)
        .await
        .map_err(|e| e.to_string())?
        .success()
        .map_err(|e| e.to_string())?;
    Ok(ldap)
}

/// LDAPS with the DC's certificate checked against the tests' CA.
fn tls_settings(dc: &Dc) -> Result<LdapConnSettings, String> {
    let pem = std::fs::read(&dc.ca_file).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(LdapConnSettings::new().set_config(std::sync::Arc::new(config)).set_conn_timeout(Duration::from_secs(5)))
}

/// AD's unicodePwd: the password in double quotes, UTF-16LE.
fn unicode_pwd(password: &str) -> Vec<u8> {
    format!("\"{password}\"").encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn set(values: &[&str]) -> HashSet<Vec<u8>> {
    values.iter().map(|v| v.as_bytes().to_vec()).collect()
}

async fn populate(dc: &Dc) -> Result<(), String> {
    let until = Instant::now() + Duration::from_secs(60);
    let mut ldap = loop {
        match admin(dc).await {
            Ok(ldap) => break ldap,
            Err(e) if Instant::now() > until => {
                let log = std::fs::read_to_string(dc.dir().join("samba.log")).unwrap_or_default();
                return Err(format!("no LDAPS bind within 60 s: {e}\n{log}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let group = |cn: &str| format!("CN={cn},CN=Users,{BASE_DN}");
    for cn in ["VPN-Users", "Staff", "Remote-Staff", "Citrix-Admins", "Finance", "Helpdesk", "Helpdesk-Tier1"] {
        let attrs = vec![(b"objectClass".to_vec(), set(&["top", "group"])), (b"sAMAccountName".to_vec(), set(&[cn]))];
        ldap.add(&group(cn), attrs).await.map_err(|e| e.to_string())?.success().map_err(|e| format!("add group {cn}: {e}"))?;
    }
    // Nesting: Staff is a member of VPN-Users, so Staff's members are VPN users through it.
    ldap.modify(&group("VPN-Users"), vec![Mod::Add(b"member".to_vec(), set(&[&group("Staff")]))])
        .await
        .map_err(|e| e.to_string())?
        .success()
        .map_err(|e| e.to_string())?;
    ldap.modify(&group("Staff"), vec![Mod::Add(b"member".to_vec(), set(&[&group("Remote-Staff")]))])
        .await
        .map_err(|e| e.to_string())?
        .success()
        .map_err(|e| e.to_string())?;
    ldap.modify(HELPDESK, vec![Mod::Add(b"member".to_vec(), set(&[HELPDESK_TIER1]))])
        .await
        .map_err(|e| e.to_string())?
        .success()
        .map_err(|e| e.to_string())?;
    // (name, password, given name, mobile, groups, extra attributes)
    type TestUser<'a> = (&'a str, &'a str, &'a str, &'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>);
    let users: Vec<TestUser> = vec![
        ("svc-radmfa", SERVICE_PASSWORD, "Service", "", vec![], vec![]),
        (ALICE.0, ALICE.1, "Alice", "+46701234567", vec!["Staff", "Citrix-Admins"], vec![]),
        (BOB.0, BOB.1, "Bob", "+46702222222", vec!["Finance"], vec![]),
        (DORA_DISABLED.0, DORA_DISABLED.1, "Dora", "", vec!["VPN-Users"], vec![("userAccountControl", "514")]),
        (MIKE_MUST_CHANGE.0, MIKE_MUST_CHANGE.1, "Mike", "", vec!["VPN-Users"], vec![("pwdLastSet", "0")]),
        (EVE_EXPIRED.0, EVE_EXPIRED.1, "Eve", "", vec!["VPN-Users"], vec![("accountExpires", "1")]),
        (ASA.0, ASA.1, "Åsa", "070-333 33 33", vec!["VPN-Users"], vec![]),
        (HENRY.0, HENRY.1, "Henry", "+46704444444", vec!["Staff"], vec![("userPrincipalName", HENRY_UPN)]),
        (HENRY_SHADOW.0, HENRY_SHADOW.1, "Shadow", "", vec!["VPN-Users"], vec![]),
        (NINA.0, NINA.1, "Nina", "", vec!["Remote-Staff"], vec![]),
        (KALLE.0, KALLE.1, "Kalle", "", vec!["VPN-Users"], vec![]),
        (KELVIN.0, KELVIN.1, "Kelvin", "", vec!["VPN-Users"], vec![("userPrincipalName", KELVIN_UPN)]),
        (HD_AGENT.0, HD_AGENT.1, "Agatha", "", vec!["Helpdesk-Tier1"], vec![("sn", "Helpwell"), ("displayName", "Helpwell, Agatha")]),
        (HD_TO_DISABLE.0, HD_TO_DISABLE.1, "Dana", "", vec![], vec![]),
        (HD_TO_EXPIRE.0, HD_TO_EXPIRE.1, "Ezra", "", vec![], vec![]),
        (HD_TO_LOCK.0, HD_TO_LOCK.1, "Lotta", "", vec![], vec![]),
    ];
    for (name, password, given, mobile, groups, extra) in users {
        let dn = format!("CN={name},CN=Users,{BASE_DN}");
        let mut attrs = vec![
            (b"objectClass".to_vec(), set(&["top", "person", "organizationalPerson", "user"])),
            (b"sAMAccountName".to_vec(), set(&[name])),
            (b"userPrincipalName".to_vec(), set(&[&format!("{name}@example.test")])),
            (b"givenName".to_vec(), set(&[given])),
            (b"sn".to_vec(), set(&["Testsson"])),
            (b"mail".to_vec(), set(&[&format!("{name}@example.test")])),
            (b"unicodePwd".to_vec(), [unicode_pwd(password)].into_iter().collect()),
            (b"userAccountControl".to_vec(), set(&["512"])),
        ];
        if !mobile.is_empty() {
            attrs.push((b"mobile".to_vec(), set(&[mobile])));
        }
        ldap.add(&dn, attrs).await.map_err(|e| e.to_string())?.success().map_err(|e| format!("add user {name}: {e}"))?;
        for (attr, value) in extra {
            ldap.modify(&dn, vec![Mod::Replace(attr.as_bytes().to_vec(), set(&[value]))])
                .await
                .map_err(|e| e.to_string())?
                .success()
                .map_err(|e| format!("{name} {attr}: {e}"))?;
        }
        for g in groups {
            ldap.modify(&group(g), vec![Mod::Add(b"member".to_vec(), set(&[&dn]))])
                .await
                .map_err(|e| e.to_string())?
                .success()
                .map_err(|e| format!("{name} into {g}: {e}"))?;
        }
    }
    Ok(())
}

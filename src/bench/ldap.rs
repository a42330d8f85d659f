//! `--kind ldap-bind`: the directory's own simple-bind rate on kept connections, the ceiling
//! for any RADIUS server that checks passwords by binding as the user.
//!
//! `concurrency` LDAPS connections are opened (and their TLS handshakes done) before the clock
//! starts; each then binds as one user after another from the seeds file, one bind outstanding
//! per connection, as fast as the directory answers. A refused bind counts as a reject, an
//! unanswered one as a timeout, a broken connection as invalid (it is opened again).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};

use super::{BenchOptions, Report};

#[derive(Debug, Clone)]
pub struct LdapBindOptions {
    /// ldaps://host[:port]
    pub url: String,
    /// The CA that signed the directory's certificate: it is verified, as radmfa does.
    pub ca_file: PathBuf,
    /// The bind name, `{user}` replaced by the (DN-escaped) user name, e.g.
    /// `CN={user},CN=Users,DC=example,DC=test` or `{user}@example.test`.
    pub dn_template: String,
}

async fn connect(url: &str, tls: &Arc<rustls::ClientConfig>, timeout: Duration) -> std::io::Result<Ldap> {
    let settings = LdapConnSettings::new().set_conn_timeout(timeout).set_config(Arc::clone(tls));
    let connecting = LdapConnAsync::with_settings(settings, url);
    let (conn, ldap) = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{url}: no connection within {timeout:?}")))?
        .map_err(|e| std::io::Error::other(format!("{url}: {e}")))?;
    ldap3::drive!(conn);
    Ok(ldap)
}

pub(super) async fn run(options: Arc<BenchOptions>, ldap: &LdapBindOptions) -> std::io::Result<Report> {
    if !ldap.url.starts_with("ldaps://") {
        return Err(std::io::Error::other("--ldap-url must be ldaps://host[:port]: passwords never travel in clear"));
    }
    if options.users.is_empty() {
        return Err(std::io::Error::other("no users to bind as: give --seeds"));
    }
    // The same TLS settings as radmfa's LDAP directory: the CA file's certificates as the only roots.
    let tls = Arc::new(crate::directory::ldap::client_config(&ldap.ca_file).map_err(std::io::Error::other)?);
    let mut connections = Vec::with_capacity(options.concurrency.max(1));
    for _ in 0..options.concurrency.max(1) {
        connections.push(connect(&ldap.url, &tls, options.timeout).await?);
    }
    let remaining = Arc::new(AtomicU64::new(options.count.unwrap_or(u64::MAX)));
    let cursor = Arc::new(AtomicUsize::new(0));
    let said = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let mut workers = tokio::task::JoinSet::new();
    for connection in connections {
        let worker = Worker {
            options: Arc::clone(&options),
            ldap: ldap.clone(),
            tls: Arc::clone(&tls),
            remaining: Arc::clone(&remaining),
            cursor: Arc::clone(&cursor),
            deadline,
            said: Arc::clone(&said),
        };
        workers.spawn(worker.run(connection));
    }
    let mut report = Report::default();
    while let Some(joined) = workers.join_next().await {
        report.merge(joined.map_err(std::io::Error::other)?);
    }
    report.elapsed = started.elapsed();
    report.latencies.sort_unstable();
    Ok(report)
}

struct Worker {
    options: Arc<BenchOptions>,
    ldap: LdapBindOptions,
    tls: Arc<rustls::ClientConfig>,
    remaining: Arc<AtomicU64>,
    cursor: Arc<AtomicUsize>,
    deadline: Option<Instant>,
    /// Errors printed so far: the first few say what went wrong, the counts say how often.
    said: Arc<AtomicU64>,
}

impl Worker {
    fn say(&self, what: &str) {
        if self.said.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("radmfa bench: {what}");
        }
    }

    async fn run(self, first: Ldap) -> Report {
        let mut report = Report::default();
        let mut connection = Some(first);
        loop {
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if self.remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
                break;
            }
            let open = connection.take().and_then(|mut ldap| (!ldap.is_closed()).then_some(ldap));
            let mut ldap = match open {
                Some(ldap) => ldap,
                None => match connect(&self.ldap.url, &self.tls, self.options.timeout).await {
                    Ok(ldap) => ldap,
                    Err(e) => {
                        self.say(&format!("reconnecting failed: {e}"));
                        report.invalid += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let user = &self.options.users[self.cursor.fetch_add(1, Ordering::Relaxed) % self.options.users.len()];
            let dn = self.ldap.dn_template.replace("{user}", &ldap3::dn_escape(user.user.as_str()));
            let sent_at = Instant::now();
            match tokio::time::timeout(self.options.timeout, ldap.simple_bind(&dn, user.password.expose())).await {
                Ok(Ok(result)) => {
                    report.latencies.push(sent_at.elapsed());
                    if result.rc == 0 {
                        report.accepts += 1;
                    } else {
                        report.rejects += 1;
                    }
                    connection = Some(ldap);
                }
                // Dropped, not kept: its answer may still come and be taken for the next bind's.
                Err(_) => report.timeouts += 1,
                Ok(Err(e)) => {
                    self.say(&format!("bind failed, opening a new connection: {e}"));
                    report.invalid += 1;
                }
            }
        }
        if let Some(mut ldap) = connection {
            let _ = ldap.unbind().await;
        }
        report
    }
}

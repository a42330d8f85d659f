//! `radmfa check-config`: loads the configuration, the users file or LDAP settings, the SMS
//! gateway and the key file as `serve` would, and reports problems and warnings without
//! starting anything (and what the dictionaries define that a reply cannot carry); also the
//! file-mode checks `serve` logs at start.

use std::io::Write;

use super::{CliError, missing_database, open_gateway};
use crate::config::Config;
use crate::directory::file::UsersFile;
use crate::directory::settings::DirectorySettings;
use crate::keys::KeyRing;

pub(super) fn check_config(path: &std::path::Path, connect: bool) -> Result<(), CliError> {
    let config = Config::load(path)?;
    let directory = match &config.directory {
        DirectorySettings::File { path } => format!("users file with {} user(s)", UsersFile::load(path)?.len()),
        DirectorySettings::Ldap(settings) => {
            crate::directory::ldap::LdapDirectory::new((**settings).clone())?;
            format!("LDAP directory at {}", settings.urls.join(", "))
        }
    };
    open_gateway(&config)?;
    let mut out = std::io::stdout().lock();
    let key = &config.store.key_file;
    match config.store.sqlite_path() {
        Some(db) if !key.exists() && !db.exists() => writeln!(
            out,
            "note: no key file and no database yet: `radmfa serve` creates {} and {} at first start",
            key.display(),
            db.display()
        )?,
        None if !key.exists() => return Err(super::shared_key_missing(&config).into()),
        _ => {
            if let Err(e) = KeyRing::load(key) {
                return Err(format!("{e}\n(create the key file with: radmfa keygen --config {})", path.display()).into());
            }
            if config.store.sqlite_path().is_some_and(|db| !db.exists()) {
                return Err(missing_database(&config).into());
            }
        }
    }
    let drop_ins = match config.drop_ins.len() {
        0 => String::new(),
        n => format!(" ({n} conf.d file(s))"),
    };
    writeln!(
        out,
        "{}: OK — {} listen address(es), {} client(s){drop_ins}, {directory}",
        path.display(),
        config.server.listen.len() + config.server.accounting_listen.len(),
        config.clients.len(),
    )?;
    if let Some(summary) = config.dictionary.unsupported_summary() {
        writeln!(out, "note: {summary}")?;
    }
    for warning in config.warnings.iter().chain(&file_mode_warnings(&config)) {
        writeln!(out, "warning: {warning}")?;
    }
    if config.clients.is_empty() {
        writeln!(out, "warning: no [[client]] is configured, so every request will be dropped")?;
    }
    if let Some(tls) = &config.server.tls {
        let names = tls.certificate.names.join(", ");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let days = (tls.certificate.not_after - now).div_euclid(86_400);
        writeln!(out, "RadSec: {} address(es), certificate {names}, {days} day(s) left", tls.listen.len())?;
        if let Some(warning) = tls.certificate.expiry_warning(now) {
            writeln!(out, "warning: {warning}")?;
        }
    }
    // Over TLS the secret is RFC 6614's fixed "radsec" and TLS protects the packet: the UDP
    // advice does not apply.
    for client in config.clients.iter().filter(|c| c.transport == crate::server::settings::Transport::Udp) {
        if client.secret.expose().len() < 16 {
            writeln!(out, "warning: client {:?} has a shared secret shorter than 16 characters", client.policy.name)?;
        }
        if !client.require_message_authenticator {
            writeln!(
                out,
                "warning: client {:?} does not require Message-Authenticator (BlastRADIUS, CVE-2024-3596); enable it once the NAS sends one",
                client.policy.name
            )?;
        }
    }
    if connect {
        out.flush()?;
        drop(out);
        connect_to_everything(&config)?;
    }
    Ok(())
}

/// `--connect`: each directory server as a login reaches it, and the database.
fn connect_to_everything(config: &Config) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut out = std::io::stdout().lock();
    let mut failed = Vec::new();
    if let DirectorySettings::Ldap(settings) = &config.directory {
        let directory = crate::directory::ldap::LdapDirectory::new((**settings).clone())?;
        for probe in runtime.block_on(directory.probe()) {
            let took = probe.took.as_millis();
            match &probe.outcome {
                Ok(()) => writeln!(out, "directory {}: OK in {took} ms — {}", probe.url, probe.steps.join("; "))?,
                Err(why) => {
                    let done = if probe.steps.is_empty() { String::new() } else { format!(" (after: {})", probe.steps.join("; ")) };
                    writeln!(out, "directory {}: FAILED in {took} ms — {why}{done}", probe.url)?;
                    failed.push(probe.url.clone());
                }
            }
        }
    }
    if config.store.sqlite_path().is_none() {
        let database = config.store.shown();
        let keys = super::open_keys(config)?;
        // An admin waits at the prompt: 10 s at most, whatever the store's timeout.
        let reached = runtime.block_on(async {
            let reaching = async {
                let store = super::connect_store(config, keys, false).await.map_err(|e| match e {
                    super::OpenFailed::Refused(why) => why,
                    super::OpenFailed::Store(e) => e.to_string(),
                })?;
                store.ping(crate::clock::now()).await.map_err(|e| e.to_string())
            };
            tokio::time::timeout(std::time::Duration::from_secs(10), reaching).await.unwrap_or_else(|_| Err("no answer within 10 s".into()))
        });
        match reached {
            Ok(()) => writeln!(out, "store {database}: OK — connected, schema current, clock checked")?,
            Err(why) => {
                writeln!(out, "store {database}: FAILED — {why}")?;
                failed.push(database);
            }
        }
    }
    if failed.is_empty() { Ok(()) } else { Err(format!("could not connect to: {}", failed.join(", ")).into()) }
}

/// Files holding secrets (the config, secret files, the users file's hashes) that others may
/// read. Group-readable is fine for the service's own group (`root:radmfa 0640`, as the unit's
/// install steps make them).
pub(crate) fn file_mode_warnings(config: &Config) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let own_group = std::fs::metadata("/proc/self").map(|m| m.gid()).ok();
    let mut warnings = Vec::new();
    for file in &config.secret_files {
        let Ok(meta) = std::fs::metadata(file) else { continue };
        let mode = meta.mode() & 0o777;
        let shown = file.display();
        if mode & 0o007 != 0 && reachable_by_others(file) {
            // Not `chmod o-rwx` alone: a root:root file would then be unreadable by the service.
            warnings.push(format!(
                "{shown} holds secrets and is accessible to everyone (mode {mode:o}): chgrp radmfa {shown} && chmod 0640 {shown} (or 0600, owned by the user radmfa runs as)"
            ));
        } else if mode & 0o070 != 0 && Some(meta.gid()) != own_group && group_name(meta.gid()).as_deref() != Some("radmfa") {
            let group = group_name(meta.gid()).unwrap_or_else(|| meta.gid().to_string());
            warnings.push(format!(
                "{shown} holds secrets and is accessible to group {group} (mode {mode:o}): make it 0600, or 0640 with the radmfa group"
            ));
        }
    }
    // Whoever can write where the config and its drop-ins are read can add a client.
    let folder = config.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    for dir in [folder.to_path_buf(), folder.join("conf.d")] {
        let Ok(meta) = std::fs::metadata(&dir) else { continue };
        if meta.is_dir() && meta.mode() & 0o002 != 0 && reachable_by_others(&dir.join(".")) {
            let shown = dir.display();
            warnings.push(format!("{shown} is writable by everyone, so anyone can add or change a client: chmod o-w {shown}"));
        }
    }
    warnings
}

/// Whether others can reach `file` at all: every folder above it must let them through (o+x).
fn reachable_by_others(file: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(absolute) = std::fs::canonicalize(file) else { return true };
    absolute.ancestors().skip(1).all(|dir| std::fs::metadata(dir).map_or(true, |m| m.mode() & 0o001 != 0))
}

fn group_name(gid: u32) -> Option<String> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == gid).then(|| name.to_owned())
    })
}

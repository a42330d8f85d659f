//! `radmfa bench`: its arguments, checked and turned into [`crate::bench`]'s options (the load
//! generator itself lives there).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use super::CliError;
use crate::bench::{BenchKind, BenchOptions, RadiusVersion, TlsOptions};
use crate::secret::Secret;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The server to load, IP:port [default: 127.0.0.1:1812, with --tls 127.0.0.1:2083].
    #[arg(long)]
    pub server: Option<SocketAddr>,
    /// The shared secret (or set RADMFA_BENCH_SECRET); not for --kind ldap-bind. With --tls
    /// "radsec" unless given (RFC 6614); RADIUS/1.1 uses none.
    #[arg(long, env = "RADMFA_BENCH_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    #[arg(long, default_value = "alice")]
    pub user: String,
    /// The password (or set RADMFA_BENCH_PASSWORD).
    #[arg(long, env = "RADMFA_BENCH_PASSWORD", hide_env_values = true, default_value = "")]
    pub password: String,
    /// What to send.
    #[arg(long, value_enum, default_value_t = KindArg::Access)]
    pub kind: KindArg,
    /// Requests kept outstanding at once.
    #[arg(long, short = 'n', default_value_t = 32)]
    pub concurrency: usize,
    /// How long to run, e.g. 10s.
    #[arg(long, short = 'd', value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// How many requests to send in all.
    #[arg(long, short = 'c')]
    pub count: Option<u64>,
    /// How long to wait for each answer.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub timeout: Duration,
    /// Sign requests with Message-Authenticator.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub message_authenticator: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// For --kind append|challenge|ldap-bind: a file of `user password base32-seed` lines.
    #[arg(long)]
    pub seeds: Option<PathBuf>,
    /// For --kind append|challenge: the time steps codes come from. `window`: now-1, now and
    /// now+1 (a TOTP window of ±1); `current`: the current step only (FreeRADIUS's rlm_totp).
    #[arg(long, value_enum, default_value_t = StepsArg::Window)]
    pub steps: StepsArg,
    /// For --kind append|challenge: users may use a step again (for a server without replay
    /// protection, such as rlm_totp); users are then taken in turn whatever their steps.
    #[arg(long)]
    pub reuse_steps: bool,
    /// For --kind append|challenge: no code is sent whose step ends within this plus 1.25 × the
    /// mean login latency so far (the server would check it too late).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "250ms")]
    pub step_margin: Duration,
    /// For --kind append|challenge: a file of the steps each user has used, read before the run
    /// and written after it, so runs one after another against one server send no replays.
    #[arg(long)]
    pub step_state: Option<PathBuf>,
    /// For --kind ldap-bind: the directory, ldaps://host[:port].
    #[arg(long)]
    pub ldap_url: Option<String>,
    /// The CA certificate(s), PEM, the server's certificate is verified with: the RadSec
    /// server's with --tls, the directory's with --kind ldap-bind.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// For --kind ldap-bind: the name to bind as, {user} replaced by the user name from --seeds,
    /// e.g. 'CN={user},CN=Users,DC=example,DC=test' or '{user}@example.test'.
    #[arg(long, default_value = "{user}")]
    pub bind_dn_template: String,
    /// For --kind access: a file of user names, one per line, used in turn (a spray over many
    /// accounts) instead of --user.
    #[arg(long)]
    pub users: Option<PathBuf>,
    /// Send open-loop at this many requests per second, whatever the answers (a flood), instead
    /// of keeping --concurrency outstanding.
    #[arg(long)]
    pub rate: Option<u32>,
    /// The local address to send from, e.g. 127.0.0.2:0 to be another NAS client.
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Over RadSec (RFC 6614) or RADIUS/1.1 (RFC 9765) instead of UDP; needs --cert, --key
    /// and --ca-file.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: the NAS's client certificate, PEM.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// With --tls: the key of --cert, PEM.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// With --tls: the name the server's certificate must carry [default: the --server address].
    #[arg(long)]
    pub server_name: Option<String>,
    /// With --tls: the RADIUS version to offer by ALPN, and to require the server to select
    /// [default: 1.1].
    #[arg(long, value_enum)]
    pub radius_version: Option<RadiusVersionArg>,
    /// With --tls: the TLS connections all requests are spread over, many outstanding on each
    /// [default: 1].
    #[arg(long)]
    pub connections: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RadiusVersionArg {
    /// radius/1.0: RADIUS/TLS as RFC 6614 has it (MD5 with the secret "radsec").
    #[value(name = "1.0")]
    V1_0,
    /// radius/1.1: RFC 9765 (TLS 1.3, a Token, no MD5, the password in the clear).
    #[value(name = "1.1")]
    V1_1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Access-Request with --user/--password.
    Access,
    /// Status-Server.
    StatusServer,
    /// Logins from --seeds: password and TOTP code in one request.
    Append,
    /// Logins from --seeds: password, then the code with the challenge's State.
    Challenge,
    /// LDAP simple binds as the users of --seeds on --concurrency kept connections to
    /// --ldap-url: the directory's own bind rate, no RADIUS.
    LdapBind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StepsArg {
    /// now-1, now, now+1.
    Window,
    /// The current step only.
    Current,
}

pub(super) fn bench(args: BenchArgs) -> Result<(), CliError> {
    let json = args.json;
    let options = options(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let transport = match &options.tls {
        Some(tls) => {
            let s = if tls.connections == 1 { "" } else { "s" };
            format!("{} over {} TLS connection{s}", tls.version, tls.connections)
        }
        None => "udp".to_owned(),
    };
    let summary = match (&options.ldap, options.rate) {
        (Some(ldap), _) => format!("{} → simple binds, {} kept connections", ldap.url, options.concurrency),
        (None, Some(rate)) => format!("{} → {:?}, {rate}/s open-loop, {transport}", options.server, options.kind),
        (None, None) => format!("{} → {:?}, {} outstanding, {transport}", options.server, options.kind, options.concurrency),
    };
    let report = runtime.block_on(crate::bench::run(options))?;
    if json {
        writeln!(std::io::stdout(), "{}", report.to_json())?;
    } else {
        writeln!(std::io::stdout(), "radmfa bench: {summary}\n{report}")?;
    }
    Ok(())
}

/// The arguments, checked against each other, as the load generator's options.
fn options(args: BenchArgs) -> Result<BenchOptions, CliError> {
    if args.duration.is_none() && args.count.is_none() {
        return Err("give --duration or --count".into());
    }
    let kind = match args.kind {
        KindArg::Access => BenchKind::Access,
        KindArg::StatusServer => BenchKind::StatusServer,
        KindArg::Append => BenchKind::Append,
        KindArg::Challenge => BenchKind::Challenge,
        KindArg::LdapBind => BenchKind::LdapBind,
    };
    let (users, names) = read_users(&args, kind)?;
    if args.rate.is_some() && !matches!(kind, BenchKind::Access | BenchKind::StatusServer) {
        return Err("--rate goes with --kind access or status-server".into());
    }
    let tls = tls_options(&args, kind)?;
    let ldap = match (kind, args.ldap_url, &tls, args.ca_file) {
        (BenchKind::LdapBind, Some(url), _, Some(ca_file)) => {
            Some(crate::bench::LdapBindOptions { url, ca_file, dn_template: args.bind_dn_template })
        }
        (BenchKind::LdapBind, _, _, _) => return Err("--kind ldap-bind needs --ldap-url and --ca-file".into()),
        (_, None, Some(_), _) | (_, None, None, None) => None,
        _ => return Err("--ldap-url goes with --kind ldap-bind, --ca-file with it or --tls".into()),
    };
    let secret = match (args.secret, kind, &tls) {
        (Some(secret), _, _) => secret,
        (None, BenchKind::LdapBind, _) => String::new(),
        // RFC 6614 §2.3: the secret of RADIUS/TLS is "radsec" (RADIUS/1.1 uses none).
        (None, _, Some(_)) => "radsec".to_owned(),
        (None, _, None) => return Err("give --secret (or set RADMFA_BENCH_SECRET)".into()),
    };
    if tls.as_ref().is_some_and(|t| t.version == RadiusVersion::V1_1)
        && kind == BenchKind::Access
        && !(1..=crate::radius::v11::MAX_USER_PASSWORD).contains(&args.password.len())
    {
        return Err("with --radius-version 1.1 the password goes in the clear, and must be 1 to 128 octets (RFC 9765 §5.1.1)".into());
    }
    let default_port = if tls.is_some() { 2083 } else { 1812 };
    let totp = crate::otp::TotpParams::default();
    let steps = crate::bench::StepOptions {
        policy: match args.steps {
            StepsArg::Window => crate::bench::StepPolicy::Window,
            StepsArg::Current => crate::bench::StepPolicy::Current,
        },
        reuse: args.reuse_steps,
        margin: args.step_margin,
        period: totp.period,
    };
    let options = BenchOptions {
        server: args.server.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default_port))),
        secret: Secret::new(secret.into_bytes()),
        user: args.user,
        password: Secret::new(args.password.into_bytes()),
        kind,
        concurrency: args.concurrency,
        duration: args.duration,
        count: args.count,
        timeout: args.timeout,
        message_authenticator: args.message_authenticator,
        users,
        names,
        rate: args.rate,
        bind: args.bind,
        totp,
        steps,
        step_state: args.step_state,
        ldap,
        tls,
    };
    Ok(options)
}

/// `--tls` and the flags that go with it, checked.
fn tls_options(args: &BenchArgs, kind: BenchKind) -> Result<Option<TlsOptions>, CliError> {
    if !args.tls {
        let stray = [
            ("--cert", args.cert.is_some()),
            ("--key", args.key.is_some()),
            ("--server-name", args.server_name.is_some()),
            ("--radius-version", args.radius_version.is_some()),
            ("--connections", args.connections.is_some()),
        ];
        if let Some((flag, _)) = stray.iter().find(|(_, given)| *given) {
            return Err(format!("{flag} goes with --tls").into());
        }
        return Ok(None);
    }
    if kind == BenchKind::LdapBind {
        return Err("--tls is for RADIUS, not --kind ldap-bind".into());
    }
    if args.rate.is_some() {
        return Err("--rate (open loop) goes over UDP only: with --tls, keep --concurrency outstanding instead".into());
    }
    let (Some(cert_file), Some(key_file), Some(ca_file)) = (&args.cert, &args.key, &args.ca_file) else {
        return Err("--tls needs --cert and --key (the NAS's certificate) and --ca-file (the CA of the server's)".into());
    };
    let connections = args.connections.unwrap_or(1);
    if connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    Ok(Some(TlsOptions {
        cert_file: cert_file.clone(),
        key_file: key_file.clone(),
        ca_file: ca_file.clone(),
        server_name: args.server_name.clone(),
        version: match args.radius_version {
            Some(RadiusVersionArg::V1_0) => RadiusVersion::V1_0,
            Some(RadiusVersionArg::V1_1) | None => RadiusVersion::V1_1,
        },
        connections,
    }))
}

/// The logins of `--seeds` (users with TOTP seeds) and the names of `--users`.
fn read_users(args: &BenchArgs, kind: BenchKind) -> Result<(Vec<crate::bench::BenchUser>, Vec<String>), CliError> {
    let users = match (&args.seeds, kind) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            crate::bench::read_seeds(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        (None, BenchKind::Append | BenchKind::Challenge | BenchKind::LdapBind) => {
            return Err("--kind append, challenge and ldap-bind need --seeds FILE".into());
        }
        (None, _) => Vec::new(),
    };
    let names = match &args.users {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
        }
        None => Vec::new(),
    };
    Ok((users, names))
}

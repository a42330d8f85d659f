//! `radmfa bench`: its arguments, checked and turned into [`crate::bench`]'s options (the load
//! generator itself lives there).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use super::CliError;
use crate::bench::{BenchKind, BenchOptions};
use crate::secret::Secret;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The server to load, IP:port.
    #[arg(long, default_value = "127.0.0.1:1812")]
    pub server: SocketAddr,
    /// The shared secret (or set RADMFA_BENCH_SECRET); not for --kind ldap-bind.
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
    /// For --kind ldap-bind: the CA certificate(s), PEM, the directory's certificate is verified with.
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
    let summary = match (&options.ldap, options.rate) {
        (Some(ldap), _) => format!("{} → simple binds, {} kept connections", ldap.url, options.concurrency),
        (None, Some(rate)) => format!("{} → {:?}, {rate}/s open-loop", options.server, options.kind),
        (None, None) => format!("{} → {:?}, {} outstanding", options.server, options.kind, options.concurrency),
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
    let ldap = match (kind, args.ldap_url, args.ca_file) {
        (BenchKind::LdapBind, Some(url), Some(ca_file)) => {
            Some(crate::bench::LdapBindOptions { url, ca_file, dn_template: args.bind_dn_template })
        }
        (BenchKind::LdapBind, _, _) => return Err("--kind ldap-bind needs --ldap-url and --ca-file".into()),
        (_, None, None) => None,
        _ => return Err("--ldap-url and --ca-file go with --kind ldap-bind".into()),
    };
    let secret = match (args.secret, kind) {
        (Some(secret), _) => secret,
        (None, BenchKind::LdapBind) => String::new(),
        (None, _) => return Err("give --secret (or set RADMFA_BENCH_SECRET)".into()),
    };
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
        server: args.server,
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
    };
    Ok(options)
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

//! `radmfa token import`: tokens made elsewhere — seeds exported from the product radmfa
//! replaces, or delivered with hardware tokens — filed in bulk. The whole file is read and
//! checked first, each token's owner decided (see `accounts`), and what the store would do
//! previewed; a file with any refused entry writes nothing (unless `--skip-invalid`), nor does
//! `--dry-run`. Then the tokens are filed through `auth` in batches, one store transaction each.
//! Running the same import again adds nothing: a seed its account has is skipped.

mod accounts;
mod report;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use hmac::{Hmac, Mac};
use zeroize::Zeroizing;

use super::admin::{lock_keys, runtime};
use super::{CliError, ConfigArg, open_authenticator};
use crate::auth::{Authenticator, ExistingToken, shown};
use crate::config::Config;
use crate::import::{self, Entry, Options, Place};
use crate::secret::Secret;
use crate::store::{Filing, UnixTime};
use accounts::{Holders, Owner};
use report::Report;

/// Tokens filed per store transaction.
const BATCH: usize = 1_000;

/// The largest pre-shared-key or `--map` file read.
const MAX_SIDE_FILE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// One otpauth://totp/Issuer:user?secret=... URI a line (# comments and blank lines skipped).
    Otpauth,
    /// A header line naming the columns: user and secret (base32), and optionally name, digits,
    /// period and algorithm, in any order; comma, semicolon or tab separated.
    Csv,
    /// An RFC 6030 PSKC KeyContainer, as hardware TOTP tokens are delivered (plain, or
    /// AES-CBC with a pre-shared key: --psk-file).
    Pskc,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The file's format.
    #[arg(long, value_enum)]
    pub format: ImportFormat,
    /// The file to import.
    pub file: PathBuf,
    /// pskc: a file holding the container's pre-shared key, in hex.
    #[arg(long, value_name = "FILE")]
    pub psk_file: Option<PathBuf>,
    /// pskc: a CSV file with a serial and a user column giving each token's user by its
    /// DeviceInfo/SerialNo (for tokens delivered without a UserId; it wins over the file's).
    #[arg(long, value_name = "FILE")]
    pub map: Option<PathBuf>,
    /// The name of tokens the file gives none (csv without a name, otpauth without an issuer).
    #[arg(long, default_value = "Authenticator")]
    pub name: String,
    /// Look every user up in the directory (a few at a time) and file each token under the
    /// account; unknown users are refused. Without it no directory is asked: each token is
    /// filed under the name lower-cased (our realm dropped), where the user's first login
    /// finds it and moves it to the account.
    #[arg(long)]
    pub check_users: bool,
    /// Import the valid entries of a file that has refused ones. Without it, a file with any
    /// refused entry writes nothing.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Read and check everything (and look users up, with --check-users); write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Usable tokens per user at most [default: the portal's max_tokens, or 5].
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<usize>,
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn import(args: ImportArgs) -> Result<(), CliError> {
    let config = Config::load(&args.config.config)?;
    let file = args.file.display().to_string();
    warn_if_others_read(&args.file);
    let text = read_text(&args.file)?;
    let psk = args.psk_file.as_deref().map(read_psk).transpose()?;
    let serials = args.map.as_deref().map(read_map).transpose()?;
    let options = Options { default_name: &args.name, psk: psk.as_ref(), serials: serials.as_ref() };
    let entries = match args.format {
        ImportFormat::Otpauth => Ok(import::otpauth::read(&text, &options)),
        ImportFormat::Csv => import::table::read(&text, &options),
        ImportFormat::Pskc => import::pskc::read(&text, &options),
    }
    .map_err(|e| format!("{file}: {e}"))?;
    drop(text);
    let max_tokens =
        args.max_tokens.or(config.portal.as_ref().map(|p| p.max_tokens)).unwrap_or(crate::portal::settings::DEFAULT_MAX_TOKENS);
    // Shared with other commands that seal; `keys rotate` waits.
    let _keys_kept = if args.dry_run { None } else { Some(lock_keys(&config, false)?) };
    let now = crate::clock::now();
    runtime()?.block_on(run(&config, &args, Report::new(file), entries, max_tokens, now))
}

/// A token ready to file, and where it came from.
struct Candidate {
    ordinal: usize,
    place: Place,
    /// The user as the file names them.
    named: String,
    token: ExistingToken,
}

async fn run(
    config: &Config,
    args: &ImportArgs,
    mut report: Report,
    entries: Vec<Entry>,
    max_tokens: usize,
    now: UnixTime,
) -> Result<(), CliError> {
    let (auth, store) = open_authenticator(config).await?;
    let names: BTreeSet<String> = entries.iter().filter_map(|e| e.read.as_ref().ok().map(|t| t.user.clone())).collect();
    let owners = accounts::owners(&auth, names, args.check_users).await?;
    let holders = Holders::of(store.list_tokens(None).await?.iter().map(|t| t.username.as_str()));
    let total = entries.len();
    // Every seed the store holds, by owner: a seed is one token's, across files and runs too.
    let mut seeds = SeedIndex::new();
    let keys = super::open_keys(config)?;
    for row in store.export().await?.tokens {
        if let Some(seed) = crate::store::sealed::open_seed(&keys, &row) {
            seeds.first_other_owner(&seed, &row.username, &Place::Stored(row.id));
        }
    }
    let candidates = candidates(entries, &owners, &holders, args.check_users, seeds, &mut report);

    // What the store would do, before anything is written.
    let tokens: Vec<ExistingToken> = candidates.iter().map(|c| c.token.clone()).collect();
    let mut to_file = Vec::new();
    for (candidate, filing) in candidates.into_iter().zip(auth.sort_tokens(&tokens, max_tokens).await?) {
        match filing {
            Filing::Added => to_file.push(candidate),
            Filing::AlreadyThere => report.skipped += 1,
            Filing::OverLimit => report.refuse(candidate.ordinal, candidate.place, Some(&candidate.named), over_limit(max_tokens)),
        }
    }
    drop(tokens);
    report.print_refusals()?;
    let refused_any = report.refused() > 0 && !args.skip_invalid;
    if args.dry_run {
        report.added = to_file.len();
        writeln!(std::io::stdout(), "{}", report.summary(true))?;
        return if refused_any { Err(format!("{} of {total} entries would be refused", report.refused()).into()) } else { Ok(()) };
    }
    if refused_any {
        return Err(format!(
            "nothing was written: {} of {total} entries refused (see above); fix them, or pass --skip-invalid to import the others",
            report.refused()
        )
        .into());
    }
    if args.check_users {
        move_other_spellings(&auth, &to_file, &owners, &holders).await?;
    }
    file_in_batches(&auth, to_file, max_tokens, now, &mut report).await?;
    report.print_refusals()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", report.summary(false))?;
    let file = args.file.display();
    writeln!(out, "{file} holds the users' TOTP seeds: delete it now, and its copies (shred -u {file})")?;
    Ok(())
}

/// The entries that may be filed, each under its owner; the others refused in `report`.
fn candidates(
    entries: Vec<Entry>,
    owners: &HashMap<String, Result<Owner, String>>,
    holders: &Holders,
    checked: bool,
    mut seeds: SeedIndex,
    report: &mut Report,
) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    for (ordinal, Entry { place, read }) in entries.into_iter().enumerate() {
        let imported = match read {
            Ok(imported) => imported,
            Err(refused) => {
                report.refuse(ordinal, place, refused.user.as_deref(), refused.reason);
                continue;
            }
        };
        let named = imported.user;
        let account = match owners.get(&named) {
            Some(Ok(owner)) => owner.account.clone(),
            Some(Err(why)) => {
                report.refuse(ordinal, place, Some(&named), why.as_str());
                continue;
            }
            None => {
                report.refuse(ordinal, place, Some(&named), "no owner decided");
                continue;
            }
        };
        // Filed under this spelling, the tokens a login moved to the account would be filed
        // twice when it moves these too.
        if let Some(held) = holders.other_spelling(&account).filter(|_| !checked) {
            let why = format!("{} holds tokens already: if that is this user's account, import with --check-users", shown(held));
            report.refuse(ordinal, place, Some(&named), why);
            continue;
        }
        if let Some(first) = seeds.first_other_owner(&imported.secret, &account, &place) {
            report.refuse(ordinal, place, Some(&named), format!("the same seed as {first}, another user's: a seed is one token's"));
            continue;
        }
        let token = ExistingToken { account, name: imported.name, params: imported.params, secret: imported.secret };
        candidates.push(Candidate { ordinal, place, named, token });
    }
    candidates
}

fn over_limit(max_tokens: usize) -> String {
    format!("the user would have more than {max_tokens} usable tokens (--max-tokens, or the portal's max_tokens)")
}

/// With `--check-users`: tokens a name's earlier spelling holds are moved to its account first,
/// as its next login would, so that a seed among them is not filed twice.
async fn move_other_spellings(
    auth: &Authenticator,
    to_file: &[Candidate],
    owners: &HashMap<String, Result<Owner, String>>,
    holders: &Holders,
) -> Result<(), CliError> {
    let named: BTreeSet<&str> = to_file.iter().map(|c| c.named.as_str()).collect();
    for owner in named.into_iter().filter_map(|n| owners.get(n)?.as_ref().ok()) {
        let legacy = crate::auth::UsernameRules::legacy_key(&owner.login);
        if legacy != owner.account && holders.holds(&legacy) {
            auth.resolve(&owner.login)
                .await
                .map_err(|reason| format!("the directory could not be asked ({}); nothing was written", reason.as_str()))?;
        }
    }
    Ok(())
}

async fn file_in_batches(
    auth: &Authenticator,
    to_file: Vec<Candidate>,
    max_tokens: usize,
    now: UnixTime,
    report: &mut Report,
) -> Result<(), CliError> {
    let mut rest = to_file.into_iter().peekable();
    while rest.peek().is_some() {
        let batch: Vec<Candidate> = rest.by_ref().take(BATCH).collect();
        let (places, tokens): (Vec<_>, Vec<_>) = batch.into_iter().map(|c| ((c.ordinal, c.place, c.named), c.token)).unzip();
        let filings = auth
            .file_tokens(tokens, max_tokens, now)
            .await
            .map_err(|e| format!("{e}: {} token(s) were filed before this; running the same import again files the rest", report.added))?;
        for ((ordinal, place, named), filing) in places.into_iter().zip(filings) {
            match filing {
                Filing::Added => report.added += 1,
                Filing::AlreadyThere => report.skipped += 1,
                // Tokens added since the preview (the portal, another import).
                Filing::OverLimit => report.refuse(ordinal, place, Some(&named), over_limit(max_tokens)),
            }
        }
    }
    Ok(())
}

/// Which user each seed of the file was first given to, by a keyed hash of the seed (random
/// per run), so seeds are never compared or kept in the clear.
struct SeedIndex {
    key: [u8; 32],
    first: HashMap<[u8; 32], (String, Place)>,
}

impl SeedIndex {
    fn new() -> Self {
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self { key, first: HashMap::new() }
    }

    /// Where the file gave this seed to another account before, if it did.
    fn first_other_owner(&mut self, seed: &Secret<Vec<u8>>, account: &str, place: &Place) -> Option<Place> {
        let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(&self.key) else { return None };
        mac.update(crate::otp::totp::effective_seed(seed.expose()));
        let digest: [u8; 32] = mac.finalize().into_bytes().into();
        match self.first.get(&digest) {
            Some((owner, first)) if owner != account => Some(first.clone()),
            Some(_) => None,
            None => {
                self.first.insert(digest, (account.to_owned(), place.clone()));
                None
            }
        }
    }
}

/// A file of seeds others can read is said at once (they may have copied it already).
fn warn_if_others_read(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else { return };
    let mode = meta.mode() & 0o777;
    if mode & 0o044 != 0 {
        let shown = path.display();
        eprintln!(
            "warning: {shown} holds secrets and others can read it (mode {mode:o}): chmod 600 {shown}, and delete it after the import"
        );
    }
}

/// A file's bytes, at most `limit`, in memory zeroed when dropped.
fn read_bounded(path: &Path, limit: u64) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| format!("{shown}: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("{shown}: larger than the {} MiB read at once: split it", limit / (1024 * 1024)).into());
    }
    Ok(bytes)
}

/// The file to import as text.
fn read_text(path: &Path) -> Result<Zeroizing<String>, CliError> {
    let bytes = read_bounded(path, import::MAX_FILE_BYTES)?;
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(Zeroizing::new(text.to_owned())),
        Err(e) => {
            let line = bytes[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count() + 1;
            Err(format!("{}: line {line}: not UTF-8 text (save the file as UTF-8)", path.display()).into())
        }
    }
}

/// `--psk-file`: the pre-shared key, hex (spaces and line breaks allowed).
fn read_psk(path: &Path) -> Result<Secret<Vec<u8>>, CliError> {
    warn_if_others_read(path);
    let bytes = read_bounded(path, MAX_SIDE_FILE_BYTES)?;
    let hex: Zeroizing<Vec<u8>> = Zeroizing::new(bytes.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect());
    match data_encoding::HEXLOWER_PERMISSIVE.decode(&hex) {
        Ok(key) if !key.is_empty() => Ok(Secret::new(key)),
        _ => Err(format!("{}: not a key in hex (such as 32 hex digits for AES-128)", path.display()).into()),
    }
}

/// `--map`: each serial's user.
fn read_map(path: &Path) -> Result<HashMap<String, String>, CliError> {
    let bytes = read_bounded(path, MAX_SIDE_FILE_BYTES)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
    Ok(import::table::serials(text).map_err(|e| format!("{}: {e}", path.display()))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::{Imported, Refused};
    use crate::otp::TotpParams;

    fn entry(line: u64, user: &str, seed: &[u8]) -> Entry {
        let secret = Secret::new(seed.to_vec());
        Entry {
            place: Place::Line(line),
            read: Ok(Imported { user: user.into(), name: "Old VPN".into(), params: TotpParams::default(), secret }),
        }
    }

    fn owner(account: &str) -> Result<Owner, String> {
        Ok(Owner { account: account.into(), login: crate::auth::UsernameRules::default().login_name(account) })
    }

    #[test]
    fn entries_that_would_file_a_seed_twice_are_refused_before_anything_is_written() {
        let entries = vec![
            entry(2, "alice", b"seed-alice-0123456789"),
            Entry { place: Place::Line(3), read: Err(Refused::new(Some("bob"), "no secret")) },
            entry(4, "carol", b"seed-alice-0123456789"),
            entry(5, "jsmith", b"seed-jsmith-0123456789"),
            entry(6, "nobody", b"seed-nobody-0123456789"),
            entry(7, "alice", b"seed-alice-0123456789"),
        ];
        let owners = HashMap::from([
            ("alice".to_owned(), owner("alice")),
            ("carol".to_owned(), owner("carol")),
            ("jsmith".to_owned(), owner("jsmith")),
            ("nobody".to_owned(), Err("the directory has no such user".to_owned())),
        ]);
        // A login moved jsmith's earlier tokens to the account JSmith.
        let holders = Holders::of(["JSmith"]);
        let mut report = Report::new("tokens.csv".into());
        let kept = candidates(entries, &owners, &holders, false, SeedIndex::new(), &mut report);
        let kept: Vec<(u64, &str)> = kept
            .iter()
            .map(|c| {
                (
                    match c.place {
                        Place::Line(n) => n,
                        Place::KeyPackage { .. } | Place::Stored(_) => 0,
                    },
                    c.token.account.as_str(),
                )
            })
            .collect();
        // Alice's seed twice for alice is the store's to skip; for carol it is refused.
        assert_eq!(kept, [(2, "alice"), (7, "alice")]);
        assert_eq!(report.refused(), 4);
        let reasons: Vec<String> = report.pending.iter().map(|r| format!("{}: {}", r.place, r.reason)).collect();
        assert_eq!(
            reasons,
            [
                "line 3: no secret",
                "line 4: the same seed as line 2, another user's: a seed is one token's",
                "line 5: JSmith holds tokens already: if that is this user's account, import with --check-users",
                "line 6: the directory has no such user",
            ]
        );
        // With --check-users, jsmith's account is what the directory said.
        let mut report = Report::new("tokens.csv".into());
        let kept = candidates(vec![entry(5, "jsmith", b"seed-jsmith-0123456789")], &owners, &holders, true, SeedIndex::new(), &mut report);
        assert_eq!((kept.len(), report.refused()), (1, 0));
    }
}

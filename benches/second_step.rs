//! The second step alone: State open + single use, lockout check, the user's tokens, TOTP over the
//! window, the replay update and the success reset — everything but the directory (an in-memory
//! one stands in) and the network. SQLite on disk, as in production.
//!
//! `cargo bench --bench second_step [-- USERS CONCURRENCY...]` prints requests/s, p50 and p99
//! per concurrency, and how busy the store's thread was, so one can see whether it limits.
//! With `RADMFA_BENCH_POSTGRES` set to a `[store]` URL (its password in
//! `RADMFA_STORE_PASSWORD`), the store is that PostgreSQL database instead (a new, empty one);
//! `RADMFA_BENCH_NODES=2` then runs two stores (two pools, as two nodes) taking turns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a measurement harness: failing loudly is right

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use radmfa::auth::messages::{Language, Messages};
use radmfa::auth::{AuthSettings, Authenticator, ClientPolicy, Method, Mode, NoToken, Outcome, Request, Services, UsernameRules};
use radmfa::directory::{Account, Directory, DirectoryError, LoginName, PasswordCheck, UserProfile};
use radmfa::keys::{KeyRing, Keys};
use radmfa::otp::TotpParams;
use radmfa::secret::Secret;
use radmfa::sms::LogGateway;
use radmfa::store::sqlite::SqliteStore;
use radmfa::store::{LockoutPolicy, NewToken, SmsLimits, Store};

/// Every user exists and every password is right: this measures what comes after the directory.
struct InstantDirectory;

#[async_trait]
impl Directory for InstantDirectory {
    async fn find(&self, login: &LoginName) -> Result<Option<Account>, DirectoryError> {
        let profile = UserProfile { username: login.name().to_owned(), ..Default::default() };
        Ok(Some(Account { id: login.name().to_owned(), locator: login.name().to_owned(), profile, primary_group: None }))
    }
    async fn check_password(&self, account: &Account, _: &[u8], _: bool) -> Result<PasswordCheck, DirectoryError> {
        Ok(PasswordCheck::Valid(account.profile.clone()))
    }
    async fn groups(&self, _: &Account) -> Result<Vec<String>, DirectoryError> {
        Ok(Vec::new())
    }
}

fn settings() -> AuthSettings {
    AuthSettings {
        totp: radmfa::otp::TotpParams::default(),
        totp_window: 1,
        lockout: LockoutPolicy {
            max_failures: 5,
            duration: Duration::from_secs(300),
            max_duration: Duration::from_secs(3600),
            forget_after: None,
        },
        password_lockout: LockoutPolicy {
            max_failures: 4,
            duration: Duration::from_secs(900),
            max_duration: Duration::from_secs(3600),
            forget_after: Some(Duration::from_secs(900)),
        },
        challenge_ttl: Duration::from_secs(600),
        sms_validity: Duration::from_secs(300),
        sms_tries: 3,
        sms_limits: SmsLimits { per_user: 3, per_user_window: Duration::from_secs(900), global_per_minute: 30 },
        sms_answer_within: Duration::from_secs(2),
        default_country_code: "46".into(),
        messages: Messages::for_language(Language::En),
        usernames: UsernameRules::default(),
        // As the config sets it: Accepts are kept for other nodes only on a shared database.
        retry_window: if std::env::var("RADMFA_BENCH_POSTGRES").is_ok() { Duration::from_secs(30) } else { Duration::ZERO },
        helpdesk: Default::default(),
    }
}

fn request(client: &Arc<ClientPolicy>, user: &str, answer: &str, state: Option<Vec<u8>>) -> Request {
    Request {
        user_name: Some(user.as_bytes().to_vec()),
        password: Some(Secret::new(answer.as_bytes().to_vec())),
        method: Method::Pap,
        state,
        client: Arc::clone(client),
        authenticator: rand::random(),
        hidden_password: Vec::new(),
        nas_ip: None,
        nas_identifier: None,
        calling_station: None,
        arrived: std::time::Instant::now(),
        answer_room: 4096 - 38,
    }
}

/// `nodes` PostgreSQL stores (each its own pool) on the database at `url`, emptied first.
async fn postgres_stores(url: &str, nodes: usize, keys: &Arc<Keys>) -> Vec<Arc<dyn Store>> {
    use radmfa::store::postgres::PostgresStore;
    use radmfa::store::settings::{BackendSettings, StoreSection};
    let text = format!("kind = \"postgres\"\nurl = \"{url}\"\npool_size = 32\n");
    let section: StoreSection = toml::from_str(&text).unwrap();
    let env = |name: &str| std::env::var(name).ok();
    let sources = radmfa::settings::Sources { base: std::path::Path::new("."), env: &env };
    let BackendSettings::Postgres(settings) = section.build(&sources).unwrap().backend else { unreachable!() };
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..nodes.max(1) {
        stores.push(Arc::new(PostgresStore::create(&settings, Arc::clone(keys)).await.unwrap()));
    }
    assert!(stores[0].list_tokens(None).await.unwrap().is_empty(), "RADMFA_BENCH_POSTGRES must name a new, empty database");
    stores
}

/// CPU time (user + system) of this whole process, from /proc.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(Duration::from_secs_f64(ticks / 100.0))
}

/// CPU time (user + system) of the thread named `name`, from /proc.
fn thread_cpu(name: &str) -> Option<Duration> {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        return Some(Duration::from_secs_f64(ticks / ticks_per_second));
    }
    None
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test` this runs as a quick smoke test.
    let measuring = std::env::args().any(|a| a == "--bench");
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let users = args.first().copied().unwrap_or(if measuring { 40_000 } else { 400 });
    let levels: Vec<usize> = if args.len() > 1 { args[1..].to_vec() } else { vec![1, 16, 64, 256] };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(Keys::fixed(KeyRing::generate("k1")));
    let stores: Vec<Arc<dyn Store>> = match std::env::var("RADMFA_BENCH_POSTGRES") {
        Ok(url) => {
            let nodes: usize = std::env::var("RADMFA_BENCH_NODES").ok().and_then(|n| n.parse().ok()).unwrap_or(1);
            runtime.block_on(postgres_stores(&url, nodes, &keys))
        }
        Err(_) => vec![Arc::new(SqliteStore::create(&dir.path().join("bench.db"), Arc::clone(&keys)).unwrap())],
    };
    let store = Arc::clone(&stores[0]);
    let nodes: Vec<Arc<Authenticator>> = stores
        .iter()
        .map(|store| {
            let services = Services {
                directory: Arc::new(InstantDirectory),
                store: Arc::clone(store),
                sms: Arc::new(LogGateway),
                keys: Arc::clone(&keys),
            };
            Arc::new(Authenticator::new(services, settings()))
        })
        .collect();
    let auth = Arc::clone(&nodes[0]);
    // Each node's audit trail written to its store as the server does, so its cost is measured.
    let shutdown = tokio_util::sync::CancellationToken::new();
    for (node, store) in nodes.iter().zip(&stores) {
        runtime.spawn(node.audit_trail().run(Arc::clone(store), shutdown.clone()));
    }
    let client = Arc::new(ClientPolicy { mode: Mode::Challenge, no_token: NoToken::Reject, ..ClientPolicy::named("bench") });
    let params = TotpParams::default();

    println!(
        "second step (State + TOTP + replay update in {}, no directory), {} cores",
        if std::env::var("RADMFA_BENCH_POSTGRES").is_ok() { format!("PostgreSQL, {} node(s)", nodes.len()) } else { "SQLite".into() },
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    runtime.block_on(async {
        let seeds: Arc<Vec<Vec<u8>>> = Arc::new((0..users).map(|i| format!("bench-seed-{i:08}-xxxxx").into_bytes()).collect());
        let mut adds = tokio::task::JoinSet::new();
        for (i, seed) in seeds.iter().enumerate() {
            let store = store.clone();
            let token = NewToken { username: format!("user{i}"), name: "phone".into(), params, secret: Secret::new(seed.clone()), confirmed: true, created_at: radmfa::clock::now() };
            adds.spawn(async move { store.add_token(token).await.unwrap() });
            // At most a few hundred at once, as an import would: more only wait for the store.
            if adds.len() >= 256 {
                adds.join_next().await.unwrap().unwrap();
            }
        }
        while let Some(added) = adds.join_next().await {
            added.unwrap();
        }
        println!("{users} users with a token each");

        let mut next_user = 0;
        for &concurrency in &levels {
            let batch = (users / levels.len()).min(users - next_user);
            // First steps (not measured): a State for each user of this round.
            let mut states = Vec::with_capacity(batch);
            for i in next_user..next_user + batch {
                let user = format!("user{i}");
                let d = auth.decide(&request(&client, &user, "pw", None)).await;
                assert_eq!(d.outcome(), Outcome::Challenge);
                states.push((user, i, d.into_state().unwrap()));
            }
            next_user += batch;
            let queue = Arc::new(std::sync::Mutex::new(states));
            let store_cpu_before = thread_cpu("radmfa-store");
            let cpu_before = process_cpu();
            let started = Instant::now();
            let mut workers = tokio::task::JoinSet::new();
            for worker in 0..concurrency {
                // With two nodes, half the NAS's requests go to each.
                let auth = Arc::clone(&nodes[worker % nodes.len()]);
                let (queue, client, seeds) = (queue.clone(), client.clone(), seeds.clone());
                workers.spawn(async move {
                    let mut latencies = Vec::new();
                    let mut accepted = 0usize;
                    loop {
                        let Some((user, i, state)) = queue.lock().unwrap().pop() else { break };
                        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                        let code = params.code_at_step(&seeds[i], params.step_at(now));
                        let t = Instant::now();
                        let d = auth.decide(&request(&client, &user, code.expose(), Some(state))).await;
                        latencies.push(t.elapsed());
                        accepted += usize::from(d.outcome() == Outcome::Accept);
                    }
                    (latencies, accepted)
                });
            }
            let mut latencies = Vec::new();
            let mut accepted = 0;
            while let Some(joined) = workers.join_next().await {
                let (l, a) = joined.unwrap();
                latencies.extend(l);
                accepted += a;
            }
            let elapsed = started.elapsed();
            assert_eq!(accepted, latencies.len(), "every second step with the right code must be accepted");
            latencies.sort_unstable();
            let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
            let share = |before: Option<Duration>, after: Option<Duration>| match (before, after) {
                (Some(a), Some(b)) => format!("{:.0}%", (b - a).as_secs_f64() / elapsed.as_secs_f64() * 100.0),
                _ => "n/a".into(),
            };
            let busy = share(store_cpu_before, thread_cpu("radmfa-store"));
            let cpu = share(cpu_before, process_cpu());
            println!(
                "concurrency {concurrency:>4}: {:>6} second steps in {:.2} s = {:>8.0}/s  accepted {accepted}  p50 {:.3} ms  p99 {:.3} ms  CPU {cpu} (store thread {busy})",
                latencies.len(),
                elapsed.as_secs_f64(),
                latencies.len() as f64 / elapsed.as_secs_f64(),
                pct(0.50),
                pct(0.99),
            );
        }
    });
}

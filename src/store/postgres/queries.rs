//! The store contract in PostgreSQL's SQL, safe with any number of nodes at once: what must
//! happen once happens in one statement whose row lock or unique key decides (a time step, a
//! State's nonce, a challenge's context), what reads and then writes runs in a transaction that
//! holds the row (failure counts) or a lock (SMS limits), and purge only deletes what expired.
//! The login path's operations go through `batch`, many requests' in one statement.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::PostgresBackend;
use super::batch::{LockoutRow, Op};
use crate::otp::{Algorithm, TotpParams};
use crate::store::backend::{
    self, Backend, NewTemporaryCodeRow, NewTokenRow, Reseal, SealNew, SealedSeed, SessionRow, Snapshot, SortNew, Sorted, TemporaryCodeRow,
    TokenRow,
};
use crate::store::event_bounds;
use crate::store::{
    AuditEvent, CodeUse, Factor, Filing, KeptAnswer, LockoutPolicy, LockoutRecord, LockoutState, SessionCaps, SessionKey,
    SmsChallengeRecord, SmsChallengeUse, SmsLimits, SmsReservation, StateUse, StoreError, TemporaryCodeInfo, UnixTime,
};

/// The advisory lock SMS reservations take, so two nodes counting at once cannot both stay
/// under a limit and both send ("radmfa-sms" folded into 63 bits).
const SMS_LOCK: i64 = 0x7261_646d_6661_736d;

/// The advisory lock filing a batch of tokens takes (`radmfa token import`), so two filing the
/// first token of one user at once cannot both find none ("radmfa-imp" folded into 63 bits).
const IMPORT_LOCK: i64 = 0x7261_646d_6661_696d;

/// How long `radmfa store copy` may take to read or write a whole store.
const BULK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

pub(super) const TOKEN_COLUMNS: &str =
    "id, username, name, algorithm, digits, period, secret, created_at, last_step, last_used_at, confirmed";

/// The table holding a factor's counters (a fixed name, never input).
pub(super) fn lockout_table(factor: Factor) -> &'static str {
    match factor {
        Factor::Password => "password_lockouts",
        Factor::Code => "lockouts",
    }
}

pub(super) fn read_token(row: &Row) -> Result<TokenRow, StoreError> {
    let algorithm: String = row.try_get(3)?;
    let digits: i32 = row.try_get(4)?;
    let period: i64 = row.try_get(5)?;
    Ok(TokenRow {
        id: row.try_get(0)?,
        username: row.try_get(1)?,
        name: row.try_get(2)?,
        params: TotpParams {
            algorithm: algorithm.parse::<Algorithm>().map_err(StoreError::database)?,
            digits: u32::try_from(digits).map_err(|_| StoreError::database(format!("token digits {digits}")))?,
            period: u64::try_from(period.max(1)).unwrap_or(1),
        },
        sealed: row.try_get(6)?,
        created_at: row.try_get(7)?,
        last_step: row.try_get::<_, Option<i64>>(8)?.map(|s| s.max(0) as u64),
        last_used_at: row.try_get(9)?,
        confirmed: row.try_get(10)?,
    })
}

/// A time step as the database keeps it (steps of any real clock fit in an i64).
fn step_value(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

fn sealed_seed(row: &Row) -> Result<SealedSeed, StoreError> {
    Ok(SealedSeed { id: row.try_get(0)?, username: row.try_get(1)?, sealed: row.try_get(2)? })
}

/// Keeps a portal session within the caps: the account's oldest go, then those nearest to
/// expiry. Two nodes making sessions for one account at the same moment may leave one more
/// than the cap until the next is made: a bound, not an invariant anyone relies on.
async fn insert_session(transaction: &deadpool_postgres::Transaction<'_>, row: &SessionRow, caps: SessionCaps) -> Result<(), StoreError> {
    let keep_own = i64::try_from(caps.per_account.max(1) - 1).unwrap_or(i64::MAX);
    transaction
        .execute(
            "DELETE FROM portal_sessions WHERE account = $1 AND seq NOT IN
                (SELECT seq FROM portal_sessions WHERE account = $1 ORDER BY seq DESC LIMIT $2)",
            &[&row.account, &keep_own],
        )
        .await?;
    let keep_all = i64::try_from(caps.total.max(1) - 1).unwrap_or(i64::MAX);
    transaction
        .execute(
            "DELETE FROM portal_sessions WHERE seq IN (SELECT seq FROM portal_sessions ORDER BY expires_at, seq
                LIMIT GREATEST(0, (SELECT count(*) FROM portal_sessions) - $1))",
            &[&keep_all],
        )
        .await?;
    transaction
        .execute(
            "INSERT INTO portal_sessions (key, account, ends_at, expires_at, data) VALUES ($1, $2, $3, $4, $5)",
            &[&row.key.as_slice(), &row.account, &row.ends_at, &row.expires_at, &row.sealed],
        )
        .await?;
    Ok(())
}

/// Tokens as one array per column, for one INSERT of them all.
#[derive(Default)]
struct TokenColumns {
    id: Vec<i64>,
    username: Vec<String>,
    name: Vec<String>,
    algorithm: Vec<&'static str>,
    digits: Vec<i32>,
    period: Vec<i64>,
    secret: Vec<String>,
    created_at: Vec<i64>,
    last_step: Vec<Option<i64>>,
    last_used_at: Vec<Option<i64>>,
    confirmed: Vec<bool>,
}

impl TokenColumns {
    fn push(&mut self, t: &TokenRow) -> Result<(), StoreError> {
        self.digits.push(i32::try_from(t.params.digits).map_err(|_| StoreError::database("token digits"))?);
        self.period.push(i64::try_from(t.params.period).map_err(|_| StoreError::database("token period"))?);
        self.id.push(t.id);
        self.username.push(t.username.clone());
        self.name.push(t.name.clone());
        self.algorithm.push(t.params.algorithm.as_str());
        self.secret.push(t.sealed.clone());
        self.created_at.push(t.created_at);
        self.last_step.push(t.last_step.map(step_value));
        self.last_used_at.push(t.last_used_at);
        self.confirmed.push(t.confirmed);
        Ok(())
    }
}

/// Keeps `tokens` as they are (ids included), in one INSERT.
async fn insert_tokens(transaction: &deadpool_postgres::Transaction<'_>, tokens: &[TokenRow]) -> Result<(), StoreError> {
    let mut columns = TokenColumns::default();
    for t in tokens {
        columns.push(t)?;
    }
    let TokenColumns { id, username, name, algorithm, digits, period, secret, created_at, last_step, last_used_at, confirmed } = columns;
    transaction
        .execute(
            "INSERT INTO tokens (id, username, name, algorithm, digits, period, secret, created_at, last_step, last_used_at, confirmed)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[], $6::bigint[], $7::text[],
                                  $8::bigint[], $9::bigint[], $10::bigint[], $11::bool[])",
            &[&id, &username, &name, &algorithm, &digits, &period, &secret, &created_at, &last_step, &last_used_at, &confirmed],
        )
        .await?;
    Ok(())
}

fn read_lockout(row: &Row, factor: Factor) -> Result<LockoutRecord, StoreError> {
    let (failures, lock_count): (i32, i32) = (row.try_get(1)?, row.try_get(3)?);
    Ok(LockoutRecord {
        username: row.try_get(0)?,
        factor,
        failures: failures.max(0) as u32,
        locked_until: row.try_get(2)?,
        lock_count: lock_count.max(0) as u32,
        last_failure_at: row.try_get(4)?,
        seq: row.try_get::<_, i64>(5)?.max(0) as u64,
    })
}

/// Every token and counter (`radmfa store copy`), as `transaction` sees them.
async fn snapshot(transaction: &deadpool_postgres::Transaction<'_>) -> Result<Snapshot, StoreError> {
    let rows = transaction.query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id"), &[]).await?;
    let tokens = rows.iter().map(read_token).collect::<Result<_, _>>()?;
    let mut lockouts = Vec::new();
    for factor in [Factor::Code, Factor::Password] {
        let sql = format!(
            "SELECT username, failures, locked_until, lock_count, last_failure_at, seq FROM {} ORDER BY username",
            lockout_table(factor)
        );
        for row in transaction.query(&sql, &[]).await? {
            lockouts.push(read_lockout(&row, factor)?);
        }
    }
    Ok(Snapshot { tokens, lockouts })
}

/// Checks the SMS limits and, if allowed, records the send, under a lock every node takes:
/// two nodes counting at once cannot both stay under a limit and both send.
async fn reserve_sms(
    transaction: &deadpool_postgres::Transaction<'_>,
    username: &str,
    now: UnixTime,
    limits: SmsLimits,
) -> Result<SmsReservation, StoreError> {
    // SMS are few: one lock for all is cheap.
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&SMS_LOCK]).await?;
    let user_since = now - limits.per_user_window.as_secs() as UnixTime;
    let by_user: i64 = transaction
        .query_one("SELECT count(*) FROM sms_sends WHERE username = $1 AND sent_at > $2", &[&username, &user_since])
        .await?
        .try_get(0)?;
    if by_user >= i64::from(limits.per_user) {
        return Ok(SmsReservation::UserLimit);
    }
    let global: i64 = transaction.query_one("SELECT count(*) FROM sms_sends WHERE sent_at > $1", &[&(now - 60)]).await?.try_get(0)?;
    if global >= i64::from(limits.global_per_minute) {
        return Ok(SmsReservation::GlobalLimit);
    }
    transaction.execute("INSERT INTO sms_sends (username, sent_at) VALUES ($1, $2)", &[&username, &now]).await?;
    Ok(SmsReservation::Allowed)
}

/// Audit events as one array per column, for one INSERT of a batch.
#[derive(Default)]
struct EventColumns {
    at: Vec<i64>,
    account: Vec<String>,
    action: Vec<String>,
    client: Vec<String>,
    from: Vec<Option<String>>,
    result: Vec<String>,
    reason: Vec<String>,
    actor: Vec<Option<String>>,
    detail: Vec<Option<String>>,
}

impl EventColumns {
    fn push(&mut self, event: AuditEvent) {
        let AuditEvent { at, account, action, client, from, result, reason, actor, detail } = event;
        self.at.push(at);
        self.account.push(account);
        self.action.push(action);
        self.client.push(client);
        self.from.push(from);
        self.result.push(result);
        self.reason.push(reason);
        self.actor.push(actor);
        self.detail.push(detail);
    }
}

fn read_temporary_code(row: &Row) -> Result<TemporaryCodeRow, StoreError> {
    let uses_left: i32 = row.try_get(5)?;
    Ok(TemporaryCodeRow {
        info: TemporaryCodeInfo {
            id: row.try_get(0)?,
            username: row.try_get(1)?,
            issued_by: row.try_get(2)?,
            issued_at: row.try_get(3)?,
            expires_at: row.try_get(4)?,
            uses_left: u32::try_from(uses_left).unwrap_or(0),
        },
        sealed: row.try_get(6)?,
    })
}

#[async_trait]
impl Backend for PostgresBackend {
    async fn record_events(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut columns = EventColumns::default();
        for event in events.into_iter().map(event_bounds::bounded) {
            columns.push(event);
        }
        let EventColumns { at, account, action, client: clients, from, result, reason, actor, detail } = columns;
        self.run(|client| async move {
            // One statement for the whole batch, rows numbered in the batch's order (a tie in
            // time is then read back newest insert first).
            let statement = client
                .prepare_cached(
                    "INSERT INTO audit_events (at, account, action, client, origin, result, reason, actor, detail)
                     SELECT at, account, action, client, origin, result, reason, actor, detail
                     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                                 $8::text[], $9::text[])
                          WITH ORDINALITY AS e(at, account, action, client, origin, result, reason, actor, detail, n)
                     ORDER BY n",
                )
                .await?;
            client.execute(&statement, &[&at, &account, &action, &clients, &from, &result, &reason, &actor, &detail]).await?;
            Ok(())
        })
        .await
    }

    async fn events(&self, account: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let account = event_bounds::account_key(account);
        let limit = event_bounds::read_limit(limit) as i64;
        self.run(|client| async move {
            let statement = client
                .prepare_cached(
                    "SELECT at, account, action, client, origin, result, reason, actor, detail FROM audit_events
                     WHERE account = $1 ORDER BY at DESC, id DESC LIMIT $2",
                )
                .await?;
            let rows = client.query(&statement, &[&account.as_ref(), &limit]).await?;
            rows.iter()
                .map(|r| {
                    Ok(AuditEvent {
                        at: r.try_get(0)?,
                        account: r.try_get(1)?,
                        action: r.try_get(2)?,
                        client: r.try_get(3)?,
                        from: r.try_get(4)?,
                        result: r.try_get(5)?,
                        reason: r.try_get(6)?,
                        actor: r.try_get(7)?,
                        detail: r.try_get(8)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn purge_events(&self, before: UnixTime) -> Result<usize, StoreError> {
        // In slices, each a statement of its own within the operation timeout, however many a
        // first purge after a long time (or a shorter retention) has to delete. Every node
        // purges; a row another deletes at the same moment is skipped, not counted twice.
        let slice = backend::EVENTS_PURGED_AT_ONCE as i64;
        let mut purged = 0;
        loop {
            let deleted = self
                .run(|client| async move {
                    let sql = "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE at < $1 LIMIT $2)";
                    Ok(client.execute(sql, &[&before, &slice]).await?)
                })
                .await?;
            purged += usize::try_from(deleted).unwrap_or(usize::MAX);
            if deleted < slice as u64 {
                return Ok(purged);
            }
        }
    }

    async fn add_temporary_code(&self, code: NewTemporaryCodeRow, seal: SealNew) -> Result<(i64, usize), StoreError> {
        let uses = i32::try_from(code.uses).unwrap_or(i32::MAX);
        self.run(|client| async move {
            // The id first, so the seal that names it is written with the row.
            let id: i64 = client.query_one("SELECT nextval(pg_get_serial_sequence('temporary_codes', 'id'))", &[]).await?.try_get(0)?;
            // The account's other codes go in the same statement: of two issued at once (on
            // any node), the later commit leaves one.
            let replaced: i64 = client
                .query_one(
                    "WITH replaced AS (DELETE FROM temporary_codes WHERE username = $2 RETURNING id),
                     added AS (
                         INSERT INTO temporary_codes (id, username, issued_by, issued_at, expires_at, uses_left, sealed)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                     )
                     SELECT count(*) FROM replaced",
                    &[&id, &code.username, &code.issued_by, &code.issued_at, &code.expires_at, &uses, &seal(id)],
                )
                .await?
                .try_get(0)?;
            Ok((id, usize::try_from(replaced).unwrap_or_default()))
        })
        .await
    }

    async fn temporary_codes(&self, username: Option<&str>, now: UnixTime) -> Result<Vec<TemporaryCodeRow>, StoreError> {
        self.run(|client| async move {
            let columns = "id, username, issued_by, issued_at, expires_at, uses_left, sealed";
            let rows = match username {
                Some(user) => {
                    let sql = format!(
                        "SELECT {columns} FROM temporary_codes WHERE username = $1 AND expires_at > $2 AND uses_left > 0 ORDER BY id"
                    );
                    client.query(&client.prepare_cached(&sql).await?, &[&user, &now]).await?
                }
                None => {
                    let sql = format!("SELECT {columns} FROM temporary_codes WHERE expires_at > $1 AND uses_left > 0 ORDER BY id");
                    client.query(&sql, &[&now]).await?
                }
            };
            rows.iter().map(read_temporary_code).collect()
        })
        .await
    }

    async fn use_temporary_code(&self, id: i64, now: UnixTime, request: &[u8], keep: Option<KeptAnswer>) -> Result<CodeUse, StoreError> {
        let request = crate::store::backend::code_use_entry(request);
        let (key, expires_at, answer) = match keep {
            Some(KeptAnswer { key, expires_at, answer }) => (Some(key), Some(expires_at), Some(answer)),
            None => (None, None, None),
        };
        self.run(|client| async move {
            // One statement: the row lock decides between uses at once (on any node, the second
            // finds the row as the first left it), and the winner's Accept is kept in the same
            // commit as its use.
            let statement = client
                .prepare_cached(
                    "WITH used AS (
                         UPDATE temporary_codes SET uses_left = uses_left - 1, used_by = used_by || $6
                         WHERE id = $1 AND expires_at > $2 AND uses_left > 0 AND strpos(used_by, $6) = 0
                         RETURNING id
                     ),
                     kept AS (
                         INSERT INTO kept_answers (key, expires_at, answer)
                         SELECT $3::bytea, $4::bigint, $5::bytea FROM used WHERE $3::bytea IS NOT NULL
                         ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at, answer = EXCLUDED.answer
                     )
                     SELECT count(*) FROM used",
                )
                .await?;
            let used: i64 = client.query_one(&statement, &[&id, &now, &key, &expires_at, &answer, &request]).await?.try_get(0)?;
            if used == 1 {
                return Ok(CodeUse::Used);
            }
            // Why not, read anew: a statement of its own sees what a use of this request that
            // the update waited for has committed (the update's own snapshot predates it).
            let before = client
                .query_opt("SELECT strpos(used_by, $2) > 0 FROM temporary_codes WHERE id = $1", &[&id, &request])
                .await?
                .map(|row| row.try_get::<_, bool>(0))
                .transpose()?;
            Ok(if before == Some(true) { CodeUse::ByThisRequest } else { CodeUse::Spent })
        })
        .await
    }

    async fn end_sessions(&self, account: &str) -> Result<usize, StoreError> {
        self.run(|client| async move {
            let ended = client.execute("DELETE FROM portal_sessions WHERE account = $1", &[&account]).await?;
            Ok(usize::try_from(ended).unwrap_or_default())
        })
        .await
    }

    async fn revoke_temporary_codes(&self, username: &str, id: Option<i64>) -> Result<usize, StoreError> {
        self.run(|client| async move {
            let sql = "DELETE FROM temporary_codes WHERE username = $1 AND ($2::bigint IS NULL OR id = $2)";
            Ok(usize::try_from(client.execute(sql, &[&username, &id]).await?).unwrap_or(usize::MAX))
        })
        .await
    }

    async fn reseal_temporary_codes(&self, reseal: Reseal) -> Result<usize, StoreError> {
        self.run(|mut client| async move {
            let transaction = client.transaction().await?;
            let rows = transaction.query("SELECT id, username, sealed FROM temporary_codes ORDER BY id FOR UPDATE", &[]).await?;
            let mut resealed = 0;
            for row in &rows {
                let code = sealed_seed(row)?;
                if let Some(sealed) = reseal(&code)? {
                    transaction.execute("UPDATE temporary_codes SET sealed = $1 WHERE id = $2", &[&sealed, &code.id]).await?;
                    resealed += 1;
                }
            }
            transaction.commit().await?;
            Ok(resealed)
        })
        .await
    }

    async fn add_token(&self, token: NewTokenRow, seal: SealNew) -> Result<i64, StoreError> {
        self.run(|client| async move {
            // The id first, so the seal that names it is written with the row: no row without
            // its seed, ever.
            let id: i64 = client.query_one("SELECT nextval(pg_get_serial_sequence('tokens', 'id'))", &[]).await?.try_get(0)?;
            let digits = i32::try_from(token.params.digits).map_err(|_| StoreError::database("token digits"))?;
            let period = i64::try_from(token.params.period).map_err(|_| StoreError::database("token period"))?;
            client
                .execute(
                    "INSERT INTO tokens (id, username, name, algorithm, digits, period, secret, created_at, confirmed)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[
                        &id,
                        &token.username,
                        &token.name,
                        &token.params.algorithm.as_str(),
                        &digits,
                        &period,
                        &seal(id),
                        &token.created_at,
                        &token.confirmed,
                    ],
                )
                .await?;
            Ok(id)
        })
        .await
    }

    async fn add_tokens(&self, owners: Vec<String>, sort: SortNew) -> Result<Vec<Filing>, StoreError> {
        self.run_within(BULK_TIMEOUT, |mut client| async move {
            let transaction = client.transaction().await?;
            transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&IMPORT_LOCK]).await?;
            // The owners' tokens locked: a confirmation of one of them (which locks them too)
            // waits for this step, and this step for it.
            let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE username = ANY($1) ORDER BY id FOR UPDATE");
            let kept = transaction.query(&sql, &[&owners]).await?.iter().map(read_token).collect::<Result<_, _>>()?;
            let sorted = sort(kept)?;
            let wanted = sorted.iter().filter(|s| matches!(s, Sorted::Keep(..))).count();
            // The ids first, so each seal that names its id is written with its row.
            let ids = transaction
                .query("SELECT nextval(pg_get_serial_sequence('tokens', 'id')) FROM generate_series(1, $1::bigint)", &[&(wanted as i64)])
                .await?;
            let mut ids = ids.iter().map(|row| row.try_get::<_, i64>(0));
            let (mut rows, mut filings) = (Vec::with_capacity(wanted), Vec::with_capacity(sorted.len()));
            for sorted in sorted {
                filings.push(match sorted {
                    Sorted::Keep(token, seal) => {
                        let id = ids.next().ok_or_else(|| StoreError::database("fewer token ids than tokens"))??;
                        let NewTokenRow { username, name, params, created_at, confirmed } = token;
                        let sealed = seal(id);
                        rows.push(TokenRow {
                            id,
                            username,
                            name,
                            params,
                            sealed,
                            created_at,
                            last_step: None,
                            last_used_at: None,
                            confirmed,
                        });
                        Filing::Added
                    }
                    Sorted::Skip(filing) => filing,
                });
            }
            insert_tokens(&transaction, &rows).await?;
            transaction.commit().await?;
            Ok(filings)
        })
        .await
    }

    async fn tokens(&self, username: Option<&str>) -> Result<Vec<TokenRow>, StoreError> {
        match username {
            // A login's read: batched with other logins'.
            Some(user) => self.batch.run(|reply| Op::Tokens { username: user.to_owned(), reply }).await,
            None => {
                self.run(|client| async move {
                    let rows = client.query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id"), &[]).await?;
                    rows.iter().map(read_token).collect()
                })
                .await
            }
        }
    }

    async fn move_tokens(&self, from: &str, to: &str, reseal: Reseal) -> Result<usize, StoreError> {
        self.run(|mut client| async move {
            let transaction = client.transaction().await?;
            let rows =
                transaction.query("SELECT id, username, secret FROM tokens WHERE username = $1 ORDER BY id FOR UPDATE", &[&from]).await?;
            for row in &rows {
                let seed = sealed_seed(row)?;
                let sealed = reseal(&seed)?.unwrap_or_else(|| seed.sealed.clone());
                transaction.execute("UPDATE tokens SET username = $1, secret = $2 WHERE id = $3", &[&to, &sealed, &seed.id]).await?;
            }
            transaction.commit().await?;
            Ok(rows.len())
        })
        .await
    }

    async fn reseal_tokens(&self, reseal: Reseal) -> Result<usize, StoreError> {
        self.run(|mut client| async move {
            let transaction = client.transaction().await?;
            let rows = transaction.query("SELECT id, username, secret FROM tokens ORDER BY id FOR UPDATE", &[]).await?;
            let mut resealed = 0;
            for row in &rows {
                if let Some(sealed) = reseal(&sealed_seed(row)?)? {
                    let id: i64 = row.try_get(0)?;
                    transaction.execute("UPDATE tokens SET secret = $1 WHERE id = $2", &[&sealed, &id]).await?;
                    resealed += 1;
                }
            }
            transaction.commit().await?;
            Ok(resealed)
        })
        .await
    }

    async fn remove_token(&self, username: &str, id: i64) -> Result<bool, StoreError> {
        self.run(
            |client| async move { Ok(client.execute("DELETE FROM tokens WHERE id = $1 AND username = $2", &[&id, &username]).await? == 1) },
        )
        .await
    }

    async fn abandon_token(&self, username: &str, id: i64) -> Result<bool, StoreError> {
        self.run(|client| async move {
            let sql = "DELETE FROM tokens WHERE id = $1 AND username = $2 AND NOT confirmed";
            Ok(client.execute(sql, &[&id, &username]).await? == 1)
        })
        .await
    }

    async fn confirm_token(&self, username: &str, id: i64, step: u64, max_confirmed: usize) -> Result<bool, StoreError> {
        let max = i64::try_from(max_confirmed).unwrap_or(i64::MAX);
        self.run(|mut client| async move {
            let transaction = client.transaction().await?;
            // The user's tokens locked first: confirmations of one user, on any node, count in
            // turn, each seeing those before it.
            transaction.execute("SELECT 1 FROM tokens WHERE username = $1 ORDER BY id FOR UPDATE", &[&username]).await?;
            let sql = "UPDATE tokens SET confirmed = true, last_step = $3 WHERE id = $1 AND username = $2 AND NOT confirmed
                       AND (SELECT count(*) FROM tokens WHERE username = $2 AND confirmed) < $4";
            let confirmed = transaction.execute(sql, &[&id, &username, &step_value(step), &max]).await? == 1;
            transaction.commit().await?;
            Ok(confirmed)
        })
        .await
    }

    async fn use_step(&self, token_id: i64, step: u64, now: UnixTime, keep: Option<KeptAnswer>) -> Result<bool, StoreError> {
        // Batched: the token's row locked, then updated only if the step is later, and the
        // winners' answers kept in the same transaction (see `batch`).
        self.batch.run(|reply| Op::UseStep { token_id, step: step_value(step), now, keep, reply }).await
    }

    async fn locked_until(&self, username: &str, factor: Factor, now: UnixTime) -> Result<Option<UnixTime>, StoreError> {
        let row = self.batch.run(|reply| Op::Lockout { username: username.to_owned(), factor, reply }).await?;
        Ok(row.and_then(|r| r.locked_until).filter(|&t| t > now))
    }

    async fn lockout_state(
        &self,
        username: &str,
        factor: Factor,
        now: UnixTime,
        policy: LockoutPolicy,
    ) -> Result<LockoutState, StoreError> {
        let row = self.batch.run(|reply| Op::Lockout { username: username.to_owned(), factor, reply }).await?;
        let Some(LockoutRow { failures, locked_until, last_failure_at, seq }) = row else { return Ok(LockoutState::default()) };
        let forgotten = policy.forget_after.is_some_and(|f| last_failure_at.is_some_and(|at| at < now - f.as_secs() as UnixTime));
        Ok(LockoutState {
            locked_until: locked_until.filter(|&until| until > now),
            failures: if forgotten { 0 } else { failures.max(0) as u32 },
            seq: seq.max(0) as u64,
        })
    }

    async fn record_failure(
        &self,
        username: &str,
        factor: Factor,
        now: UnixTime,
        policy: LockoutPolicy,
    ) -> Result<Option<UnixTime>, StoreError> {
        let table = lockout_table(factor);
        // Failures (and doublings) from before this no longer count, once no lock is running.
        let forget_before = policy.forget_after.map_or(UnixTime::MIN, |f| now - f.as_secs() as UnixTime);
        self.run(|mut client| async move {
            let transaction = client.transaction().await?;
            let count = transaction
                .prepare_cached(&format!(
                    "INSERT INTO {table} AS l (username, failures, last_failure_at, seq) VALUES ($1, 1, $2, 1)
                     ON CONFLICT (username) DO UPDATE SET
                        failures = CASE WHEN l.last_failure_at < $3 AND (l.locked_until IS NULL OR l.locked_until <= $2)
                                   THEN 1 ELSE l.failures + 1 END,
                        lock_count = CASE WHEN l.last_failure_at < $3 AND (l.locked_until IS NULL OR l.locked_until <= $2)
                                     THEN 0 ELSE l.lock_count END,
                        last_failure_at = $2,
                        seq = l.seq + 1
                     RETURNING failures, lock_count"
                ))
                .await?;
            let row = transaction.query_one(&count, &[&username, &now, &forget_before]).await?;
            let (failures, lock_count): (i32, i32) = (row.try_get(0)?, row.try_get(1)?);
            if (failures.max(0) as u32) < policy.max_failures.max(1) {
                transaction.commit().await?;
                return Ok(None);
            }
            let until = now + policy.lock_duration(lock_count.max(0) as u32).as_secs() as UnixTime;
            let lock = transaction
                .prepare_cached(&format!(
                    "UPDATE {table} SET failures = 0, locked_until = $1, lock_count = lock_count + 1 WHERE username = $2"
                ))
                .await?;
            transaction.execute(&lock, &[&until, &username]).await?;
            transaction.commit().await?;
            Ok(Some(until))
        })
        .await
    }

    async fn record_success(&self, username: &str, factor: Factor, seen: u64) -> Result<(), StoreError> {
        self.run(|client| async move {
            // Only when no failure was counted since the try began (seq unchanged), on any node.
            let sql = format!("DELETE FROM {} WHERE username = $1 AND seq = $2", lockout_table(factor));
            client.execute(&client.prepare_cached(&sql).await?, &[&username, &step_value(seen)]).await?;
            Ok(())
        })
        .await
    }

    async fn unlock(&self, username: &str) -> Result<bool, StoreError> {
        self.run(|mut client| async move {
            let transaction = client.transaction().await?;
            let code = transaction.execute("DELETE FROM lockouts WHERE username = $1", &[&username]).await?;
            let password = transaction.execute("DELETE FROM password_lockouts WHERE username = $1", &[&username]).await?;
            transaction.commit().await?;
            Ok(code + password > 0)
        })
        .await
    }

    async fn reserve_sms(&self, username: &str, now: UnixTime, limits: SmsLimits) -> Result<SmsReservation, StoreError> {
        self.run(|mut client| async move {
            let transaction = client.transaction().await?;
            let reserved = reserve_sms(&transaction, username, now, limits).await?;
            transaction.commit().await?;
            Ok(reserved)
        })
        .await
    }

    async fn reserve_sms_challenge(
        &self,
        username: &str,
        now: UnixTime,
        limits: SmsLimits,
        challenge: SmsChallengeRecord,
    ) -> Result<SmsChallengeUse, StoreError> {
        self.run(|mut client| async move {
            let transaction = client.transaction().await?;
            // Under the SMS lock (taken first): two nodes deciding retries of one request at
            // once take turns, and the second finds the first's answer.
            transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&SMS_LOCK]).await?;
            if let Some(kept) = &challenge.answer {
                let sql = "SELECT answer FROM kept_answers WHERE key = $1 AND expires_at >= $2";
                if let Some(row) = transaction.query_opt(sql, &[&kept.key, &now]).await? {
                    return Ok(SmsChallengeUse::AnsweredBefore(row.try_get(0)?));
                }
            }
            if let Some(refused) = reserve_sms(&transaction, username, now, limits).await?.refused() {
                return Ok(refused);
            }
            transaction
                .execute(
                    "INSERT INTO challenge_contexts (nonce, expires_at, context) VALUES ($1, $2, $3)
                     ON CONFLICT (nonce) DO UPDATE SET expires_at = EXCLUDED.expires_at, context = EXCLUDED.context",
                    &[&challenge.nonce, &challenge.expires_at, &challenge.context],
                )
                .await?;
            if let Some(kept) = &challenge.answer {
                transaction
                    .execute(
                        "INSERT INTO kept_answers (key, expires_at, answer) VALUES ($1, $2, $3)
                         ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at, answer = EXCLUDED.answer",
                        &[&kept.key, &kept.expires_at, &kept.answer],
                    )
                    .await?;
            }
            transaction.commit().await?;
            Ok(SmsChallengeUse::Reserved)
        })
        .await
    }

    async fn consume_state(&self, nonce: &[u8], expires_at: UnixTime, request: &[u8]) -> Result<StateUse, StoreError> {
        self.batch.run(|reply| Op::ConsumeState { nonce: nonce.to_vec(), expires_at, request: request.to_vec(), reply }).await
    }

    async fn keep_challenge_context(&self, nonce: &[u8], expires_at: UnixTime, context: Vec<u8>) -> Result<(), StoreError> {
        self.batch.run(|reply| Op::KeepContext { nonce: nonce.to_vec(), expires_at, context, reply }).await
    }

    async fn challenge_context(&self, nonce: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.batch.run(|reply| Op::ReadContext { nonce: nonce.to_vec(), reply }).await
    }

    async fn keep_answer(&self, kept: KeptAnswer) -> Result<(), StoreError> {
        self.batch.run(|reply| Op::KeepAnswer { kept, reply }).await
    }

    async fn kept_answer(&self, key: &[u8], now: UnixTime) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(|client| async move {
            let statement = client.prepare_cached("SELECT answer FROM kept_answers WHERE key = $1 AND expires_at >= $2").await?;
            Ok(client.query_opt(&statement, &[&key, &now]).await?.map(|r| r.try_get(0)).transpose()?)
        })
        .await
    }

    async fn create_session(&self, session: SessionRow, caps: SessionCaps) -> Result<(), StoreError> {
        self.run(|mut client| async move {
            let transaction = client.transaction().await?;
            insert_session(&transaction, &session, caps).await?;
            transaction.commit().await?;
            Ok(())
        })
        .await
    }

    async fn session(&self, key: &SessionKey, now: UnixTime, expires_at: UnixTime) -> Result<Option<(i64, String)>, StoreError> {
        self.run(|client| async move {
            let statement = client
                .prepare_cached(
                    "UPDATE portal_sessions SET expires_at = LEAST(ends_at, $3) WHERE key = $1 AND expires_at > $2
                     RETURNING version, data",
                )
                .await?;
            let row = client.query_opt(&statement, &[&key.as_slice(), &now, &expires_at]).await?;
            row.map(|r| Ok::<_, StoreError>((r.try_get(0)?, r.try_get(1)?))).transpose()
        })
        .await
    }

    async fn update_session(&self, key: &SessionKey, version: i64, sealed: String) -> Result<bool, StoreError> {
        self.run(|client| async move {
            let sql = "UPDATE portal_sessions SET data = $3, version = version + 1 WHERE key = $1 AND version = $2";
            Ok(client.execute(sql, &[&key.as_slice(), &version, &sealed]).await? == 1)
        })
        .await
    }

    async fn rotate_session(&self, old: &SessionKey, version: i64, new: SessionRow, caps: SessionCaps) -> Result<bool, StoreError> {
        self.run(|mut client| async move {
            let transaction = client.transaction().await?;
            let ended =
                transaction.execute("DELETE FROM portal_sessions WHERE key = $1 AND version = $2", &[&old.as_slice(), &version]).await?;
            if ended != 1 {
                return Ok(false);
            }
            insert_session(&transaction, &new, caps).await?;
            transaction.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn remove_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.run(|client| async move {
            client.execute("DELETE FROM portal_sessions WHERE key = $1", &[&key.as_slice()]).await?;
            Ok(())
        })
        .await
    }

    async fn session_count(&self) -> Result<usize, StoreError> {
        self.run(|client| async move {
            let n: i64 = client.query_one("SELECT count(*) FROM portal_sessions", &[]).await?.try_get(0)?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn export(&self) -> Result<Snapshot, StoreError> {
        self.run_within(BULK_TIMEOUT, |mut client| async move {
            // One snapshot of every table, however busy the nodes are meanwhile.
            let transaction = client.build_transaction().isolation_level(tokio_postgres::IsolationLevel::RepeatableRead).start().await?;
            let snapshot = snapshot(&transaction).await?;
            transaction.commit().await?;
            Ok(snapshot)
        })
        .await
    }

    async fn import(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.run_within(BULK_TIMEOUT, |mut client| async move {
            let transaction = client.transaction().await?;
            // No node writes a token or a counter while the copy compares and replaces them.
            transaction.batch_execute("LOCK TABLE tokens, lockouts, password_lockouts IN EXCLUSIVE MODE").await?;
            let copied: Option<Vec<u8>> = transaction.query_one("SELECT copied FROM store_identity", &[]).await?.try_get(0)?;
            if !Snapshot::may_replace(&self::snapshot(&transaction).await?, copied.as_deref()) {
                return Err(Snapshot::diverged());
            }
            transaction.batch_execute("DELETE FROM tokens; DELETE FROM lockouts; DELETE FROM password_lockouts;").await?;
            insert_tokens(&transaction, &snapshot.tokens).await?;
            // Tokens added later get ids after the copied ones.
            transaction
                .batch_execute("SELECT setval(pg_get_serial_sequence('tokens', 'id'), GREATEST((SELECT max(id) FROM tokens), 1))")
                .await?;
            for l in &snapshot.lockouts {
                let sql = format!(
                    "INSERT INTO {} (username, failures, locked_until, lock_count, last_failure_at, seq) VALUES ($1, $2, $3, $4, $5, $6)",
                    lockout_table(l.factor)
                );
                let failures = i32::try_from(l.failures).unwrap_or(i32::MAX);
                let lock_count = i32::try_from(l.lock_count).unwrap_or(i32::MAX);
                let seq = step_value(l.seq);
                transaction.execute(&sql, &[&l.username, &failures, &l.locked_until, &lock_count, &l.last_failure_at, &seq]).await?;
            }
            transaction.execute("UPDATE store_identity SET copied = $1", &[&snapshot.digest().as_slice()]).await?;
            transaction.commit().await?;
            Ok(())
        })
        .await
    }

    async fn identity(&self) -> Result<String, StoreError> {
        self.run(|client| async move { Ok(client.query_one("SELECT id FROM store_identity", &[]).await?.try_get(0)?) }).await
    }

    fn available(&self) -> bool {
        self.health.available()
    }

    async fn ping(&self, now: UnixTime) -> Result<(), StoreError> {
        let clock = &self.clock;
        self.run(|client| async move {
            // A read of each table a login uses: one locked (a migration, a VACUUM FULL) keeps
            // the store unavailable, as the logins it would stall.
            let tables = [
                "tokens",
                "lockouts",
                "password_lockouts",
                "used_states",
                "challenge_contexts",
                "kept_answers",
                "sms_sends",
                "temporary_codes",
            ];
            let reads: Vec<String> = tables.iter().map(|t| format!("SELECT 1 FROM {t} LIMIT 1;")).collect();
            client.batch_execute(&reads.concat()).await?;
            let database_now: i64 = client.query_one("SELECT extract(epoch FROM now())::bigint", &[]).await?.try_get(0)?;
            clock.note(now - database_now);
            Ok(())
        })
        .await
    }

    async fn purge(&self, now: UnixTime) -> Result<(), StoreError> {
        let clock = &self.clock;
        self.run(|client| async move {
            // What expired by the earlier of this node's clock and the database's: a node whose
            // clock runs ahead must not purge, for every node, locks still running and used
            // States still live (a State purged early could be used again).
            let database_now: i64 = client.query_one("SELECT extract(epoch FROM now())::bigint", &[]).await?.try_get(0)?;
            clock.note(now - database_now);
            let now = now.min(database_now);
            client.execute("DELETE FROM portal_sessions WHERE expires_at <= $1", &[&now]).await?;
            // Every node purges; each statement deletes only what expired, so they may overlap.
            client.execute("DELETE FROM used_states WHERE expires_at < $1", &[&now]).await?;
            client.execute("DELETE FROM challenge_contexts WHERE expires_at < $1", &[&now]).await?;
            client.execute("DELETE FROM kept_answers WHERE expires_at < $1", &[&now]).await?;
            client.execute("DELETE FROM sms_sends WHERE sent_at < $1", &[&(now - backend::SMS_HISTORY)]).await?;
            client.execute("UPDATE lockouts SET locked_until = NULL WHERE locked_until < $1", &[&now]).await?;
            client.execute("UPDATE password_lockouts SET locked_until = NULL WHERE locked_until < $1", &[&now]).await?;
            let abandoned = now - backend::UNCONFIRMED_TOKEN_LIFETIME;
            client.execute("DELETE FROM tokens WHERE NOT confirmed AND created_at < $1", &[&abandoned]).await?;
            client.execute("DELETE FROM temporary_codes WHERE expires_at <= $1 OR uses_left <= 0", &[&now]).await?;
            Ok(())
        })
        .await
    }
}

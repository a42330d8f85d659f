//! The store contract in SQL: every [`Backend`] operation as statements run on the store
//! thread, inside the batch's transaction (one savepoint each), so each is atomic.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteBackend;
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

/// The table holding a factor's counters (a fixed name, never input).
fn lockout_table(factor: Factor) -> &'static str {
    match factor {
        Factor::Password => "password_lockouts",
        Factor::Code => "lockouts",
    }
}

/// A user's tokens (through the index on `username`), or everyone's (`?1` NULL): written out, so
/// the second step of every login builds no SQL.
const USER_TOKENS: &str = "SELECT id, username, name, algorithm, digits, period, secret, created_at, last_step, last_used_at, confirmed
     FROM tokens WHERE username = ?1 ORDER BY id";
const ALL_TOKENS: &str = "SELECT id, username, name, algorithm, digits, period, secret, created_at, last_step, last_used_at, confirmed
     FROM tokens WHERE ?1 IS NULL ORDER BY id";

fn read_token(row: &rusqlite::Row<'_>) -> Result<TokenRow, StoreError> {
    let algorithm: String = row.get(3)?;
    Ok(TokenRow {
        id: row.get(0)?,
        username: row.get(1)?,
        name: row.get(2)?,
        params: TotpParams {
            algorithm: algorithm.parse::<Algorithm>().map_err(StoreError::database)?,
            digits: row.get(4)?,
            period: row.get::<_, i64>(5)?.max(1) as u64,
        },
        sealed: row.get(6)?,
        created_at: row.get(7)?,
        last_step: row.get::<_, Option<i64>>(8)?.map(|s| s as u64),
        last_used_at: row.get(9)?,
        confirmed: row.get(10)?,
    })
}

/// The seeds of `username`'s tokens, or of everyone's.
fn sealed_seeds(conn: &Connection, username: Option<&str>) -> Result<Vec<SealedSeed>, StoreError> {
    let sql = match username {
        Some(_) => "SELECT id, username, secret FROM tokens WHERE username = ?1 ORDER BY id",
        None => "SELECT id, username, secret FROM tokens WHERE ?1 IS NULL ORDER BY id",
    };
    let seeds = conn
        .prepare_cached(sql)?
        .query_map([username], |r| Ok(SealedSeed { id: r.get(0)?, username: r.get(1)?, sealed: r.get(2)? }))?
        .collect::<Result<_, _>>()?;
    Ok(seeds)
}

/// Keeps a token, its seed sealed for the id it got.
fn insert_token(conn: &Connection, token: &NewTokenRow, seal: SealNew) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO tokens (username, name, algorithm, digits, period, secret, created_at, confirmed)
         VALUES (?1, ?2, ?3, ?4, ?5, '', ?6, ?7)",
    )?
    .execute(params![
        token.username,
        token.name,
        token.params.algorithm.as_str(),
        token.params.digits,
        token.params.period as i64,
        token.created_at,
        token.confirmed
    ])?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached("UPDATE tokens SET secret = ?1 WHERE id = ?2")?.execute(params![seal(id), id])?;
    Ok(id)
}

fn keep_answer(conn: &Connection, kept: &KeptAnswer) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT OR REPLACE INTO kept_answers (key, expires_at, answer) VALUES (?1, ?2, ?3)")?.execute(params![
        kept.key,
        kept.expires_at,
        kept.answer
    ])?;
    Ok(())
}

/// Keeps a portal session within the caps: the account's oldest go, then those nearest to expiry.
fn insert_session(conn: &Connection, row: &SessionRow, caps: SessionCaps) -> Result<(), StoreError> {
    let keep_own = caps.per_account.max(1) as i64 - 1;
    conn.prepare_cached(
        "DELETE FROM portal_sessions WHERE account = ?1 AND seq NOT IN
            (SELECT seq FROM portal_sessions WHERE account = ?1 ORDER BY seq DESC LIMIT ?2)",
    )?
    .execute(params![row.account, keep_own])?;
    conn.prepare_cached(
        "DELETE FROM portal_sessions WHERE seq IN (SELECT seq FROM portal_sessions ORDER BY expires_at, seq
            LIMIT max(0, (SELECT count(*) FROM portal_sessions) - ?1))",
    )?
    .execute([caps.total.max(1) as i64 - 1])?;
    conn.prepare_cached("INSERT INTO portal_sessions (key, account, ends_at, expires_at, data) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![row.key.as_slice(), row.account, row.ends_at, row.expires_at, row.sealed])?;
    Ok(())
}

/// Every token and counter (`radmfa store copy`).
fn snapshot(conn: &Connection) -> Result<Snapshot, StoreError> {
    let mut tokens = Vec::new();
    let mut statement = conn.prepare_cached(ALL_TOKENS)?;
    let mut rows = statement.query([Option::<String>::None])?;
    while let Some(row) = rows.next()? {
        tokens.push(read_token(row)?);
    }
    let mut lockouts = Vec::new();
    for factor in [Factor::Code, Factor::Password] {
        let sql = format!(
            "SELECT username, failures, locked_until, lock_count, last_failure_at, seq FROM {} ORDER BY username",
            lockout_table(factor)
        );
        let mut statement = conn.prepare(&sql)?;
        let found = statement.query_map([], |r| {
            Ok(LockoutRecord {
                username: r.get(0)?,
                factor,
                failures: r.get(1)?,
                locked_until: r.get(2)?,
                lock_count: r.get(3)?,
                last_failure_at: r.get(4)?,
                seq: r.get::<_, i64>(5)?.max(0) as u64,
            })
        })?;
        for record in found {
            lockouts.push(record?);
        }
    }
    Ok(Snapshot { tokens, lockouts })
}

/// Checks the SMS limits and, if allowed, records the send.
fn reserve_sms(conn: &Connection, username: &str, now: UnixTime, limits: SmsLimits) -> Result<SmsReservation, StoreError> {
    let user_since = now - limits.per_user_window.as_secs() as UnixTime;
    let by_user: u32 = conn
        .prepare_cached("SELECT COUNT(*) FROM sms_sends WHERE username = ?1 AND sent_at > ?2")?
        .query_row(params![username, user_since], |r| r.get(0))?;
    if by_user >= limits.per_user {
        return Ok(SmsReservation::UserLimit);
    }
    let global: u32 = conn.prepare_cached("SELECT COUNT(*) FROM sms_sends WHERE sent_at > ?1")?.query_row([now - 60], |r| r.get(0))?;
    if global >= limits.global_per_minute {
        return Ok(SmsReservation::GlobalLimit);
    }
    conn.prepare_cached("INSERT INTO sms_sends (username, sent_at) VALUES (?1, ?2)")?.execute(params![username, now])?;
    Ok(SmsReservation::Allowed)
}

/// The answer kept under `key`, unless it expired before `now`.
fn live_answer(conn: &Connection, key: &[u8], now: UnixTime) -> Result<Option<Vec<u8>>, StoreError> {
    let answer = conn
        .prepare_cached("SELECT answer FROM kept_answers WHERE key = ?1 AND expires_at >= ?2")?
        .query_row(params![key, now], |r| r.get(0))
        .optional()?;
    Ok(answer)
}

/// A user's live temporary codes (`?1` the user, `?2` now), or everyone's (`?1` NULL).
const USER_TEMPORARY_CODES: &str = "SELECT id, username, issued_by, issued_at, expires_at, uses_left, sealed FROM temporary_codes
     WHERE username = ?1 AND expires_at > ?2 AND uses_left > 0 ORDER BY id";
const ALL_TEMPORARY_CODES: &str = "SELECT id, username, issued_by, issued_at, expires_at, uses_left, sealed FROM temporary_codes
     WHERE ?1 IS NULL AND expires_at > ?2 AND uses_left > 0 ORDER BY id";

fn read_temporary_code(r: &rusqlite::Row<'_>) -> rusqlite::Result<TemporaryCodeRow> {
    Ok(TemporaryCodeRow {
        info: TemporaryCodeInfo {
            id: r.get(0)?,
            username: r.get(1)?,
            issued_by: r.get(2)?,
            issued_at: r.get(3)?,
            expires_at: r.get(4)?,
            // Only live codes are read: uses left is at least one, and no more than were issued.
            uses_left: u32::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
        },
        sealed: r.get(6)?,
    })
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn record_events(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        // One operation, so one savepoint of the store thread's transaction: all or none.
        self.call(move |conn| {
            let mut insert = conn.prepare_cached(
                "INSERT INTO audit_events (at, account, action, client, origin, result, reason, actor, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for event in events.into_iter().map(event_bounds::bounded) {
                insert.execute(params![
                    event.at,
                    event.account,
                    event.action,
                    event.client,
                    event.from,
                    event.result,
                    event.reason,
                    event.actor,
                    event.detail
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn events(&self, account: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let account = event_bounds::account_key(account).into_owned();
        let limit = event_bounds::read_limit(limit) as i64;
        self.call(move |conn| {
            let found = conn
                .prepare_cached(
                    "SELECT at, account, action, client, origin, result, reason, actor, detail FROM audit_events
                     WHERE account = ?1 ORDER BY at DESC, id DESC LIMIT ?2",
                )?
                .query_map(params![account, limit], |r| {
                    Ok(AuditEvent {
                        at: r.get(0)?,
                        account: r.get(1)?,
                        action: r.get(2)?,
                        client: r.get(3)?,
                        from: r.get(4)?,
                        result: r.get(5)?,
                        reason: r.get(6)?,
                        actor: r.get(7)?,
                        detail: r.get(8)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(found)
        })
        .await
    }

    async fn purge_events(&self, before: UnixTime) -> Result<usize, StoreError> {
        // In slices, each an operation of its own: the store thread serves logins between them,
        // even when the first purge after a long time (or a shorter retention) has millions to do.
        let mut purged = 0;
        loop {
            let deleted = self
                .call(move |conn| {
                    Ok(conn
                        .prepare_cached("DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE at < ?1 LIMIT ?2)")?
                        .execute(params![before, backend::EVENTS_PURGED_AT_ONCE as i64])?)
                })
                .await?;
            purged += deleted;
            if deleted < backend::EVENTS_PURGED_AT_ONCE {
                return Ok(purged);
            }
        }
    }

    async fn add_temporary_code(&self, code: NewTemporaryCodeRow, seal: SealNew) -> Result<(i64, usize), StoreError> {
        let uses = i64::from(code.uses);
        self.call(move |conn| {
            let replaced = conn.prepare_cached("DELETE FROM temporary_codes WHERE username = ?1")?.execute(params![code.username])?;
            // The row first for its id, then its seal, which names the id: in one savepoint, so
            // no row is ever kept without its code.
            conn.prepare_cached(
                "INSERT INTO temporary_codes (username, issued_by, issued_at, expires_at, uses_left, sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5, '')",
            )?
            .execute(params![code.username, code.issued_by, code.issued_at, code.expires_at, uses])?;
            let id = conn.last_insert_rowid();
            conn.prepare_cached("UPDATE temporary_codes SET sealed = ?1 WHERE id = ?2")?.execute(params![seal(id), id])?;
            Ok((id, replaced))
        })
        .await
    }

    async fn temporary_codes(&self, username: Option<&str>, now: UnixTime) -> Result<Vec<TemporaryCodeRow>, StoreError> {
        let username = username.map(str::to_owned);
        self.call(move |conn| {
            let sql = match username {
                Some(_) => USER_TEMPORARY_CODES,
                None => ALL_TEMPORARY_CODES,
            };
            let codes = conn.prepare_cached(sql)?.query_map(params![username, now], read_temporary_code)?.collect::<Result<_, _>>()?;
            Ok(codes)
        })
        .await
    }

    async fn use_temporary_code(&self, id: i64, now: UnixTime, request: &[u8], keep: Option<KeptAnswer>) -> Result<CodeUse, StoreError> {
        let request = super::super::backend::code_use_entry(request);
        self.call(move |conn| {
            // The requests that took uses are kept with the code: a copy of one takes none.
            let used = conn
                .prepare_cached(
                    "UPDATE temporary_codes SET uses_left = uses_left - 1, used_by = used_by || ?3
                     WHERE id = ?1 AND expires_at > ?2 AND uses_left > 0 AND instr(used_by, ?3) = 0",
                )?
                .execute(params![id, now, request])?
                == 1;
            if !used {
                let before: Option<bool> = conn
                    .prepare_cached("SELECT instr(used_by, ?2) > 0 FROM temporary_codes WHERE id = ?1")?
                    .query_row(params![id, request], |r| r.get(0))
                    .optional()?;
                return Ok(if before == Some(true) { CodeUse::ByThisRequest } else { CodeUse::Spent });
            }
            // In the same savepoint as the use: a node that dies after it leaves the Accept for
            // the NAS's retry, as with a time step.
            if let Some(kept) = keep {
                keep_answer(conn, &kept)?;
            }
            Ok(CodeUse::Used)
        })
        .await
    }

    async fn end_sessions(&self, account: &str) -> Result<usize, StoreError> {
        let account = account.to_owned();
        self.call(move |conn| Ok(conn.prepare_cached("DELETE FROM portal_sessions WHERE account = ?1")?.execute(params![account])?)).await
    }

    async fn revoke_temporary_codes(&self, username: &str, id: Option<i64>) -> Result<usize, StoreError> {
        let username = username.to_owned();
        self.call(move |conn| {
            let sql = "DELETE FROM temporary_codes WHERE username = ?1 AND (?2 IS NULL OR id = ?2)";
            Ok(conn.prepare_cached(sql)?.execute(params![username, id])?)
        })
        .await
    }

    async fn reseal_temporary_codes(&self, reseal: Reseal) -> Result<usize, StoreError> {
        self.call(move |conn| {
            let codes: Vec<SealedSeed> = conn
                .prepare_cached("SELECT id, username, sealed FROM temporary_codes ORDER BY id")?
                .query_map([], |r| Ok(SealedSeed { id: r.get(0)?, username: r.get(1)?, sealed: r.get(2)? }))?
                .collect::<Result<_, _>>()?;
            let mut resealed = 0;
            for code in codes {
                if let Some(sealed) = reseal(&code)? {
                    conn.prepare_cached("UPDATE temporary_codes SET sealed = ?1 WHERE id = ?2")?.execute(params![sealed, code.id])?;
                    resealed += 1;
                }
            }
            Ok(resealed)
        })
        .await
    }

    async fn add_token(&self, token: NewTokenRow, seal: SealNew) -> Result<i64, StoreError> {
        self.call(move |conn| insert_token(conn, &token, seal)).await
    }

    async fn add_tokens(&self, owners: Vec<String>, sort: SortNew) -> Result<Vec<Filing>, StoreError> {
        // One operation: one savepoint of the store thread's transaction, which no other
        // operation interleaves with.
        self.call(move |conn| {
            let mut kept = Vec::new();
            let mut statement = conn.prepare_cached(USER_TOKENS)?;
            for owner in &owners {
                let mut rows = statement.query([owner])?;
                while let Some(row) = rows.next()? {
                    kept.push(read_token(row)?);
                }
            }
            let mut filings = Vec::new();
            for sorted in sort(kept)? {
                filings.push(match sorted {
                    Sorted::Keep(token, seal) => {
                        insert_token(conn, &token, seal)?;
                        Filing::Added
                    }
                    Sorted::Skip(filing) => filing,
                });
            }
            Ok(filings)
        })
        .await
    }

    async fn tokens(&self, username: Option<&str>) -> Result<Vec<TokenRow>, StoreError> {
        let username = username.map(str::to_owned);
        self.call(move |conn| {
            let mut statement = conn.prepare_cached(if username.is_some() { USER_TOKENS } else { ALL_TOKENS })?;
            let mut rows = statement.query([&username])?;
            let mut tokens = Vec::new();
            while let Some(row) = rows.next()? {
                tokens.push(read_token(row)?);
            }
            Ok(tokens)
        })
        .await
    }

    async fn move_tokens(&self, from: &str, to: &str, reseal: Reseal) -> Result<usize, StoreError> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.call(move |conn| {
            let seeds = sealed_seeds(conn, Some(&from))?;
            for seed in &seeds {
                let sealed = reseal(seed)?.unwrap_or_else(|| seed.sealed.clone());
                conn.execute("UPDATE tokens SET username = ?1, secret = ?2 WHERE id = ?3", params![to, sealed, seed.id])?;
            }
            Ok(seeds.len())
        })
        .await
    }

    async fn reseal_tokens(&self, reseal: Reseal) -> Result<usize, StoreError> {
        self.call(move |conn| {
            let mut resealed = 0;
            for seed in sealed_seeds(conn, None)? {
                if let Some(sealed) = reseal(&seed)? {
                    conn.execute("UPDATE tokens SET secret = ?1 WHERE id = ?2", params![sealed, seed.id])?;
                    resealed += 1;
                }
            }
            Ok(resealed)
        })
        .await
    }

    async fn remove_token(&self, username: &str, id: i64) -> Result<bool, StoreError> {
        let username = username.to_owned();
        self.call(move |conn| Ok(conn.execute("DELETE FROM tokens WHERE id = ?1 AND username = ?2", params![id, username])? == 1)).await
    }

    async fn abandon_token(&self, username: &str, id: i64) -> Result<bool, StoreError> {
        let username = username.to_owned();
        let sql = "DELETE FROM tokens WHERE id = ?1 AND username = ?2 AND confirmed = 0";
        self.call(move |conn| Ok(conn.execute(sql, params![id, username])? == 1)).await
    }

    async fn confirm_token(&self, username: &str, id: i64, step: u64, max_confirmed: usize) -> Result<bool, StoreError> {
        let username = username.to_owned();
        let max = i64::try_from(max_confirmed).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let sql = "UPDATE tokens SET confirmed = 1, last_step = ?3 WHERE id = ?1 AND username = ?2 AND confirmed = 0
                       AND (SELECT count(*) FROM tokens WHERE username = ?2 AND confirmed = 1) < ?4";
            Ok(conn.execute(sql, params![id, username, step as i64, max])? == 1)
        })
        .await
    }

    async fn use_step(&self, token_id: i64, step: u64, now: UnixTime, keep: Option<KeptAnswer>) -> Result<bool, StoreError> {
        self.call(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE tokens SET last_step = ?1, last_used_at = ?2
                     WHERE id = ?3 AND confirmed = 1 AND (last_step IS NULL OR last_step < ?1)",
                )?
                .execute(params![step as i64, now, token_id])?;
            if changed == 1
                && let Some(kept) = keep
            {
                keep_answer(conn, &kept)?;
            }
            Ok(changed == 1)
        })
        .await
    }

    async fn locked_until(&self, username: &str, factor: Factor, now: UnixTime) -> Result<Option<UnixTime>, StoreError> {
        let username = username.to_owned();
        self.call(move |conn| {
            let sql = format!("SELECT locked_until FROM {} WHERE username = ?1", lockout_table(factor));
            let until: Option<Option<UnixTime>> = conn.prepare_cached(&sql)?.query_row([&username], |r| r.get(0)).optional()?;
            Ok(until.flatten().filter(|&t| t > now))
        })
        .await
    }

    async fn lockout_state(
        &self,
        username: &str,
        factor: Factor,
        now: UnixTime,
        policy: LockoutPolicy,
    ) -> Result<LockoutState, StoreError> {
        let username = username.to_owned();
        let table = lockout_table(factor);
        self.call(move |conn| {
            let sql = format!("SELECT failures, locked_until, last_failure_at, seq FROM {table} WHERE username = ?1");
            let row: Option<(u32, Option<UnixTime>, Option<UnixTime>, u64)> =
                conn.prepare_cached(&sql)?.query_row([&username], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).optional()?;
            let Some((failures, locked_until, last_failure, seq)) = row else { return Ok(LockoutState::default()) };
            let forgotten = policy.forget_after.is_some_and(|f| last_failure.is_some_and(|at| at < now - f.as_secs() as UnixTime));
            Ok(LockoutState {
                locked_until: locked_until.filter(|&until| until > now),
                failures: if forgotten { 0 } else { failures },
                seq,
            })
        })
        .await
    }

    async fn record_failure(
        &self,
        username: &str,
        factor: Factor,
        now: UnixTime,
        policy: LockoutPolicy,
    ) -> Result<Option<UnixTime>, StoreError> {
        let username = username.to_owned();
        let table = lockout_table(factor);
        self.call(move |conn| {
            conn.prepare_cached(&format!("INSERT INTO {table} (username) VALUES (?1) ON CONFLICT(username) DO NOTHING"))?
                .execute([&username])?;
            if let Some(forget) = policy.forget_after {
                // Failures (and doublings) from long ago no longer count, once no lock is running.
                conn.prepare_cached(&format!(
                    "UPDATE {table} SET failures = 0, lock_count = 0 WHERE username = ?1 AND last_failure_at < ?2
                     AND (locked_until IS NULL OR locked_until <= ?3)"
                ))?
                .execute(params![username, now - forget.as_secs() as UnixTime, now])?;
            }
            let (failures, lock_count): (u32, u32) = conn
                .prepare_cached(&format!(
                    "UPDATE {table} SET failures = failures + 1, last_failure_at = ?2, seq = seq + 1 WHERE username = ?1
                     RETURNING failures, lock_count"
                ))?
                .query_row(params![username, now], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if failures < policy.max_failures.max(1) {
                return Ok(None);
            }
            let until = now + policy.lock_duration(lock_count).as_secs() as UnixTime;
            conn.prepare_cached(&format!(
                "UPDATE {table} SET failures = 0, locked_until = ?1, lock_count = lock_count + 1 WHERE username = ?2"
            ))?
            .execute(params![until, username])?;
            Ok(Some(until))
        })
        .await
    }

    async fn record_success(&self, username: &str, factor: Factor, seen: u64) -> Result<(), StoreError> {
        let username = username.to_owned();
        self.call(move |conn| {
            // Only when no failure was counted since the try began (seq unchanged): a wrong try
            // that finished meanwhile stays counted, as AD counted it.
            let sql = format!("DELETE FROM {} WHERE username = ?1 AND seq = ?2", lockout_table(factor));
            conn.prepare_cached(&sql)?.execute(params![username, seen as i64])?;
            Ok(())
        })
        .await
    }

    async fn unlock(&self, username: &str) -> Result<bool, StoreError> {
        let username = username.to_owned();
        self.call(move |conn| {
            let code = conn.execute("DELETE FROM lockouts WHERE username = ?1", [&username])?;
            let password = conn.execute("DELETE FROM password_lockouts WHERE username = ?1", [&username])?;
            Ok(code + password > 0)
        })
        .await
    }

    async fn reserve_sms(&self, username: &str, now: UnixTime, limits: SmsLimits) -> Result<SmsReservation, StoreError> {
        let username = username.to_owned();
        self.call(move |conn| reserve_sms(conn, &username, now, limits)).await
    }

    async fn reserve_sms_challenge(
        &self,
        username: &str,
        now: UnixTime,
        limits: SmsLimits,
        challenge: SmsChallengeRecord,
    ) -> Result<SmsChallengeUse, StoreError> {
        let username = username.to_owned();
        self.call(move |conn| {
            if let Some(kept) = &challenge.answer
                && let Some(answer) = live_answer(conn, &kept.key, now)?
            {
                return Ok(SmsChallengeUse::AnsweredBefore(answer));
            }
            if let Some(refused) = reserve_sms(conn, &username, now, limits)?.refused() {
                return Ok(refused);
            }
            conn.prepare_cached("INSERT OR REPLACE INTO challenge_contexts (nonce, expires_at, context) VALUES (?1, ?2, ?3)")?
                .execute(params![challenge.nonce, challenge.expires_at, challenge.context])?;
            if let Some(kept) = &challenge.answer {
                keep_answer(conn, kept)?;
            }
            Ok(SmsChallengeUse::Reserved)
        })
        .await
    }

    async fn consume_state(&self, nonce: &[u8], expires_at: UnixTime, request: &[u8]) -> Result<StateUse, StoreError> {
        let (nonce, request) = (nonce.to_vec(), request.to_vec());
        self.call(move |conn| {
            let inserted = conn
                .prepare_cached("INSERT OR IGNORE INTO used_states (nonce, expires_at, request) VALUES (?1, ?2, ?3)")?
                .execute(params![nonce, expires_at, request])?;
            if inserted == 1 {
                return Ok(StateUse::First);
            }
            let by: Option<Vec<u8>> =
                conn.prepare_cached("SELECT request FROM used_states WHERE nonce = ?1")?.query_row([&nonce], |r| r.get(0))?;
            Ok(if by.as_deref() == Some(request.as_slice()) { StateUse::SameRequest } else { StateUse::Used })
        })
        .await
    }

    async fn keep_challenge_context(&self, nonce: &[u8], expires_at: UnixTime, context: Vec<u8>) -> Result<(), StoreError> {
        let nonce = nonce.to_vec();
        self.call(move |conn| {
            conn.prepare_cached("INSERT OR REPLACE INTO challenge_contexts (nonce, expires_at, context) VALUES (?1, ?2, ?3)")?
                .execute(params![nonce, expires_at, context])?;
            Ok(())
        })
        .await
    }

    async fn challenge_context(&self, nonce: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let nonce = nonce.to_vec();
        self.call(move |conn| {
            let context = conn
                .prepare_cached("SELECT context FROM challenge_contexts WHERE nonce = ?1")?
                .query_row([nonce], |r| r.get(0))
                .optional()?;
            Ok(context)
        })
        .await
    }

    async fn keep_answer(&self, kept: KeptAnswer) -> Result<(), StoreError> {
        self.call(move |conn| keep_answer(conn, &kept)).await
    }

    async fn kept_answer(&self, key: &[u8], now: UnixTime) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_vec();
        self.call(move |conn| {
            let answer = conn
                .prepare_cached("SELECT answer FROM kept_answers WHERE key = ?1 AND expires_at >= ?2")?
                .query_row(params![key, now], |r| r.get(0))
                .optional()?;
            Ok(answer)
        })
        .await
    }

    async fn create_session(&self, session: SessionRow, caps: SessionCaps) -> Result<(), StoreError> {
        self.call(move |conn| insert_session(conn, &session, caps)).await
    }

    async fn session(&self, key: &SessionKey, now: UnixTime, expires_at: UnixTime) -> Result<Option<(i64, String)>, StoreError> {
        let key = *key;
        self.call(move |conn| {
            let found = conn
                .prepare_cached(
                    "UPDATE portal_sessions SET expires_at = min(ends_at, ?3) WHERE key = ?1 AND expires_at > ?2
                     RETURNING version, data",
                )?
                .query_row(params![key.as_slice(), now, expires_at], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(found)
        })
        .await
    }

    async fn update_session(&self, key: &SessionKey, version: i64, sealed: String) -> Result<bool, StoreError> {
        let key = *key;
        self.call(move |conn| {
            let sql = "UPDATE portal_sessions SET data = ?3, version = version + 1 WHERE key = ?1 AND version = ?2";
            Ok(conn.prepare_cached(sql)?.execute(params![key.as_slice(), version, sealed])? == 1)
        })
        .await
    }

    async fn rotate_session(&self, old: &SessionKey, version: i64, new: SessionRow, caps: SessionCaps) -> Result<bool, StoreError> {
        let old = *old;
        self.call(move |conn| {
            let ended = conn
                .prepare_cached("DELETE FROM portal_sessions WHERE key = ?1 AND version = ?2")?
                .execute(params![old.as_slice(), version])?;
            if ended != 1 {
                return Ok(false);
            }
            insert_session(conn, &new, caps)?;
            Ok(true)
        })
        .await
    }

    async fn remove_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        let key = *key;
        self.call(move |conn| {
            conn.prepare_cached("DELETE FROM portal_sessions WHERE key = ?1")?.execute([key.as_slice()])?;
            Ok(())
        })
        .await
    }

    async fn session_count(&self) -> Result<usize, StoreError> {
        self.call(|conn| Ok(conn.query_row("SELECT count(*) FROM portal_sessions", [], |r| r.get::<_, i64>(0))?.max(0) as usize)).await
    }

    async fn export(&self) -> Result<Snapshot, StoreError> {
        self.call(snapshot).await
    }

    async fn import(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.call(move |conn| {
            let copied: Option<Vec<u8>> = conn.query_row("SELECT copied FROM store_identity", [], |r| r.get(0)).optional()?.flatten();
            if !Snapshot::may_replace(&self::snapshot(conn)?, copied.as_deref()) {
                return Err(Snapshot::diverged());
            }
            conn.execute_batch("DELETE FROM tokens; DELETE FROM lockouts; DELETE FROM password_lockouts;")?;
            let mut put = conn.prepare(
                "INSERT INTO tokens (id, username, name, algorithm, digits, period, secret, created_at, last_step, last_used_at, confirmed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for t in &snapshot.tokens {
                put.execute(params![
                    t.id,
                    t.username,
                    t.name,
                    t.params.algorithm.as_str(),
                    t.params.digits,
                    t.params.period as i64,
                    t.sealed,
                    t.created_at,
                    t.last_step.map(|s| s as i64),
                    t.last_used_at,
                    t.confirmed
                ])?;
            }
            for l in &snapshot.lockouts {
                let sql = format!(
                    "INSERT INTO {} (username, failures, locked_until, lock_count, last_failure_at, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    lockout_table(l.factor)
                );
                conn.prepare_cached(&sql)?.execute(params![
                    l.username,
                    l.failures,
                    l.locked_until,
                    l.lock_count,
                    l.last_failure_at,
                    l.seq as i64
                ])?;
            }
            conn.execute("UPDATE store_identity SET copied = ?1", [snapshot.digest().as_slice()])?;
            Ok(())
        })
        .await
    }

    async fn identity(&self) -> Result<String, StoreError> {
        self.call(|conn| Ok(conn.query_row("SELECT id FROM store_identity", [], |r| r.get(0))?)).await
    }

    async fn purge(&self, now: UnixTime) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute("DELETE FROM portal_sessions WHERE expires_at <= ?1", [now])?;
            conn.execute("DELETE FROM used_states WHERE expires_at < ?1", [now])?;
            conn.execute("DELETE FROM challenge_contexts WHERE expires_at < ?1", [now])?;
            conn.execute("DELETE FROM kept_answers WHERE expires_at < ?1", [now])?;
            conn.execute("DELETE FROM sms_sends WHERE sent_at < ?1", [now - backend::SMS_HISTORY])?;
            conn.execute("UPDATE lockouts SET locked_until = NULL WHERE locked_until < ?1", [now])?;
            conn.execute("UPDATE password_lockouts SET locked_until = NULL WHERE locked_until < ?1", [now])?;
            // Enrollments abandoned before their confirming code: never usable, so never kept long.
            conn.execute("DELETE FROM tokens WHERE confirmed = 0 AND created_at < ?1", [now - backend::UNCONFIRMED_TOKEN_LIFETIME])?;
            conn.execute("DELETE FROM temporary_codes WHERE expires_at <= ?1 OR uses_left <= 0", [now])?;
            Ok(())
        })
        .await
    }

    async fn checkpoint(&self) -> Result<(), StoreError> {
        self.fold_log().await
    }

    fn storage_problem(&self) -> Option<String> {
        self.file_problem()
    }
}

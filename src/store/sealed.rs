//! The [`Store`] every backend is seen through: it seals token seeds with the key file's current
//! key before a backend keeps them, and opens them as they come back, so no backend holds a key
//! or a seed in the clear. A seal is bound to its row and owner (`radmfa/token/v1/<id>/<user>`):
//! a sealed seed copied to another row, or another user's, does not open. Moving tokens to
//! another owner and rotating keys (`radmfa keys rotate`) reseal here too. Portal sessions are
//! sealed here as well, each bound to its key: a session's data moved under another key does
//! not open.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;

use super::backend::{
    Backend, NewTemporaryCodeRow, NewTokenRow, Reseal, SealNew, SealedSeed, SessionRow, Snapshot, SortNew, Sorted, TemporaryCodeRow,
    TokenRow,
};
use super::{
    AuditEvent, CodeUse, Factor, Filing, KeptAnswer, LockoutPolicy, LockoutState, NewSession, NewTemporaryCode, NewToken, SessionCaps,
    SessionKey, SmsChallengeRecord, SmsChallengeUse, SmsLimits, SmsReservation, StateUse, Store, StoreError, StoredSession, TemporaryCode,
    TemporaryCodeInfo, Token, TokenInfo, UnixTime,
};
use crate::keys::{KeyRing, Keys};
use crate::secret::Secret;

/// Seals and opens seeds over a backend.
pub struct SealedStore<B: Backend> {
    keys: Arc<Keys>,
    backend: B,
}

/// Binds a sealed seed to its row and owner: copied to another row, it does not open. The
/// format is what databases hold: it never changes.
fn token_aad(id: i64, username: &str) -> Vec<u8> {
    format!("radmfa/token/v1/{id}/{username}").into_bytes()
}

/// Binds a sealed temporary code to its row and owner, as a seed is.
fn temporary_code_aad(id: i64, username: &str) -> Vec<u8> {
    format!("radmfa/temporary-code/v1/{id}/{username}").into_bytes()
}

/// Binds a portal session's sealed data to its key.
fn session_aad(key: &SessionKey) -> Vec<u8> {
    [b"radmfa/portal-session/v1/".as_slice(), key].concat()
}

/// Whether `keys` open a kept token's seed (`radmfa store copy` checks the destination's key
/// file before it copies anything).
pub fn seed_opens(keys: &Keys, token: &TokenRow) -> bool {
    keys.open(&token.sealed, &token_aad(token.id, &token.username)).is_ok()
}

/// A kept token's seed, opened with `keys` (`None` if no key opens it): `token import` checks
/// a new seed against every user's.
pub fn open_seed(keys: &Keys, token: &TokenRow) -> Option<Secret<Vec<u8>>> {
    keys.open(&token.sealed, &token_aad(token.id, &token.username)).ok().map(|seed| Secret::new(seed.to_vec()))
}

/// The id of the key a seed is sealed with (`<key id>:<sealed bytes>`).
fn key_id(sealed: &str) -> &str {
    sealed.split_once(':').map(|(id, _)| id).unwrap_or_default()
}

impl<B: Backend> SealedStore<B> {
    pub fn new(keys: Arc<Keys>, backend: B) -> Self {
        Self { keys, backend }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn seal_session(&self, key: &SessionKey, data: &Secret<Vec<u8>>) -> String {
        self.keys.current().seal(data.expose(), &session_aad(key))
    }

    fn session_row(&self, session: NewSession) -> SessionRow {
        let sealed = self.seal_session(&session.key, &session.data);
        let NewSession { key, account, ends_at, expires_at, .. } = session;
        SessionRow { key, account, ends_at, expires_at: expires_at.min(ends_at), sealed }
    }

    fn open_row(&self, row: TokenRow) -> Result<Token, StoreError> {
        open_token(&self.keys, row)
    }

    /// The kept tokens of `owners`, opened.
    async fn tokens_of(&self, owners: &HashSet<&str>) -> Result<Vec<Token>, StoreError> {
        let rows = self.backend.tokens(None).await?;
        rows.into_iter().filter(|row| owners.contains(row.username.as_str())).map(|row| self.open_row(row)).collect()
    }
}

fn open_token(keys: &Keys, row: TokenRow) -> Result<Token, StoreError> {
    let mut seed = keys.open(&row.sealed, &token_aad(row.id, &row.username)).map_err(|_| StoreError::Sealed(row.id))?;
    Ok(Token {
        id: row.id,
        username: row.username,
        name: row.name,
        params: row.params,
        // Moved, not copied: one copy of the seed in the clear, zeroed when the token goes.
        secret: Secret::new(std::mem::take(&mut *seed)),
        created_at: row.created_at,
        last_step: row.last_step,
        last_used_at: row.last_used_at,
        confirmed: row.confirmed,
    })
}

/// Seals a new token's seed for the row id it gets, bound to its owner.
fn seal_new(ring: Arc<KeyRing>, owner: String, secret: Secret<Vec<u8>>) -> SealNew {
    Box::new(move |id| ring.seal(secret.expose(), &token_aad(id, &owner)))
}

/// Reseals with `ring`'s current key what another key sealed, bound by `aad` as before.
fn reseal_with(ring: Arc<KeyRing>, aad: fn(i64, &str) -> Vec<u8>) -> Reseal {
    Box::new(move |seed: &SealedSeed| {
        if key_id(&seed.sealed) == ring.current_id() {
            return Ok(None);
        }
        let aad = aad(seed.id, &seed.username);
        let plain = ring.open(&seed.sealed, &aad).map_err(|_| StoreError::Sealed(seed.id))?;
        Ok(Some(ring.seal(&plain, &aad)))
    })
}

/// The distinct owners of `tokens`.
fn owners_of(tokens: &[NewToken]) -> HashSet<&str> {
    tokens.iter().map(|t| t.username.as_str()).collect()
}

#[async_trait]
impl<B: Backend> Store for SealedStore<B> {
    async fn add_token(&self, token: NewToken) -> Result<i64, StoreError> {
        let NewToken { username, name, params, secret, confirmed, created_at } = token;
        let seal = seal_new(self.keys.current(), username.clone(), secret);
        let row = NewTokenRow { username, name, params, created_at, confirmed };
        self.backend.add_token(row, seal).await
    }

    async fn add_tokens(&self, tokens: Vec<NewToken>, max_confirmed: usize) -> Result<Vec<Filing>, StoreError> {
        let owners: Vec<String> = owners_of(&tokens).into_iter().map(str::to_owned).collect();
        let keys = Arc::clone(&self.keys);
        // Decided inside the backend's step, on the owners' tokens as that step holds them.
        let sort: SortNew = Box::new(move |kept| {
            let kept = kept.into_iter().map(|row| open_token(&keys, row)).collect::<Result<Vec<_>, _>>()?;
            let filings = super::filing::sort(&tokens, &kept, max_confirmed);
            let ring = keys.current();
            let sorted = tokens.into_iter().zip(filings).map(|(token, filing)| match filing {
                Filing::Added => {
                    let NewToken { username, name, params, secret, confirmed, created_at } = token;
                    let seal = seal_new(Arc::clone(&ring), username.clone(), secret);
                    Sorted::Keep(NewTokenRow { username, name, params, created_at, confirmed }, seal)
                }
                skipped => Sorted::Skip(skipped),
            });
            Ok(sorted.collect())
        });
        self.backend.add_tokens(owners, sort).await
    }

    async fn sort_tokens(&self, tokens: &[NewToken], max_confirmed: usize) -> Result<Vec<Filing>, StoreError> {
        let kept = self.tokens_of(&owners_of(tokens)).await?;
        Ok(super::filing::sort(tokens, &kept, max_confirmed))
    }

    async fn tokens(&self, username: &str) -> Result<Vec<Token>, StoreError> {
        self.backend.tokens(Some(username)).await?.into_iter().map(|row| self.open_row(row)).collect()
    }

    async fn list_tokens(&self, username: Option<&str>) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = self.backend.tokens(username).await?;
        Ok(rows
            .into_iter()
            .map(|row| TokenInfo {
                sealed_with: key_id(&row.sealed).to_owned(),
                id: row.id,
                username: row.username,
                name: row.name,
                created_at: row.created_at,
                last_used_at: row.last_used_at,
                confirmed: row.confirmed,
            })
            .collect())
    }

    async fn move_tokens(&self, from: &str, to: &str) -> Result<usize, StoreError> {
        if from == to {
            return Ok(0);
        }
        let (keys, to_owned) = (Arc::clone(&self.keys), to.to_owned());
        // The seal names its owner, so a moved seed is sealed anew for the account.
        let reseal: Reseal = Box::new(move |seed: &SealedSeed| {
            let plain = keys.open(&seed.sealed, &token_aad(seed.id, &seed.username)).map_err(|_| StoreError::Sealed(seed.id))?;
            Ok(Some(keys.current().seal(&plain, &token_aad(seed.id, &to_owned))))
        });
        self.backend.move_tokens(from, to, reseal).await
    }

    async fn remove_token(&self, username: &str, id: i64) -> Result<bool, StoreError> {
        self.backend.remove_token(username, id).await
    }

    async fn abandon_token(&self, username: &str, id: i64) -> Result<bool, StoreError> {
        self.backend.abandon_token(username, id).await
    }

    async fn confirm_token(&self, username: &str, id: i64, step: u64, max_confirmed: usize) -> Result<bool, StoreError> {
        self.backend.confirm_token(username, id, step, max_confirmed).await
    }

    async fn use_step(&self, token_id: i64, step: u64, now: UnixTime, keep: Option<KeptAnswer>) -> Result<bool, StoreError> {
        self.backend.use_step(token_id, step, now, keep).await
    }

    async fn locked_until(&self, username: &str, factor: Factor, now: UnixTime) -> Result<Option<UnixTime>, StoreError> {
        self.backend.locked_until(username, factor, now).await
    }

    async fn lockout_state(
        &self,
        username: &str,
        factor: Factor,
        now: UnixTime,
        policy: LockoutPolicy,
    ) -> Result<LockoutState, StoreError> {
        self.backend.lockout_state(username, factor, now, policy).await
    }

    async fn record_failure(
        &self,
        username: &str,
        factor: Factor,
        now: UnixTime,
        policy: LockoutPolicy,
    ) -> Result<Option<UnixTime>, StoreError> {
        self.backend.record_failure(username, factor, now, policy).await
    }

    async fn record_success(&self, username: &str, factor: Factor, seen: u64) -> Result<(), StoreError> {
        self.backend.record_success(username, factor, seen).await
    }

    async fn unlock(&self, username: &str) -> Result<bool, StoreError> {
        self.backend.unlock(username).await
    }

    async fn reserve_sms(&self, username: &str, now: UnixTime, limits: SmsLimits) -> Result<SmsReservation, StoreError> {
        self.backend.reserve_sms(username, now, limits).await
    }

    async fn reserve_sms_challenge(
        &self,
        username: &str,
        now: UnixTime,
        limits: SmsLimits,
        challenge: SmsChallengeRecord,
    ) -> Result<SmsChallengeUse, StoreError> {
        self.backend.reserve_sms_challenge(username, now, limits, challenge).await
    }

    async fn consume_state(&self, nonce: &[u8], expires_at: UnixTime, request: &[u8]) -> Result<StateUse, StoreError> {
        self.backend.consume_state(nonce, expires_at, request).await
    }

    async fn keep_challenge_context(&self, nonce: &[u8], expires_at: UnixTime, context: Vec<u8>) -> Result<(), StoreError> {
        self.backend.keep_challenge_context(nonce, expires_at, context).await
    }

    async fn challenge_context(&self, nonce: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.challenge_context(nonce).await
    }

    async fn keep_answer(&self, answer: KeptAnswer) -> Result<(), StoreError> {
        self.backend.keep_answer(answer).await
    }

    async fn kept_answer(&self, key: &[u8], now: UnixTime) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.kept_answer(key, now).await
    }

    async fn create_session(&self, session: NewSession, caps: SessionCaps) -> Result<(), StoreError> {
        self.backend.create_session(self.session_row(session), caps).await
    }

    async fn session(&self, key: &SessionKey, now: UnixTime, expires_at: UnixTime) -> Result<Option<StoredSession>, StoreError> {
        let Some((version, sealed)) = self.backend.session(key, now, expires_at).await? else { return Ok(None) };
        // One that does not open (the key file lost the key it was sealed with) is no session.
        let Ok(mut plain) = self.keys.open(&sealed, &session_aad(key)) else { return Ok(None) };
        Ok(Some(StoredSession { version, data: Secret::new(std::mem::take(&mut *plain)) }))
    }

    async fn update_session(&self, key: &SessionKey, version: i64, data: Secret<Vec<u8>>) -> Result<bool, StoreError> {
        self.backend.update_session(key, version, self.seal_session(key, &data)).await
    }

    async fn rotate_session(&self, old: &SessionKey, version: i64, new: NewSession, caps: SessionCaps) -> Result<bool, StoreError> {
        self.backend.rotate_session(old, version, self.session_row(new), caps).await
    }

    async fn remove_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.backend.remove_session(key).await
    }

    async fn session_count(&self) -> Result<usize, StoreError> {
        self.backend.session_count().await
    }

    async fn purge(&self, now: UnixTime) -> Result<(), StoreError> {
        self.backend.purge(now).await
    }

    async fn export(&self) -> Result<Snapshot, StoreError> {
        self.backend.export().await
    }

    async fn import(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.backend.import(snapshot).await
    }

    async fn identity(&self) -> Result<String, StoreError> {
        self.backend.identity().await
    }

    async fn reseal_all(&self, ring: Arc<KeyRing>) -> Result<usize, StoreError> {
        let resealed = self.backend.reseal_tokens(reseal_with(Arc::clone(&ring), token_aad)).await?;
        Ok(resealed + self.backend.reseal_temporary_codes(reseal_with(ring, temporary_code_aad)).await?)
    }

    async fn record_events(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        self.backend.record_events(events).await
    }

    async fn events(&self, account: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.backend.events(account, limit).await
    }

    async fn purge_events(&self, before: UnixTime) -> Result<usize, StoreError> {
        self.backend.purge_events(before).await
    }

    async fn add_temporary_code(&self, code: NewTemporaryCode) -> Result<(i64, usize), StoreError> {
        let NewTemporaryCode { username, code, issued_by, issued_at, expires_at, uses } = code;
        let (ring, owner) = (self.keys.current(), username.clone());
        let seal: SealNew = Box::new(move |id| ring.seal(code.expose().as_bytes(), &temporary_code_aad(id, &owner)));
        self.backend.add_temporary_code(NewTemporaryCodeRow { username, issued_by, issued_at, expires_at, uses }, seal).await
    }

    async fn temporary_codes(&self, username: &str, now: UnixTime) -> Result<Vec<TemporaryCode>, StoreError> {
        let rows = self.backend.temporary_codes(Some(username), now).await?;
        // One that does not open (its key left the key file) is no code: it cannot log in.
        Ok(rows
            .into_iter()
            .filter_map(|TemporaryCodeRow { info, sealed }| {
                let plain = self.keys.open(&sealed, &temporary_code_aad(info.id, &info.username)).ok()?;
                let code = String::from_utf8(plain.to_vec()).ok()?;
                Some(TemporaryCode { info, code: Secret::new(code) })
            })
            .collect())
    }

    async fn list_temporary_codes(&self, username: Option<&str>, now: UnixTime) -> Result<Vec<TemporaryCodeInfo>, StoreError> {
        Ok(self.backend.temporary_codes(username, now).await?.into_iter().map(|row| row.info).collect())
    }

    async fn use_temporary_code(&self, id: i64, now: UnixTime, request: &[u8], keep: Option<KeptAnswer>) -> Result<CodeUse, StoreError> {
        self.backend.use_temporary_code(id, now, request, keep).await
    }

    async fn end_sessions(&self, account: &str) -> Result<usize, StoreError> {
        self.backend.end_sessions(account).await
    }

    async fn revoke_temporary_codes(&self, username: &str, id: Option<i64>) -> Result<usize, StoreError> {
        self.backend.revoke_temporary_codes(username, id).await
    }

    async fn checkpoint(&self) -> Result<(), StoreError> {
        self.backend.checkpoint().await
    }

    fn storage_problem(&self) -> Option<String> {
        self.backend.storage_problem()
    }

    fn available(&self) -> bool {
        self.backend.available()
    }

    async fn ping(&self, now: UnixTime) -> Result<(), StoreError> {
        self.backend.ping(now).await
    }
}

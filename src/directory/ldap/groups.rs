//! Nested group membership at a price the DC can pay.
//!
//! Active Directory computes an account's `tokenGroups` — the SIDs of every group it is in,
//! through any depth of nesting, its primary group included — on a base-scope read of its
//! entry: one cheap operation. (The in-chain matching rule, 1.2.840.113556.1.4.1941, walks the
//! groups instead, and cost the DC ~27 ms of CPU per login with a 4,000-member group.) The SIDs
//! are matched against the `objectSid`s of `required_groups`, and turned into group DNs for
//! reply attributes through a cache: an entry is trusted for `group_cache_ttl`, and the SIDs not
//! in it are looked up in one search. Membership itself is never cached: removing a user from a
//! group takes effect at the next login.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ldap3::{Scope, SearchEntry};

use super::LdapDirectory;
use super::pool::{Failure, Role};

/// A security identifier in its binary form, as `tokenGroups` and `objectSid` carry it.
pub(super) type Sid = Vec<u8>;

/// SIDs looked up per search when naming groups (a filter of that many alternatives).
const NAMES_PER_SEARCH: usize = 64;

pub(super) struct GroupCache {
    ttl: Duration,
    /// The SIDs of `required_groups`, and when they were read. Refreshed by one request at a
    /// time; the others wait for it.
    required: tokio::sync::Mutex<Option<(Instant, Vec<Sid>)>>,
    /// SID → the group's DN (`None`: no entry under `base_dn` has it, e.g. a builtin SID).
    names: Mutex<HashMap<Sid, (Instant, Option<String>)>>,
}

impl GroupCache {
    pub(super) fn new(ttl: Duration) -> Self {
        Self { ttl, required: tokio::sync::Mutex::new(None), names: Mutex::new(HashMap::new()) }
    }

    fn remember(&self, sid: Sid, dn: Option<String>) {
        lock(&self.names).insert(sid, (Instant::now(), dn));
    }
}

impl LdapDirectory {
    /// The SIDs of every group the entry at `dn` is in, nested (its `tokenGroups`).
    pub(super) async fn token_groups(&self, dn: &str) -> Result<Vec<Sid>, Failure> {
        self.pool
            .run(Role::Service, |mut ldap| async move {
                let read = self.pool.search(&mut ldap, dn, Scope::Base, "(objectClass=*)", vec!["tokenGroups"]).await;
                let sids = read.and_then(|(entries, result)| match result.rc {
                    0 => Ok(entries.first().map(|e| binary_values(e, "tokenGroups")).unwrap_or_default()),
                    // The entry went away since it was found: it is in no group.
                    32 => Ok(Vec::new()),
                    rc => Err(Failure::broken(format!("reading tokenGroups answered result {rc}"))),
                });
                (ldap, sids)
            })
            .await
    }

    /// The SIDs of `required_groups`, read again after `group_cache_ttl`. A refresh the
    /// directory cannot answer keeps the SIDs read before.
    pub(super) async fn required_sids(&self) -> Result<Vec<Sid>, Failure> {
        let mut cached = self.groups.required.lock().await;
        if let Some((read_at, sids)) = &*cached
            && read_at.elapsed() < self.groups.ttl
        {
            return Ok(sids.clone());
        }
        let mut sids = Vec::new();
        for dn in &self.settings.required_groups {
            match self.object_sid(dn).await {
                Ok(Some(sid)) => {
                    self.groups.remember(sid.clone(), Some(dn.clone()));
                    sids.push(sid);
                }
                Ok(None) => {
                    tracing::error!(group = %dn, "a required group was not found in the directory: nobody is admitted through it");
                }
                Err(failure) => {
                    if let Some((_, stale)) = &*cached {
                        tracing::debug!(error = %failure.message, "could not refresh the required groups' SIDs; using those read before");
                        return Ok(stale.clone());
                    }
                    return Err(failure);
                }
            }
        }
        *cached = Some((Instant::now(), sids.clone()));
        Ok(sids)
    }

    /// The `objectSid` of the entry at `dn`, if there is one.
    async fn object_sid(&self, dn: &str) -> Result<Option<Sid>, Failure> {
        self.pool
            .run(Role::Service, |mut ldap| async move {
                let read = self.pool.search(&mut ldap, dn, Scope::Base, "(objectClass=*)", vec!["objectSid"]).await;
                let sid = read.and_then(|(entries, result)| match result.rc {
                    0 => Ok(entries.first().and_then(|e| binary_values(e, "objectSid").into_iter().next())),
                    32 => Ok(None),
                    rc => Err(Failure::broken(format!("reading {dn} answered result {rc}"))),
                });
                (ldap, sid)
            })
            .await
    }

    /// The DNs of the groups with these SIDs (those under `base_dn`), sorted: from the cache,
    /// and what it lacks from one search per `NAMES_PER_SEARCH` SIDs.
    pub(super) async fn group_names(&self, sids: &[Sid]) -> Result<Vec<String>, Failure> {
        let mut names = Vec::new();
        let mut missing = Vec::new();
        {
            let cache = lock(&self.groups.names);
            for sid in sids {
                match cache.get(sid) {
                    Some((at, dn)) if at.elapsed() < self.groups.ttl => names.extend(dn.iter().cloned()),
                    _ => missing.push(sid.clone()),
                }
            }
        }
        for chunk in missing.chunks(NAMES_PER_SEARCH) {
            let filter: String = chunk.iter().map(|sid| format!("(objectSid={})", escape_binary(sid))).collect();
            let filter = format!("(|{filter})");
            let base = &self.settings.base_dn;
            let found = self
                .pool
                .run(Role::Service, |mut ldap| {
                    let filter = &filter;
                    async move {
                        let search = self.pool.search(&mut ldap, base, Scope::Subtree, filter, vec!["objectSid"]).await;
                        let found = search.map(|(entries, _)| {
                            entries
                                .into_iter()
                                .filter(|e| !e.dn.is_empty())
                                .filter_map(|e| binary_values(&e, "objectSid").into_iter().next().map(|sid| (sid, e.dn)))
                                .collect::<Vec<_>>()
                        });
                        (ldap, found)
                    }
                })
                .await?;
            for sid in chunk {
                let dn = found.iter().find(|(s, _)| s == sid).map(|(_, dn)| dn.clone());
                names.extend(dn.iter().cloned());
                self.groups.remember(sid.clone(), dn);
            }
        }
        names.sort_unstable_by_key(|dn| dn.to_ascii_lowercase());
        names.dedup();
        Ok(names)
    }
}

/// Every value of an attribute as bytes. (ldap3 files an attribute whose values all happen to be
/// valid UTF-8 — a SID can be — under `attrs`, the others under `bin_attrs`.)
fn binary_values(entry: &SearchEntry, name: &str) -> Vec<Vec<u8>> {
    let text = entry.attrs.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).flat_map(|(_, v)| v.iter().map(|s| s.as_bytes().to_vec()));
    let binary = entry.bin_attrs.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).flat_map(|(_, v)| v.iter().cloned());
    text.chain(binary).collect()
}

/// A binary value for a filter (RFC 4515): every octet as `\xx`.
fn escape_binary(value: &[u8]) -> String {
    value.iter().map(|b| format!("\\{b:02x}")).collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn sids_are_escaped_octet_by_octet() {
        let sid = [1u8, 2, 0, 0, 0, 0, 0, 5, 0x20, 0, 0, 0, 0x20, 2, 0, 0];
        assert_eq!(escape_binary(&sid), "\\01\\02\\00\\00\\00\\00\\00\\05\\20\\00\\00\\00\\20\\02\\00\\00");
        assert_eq!(escape_binary(b"*)("), "\\2a\\29\\28");
    }

    #[test]
    fn values_are_read_whether_ldap3_took_them_for_text_or_not() {
        let entry = SearchEntry {
            dn: "CN=alice".into(),
            attrs: HashMap::from([("tokenGroups".to_owned(), vec!["\u{1}\u{1}\0\0\0\0\0\u{5}".to_owned()])]),
            bin_attrs: HashMap::from([("TOKENGROUPS".to_owned(), vec![vec![1, 5, 0xff]])]),
        };
        assert_eq!(binary_values(&entry, "tokenGroups"), vec![vec![1, 1, 0, 0, 0, 0, 0, 5], vec![1, 5, 0xff]]);
        assert!(binary_values(&entry, "objectSid").is_empty());
    }
}

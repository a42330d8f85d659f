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
    /// The groups the entry at `dn` is in, nested (its `tokenGroups`), and which of them is its
    /// primary group.
    pub(super) async fn token_groups(&self, dn: &str) -> Result<TokenGroups, Failure> {
        self.pool
            .run(Role::Service, |mut ldap| async move {
                let attributes = vec!["tokenGroups", "objectSid", "primaryGroupID"];
                let read = self.pool.search(&mut ldap, dn, Scope::Base, "(objectClass=*)", attributes).await;
                let groups = read.and_then(|(entries, result)| match result.rc {
                    0 => Ok(entries.first().map(TokenGroups::of).unwrap_or_default()),
                    // The entry went away since it was found: it is in no group.
                    32 => Ok(TokenGroups::default()),
                    rc => Err(Failure::broken(format!("reading tokenGroups answered result {rc}: {}", result.text))),
                });
                (ldap, groups)
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
                Ok(Some((sid, spelled))) => {
                    // Named as the directory spells it (what `group_filter` is written against).
                    self.groups.remember(sid.clone(), Some(spelled));
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

    /// The `objectSid` of the entry at `dn`, with its DN as the directory spells it, if there
    /// is one.
    async fn object_sid(&self, dn: &str) -> Result<Option<(Sid, String)>, Failure> {
        self.pool
            .run(Role::Service, |mut ldap| async move {
                let read = self.pool.search(&mut ldap, dn, Scope::Base, "(objectClass=*)", vec!["objectSid"]).await;
                let sid = read.and_then(|(entries, result)| match result.rc {
                    0 => Ok(entries.first().and_then(|e| binary_values(e, "objectSid").into_iter().next().map(|sid| (sid, e.dn.clone())))),
                    // No such entry, or not a DN at all: no group of that name.
                    32 | 34 => Ok(None),
                    rc => Err(Failure::broken(format!("reading a required group answered result {rc}: {}", result.text))),
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

/// What a `tokenGroups` read says.
#[derive(Debug, Default)]
pub(super) struct TokenGroups {
    pub all: Vec<Sid>,
    /// The primary group (usually Domain Users), which AD holds by `primaryGroupID` rather than
    /// as a member.
    pub primary: Option<Sid>,
}

impl TokenGroups {
    fn of(entry: &SearchEntry) -> Self {
        let all = binary_values(entry, "tokenGroups");
        let rid =
            entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case("primaryGroupID")).and_then(|(_, v)| v.first()?.parse::<u32>().ok());
        let own = binary_values(entry, "objectSid").into_iter().next();
        let primary = match (own, rid) {
            // The domain's SID with the group's RID in place of the user's.
            (Some(mut sid), Some(rid)) if sid.len() >= 12 => {
                let at = sid.len() - 4;
                sid[at..].copy_from_slice(&rid.to_le_bytes());
                Some(sid)
            }
            _ => None,
        };
        Self { all, primary }
    }

    /// The groups to name in an answer: not the primary group nor the builtin ones (Users,
    /// which every account is in through it) — as before tokenGroups, when only groups that list
    /// the account (or a group of it) as a member were named.
    pub fn named(&self) -> Vec<Sid> {
        self.all.iter().filter(|sid| Some(*sid) != self.primary.as_ref() && !is_builtin(sid)).cloned().collect()
    }
}

/// A SID of the BUILTIN domain (S-1-5-32-...).
fn is_builtin(sid: &[u8]) -> bool {
    sid.len() >= 12 && sid[0] == 1 && sid[2..8] == [0, 0, 0, 0, 0, 5] && sid[8..12] == 32u32.to_le_bytes()
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

    #[test]
    fn the_primary_and_builtin_groups_are_not_named() {
        // S-1-5-21-1-2-3-1105 (the user), primary group 513; groups 513, S-1-5-32-545, 1107.
        let domain = |rid: u32| {
            [
                &[1u8, 5, 0, 0, 0, 0, 0, 5][..],
                &21u32.to_le_bytes(),
                &1u32.to_le_bytes(),
                &2u32.to_le_bytes(),
                &3u32.to_le_bytes(),
                &rid.to_le_bytes(),
            ]
            .concat()
        };
        let builtin_users = [&[1u8, 2, 0, 0, 0, 0, 0, 5][..], &32u32.to_le_bytes(), &545u32.to_le_bytes()].concat();
        let entry = SearchEntry {
            dn: "CN=alice".into(),
            attrs: HashMap::from([("primaryGroupID".to_owned(), vec!["513".to_owned()])]),
            bin_attrs: HashMap::from([
                ("objectSid".to_owned(), vec![domain(1105)]),
                ("tokenGroups".to_owned(), vec![domain(513), builtin_users.clone(), domain(1107)]),
            ]),
        };
        let groups = TokenGroups::of(&entry);
        assert_eq!(groups.primary, Some(domain(513)));
        assert!(is_builtin(&builtin_users) && !is_builtin(&domain(1107)));
        assert_eq!(groups.named(), vec![domain(1107)]);
        assert_eq!(groups.all.len(), 3, "all of them still count for required_groups");
    }
}

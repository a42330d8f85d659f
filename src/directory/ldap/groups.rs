//! Nested group membership at a price the DC can pay: no operation of its own per login.
//!
//! The user search already returns the entry's `memberOf` (the groups that list it as a
//! member, read fresh at every login) and, on AD, its `objectSid` and `primaryGroupID` (the
//! primary group, Domain Users as a rule, which AD never lists in `memberOf`). What those groups
//! are in, and so on up, comes from a cache of the group graph: each group's own `memberOf`,
//! trusted for `group_cache_ttl` and read again after it (64 groups per search, one refresh at a
//! time). A login thus costs the DC one search and one bind, with or without groups — where a
//! `tokenGroups` read cost it one operation more, and the in-chain matching rule
//! (1.2.840.113556.1.4.1941) ~27 ms of CPU with a 4,000-member group.
//!
//! Removing a user from a group takes effect at the next login; removing a group from another
//! group, within `group_cache_ttl`. A refresh the DC cannot answer keeps what was read before.
//! The primary group counts for `required_groups` but is not named in answers, and neither is
//! what it is in (as with the in-chain rule, which only follows `member`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ldap3::{Scope, SearchEntry};

use super::failure::Failure;
use super::pool::Role;
use super::{LdapDirectory, values};
use crate::directory::dn::domain_of;

/// Groups looked up per search (a filter of that many alternatives).
const GROUPS_PER_SEARCH: usize = 64;

/// More groups than this through nesting is a loop the cache missed or a directory to fix: the
/// walk stops there rather than read without end.
const MAX_GROUPS: usize = 5_000;

/// Configured group DNs whose spelling is kept: the configuration's lists are far shorter; past
/// this, those read longer ago than `group_cache_ttl` are let go.
const MAX_SPELLINGS: usize = 1_000;

/// A value and when it was read.
type Dated<T> = (Instant, T);

pub(super) struct GroupCache {
    ttl: Duration,
    /// A group's DN as configured (`required_groups`, the help desk's groups) → the DN as the
    /// directory spells it, lower-cased (`None`: no such entry).
    spelled: Mutex<HashMap<String, Dated<Option<String>>>>,
    /// Held while configured DNs are read, so that each is read once, not by every login.
    spelling: tokio::sync::Mutex<()>,
    /// A group's DN (lower-cased) → the groups it is a member of, as the directory spells them.
    parents: Mutex<HashMap<String, Dated<Vec<String>>>>,
    /// A primary group's SID → its DN (`None`: no entry has it).
    primary: Mutex<HashMap<Vec<u8>, Dated<Option<String>>>>,
    /// Held while the graph is read, so that a cold cache is read once, not by every login.
    refresh: tokio::sync::Mutex<()>,
}

impl GroupCache {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            spelled: Mutex::new(HashMap::new()),
            spelling: tokio::sync::Mutex::new(()),
            parents: Mutex::new(HashMap::new()),
            primary: Mutex::new(HashMap::new()),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// The cached parents of `dn`: fresh ones, or with `stale_too` any.
    fn parents_of(&self, dn: &str, stale_too: bool) -> Option<Vec<String>> {
        let cache = lock(&self.parents);
        let (at, parents) = cache.get(&dn.to_ascii_lowercase())?;
        (stale_too || at.elapsed() < self.ttl).then(|| parents.clone())
    }

    /// The cached spelling of a configured DN: a fresh one, or with `stale_too` any.
    fn spelling_of(&self, configured: &str, stale_too: bool) -> Option<Option<String>> {
        let cache = lock(&self.spelled);
        let (at, spelled) = cache.get(configured)?;
        (stale_too || at.elapsed() < self.ttl).then(|| spelled.clone())
    }
}

/// The SID of an account's primary group, from its entry's `objectSid` and `primaryGroupID`
/// when it has both: the domain's SID with the group's RID in place of the account's.
pub(super) fn primary_group_sid(entry: &SearchEntry) -> Option<Vec<u8>> {
    let rid = values(entry, "primaryGroupID").first()?.parse::<u32>().ok()?;
    let mut sid = binary_values(entry, "objectSid").into_iter().next().filter(|sid| sid.len() >= 12)?;
    let at = sid.len() - 4;
    sid[at..].copy_from_slice(&rid.to_le_bytes());
    Some(sid)
}

/// An account's groups, nesting resolved.
#[derive(Debug, Default)]
pub(super) struct Membership {
    /// Every group, the primary group and what it is in included (for `required_groups`).
    pub all: Vec<String>,
    /// The groups to name in answers: those reached through `memberOf`.
    pub named: Vec<String>,
}

impl LdapDirectory {
    /// The groups an account is in: `member_of` (its entry's `memberOf`) and `primary`, and
    /// every group those are in, through the cached group graph.
    pub(super) async fn membership_of(
        &self,
        account_dn: &str,
        member_of: &[String],
        primary_sid: Option<&[u8]>,
    ) -> Result<Membership, Failure> {
        let primary = match primary_sid {
            // Searched for in the account's domain, which `base_dn` may not cover.
            Some(sid) => self.primary_group_dn(sid, domain_of(account_dn).unwrap_or(&self.settings.base_dn)).await?,
            None => None,
        };
        let Some(primary) = primary else {
            let all = self.close_over(member_of.to_vec()).await?;
            return Ok(Membership { named: all.clone(), all });
        };
        // Both walked at once (one read per level of a cold cache); then the named part again,
        // from the cache.
        let all = self.close_over(member_of.iter().cloned().chain([primary]).collect()).await?;
        let named = self.close_over(member_of.to_vec()).await?;
        Ok(Membership { all, named })
    }

    /// `start` and every group they are in, however deep, each once (loops in the graph end).
    async fn close_over(&self, start: Vec<String>) -> Result<Vec<String>, Failure> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut found = Vec::new();
        let mut frontier: Vec<String> = start.into_iter().filter(|dn| seen.insert(dn.to_ascii_lowercase())).collect();
        while !frontier.is_empty() {
            found.extend(frontier.iter().cloned());
            if found.len() > MAX_GROUPS {
                return Err(Failure::unusable(format!("more than {MAX_GROUPS} groups through nesting: refusing to read further")));
            }
            let parents = self.parents(&frontier).await?;
            frontier = parents.into_iter().flatten().filter(|dn| seen.insert(dn.to_ascii_lowercase())).collect();
        }
        Ok(found)
    }

    /// The parents of each group in `dns`: from the cache, and what it lacks (or holds past
    /// `group_cache_ttl`) read from the directory, by one refresh at a time.
    async fn parents(&self, dns: &[String]) -> Result<Vec<Vec<String>>, Failure> {
        let cache = &self.groups;
        if let Some(all) = dns.iter().map(|dn| cache.parents_of(dn, false)).collect::<Option<Vec<_>>>() {
            return Ok(all);
        }
        let _refreshing = cache.refresh.lock().await;
        // Another login may have read them while this one waited.
        let mut missing: Vec<&String> = dns.iter().filter(|dn| cache.parents_of(dn, false).is_none()).collect();
        // One search reads groups of one domain.
        missing.sort_by_cached_key(|dn| domain_of(dn).map(str::to_ascii_lowercase));
        let chunks = missing.chunk_by(|a, b| domain_of(a).map(str::to_ascii_lowercase) == domain_of(b).map(str::to_ascii_lowercase));
        for chunk in chunks.flat_map(|same_domain| same_domain.chunks(GROUPS_PER_SEARCH)) {
            match self.read_parents(chunk).await {
                Ok(read) => {
                    let now = Instant::now();
                    let mut parents = lock(&cache.parents);
                    for dn in chunk {
                        let of_dn = read.get(&dn.to_ascii_lowercase()).cloned().unwrap_or_default();
                        parents.insert(dn.to_ascii_lowercase(), (now, of_dn));
                    }
                }
                Err(failure) if chunk.iter().all(|dn| cache.parents_of(dn, true).is_some()) => {
                    tracing::debug!(error = %failure.message, "could not refresh the group graph; using what was read before");
                }
                Err(failure) => return Err(failure),
            }
        }
        Ok(dns.iter().map(|dn| cache.parents_of(dn, true).unwrap_or_default()).collect())
    }

    /// The `memberOf` of each of these groups, keyed by its lower-cased DN; a group not found
    /// (deleted since, or outside the domain) is in none.
    async fn read_parents(&self, dns: &[&String]) -> Result<HashMap<String, Vec<String>>, Failure> {
        let filter: String = dns.iter().map(|dn| format!("(distinguishedName={})", ldap3::ldap_escape(dn.as_str()))).collect();
        let filter = format!("(|{filter})");
        // Searched from the domain the groups are in (their `DC=` components), which need not be
        // under `base_dn`.
        let base = domain_of(dns[0]).unwrap_or(&self.settings.base_dn);
        let member_of = self.settings.attributes.member_of.as_str();
        self.pool
            .run(Role::Service, |mut ldap| {
                let filter = &filter;
                async move {
                    let search = self.pool.search(&mut ldap, base, Scope::Subtree, filter, vec![member_of]).await;
                    let read = search.and_then(|(entries, result)| match result.rc {
                        // 10: a referral, for groups in another domain of the forest, whose
                        // parents this DC cannot tell: none, as for groups not found.
                        0 | 10 | 32 => Ok(entries
                            .into_iter()
                            .filter(|e| !e.dn.is_empty())
                            .map(|e| (e.dn.to_ascii_lowercase(), values(&e, member_of).to_vec()))
                            .collect()),
                        _ => Err(Failure::answered("reading groups", &result)),
                    });
                    (ldap, read)
                }
            })
            .await
    }

    /// `required_groups` as the directory spells them (lower-cased), read again after
    /// `group_cache_ttl`. A refresh the directory cannot answer keeps those read before.
    pub(super) async fn required_dns(&self) -> Result<Vec<String>, Failure> {
        let spelled = self
            .spelled_dns(&self.settings.required_groups, |dn| {
                tracing::error!(group = %dn, "a required group was not found in the directory: nobody is admitted through it");
            })
            .await?;
        Ok(spelled.into_iter().flatten().collect())
    }

    /// Each of `configured` (group DNs as an admin wrote them: any spacing, any case) as the
    /// directory spells it, lower-cased, or `None` where no entry has it (`missing` is told, to
    /// say so); read again after `group_cache_ttl`. A refresh the directory cannot answer keeps
    /// what was read before.
    pub(super) async fn spelled_dns(&self, configured: &[String], missing: impl Fn(&str)) -> Result<Vec<Option<String>>, Failure> {
        let cache = &self.groups;
        if let Some(all) = configured.iter().map(|dn| cache.spelling_of(dn, false)).collect::<Option<Vec<_>>>() {
            return Ok(all);
        }
        let _reading = cache.spelling.lock().await;
        for dn in configured {
            // Read by another caller while this one waited, or earlier in this list.
            if cache.spelling_of(dn, false).is_some() {
                continue;
            }
            match self.spelled(dn).await {
                Ok(spelled) => {
                    if spelled.is_none() {
                        missing(dn);
                    }
                    let mut spellings = lock(&cache.spelled);
                    if spellings.len() >= MAX_SPELLINGS {
                        spellings.retain(|_, (at, _)| at.elapsed() < cache.ttl);
                    }
                    spellings.insert(dn.clone(), (Instant::now(), spelled.map(|s| s.to_ascii_lowercase())));
                }
                Err(failure) if cache.spelling_of(dn, true).is_some() => {
                    tracing::debug!(error = %failure.message, group = %dn, "could not read a configured group again; using what was read before");
                }
                Err(failure) => return Err(failure),
            }
        }
        Ok(configured.iter().map(|dn| cache.spelling_of(dn, true).flatten()).collect())
    }

    /// The DN of the entry at `dn` as the directory spells it (the configuration may not: extra
    /// spaces, other case, `cn=` for `CN=`), if there is one.
    async fn spelled(&self, dn: &str) -> Result<Option<String>, Failure> {
        self.pool
            .run(Role::Service, |mut ldap| async move {
                let read = self.pool.search(&mut ldap, dn, Scope::Base, "(objectClass=*)", vec!["1.1"]).await;
                let spelled = read.and_then(|(entries, result)| match result.rc {
                    0 => Ok(entries.into_iter().next().map(|e| e.dn)),
                    // No such entry, or not a DN at all: no group of that name.
                    32 | 34 => Ok(None),
                    _ => Err(Failure::answered("reading a configured group", &result)),
                });
                (ldap, spelled)
            })
            .await
    }

    /// The DN of the group with this SID (a primary group), cached like the graph.
    async fn primary_group_dn(&self, sid: &[u8], base: &str) -> Result<Option<String>, Failure> {
        let cached = |stale_too: bool| {
            let cache = lock(&self.groups.primary);
            cache.get(sid).filter(|(at, _)| stale_too || at.elapsed() < self.groups.ttl).map(|(_, dn)| dn.clone())
        };
        if let Some(dn) = cached(false) {
            return Ok(dn);
        }
        let _refreshing = self.groups.refresh.lock().await;
        if let Some(dn) = cached(false) {
            return Ok(dn);
        }
        let filter = format!("(objectSid={})", escape_binary(sid));
        let read = self
            .pool
            .run(Role::Service, |mut ldap| {
                let filter = &filter;
                async move {
                    let search = self.pool.search(&mut ldap, base, Scope::Subtree, filter, vec!["1.1"]).await;
                    (ldap, search.map(|(entries, _)| entries.into_iter().map(|e| e.dn).find(|dn| !dn.is_empty())))
                }
            })
            .await;
        match read {
            Ok(dn) => {
                lock(&self.groups.primary).insert(sid.to_vec(), (Instant::now(), dn.clone()));
                Ok(dn)
            }
            Err(failure) => cached(true).ok_or(failure),
        }
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
            attrs: HashMap::from([("objectSid".to_owned(), vec!["\u{1}\u{1}\0\0\0\0\0\u{5}".to_owned()])]),
            bin_attrs: HashMap::from([("OBJECTSID".to_owned(), vec![vec![1, 5, 0xff]])]),
        };
        assert_eq!(binary_values(&entry, "objectSid"), vec![vec![1, 1, 0, 0, 0, 0, 0, 5], vec![1, 5, 0xff]]);
        assert!(binary_values(&entry, "tokenGroups").is_empty());
    }

    #[test]
    fn the_primary_group_is_the_domain_sid_with_its_rid() {
        // S-1-5-21-1-2-3-1105 (the user), primary group 513.
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
        let entry = SearchEntry {
            dn: "CN=alice".into(),
            attrs: HashMap::from([("primaryGroupID".to_owned(), vec!["513".to_owned()])]),
            bin_attrs: HashMap::from([("objectSid".to_owned(), vec![domain(1105)])]),
        };
        assert_eq!(primary_group_sid(&entry), Some(domain(513)));
        let no_rid = SearchEntry { attrs: HashMap::new(), ..entry.clone() };
        assert_eq!(primary_group_sid(&no_rid), None, "an LDAP server other than AD");
        let short = SearchEntry { bin_attrs: HashMap::from([("objectSid".to_owned(), vec![vec![1, 0]])]), ..entry };
        assert_eq!(primary_group_sid(&short), None, "a value that is no SID");
    }
}

//! The rule tokens made elsewhere (an import) are filed by, written once above every backend:
//! a seed its owner has already is not kept twice (so an import run again adds nothing), and a
//! confirmed token is not kept past the owner's limit of usable tokens (as
//! [`super::Store::confirm_token`] refuses one past it). The backend reads the owners' tokens
//! and writes what this rule keeps, in one step.

use std::collections::HashMap;

use crate::otp::totp::effective_seed;

use subtle::ConstantTimeEq;

use super::{NewToken, Token};

/// What became (or, from [`super::Store::sort_tokens`], would become) of a token offered to
/// [`super::Store::add_tokens`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filing {
    /// Kept.
    Added,
    /// Its owner has a token with the same seed already: not kept twice.
    AlreadyThere,
    /// Its owner has as many usable tokens as allowed already.
    OverLimit,
}

/// What becomes of each of `new`, in order, beside the `kept` tokens of their owners: a token
/// kept counts for those after it (a seed twice in one batch is kept once). Seeds are compared
/// in constant time.
pub fn sort(new: &[NewToken], kept: &[Token], max_confirmed: usize) -> Vec<Filing> {
    // Per owner: each token's seed, and whether it is usable.
    let mut owned: HashMap<&str, Vec<(&[u8], bool)>> = HashMap::new();
    for token in kept {
        owned.entry(token.username.as_str()).or_default().push((effective_seed(token.secret.expose()), token.confirmed));
    }
    let mut filings = Vec::with_capacity(new.len());
    for token in new {
        let seeds = owned.entry(token.username.as_str()).or_default();
        let seed = effective_seed(token.secret.expose());
        let same = seeds.iter().fold(subtle::Choice::from(0), |found, (kept, _)| found | kept.ct_eq(seed));
        let usable = seeds.iter().filter(|(_, confirmed)| *confirmed).count();
        let filing = if bool::from(same) {
            Filing::AlreadyThere
        } else if token.confirmed && usable >= max_confirmed {
            Filing::OverLimit
        } else {
            seeds.push((seed, token.confirmed));
            Filing::Added
        };
        filings.push(filing);
    }
    filings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::TotpParams;
    use crate::secret::Secret;

    fn new(user: &str, seed: &[u8]) -> NewToken {
        NewToken {
            username: user.into(),
            name: "imported".into(),
            params: TotpParams::default(),
            secret: Secret::new(seed.to_vec()),
            confirmed: true,
            created_at: 0,
        }
    }

    fn kept(id: i64, user: &str, seed: &[u8], confirmed: bool) -> Token {
        Token {
            id,
            username: user.into(),
            name: "phone".into(),
            params: TotpParams::default(),
            secret: Secret::new(seed.to_vec()),
            created_at: 0,
            last_step: None,
            last_used_at: None,
            confirmed,
        }
    }

    #[test]
    fn a_seed_the_owner_has_is_not_filed_twice_and_the_limit_counts_usable_tokens() {
        let kept = [kept(1, "alice", b"seed-a-0123456789", true), kept(2, "alice", b"pending-0123456789", false)];
        let batch = [
            new("alice", b"seed-a-0123456789"),
            new("bob", b"seed-a-0123456789"),
            new("alice", b"seed-b-0123456789"),
            new("alice", b"seed-b-0123456789"),
            new("alice", b"seed-c-0123456789"),
        ];
        use Filing::*;
        // alice: one usable (the unconfirmed one does not count), so with a limit of 2 one more.
        assert_eq!(sort(&batch, &kept, 2), [AlreadyThere, Added, Added, AlreadyThere, OverLimit]);
        assert_eq!(sort(&batch, &kept, 1), [AlreadyThere, Added, OverLimit, OverLimit, OverLimit]);
        assert_eq!(sort(&batch[..1], &[], 0), [OverLimit]);
    }

    #[test]
    fn an_unconfirmed_token_is_not_held_to_the_limit() {
        let mut pending = new("alice", b"seed-a-0123456789");
        pending.confirmed = false;
        assert_eq!(sort(&[pending], &[kept(1, "alice", b"other-0123456789", true)], 1), [Filing::Added]);
    }

    #[test]
    fn a_seed_with_zero_bytes_appended_is_the_same_seed() {
        let padded = new("alice", b"seed-of-alice-0001\0\0");
        assert_eq!(sort(&[padded], &[kept(1, "alice", b"seed-of-alice-0001", true)], 5), [Filing::AlreadyThere]);
    }
}

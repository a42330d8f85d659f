//! What `token import` tells the admin: each refused entry, in file order, with its place and
//! user and why (never its secret; names from the file escaped as `token list` escapes them),
//! and the counts — added, skipped because already there, refused.

use std::io::Write;

use crate::auth::shown;
use crate::import::Place;

/// A refused entry: its position among the file's entries (to print in file order), where it
/// is, whose, and why.
pub(super) struct Refusal {
    ordinal: usize,
    pub(super) place: Place,
    user: Option<String>,
    pub(super) reason: String,
}

pub(super) struct Report {
    file: String,
    /// Refusals not printed yet.
    pub(super) pending: Vec<Refusal>,
    refused: usize,
    pub(super) added: usize,
    pub(super) skipped: usize,
}

impl Report {
    pub(super) fn new(file: String) -> Self {
        Self { file, pending: Vec::new(), refused: 0, added: 0, skipped: 0 }
    }

    pub(super) fn refuse(&mut self, ordinal: usize, place: Place, user: Option<&str>, reason: impl Into<String>) {
        self.refused += 1;
        self.pending.push(Refusal { ordinal, place, user: user.map(str::to_owned), reason: reason.into() });
    }

    pub(super) fn refused(&self) -> usize {
        self.refused
    }

    /// Prints the refusals not printed yet, in file order, to standard error.
    pub(super) fn print_refusals(&mut self) -> std::io::Result<()> {
        self.pending.sort_by_key(|r| r.ordinal);
        let mut err = std::io::stderr().lock();
        for Refusal { place, user, reason, .. } in self.pending.drain(..) {
            let whose = match user {
                Some(u) if crate::import::may_be_a_seed(&u) => {
                    ", user not shown (it looks like a seed: are the columns in the right order?)".to_owned()
                }
                Some(u) => format!(", user {}", shown(&u)),
                None => String::new(),
            };
            writeln!(err, "{}: {place}{whose}: {}", self.file, shown(&reason))?;
        }
        Ok(())
    }

    /// The counts: what was done, or with `dry_run` what would be.
    pub(super) fn summary(&self, dry_run: bool) -> String {
        let Self { file, refused, added, skipped, .. } = self;
        if dry_run {
            format!("{file}: dry run: would add {added}, skip {skipped} (already there), refuse {refused}; nothing was written")
        } else {
            format!("{file}: added {added}, skipped {skipped} (already there), refused {refused}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_the_admin_expects() {
        let mut report = Report::new("tokens.csv".into());
        report.refuse(3, Place::Line(5), Some("dave"), "no secret");
        report.refuse(1, Place::Line(2), None, "no user");
        (report.added, report.skipped) = (7, 2);
        assert_eq!(report.refused(), 2);
        assert_eq!(report.summary(false), "tokens.csv: added 7, skipped 2 (already there), refused 2");
        assert_eq!(report.summary(true), "tokens.csv: dry run: would add 7, skip 2 (already there), refuse 2; nothing was written");
        report.print_refusals().unwrap();
        assert!(report.pending.is_empty());
        assert_eq!(report.refused(), 2, "printed refusals still count");
    }
}

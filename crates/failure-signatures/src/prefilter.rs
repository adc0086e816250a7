//! The built-in catalogue's literal prefilter: which signatures can match a
//! text at all, without compiling any of their regexes.
//!
//! build.rs extracted, per built-in signature, a set of literals one of
//! which every match of its pattern begins (or ends) with, ASCII-lowercased.
//! Here the text is ASCII-lowercased too (byte for byte, so a match's
//! literal stays a substring) and each signature is a candidate when one of
//! its literals occurs in it (`memchr::memmem`); signatures without
//! literals are always candidates. No automaton is built: an Aho-Corasick
//! over the ~330 literals took longer to build than the searches take on
//! the few lines at the end of a stream that are searched. Only the
//! candidates' regexes are then compiled, each on its own: clean output
//! compiles nothing, a 429 line a handful, instead of the ~160-pattern
//! `RegexSet`. The candidates are a superset of the signatures that match,
//! so classification is the same as with the full set.

use std::sync::Arc;

use crate::catalogue::Signature;

include!(concat!(env!("OUT_DIR"), "/builtin_literals.rs"));

/// Literals of one signature (`None`: always a candidate).
type Literals = Option<&'static [&'static [u8]]>;

/// Candidate finder for the built-in signatures.
#[derive(Debug)]
pub(crate) struct Prefilter {
    /// Per signature, in catalogue order.
    literals: Vec<Literals>,
}

impl Prefilter {
    /// The prefilter of the built-in catalogue, or `None` when the table
    /// built from the YAML does not describe `sigs` signature for signature
    /// (then the caller uses the full set).
    pub(crate) fn builtin(sigs: &[Arc<Signature>]) -> Option<Prefilter> {
        Prefilter::from_table(BUILTIN_LITERALS, sigs)
    }

    fn from_table(table: &[(&str, Literals)], sigs: &[Arc<Signature>]) -> Option<Prefilter> {
        if table.len() != sigs.len()
            || table
                .iter()
                .zip(sigs)
                .any(|((name, _), sig)| *name != sig.name())
        {
            return None;
        }
        Some(Prefilter {
            literals: table
                .iter()
                .map(|(_, lits)| lits.filter(|l| !l.is_empty()))
                .collect(),
        })
    }

    /// Indexes of the signatures that may match somewhere in `text`, in
    /// ascending order.
    pub(crate) fn candidates(&self, text: &str) -> Vec<usize> {
        let lower = text.as_bytes().to_ascii_lowercase();
        self.literals
            .iter()
            .enumerate()
            .filter(|(_, lits)| match lits {
                None => true,
                Some(lits) => lits
                    .iter()
                    .any(|l| memchr::memmem::find(&lower, l).is_some()),
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Number of signatures that are candidates for every text.
    #[cfg(test)]
    pub(crate) fn always_count(&self) -> usize {
        self.literals.iter().filter(|l| l.is_none()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_describes_the_builtin_catalogue() {
        let sigs = crate::catalogue::builtin_signatures();
        assert_eq!(BUILTIN_LITERALS.len(), sigs.len());
        let p = Prefilter::builtin(sigs).expect("table matches the parsed catalogue");
        // Most signatures must be prefiltered, or the prefilter is pointless.
        assert!(
            p.always_count() * 10 < sigs.len(),
            "{} of {} signatures have no literals",
            p.always_count(),
            sigs.len()
        );
    }

    #[test]
    fn every_example_makes_its_signature_a_candidate() {
        let sigs = crate::catalogue::builtin_signatures();
        let p = Prefilter::builtin(sigs).expect("table matches");
        for (i, sig) in sigs.iter().enumerate() {
            for ex in sig.examples() {
                assert!(
                    p.candidates(ex).contains(&i),
                    "{}: not a candidate for its example {ex:?}",
                    sig.name()
                );
            }
        }
    }

    #[test]
    fn literals_are_found_whatever_their_case() {
        let sigs = crate::catalogue::builtin_signatures();
        let p = Prefilter::builtin(sigs).expect("table matches");
        let i = sigs
            .iter()
            .position(|s| s.name() == "codex-usage-limit")
            .expect("signature exists");
        assert!(
            p.candidates("THE USAGE LIMIT HAS BEEN REACHED")
                .contains(&i)
        );
        assert!(!p.candidates("all tests passed").contains(&i));
    }

    #[test]
    fn a_table_for_other_signatures_is_refused() {
        let sigs = crate::catalogue::builtin_signatures();
        let table: &[(&str, Literals)] = &[("not-a-builtin", None)];
        assert!(Prefilter::from_table(table, sigs).is_none());
    }
}

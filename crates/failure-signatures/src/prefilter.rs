//! The built-in catalogue's literal prefilter: which signatures can match a
//! text at all, without compiling any of their regexes.
//!
//! build.rs extracted, per built-in signature, a set of literals one of
//! which every match of its pattern begins (or ends) with, ASCII-lowercased.
//! Here one small Aho-Corasick automaton over all of them (ASCII case
//! insensitive, so a match's literal is always found) names the candidate
//! signatures; signatures without literals are always candidates. Only the
//! candidates' regexes are then compiled, each on its own: clean output
//! compiles nothing, a 429 line a handful, instead of the ~160-pattern
//! `RegexSet`. The candidates are a superset of the signatures that match,
//! so classification is the same as with the full set.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use crate::catalogue::Signature;

include!(concat!(env!("OUT_DIR"), "/builtin_literals.rs"));

/// Candidate finder for the built-in signatures.
#[derive(Debug)]
pub(crate) struct Prefilter {
    /// All literals; `None` when no signature has any.
    automaton: Option<AhoCorasick>,
    /// `owner[k]`: the signature index of literal `k`.
    owner: Vec<usize>,
    /// Signatures without literals: candidates for every text.
    always: Vec<usize>,
    /// Number of signatures.
    len: usize,
}

impl Prefilter {
    /// The prefilter of the built-in catalogue, or `None` when the table
    /// built from the YAML does not describe `sigs` signature for signature
    /// (then the caller uses the full set).
    pub(crate) fn builtin(sigs: &[Arc<Signature>]) -> Option<Prefilter> {
        Prefilter::from_table(BUILTIN_LITERALS, sigs)
    }

    fn from_table(
        table: &[(&str, Option<&[&[u8]]>)],
        sigs: &[Arc<Signature>],
    ) -> Option<Prefilter> {
        if table.len() != sigs.len()
            || table
                .iter()
                .zip(sigs)
                .any(|((name, _), sig)| *name != sig.name())
        {
            return None;
        }
        let mut literals: Vec<&[u8]> = Vec::new();
        let mut owner = Vec::new();
        let mut always = Vec::new();
        for (i, (_, lits)) in table.iter().enumerate() {
            match lits {
                Some(lits) if !lits.is_empty() => {
                    for l in lits.iter() {
                        literals.push(l);
                        owner.push(i);
                    }
                }
                _ => always.push(i),
            }
        }
        let automaton = if literals.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::ContiguousNFA))
                    .build(&literals)
                    .ok()?,
            )
        };
        Some(Prefilter {
            automaton,
            owner,
            always,
            len: sigs.len(),
        })
    }

    /// Indexes of the signatures that may match somewhere in `text`, in
    /// ascending order.
    pub(crate) fn candidates(&self, text: &str) -> Vec<usize> {
        let mut hit = vec![false; self.len];
        for &i in &self.always {
            hit[i] = true;
        }
        if let Some(ac) = &self.automaton {
            for m in ac.find_overlapping_iter(text) {
                if let Some(&i) = self.owner.get(m.pattern().as_usize()) {
                    hit[i] = true;
                }
            }
        }
        hit.iter()
            .enumerate()
            .filter_map(|(i, &h)| h.then_some(i))
            .collect()
    }

    /// Number of signatures that are candidates for every text.
    #[cfg(test)]
    pub(crate) fn always_count(&self) -> usize {
        self.always.len()
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
        let table: &[(&str, Option<&[&[u8]]>)] = &[("not-a-builtin", None)];
        assert!(Prefilter::from_table(table, sigs).is_none());
    }
}

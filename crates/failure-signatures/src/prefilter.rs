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
                .map(|(_, lits)| searched_literals(*lits))
                .collect(),
        })
    }

    /// Indexes of the signatures that may match somewhere in `text`, in
    /// ascending order.
    pub(crate) fn candidates(&self, text: &str) -> Vec<usize> {
        let searched = Searched::of(text);
        self.literals
            .iter()
            .enumerate()
            .filter(|(_, lits)| searched.may_match(lits))
            .map(|(i, _)| i)
            .collect()
    }

    /// Whether any built-in signature may match somewhere in `text`, from
    /// the build-time table alone: the ~160 signatures need not be built
    /// to learn that clean output holds none (the table describes them
    /// one for one, `the_table_describes_the_builtin_catalogue`).
    pub(crate) fn builtin_may_match(text: &str) -> bool {
        let searched = Searched::of(text);
        BUILTIN_LITERALS
            .iter()
            .any(|(_, lits)| searched.may_match(&searched_literals(*lits)))
    }

    /// Number of signatures that are candidates for every text.
    #[cfg(test)]
    pub(crate) fn always_count(&self) -> usize {
        self.literals.iter().filter(|l| l.is_none()).count()
    }
}

/// A table row's literals as searched: an empty list means no literal was
/// found for the signature, so it is always a candidate (`None`).
fn searched_literals(literals: Literals) -> Literals {
    literals.filter(|l| !l.is_empty())
}

/// A text prepared for the literal search: lowercased, and its byte pairs.
struct Searched {
    lower: Vec<u8>,
    pairs: BytePairs,
}

impl Searched {
    fn of(text: &str) -> Searched {
        let lower = text.as_bytes().to_ascii_lowercase();
        let pairs = BytePairs::of(&lower);
        Searched { lower, pairs }
    }

    /// Whether a signature with these literals may match the text.
    fn may_match(&self, literals: &Literals) -> bool {
        match literals {
            None => true,
            Some(lits) => lits.iter().any(|l| {
                self.pairs.may_contain(l) && memchr::memmem::find(&self.lower, l).is_some()
            }),
        }
    }
}

/// Which pairs of adjacent bytes a text holds: a literal whose first two
/// bytes are not among them cannot occur in it. One pass over the text
/// spares the substring search for nearly all of the ~330 literals (each
/// `memmem` search also builds its searcher): on a clean stream's last
/// lines that search was most of the shim's judging (perf, kw-bench 1g).
struct BytePairs {
    seen: Box<[u64; 1024]>,
}

impl BytePairs {
    fn of(text: &[u8]) -> BytePairs {
        let mut seen = Box::new([0u64; 1024]);
        for w in text.windows(2) {
            let pair = usize::from(w[0]) << 8 | usize::from(w[1]);
            seen[pair >> 6] |= 1 << (pair & 63);
        }
        BytePairs { seen }
    }

    /// False only when `literal` cannot occur in the text.
    fn may_contain(&self, literal: &[u8]) -> bool {
        match literal {
            [a, b, ..] => {
                let pair = usize::from(*a) << 8 | usize::from(*b);
                self.seen[pair >> 6] & (1 << (pair & 63)) != 0
            }
            _ => true,
        }
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
    fn the_table_alone_says_what_the_prefilter_says() {
        let sigs = crate::catalogue::builtin_signatures();
        let p = Prefilter::builtin(sigs).expect("table matches");
        let mut texts: Vec<String> = sigs
            .iter()
            .flat_map(|s| s.examples().iter().map(|e| e.to_string()))
            .collect();
        texts.extend(
            [
                "",
                "step 3: ran `cargo test -p crate3`; 12 passed; wrote src/module_5.rs\n",
                "all done, nothing to report\n",
                "ERROR: 429 Too Many Requests\n",
            ]
            .map(String::from),
        );
        let mut with_candidates = 0;
        for text in &texts {
            let expected = !p.candidates(text).is_empty();
            with_candidates += usize::from(expected);
            assert_eq!(Prefilter::builtin_may_match(text), expected, "{text:?}");
        }
        // Both answers occur: the comparison is not vacuous.
        assert!(with_candidates > 0 && with_candidates < texts.len());
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
    fn byte_pairs_never_rule_out_a_literal_that_occurs() {
        let text = b"HTTP 429: usage limit reached\nx";
        let pairs = BytePairs::of(text);
        for start in 0..text.len() {
            for end in start..=text.len() {
                assert!(
                    pairs.may_contain(&text[start..end]),
                    "{:?}",
                    &text[start..end]
                );
            }
        }
        assert!(!pairs.may_contain(b"zq"));
        assert!(!pairs.may_contain(b"rate limit"));
        assert!(BytePairs::of(b"").may_contain(b"a"));
    }

    #[test]
    fn a_table_for_other_signatures_is_refused() {
        let sigs = crate::catalogue::builtin_signatures();
        let table: &[(&str, Literals)] = &[("not-a-builtin", None)];
        assert!(Prefilter::from_table(table, sigs).is_none());
    }
}

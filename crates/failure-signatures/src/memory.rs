//! How this process's regexes trade speed for memory.
//!
//! By default a regex gets `regex`'s lazy DFA, fast on long text, whose
//! state cache grows on use (tens of kilobytes per regex once it has
//! searched). A process that classifies one run's output once and exits
//! (the shim, right after its worker died of a provider error) has
//! nothing to gain from that speed and pays the memory in its peak RSS:
//! [`prefer_small_memory`] builds the regexes compiled after it without a
//! lazy DFA (searches use the NFA engines, on the few lines at the end of
//! a stream). Matches are the same either way (`tests/small_memory.rs`).
//!
//! Not the reset-time extractors: when the matched line names no reset
//! they search the whole capture, where the NFA engines took 2.5 times the
//! instructions (callgrind: 100,000 lines then a 429 without a reset).
//! Nor the evidence rules' ASCII forms, which choose their engine by the
//! text's length (see [`crate::evidence`]); their Unicode form follows the
//! mode.

use std::sync::atomic::{AtomicBool, Ordering};

use regex::RegexBuilder;

/// `regex`'s own default lazy-DFA cache size.
const REGEX_DFA_SIZE_LIMIT: usize = 2 * 1024 * 1024;

static SMALL_MEMORY: AtomicBool = AtomicBool::new(false);

/// Regexes compiled from now on in this process favour memory over speed
/// (see the module docs). For a one-shot process; a long-lived one (the
/// watchdog) keeps the default.
pub fn prefer_small_memory() {
    SMALL_MEMORY.store(true, Ordering::Relaxed);
}

/// The lazy-DFA cache size for a regex compiled now: `default`, or 0 (no
/// lazy DFA is built) when small memory is preferred.
pub(crate) fn lazy_dfa_limit(default: usize) -> usize {
    if SMALL_MEMORY.load(Ordering::Relaxed) {
        0
    } else {
        default
    }
}

/// `RegexBuilder::new(pattern)` with `regex`'s defaults but the lazy DFA
/// this process's mode gives: for the crate's static patterns.
pub(crate) fn regex_builder(pattern: &str) -> RegexBuilder {
    let mut builder = RegexBuilder::new(pattern);
    builder.dfa_size_limit(lazy_dfa_limit(REGEX_DFA_SIZE_LIMIT));
    builder
}

//! The signature catalogue: loading, merging and classification.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::Deserialize;

use crate::error::CatalogueError;
use crate::evidence::{self, Rejection};
use crate::prefilter::Prefilter;
use crate::{Classification, ClassifyContext, FailureClass, provider, redact, reset};

/// Longest part of a line that is considered for matching (bytes).
pub(crate) const MAX_LINE: usize = 8 * 1024;
/// Longest `matched_line` reported (bytes).
const MAX_MATCHED_LINE: usize = 1024;
/// Compiled-program size limit per regex (and for the whole set).
const REGEX_SIZE_LIMIT: usize = 2 * 1024 * 1024;
/// Lazy-DFA cache limit; small on purpose, the shim must stay lean.
const DFA_SIZE_LIMIT: usize = 1024 * 1024;

/// The embedded built-in catalogue, one part per provider family (the
/// provider-specific parts first, the generic part last), with its origin
/// for error messages.
pub(crate) const BUILTIN_PARTS: &[(&str, &str)] = &[
    ("builtin/openai.yaml", include_str!("builtin/openai.yaml")),
    (
        "builtin/anthropic.yaml",
        include_str!("builtin/anthropic.yaml"),
    ),
    ("builtin/google.yaml", include_str!("builtin/google.yaml")),
    ("builtin/others.yaml", include_str!("builtin/others.yaml")),
    ("builtin/generic.yaml", include_str!("builtin/generic.yaml")),
];

/// A signature's text: the built-ins' borrowed from the binary.
pub type Text = Cow<'static, str>;

/// One failure signature: a named regex with the class it indicates.
#[derive(Debug)]
pub struct Signature {
    // Borrowed from the binary for a built-in signature (no copy of its
    // texts is made when the built-in list is built), owned for a user's.
    name: Text,
    class: FailureClass,
    provider: Option<Text>,
    transient: bool,
    priority: i32,
    /// A bare status code or reason phrase: counts only with LLM-API
    /// context around it (see [`crate::evidence`]).
    generic: bool,
    pattern: Text,
    description: Option<Text>,
    /// Texts it must win on, judged alone (tested for the built-ins).
    examples: Vec<Text>,
    /// Compiled lazily (or eagerly when validating a user catalogue).
    /// `None` inside means the pattern failed to compile (only possible for
    /// unvalidated input, i.e. never for a catalogue that loaded).
    regex: OnceLock<Option<Regex>>,
}

impl Signature {
    /// Unique name of the signature.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Failure class it indicates.
    pub fn class(&self) -> FailureClass {
        self.class
    }
    /// Provider it belongs to, if specific to one.
    pub fn provider(&self) -> Option<&str> {
        self.provider.as_deref()
    }
    /// Whether a match is transient (explicit, or the class default).
    pub fn transient(&self) -> bool {
        self.transient
    }
    /// Priority (higher wins).
    pub fn priority(&self) -> i32 {
        self.priority
    }
    /// Texts the signature must win on, each judged alone.
    pub fn examples(&self) -> &[Text] {
        &self.examples
    }
    /// Whether it is generic (needs LLM-API context to count).
    pub fn generic(&self) -> bool {
        self.generic
    }
    /// The regex source.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
    /// Free-form description from the catalogue, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    fn regex(&self) -> Option<&Regex> {
        self.regex
            .get_or_init(|| compile_one(&self.pattern).ok())
            .as_ref()
    }
}

fn compile_one(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .multi_line(true)
        .crlf(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(crate::memory::lazy_dfa_limit(DFA_SIZE_LIMIT))
        .build()
}

/// State built on the first non-trivial [`Catalogue::classify`] call.
#[derive(Debug)]
struct Compiled {
    /// The built-in catalogue's literal prefilter (see [`crate::prefilter`]):
    /// names the candidate signatures without compiling any regex. When
    /// present, `set` is not built.
    prefilter: Option<Prefilter>,
    /// All patterns at once; `None` if the combined set is too big (or a
    /// prefilter stands in for it), in which case the prefilter's
    /// candidates, else every signature, are tried individually.
    set: Option<RegexSet>,
    /// `rank[i]` = position of signature `i` in specificity order (0 = most specific).
    rank: Vec<usize>,
}

impl Compiled {
    /// For the built-in catalogue: the prefilter computed at build time,
    /// else (its table does not describe `sigs`) the full set.
    fn builtin(sigs: &[Arc<Signature>]) -> Compiled {
        match Prefilter::builtin(sigs) {
            Some(prefilter) => Compiled {
                prefilter: Some(prefilter),
                set: None,
                rank: rank(sigs),
            },
            None => Compiled::build(sigs),
        }
    }

    /// For any catalogue (user signatures included): the full set.
    fn build(sigs: &[Arc<Signature>]) -> Compiled {
        let set = RegexSetBuilder::new(sigs.iter().map(|s| &*s.pattern))
            .multi_line(true)
            .crlf(true)
            .size_limit(REGEX_SIZE_LIMIT * 4)
            .dfa_size_limit(crate::memory::lazy_dfa_limit(DFA_SIZE_LIMIT * 4))
            .build()
            .ok();
        Compiled {
            prefilter: None,
            set,
            rank: rank(sigs),
        }
    }
}

/// `rank[i]` = position of signature `i` in specificity order.
fn rank(sigs: &[Arc<Signature>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sigs.len()).collect();
    order.sort_by_key(|&i| specificity_key(&sigs[i], i));
    let mut rank = vec![0; sigs.len()];
    for (pos, &i) in order.iter().enumerate() {
        rank[i] = pos;
    }
    rank
}

/// Sort key: smaller = more specific = wins.
///
/// Tie-break, in order:
/// 1. higher `priority`;
/// 2. a signature with a `provider` over one without;
/// 3. the longer `pattern` (source length in bytes — a longer pattern is
///    usually the more specific one);
/// 4. earlier position in the catalogue.
fn specificity_key(
    sig: &Signature,
    index: usize,
) -> (Reverse<i32>, Reverse<bool>, Reverse<usize>, usize) {
    (
        Reverse(sig.priority),
        Reverse(sig.provider.is_some()),
        Reverse(sig.pattern.len()),
        index,
    )
}

/// An ordered set of failure signatures.
///
/// Cloning is cheap: signatures and compiled regexes are shared.
#[derive(Clone, Debug)]
pub struct Catalogue {
    signatures: Signatures,
    compiled: Arc<OnceLock<Compiled>>,
}

/// The built-in list is parsed on first use, so `Catalogue::builtin()` itself
/// costs nothing (the shim may create one and never classify).
#[derive(Clone, Debug)]
enum Signatures {
    Builtin,
    Owned(Vec<Arc<Signature>>),
}

/// The built-in signatures (once per process), from the rows build.rs
/// generated out of `builtin/*.yaml`: no YAML is parsed at run time.
pub(crate) fn builtin_signatures() -> &'static [Arc<Signature>] {
    static BUILTIN: OnceLock<Vec<Arc<Signature>>> = OnceLock::new();
    BUILTIN.get_or_init(|| {
        BUILTIN_ROWS
            .iter()
            .filter_map(|row| row.signature().map(Arc::new))
            .collect()
    })
}

/// One built-in signature as written in its YAML (see build.rs).
struct BuiltinRow {
    name: &'static str,
    class: &'static str,
    provider: Option<&'static str>,
    transient: Option<bool>,
    priority: Option<i64>,
    generic: Option<bool>,
    pattern: &'static str,
    description: Option<&'static str>,
    examples: &'static [&'static str],
}

include!(concat!(env!("OUT_DIR"), "/builtin_rows.rs"));

impl BuiltinRow {
    /// The signature, with the defaults `parse_signatures` applies; `None`
    /// for a row it would refuse (the tests keep the YAML valid and compare
    /// every row with the YAML parsed the ordinary way).
    fn signature(&self) -> Option<Signature> {
        let class: FailureClass = self.class.trim().parse().ok()?;
        let priority = match self.priority {
            Some(p) => i32::try_from(p).ok()?,
            None => 0,
        };
        let name = self.name.trim();
        if name.is_empty() || self.pattern.trim().is_empty() {
            return None;
        }
        Some(Signature {
            name: Cow::Borrowed(name),
            class,
            provider: self
                .provider
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(Cow::Borrowed),
            transient: self.transient.unwrap_or_else(|| class.default_transient()),
            priority,
            generic: self.generic.unwrap_or(false),
            pattern: Cow::Borrowed(self.pattern),
            description: self.description.map(Cow::Borrowed),
            examples: self.examples.iter().map(|e| Cow::Borrowed(*e)).collect(),
            regex: OnceLock::new(),
        })
    }
}

impl Default for Catalogue {
    fn default() -> Self {
        Catalogue::from_signatures(Vec::new())
    }
}

impl Catalogue {
    fn from_signatures(signatures: Vec<Arc<Signature>>) -> Catalogue {
        Catalogue {
            signatures: Signatures::Owned(signatures),
            compiled: Arc::new(OnceLock::new()),
        }
    }

    fn sigs(&self) -> &[Arc<Signature>] {
        match &self.signatures {
            Signatures::Builtin => builtin_signatures(),
            Signatures::Owned(v) => v,
        }
    }

    /// The YAML sources of the built-in catalogue: (origin, text) per part.
    pub fn builtin_sources() -> &'static [(&'static str, &'static str)] {
        BUILTIN_PARTS
    }

    /// The built-in catalogue (embedded `builtin/*.yaml`, see
    /// `config/signatures.example.yaml` for the format).
    ///
    /// Cheap: the YAML is parsed once per process on first use, and the
    /// regexes are compiled only when [`Catalogue::classify`] first sees
    /// non-empty text; all built-in catalogues share that state.
    pub fn builtin() -> Catalogue {
        static COMPILED: OnceLock<Arc<OnceLock<Compiled>>> = OnceLock::new();
        Catalogue {
            signatures: Signatures::Builtin,
            compiled: COMPILED.get_or_init(|| Arc::new(OnceLock::new())).clone(),
        }
    }

    /// Parses a catalogue from YAML. `origin` (usually a file path) is used in
    /// error messages. Every pattern is compiled here to validate it.
    pub fn from_yaml_str(yaml: &str, origin: &str) -> Result<Catalogue, CatalogueError> {
        parse(yaml, origin, true)
    }

    /// Reads and parses a catalogue file.
    pub fn load_file(path: &Path) -> Result<Catalogue, CatalogueError> {
        let origin = path.display().to_string();
        let yaml = std::fs::read_to_string(path).map_err(|source| CatalogueError::Io {
            origin: origin.clone(),
            source,
        })?;
        Catalogue::from_yaml_str(&yaml, &origin)
    }

    /// Merges a user catalogue into this one. A user signature with the same
    /// name as one of `self` replaces it; the others are added.
    ///
    /// Order of the result (which matters only for the last tie-break of
    /// [`Catalogue::classify`]): user signatures first, in their order, then
    /// the remaining signatures of `self`. So on a complete tie the user's
    /// signature wins.
    pub fn merged(self, user: Catalogue) -> Catalogue {
        let mut sigs = user.sigs().to_vec();
        let user_names: HashSet<&str> = user.names().collect();
        sigs.extend(
            self.sigs()
                .iter()
                .filter(|s| !user_names.contains(&*s.name))
                .cloned(),
        );
        Catalogue::from_signatures(sigs)
    }

    /// Number of signatures.
    pub fn len(&self) -> usize {
        self.sigs().len()
    }

    /// Whether there are no signatures.
    pub fn is_empty(&self) -> bool {
        self.sigs().is_empty()
    }

    /// Signature names, in catalogue order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sigs().iter().map(|s| &*s.name)
    }

    /// The signatures, in catalogue order.
    pub fn signatures(&self) -> impl Iterator<Item = &Signature> {
        self.sigs().iter().map(|s| s.as_ref())
    }

    /// The signature with this name.
    pub fn get(&self, name: &str) -> Option<&Signature> {
        self.signatures().find(|s| s.name == name)
    }

    /// Classifies captured worker output (one stream).
    ///
    /// Same as [`Catalogue::judge`] with a single stream, keeping only the
    /// winner.
    pub fn classify(&self, text: &str, ctx: &ClassifyContext) -> Option<Classification> {
        self.judge(&[text], ctx).winner
    }

    /// Judges captured worker output, one text per stream (stdout, stderr),
    /// and says why each candidate signature won or lost.
    ///
    /// Each stream is examined line by line (split on `\n`, each line capped
    /// at 8 KiB); a signature matches when its pattern matches within one
    /// line. A matching line is **evidence** only if it passes the rules of
    /// [`crate::evidence`]: at the end of its stream, not quoted (diff,
    /// Markdown, code, test output, access log), and for a generic signature
    /// with LLM-API context around it. Of the signatures with evidence, the
    /// most specific wins, deterministically: highest `priority`, then a
    /// signature with a `provider` over one without, then the longest
    /// pattern, then catalogue order. For each signature the last line that
    /// is evidence is the one reported.
    ///
    /// The reset time is taken from the matched line first, then from the
    /// rest of its stream (nearest occurrence); the provider is the
    /// signature's, else inferred from the text. See the [crate docs](crate).
    ///
    /// Blank input costs nothing; the regexes are compiled on the first call
    /// with non-blank text.
    pub fn judge(&self, streams: &[&str], ctx: &ClassifyContext) -> Judgement {
        self.judge_inner(streams, || ctx.clone(), false)
    }

    /// Like [`Catalogue::judge`], with the context built only when a
    /// signature won: finding the local time zone walks the zoneinfo
    /// database (about a millisecond), which output with no failure in it
    /// never needs.
    pub fn judge_lazily(
        &self,
        streams: &[&str],
        ctx: impl FnOnce() -> ClassifyContext,
    ) -> Judgement {
        self.judge_inner(streams, ctx, false)
    }

    /// Like [`Catalogue::judge`], and also lists the signatures that matched
    /// only before the end of their stream (mentions that did not count).
    /// Slower on long output: for `explain`, not for the shim.
    pub fn judge_with_mentions(&self, streams: &[&str], ctx: &ClassifyContext) -> Judgement {
        self.judge_inner(streams, || ctx.clone(), true)
    }

    fn judge_inner(
        &self,
        streams: &[&str],
        ctx: impl FnOnce() -> ClassifyContext,
        mentions: bool,
    ) -> Judgement {
        let mut judgement = Judgement::default();
        if streams.iter().all(|t| t.trim().is_empty()) {
            return judgement;
        }
        // Clean output against the built-in catalogue: no literal of any
        // signature at any stream's end, known before the signatures are
        // built (a third of the shim's work at the end of a clean run).
        let zones: Vec<usize> = streams
            .iter()
            .map(|t| evidence::tail_zone_start(t))
            .collect();
        if !mentions
            && matches!(self.signatures, Signatures::Builtin)
            && !streams
                .iter()
                .zip(&zones)
                .any(|(t, &zone)| Prefilter::builtin_may_match(&t[zone..]))
        {
            return judgement;
        }
        let sigs = self.sigs();
        if sigs.is_empty() {
            return judgement;
        }
        let compiled = self.compiled.get_or_init(|| match self.signatures {
            Signatures::Builtin => Compiled::builtin(sigs),
            Signatures::Owned(_) => Compiled::build(sigs),
        });
        // (rank, stream, signature index, line start) of every accepted candidate.
        let mut accepted: Vec<(usize, usize, usize, usize)> = Vec::new();
        for (stream, (text, &zone)) in streams.iter().zip(&zones).enumerate() {
            if text.trim().is_empty() {
                continue;
            }
            // Only the end of a stream can hold evidence; the whole stream is
            // searched only to report earlier mentions.
            let searched = if mentions { text } else { &text[zone..] };
            let candidates: Vec<usize> = match (&compiled.prefilter, &compiled.set) {
                (Some(prefilter), _) => prefilter.candidates(searched),
                (None, Some(set)) => set.matches(searched).into_iter().collect(),
                (None, None) => (0..sigs.len()).collect(),
            };
            if candidates.is_empty() {
                continue;
            }
            for i in candidates {
                let Some(sig) = sigs.get(i) else { continue };
                let Some(re) = sig.regex() else { continue };
                // Only lines at the end of the stream can be evidence: search
                // there (zone starts on a line boundary), and fall back to the
                // first match before it only to report where the mention was.
                let lines: Vec<usize> = matching_lines(re, &text[zone..])
                    .into_iter()
                    .map(|start| start + zone)
                    .collect();
                let last = match lines.last() {
                    Some(&last) => last,
                    None if mentions => match matching_lines_first(re, text) {
                        Some(first) => first,
                        None => continue,
                    },
                    None => continue,
                };
                let mut first_rejection = None;
                let mut accepted_at = None;
                for &start in lines.iter().rev() {
                    let line = considered_line(text, start);
                    let span = re.find(line).map(|m| m.range());
                    match evidence::judge_line(text, start, line, span, zone, sig.generic) {
                        Ok(()) => {
                            accepted_at = Some(start);
                            break;
                        }
                        Err(r) => {
                            first_rejection.get_or_insert(r);
                            if r == Rejection::NotAtEnd {
                                break;
                            }
                        }
                    }
                }
                let rank = compiled.rank.get(i).copied().unwrap_or(usize::MAX);
                match (accepted_at, first_rejection) {
                    (Some(start), _) => accepted.push((rank, stream, i, start)),
                    (None, rejection) => judgement.candidates.push(candidate(
                        sig,
                        stream,
                        text,
                        last,
                        CandidateOutcome::Rejected(rejection.unwrap_or(Rejection::NotAtEnd)),
                    )),
                }
            }
        }
        accepted.sort_by_key(|&(rank, stream, _, start)| (rank, Reverse(stream), Reverse(start)));
        // Built once, for the winner only.
        let mut ctx = Some(ctx);
        let winner_name = accepted
            .first()
            .and_then(|&(_, _, i, _)| sigs.get(i))
            .map(|s| s.name.to_string());
        for (n, &(_, stream, i, start)) in accepted.iter().enumerate() {
            let Some(sig) = sigs.get(i) else { continue };
            let text = streams.get(stream).copied().unwrap_or_default();
            if n == 0 {
                if let Some(ctx) = ctx.take() {
                    judgement.winner = Some(build_classification(sig, text, start, &ctx()));
                }
                judgement.candidates.push(candidate(
                    sig,
                    stream,
                    text,
                    start,
                    CandidateOutcome::Won,
                ));
            } else {
                let by = winner_name.clone().unwrap_or_default();
                judgement.candidates.push(candidate(
                    sig,
                    stream,
                    text,
                    start,
                    CandidateOutcome::Outranked { by },
                ));
            }
        }
        judgement
    }
}

/// The result of [`Catalogue::judge`]: the winning classification, if any,
/// and every signature that matched, with why it won or lost.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Judgement {
    /// What the output shows the run died of, if anything.
    pub winner: Option<Classification>,
    /// Every signature that matched a line, the winner first among the
    /// accepted ones, then the outranked, after the rejected.
    pub candidates: Vec<Candidate>,
}

/// One signature that matched, as [`Catalogue::judge`] saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Signature name.
    pub signature: String,
    /// Its class.
    pub class: FailureClass,
    /// Its provider (not inferred).
    pub provider: Option<String>,
    /// Its priority.
    pub priority: i32,
    /// Whether it is generic.
    pub generic: bool,
    /// Index of the stream (0 = the first text given).
    pub stream: usize,
    /// 1-based line number within the stream.
    pub line_no: usize,
    /// The line, trimmed, redacted, capped at 1 KiB.
    pub line: String,
    /// Won, outranked, or rejected and why.
    pub outcome: CandidateOutcome,
}

/// Why a candidate won or lost.
#[derive(Clone, Debug, PartialEq)]
pub enum CandidateOutcome {
    /// The winner.
    Won,
    /// Evidence, but a more specific signature won.
    Outranked {
        /// The winning signature.
        by: String,
    },
    /// Not evidence.
    Rejected(Rejection),
}

impl CandidateOutcome {
    /// One human-readable phrase.
    pub fn describe(&self) -> String {
        match self {
            CandidateOutcome::Won => "won".into(),
            CandidateOutcome::Outranked { by } => {
                format!("outranked by {by} (priority, then provider-specific, then longer pattern)")
            }
            CandidateOutcome::Rejected(r) => format!("rejected: {}", r.describe()),
        }
    }
}

fn candidate(
    sig: &Signature,
    stream: usize,
    text: &str,
    start: usize,
    outcome: CandidateOutcome,
) -> Candidate {
    let line = considered_line(text, start);
    Candidate {
        signature: sig.name.to_string(),
        class: sig.class,
        provider: sig.provider.as_deref().map(str::to_owned),
        priority: sig.priority,
        generic: sig.generic,
        stream,
        line_no: text[..start].matches('\n').count() + 1,
        line: truncate(&redact::redact(line.trim()), MAX_MATCHED_LINE).to_owned(),
        outcome,
    }
}

fn build_classification(
    sig: &Signature,
    text: &str,
    line_start: usize,
    ctx: &ClassifyContext,
) -> Classification {
    let line = considered_line(text, line_start);
    let reset = reset::extract(line, text, line_start, ctx);
    let provider = sig
        .provider
        .as_deref()
        .map(str::to_owned)
        .or_else(|| provider::infer(line, text, line_start));
    let redacted = redact::redact(line.trim());
    Classification {
        class: sig.class,
        signature: sig.name.to_string(),
        provider,
        transient: sig.transient,
        matched_line: truncate(&redacted, MAX_MATCHED_LINE).to_owned(),
        resets_at: reset.map(|r| r.resets_at),
        retry_after_s: reset.map(|r| r.retry_after_s),
    }
}

/// Byte offset of the start of the line containing `pos`.
fn line_start_of(text: &str, pos: usize) -> usize {
    text[..pos].rfind('\n').map_or(0, |i| i + 1)
}

/// The line starting at `start`, without its `\n`, capped at [`MAX_LINE`].
pub(crate) fn considered_line(text: &str, start: usize) -> &str {
    let rest = &text[start..];
    let line = match rest.find('\n') {
        Some(end) => &rest[..end],
        None => rest,
    };
    truncate(line, MAX_LINE)
}

/// `s` cut to at most `max` bytes, at a char boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Start offsets of the lines (each capped at [`MAX_LINE`]) that `re`
/// matches, in order.
fn matching_lines(re: &Regex, text: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut pos = 0;
    while pos <= text.len() {
        let Some(m) = re.find_at(text, pos) else {
            break;
        };
        let start = line_start_of(text, m.start());
        let line = considered_line(text, start);
        let line_end = start + line.len();
        // A match inside the considered part of one line counts as is; one
        // that crosses a line break or the cap is re-checked on the line alone.
        if m.end() <= line_end || re.is_match(line) {
            found.push(start);
        }
        // Continue with the next line.
        match text[m.start()..].find('\n') {
            Some(nl) => pos = m.start() + nl + 1,
            None => break,
        }
    }
    found
}

/// Start offset of the first line that `re` matches.
fn matching_lines_first(re: &Regex, text: &str) -> Option<usize> {
    let mut pos = 0;
    while pos <= text.len() {
        let m = re.find_at(text, pos)?;
        let start = line_start_of(text, m.start());
        let line = considered_line(text, start);
        if m.end() <= start + line.len() || re.is_match(line) {
            return Some(start);
        }
        pos = m.start() + text[m.start()..].find('\n')? + 1;
    }
    None
}

#[cfg(test)]
fn last_matching_line(re: &Regex, text: &str) -> Option<usize> {
    matching_lines(re, text).last().copied()
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    signatures: Option<Vec<RawSignature>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignature {
    name: Option<String>,
    class: Option<String>,
    provider: Option<String>,
    transient: Option<bool>,
    priority: Option<i32>,
    pattern: Option<String>,
    description: Option<String>,
    generic: Option<bool>,
    examples: Option<Vec<String>>,
}

fn parse(yaml: &str, origin: &str, validate: bool) -> Result<Catalogue, CatalogueError> {
    parse_signatures(yaml, origin, validate).map(Catalogue::from_signatures)
}

fn parse_signatures(
    yaml: &str,
    origin: &str,
    validate: bool,
) -> Result<Vec<Arc<Signature>>, CatalogueError> {
    let raw: Option<RawFile> = serde_yaml::from_str(yaml).map_err(|e| CatalogueError::Yaml {
        origin: origin.to_owned(),
        line: e.location().map(|l| l.line()),
        message: e.to_string(),
    })?;
    let raw_sigs = raw.and_then(|r| r.signatures).unwrap_or_default();
    let lines = LineIndex::new(yaml);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw_sigs.len());
    for (i, raw) in raw_sigs.into_iter().enumerate() {
        let label = match raw.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => format!("#{}", i + 1),
        };
        let line_of = |field: &str| lines.field_line(i, field);
        let missing = |field: &'static str| CatalogueError::MissingField {
            origin: origin.to_owned(),
            line: line_of(field),
            signature: label.clone(),
            field,
        };
        let invalid = |field: &'static str, message: String| CatalogueError::InvalidField {
            origin: origin.to_owned(),
            line: line_of(field),
            signature: label.clone(),
            field,
            message,
        };

        let name = raw.name.as_deref().ok_or_else(|| missing("name"))?.trim();
        if name.is_empty() {
            return Err(invalid("name", "must not be empty".to_owned()));
        }
        if let Some(&first) = seen.get(name) {
            return Err(CatalogueError::DuplicateName {
                origin: origin.to_owned(),
                line: line_of("name"),
                signature: label,
                first_line: lines.field_line(first, "name"),
            });
        }
        let class_str = raw.class.as_deref().ok_or_else(|| missing("class"))?;
        let class: FailureClass =
            class_str
                .trim()
                .parse()
                .map_err(|_| CatalogueError::UnknownClass {
                    origin: origin.to_owned(),
                    line: line_of("class"),
                    signature: label.clone(),
                    class: class_str.to_owned(),
                })?;
        let pattern = raw.pattern.ok_or_else(|| missing("pattern"))?;
        if pattern.trim().is_empty() {
            return Err(invalid("pattern", "must not be empty".to_owned()));
        }
        let provider = match raw.provider.as_deref().map(str::trim) {
            Some("") | None => None,
            Some(p) => Some(p.to_owned()),
        };
        let regex = OnceLock::new();
        if validate {
            let re = compile_one(&pattern).map_err(|e| CatalogueError::InvalidPattern {
                origin: origin.to_owned(),
                line: line_of("pattern"),
                signature: label.clone(),
                message: e.to_string(),
            })?;
            if re.is_match("") {
                return Err(invalid(
                    "pattern",
                    "matches empty text (it would match every line)".to_owned(),
                ));
            }
            let _ = regex.set(Some(re));
        }
        seen.insert(name.to_owned(), i);
        out.push(Arc::new(Signature {
            name: Cow::Owned(name.to_owned()),
            class,
            provider: provider.map(Cow::Owned),
            transient: raw.transient.unwrap_or_else(|| class.default_transient()),
            priority: raw.priority.unwrap_or(0),
            generic: raw.generic.unwrap_or(false),
            pattern: Cow::Owned(pattern),
            description: raw.description.map(Cow::Owned),
            examples: raw
                .examples
                .unwrap_or_default()
                .into_iter()
                .map(Cow::Owned)
                .collect(),
            regex,
        }));
    }
    Ok(out)
}

/// Best-effort mapping from signature index / field to a 1-based source line,
/// for block-style YAML (`signatures:` followed by `- name: ...` items).
/// Flow-style YAML still loads; its errors just point at less precise lines.
struct LineIndex<'a> {
    lines: Vec<&'a str>,
    /// 0-based line of the `signatures:` key.
    key_line: Option<usize>,
    /// 0-based line ranges of each list item.
    items: Vec<std::ops::Range<usize>>,
}

impl<'a> LineIndex<'a> {
    fn new(src: &'a str) -> LineIndex<'a> {
        let lines: Vec<&str> = src.lines().collect();
        let key_line = lines
            .iter()
            .position(|l| l.starts_with("signatures:") || l.starts_with("\"signatures\":"));
        let mut items: Vec<std::ops::Range<usize>> = Vec::new();
        if let Some(k) = key_line {
            let mut item_indent: Option<usize> = None;
            for (n, line) in lines.iter().enumerate().skip(k + 1) {
                let content = line.trim_start();
                if content.is_empty() || content.starts_with('#') {
                    continue;
                }
                let indent = line.len() - content.len();
                let is_item = content == "-" || content.starts_with("- ");
                match item_indent {
                    None if is_item => {
                        item_indent = Some(indent);
                        items.push(n..n + 1);
                    }
                    None => break,
                    Some(ind) if is_item && indent == ind => items.push(n..n + 1),
                    Some(ind) if indent > ind => {
                        if let Some(last) = items.last_mut() {
                            last.end = n + 1;
                        }
                    }
                    Some(_) => break,
                }
            }
        }
        LineIndex {
            lines,
            key_line,
            items,
        }
    }

    /// 1-based line of `field` in item `index`, else of the item, else of `signatures:`.
    fn field_line(&self, index: usize, field: &str) -> Option<usize> {
        let Some(range) = self.items.get(index) else {
            return self.key_line.map(|l| l + 1);
        };
        for n in range.clone() {
            let mut content = self.lines[n].trim_start();
            if let Some(rest) = content.strip_prefix('-') {
                content = rest.trim_start();
            }
            let content = content.trim_start_matches(['"', '\'']);
            if let Some(rest) = content.strip_prefix(field) {
                let rest = rest.trim_start_matches(['"', '\'']).trim_start();
                if rest.starts_with(':') {
                    return Some(n + 1);
                }
            }
        }
        Some(range.start + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn last_matching_line_rechecks_cross_line_matches() {
        let re = compile_one(r"foo\s+bar").expect("valid");
        assert_eq!(last_matching_line(&re, "foo\nbar"), None);
        assert_eq!(last_matching_line(&re, "x\nfoo  bar\nfoo\nbar"), Some(2));
        assert_eq!(last_matching_line(&re, "foo bar\nfoo bar"), Some(8));
    }

    #[test]
    fn long_lines_are_capped() {
        let re = compile_one("needle").expect("valid");
        let mut text = "a".repeat(MAX_LINE + 10);
        text.push_str("needle");
        assert_eq!(last_matching_line(&re, &text), None);
        let text = format!("{}needle", "a".repeat(MAX_LINE - 6));
        assert_eq!(last_matching_line(&re, &text), Some(0));
    }

    #[test]
    fn builtin_set_compiles_within_limits() {
        let compiled = Compiled::build(builtin_signatures());
        assert!(
            compiled.set.is_some(),
            "built-in RegexSet exceeds size limits"
        );
        assert_eq!(compiled.rank.len(), builtin_signatures().len());
    }

    #[test]
    fn classify_without_a_set_gives_the_same_answers() {
        let with_set = Catalogue::builtin();
        let without = Catalogue::from_signatures(builtin_signatures().to_vec());
        let mut compiled = Compiled::build(builtin_signatures());
        compiled.set = None;
        assert!(without.compiled.set(compiled).is_ok());
        let ctx = ClassifyContext::new(
            jiff::Timestamp::from_second(1_777_852_800).expect("valid"),
            jiff::tz::TimeZone::UTC,
        );
        for text in [
            "HTTP 429: The usage limit has been reached. plan_type: team, resets_at: 1780861905",
            "'message': 'Request too large for gpt-4o in organization', 'code': 'rate_limit_exceeded'",
            "test result: ok. 429 passed; 0 failed",
            "a\nHTTP 503 Service Unavailable\nb",
        ] {
            assert_eq!(
                with_set.classify(text, &ctx),
                without.classify(text, &ctx),
                "{text}"
            );
        }
    }

    /// Every text of the corpus and every example, alone and as the end of
    /// a long clean log: the built-in catalogue (literal prefilter) judges
    /// exactly as the same signatures with the full `RegexSet`, mentions
    /// included.
    #[test]
    fn the_prefilter_judges_exactly_as_the_full_set() {
        let builtin = Catalogue::builtin();
        let full = Catalogue::from_signatures(builtin_signatures().to_vec());
        let ctx = ClassifyContext::new(
            jiff::Timestamp::from_second(1_780_858_305).expect("valid"),
            jiff::tz::TimeZone::UTC,
        );
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
        let mut texts: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("tests/corpus exists") {
            let path = entry.expect("readable dir").path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let doc: serde_yaml::Value =
                serde_yaml::from_str(&std::fs::read_to_string(&path).expect("readable"))
                    .expect("corpus file parses");
            for case in doc["cases"].as_sequence().expect("cases") {
                texts.push(case["text"].as_str().expect("text").to_owned());
            }
        }
        assert!(texts.len() > 700, "corpus has {} texts", texts.len());
        texts.extend(
            builtin
                .signatures()
                .flat_map(|s| s.examples().iter().map(|e| e.to_string())),
        );
        let clean: String = (0..200)
            .map(|i| format!("step {i}: ran cargo test; 12 passed\n"))
            .collect();
        let mut differ = Vec::new();
        for text in &texts {
            let long = format!("{clean}{text}");
            for t in [text.as_str(), long.as_str()] {
                if builtin.judge(&[t, ""], &ctx) != full.judge(&[t, ""], &ctx)
                    || builtin.judge_with_mentions(&["", t], &ctx)
                        != full.judge_with_mentions(&["", t], &ctx)
                {
                    differ.push(t.chars().take(120).collect::<String>());
                }
            }
        }
        assert!(differ.is_empty(), "judged differently: {differ:#?}");
        let compiled = builtin.compiled.get().expect("built by the first judge");
        assert!(compiled.prefilter.is_some() && compiled.set.is_none());
    }

    #[test]
    fn the_lazy_context_is_built_only_for_a_winner() {
        let cat = Catalogue::builtin();
        let ctx = ClassifyContext::new(
            jiff::Timestamp::from_second(1_780_858_305).expect("valid"),
            jiff::tz::TimeZone::UTC,
        );
        let clean = "Error: something failed\nstep 3 passed\n";
        let judged = cat.judge_lazily(&[clean, ""], || panic!("no winner, no context"));
        assert_eq!(judged, cat.judge(&[clean, ""], &ctx));
        let failed = "HTTP 429: The usage limit has been reached. resets_at: 1780861905";
        let mut built = 0;
        let judged = cat.judge_lazily(&["", failed], || {
            built += 1;
            ctx.clone()
        });
        assert_eq!(built, 1);
        assert!(judged.winner.is_some());
        assert_eq!(judged, cat.judge(&["", failed], &ctx));
    }

    /// The rows build.rs generated are the YAML, parsed the ordinary way,
    /// field for field.
    #[test]
    fn the_generated_rows_are_the_yaml() {
        let mut parsed = Vec::new();
        for (origin, yaml) in BUILTIN_PARTS {
            parsed.extend(parse_signatures(yaml, origin, true).expect("built-in YAML is valid"));
        }
        let rows = builtin_signatures();
        assert_eq!(rows.len(), parsed.len());
        assert_eq!(BUILTIN_ROWS.len(), parsed.len());
        for (row, yaml) in rows.iter().zip(&parsed) {
            let fields = |s: &Signature| {
                format!(
                    "{:?}",
                    (
                        &s.name,
                        s.class,
                        &s.provider,
                        s.transient,
                        s.priority,
                        s.generic,
                        &s.pattern,
                        &s.description,
                        &s.examples,
                    )
                )
            };
            assert_eq!(fields(row), fields(yaml), "{}", yaml.name);
        }
    }

    #[test]
    fn line_index_finds_fields() {
        let src = "# c\nsignatures:\n  - name: a\n    class: rate_limit\n    pattern: x\n\n  - name: b\n    pattern: y\nother: 1\n";
        let idx = LineIndex::new(src);
        assert_eq!(idx.field_line(0, "name"), Some(3));
        assert_eq!(idx.field_line(0, "pattern"), Some(5));
        assert_eq!(idx.field_line(1, "pattern"), Some(8));
        assert_eq!(idx.field_line(1, "class"), Some(7));
        assert_eq!(idx.field_line(5, "class"), Some(2));
    }
}

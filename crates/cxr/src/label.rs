//! `label`: the Vietnamese report labeller (paper, "Data annotation", Fig 5).
//!
//! 1. Pattern filtering: a description equal to a normal template (after
//!    normalisation, section order ignored) is normal.
//! 2. Reading by rules over a lexicon (`stages/label/lexicon.yaml`): the description
//!    is cut into clauses (lines, sentences, "Header:" sections, even when merged into
//!    one paragraph); in each clause the lexicon's terms are found in one pass over the
//!    text folded without diacritics (where the text has diacritics, they must agree, so
//!    "đáy" is not "dày" nor "từ" "tù"). A finding belongs to its region, or to the
//!    region of the anatomy it describes ("bóng tim" + "to"), else to the section's
//!    header. Negation, change-over-time ("không còn", "đã hết") and suspicion
//!    ("theo dõi", "nghi", "không loại trừ") cues are scoped to the clause. A clause of
//!    anatomy and normal predicates ("Hai góc sườn hoành nhọn") is normal; the
//!    cardiothoracic ratio is read as a number ("0,58", "58%", "< 0,5").
//! 3. Abnormality interpolation: abnormal = any region, or a finding outside them.
//! 4. Manual labelling: a description with a clause nothing explains goes to `review`;
//!    `overrides.csv` (description hash → five labels) answers it.
//!
//! Each label is present, absent or uncertain (a suspicion cue): the `uncertain`
//! param decides what uncertain becomes in `labels`, and `<label>_uncertain` keeps it.
//! Every label records what decided it, so any label can be audited.

use std::collections::{BTreeMap, HashMap};

use aho_corasick::{AhoCorasick, MatchKind};
use anyhow::{Context as _, bail};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use pipe_core::stage::{Context, Reference, Stage};
use pipe_core::table::{TableBuilder, read_batch, str_col, write_table};

/// Label columns, in order.
pub const LABELS: [&str; 5] = ["chest_wall", "pleura", "parenchyma", "cardiac", "abnormal"];
/// Regions of findings: the four of the paper, then findings outside them.
const REGIONS: [&str; 5] = ["chest_wall", "pleura", "parenchyma", "cardiac", "other"];
const OTHER: usize = 4;

/// What an uncertain label (a finding under a suspicion cue) becomes in `labels`.
#[derive(Debug, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Uncertain {
    /// Present: radiologists here read "theo dõi" as a finding to act on.
    Positive,
    /// Absent.
    Negative,
}

#[derive(Debug, Serialize, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// File of normal report templates (a description equal to one is normal).
    #[serde(default = "d_templates")]
    pub templates: String,
    /// YAML lexicon: per region headers, anatomy and findings; predicates; devices;
    /// negation, suspicion and change-over-time cues; neutral words.
    #[serde(default = "d_lexicon")]
    pub lexicon: String,
    /// File of abbreviations expanded before matching (`ABBREVIATION => expansion` per line).
    #[serde(default = "d_abbreviations")]
    pub abbreviations: String,
    /// File of common misspellings and their corrections (`wrong => right` per line).
    #[serde(default = "d_misspellings")]
    pub misspellings: String,
    /// CSV of hand labels by description hash: the answers to the review queue.
    #[serde(default = "d_overrides")]
    pub overrides: String,
    /// A finding after a negation cue in the same clause is absent.
    #[serde(default = "yes")]
    pub negation: bool,
    /// Expand abbreviations before matching.
    #[serde(default = "yes")]
    pub expand_abbreviations: bool,
    /// Rewrite known misspellings before matching.
    #[serde(default = "yes")]
    pub fix_misspellings: bool,
    /// Cardiothoracic ratio above which the heart is enlarged (None: ignore numbers).
    #[serde(default = "d_ctr")]
    pub cardiothoracic_ratio: Option<f64>,
    /// What a finding under a suspicion cue ("theo dõi", "nghi") becomes in `labels`.
    #[serde(default = "d_uncertain")]
    pub uncertain: Uncertain,
    /// Threads labelling descriptions (0 = the run's `--jobs`).
    #[serde(default)]
    pub threads: usize,
}

fn d_templates() -> String {
    "stages/label/normal_templates.txt".into()
}
fn d_lexicon() -> String {
    "stages/label/lexicon.yaml".into()
}
fn d_abbreviations() -> String {
    "stages/label/abbreviations.txt".into()
}
fn d_misspellings() -> String {
    "stages/label/misspellings.txt".into()
}
fn d_overrides() -> String {
    "stages/label/overrides.csv".into()
}
fn yes() -> bool {
    true
}
fn d_ctr() -> Option<f64> {
    Some(0.5)
}
fn d_uncertain() -> Uncertain {
    Uncertain::Positive
}

pub struct Label;

impl Stage for Label {
    type Params = Params;
    const KIND: &'static str = "label";
    // 2: one row per sop_instance_uid (copies of a resent image); 3: the lexicon and
    // its rules, uncertain labels
    const VERSION: u32 = 3;
    const ABOUT: &'static str =
        "label reports: templates, a lexicon read by rules (negation, suspicion, change, numbers), overrides";

    fn reads(_: &Params) -> Vec<&'static str> {
        vec!["pairs"]
    }

    fn outputs(_: &Params) -> Vec<String> {
        vec!["labels".into(), "review".into()]
    }

    fn references(p: &Params) -> Vec<Reference> {
        [
            ("templates", &p.templates),
            ("lexicon", &p.lexicon),
            ("abbreviations", &p.abbreviations),
            ("misspellings", &p.misspellings),
            ("overrides", &p.overrides),
        ]
        .into_iter()
        .map(|(param, path)| Reference {
            param: param.into(),
            path: path.clone(),
        })
        .collect()
    }

    fn resources(p: &Params) -> pipe_core::stage::Resources {
        pipe_core::stage::Resources { cpu: p.threads, gpu: 0 }
    }

    fn run(p: &Params, ctx: &Context) -> anyhow::Result<()> {
        let labeller = Labeller::load(p, &|f: &str| ctx.resolve(f))?;
        let overrides = load_overrides(&ctx.resolve(&p.overrides))?;
        let pairs = read_batch(ctx.input("pairs")?)?;
        let (sop, report, patient, desc) = (
            str_col(&pairs, "sop_instance_uid")?,
            str_col(&pairs, "report_id")?,
            str_col(&pairs, "patient_id")?,
            str_col(&pairs, "description")?,
        );
        ctx.progress.set_total(pairs.num_rows() as u64);
        // Each distinct description is labelled once, on the pool.
        let mut distinct: Vec<&str> = (0..pairs.num_rows()).map(|i| desc.value(i)).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let outcomes: Vec<Outcome> = {
            use rayon::prelude::*;
            ctx.pool()?
                .install(|| distinct.par_iter().map(|d| labeller.label(d)).collect())
        };
        let memo: HashMap<&str, Outcome> = distinct.into_iter().zip(outcomes).collect();
        let mut labelled: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let (mut duplicates, mut uncertain) = (0u64, 0u64);
        let mut labels = TableBuilder::new(&crate::schema!("label/labels"));
        // Answers of overrides.csv some description of this run used.
        let mut answered: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut review: BTreeMap<String, (String, i64, String, String)> = BTreeMap::new();
        for i in 0..pairs.num_rows() {
            let d = desc.value(i);
            let outcome = memo[d].clone();
            let hash = description_hash(d);
            if overrides.contains_key(&hash) {
                answered.insert(hash.clone());
            }
            let decided = match (&outcome, overrides.get(&hash)) {
                (_, Some(o)) => Some((o.map(|v| (State::from(v), "override".to_string())), "override")),
                (Outcome::Decided { labels, by, rule }, None) => {
                    Some((std::array::from_fn(|k| (labels[k], by[k].clone())), *rule))
                }
                (Outcome::Review { unexplained }, None) => {
                    let e = review
                        .entry(hash.clone())
                        .or_insert_with(|| (d.to_string(), 0, report.value(i).to_string(), unexplained.join(" | ")));
                    e.1 += 1;
                    None
                }
            };
            // One row per image: copies of a resent instance (one SOP Instance UID under
            // several paths) are one image; the first pair decides its labels.
            if decided.is_some() && !labelled.insert(sop.value(i)) {
                duplicates += 1;
                ctx.progress.inc(1);
                continue;
            }
            if let Some((l, rule)) = decided {
                labels
                    .str("sop_instance_uid", Some(sop.value(i)))
                    .str("report_id", Some(report.value(i)))
                    .str("patient_id", Some(patient.value(i)))
                    .str("description_hash", Some(&hash));
                for (k, name) in LABELS.iter().enumerate() {
                    labels
                        .bool(name, Some(l[k].0.as_bool(p.uncertain)))
                        .bool(&format!("{name}_uncertain"), Some(l[k].0 == State::Uncertain))
                        .str(&format!("{name}_by"), Some(&l[k].1));
                }
                uncertain += l.iter().any(|(s, _)| *s == State::Uncertain) as u64;
                labels.str("decided_by", Some(rule));
            }
            ctx.progress.inc(1);
        }
        let mut rv = TableBuilder::new(&crate::schema!("label/review"));
        let mut rows: Vec<_> = review.into_iter().collect();
        rows.sort_by(|a, b| b.1.1.cmp(&a.1.1).then(a.0.cmp(&b.0)));
        for (hash, (d, n, example, unexplained)) in &rows {
            rv.str("description_hash", Some(hash))
                .str("description", Some(d))
                .i64("pairs", Some(*n))
                .str("example_report_id", Some(example))
                .str("unexplained", Some(unexplained));
        }
        ctx.count("descriptions", memo.len() as u64);
        // Answers in overrides.csv for no description of this run would otherwise be
        // ignored without a word.
        if !overrides.is_empty() {
            ctx.count("overrides_applied", answered.len() as u64);
            ctx.count("overrides_unused", (overrides.len() - answered.len()) as u64);
        }
        if duplicates > 0 {
            ctx.count("duplicate_images", duplicates);
        }
        ctx.count("uncertain_images", uncertain);
        ctx.count("review_descriptions", rows.len() as u64);
        write_table(
            &ctx.output_path("labels"),
            &crate::schema!("label/labels"),
            &ctx.meta.for_table("labels"),
            &[labels.finish()?],
        )?;
        write_table(
            &ctx.output_path("review"),
            &crate::schema!("label/review"),
            &ctx.meta.for_table("review"),
            &[rv.finish()?],
        )?;
        Ok(())
    }
}

/// Key of a description in `review` and `overrides.csv`: BLAKE3 of its NFC, trimmed
/// text (16 hex digits), independent of the labeller's own normalisation.
pub fn description_hash(description: &str) -> String {
    let text: String = description.trim().nfc().collect();
    blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
}

/// One label of one description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Absent,
    /// Mentioned under a suspicion cue.
    Uncertain,
    Present,
}

impl State {
    pub fn as_bool(self, uncertain: Uncertain) -> bool {
        match self {
            State::Present => true,
            State::Absent => false,
            State::Uncertain => uncertain == Uncertain::Positive,
        }
    }
}

impl From<bool> for State {
    fn from(b: bool) -> State {
        if b { State::Present } else { State::Absent }
    }
}

/// What the labeller decided for one description.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Decided {
        labels: [State; 5],
        by: [String; 5],
        rule: &'static str,
    },
    Review {
        unexplained: Vec<String>,
    },
}

/// Lower case, no diacritics (đ → d), single spaces: the folded form of a whole text.
pub fn fold(s: &str) -> String {
    let folded: String = s.nfc().flat_map(char::to_lowercase).map(fold_char).collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One lower-case character folded to one ASCII character, so that positions in the
/// folded text are positions in the original: Vietnamese letters lose their marks,
/// other letters become `x` (a word nobody lists), other symbols a space, dashes `-`.
fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c;
    }
    match c {
        'đ' => 'd',
        '–' | '—' | '−' => '-',
        '≤' | '‹' | '«' => '<',
        '≥' | '›' | '»' => '>',
        '•' | '·' => '-',
        '…' => '.',
        _ => match c.nfd().next() {
            Some(b) if b.is_ascii_alphabetic() => b,
            _ if c.is_alphabetic() => 'x',
            _ => ' ',
        },
    }
}

/// Split a description into its sections: bullet lines, or ";" clauses.
pub fn sections(description: &str) -> Vec<String> {
    let text: String = description.nfc().collect();
    let mut out = Vec::new();
    for line in text.lines() {
        for clause in line.split(';') {
            let s = clause.trim().trim_start_matches(['-', '–', '+', '•', '*']).trim();
            let s = s.trim_end_matches(['.', ',', ':']).trim();
            if !s.is_empty() {
                out.push(s.to_string());
            }
        }
    }
    out
}

/// What a lexicon term is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Anatomy of a region (section headers are anatomy followed by ":").
    Anatomy(usize),
    /// A finding of a region (`OTHER`: outside the four).
    Finding(usize),
    /// A finding of the region of its anatomy or section, else this default.
    Generic(Option<usize>),
    /// An abnormal predicate: a finding of the region of its anatomy or section.
    Abnormal,
    Normal,
    Device,
    Technique,
    Negation,
    Pseudo,
    Suspicion,
    Resolved,
    Neutral,
    Conclusion,
}

impl Kind {
    fn is_finding(self) -> bool {
        matches!(self, Kind::Finding(_) | Kind::Generic(_) | Kind::Abnormal)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LexiconFile {
    regions: RegionFiles,
    other: Vec<String>,
    other_anatomy: Vec<String>,
    devices: Vec<String>,
    technique: Vec<String>,
    predicates: Predicates,
    negation: Vec<String>,
    pseudo_negation: Vec<String>,
    suspicion: Vec<String>,
    resolved: Vec<String>,
    neutral: Vec<String>,
    conclusion: Vec<String>,
    generic: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionFiles {
    chest_wall: RegionFile,
    pleura: RegionFile,
    parenchyma: RegionFile,
    cardiac: RegionFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionFile {
    headers: Vec<String>,
    anatomy: Vec<String>,
    findings: Vec<String>,
    /// Generic findings whose default region is this one.
    #[serde(default)]
    generic: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Predicates {
    abnormal: Vec<String>,
    normal: Vec<String>,
}

/// A term as written (lower case, NFC, one entry per word) and what it is.
#[derive(Debug, Clone)]
struct Entry {
    words: Vec<String>,
    /// Per word: its marks (see [`marks`]), for comparing with text as written.
    marks: Vec<Vec<char>>,
    kind: Kind,
}

/// A term found in a clause: char positions in the normalised text.
#[derive(Debug, Clone, Copy)]
struct Found {
    start: usize,
    end: usize,
    kind: Kind,
    /// Index of the term's folded text in `Labeller::terms`.
    term: usize,
}

fn arrow_pairs(path: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((a, b)) = line.split_once("=>") else {
            bail!("{}:{}: expected `from => to`, got {line:?}", path.display(), n + 1);
        };
        out.push((a.trim().nfc().collect(), b.trim().nfc().collect()));
    }
    Ok(out)
}

/// Whole-word replacements made in one pass over a text (the leftmost, then longest,
/// of the words to replace).
struct Rewrites {
    automaton: AhoCorasick,
    to: Vec<String>,
}

impl Rewrites {
    fn new(pairs: Vec<(String, String)>) -> anyhow::Result<Rewrites> {
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(pairs.iter().map(|(a, _)| a.as_str()))
            .context("cannot build the rewrite automaton")?;
        Ok(Rewrites {
            automaton,
            to: pairs.into_iter().map(|(_, b)| b).collect(),
        })
    }

    /// `text` with each whole-word match replaced. The matching runs on `folded`, the
    /// text folded character for character (ASCII: byte i is character i), when given.
    fn apply(&self, text: &str, folded: Option<&str>) -> String {
        let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
        match folded {
            None => {
                let mut out = String::with_capacity(text.len());
                let mut at = 0;
                for m in self.automaton.find_iter(text) {
                    if word(text[..m.start()].chars().next_back()) || word(text[m.end()..].chars().next()) {
                        continue;
                    }
                    out.push_str(&text[at..m.start()]);
                    out.push_str(&self.to[m.pattern().as_usize()]);
                    at = m.end();
                }
                out.push_str(&text[at..]);
                out
            }
            Some(f) => {
                let chars: Vec<char> = text.chars().collect();
                let b = f.as_bytes();
                let word = |i: usize| b[i].is_ascii_alphanumeric();
                let mut out = String::with_capacity(text.len());
                let mut at = 0;
                for m in self.automaton.find_iter(f) {
                    if (m.start() > 0 && word(m.start() - 1)) || (m.end() < b.len() && word(m.end())) {
                        continue;
                    }
                    out.extend(&chars[at..m.start()]);
                    out.push_str(&self.to[m.pattern().as_usize()]);
                    at = m.end();
                }
                out.extend(&chars[at..]);
                out
            }
        }
    }
}

/// A description normalised for matching: the lower-case text and its folded form,
/// character for character (`folded` is ASCII: byte i is character i).
struct Text {
    chars: Vec<char>,
    folded: String,
}

/// A word's diacritics, sorted: combining marks of its letters (and đ's stroke).
fn marks(word: impl Iterator<Item = char>) -> Vec<char> {
    let mut m = Vec::new();
    for c in word {
        if c == 'đ' {
            m.push('đ');
        } else if !c.is_ascii() {
            unicode_normalization::char::decompose_canonical(c, |d| {
                if unicode_normalization::char::is_combining_mark(d) {
                    m.push(d)
                }
            });
        }
    }
    m.sort_unstable();
    m
}

/// Whether words as written (`written`: the text's characters, words separated by
/// single spaces) can be an entry's: a word written with diacritics may miss some of
/// the entry's (a slip: "bình thuờng", "tràn dich") and may carry them on another vowel
/// ("thuỳ" is "thùy"), but not carry one the entry lacks ("đáy" is not "dày", "từ" not
/// "tù"); one written without any is any of its foldings.
fn agrees(written: &[char], entry: &Entry) -> bool {
    // Every mark of `a` is one of `b` (both sorted).
    fn within(a: &[char], b: &[char]) -> bool {
        let mut b = b.iter().peekable();
        a.iter().all(|x| {
            while b.next_if(|y| *y < x).is_some() {}
            b.next_if(|y| *y == x).is_some()
        })
    }
    let mut words = written.split(|&c| c == ' ').filter(|w| !w.is_empty());
    let mut n = 0;
    for (e, em) in entry.words.iter().zip(&entry.marks) {
        let Some(w) = words.next() else { return false };
        n += 1;
        if w.iter().all(char::is_ascii) || w.iter().copied().eq(e.chars()) {
            continue;
        }
        if !within(&marks(w.iter().copied()), em) {
            return false;
        }
    }
    n == entry.words.len() && words.next().is_none()
}

/// The labeller, built from the resource files.
pub struct Labeller {
    /// Sorted folded sections of each template.
    templates: Vec<Vec<String>>,
    /// Every folded template section (a section equal to one is explained as normal).
    normal_sections: std::collections::HashSet<String>,
    automaton: AhoCorasick,
    /// Per folded term (the automaton's patterns): the entries that fold to it.
    terms: Vec<(String, Vec<Entry>)>,
    abbreviations: Rewrites,
    /// Misspellings written without diacritics (matched folded), and with them.
    misspellings: (Rewrites, Rewrites),
    p: Params,
}

impl Labeller {
    pub fn load(p: &Params, resolve: &dyn Fn(&str) -> std::path::PathBuf) -> anyhow::Result<Labeller> {
        let path = resolve(&p.lexicon);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let lex: LexiconFile =
            serde_yaml::from_str(&text).with_context(|| format!("{} is not a label lexicon", path.display()))?;
        let mut lists: Vec<(&Vec<String>, Kind)> = Vec::new();
        let regions = [
            &lex.regions.chest_wall,
            &lex.regions.pleura,
            &lex.regions.parenchyma,
            &lex.regions.cardiac,
        ];
        for (r, region) in regions.iter().enumerate() {
            lists.push((&region.headers, Kind::Anatomy(r)));
            lists.push((&region.anatomy, Kind::Anatomy(r)));
            lists.push((&region.findings, Kind::Finding(r)));
            lists.push((&region.generic, Kind::Generic(Some(r))));
        }
        lists.extend([
            (&lex.other, Kind::Finding(OTHER)),
            (&lex.other_anatomy, Kind::Anatomy(OTHER)),
            (&lex.generic, Kind::Generic(None)),
            (&lex.predicates.abnormal, Kind::Abnormal),
            (&lex.predicates.normal, Kind::Normal),
            (&lex.devices, Kind::Device),
            (&lex.technique, Kind::Technique),
            (&lex.negation, Kind::Negation),
            (&lex.pseudo_negation, Kind::Pseudo),
            (&lex.suspicion, Kind::Suspicion),
            (&lex.resolved, Kind::Resolved),
            (&lex.neutral, Kind::Neutral),
            (&lex.conclusion, Kind::Conclusion),
        ]);
        // Folded term → entries; a term listed twice as the same word with two meanings
        // is a mistake in the lexicon.
        let mut index: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for (list, kind) in lists {
            for term in list {
                let written: String = term.nfc().flat_map(char::to_lowercase).collect();
                let words: Vec<String> = written.split_whitespace().map(str::to_string).collect();
                let entries = index.entry(fold(&written)).or_default();
                match entries.iter().find(|e| e.words == words) {
                    Some(e) if e.kind == kind => {}
                    Some(e) => bail!("{}: `{term}` is listed as {:?} and as {kind:?}", path.display(), e.kind),
                    None => entries.push(Entry {
                        marks: words.iter().map(|w| marks(w.chars())).collect(),
                        words,
                        kind,
                    }),
                }
            }
        }
        let terms: Vec<(String, Vec<Entry>)> = index.into_iter().collect();
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(terms.iter().map(|(t, _)| t.as_str()))
            .context("cannot build the lexicon automaton")?;
        let mut l = Labeller {
            templates: Vec::new(),
            normal_sections: Default::default(),
            automaton,
            terms,
            abbreviations: Rewrites::new(arrow_pairs(&resolve(&p.abbreviations))?)?,
            misspellings: {
                let (ascii, marked): (Vec<_>, Vec<_>) = arrow_pairs(&resolve(&p.misspellings))?
                    .into_iter()
                    .map(|(a, b)| (a.to_lowercase(), b.to_lowercase()))
                    .partition(|(a, _)| a.is_ascii());
                (
                    Rewrites::new(ascii.into_iter().map(|(a, b)| (fold(&a), b)).collect())?,
                    Rewrites::new(marked)?,
                )
            },
            p: p.clone(),
        };
        let t_path = resolve(&p.templates);
        let text = std::fs::read_to_string(&t_path).with_context(|| format!("cannot read {}", t_path.display()))?;
        let body: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
        for block in body.join("\n").split("\n\n") {
            let mut secs = l.template_sections(block);
            if secs.is_empty() {
                continue;
            }
            l.normal_sections.extend(secs.iter().cloned());
            secs.sort();
            l.templates.push(secs);
        }
        if l.templates.is_empty() {
            bail!("{} holds no template", t_path.display());
        }
        Ok(l)
    }

    /// Abbreviations expanded, lower case, misspellings fixed, dashes and slashes between
    /// words made spaces, spaces single; lines kept.
    fn normalize(&self, description: &str) -> Text {
        let mut text: String = description.nfc().collect();
        if self.p.expand_abbreviations {
            text = self.abbreviations.apply(&text, None);
        }
        let mut text: String = text.chars().flat_map(char::to_lowercase).collect();
        if self.p.fix_misspellings {
            let (ascii, marked) = &self.misspellings;
            // Written without diacritics: compared folded ("bong tm" is also "bóng tm").
            let folded: String = text.chars().map(fold_char).collect();
            text = ascii.apply(&text, Some(&folded));
            text = marked.apply(&text, None);
        }
        let mut chars = Vec::with_capacity(text.len());
        for line in text.lines() {
            // A bullet or a number opening the line is not text.
            let line = line
                .trim_start()
                .trim_start_matches(['-', '–', '—', '+', '•', '*', '·']);
            let line = line
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .strip_prefix(['.', ')'])
                .filter(|_| line.starts_with(|c: char| c.is_ascii_digit()))
                .unwrap_or(line);
            let v: Vec<char> = line.chars().collect();
            for (i, &c) in v.iter().enumerate() {
                // "tim/ngực", "tim - trung thất", "tràn dịch – tràn khí", "(P)": word
                // separators; "(-)" stays.
                let minus = |j: usize| v.get(j) == Some(&'-');
                let c = match c {
                    '/' | '\\' | '–' | '—' => ' ',
                    '-' if !(i > 0 && v[i - 1] == '(' && v.get(i + 1) == Some(&')')) => ' ',
                    '(' if !(minus(i + 1) && v.get(i + 2) == Some(&')')) => ' ',
                    ')' if !(i > 0 && minus(i - 1)) => ' ',
                    c if c.is_whitespace() => ' ',
                    c => c,
                };
                if c == ' ' && chars.last().is_none_or(|&l| l == ' ' || l == '\n') {
                    continue;
                }
                chars.push(c);
            }
            while chars.last() == Some(&' ') {
                chars.pop();
            }
            chars.push('\n');
        }
        let folded = chars.iter().map(|&c| fold_char(c)).collect();
        Text { chars, folded }
    }

    /// Template sections compared folded (case, diacritics, bullets, end punctuation and
    /// order do not matter).
    fn template_sections(&self, description: &str) -> Vec<String> {
        let t = self.normalize(description);
        sections(&t.folded)
    }

    /// Every lexicon term in `t`, whole words, with diacritics that agree; where terms
    /// overlap, the leftmost, then the longest.
    fn find(&self, t: &Text) -> Vec<Found> {
        let bytes = t.folded.as_bytes();
        let word = |i: usize| bytes[i].is_ascii_alphanumeric();
        let mut all: Vec<Found> = Vec::new();
        for m in self.automaton.find_overlapping_iter(t.folded.as_str()) {
            let (s, e) = (m.start(), m.end());
            let edge_ok = |at: usize, inner: usize| !(word(inner) && at < bytes.len() && word(at));
            if (s > 0 && !edge_ok(s - 1, s)) || (e < bytes.len() && !edge_ok(e, e - 1)) {
                continue;
            }
            let term = m.pattern().as_usize();
            if let Some(entry) = self.terms[term].1.iter().find(|en| agrees(&t.chars[s..e], en)) {
                all.push(Found {
                    start: s,
                    end: e,
                    kind: entry.kind,
                    term,
                });
            }
        }
        all.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let mut out: Vec<Found> = Vec::new();
        for f in all {
            if out.last().is_none_or(|l| f.start >= l.end) {
                out.push(f);
            }
        }
        out
    }

    fn term(&self, f: &Found) -> &str {
        &self.terms[f.term].0
    }

    /// Label one description.
    pub fn label(&self, description: &str) -> Outcome {
        self.read(description, false)
    }

    /// What the sections the labeller can read say, even when others are unexplained
    /// (the suggestion shown in the label review queue); `None` for an empty text.
    pub fn suggest(&self, description: &str) -> Option<([State; 5], [String; 5])> {
        match self.read(description, true) {
            Outcome::Decided { labels, by, .. } => Some((labels, by)),
            Outcome::Review { .. } => None,
        }
    }

    /// [`Labeller::label`]; with `partial`, the evidence of the readable clauses even
    /// when some are not.
    fn read(&self, description: &str, partial: bool) -> Outcome {
        let t = self.normalize(description);
        let secs = sections(&t.folded);
        if secs.is_empty() {
            return Outcome::Review {
                unexplained: vec!["(empty)".into()],
            };
        }
        let mut sorted = secs.clone();
        sorted.sort();
        if let Some(k) = self.templates.iter().position(|tpl| *tpl == sorted) {
            let by = format!("template:{}", k + 1);
            return Outcome::Decided {
                labels: [State::Absent; 5],
                by: std::array::from_fn(|_| by.clone()),
                rule: "template",
            };
        }
        let found = self.find(&t);
        let mut evidence = Evidence::default();
        let mut unexplained = Vec::new();
        let mut section: Option<usize> = None;
        // The section opened by a header in this very clause ("Màng phổi: …, mờ …").
        let mut opened: Option<usize>;
        // A header with text after it on its line holds for that line; one alone on its
        // line, for the lines after it. After "Kết luận:", the conclusion.
        let mut section_line: Option<(usize, bool)> = None;
        let mut conclusion = false;
        for (start, end) in clauses(&t, &Self::header_starts(&t, &found)) {
            let in_clause: Vec<Found> = found
                .iter()
                .filter(|f| f.start >= start && f.end <= end)
                .copied()
                .collect();
            // A clause that opens with "Header:" sets the section of what follows.
            let lead = start + (t.folded[start..end].len() - t.folded[start..end].trim_start().len());
            opened = None;
            let line = t.folded[..start].matches('\n').count();
            if let Some((l, alone)) = section_line
                && l != line
                && !alone
            {
                section = None;
                section_line = None;
            }
            if let Some(first) = in_clause.first()
                && first.start == lead
                && t.folded[first.end..end].trim_start().starts_with(':')
            {
                let alone = t.folded[first.end..end]
                    .trim_start()
                    .trim_start_matches(':')
                    .trim()
                    .is_empty();
                match first.kind {
                    Kind::Anatomy(r) => {
                        (section, opened) = (Some(r), Some(r));
                        section_line = Some((line, alone));
                        conclusion = false;
                    }
                    Kind::Conclusion => {
                        section = None;
                        conclusion = true;
                    }
                    _ => {}
                }
            }
            let clause = t.folded[start..end].trim();
            if clause.is_empty() || self.normal_sections.contains(clause.trim_end_matches(['.', ',', ':'])) {
                continue;
            }
            if !self.read_clause(
                &t,
                (start, end),
                &in_clause,
                (section, opened, conclusion),
                &mut evidence,
            ) {
                unexplained.push(t.chars[start..end].iter().collect::<String>().trim().to_string());
            }
        }
        if !unexplained.is_empty() && !partial {
            return Outcome::Review { unexplained };
        }
        evidence.outcome()
    }

    /// Where a header ("Phổi:", "Tim - trung thất:", "Kết luận:") starts, in order.
    fn header_starts(t: &Text, found: &[Found]) -> Vec<usize> {
        found
            .iter()
            .filter(|f| {
                matches!(f.kind, Kind::Anatomy(_) | Kind::Conclusion)
                    && t.folded[f.end..].trim_start_matches(' ').starts_with(':')
            })
            .map(|f| f.start)
            .collect()
    }

    /// Read one clause into `evidence`; false when it is not understood.
    fn read_clause(
        &self,
        t: &Text,
        (start, end): (usize, usize),
        found: &[Found],
        (section, opened, conclusion): (Option<usize>, Option<usize>, bool),
        evidence: &mut Evidence,
    ) -> bool {
        let f = t.folded.as_bytes();
        // Sub-clauses: comma-separated parts, for attributing and post-posed cues.
        let sub_of = |pos: usize| f[start..pos].iter().filter(|&&b| b == b',').count();
        let mut understood = false;
        let mut unplaced = false;
        for (k, m) in found.iter().enumerate() {
            if !m.kind.is_finding() {
                continue;
            }
            // An opacity under "Màng phổi:" is the effusion's, whatever lung it covers; a
            // predicate belongs to the anatomy it follows.
            let region = match m.kind {
                Kind::Finding(r) => Some(r),
                Kind::Generic(default) => opened
                    .or_else(|| self.region_of(t, found, k, &sub_of, section))
                    .or(default),
                _ => self.region_of(t, found, k, &sub_of, section),
            };
            // A conclusion's "tổn thương như mô tả" sums up the findings described.
            let region = region.or(conclusion.then_some(OTHER));
            let Some(region) = region else {
                // "Có tổn thương" with no anatomy and no section: which region?
                if self.state(t, found, k, &sub_of) != State::Absent {
                    unplaced = true;
                } else {
                    understood = true;
                }
                continue;
            };
            let state = self.state(t, found, k, &sub_of);
            let term = self.term(m).to_string();
            evidence.add(region, state, || match state {
                State::Present => format!("keyword:{term}"),
                State::Uncertain => format!("uncertain:{term}"),
                State::Absent => format!("negated:{term}"),
            });
            understood = true;
        }
        if let Some(limit) = self.p.cardiothoracic_ratio
            && let Some((ratio, enlarged)) = cardiothoracic_ratio(&t.folded[start..end], limit)
        {
            let state = State::from(enlarged);
            evidence.add(3, state, || {
                format!(
                    "number:cardiothoracic ratio {ratio} {} {limit}",
                    if enlarged { ">" } else { "≤" }
                )
            });
            understood = true;
        }
        if unplaced {
            return false;
        }
        if understood {
            return true;
        }
        // No finding: normal when made of anatomy and normal predicates; otherwise only
        // if every word is something the lexicon knows.
        let has = |pred: &dyn Fn(Kind) -> bool| found.iter().any(|m| pred(m.kind));
        let normal = has(&|k| k == Kind::Normal);
        let anatomy = has(&|k| matches!(k, Kind::Anatomy(_))) || section.is_some();
        let unknown = unknown_words(&t.folded, start, end, found);
        // A device is described by where it lies ("đầu ống trên carina 4 cm"), a film by
        // how it was taken: neither is a finding.
        let technique = has(&|k| k == Kind::Technique) && !has(&|k| matches!(k, Kind::Anatomy(_)));
        has(&|k| k == Kind::Device) || ((normal && anatomy) || technique) && unknown <= 3 || unknown == 0
    }

    /// The region of a finding without one of its own: the anatomy nearest before it in
    /// its comma-separated part, else after it there, else the section's, else the
    /// nearest anatomy in the clause.
    fn region_of(
        &self,
        t: &Text,
        found: &[Found],
        k: usize,
        sub_of: &dyn Fn(usize) -> usize,
        section: Option<usize>,
    ) -> Option<usize> {
        // A finding names its subject too ("quai động mạch chủ vồng, vôi hóa"); anatomy
        // named as a landmark ("mức khí dịch ngang cung sau xương sườn 8") does not.
        let anatomy = |m: &Found| match m.kind {
            Kind::Anatomy(_) if landmark(t, m.start) => None,
            Kind::Anatomy(r) | Kind::Finding(r) => Some(r),
            _ => None,
        };
        let sub = sub_of(found[k].start);
        let same = |m: &&Found| sub_of(m.start) == sub;
        found[..k]
            .iter()
            .rev()
            .filter(same)
            .find_map(anatomy)
            .or_else(|| found[k + 1..].iter().filter(same).find_map(anatomy))
            .or_else(|| found[..k].iter().rev().find_map(anatomy))
            .or_else(|| found[k + 1..].iter().find_map(anatomy))
            .or(section)
    }

    /// A normal phrase that is a negation ("chưa phát hiện tổn thương") before finding
    /// `k`, its list going on ("… thâm nhiễm hay đông đặc") with no new subject.
    fn negating_normal_before(&self, found: &[Found], k: usize, t: &Text) -> bool {
        let Some(c) = found[..k].iter().rposition(|x| x.kind == Kind::Normal) else {
            return false;
        };
        let term = self.term(&found[c]);
        // "không thấy …", not "không to": a list of what is absent.
        let negating = [
            "khong thay ",
            "chua thay ",
            "khong co ",
            "chua co ",
            "khong phat hien ",
            "chua phat hien ",
            "khong ghi nhan ",
            "chua ghi nhan ",
            "khong ton thuong",
        ]
        .iter()
        .any(|n| term.starts_with(n));
        negating
            && !found[c + 1..k]
                .iter()
                .any(|x| !x.kind.is_finding() && x.kind != Kind::Neutral && x.kind != Kind::Pseudo)
            && !t.folded[found[c].end..found[k].start].contains(" co ")
    }

    /// Present, absent or uncertain: the cues scoping finding `k` of a clause.
    fn state(&self, t: &Text, found: &[Found], k: usize, sub_of: &dyn Fn(usize) -> usize) -> State {
        let m = found[k];
        let f = &t.folded;
        let sub = sub_of(m.start);
        // A cue before the finding scopes it up to a contrast, "có", or a comma followed
        // by a new subject (anatomy).
        let scoped_before = |cue: &dyn Fn(Kind) -> bool| {
            let Some(c) = found[..k].iter().rposition(|x| cue(x.kind)) else {
                return false;
            };
            let between = &f[found[c].end..m.start];
            let breaks = [
                " nhung ",
                " tuy nhien ",
                " song ",
                " ngoai ra ",
                " con ",
                ", co ",
                " co ",
            ];
            if breaks.iter().any(|b| format!(" {between} ").contains(b)) {
                return false;
            }
            // "Bóng tim không to, đám mờ …": a bare "không" on the predicate right after
            // it says nothing of what follows.
            // The predicates right after it, one after another ("không bị đẩy lệch").
            let mut run = 0;
            while let Some(x) = found.get(c + 1 + run) {
                let gap = f[found[c + run].end..x.start].trim();
                if x.kind != Kind::Abnormal || !(gap.is_empty() || gap == "hay" || gap == "va") {
                    break;
                }
                run += 1;
            }
            let bare = matches!(self.term(&found[c]), "khong" | "chua") && run > 0 && k > c + run;
            !bare
                && !found[c + 1..k].iter().any(|x| {
                    (matches!(x.kind, Kind::Anatomy(_)) && f[..x.start].trim_end().ends_with(','))
                        || (cue(Kind::Negation) && x.kind == Kind::Suspicion)
                })
        };
        let after_in_sub = |cue: &dyn Fn(Kind) -> bool| {
            found[k + 1..]
                .iter()
                .filter(|x| sub_of(x.start) == sub)
                .any(|x| cue(x.kind))
        };
        // "Tràn dịch màng phổi: không", "TDMP (-)".
        let negated_after = found[k + 1..]
            .first()
            .is_some_and(|x| x.kind == Kind::Negation && f[m.end..x.start].chars().all(|c| " :=(".contains(c)))
            || f[m.end..].trim_start().starts_with("(-)");
        let negation = self.p.negation
            && (scoped_before(&|k| k == Kind::Negation) || negated_after || self.negating_normal_before(found, k, t));
        let resolved = scoped_before(&|k| k == Kind::Resolved) || after_in_sub(&|k| k == Kind::Resolved);
        if negation || resolved {
            return State::Absent;
        }
        if scoped_before(&|k| k == Kind::Suspicion) || after_in_sub(&|k| k == Kind::Suspicion) {
            return State::Uncertain;
        }
        State::Present
    }
}

/// Per label: the strongest state found and what decided it.
#[derive(Default)]
struct Evidence {
    regions: [Option<(State, String)>; 5],
}

impl Evidence {
    fn add(&mut self, region: usize, state: State, why: impl FnOnce() -> String) {
        let slot = &mut self.regions[region];
        if slot.as_ref().is_none_or(|(s, _)| state > *s) {
            *slot = Some((state, why()));
        }
    }

    fn outcome(self) -> Outcome {
        let mut labels = [State::Absent; 5];
        let mut by: [String; 5] = Default::default();
        for r in 0..4 {
            let (s, why) = self.regions[r].clone().unwrap_or((State::Absent, "none".into()));
            labels[r] = s;
            by[r] = why;
        }
        // Abnormal: the strongest of the four and of findings outside them.
        let strongest = (0..5)
            .filter_map(|r| self.regions[r].as_ref().map(|(s, w)| (*s, r, w)))
            .max_by_key(|(s, r, _)| (*s, std::cmp::Reverse(*r)));
        match strongest {
            Some((s, r, w)) if s > State::Absent => {
                labels[4] = s;
                by[4] = format!("{}:{w}", REGIONS[r]);
            }
            _ => by[4] = "none".into(),
        }
        Outcome::Decided {
            labels,
            by,
            rule: "lexicon",
        }
    }
}

/// Whether anatomy at `at` is named as a landmark ("mức khí dịch ngang cung sau xương
/// sườn 8", "tương ứng", "chiếu lên", "chồng hình lên"): a place, not the subject of a
/// finding. A landmark word among the four words before it, in its comma-separated part.
fn landmark(t: &Text, at: usize) -> bool {
    let before = &t.folded[..at];
    let part = &before[before.rfind([',', '.', ';', ':', '\n']).map_or(0, |p| p + 1)..];
    part.split_whitespace()
        .rev()
        .take(4)
        .any(|w| matches!(w, "ngang" | "ung" | "chieu" | "chong" | "den" | "toi"))
}

/// The clauses of a normalised text as char ranges: lines, cut at sentence ends
/// (".", ";", "!" — not a decimal point) and before a header ("… sáng. Tim: …" and
/// "… sáng Tim: …" alike).
fn clauses(t: &Text, headers: &[usize]) -> Vec<(usize, usize)> {
    let b = t.folded.as_bytes();
    let digit = |i: usize| i < b.len() && b[i].is_ascii_digit();
    let mut out = Vec::new();
    let mut start = 0;
    let cut = |out: &mut Vec<(usize, usize)>, from: usize, to: usize| {
        if to > from {
            out.push((from, to));
        }
    };
    for i in 0..b.len() {
        let end_here = match b[i] {
            b'\n' | b';' | b'!' => true,
            b'.' => !(i > 0 && digit(i - 1) && digit(i + 1)),
            _ => false,
        };
        if end_here {
            cut(&mut out, start, i);
            start = i + 1;
        } else if i > start && b[i - 1] == b' ' && headers.binary_search(&i).is_ok() {
            cut(&mut out, start, i);
            start = i;
        }
    }
    cut(&mut out, start, b.len());
    out
}

/// Words of `start..end` that no lexicon term covers, not counting numbers and
/// words with digits ("d11", "12mm", "0,58").
fn unknown_words(folded: &str, start: usize, end: usize, found: &[Found]) -> usize {
    let b = folded.as_bytes();
    let mut n = 0;
    let mut i = start;
    while i < end {
        if !b[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let w = i;
        while i < end && b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let covered = found.iter().any(|f| f.start <= w && i <= f.end);
        let numeric = b[w..i].iter().any(u8::is_ascii_digit);
        if !covered && !numeric {
            n += 1;
        }
    }
    n
}

/// The cardiothoracic ratio of a folded clause and whether it says the heart is
/// enlarged: "chỉ số tim ngực 0,58", "CTR = 55%", "tỉ lệ tim/ngực < 0,5", "> 0,5".
pub fn cardiothoracic_ratio(folded: &str, limit: f64) -> Option<(f64, bool)> {
    let names = [
        "chi so tim long nguc",
        "chi so tim nguc",
        "ti le tim long nguc",
        "ty le tim long nguc",
        "ti le tim nguc",
        "ty le tim nguc",
        "chi so tim",
        "ctr",
    ];
    let at = names.iter().find_map(|n| {
        folded
            .match_indices(n)
            .find(|(p, _)| !folded[..*p].ends_with(|c: char| c.is_ascii_alphanumeric()))
            .map(|(p, _)| p + n.len())
    })?;
    let rest = &folded[at..];
    // The first number within a few words: its comparison before it, its % after it.
    let digit = rest.find(|c: char| c.is_ascii_digit())?;
    let lead = &rest[..digit];
    if lead.split_whitespace().count() > 5 {
        return None;
    }
    let num: String = rest[digit..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
        .collect();
    let num = num.trim_end_matches(['.', ',']);
    let mut v: f64 = num.replace(',', ".").parse().ok()?;
    if rest[digit + num.len()..].trim_start().starts_with('%') || v > 1.0 {
        v /= 100.0;
    }
    let below = lead.contains('<') || lead.contains("nho hon") || lead.contains("duoi");
    let above = lead.contains('>') || lead.contains("lon hon") || lead.contains("tren");
    let enlarged = if below {
        false
    } else if above {
        v >= limit
    } else {
        v > limit
    };
    Some((v, enlarged))
}

/// `overrides.csv`: description_hash,chest_wall,pleura,parenchyma,cardiac,abnormal[,note].
pub fn load_overrides(path: &std::path::Path) -> anyhow::Result<HashMap<String, [bool; 5]>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("description_hash") {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 6 {
            bail!(
                "{}:{}: expected description_hash and five 0/1 labels, got {line:?}",
                path.display(),
                n + 1
            );
        }
        let mut l = [false; 5];
        for k in 0..5 {
            l[k] = match f[k + 1] {
                "1" | "true" => true,
                "0" | "false" => false,
                other => bail!(
                    "{}:{}: label `{}` must be 0 or 1, got {other:?}",
                    path.display(),
                    n + 1,
                    LABELS[k]
                ),
            };
        }
        out.insert(f[0].to_string(), l);
    }
    Ok(out)
}

/// Precision, recall and F1 of one class (paper, Table 3).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassScore {
    pub label: &'static str,
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    pub tn: usize,
}

impl ClassScore {
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

/// 1.0 for 0/0: a class with no positives and none predicted is labelled perfectly.
fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// Compare predicted labels with hand labels on the reports both have.
pub fn evaluate(
    predicted: &HashMap<String, [bool; 5]>,
    truth: &HashMap<String, [bool; 5]>,
) -> (Vec<ClassScore>, usize) {
    let mut scores: Vec<ClassScore> = LABELS
        .iter()
        .map(|&label| ClassScore {
            label,
            tp: 0,
            fp: 0,
            fn_: 0,
            tn: 0,
        })
        .collect();
    let mut n = 0;
    for (id, t) in truth {
        let Some(p) = predicted.get(id) else { continue };
        n += 1;
        for k in 0..5 {
            let s = &mut scores[k];
            match (p[k], t[k]) {
                (true, true) => s.tp += 1,
                (true, false) => s.fp += 1,
                (false, true) => s.fn_ += 1,
                (false, false) => s.tn += 1,
            }
        }
    }
    (scores, n)
}

/// report_id → five labels from a Parquet or CSV file with columns report_id and the
/// label names (bool, or 0/1). Rows without labels are skipped.
pub fn read_label_table(path: &std::path::Path) -> anyhow::Result<HashMap<String, [bool; 5]>> {
    use arrow::array::Array;
    let mut out = HashMap::new();
    if path.extension().is_some_and(|e| e == "csv") {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split(',').map(str::trim).collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .with_context(|| format!("{}: no column `{name}`", path.display()))
        };
        let id = col("report_id")?;
        let cols: Vec<usize> = LABELS.iter().map(|l| col(l)).collect::<anyhow::Result<_>>()?;
        for (n, line) in lines.enumerate() {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() < header.len() {
                continue;
            }
            let mut l = [false; 5];
            for k in 0..5 {
                l[k] = match f[cols[k]] {
                    "1" | "true" | "True" => true,
                    "0" | "false" | "False" => false,
                    other => bail!(
                        "{}:{}: `{}` must be 0/1, got {other:?}",
                        path.display(),
                        n + 2,
                        LABELS[k]
                    ),
                };
            }
            out.insert(f[id].to_string(), l);
        }
        return Ok(out);
    }
    let b = read_batch(path)?;
    let ids = str_col(&b, "report_id")?;
    let cols: Vec<arrow::array::ArrayRef> = LABELS
        .iter()
        .map(|l| {
            let c = b
                .column_by_name(l)
                .with_context(|| format!("{}: no column `{l}`", path.display()))?;
            Ok(arrow::compute::cast(c, &arrow::datatypes::DataType::Boolean)?)
        })
        .collect::<anyhow::Result<_>>()?;
    for i in 0..b.num_rows() {
        if cols.iter().any(|c| c.is_null(i)) {
            continue;
        }
        let l = std::array::from_fn(|k| {
            cols[k]
                .as_any()
                .downcast_ref::<arrow::array::BooleanArray>()
                .expect("cast to bool")
                .value(i)
        });
        out.insert(ids.value(i).to_string(), l);
    }
    Ok(out)
}

/// Reports of a label stage's output whose labels differ from the truth: one line per
/// report (id, description, then each differing label: want, got, and what decided it).
pub fn disagreements(
    labels: &std::path::Path,
    pairs: &std::path::Path,
    truth: &HashMap<String, [bool; 5]>,
) -> anyhow::Result<Vec<String>> {
    use arrow::array::Array;
    let l = read_batch(labels)?;
    let ids = str_col(&l, "report_id")?;
    let by: Vec<_> = LABELS
        .iter()
        .map(|n| str_col(&l, &format!("{n}_by")))
        .collect::<anyhow::Result<_>>()?;
    let values: Vec<&arrow::array::BooleanArray> = LABELS
        .iter()
        .map(|n| pipe_core::table::bool_col(&l, n))
        .collect::<anyhow::Result<_>>()?;
    let p = read_batch(pairs)?;
    let (pid, desc) = (str_col(&p, "report_id")?, str_col(&p, "description")?);
    let description: HashMap<&str, &str> = (0..p.num_rows()).map(|i| (pid.value(i), desc.value(i))).collect();
    let mut out = Vec::new();
    for i in 0..l.num_rows() {
        let id = ids.value(i);
        let Some(want) = truth.get(id) else { continue };
        let got: [bool; 5] = std::array::from_fn(|k| values[k].is_valid(i) && values[k].value(i));
        if got == *want {
            continue;
        }
        let differ: Vec<String> = (0..5)
            .filter(|&k| got[k] != want[k])
            .map(|k| {
                format!(
                    "{} want {} got {} ({})",
                    LABELS[k],
                    want[k] as u8,
                    got[k] as u8,
                    by[k].value(i)
                )
            })
            .collect();
        let text = description.get(id).copied().unwrap_or("").replace('\n', " / ");
        out.push(format!("{id} {text}\n    {}", differ.join("; ")));
    }
    out.sort();
    Ok(out)
}

/// A description with hand labels (`tests/fixtures/label_dev/descriptions.csv`).
pub struct LabelledDescription {
    pub id: String,
    pub description: String,
    pub truth: [State; 5],
}

/// Rows of a CSV `id,description,chest_wall,pleura,parenchyma,cardiac,abnormal` with
/// labels 1 / 0 / u (uncertain); quoted fields may hold commas and newlines (RFC 4180).
pub fn read_labelled_descriptions(path: &std::path::Path) -> anyhow::Result<Vec<LabelledDescription>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let records = crate::csv::records(&text);
    let mut rows = records.into_iter();
    let header = rows.next().unwrap_or_default();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .with_context(|| format!("{}: no column `{name}`", path.display()))
    };
    let (id, desc) = (col("id")?, col("description")?);
    let labels: Vec<usize> = LABELS.iter().map(|l| col(l)).collect::<anyhow::Result<_>>()?;
    let mut out = Vec::new();
    for (n, r) in rows.enumerate() {
        if r.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let field = |i: usize| r.get(i).map(|s| s.trim()).unwrap_or("");
        let mut truth = [State::Absent; 5];
        for (k, &c) in labels.iter().enumerate() {
            truth[k] = match field(c) {
                "1" => State::Present,
                "0" => State::Absent,
                "u" | "U" => State::Uncertain,
                other => bail!(
                    "{}: record {}: `{}` must be 1, 0 or u, got {other:?}",
                    path.display(),
                    n + 2,
                    LABELS[k]
                ),
            };
        }
        out.push(LabelledDescription {
            id: field(id).to_string(),
            description: r.get(desc).cloned().unwrap_or_default(),
            truth,
        });
    }
    Ok(out)
}

/// The labeller on hand-labelled descriptions: how many it decides, per-class scores
/// on those (uncertain read as `uncertain` says, for the truth and for the labeller),
/// and each disagreement or review with what decided it.
pub struct DescriptionScore {
    pub total: usize,
    pub decided: usize,
    pub scores: Vec<ClassScore>,
    pub disagreements: Vec<String>,
    pub reviews: Vec<String>,
}

pub fn score_descriptions(l: &Labeller, rows: &[LabelledDescription], uncertain: Uncertain) -> DescriptionScore {
    let mut predicted = HashMap::new();
    let mut truth = HashMap::new();
    let (mut disagreements, mut reviews) = (Vec::new(), Vec::new());
    for r in rows {
        let flat = r.description.replace('\n', " / ");
        match l.label(&r.description) {
            Outcome::Decided { labels, by, rule } => {
                let got = labels.map(|s| s.as_bool(uncertain));
                let want = r.truth.map(|s| s.as_bool(uncertain));
                if got != want {
                    let differ: Vec<String> = (0..5)
                        .filter(|&k| got[k] != want[k])
                        .map(|k| format!("{} want {:?} got {:?} ({})", LABELS[k], r.truth[k], labels[k], by[k]))
                        .collect();
                    disagreements.push(format!("{} [{rule}] {flat}\n    {}", r.id, differ.join("; ")));
                }
                predicted.insert(r.id.clone(), got);
                truth.insert(r.id.clone(), want);
            }
            Outcome::Review { unexplained } => {
                reviews.push(format!("{} {flat}\n    unexplained: {}", r.id, unexplained.join(" | ")));
            }
        }
    }
    let (scores, decided) = evaluate(&predicted, &truth);
    DescriptionScore {
        total: rows.len(),
        decided,
        scores,
        disagreements,
        reviews,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::{Absent as N, Present as Y, Uncertain as U};

    fn labeller() -> Labeller {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let p: Params = serde_json::from_str("{}").unwrap();
        Labeller::load(&p, &|f: &str| root.join(f)).unwrap()
    }

    /// Each (description, chest_wall, pleura, parenchyma, cardiac, abnormal).
    fn check(cases: &[(&str, [State; 5])]) {
        let l = labeller();
        let mut wrong = Vec::new();
        for (d, want) in cases {
            match l.label(d) {
                Outcome::Decided { labels, .. } if labels == *want => {}
                other => wrong.push(format!("{d:?}: want {want:?}, got {other:?}")),
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    const NORMAL: &str = "- Lồng ngực cân đối, không thấy tổn thương xương.\n- Không thấy tràn dịch, tràn khí màng phổi.\n- Nhu mô phổi hai bên không thấy tổn thương.\n- Bóng tim không to.";

    #[test]
    fn templates_match_after_normalisation_and_in_any_order() {
        let l = labeller();
        assert!(matches!(l.label(NORMAL), Outcome::Decided { rule: "template", .. }));
        let shuffled = "+ Bóng tim không to\n+ Nhu mô phổi hai bên không thấy tổn thương\n+ Lồng ngực cân đối,  không thấy tổn thương xương.\n+ KHÔNG THẤY tràn dịch, tràn khí màng phổi.";
        assert!(matches!(l.label(shuffled), Outcome::Decided { rule: "template", .. }));
        let flat = NORMAL.replace('\n', "; ").replace("- ", "");
        assert!(matches!(l.label(&flat), Outcome::Decided { rule: "template", .. }));
    }

    /// Everyday normal sentences no template holds: anatomy and normal predicates.
    #[test]
    fn normal_sections_are_anatomy_and_normal_predicates() {
        check(&[
            ("Hai góc sườn hoành nhọn", [N; 5]),
            ("Bóng tim, trung thất không to", [N; 5]),
            ("Rốn phổi hai bên không đậm", [N; 5]),
            ("Xương lồng ngực bình thường", [N; 5]),
            ("Tim - trung thất: bình thường", [N; 5]),
            ("Cột sống ngực thẳng trục", [N; 5]),
            (
                "Hai phế trường sáng đều, thông khí tốt. Vòm hoành hai bên đều, mềm mại.",
                [N; 5],
            ),
            ("Khí quản ở đường giữa. Trung thất không giãn rộng.", [N; 5]),
            ("Hình ảnh tim phổi trong giới hạn bình thường.", [N; 5]),
            (
                "Các xương sườn, xương đòn hai bên liên tục, không thấy đường gãy.",
                [N; 5],
            ),
        ]);
    }

    #[test]
    fn findings_go_to_their_region_by_term_and_by_anatomy() {
        check(&[
            ("Tràn dịch màng phổi phải lượng ít.", [N, Y, N, N, Y]),
            ("Đám mờ thùy dưới phổi phải.", [N, N, Y, N, Y]),
            ("Gãy cung sau xương sườn 6 trái.", [Y, N, N, N, Y]),
            ("Bóng tim to.", [N, N, N, Y, Y]),
            ("Tù góc sườn hoành phải.", [N, Y, N, N, Y]),
            ("Rốn phổi hai bên đậm.", [N, N, Y, N, Y]),
            ("Quai động mạch chủ vồng, vôi hóa.", [N, N, N, Y, Y]),
            ("Khối mờ trung thất trên bên phải.", [N, N, N, Y, Y]),
            ("Màng phổi đáy phải dày.", [N, Y, N, N, Y]),
            ("Liềm hơi dưới cơ hoành phải.", [N, N, N, N, Y]),
        ]);
    }

    /// A header decides the region of what follows it, in one paragraph too.
    #[test]
    fn section_headers_merged_paragraphs_uppercase_and_order() {
        check(&[
            ("Tim: to. Phổi: sáng. Màng phổi: bình thường.", [N, N, N, Y, Y]),
            ("PHẾ TRƯỜNG: HAI BÊN SÁNG. BÓNG TIM: KHÔNG TO.", [N; 5]),
            ("Phổi hai bên sáng Tim: to nhẹ", [N, N, N, Y, Y]),
            (
                "- Bóng tim không to\n- Góc sườn hoành hai bên nhọn\n- Xương sườn trái gãy cũ\n- Hai phế trường sáng",
                [Y, N, N, N, Y],
            ),
            ("Kết luận: Tràn dịch màng phổi trái.", [N, Y, N, N, Y]),
        ]);
    }

    #[test]
    fn negation_scopes_a_list_until_a_new_subject_or_có() {
        check(&[
            ("Không thấy tràn dịch, tràn khí màng phổi.", [N; 5]),
            (
                "Không thấy tràn dịch màng phổi, có đám mờ thùy dưới phổi phải.",
                [N, N, Y, N, Y],
            ),
            ("Bóng tim không to, đám mờ đáy phổi phải.", [N, N, Y, N, Y]),
            ("Không thấy tràn dịch màng phổi, phổi phải có nốt mờ.", [N, N, Y, N, Y]),
            ("Tràn dịch màng phổi phải. Không thấy tràn khí.", [N, Y, N, N, Y]),
            ("Chưa phát hiện tổn thương thâm nhiễm hay đông đặc.", [N; 5]),
            ("Tràn khí màng phổi: không.", [N; 5]),
            ("Đám mờ không đều thùy trên phổi phải.", [N, N, Y, N, Y]),
            ("Nốt mờ ranh giới không rõ đỉnh phổi trái.", [N, N, Y, N, Y]),
        ]);
    }

    #[test]
    fn suspicion_makes_a_finding_uncertain_and_the_policy_decides() {
        check(&[
            ("Theo dõi tràn dịch màng phổi trái.", [N, U, N, N, U]),
            ("TD lao phổi.", [N, N, U, N, U]),
            ("Nghi gãy cung trước xương sườn 5 phải.", [U, N, N, N, U]),
            ("Nốt mờ thùy giữa, không loại trừ u.", [N, N, Y, N, Y]),
            ("Hình ảnh gợi ý viêm phổi thùy dưới trái.", [N, N, U, N, U]),
            ("Viêm phổi?", [N, N, U, N, U]),
            ("Đám mờ thùy trên phổi phải, theo dõi lao.", [N, N, Y, N, Y]),
        ]);
        assert!(U.as_bool(Uncertain::Positive) && !U.as_bool(Uncertain::Negative));
    }

    #[test]
    fn change_over_time_gone_is_absent_and_reduced_is_present() {
        check(&[
            ("So với phim cũ, không còn tràn dịch màng phổi phải.", [N; 5]),
            ("Đã hết tràn khí màng phổi trái.", [N; 5]),
            ("Tràn dịch màng phổi trái đã hết.", [N; 5]),
            ("Tràn dịch màng phổi phải giảm, còn ít dịch.", [N, Y, N, N, Y]),
            ("Đám mờ đáy phổi phải đã hấp thu hoàn toàn.", [N; 5]),
            // "gần hết" (almost all) is not "hết" (gone).
            (
                "Tràn khí màng phổi trái: vùng quá sáng chiếm gần hết nửa ngực trái.",
                [N, Y, N, N, Y],
            ),
        ]);
    }

    #[test]
    fn diacritics_when_present_must_agree() {
        check(&[
            // "đáy" (base) is not "dày" (thick); "từ" (from) is not "tù" (blunt).
            ("Nhu mô phổi vùng đáy sáng.", [N; 5]),
            ("Chỉ số tim ngực tăng từ 0,52 lên 0,60.", [N, N, N, Y, Y]),
            ("tran dich mang phoi ben phai", [N, Y, N, N, Y]),
            ("khong thay tran dich, tran khi mang phoi", [N; 5]),
            ("Tràn dich màng phổi trái.", [N, Y, N, N, Y]),
            ("Màng phổi dầy dính đáy trái.", [N, Y, N, N, Y]),
        ]);
    }

    #[test]
    fn abbreviations_and_misspellings() {
        check(&[
            ("TDMP phải.", [N, Y, N, N, Y]),
            ("Không thấy TKMP.", [N; 5]),
            ("Quai ĐMC vồng.", [N, N, N, Y, Y]),
            ("GSH 2 bên nhọn.", [N; 5]),
            ("Bóng tm to.", [N, N, N, Y, Y]),
            ("Tràn dch màng phổi trái.", [N, Y, N, N, Y]),
            ("Trúng thất không rộng.", [N; 5]),
        ]);
    }

    #[test]
    fn cardiothoracic_ratio_as_a_number() {
        check(&[
            ("Chỉ số tim ngực 0,58.", [N, N, N, Y, Y]),
            ("Chỉ số tim ngực 0,45.", [N; 5]),
            ("Chỉ số tim ngực 55%.", [N, N, N, Y, Y]),
            ("Bóng tim không to, chỉ số tim/ngực < 0,5.", [N; 5]),
            ("CTR = 0.62", [N, N, N, Y, Y]),
            ("Chỉ số tim ngực > 0,5.", [N, N, N, Y, Y]),
        ]);
        assert_eq!(cardiothoracic_ratio("chi so tim nguc: 0.52", 0.5), Some((0.52, true)));
        assert_eq!(cardiothoracic_ratio("ctr < 50%", 0.5), Some((0.5, false)));
    }

    #[test]
    fn support_devices_and_technique_are_not_abnormal_and_other_findings_are() {
        check(&[
            (
                &format!("{NORMAL}\n- Có hình ảnh catheter tĩnh mạch trung tâm."),
                [N; 5],
            ),
            ("Máy tạo nhịp vùng dưới đòn trái. Phim chụp tại giường.", [N; 5]),
            (&format!("{NORMAL}\n- Liềm hơi dưới cơ hoành phải."), [N, N, N, N, Y]),
        ]);
    }

    #[test]
    fn what_is_not_understood_goes_to_review_and_every_label_says_why() {
        let l = labeller();
        for d in ["Bóng tim hình chiếc giày cổ cao.", "Có tổn thương.", "Xyz abc def ghi."] {
            assert!(matches!(l.label(d), Outcome::Review { .. }), "{d}: {:?}", l.label(d));
        }
        match l.label("- Tràn dịch màng phổi phải.\n- Bóng tim không to.") {
            Outcome::Decided { by, .. } => {
                assert_eq!(by[1], "keyword:tran dich mang phoi");
                assert_eq!(by[3], "none");
                assert_eq!(by[4], "pleura:keyword:tran dich mang phoi");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn switches_turn_features_off() {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let p: Params = serde_json::from_str(r#"{"negation": false, "expand_abbreviations": false}"#).unwrap();
        let l = Labeller::load(&p, &|f: &str| root.join(f)).unwrap();
        assert!(matches!(
            l.label("- Không thấy tràn dịch màng phổi phải."),
            Outcome::Decided {
                labels: [N, Y, N, N, Y],
                ..
            }
        ));
        assert!(matches!(l.label("- TDMP phải."), Outcome::Review { .. }));
    }

    #[test]
    fn a_term_listed_with_two_meanings_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let lex = std::fs::read_to_string(root.join("stages/label/lexicon.yaml")).unwrap();
        std::fs::write(
            dir.path().join("lexicon.yaml"),
            lex.replace("negation:\n  - không\n", "negation:\n  - không\n  - bóng tim to\n"),
        )
        .unwrap();
        let p: Params = serde_json::from_str(&format!(
            r#"{{"lexicon": "{}"}}"#,
            dir.path().join("lexicon.yaml").display()
        ))
        .unwrap();
        let err = Labeller::load(&p, &|f: &str| root.join(f)).err().unwrap().to_string();
        assert!(err.contains("`bóng tim to` is listed as"), "{err}");
    }
}

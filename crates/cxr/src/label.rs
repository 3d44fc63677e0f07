//! `label`: the Vietnamese report labeller (paper, "Data annotation", Fig 5).
//!
//! 1. Pattern filtering: a description equal to a normal template (after
//!    normalisation, section order ignored) is normal.
//! 2. Keyword detection: the description is split into sections ("-", "–", "+", "•"
//!    lines or ";" clauses); an Aho-Corasick automaton over all regions' keywords finds
//!    every match in one pass. Beyond the paper, each switchable: negation (a cue
//!    earlier in the same sentence), text without diacritics and misspellings (matching
//!    happens on folded text), abbreviations (TDMP, TKMP, …), and the cardiothoracic
//!    ratio as a number.
//! 3. Abnormality interpolation: abnormal = any region or an `other` keyword.
//! 4. Manual labelling: a description with a section nothing explains goes to `review`;
//!    `overrides.csv` (description hash → five labels) answers it.
//!
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
const REGIONS: [&str; 5] = ["chest_wall", "pleura", "parenchyma", "cardiac", "other"];

#[derive(Debug, Serialize, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// File of normal report templates (a description equal to one is normal).
    #[serde(default = "d_templates")]
    pub templates: String,
    /// YAML file of finding keywords per region (chest_wall, pleura, parenchyma, cardiac,
    /// other), neutral phrases and negation cues.
    #[serde(default = "d_keywords")]
    pub keywords: String,
    /// File of abbreviations expanded before matching (`ABBREVIATION => expansion` per line).
    #[serde(default = "d_abbreviations")]
    pub abbreviations: String,
    /// File of common misspellings and their corrections (`wrong => right` per line).
    #[serde(default = "d_misspellings")]
    pub misspellings: String,
    /// CSV of hand labels by description hash: the answers to the review queue.
    #[serde(default = "d_overrides")]
    pub overrides: String,
    /// A keyword after a negation cue in the same sentence is not a finding.
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
}

fn d_templates() -> String {
    "stages/label/normal_templates.txt".into()
}
fn d_keywords() -> String {
    "stages/label/keywords.yaml".into()
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

pub struct Label;

impl Stage for Label {
    type Params = Params;
    const KIND: &'static str = "label";
    const VERSION: u32 = 2; // 2: one row per sop_instance_uid (copies of a resent image)
    const ABOUT: &'static str =
        "label reports: templates, keywords (negation, diacritics, abbreviations, numbers), overrides";

    fn reads(_: &Params) -> Vec<&'static str> {
        vec!["pairs"]
    }

    fn outputs(_: &Params) -> Vec<String> {
        vec!["labels".into(), "review".into()]
    }

    fn references(p: &Params) -> Vec<Reference> {
        [
            ("templates", &p.templates),
            ("keywords", &p.keywords),
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
        // Each distinct description is labelled once.
        let mut memo: HashMap<&str, Outcome> = HashMap::new();
        let mut labelled: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let mut duplicates = 0u64;
        let mut labels = TableBuilder::new(&crate::schema!("label/labels"));
        let mut review: BTreeMap<String, (String, i64, String, String)> = BTreeMap::new();
        for i in 0..pairs.num_rows() {
            let d = desc.value(i);
            let outcome = memo.entry(d).or_insert_with(|| labeller.label(d)).clone();
            let hash = description_hash(d);
            let decided = match (&outcome, overrides.get(&hash)) {
                (_, Some(o)) => Some((o.map(|v| (v, "override".to_string())), "override")),
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
                        .bool(name, Some(l[k].0))
                        .str(&format!("{name}_by"), Some(&l[k].1));
                }
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
        if duplicates > 0 {
            ctx.count("duplicate_images", duplicates);
        }
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

/// What the labeller decided for one description.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Decided {
        labels: [bool; 5],
        by: [String; 5],
        rule: &'static str,
    },
    Review {
        unexplained: Vec<String>,
    },
}

/// Lower case, no diacritics (đ → d), single spaces: the form all matching uses.
pub fn fold(s: &str) -> String {
    let folded: String = s
        .nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .map(|c| match c {
            'đ' | 'Đ' => 'd',
            c => c,
        })
        .collect::<String>()
        .to_lowercase();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
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

/// The labeller, built from the resource files.
pub struct Labeller {
    /// Sorted folded sections of each template.
    templates: Vec<Vec<String>>,
    /// Every folded template section (a section equal to one is explained as normal).
    normal_sections: std::collections::HashSet<String>,
    automaton: AhoCorasick,
    /// For each pattern: region index (0..5 regions, 5 = neutral) and the keyword.
    patterns: Vec<(usize, String)>,
    negation: Vec<String>,
    abbreviations: Vec<(String, String)>,
    misspellings: Vec<(String, String)>,
    p: Params,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Keywords {
    chest_wall: Vec<String>,
    pleura: Vec<String>,
    parenchyma: Vec<String>,
    cardiac: Vec<String>,
    other: Vec<String>,
    #[serde(default)]
    neutral: Vec<String>,
    #[serde(default)]
    negation: Vec<String>,
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

/// Replace whole-word occurrences of `from` in `text`.
fn replace_words(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(from) {
        let before_ok = rest[..pos].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        let after = &rest[pos + from.len()..];
        let after_ok = after.chars().next().is_none_or(|c| !c.is_alphanumeric());
        out.push_str(&rest[..pos]);
        out.push_str(if before_ok && after_ok { to } else { from });
        rest = after;
    }
    out.push_str(rest);
    out
}

impl Labeller {
    pub fn load(p: &Params, resolve: &dyn Fn(&str) -> std::path::PathBuf) -> anyhow::Result<Labeller> {
        let kw_path = resolve(&p.keywords);
        let kw_text =
            std::fs::read_to_string(&kw_path).with_context(|| format!("cannot read {}", kw_path.display()))?;
        let kw: Keywords =
            serde_yaml::from_str(&kw_text).with_context(|| format!("{} is not a keyword list", kw_path.display()))?;
        let mut patterns = Vec::new();
        for (region, list) in [
            &kw.chest_wall,
            &kw.pleura,
            &kw.parenchyma,
            &kw.cardiac,
            &kw.other,
            &kw.neutral,
        ]
        .iter()
        .enumerate()
        {
            for k in list.iter() {
                patterns.push((region, fold(k)));
            }
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns.iter().map(|(_, k)| k.as_str()))
            .context("cannot build the keyword automaton")?;
        let mut l = Labeller {
            templates: Vec::new(),
            normal_sections: Default::default(),
            automaton,
            patterns,
            negation: kw.negation.iter().map(|n| fold(n)).collect(),
            abbreviations: arrow_pairs(&resolve(&p.abbreviations))?,
            misspellings: arrow_pairs(&resolve(&p.misspellings))?
                .into_iter()
                .map(|(a, b)| (fold(&a), fold(&b)))
                .collect(),
            p: p.clone(),
        };
        let t_path = resolve(&p.templates);
        let text = std::fs::read_to_string(&t_path).with_context(|| format!("cannot read {}", t_path.display()))?;
        let body: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
        for block in body.join("\n").split("\n\n") {
            let mut secs = l.normalized_sections(block);
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

    /// Sections, abbreviations expanded, folded, misspellings fixed.
    fn normalized_sections(&self, description: &str) -> Vec<String> {
        let mut text: String = description.nfc().collect();
        if self.p.expand_abbreviations {
            for (a, b) in &self.abbreviations {
                text = replace_words(&text, a, b);
            }
        }
        sections(&text)
            .into_iter()
            .map(|s| {
                let mut f = fold(&s);
                if self.p.fix_misspellings {
                    for (a, b) in &self.misspellings {
                        f = replace_words(&f, a, b);
                    }
                }
                f
            })
            .collect()
    }

    /// Label one description.
    pub fn label(&self, description: &str) -> Outcome {
        let secs = self.normalized_sections(description);
        if secs.is_empty() {
            return Outcome::Review {
                unexplained: vec!["(empty)".into()],
            };
        }
        let mut sorted = secs.clone();
        sorted.sort();
        if let Some(t) = self.templates.iter().position(|t| *t == sorted) {
            let by = format!("template:{}", t + 1);
            return Outcome::Decided {
                labels: [false; 5],
                by: std::array::from_fn(|_| by.clone()),
                rule: "template",
            };
        }
        let mut found: [Option<String>; 5] = Default::default();
        let mut negated: [Option<String>; 5] = Default::default();
        let mut unexplained = Vec::new();
        for s in &secs {
            let mut explained = self.normal_sections.contains(s);
            for m in self.automaton.find_iter(s.as_str()) {
                if !word_bounded(s, m.start(), m.end()) {
                    continue;
                }
                explained = true;
                let (region, kw) = &self.patterns[m.pattern().as_usize()];
                if *region == 5 {
                    continue; // neutral: explains, finds nothing
                }
                if self.p.negation && self.is_negated(s, m.start()) {
                    negated[*region].get_or_insert_with(|| format!("negated:{kw}"));
                } else {
                    found[*region].get_or_insert_with(|| format!("keyword:{kw}"));
                }
            }
            if let Some(limit) = self.p.cardiothoracic_ratio
                && let Some(ratio) = cardiothoracic_ratio(s)
            {
                explained = true;
                if ratio > limit {
                    found[3].get_or_insert_with(|| format!("number:cardiothoracic ratio {ratio} > {limit}"));
                } else {
                    negated[3].get_or_insert_with(|| format!("number:cardiothoracic ratio {ratio} ≤ {limit}"));
                }
            }
            if !explained {
                unexplained.push(s.clone());
            }
        }
        if !unexplained.is_empty() {
            return Outcome::Review { unexplained };
        }
        let mut labels = [false; 5];
        let mut by: [String; 5] = Default::default();
        for r in 0..4 {
            labels[r] = found[r].is_some();
            by[r] = found[r]
                .clone()
                .or_else(|| negated[r].clone())
                .unwrap_or_else(|| "none".into());
        }
        labels[4] = labels[..4].iter().any(|&x| x) || found[4].is_some();
        by[4] = if labels[4] {
            (0..5)
                .find_map(|r| found[r].as_ref().map(|f| format!("{}:{f}", REGIONS[r])))
                .unwrap_or_default()
        } else {
            "none".into()
        };
        Outcome::Decided {
            labels,
            by,
            rule: "keywords",
        }
    }

    /// A negation cue earlier in the same sentence, not cut off by a contrast ("nhưng",
    /// "tuy nhiên") or a new positive clause (", có …").
    fn is_negated(&self, s: &str, at: usize) -> bool {
        let before = &s[..at];
        let sentence_start = before.rfind(['.', ';', ':']).map_or(0, |p| p + 1);
        let scope = &before[sentence_start..];
        let scope = ["nhung ", "tuy nhien", ", co ", "con "]
            .iter()
            .filter_map(|b| scope.rfind(b).map(|p| p + b.len()))
            .max()
            .map_or(scope, |p| &scope[p..]);
        self.negation.iter().any(|cue| {
            scope
                .match_indices(cue.as_str())
                .any(|(p, _)| word_bounded(scope, p, p + cue.len()))
        })
    }
}

fn word_bounded(s: &str, start: usize, end: usize) -> bool {
    let before = s[..start].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
    let after = s[end..].chars().next().is_none_or(|c| !c.is_alphanumeric());
    before && after
}

/// "chỉ số tim ngực 0,58" / "0.58" / "58%" in a folded section.
pub fn cardiothoracic_ratio(folded: &str) -> Option<f64> {
    let at = folded.find("chi so tim nguc")? + "chi so tim nguc".len();
    let rest = folded[at..].trim_start_matches([' ', ':', '=', '~', '≈']);
    let num: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
        .collect();
    let num = num.trim_end_matches(['.', ',']).replace(',', ".");
    let mut v: f64 = num.parse().ok()?;
    if rest[num.len().min(rest.len())..].trim_start().starts_with('%') || v > 1.0 {
        v /= 100.0;
    }
    Some(v)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn labeller() -> Labeller {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let p: Params = serde_json::from_str("{}").unwrap();
        Labeller::load(&p, &|f: &str| root.join(f)).unwrap()
    }

    fn labels(d: &str) -> [bool; 5] {
        match labeller().label(d) {
            Outcome::Decided { labels, .. } => labels,
            Outcome::Review { unexplained } => panic!("{d:?} went to review: {unexplained:?}"),
        }
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

    #[test]
    fn negation_is_not_a_finding() {
        assert_eq!(
            labels("- Không thấy tràn dịch màng phổi.\n- Chưa thấy đám mờ.\n- Không có gãy xương sườn."),
            [false; 5]
        );
        assert_eq!(
            labels("- Không thấy tràn dịch màng phổi, có đám mờ thùy dưới phổi phải."),
            [false, false, true, false, true]
        );
        assert_eq!(
            labels("- Tràn dịch màng phổi phải. Không thấy tràn khí."),
            [false, true, false, false, true]
        );
    }

    #[test]
    fn text_without_diacritics_and_misspellings() {
        assert_eq!(
            labels("- tran dich mang phoi ben phai"),
            [false, true, false, false, true]
        );
        assert_eq!(labels("- Bóng tm to."), [false, false, false, true, true]);
        assert_eq!(labels("- Tràn dch màng phổi trái."), [false, true, false, false, true]);
        assert_eq!(labels("- khong thay tran dich, tran khi mang phoi"), [false; 5]);
    }

    #[test]
    fn abbreviations_expand() {
        assert_eq!(labels("- TDMP phải."), [false, true, false, false, true]);
        assert_eq!(labels("- Không thấy TKMP."), [false; 5]);
    }

    #[test]
    fn cardiothoracic_ratio_as_a_number() {
        assert_eq!(labels("- Chỉ số tim ngực 0,58."), [false, false, false, true, true]);
        assert_eq!(labels("- Chỉ số tim ngực 0,45."), [false; 5]);
        assert_eq!(labels("- Chỉ số tim ngực 55%."), [false, false, false, true, true]);
        assert_eq!(cardiothoracic_ratio("chi so tim nguc: 0.52"), Some(0.52));
    }

    #[test]
    fn separators_and_sections_out_of_order() {
        assert_eq!(
            labels("• Gãy cung sau xương sườn 6 bên phải\n• Màng phổi bình thường"),
            [true, false, false, false, true]
        );
        assert_eq!(
            labels("Bóng tim to; Lồng ngực cân đối"),
            [false, false, false, true, true]
        );
        assert_eq!(
            labels("– Đám mờ thùy dưới phổi phải.\n– Lồng ngực cân đối."),
            [false, false, true, false, true]
        );
    }

    #[test]
    fn support_devices_alone_are_not_abnormal_and_other_findings_are() {
        assert_eq!(
            labels(&format!("{NORMAL}\n- Có hình ảnh catheter tĩnh mạch trung tâm.")),
            [false; 5]
        );
        assert_eq!(
            labels(&format!("{NORMAL}\n- Liềm hơi dưới cơ hoành phải.")),
            [false, false, false, false, true]
        );
    }

    #[test]
    fn unexplained_sections_go_to_review_and_keyword_path_records_why() {
        let l = labeller();
        match l.label(&format!("{NORMAL}\n- Biến dạng lồng ngực kiểu ngực lõm bẩm sinh.")) {
            Outcome::Review { unexplained } => assert_eq!(unexplained, ["bien dang long nguc kieu nguc lom bam sinh"]),
            other => panic!("{other:?}"),
        }
        match l.label("- Tràn dịch màng phổi phải.\n- Bóng tim không to.") {
            Outcome::Decided { by, .. } => {
                assert_eq!(by[1], "keyword:tran dich mang phoi");
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
            l.label("- Không thấy tràn dịch màng phổi ở đáy phổi."),
            Outcome::Decided {
                labels: [false, true, false, false, true],
                ..
            }
        ));
        assert!(matches!(l.label("- TDMP phải."), Outcome::Review { .. }));
    }
}

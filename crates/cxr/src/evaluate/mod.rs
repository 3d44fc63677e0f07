//! `evaluate`: scores trained classifiers on a part of the split, the paper's
//! "Experimental result".
//!
//! Paper: per class and macro-averaged F1, AUC, sensitivity and specificity on the
//! validation set, each with a 95% CI from a non-parametric bootstrap (3,000 replicates,
//! 2.5/97.5 percentiles), ROC curves, and Grad-CAM heatmaps to check that the model looks
//! at the right place. Here:
//! - the inputs name one or more `train` stages (their `history` tables locate the entry
//!   with `config.json` and the checkpoints) and the `split`, `labels` and `images` tables;
//!   several train stages make an ensemble: their probabilities are averaged;
//! - predictions of the chosen checkpoint (`best`, the best validation macro F1, or
//!   `last`) on `part` (default `test`), optionally averaged over test-time
//!   augmentations (`tta`: `hflip`, `shift`);
//! - thresholds: a number (0.5), or `best_f1`: per class the one that maximises F1 on
//!   `threshold_part` (default `validation`);
//! - honest by default: scoring the part that chose the checkpoint (train's validation
//!   part, with `checkpoint: best`) or the thresholds is refused when the pipeline is
//!   checked, since its numbers are optimistic; `score_tuned_part: true` asks for it
//!   (the paper's 7/3 setting) and the report then says so at the top ([`tuned_by`]);
//! - metrics with bootstrap CIs ([`metrics::evaluate`], seeded, parallel), ROC points;
//! - pictures: `roc.png`, `history_<stage>.png` (training curves from each train stage's
//!   history), `gradcam/*.png` for `gradcam` images (per class, the most confident
//!   positives, in turn), and `report.html` linking them.
//!
//! The model-dependent part (loading checkpoints, forward passes, Grad-CAM) is
//! `worker.rs`, compiled only into `pipe-torch`; everything after the probabilities is
//! plain Rust here ([`finish`]) and is tested without LibTorch.

pub mod compare;
pub mod metrics;
pub mod plots;
pub mod report;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::examples::Example;
use pipe_core::stage::{Context, Executor, Resources, Stage};
use pipe_core::table::{ColumnDef, TableBuilder, TableSchema, read_batch};

pub const KIND: &str = "evaluate";
/// Test-time augmentations `tta` may list.
pub const TTA: &[&str] = &["hflip", "shift"];

/// A decision threshold: the same number for every class, or a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Threshold {
    Fixed(f64),
    /// `best_f1`: per class, the threshold with the highest F1 on `threshold_part`.
    Rule(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The part of `split` to evaluate on: one that chose neither the checkpoint nor
    /// the thresholds, unless `score_tuned_part`.
    #[serde(default = "d_part")]
    pub part: String,
    /// `best` (best validation macro F1 during training) or `last`.
    #[serde(default = "d_checkpoint")]
    pub checkpoint: String,
    #[serde(default = "d_threshold")]
    pub threshold: Threshold,
    /// Where `best_f1` thresholds are chosen.
    #[serde(default = "d_threshold_part")]
    pub threshold_part: String,
    /// Score `part` even though it chose the best checkpoint or the `best_f1`
    /// thresholds (the paper's 7/3 setting scores its validation part); the numbers are
    /// optimistic and report.html says so at the top.
    #[serde(default)]
    pub score_tuned_part: bool,
    /// Bootstrap replicates for the 95% intervals (0: no intervals).
    #[serde(default = "d_bootstrap")]
    pub bootstrap: usize,
    /// Seeds the bootstrap resampling.
    #[serde(default)]
    pub seed: u64,
    /// Test-time augmentations averaged with the plain image (subset of [`TTA`]).
    #[serde(default)]
    pub tta: Vec<String>,
    /// Number of Grad-CAM pictures.
    #[serde(default = "d_gradcam")]
    pub gradcam: usize,
    /// Images per forward pass.
    #[serde(default = "d_batch_size")]
    pub batch_size: usize,
    /// The label hierarchy the model was trained with (train's `hierarchy:`): its
    /// outputs are then p(label | parent), and the scores are of the unconditional
    /// p(label) = Π p(node | parent) from the root (Pham et al.).
    #[serde(default)]
    pub hierarchy: Option<String>,
}

/// The part `split` holds out by default.
pub const TEST_PART: &str = "test";

fn d_part() -> String {
    TEST_PART.into()
}
fn d_threshold_part() -> String {
    crate::train::VALIDATION_PART.into()
}
fn d_checkpoint() -> String {
    "best".into()
}
fn d_threshold() -> Threshold {
    Threshold::Fixed(0.5)
}
fn d_bootstrap() -> usize {
    3000
}
fn d_gradcam() -> usize {
    8
}
fn d_batch_size() -> usize {
    32
}

impl Params {
    /// Every problem, one per line (`field: …`), so each points at its own key.
    pub fn check(&self) -> Vec<String> {
        let mut errors: Vec<String> = Vec::new();
        if !["best", "last"].contains(&self.checkpoint.as_str()) {
            errors.push(format!("checkpoint: `{}` is not one of best, last", self.checkpoint));
        }
        match &self.threshold {
            Threshold::Fixed(t) if !(0.0..=1.0).contains(t) => {
                errors.push(format!("threshold: must be within 0..=1 or `best_f1`, got {t}"));
            }
            Threshold::Rule(r) if r != "best_f1" => {
                errors.push(format!("threshold: `{r}` is not a number in 0..=1 or `best_f1`"));
            }
            _ => {}
        }
        if self.part.is_empty() || self.threshold_part.is_empty() {
            errors.push("part: empty part name".into());
        }
        let mut seen = HashSet::new();
        for t in &self.tta {
            if !TTA.contains(&t.as_str()) || !seen.insert(t) {
                errors.push(format!(
                    "tta: `{t}` is unknown or repeated; available: {}",
                    TTA.join(", ")
                ));
            }
        }
        if self.batch_size == 0 {
            errors.push("batch_size: must be at least 1".into());
        }
        let tuned = tuned_by(self);
        if !tuned.is_empty() && !self.score_tuned_part {
            errors.push(format!(
                "part: `{}` {}, so its scores would be optimistic; score a part that did neither \
                 (split into [train, validation, test] and `part: test`), or set \
                 `score_tuned_part: true` to ask for it (report.html then says so at the top)",
                self.part,
                tuned.join(" and ")
            ));
        }
        errors
    }
}

/// What the scored part was used for besides being scored: choosing the checkpoint
/// (train keeps the best macro F1 on its validation part) and tuning the thresholds.
pub fn tuned_by(p: &Params) -> Vec<String> {
    let mut out = Vec::new();
    if p.checkpoint == "best" && p.part == crate::train::VALIDATION_PART {
        out.push("chose the best checkpoint (train's validation part)".to_string());
    }
    if matches!(p.threshold, Threshold::Rule(_)) && p.threshold_part == p.part {
        out.push("tuned the best_f1 thresholds".to_string());
    }
    out
}

pub struct Evaluate;

impl Stage for Evaluate {
    type Params = Params;
    const KIND: &'static str = KIND;
    const VERSION: u32 = 2;
    const ABOUT: &'static str =
        "score trained models (or their ensemble) with bootstrap CIs, ROC, Grad-CAM and report.html (torch worker)";

    fn check(params: &Params) -> Vec<String> {
        params.check()
    }

    fn reads(_: &Params) -> Vec<&'static str> {
        vec!["split", "labels", "images"]
    }

    fn references(p: &Params) -> Vec<pipe_core::stage::Reference> {
        p.hierarchy
            .iter()
            .map(|h| pipe_core::stage::Reference {
                param: "hierarchy".into(),
                path: h.clone(),
            })
            .collect()
    }

    /// A train stage to take checkpoints from, and parts the split makes.
    fn check_inputs(p: &Params, inputs: &[pipe_core::stage::Upstream]) -> Vec<pipe_core::stage::ParamsError> {
        use pipe_core::stage::ParamsError;
        let mut errors = Vec::new();
        if !inputs
            .iter()
            .any(|u| u.kind == crate::train::KIND && u.table.is_none_or(|t| t == "history"))
        {
            errors.push(ParamsError {
                path: String::new(),
                message: "no train stage among the inputs: name the train stage(s) whose checkpoints to evaluate"
                    .into(),
            });
        }
        for u in inputs.iter().filter(|u| u.kind == "split") {
            let parts: Vec<&str> = u.params["parts"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            let mut check = |field: &str, part: &str| {
                if !parts.contains(&part) {
                    errors.push(ParamsError {
                        path: field.into(),
                        message: format!(
                            "{field}: `{part}` is not a part of `{}`, which makes: {}",
                            u.stage,
                            parts.join(", ")
                        ),
                    });
                }
            };
            check("part", &p.part);
            if p.threshold == Threshold::Rule("best_f1".into()) {
                check("threshold_part", &p.threshold_part);
            }
        }
        errors
    }

    fn outputs(_: &Params) -> Vec<String> {
        vec!["predictions".into(), "metrics".into(), "roc".into()]
    }

    fn resources(_: &Params) -> Resources {
        Resources { cpu: 0, gpu: 1 }
    }

    fn executor(_: &Params) -> Executor {
        Executor::TorchWorker
    }

    fn run(_: &Params, _: &Context) -> anyhow::Result<()> {
        bail!("`evaluate` runs in the pipe-torch worker, not in pipe")
    }
}

/// A trained model as its train stage left it.
#[derive(Debug, Clone)]
pub struct Model {
    /// The train stage's name.
    pub stage: String,
    /// Its cache entry (history.parquet, config.json, the checkpoints).
    pub dir: PathBuf,
    pub architecture: String,
    pub loss: String,
    pub image_size: i64,
    pub labels: Vec<String>,
    pub weights: PathBuf,
}

/// The models of the inputs' `history` tables, in input order; all must predict the
/// same labels (an ensemble averages them label by label).
pub fn models(ctx: &Context, checkpoint: &str) -> anyhow::Result<Vec<Model>> {
    let mut out: Vec<Model> = Vec::new();
    for input in ctx.inputs.iter().filter(|i| i.table == "history") {
        let dir = input.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let config_path = dir.join("config.json");
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&config_path)
                .with_context(|| format!("input `{}`: cannot read {}", input.stage, config_path.display()))?,
        )
        .with_context(|| format!("{} is not JSON", config_path.display()))?;
        let train: crate::train::Params = serde_json::from_value(config["params"].clone())
            .with_context(|| format!("{}: params are not a train stage's", config_path.display()))?;
        let weights = dir.join(format!("{checkpoint}.safetensors"));
        ensure!(
            weights.is_file(),
            "input `{}` has no {} checkpoint ({} is missing)",
            input.stage,
            checkpoint,
            weights.display()
        );
        if let Some(first) = out.first() {
            ensure!(
                first.labels == train.labels,
                "ensemble of `{}` and `{}`: they predict different labels ({:?} vs {:?})",
                first.stage,
                input.stage,
                first.labels,
                train.labels
            );
        }
        out.push(Model {
            stage: input.stage.clone(),
            dir,
            architecture: train.architecture,
            loss: train.loss,
            image_size: train.image_size,
            labels: train.labels,
            weights,
        });
    }
    ensure!(
        !out.is_empty(),
        "stage `{}` has no model: name one or more train stages in its inputs",
        ctx.stage
    );
    Ok(out)
}

/// The labelled examples of every part (one join of `split`, `labels` and `images`).
pub fn parts(ctx: &Context, labels: &[String]) -> anyhow::Result<crate::examples::ByPart> {
    crate::examples::examples_by_part(labels, ctx.input("split")?, ctx.input("labels")?, ctx.input("images")?)
}

/// The examples of `part` (sorted by sop_instance_uid), taken out of `by_part`; an
/// absent or empty part is an error naming the parts there are.
pub fn take_part(by_part: &mut crate::examples::ByPart, part: &str) -> anyhow::Result<Vec<Example>> {
    let known: Vec<&String> = by_part.parts.keys().collect();
    match by_part.parts.get(part) {
        Some(v) if !v.is_empty() => Ok(by_part.parts.remove(part).unwrap_or_default()),
        _ => bail!("the split has no labelled images in part `{part}` (parts present: {known:?})"),
    }
}

/// Per-class thresholds: the fixed number, or the best-F1 threshold of each class on
/// `(probs, truth)` of the threshold part.
pub fn thresholds(rule: &Threshold, probs: &[Vec<f64>], truth: &[Vec<bool>]) -> Vec<f64> {
    match rule {
        Threshold::Fixed(t) => vec![*t; probs.len()],
        Threshold::Rule(_) => probs
            .iter()
            .zip(truth)
            .map(|(p, y)| metrics::best_f1_threshold(p, y))
            .collect(),
    }
}

/// Truth of `examples` per class: `[class][example]`.
pub fn truth(examples: &[Example], classes: usize) -> Vec<Vec<bool>> {
    (0..classes)
        .map(|c| examples.iter().map(|e| e.targets[c] > 0.5).collect())
        .collect()
}

/// Which images get a Grad-CAM picture: per class in turn, the positive images with the
/// highest probability not yet chosen (so every class with positives is shown), then
/// anything left by probability. Returns (example index, class).
pub fn gradcam_picks(probs: &[Vec<f64>], truth: &[Vec<bool>], n: usize) -> Vec<(usize, usize)> {
    let ranked = (0..probs.len())
        .map(|c| ranked(&probs[c], |i| truth[c][i], true))
        .collect();
    round_robin(ranked, n)
}

/// The images `keep` selects, most probable first (`descending`) or least probable
/// first; ties by index.
fn ranked(probs: &[f64], keep: impl Fn(usize) -> bool, descending: bool) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..probs.len()).filter(|&i| keep(i)).collect();
    idx.sort_by(|&a, &b| {
        let order = probs[a].total_cmp(&probs[b]);
        (if descending { order.reverse() } else { order }).then(a.cmp(&b))
    });
    idx
}

/// Up to `n` (image, class) picks, one class after the other, each class taking its
/// next image not chosen yet.
fn round_robin(mut ranked: Vec<Vec<usize>>, n: usize) -> Vec<(usize, usize)> {
    let mut chosen = HashSet::new();
    let mut out = Vec::new();
    while out.len() < n && ranked.iter().any(|r| !r.is_empty()) {
        for (c, r) in ranked.iter_mut().enumerate() {
            while let Some(i) = (!r.is_empty()).then(|| r.remove(0)) {
                if chosen.insert(i) {
                    out.push((i, c));
                    break;
                }
            }
            if out.len() == n {
                break;
            }
        }
    }
    out
}

/// What a Grad-CAM picture shows: where the model looked when it was right, or when it
/// was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CamGroup {
    /// The most confident positives (the paper's pictures).
    Positive,
    /// Negatives called positive, the most confident first.
    FalsePositive,
    /// Positives missed, the lowest probability first.
    FalseNegative,
}

impl CamGroup {
    /// The folder of its pictures (report.html heads each folder's gallery).
    pub fn folder(self) -> &'static str {
        match self {
            CamGroup::Positive => "gradcam",
            CamGroup::FalsePositive => "false_positives",
            CamGroup::FalseNegative => "false_negatives",
        }
    }
}

/// Every Grad-CAM to draw: `n` confident positives ([`gradcam_picks`]), then up to `n`
/// false positives and `n` false negatives at the classes' thresholds, classes in turn.
pub fn cam_picks(
    probs: &[Vec<f64>],
    truth: &[Vec<bool>],
    thresholds: &[f64],
    n: usize,
) -> Vec<(usize, usize, CamGroup)> {
    let classes = probs.len();
    let fp = (0..classes)
        .map(|c| ranked(&probs[c], |i| !truth[c][i] && probs[c][i] >= thresholds[c], true))
        .collect();
    let fn_ = (0..classes)
        .map(|c| ranked(&probs[c], |i| truth[c][i] && probs[c][i] < thresholds[c], false))
        .collect();
    let tag = |picks: Vec<(usize, usize)>, g: CamGroup| picks.into_iter().map(move |(i, c)| (i, c, g));
    tag(gradcam_picks(probs, truth, n), CamGroup::Positive)
        .chain(tag(round_robin(fp, n), CamGroup::FalsePositive))
        .chain(tag(round_robin(fn_, n), CamGroup::FalseNegative))
        .collect()
}

/// One Grad-CAM map from the worker.
#[derive(Debug, Clone)]
pub struct Cam {
    /// Index into the evaluated examples.
    pub example: usize,
    pub class: usize,
    pub group: CamGroup,
    pub width: usize,
    pub height: usize,
    /// Row-major, ≥ 0 (ReLU of the weighted feature maps), not normalised.
    pub values: Vec<f32>,
}

fn predictions_schema(labels: &[String]) -> TableSchema {
    let mut s = crate::schema!("evaluate/predictions");
    for l in labels {
        let col = |name: String, data_type: &str, description: String| ColumnDef {
            name,
            data_type: data_type.into(),
            nullable: false,
            description,
        };
        s.columns
            .push(col(l.clone(), "bool", format!("Truth of `{l}` (labels table).")));
        s.columns.push(col(
            format!("{l}_prob"),
            "float64",
            format!("Predicted probability of `{l}` (mean over the models and test-time augmentations)."),
        ));
        s.columns.push(col(
            format!("{l}_pred"),
            "bool",
            format!("`{l}_prob` >= the class threshold of the metrics table."),
        ));
    }
    s
}

/// What the worker hands to [`finish`]: the scored part and the Grad-CAMs.
/// `probs[c][i]` is the probability of class `c` for `examples[i]`.
pub struct Scored<'a> {
    pub examples: &'a [Example],
    pub probs: &'a [Vec<f64>],
    pub thresholds: &'a [f64],
    pub cams: &'a [Cam],
    /// Every part of the split ([`split_table`]), taken before the scored part was.
    pub split: &'a report::SplitTable,
}

/// The paper's Table 2 from the joined examples of every part: patients, images and
/// positives per label, parts in the split's order, then `all`.
pub fn split_table(by_part: &crate::examples::ByPart, labels: &[String]) -> report::SplitTable {
    let mut t = report::SplitTable {
        positives: labels.iter().map(|l| (l.clone(), Vec::new())).collect(),
        ..Default::default()
    };
    let mut all_patients = HashSet::new();
    let mut all_positives = vec![0u64; labels.len()];
    // The usual parts in the order they are made and used, then any others by name.
    let usual = |p: &str| {
        ["train", crate::train::VALIDATION_PART, TEST_PART]
            .iter()
            .position(|u| *u == p)
    };
    let mut parts: Vec<(&String, &Vec<Example>)> = by_part.parts.iter().collect();
    parts.sort_by_key(|(p, _)| (usual(p).unwrap_or(usize::MAX), p.as_str()));
    for (part, examples) in parts {
        let patients: HashSet<&str> = examples.iter().map(|e| e.patient_id.as_str()).collect();
        all_patients.extend(patients.iter().copied());
        t.parts.push(part.clone());
        t.patients.push(patients.len() as u64);
        t.images.push(examples.len() as u64);
        for (c, (_, positives)) in t.positives.iter_mut().enumerate() {
            let n = examples.iter().filter(|e| e.targets[c] > 0.5).count() as u64;
            positives.push(n);
            all_positives[c] += n;
        }
    }
    t.parts.push("all".into());
    t.patients.push(all_patients.len() as u64);
    t.images.push(t.images.iter().sum());
    for ((_, positives), n) in t.positives.iter_mut().zip(all_positives) {
        positives.push(n);
    }
    t
}

/// Rows of a Parquet table, from its footer.
fn rows_of(path: &Path) -> anyhow::Result<u64> {
    Ok(pipe_core::table::footer(path)?.0)
}

/// The dataset funnel from whichever tables the inputs give: collect's `dicoms` (and
/// its `rejects`), filter's `kept`, match's `pairs`, then the `labels` and `images`
/// every evaluate reads, and the split's parts.
pub fn funnel(ctx: &Context, split: &report::SplitTable) -> anyhow::Result<Vec<report::FunnelStep>> {
    let mut out = Vec::new();
    let source = |i: &pipe_core::stage::InputTable| format!("{}.{}", i.stage, i.table);
    let find = |table: &str| ctx.inputs.iter().find(|i| i.table == table);
    if let Some(dicoms) = find("dicoms") {
        let readable = rows_of(&dicoms.path)?;
        // collect's rejects: the PACS files it could not use (convert's are elsewhere).
        if let Some(rejects) = ctx
            .inputs
            .iter()
            .find(|i| i.table == "rejects" && i.stage == dicoms.stage)
        {
            out.push(report::FunnelStep {
                step: "PACS files".into(),
                count: readable + rows_of(&rejects.path)?,
                source: format!("{} + {}", source(dicoms), source(rejects)),
            });
        }
        out.push(report::FunnelStep {
            step: "readable DICOM".into(),
            count: readable,
            source: source(dicoms),
        });
    }
    for (table, step) in [
        ("kept", "PA chest"),
        ("pairs", "matched to a report"),
        ("labels", "labelled"),
        ("images", "converted images"),
    ] {
        if let Some(i) = find(table) {
            out.push(report::FunnelStep {
                step: step.into(),
                count: rows_of(&i.path)?,
                source: source(i),
            });
        }
    }
    let split_source = find("split").map(source).unwrap_or_default();
    if let Some(&all) = split.images.last() {
        out.push(report::FunnelStep {
            step: "in the split (labelled, with an image)".into(),
            count: all,
            source: split_source.clone(),
        });
    }
    for (part, &n) in split.parts.iter().zip(&split.images).filter(|(p, _)| *p != "all") {
        out.push(report::FunnelStep {
            step: format!("part {part}"),
            count: n,
            source: split_source.clone(),
        });
    }
    Ok(out)
}

/// The report's description of each image, when match's `pairs` is among the inputs.
fn descriptions(ctx: &Context) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let Some(pairs) = ctx.inputs.iter().find(|i| i.table == "pairs") else {
        return Ok(Default::default());
    };
    let b = read_batch(&pairs.path)?;
    let (sop, description) = (
        pipe_core::table::str_col(&b, "sop_instance_uid")?,
        pipe_core::table::str_col(&b, "description")?,
    );
    Ok((0..b.num_rows())
        .map(|i| (sop.value(i).to_string(), description.value(i).to_string()))
        .collect())
}

/// `text` cut to `max` characters at most, with "…" when cut.
fn shorten(text: &str, max: usize) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// Where the numbers come from: pipe's version, the date, this stage's key and params,
/// and per input table its rows, content hash and the key of the entry holding it (read
/// from that entry's manifest).
fn provenance(ctx: &Context, p: &Params, models: &[Model]) -> Vec<(String, String)> {
    let mut out = vec![
        ("pipe version".to_string(), pipe_core::VERSION.to_string()),
        (
            "report written".to_string(),
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        ),
        ("stage".to_string(), format!("{} (kind {KIND})", ctx.stage)),
        ("cache key".to_string(), ctx.meta.key.clone()),
    ];
    let manifest = |dir: &Path| -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(dir.join(pipe_core::cache::store::MANIFEST)).ok()?).ok()
    };
    for input in &ctx.inputs {
        let dir = input.path.parent().unwrap_or(Path::new("."));
        let m = manifest(dir);
        let field =
            |f: &dyn Fn(&serde_json::Value) -> Option<String>| m.as_ref().and_then(f).unwrap_or_else(|| "?".into());
        let content = field(&|m| {
            m["files"][format!("{}.parquet", input.table)]["blake3"]
                .as_str()
                .map(String::from)
        });
        let key = field(&|m| m["key"].as_str().map(String::from));
        let rows = field(&|m| m["tables"][&input.table].as_u64().map(|n| n.to_string()));
        out.push((
            format!("input {}.{}", input.stage, input.table),
            format!("{rows} rows, content {content}, entry {key}"),
        ));
    }
    for model in models {
        let m = manifest(&model.dir);
        let key = m.as_ref().and_then(|m| m["key"].as_str().map(String::from));
        out.push((
            format!("model {}", model.stage),
            format!(
                "{} {} px, loss {}, {} checkpoint, entry {}",
                model.architecture,
                model.image_size,
                model.loss,
                p.checkpoint,
                key.unwrap_or_else(|| "?".into())
            ),
        ));
    }
    let params = serde_json::from_str::<serde_json::Value>(&ctx.meta.params)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| ctx.meta.params.clone());
    out.push(("params".to_string(), params));
    out
}

/// Everything after the forward passes: the tables, the pictures and `report.html`.
pub fn finish(ctx: &Context, p: &Params, models: &[Model], scored: &Scored<'_>) -> anyhow::Result<()> {
    let Scored {
        examples,
        probs,
        thresholds,
        cams,
        split,
    } = *scored;
    let labels = &models[0].labels;
    let classes = labels.len();
    let truth = truth(examples, classes);

    // predictions
    let schema = predictions_schema(labels);
    let mut b = TableBuilder::new(&schema);
    for (i, e) in examples.iter().enumerate() {
        // Relative to the cache: same key, same bytes, wherever the cache lives.
        let image = e.image.strip_prefix(&ctx.cache_dir).unwrap_or(&e.image);
        b.str("sop_instance_uid", Some(&e.sop_instance_uid))
            .str("patient_id", Some(&e.patient_id))
            .str("image", Some(&image.to_string_lossy()))
            .str("part", Some(&p.part));
        for c in 0..classes {
            let l = &labels[c];
            b.bool(l, Some(truth[c][i]))
                .f64(&format!("{l}_prob"), Some(probs[c][i]))
                .bool(&format!("{l}_pred"), Some(probs[c][i] >= thresholds[c]));
        }
    }
    let mut w = ctx.writer("predictions", &schema)?;
    w.write(&b.finish()?)?;
    w.finish()?;

    // metrics, with average precision and calibration beside the paper's
    let t = std::time::Instant::now();
    let m = metrics::evaluate(labels, probs, &truth, thresholds, p.bootstrap, p.seed, ctx.threads);
    ctx.log(format!(
        "{} bootstrap replicates of {} images in {:.2} s",
        p.bootstrap,
        examples.len(),
        t.elapsed().as_secs_f64()
    ));
    let mut ap: Vec<Option<f64>> = (0..classes)
        .map(|c| metrics::average_precision(&probs[c], &truth[c]))
        .collect();
    let calibration: Vec<(Vec<metrics::CalibrationBin>, f64)> = (0..classes)
        .map(|c| metrics::calibration(&probs[c], &truth[c], 10))
        .collect();
    let mut ece: Vec<f64> = calibration.iter().map(|(_, e)| *e).collect();
    // The macro row: means over the classes (AP only when every class has one).
    ap.push(ap.iter().copied().sum::<Option<f64>>().map(|s| s / classes as f64));
    ece.push(ece.iter().sum::<f64>() / classes as f64);
    let nan_null = |x: f64| (!x.is_nan()).then_some(x);
    let schema = crate::schema!("evaluate/metrics");
    let mut b = TableBuilder::new(&schema);
    for (e, cm) in m.iter().enumerate() {
        b.str("label", Some(&cm.label))
            .f64("threshold", cm.threshold)
            .i64("support", Some(cm.support as i64))
            .i64("positives", Some(cm.positives as i64))
            .i64("bootstrap", Some(p.bootstrap as i64))
            .i64("auc_replicates", Some(cm.auc_replicates as i64));
        let auc = cm.auc;
        b.f64("auc", auc.map(|a| a.value))
            .f64("auc_low", auc.and_then(|a| nan_null(a.low)))
            .f64("auc_high", auc.and_then(|a| nan_null(a.high)));
        for (name, v) in [
            ("f1", cm.f1),
            ("sensitivity", cm.sensitivity),
            ("specificity", cm.specificity),
            ("precision", cm.precision),
            ("accuracy", cm.accuracy),
        ] {
            b.f64(name, Some(v.value))
                .f64(&format!("{name}_low"), nan_null(v.low))
                .f64(&format!("{name}_high"), nan_null(v.high));
        }
        b.f64("average_precision", ap[e]).f64("ece", nan_null(ece[e]));
    }
    let mut w = ctx.writer("metrics", &schema)?;
    w.write(&b.finish()?)?;
    w.finish()?;

    // roc points and picture
    let schema = crate::schema!("evaluate/roc");
    let mut b = TableBuilder::new(&schema);
    let mut curves = Vec::new();
    for c in 0..classes {
        let points = metrics::roc_curve(&probs[c], &truth[c]);
        for &(fpr, tpr, thr) in &points {
            b.str("label", Some(&labels[c]))
                .f64("fpr", Some(fpr))
                .f64("tpr", Some(tpr))
                .f64("threshold", Some(thr));
        }
        let auc = m[c].auc;
        curves.push(plots::Curve {
            label: labels[c].clone(),
            points: points
                .iter()
                .filter(|(f, t, _)| f.is_finite() && t.is_finite())
                .map(|&(f, t, _)| (f, t))
                .collect(),
            auc: auc.map(|a| a.value),
            auc_ci: auc.filter(|a| !a.low.is_nan()).map(|a| (a.low, a.high)),
        });
    }
    let mut w = ctx.writer("roc", &schema)?;
    w.write(&b.finish()?)?;
    w.finish()?;
    let what = if models.len() == 1 {
        format!("model {} ({})", models[0].stage, models[0].architecture)
    } else {
        format!(
            "ensemble of {}",
            models.iter().map(|m| m.stage.clone()).collect::<Vec<_>>().join(", ")
        )
    };
    let out = &ctx.out_dir;
    let on = format!("on {} ({} images)", p.part, examples.len());
    plots::roc_png(&out.join("roc.png"), &format!("ROC {on}, {what}"), &curves)?;
    let pr: Vec<plots::PrCurve> = (0..classes)
        .map(|c| plots::PrCurve {
            label: labels[c].clone(),
            points: metrics::pr_curve(&probs[c], &truth[c])
                .iter()
                .map(|&(r, p, _)| (r, p))
                .collect(),
            average_precision: ap[c],
            prevalence: truth[c].iter().filter(|&&t| t).count() as f64 / examples.len().max(1) as f64,
        })
        .collect();
    plots::pr_png(&out.join("pr.png"), &format!("Precision–recall {on}"), &pr)?;
    let reliability: Vec<plots::Reliability> = (0..classes)
        .map(|c| plots::Reliability {
            label: labels[c].clone(),
            points: calibration[c]
                .0
                .iter()
                .filter(|b| b.count > 0)
                .map(|b| (b.mean_probability, b.positive_rate))
                .collect(),
            ece: ece[c],
        })
        .collect();
    plots::calibration_png(&out.join("calibration.png"), &format!("Reliability {on}"), &reliability)?;
    let mut pictures = vec![
        (
            "roc.png".to_string(),
            "ROC curves per class (95% bootstrap CI of the AUC)".to_string(),
        ),
        (
            "pr.png".to_string(),
            "Precision–recall curves per class with average precision; a classifier that guesses has AP = the share of positives".to_string(),
        ),
        (
            "calibration.png".to_string(),
            "Reliability diagram: share of positives against the mean predicted probability in 10 equal-width bins; ECE = the bins' mean gap, weighted by their size".to_string(),
        ),
    ];

    // Grad-CAM, captioned with the report's description where match's pairs are given
    let described = descriptions(ctx)?;
    let mut numbered = std::collections::HashMap::new();
    for cam in cams {
        let e = &examples[cam.example];
        let image = crate::pixels::load_gray(&e.image)?;
        let l = &labels[cam.class];
        let mut caption = format!(
            "{}: {l} p={:.2}, threshold {:.2}, label {}",
            e.sop_instance_uid,
            probs[cam.class][cam.example],
            thresholds[cam.class],
            u8::from(truth[cam.class][cam.example])
        );
        if let Some(d) = described.get(&e.sop_instance_uid) {
            caption.push_str(&format!(" — “{}”", shorten(d, 240)));
        }
        let k = numbered.entry(cam.group.folder()).or_insert(0usize);
        let name = format!("{}/{k:02}_{l}.png", cam.group.folder());
        *k += 1;
        std::fs::create_dir_all(out.join(cam.group.folder()))?;
        plots::heatmap_png(&out.join(&name), &image, &cam.values, cam.width, cam.height, &caption)?;
        pictures.push((name, caption));
    }

    // training curves
    for model in models {
        let (points, best) = history_points(&model.dir.join("history.parquet"))?;
        let name = format!("history_{}.png", model.stage);
        plots::history_png(
            &out.join(&name),
            &format!(
                "training of {} ({}, loss {}; validation loss is BCE)",
                model.stage, model.architecture, model.loss
            ),
            &points,
            best,
        )?;
        pictures.push((name, format!("training curves of {}", model.stage)));
    }

    // report.html
    let rows = m
        .iter()
        .enumerate()
        .map(|(e, cm)| {
            let t = |v: metrics::Metric| (v.value, v.low, v.high);
            report::Row {
                label: cm.label.clone(),
                threshold: cm.threshold,
                auc: cm.auc.map(t),
                f1: t(cm.f1),
                sensitivity: t(cm.sensitivity),
                specificity: t(cm.specificity),
                precision: t(cm.precision),
                accuracy: t(cm.accuracy),
                average_precision: ap[e],
                ece: ece[e],
                support: cm.support,
                positives: cm.positives,
            }
        })
        .collect();
    let confusion = (0..classes)
        .map(|c| {
            let k = metrics::Confusion::from(&probs[c], &truth[c], thresholds[c]);
            report::ConfusionMatrix {
                label: labels[c].clone(),
                threshold: thresholds[c],
                tp: k.tp,
                fp: k.fp,
                tn: k.tn,
                fn_: k.fn_,
            }
        })
        .collect();
    let threshold_rule = match &p.threshold {
        Threshold::Fixed(t) => format!("threshold {t} for every class"),
        Threshold::Rule(_) => format!("per-class thresholds maximising F1 on the `{}` part", p.threshold_part),
    };
    let tuned = tuned_by(p);
    let warnings = if tuned.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "Optimistic numbers: the scored part `{}` also {}. They overstate what the model \
             will do on new patients; this was asked for with score_tuned_part: true.",
            p.part,
            tuned.join(" and ")
        )]
    };
    let html = report::report_html(&report::Report {
        title: format!("{}: {what}", ctx.stage),
        subtitle: format!(
            "{} images of the {} part, {} checkpoint",
            examples.len(),
            p.part,
            p.checkpoint
        ),
        warnings,
        funnel: funnel(ctx, split)?,
        split: Some(split.clone()),
        rows,
        confusion,
        images: pictures,
        provenance: provenance(ctx, p, models),
        notes: vec![
            format!(
                "95% intervals: non-parametric bootstrap, {} replicates (2.5/97.5 percentiles), seed {}",
                p.bootstrap, p.seed
            ),
            threshold_rule,
            if p.tta.is_empty() {
                "no test-time augmentation".to_string()
            } else {
                format!(
                    "test-time augmentation: mean over the plain image and {}",
                    p.tta.join(", ")
                )
            },
            "Grad-CAM of the first model: the most confident positives per class, then the \
             most confident false positives and the most missed false negatives at the \
             thresholds"
                .to_string(),
        ],
    });
    std::fs::write(out.join("report.html"), html)?;
    Ok(())
}

/// A train stage's history as plot points, and the step of its best checkpoint.
fn history_points(path: &Path) -> anyhow::Result<(Vec<plots::HistoryPoint>, Option<i64>)> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};
    let h = read_batch(path)?;
    let col = |n: &str| {
        h.column_by_name(n)
            .with_context(|| format!("{}: no column `{n}`", path.display()))
    };
    let step = col("step")?.as_primitive::<Int64Type>();
    let (tl, vl, f1, auc) = (
        col("train_loss")?.as_primitive::<Float64Type>(),
        col("val_loss")?.as_primitive::<Float64Type>(),
        col("val_macro_f1")?.as_primitive::<Float64Type>(),
        col("val_macro_auc")?.as_primitive::<Float64Type>(),
    );
    let best = col("best")?.as_boolean();
    let opt = |a: &arrow::array::Float64Array, i: usize| a.is_valid(i).then(|| a.value(i));
    let mut points = Vec::new();
    let mut best_step = None;
    for i in 0..h.num_rows() {
        points.push(plots::HistoryPoint {
            step: step.value(i),
            train_loss: opt(tl, i),
            val_loss: vl.value(i),
            val_macro_f1: f1.value(i),
            val_macro_auc: opt(auc, i),
        });
        if best.value(i) {
            best_step = Some(step.value(i));
        }
    }
    Ok((points, best_step))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepare(yaml: &str) -> Result<pipe_core::stage::Prepared, pipe_core::stage::ParamsError> {
        use pipe_core::stage::{Kind, KindOf};
        KindOf::<Evaluate>(std::marker::PhantomData)
            .prepare(&serde_yaml::from_str(yaml).unwrap())
            .map_err(|mut all| all.remove(0))
    }

    #[test]
    fn params_defaults_and_errors() {
        let p = prepare("{}").unwrap();
        assert_eq!(p.params["threshold"], serde_json::json!(0.5));
        assert_eq!(p.params["bootstrap"], serde_json::json!(3000));
        assert_eq!(p.params["part"], serde_json::json!("test"));
        assert_eq!(p.params["threshold_part"], serde_json::json!("validation"));
        assert_eq!(p.params["score_tuned_part"], serde_json::json!(false));
        let p = prepare("{threshold: best_f1, tta: [hflip, shift]}").unwrap();
        assert_eq!(p.params["threshold"], serde_json::json!("best_f1"));
        for (yaml, want) in [
            ("{threshold: 1.5}", "within 0..=1"),
            ("{threshold: best}", "`best` is not a number"),
            ("{tta: [rotate]}", "available: hflip, shift"),
            ("{checkpoint: first}", "best, last"),
            ("{bootstraps: 3}", "unknown field"),
            // The part that chose the checkpoint, or tuned the thresholds, is not scored
            // unless asked.
            ("{part: validation}", "`validation` chose the best checkpoint"),
            (
                "{part: validation, checkpoint: last, threshold: best_f1}",
                "`validation` tuned the best_f1 thresholds",
            ),
            (
                "{part: test, threshold: best_f1, threshold_part: test}",
                "`test` tuned the best_f1 thresholds",
            ),
        ] {
            let e = prepare(yaml).unwrap_err();
            assert!(e.message.contains(want), "{yaml}: {}", e.message);
        }
    }

    #[test]
    fn scoring_a_tuned_part_only_when_asked() {
        let p = prepare("{part: validation, threshold: best_f1, score_tuned_part: true}").unwrap();
        let p: Params = serde_json::from_value(p.params).unwrap();
        assert_eq!(
            tuned_by(&p),
            [
                "chose the best checkpoint (train's validation part)",
                "tuned the best_f1 thresholds"
            ]
        );
        // Held out from both: nothing to say.
        let p = prepare("{part: test, threshold: best_f1}").unwrap();
        let p: Params = serde_json::from_value(p.params).unwrap();
        assert!(tuned_by(&p).is_empty());
        // The last checkpoint with a fixed threshold tunes nothing on validation.
        assert!(prepare("{part: validation, checkpoint: last}").is_ok());
    }

    #[test]
    fn gradcam_picks_take_each_class_in_turn() {
        let probs = vec![vec![0.9, 0.8, 0.1, 0.7], vec![0.2, 0.95, 0.6, 0.1]];
        let truth = vec![vec![true, true, false, true], vec![false, true, true, false]];
        // Class 0's best positive is 0, class 1's is 1, then class 0's next new one (3),
        // then class 1's next (2).
        assert_eq!(gradcam_picks(&probs, &truth, 3), vec![(0, 0), (1, 1), (3, 0)]);
        assert_eq!(gradcam_picks(&probs, &truth, 10), vec![(0, 0), (1, 1), (3, 0), (2, 1)]);
        assert!(gradcam_picks(&probs, &truth, 0).is_empty());
    }

    /// `finish` on hand-made probabilities: the tables hold exactly what the metrics
    /// functions say, the pictures and report are written and linked.
    #[test]
    fn finish_writes_tables_pictures_and_report() {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::Float64Type;
        use pipe_core::stage::InputTable;
        let dir = tempfile::tempdir().unwrap();
        let (model_dir, out) = (dir.path().join("train"), dir.path().join("out"));
        std::fs::create_dir_all(&model_dir).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        // A two-row history for the training-curve picture.
        let hs = crate::train::history_schema();
        let mut h = TableBuilder::new(&hs);
        for (step, best) in [(10, true), (20, false)] {
            h.i64("step", Some(step))
                .i64("epoch", Some(0))
                .f64("lr", Some(1e-3))
                .f64("train_loss", Some(0.5))
                .f64("val_loss", Some(0.4))
                .f64("val_macro_f1", Some(0.6))
                .f64("val_macro_auc", Some(0.8))
                .str("val_auc", Some("{}"))
                .str("val_f1", Some("{}"))
                .bool("best", Some(best));
        }
        let meta = pipe_core::table::TableMeta::default();
        pipe_core::table::write_table(&model_dir.join("history.parquet"), &hs, &meta, &[h.finish().unwrap()]).unwrap();
        let ss = crate::schema!("split/split");
        let mut sp = TableBuilder::new(&ss);
        for i in 0..6 {
            sp.str("sop_instance_uid", Some(&format!("1.{i}")))
                .str("patient_id", Some(&format!("P{i}")))
                .str("image", Some("x.png"))
                .str("part", Some("validation"));
        }
        pipe_core::table::write_table(&dir.path().join("split.parquet"), &ss, &meta, &[sp.finish().unwrap()]).unwrap();
        // Seven labelled images, one without an image: the funnel counts the table.
        let ls = pipe_core::table::TableSchema::parse(
            "labels",
            "table: labels\ncolumns:\n  - {name: sop_instance_uid, type: utf8}\n",
        )
        .unwrap();
        let mut lb = TableBuilder::new(&ls);
        for i in 0..7 {
            lb.str("sop_instance_uid", Some(&format!("1.{i}")));
        }
        pipe_core::table::write_table(&dir.path().join("labels.parquet"), &ls, &meta, &[lb.finish().unwrap()]).unwrap();
        let ctx = Context {
            stage: "evaluate".into(),
            root: dir.path().into(),
            cache_dir: dir.path().into(),
            out_dir: out.clone(),
            inputs: vec![
                InputTable {
                    stage: "split".into(),
                    table: "split".into(),
                    path: dir.path().join("split.parquet"),
                },
                InputTable {
                    stage: "labels".into(),
                    table: "labels".into(),
                    path: dir.path().join("labels.parquet"),
                },
            ],
            previous: None,
            shard: None,
            threads: 2,
            device: pipe_core::stage::Device::Cpu,
            progress: pipe_core::progress::Progress::hidden(),
            meta,
            counters: Default::default(),
            log: Default::default(),
            unreadable: Default::default(),
        };
        let labels = vec!["cardiac".to_string(), "pleura".to_string()];
        let examples: Vec<Example> = (0..6)
            .map(|i| Example {
                sop_instance_uid: format!("1.{i}"),
                patient_id: format!("P{i}"),
                image: format!("img/{i}.png").into(),
                targets: vec![f32::from(i % 2 == 0), f32::from(i < 3)],
                uncertain: vec![false; 2],
            })
            .collect();
        let probs = vec![vec![0.9, 0.2, 0.7, 0.6, 0.8, 0.1], vec![0.8, 0.7, 0.4, 0.3, 0.55, 0.2]];
        let model = Model {
            stage: "train".into(),
            dir: model_dir,
            architecture: "tiny".into(),
            loss: "asl".into(),
            image_size: 64,
            labels: labels.clone(),
            weights: "best.safetensors".into(),
        };
        let p: Params = serde_json::from_value(prepare("{bootstrap: 200, seed: 3}").unwrap().params).unwrap();
        let mut by_part = crate::examples::ByPart::default();
        by_part.parts.insert("test".into(), examples.clone());
        by_part.parts.insert("train".into(), examples[..2].to_vec());
        let split = split_table(&by_part, &labels);
        assert_eq!(split.parts, ["train", "test", "all"]);
        assert_eq!(
            (split.images.clone(), split.patients.clone()),
            (vec![2, 6, 8], vec![2, 6, 6])
        );
        assert_eq!(split.positives[0], ("cardiac".to_string(), vec![1, 3, 4]));
        let scored = Scored {
            examples: &examples,
            probs: &probs,
            thresholds: &[0.5, 0.5],
            cams: &[],
            split: &split,
        };
        finish(&ctx, &p, std::slice::from_ref(&model), &scored).unwrap();

        let pred = read_batch(&out.join("predictions.parquet")).unwrap();
        let names: Vec<String> = pred.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(
            names,
            [
                "sop_instance_uid",
                "patient_id",
                "image",
                "part",
                "cardiac",
                "cardiac_prob",
                "cardiac_pred",
                "pleura",
                "pleura_prob",
                "pleura_pred"
            ]
        );
        let pred_col = pred.column_by_name("pleura_pred").unwrap().as_boolean();
        assert_eq!(
            (0..6).map(|i| pred_col.value(i)).collect::<Vec<_>>(),
            [true, true, false, false, true, false]
        );
        assert_eq!(
            pred.column_by_name("patient_id").unwrap().as_string::<i32>().value(4),
            "P4"
        );

        let m = read_batch(&out.join("metrics.parquet")).unwrap();
        let truth = truth(&examples, 2);
        let want = metrics::evaluate(&labels, &probs, &truth, &[0.5, 0.5], 200, 3, 1);
        let col = |c: &str| m.column_by_name(c).unwrap().as_primitive::<Float64Type>().clone();
        let (auc, f1_low) = (col("auc"), col("f1_low"));
        assert_eq!(m.num_rows(), 3);
        for (i, w) in want.iter().enumerate() {
            assert_eq!(m.column_by_name("label").unwrap().as_string::<i32>().value(i), w.label);
            assert_eq!(auc.is_valid(i).then(|| auc.value(i)), w.auc.map(|a| a.value));
            assert_eq!(f1_low.value(i), w.f1.low);
        }
        // cardiac: positives 0.9, 0.7, 0.8 all above the negatives 0.2, 0.6, 0.1.
        assert_eq!(auc.value(0), 1.0);

        // Average precision and ECE beside the paper's metrics, macro = their mean.
        let (ap, ece) = (col("average_precision"), col("ece"));
        for c in 0..2 {
            assert_eq!(ap.value(c), metrics::average_precision(&probs[c], &truth[c]).unwrap());
            assert_eq!(ece.value(c), metrics::calibration(&probs[c], &truth[c], 10).1);
        }
        assert!((ap.value(2) - (ap.value(0) + ap.value(1)) / 2.0).abs() < 1e-15);
        assert_eq!(ap.value(0), 1.0, "cardiac is perfectly ranked");

        let roc = read_batch(&out.join("roc.parquet")).unwrap();
        assert_eq!(roc.num_rows(), 2 * 7);
        let html = std::fs::read_to_string(out.join("report.html")).unwrap();
        for needle in [
            "roc.png",
            "pr.png",
            "calibration.png",
            "history_train.png",
            "cardiac",
            "pleura",
            "200 replicates",
            "<h2 id=\"funnel\">",
            "<td>labelled <span class=\"source\">labels.labels</span></td><td>7</td>",
            "<td>part test <span class=\"source\">split.split</span></td><td>6</td>",
            "<h2 id=\"split\">",
            "<h2 id=\"confusion\">",
            "<h2 id=\"provenance\">",
            "<td>input split.split</td>",
        ] {
            assert!(html.contains(needle), "report.html lacks {needle}");
        }
        assert!(!html.contains("class=\"warning\""), "the test part is held out");
        for f in ["roc.png", "pr.png", "calibration.png", "history_train.png"] {
            assert!(std::fs::metadata(out.join(f)).unwrap().len() > 1000, "{f}");
        }

        // Scoring the validation part, asked for: the report says so first.
        for f in std::fs::read_dir(&out).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                std::fs::remove_file(f).unwrap();
            }
        }
        let p: Params = serde_json::from_value(
            prepare("{part: validation, score_tuned_part: true, bootstrap: 0}")
                .unwrap()
                .params,
        )
        .unwrap();
        finish(&ctx, &p, &[model], &scored).unwrap();
        let html = std::fs::read_to_string(out.join("report.html")).unwrap();
        let warning = html.find("class=\"warning\"").expect("a warning");
        assert!(warning < html.find("<h2").unwrap());
        assert!(html.contains("the scored part `validation` also chose the best checkpoint"));
    }

    #[test]
    fn thresholds_fixed_or_best_f1() {
        let probs = vec![vec![0.9, 0.4, 0.35, 0.1]];
        let truth = vec![vec![true, true, false, false]];
        assert_eq!(thresholds(&Threshold::Fixed(0.5), &probs, &truth), vec![0.5]);
        assert_eq!(
            thresholds(&Threshold::Rule("best_f1".into()), &probs, &truth),
            vec![0.4]
        );
    }
}

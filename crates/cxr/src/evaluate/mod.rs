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
//!   `last`) on `part` (default `validation`), optionally averaged over test-time
//!   augmentations (`tta`: `hflip`, `shift`);
//! - thresholds: a number (0.5), or `best_f1`: per class the one that maximises F1 on
//!   `threshold_part` (default `validation`, as in the paper);
//! - metrics with bootstrap CIs ([`metrics::evaluate`], seeded, parallel), ROC points;
//! - pictures: `roc.png`, `history_<stage>.png` (training curves from each train stage's
//!   history), `gradcam/*.png` for `gradcam` images (per class, the most confident
//!   positives, in turn), and `report.html` linking them.
//!
//! The model-dependent part (loading checkpoints, forward passes, Grad-CAM) is
//! `worker.rs`, compiled only into `pipe-torch`; everything after the probabilities is
//! plain Rust here ([`finish`]) and is tested without LibTorch.

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
    /// The part of `split` to evaluate on.
    #[serde(default = "d_part")]
    pub part: String,
    /// `best` (best validation macro F1 during training) or `last`.
    #[serde(default = "d_checkpoint")]
    pub checkpoint: String,
    #[serde(default = "d_threshold")]
    pub threshold: Threshold,
    /// Where `best_f1` thresholds are chosen.
    #[serde(default = "d_part")]
    pub threshold_part: String,
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
}

fn d_part() -> String {
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
        errors
    }
}

pub struct Evaluate;

impl Stage for Evaluate {
    type Params = Params;
    const KIND: &'static str = KIND;
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "score trained models (or their ensemble) with bootstrap CIs, ROC, Grad-CAM and report.html (torch worker)";

    fn check(params: &Params) -> Vec<String> {
        params.check()
    }

    fn reads(_: &Params) -> Vec<&'static str> {
        vec!["split", "labels", "images"]
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
    let classes = probs.len();
    let mut ranked: Vec<Vec<usize>> = (0..classes)
        .map(|c| {
            let mut idx: Vec<usize> = (0..probs[c].len()).filter(|&i| truth[c][i]).collect();
            idx.sort_by(|&a, &b| probs[c][b].total_cmp(&probs[c][a]).then(a.cmp(&b)));
            idx
        })
        .collect();
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

/// One Grad-CAM map from the worker.
#[derive(Debug, Clone)]
pub struct Cam {
    /// Index into the evaluated examples.
    pub example: usize,
    pub class: usize,
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

/// Everything after the forward passes: the tables, the pictures and `report.html`.
/// `probs[c][i]` is the probability of class `c` for `examples[i]`.
pub fn finish(
    ctx: &Context,
    p: &Params,
    models: &[Model],
    examples: &[Example],
    probs: &[Vec<f64>],
    thresholds: &[f64],
    cams: &[Cam],
) -> anyhow::Result<()> {
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

    // metrics
    let t = std::time::Instant::now();
    let m = metrics::evaluate(labels, probs, &truth, thresholds, p.bootstrap, p.seed, ctx.threads);
    ctx.log(format!(
        "{} bootstrap replicates of {} images in {:.2} s",
        p.bootstrap,
        examples.len(),
        t.elapsed().as_secs_f64()
    ));
    let schema = crate::schema!("evaluate/metrics");
    let mut b = TableBuilder::new(&schema);
    for cm in &m {
        b.str("label", Some(&cm.label))
            .f64("threshold", cm.threshold)
            .i64("support", Some(cm.support as i64))
            .i64("positives", Some(cm.positives as i64))
            .i64("bootstrap", Some(p.bootstrap as i64))
            .i64("auc_replicates", Some(cm.auc_replicates as i64));
        let nan_null = |x: f64| (!x.is_nan()).then_some(x);
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
    plots::roc_png(
        &out.join("roc.png"),
        &format!("ROC on {} ({} images), {what}", p.part, examples.len()),
        &curves,
    )?;
    let mut pictures = vec![(
        "roc.png".to_string(),
        "ROC curves per class (95% bootstrap CI of the AUC)".to_string(),
    )];

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

    // Grad-CAM
    if !cams.is_empty() {
        std::fs::create_dir_all(out.join("gradcam"))?;
    }
    for (k, cam) in cams.iter().enumerate() {
        let e = &examples[cam.example];
        let image = crate::pixels::load_gray(&e.image)?;
        let l = &labels[cam.class];
        let caption = format!(
            "{}: {l} p={:.2} (label {})",
            e.sop_instance_uid,
            probs[cam.class][cam.example],
            u8::from(truth[cam.class][cam.example])
        );
        let name = format!("gradcam/{k:02}_{l}.png");
        plots::heatmap_png(&out.join(&name), &image, &cam.values, cam.width, cam.height, &caption)?;
        pictures.push((name, caption));
    }

    // report.html
    let rows = m
        .iter()
        .map(|cm| {
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
                support: cm.support,
                positives: cm.positives,
            }
        })
        .collect();
    let threshold_rule = match &p.threshold {
        Threshold::Fixed(t) => format!("threshold {t} for every class"),
        Threshold::Rule(_) => format!("per-class thresholds maximising F1 on the `{}` part", p.threshold_part),
    };
    let html = report::report_html(&report::Report {
        title: format!("{}: {what}", ctx.stage),
        subtitle: format!(
            "{} images of the {} part, {} checkpoint",
            examples.len(),
            p.part,
            p.checkpoint
        ),
        rows,
        images: pictures,
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
            format!("cache key {}", ctx.meta.key),
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
        assert_eq!(p.params["part"], serde_json::json!("validation"));
        let p = prepare("{threshold: best_f1, tta: [hflip, shift]}").unwrap();
        assert_eq!(p.params["threshold"], serde_json::json!("best_f1"));
        for (yaml, want) in [
            ("{threshold: 1.5}", "within 0..=1"),
            ("{threshold: best}", "`best` is not a number"),
            ("{tta: [rotate]}", "available: hflip, shift"),
            ("{checkpoint: first}", "best, last"),
            ("{bootstraps: 3}", "unknown field"),
        ] {
            let e = prepare(yaml).unwrap_err();
            assert!(e.message.contains(want), "{yaml}: {}", e.message);
        }
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
        let ctx = Context {
            stage: "evaluate".into(),
            root: dir.path().into(),
            cache_dir: dir.path().into(),
            out_dir: out.clone(),
            inputs: vec![InputTable {
                stage: "split".into(),
                table: "split".into(),
                path: dir.path().join("split.parquet"),
            }],
            previous: None,
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
        finish(&ctx, &p, &[model], &examples, &probs, &[0.5, 0.5], &[]).unwrap();

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

        let roc = read_batch(&out.join("roc.parquet")).unwrap();
        assert_eq!(roc.num_rows(), 2 * 7);
        let html = std::fs::read_to_string(out.join("report.html")).unwrap();
        for needle in ["roc.png", "history_train.png", "cardiac", "pleura", "200 replicates"] {
            assert!(html.contains(needle), "report.html lacks {needle}");
        }
        for f in ["roc.png", "history_train.png"] {
            assert!(std::fs::metadata(out.join(f)).unwrap().len() > 1000, "{f}");
        }
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

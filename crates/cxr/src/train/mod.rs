//! `train`: a multi-label chest X-ray classifier trained on the split dataset.
//!
//! Paper, "Experimental setup": a CNN with one sigmoid output per class, trained with
//! binary cross-entropy on the training part and evaluated on the validation part by
//! per-class AUC and F1. Here:
//! - architectures `resnet50`, `densenet121`, `inception_v3`, `efficientnet_b2` (the
//!   paper's; torchvision's layouts and variable names) and `tiny` (3 conv-bn-relu-pool
//!   blocks) for tests and CPU demos — `nets.rs`; grey images are normalised and
//!   repeated to three channels for the ImageNet-shaped nets;
//! - `pretrained` weights (.safetensors / .ot) matched by variable name, the head
//!   re-initialised when its shape differs; `freeze_backbone` trains the head only;
//! - loss `bce` (BCE with logits), `asl` (asymmetric, γ+ 0, γ− 4, clip 0.05) or `dbl`
//!   (distribution-balanced, from the training part's class frequencies) — `losses.rs`;
//! - Adam (β 0.9/0.999), linear warm-up then cosine annealing to 0 over all steps;
//! - a data loader (`loader.rs`): threads decode and augment the images, batches are
//!   built ahead of the step, in an order that depends only on the seed;
//! - evaluation on the `validation` part every `eval_every` steps and after the last:
//!   val loss, per-class ROC AUC and F1 at probability 0.5
//!   ([`crate::evaluate::metrics`]), macro = mean over labels;
//! - mixed precision (float16 autocast) on CUDA when `mixed_precision` is set.
//!
//! Inputs: `split` (sop_instance_uid → part; rows of parts other than `train` and
//! `validation` are ignored and counted), `labels` (the label bool columns named by
//! `params.labels`) and `images` (the PNG files, relative to the directory holding
//! images.parquet). Output: `history` (one row per evaluation) and, beside it in the
//! entry, `best.safetensors` (best val macro F1), `last.safetensors` and `config.json`.
//!
//! Resumable: every evaluation writes `last.safetensors`, Adam's moments and step counts
//! (`optimizer.safetensors`, `optim.rs`) and then `progress.json` (step, best F1,
//! history so far, the hashes of those files) into the work directory; a run killed and
//! restarted continues from there exactly, or starts over when the files do not match
//! (killed while saving).
//!
//! The data preparation, the schedule and the metrics are plain Rust here (tested
//! without LibTorch); the network and the loop are `worker.rs`, compiled only into
//! `pipe-torch`.

use std::collections::HashSet;

use anyhow::bail;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::evaluate::metrics::{Confusion, roc_auc};
use pipe_core::stage::{Context, Executor, Reference, Resources, Stage};
use pipe_core::table::TableSchema;

pub mod loader;

pub const KIND: &str = "train";
/// The networks `architecture` may name: the paper's four (torchvision's layouts and
/// variable names, so converted torchvision/CheXpert weights load) and a tiny CNN for
/// tests and CPU demos. Built in `nets.rs`.
pub const ARCHITECTURES: &[&str] = &["tiny", "resnet50", "densenet121", "inception_v3", "efficientnet_b2"];

/// The smallest input side an architecture takes (its downsampling must leave at least
/// one feature pixel; Inception-V3's stem needs 75).
pub fn min_image_size(architecture: &str) -> i64 {
    match architecture {
        "tiny" => 8,
        "inception_v3" => 75,
        _ => 32,
    }
}
/// Losses implemented so far.
pub const LOSSES: &[&str] = &["bce", "asl", "dbl"];
/// The parts of `split` the stage trains and evaluates on.
pub const TRAIN_PART: &str = "train";
pub const VALIDATION_PART: &str = "validation";

/// Params, checked when the pipeline is validated ([`Params::check`]).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Backbone: tiny (a small CNN for CPUs and tests), resnet50, densenet121, inception_v3
    /// or efficientnet_b2 (the paper's best).
    #[serde(default = "d_architecture")]
    pub architecture: String,
    /// bce (binary cross-entropy), asl (asymmetric loss) or dbl (distribution-balanced
    /// loss): the paper's Table 4.
    #[serde(default = "d_loss")]
    pub loss: String,
    /// Side of the square input; images of another size are resized (bilinear).
    #[serde(default = "d_image_size")]
    pub image_size: i64,
    /// Images per optimiser step.
    #[serde(default = "d_batch_size")]
    pub batch_size: usize,
    /// Passes over the training part.
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    /// Peak learning rate (after warm-up).
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Optimiser steps of linear warm-up to `lr` before the cosine decay.
    #[serde(default = "d_warmup")]
    pub warmup_steps: u64,
    /// Evaluate on the validation part every this many optimiser steps (and at the end).
    #[serde(default = "d_eval_every")]
    pub eval_every: u64,
    /// Seeds the weights' initialisation and each epoch's shuffle.
    #[serde(default)]
    pub seed: u64,
    /// Bool columns of `labels` to predict, one output each.
    #[serde(default = "d_labels")]
    pub labels: Vec<String>,
    /// Weights to start from (.safetensors or .ot, e.g. converted torchvision or
    /// CheXpert weights); its content enters the key. Variables are matched by name; a
    /// head whose shape differs (another number of classes) is re-initialised.
    #[serde(default)]
    pub pretrained: Option<String>,
    /// Train the head only (the backbone keeps the pretrained weights, or those of a
    /// train stage among the inputs): the paper's "frozen feature extractor"
    /// alternative to end-to-end fine-tuning, and Pham et al.'s second phase of
    /// conditional training (the last layer retrained on all data).
    #[serde(default)]
    pub freeze_backbone: bool,
    /// With a train stage among the inputs, start from its `best` or `last` checkpoint
    /// (same architecture and labels) instead of `pretrained`.
    #[serde(default = "d_init")]
    pub init: String,
    /// Random augmentation of the training images (validation images are not augmented).
    #[serde(default)]
    pub augment: loader::Augment,
    /// Threads decoding and augmenting images; 0: half the stage's thread budget on the
    /// CPU (the other half runs LibTorch), all of it with a GPU.
    #[serde(default)]
    pub workers: usize,
    /// Batches prepared ahead of the training step.
    #[serde(default = "d_prefetch")]
    pub prefetch: usize,
    /// Automatic mixed precision (float16 autocast) on CUDA; ignored on the CPU.
    #[serde(default)]
    pub mixed_precision: bool,
    /// What an uncertain label trains as (Pham et al.): `as_labelled` (the labels
    /// table's value: the label stage's `uncertain:` decided), `ignore` (U-Ignore: out of
    /// the loss, Haghpanah's masked loss), `ones`, `zeros`, `ones_lsr`, `zeros_lsr` (a
    /// value drawn uniformly from `lsr_ones` / `lsr_zeros`, fixed per image and label by
    /// the seed). An image's label is uncertain where `<label>_uncertain` is true, or
    /// where an integer label column holds −1 (CheXpert). Validation keeps the labels.
    #[serde(default)]
    pub uncertain: Policy,
    /// Another policy for some labels (`{ cardiac: ones }`).
    #[serde(default)]
    pub uncertain_by_label: std::collections::BTreeMap<String, Policy>,
    /// The range of `ones_lsr` (Pham et al.: [0.55, 0.85]).
    #[serde(default = "d_lsr_ones")]
    pub lsr_ones: [f64; 2],
    /// The range of `zeros_lsr` (Pham et al.: [0, 0.3]).
    #[serde(default = "d_lsr_zeros")]
    pub lsr_zeros: [f64; 2],
    /// A label hierarchy (`child: parent` YAML over `labels`) for conditional training
    /// (Pham et al.): a label's target counts only on the training images whose
    /// ancestors are all positive; evaluate with the same `hierarchy:` for p(label).
    #[serde(default)]
    pub hierarchy: Option<String>,
}

/// What an uncertain label trains as (see [`Params::uncertain`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    #[default]
    AsLabelled,
    Ignore,
    Ones,
    Zeros,
    OnesLsr,
    ZerosLsr,
}

fn d_lsr_ones() -> [f64; 2] {
    [0.55, 0.85]
}
fn d_lsr_zeros() -> [f64; 2] {
    [0.0, 0.3]
}

impl Params {
    /// The policy of label `label`.
    pub fn policy_of(&self, label: &str) -> Policy {
        self.uncertain_by_label.get(label).copied().unwrap_or(self.uncertain)
    }

    /// The training target of an uncertain label under `policy`: NaN (left out of the
    /// loss) for `ignore`; a draw from the LSR range, fixed for (seed, image, label).
    pub fn uncertain_target(&self, policy: Policy, labelled: f32, sop_instance_uid: &str, label: usize) -> f32 {
        let draw = |[lo, hi]: [f64; 2]| {
            let image = u64::from_le_bytes(
                blake3::hash(sop_instance_uid.as_bytes()).as_bytes()[..8]
                    .try_into()
                    .expect("8 bytes"),
            );
            let mut rng = pipe_core::rng::Rng::for_item(self.seed ^ image, 0x006c_7372, label as u64);
            (lo + (hi - lo) * rng.f64()) as f32
        };
        match policy {
            Policy::AsLabelled => labelled,
            Policy::Ignore => f32::NAN,
            Policy::Ones => 1.0,
            Policy::Zeros => 0.0,
            Policy::OnesLsr => draw(self.lsr_ones),
            Policy::ZerosLsr => draw(self.lsr_zeros),
        }
    }
}

fn d_init() -> String {
    "best".into()
}

fn d_prefetch() -> usize {
    4
}

fn d_architecture() -> String {
    "tiny".into()
}
fn d_loss() -> String {
    "bce".into()
}
fn d_image_size() -> i64 {
    64
}
fn d_batch_size() -> usize {
    16
}
fn d_epochs() -> usize {
    5
}
fn d_lr() -> f64 {
    1e-3
}
fn d_warmup() -> u64 {
    20
}
fn d_eval_every() -> u64 {
    50
}
fn d_labels() -> Vec<String> {
    ["chest_wall", "pleura", "parenchyma", "cardiac", "abnormal"]
        .map(String::from)
        .to_vec()
}

impl Params {
    /// Every problem, one per line (`field: …`), so each points at its own key.
    pub fn check(&self) -> Vec<String> {
        let mut errors: Vec<String> = Vec::new();
        if !ARCHITECTURES.contains(&self.architecture.as_str()) {
            errors.push(format!(
                "architecture: `{}` is not implemented; available: {}",
                self.architecture,
                ARCHITECTURES.join(", ")
            ));
        }
        if !LOSSES.contains(&self.loss.as_str()) {
            errors.push(format!(
                "loss: `{}` is not implemented; available: {}",
                self.loss,
                LOSSES.join(", ")
            ));
        }
        let min = min_image_size(&self.architecture);
        if !(min..=4096).contains(&self.image_size) {
            errors.push(format!(
                "image_size: {} takes {min}..=4096 pixels, got {}",
                self.architecture, self.image_size
            ));
        }
        if let Err(e) = self.augment.validate() {
            errors.push(e);
        }
        if self.prefetch == 0 {
            errors.push("prefetch: must be at least 1".into());
        }
        if !["best", "last"].contains(&self.init.as_str()) {
            errors.push(format!("init: `{}` is not one of: best, last", self.init));
        }
        if self.batch_size == 0 {
            errors.push("batch_size: must be at least 1".into());
        }
        if self.epochs == 0 {
            errors.push("epochs: must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            errors.push(format!("lr: must be a number > 0, got {}", self.lr));
        }
        if self.eval_every == 0 {
            errors.push("eval_every: must be at least 1".into());
        }
        if self.labels.is_empty() {
            errors.push("labels: name at least one label column".into());
        }
        let mut seen = HashSet::new();
        for l in &self.labels {
            if l.is_empty() || !seen.insert(l) {
                errors.push(format!("labels: `{l}` is empty or appears twice"));
            }
        }
        if self.pretrained.as_deref() == Some("") {
            errors.push("pretrained: empty path".into());
        }
        for l in self.uncertain_by_label.keys() {
            if !self.labels.contains(l) {
                errors.push(format!(
                    "uncertain_by_label: `{l}` is not one of the labels ({})",
                    self.labels.join(", ")
                ));
            }
        }
        for (name, [lo, hi]) in [("lsr_ones", self.lsr_ones), ("lsr_zeros", self.lsr_zeros)] {
            if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
                errors.push(format!(
                    "{name}: must be [low, high] with 0 ≤ low ≤ high ≤ 1, got [{lo}, {hi}]"
                ));
            }
        }
        errors
    }
}

pub struct Train;

pub fn history_schema() -> TableSchema {
    crate::schema!("train/history")
}

impl Stage for Train {
    type Params = Params;
    const KIND: &'static str = KIND;
    const VERSION: u32 = 2;
    const ABOUT: &'static str = "train a multi-label CNN on the split images (torch worker)";
    const RESUMABLE: bool = true;

    fn check(params: &Params) -> Vec<String> {
        params.check()
    }

    fn reads(_: &Params) -> Vec<&'static str> {
        vec!["split", "labels", "images"]
    }

    fn outputs(_: &Params) -> Vec<String> {
        vec!["history".into()]
    }

    fn references(p: &Params) -> Vec<Reference> {
        [("pretrained", &p.pretrained), ("hierarchy", &p.hierarchy)]
            .into_iter()
            .filter_map(|(param, path)| {
                Some(Reference {
                    param: param.into(),
                    path: path.clone()?,
                })
            })
            .collect()
    }

    fn resources(_: &Params) -> Resources {
        Resources { cpu: 0, gpu: 1 }
    }

    /// A train stage among the inputs is where the weights start (its architecture and
    /// labels); `freeze_backbone` needs weights to start from.
    fn check_inputs(p: &Params, inputs: &[pipe_core::stage::Upstream]) -> Vec<pipe_core::stage::ParamsError> {
        use pipe_core::stage::ParamsError;
        let upstream: Vec<_> = inputs.iter().filter(|u| u.kind == KIND).collect();
        let mut errors = Vec::new();
        if upstream.len() > 1 {
            errors.push(ParamsError {
                path: String::new(),
                message: "more than one train stage among the inputs: the weights start from one".into(),
            });
        }
        for u in &upstream {
            if u.params["architecture"] != serde_json::json!(p.architecture)
                || u.params["labels"] != serde_json::json!(p.labels)
            {
                errors.push(ParamsError {
                    path: "architecture".into(),
                    message: format!(
                        "architecture: starts from `{}`, which trains {} on {}; this stage trains {} on {}",
                        u.stage,
                        u.params["architecture"],
                        u.params["labels"],
                        p.architecture,
                        serde_json::json!(p.labels)
                    ),
                });
            }
        }
        if p.freeze_backbone && p.pretrained.is_none() && upstream.is_empty() {
            errors.push(ParamsError {
                path: "freeze_backbone".into(),
                message: "freeze_backbone: needs `pretrained` weights or a train stage among the inputs (a frozen random backbone learns nothing)".into(),
            });
        }
        errors
    }

    fn executor(_: &Params) -> Executor {
        Executor::TorchWorker
    }

    fn run(_: &Params, _: &Context) -> anyhow::Result<()> {
        bail!("`train` runs in the pipe-torch worker, not in pipe")
    }
}

/// Learning rate before optimiser step `step` (0-based) of `total`: linear warm-up over
/// `warmup` steps to `base`, then cosine annealing towards 0 at `total`.
pub fn learning_rate(base: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let t = ((step - warmup) as f64 / span).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// The order of `n` training examples in `epoch`: a Fisher–Yates shuffle seeded by
/// (seed, epoch) alone, so a resumed run sees the same batches.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = pipe_core::rng::Rng::for_item(seed, 0x7261_696e, epoch);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.range(0, i as i64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// Validation metrics of one evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scores {
    /// Per label (params order): ROC AUC, None when only one class is present.
    pub auc: Vec<Option<f64>>,
    /// Per label: F1 at probability 0.5.
    pub f1: Vec<f64>,
    pub macro_f1: f64,
    /// Mean of the defined AUCs; None when none is.
    pub macro_auc: Option<f64>,
}

/// Per-label AUC and F1 at 0.5 of `probs` (row-major, `classes` per example) against
/// `targets` (same layout, 0/1).
pub fn scores(probs: &[f64], targets: &[f32], classes: usize) -> Scores {
    assert_eq!(probs.len(), targets.len());
    let mut auc = Vec::new();
    let mut f1 = Vec::new();
    for c in 0..classes {
        let s: Vec<f64> = probs.iter().skip(c).step_by(classes).copied().collect();
        let l: Vec<bool> = targets.iter().skip(c).step_by(classes).map(|&t| t > 0.5).collect();
        auc.push(roc_auc(&s, &l));
        f1.push(Confusion::from(&s, &l, 0.5).f1());
    }
    let defined: Vec<f64> = auc.iter().flatten().copied().collect();
    Scores {
        macro_f1: f1.iter().sum::<f64>() / classes.max(1) as f64,
        macro_auc: (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64),
        auc,
        f1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepare(yaml: &str) -> Result<pipe_core::stage::Prepared, pipe_core::stage::ParamsError> {
        use pipe_core::stage::{Kind, KindOf};
        KindOf::<Train>(std::marker::PhantomData)
            .prepare(&serde_yaml::from_str(yaml).unwrap())
            .map_err(|mut all| all.remove(0))
    }

    /// Pham et al.'s policies: U-Ignore is NaN (masked), U-Ones 1, U-Zeros 0, and the
    /// LSR variants draw uniformly from their ranges, the same value for an image and
    /// label on every run and epoch, different across images and labels.
    #[test]
    fn uncertainty_policies_give_their_targets() {
        let p: Params = serde_json::from_value(serde_json::json!({
            "uncertain": "ones_lsr",
            "uncertain_by_label": { "cardiac": "ignore", "pleura": "zeros_lsr", "abnormal": "zeros" },
            "seed": 7
        }))
        .unwrap();
        assert!(p.check().is_empty(), "{:?}", p.check());
        assert_eq!(p.policy_of("cardiac"), Policy::Ignore);
        assert_eq!(p.policy_of("chest_wall"), Policy::OnesLsr);
        assert!(p.uncertain_target(Policy::Ignore, 1.0, "1.2.3", 0).is_nan());
        assert_eq!(p.uncertain_target(Policy::Ones, 0.0, "1.2.3", 0), 1.0);
        assert_eq!(p.uncertain_target(Policy::Zeros, 1.0, "1.2.3", 0), 0.0);
        assert_eq!(p.uncertain_target(Policy::AsLabelled, 1.0, "1.2.3", 0), 1.0);
        for (policy, [lo, hi], mean) in [
            (Policy::OnesLsr, [0.55, 0.85], 0.70),
            (Policy::ZerosLsr, [0.0, 0.3], 0.15),
        ] {
            let draws: Vec<f32> = (0..4000)
                .map(|i| p.uncertain_target(policy, 0.0, &format!("1.2.{i}"), i % 5))
                .collect();
            assert!(
                draws.iter().all(|&d| (lo as f32..=hi as f32).contains(&d)),
                "{policy:?}"
            );
            let m = draws.iter().map(|&d| d as f64).sum::<f64>() / draws.len() as f64;
            assert!((m - mean).abs() < 0.01, "{policy:?}: mean {m}");
            assert_eq!(
                draws[17],
                p.uncertain_target(policy, 0.0, "1.2.17", 2),
                "same image and label, same draw"
            );
        }
        assert_ne!(
            p.uncertain_target(Policy::OnesLsr, 0.0, "1.2.3", 0),
            p.uncertain_target(Policy::OnesLsr, 0.0, "1.2.3", 1)
        );
        let bad: Params = serde_json::from_value(serde_json::json!({
            "uncertain_by_label": { "heart": "ones" },
            "lsr_ones": [0.9, 0.5]
        }))
        .unwrap();
        let errors = bad.check();
        assert!(
            errors.iter().any(|e| e.starts_with("uncertain_by_label: `heart`")),
            "{errors:?}"
        );
        assert!(errors.iter().any(|e| e.starts_with("lsr_ones: ")), "{errors:?}");
    }

    #[test]
    fn defaults_and_validation() {
        let p = prepare("{}").unwrap();
        assert_eq!(p.params["architecture"], "tiny");
        assert_eq!(p.params["image_size"], 64);
        assert_eq!(p.params["labels"].as_array().unwrap().len(), 5);
        assert_eq!(p.executor, Executor::TorchWorker);
        assert!(p.references.is_empty());
        let e = prepare("{architecture: vgg16}").unwrap_err();
        assert!(
            e.message.contains(
                "`vgg16` is not implemented; available: tiny, resnet50, densenet121, inception_v3, efficientnet_b2"
            ),
            "{}",
            e.message
        );
        assert!(
            prepare("{architecture: inception_v3, image_size: 64}")
                .unwrap_err()
                .message
                .contains("inception_v3 takes 75..=4096 pixels")
        );
        assert!(prepare("{architecture: efficientnet_b2, image_size: 768}").is_ok());
        assert!(
            prepare("{augment: {rotate_degrees: 90}}")
                .unwrap_err()
                .message
                .contains("augment.rotate_degrees")
        );
        let frozen: Params = serde_json::from_value(serde_json::json!({ "freeze_backbone": true })).unwrap();
        let errors = Train::check_inputs(&frozen, &[]);
        assert!(errors[0].message.contains("needs `pretrained`"), "{:?}", errors[0]);
        assert!(
            prepare("{loss: focal}")
                .unwrap_err()
                .message
                .contains("available: bce, asl, dbl")
        );
        assert!(prepare("{epochs: 0}").is_err());
        assert!(prepare("{bogus: 1}").unwrap_err().message.contains("bogus"));
        let p = prepare("{pretrained: models/x.safetensors}").unwrap();
        assert_eq!(p.references[0].path, "models/x.safetensors");
    }

    #[test]
    fn schedule_warms_up_then_anneals_to_zero() {
        assert!((learning_rate(1.0, 0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((learning_rate(1.0, 9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 10, 10, 100) - 1.0).abs() < 1e-12);
        assert!(learning_rate(1.0, 55, 10, 100) < 0.6);
        assert!(learning_rate(1.0, 99, 10, 100) < 0.01);
        assert!((learning_rate(1.0, 0, 0, 10) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(100, 3, 1);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(100, 3, 1));
        assert_ne!(a, epoch_order(100, 3, 2));
    }

    #[test]
    fn scores_per_label_and_macro() {
        // Two labels; the first is perfectly ranked, the second has one class only.
        let probs = [0.9, 0.1, 0.2, 0.7, 0.8, 0.3];
        let targets = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let s = scores(&probs, &targets, 2);
        assert_eq!(s.auc, vec![Some(1.0), None]);
        assert_eq!(s.f1, vec![1.0, 0.0]);
        assert_eq!(s.macro_auc, Some(1.0));
        assert!((s.macro_f1 - 0.5).abs() < 1e-12);
    }
}

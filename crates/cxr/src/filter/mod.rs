//! `filter`: keep posterior-anterior chest radiographs.
//!
//! Paper, "PA-view filtering": a classifier gives P(PA chest) for each DICOM file and
//! files above 0.5 go on. Two methods:
//! - `tags`: rules on Modality, BodyPartExamined and ViewPosition give a
//!   probability-like score (the product of one factor per tag, see [`tag_score`]);
//!   in process, no pixels read.
//! - `model`: a TorchScript classifier (`model: path`, one logit or probability per
//!   image) run on the pixel data in the torch worker, on the GPU when the scheduler
//!   gives one (`worker.rs`).
//!
//! Output: `kept` (score > threshold) and `dropped` (with the reason), each with all
//! columns of `dicoms`.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::Schema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use pipe_core::stage::{Context, Executor, Reference, Resources, Stage};
use pipe_core::table::{ColumnDef, TableSchema, read_batch, str_col, write_table};

#[derive(Debug, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Tags,
    Model,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// `tags`: keep radiographs whose DICOM tags say chest PA (modality, body part, view
    /// position); `model`: a TorchScript PA-chest classifier scores each image.
    pub method: Method,
    /// Keep files with P(PA chest) > threshold.
    #[serde(default = "half")]
    pub threshold: f64,
    /// Modalities that are radiographs.
    #[serde(default = "default_modalities")]
    pub modalities: Vec<String>,
    /// BodyPartExamined values that mean chest.
    #[serde(default = "default_body_parts")]
    pub body_parts: Vec<String>,
    /// `model`: TorchScript file (hashed as content).
    #[serde(default)]
    pub model: Option<String>,
    /// `model`: side of the square input the model expects.
    #[serde(default = "default_input")]
    pub input_size: i64,
    /// `model`: images per forward pass.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// `model`: what the model returns per image: a logit (sigmoid applied) or a probability.
    #[serde(default)]
    pub output: ModelOutput,
}

#[derive(Debug, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelOutput {
    #[default]
    Logit,
    Probability,
}

fn half() -> f64 {
    0.5
}
fn default_modalities() -> Vec<String> {
    vec!["DX".into(), "CR".into()]
}
fn default_body_parts() -> Vec<String> {
    vec!["CHEST".into(), "THORAX".into()]
}
fn default_input() -> i64 {
    224
}
fn default_batch() -> usize {
    32
}

pub struct Filter;

pub fn extended(base: &TableSchema, extra: &TableSchema) -> TableSchema {
    let mut columns: Vec<ColumnDef> = base.columns.clone();
    columns.extend(extra.columns.iter().cloned());
    TableSchema {
        table: extra.table.clone(),
        description: extra.description.clone(),
        columns,
    }
}

pub fn kept_schema() -> TableSchema {
    extended(&crate::collect::dicoms_schema(), &crate::schema!("filter/kept"))
}
pub fn dropped_schema() -> TableSchema {
    extended(&crate::collect::dicoms_schema(), &crate::schema!("filter/dropped"))
}

impl Stage for Filter {
    type Params = Params;
    const KIND: &'static str = "filter";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "keep PA chest radiographs (DICOM tag rules or a TorchScript model)";
    // A shard scores a contiguous slice of `dicoms` (see `shard_of`).
    const SHARDABLE: bool = true;

    fn reads(_: &Params) -> Vec<&'static str> {
        vec!["dicoms"]
    }

    fn outputs(_: &Params) -> Vec<String> {
        vec!["kept".into(), "dropped".into()]
    }

    fn references(p: &Params) -> Vec<Reference> {
        p.model
            .iter()
            .map(|m| Reference {
                param: "model".into(),
                path: m.clone(),
            })
            .collect()
    }

    fn resources(p: &Params) -> Resources {
        match p.method {
            Method::Tags => Resources { cpu: 1, gpu: 0 },
            Method::Model => Resources { cpu: 0, gpu: 1 },
        }
    }

    fn executor(p: &Params) -> Executor {
        match p.method {
            Method::Tags => Executor::InProcess,
            Method::Model => Executor::TorchWorker,
        }
    }

    fn run(p: &Params, ctx: &Context) -> anyhow::Result<()> {
        anyhow::ensure!(p.method == Method::Tags, "method `model` runs in the pipe-torch worker");
        anyhow::ensure!(p.model.is_none(), "params.model is only used with `method: model`");
        let dicoms = shard_of(ctx, read_batch(ctx.input("dicoms")?)?, 1);
        let (m, b, v) = (
            str_col(&dicoms, "modality")?,
            str_col(&dicoms, "body_part")?,
            str_col(&dicoms, "view_position")?,
        );
        let opt = |a: &StringArray, i: usize| {
            if a.is_valid(i) {
                Some(a.value(i).to_string())
            } else {
                None
            }
        };
        let scores: Vec<(f64, String)> = (0..dicoms.num_rows())
            .map(|i| tag_score(p, opt(m, i).as_deref(), opt(b, i).as_deref(), opt(v, i).as_deref()))
            .collect();
        ctx.progress.set_total(scores.len() as u64);
        ctx.progress.inc(scores.len() as u64);
        write_split(ctx, p.threshold, &dicoms, &scores, "tags")
    }
}

use arrow::array::Array;

/// Score of the tag rules and the reason for the lowest factor.
pub fn tag_score(p: &Params, modality: Option<&str>, body_part: Option<&str>, view: Option<&str>) -> (f64, String) {
    let up = |s: Option<&str>| s.map(|s| s.trim().to_uppercase()).filter(|s| !s.is_empty());
    let mut score = 1.0;
    let mut reasons = Vec::new();
    match up(modality) {
        Some(m) if p.modalities.iter().any(|x| x.eq_ignore_ascii_case(&m)) => {}
        Some(m) => {
            score *= 0.01;
            reasons.push(format!("modality {m} is not radiography"));
        }
        None => {
            score *= 0.5;
            reasons.push("no Modality".into());
        }
    }
    match up(body_part) {
        Some(b) if p.body_parts.iter().any(|x| x.eq_ignore_ascii_case(&b)) => {}
        Some(b) => {
            score *= 0.02;
            reasons.push(format!("body part {b} is not chest"));
        }
        None => {
            score *= 0.7;
            reasons.push("no BodyPartExamined".into());
        }
    }
    match up(view).as_deref() {
        Some("PA") => score *= 0.97,
        Some("AP") => {
            score *= 0.15;
            reasons.push("view AP, not PA".into());
        }
        Some("LL" | "RL" | "LAT" | "LATERAL" | "LLD" | "RLD") => {
            score *= 0.03;
            reasons.push(format!("lateral view {}", view.unwrap_or_default().trim()));
        }
        Some(other) => {
            score *= 0.1;
            reasons.push(format!("view {other}"));
        }
        None => {
            score *= 0.6;
            reasons.push("no ViewPosition".into());
        }
    }
    (score, reasons.join("; "))
}

/// The rows of `dicoms` this run scores: all, or a shard's slice cut at multiples of
/// `batch` (the model's batches are then the batches of an unsharded run, and so are
/// its scores). `kept` and `dropped` keep the order of `dicoms`, so the shards'
/// tables, concatenated, are an unsharded run's.
pub fn shard_of(ctx: &Context, dicoms: RecordBatch, batch: usize) -> RecordBatch {
    match ctx.shard {
        None => dicoms,
        Some(shard) => {
            let r = shard.range_in_units(dicoms.num_rows(), batch);
            dicoms.slice(r.start, r.len())
        }
    }
}

/// Write `kept` and `dropped` from `dicoms` and a (score, reason) per row.
pub fn write_split(
    ctx: &Context,
    threshold: f64,
    dicoms: &RecordBatch,
    scores: &[(f64, String)],
    method: &str,
) -> anyhow::Result<()> {
    let keep = BooleanArray::from(scores.iter().map(|(s, _)| *s > threshold).collect::<Vec<_>>());
    let drop = arrow::compute::not(&keep)?;
    let score = Arc::new(Float64Array::from(scores.iter().map(|(s, _)| *s).collect::<Vec<_>>())) as ArrayRef;
    let methods = Arc::new(StringArray::from(vec![method; scores.len()])) as ArrayRef;
    let reasons = Arc::new(StringArray::from(
        scores
            .iter()
            .map(|(s, r)| {
                if r.is_empty() {
                    format!("score {s:.3} ≤ threshold {threshold}")
                } else {
                    r.clone()
                }
            })
            .collect::<Vec<_>>(),
    )) as ArrayRef;
    let with = |extra: Vec<ArrayRef>, mask: &BooleanArray, schema: &TableSchema| -> anyhow::Result<RecordBatch> {
        let mut cols: Vec<ArrayRef> = dicoms.columns().to_vec();
        cols.extend(extra);
        let full = RecordBatch::try_new(Arc::new(Schema::new(schema.arrow().fields().clone())), cols)?;
        Ok(arrow::compute::filter_record_batch(&full, mask)?)
    };
    let kept = with(vec![score.clone(), methods.clone()], &keep, &kept_schema())?;
    let dropped = with(vec![score, methods, reasons], &drop, &dropped_schema())?;
    write_table(
        &ctx.output_path("kept"),
        &kept_schema(),
        &ctx.meta.for_table("kept"),
        &[kept],
    )?;
    write_table(
        &ctx.output_path("dropped"),
        &dropped_schema(),
        &ctx.meta.for_table("dropped"),
        &[dropped],
    )?;
    Ok(())
}

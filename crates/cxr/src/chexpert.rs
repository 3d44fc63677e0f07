//! `chexpert`: a CheXpert-style dataset (a CSV of Path, Sex, Age, Frontal/Lateral,
//! AP/PA and the 14 observations, and the image folder it points into) as pipe's
//! tables: `images` (each image converted as `convert` does, with the view columns a
//! `sql` or `filter` stage can select on), `labels` (the 14 observations as written:
//! 1, 0, −1 uncertain, null blank) and `rejects`.
//!
//! CheXpert has no DICOM UIDs: the image key `sop_instance_uid` is the CSV's Path, so
//! split, train and evaluate use the import as they use a hospital's images. Columns
//! are found by header name, not position; Sex, Age, Frontal/Lateral and AP/PA may be
//! absent (null), Path and the 14 observations may not. Every data row ends in
//! `images` or `rejects` with the reason.
//!
//! The image folder is a referenced tree: its content is in the key, and each image
//! read is checked against the hash the key was built from.

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::convert::{Format, image_rel, store, to_u8};
use crate::pixels;
use pipe_core::stage::{Context, Reference, Stage};
use pipe_core::table::{TableBuilder, TableSchema};

/// The 14 observations: (CSV header, column in `labels`), in the CSV's order.
pub const OBSERVATIONS: [(&str, &str); 14] = [
    ("No Finding", "no_finding"),
    ("Enlarged Cardiomediastinum", "enlarged_cardiomediastinum"),
    ("Cardiomegaly", "cardiomegaly"),
    ("Lung Opacity", "lung_opacity"),
    ("Lung Lesion", "lung_lesion"),
    ("Edema", "edema"),
    ("Consolidation", "consolidation"),
    ("Pneumonia", "pneumonia"),
    ("Atelectasis", "atelectasis"),
    ("Pneumothorax", "pneumothorax"),
    ("Pleural Effusion", "pleural_effusion"),
    ("Pleural Other", "pleural_other"),
    ("Fracture", "fracture"),
    ("Support Devices", "support_devices"),
];

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The CSV (CheXpert's train.csv or valid.csv).
    pub csv: String,
    /// The folder the CSV's Paths are relative to (for CheXpert: the folder holding
    /// `CheXpert-v1.0-small/`).
    pub root: String,
    /// Side of the square PNGs written (Haghpanah trains at 320).
    #[serde(default = "default_size")]
    pub size: usize,
    /// Threads for decoding (0 = the run's `--jobs`).
    #[serde(default)]
    pub threads: usize,
}

fn default_size() -> usize {
    320
}

pub struct Chexpert;

fn images_schema() -> TableSchema {
    crate::schema!("chexpert/images")
}
fn labels_schema() -> TableSchema {
    crate::schema!("chexpert/labels")
}
fn rejects_schema() -> TableSchema {
    crate::schema!("chexpert/rejects")
}

/// One CSV row, its cells checked.
struct Row {
    line: usize,
    path: String,
    patient_id: String,
    study_id: String,
    view: String,
    sex: Option<String>,
    age: Option<i64>,
    frontal_lateral: Option<String>,
    ap_pa: Option<String>,
    labels: [Option<i64>; 14],
}

/// A converted image.
struct Converted {
    image: String,
    image_hash: String,
    source_hash: String,
    width: usize,
    height: usize,
}

impl Stage for Chexpert {
    type Params = Params;
    const KIND: &'static str = "chexpert";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "import a CheXpert-style CSV and image folder: images, the 14 observations (1/0/-1/blank), rejects";

    fn check(p: &Params) -> Vec<String> {
        let mut problems = Vec::new();
        if !(8..=crate::convert::MAX_SIZE).contains(&p.size) {
            problems.push(format!("size: {} is outside 8..={}", p.size, crate::convert::MAX_SIZE));
        }
        problems
    }

    fn references(p: &Params) -> Vec<Reference> {
        vec![
            Reference {
                param: "csv".into(),
                path: p.csv.clone(),
            },
            Reference {
                param: "root".into(),
                path: p.root.clone(),
            },
        ]
    }

    fn outputs(_: &Params) -> Vec<String> {
        vec!["images".into(), "labels".into(), "rejects".into()]
    }

    fn run(p: &Params, ctx: &Context) -> anyhow::Result<()> {
        let csv_path = ctx.resolve(&p.csv);
        let table = crate::csv::Table::read(&csv_path)?;
        let path_col = table.column("Path")?;
        let label_cols = OBSERVATIONS
            .iter()
            .map(|(name, _)| table.column(name))
            .collect::<anyhow::Result<Vec<usize>>>()?;
        let optional = |name: &str| table.header.iter().position(|h| h == name);
        let (sex_col, age_col) = (optional("Sex"), optional("Age"));
        let (fl_col, appa_col) = (optional("Frontal/Lateral"), optional("AP/PA"));

        // The tree's files and the hashes the key was built from.
        let mut hashes: HashMap<String, (blake3::Hash, Option<String>)> = HashMap::new();
        ctx.scan_tree(&p.root, &mut |chunk, _| {
            for f in chunk {
                hashes.insert(f.rel.clone(), (f.hash, f.unreadable.clone()));
            }
            Ok(())
        })?;

        let mut rejects = TableBuilder::new(&rejects_schema());
        let mut reject = |line: usize, path: &str, reason: String| {
            rejects
                .i64("line", Some(line as i64))
                .str("sop_instance_uid", Some(path))
                .str("reason", Some(&reason));
        };
        let mut first_line: HashMap<&str, usize> = HashMap::new();
        let mut rows = Vec::new();
        for (line, record) in &table.rows {
            let cell = |i: usize| crate::csv::get(record, i);
            let opt = |c: Option<usize>| c.map(cell).filter(|v| !v.is_empty()).map(str::to_string);
            let path = cell(path_col);
            match parse_row(path, &label_cols, record, opt(age_col)) {
                Err(reason) => reject(*line, path, reason),
                Ok(_) if first_line.contains_key(path) => reject(
                    *line,
                    path,
                    format!("the Path is given twice; line {} is imported", first_line[path]),
                ),
                Ok((labels, age, (patient_id, study_id, view))) => {
                    first_line.insert(path, *line);
                    rows.push(Row {
                        line: *line,
                        path: path.to_string(),
                        patient_id,
                        study_id,
                        view,
                        sex: opt(sex_col),
                        age,
                        frontal_lateral: opt(fl_col),
                        ap_pa: opt(appa_col),
                        labels,
                    });
                }
            }
        }

        ctx.progress.set_total(rows.len() as u64);
        let converted: Vec<Result<Converted, String>> = ctx.pool()?.install(|| {
            rows.par_iter()
                .map(|row| {
                    let r = convert_image(p, ctx, &hashes, &row.path);
                    ctx.progress.inc(1);
                    r
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })?;

        let mut images = TableBuilder::new(&images_schema());
        let mut labels = TableBuilder::new(&labels_schema());
        let (mut imported, mut rejected) = (0u64, table.rows.len() as u64 - rows.len() as u64);
        for (row, c) in rows.iter().zip(converted) {
            let c = match c {
                Ok(c) => c,
                Err(reason) => {
                    reject(row.line, &row.path, reason);
                    rejected += 1;
                    continue;
                }
            };
            imported += 1;
            images
                .str("sop_instance_uid", Some(&row.path))
                .str("patient_id", Some(&row.patient_id))
                .str("study_id", Some(&row.study_id))
                .str("view", Some(&row.view))
                .str("sex", row.sex.as_deref())
                .i64("age", row.age)
                .str("frontal_lateral", row.frontal_lateral.as_deref())
                .str("ap_pa", row.ap_pa.as_deref())
                .str("image", Some(&c.image))
                .str("image_hash", Some(&c.image_hash))
                .str("source_hash", Some(&c.source_hash))
                .i32("original_width", Some(i32::try_from(c.width)?))
                .i32("original_height", Some(i32::try_from(c.height)?))
                .i32("size", Some(i32::try_from(p.size)?));
            labels
                .str("sop_instance_uid", Some(&row.path))
                .str("patient_id", Some(&row.patient_id));
            for ((_, column), v) in OBSERVATIONS.iter().zip(row.labels) {
                labels.i64(column, v);
            }
        }
        ctx.count("images_imported", imported);
        ctx.count("rows_rejected", rejected);
        for (name, schema, mut builder) in [
            ("images", images_schema(), images),
            ("labels", labels_schema(), labels),
            ("rejects", rejects_schema(), rejects),
        ] {
            ctx.write_table(name, &schema, &builder.finish()?)?;
        }
        Ok(())
    }
}

type Ids = (String, String, String);
/// The 14 observations, the age and the ids of a row.
type Parsed = ([Option<i64>; 14], Option<i64>, Ids);

/// The 14 observations, the age and (patient, study, view) of one row, or why not.
fn parse_row(path: &str, label_cols: &[usize], record: &[String], age: Option<String>) -> Result<Parsed, String> {
    if path.is_empty() {
        return Err("the Path cell is empty".into());
    }
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let [.., patient, study, file] = parts.as_slice() else {
        return Err(format!("Path `{path}` is not <patient>/<study>/<view file>"));
    };
    if path.split('/').any(|s| s == "..") {
        return Err(format!("Path `{path}` leaves the root (..)"));
    }
    let view = file.rsplit_once('.').map_or(*file, |(stem, _)| stem).to_string();
    let mut labels = [None; 14];
    for (k, &i) in label_cols.iter().enumerate() {
        let v = crate::csv::get(record, i);
        labels[k] = match v {
            "" => None,
            "1" | "1.0" => Some(1),
            "0" | "0.0" => Some(0),
            "-1" | "-1.0" => Some(-1),
            other => {
                return Err(format!(
                    "column `{}`: `{other}` is not 1, 0, -1 or blank",
                    OBSERVATIONS[k].0
                ));
            }
        };
    }
    let age = match age {
        None => None,
        Some(a) => Some(
            a.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0 && *v < 200.0 && v.fract() == 0.0)
                .map(|v| v as i64)
                .ok_or_else(|| format!("column `Age`: `{a}` is not a whole number of years"))?,
        ),
    };
    Ok((labels, age, (patient.to_string(), format!("{patient}/{study}"), view)))
}

/// Read, check and convert one image; `Err` is the reject reason, the outer error a
/// problem of the run (the file is not what the key was built from).
fn convert_image(
    p: &Params,
    ctx: &Context,
    hashes: &HashMap<String, (blake3::Hash, Option<String>)>,
    path: &str,
) -> anyhow::Result<Result<Converted, String>> {
    let file = ctx.resolve(&p.root).join(path);
    let Some((want, unreadable)) = hashes.get(path) else {
        return Ok(Err(format!("no such image file: {}", file.display())));
    };
    if let Some(why) = unreadable {
        ctx.unreadable(&file, why);
        return Ok(Err(format!("cannot read {}: {why}", file.display())));
    }
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            ctx.unreadable(&file, &e.to_string());
            return Ok(Err(format!("cannot read {}: {e}", file.display())));
        }
    };
    let source = blake3::hash(&bytes);
    if source != *want {
        bail!(
            "{} changed while the stage ran (BLAKE3 {} ≠ {}); nothing is cached, run again",
            file.display(),
            &source.to_hex()[..12],
            &want.to_hex()[..12]
        );
    }
    let img = match crate::quietly(|| pixels::picture_to_gray(&bytes)) {
        Ok(img) if img.width > 0 && img.height > 0 => img,
        Ok(img) => return Ok(Err(format!("empty image ({}×{})", img.width, img.height))),
        Err(e) => return Ok(Err(format!("{}: {e:#}", file.display()))),
    };
    let square = pixels::letterbox(&img, p.size);
    let gray: Vec<u8> = square.data.iter().map(|&v| to_u8(v)).collect();
    let encoded = pixels::png_gray(&gray, p.size, p.size)?;
    let image_hash = blake3::hash(&encoded).to_hex().to_string();
    let image = image_rel(&image_hash, Format::Png);
    store(&ctx.out_dir.join(&image), &encoded).context("cannot write the converted image")?;
    Ok(Ok(Converted {
        image,
        image_hash,
        source_hash: source.to_hex().to_string(),
        width: img.width,
        height: img.height,
    }))
}

//! `vindr`: VinDr-CXR-style annotations (one CSV row per image × reader × finding:
//! image_id, rad_id, class_name, x_min, y_min, x_max, y_max) as `findings` (every
//! reader's row), image-level `labels` voted over the readers, `boxes` (per reader and
//! fused) and `rejects`.
//!
//! VinDr's training images were read by 3 radiologists independently, its test images
//! by a consensus of 5 (a CSV without rad_id: one reader, `consensus`). A class is
//! positive on an image when the readers who marked it pass `vote` — more than half of
//! the image's readers (`majority`, the default), `any`, `all`, or at least N — and
//! `<class>_uncertain` when some reader marked it but not enough: reader disagreement,
//! which train's `uncertain:` policies then handle like the labeller's suspicion cues.
//! (VinDr's publication does not say how to aggregate; this is pipe's choice, stated.)
//!
//! With a `dicoms` table among the inputs (collect over the DICOM folder, files named
//! `<image_id>.dicom` as VinDr ships them) the image key `sop_instance_uid` and
//! `patient_id` come from the file's header, so the labels join convert's images;
//! without one, both are the image_id. The votes are polars group-bys; box fusion is
//! greedy IoU clustering in plain Rust.

use std::collections::{BTreeMap, HashMap};

use anyhow::{anyhow, bail};
use arrow::array::Array;
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use pipe_core::stage::{Context, Reference, Stage};
use pipe_core::table::{TableBuilder, TableSchema, read_batch, str_col};

/// VinDr-CXR's 22 local and 6 global labels, as the public release spells them
/// (from the dataset's documentation, not from the blog post in the papers folder).
const VINDR_CLASSES: [&str; 28] = [
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Clavicle fracture",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Enlarged PA",
    "ILD",
    "Infiltration",
    "Lung cavity",
    "Lung cyst",
    "Lung Opacity",
    "Mediastinal shift",
    "Nodule/Mass",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
    "Rib fracture",
    "Other lesion",
    "COPD",
    "Lung tumor",
    "Pneumonia",
    "Tuberculosis",
    "Other diseases",
    "No finding",
];

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The annotations CSV (VinDr's annotations_train.csv or annotations_test.csv).
    pub annotations: String,
    /// The class names the CSV may use (matched without regard to case or spaces);
    /// each becomes a label column named in snake_case (`Nodule/Mass` → `nodule_mass`).
    #[serde(default = "default_classes")]
    pub classes: Vec<String>,
    /// When a class is positive for an image: `majority` (more than half of the
    /// image's readers), `any`, `all`, or a number of readers.
    #[serde(default)]
    pub vote: Vote,
    /// Boxes of one class overlapping by at least this IoU are one finding when fused.
    #[serde(default = "default_iou")]
    pub iou: f64,
}

fn default_classes() -> Vec<String> {
    VINDR_CLASSES.iter().map(|c| c.to_string()).collect()
}
fn default_iou() -> f64 {
    0.4
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
#[schemars(with = "String")]
pub enum Vote {
    #[default]
    Majority,
    Any,
    All,
    AtLeast(u32),
}

impl Vote {
    /// Whether `votes` of `readers` readers make a class positive.
    pub fn passes(self, votes: u32, readers: u32) -> bool {
        votes > 0
            && match self {
                Vote::Majority => 2 * votes > readers,
                Vote::Any => true,
                Vote::All => votes >= readers,
                Vote::AtLeast(n) => votes >= n,
            }
    }
}

impl Serialize for Vote {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Vote::Majority => s.serialize_str("majority"),
            Vote::Any => s.serialize_str("any"),
            Vote::All => s.serialize_str("all"),
            Vote::AtLeast(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Vote {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Vote, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u32),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(0) => Err(serde::de::Error::custom(
                "a vote of 0 readers would make every class positive",
            )),
            Raw::N(n) => Ok(Vote::AtLeast(n)),
            Raw::S(s) => match s.as_str() {
                "majority" => Ok(Vote::Majority),
                "any" => Ok(Vote::Any),
                "all" => Ok(Vote::All),
                other => Err(serde::de::Error::custom(format!(
                    "`{other}` is not a vote: majority, any, all or a number of readers"
                ))),
            },
        }
    }
}

/// `Nodule/Mass` → `nodule_mass`: a class name as a column name.
pub fn column_name(class: &str) -> String {
    let mut out = String::new();
    for c in class.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

/// The form in which class names are compared: lower case, single spaces.
fn folded(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

pub struct Vindr;

fn findings_schema() -> TableSchema {
    crate::schema!("vindr/findings")
}
fn boxes_schema() -> TableSchema {
    crate::schema!("vindr/boxes")
}
fn rejects_schema() -> TableSchema {
    crate::schema!("vindr/rejects")
}

/// One reader's finding.
#[derive(Debug, Clone)]
struct Finding {
    line: usize,
    image_id: String,
    rad_id: String,
    /// Index into params.classes.
    class: usize,
    bbox: Option<[f64; 4]>,
}

impl Stage for Vindr {
    type Params = Params;
    const KIND: &'static str = "vindr";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "import VinDr-style reader annotations: findings, labels voted over the readers, boxes per reader and fused";

    fn check(p: &Params) -> Vec<String> {
        let mut problems = Vec::new();
        if p.classes.is_empty() {
            problems.push("classes: is empty".to_string());
        }
        let mut seen: HashMap<String, &str> = HashMap::new();
        for c in &p.classes {
            let col = column_name(c);
            if col.is_empty() {
                problems.push(format!("classes: `{c}` has no letter or digit to name its column"));
            } else if let Some(other) = seen.insert(col.clone(), c) {
                problems.push(format!("classes: `{other}` and `{c}` would both be the column `{col}`"));
            } else if col == "image_id" || col == "readers" || col == "patient_id" || col == "sop_instance_uid" {
                problems.push(format!(
                    "classes: `{c}` would be the column `{col}`, which labels already has"
                ));
            }
        }
        if !(p.iou > 0.0 && p.iou <= 1.0) {
            problems.push(format!("iou: {} is not in (0, 1]", p.iou));
        }
        problems
    }

    fn references(p: &Params) -> Vec<Reference> {
        vec![Reference {
            param: "annotations".into(),
            path: p.annotations.clone(),
        }]
    }

    fn outputs(_: &Params) -> Vec<String> {
        vec!["findings".into(), "labels".into(), "boxes".into(), "rejects".into()]
    }

    fn run(p: &Params, ctx: &Context) -> anyhow::Result<()> {
        let csv = crate::csv::Table::read(&ctx.resolve(&p.annotations))?;
        let image_col = csv.column("image_id")?;
        let class_col = csv.column("class_name")?;
        let rad_col = csv.header.iter().position(|h| h == "rad_id");
        let box_cols = ["x_min", "y_min", "x_max", "y_max"].map(|c| csv.header.iter().position(|h| h == c));
        let class_of: HashMap<String, usize> = p.classes.iter().enumerate().map(|(i, c)| (folded(c), i)).collect();
        let images = Images::from_inputs(ctx)?;

        let mut rejects = TableBuilder::new(&rejects_schema());
        let mut reject = |line: usize, image_id: &str, reason: String| {
            rejects
                .i64("line", Some(line as i64))
                .str("image_id", Some(image_id))
                .str("reason", Some(&reason));
        };
        let mut findings = Vec::new();
        for (line, record) in &csv.rows {
            let cell = |i: usize| crate::csv::get(record, i);
            let image_id = cell(image_col);
            let class_name = cell(class_col);
            let rad_id = rad_col.map_or("consensus", cell);
            let why = if image_id.is_empty() {
                Some("no image_id".to_string())
            } else if rad_id.is_empty() {
                Some("no rad_id".to_string())
            } else if !class_of.contains_key(&folded(class_name)) {
                Some(format!("class `{class_name}` is not in params.classes"))
            } else if images.as_ref().is_some_and(|i| !i.key.contains_key(image_id)) {
                Some(format!(
                    "no DICOM file named {image_id}.dicom (or .dcm) in the dicoms input"
                ))
            } else {
                None
            };
            if let Some(why) = why {
                reject(*line, image_id, why);
                continue;
            }
            let bbox = match parse_box(box_cols.map(|c| c.map_or("", cell))) {
                Ok(b) => b,
                Err(why) => {
                    reject(*line, image_id, why);
                    continue;
                }
            };
            findings.push(Finding {
                line: *line,
                image_id: image_id.to_string(),
                rad_id: rad_id.to_string(),
                class: class_of[&folded(class_name)],
                bbox,
            });
        }
        ctx.count("rows_read", findings.len() as u64);
        ctx.count("rows_rejected", (csv.rows.len() - findings.len()) as u64);
        let key_of = |image_id: &str| -> (String, String) {
            match &images {
                Some(i) => i.key[image_id].clone(),
                None => (image_id.to_string(), image_id.to_string()),
            }
        };

        let mut table = TableBuilder::new(&findings_schema());
        for f in &findings {
            let b = f.bbox;
            table
                .i64("line", Some(f.line as i64))
                .str("image_id", Some(&f.image_id))
                .str("sop_instance_uid", Some(&key_of(&f.image_id).0))
                .str("rad_id", Some(&f.rad_id))
                .str("class_name", Some(&p.classes[f.class]))
                .f64("x_min", b.map(|b| b[0]))
                .f64("y_min", b.map(|b| b[1]))
                .f64("x_max", b.map(|b| b[2]))
                .f64("y_max", b.map(|b| b[3]));
        }
        ctx.write_table("findings", &findings_schema(), &table.finish()?)?;
        let mut labels = votes(p, &ctx.output_path("findings"))?;
        // The image key and patient from the DICOM headers.
        let id_column = labels.column("image_id").map_err(|e| anyhow!("{e}"))?;
        let id_column = id_column.str().map_err(|e| anyhow!("{e}"))?;
        let ids: Vec<String> = (0..id_column.len())
            .map(|i| id_column.get(i).unwrap_or_default().to_string())
            .collect();
        let (sops, patients): (Vec<String>, Vec<String>) = ids.iter().map(|i| key_of(i)).unzip();
        labels
            .insert_column(1, Column::new("sop_instance_uid".into(), sops))
            .and_then(|l| l.insert_column(2, Column::new("patient_id".into(), patients)))
            .map_err(|e| anyhow!("{e}"))?;
        ctx.count("images", labels.height() as u64);
        crate::frames::write(ctx, "labels", &mut labels, None)?;

        let readers = readers_per_image(&findings);
        let mut boxes = TableBuilder::new(&boxes_schema());
        let mut fused_kept = 0;
        for ((image_id, class), group) in by_image_and_class(&findings) {
            let sop = key_of(image_id).0;
            let mut push = |source: &str, n: usize, b: [f64; 4]| {
                boxes
                    .str("image_id", Some(image_id))
                    .str("sop_instance_uid", Some(&sop))
                    .str("class_name", Some(&p.classes[class]))
                    .str("source", Some(source))
                    .i64("readers", Some(n as i64))
                    .f64("x_min", Some(b[0]))
                    .f64("y_min", Some(b[1]))
                    .f64("x_max", Some(b[2]))
                    .f64("y_max", Some(b[3]));
            };
            for f in &group {
                push(&f.rad_id, 1, f.bbox.expect("grouped boxes have one"));
            }
            for cluster in fuse(&group, p.iou) {
                if p.vote.passes(cluster.readers as u32, readers[image_id]) {
                    push("fused", cluster.readers, cluster.bbox);
                    fused_kept += 1;
                }
            }
        }
        ctx.count("fused_boxes", fused_kept);
        ctx.write_table("boxes", &boxes_schema(), &boxes.finish()?)?;
        ctx.write_table("rejects", &rejects_schema(), &rejects.finish()?)?;
        Ok(())
    }
}

/// The four coordinates: all blank (no box) or all numbers with min ≤ max.
fn parse_box(cells: [&str; 4]) -> Result<Option<[f64; 4]>, String> {
    if cells.iter().all(|c| c.is_empty()) {
        return Ok(None);
    }
    let mut b = [0.0; 4];
    for (k, (c, name)) in cells.iter().zip(["x_min", "y_min", "x_max", "y_max"]).enumerate() {
        b[k] = c
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("{name} `{c}` is not a number (a box has all four coordinates or none)"))?;
    }
    if b[2] < b[0] || b[3] < b[1] {
        return Err(format!(
            "the box ({}, {}, {}, {}) has max < min",
            b[0], b[1], b[2], b[3]
        ));
    }
    Ok(Some(b))
}

/// Per image: its readers (distinct rad_ids) and per class the readers who marked it,
/// as polars group-bys over the findings table; the votes decide each class.
fn votes(p: &Params, findings: &std::path::Path) -> anyhow::Result<DataFrame> {
    let marks = crate::frames::read(findings)?.lazy().unique_stable_generic(
        Some(vec![col("image_id"), col("rad_id"), col("class_name")]),
        UniqueKeepStrategy::First,
    );
    let mut aggs = vec![col("rad_id").n_unique().cast(DataType::UInt32).alias("readers")];
    for c in &p.classes {
        aggs.push(
            col("class_name")
                .eq(lit(c.as_str()))
                .cast(DataType::UInt32)
                .sum()
                .alias(format!("{}__votes", column_name(c)).as_str()),
        );
    }
    let counted = marks.group_by_stable([col("image_id")]).agg(aggs);
    // Votes are distinct readers: marks are unique per (image, reader, class).
    let readers = col("readers");
    let mut columns = vec![col("image_id"), readers.clone().cast(DataType::Int64)];
    for c in &p.classes {
        let name = column_name(c);
        let votes = col(format!("{name}__votes").as_str());
        let positive = match p.vote {
            Vote::Majority => (votes.clone() * lit(2u32)).gt(readers.clone()),
            Vote::Any => votes.clone().gt(lit(0u32)),
            Vote::All => votes.clone().gt_eq(readers.clone()).and(votes.clone().gt(lit(0u32))),
            Vote::AtLeast(n) => votes.clone().gt_eq(lit(n)),
        };
        columns.push(positive.clone().alias(name.as_str()));
        columns.push(
            positive
                .not()
                .and(votes.gt(lit(0u32)))
                .alias(format!("{name}_uncertain").as_str()),
        );
    }
    counted
        .select(columns)
        .sort(["image_id"], SortMultipleOptions::default())
        .collect()
        .map_err(|e| anyhow!("voting over {}: {e}", findings.display()))
}

fn readers_per_image(findings: &[Finding]) -> HashMap<&str, u32> {
    let mut sets: HashMap<&str, std::collections::BTreeSet<&str>> = HashMap::new();
    for f in findings {
        sets.entry(&f.image_id).or_default().insert(&f.rad_id);
    }
    sets.into_iter().map(|(k, v)| (k, v.len() as u32)).collect()
}

/// Findings with a box, by (image, class), in (image, class, reader, line) order.
fn by_image_and_class(findings: &[Finding]) -> BTreeMap<(&str, usize), Vec<&Finding>> {
    let mut out: BTreeMap<(&str, usize), Vec<&Finding>> = BTreeMap::new();
    for f in findings.iter().filter(|f| f.bbox.is_some()) {
        out.entry((&f.image_id, f.class)).or_default().push(f);
    }
    for group in out.values_mut() {
        group.sort_by(|a, b| (&a.rad_id, a.line).cmp(&(&b.rad_id, b.line)));
    }
    out
}

pub fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: [f64; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else if a == b {
        1.0
    } else {
        0.0
    }
}

/// A cluster of boxes of one class on one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    /// The mean of the cluster's boxes.
    pub bbox: [f64; 4],
    /// Distinct readers in it.
    pub readers: usize,
}

/// Greedy clustering: each box (in reader order) joins the first cluster whose fused
/// box it overlaps by `threshold` and that has no box of its reader yet, or starts one.
fn fuse(group: &[&Finding], threshold: f64) -> Vec<Fused> {
    let mut clusters: Vec<(Vec<&str>, Vec<[f64; 4]>)> = Vec::new();
    let mean = |boxes: &[[f64; 4]]| {
        let mut m = [0.0; 4];
        for b in boxes {
            for k in 0..4 {
                m[k] += b[k] / boxes.len() as f64;
            }
        }
        m
    };
    for f in group {
        let b = f.bbox.expect("grouped boxes have one");
        let joined = clusters
            .iter_mut()
            .find(|(readers, boxes)| !readers.contains(&f.rad_id.as_str()) && iou(mean(boxes), b) >= threshold);
        match joined {
            Some((readers, boxes)) => {
                readers.push(&f.rad_id);
                boxes.push(b);
            }
            None => clusters.push((vec![&f.rad_id], vec![b])),
        }
    }
    clusters
        .into_iter()
        .map(|(readers, boxes)| Fused {
            bbox: mean(&boxes),
            readers: readers.len(),
        })
        .collect()
}

/// image_id → (sop_instance_uid, patient_id) from a `dicoms` input, by file stem.
struct Images {
    key: HashMap<String, (String, String)>,
}

impl Images {
    fn from_inputs(ctx: &Context) -> anyhow::Result<Option<Images>> {
        let Some(input) = ctx.inputs.iter().find(|i| i.table == "dicoms") else {
            return Ok(None);
        };
        let batch = read_batch(&input.path)?;
        let (path, sop, patient) = (
            str_col(&batch, "path")?,
            str_col(&batch, "sop_instance_uid")?,
            str_col(&batch, "patient_id")?,
        );
        let mut key = HashMap::new();
        for i in 0..batch.num_rows() {
            if sop.is_null(i) {
                continue;
            }
            let file = std::path::Path::new(path.value(i));
            let Some(stem) = file.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let patient = if patient.is_null(i) { stem } else { patient.value(i) };
            if let Some((other, _)) = key.insert(stem.to_string(), (sop.value(i).to_string(), patient.to_string()))
                && other != sop.value(i)
            {
                bail!(
                    "{}: two DICOM files named {stem} hold different images ({other} and {}); image_ids must name one image",
                    input.path.display(),
                    sop.value(i)
                );
            }
        }
        Ok(Some(Images { key }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_names_and_votes() {
        assert_eq!(column_name("Nodule/Mass"), "nodule_mass");
        assert_eq!(column_name(" Other  lesion "), "other_lesion");
        assert_eq!(column_name("ILD"), "ild");
        assert!(Vote::Majority.passes(2, 3) && !Vote::Majority.passes(1, 3) && !Vote::Majority.passes(1, 2));
        assert!(Vote::Majority.passes(1, 1));
        assert!(Vote::Any.passes(1, 3) && !Vote::Any.passes(0, 3));
        assert!(Vote::All.passes(3, 3) && !Vote::All.passes(2, 3));
        assert!(Vote::AtLeast(2).passes(2, 5) && !Vote::AtLeast(2).passes(1, 5));
        assert!(serde_yaml::from_str::<Vote>("0").is_err());
        assert_eq!(serde_yaml::from_str::<Vote>("2").unwrap(), Vote::AtLeast(2));
        assert!(
            serde_yaml::from_str::<Vote>("most")
                .unwrap_err()
                .to_string()
                .contains("majority, any, all")
        );
    }

    #[test]
    fn iou_of_boxes() {
        assert_eq!(iou([0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]), 1.0);
        assert_eq!(iou([0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]), 0.0);
        // 50 of 100 + 100 − 50.
        assert!((iou([0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]) - 50.0 / 150.0).abs() < 1e-12);
    }
}

//! The labelled images of a split, as train and evaluate both read them: `split`,
//! `labels` and `images` joined on sop_instance_uid, grouped by part.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, ensure};
use arrow::array::{Array, AsArray};

use pipe_core::table::{read_batch, str_col};

/// One image with its targets (1.0 / 0.0 per label, in params order).
#[derive(Debug, Clone)]
pub struct Example {
    pub sop_instance_uid: String,
    /// From `split` (evaluate's predictions table carries it).
    pub patient_id: String,
    pub image: PathBuf,
    pub targets: Vec<f32>,
    /// Per label: the label is uncertain (`<label>_uncertain`, or −1 in an integer
    /// label column); its target is then the value as labelled until a policy says.
    pub uncertain: Vec<bool>,
}

/// The training and validation examples, sorted by sop_instance_uid.
#[derive(Debug, Default)]
pub struct Examples {
    pub train: Vec<Example>,
    pub validation: Vec<Example>,
    /// Rows of `split` in another part, or without labels or an image.
    pub skipped: u64,
    /// Per label: whether `labels` says when it is uncertain.
    pub knows_uncertain: Vec<bool>,
}

/// The labelled examples of every part of `split`, each part sorted by sop_instance_uid.
#[derive(Debug, Default)]
pub struct ByPart {
    pub parts: BTreeMap<String, Vec<Example>>,
    /// Rows of `split` without labels or an image.
    pub skipped: u64,
    /// Per label: whether `labels` says when it is uncertain.
    pub knows_uncertain: Vec<bool>,
}

/// Join `split`, `labels` and `images` on sop_instance_uid, by part.
pub fn examples_by_part(
    labels_wanted: &[String],
    split: &Path,
    labels: &Path,
    images: &Path,
) -> anyhow::Result<ByPart> {
    let image_dir = images.parent().unwrap_or(Path::new("."));
    let images = read_batch(images)?;
    let (isop, ipath) = (str_col(&images, "sop_instance_uid")?, str_col(&images, "image")?);
    let image_of: HashMap<&str, &str> = (0..images.num_rows())
        .map(|i| (isop.value(i), ipath.value(i)))
        .collect();

    let labels = read_batch(labels)?;
    let lsop = str_col(&labels, "sop_instance_uid")?;
    let mut cols = Vec::new();
    for l in labels_wanted {
        let c = labels
            .column_by_name(l)
            .with_context(|| format!("labels has no column `{l}` (params.labels)"))?;
        let uncertain = labels.column_by_name(&format!("{l}_uncertain"));
        cols.push(LabelColumn::new(l, c, uncertain)?);
    }
    let knows_uncertain = cols.iter().map(LabelColumn::knows_uncertain).collect();
    let row_of: HashMap<&str, usize> = (0..labels.num_rows()).map(|i| (lsop.value(i), i)).collect();

    let split = read_batch(split)?;
    let (ssop, spart) = (str_col(&split, "sop_instance_uid")?, str_col(&split, "part")?);
    let spatient = str_col(&split, "patient_id")?;
    let mut out = ByPart {
        knows_uncertain,
        ..Default::default()
    };
    for i in 0..split.num_rows() {
        let sop = ssop.value(i);
        let (Some(&row), Some(&image)) = (row_of.get(sop), image_of.get(sop)) else {
            out.skipped += 1;
            continue;
        };
        let (targets, uncertain) = cols.iter().map(|c| c.at(row)).unzip();
        out.parts.entry(spart.value(i).to_string()).or_default().push(Example {
            sop_instance_uid: sop.to_string(),
            patient_id: spatient.value(i).to_string(),
            image: image_dir.join(image),
            targets,
            uncertain,
        });
    }
    for part in out.parts.values_mut() {
        part.sort_by(|a, b| a.sop_instance_uid.cmp(&b.sop_instance_uid));
    }
    Ok(out)
}

/// The `train` and `validation` parts (see [`examples_by_part`]); rows of other parts
/// count as skipped.
pub fn examples(labels_wanted: &[String], split: &Path, labels: &Path, images: &Path) -> anyhow::Result<Examples> {
    let mut by = examples_by_part(labels_wanted, split, labels, images)?;
    let train = by.parts.remove(crate::train::TRAIN_PART).unwrap_or_default();
    let validation = by.parts.remove(crate::train::VALIDATION_PART).unwrap_or_default();
    let other: usize = by.parts.values().map(Vec::len).sum();
    Ok(Examples {
        train,
        validation,
        skipped: by.skipped + other as u64,
        knows_uncertain: by.knows_uncertain,
    })
}

/// A label column of `labels`: bool (the label stage's: its `<label>_uncertain` column
/// beside it says which are uncertain), or integer as CheXpert writes them (1 positive,
/// 0 negative, −1 uncertain, null not mentioned; the last three train as 0 as labelled).
enum LabelColumn<'a> {
    Bool(&'a arrow::array::BooleanArray, Option<&'a arrow::array::BooleanArray>),
    Int(arrow::array::Int64Array),
}

impl<'a> LabelColumn<'a> {
    fn new(
        name: &str,
        c: &'a arrow::array::ArrayRef,
        uncertain: Option<&'a arrow::array::ArrayRef>,
    ) -> anyhow::Result<Self> {
        use arrow::datatypes::DataType;
        match c.data_type() {
            DataType::Boolean => {
                let u = match uncertain {
                    Some(u) => {
                        ensure!(
                            u.data_type() == &DataType::Boolean,
                            "labels column `{name}_uncertain` is not bool"
                        );
                        Some(u.as_boolean())
                    }
                    None => None,
                };
                Ok(LabelColumn::Bool(c.as_boolean(), u))
            }
            t if t.is_integer() => {
                let wide = arrow::compute::cast(c, &DataType::Int64)?;
                Ok(LabelColumn::Int(
                    wide.as_primitive::<arrow::datatypes::Int64Type>().clone(),
                ))
            }
            t => anyhow::bail!("labels column `{name}` is {t}, not bool or an integer (1 / 0 / −1)"),
        }
    }

    fn knows_uncertain(&self) -> bool {
        matches!(self, LabelColumn::Bool(_, Some(_)) | LabelColumn::Int(_))
    }

    /// (target as labelled, uncertain) at `row`.
    fn at(&self, row: usize) -> (f32, bool) {
        match self {
            LabelColumn::Bool(c, u) => (
                f32::from(u8::from(c.is_valid(row) && c.value(row))),
                u.is_some_and(|u| u.is_valid(row) && u.value(row)),
            ),
            LabelColumn::Int(c) => match c.is_valid(row).then(|| c.value(row)) {
                Some(1) => (1.0, false),
                Some(-1) => (0.0, true),
                _ => (0.0, false),
            },
        }
    }
}

//! A small CheXpert-like dataset: `CheXpert-v1.0-small/train.csv` in the public
//! format (Path, Sex, Age, Frontal/Lateral, AP/PA, the 14 observations as 1.0 / 0.0 /
//! -1.0 / blank) and a JPEG per row, drawn with the phantom of [`crate::image`] so the
//! observations show: a region's sign appears when one of its observations is
//! positive (and on a coin flip when uncertain). Labels are per study, as CheXpert's
//! are, so a study's views share them. A few rows are broken the way real exports
//! are — a missing image, a truncated JPEG, a cell that is not a label, a repeated
//! Path — and `truth/chexpert.parquet` says what the import must make of every row.

use std::path::Path;

use anyhow::Context as _;
use pipe_core::rng::Rng;
use pipe_core::table::{TableBuilder, TableMeta, write_table};
use rayon::prelude::*;

/// The CSV's observation headers, in its order.
pub const OBSERVATIONS: [&str; 14] = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
];

/// The phantom's region (chest wall, pleura, parenchyma, cardiac) that shows each
/// observation; None for No Finding and Support Devices.
const REGION: [Option<usize>; 14] = [
    None,
    Some(3),
    Some(3),
    Some(2),
    Some(2),
    Some(2),
    Some(2),
    Some(2),
    Some(2),
    Some(1),
    Some(1),
    Some(1),
    Some(0),
    None,
];

pub const DATASET: &str = "CheXpert-v1.0-small";

/// One row of the CSV.
#[derive(Clone)]
struct Row {
    path: String,
    patient: String,
    sex: &'static str,
    age: i64,
    frontal: bool,
    ap_pa: Option<&'static str>,
    labels: [Option<i64>; 14],
    /// The phantom's signs.
    signs: [bool; 5],
    defect: Option<&'static str>,
    seed: u64,
}

fn cell(v: Option<i64>) -> &'static str {
    match v {
        Some(1) => "1.0",
        Some(0) => "0.0",
        Some(-1) => "-1.0",
        _ => "",
    }
}

/// The 14 observations of one study.
fn draw_labels(rng: &mut Rng) -> [Option<i64>; 14] {
    let mut l = [None; 14];
    if rng.chance(0.3) {
        l[0] = Some(1);
    } else {
        for v in l.iter_mut().take(13).skip(1) {
            let u = rng.f64();
            *v = if u < 0.16 {
                Some(1)
            } else if u < 0.24 {
                Some(-1)
            } else if u < 0.34 {
                Some(0)
            } else {
                None
            };
        }
        if !l[1..13].iter().any(|v| *v == Some(1) || *v == Some(-1)) {
            l[rng.range(1, 13) as usize] = Some(1);
        }
    }
    if rng.chance(0.3) {
        l[13] = Some(1);
    }
    l
}

/// Write the dataset under `out`; returns the number of CSV rows.
pub fn generate(out: &Path, studies: usize, seed: u64, size: usize) -> anyhow::Result<usize> {
    anyhow::ensure!((16..=4096).contains(&size), "--size must be between 16 and 4096 pixels");
    let mut rows = Vec::new();
    let (mut patient, mut study_of_patient) = (1usize, 0usize);
    for s in 0..studies {
        let mut rng = Rng::for_item(seed, 31, s as u64);
        // 1–3 studies per patient.
        if study_of_patient > 0 && (study_of_patient >= 3 || rng.chance(0.5)) {
            patient += 1;
            study_of_patient = 0;
        }
        study_of_patient += 1;
        let labels = draw_labels(&mut rng);
        let sex = if rng.chance(0.02) {
            "Unknown"
        } else if rng.chance(0.5) {
            "Male"
        } else {
            "Female"
        };
        let age = rng.range(18, 91);
        let views = if rng.chance(0.25) { 2 } else { 1 };
        let mut signs = [false; 5];
        for (k, v) in labels.iter().enumerate() {
            if let Some(r) = REGION[k]
                && (*v == Some(1) || (*v == Some(-1) && rng.chance(0.5)))
            {
                signs[r] = true;
            }
        }
        for v in 1..=views {
            let frontal = v == 1;
            let pid = format!("patient{patient:05}");
            rows.push(Row {
                path: format!(
                    "{DATASET}/train/{pid}/study{study_of_patient}/view{v}_{}.jpg",
                    if frontal { "frontal" } else { "lateral" }
                ),
                patient: pid,
                sex,
                age,
                frontal,
                ap_pa: frontal.then(|| if rng.chance(0.7) { "AP" } else { "PA" }),
                labels,
                signs,
                defect: None,
                seed: rng.next_u64(),
            });
        }
    }
    // Broken rows, at fixed places (when there are enough rows).
    let n = rows.len();
    if n >= 20 {
        rows[n / 5].defect = Some("missing_image");
        rows[2 * n / 5].defect = Some("corrupt_image");
        rows[3 * n / 5].defect = Some("bad_cell");
        let mut again = rows[4 * n / 5].clone();
        again.defect = Some("duplicate");
        rows.push(again);
    }

    let dir = out.join(DATASET);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    rows.par_iter().try_for_each(|r| -> anyhow::Result<()> {
        if matches!(r.defect, Some("missing_image") | Some("duplicate")) {
            return Ok(());
        }
        let mut rng = Rng::for_item(r.seed, 32, 0);
        let img = crate::image::chest(&mut rng, size, r.signs);
        let pixels: Vec<u8> = img
            .iter()
            .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect();
        let mut jpeg = Vec::new();
        let side = u16::try_from(size)?;
        jpeg_encoder::Encoder::new(&mut jpeg, 90).encode(&pixels, side, side, jpeg_encoder::ColorType::Luma)?;
        if r.defect == Some("corrupt_image") {
            jpeg.truncate(jpeg.len() / 3);
        }
        let path = out.join(&r.path);
        std::fs::create_dir_all(path.parent().expect("parent"))?;
        std::fs::write(&path, &jpeg).with_context(|| format!("cannot write {}", path.display()))
    })?;

    let mut csv = String::from("Path,Sex,Age,Frontal/Lateral,AP/PA");
    for o in OBSERVATIONS {
        csv.push(',');
        csv.push_str(o);
    }
    csv.push('\n');
    for r in &rows {
        csv.push_str(&format!(
            "{},{},{},{},{}",
            r.path,
            r.sex,
            r.age,
            if r.frontal { "Frontal" } else { "Lateral" },
            r.ap_pa.unwrap_or("")
        ));
        for (k, v) in r.labels.iter().enumerate() {
            csv.push(',');
            // A value CheXpert never writes, in a place it would be read.
            if r.defect == Some("bad_cell") && k == 5 {
                csv.push_str("2.0");
            } else {
                csv.push_str(cell(*v));
            }
        }
        csv.push('\n');
    }
    std::fs::write(dir.join("train.csv"), csv).context("cannot write train.csv")?;

    let schema = pipe_cxr::schema!("synth/chexpert");
    let mut t = TableBuilder::new(&schema);
    for (i, r) in rows.iter().enumerate() {
        t.i64("line", Some(i as i64 + 2))
            .str("sop_instance_uid", Some(&r.path))
            .str("patient_id", Some(&r.patient))
            .str("frontal_lateral", Some(if r.frontal { "Frontal" } else { "Lateral" }))
            .str("ap_pa", r.ap_pa)
            .str("expected", Some(r.defect.unwrap_or("image")));
        for (k, name) in OBSERVATIONS.iter().enumerate() {
            t.i64(&name.to_lowercase().replace(' ', "_"), r.labels[k]);
        }
    }
    std::fs::create_dir_all(out.join("truth"))?;
    let meta = TableMeta {
        kind: "synth".into(),
        table: "chexpert".into(),
        ..Default::default()
    };
    write_table(&out.join("truth/chexpert.parquet"), &schema, &meta, &[t.finish()?])?;
    Ok(rows.len())
}

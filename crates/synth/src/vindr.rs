//! A small VinDr-CXR-like dataset: DICOM files named `<image_id>.dicom` under `train/`
//! and `test/`, `annotations_train.csv` (image_id, rad_id, class_name, x_min, y_min,
//! x_max, y_max: three readers per image, who sometimes miss a finding, sometimes see
//! one that is not there, and draw their boxes a little apart) and
//! `annotations_test.csv` (the consensus: no rad_id, the truth as drawn). Images are the
//! synthetic hospital's phantoms ([`crate::hospital`]), so each finding is visible
//! where its box says. Two training rows are broken as exports are (a class the
//! dataset does not have, a box with max < min). `truth/vindr.parquet` holds the
//! findings drawn.

use std::path::Path;

use anyhow::Context as _;
use pipe_core::rng::Rng;
use pipe_core::table::{TableBuilder, TableMeta, write_table};
use rayon::prelude::*;

use crate::hospital::{self, Study};

/// The VinDr classes the phantom's signs stand for, in its findings' order (chest
/// wall, pleura, parenchyma, cardiac, other), with each sign's box as fractions of the
/// image (x_min, y_min, x_max, y_max).
const CLASSES: [(&str, [f64; 4]); 5] = [
    ("Rib fracture", [0.15, 0.25, 0.45, 0.55]),
    ("Pleural effusion", [0.2, 0.62, 0.45, 0.8]),
    ("Nodule/Mass", [0.25, 0.3, 0.45, 0.6]),
    ("Cardiomegaly", [0.35, 0.45, 0.7, 0.75]),
    ("Other lesion", [0.55, 0.7, 0.75, 0.8]),
];

struct Image {
    image_id: String,
    sop_uid: String,
    test: bool,
    study: Study,
    k: usize,
}

fn column(class: &str) -> String {
    class.to_lowercase().replace(['/', ' '], "_")
}

/// Write the dataset under `out`; returns (train images, test images).
pub fn generate(out: &Path, studies: usize, seed: u64, size: usize) -> anyhow::Result<(usize, usize)> {
    anyhow::ensure!((16..=4096).contains(&size), "--size must be between 16 and 4096 pixels");
    let images: Vec<Image> = (0..studies)
        .into_par_iter()
        .filter_map(|i| {
            let study = hospital::study(seed, i);
            let k = study
                .images
                .iter()
                .position(|img| img.pa_chest && img.defect.is_none())?;
            let sop_uid = study.images[k].sop_uid.clone();
            Some(Image {
                image_id: blake3::hash(sop_uid.as_bytes()).to_hex()[..32].to_string(),
                sop_uid,
                test: i >= studies * 4 / 5,
                study,
                k,
            })
        })
        .collect();
    for part in ["train", "test", "truth"] {
        std::fs::create_dir_all(out.join(part))?;
    }
    images.par_iter().try_for_each(|im| {
        let part = if im.test { "test" } else { "train" };
        let path = out.join(part).join(format!("{}.dicom", im.image_id));
        crate::dicom::write(&path, &im.study, &im.study.images[im.k], im.k, size, seed)
            .with_context(|| format!("cannot write {}", path.display()))
    })?;

    let s = size as f64;
    let fmt = |v: f64| format!("{v:.2}");
    let box_cells = |b: [f64; 4]| b.map(fmt).join(",");
    let mut train = String::from("image_id,rad_id,class_name,x_min,y_min,x_max,y_max\n");
    let mut test = String::from("image_id,class_name,x_min,y_min,x_max,y_max\n");
    let mut broken = 0;
    for (n, im) in images.iter().enumerate() {
        let truth = im.study.findings;
        let true_box = |c: usize| CLASSES[c].1.map(|v| v * s);
        if im.test {
            if !truth.iter().any(|&f| f) {
                test += &format!("{},No finding,,,,\n", im.image_id);
            }
            for c in (0..5).filter(|&c| truth[c]) {
                test += &format!("{},{},{}\n", im.image_id, CLASSES[c].0, box_cells(true_box(c)));
            }
            continue;
        }
        let mut rng = Rng::for_item(seed, 41, n as u64);
        let mut readers: Vec<u32> = Vec::new();
        while readers.len() < 3 {
            let r = rng.range(1, 18) as u32;
            if !readers.contains(&r) {
                readers.push(r);
            }
        }
        for r in readers {
            let mut marked = 0;
            for c in 0..5 {
                let sees = if truth[c] { rng.chance(0.85) } else { rng.chance(0.03) };
                if !sees {
                    continue;
                }
                marked += 1;
                let b = true_box(c);
                let j = |v: f64, rng: &mut Rng| (v + rng.normal() * 0.02 * s).clamp(0.0, s);
                let (x0, y0) = (j(b[0], &mut rng), j(b[1], &mut rng));
                let (x1, y1) = (j(b[2], &mut rng).max(x0 + 1.0), j(b[3], &mut rng).max(y0 + 1.0));
                train += &format!(
                    "{},R{r},{},{}\n",
                    im.image_id,
                    CLASSES[c].0,
                    box_cells([x0, y0, x1, y1])
                );
            }
            if marked == 0 {
                train += &format!("{},R{r},No finding,,,,\n", im.image_id);
            }
        }
        // Two broken rows, beside real ones.
        if n == 3 && broken == 0 {
            train += &format!("{},R1,Lung nodle,10,10,20,20\n", im.image_id);
            train += &format!("{},R2,Nodule/Mass,30,10,20,20\n", im.image_id);
            broken = 2;
        }
    }
    std::fs::write(out.join("annotations_train.csv"), train).context("cannot write annotations_train.csv")?;
    std::fs::write(out.join("annotations_test.csv"), test).context("cannot write annotations_test.csv")?;

    let schema = pipe_cxr::schema!("synth/vindr");
    let mut t = TableBuilder::new(&schema);
    for im in &images {
        t.str("image_id", Some(&im.image_id))
            .str("sop_instance_uid", Some(&im.sop_uid))
            .str("part", Some(if im.test { "test" } else { "train" }));
        for (c, (name, _)) in CLASSES.iter().enumerate() {
            t.bool(&column(name), Some(im.study.findings[c]));
        }
        t.bool("no_finding", Some(!im.study.findings.iter().any(|&f| f)));
    }
    let meta = TableMeta {
        kind: "synth".into(),
        table: "vindr".into(),
        ..Default::default()
    };
    write_table(&out.join("truth/vindr.parquet"), &schema, &meta, &[t.finish()?])?;
    let tests = images.iter().filter(|i| i.test).count();
    Ok((images.len() - tests, tests))
}

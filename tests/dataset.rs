//! From the synthetic hospital to a split dataset: label → convert → split, with the
//! stratified, patient-level train/validation/test split of pipelines/phutho.yaml.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use arrow::array::AsArray;
use pipe_core::table::{read_batch, str_col};

#[test]
fn split_keeps_patients_together_and_class_rates_within_two_points() {
    let p = Project::new();
    synth(&p.path("hosp"), 2000, 32);
    phutho_on_hospital(&p, "d", 32, "");
    let r = p.pipe(&["run", "pipelines/d.yaml", "--until", "split"]).ok();
    assert_eq!(
        r.ran(),
        ["collect", "convert", "filter", "label", "match", "parse", "split"]
    );

    let read = |t: &str| read_batch(Path::new(p.pipe(&["path", "pipelines/d.yaml", t]).ok().stdout.trim())).unwrap();
    let split = read("split.split");
    let labels = read("label.labels");
    let images = read("convert.images");
    assert_eq!(split.num_rows(), images.num_rows().min(labels.num_rows()));
    assert!(split.num_rows() > 1500, "{} images split", split.num_rows());

    let mut part_of_patient: BTreeMap<String, String> = BTreeMap::new();
    let mut part_of_sop = BTreeMap::new();
    for i in 0..split.num_rows() {
        let (patient, part) = (
            str_col(&split, "patient_id").unwrap().value(i),
            str_col(&split, "part").unwrap().value(i),
        );
        let prev = part_of_patient.insert(patient.to_string(), part.to_string());
        assert!(
            prev.is_none() || prev.as_deref() == Some(part),
            "patient {patient} is in two parts"
        );
        part_of_sop.insert(
            str_col(&split, "sop_instance_uid").unwrap().value(i).to_string(),
            part.to_string(),
        );
    }
    let parts: BTreeSet<&str> = part_of_sop.values().map(String::as_str).collect();
    assert_eq!(parts, BTreeSet::from(["train", "validation", "test"]));

    for label in ["chest_wall", "pleura", "parenchyma", "cardiac", "abnormal"] {
        let col = labels.column_by_name(label).unwrap().as_boolean();
        let mut pos: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for i in 0..labels.num_rows() {
            let sop = str_col(&labels, "sop_instance_uid").unwrap().value(i);
            let Some(part) = part_of_sop.get(sop) else { continue };
            for key in [part.as_str(), "all"] {
                let e = pos.entry(key).or_default();
                e.0 += col.value(i) as usize;
                e.1 += 1;
            }
        }
        let (all_pos, all_n) = pos["all"];
        let rate = all_pos as f64 / all_n as f64;
        for (part, ratio) in [("train", 0.7), ("validation", 0.1), ("test", 0.2)] {
            let (pp, n) = pos[part];
            let share = n as f64 / all_n as f64;
            assert!((share - ratio).abs() < 0.01, "{part} share {share}");
            let part_rate = pp as f64 / n as f64;
            let within_two_points = (part_rate - rate).abs() <= 0.02;
            let within_one_example = (pp as f64 - rate * n as f64).abs() <= 1.0;
            assert!(
                within_two_points || (all_pos < 50 && within_one_example),
                "{label} in {part}: {part_rate:.4} vs {rate:.4}"
            );
        }
    }
    // split_stats is the paper's Table 2: counts per class and part add up.
    let stats = read("split.split_stats");
    assert_eq!(stats.num_rows(), 5 * 4);
}

/// Real archives hold resent instances: the same DICOM under a second name (one SOP
/// Instance UID, two paths). The copy is accounted for — convert's rejects name the
/// file converted — and nothing downstream fails on it (split used to stop with
/// "labels has sop_instance_uid … twice").
#[test]
fn a_resent_dicom_is_one_image_and_the_pipeline_goes_on() {
    let p = Project::new();
    synth(&p.path("hosp"), 150, 32);
    phutho_on_hospital(&p, "d", 32, "");
    p.pipe(&["run", "pipelines/d.yaml", "--until", "convert"]).ok();
    let read = |t: &str| read_batch(Path::new(p.pipe(&["path", "pipelines/d.yaml", t]).ok().stdout.trim())).unwrap();
    let images = read("convert.images");
    let original = str_col(&images, "dicom_path").unwrap().value(0).to_string();
    let copy = p.path("hosp/pacs/zz_resent.dcm");
    std::fs::copy(p.path(&original), &copy).unwrap();

    let r = p.pipe(&["run", "pipelines/d.yaml", "--until", "split"]).ok();
    assert!(r.stdout.contains("✓ split"), "{}", r.stdout);
    let rejects = read("convert.rejects");
    let reasons: Vec<String> = (0..rejects.num_rows())
        .map(|i| {
            format!(
                "{} {}",
                str_col(&rejects, "dicom_path").unwrap().value(i),
                str_col(&rejects, "reason").unwrap().value(i)
            )
        })
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("duplicate: same SOP Instance UID as ")),
        "{reasons:?}"
    );
    let labels = read("label.labels");
    let uids: BTreeSet<&str> = (0..labels.num_rows())
        .map(|i| str_col(&labels, "sop_instance_uid").unwrap().value(i))
        .collect();
    assert_eq!(uids.len(), labels.num_rows(), "one labels row per image");
}

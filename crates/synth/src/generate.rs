//! `pipe synth`: write the hospital's files and the ground truth beside them.
//!
//! ```text
//! DIR/pacs/<yyyymm>/<patient>/<study>_<k>.dcm    DICOM (some damaged on purpose)
//! DIR/his/<yyyymm>/<session>.xml                 HIS session files
//! DIR/truth/{dicoms,his_files,reports}.parquet   what every stage must make of them
//! DIR/truth/resolutions.csv                      answers to the match review queue
//! DIR/truth/overrides.csv                        answers to the label review queue
//! ```
//!
//! The truth of matching is computed by [`reference_match`], a deliberately naive
//! implementation of the paper's rule (every image against every report of its patient),
//! independent of the `match` stage it checks.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::NaiveDateTime;
use rayon::prelude::*;

use super::his;
use super::hospital::{Case, Defect, Study, study};
use pipe_core::table::{TableBuilder, TableMeta, write_table};

pub struct Options {
    pub out: PathBuf,
    pub studies: usize,
    pub seed: u64,
    /// Image side in pixels.
    pub size: usize,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub dicom_files: usize,
    pub his_files: usize,
    pub reports: usize,
}

/// Normalised description for "same description" (NFC, lower case, single spaces).
fn same_text(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    s.nfc()
        .collect::<String>()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the reference matcher decides for an image.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageOutcome {
    Pair(String),
    Review(Vec<String>),
    Unmatched(&'static str),
}

pub struct RefImage<'a> {
    pub sop: &'a str,
    pub patient: &'a str,
    pub time: NaiveDateTime,
}

pub struct RefReport<'a> {
    pub id: &'a str,
    pub patient: &'a str,
    pub time: NaiveDateTime,
    pub check_in: NaiveDateTime,
    pub check_out: NaiveDateTime,
    pub description: &'a str,
}

/// The paper's matching rule, naively: returns outcomes per image and the reason of
/// every report left unmatched.
pub fn reference_match(
    images: &[RefImage],
    reports: &[RefReport],
    max_delay_hours: i64,
) -> (Vec<ImageOutcome>, HashMap<String, &'static str>) {
    let max = chrono::Duration::hours(max_delay_hours);
    let mut used: HashMap<&str, bool> = HashMap::new();
    let outcomes: Vec<ImageOutcome> = images
        .iter()
        .map(|img| {
            let mine: Vec<&RefReport> = reports.iter().filter(|r| r.patient == img.patient).collect();
            let near: Vec<&&RefReport> = mine.iter().filter(|r| (r.time - img.time).abs() <= max).collect();
            let cands: Vec<&&&RefReport> = near
                .iter()
                .filter(|r| r.check_in <= img.time && img.time <= r.check_out)
                .collect();
            if mine.is_empty() {
                return ImageOutcome::Unmatched("no_report_for_patient");
            }
            if near.is_empty() {
                return ImageOutcome::Unmatched("no_report_within_max_delay");
            }
            if cands.is_empty() {
                return ImageOutcome::Unmatched("outside_session");
            }
            let first = same_text(cands[0].description);
            if cands.iter().all(|r| same_text(r.description) == first) {
                let best = cands
                    .iter()
                    .min_by_key(|r| ((r.time - img.time).abs(), r.id))
                    .expect("non-empty");
                used.insert(best.id, true);
                ImageOutcome::Pair(best.id.to_string())
            } else {
                let mut ids: Vec<String> = cands.iter().map(|r| r.id.to_string()).collect();
                ids.sort();
                for r in &cands {
                    used.insert(r.id, true);
                }
                ImageOutcome::Review(ids)
            }
        })
        .collect();
    let mut unmatched = HashMap::new();
    for r in reports {
        if used.contains_key(r.id) {
            continue;
        }
        let mine: Vec<&RefImage> = images.iter().filter(|i| i.patient == r.patient).collect();
        let near: Vec<&&RefImage> = mine.iter().filter(|i| (r.time - i.time).abs() <= max).collect();
        let inside = near.iter().any(|i| r.check_in <= i.time && i.time <= r.check_out);
        let reason = if mine.is_empty() {
            "no_image_for_patient"
        } else if near.is_empty() {
            "no_image_within_max_delay"
        } else if !inside {
            "outside_session"
        } else {
            "duplicate_of_matched_report"
        };
        unmatched.insert(r.id.to_string(), reason);
    }
    (outcomes, unmatched)
}

/// Generate the hospital.
pub fn generate(opts: &Options) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        opts.size >= 16 && opts.size <= 4096,
        "--size must be between 16 and 4096 pixels"
    );
    let studies: Vec<Study> = (0..opts.studies).into_par_iter().map(|i| study(opts.seed, i)).collect();
    for dir in ["pacs", "his", "truth"] {
        std::fs::create_dir_all(opts.out.join(dir))?;
    }
    // Files, in parallel; each is a function of (seed, study) only.
    studies.par_iter().try_for_each(|s| -> anyhow::Result<()> {
        for (k, img) in s.images.iter().enumerate() {
            let path = opts.out.join(&img.rel_path);
            std::fs::create_dir_all(path.parent().expect("parent"))?;
            super::dicom::write(&path, s, img, k, opts.size, opts.seed)?;
        }
        if s.has_session_file {
            let path = opts.out.join(&s.his_rel_path);
            std::fs::create_dir_all(path.parent().expect("parent"))?;
            std::fs::write(&path, his::session_bytes(s, s.case == Case::MalformedXml))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    })?;
    write_truth(&opts.out, &studies)
}

fn write_truth(out: &Path, studies: &[Study]) -> anyhow::Result<Summary> {
    // What parse yields: chest reports of well-formed files with a description.
    let parsed = |s: &Study| s.has_session_file && s.case != Case::MalformedXml;
    let mut ref_reports = Vec::new();
    for s in studies.iter().filter(|s| parsed(s)) {
        for r in s.reports.iter().filter(|r| r.chest && !r.description.is_empty()) {
            ref_reports.push(RefReport {
                id: &r.report_id,
                patient: &s.patient_id,
                time: r.report_time,
                check_in: s.check_in,
                check_out: s.check_out,
                description: &r.description,
            });
        }
    }
    let mut ref_images = Vec::new();
    for s in studies {
        for img in s.images.iter().filter(|i| i.pa_chest) {
            ref_images.push(RefImage {
                sop: &img.sop_uid,
                patient: &s.patient_id,
                time: s.study_time,
            });
        }
    }
    let (outcomes, unmatched_reports) = reference_match(&ref_images, &ref_reports, 24);
    let by_sop: HashMap<&str, &ImageOutcome> = ref_images.iter().map(|i| i.sop).zip(&outcomes).collect();
    let mut report_state: HashMap<String, &str> = HashMap::new();
    for o in &outcomes {
        match o {
            ImageOutcome::Pair(id) => {
                report_state.insert(id.clone(), "pairs");
            }
            ImageOutcome::Review(ids) => {
                for id in ids {
                    report_state.entry(id.clone()).or_insert("review");
                }
            }
            ImageOutcome::Unmatched(_) => {}
        }
    }

    let meta = |table: &str| TableMeta {
        kind: "synth".into(),
        table: table.into(),
        ..Default::default()
    };
    let schema = pipe_cxr::schema!("synth/dicoms");
    let mut t = TableBuilder::new(&schema);
    let mut resolutions = BTreeMap::new();
    let mut n_dicom = 0;
    for s in studies {
        for img in &s.images {
            n_dicom += 1;
            let rejected = img.defect.is_some();
            let outcome = by_sop.get(img.sop_uid.as_str());
            let (m, report, cands, reason) = match outcome {
                Some(ImageOutcome::Pair(id)) => (Some("pairs"), Some(id.clone()), None, None),
                Some(ImageOutcome::Review(ids)) => {
                    if let Some(intended) = &s.intended_report {
                        resolutions.insert(img.sop_uid.clone(), intended.clone());
                    }
                    (Some("review"), None, Some(ids.join(",")), None)
                }
                Some(ImageOutcome::Unmatched(r)) => (Some("unmatched_dicoms"), None, None, Some(*r)),
                None => (None, None, None, None),
            };
            t.str("path", Some(&img.rel_path))
                .str("case", Some(s.case.name()))
                .str(
                    "sop_instance_uid",
                    (img.defect != Some(Defect::NotDicom)).then_some(img.sop_uid.as_str()),
                )
                .str("patient_id", Some(&s.patient_id))
                .time("study_time", Some(s.study_time))
                .str("collect", Some(if rejected { "rejects" } else { "dicoms" }))
                .bool("pa_chest", Some(img.pa_chest))
                .str("match", m)
                .str("report_id", report.as_deref())
                .str("candidates", cands.as_deref())
                .str(
                    "intended_report_id",
                    s.intended_report.as_deref().filter(|_| img.pa_chest),
                )
                .str("reason", reason);
        }
    }
    write_table(
        &out.join("truth/dicoms.parquet"),
        &schema,
        &meta("dicoms"),
        &[t.finish()?],
    )?;

    let schema = pipe_cxr::schema!("synth/his_files");
    let mut t = TableBuilder::new(&schema);
    let mut n_his = 0;
    for s in studies.iter().filter(|s| s.has_session_file) {
        n_his += 1;
        t.str("path", Some(&s.his_rel_path))
            .str("session_id", Some(&s.session_id))
            .str("encoding", Some(if s.utf16 { "utf-16" } else { "utf-8" }))
            .str(
                "parse",
                Some(if s.case == Case::MalformedXml {
                    "rejects"
                } else {
                    "sessions"
                }),
            );
    }
    write_table(
        &out.join("truth/his_files.parquet"),
        &schema,
        &meta("his_files"),
        &[t.finish()?],
    )?;

    let schema = pipe_cxr::schema!("synth/reports");
    let mut t = TableBuilder::new(&schema);
    let mut n_reports = 0;
    for s in studies.iter().filter(|s| s.has_session_file) {
        for r in &s.reports {
            n_reports += 1;
            let parse = if !parsed(s) {
                "file_rejected"
            } else if !r.chest {
                "other_service"
            } else if r.description.is_empty() {
                "rejects"
            } else {
                "reports"
            };
            let (m, reason) = if parse == "reports" {
                match report_state.get(&r.report_id) {
                    Some(state) => (Some(*state), None),
                    None => (Some("unmatched_reports"), unmatched_reports.get(&r.report_id).copied()),
                }
            } else {
                (None, None)
            };
            let l = r.report.as_ref().map(|x| x.labels);
            t.str("report_id", Some(&r.report_id))
                .str("session_id", Some(&s.session_id))
                .str("patient_id", Some(&s.patient_id))
                .time("check_in", Some(s.check_in))
                .time("check_out", Some(s.check_out))
                .str("service_id", Some(r.service_id))
                .time("report_time", Some(r.report_time))
                .str("description", Some(&r.description))
                .str("conclusion", Some(&r.conclusion))
                .bool("chest", Some(r.chest))
                .str("parse", Some(parse))
                .str("match", m)
                .str("reason", reason)
                .bool("chest_wall", l.map(|l| l[0]))
                .bool("pleura", l.map(|l| l[1]))
                .bool("parenchyma", l.map(|l| l[2]))
                .bool("cardiac", l.map(|l| l[3]))
                .bool("abnormal", l.map(|l| l[4]))
                .bool("decidable", r.report.as_ref().map(|x| x.decidable))
                .str("style", r.report.as_ref().map(|x| x.style));
        }
    }
    write_table(
        &out.join("truth/reports.parquet"),
        &schema,
        &meta("reports"),
        &[t.finish()?],
    )?;

    // The radiologist's answers for descriptions the labeller cannot decide.
    let mut overrides = BTreeMap::new();
    for s in studies {
        for r in &s.reports {
            if let Some(rep) = r.report.as_ref().filter(|x| !x.decidable) {
                let l = rep.labels.map(|b| if b { "1" } else { "0" }).join(",");
                overrides.insert(pipe_cxr::label::description_hash(&r.description), l);
            }
        }
    }
    let mut csv = String::from("description_hash,chest_wall,pleura,parenchyma,cardiac,abnormal,note\n");
    for (h, l) in &overrides {
        csv += &format!("{h},{l},synthetic radiologist\n");
    }
    std::fs::write(out.join("truth/overrides.csv"), csv)?;

    let mut csv = String::from("sop_instance_uid,report_id\n");
    for (sop, id) in &resolutions {
        csv += &format!("{sop},{id}\n");
    }
    std::fs::write(out.join("truth/resolutions.csv"), csv)?;
    Ok(Summary {
        dicom_files: n_dicom,
        his_files: n_his,
        reports: n_reports,
    })
}

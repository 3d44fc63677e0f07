//! `match`: pair each kept DICOM image with its report.
//!
//! Paper, "Data matching": same PATIENT_ID, |REPORT_TIME − STUDY_TIME| ≤ 24 h, and
//! CHECK_IN_TIME ≤ STUDY_TIME ≤ CHECK_OUT_TIME. Several candidates with the same
//! (normalised) description: the closest in time is taken. Different descriptions: the
//! image goes to `review`, and a radiologist's answer in the resolutions file
//! (`sop_instance_uid,report_id`) settles it on the next run.
//!
//! A hash join on patient, then a binary search in the patient's reports sorted by
//! time: O((images + reports) log reports), not a nested loop.

use std::collections::{HashMap, HashSet};

use anyhow::{Context as _, bail};
use arrow::array::Array;
use serde::{Deserialize, Serialize};

use crate::stage::{Context, Reference, Stage};
use crate::table::{TableBuilder, TableSchema, read_batch, str_col, time_col, to_datetime, write_table};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Largest |report_time − study_time|, in hours.
    #[serde(default = "default_delay")]
    pub max_delay_hours: f64,
    /// Answers to the review queue: CSV `sop_instance_uid,report_id`.
    #[serde(default = "default_resolutions")]
    pub resolutions: String,
}

fn default_delay() -> f64 {
    24.0
}
fn default_resolutions() -> String {
    "stages/match/resolutions.csv".into()
}

pub struct Match;

impl Stage for Match {
    type Params = Params;
    const KIND: &'static str = "match";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "pair DICOM images with reports (patient, 24 h, session window)";

    fn outputs(_: &Params) -> Vec<String> {
        ["pairs", "review", "unmatched_dicoms", "unmatched_reports"]
            .map(String::from)
            .to_vec()
    }

    fn references(p: &Params) -> Vec<Reference> {
        vec![Reference {
            param: "resolutions".into(),
            path: p.resolutions.clone(),
        }]
    }

    fn run(p: &Params, ctx: &Context) -> anyhow::Result<()> {
        let resolutions = load_resolutions(&ctx.resolve(&p.resolutions))?;
        let images = read_batch(ctx.input("kept")?)?;
        let reports = read_batch(ctx.input("reports")?)?;
        let imgs = Images {
            sop: str_col(&images, "sop_instance_uid")?,
            path: str_col(&images, "path")?,
            patient: str_col(&images, "patient_id")?,
            time: time_col(&images, "study_time")?,
        };
        let reps = Reports {
            id: str_col(&reports, "report_id")?,
            session: str_col(&reports, "session_id")?,
            patient: str_col(&reports, "patient_id")?,
            time: time_col(&reports, "report_time")?,
            check_in: time_col(&reports, "check_in")?,
            check_out: time_col(&reports, "check_out")?,
            description: str_col(&reports, "description")?,
            conclusion: str_col(&reports, "conclusion")?,
        };
        let out = match_all(&imgs, &reps, p.max_delay_hours, &resolutions)?;
        ctx.progress.set_total(images.num_rows() as u64);
        ctx.progress.inc(images.num_rows() as u64);

        let schema = |t: &str| -> TableSchema {
            match t {
                "pairs" => crate::schema!("match/pairs"),
                "review" => crate::schema!("match/review"),
                "unmatched_dicoms" => crate::schema!("match/unmatched_dicoms"),
                _ => crate::schema!("match/unmatched_reports"),
            }
        };
        let hours = |i: usize, r: usize| (reps.time.value(r) - imgs.time.value(i)) as f64 / 3.6e9;
        let mut pairs = TableBuilder::new(&schema("pairs"));
        let mut review = TableBuilder::new(&schema("review"));
        let mut un_d = TableBuilder::new(&schema("unmatched_dicoms"));
        for (i, o) in out.images.iter().enumerate() {
            match o {
                Outcome::Pair(r, rule) => {
                    pairs
                        .str("sop_instance_uid", Some(imgs.sop.value(i)))
                        .str("path", Some(imgs.path.value(i)))
                        .str("patient_id", Some(imgs.patient.value(i)))
                        .time("study_time", Some(to_datetime(imgs.time.value(i))))
                        .str("report_id", Some(reps.id.value(*r)))
                        .str("session_id", Some(reps.session.value(*r)))
                        .time("report_time", Some(to_datetime(reps.time.value(*r))))
                        .f64("delay_hours", Some(hours(i, *r)))
                        .str("description", Some(reps.description.value(*r)))
                        .str(
                            "conclusion",
                            reps.conclusion.is_valid(*r).then(|| reps.conclusion.value(*r)),
                        )
                        .str("rule", Some(rule));
                }
                Outcome::Review(cands, note) => {
                    for &r in cands {
                        review
                            .str("sop_instance_uid", Some(imgs.sop.value(i)))
                            .str("path", Some(imgs.path.value(i)))
                            .str("patient_id", Some(imgs.patient.value(i)))
                            .time("study_time", Some(to_datetime(imgs.time.value(i))))
                            .str("report_id", Some(reps.id.value(r)))
                            .time("report_time", Some(to_datetime(reps.time.value(r))))
                            .f64("delay_hours", Some(hours(i, r)))
                            .str("description", Some(reps.description.value(r)))
                            .str("note", note.as_deref());
                    }
                }
                Outcome::Unmatched(reason) => {
                    un_d.str("sop_instance_uid", Some(imgs.sop.value(i)))
                        .str("path", Some(imgs.path.value(i)))
                        .str("patient_id", Some(imgs.patient.value(i)))
                        .time("study_time", Some(to_datetime(imgs.time.value(i))))
                        .str("reason", Some(reason));
                }
            }
        }
        let mut un_r = TableBuilder::new(&schema("unmatched_reports"));
        for (r, reason) in &out.unmatched_reports {
            un_r.str("report_id", Some(reps.id.value(*r)))
                .str("session_id", Some(reps.session.value(*r)))
                .str("patient_id", Some(reps.patient.value(*r)))
                .time("report_time", Some(to_datetime(reps.time.value(*r))))
                .str("reason", Some(reason));
        }
        for (t, mut b) in [
            ("pairs", pairs),
            ("review", review),
            ("unmatched_dicoms", un_d),
            ("unmatched_reports", un_r),
        ] {
            let batch = b.finish()?;
            write_table(&ctx.output_path(t), &schema(t), &ctx.meta.for_table(t), &[batch])?;
        }
        Ok(())
    }
}

pub struct Images<'a> {
    pub sop: &'a arrow::array::StringArray,
    pub path: &'a arrow::array::StringArray,
    pub patient: &'a arrow::array::StringArray,
    pub time: &'a arrow::array::TimestampMicrosecondArray,
}

pub struct Reports<'a> {
    pub id: &'a arrow::array::StringArray,
    pub session: &'a arrow::array::StringArray,
    pub patient: &'a arrow::array::StringArray,
    pub time: &'a arrow::array::TimestampMicrosecondArray,
    pub check_in: &'a arrow::array::TimestampMicrosecondArray,
    pub check_out: &'a arrow::array::TimestampMicrosecondArray,
    pub description: &'a arrow::array::StringArray,
    pub conclusion: &'a arrow::array::StringArray,
}

/// Decision for one image; indices are report rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pair(usize, &'static str),
    Review(Vec<usize>, Option<String>),
    Unmatched(&'static str),
}

pub struct Matched {
    pub images: Vec<Outcome>,
    /// (report row, reason), in report order.
    pub unmatched_reports: Vec<(usize, &'static str)>,
}

/// Description as compared for "same description": NFC, lower case, single spaces,
/// no punctuation at line ends.
pub fn normalize_description(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let s: String = s.nfc().collect::<String>().to_lowercase();
    s.lines()
        .map(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .trim_end_matches(['.', ',', ';', ':'])
                .to_string()
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn load_resolutions(path: &std::path::Path) -> anyhow::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read resolutions {}", path.display()))?;
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (n == 0 && line.starts_with("sop_instance_uid")) {
            continue;
        }
        let Some((sop, report)) = line.split_once(',') else {
            bail!(
                "{}:{}: expected `sop_instance_uid,report_id`, got {line:?}",
                path.display(),
                n + 1
            );
        };
        out.insert(sop.trim().to_string(), report.trim().to_string());
    }
    Ok(out)
}

/// The matching rule over whole tables.
pub fn match_all(
    imgs: &Images,
    reps: &Reports,
    max_delay_hours: f64,
    resolutions: &HashMap<String, String>,
) -> anyhow::Result<Matched> {
    let max = (max_delay_hours * 3.6e9) as i64;
    // Reports by patient, sorted by time.
    let mut by_patient: HashMap<&str, Vec<usize>> = HashMap::new();
    for r in 0..reps.id.len() {
        by_patient.entry(reps.patient.value(r)).or_default().push(r);
    }
    for v in by_patient.values_mut() {
        v.sort_by_key(|&r| (reps.time.value(r), r));
    }
    let report_row: HashMap<&str, usize> = (0..reps.id.len()).map(|r| (reps.id.value(r), r)).collect();
    // Descriptions are compared only between candidates of one image: normalise lazily.
    let mut norm: Vec<Option<String>> = vec![None; reps.id.len()];
    let mut normalized = |r: usize| -> String {
        norm[r]
            .get_or_insert_with(|| normalize_description(reps.description.value(r)))
            .clone()
    };

    let mut candidate_of = HashSet::new();
    let mut used = HashSet::new();
    let mut not_chosen = HashSet::new();
    let mut images = Vec::with_capacity(imgs.sop.len());
    for i in 0..imgs.sop.len() {
        let t = imgs.time.value(i);
        let Some(list) = by_patient.get(imgs.patient.value(i)) else {
            images.push(Outcome::Unmatched("no_report_for_patient"));
            continue;
        };
        let lo = list.partition_point(|&r| reps.time.value(r) < t - max);
        let hi = list.partition_point(|&r| reps.time.value(r) <= t + max);
        let near = &list[lo..hi];
        let cands: Vec<usize> = near
            .iter()
            .copied()
            .filter(|&r| reps.check_in.value(r) <= t && t <= reps.check_out.value(r))
            .collect();
        candidate_of.extend(cands.iter().copied());
        let outcome = if near.is_empty() {
            Outcome::Unmatched("no_report_within_max_delay")
        } else if cands.is_empty() {
            Outcome::Unmatched("outside_session")
        } else if let Some(answer) = resolutions.get(imgs.sop.value(i)) {
            match report_row.get(answer.as_str()) {
                Some(&r) if reps.patient.value(r) == imgs.patient.value(i) => {
                    not_chosen.extend(cands.iter().copied().filter(|&c| c != r));
                    Outcome::Pair(r, "resolved")
                }
                Some(_) => Outcome::Review(
                    cands,
                    Some(format!("resolution names report {answer} of another patient")),
                ),
                None => Outcome::Review(
                    cands,
                    Some(format!(
                        "resolution names report {answer}, which is not among the parsed reports"
                    )),
                ),
            }
        } else if cands.len() == 1 || {
            let first = normalized(cands[0]);
            cands[1..].iter().all(|&r| normalized(r) == first)
        } {
            let best = *cands
                .iter()
                .min_by_key(|&&r| ((reps.time.value(r) - t).abs(), reps.id.value(r)))
                .expect("non-empty");
            Outcome::Pair(
                best,
                if cands.len() == 1 {
                    "single"
                } else {
                    "same_description_closest"
                },
            )
        } else {
            let mut c = cands;
            c.sort_by_key(|&r| reps.id.value(r));
            Outcome::Review(c, None)
        };
        match &outcome {
            Outcome::Pair(r, _) => {
                used.insert(*r);
            }
            Outcome::Review(c, _) => used.extend(c.iter().copied()),
            Outcome::Unmatched(_) => {}
        }
        images.push(outcome);
    }

    // Why each remaining report has no image: look at the patient's images.
    let mut images_by_patient: HashMap<&str, Vec<i64>> = HashMap::new();
    for i in 0..imgs.sop.len() {
        images_by_patient
            .entry(imgs.patient.value(i))
            .or_default()
            .push(imgs.time.value(i));
    }
    for v in images_by_patient.values_mut() {
        v.sort();
    }
    let mut unmatched_reports = Vec::new();
    for r in 0..reps.id.len() {
        if used.contains(&r) {
            continue;
        }
        let reason = match images_by_patient.get(reps.patient.value(r)) {
            None => "no_image_for_patient",
            Some(times) => {
                let t = reps.time.value(r);
                let lo = times.partition_point(|&x| x < t - max);
                let hi = times.partition_point(|&x| x <= t + max);
                if lo == hi {
                    "no_image_within_max_delay"
                } else if not_chosen.contains(&r) {
                    "not_chosen_in_review"
                } else if !candidate_of.contains(&r) {
                    "outside_session"
                } else {
                    "duplicate_of_matched_report"
                }
            }
        };
        unmatched_reports.push((r, reason));
    }
    Ok(Matched {
        images,
        unmatched_reports,
    })
}

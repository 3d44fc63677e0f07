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
use std::sync::Arc;

use anyhow::{Context as _, bail};
use arrow::array::{Array, ArrayRef, Float64Array, StringArray, UInt32Array};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use pipe_core::stage::{Context, Reference, Stage};
use pipe_core::table::{read_batch, str_col, time_col, write_table};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Largest |report_time − study_time|, in hours.
    #[serde(default = "default_delay", deserialize_with = "positive_hours")]
    pub max_delay_hours: f64,
    /// Answers to the review queue: CSV `sop_instance_uid,report_id`.
    #[serde(default = "default_resolutions")]
    pub resolutions: String,
}

fn default_delay() -> f64 {
    24.0
}

fn positive_hours<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(v.is_finite() && v > 0.0) {
        return Err(serde::de::Error::custom(format!(
            "max_delay_hours must be a number of hours > 0, got {v}"
        )));
    }
    Ok(v)
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

    fn reads(_: &Params) -> Vec<&'static str> {
        vec!["kept", "reports"]
    }

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
        let started = std::time::Instant::now();
        let resolutions = load_resolutions(&ctx.resolve(&p.resolutions))?;
        let images = read_batch(ctx.input("kept")?)?;
        let reports = read_batch(ctx.input("reports")?)?;
        let imgs = Images {
            sop: str_col(&images, "sop_instance_uid")?,
            path: str_col(&images, "path")?,
            patient: str_col(&images, "patient_id")?,
            time: time_col(&images, "study_time")?,
        };
        // Carried to `pairs` so that convert can check it reads what collect hashed;
        // images from elsewhere (a command stage) may have none: null, not checked.
        let no_hash = arrow::array::new_null_array(&arrow::datatypes::DataType::Utf8, images.num_rows());
        let file_hash: &dyn Array = match images.column_by_name("file_hash") {
            Some(_) => str_col(&images, "file_hash")?,
            None => no_hash.as_ref(),
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
        let read = started.elapsed();
        let out = match_all(&imgs, &reps, p.max_delay_hours, &resolutions)?;
        let matched = started.elapsed() - read;
        account_resolutions(ctx, &resolutions, &imgs, &out);
        ctx.progress.set_total(images.num_rows() as u64);
        ctx.progress.inc(images.num_rows() as u64);

        // Output columns are gathered from the input columns by row number (arrow's
        // `take`), not built cell by cell.
        let mut pairs = Rows::default();
        let mut review = Rows::default();
        let mut un_d = Rows::default();
        for (i, o) in out.images.iter().enumerate() {
            match o {
                Outcome::Pair(r, rule) => pairs.push(i, *r, Some(rule)),
                Outcome::Review(cands, note) => {
                    for &r in cands {
                        review.push(i, r, note.as_deref());
                    }
                }
                Outcome::Unmatched(reason) => un_d.push(i, 0, Some(reason)),
            }
        }
        let mut un_r = Rows::default();
        for (r, reason) in &out.unmatched_reports {
            un_r.push(0, *r, Some(reason));
        }
        let delay_hours = |rows: &Rows| -> ArrayRef {
            let h = rows
                .image
                .iter()
                .zip(&rows.report)
                .map(|(&i, &r)| (reps.time.value(r as usize) - imgs.time.value(i as usize)) as f64 / 3.6e9);
            Arc::new(Float64Array::from_iter_values(h))
        };
        let tables = [
            (
                "pairs",
                crate::schema!("match/pairs"),
                vec![
                    ("sop_instance_uid", take(imgs.sop, &pairs.image)?),
                    ("path", take(imgs.path, &pairs.image)?),
                    ("file_hash", take(file_hash, &pairs.image)?),
                    ("patient_id", take(imgs.patient, &pairs.image)?),
                    ("study_time", take(imgs.time, &pairs.image)?),
                    ("report_id", take(reps.id, &pairs.report)?),
                    ("session_id", take(reps.session, &pairs.report)?),
                    ("report_time", take(reps.time, &pairs.report)?),
                    ("delay_hours", delay_hours(&pairs)),
                    ("description", take(reps.description, &pairs.report)?),
                    ("conclusion", take(reps.conclusion, &pairs.report)?),
                    ("rule", pairs.text()),
                ],
            ),
            (
                "review",
                crate::schema!("match/review"),
                vec![
                    ("sop_instance_uid", take(imgs.sop, &review.image)?),
                    ("path", take(imgs.path, &review.image)?),
                    ("patient_id", take(imgs.patient, &review.image)?),
                    ("study_time", take(imgs.time, &review.image)?),
                    ("report_id", take(reps.id, &review.report)?),
                    ("report_time", take(reps.time, &review.report)?),
                    ("delay_hours", delay_hours(&review)),
                    ("description", take(reps.description, &review.report)?),
                    ("note", review.text()),
                ],
            ),
            (
                "unmatched_dicoms",
                crate::schema!("match/unmatched_dicoms"),
                vec![
                    ("sop_instance_uid", take(imgs.sop, &un_d.image)?),
                    ("path", take(imgs.path, &un_d.image)?),
                    ("patient_id", take(imgs.patient, &un_d.image)?),
                    ("study_time", take(imgs.time, &un_d.image)?),
                    ("reason", un_d.text()),
                ],
            ),
            (
                "unmatched_reports",
                crate::schema!("match/unmatched_reports"),
                vec![
                    ("report_id", take(reps.id, &un_r.report)?),
                    ("session_id", take(reps.session, &un_r.report)?),
                    ("patient_id", take(reps.patient, &un_r.report)?),
                    ("report_time", take(reps.time, &un_r.report)?),
                    ("reason", un_r.text()),
                ],
            ),
        ];
        // The four tables are encoded at once; pairs, the largest, alone is most of it.
        let written = std::time::Instant::now();
        ctx.pool()?.install(|| {
            tables.into_par_iter().try_for_each(|(t, schema, cols)| {
                let batch = schema.assemble(cols)?;
                write_table(&ctx.output_path(t), &schema, &ctx.meta.for_table(t), &[batch]).map(|_| ())
            })
        })?;
        ctx.log(format!(
            "read {} images and {} reports in {:.1} ms; matched in {:.1} ms; wrote 4 tables in {:.1} ms",
            images.num_rows(),
            reports.num_rows(),
            read.as_secs_f64() * 1e3,
            matched.as_secs_f64() * 1e3,
            written.elapsed().as_secs_f64() * 1e3
        ));
        Ok(())
    }
}

/// Rows of one output table: the image and report rows they come from, and a text cell
/// (rule, reason or note).
#[derive(Default)]
struct Rows<'a> {
    image: Vec<u32>,
    report: Vec<u32>,
    text: Vec<Option<&'a str>>,
}

impl<'a> Rows<'a> {
    fn push(&mut self, image: usize, report: usize, text: Option<&'a str>) {
        self.image.push(image as u32);
        self.report.push(report as u32);
        self.text.push(text);
    }

    fn text(&self) -> ArrayRef {
        Arc::new(self.text.iter().copied().collect::<StringArray>())
    }
}

fn take(column: &dyn Array, rows: &[u32]) -> anyhow::Result<ArrayRef> {
    Ok(arrow::compute::take(column, &UInt32Array::from(rows.to_vec()), None)?)
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

/// What became of each answer in the resolutions file, counted in the run summary: an
/// answer for an image that is not in this run (or has no candidate report) would
/// otherwise be ignored without a word.
fn account_resolutions(ctx: &Context, resolutions: &HashMap<String, String>, imgs: &Images, out: &Matched) {
    if resolutions.is_empty() {
        return;
    }
    let (mut applied, mut refused) = (0u64, 0u64);
    let mut answered: HashSet<&str> = HashSet::new();
    for (i, o) in out.images.iter().enumerate() {
        let sop = imgs.sop.value(i);
        if !resolutions.contains_key(sop) {
            continue;
        }
        match o {
            Outcome::Pair(_, "resolved") => applied += 1,
            Outcome::Review(_, Some(_)) => refused += 1,
            _ => continue,
        }
        answered.insert(sop);
    }
    let mut unused: Vec<&str> = resolutions
        .keys()
        .map(String::as_str)
        .filter(|k| !answered.contains(k))
        .collect();
    unused.sort_unstable();
    ctx.count("resolutions_applied", applied);
    ctx.count("resolutions_refused", refused);
    ctx.count("resolutions_unused", unused.len() as u64);
    if let Some(first) = unused.first() {
        ctx.log(format!(
            "{} resolution(s) answer no image of this run that needs one (an unknown SOP Instance UID, or an image without candidate reports), e.g. {first}",
            unused.len()
        ));
    }
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

/// The resolutions file: CSV with `sop_instance_uid` and `report_id` (by header when it
/// has one, else the first two fields; other columns, such as who answered, are kept
/// out of the way); `#` lines are comments.
fn load_resolutions(path: &std::path::Path) -> anyhow::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read resolutions {}", path.display()))?;
    let mut out = HashMap::new();
    let (mut sop_at, mut report_at) = (0, 1);
    for (n, record) in crate::csv::records(&text).iter().enumerate() {
        let field = |i: usize| crate::csv::get(record, i);
        if record.iter().all(|f| f.trim().is_empty()) || field(0).starts_with('#') {
            continue;
        }
        if n == 0 && record.iter().any(|f| f.trim() == "sop_instance_uid") {
            let at = |name: &str| record.iter().position(|f| f.trim() == name);
            (sop_at, report_at) = match (at("sop_instance_uid"), at("report_id")) {
                (Some(s), Some(r)) => (s, r),
                _ => bail!("{}: the header names no `report_id` column", path.display()),
            };
            continue;
        }
        let (sop, report) = (field(sop_at), field(report_at));
        if sop.is_empty() || report.is_empty() {
            bail!(
                "{}: record {}: expected `sop_instance_uid,report_id`, got {:?}",
                path.display(),
                n + 1,
                record.join(",")
            );
        }
        out.insert(sop.to_string(), report.to_string());
    }
    Ok(out)
}

/// Rows grouped by patient: the rows of group `g` are `rows[start[g]..start[g + 1]]`,
/// sorted by time. Built by counting, so grouping 100k rows costs one hash lookup each.
struct Groups {
    start: Vec<u32>,
    rows: Vec<u32>,
}

impl Groups {
    /// `group[row]` is the row's group (or `None`: left out); `time(row)` orders a group.
    fn new(groups: usize, group: &[Option<u32>], time: impl Fn(usize) -> i64) -> Groups {
        let mut start = vec![0u32; groups + 1];
        for g in group.iter().flatten() {
            start[*g as usize + 1] += 1;
        }
        for g in 0..groups {
            start[g + 1] += start[g];
        }
        let mut fill = start.clone();
        let mut rows = vec![0u32; start[groups] as usize];
        for (row, g) in group.iter().enumerate() {
            if let Some(g) = g {
                rows[fill[*g as usize] as usize] = row as u32;
                fill[*g as usize] += 1;
            }
        }
        for g in 0..groups {
            rows[start[g] as usize..start[g + 1] as usize].sort_by_key(|&r| (time(r as usize), r));
        }
        Groups { start, rows }
    }

    fn get(&self, g: u32) -> &[u32] {
        &self.rows[self.start[g as usize] as usize..self.start[g as usize + 1] as usize]
    }
}

/// The matching rule over whole tables.
pub fn match_all(
    imgs: &Images,
    reps: &Reports,
    max_delay_hours: f64,
    resolutions: &HashMap<String, String>,
) -> anyhow::Result<Matched> {
    let max = (max_delay_hours * 3.6e9) as i64;
    let n_reports = reps.id.len();
    // Patients numbered in the order their first report appears; reports by patient,
    // sorted by time.
    let mut patient_of: foldhash::HashMap<&str, u32> = foldhash::HashMapExt::with_capacity(n_reports);
    let report_patient: Vec<Option<u32>> = (0..n_reports)
        .map(|r| {
            let next = patient_of.len() as u32;
            Some(*patient_of.entry(reps.patient.value(r)).or_insert(next))
        })
        .collect();
    let reports_of = Groups::new(patient_of.len(), &report_patient, |r| reps.time.value(r));
    let image_patient: Vec<Option<u32>> = (0..imgs.sop.len())
        .map(|i| patient_of.get(imgs.patient.value(i)).copied())
        .collect();
    // Only reports a resolution names need finding by id.
    let named: HashSet<&str> = resolutions.values().map(String::as_str).collect();
    let report_row: HashMap<&str, usize> = (0..n_reports)
        .filter(|&r| named.contains(reps.id.value(r)))
        .map(|r| (reps.id.value(r), r))
        .collect();
    // Descriptions are compared only between candidates of one image: normalise lazily.
    let mut norm: Vec<Option<String>> = vec![None; n_reports];
    let mut normalized = |r: usize| -> String {
        norm[r]
            .get_or_insert_with(|| normalize_description(reps.description.value(r)))
            .clone()
    };

    let mut candidate_of = vec![false; n_reports];
    let mut used = vec![false; n_reports];
    let mut not_chosen = vec![false; n_reports];
    let mut images = Vec::with_capacity(imgs.sop.len());
    for (i, patient) in image_patient.iter().enumerate() {
        let t = imgs.time.value(i);
        let Some(patient) = patient else {
            images.push(Outcome::Unmatched("no_report_for_patient"));
            continue;
        };
        let list = reports_of.get(*patient);
        let lo = list.partition_point(|&r| reps.time.value(r as usize) < t - max);
        let hi = list.partition_point(|&r| reps.time.value(r as usize) <= t + max);
        let near = &list[lo..hi];
        let cands: Vec<usize> = near
            .iter()
            .map(|&r| r as usize)
            .filter(|&r| reps.check_in.value(r) <= t && t <= reps.check_out.value(r))
            .collect();
        for &c in &cands {
            candidate_of[c] = true;
        }
        let outcome = if near.is_empty() {
            Outcome::Unmatched("no_report_within_max_delay")
        } else if cands.is_empty() {
            Outcome::Unmatched("outside_session")
        } else if let Some(answer) = resolutions.get(imgs.sop.value(i)) {
            match report_row.get(answer.as_str()) {
                Some(&r) if reps.patient.value(r) == imgs.patient.value(i) => {
                    for &c in &cands {
                        not_chosen[c] |= c != r;
                    }
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
            Outcome::Pair(r, _) => used[*r] = true,
            Outcome::Review(c, _) => {
                for &r in c {
                    used[r] = true;
                }
            }
            Outcome::Unmatched(_) => {}
        }
        images.push(outcome);
    }

    // Why each remaining report has no image: look at the patient's images.
    let images_of = Groups::new(patient_of.len(), &image_patient, |i| imgs.time.value(i));
    let mut unmatched_reports = Vec::new();
    for r in 0..n_reports {
        if used[r] {
            continue;
        }
        let times = images_of.get(report_patient[r].expect("every report has a patient"));
        let reason = if times.is_empty() {
            "no_image_for_patient"
        } else {
            let t = reps.time.value(r);
            let lo = times.partition_point(|&i| imgs.time.value(i as usize) < t - max);
            let hi = times.partition_point(|&i| imgs.time.value(i as usize) <= t + max);
            if lo == hi {
                "no_image_within_max_delay"
            } else if not_chosen[r] {
                "not_chosen_in_review"
            } else if !candidate_of[r] {
                "outside_session"
            } else {
                "duplicate_of_matched_report"
            }
        };
        unmatched_reports.push((r, reason));
    }
    Ok(Matched {
        images,
        unmatched_reports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolutions_by_header_with_columns_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.csv");
        std::fs::write(
            &f,
            "report_id,sop_instance_uid,who\n# a comment\nR1,1.1,\"dr A, dr B\"\n\nR2,1.2,\n",
        )
        .unwrap();
        let r = load_resolutions(&f).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r["1.1"].as_str(), r["1.2"].as_str()), ("R1", "R2"));
        // Without a header: the first two fields.
        std::fs::write(&f, "1.3,R3\n").unwrap();
        assert_eq!(load_resolutions(&f).unwrap()["1.3"], "R3");
        std::fs::write(&f, "sop_instance_uid,report_id\n1.4\n").unwrap();
        let e = load_resolutions(&f).unwrap_err().to_string();
        assert!(e.contains("record 2: expected `sop_instance_uid,report_id`"), "{e}");
    }
}

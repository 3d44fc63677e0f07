//! `deidentify`: DICOM files and HIS reports made shareable, after `collect` (and
//! `parse`), so every later stage sees only pseudonyms — DICOM PS3.15 Annex E, the Basic
//! Application Level Confidentiality Profile, with the Retain Longitudinal Temporal
//! Information with Modified Dates option.
//!
//! Per attribute, the profile's action (`stages/deidentify/basic_profile.csv`, Table
//! E.1-1): X removed, Z emptied, D a dummy value, U a new UID; the standard's
//! combinations (X/Z, Z/D, X/Z/U*, …) take their first, strictest letter. Everything
//! derived from an identity is a keyed hash (BLAKE3 keyed with a key derived from the
//! user's secret file), so it is the same in every file and every run with the same
//! secret, and another secret gives others:
//! - UIDs: `2.25.<128 bits>` of the original UID — consistent across a study, and the
//!   file meta's Media Storage SOP Instance UID follows.
//! - Patient ID: `PX` + 16 hex digits; Patient's Name and Birth Date are emptied, Birth
//!   Time removed.
//! - Dates (DA, DT): shifted by a whole number of days drawn per patient in
//!   ±`max_shift_days` (never 0), so intervals within a patient survive; times of day
//!   (TM) are kept. Match pairs images with reports by patient and time, so the
//!   `reports` of parse get the same pseudonyms and shifts (their session ids and file
//!   names too).
//! - Private attributes, curves and overlay text are removed; what the profile does not
//!   list is kept.
//!
//! The secret is a file (`secret_file`, a referenced file: the key holds the hash of its
//! content, never the content). The way back (`map`) is written only where the user
//! says, outside the cache; the pipeline's tables hold no original identifier, and the
//! files' names are keyed tokens of their original paths. BurnedInAnnotation is
//! reported per file (`files`), not fixed: pixels are not touched.
//!
//! Outputs `dicoms` in collect's schema (the rows read back from the written files, so
//! filter, match and convert take it as they take collect's) and `reports` in parse's.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use arrow::array::{Array, AsArray};
use dicom_core::header::Header as _;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_object::InMemDicomObject;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use pipe_core::stage::{Context, Reference, Stage};
use pipe_core::table::{TableBuilder, TableSchema, read_batch, str_col, write_table};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// A file holding the secret (at least 16 bytes; e.g. `head -c 32 /dev/urandom |
    /// base64`). Keep it outside the project: whoever has it can recompute every
    /// pseudonym from an identity.
    pub secret_file: String,
    /// The profile: tag, action, name per attribute (PS3.15 Table E.1-1).
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Dates move by up to this many days, per patient.
    #[serde(default = "default_shift")]
    pub max_shift_days: u32,
    /// Where to write the re-identification map (Parquet, mode 0600); not in the cache.
    /// Without it, nothing links pseudonyms back to identities.
    #[serde(default)]
    pub map: Option<String>,
    /// Threads (0 = the run's `--jobs`).
    #[serde(default)]
    pub threads: usize,
}

fn default_profile() -> String {
    "stages/deidentify/basic_profile.csv".into()
}
fn default_shift() -> u32 {
    365
}

/// The profile's action codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    D,
    Z,
    X,
    U,
    ZD,
    XZ,
    XD,
    XZD,
    XZU,
}

impl Action {
    fn parse(code: &str) -> Option<Action> {
        Some(match code {
            "D" => Action::D,
            "Z" => Action::Z,
            "X" => Action::X,
            "U" => Action::U,
            "Z/D" => Action::ZD,
            "X/Z" => Action::XZ,
            "X/D" => Action::XD,
            "X/Z/D" => Action::XZD,
            "X/Z/U*" => Action::XZU,
            _ => return None,
        })
    }
}

/// The profile file: action per tag.
pub fn load_profile(path: &Path) -> anyhow::Result<HashMap<Tag, Action>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let mut out = HashMap::new();
    for (n, record) in crate::csv::records(&lines.join("\n")).iter().enumerate().skip(1) {
        let tag = crate::csv::get(record, 0);
        let code = crate::csv::get(record, 1);
        let parsed = tag
            .strip_prefix('(')
            .and_then(|t| t.strip_suffix(')'))
            .and_then(|t| t.split_once(','))
            .and_then(|(g, e)| Some(Tag(u16::from_str_radix(g, 16).ok()?, u16::from_str_radix(e, 16).ok()?)));
        let (Some(tag), Some(action)) = (parsed, Action::parse(code)) else {
            bail!(
                "{}: record {} is not `(gggg,eeee),ACTION,name` with ACTION one of D, Z, X, U, Z/D, X/Z, X/D, X/Z/D, X/Z/U*: {record:?}",
                path.display(),
                n + 1
            );
        };
        out.insert(tag, action);
    }
    Ok(out)
}

/// Pseudonyms keyed by the secret.
pub struct Keys {
    key: [u8; 32],
    max_shift_days: i64,
}

impl Keys {
    pub fn new(secret: &[u8], max_shift_days: u32) -> Keys {
        Keys {
            key: blake3::derive_key("pipe deidentify 2026-11 keyed pseudonyms", secret),
            max_shift_days: max_shift_days as i64,
        }
    }

    fn hash(&self, purpose: &str, value: &str) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(purpose.as_bytes()).update(&[0]).update(value.as_bytes());
        h.finalize()
    }

    /// `2.25.` and 128 bits: a UID any DICOM reader takes (at most 44 characters).
    pub fn uid(&self, original: &str) -> String {
        let b = self.hash("uid", original.trim_end_matches('\0').trim());
        format!("2.25.{}", u128::from_le_bytes(b.as_bytes()[..16].try_into().unwrap()))
    }

    pub fn patient_id(&self, original: &str) -> String {
        format!(
            "PX{}",
            &self.hash("patient", original.trim()).to_hex()[..16].to_uppercase()
        )
    }

    /// Days added to every date of this patient: in ±max_shift_days, never 0.
    pub fn shift_days(&self, patient_id: &str) -> i64 {
        let m = self.max_shift_days.max(1);
        let v = u64::from_le_bytes(
            self.hash("shift", patient_id.trim()).as_bytes()[..8]
                .try_into()
                .unwrap(),
        );
        let r = (v % (2 * m as u64)) as i64 - m;
        if r >= 0 { r + 1 } else { r }
    }

    /// A keyed token for anything else (paths, session ids).
    pub fn token(&self, purpose: &str, original: &str) -> String {
        self.hash(purpose, original).to_hex()[..32].to_string()
    }
}

/// What to do with one attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Treatment {
    Keep,
    Remove,
    RemovePrivate,
    Empty,
    Dummy,
    NewUid,
    Shift,
    PatientId,
}

const PATIENT_ID: Tag = Tag(0x0010, 0x0020);
const PATIENT_BIRTH_DATE: Tag = Tag(0x0010, 0x0030);
const PATIENT_BIRTH_TIME: Tag = Tag(0x0010, 0x0032);
const BURNED_IN_ANNOTATION: Tag = Tag(0x0028, 0x0301);

fn treatment(profile: &HashMap<Tag, Action>, tag: Tag, vr: VR) -> Treatment {
    if tag.group() % 2 == 1 {
        return Treatment::RemovePrivate;
    }
    // Group lengths change with the content; curves (50xx) and overlay comments and
    // data (60xx,3000/4000) are removed by the profile group-wide.
    if tag.element() == 0 || tag.group() & 0xFF00 == 0x5000 {
        return Treatment::Remove;
    }
    if tag.group() & 0xFF00 == 0x6000 && matches!(tag.element(), 0x3000 | 0x4000) {
        return Treatment::Remove;
    }
    if tag == PATIENT_ID {
        return Treatment::PatientId;
    }
    // Birth date and time are not part of a study's timeline: the profile's Z and X.
    if tag == PATIENT_BIRTH_DATE {
        return Treatment::Empty;
    }
    if tag == PATIENT_BIRTH_TIME {
        return Treatment::Remove;
    }
    let Some(&action) = profile.get(&tag) else {
        return Treatment::Keep;
    };
    match (action, vr) {
        (Action::U, _) => Treatment::NewUid,
        // The Modified Dates option: dates shift, times of day stay.
        (_, VR::DA | VR::DT) => Treatment::Shift,
        (_, VR::TM) => Treatment::Keep,
        (Action::X | Action::XZ | Action::XD | Action::XZD | Action::XZU, _) => Treatment::Remove,
        (Action::Z | Action::ZD, _) => Treatment::Empty,
        (Action::D, VR::UI) => Treatment::NewUid,
        (Action::D, _) => Treatment::Dummy,
    }
}

/// Counts of what was done to one file.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    removed: i64,
    emptied: i64,
    replaced: i64,
    new_uids: i64,
    shifted: i64,
    private_removed: i64,
}

struct Cleaner<'a> {
    profile: &'a HashMap<Tag, Action>,
    keys: &'a Keys,
    shift: i64,
}

impl Cleaner<'_> {
    fn object(&self, obj: &InMemDicomObject, n: &mut Counts) -> anyhow::Result<InMemDicomObject> {
        let mut out = Vec::new();
        for e in obj.iter() {
            let tag = e.tag();
            // An attribute read as UN (an implicit or unknown VR) is treated, and written,
            // with the VR the dictionary gives it.
            let vr = match e.vr() {
                VR::UN => crate::collect::dictionary_vr(tag).unwrap_or(VR::UN),
                vr => vr,
            };
            let t = treatment(self.profile, tag, vr);
            let vr = if t == Treatment::Keep { e.vr() } else { vr };
            let value: Value<InMemDicomObject, _> = match (t, e.value()) {
                (Treatment::RemovePrivate, _) => {
                    n.private_removed += 1;
                    continue;
                }
                (Treatment::Remove, _) => {
                    n.removed += 1;
                    continue;
                }
                (Treatment::Keep, Value::Sequence(seq)) => {
                    let items = seq
                        .items()
                        .iter()
                        .map(|item| self.object(item, n))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    Value::Sequence(DataSetSequence::new(items, Length::UNDEFINED))
                }
                (Treatment::Keep, v) => v.clone(),
                (Treatment::Empty | Treatment::Dummy, Value::Sequence(_)) => {
                    n.emptied += 1;
                    Value::Sequence(DataSetSequence::new(Vec::<InMemDicomObject>::new(), Length::UNDEFINED))
                }
                (Treatment::Empty, _) => {
                    n.emptied += 1;
                    PrimitiveValue::Empty.into()
                }
                (Treatment::Dummy, _) => {
                    n.replaced += 1;
                    dummy(vr).into()
                }
                (Treatment::PatientId, v) => {
                    n.replaced += 1;
                    PrimitiveValue::from(self.keys.patient_id(&text(v))).into()
                }
                (Treatment::NewUid, v) => {
                    n.new_uids += 1;
                    let uids: Vec<String> = text(v)
                        .split('\\')
                        .filter(|u| !u.trim().is_empty())
                        .map(|u| self.keys.uid(u))
                        .collect();
                    PrimitiveValue::from(uids.join("\\")).into()
                }
                (Treatment::Shift, v) => {
                    n.shifted += 1;
                    let shifted: Vec<String> = text(v)
                        .split('\\')
                        .map(|d| shift_date(d.trim(), self.shift, vr))
                        .collect();
                    if shifted.iter().all(String::is_empty) {
                        PrimitiveValue::Empty.into()
                    } else {
                        PrimitiveValue::from(shifted.join("\\")).into()
                    }
                }
            };
            out.push(DataElement::new(tag, vr, value));
        }
        Ok(InMemDicomObject::from_element_iter(out))
    }
}

fn text<P>(v: &Value<InMemDicomObject, P>) -> String {
    match v {
        // Bytes of an attribute read as UN: its text as written.
        Value::Primitive(PrimitiveValue::U8(bytes)) => {
            String::from_utf8_lossy(bytes).trim_end_matches(['\0', ' ']).to_string()
        }
        Value::Primitive(p) => p.to_str().trim_end_matches(['\0', ' ']).to_string(),
        _ => String::new(),
    }
}

/// A dummy value of a VR (the profile's D).
fn dummy(vr: VR) -> PrimitiveValue {
    match vr {
        VR::AE => PrimitiveValue::from("ANON"),
        VR::AS => PrimitiveValue::from("000Y"),
        VR::DS | VR::IS => PrimitiveValue::from("0"),
        VR::US => PrimitiveValue::from(0u16),
        VR::SS => PrimitiveValue::from(0i16),
        VR::UL => PrimitiveValue::from(0u32),
        VR::SL => PrimitiveValue::from(0i32),
        VR::FL => PrimitiveValue::from(0f32),
        VR::FD => PrimitiveValue::from(0f64),
        VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::UN => PrimitiveValue::Empty,
        _ => PrimitiveValue::from("ANONYMIZED"),
    }
}

/// A DA (YYYYMMDD) or the date part of a DT moved by `days`; a value that is not a
/// date becomes empty (it cannot be shifted, so it is not kept).
pub fn shift_date(value: &str, days: i64, vr: VR) -> String {
    let Some(date) = value
        .get(..8)
        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y%m%d").ok())
    else {
        return String::new();
    };
    let Some(moved) = date.checked_add_signed(chrono::Duration::days(days)) else {
        return String::new();
    };
    match vr {
        VR::DT => format!("{}{}", moved.format("%Y%m%d"), &value[8..]),
        _ => moved.format("%Y%m%d").to_string(),
    }
}

pub struct Deidentify;

fn files_schema() -> TableSchema {
    crate::schema!("deidentify/files")
}
fn rejects_schema() -> TableSchema {
    crate::schema!("deidentify/rejects")
}
fn map_schema() -> TableSchema {
    crate::schema!("deidentify/reidentification")
}

/// One file written.
struct Written {
    path: String,
    hash: String,
    size: u64,
    header: crate::collect::Header,
    counts: Counts,
    burned_in: Option<String>,
    new_sop: String,
}

impl Stage for Deidentify {
    type Params = Params;
    const KIND: &'static str = "deidentify";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "de-identify DICOM files (PS3.15 basic profile, keyed UIDs and pseudonyms, dates shifted per patient) and HIS reports alike";

    fn check(p: &Params) -> Vec<String> {
        let mut problems = Vec::new();
        if p.max_shift_days == 0 || p.max_shift_days > 36500 {
            problems.push(format!("max_shift_days: {} is not in 1..=36500", p.max_shift_days));
        }
        problems
    }

    fn references(p: &Params) -> Vec<Reference> {
        vec![
            Reference {
                param: "secret_file".into(),
                path: p.secret_file.clone(),
            },
            Reference {
                param: "profile".into(),
                path: p.profile.clone(),
            },
        ]
    }

    fn reads(_: &Params) -> Vec<&'static str> {
        vec!["dicoms"]
    }

    fn outputs(_: &Params) -> Vec<String> {
        vec!["dicoms".into(), "reports".into(), "files".into(), "rejects".into()]
    }

    fn run(p: &Params, ctx: &Context) -> anyhow::Result<()> {
        let secret_path = ctx.resolve(&p.secret_file);
        let secret = std::fs::read(&secret_path).with_context(|| format!("cannot read {}", secret_path.display()))?;
        let secret = secret.trim_ascii();
        if secret.len() < 16 {
            bail!(
                "{}: the secret has {} bytes; give at least 16 (e.g. `head -c 32 /dev/urandom | base64 > {}`)",
                secret_path.display(),
                secret.len(),
                p.secret_file
            );
        }
        let keys = Keys::new(secret, p.max_shift_days);
        let profile = load_profile(&ctx.resolve(&p.profile))?;
        let map = p.map.as_ref().map(|m| ctx.resolve(m));
        if let Some(m) = &map {
            let cache = std::fs::canonicalize(&ctx.cache_dir).unwrap_or(ctx.cache_dir.clone());
            let parent = m.parent().and_then(|d| std::fs::canonicalize(d).ok());
            if parent.is_some_and(|d| d.starts_with(&cache)) {
                bail!(
                    "map: {} is inside the cache, whose tables are meant to be shared; write the re-identification map elsewhere",
                    m.display()
                );
            }
        }
        // Where the files will be once the entry is committed, as the pipeline root
        // sees it: `dicoms` paths resolve like collect's.
        let entry = ctx.cache_dir.join("entries").join(&ctx.meta.key);
        let entry_text = match entry.strip_prefix(&ctx.root) {
            Ok(rel) => rel.display().to_string(),
            Err(_) => entry.display().to_string(),
        };

        let input = read_batch(ctx.input("dicoms")?)?;
        let (paths, patients) = (str_col(&input, "path")?, str_col(&input, "patient_id")?);
        let duplicate_of = str_col(&input, "duplicate_of")?;
        let sops = str_col(&input, "sop_instance_uid")?;
        let new_path = |original: &str| format!("dicom/{}.dcm", keys.token("file", original));
        ctx.progress.set_total(input.num_rows() as u64);
        let hashes = str_col(&input, "file_hash")?;
        let results: Vec<Result<Written, String>> = ctx.pool()?.install(|| {
            (0..input.num_rows())
                .into_par_iter()
                .map(|i| {
                    let original = paths.value(i);
                    let rel = new_path(original);
                    let (bytes, _) =
                        crate::collect::read_as_listed(&ctx.resolve(original), original, Some(hashes.value(i)))?;
                    let r = deidentify_file(
                        &bytes,
                        sops.value(i),
                        &ctx.out_dir.join(&rel),
                        &Cleaner {
                            profile: &profile,
                            keys: &keys,
                            shift: keys.shift_days(patients.value(i)),
                        },
                    )
                    .map(|(header, hash, size, counts, burned_in, new_sop)| Written {
                        path: format!("{entry_text}/{rel}"),
                        hash,
                        size,
                        header,
                        counts,
                        burned_in,
                        new_sop,
                    });
                    ctx.progress.inc(1);
                    Ok(r)
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })?;

        let mut dicoms = TableBuilder::new(&crate::collect::dicoms_schema());
        let mut files = TableBuilder::new(&files_schema());
        let mut rejects = TableBuilder::new(&rejects_schema());
        let mut reid = TableBuilder::new(&map_schema());
        let (mut written, mut rejected, mut burned) = (0u64, 0u64, 0u64);
        for (i, r) in results.iter().enumerate() {
            let original = paths.value(i);
            match r {
                Ok(w) => {
                    let dup =
                        (!duplicate_of.is_null(i)).then(|| format!("{entry_text}/{}", new_path(duplicate_of.value(i))));
                    w.header.push_row(&mut dicoms, &w.path, &w.hash, w.size, dup.as_deref());
                    files
                        .str("path", Some(&w.path))
                        .str("sop_instance_uid", Some(&w.new_sop))
                        .str("burned_in_annotation", w.burned_in.as_deref())
                        .i64("removed", Some(w.counts.removed))
                        .i64("emptied", Some(w.counts.emptied))
                        .i64("replaced", Some(w.counts.replaced))
                        .i64("new_uids", Some(w.counts.new_uids))
                        .i64("shifted", Some(w.counts.shifted))
                        .i64("private_removed", Some(w.counts.private_removed));
                    reid.str("kind", Some("file"))
                        .str("pseudonym", Some(&w.path))
                        .str("original", Some(original))
                        .i64("shift_days", None);
                    written += 1;
                    if w.burned_in.as_deref().is_some_and(|b| b.trim() == "YES") {
                        burned += 1;
                    }
                }
                Err(reason) => {
                    rejects
                        .str("file", Some(&keys.token("file", original)))
                        .str("reason", Some(reason));
                    rejected += 1;
                }
            }
        }
        ctx.count("files_written", written);
        ctx.count("files_rejected", rejected);
        ctx.count("burned_in_annotation", burned);
        if burned > 0 {
            ctx.log(format!(
                "{burned} files say BurnedInAnnotation YES: their pixels may show identifying text (see files)"
            ));
        }

        // The identities behind the pseudonyms: patients and their shifts, UIDs.
        let mut patients_seen = std::collections::BTreeSet::new();
        let uid_columns = ["sop_instance_uid", "study_instance_uid", "series_instance_uid"]
            .map(|c| str_col(&input, c))
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()?;
        for i in 0..input.num_rows() {
            patients_seen.insert(patients.value(i).to_string());
            for col in &uid_columns {
                if !col.is_null(i) {
                    reid.str("kind", Some("uid"))
                        .str("pseudonym", Some(&keys.uid(col.value(i))))
                        .str("original", Some(col.value(i)))
                        .i64("shift_days", None);
                }
            }
        }

        let reports_schema = crate::schema!("parse/reports");
        let mut reports = TableBuilder::new(&reports_schema);
        if let Some(input) = ctx.inputs.iter().find(|i| i.table == "reports") {
            let b = read_batch(&input.path)?;
            let s = |c: &str| str_col(&b, c);
            let (report_id, session, patient) = (s("report_id")?, s("session_id")?, s("patient_id")?);
            let (service_id, service_name, description) = (s("service_id")?, s("service_name")?, s("description")?);
            let (conclusion, path) = (s("conclusion")?, s("path")?);
            let time = |c: &str| -> anyhow::Result<arrow::array::TimestampMicrosecondArray> {
                Ok(b.column_by_name(c)
                    .with_context(|| format!("reports has no column `{c}`"))?
                    .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                    .clone())
            };
            let (check_in, check_out, report_time) = (time("check_in")?, time("check_out")?, time("report_time")?);
            let mut sessions = std::collections::BTreeMap::new();
            for i in 0..b.num_rows() {
                let days = keys.shift_days(patient.value(i));
                patients_seen.insert(patient.value(i).to_string());
                let shifted = |a: &arrow::array::TimestampMicrosecondArray| {
                    chrono::DateTime::from_timestamp_micros(a.value(i))
                        .map(|t| t.naive_utc() + chrono::Duration::days(days))
                };
                let pseudo_session = format!("S{}", &keys.token("session", session.value(i))[..16]);
                sessions.insert(pseudo_session.clone(), session.value(i).to_string());
                let index = report_id.value(i).rsplit('/').next().unwrap_or("");
                reports
                    .str("report_id", Some(&format!("{pseudo_session}/{index}")))
                    .str("session_id", Some(&pseudo_session))
                    .str("patient_id", Some(&keys.patient_id(patient.value(i))))
                    .time("check_in", shifted(&check_in))
                    .time("check_out", shifted(&check_out))
                    .str("service_id", Some(service_id.value(i)))
                    .str(
                        "service_name",
                        (!service_name.is_null(i)).then(|| service_name.value(i)),
                    )
                    .time("report_time", shifted(&report_time))
                    .str("description", Some(description.value(i)))
                    .str("conclusion", (!conclusion.is_null(i)).then(|| conclusion.value(i)))
                    .str("path", Some(&format!("his/{}.xml", keys.token("file", path.value(i)))));
            }
            ctx.count("reports", b.num_rows() as u64);
            for (pseudo, original) in sessions {
                reid.str("kind", Some("session"))
                    .str("pseudonym", Some(&pseudo))
                    .str("original", Some(&original))
                    .i64("shift_days", None);
            }
        }
        for id in &patients_seen {
            reid.str("kind", Some("patient"))
                .str("pseudonym", Some(&keys.patient_id(id)))
                .str("original", Some(id))
                .i64("shift_days", Some(keys.shift_days(id)));
        }
        for (name, schema, mut b) in [
            ("dicoms", crate::collect::dicoms_schema(), dicoms),
            ("reports", reports_schema, reports),
            ("files", files_schema(), files),
            ("rejects", rejects_schema(), rejects),
        ] {
            ctx.write_table(name, &schema, &b.finish()?)?;
        }
        if let Some(m) = map {
            write_map(&m, &map_schema(), &ctx.meta.for_table("reidentification"), reid)?;
            ctx.log(format!("re-identification map written to {}", m.display()));
        }
        Ok(())
    }
}

/// The map, through a temporary file, readable by its owner only.
fn write_map(
    path: &Path,
    schema: &TableSchema,
    meta: &pipe_core::table::TableMeta,
    mut rows: TableBuilder,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    write_table(&tmp, schema, meta, &[rows.finish()?])?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

type Done = (crate::collect::Header, String, u64, Counts, Option<String>, String);

/// De-identify one file's bytes into `out`, read it back as collect reads files; `Err`
/// is the reject reason (never naming the original path).
fn deidentify_file(bytes: &[u8], sop_instance_uid: &str, out: &Path, cleaner: &Cleaner) -> Result<Done, String> {
    let file = crate::pixels::open_bytes(bytes).map_err(|e| format!("cannot read DICOM: {e:#}"))?;
    let original_meta = file.meta().clone();
    let burned_in = file
        .element_opt(BURNED_IN_ANNOTATION)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_string());
    let mut counts = Counts::default();
    let cleaned = cleaner
        .object(&file.into_inner(), &mut counts)
        .map_err(|e| format!("cannot de-identify: {e:#}"))?;
    // The SOP Instance UID collect read (the file meta's when the data set has none),
    // replaced: one value whatever the data set held.
    let new_sop = cleaner.keys.uid(sop_instance_uid);
    let mut cleaned = cleaned;
    cleaned.put(DataElement::new(
        dicom_dictionary_std::tags::SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(new_sop.clone()),
    ));
    // A new file meta group: the new SOP Instance UID, the same transfer syntax, and
    // none of the original's application entity titles (the profile removes AE titles).
    let trim = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
    let mut meta = dicom_object::meta::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(trim(&original_meta.media_storage_sop_class_uid))
        .media_storage_sop_instance_uid(new_sop.clone())
        .transfer_syntax(trim(&original_meta.transfer_syntax))
        .implementation_class_uid(trim(&original_meta.implementation_class_uid));
    if let Some(v) = &original_meta.implementation_version_name {
        meta = meta.implementation_version_name(trim(v));
    }
    let meta = meta
        .build()
        .map_err(|e| format!("cannot build the file meta group: {e}"))?;
    let obj = cleaned.with_exact_meta(meta);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    crate::quietly(|| obj.write_to_file(out).map_err(|e| anyhow!("{e}")))
        .map_err(|e| format!("cannot write the de-identified file: {e:#}"))?;
    let written = std::fs::read(out).map_err(|e| format!("cannot read back the de-identified file: {e}"))?;
    let header = crate::collect::read_header(out, written.len() as u64).map_err(|e| {
        let _ = std::fs::remove_file(out);
        format!("the de-identified file does not read back: {e}")
    })?;
    Ok((
        header,
        blake3::hash(&written).to_hex().to_string(),
        written.len() as u64,
        counts,
        burned_in,
        new_sop,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_pseudonyms() {
        let (a, b) = (
            Keys::new(b"one secret of enough bytes", 365),
            Keys::new(b"another secret, long enough", 365),
        );
        assert_eq!(a.uid("1.2.3"), a.uid("1.2.3"));
        assert_ne!(a.uid("1.2.3"), b.uid("1.2.3"));
        assert_ne!(a.uid("1.2.3"), a.uid("1.2.4"));
        assert!(a.uid("1.2.3").len() <= 64 && a.uid("1.2.3").starts_with("2.25."));
        assert_eq!(a.patient_id("BN1").len(), 18);
        for id in ["BN1", "BN2", "x", ""] {
            let d = a.shift_days(id);
            assert!(d != 0 && d.abs() <= 365, "{d}");
        }
    }

    #[test]
    fn dates_shift_and_bad_dates_empty() {
        assert_eq!(shift_date("20201118", 14, VR::DA), "20201202");
        assert_eq!(shift_date("20201118", -365, VR::DA), "20191119");
        assert_eq!(shift_date("20201118103000.5+0700", 1, VR::DT), "20201119103000.5+0700");
        assert_eq!(shift_date("2020", 1, VR::DA), "");
        assert_eq!(shift_date("", 1, VR::DA), "");
    }

    #[test]
    fn treatments_follow_the_profile_and_its_option() {
        let mut p = HashMap::new();
        p.insert(Tag(0x0008, 0x0020), Action::Z);
        p.insert(Tag(0x0008, 0x0030), Action::Z);
        p.insert(Tag(0x0008, 0x0018), Action::U);
        p.insert(Tag(0x0008, 0x0080), Action::XZD);
        p.insert(Tag(0x0008, 0x0090), Action::D);
        assert_eq!(treatment(&p, Tag(0x0008, 0x0020), VR::DA), Treatment::Shift);
        assert_eq!(treatment(&p, Tag(0x0008, 0x0030), VR::TM), Treatment::Keep);
        assert_eq!(treatment(&p, Tag(0x0008, 0x0018), VR::UI), Treatment::NewUid);
        assert_eq!(treatment(&p, Tag(0x0008, 0x0080), VR::LO), Treatment::Remove);
        assert_eq!(treatment(&p, Tag(0x0008, 0x0090), VR::PN), Treatment::Dummy);
        assert_eq!(treatment(&p, Tag(0x0009, 0x0010), VR::LO), Treatment::RemovePrivate);
        assert_eq!(treatment(&p, Tag(0x5000, 0x3000), VR::OW), Treatment::Remove);
        assert_eq!(treatment(&p, Tag(0x6002, 0x3000), VR::OW), Treatment::Remove);
        assert_eq!(treatment(&p, Tag(0x6000, 0x0010), VR::US), Treatment::Keep);
        assert_eq!(treatment(&p, PATIENT_ID, VR::LO), Treatment::PatientId);
        assert_eq!(treatment(&p, PATIENT_BIRTH_DATE, VR::DA), Treatment::Empty);
        assert_eq!(treatment(&p, PATIENT_BIRTH_TIME, VR::TM), Treatment::Remove);
        assert_eq!(treatment(&p, Tag(0x0028, 0x0010), VR::US), Treatment::Keep);
    }
}

//! The synthetic hospital: what happened (patients, sessions, studies, reports, hard
//! cases), decided per study from (seed, study index) alone, so a larger archive with
//! the same seed contains the smaller one byte for byte.

use chrono::{Duration, NaiveDate, NaiveDateTime};

use super::reports::{self, CHEST_SERVICES, Report};
use pipe_core::rng::Rng;

/// What kind of study this is; each hard case has a fixed rate ([`CASE_RATES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// A PA chest image and its report.
    Normal,
    /// A PA and a lateral image; the lateral is dropped by the filter.
    ExtraLateral,
    /// Only an AP image (filter drops it), so the report finds no image.
    ApOnly,
    /// A radiograph of another body part, with a report of another service.
    NonChest,
    /// A CT of the chest (not radiography), with a report of another service.
    OtherModality,
    /// Two chest reports within 24 h with the same description.
    DuplicateSameDescription,
    /// Two chest reports within 24 h with different descriptions (review).
    DuplicateDifferentDescription,
    /// The report comes more than 24 h after the study.
    ReportLate,
    /// The study was taken before the session's check-in.
    OutsideSession,
    /// An image without any chest report.
    NoReport,
    /// A chest report without an image.
    ReportNoImage,
    /// The image file is cut short.
    TruncatedDicom,
    /// A file named .dcm that is not DICOM.
    NotDicom,
    /// A DICOM file without PatientID or StudyDate.
    MissingTag,
    /// The session XML is malformed.
    MalformedXml,
    /// The chest report's DESCRIPTION is empty.
    EmptyDescription,
}

/// Rate of each hard case; the rest are [`Case::Normal`].
pub const CASE_RATES: [(Case, f64); 15] = [
    (Case::ExtraLateral, 0.04),
    (Case::ApOnly, 0.02),
    (Case::NonChest, 0.03),
    (Case::OtherModality, 0.02),
    (Case::DuplicateSameDescription, 0.03),
    (Case::DuplicateDifferentDescription, 0.02),
    (Case::ReportLate, 0.02),
    (Case::OutsideSession, 0.02),
    (Case::NoReport, 0.02),
    (Case::ReportNoImage, 0.02),
    (Case::TruncatedDicom, 0.005),
    (Case::NotDicom, 0.005),
    (Case::MissingTag, 0.01),
    (Case::MalformedXml, 0.005),
    (Case::EmptyDescription, 0.01),
];

/// Share of session files written in UTF-16 (with BOM).
pub const UTF16_RATE: f64 = 0.03;
/// Share of studies of a returning patient (a new session days later).
pub const RETURNING_RATE: f64 = 0.10;

impl Case {
    pub fn name(self) -> &'static str {
        match self {
            Case::Normal => "normal",
            Case::ExtraLateral => "extra_lateral",
            Case::ApOnly => "ap_only",
            Case::NonChest => "non_chest",
            Case::OtherModality => "other_modality",
            Case::DuplicateSameDescription => "duplicate_same_description",
            Case::DuplicateDifferentDescription => "duplicate_different_description",
            Case::ReportLate => "report_late",
            Case::OutsideSession => "outside_session",
            Case::NoReport => "no_report",
            Case::ReportNoImage => "report_no_image",
            Case::TruncatedDicom => "truncated_dicom",
            Case::NotDicom => "not_dicom",
            Case::MissingTag => "missing_tag",
            Case::MalformedXml => "malformed_xml",
            Case::EmptyDescription => "empty_description",
        }
    }
}

/// How an image file is damaged, if it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defect {
    Truncated,
    NotDicom,
    NoPatientId,
    NoStudyDate,
}

/// Pixel encoding of an image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    ExplicitLittle,
    ImplicitLittle,
    Rle,
    JpegLossless,
    /// JPEG-LS lossless, encoded by CharLS (through dicom-pixeldata's transcoder).
    JpegLs,
    /// JPEG 2000 lossless (reversible 5/3), encoded by OpenJPEG.
    J2kLossless,
    /// JPEG 2000 lossy (irreversible 9/7) at 4:1, encoded by OpenJPEG.
    J2kLossy,
}

impl Encoding {
    pub fn uid(self) -> &'static str {
        match self {
            Encoding::ExplicitLittle => "1.2.840.10008.1.2.1",
            Encoding::ImplicitLittle => "1.2.840.10008.1.2",
            Encoding::Rle => "1.2.840.10008.1.2.5",
            Encoding::JpegLossless => "1.2.840.10008.1.2.4.70",
            Encoding::JpegLs => "1.2.840.10008.1.2.4.80",
            Encoding::J2kLossless => "1.2.840.10008.1.2.4.90",
            Encoding::J2kLossy => "1.2.840.10008.1.2.4.91",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Image {
    pub sop_uid: String,
    pub rel_path: String,
    pub modality: &'static str,
    pub body_part: &'static str,
    pub view: &'static str,
    pub monochrome1: bool,
    pub bits_stored: u16,
    pub encoding: Encoding,
    /// (slope, intercept)
    pub rescale: Option<(f64, f64)>,
    pub window: bool,
    pub defect: Option<Defect>,
    /// A posterior-anterior chest radiograph (what the filter must keep).
    pub pa_chest: bool,
}

#[derive(Clone, Debug)]
pub struct HisReport {
    pub report_id: String,
    pub service_id: &'static str,
    pub service_name: &'static str,
    pub report_time: NaiveDateTime,
    pub description: String,
    pub conclusion: String,
    pub chest: bool,
    /// Labels (chest_wall, pleura, parenchyma, cardiac, abnormal); chest reports only.
    pub report: Option<Report>,
}

#[derive(Clone, Debug)]
pub struct Study {
    pub index: usize,
    pub case: Case,
    pub patient_id: String,
    pub patient_name: String,
    pub sex: &'static str,
    pub birth_date: NaiveDate,
    pub session_id: String,
    pub check_in: NaiveDateTime,
    pub check_out: NaiveDateTime,
    pub study_time: NaiveDateTime,
    pub study_uid: String,
    pub series_uid: String,
    pub findings: [bool; 5],
    pub images: Vec<Image>,
    pub reports: Vec<HisReport>,
    /// Whether a session file is written at all.
    pub has_session_file: bool,
    pub utf16: bool,
    pub his_rel_path: String,
    /// The report an image of this study is meant to match (the first chest report).
    pub intended_report: Option<String>,
}

const STREAM_STUDY: u64 = 1;

fn uid(rng: &mut Rng) -> String {
    let v = ((rng.next_u64() as u128) << 64 | rng.next_u64() as u128) >> 2;
    format!("2.25.{v}")
}

fn draw_case(rng: &mut Rng) -> Case {
    let mut r = rng.f64();
    for (case, rate) in CASE_RATES {
        if r < rate {
            return case;
        }
        r -= rate;
    }
    Case::Normal
}

const FAMILY: [&str; 10] = [
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Vũ", "Đặng", "Bùi", "Đỗ", "Ngô",
];
const MIDDLE: [&str; 6] = ["Văn", "Thị", "Đức", "Minh", "Thu", "Quang"];
const GIVEN: [&str; 10] = [
    "An", "Bình", "Cường", "Dũng", "Hà", "Hương", "Lan", "Phúc", "Thảo", "Tuấn",
];

fn hours(h: f64) -> Duration {
    Duration::seconds((h * 3600.0) as i64)
}

/// The root study of a returning patient, if study `i` is one.
fn returning_to(seed: u64, i: usize) -> Option<usize> {
    let mut rng = Rng::for_item(seed, STREAM_STUDY + 100, i as u64);
    if i < 2 || !rng.chance(RETURNING_RATE) {
        return None;
    }
    let j = i - 1 - (rng.next_u64() as usize % i.min(40));
    // Only first visits are returned to, so the days between visits stay distinct.
    if returning_to(seed, j).is_some() { None } else { Some(j) }
}

fn first_visit_time(seed: u64, i: usize) -> NaiveDateTime {
    let mut rng = Rng::for_item(seed, STREAM_STUDY + 200, i as u64);
    let start = NaiveDate::from_ymd_opt(2020, 11, 1)
        .expect("date")
        .and_hms_opt(0, 0, 0)
        .expect("time");
    start + Duration::days(rng.range(0, 150)) + hours(7.0 + 10.0 * rng.f64())
}

fn patient_of(seed: u64, i: usize) -> (String, String, &'static str, NaiveDate) {
    let root = returning_to(seed, i).unwrap_or(i);
    let mut rng = Rng::for_item(seed, STREAM_STUDY + 300, root as u64);
    let sex = if rng.chance(0.5) { "M" } else { "F" };
    let middle = if sex == "F" { "Thị" } else { rng.pick(&MIDDLE) };
    let name = format!("{}^{} {}", rng.pick(&FAMILY), middle, rng.pick(&GIVEN));
    let birth = NaiveDate::from_ymd_opt(
        rng.range(1930, 2005) as i32,
        rng.range(1, 13) as u32,
        rng.range(1, 29) as u32,
    )
    .expect("date");
    (
        format!("BN{:08}", 10_000_000 + root * 7 + (seed % 7) as usize),
        name,
        sex,
        birth,
    )
}

/// Plan study `i` of the hospital with `seed`.
pub fn study(seed: u64, i: usize) -> Study {
    let mut rng = Rng::for_item(seed, STREAM_STUDY, i as u64);
    let case = draw_case(&mut rng);
    let (patient_id, patient_name, sex, birth_date) = patient_of(seed, i);
    // A returning patient comes back 5 days per study index later: never within 24 h
    // of, or inside the session of, another visit.
    let study_time = match returning_to(seed, i) {
        Some(j) => first_visit_time(seed, j) + Duration::days(5 * (i - j) as i64) + hours(rng.f64() * 8.0),
        None => first_visit_time(seed, i),
    };
    let mut check_in = study_time - hours(0.5 + 5.5 * rng.f64());
    let mut check_out = study_time + hours(4.0 + 68.0 * rng.f64());
    let session_id = format!("PT{:09}", 200_000_000 + i);
    let study_uid = uid(&mut rng);
    let series_uid = uid(&mut rng);
    let findings = reports::draw_findings(&mut rng);
    let month = study_time.format("%Y%m").to_string();

    // Images.
    let mut images = Vec::new();
    let image = |rng: &mut Rng, k: usize, modality, body_part, view, pa_chest| {
        let encoding = match rng.f64() {
            r if r < 0.05 => Encoding::Rle,
            r if r < 0.10 => Encoding::JpegLossless,
            r if r < 0.15 => Encoding::ImplicitLittle,
            // Carved out of explicit little endian: the draw is the same one, so no
            // other property of the archive moves.
            r if r < 0.20 => Encoding::JpegLs,
            r if r < 0.23 => Encoding::J2kLossless,
            r if r < 0.25 => Encoding::J2kLossy,
            _ => Encoding::ExplicitLittle,
        };
        Image {
            sop_uid: uid(rng),
            rel_path: format!("pacs/{month}/{patient_id}/{:06}_{k}.dcm", i),
            modality,
            body_part,
            view,
            monochrome1: rng.chance(0.3),
            bits_stored: *rng.pick(&[12u16, 12, 14, 16]),
            encoding,
            rescale: if rng.chance(0.3) { Some((1.0, -1024.0)) } else { None },
            window: rng.chance(0.7),
            defect: None,
            pa_chest,
        }
    };
    let chest_modality = if rng.chance(0.6) { "DX" } else { "CR" };
    let has_image = !matches!(case, Case::ReportNoImage);
    if has_image {
        match case {
            Case::ApOnly => images.push(image(&mut rng, 0, chest_modality, "CHEST", "AP", false)),
            Case::NonChest => {
                let part = *rng.pick(&["SKULL", "ABDOMEN", "HAND", "PELVIS", "LSPINE"]);
                let view = *rng.pick(&["PA", "AP", "LL"]);
                images.push(image(&mut rng, 0, "CR", part, view, false));
            }
            Case::OtherModality => images.push(image(&mut rng, 0, "CT", "CHEST", "", false)),
            _ => images.push(image(&mut rng, 0, chest_modality, "CHEST", "PA", true)),
        }
        if case == Case::ExtraLateral {
            images.push(image(&mut rng, 1, chest_modality, "CHEST", "LL", false));
        }
        let defect = match case {
            Case::TruncatedDicom => Some(Defect::Truncated),
            Case::NotDicom => Some(Defect::NotDicom),
            Case::MissingTag => Some(if rng.chance(0.5) {
                Defect::NoPatientId
            } else {
                Defect::NoStudyDate
            }),
            _ => None,
        };
        if let Some(d) = defect {
            images[0].defect = Some(d);
            images[0].pa_chest = false;
        }
    }

    // Reports.
    let mut reports_out = Vec::new();
    let chest = rng.pick(&CHEST_SERVICES);
    let chest_report = |rng: &mut Rng, k: usize, at: NaiveDateTime, report: Report| HisReport {
        report_id: format!("{session_id}/{k}"),
        service_id: chest.0,
        service_name: chest.1,
        report_time: at,
        description: report.description.clone(),
        conclusion: report.conclusion.clone(),
        chest: true,
        report: {
            let _ = rng;
            Some(report)
        },
    };
    let report = reports::describe(&mut rng, findings);
    let first = study_time + hours(0.3 + 5.0 * rng.f64());
    let mut intended = None;
    match case {
        Case::NonChest | Case::OtherModality | Case::NoReport => {}
        Case::ReportLate => {
            let at = study_time + hours(26.0 + 34.0 * rng.f64());
            check_out = check_out.max(at + hours(2.0));
            reports_out.push(chest_report(&mut rng, 0, at, report));
        }
        Case::OutsideSession => {
            check_in = study_time + hours(1.0 + 2.0 * rng.f64());
            let at = check_in + hours(0.5);
            check_out = check_out.max(at + hours(4.0));
            reports_out.push(chest_report(&mut rng, 0, at, report));
        }
        Case::DuplicateSameDescription => {
            let second = first + hours(1.0 + 7.0 * rng.f64());
            reports_out.push(chest_report(&mut rng, 0, first, report.clone()));
            reports_out.push(chest_report(&mut rng, 1, second, report));
            intended = Some(format!("{session_id}/0"));
        }
        Case::DuplicateDifferentDescription => {
            let second = first + hours(1.0 + 7.0 * rng.f64());
            let mut other = report.clone();
            while other.description == report.description {
                let f = reports::draw_findings(&mut rng);
                other = reports::describe(&mut rng, f);
            }
            reports_out.push(chest_report(&mut rng, 0, first, report));
            reports_out.push(chest_report(&mut rng, 1, second, other));
            intended = Some(format!("{session_id}/0"));
        }
        Case::EmptyDescription => {
            let mut r = chest_report(&mut rng, 0, first, report);
            r.description = String::new();
            reports_out.push(r);
        }
        _ => {
            reports_out.push(chest_report(&mut rng, 0, first, report));
            intended = Some(format!("{session_id}/0"));
        }
    }
    // Other services of the session.
    let n_other = if matches!(case, Case::NonChest | Case::OtherModality) {
        1
    } else {
        rng.range(0, 3) as usize
    };
    for _ in 0..n_other {
        let (id, name, text) = reports::other_service(&mut rng);
        let at = check_in + hours(0.2 + 3.0 * rng.f64());
        let k = reports_out.len();
        reports_out.push(HisReport {
            report_id: format!("{session_id}/{k}"),
            service_id: id,
            service_name: name,
            report_time: at,
            description: text.to_string(),
            conclusion: String::new(),
            chest: false,
            report: None,
        });
    }
    for r in &reports_out {
        check_out = check_out.max(r.report_time + hours(1.0));
        check_in = check_in.min(r.report_time - hours(0.2));
    }
    // A session never reaches back to the study if the study must lie outside it.
    if case == Case::OutsideSession {
        debug_assert!(study_time < check_in);
    }
    let has_session_file = !(case == Case::NoReport && reports_out.is_empty()) || rng.chance(0.5);
    Study {
        index: i,
        case,
        patient_id,
        patient_name,
        sex,
        birth_date,
        his_rel_path: format!("his/{month}/{session_id}.xml"),
        session_id,
        check_in,
        check_out,
        study_time,
        study_uid,
        series_uid,
        findings,
        images,
        reports: reports_out,
        has_session_file,
        utf16: rng.chance(UTF16_RATE),
        intended_report: intended,
    }
}

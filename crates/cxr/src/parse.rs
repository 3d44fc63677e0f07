//! `parse`: HIS session XML → sessions and chest radiography reports.
//!
//! Paper, "XML parser": a session file has a header (SESSION_ID, PATIENT_ID,
//! CHECK_IN_TIME, CHECK_OUT_TIME) and reports (SERVICE_ID, REPORT_TIME, DESCRIPTION, …);
//! only reports whose SERVICE_ID is in the chest radiography allow-list are kept.
//! Element names and time formats are params, so another hospital's HIS is a config
//! change. quick-xml streams the events; UTF-8 and UTF-16 (by byte-order mark) are
//! read, and text is kept in Unicode NFC so equal descriptions compare equal.

use std::collections::HashSet;

use anyhow::Context as _;
use chrono::NaiveDateTime;
use quick_xml::events::Event;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use pipe_core::stage::{Context, Reference, Resources, Stage};
use pipe_core::table::{TableBuilder, TableSchema, read_table, str_col, write_table};

/// Element names of the HIS export.
#[derive(Debug, Serialize, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Fields {
    /// Element holding the session id.
    pub session_id: String,
    /// Element holding the patient id (matched with the DICOM PatientID).
    pub patient_id: String,
    /// Element holding the session's check-in time.
    pub check_in: String,
    /// Element holding the session's check-out time.
    pub check_out: String,
    /// Element wrapping one report of a session.
    pub report: String,
    /// Element holding the service id (kept if in `services`).
    pub service_id: String,
    /// Element holding the service's name.
    pub service_name: String,
    /// Element holding the time the report was written.
    pub report_time: String,
    /// Element holding the report's description (what `label` reads).
    pub description: String,
    /// Element holding the report's conclusion.
    pub conclusion: String,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            session_id: "SESSION_ID".into(),
            patient_id: "PATIENT_ID".into(),
            check_in: "CHECK_IN_TIME".into(),
            check_out: "CHECK_OUT_TIME".into(),
            report: "REPORT".into(),
            service_id: "SERVICE_ID".into(),
            service_name: "SERVICE_NAME".into(),
            report_time: "REPORT_TIME".into(),
            description: "DESCRIPTION".into(),
            conclusion: "CONCLUSION".into(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Allow-list of chest radiography SERVICE_IDs (first token of each line; `#` comments).
    #[serde(default = "default_services")]
    pub services: String,
    /// chrono formats tried in order for every time field.
    #[serde(default = "default_time_formats")]
    pub time_formats: Vec<String>,
    #[serde(default)]
    pub fields: Fields,
    /// Threads parsing files (0 = the run's `--jobs`).
    #[serde(default)]
    pub threads: usize,
}

fn default_services() -> String {
    "stages/parse/chest_services.txt".into()
}

fn default_time_formats() -> Vec<String> {
    vec![
        "%d/%m/%Y %H:%M:%S".into(),
        "%Y-%m-%d %H:%M:%S".into(),
        "%Y-%m-%dT%H:%M:%S".into(),
    ]
}

pub struct Parse;

fn sessions_schema() -> TableSchema {
    crate::schema!("parse/sessions")
}
pub fn reports_schema() -> TableSchema {
    crate::schema!("parse/reports")
}
fn rejects_schema() -> TableSchema {
    crate::schema!("parse/rejects")
}

impl Stage for Parse {
    type Params = Params;
    const KIND: &'static str = "parse";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "parse HIS session XML into sessions and chest radiography reports";

    fn reads(_: &Params) -> Vec<&'static str> {
        vec!["his_files"]
    }

    fn outputs(_: &Params) -> Vec<String> {
        vec!["sessions".into(), "reports".into(), "rejects".into()]
    }

    fn references(p: &Params) -> Vec<Reference> {
        vec![Reference {
            param: "services".into(),
            path: p.services.clone(),
        }]
    }

    fn resources(p: &Params) -> Resources {
        Resources { cpu: p.threads, gpu: 0 }
    }

    fn run(p: &Params, ctx: &Context) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let services = load_services(&ctx.resolve(&p.services))?;
        let formats = TimeFormats::new(&p.time_formats)?;
        let (_, batches) = read_table(ctx.input("his_files")?)?;
        let mut files = Vec::new();
        for b in &batches {
            let (paths, hashes) = (str_col(b, "path")?, str_col(b, "file_hash")?);
            for i in 0..b.num_rows() {
                let hash = arrow::array::Array::is_valid(hashes, i).then(|| hashes.value(i).to_string());
                files.push((paths.value(i).to_string(), hash));
            }
        }
        // Files whose bytes are not what collect hashed (edited since): the result
        // would not be what its key says.
        let changed = std::sync::Mutex::new(Vec::new());
        ctx.progress.set_total(files.len() as u64);
        let pool = ctx.pool()?;
        let parsed: Vec<(String, String, Result<Session, String>)> = pool.install(|| {
            files
                .into_par_iter()
                .map(|(path, hash)| {
                    let r = READ_BUF
                        .with_borrow_mut(|buf| {
                            buf.clear();
                            let Some(hash) = &hash else {
                                return Err("cannot read: collect could not read it".to_string());
                            };
                            // Through `take`: `File`'s own read_to_end stats the file
                            // first, one more system call per file for a size hint that
                            // the reused buffer does not need.
                            let file = ctx.resolve(&path);
                            let read = std::fs::File::open(&file)
                                .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, u64::MAX), buf));
                            if let Err(e) = read {
                                let why = format!("cannot read: {e}");
                                ctx.unreadable(&file, &why);
                                return Err(why);
                            }
                            if blake3::hash(buf).to_hex().as_str() != hash {
                                changed.lock().unwrap().push(path.clone());
                            }
                            let r = parse_session(buf, p, &formats);
                            if buf.capacity() > 1 << 20 {
                                *buf = Vec::new(); // not kept for one huge file
                            }
                            r
                        })
                        .map(|mut s| {
                            // Per-report work is done here, on the pool, too.
                            for r in &mut s.reports {
                                r.chest = services.contains(r.service_id.as_str());
                                if r.chest {
                                    r.time = r.report_time.as_deref().map(|t| formats.parse(t));
                                }
                            }
                            s
                        });
                    ctx.progress.inc(1);
                    (path, hash.unwrap_or_default(), r)
                })
                .collect()
        });
        let changed = changed.into_inner().unwrap();
        if let Some(first) = changed.first() {
            anyhow::bail!(
                "{} HIS file(s) are not the files collect read ({first}: BLAKE3 differs): they changed after collect; nothing is cached, run again (collect rereads changed files)",
                changed.len()
            );
        }

        let read = started.elapsed();

        let mut sessions = TableBuilder::new(&sessions_schema());
        let mut reports = TableBuilder::new(&reports_schema());
        let mut rejects = TableBuilder::new(&rejects_schema());
        let mut other = 0u64;
        for (path, hash, r) in &parsed {
            let s = match r {
                Ok(s) => s,
                Err(reason) => {
                    rejects
                        .str("path", Some(path))
                        .str("report_id", None)
                        .str("reason", Some(reason));
                    continue;
                }
            };
            let mut chest = 0;
            for (i, rep) in s.reports.iter().enumerate() {
                if !rep.chest {
                    other += 1;
                    continue;
                }
                chest += 1;
                let id = format!("{}/{i}", s.session_id);
                let time = &rep.time;
                let problem = match (time, rep.description.trim().is_empty()) {
                    (None, _) => Some(format!("missing {}", p.fields.report_time)),
                    (Some(Err(e)), _) => Some(e.clone()),
                    (_, true) => Some(format!("empty {}", p.fields.description)),
                    _ => None,
                };
                if let Some(reason) = problem {
                    rejects
                        .str("path", Some(path))
                        .str("report_id", Some(&id))
                        .str("reason", Some(&reason));
                    continue;
                }
                let Some(Ok(time)) = *time else {
                    unreachable!("checked above")
                };
                reports
                    .str("report_id", Some(&id))
                    .str("session_id", Some(&s.session_id))
                    .str("patient_id", Some(&s.patient_id))
                    .time("check_in", Some(s.check_in))
                    .time("check_out", Some(s.check_out))
                    .str("service_id", Some(&rep.service_id))
                    .str("service_name", rep.service_name.as_deref())
                    .time("report_time", Some(time))
                    .str("description", Some(rep.description.trim()))
                    .str("conclusion", rep.conclusion.as_deref())
                    .str("path", Some(path));
            }
            sessions
                .str("path", Some(path))
                .str("file_hash", Some(hash))
                .str("session_id", Some(&s.session_id))
                .str("patient_id", Some(&s.patient_id))
                .time("check_in", Some(s.check_in))
                .time("check_out", Some(s.check_out))
                .str("encoding", Some(s.encoding))
                .i32("reports", Some(s.reports.len() as i32))
                .i32("chest_reports", Some(chest));
        }
        ctx.count("other_service_reports", other);
        let tabled = started.elapsed() - read;
        let tables = [
            ("sessions", sessions_schema(), sessions.finish()?),
            ("reports", reports_schema(), reports.finish()?),
            ("rejects", rejects_schema(), rejects.finish()?),
        ];
        let written = std::time::Instant::now();
        pool.install(|| {
            tables.into_par_iter().try_for_each(|(table, schema, batch)| {
                write_table(&ctx.output_path(table), &schema, &ctx.meta.for_table(table), &[batch]).map(|_| ())
            })
        })?;
        ctx.log(format!(
            "read and parsed {} files in {:.1} ms; built the tables in {:.1} ms; wrote them in {:.1} ms",
            parsed.len(),
            read.as_secs_f64() * 1e3,
            tabled.as_secs_f64() * 1e3,
            written.elapsed().as_secs_f64() * 1e3
        ));
        Ok(())
    }
}

fn load_services(path: &std::path::Path) -> anyhow::Result<HashSet<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the SERVICE_ID list {}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

/// The `time_formats` param, each format parsed once (chrono's `parse_from_str` would
/// parse the format string again for every one of ~100k times).
pub struct TimeFormats {
    text: Vec<String>,
    items: Vec<Vec<chrono::format::Item<'static>>>,
}

impl TimeFormats {
    pub fn new(formats: &[String]) -> anyhow::Result<TimeFormats> {
        let items = formats
            .iter()
            .map(|f| {
                chrono::format::StrftimeItems::new(f)
                    .parse_to_owned()
                    .map_err(|e| anyhow::anyhow!("time_formats: {f:?} is not a chrono format: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(TimeFormats {
            text: formats.to_vec(),
            items,
        })
    }

    pub fn parse(&self, text: &str) -> Result<NaiveDateTime, String> {
        let t = text.trim();
        self.items
            .iter()
            .find_map(|items| {
                let mut parsed = chrono::format::Parsed::new();
                chrono::format::parse(&mut parsed, t, items.iter()).ok()?;
                parsed.to_naive_datetime_with_offset(0).ok()
            })
            .ok_or_else(|| format!("time {t:?} matches none of the formats {:?}", self.text))
    }
}

#[derive(Debug, Default)]
struct RawReport {
    service_id: String,
    service_name: Option<String>,
    report_time: Option<String>,
    description: String,
    conclusion: Option<String>,
    /// Whether SERVICE_ID is on the allow-list, and (if so) report_time parsed.
    chest: bool,
    time: Option<Result<NaiveDateTime, String>>,
}

thread_local! {
    /// One read buffer per thread, reused from file to file.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Debug)]
pub struct Session {
    session_id: String,
    patient_id: String,
    check_in: NaiveDateTime,
    check_out: NaiveDateTime,
    encoding: &'static str,
    reports: Vec<RawReport>,
}

/// Text in NFC; most HIS text already is, and checking is much cheaper than composing.
fn nfc(s: &str) -> String {
    if s.is_ascii() {
        return s.to_string();
    }
    match unicode_normalization::is_nfc_quick(s.chars()) {
        unicode_normalization::IsNormalized::Yes => s.to_string(),
        _ => s.nfc().collect(),
    }
}

/// Decode by byte-order mark: UTF-16 LE/BE, UTF-8 with or without BOM.
fn decode(bytes: &[u8]) -> Result<(std::borrow::Cow<'_, str>, &'static str), String> {
    let utf16 = |body: &[u8], le: bool| -> Result<String, String> {
        if !body.len().is_multiple_of(2) {
            return Err("UTF-16 file with an odd number of bytes".into());
        }
        let units: Vec<u16> = body
            .chunks_exact(2)
            .map(|c| {
                if le {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16(&units).map_err(|e| format!("invalid UTF-16: {e}"))
    };
    let utf8 = |b| std::str::from_utf8(b).map_err(|e| format!("invalid UTF-8: {e}"));
    match bytes {
        [0xFF, 0xFE, rest @ ..] => Ok((utf16(rest, true)?.into(), "utf-16le")),
        [0xFE, 0xFF, rest @ ..] => Ok((utf16(rest, false)?.into(), "utf-16be")),
        [0xEF, 0xBB, 0xBF, rest @ ..] => Ok((utf8(rest)?.into(), "utf-8-bom")),
        _ => Ok((utf8(bytes)?.into(), "utf-8")),
    }
}

/// Parse one session file.
pub fn parse_session(bytes: &[u8], p: &Params, formats: &TimeFormats) -> Result<Session, String> {
    let (text, encoding) = decode(bytes)?;
    let f = &p.fields;
    let mut reader = quick_xml::Reader::from_str(&text);
    // Open elements, as one string and the end of each name in it: no allocation per
    // element once the buffers have grown.
    let (mut names, mut ends) = (String::new(), Vec::<usize>::new());
    let header_fields = [&f.session_id, &f.patient_id, &f.check_in, &f.check_out];
    let mut header: [Option<String>; 4] = Default::default();
    let mut reports = Vec::new();
    let mut current: Option<RawReport> = None;
    let mut buf = String::new();
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("malformed XML at byte {}: {e}", reader.error_position()))?;
        match ev {
            Event::Start(e) => {
                let name = e.name();
                let name = name.into_inner();
                if name == f.report {
                    current = Some(RawReport::default());
                }
                names.push_str(name);
                ends.push(names.len());
                buf.clear();
            }
            Event::Text(t) => buf.push_str(&t.xml_content(quick_xml::XmlVersion::Implicit1_0)),
            Event::GeneralRef(r) => {
                let c = match r
                    .resolve_char_ref()
                    .map_err(|e| format!("bad character reference at byte {}: {e}", reader.buffer_position()))?
                {
                    Some(c) => c,
                    None => match &*r {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => {
                            return Err(format!("unknown entity &{other}; at byte {}", reader.buffer_position()));
                        }
                    },
                };
                buf.push(c);
            }
            Event::CData(c) => buf.push_str(&c),
            Event::End(e) => {
                let name = e.name();
                let name = name.into_inner();
                ends.pop();
                names.truncate(ends.last().copied().unwrap_or(0));
                let value = || nfc(buf.trim());
                if name == f.report {
                    reports.extend(current.take());
                } else if let Some(r) = current.as_mut() {
                    let v = || Some(value()).filter(|v| !v.is_empty());
                    if name == f.service_id {
                        r.service_id = value();
                    } else if name == f.service_name {
                        r.service_name = v();
                    } else if name == f.report_time {
                        r.report_time = v();
                    } else if name == f.description {
                        r.description = value();
                    } else if name == f.conclusion {
                        r.conclusion = v();
                    }
                } else if ends.len() == 1
                    && let Some(k) = header_fields.iter().position(|h| name == h.as_str())
                {
                    header[k] = Some(value());
                }
                buf.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !ends.is_empty() {
        let mut open = Vec::new();
        let mut from = 0;
        for &end in &ends {
            open.push(&names[from..end]);
            from = end;
        }
        return Err(format!("malformed XML: the file ends inside <{}>", open.join("><")));
    }
    let [session_id, patient_id, check_in, check_out] = header;
    let get = |v: Option<String>, k: &str| {
        v.filter(|v| !v.is_empty())
            .ok_or_else(|| format!("missing {k} in the session header"))
    };
    let time = |v: Option<String>, k: &str| get(v, k).and_then(|v| formats.parse(&v).map_err(|e| format!("{k}: {e}")));
    Ok(Session {
        session_id: get(session_id, &f.session_id)?,
        patient_id: get(patient_id, &f.patient_id)?,
        check_in: time(check_in, &f.check_in)?,
        check_out: time(check_out, &f.check_out)?,
        encoding,
        reports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats_are_tried_in_order_and_bad_ones_refused() {
        let f = TimeFormats::new(&default_time_formats()).unwrap();
        let want = chrono::NaiveDate::from_ymd_opt(2021, 3, 5)
            .unwrap()
            .and_hms_opt(8, 15, 0)
            .unwrap();
        for text in ["05/03/2021 08:15:00", " 2021-03-05 08:15:00 ", "2021-03-05T08:15:00"] {
            assert_eq!(f.parse(text), Ok(want), "{text}");
        }
        let err = f.parse("hôm qua").unwrap_err();
        assert!(
            err.contains("matches none of the formats") && err.contains("%d/%m/%Y"),
            "{err}"
        );
        let err = TimeFormats::new(&["%d/%m/%Y %Q".to_string()])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("is not a chrono format"), "{err}");
    }
}

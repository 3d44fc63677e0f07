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
                    let r = (|| {
                        let Some(hash) = &hash else {
                            return Err("cannot read: collect could not read it".to_string());
                        };
                        let file = ctx.resolve(&path);
                        let read = std::fs::File::open(&file)
                            .map_err(|e| e.to_string())
                            .and_then(|f| read_session(f, p, &formats));
                        match read {
                            Err(why) | Ok((_, _, Some(why))) => {
                                let why = format!("cannot read: {why}");
                                ctx.unreadable(&file, &why);
                                Err(why)
                            }
                            Ok((r, read_hash, None)) => {
                                if read_hash.to_hex().as_str() != hash {
                                    changed.lock().unwrap().push(path.clone());
                                }
                                r
                            }
                        }
                    })()
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

/// A file's bytes as they are read, hashed on the way (so the file is read once, in
/// pieces, and its BLAKE3 is what collect's would be), and the operating system's read
/// error if one came (that is not a property of the content).
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
    failed: Option<String>,
}

impl<R: std::io::Read> std::io::Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    self.failed = Some(e.to_string());
                }
                Err(e)
            }
        }
    }
}

/// UTF-16 (either byte order) re-encoded as UTF-8 while it streams, for quick-xml,
/// which reads UTF-8.
struct Utf16<R> {
    inner: R,
    le: bool,
    /// A byte of a code unit split across reads, and a high surrogate waiting for its pair.
    odd: Option<u8>,
    high: Option<u16>,
    out: Vec<u8>,
    at: usize,
}

impl<R: std::io::Read> Utf16<R> {
    fn bad(what: String) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("invalid UTF-16: {what}"))
    }
}

impl<R: std::io::Read> std::io::Read for Utf16<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.out.len() {
            let mut chunk = [0u8; 8192];
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                return match (self.odd, self.high) {
                    (None, None) => Ok(0),
                    (Some(_), _) => Err(Self::bad("an odd number of bytes".into())),
                    (_, Some(h)) => Err(Self::bad(format!("unpaired surrogate {h:04X} at the end"))),
                };
            }
            self.out.clear();
            self.at = 0;
            // A unit split by the previous read starts this one.
            let mut bytes = self.odd.take().into_iter().chain(chunk[..n].iter().copied());
            while let Some(a) = bytes.next() {
                let Some(b) = bytes.next() else {
                    self.odd = Some(a);
                    break;
                };
                let unit = if self.le {
                    u16::from_le_bytes([a, b])
                } else {
                    u16::from_be_bytes([a, b])
                };
                let c = match (self.high.take(), unit) {
                    (None, 0xD800..=0xDBFF) => {
                        self.high = Some(unit);
                        continue;
                    }
                    (Some(h), 0xDC00..=0xDFFF) => {
                        char::from_u32(0x10000 + (((h as u32) - 0xD800) << 10) + (unit as u32 - 0xDC00))
                    }
                    (Some(h), _) => return Err(Self::bad(format!("unpaired surrogate {h:04X}"))),
                    (None, 0xDC00..=0xDFFF) => return Err(Self::bad(format!("unpaired surrogate {unit:04X}"))),
                    (None, u) => char::from_u32(u as u32),
                };
                let c = c.ok_or_else(|| Self::bad(format!("code unit {unit:04X}")))?;
                self.out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            }
        }
        let n = buf.len().min(self.out.len() - self.at);
        buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A session file as read: the session or why not, the file's BLAKE3, and the OS's read
/// error if one came (then neither of the others describes the file).
type SessionRead = (Result<Session, String>, blake3::Hash, Option<String>);

/// Read one session file as a stream (never whole: an export can hold huge files), its
/// encoding by byte-order mark (UTF-16 LE/BE re-encoded, UTF-8 with or without BOM).
fn read_session(file: std::fs::File, p: &Params, formats: &TimeFormats) -> Result<SessionRead, String> {
    use std::io::{BufRead, BufReader, Read};
    let mut hashing = Hashing {
        inner: file,
        hasher: blake3::Hasher::new(),
        failed: None,
    };
    let r = {
        let mut input = BufReader::with_capacity(64 << 10, &mut hashing);
        let head = input.fill_buf().map_err(|e| e.to_string())?;
        let (encoding, bom) = match head {
            [0xFF, 0xFE, ..] => ("utf-16le", 2),
            [0xFE, 0xFF, ..] => ("utf-16be", 2),
            [0xEF, 0xBB, 0xBF, ..] => ("utf-8-bom", 3),
            _ => ("utf-8", 0),
        };
        input.consume(bom);
        let r = match encoding {
            "utf-16le" | "utf-16be" => parse_session(
                BufReader::with_capacity(
                    64 << 10,
                    Utf16 {
                        inner: input,
                        le: encoding == "utf-16le",
                        odd: None,
                        high: None,
                        out: Vec::new(),
                        at: 0,
                    },
                ),
                p,
                formats,
            ),
            _ => parse_session(input, p, formats),
        };
        r.map(|mut s| {
            s.encoding = encoding;
            s
        })
    };
    // The rest of a file that failed to parse is hashed too: its key is its content.
    if hashing.failed.is_none() {
        let _ = std::io::copy(&mut (&mut hashing).take(u64::MAX), &mut std::io::sink());
    }
    let Hashing { hasher, failed, .. } = hashing;
    Ok((r, hasher.finalize(), failed))
}

/// Parse one session from UTF-8 XML.
fn parse_session(input: impl std::io::BufRead, p: &Params, formats: &TimeFormats) -> Result<Session, String> {
    let f = &p.fields;
    let mut reader = quick_xml::Reader::from_reader(input);
    let mut event = Vec::new();
    // Open elements, as one string and the end of each name in it: no allocation per
    // element once the buffers have grown.
    let (mut names, mut ends) = (String::new(), Vec::<usize>::new());
    let header_fields = [&f.session_id, &f.patient_id, &f.check_in, &f.check_out];
    let mut header: [Option<String>; 4] = Default::default();
    let mut reports = Vec::new();
    let mut current: Option<RawReport> = None;
    let mut buf = String::new();
    loop {
        event.clear();
        let ev = reader.read_event_into(&mut event).map_err(|e| match e {
            // The bytes' own problem (invalid UTF-16) or the file's: said as it is.
            quick_xml::Error::Io(e) => e.to_string(),
            e => format!("malformed XML at byte {}: {e}", reader.error_position()),
        })?;
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
        encoding: "utf-8",
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

    /// A reader handing out `step` bytes at a time: every split of a code unit, a
    /// surrogate pair and a UTF-8 sequence across reads happens somewhere.
    struct Trickle<'a>(&'a [u8], usize);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn utf16_streams_as_utf8_across_any_split() {
        use std::io::Read;
        let text = "Phổi: 𝄞 bình thường — Tim không to 😀";
        for le in [true, false] {
            let bytes: Vec<u8> = text
                .encode_utf16()
                .flat_map(|u| if le { u.to_le_bytes() } else { u.to_be_bytes() })
                .collect();
            for step in 1..7 {
                let mut out = String::new();
                let mut r = Utf16 {
                    inner: Trickle(&bytes, step),
                    le,
                    odd: None,
                    high: None,
                    out: Vec::new(),
                    at: 0,
                };
                r.read_to_string(&mut out).unwrap();
                assert_eq!(out, text, "le {le}, step {step}");
            }
            let mut odd = bytes.clone();
            odd.push(0);
            let mut lone = bytes.clone();
            lone.extend(if le { [0x00, 0xD8] } else { [0xD8, 0x00] });
            for (bad, why) in [(odd, "an odd number of bytes"), (lone, "unpaired surrogate D800")] {
                let mut r = Utf16 {
                    inner: &bad[..],
                    le,
                    odd: None,
                    high: None,
                    out: Vec::new(),
                    at: 0,
                };
                let err = r.read_to_string(&mut String::new()).unwrap_err().to_string();
                assert!(err.contains(why), "{err}");
            }
        }
    }

    /// The same session in UTF-8, UTF-8 with a BOM and UTF-16 of both byte orders reads
    /// the same, and the hash is the file's.
    #[test]
    fn every_encoding_reads_the_same_session() {
        let xml = "<SESSION><SESSION_ID>S1</SESSION_ID><PATIENT_ID>P1</PATIENT_ID>\
            <CHECK_IN_TIME>05/03/2021 08:15:00</CHECK_IN_TIME><CHECK_OUT_TIME>05/03/2021 09:00:00</CHECK_OUT_TIME>\
            <REPORT><SERVICE_ID>X1</SERVICE_ID><DESCRIPTION>Phổi sáng &amp; Tim không to</DESCRIPTION></REPORT></SESSION>";
        let p: Params = serde_json::from_str("{}").unwrap();
        let formats = TimeFormats::new(&p.time_formats).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut encodings = Vec::new();
        for (name, bytes) in [
            ("utf-8", xml.as_bytes().to_vec()),
            ("utf-8-bom", [&[0xEF, 0xBB, 0xBF][..], xml.as_bytes()].concat()),
            (
                "utf-16le",
                [0xFF, 0xFE]
                    .into_iter()
                    .chain(xml.encode_utf16().flat_map(u16::to_le_bytes))
                    .collect(),
            ),
            (
                "utf-16be",
                [0xFE, 0xFF]
                    .into_iter()
                    .chain(xml.encode_utf16().flat_map(u16::to_be_bytes))
                    .collect(),
            ),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes).unwrap();
            let (s, hash, failed) = read_session(std::fs::File::open(&path).unwrap(), &p, &formats).unwrap();
            let s = s.unwrap();
            assert_eq!((hash, failed), (blake3::hash(&bytes), None));
            assert_eq!((s.session_id.as_str(), s.patient_id.as_str()), ("S1", "P1"));
            assert_eq!(s.reports[0].description, "Phổi sáng & Tim không to");
            encodings.push(s.encoding);
        }
        assert_eq!(encodings, ["utf-8", "utf-8-bom", "utf-16le", "utf-16be"]);
        // Broken XML: a reason, and the whole file still hashed.
        let path = dir.path().join("cut");
        std::fs::write(&path, &xml.as_bytes()[..100]).unwrap();
        let (s, hash, _) = read_session(std::fs::File::open(&path).unwrap(), &p, &formats).unwrap();
        assert!(s.unwrap_err().contains("malformed XML"));
        assert_eq!(hash, blake3::hash(&xml.as_bytes()[..100]));
    }
}

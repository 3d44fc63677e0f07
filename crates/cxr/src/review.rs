//! The human loops of the paper: what a person must look at, as a CSV to fill in beside
//! a static HTML page to read it by (thumbnails, times, descriptions), and the answers
//! written back where the stages read them.
//!
//! - match: images with several candidate reports whose descriptions differ (`match`'s
//!   `review`). The person marks the right report in `choose`; the answers become lines
//!   of the match stage's `resolutions.csv`.
//! - label: descriptions the labeller cannot explain (`label`'s `review`), with the
//!   sections it could not read and the labels it would give from the rest; the answers
//!   become lines of `overrides.csv`.
//! - qc: the `qc` stage's seeded sample (see `qc.rs`); its verdicts are appended to the
//!   qc stage's verdicts file and the wrong ones become overrides (and resolutions when
//!   the report was the wrong one), so the next run draws the next round.
//!
//! Answers are merged, never appended blindly: an image or description answered again
//! replaces its earlier line, and an answer file that contradicts itself is refused with
//! its line numbers. Files are replaced atomically (written beside, then renamed).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use arrow::array::Array;

use crate::csv::{self, Table};
use crate::evaluate::report::{escape, url};
use crate::label::{LABELS, Labeller};
use pipe_core::stage::Stage as _;
use pipe_core::table::{f64_col, read_batch, str_col, time_col};

/// Side of a thumbnail, in pixels.
pub const THUMBNAIL: usize = 256;

/// What a written queue holds and where.
#[derive(Debug)]
pub struct Written {
    /// Items to answer (images for match, descriptions for label).
    pub items: usize,
    pub csv: PathBuf,
    pub html: PathBuf,
    /// Thumbnails that could not be made, with the reason.
    pub missing_thumbnails: Vec<String>,
}

/// What applying an answer file did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub changed: usize,
    pub unchanged: usize,
    /// Rows with no answer, left for later.
    pub unanswered: usize,
}

/// A file name for a UID or hash: its letters, digits and dots, else a hash of it.
fn file_stem(id: &str) -> String {
    if !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
        id.to_string()
    } else {
        blake3::hash(id.as_bytes()).to_hex()[..32].to_string()
    }
}

/// A thumbnail of a DICOM file (decoded as convert decodes) or of a PNG, letterboxed
/// to [`THUMBNAIL`] pixels, written to `out`.
pub fn thumbnail(source: &Path, out: &Path) -> anyhow::Result<()> {
    let img = if source.extension().is_some_and(|e| e == "png") {
        crate::pixels::load_gray(source)?
    } else {
        crate::quietly(|| crate::pixels::load(source)).map(|(g, _)| g)?
    };
    let square = crate::pixels::letterbox(&img, THUMBNAIL);
    let bytes: Vec<u8> = square.data.iter().map(|&v| crate::convert::to_u8(v)).collect();
    let png = crate::pixels::png_gray(&bytes, THUMBNAIL, THUMBNAIL)?;
    std::fs::write(out, png).with_context(|| format!("cannot write {}", out.display()))
}

/// Write `text` to `path` atomically: beside it, then renamed over it.
fn replace_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("pipe-tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// "2024-03-05 08:10" of a timestamp in microseconds.
fn time_text(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| micros.to_string())
}

const CSS: &str = "
body { font: 14px/1.4 system-ui, 'DejaVu Sans', sans-serif; color: #222; margin: 0 auto;
  padding: 24px 32px; max-width: 1180px; }
h1 { font-size: 22px; margin: 0 0 6px; }
.how { background: #f3f6fa; border-left: 4px solid #4a7fb5; padding: 8px 12px; }
.item { display: grid; grid-template-columns: 260px 1fr; gap: 16px; border-top: 1px solid #ddd;
  padding: 14px 0; }
.item img { width: 256px; height: 256px; background: #000; display: block; }
.noimg { width: 256px; height: 80px; color: #777; font-size: 12px; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 4px 8px; text-align: left; vertical-align: top; border-bottom: 1px solid #eee; }
th { font-weight: 600; }
.meta { color: #555; font-size: 13px; margin-bottom: 6px; overflow-wrap: anywhere; }
mark { background: #ffe08a; }
.labels td:first-child { width: 110px; }
.wrong { color: #b03a2e; font-weight: 600; }
";

/// The page skeleton shared by the review and QC pages.
pub fn page(title: &str, how: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"vi\">\n<head>\n<meta charset=\"utf-8\">\n<title>{t}</title>\n\
         <style>{CSS}</style>\n</head>\n<body>\n<h1>{t}</h1>\n<p class=\"how\">{}</p>\n{body}</body>\n</html>\n",
        escape(how),
        t = escape(title)
    )
}

/// `<img>` of a thumbnail, or why there is none.
fn picture(thumb: Option<&str>, why: &str) -> String {
    match thumb {
        Some(t) => format!("<img src=\"{}\" alt=\"\" loading=\"lazy\">", escape(&url(t))),
        None => format!("<div class=\"noimg\">no thumbnail: {}</div>", escape(why)),
    }
}

/// One candidate report of an image in the match queue.
struct Candidate {
    report_id: String,
    report_time: String,
    delay_hours: f64,
    description: String,
    note: String,
}

/// The match queue from `match`'s `review` table: `match.csv`, `match.html` and
/// `thumbs/` under `out`. `dicom(path)` resolves the table's `path` column.
pub fn write_match(review: &Path, dicom: &dyn Fn(&str) -> PathBuf, out: &Path) -> anyhow::Result<Written> {
    let b = read_batch(review)?;
    let (sop, path, patient) = (
        str_col(&b, "sop_instance_uid")?,
        str_col(&b, "path")?,
        str_col(&b, "patient_id")?,
    );
    let (study, reported) = (time_col(&b, "study_time")?, time_col(&b, "report_time")?);
    let (report, delay, description, note) = (
        str_col(&b, "report_id")?,
        f64_col(&b, "delay_hours")?,
        str_col(&b, "description")?,
        str_col(&b, "note")?,
    );
    // Images in the table's order, each with its candidates.
    let mut order: Vec<&str> = Vec::new();
    let mut images: HashMap<&str, (String, String, String, Vec<Candidate>)> = HashMap::new();
    for i in 0..b.num_rows() {
        let s = sop.value(i);
        let e = images.entry(s).or_insert_with(|| {
            order.push(s);
            (
                path.value(i).to_string(),
                patient.value(i).to_string(),
                time_text(study.value(i)),
                Vec::new(),
            )
        });
        e.3.push(Candidate {
            report_id: report.value(i).to_string(),
            report_time: time_text(reported.value(i)),
            delay_hours: delay.value(i),
            description: description.value(i).to_string(),
            note: if note.is_valid(i) {
                note.value(i).to_string()
            } else {
                String::new()
            },
        });
    }
    std::fs::create_dir_all(out.join("thumbs")).with_context(|| format!("cannot create {}", out.display()))?;
    let mut text = csv::line(&[
        "choose",
        "sop_instance_uid",
        "report_id",
        "patient_id",
        "study_time",
        "report_time",
        "delay_hours",
        "description",
        "thumbnail",
        "note",
    ]);
    let mut body = String::new();
    let mut missing = Vec::new();
    for s in &order {
        let (file, patient, study_time, candidates) = &images[s];
        let thumb = format!("thumbs/{}.png", file_stem(s));
        let made = thumbnail(&dicom(file), &out.join(&thumb));
        if let Err(e) = &made {
            missing.push(format!("{s}: {e:#}"));
        }
        let shown = made.as_ref().ok().map(|_| thumb.as_str());
        for c in candidates {
            text.push_str(&csv::line(&[
                "",
                s,
                &c.report_id,
                patient,
                study_time,
                &c.report_time,
                &format!("{:.2}", c.delay_hours),
                &c.description,
                shown.unwrap_or(""),
                &c.note,
            ]));
        }
        let _ = write!(
            body,
            "<div class=\"item\" id=\"{}\">{}<div><div class=\"meta\">image {} · patient {} · study {} · {}</div>\
             <table><thead><tr><th>report</th><th>report time</th><th>delay (h)</th><th>description</th></tr></thead><tbody>",
            escape(s),
            picture(
                shown,
                made.as_ref().err().map(|e| format!("{e:#}")).as_deref().unwrap_or("")
            ),
            escape(s),
            escape(patient),
            escape(study_time),
            escape(file)
        );
        for c in candidates {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{}{}</td></tr>",
                escape(&c.report_id),
                escape(&c.report_time),
                c.delay_hours,
                escape(&c.description),
                if c.note.is_empty() {
                    String::new()
                } else {
                    format!("<div class=\"meta\">{}</div>", escape(&c.note))
                }
            );
        }
        body.push_str("</tbody></table></div></div>\n");
    }
    let (csv_path, html_path) = (out.join("match.csv"), out.join("match.html"));
    replace_file(&csv_path, &text)?;
    let how = format!(
        "{} images have several candidate reports whose descriptions differ. For each, put x in \
         the `choose` column of match.csv on the row of the report that belongs to the image, then \
         run `pipe review FILE match --apply match.csv`: the answers go into the match stage's \
         resolutions file and the next run matches those images.",
        order.len()
    );
    replace_file(&html_path, &page("Match review", &how, &body))?;
    Ok(Written {
        items: order.len(),
        csv: csv_path,
        html: html_path,
        missing_thumbnails: missing,
    })
}

/// The key of a record: its `key` columns' values joined by `/`.
fn key_of(record: &[String], columns: &[usize]) -> String {
    columns
        .iter()
        .map(|&c| csv::get(record, c))
        .collect::<Vec<_>>()
        .join("/")
}

/// Merge `answers` (key → full record in `header`'s order) into the CSV at `path`,
/// whose records are keyed by the `key` columns: a key answered again replaces its line,
/// a new one is appended. The file keeps its lines, laid out in `header`'s order, with
/// any column of its own that `header` lacks kept after them.
fn merge_into(
    path: &Path,
    header: &[&str],
    key: &[&str],
    answers: Vec<(String, Vec<String>)>,
) -> anyhow::Result<Applied> {
    let mut columns: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    if path.exists() {
        let t = Table::read(path)?;
        let keys = key.iter().map(|k| t.column(k)).collect::<anyhow::Result<Vec<_>>>()?;
        columns.extend(
            t.header
                .iter()
                .filter(|h| !h.is_empty() && !header.contains(&h.as_str()))
                .cloned(),
        );
        let at: Vec<Option<usize>> = columns.iter().map(|c| t.header.iter().position(|h| h == c)).collect();
        lines = t
            .rows
            .iter()
            .filter(|(_, r)| !csv::get(r, 0).starts_with('#'))
            .map(|(_, r)| {
                let laid_out = at
                    .iter()
                    .map(|i| i.map_or("", |i| csv::get(r, i)).to_string())
                    .collect();
                (key_of(r, &keys), laid_out)
            })
            .collect();
    }
    let mut applied = Applied::default();
    for (k, mut record) in answers {
        record.resize(columns.len(), String::new());
        match lines.iter_mut().find(|(existing, _)| *existing == k) {
            Some((_, old)) if *old == record => applied.unchanged += 1,
            Some((_, old)) => {
                *old = record;
                applied.changed += 1;
            }
            None => {
                lines.push((k, record));
                applied.added += 1;
            }
        }
    }
    let mut text = csv::line(&columns);
    for (_, r) in &lines {
        text.push_str(&csv::line(r));
    }
    replace_file(path, &text)?;
    Ok(applied)
}

/// Applies a filled `match.csv`: the chosen report of each image becomes its line in
/// `resolutions`. Two reports chosen for one image is an error naming both lines.
pub fn apply_match(answers: &Path, resolutions: &Path) -> anyhow::Result<Applied> {
    let t = Table::read(answers)?;
    let (choose, sop, report) = (
        t.column("choose")?,
        t.column("sop_instance_uid")?,
        t.column("report_id")?,
    );
    let mut chosen: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut images = std::collections::HashSet::new();
    for (line, r) in &t.rows {
        images.insert(csv::get(r, sop).to_string());
        let mark = csv::get(r, choose).to_lowercase();
        if mark.is_empty() || ["0", "no", "n", "false"].contains(&mark.as_str()) {
            continue;
        }
        let (s, rep) = (csv::get(r, sop).to_string(), csv::get(r, report).to_string());
        if s.is_empty() || rep.is_empty() {
            bail!(
                "{}:{line}: a chosen row needs sop_instance_uid and report_id",
                answers.display()
            );
        }
        if let Some((first, other)) = chosen.get(&s)
            && *other != rep
        {
            bail!(
                "{}: image {s} has two reports chosen, {other} (line {first}) and {rep} (line {line}); keep one",
                answers.display()
            );
        }
        chosen.insert(s, (*line, rep));
    }
    let unanswered = images.len() - chosen.len();
    let answers = chosen
        .into_iter()
        .map(|(s, (_, rep))| (s.clone(), vec![s, rep]))
        .collect();
    let mut applied = merge_into(resolutions, &RESOLUTIONS, &["sop_instance_uid"], answers)?;
    applied.unanswered = unanswered;
    Ok(applied)
}

/// "pleura 1 (keyword:tràn dịch) · cardiac 0 · …": the labels a labeller gives from the
/// sections it reads, for the label queue.
fn suggestion(labeller: &Labeller, description: &str) -> String {
    match labeller.suggest(description) {
        Some((labels, by)) => LABELS
            .iter()
            .enumerate()
            .map(|(k, l)| {
                let v = u8::from(labels[k] != crate::label::State::Absent);
                if by[k] == "none" {
                    format!("{l} {v}")
                } else {
                    format!("{l} {v} ({})", by[k])
                }
            })
            .collect::<Vec<_>>()
            .join(" · "),
        None => String::new(),
    }
}

/// Where `needle` occurs in `hay` ignoring case, as a byte range of `hay`.
fn find_ignoring_case(hay: &str, needle: &str) -> Option<(usize, usize)> {
    let lower = |c: char| c.to_lowercase().next().unwrap_or(c);
    let h: Vec<(usize, char)> = hay.char_indices().map(|(i, c)| (i, lower(c))).collect();
    let n: Vec<char> = needle.chars().map(lower).collect();
    if n.is_empty() || n.len() > h.len() {
        return None;
    }
    (0..=h.len() - n.len())
        .find(|&i| h[i..i + n.len()].iter().map(|(_, c)| *c).eq(n.iter().copied()))
        .map(|i| {
            let end = h.get(i + n.len()).map_or(hay.len(), |(b, _)| *b);
            (h[i].0, end)
        })
}

/// `description` (in NFC) with each of `unexplained` — the sections as the labeller
/// quoted them, lower-cased — marked, as HTML.
fn marked(description: &str, unexplained: &[&str]) -> String {
    use unicode_normalization::UnicodeNormalization;
    let text: String = description.nfc().collect();
    let mut spans: Vec<(usize, usize)> = unexplained
        .iter()
        .map(|u| u.trim().nfc().collect::<String>())
        .filter_map(|u| find_ignoring_case(&text, &u))
        .collect();
    spans.sort_unstable();
    let mut html = String::new();
    let mut at = 0;
    for (s, e) in spans {
        if s < at {
            continue;
        }
        html.push_str(&escape(&text[at..s]));
        let _ = write!(html, "<mark>{}</mark>", escape(&text[s..e]));
        at = e;
    }
    html.push_str(&escape(&text[at..]));
    html
}

/// The label queue from `label`'s `review` table: `label.csv`, `label.html` and
/// `thumbs/` (an example image of each description, from `example_image(report_id)`)
/// under `out`, with the labels `labeller` suggests from the sections it reads.
pub fn write_label(
    review: &Path,
    labeller: &Labeller,
    example_image: &dyn Fn(&str) -> Option<PathBuf>,
    out: &Path,
) -> anyhow::Result<Written> {
    let b = read_batch(review)?;
    let (hash, description, example, unexplained) = (
        str_col(&b, "description_hash")?,
        str_col(&b, "description")?,
        str_col(&b, "example_report_id")?,
        str_col(&b, "unexplained")?,
    );
    let pairs = pipe_core::table::i64_col(&b, "pairs")?;
    std::fs::create_dir_all(out.join("thumbs")).with_context(|| format!("cannot create {}", out.display()))?;
    let mut header = vec!["description_hash"];
    header.extend(LABELS);
    header.extend(["note", "pairs", "suggested", "unexplained", "description", "thumbnail"]);
    let mut text = csv::line(&header);
    let mut body = String::new();
    let mut missing = Vec::new();
    for i in 0..b.num_rows() {
        let (h, d) = (hash.value(i), description.value(i));
        let thumb = format!("thumbs/{}.png", file_stem(h));
        let made = match example_image(example.value(i)) {
            Some(src) => thumbnail(&src, &out.join(&thumb)),
            None => Err(anyhow::anyhow!("no converted image of report {}", example.value(i))),
        };
        if let Err(e) = &made {
            missing.push(format!("{h}: {e:#}"));
        }
        let shown = made.as_ref().ok().map(|_| thumb.as_str());
        let suggested = suggestion(labeller, d);
        let mut record: Vec<String> = vec![h.to_string()];
        record.extend(LABELS.iter().map(|_| String::new()));
        record.extend([
            String::new(),
            pairs.value(i).to_string(),
            suggested.clone(),
            unexplained.value(i).to_string(),
            d.to_string(),
            shown.unwrap_or("").to_string(),
        ]);
        text.push_str(&csv::line(&record));
        let parts: Vec<&str> = unexplained.value(i).split(" | ").collect();
        let _ = writeln!(
            body,
            "<div class=\"item\" id=\"{}\">{}<div><div class=\"meta\">description {} · {} image(s) · example report {}</div>\
             <p>{}</p><table class=\"labels\"><tbody><tr><td>unexplained</td><td>{}</td></tr>\
             <tr><td>suggested</td><td>{}</td></tr></tbody></table></div></div>",
            escape(h),
            picture(
                shown,
                made.as_ref().err().map(|e| format!("{e:#}")).as_deref().unwrap_or("")
            ),
            escape(h),
            pairs.value(i),
            escape(example.value(i)),
            marked(d, &parts),
            escape(unexplained.value(i)),
            if suggested.is_empty() {
                "–".to_string()
            } else {
                escape(&suggested)
            }
        );
    }
    let (csv_path, html_path) = (out.join("label.csv"), out.join("label.html"));
    replace_file(&csv_path, &text)?;
    let how = format!(
        "{} descriptions hold sections the labeller cannot read (marked). Fill the five label columns \
         of label.csv with 1 or 0 for each (the suggestion is what the readable sections say), then run \
         `pipe review FILE label --apply label.csv`: the answers go into the label stage's overrides file.",
        b.num_rows()
    );
    replace_file(&html_path, &page("Label review", &how, &body))?;
    Ok(Written {
        items: b.num_rows(),
        csv: csv_path,
        html: html_path,
        missing_thumbnails: missing,
    })
}

/// The five labels of a record as 0/1, `None` when all are empty; a partly filled or
/// malformed row is an error naming its line.
fn labels_of(t: &Table, line: usize, r: &[String], columns: &[usize; 5]) -> anyhow::Result<Option<[bool; 5]>> {
    let fields: Vec<&str> = columns.iter().map(|&c| csv::get(r, c)).collect();
    if fields.iter().all(|f| f.is_empty()) {
        return Ok(None);
    }
    let mut out = [false; 5];
    for (k, f) in fields.iter().enumerate() {
        out[k] = match *f {
            "1" | "true" => true,
            "0" | "false" => false,
            other => bail!(
                "{}:{line}: `{}` must be 1 or 0 (fill all five labels or none), got {other:?}",
                t.path.display(),
                LABELS[k]
            ),
        };
    }
    Ok(Some(out))
}

fn label_columns(t: &Table) -> anyhow::Result<[usize; 5]> {
    let mut c = [0; 5];
    for (k, l) in LABELS.iter().enumerate() {
        c[k] = t.column(l)?;
    }
    Ok(c)
}

/// The header of a resolutions file.
const RESOLUTIONS: [&str; 2] = ["sop_instance_uid", "report_id"];

/// The header of an overrides file.
const OVERRIDES: [&str; 7] = [
    "description_hash",
    "chest_wall",
    "pleura",
    "parenchyma",
    "cardiac",
    "abnormal",
    "note",
];

fn override_record(hash: &str, labels: [bool; 5], note: &str) -> Vec<String> {
    let mut r = vec![hash.to_string()];
    r.extend(labels.iter().map(|&b| u8::from(b).to_string()));
    r.push(note.to_string());
    r
}

/// Applies a filled `label.csv`: each fully answered description becomes its line in
/// `overrides`.
pub fn apply_label(answers: &Path, overrides: &Path) -> anyhow::Result<Applied> {
    let t = Table::read(answers)?;
    let (hash, columns) = (t.column("description_hash")?, label_columns(&t)?);
    let note = t.column("note").ok();
    let mut out = Vec::new();
    let mut unanswered = 0;
    for (line, r) in &t.rows {
        match labels_of(&t, *line, r, &columns)? {
            Some(l) => out.push((
                csv::get(r, hash).to_string(),
                override_record(csv::get(r, hash), l, note.map_or("", |n| csv::get(r, n))),
            )),
            None => unanswered += 1,
        }
    }
    let mut applied = merge_into(overrides, &OVERRIDES, &["description_hash"], out)?;
    applied.unanswered = unanswered;
    Ok(applied)
}

/// The columns of a QC verdicts file, in order.
pub const VERDICT_COLUMNS: [&str; 11] = [
    "round",
    "sop_instance_uid",
    "verdict",
    "chest_wall",
    "pleura",
    "parenchyma",
    "cardiac",
    "abnormal",
    "report_id",
    "description_hash",
    "note",
];

/// What applying a QC round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AppliedQc {
    pub verdicts: Applied,
    pub overrides: Applied,
    pub resolutions: Applied,
    pub wrong: usize,
}

/// Applies a filled QC sheet (`qc.csv` of the qc stage): every verdict (`ok` or
/// `wrong`) is merged into `verdicts` (what the qc stage reads to draw the next round);
/// a wrong one's five labels become an override of its description and, when its
/// `report_id` was changed from the paired report `paired(sop)`, a resolution.
pub fn apply_qc(
    answers: &Path,
    verdicts: &Path,
    overrides: &Path,
    resolutions: &Path,
    paired: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<AppliedQc> {
    let t = Table::read(answers)?;
    let col = |n: &str| t.column(n);
    let (round, sop, verdict, report, hash) = (
        col("round")?,
        col("sop_instance_uid")?,
        col("verdict")?,
        col("report_id")?,
        col("description_hash")?,
    );
    let (columns, note) = (label_columns(&t)?, col("note").ok());
    let mut out = AppliedQc::default();
    let (mut seen, mut fixes, mut reports) = (Vec::new(), Vec::new(), Vec::new());
    for (line, r) in &t.rows {
        let v = csv::get(r, verdict).to_lowercase();
        let wrong = match v.as_str() {
            "" => {
                out.verdicts.unanswered += 1;
                continue;
            }
            "ok" | "right" | "correct" => false,
            "wrong" | "error" => true,
            other => bail!(
                "{}:{line}: verdict must be ok or wrong, got {other:?}",
                t.path.display()
            ),
        };
        let s = csv::get(r, sop).to_string();
        let n = note.map_or("", |n| csv::get(r, n));
        let labels = labels_of(&t, *line, r, &columns)?;
        let mut record: Vec<String> = vec![csv::get(r, round).to_string(), s.clone(), v.clone()];
        record.extend(
            LABELS
                .iter()
                .enumerate()
                .map(|(k, _)| labels.map_or(String::new(), |l| u8::from(l[k]).to_string())),
        );
        record.extend([
            csv::get(r, report).to_string(),
            csv::get(r, hash).to_string(),
            n.to_string(),
        ]);
        seen.push((format!("{}/{s}", csv::get(r, round)), record));
        if wrong {
            out.wrong += 1;
            let Some(l) = labels else {
                bail!(
                    "{}:{line}: a wrong verdict needs the five right labels",
                    t.path.display()
                );
            };
            fixes.push((csv::get(r, hash).to_string(), override_record(csv::get(r, hash), l, n)));
            let rep = csv::get(r, report);
            if !rep.is_empty() && paired(&s).as_deref() != Some(rep) {
                reports.push((s.clone(), vec![s.clone(), rep.to_string()]));
            }
        }
    }
    // Verdicts are keyed by round and image, so a round's sheet can be applied again.
    let unanswered = out.verdicts.unanswered;
    out.verdicts = merge_into(verdicts, &VERDICT_COLUMNS, &["round", "sop_instance_uid"], seen)?;
    out.verdicts.unanswered = unanswered;
    out.overrides = merge_into(overrides, &OVERRIDES, &["description_hash"], fixes)?;
    out.resolutions = merge_into(resolutions, &RESOLUTIONS, &["sop_instance_uid"], reports)?;
    Ok(out)
}

/// `pipe label-eval --html`: the disagreements (and descriptions left for review) on a
/// page like the review queues', so a radiologist reads both the same way. Each entry
/// is label-eval's text: its first line (id, rule, description), then the details.
pub fn disagreements_page(title: &str, disagreements: &[String], reviews: &[String]) -> String {
    let mut body = String::new();
    for (heading, entries) in [("Disagreements", disagreements), ("Left for review", reviews)] {
        if entries.is_empty() {
            continue;
        }
        let _ = write!(body, "<h2>{heading} ({})</h2>\n<table><tbody>\n", entries.len());
        for e in entries {
            let (first, rest) = e.split_once('\n').unwrap_or((e, ""));
            let _ = writeln!(
                body,
                "<tr><td>{}<div class=\"meta\">{}</div></td></tr>",
                escape(first).replace(" / ", "<br>"),
                escape(rest.trim())
            );
        }
        body.push_str("</tbody></table>\n");
    }
    page(
        title,
        "What the labeller decided differently from the hand labels, with what decided each label; a description left \
         for review is answered in overrides.csv (`pipe review FILE label` writes the queue of a pipeline's).",
        &body,
    )
}

/// The queues `pipe review` knows.
pub const QUEUES: [&str; 3] = ["match", "label", "qc"];

/// The stage of `kind` the queue comes from: `named`, else the pipeline's only one.
fn stage_of<'a>(
    p: &'a pipe_core::config::Pipeline,
    kind: &str,
    named: Option<&str>,
) -> anyhow::Result<&'a pipe_core::config::StageSpec> {
    if let Some(n) = named {
        let s = p
            .stage(n)
            .with_context(|| format!("no stage `{n}` in {}", p.file.display()))?;
        anyhow::ensure!(
            s.kind.name() == kind,
            "stage `{n}` is a {}, not a {kind} stage",
            s.kind.name()
        );
        return Ok(s);
    }
    let all: Vec<_> = p.stages.iter().filter(|s| s.kind.name() == kind).collect();
    match all.as_slice() {
        [one] => Ok(one),
        [] => bail!("{} has no {kind} stage", p.file.display()),
        many => bail!(
            "{} has several {kind} stages ({}): name one with --stage",
            p.file.display(),
            many.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A path param of a stage, resolved against the pipeline root.
fn path_param(
    p: &pipe_core::config::Pipeline,
    s: &pipe_core::config::StageSpec,
    param: &str,
) -> anyhow::Result<PathBuf> {
    let v = s.prepared.params[param]
        .as_str()
        .with_context(|| format!("stage `{}` has no `{param}` param", s.name))?;
    Ok(p.resolve(v))
}

/// The current result's table of a stage.
fn current(p: &pipe_core::config::Pipeline, stage: &str, table: &str) -> anyhow::Result<PathBuf> {
    pipe_core::cli::table_path(p, &format!("{stage}.{table}"))
}

fn applied_text(what: &str, a: &Applied, file: &Path) -> String {
    format!(
        "{what}: {} added, {} changed, {} unchanged in {}; {} left unanswered\n",
        a.added,
        a.changed,
        a.unchanged,
        file.display(),
        a.unanswered
    )
}

fn written_text(w: &Written, what: &str) -> String {
    let mut out = format!(
        "{} {what} to review: fill {} (read it by {})\n",
        w.items,
        w.csv.display(),
        w.html.display()
    );
    for m in &w.missing_thumbnails {
        let _ = writeln!(out, "  no thumbnail for {m}");
    }
    out
}

/// `pipe review`: write the queue's files under `out` (default `review/<pipeline>/`
/// under the root), or apply a filled answer file. Returns what to print.
pub fn run(
    p: &pipe_core::config::Pipeline,
    queue: &str,
    out: Option<&Path>,
    apply: Option<&Path>,
    stage: Option<&str>,
) -> anyhow::Result<String> {
    let out_dir = out.map_or_else(|| p.root.join("review").join(&p.name), Path::to_path_buf);
    match (queue, apply) {
        ("match", None) => {
            let s = stage_of(p, crate::matching::Match::KIND, stage)?;
            let w = write_match(&current(p, &s.name, "review")?, &|f| p.resolve(f), &out_dir)?;
            Ok(written_text(&w, "images"))
        }
        ("match", Some(answers)) => {
            let s = stage_of(p, crate::matching::Match::KIND, stage)?;
            let file = path_param(p, s, "resolutions")?;
            Ok(applied_text("resolutions", &apply_match(answers, &file)?, &file))
        }
        ("label", None) => {
            let s = stage_of(p, crate::label::Label::KIND, stage)?;
            let params: crate::label::Params = serde_json::from_value(s.prepared.params.clone())?;
            let labeller = Labeller::load(&params, &|f: &str| p.resolve(f))?;
            // An example image per report: match's pairs (report → image) and convert's
            // images, when both have a current result.
            let mut image_of: HashMap<String, PathBuf> = HashMap::new();
            let pairs = stage_of(p, crate::matching::Match::KIND, None).and_then(|m| current(p, &m.name, "pairs"));
            let images = stage_of(p, crate::convert::Convert::KIND, None).and_then(|c| current(p, &c.name, "images"));
            if let (Ok(pairs), Ok(images)) = (pairs, images) {
                let (pb, ib) = (read_batch(&pairs)?, read_batch(&images)?);
                let (ps, pr) = (str_col(&pb, "sop_instance_uid")?, str_col(&pb, "report_id")?);
                let (is, ii) = (str_col(&ib, "sop_instance_uid")?, str_col(&ib, "image")?);
                let dir = images.parent().unwrap_or(Path::new("."));
                let by_sop: HashMap<&str, &str> = (0..ib.num_rows()).map(|i| (is.value(i), ii.value(i))).collect();
                for i in 0..pb.num_rows() {
                    if let Some(img) = by_sop.get(ps.value(i)) {
                        image_of.entry(pr.value(i).to_string()).or_insert_with(|| dir.join(img));
                    }
                }
            }
            let w = write_label(
                &current(p, &s.name, "review")?,
                &labeller,
                &|report| image_of.get(report).cloned(),
                &out_dir,
            )?;
            Ok(written_text(&w, "descriptions"))
        }
        ("label", Some(answers)) => {
            let s = stage_of(p, crate::label::Label::KIND, stage)?;
            let file = path_param(p, s, "overrides")?;
            Ok(applied_text("overrides", &apply_label(answers, &file)?, &file))
        }
        ("qc", None) => {
            let s = stage_of(p, crate::qc::Qc::KIND, stage)?;
            let entry = current(p, &s.name, "sample")?;
            let entry = entry.parent().context("a table without a folder")?;
            std::fs::create_dir_all(out_dir.join("thumbs"))?;
            for f in ["qc.csv", "qc.html"] {
                std::fs::copy(entry.join(f), out_dir.join(f)).with_context(|| format!("cannot copy {f}"))?;
            }
            let mut n = 0;
            for t in std::fs::read_dir(entry.join("thumbs"))? {
                let t = t?;
                std::fs::copy(t.path(), out_dir.join("thumbs").join(t.file_name()))?;
                n += 1;
            }
            Ok(format!(
                "{n} images of the current QC round: fill {} (read it by {})\n",
                out_dir.join("qc.csv").display(),
                out_dir.join("qc.html").display()
            ))
        }
        ("qc", Some(answers)) => {
            let s = stage_of(p, crate::qc::Qc::KIND, stage)?;
            let verdicts = path_param(p, s, "verdicts")?;
            let overrides = path_param(p, stage_of(p, crate::label::Label::KIND, None)?, "overrides")?;
            let resolutions = path_param(p, stage_of(p, crate::matching::Match::KIND, None)?, "resolutions")?;
            // The report each sampled image is paired with, to tell a changed report_id.
            let sample = read_batch(&current(p, &s.name, "sample")?)?;
            let (ss, sr) = (str_col(&sample, "sop_instance_uid")?, str_col(&sample, "report_id")?);
            let paired: HashMap<String, String> = (0..sample.num_rows())
                .map(|i| (ss.value(i).to_string(), sr.value(i).to_string()))
                .collect();
            let a = apply_qc(answers, &verdicts, &overrides, &resolutions, &|s| {
                paired.get(s).cloned()
            })?;
            let mut text = applied_text("verdicts", &a.verdicts, &verdicts);
            text.push_str(&applied_text("overrides", &a.overrides, &overrides));
            text.push_str(&applied_text("resolutions", &a.resolutions, &resolutions));
            let _ = writeln!(
                text,
                "{} judged wrong; `pipe run` labels again and draws the next round{}",
                a.wrong,
                if a.wrong == 0 {
                    " only if this one is not complete"
                } else {
                    ""
                }
            );
            Ok(text)
        }
        (other, _) => bail!("unknown queue `{other}`: one of {}", QUEUES.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_answers_merge_into_resolutions() {
        let dir = tempfile::tempdir().unwrap();
        let (answers, resolutions) = (dir.path().join("match.csv"), dir.path().join("resolutions.csv"));
        std::fs::write(
            &resolutions,
            "report_id,sop_instance_uid,who\nR0,1.1,dr A\nR9,1.9,dr B\n",
        )
        .unwrap();
        std::fs::write(
            &answers,
            "choose,sop_instance_uid,report_id,description\nx,1.1,R1,\"a, b\"\n,1.1,R2,c\n,1.2,R3,d\n,1.2,R4,e\nX,1.3,R5,f\n",
        )
        .unwrap();
        let a = apply_match(&answers, &resolutions).unwrap();
        assert_eq!(
            a,
            Applied {
                added: 1,
                changed: 1,
                unchanged: 0,
                unanswered: 1
            }
        );
        // Laid out in the usual order, the file's own column kept.
        assert_eq!(
            std::fs::read_to_string(&resolutions).unwrap(),
            "sop_instance_uid,report_id,who\n1.1,R1,\n1.9,R9,dr B\n1.3,R5,\n"
        );
        // Applying again changes nothing.
        assert_eq!(apply_match(&answers, &resolutions).unwrap().unchanged, 2);
        // Two reports chosen for one image: refused, naming both lines.
        std::fs::write(&answers, "choose,sop_instance_uid,report_id\nx,1.1,R1\nx,1.1,R2\n").unwrap();
        let e = apply_match(&answers, &resolutions).unwrap_err().to_string();
        assert!(e.contains("R1 (line 2) and R2 (line 3)"), "{e}");
    }

    #[test]
    fn label_answers_need_all_five_labels() {
        let dir = tempfile::tempdir().unwrap();
        let (answers, overrides) = (dir.path().join("label.csv"), dir.path().join("overrides.csv"));
        std::fs::write(
            &answers,
            "description_hash,chest_wall,pleura,parenchyma,cardiac,abnormal,note,description\n\
             aaaa,0,1,0,0,1,dr. X,\"Tràn dịch, ít\"\nbbbb,,,,,,,x\n",
        )
        .unwrap();
        let a = apply_label(&answers, &overrides).unwrap();
        assert_eq!((a.added, a.unanswered), (1, 1));
        let text = std::fs::read_to_string(&overrides).unwrap();
        assert_eq!(
            text,
            "description_hash,chest_wall,pleura,parenchyma,cardiac,abnormal,note\naaaa,0,1,0,0,1,dr. X\n"
        );
        // The label stage reads what was written.
        let o = crate::label::load_overrides(&overrides).unwrap();
        assert_eq!(o["aaaa"], [false, true, false, false, true]);
        std::fs::write(
            &answers,
            "description_hash,chest_wall,pleura,parenchyma,cardiac,abnormal\ncccc,1,,0,0,1\n",
        )
        .unwrap();
        let e = apply_label(&answers, &overrides).unwrap_err().to_string();
        assert!(e.contains("label.csv:2: `pleura` must be 1 or 0"), "{e}");
    }

    #[test]
    fn qc_verdicts_feed_overrides_resolutions_and_the_verdicts_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = |n: &str| dir.path().join(n);
        let mut sheet = csv::line(&VERDICT_COLUMNS);
        sheet.push_str(&csv::line(&["1", "1.1", "ok", "0", "0", "0", "0", "0", "R1", "h1", ""]));
        sheet.push_str(&csv::line(&[
            "1", "1.2", "wrong", "0", "1", "0", "0", "1", "R2", "h2", "effusion",
        ]));
        sheet.push_str(&csv::line(&[
            "1",
            "1.3",
            "wrong",
            "0",
            "0",
            "0",
            "1",
            "1",
            "R7",
            "h3",
            "wrong report",
        ]));
        sheet.push_str(&csv::line(&["1", "1.4", "", "0", "0", "0", "0", "0", "R4", "h4", ""]));
        std::fs::write(f("qc.csv"), sheet).unwrap();
        let paired = |s: &str| Some(format!("R{}", &s[2..]));
        let a = apply_qc(
            &f("qc.csv"),
            &f("verdicts.csv"),
            &f("overrides.csv"),
            &f("resolutions.csv"),
            &paired,
        )
        .unwrap();
        assert_eq!(a.wrong, 2);
        assert_eq!((a.verdicts.added, a.verdicts.unanswered), (3, 1));
        assert_eq!(a.overrides.added, 2);
        assert_eq!(a.resolutions.added, 1, "1.3 was paired with R3, the sheet says R7");
        assert_eq!(
            std::fs::read_to_string(f("resolutions.csv")).unwrap(),
            "sop_instance_uid,report_id\n1.3,R7\n"
        );
        let o = crate::label::load_overrides(&f("overrides.csv")).unwrap();
        assert_eq!(o["h2"], [false, true, false, false, true]);
        // The same sheet again: nothing new.
        let again = apply_qc(
            &f("qc.csv"),
            &f("verdicts.csv"),
            &f("overrides.csv"),
            &f("resolutions.csv"),
            &paired,
        )
        .unwrap();
        assert_eq!((again.verdicts.added, again.verdicts.unchanged), (0, 3));
    }

    #[test]
    fn unexplained_sections_are_marked_in_the_description() {
        let html = marked("Tim to. Dày <rãnh> liên thùy.", &["dày <rãnh> liên thùy", ""]);
        assert_eq!(html, "Tim to. <mark>Dày &lt;rãnh&gt; liên thùy</mark>.");
        // Decomposed input is shown composed, and still found.
        let nfd = "Vo\u{302}i ho\u{301}a quai.";
        assert_eq!(marked(nfd, &["vôi hóa"]), "<mark>Vôi hóa</mark> quai.");
        assert_eq!(file_stem("1.2.840.5"), "1.2.840.5");
        assert_eq!(file_stem("../x").len(), 32);
    }
}

//! `report.html` of the `evaluate` stage: one self-contained page (inline CSS, no
//! script, nothing fetched). In order: warnings (an optimistic setting), the dataset
//! funnel, the split (the paper's Table 2), the metrics table (CIs on a second line so
//! that it fits a 1280-px window), confusion matrices, the pictures (ROC, precision–
//! recall, reliability, Grad-CAM of true positives, false positives and false negatives,
//! training curves), provenance and notes. Each section has an `id`, so a test (or a
//! link) can find it.
//!
//! The input is a plain struct so that this file depends on nothing else in the crate:
//! the stage maps its metrics into it. Every text is HTML-escaped; file names are also
//! percent-encoded, since labels (and so Grad-CAM file names) may hold spaces or
//! Vietnamese letters.

use std::fmt::Write as _;

/// An estimate with its 95% interval: (value, low, high); NaN where not computed.
pub type Estimate = (f64, f64, f64);

/// One line of the metrics table: a class, or the macro average (label `"macro"`,
/// shown last and in bold).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub label: String,
    /// The decision threshold; `None` for the macro row.
    pub threshold: Option<f64>,
    /// `None` where AUC is undefined (a single label value).
    pub auc: Option<Estimate>,
    pub f1: Estimate,
    pub sensitivity: Estimate,
    pub specificity: Estimate,
    pub precision: Estimate,
    pub accuracy: Estimate,
    /// Average precision; `None` without positives.
    pub average_precision: Option<f64>,
    /// Expected calibration error (NaN when not computed).
    pub ece: f64,
    /// Images evaluated.
    pub support: usize,
    /// Positive images among them.
    pub positives: usize,
}

/// One step of the dataset funnel ("PACS files → readable → PA chest → …").
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelStep {
    pub step: String,
    pub count: u64,
    /// Where the count comes from (`collect.dicoms`).
    pub source: String,
}

/// The paper's Table 2: per part (and `all`, last), patients, images and the positive
/// images of each label.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SplitTable {
    pub parts: Vec<String>,
    pub patients: Vec<u64>,
    pub images: Vec<u64>,
    /// (label, positives per part).
    pub positives: Vec<(String, Vec<u64>)>,
}

/// One class's confusion matrix at its threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfusionMatrix {
    pub label: String,
    pub threshold: f64,
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    pub fn_: u64,
}

/// The whole page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    pub title: String,
    pub subtitle: String,
    /// Shown first, in a box: what makes these numbers less than they seem.
    pub warnings: Vec<String>,
    /// The dataset funnel, first step first.
    pub funnel: Vec<FunnelStep>,
    pub split: Option<SplitTable>,
    pub rows: Vec<Row>,
    pub confusion: Vec<ConfusionMatrix>,
    /// (file name relative to report.html, caption), in display order. Files at the top
    /// level are shown full width under a heading from their name's first word
    /// (`roc…` → "ROC curves", `history…` → "Training curves"); files in a folder
    /// (`gradcam/…`) form a gallery headed by the folder.
    pub images: Vec<(String, String)>,
    /// (what, value) lines: pipe version, date, cache keys, input hashes, params.
    pub provenance: Vec<(String, String)>,
    pub notes: Vec<String>,
}

/// Escapes text for HTML content and double-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A relative file name as a URL path: bytes other than unreserved ones and `/`
/// percent-encoded (UTF-8), so any label survives in `src` and `href`.
pub fn url(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "–".to_string()
    }
}

/// "0.953" over a smaller "0.921–0.978" (two lines keep the table within a 1280-px
/// page); a bound that could not be computed prints as "–".
fn estimate((value, low, high): Estimate) -> String {
    let ci = match (low.is_finite(), high.is_finite()) {
        (true, true) => format!("{}–{}", num(low), num(high)),
        (false, false) => "–".to_string(),
        _ => format!("{} to {}", num(low), num(high)),
    };
    format!("{}<br><span class=\"ci\">{ci}</span>", num(value))
}

/// "1,234": counts as people read them.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "12.3%" of `n` in `of`; "–" when `of` is 0.
fn percent(n: u64, of: u64) -> String {
    if of == 0 {
        "–".into()
    } else {
        format!("{:.1}%", 100.0 * n as f64 / of as f64)
    }
}

/// The heading of a group of pictures.
fn section_title(key: &str) -> String {
    match key {
        "roc" => "ROC curves".to_string(),
        "pr" => "Precision–recall curves".to_string(),
        "calibration" => "Calibration (reliability diagram)".to_string(),
        "history" => "Training curves".to_string(),
        "gradcam" | "grad-cam" | "cam" => "Grad-CAM: confident true positives".to_string(),
        "false_positives" => "Grad-CAM: false positives".to_string(),
        "false_negatives" => "Grad-CAM: false negatives".to_string(),
        other => other.to_string(),
    }
}

/// The group of a picture: its folder, or the first word of a top-level file's name.
fn group_of(path: &str) -> (String, bool) {
    match path.split_once('/') {
        Some((folder, _)) => (folder.to_ascii_lowercase(), true),
        None => {
            let stem = path.split(['_', '-', '.']).next().unwrap_or(path);
            (stem.to_ascii_lowercase(), false)
        }
    }
}

const CSS: &str = "
body { font: 14px/1.4 system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif;
  color: #222; background: #fff; margin: 0 auto; padding: 24px 32px 48px; max-width: 1180px; }
h1 { font-size: 24px; margin: 0 0 4px; }
.subtitle { color: #555; margin: 0 0 20px; }
h2 { font-size: 19px; margin: 32px 0 10px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.warning { border: 2px solid #c0392b; background: #fdf0ee; color: #7b241c; padding: 10px 14px;
  margin: 0 0 20px; font-weight: 600; }
.wide { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
table.metrics { width: 100%; }
th, td { padding: 4px 8px; text-align: right; white-space: nowrap; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #444; font-weight: 600; }
tbody tr:nth-child(even) { background: #f6f7f9; }
tr.macro td { font-weight: 700; border-top: 2px solid #444; background: #fff; }
.ci { color: #666; font-size: 12px; font-weight: 400; }
.bar { display: inline-block; height: 12px; background: #4a7fb5; vertical-align: middle; }
td.barcell { width: 40%; text-align: left; }
.source { color: #777; font-size: 12px; }
.confusion { display: grid; grid-template-columns: repeat(auto-fill, minmax(215px, 1fr)); gap: 12px; }
.confusion table { width: 100%; table-layout: fixed; }
.confusion th, .confusion td { padding: 4px 5px; }
.confusion caption { text-align: left; font-weight: 600; padding-bottom: 4px; }
.confusion td.hit { background: #e3f0e3; }
.confusion td.miss { background: #f8e5e3; }
figure { margin: 0 0 20px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e3e3; display: block; }
figcaption { color: #555; font-size: 13px; margin-top: 4px; overflow-wrap: anywhere; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 16px; }
.gallery figure { margin: 0; }
.pictures { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 16px; }
table.provenance td { white-space: normal; text-align: left; overflow-wrap: anywhere; }
table.provenance td:first-child { white-space: nowrap; color: #555; }
pre { background: #f6f7f9; padding: 8px; white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; }
ul.notes { color: #444; padding-left: 20px; }
";

/// Renders the page. Deterministic: same report ⇒ same text.
pub fn report_html(r: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&r.title),
        escape(&r.title)
    );
    if !r.subtitle.is_empty() {
        let _ = writeln!(h, "<p class=\"subtitle\">{}</p>", escape(&r.subtitle));
    }
    for w in &r.warnings {
        let _ = writeln!(h, "<p class=\"warning\" id=\"warning\">{}</p>", escape(w));
    }
    funnel(&mut h, &r.funnel);
    if let Some(split) = &r.split {
        split_table(&mut h, split);
    }
    metrics_table(&mut h, &r.rows);
    confusion(&mut h, &r.confusion);
    pictures(&mut h, &r.images);
    if !r.provenance.is_empty() {
        h.push_str("<h2 id=\"provenance\">Provenance</h2>\n<table class=\"provenance\">\n<tbody>\n");
        for (what, value) in &r.provenance {
            // Multi-line values (the params) keep their layout.
            let value = if value.contains('\n') {
                format!("<pre>{}</pre>", escape(value))
            } else {
                escape(value)
            };
            let _ = writeln!(h, "<tr><td>{}</td><td>{value}</td></tr>", escape(what));
        }
        h.push_str("</tbody>\n</table>\n");
    }
    if !r.notes.is_empty() {
        h.push_str("<h2 id=\"notes\">Notes</h2>\n<ul class=\"notes\">\n");
        for note in &r.notes {
            let _ = writeln!(h, "<li>{}</li>", escape(note));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

/// Each step with its count, its share of the first step and a bar of that length.
fn funnel(h: &mut String, steps: &[FunnelStep]) {
    let Some(first) = steps.first() else { return };
    h.push_str(
        "<h2 id=\"funnel\">Dataset</h2>\n<div class=\"wide\"><table class=\"funnel metrics\">\n\
         <thead><tr><th>step</th><th>count</th><th>of the first</th><th></th></tr></thead>\n<tbody>\n",
    );
    for s in steps {
        let share = if first.count == 0 {
            0.0
        } else {
            100.0 * s.count as f64 / first.count as f64
        };
        let _ = writeln!(
            h,
            "<tr><td>{} <span class=\"source\">{}</span></td><td>{}</td><td>{}</td>\
             <td class=\"barcell\"><span class=\"bar\" style=\"width:{:.1}%\"></span></td></tr>",
            escape(&s.step),
            escape(&s.source),
            count(s.count),
            percent(s.count, first.count),
            share.clamp(0.0, 100.0)
        );
    }
    h.push_str("</tbody>\n</table></div>\n");
}

/// The paper's Table 2: positives (and their share) per label and part.
fn split_table(h: &mut String, t: &SplitTable) {
    h.push_str(
        "<h2 id=\"split\">Split</h2>\n<div class=\"wide\"><table class=\"split metrics\">\n<thead><tr><th></th>",
    );
    for part in &t.parts {
        let _ = write!(h, "<th>{}</th>", escape(part));
    }
    h.push_str("</tr></thead>\n<tbody>\n<tr><td>patients</td>");
    for n in &t.patients {
        let _ = write!(h, "<td>{}</td>", count(*n));
    }
    h.push_str("</tr>\n<tr><td>images</td>");
    for n in &t.images {
        let _ = write!(h, "<td>{}</td>", count(*n));
    }
    h.push_str("</tr>\n");
    for (label, positives) in &t.positives {
        let _ = write!(h, "<tr><td>{}</td>", escape(label));
        for (n, of) in positives.iter().zip(&t.images) {
            let _ = write!(
                h,
                "<td>{} <span class=\"ci\">({})</span></td>",
                count(*n),
                percent(*n, *of)
            );
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table></div>\n");
}

fn metrics_table(h: &mut String, rows: &[Row]) {
    h.push_str(
        "<h2 id=\"metrics\">Metrics</h2>\n<div class=\"wide\"><table class=\"metrics\">\n<thead><tr>\
         <th>class</th><th>AUC</th><th>AP</th><th>F1</th><th>sensitivity</th><th>specificity</th>\
         <th>precision</th><th>accuracy</th><th>ECE</th><th>threshold</th><th>positives / images</th>\
         </tr></thead>\n<tbody>\n",
    );
    // The macro row closes the table whatever the order given.
    let (classes, averages): (Vec<&Row>, Vec<&Row>) = rows.iter().partition(|row| row.label != "macro");
    for row in classes.into_iter().chain(averages) {
        let class = if row.label == "macro" { " class=\"macro\"" } else { "" };
        let _ = writeln!(
            h,
            "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td></tr>",
            escape(&row.label),
            row.auc.map_or_else(|| "–".to_string(), estimate),
            row.average_precision.map_or_else(|| "–".to_string(), num),
            estimate(row.f1),
            estimate(row.sensitivity),
            estimate(row.specificity),
            estimate(row.precision),
            estimate(row.accuracy),
            num(row.ece),
            row.threshold.map_or_else(|| "–".to_string(), num),
            // The macro row's positives would be a sum over classes: not a count of images.
            if row.label == "macro" {
                "–".to_string()
            } else {
                count(row.positives as u64)
            },
            count(row.support as u64),
        );
    }
    h.push_str("</tbody>\n</table></div>\n");
}

/// A 2×2 table per class: truth in rows, the decision in columns.
fn confusion(h: &mut String, matrices: &[ConfusionMatrix]) {
    if matrices.is_empty() {
        return;
    }
    h.push_str("<h2 id=\"confusion\">Confusion matrices</h2>\n<div class=\"confusion\">\n");
    for m in matrices {
        let _ = writeln!(
            h,
            "<table><caption>{} <span class=\"ci\">(threshold {})</span></caption>\n\
             <thead><tr><th></th><th>called +</th><th>called −</th></tr></thead>\n<tbody>\n\
             <tr><td>truth +</td><td class=\"hit\">{} <span class=\"ci\">TP</span></td>\
             <td class=\"miss\">{} <span class=\"ci\">FN</span></td></tr>\n\
             <tr><td>truth −</td><td class=\"miss\">{} <span class=\"ci\">FP</span></td>\
             <td class=\"hit\">{} <span class=\"ci\">TN</span></td></tr>\n</tbody></table>",
            escape(&m.label),
            num(m.threshold),
            count(m.tp),
            count(m.fn_),
            count(m.fp),
            count(m.tn)
        );
    }
    h.push_str("</div>\n");
}

/// Consecutive pictures of one group share a heading; a folder's are a gallery.
fn pictures(h: &mut String, images: &[(String, String)]) {
    let mut i = 0;
    while i < images.len() {
        let (key, gallery) = group_of(&images[i].0);
        let mut j = i;
        while j < images.len() && group_of(&images[j].0) == (key.clone(), gallery) {
            j += 1;
        }
        let _ = writeln!(h, "<h2 id=\"{}\">{}</h2>", escape(&key), escape(&section_title(&key)));
        if gallery {
            h.push_str("<div class=\"gallery\">\n");
        }
        for (file, caption) in &images[i..j] {
            let (u, c) = (escape(&url(file)), escape(caption));
            let _ = writeln!(
                h,
                "<figure><a href=\"{u}\"><img src=\"{u}\" alt=\"{c}\" loading=\"lazy\"></a>\
                 <figcaption>{c}</figcaption></figure>"
            );
        }
        if gallery {
            h.push_str("</div>\n");
        }
        i = j;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str, auc: Option<Estimate>) -> Row {
        Row {
            label: label.to_string(),
            threshold: (label != "macro").then_some(0.5),
            auc,
            f1: (0.8, 0.75, 0.85),
            sensitivity: (0.9, f64::NAN, f64::NAN),
            specificity: (0.95, 0.93, 0.97),
            precision: (0.7, 0.6, 0.8),
            accuracy: (0.93, 0.91, 0.95),
            average_precision: Some(0.41),
            ece: 0.031,
            support: 1240,
            positives: 87,
        }
    }

    fn report() -> Report {
        Report {
            title: "evaluate `eval`: <densenet> & co".into(),
            subtitle: "1240 images of part `test`".into(),
            rows: vec![
                row("macro", Some((0.9, 0.88, 0.92))),
                row("chest_wall", Some((0.953, 0.921, 0.978))),
                row("tràn dịch màng phổi", None),
            ],
            images: vec![
                ("roc.png".into(), "ROC curves".into()),
                ("history_train.png".into(), "training of `train`".into()),
                (
                    "gradcam/00_chest_wall.png".into(),
                    "1.2.3: chest_wall p=0.93 (label 1)".into(),
                ),
                ("gradcam/01_tràn dịch.png".into(), "1.2.4: <b> p=0.10 (label 0)".into()),
            ],
            notes: vec!["bootstrap: 3000 replicates, seed 7".into(), "a < b".into()],
            ..Report::default()
        }
    }

    #[test]
    fn html_has_every_label_link_and_escapes() {
        let h = report_html(&report());
        for label in ["chest_wall", "tràn dịch màng phổi", "macro"] {
            assert!(h.contains(&format!("<td>{label}</td>")), "{label}");
        }
        assert!(h.contains("&lt;densenet&gt; &amp; co"));
        assert!(h.contains("&lt;b&gt; p=0.10"));
        assert!(h.contains("a &lt; b"));
        assert!(!h.contains("<densenet>") && !h.contains("<b>"));
        for file in ["roc.png", "history_train.png", "gradcam/00_chest_wall.png"] {
            assert!(h.contains(&format!("<a href=\"{file}\"><img src=\"{file}\"")), "{file}");
        }
        assert!(h.contains("href=\"gradcam/01_tr%C3%A0n%20d%E1%BB%8Bch.png\""));
        assert!(h.contains("0.953<br><span class=\"ci\">0.921–0.978</span>"));
        assert!(h.contains("<h2 id=\"roc\">ROC curves</h2>") && h.contains("<h2 id=\"history\">Training curves</h2>"));
        assert!(h.contains("<h2 id=\"gradcam\">Grad-CAM: confident true positives</h2>\n<div class=\"gallery\">"));
        // No script, nothing fetched from elsewhere.
        assert!(!h.contains("<script") && !h.contains("http"));
        assert_eq!(h, report_html(&report()));
    }

    #[test]
    fn nan_prints_a_dash_and_macro_comes_last() {
        let h = report_html(&report());
        assert!(h.contains("0.900<br><span class=\"ci\">–</span>"), "both bounds NaN");
        assert_eq!(
            estimate((0.5, 0.4, f64::NAN)),
            "0.500<br><span class=\"ci\">0.400 to –</span>"
        );
        assert_eq!(
            estimate((f64::NAN, f64::NAN, f64::NAN)),
            "–<br><span class=\"ci\">–</span>"
        );
        // Undefined AUC and the macro row's missing threshold.
        assert!(h.contains("<td>tràn dịch màng phổi</td><td>–</td>"));
        let macro_at = h.find("<tr class=\"macro\">").unwrap();
        assert!(macro_at > h.find("<td>chest_wall</td>").unwrap());
        assert!(h[macro_at..].contains("<td>0.031</td><td>–</td><td>– / 1,240</td>"));
        assert!(h.contains("<td>0.031</td><td>0.500</td><td>87 / 1,240</td>"));
    }

    #[test]
    fn warnings_funnel_split_confusion_provenance() {
        let mut r = report();
        r.warnings = vec!["Optimistic: `validation` <chose> the checkpoint".into()];
        r.funnel = vec![
            FunnelStep {
                step: "PACS files".into(),
                count: 12376,
                source: "collect.dicoms + collect.rejects".into(),
            },
            FunnelStep {
                step: "PA chest".into(),
                count: 10847,
                source: "filter.kept".into(),
            },
        ];
        r.split = Some(SplitTable {
            parts: vec!["train".into(), "test".into(), "all".into()],
            patients: vec![70, 30, 100],
            images: vec![700, 300, 1000],
            positives: vec![("cardiac".into(), vec![70, 30, 100])],
        });
        r.confusion = vec![ConfusionMatrix {
            label: "pleura".into(),
            threshold: 0.5,
            tp: 1,
            fp: 2,
            tn: 1234,
            fn_: 3,
        }];
        r.provenance = vec![
            ("params".into(), "{\n  \"a\": 1\n}".into()),
            ("key".into(), "abc".into()),
        ];
        let h = report_html(&r);
        // The warning comes before anything else.
        let warning = h.find("class=\"warning\"").unwrap();
        assert!(warning < h.find("<h2").unwrap());
        assert!(h.contains("`validation` &lt;chose&gt; the checkpoint"));
        assert!(h.contains("<td>12,376</td><td>100.0%</td>"));
        assert!(h.contains("<td>10,847</td><td>87.6%</td>"));
        assert!(h.contains("style=\"width:87.6%\""));
        assert!(h.contains("<td>cardiac</td><td>70 <span class=\"ci\">(10.0%)</span></td>"));
        assert!(h.contains("<td>patients</td><td>70</td><td>30</td><td>100</td>"));
        assert!(h.contains("1,234 <span class=\"ci\">TN</span>"));
        assert!(h.contains("<pre>{\n  &quot;a&quot;: 1\n}</pre>"));
        for id in ["funnel", "split", "metrics", "confusion", "provenance"] {
            assert!(h.contains(&format!("<h2 id=\"{id}\">")), "{id}");
        }
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000_000), "1,000,000");
    }

    #[test]
    fn empty_report_is_a_page() {
        let h = report_html(&Report::default());
        assert!(h.starts_with("<!DOCTYPE html>") && h.ends_with("</html>\n"));
        assert!(!h.contains("Notes</h2>"));
    }
}

//! `report.html` of the `evaluate` stage: one self-contained page (inline CSS, no
//! script, nothing fetched) with the metrics table and the stage's pictures beside it.
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
    /// Images evaluated.
    pub support: usize,
    /// Positive images among them.
    pub positives: usize,
}

/// The whole page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    pub title: String,
    pub subtitle: String,
    pub rows: Vec<Row>,
    /// (file name relative to report.html, caption), in display order. Files at the top
    /// level are shown full width under a heading from their name's first word
    /// (`roc…` → "ROC curves", `history…` → "Training curves"); files in a folder
    /// (`gradcam/…`) form a gallery headed by the folder.
    pub images: Vec<(String, String)>,
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
fn url(path: &str) -> String {
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

/// "0.953 (0.921–0.978)"; a bound that could not be computed prints as "–".
fn estimate((value, low, high): Estimate) -> String {
    let ci = match (low.is_finite(), high.is_finite()) {
        (true, true) => format!("{}–{}", num(low), num(high)),
        (false, false) => "–".to_string(),
        _ => format!("{} to {}", num(low), num(high)),
    };
    format!("{} <span class=\"ci\">({ci})</span>", num(value))
}

/// The heading of a group of pictures.
fn section_title(key: &str) -> String {
    match key {
        "roc" => "ROC curves".to_string(),
        "history" => "Training curves".to_string(),
        "gradcam" | "grad-cam" | "cam" => "Grad-CAM".to_string(),
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
body { font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif;
  color: #222; background: #fff; margin: 0 auto; padding: 24px 32px 48px; max-width: 1180px; }
h1 { font-size: 24px; margin: 0 0 4px; }
.subtitle { color: #555; margin: 0 0 24px; }
h2 { font-size: 19px; margin: 32px 0 10px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; width: 100%; }
th, td { padding: 5px 10px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #444; font-weight: 600; }
tbody tr:nth-child(even) { background: #f6f7f9; }
tr.macro td { font-weight: 700; border-top: 2px solid #444; background: #fff; }
.ci { color: #666; font-size: 13px; }
figure { margin: 0 0 20px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e3e3; display: block; }
figcaption { color: #555; font-size: 13px; margin-top: 4px; overflow-wrap: anywhere; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 16px; }
.gallery figure { margin: 0; }
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

    h.push_str(
        "<h2>Metrics</h2>\n<table>\n<thead><tr><th>class</th><th>AUC</th><th>F1</th>\
        <th>sensitivity</th><th>specificity</th><th>precision</th><th>accuracy</th>\
        <th>threshold</th><th>positives</th><th>images</th></tr></thead>\n<tbody>\n",
    );
    // The macro row closes the table whatever the order given.
    let (classes, averages): (Vec<&Row>, Vec<&Row>) = r.rows.iter().partition(|row| row.label != "macro");
    for row in classes.into_iter().chain(averages) {
        let class = if row.label == "macro" { " class=\"macro\"" } else { "" };
        let _ = writeln!(
            h,
            "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&row.label),
            row.auc.map_or_else(|| "–".to_string(), estimate),
            estimate(row.f1),
            estimate(row.sensitivity),
            estimate(row.specificity),
            estimate(row.precision),
            estimate(row.accuracy),
            row.threshold.map_or_else(|| "–".to_string(), num),
            row.positives,
            row.support,
        );
    }
    h.push_str("</tbody>\n</table>\n");

    // Consecutive pictures of one group share a heading; a folder's are a gallery.
    let mut i = 0;
    while i < r.images.len() {
        let (key, gallery) = group_of(&r.images[i].0);
        let mut j = i;
        while j < r.images.len() && group_of(&r.images[j].0) == (key.clone(), gallery) {
            j += 1;
        }
        let _ = writeln!(h, "<h2>{}</h2>", escape(&section_title(&key)));
        if gallery {
            h.push_str("<div class=\"gallery\">\n");
        }
        for (file, caption) in &r.images[i..j] {
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

    if !r.notes.is_empty() {
        h.push_str("<h2>Notes</h2>\n<ul class=\"notes\">\n");
        for note in &r.notes {
            let _ = writeln!(h, "<li>{}</li>", escape(note));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
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
        assert!(h.contains("0.953 <span class=\"ci\">(0.921–0.978)</span>"));
        assert!(h.contains("<h2>ROC curves</h2>") && h.contains("<h2>Training curves</h2>"));
        assert!(h.contains("<h2>Grad-CAM</h2>\n<div class=\"gallery\">"));
        // No script, nothing fetched from elsewhere.
        assert!(!h.contains("<script") && !h.contains("http"));
        assert_eq!(h, report_html(&report()));
    }

    #[test]
    fn nan_prints_a_dash_and_macro_comes_last() {
        let h = report_html(&report());
        assert!(h.contains("0.900 <span class=\"ci\">(–)</span>"), "both bounds NaN");
        assert_eq!(
            estimate((0.5, 0.4, f64::NAN)),
            "0.500 <span class=\"ci\">(0.400 to –)</span>"
        );
        assert_eq!(
            estimate((f64::NAN, f64::NAN, f64::NAN)),
            "– <span class=\"ci\">(–)</span>"
        );
        // Undefined AUC and the macro row's missing threshold.
        assert!(h.contains("<td>tràn dịch màng phổi</td><td>–</td>"));
        let macro_at = h.find("<tr class=\"macro\">").unwrap();
        assert!(macro_at > h.find("<td>chest_wall</td>").unwrap());
        assert!(h[macro_at..].contains("<td>–</td><td>87</td><td>1240</td>"));
    }

    #[test]
    fn empty_report_is_a_page() {
        let h = report_html(&Report::default());
        assert!(h.starts_with("<!DOCTYPE html>") && h.ends_with("</html>\n"));
        assert!(!h.contains("<h2>Notes</h2>"));
    }
}

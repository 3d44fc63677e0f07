//! `pipe metrics`: the metrics tables of several evaluate results side by side (every
//! variant of a `matrix:` sweep, like `dvc metrics show` / `dvc exp show`), and
//! `pipe metrics diff`: two results metric by metric.
//!
//! Plain text for a terminal: one line per evaluate stage, the chosen label's (default
//! `macro`) AUC, F1, sensitivity, specificity with their 95% intervals, then AP and ECE.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};

use pipe_core::table::{read_batch, str_col};

/// The statistics with intervals, in the order they are printed.
pub const WITH_CI: [&str; 6] = ["auc", "f1", "sensitivity", "specificity", "precision", "accuracy"];
/// Point statistics (newer results only).
pub const POINT: [&str; 2] = ["average_precision", "ece"];

/// One row of a metrics table: a label's statistics.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelMetrics {
    pub support: i64,
    /// statistic → (value, low, high); absent where the table has no value.
    pub values: BTreeMap<String, (f64, Option<f64>, Option<f64>)>,
}

/// An evaluate result's metrics: label → its metrics (`macro` included).
pub type Metrics = BTreeMap<String, LabelMetrics>;

/// Results by name (an evaluate stage, a file), each its metrics or why there are none.
pub type Named = Vec<(String, Result<Metrics, String>)>;

/// An evaluate stage's metrics table.
pub fn read_metrics(path: &Path) -> anyhow::Result<Metrics> {
    let b = read_batch(path)?;
    let labels = str_col(&b, "label")?;
    let col = |name: &str| {
        b.column_by_name(name)
            .filter(|c| c.data_type() == &arrow::datatypes::DataType::Float64)
            .map(|c| c.as_primitive::<Float64Type>().clone())
    };
    let support = b
        .column_by_name("support")
        .map(|c| c.as_primitive::<Int64Type>().clone());
    let mut out = BTreeMap::new();
    for i in 0..b.num_rows() {
        let mut m = LabelMetrics {
            support: support.as_ref().map_or(0, |s| s.value(i)),
            ..Default::default()
        };
        let at = |a: &Option<arrow::array::Float64Array>| a.as_ref().filter(|a| a.is_valid(i)).map(|a| a.value(i));
        for name in WITH_CI.iter().chain(&POINT) {
            if let Some(v) = at(&col(name)) {
                let (low, high) = (at(&col(&format!("{name}_low"))), at(&col(&format!("{name}_high"))));
                m.values.insert(name.to_string(), (v, low, high));
            }
        }
        out.insert(labels.value(i).to_string(), m);
    }
    Ok(out)
}

/// "0.924 [0.852, 0.970]", "0.924" without an interval, "–" without a value.
fn cell(v: Option<&(f64, Option<f64>, Option<f64>)>) -> String {
    match v {
        None => "–".into(),
        Some((v, Some(lo), Some(hi))) => format!("{v:.3} [{lo:.3}, {hi:.3}]"),
        Some((v, _, _)) => format!("{v:.3}"),
    }
}

/// Left-aligned first column, the others right-aligned, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        for (c, text) in cells.iter().enumerate() {
            let pad = widths[c] - text.chars().count();
            if c == 0 {
                let _ = write!(out, "{text}{}", " ".repeat(pad));
            } else {
                let _ = write!(out, "  {}{text}", " ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(&mut out, &header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in rows {
        line(&mut out, r);
    }
    out
}

/// One line per result: `(name, metrics or why there are none)`, showing `label`.
pub fn show(results: &Named, label: &str) -> String {
    let mut header = vec!["stage", "images"];
    header.extend(WITH_CI.iter().take(4));
    header.extend(["ap", "ece"]);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (name, r) in results {
        match r {
            Ok(m) => match m.get(label) {
                Some(m) => {
                    let mut row = vec![name.clone(), m.support.to_string()];
                    row.extend(WITH_CI.iter().take(4).map(|s| cell(m.values.get(*s))));
                    row.extend(POINT.iter().map(|s| cell(m.values.get(*s))));
                    rows.push(row);
                }
                None => notes.push(format!("{name}: no label `{label}` in its metrics")),
            },
            Err(why) => notes.push(format!("{name}: {why}")),
        }
    }
    let mut out = format!("{label}, 95% bootstrap intervals in brackets\n");
    out.push_str(&table(&header, &rows));
    for n in notes {
        let _ = writeln!(out, "  not shown: {n}");
    }
    out
}

/// Every label and statistic of `a` and `b` with the difference b − a; a star marks a
/// difference whose intervals do not overlap.
pub fn diff(a: &Metrics, b: &Metrics) -> String {
    let mut rows = Vec::new();
    // macro first, then the classes in name order.
    let mut labels: Vec<&String> = a.keys().chain(b.keys()).collect();
    labels.sort_by_key(|l| (l.as_str() != "macro", l.as_str()));
    labels.dedup();
    for l in labels {
        let (ma, mb) = (a.get(l), b.get(l));
        for stat in WITH_CI.iter().chain(&POINT) {
            let (va, vb) = (
                ma.and_then(|m| m.values.get(*stat)),
                mb.and_then(|m| m.values.get(*stat)),
            );
            if va.is_none() && vb.is_none() {
                continue;
            }
            let delta = match (va, vb) {
                (Some(x), Some(y)) => {
                    let apart = match (x, y) {
                        ((_, Some(xl), Some(xh)), (_, Some(yl), Some(yh))) => yl > xh || xl > yh,
                        _ => false,
                    };
                    format!("{:+.3}{}", y.0 - x.0, if apart { " *" } else { "" })
                }
                _ => "–".into(),
            };
            rows.push(vec![l.clone(), stat.to_string(), cell(va), cell(vb), delta]);
        }
    }
    let mut out = table(&["label", "metric", "a", "b", "b − a"], &rows);
    out.push_str("* the 95% intervals do not overlap\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(auc: f64, ci: Option<(f64, f64)>) -> Metrics {
        let mut m = LabelMetrics {
            support: 98,
            ..Default::default()
        };
        m.values.insert("auc".into(), (auc, ci.map(|c| c.0), ci.map(|c| c.1)));
        m.values.insert("f1".into(), (0.5, Some(0.4), Some(0.6)));
        BTreeMap::from([("macro".to_string(), m)])
    }

    #[test]
    fn show_lines_up_and_says_what_is_missing() {
        let text = show(
            &vec![
                ("evaluate@bce-tiny".into(), Ok(metrics(0.9241, Some((0.85, 0.97))))),
                ("evaluate@asl".into(), Ok(metrics(0.8, None))),
                ("evaluate@dbl".into(), Err("no current result".into())),
            ],
            "macro",
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "macro, 95% bootstrap intervals in brackets");
        assert!(lines[1].starts_with("stage") && lines[1].contains("auc"));
        assert!(lines[2].starts_with("evaluate@bce-tiny") && lines[2].contains("0.924 [0.850, 0.970]"));
        assert!(lines[3].contains("0.800 ") || lines[3].contains("0.800  "), "{text}");
        let width = |l: &str| l.chars().count();
        assert_eq!(width(lines[1]), width(lines[2]), "columns line up:\n{text}");
        assert!(text.contains("not shown: evaluate@dbl: no current result"));
    }

    #[test]
    fn diff_marks_intervals_apart() {
        let text = diff(&metrics(0.70, Some((0.65, 0.75))), &metrics(0.90, Some((0.85, 0.95))));
        let auc = text.lines().find(|l| l.contains(" auc ")).unwrap();
        assert!(auc.ends_with("+0.200 *"), "{text}");
        let f1 = text.lines().find(|l| l.contains(" f1 ")).unwrap();
        assert!(f1.ends_with("+0.000"), "{text}");
    }
}

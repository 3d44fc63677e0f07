//! CSV as people edit it in a spreadsheet (RFC 4180): the files radiologists fill in —
//! review queues, QC verdicts, hand-labelled descriptions — are read and written here,
//! one way for all of them.

use std::path::Path;

use anyhow::Context as _;

/// RFC 4180 records: fields separated by commas, quoted ones may hold commas, newlines
/// and doubled quotes. A byte-order mark (spreadsheets write one) is skipped.
pub fn records(text: &str) -> Vec<Vec<String>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let (mut record, mut field) = (Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    records
}

/// One field, quoted when it holds a comma, a quote or a line break.
pub fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One record as a line (with its `\n`).
pub fn line<S: AsRef<str>>(fields: &[S]) -> String {
    let mut out = fields.iter().map(|f| field(f.as_ref())).collect::<Vec<_>>().join(",");
    out.push('\n');
    out
}

/// A CSV file with a header: rows by column name.
pub struct Table {
    pub path: std::path::PathBuf,
    pub header: Vec<String>,
    /// (1-based line of the record's start, its fields); blank records left out.
    pub rows: Vec<(usize, Vec<String>)>,
}

impl Table {
    pub fn read(path: &Path) -> anyhow::Result<Table> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut all = records(&text).into_iter();
        let header: Vec<String> = all
            .next()
            .unwrap_or_default()
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        let mut rows = Vec::new();
        let mut line = 2;
        for r in all {
            let lines = 1 + r.iter().map(|f| f.matches('\n').count()).sum::<usize>();
            if !r.iter().all(|f| f.trim().is_empty()) {
                rows.push((line, r));
            }
            line += lines;
        }
        Ok(Table {
            path: path.to_path_buf(),
            header,
            rows,
        })
    }

    /// The index of column `name`, or an error naming the file and the columns it has.
    pub fn column(&self, name: &str) -> anyhow::Result<usize> {
        self.header.iter().position(|h| h == name).with_context(|| {
            format!(
                "{}: no column `{name}` (it has: {})",
                self.path.display(),
                self.header.join(", ")
            )
        })
    }
}

/// Field `i` of a record, trimmed ("" when the record is short).
pub fn get(record: &[String], i: usize) -> &str {
    record.get(i).map_or("", |s| s.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_what_spreadsheets_write() {
        let rows = [
            vec!["id", "description", "note"],
            vec!["1", "Tràn dịch, màng phổi \"phải\"", ""],
            vec!["2", "dòng 1\ndòng 2", "x"],
        ];
        let text: String = rows.iter().map(|r| line(r)).collect();
        let back = records(&format!(
            "\u{feff}{}",
            text.replace('\n', "\r\n").replace("dòng 1\r\ndòng 2", "dòng 1\ndòng 2")
        ));
        assert_eq!(
            back,
            rows.iter()
                .map(|r| r.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        );
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("plain"), "plain");
    }

    #[test]
    fn table_columns_and_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, "a,b\n1,\"x\ny\"\n,\n3,z\n").unwrap();
        let t = Table::read(&p).unwrap();
        assert_eq!(t.column("b").unwrap(), 1);
        let e = t.column("c").unwrap_err().to_string();
        assert!(e.contains("no column `c` (it has: a, b)"), "{e}");
        assert_eq!(t.rows.len(), 2, "the blank record is left out");
        assert_eq!((t.rows[0].0, t.rows[1].0), (2, 5));
        assert_eq!(get(&t.rows[1].1, 1), "z");
        assert_eq!(get(&t.rows[1].1, 7), "");
    }
}

//! `sql`: a SQL query over the input tables, its result a cached table — the
//! dataframe work a user would otherwise script (keep the frontal PA images of an
//! import, join labels with the split, count positives per part), as one stage.
//!
//! The query runs in polars' SQLContext. Each input table is a table of the query
//! under its own name (`labels`) and under `<stage>_<table>` (`label_labels`), which is
//! the only name of a table that two inputs give. SQL returns rows in no particular
//! order unless the query says, and a cached table must be the same bytes every time:
//! so the result is sorted by all its columns (`sort: true`, the default), or, for a
//! query with its own ORDER BY, kept in that order (`sort: false`). The table goes
//! through the common write path (`adopt`): zstd, pipe's metadata, every column
//! nullable (a query's result has no declaration in `schemas/`). An `image` column's
//! files come along (hard links), so a filtered `images` table is one train can read.

use std::collections::BTreeMap;

use anyhow::anyhow;
use polars::prelude::*;
use polars::sql::SQLContext;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use pipe_core::stage::{Context, Stage};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The query (polars SQL: SELECT, JOIN, WHERE, GROUP BY, CASE, window functions…).
    pub query: String,
    /// Name of the table it writes.
    #[serde(default = "default_output")]
    pub output: String,
    /// Sort the result by all its columns, so that the same rows are the same bytes on
    /// every run; `false` keeps the order of the query's own ORDER BY.
    #[serde(default = "yes")]
    pub sort: bool,
}

fn default_output() -> String {
    "result".into()
}
fn yes() -> bool {
    true
}

pub struct Sql;

impl Stage for Sql {
    type Params = Params;
    const KIND: &'static str = "sql";
    // 2: an `image` column's files come along
    const VERSION: u32 = 2;
    const ABOUT: &'static str = "run a SQL query (polars) over the input tables and cache its result as a table";

    fn check(p: &Params) -> Vec<String> {
        let mut problems = Vec::new();
        if p.query.trim().is_empty() {
            problems.push("query: is empty".to_string());
        }
        if p.output.is_empty() || !p.output.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            problems.push(format!(
                "output: `{}` is not a table name (letters, digits and _)",
                p.output
            ));
        }
        if p.sort && orders_rows(&p.query) {
            problems.push(
                "query: orders its rows (ORDER BY), and `sort: true` would sort them again by every column; set `sort: false` to keep the query's order"
                    .to_string(),
            );
        }
        problems
    }

    fn outputs(p: &Params) -> Vec<String> {
        vec![p.output.clone()]
    }

    fn run(p: &Params, ctx: &Context) -> anyhow::Result<()> {
        let mut sql = SQLContext::new();
        // Every input as `<stage>_<table>`; as `<table>` too where one input gives it.
        let mut by_table: BTreeMap<&str, Vec<(String, LazyFrame)>> = BTreeMap::new();
        let mut names = Vec::new();
        for input in &ctx.inputs {
            let frame = crate::frames::read(&input.path)?.lazy();
            let qualified = format!("{}_{}", name_part(&input.stage), input.table);
            sql.register(&qualified, frame.clone());
            names.push(qualified.clone());
            by_table.entry(&input.table).or_default().push((qualified, frame));
        }
        for (table, given) in by_table {
            match given.as_slice() {
                [(_, frame)] => {
                    sql.register(table, frame.clone());
                    names.push(table.to_string());
                }
                _ => names.push(format!(
                    "{table} (given twice: use {})",
                    given.iter().map(|(q, _)| q.as_str()).collect::<Vec<_>>().join(" or ")
                )),
            }
        }
        names.sort();
        let frame = sql
            .execute(&p.query)
            .map_err(|e| anyhow!("query: {e}\nthe query's tables: {}", names.join(", ")))?;
        let frame = if p.sort {
            let columns: Vec<PlSmallStr> = frame
                .clone()
                .collect_schema()
                .map_err(|e| anyhow!("query: {e}"))?
                .iter_names()
                .cloned()
                .collect();
            frame.sort(columns, SortMultipleOptions::default().with_maintain_order(true))
        } else {
            frame
        };
        let mut result = frame.collect().map_err(|e| anyhow!("query: {e}"))?;
        ctx.count("rows", result.height() as u64);

        // polars writes it; the common path rewrites it with pipe's properties.
        crate::frames::write(ctx, &p.output, &mut result, None)?;
        link_images(ctx, &result)?;
        if result.height() == 0 {
            ctx.log("the query returned no rows");
        }
        Ok(())
    }
}

/// A stage name as part of a SQL table name (`match@v1` → `match_v1`).
/// An `image` column is a path relative to the folder of the table that holds it
/// (convert's and chexpert's images live in their entries): the result takes the
/// files it names along, as hard links into its own entry, so a filtered `images`
/// table trains like the original.
fn link_images(ctx: &Context, result: &DataFrame) -> anyhow::Result<()> {
    let Ok(column) = result.column("image") else {
        return Ok(());
    };
    let Ok(paths) = column.str() else {
        return Ok(());
    };
    let dirs: Vec<&std::path::Path> = ctx.inputs.iter().filter_map(|i| i.path.parent()).collect();
    let (mut linked, mut missing) = (0u64, 0u64);
    let mut seen = std::collections::HashSet::new();
    for rel in (0..paths.len()).filter_map(|i| paths.get(i)) {
        let safe = std::path::Path::new(rel)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !safe || !seen.insert(rel) {
            continue;
        }
        match dirs.iter().map(|d| d.join(rel)).find(|f| f.is_file()) {
            Some(src) => {
                let dst = ctx.out_dir.join(rel);
                crate::convert::link_or_copy(&src, &dst)
                    .map_err(|e| anyhow!("cannot link {} to {}: {e}", src.display(), dst.display()))?;
                linked += 1;
            }
            None => missing += 1,
        }
    }
    ctx.count("images_linked", linked);
    if missing > 0 {
        ctx.log(format!(
            "{missing} paths of the `image` column name no file of an input's entry; they are not taken along"
        ));
    }
    Ok(())
}

fn name_part(stage: &str) -> String {
    stage
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Whether the query has an ORDER BY outside its string literals and comments.
fn orders_rows(query: &str) -> bool {
    let mut words = String::new();
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
                words.push(' ');
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
                words.push(' ');
            }
            c => words.push(c.to_ascii_uppercase()),
        }
    }
    let tokens: Vec<&str> = words
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|t| !t.is_empty())
        .collect();
    tokens.windows(2).any(|w| w == ["ORDER", "BY"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_by_is_found_outside_literals_and_comments() {
        assert!(orders_rows("select * from t order  by a"));
        assert!(orders_rows("SELECT *\nFROM t\nORDER\nBY a DESC"));
        assert!(!orders_rows("select 'order by' as x from t"));
        assert!(!orders_rows("select * from t -- order by a\nwhere b"));
        assert!(!orders_rows("select border, bye from t"));
        let p = Params {
            query: "select * from t order by a".into(),
            output: "result".into(),
            sort: true,
        };
        assert!(Sql::check(&p)[0].contains("set `sort: false`"));
        assert!(Sql::check(&Params { sort: false, ..p }).is_empty());
    }
}

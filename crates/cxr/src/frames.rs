//! polars at the edges of a stage: an input table as a DataFrame, a DataFrame written
//! as a pipe table (through [`pipe_core::table::adopt`], so it gets the same
//! compression, metadata, page cuts and schema check as every other table).

use std::path::Path;

use anyhow::{Context as _, anyhow};
use polars::prelude::*;

use pipe_core::stage::Context;
use pipe_core::table::TableSchema;

/// A Parquet table as a DataFrame.
pub fn read(path: &Path) -> anyhow::Result<DataFrame> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))
}

/// Write `frame` as the stage's table `name`, checked against `schema` when given;
/// returns its row count.
pub fn write(ctx: &Context, name: &str, frame: &mut DataFrame, schema: Option<&TableSchema>) -> anyhow::Result<u64> {
    let raw = ctx.out_dir.join(format!(".{name}.polars.parquet"));
    let file = std::fs::File::create(&raw).with_context(|| format!("cannot create {}", raw.display()))?;
    ParquetWriter::new(file)
        .finish(frame)
        .map_err(|e| anyhow!("cannot write {}: {e}", raw.display()))?;
    // adopt rewrites it under its table name and removes it.
    pipe_core::table::adopt(&raw, &ctx.output_path(name), schema, &ctx.meta.for_table(name))
}

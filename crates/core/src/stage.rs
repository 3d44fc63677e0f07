//! The stage contract: what a stage kind is, and what it gets when it runs.
//!
//! A stage kind is a small Rust type implementing [`Stage`]: a name, a version, typed
//! params (unknown keys rejected), the tables it writes, the files its params point to,
//! the resources it wants, and `run`. The engine sees kinds only through the
//! object-safe [`Kind`] trait, which [`KindOf`] implements for every `Stage`; which
//! kinds a pipeline may use is the binary's [`crate::Registry`]. Adding a kind touches
//! its own file and one line of its crate's list.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context as _, bail};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::progress::Progress;
use crate::table::{TableMeta, TableSchema, TableWriter};

/// Where a kind's `run` executes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Executor {
    /// Inside the `pipe` process, on a thread of the scheduler.
    InProcess,
    /// In the `pipe-torch` worker process, the only executable that links LibTorch.
    TorchWorker,
}

/// CPU threads and GPUs a stage asks for; the scheduler never runs more at once than
/// `--jobs` CPU slots and the machine's GPUs allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Threads; 0 means "as many as the run allows" (`--jobs`).
    #[serde(default)]
    pub cpu: usize,
    #[serde(default)]
    pub gpu: usize,
}

impl Default for Resources {
    fn default() -> Self {
        Resources { cpu: 1, gpu: 0 }
    }
}

/// A file or directory tree named by a param. Its content enters the cache key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The param that names it, as a path into the params (`files[2]`, `keywords`).
    pub param: String,
    /// The path as written in the pipeline, relative to the pipeline root.
    pub path: String,
}

/// A stage kind, written as plain Rust with typed params.
pub trait Stage: Send + Sync + 'static {
    /// Typed params: serde reads and fills defaults (unknown keys refused), schemars
    /// describes them for `pipe kinds` from the same definition and doc comments.
    type Params: DeserializeOwned + Serialize + JsonSchema;
    /// The `kind:` users write in YAML.
    const KIND: &'static str;
    /// Bump when the output for the same inputs and params changes: it enters the key.
    const VERSION: u32;
    /// One line for `pipe check` and the unknown-kind error.
    const ABOUT: &'static str;
    /// Whether an interrupted run may leave its work directory for the next attempt to
    /// resume from (training checkpoints); other kinds always start from an empty one.
    const RESUMABLE: bool = false;
    /// Whether the stage may run as `shards: N`: N runs, each given a [`Shard`] in its
    /// context and doing only that slice of its work into its own directory, combined
    /// by [`Stage::merge`]. A kind that says yes promises the merged result is the one
    /// an unsharded run writes, byte for byte.
    const SHARDABLE: bool = false;

    /// Problems of params that parsed, one per line, each starting `field: ` so that
    /// the error points at that key (a range, a name from a list, two fields that
    /// must agree).
    fn check(_params: &Self::Params) -> Vec<String> {
        Vec::new()
    }

    /// Names of the Parquet tables the stage writes (`<name>.parquet` in its entry).
    fn outputs(params: &Self::Params) -> Vec<String>;

    /// Files and trees the params name; their content is part of the cache key.
    fn references(_params: &Self::Params) -> Vec<Reference> {
        Vec::new()
    }

    /// Tables `run` takes with [`Context::input`]: validation checks that exactly one
    /// input gives each, so a missing input is a pipeline error, not a failure mid-run.
    fn reads(_params: &Self::Params) -> Vec<&'static str> {
        Vec::new()
    }

    /// Checks of the params against the stages the inputs name (their kinds and
    /// params), for what would otherwise fail only inside the stage.
    fn check_inputs(_params: &Self::Params, _inputs: &[Upstream]) -> Vec<ParamsError> {
        Vec::new()
    }

    fn resources(_params: &Self::Params) -> Resources {
        Resources::default()
    }

    /// Where `run` executes; a kind may pick per params (filter: `tags` in process,
    /// `model` in the torch worker).
    fn executor(_params: &Self::Params) -> Executor {
        Executor::InProcess
    }

    fn run(params: &Self::Params, ctx: &Context) -> anyhow::Result<()>;

    /// Combine the shards' results (in shard order) into `ctx.out_dir`. The default
    /// suits a kind whose shards write contiguous slices of its rows: each table is the
    /// concatenation of the shards' tables, and their other files move over.
    fn merge(params: &Self::Params, ctx: &Context, shards: &[PathBuf]) -> anyhow::Result<()> {
        merge_shards(ctx, &Self::outputs(params), shards, &mut |_, batch| Ok(batch))
    }
}

/// Which slice of a sharded stage's work a run does: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// This shard's contiguous slice of `len` items in their order: the slices of all
    /// shards, in shard order, are the items in order, each once.
    pub fn range(&self, len: usize) -> std::ops::Range<usize> {
        let at = |i: usize| (len as u128 * i as u128 / self.count.max(1) as u128) as usize;
        at(self.index)..at(self.index + 1)
    }

    /// This shard's slice of `len` items cut only at multiples of `unit` (a batch):
    /// work done in batches is then batched as an unsharded run batches it.
    pub fn range_in_units(&self, len: usize, unit: usize) -> std::ops::Range<usize> {
        let unit = unit.max(1);
        let units = self.range(len.div_ceil(unit));
        (units.start * unit).min(len)..(units.end * unit).min(len)
    }
}

/// The common merge of shards: every table in `tables` concatenated in shard order
/// (each batch through `fix`, given the table's name), every other file of the shards'
/// directories moved to the same place in `ctx.out_dir`. Two shards may hold the same
/// file (content-named images) only with the same bytes.
pub fn merge_shards(
    ctx: &Context,
    tables: &[String],
    shards: &[PathBuf],
    fix: &mut dyn FnMut(&str, arrow::array::RecordBatch) -> anyhow::Result<arrow::array::RecordBatch>,
) -> anyhow::Result<()> {
    let table_files: Vec<String> = tables.iter().map(|t| format!("{t}.parquet")).collect();
    for (t, file) in tables.iter().zip(&table_files) {
        let sources: Vec<PathBuf> = shards.iter().map(|d| d.join(file)).collect();
        crate::table::concat_tables(&ctx.output_path(t), &ctx.meta.for_table(t), &sources, &mut |b| {
            fix(t, b)
        })
        .with_context(|| format!("merging table `{t}` of the shards"))?;
    }
    for shard in shards {
        move_files(shard, &ctx.out_dir, &table_files)?;
    }
    Ok(())
}

/// Move the files under `from` to the same relative paths under `to`, except the
/// top-level `skip` names.
fn move_files(from: &Path, to: &Path, skip: &[String]) -> anyhow::Result<()> {
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let dir = from.join(&rel);
        for e in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let e = e?;
            let name = rel.join(e.file_name());
            if rel.as_os_str().is_empty() && skip.iter().any(|s| e.file_name() == s.as_str()) {
                continue;
            }
            if e.file_type()?.is_dir() {
                dirs.push(name);
                continue;
            }
            let dst = to.join(&name);
            if dst.exists() {
                if std::fs::read(e.path())? != std::fs::read(&dst)? {
                    bail!("two shards wrote {} with different content", name.display());
                }
                continue;
            }
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(e.path(), &dst)
                .with_context(|| format!("cannot move {} to {}", e.path().display(), dst.display()))?;
        }
    }
    Ok(())
}

/// An input stage as validation sees it.
pub struct Upstream<'a> {
    pub stage: &'a str,
    pub kind: &'a str,
    /// `Some(table)` for a `stage.table` input.
    pub table: Option<&'a str>,
    /// Canonical params of that stage.
    pub params: &'a serde_json::Value,
}

/// A kind's params after validation, in the form that enters the cache key.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Canonical JSON: every field, defaults filled in, keys sorted.
    pub params: serde_json::Value,
    pub outputs: Vec<String>,
    pub references: Vec<Reference>,
    pub resources: Resources,
    pub executor: Executor,
    /// Tables taken with `ctx.input` (see [`Stage::reads`]).
    pub reads: Vec<&'static str>,
}

/// A params error with the path of the offending field inside `params`.
#[derive(Debug, Clone)]
pub struct ParamsError {
    pub path: String,
    pub message: String,
}

/// Object-safe view of a [`Stage`], used by the engine.
pub trait Kind: Send + Sync {
    fn name(&self) -> &'static str;
    fn version(&self) -> u32;
    fn about(&self) -> &'static str;
    fn resumable(&self) -> bool;
    fn shardable(&self) -> bool;
    fn merge(&self, params: &serde_json::Value, ctx: &Context, shards: &[PathBuf]) -> anyhow::Result<()>;
    /// JSON Schema of the params (types, defaults, doc comments), for `pipe kinds`.
    fn params_schema(&self) -> serde_json::Value;
    fn prepare(&self, params: &serde_yaml::Value) -> Result<Prepared, Vec<ParamsError>>;
    fn check_inputs(&self, params: &serde_json::Value, inputs: &[Upstream]) -> Vec<ParamsError>;
    fn run(&self, params: &serde_json::Value, ctx: &Context) -> anyhow::Result<()>;
}

pub struct KindOf<S>(pub PhantomData<S>);

impl<S: Stage> Kind for KindOf<S> {
    fn name(&self) -> &'static str {
        S::KIND
    }
    fn version(&self) -> u32 {
        S::VERSION
    }
    fn about(&self) -> &'static str {
        S::ABOUT
    }
    fn resumable(&self) -> bool {
        S::RESUMABLE
    }
    fn shardable(&self) -> bool {
        S::SHARDABLE
    }
    fn merge(&self, params: &serde_json::Value, ctx: &Context, shards: &[PathBuf]) -> anyhow::Result<()> {
        let typed: S::Params = serde_json::from_value(params.clone())
            .with_context(|| format!("params of stage `{}` no longer fit kind `{}`", ctx.stage, S::KIND))?;
        S::merge(&typed, ctx, shards)
    }
    fn params_schema(&self) -> serde_json::Value {
        schemars::schema_for!(S::Params).to_value()
    }

    fn prepare(&self, params: &serde_yaml::Value) -> Result<Prepared, Vec<ParamsError>> {
        // `params:` left out or empty means "all defaults".
        let value = match params {
            serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
            v => v.clone(),
        };
        // JSON has no NaN or infinity: they would become null and quietly mean "default".
        let mut errors = Vec::new();
        non_finite(&value, "", &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let typed: S::Params = serde_path_to_error::deserialize(value.clone()).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            if path != "." {
                return vec![ParamsError { path, message }];
            }
            // A whole-params check says which field it is about, one per line
            // (`loss: ...`): each error points at its own key.
            message.lines().map(|line| field_error(line, &value)).collect()
        })?;
        let problems = S::check(&typed);
        if !problems.is_empty() {
            return Err(problems.iter().map(|line| field_error(line, &value)).collect());
        }
        let canonical = serde_json::to_value(&typed).map_err(|e| {
            vec![ParamsError {
                path: String::new(),
                message: e.to_string(),
            }]
        })?;
        Ok(Prepared {
            params: canonical,
            outputs: S::outputs(&typed),
            references: S::references(&typed),
            resources: S::resources(&typed),
            executor: S::executor(&typed),
            reads: S::reads(&typed),
        })
    }

    fn check_inputs(&self, params: &serde_json::Value, inputs: &[Upstream]) -> Vec<ParamsError> {
        match serde_json::from_value::<S::Params>(params.clone()) {
            Ok(typed) => S::check_inputs(&typed, inputs),
            Err(_) => Vec::new(), // prepared params always parse; nothing to add
        }
    }

    fn run(&self, params: &serde_json::Value, ctx: &Context) -> anyhow::Result<()> {
        let typed: S::Params = serde_json::from_value(params.clone())
            .with_context(|| format!("params of stage `{}` no longer fit kind `{}`", ctx.stage, S::KIND))?;
        S::run(&typed, ctx)
    }
}

/// One input table handed to a stage.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct InputTable {
    pub stage: String,
    pub table: String,
    pub path: PathBuf,
}

/// The device a stage runs on, as the scheduler assigned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// What a running stage gets from the engine.
pub struct Context {
    /// The stage's name in the pipeline.
    pub stage: String,
    /// Pipeline root: relative paths in params resolve against it.
    pub root: PathBuf,
    /// The cache directory (for the stat caches of scanned trees).
    pub cache_dir: PathBuf,
    /// Empty directory the stage writes into; it becomes the cache entry on success.
    pub out_dir: PathBuf,
    pub inputs: Vec<InputTable>,
    /// The entry of this stage's previous result in this pipeline, for stages that
    /// reuse per-file work (collect, convert).
    pub previous: Option<PathBuf>,
    /// The slice of the work this run does, for a stage run as `shards: N`.
    pub shard: Option<Shard>,
    pub threads: usize,
    pub device: Device,
    pub progress: Progress,
    /// Identity written into every Parquet file's key-value metadata.
    pub meta: TableMeta,
    /// Named counters shown in the run summary and kept in the manifest
    /// (e.g. `files_read`, `files_reused`).
    pub counters: Mutex<BTreeMap<String, u64>>,
    /// Lines for the stage's log (kept in the entry as `log.txt`).
    pub log: Mutex<Vec<String>>,
    /// Files of a referenced tree the stage could not read (an I/O error, not bad
    /// content): see [`Context::unreadable`].
    pub unreadable: Mutex<Vec<(PathBuf, String)>>,
}

impl Context {
    /// The context one shard of this stage runs in: the same inputs, its own output
    /// directory, and fresh counters, log and unreadable list that the caller folds back.
    pub fn for_shard(&self, shard: Shard, out_dir: PathBuf) -> Context {
        Context {
            stage: self.stage.clone(),
            root: self.root.clone(),
            cache_dir: self.cache_dir.clone(),
            out_dir,
            inputs: self.inputs.clone(),
            previous: self.previous.clone(),
            shard: Some(shard),
            threads: self.threads,
            device: self.device,
            progress: self.progress.clone(),
            meta: self.meta.clone(),
            counters: Mutex::new(BTreeMap::new()),
            log: Mutex::new(Vec::new()),
            unreadable: Mutex::new(Vec::new()),
        }
    }

    /// Resolve a path from params against the pipeline root.
    /// Paths in tables write a name that is not UTF-8 with `\xNN` escapes
    /// ([`crate::cache::walk::name_text`]); this gives the file back.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = crate::cache::walk::text_path(path);
        if p.is_absolute() { p } else { self.root.join(p) }
    }

    /// The input table called `table` (from whichever input stage provides it).
    pub fn input(&self, table: &str) -> anyhow::Result<&Path> {
        let mut found = self.inputs.iter().filter(|i| i.table == table);
        match (found.next(), found.next()) {
            (Some(i), None) => Ok(&i.path),
            (Some(a), Some(b)) => bail!(
                "stage `{}` gets table `{table}` from both `{}` and `{}`; name one as `stage.table` in `inputs`",
                self.stage,
                a.stage,
                b.stage
            ),
            (None, _) => bail!(
                "stage `{}` needs an input table `{table}`; its inputs give: {}",
                self.stage,
                self.inputs
                    .iter()
                    .map(|i| format!("{}.{}", i.stage, i.table))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Path of an output table inside the entry being built.
    pub fn output_path(&self, table: &str) -> PathBuf {
        self.out_dir.join(format!("{table}.parquet"))
    }

    /// A Parquet writer for output `table`, checked against `schema`.
    pub fn writer(&self, table: &str, schema: &TableSchema) -> anyhow::Result<TableWriter> {
        TableWriter::create(&self.output_path(table), schema, &self.meta.for_table(table))
    }

    /// Write output `table` whole, checked against `schema`; returns its row count.
    pub fn write_table(
        &self,
        table: &str,
        schema: &TableSchema,
        rows: &arrow::array::RecordBatch,
    ) -> anyhow::Result<u64> {
        crate::table::write_table(
            &self.output_path(table),
            schema,
            &self.meta.for_table(table),
            std::slice::from_ref(rows),
        )
    }

    /// Files of a tree named by a param, with content hashes (see
    /// [`crate::cache::fingerprint`]); unchanged files are not read again.
    /// They come in chunks, with the tree's file count at its last scan (for progress).
    pub fn scan_tree(
        &self,
        path: &str,
        each: &mut dyn FnMut(&[crate::cache::fingerprint::FileHash], u64) -> anyhow::Result<()>,
    ) -> anyhow::Result<crate::cache::fingerprint::Fingerprint> {
        crate::cache::fingerprint::Fingerprinter::new(&self.cache_dir).files(&self.resolve(path), each)
    }

    /// A thread pool of the stage's thread budget.
    pub fn pool(&self) -> anyhow::Result<rayon::ThreadPool> {
        Ok(rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads.max(1))
            .build()?)
    }

    pub fn count(&self, name: &str, n: u64) {
        *self.counters.lock().unwrap().entry(name.to_string()).or_default() += n;
    }

    pub fn log(&self, line: impl Into<String>) {
        self.log.lock().unwrap().push(line.into());
    }

    /// A file of a referenced tree could not be read (permissions, a vanished file, an
    /// NFS error), though the key was built from its content (remembered by the stat
    /// cache): the result cannot be what the key claims. The engine then does not
    /// cache it, and makes the next scan read the file again.
    pub fn unreadable(&self, path: &Path, why: &str) {
        self.unreadable
            .lock()
            .unwrap()
            .push((path.to_path_buf(), why.to_string()));
    }
}

/// Paths of NaN and infinite numbers in `value` (YAML `.nan`, `.inf`).
fn non_finite(value: &serde_yaml::Value, path: &str, errors: &mut Vec<ParamsError>) {
    use serde_yaml::Value;
    match value {
        Value::Number(n) if n.as_f64().is_some_and(|f| !f.is_finite()) => errors.push(ParamsError {
            path: path.to_string(),
            message: format!("{n} is not a number a param can take (NaN and infinity are refused)"),
        }),
        Value::Mapping(m) => {
            for (k, v) in m {
                let key = k.as_str().map_or_else(|| format!("{k:?}"), str::to_string);
                let p = if path.is_empty() { key } else { format!("{path}.{key}") };
                non_finite(v, &p, errors);
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter().enumerate() {
                non_finite(v, &format!("{path}[{i}]"), errors);
            }
        }
        Value::Tagged(t) => non_finite(&t.value, path, errors),
        _ => {}
    }
}

/// `field: message` → an error at `field` when the params have such a key.
fn field_error(line: &str, params: &serde_yaml::Value) -> ParamsError {
    if let Some((field, rest)) = line.split_once(": ") {
        let top = field.split(['.', '[']).next().unwrap_or(field);
        if params.get(top).is_some() {
            return ParamsError {
                path: field.to_string(),
                message: line.to_string(),
            };
        }
        let _ = rest; // a check of a default value: the message names the field
    }
    ParamsError {
        path: String::new(),
        message: line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::Shard;

    /// The shards' slices, in order, are every item once, in order, and as even as
    /// can be.
    #[test]
    fn shard_slices_cover_every_item_once() {
        for len in [0, 1, 2, 3, 7, 100, 4097] {
            for count in 1..=9 {
                let ranges: Vec<_> = (0..count).map(|index| Shard { index, count }.range(len)).collect();
                let items: Vec<usize> = ranges.iter().flat_map(|r| r.clone()).collect();
                assert_eq!(items, (0..len).collect::<Vec<_>>(), "{len} in {count}");
                let sizes: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
                assert!(
                    sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
                    "{sizes:?}"
                );
                let batched: Vec<usize> = (0..count)
                    .flat_map(|index| Shard { index, count }.range_in_units(len, 8))
                    .collect();
                assert_eq!(batched, (0..len).collect::<Vec<_>>(), "{len} in {count} by 8");
                for index in 0..count {
                    let r = Shard { index, count }.range_in_units(len, 8);
                    assert!(
                        r.start.is_multiple_of(8) && (r.end.is_multiple_of(8) || r.end == len),
                        "{r:?}"
                    );
                }
            }
        }
    }
}

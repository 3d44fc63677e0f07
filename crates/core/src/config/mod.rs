//! Pipeline files: YAML → a validated [`Pipeline`].
//!
//! ```yaml
//! name: phutho            # optional; defaults to the file name
//! root: ..                # optional; relative paths resolve against it (default: this file's folder)
//! cache: cache            # optional; relative to root (default: <root>/cache)
//! extend: phutho.yaml     # optional; start from another pipeline and override it
//! stages:
//!   label:
//!     kind: label
//!     inputs: [match.pairs]
//!     params: { keywords: stages/label/keywords.yaml }
//!     resources: { cpu: 2, gpu: 0 }
//!     executor: slurm       # optional; `local` (default) or `slurm`, per stage or file
//!     slurm: { partition: gpu, time: "4:00:00", mem: 32G }
//!   train:
//!     kind: train
//!     matrix: { loss: [bce, asl] }   # optional; variants train@bce, train@asl (matrix.rs)
//! ```
//!
//! Everything is checked before anything runs, and every problem found is reported at
//! once with its `file:line:column`: YAML syntax, unknown keys, unknown kinds (with the
//! valid list), params that do not fit the kind, missing inputs, cycles (printed as a
//! path) and files the params name that do not exist.

pub mod locate;
pub mod matrix;

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;

use crate::dag::Dag;
use crate::error::{Diagnostic, Diagnostics, Location};
use crate::registry::Registry;
use crate::stage::{Kind, Prepared, Resources};
use locate::Locations;

/// An input of a stage: all tables of `stage`, or one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRef {
    pub stage: String,
    pub table: Option<String>,
}

impl std::fmt::Display for InputRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.table {
            Some(t) => write!(f, "{}.{t}", self.stage),
            None => write!(f, "{}", self.stage),
        }
    }
}

/// Where a stage runs. Not part of its key: the same stage computes the same result
/// wherever it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    Local,
    /// Submitted to Slurm with these options (the pipeline's, overridden by the stage's).
    Slurm(crate::slurm::Options),
}

/// One validated stage.
pub struct StageSpec {
    pub name: String,
    pub kind: &'static dyn Kind,
    pub inputs: Vec<InputRef>,
    pub prepared: Prepared,
    pub resources: Resources,
    /// The stage's own `executor:` (else the command line's, else the pipeline's).
    pub backend: Option<Backend>,
    /// The file's `slurm:` options overridden by the stage's: used whenever the stage
    /// runs on Slurm (a stage's `slurm:` alone does not send it there).
    pub slurm: crate::slurm::Options,
    /// `shards:`: how many slices the stage's work is cut into (1: not sharded). On
    /// Slurm, one array task each; locally, one after another. Not part of its key.
    pub shards: usize,
}

/// A validated pipeline.
pub struct Pipeline {
    pub name: String,
    pub file: PathBuf,
    pub root: PathBuf,
    pub cache_dir: PathBuf,
    /// In file order (parents' stages first when extending).
    pub stages: Vec<StageSpec>,
    pub dag: Dag,
    /// Referenced paths that do not exist (yet): not errors, the stages that need them
    /// wait for data; `pipe check` lists them and `pipe run` refuses to run those stages.
    pub missing: Vec<Diagnostic>,
    /// Locations of the files that make up the pipeline, the file given first.
    sources: Vec<Locations>,
    /// Each matrix variant's stage as written (`train@bce` → `train`), for locations.
    origins: std::collections::HashMap<String, String>,
    /// The file's `executor:` and `slurm:` (stages without their own use them).
    pub backend: Backend,
    /// The file's `slurm:` options, which a stage's `slurm:` overrides field by field.
    pub slurm: crate::slurm::Options,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: Option<String>,
    root: Option<String>,
    cache: Option<String>,
    extend: Option<String>,
    executor: Option<String>,
    slurm: Option<crate::slurm::Options>,
    #[serde(default)]
    stages: IndexMap<String, RawStage>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawStage {
    kind: Option<String>,
    inputs: Option<Vec<String>>,
    params: Option<serde_yaml::Value>,
    resources: Option<Resources>,
    matrix: Option<serde_yaml::Value>,
    executor: Option<String>,
    slurm: Option<crate::slurm::Options>,
    shards: Option<usize>,
}

/// A file of the `extend` chain, parsed.
struct Layer {
    file: PathBuf,
    raw: RawFile,
    locations: Locations,
}

fn syntax_error(file: &Path, e: &serde_yaml::Error) -> Diagnostic {
    let text = e.to_string();
    // serde_yaml appends " at line L column C"; we show the position our own way.
    let message = text.split(" at line ").next().unwrap_or(&text).to_string();
    let location = e.location().map(|l| Location {
        file: file.to_path_buf(),
        line: l.line(),
        column: l.column(),
    });
    Diagnostic::new(message).at(location.or(Some(Location {
        file: file.to_path_buf(),
        line: 1,
        column: 1,
    })))
}

fn load_layers(file: &Path, from: Option<Location>, chain: &mut Vec<Layer>) -> Result<(), Diagnostics> {
    let one = |d: Diagnostic| Diagnostics(vec![d]);
    if chain.iter().any(|l| l.file == file) {
        return Err(one(Diagnostic::new(format!(
            "`extend` loops back to {}",
            file.display()
        ))
        .at(from)));
    }
    // A FIFO or a device would block or never end: only regular files are read.
    if let Ok(m) = std::fs::metadata(file)
        && !m.is_file()
    {
        return Err(one(Diagnostic::new(format!(
            "pipeline file {} is not a regular file",
            file.display()
        ))
        .at(from)));
    }
    let text = std::fs::read_to_string(file).map_err(|e| {
        one(
            Diagnostic::new(format!("cannot read pipeline file {}: {e}", file.display()))
                .at(from.clone())
                .help("check the path; `extend` paths are relative to the file that names them"),
        )
    })?;
    let locations = Locations::parse(file, &text);
    if !locations.duplicates.is_empty() {
        // serde_yaml would keep the last of two stages silently, and report a twice-set
        // param at its mapping only: name both places, every time it happens.
        return Err(Diagnostics(
            locations
                .duplicates
                .iter()
                .map(|(path, first, second)| {
                    Diagnostic::new(format!("`{path}` is written twice; it was first written at {first}"))
                        .at(Some(second.clone()))
                        .help("keep one of them (a stage or key written twice is not merged)")
                })
                .collect(),
        ));
    }
    let raw: RawFile = serde_yaml::from_str(&text).map_err(|e| one(syntax_error(file, &e)))?;
    let parent = raw.extend.clone();
    let extend_at = locations.value("extend");
    chain.push(Layer {
        file: file.to_path_buf(),
        raw,
        locations,
    });
    if let Some(parent) = parent {
        let dir = file.parent().unwrap_or(Path::new("."));
        load_layers(&dir.join(parent), extend_at, chain)?;
    }
    Ok(())
}

/// Overlay `top` on `base`: mappings merge key by key, anything else is replaced.
fn merge_yaml(base: &mut serde_yaml::Value, top: &serde_yaml::Value) {
    match (base, top) {
        (serde_yaml::Value::Mapping(b), serde_yaml::Value::Mapping(t)) => {
            for (k, v) in t {
                match b.get_mut(k) {
                    Some(bv) => merge_yaml(bv, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, t) => *b = t.clone(),
    }
}

fn valid_stage_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Pipeline {
    /// Load, merge and validate a pipeline file; `kind:` names resolve in `kinds`.
    pub fn load(file: &Path, kinds: &Registry) -> Result<Pipeline, Diagnostics> {
        let mut chain = Vec::new();
        load_layers(file, None, &mut chain)?;

        // Root and cache: the nearest file that sets them decides, relative to itself —
        // among the files in the given file's own folder. Where a project's files and
        // results live is the project's: a base file elsewhere (the tool's
        // pipelines/phutho.yaml, extended by a hospital's pipeline) must not put the
        // project's cache into the tool's repository.
        let dir_of = |f: &Path| f.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let home = normalize(&dir_of(&chain[0].file));
        let local = || chain.iter().filter(|l| normalize(&dir_of(&l.file)) == home);
        let root = local()
            .find_map(|l| l.raw.root.as_ref().map(|r| dir_of(&l.file).join(r)))
            .unwrap_or_else(|| dir_of(&chain[0].file));
        let root = normalize(&root);
        let cache_dir = local()
            .find_map(|l| l.raw.cache.as_ref().map(|c| root.join(c)))
            .unwrap_or_else(|| root.join("cache"));
        let name = chain[0].raw.name.clone().unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "pipeline".into())
        });

        // Merge stages, base file first.
        let mut merged: IndexMap<String, RawStage> = IndexMap::new();
        for layer in chain.iter().rev() {
            for (name, s) in &layer.raw.stages {
                match merged.get_mut(name) {
                    None => {
                        merged.insert(name.clone(), s.clone());
                    }
                    Some(m) => {
                        if s.kind.is_some() {
                            m.kind = s.kind.clone();
                        }
                        if s.inputs.is_some() {
                            m.inputs = s.inputs.clone();
                        }
                        if s.resources.is_some() {
                            m.resources = s.resources;
                        }
                        // A matrix is replaced whole: merging value lists would surprise.
                        if s.matrix.is_some() {
                            m.matrix = s.matrix.clone();
                        }
                        if s.executor.is_some() {
                            m.executor = s.executor.clone();
                        }
                        if s.shards.is_some() {
                            m.shards = s.shards;
                        }
                        match (&mut m.slurm, &s.slurm) {
                            (Some(b), Some(t)) => *b = b.merged(t),
                            (None, Some(t)) => m.slurm = Some(t.clone()),
                            _ => {}
                        }
                        match (&mut m.params, &s.params) {
                            (Some(b), Some(t)) => merge_yaml(b, t),
                            (None, Some(t)) => m.params = Some(t.clone()),
                            _ => {}
                        }
                    }
                }
            }
        }

        // The file's executor: the nearest file that sets it; its slurm options merged
        // base first.
        let mut file_slurm = crate::slurm::Options::default();
        for layer in chain.iter().rev() {
            if let Some(o) = &layer.raw.slurm {
                file_slurm = file_slurm.merged(o);
            }
        }
        let file_executor = chain.iter().find_map(|l| l.raw.executor.clone());
        let mut p = Pipeline {
            name,
            file: file.to_path_buf(),
            root,
            cache_dir,
            stages: Vec::new(),
            dag: Dag::default(),
            missing: Vec::new(),
            sources: chain.into_iter().map(|l| l.locations).collect(),
            origins: Default::default(),
            backend: Backend::Local,
            slurm: file_slurm,
        };
        let mut errors = Vec::new();
        match p.backend_named(file_executor.as_deref(), &p.slurm.clone(), "executor") {
            Ok(b) => p.backend = b.unwrap_or(Backend::Local),
            Err(d) => errors.push(d),
        }
        // Stage names as written are checked before matrix variants are named after them.
        let invalid: Vec<String> = merged.keys().filter(|n| !valid_stage_name(n)).cloned().collect();
        for name in &invalid {
            errors.push(
                Diagnostic::new(format!("stage name `{name}` may only use letters, digits, `_` and `-`"))
                    .at(p.key_at(&format!("stages.{name}"))),
            );
            merged.shift_remove(name);
        }
        let merged = match matrix::expand(&merged) {
            Ok((stages, origins)) => {
                p.origins = origins;
                stages
            }
            Err(e) => {
                return Err(Diagnostics(vec![
                    Diagnostic::new(format!(
                        "stage `{}`: {}",
                        e.path.split('.').nth(1).unwrap_or(""),
                        e.message
                    ))
                    .at(p.value_at(&e.path).or(p.key_at(&e.path))),
                ]));
            }
        };
        let mut missing = Vec::new();
        // The name is a directory of `cache/views/` and `cache/logs/`: no way out of it.
        if !p.name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) || p.name.chars().all(|c| c == '.') {
            errors.push(
                Diagnostic::new(format!(
                    "pipeline name `{}` may only use letters, digits, `_`, `-` and `.`",
                    p.name
                ))
                .at(p.value_at("name"))
                .help("it names the pipeline's folders under cache/views/ and cache/logs/"),
            );
        }

        for (name, raw) in &merged {
            let at = |sub: &str| p.value_at(&format!("stages.{name}{sub}"));
            let Some(kind_name) = &raw.kind else {
                errors.push(
                    Diagnostic::new(format!("stage `{name}` has no `kind`"))
                        .at(p.key_at(&format!("stages.{name}")))
                        .help(format!("valid kinds: {}", kinds.names().join(", "))),
                );
                continue;
            };
            let Some(kind) = kinds.get(kind_name) else {
                errors.push(
                    Diagnostic::new(format!("unknown stage kind `{kind_name}` in stage `{name}`"))
                        .at(at(".kind"))
                        .help(format!("valid kinds: {}", kinds.names().join(", "))),
                );
                continue;
            };
            let prepared = match kind.prepare(raw.params.as_ref().unwrap_or(&serde_yaml::Value::Null)) {
                Ok(prep) => prep,
                Err(all) => {
                    for e in all {
                        let loc = p.param_at(name, &e);
                        errors.push(
                            Diagnostic::new(format!("params of stage `{name}` (kind `{kind_name}`): {}", e.message))
                                .at(loc),
                        );
                    }
                    continue;
                }
            };
            // A referenced path that does not exist yet is not an error of the pipeline:
            // the graph can be looked at before the data is there. The plan reports it
            // (`waits for data`) and `pipe run` refuses to run the stage.
            for r in &prepared.references {
                let abs = p.resolve(&r.path);
                if std::fs::metadata(&abs).is_err() {
                    missing.push(
                        Diagnostic::new(format!(
                            "stage `{name}`: `{}` names {}, which does not exist",
                            r.param,
                            abs.display()
                        ))
                        .at(at(&format!(".params.{}", r.param)))
                        .help(format!(
                            "relative paths are resolved against the pipeline root {}; the stage waits for it",
                            p.root.display()
                        )),
                    );
                }
            }
            let mut inputs = Vec::new();
            for (i, input) in raw.inputs.iter().flatten().enumerate() {
                let (stage, table) = match input.split_once('.') {
                    Some((s, t)) => (s.to_string(), Some(t.to_string())),
                    None => (input.clone(), None),
                };
                inputs.push((InputRef { stage, table }, at(&format!(".inputs[{i}]"))));
            }
            let slurm = p.slurm.merged(raw.slurm.as_ref().unwrap_or(&Default::default()));
            let backend = match p.backend_named(raw.executor.as_deref(), &slurm, &format!("stages.{name}.executor")) {
                Ok(b) => b,
                Err(d) => {
                    errors.push(d);
                    continue;
                }
            };
            let shards = raw.shards.unwrap_or(1);
            if shards == 0 || (shards > 1 && !kind.shardable()) {
                let can: Vec<&str> = kinds.iter().filter(|k| k.shardable()).map(|k| k.name()).collect();
                errors.push(
                    Diagnostic::new(if shards == 0 {
                        "shards must be at least 1".to_string()
                    } else {
                        format!("stage `{name}` (kind `{}`) cannot run in shards", kind.name())
                    })
                    .at(p.value_at(&format!("stages.{name}.shards")))
                    .help(format!("kinds that can: {}", can.join(", "))),
                );
                continue;
            }
            p.stages.push(StageSpec {
                name: name.clone(),
                kind,
                inputs: inputs.iter().map(|(i, _)| i.clone()).collect(),
                resources: raw.resources.unwrap_or(prepared.resources),
                prepared,
                backend,
                slurm,
                shards,
            });
        }

        // Inputs refer to stages (and tables) that exist.
        for s in &p.stages {
            for (i, input) in s.inputs.iter().enumerate() {
                let loc = p.value_at(&format!("stages.{}.inputs[{i}]", s.name));
                match p.stages.iter().find(|u| u.name == input.stage) {
                    // That stage has its own error.
                    None if merged.contains_key(&input.stage) || invalid.contains(&input.stage) => {}
                    None => errors.push(
                        Diagnostic::new(format!(
                            "stage `{}` takes input `{input}`, but there is no stage `{}`",
                            s.name, input.stage
                        ))
                        .at(loc)
                        .help(format!(
                            "stages in this pipeline: {}",
                            merged.keys().cloned().collect::<Vec<_>>().join(", ")
                        )),
                    ),
                    Some(u) => {
                        if let Some(t) = &input.table
                            && !u.prepared.outputs.contains(t)
                        {
                            errors.push(
                                Diagnostic::new(format!(
                                    "stage `{}` takes input `{input}`, but `{}` has no table `{t}`",
                                    s.name, u.name
                                ))
                                .at(loc)
                                .help(format!(
                                    "`{}` writes: {}",
                                    u.name,
                                    u.prepared.outputs.join(", ")
                                )),
                            );
                        }
                    }
                }
            }
        }
        if errors.is_empty() {
            errors.extend(p.check_reads_and_inputs());
        }
        p.missing = missing;
        if !errors.is_empty() {
            return Err(Diagnostics(errors));
        }

        match Dag::build(&p.stages) {
            Ok(dag) => p.dag = dag,
            Err(cycle) => {
                // Point at an edge of the cycle written in the file given (an extending
                // file that closes the loop is where to fix it), else at the first edge.
                let edges: Vec<String> = cycle
                    .windows(2)
                    .filter_map(|w| {
                        let (from, to) = (&w[0], &w[1]);
                        let i = p.stage(to)?.inputs.iter().position(|i| &i.stage == from)?;
                        Some(format!("stages.{to}.inputs[{i}]"))
                    })
                    .collect();
                let loc = edges
                    .iter()
                    .find(|e| p.sources[0].has(e))
                    .or(edges.first())
                    .and_then(|e| p.value_at(e))
                    .or_else(|| p.key_at(&format!("stages.{}", cycle[0])));
                return Err(Diagnostics(vec![
                    Diagnostic::new(format!("the stages form a cycle: {}", cycle.join(" -> ")))
                        .at(loc)
                        .help(
                            "a stage cannot depend, directly or through others, on itself; remove one of these inputs",
                        ),
                ]));
            }
        }
        Ok(p)
    }

    /// Each table a stage takes comes from exactly one input, and each kind's own checks
    /// of its params against its inputs (evaluate's `part` among split's `parts`).
    fn check_reads_and_inputs(&self) -> Vec<Diagnostic> {
        let mut errors = Vec::new();
        for s in &self.stages {
            let inputs = format!("stages.{}.inputs", s.name);
            let inputs_at = if self.source_for(&inputs).has(&inputs) {
                self.value_at(&inputs)
            } else {
                self.key_at(&format!("stages.{}", s.name))
            };
            let (mut none, mut several) = (Vec::new(), Vec::new());
            for &t in &s.prepared.reads {
                let from: Vec<String> = s
                    .inputs
                    .iter()
                    .filter(|i| match &i.table {
                        Some(x) => x == t,
                        None => self
                            .stage(&i.stage)
                            .is_some_and(|u| u.prepared.outputs.iter().any(|o| o == t)),
                    })
                    .map(|i| i.to_string())
                    .collect();
                match from.len() {
                    0 => none.push(format!("`{t}`")),
                    1 => {}
                    _ => several.push(format!("`{t}` from {}", from.join(" and "))),
                }
            }
            let help = format!("kind `{}` reads: {}", s.kind.name(), s.prepared.reads.join(", "));
            if !none.is_empty() {
                errors.push(
                    Diagnostic::new(format!(
                        "stage `{}` (kind `{}`) reads {}, which none of its inputs gives",
                        s.name,
                        s.kind.name(),
                        none.join(", ")
                    ))
                    .at(inputs_at.clone())
                    .help(help.clone()),
                );
            }
            if !several.is_empty() {
                errors.push(
                    Diagnostic::new(format!(
                        "stage `{}` gets {}; name one as `stage.table`",
                        s.name,
                        several.join(", ")
                    ))
                    .at(inputs_at.clone())
                    .help(help),
                );
            }
            let upstream: Vec<crate::stage::Upstream> = s
                .inputs
                .iter()
                .filter_map(|i| {
                    let u = self.stage(&i.stage)?;
                    Some(crate::stage::Upstream {
                        stage: &u.name,
                        kind: u.kind.name(),
                        table: i.table.as_deref(),
                        params: &u.prepared.params,
                    })
                })
                .collect();
            for e in s.kind.check_inputs(&s.prepared.params, &upstream) {
                // About the inputs as a whole: point at them; else at the param.
                let at = if e.path.is_empty() {
                    inputs_at.clone()
                } else {
                    self.param_at(&s.name, &e)
                };
                errors.push(
                    Diagnostic::new(format!("stage `{}` (kind `{}`): {}", s.name, s.kind.name(), e.message)).at(at),
                );
            }
        }
        errors
    }

    /// `executor:` as written (at `path`) → a backend with `slurm` options; `None` when
    /// not written.
    fn backend_named(
        &self,
        executor: Option<&str>,
        slurm: &crate::slurm::Options,
        path: &str,
    ) -> Result<Option<Backend>, Diagnostic> {
        match executor {
            None => Ok(None),
            Some("local") => Ok(Some(Backend::Local)),
            Some("slurm") => Ok(Some(Backend::Slurm(slurm.clone()))),
            Some(other) => Err(
                Diagnostic::new(format!("executor `{other}` is not one of: local, slurm"))
                    .at(self.value_at(path))
                    .help("`local` runs stages on this machine; `slurm` submits them with sbatch"),
            ),
        }
    }

    /// Where stage `i` runs: its own `executor:`, else `cli` (`pipe run --executor`),
    /// else the file's. Slurm options are the file's overridden by the stage's.
    pub fn backend_of(&self, i: usize, cli: Option<&str>) -> Backend {
        if let Some(b) = &self.stages[i].backend {
            return b.clone();
        }
        match (cli, &self.backend) {
            (Some("slurm"), _) | (None, Backend::Slurm(_)) => Backend::Slurm(self.stages[i].slurm.clone()),
            _ => Backend::Local,
        }
    }

    pub fn stage(&self, name: &str) -> Option<&StageSpec> {
        self.stages.iter().find(|s| s.name == name)
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }

    /// Resolve a path written in the pipeline against its root.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        }
    }

    fn source_for(&self, path: &str) -> &Locations {
        self.sources.iter().find(|l| l.has(path)).unwrap_or(&self.sources[0])
    }

    /// The path as written in the files: a matrix variant's `stages.train@bce.params.x`
    /// is `stages.train.params.x`, or `stages.train.matrix.x` when the matrix set it.
    fn written(&self, path: &str) -> String {
        let Some(rest) = path.strip_prefix("stages.") else {
            return path.to_string();
        };
        let (stage, tail) = rest.split_at(rest.find('.').unwrap_or(rest.len()));
        let Some(origin) = self.origins.get(stage) else {
            return path.to_string();
        };
        let path = format!("stages.{origin}{tail}");
        if !self.source_for(&path).has(&path)
            && let Some(param) = tail.strip_prefix(".params.")
        {
            let in_matrix = format!("stages.{origin}.matrix.{param}");
            if self.source_for(&in_matrix).has(&in_matrix) {
                return in_matrix;
            }
        }
        path
    }

    /// Where the value at a dotted path was written (the overriding file wins).
    pub fn value_at(&self, path: &str) -> Option<Location> {
        let path = self.written(path);
        self.source_for(&path).value(&path)
    }

    pub fn key_at(&self, path: &str) -> Option<Location> {
        let path = self.written(path);
        self.source_for(&path).key(&path)
    }

    /// A diagnostic about a stage, pointing at its definition.
    /// Where a params error of stage `name` points: the key of an unknown field, else
    /// the value (or the params mapping when the error is about all of them).
    fn param_at(&self, name: &str, e: &crate::stage::ParamsError) -> Option<Location> {
        let path = if e.path.is_empty() {
            format!("stages.{name}.params")
        } else {
            format!("stages.{name}.params.{}", e.path)
        };
        if e.message.starts_with("unknown field") {
            self.key_at(&path)
        } else {
            self.value_at(&path)
        }
    }

    pub fn stage_error(&self, stage: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(message).at(self.key_at(&format!("stages.{stage}")))
    }
}

/// Remove `.` and `..` components lexically so printed paths stay short.
fn normalize(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

//! The engine's commands (run, status, dag, show, path, check, verify, gc, kinds): what
//! every pipe binary offers whatever its kinds. A binary adds its domain's commands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};

use crate::cache::store::Store;
use crate::config::Pipeline;
use crate::error::Diagnostics;
use crate::plan::{State, plan};
use crate::progress::Reporter;
use crate::registry::Registry;
use crate::scheduler::{Outcome, RunOptions, run};

/// The engine's commands; a binary flattens them into its own command enum
/// (`#[command(flatten)]`) beside its domain's commands.
#[derive(Subcommand)]
pub enum Cmd {
    /// Run the stages that are stale (and what they need).
    Run {
        /// The pipeline file (default: pipe.yaml here, or the only file in pipelines/).
        file: Option<PathBuf>,
        /// Run this stage and its inputs, nothing downstream (repeatable).
        #[arg(long, value_name = "STAGE")]
        until: Vec<String>,
        /// Run only this stage; its inputs must be cached (repeatable).
        #[arg(long, value_name = "STAGE")]
        only: Vec<String>,
        /// Run this stage and everything downstream of it (repeatable).
        #[arg(long, value_name = "STAGE")]
        from: Vec<String>,
        /// Rebuild this stage even if it is fresh (repeatable).
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Show what would run and why, run nothing.
        #[arg(long)]
        dry_run: bool,
        /// CPU slots (default: number of cores).
        #[arg(long, short = 'j', default_value_t = 0)]
        jobs: usize,
        /// GPU slots (default: detected).
        #[arg(long)]
        gpus: Option<usize>,
        /// After a failure, still run the stages that do not depend on it.
        #[arg(long)]
        keep_going: bool,
        /// Fail at once if another run holds the cache instead of waiting for it.
        #[arg(long)]
        no_wait: bool,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
        /// Where stages without their own `executor:` run: local or slurm (default: the
        /// pipeline's `executor:`, else local). Keys do not depend on it.
        #[arg(long, value_parser = ["local", "slurm"])]
        executor: Option<String>,
    },
    /// Run one stage job (what a Slurm job of `pipe run --executor slurm` executes).
    #[command(hide = true)]
    Job { file: PathBuf },
    /// Say for each stage whether it is fresh, or why it is stale.
    Status {
        /// The pipeline file (default: pipe.yaml here, or the only file in pipelines/).
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Print the stage graph.
    Dag {
        /// The pipeline file (default: pipe.yaml here, or the only file in pipelines/).
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = DagFormat::Text)]
        format: DagFormat,
    },
    /// Print a table's schema and first rows.
    Show {
        /// [FILE] STAGE[.TABLE]: the pipeline file may be left out (pipe.yaml here, or
        /// the only file in pipelines/).
        #[arg(required = true, num_args = 1..=2, value_names = ["FILE", "STAGE.TABLE"])]
        args: Vec<String>,
        #[arg(short = 'n', default_value_t = 10)]
        rows: usize,
    },
    /// Print the Parquet path of a stage's table (for notebooks).
    Path {
        /// [FILE] STAGE[.TABLE]: the pipeline file may be left out (pipe.yaml here, or
        /// the only file in pipelines/).
        #[arg(required = true, num_args = 1..=2, value_names = ["FILE", "STAGE.TABLE"])]
        args: Vec<String>,
    },
    /// Validate a pipeline file without running anything.
    Check {
        /// The pipeline file (default: pipe.yaml here, or the only file in pipelines/).
        file: Option<PathBuf>,
    },
    /// List the stage kinds, or every param of one kind (type, default, meaning).
    Kinds {
        kind: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Re-hash cache entries; damaged ones are moved aside so the next run rebuilds them.
    Verify {
        /// Use this pipeline's cache directory.
        file: Option<PathBuf>,
        #[arg(long, default_value = "cache")]
        cache: PathBuf,
        /// Only report damage; move nothing (no lock needed: works on a read-only cache).
        #[arg(long)]
        no_repair: bool,
    },
    /// Remove cache entries no pipeline refers to (dry run unless --delete).
    Gc {
        /// Pipelines whose results to keep (default: pipelines/*.yaml).
        files: Vec<PathBuf>,
        #[arg(long)]
        cache: Option<PathBuf>,
        #[arg(long)]
        delete: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DagFormat {
    Text,
    Dot,
    Mermaid,
}

/// Print a command's error the way every pipe command does and give its exit code:
/// 2 for pipeline-file diagnostics, 1 otherwise.
pub fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            // `pipe show … | head`: the reader left; nothing more to say.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            if let Some(d) = e.downcast_ref::<Diagnostics>() {
                eprintln!("{d}");
                return ExitCode::from(2);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The pipeline a command works on: the file given, else `pipe.yaml` in the current
/// directory, else the only pipeline in `pipelines/` (like `dvc.yaml` or a Snakefile).
pub fn pipeline_file(file: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(f) = file {
        return Ok(f);
    }
    for name in ["pipe.yaml", "pipe.yml"] {
        if Path::new(name).is_file() {
            return Ok(PathBuf::from(name));
        }
    }
    let found = default_pipelines().unwrap_or_default();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no pipeline file given, and no pipe.yaml here nor a pipeline in ./pipelines/; name one (`pipe run FILE`) or start a project with `pipe init DIR`"
        ),
        many => bail!(
            "no pipeline file given, and pipelines/ has {}: name one ({})",
            many.len(),
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `[FILE] TARGET` of `show` and `path`.
fn file_and_target(mut args: Vec<String>) -> anyhow::Result<(PathBuf, String)> {
    let target = args.pop().context("name a stage or STAGE.TABLE")?;
    Ok((pipeline_file(args.pop().map(PathBuf::from))?, target))
}

/// Load a pipeline file, its kinds resolved in `kinds`.
pub fn load(file: &Path, kinds: &Registry) -> anyhow::Result<Pipeline> {
    Ok(Pipeline::load(file, kinds)?)
}

/// Run one of the engine's commands.
pub fn dispatch(cmd: Cmd, kinds: &Registry) -> anyhow::Result<ExitCode> {
    // A stage job reports from the stage's threads: stdout must not be held here.
    if let Cmd::Job { file } = &cmd {
        crate::worker::run_job_file(file, |job, ctx| {
            let kind = kinds
                .get(&job.kind)
                .with_context(|| format!("this pipe has no kind `{}`", job.kind))?;
            kind.run(&job.params, ctx)?;
            Ok(ctx.device.to_string())
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    match cmd {
        Cmd::Run {
            file,
            until,
            only,
            from,
            force,
            dry_run,
            jobs,
            gpus,
            keep_going,
            no_wait,
            quiet,
            executor,
        } => {
            let file = pipeline_file(file)?;
            let p = load(&file, kinds)?;
            let opts = RunOptions {
                until,
                only,
                from,
                force,
                dry_run,
                jobs,
                keep_going,
                wait: !no_wait,
                gpus,
                executor,
            };
            let reporter = Reporter::new(quiet);
            crate::interrupt::install();
            let report = run(&p, &opts, &reporter)?;
            print_report(&mut out, &p, &report, dry_run)?;
            Ok(if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Job { .. } => unreachable!("run above"),
        Cmd::Status { file, json } => {
            let file = pipeline_file(file)?;
            let p = load(&file, kinds)?;
            let store = Store::new(&p.cache_dir);
            let plans = plan(&p, &store)?;
            // A stale stage whose work directory a live run is filling is running now.
            let run_pid = store.running_pid();
            let running =
                |key: &Option<String>| run_pid.is_some() && key.as_ref().is_some_and(|k| store.tmp_dir(k).is_dir());
            if json {
                let rows: Vec<_> = p
                    .stages
                    .iter()
                    .zip(&plans)
                    .map(|(s, pl)| {
                        let (state, reasons) = match &pl.state {
                            State::Fresh => ("fresh", vec![]),
                            _ if running(&pl.key) => ("running", vec![format!("pid {}", run_pid.unwrap_or(0))]),
                            State::Stale(w) => ("stale", w.clone()),
                            State::Waits(_) => ("waits", vec![pl.reason()]),
                            State::MissingData(_) => ("missing_data", vec![pl.reason()]),
                        };
                        serde_json::json!({
                            "stage": s.name, "kind": s.kind.name(), "key": pl.key,
                            "state": state, "reasons": reasons,
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                writeln!(out, "{} ({}), cache {}", p.name, file.display(), p.cache_dir.display())?;
                let w = p.stages.iter().map(|s| s.name.len()).max().unwrap_or(0);
                for &i in p.dag.topo_order() {
                    let (s, pl) = (&p.stages[i], &plans[i]);
                    match (&pl.state, &pl.key) {
                        (State::Fresh, Some(key)) => writeln!(out, "  {:w$}  fresh  {}", s.name, &key[..12])?,
                        (_, Some(key)) if running(&pl.key) => writeln!(
                            out,
                            "  {:w$}  running  (pipe pid {}{}, since {} was stale: {})",
                            s.name,
                            run_pid.unwrap_or(0),
                            crate::slurm::job_building(&store.tmp_dir(key))
                                .map(|j| format!(", Slurm job {j}"))
                                .unwrap_or_default(),
                            s.name,
                            pl.reason()
                        )?,
                        (State::Stale(_), _) => writeln!(out, "  {:w$}  stale  {}", s.name, pl.reason())?,
                        _ => writeln!(out, "  {:w$}  {}", s.name, pl.reason())?,
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Dag { file, format } => {
            let file = pipeline_file(file)?;
            let p = load(&file, kinds)?;
            let edges = p.dag.edges();
            match format {
                DagFormat::Text => {
                    for &i in p.dag.topo_order() {
                        let s = &p.stages[i];
                        let ins: Vec<String> = s.inputs.iter().map(|i| i.to_string()).collect();
                        if ins.is_empty() {
                            writeln!(out, "{} ({})", s.name, s.kind.name())?;
                        } else {
                            writeln!(out, "{} ({}) <- {}", s.name, s.kind.name(), ins.join(", "))?;
                        }
                    }
                }
                DagFormat::Dot => {
                    writeln!(out, "digraph \"{}\" {{\n  rankdir=LR;", p.name)?;
                    for s in &p.stages {
                        writeln!(out, "  \"{}\" [label=\"{}\\n({})\"];", s.name, s.name, s.kind.name())?;
                    }
                    for (a, b) in edges {
                        writeln!(out, "  \"{}\" -> \"{}\";", p.stages[a].name, p.stages[b].name)?;
                    }
                    writeln!(out, "}}")?;
                }
                DagFormat::Mermaid => {
                    writeln!(out, "flowchart LR")?;
                    for s in &p.stages {
                        writeln!(out, "  {}[\"{}<br/>({})\"]", s.name, s.name, s.kind.name())?;
                    }
                    for (a, b) in edges {
                        writeln!(out, "  {} --> {}", p.stages[a].name, p.stages[b].name)?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Show { args, rows } => {
            let (file, target) = file_and_target(args)?;
            let p = load(&file, kinds)?;
            let path = table_path(&p, &target)?;
            let (n, meta) = crate::table::footer(&path)?;
            let (schema, batches) = crate::table::head(&path, rows)?;
            // The entry's directory is its key (tables hold no key, see `cache`).
            let key = path
                .parent()
                .and_then(|d| d.file_name())
                .map(|k| k.to_string_lossy().into_owned())
                .unwrap_or_default();
            writeln!(
                out,
                "{}\n{} rows · kind {} · key {}",
                path.display(),
                n,
                meta.get("kind").map_or("?", |s| s),
                &key[..key.len().min(12)]
            )?;
            writeln!(out, "schema:")?;
            for f in schema.fields() {
                writeln!(
                    out,
                    "  {}: {}{}",
                    f.name(),
                    f.data_type(),
                    if f.is_nullable() { "" } else { " (not null)" }
                )?;
            }
            writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(&batches)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Path { args } => {
            let (file, target) = file_and_target(args)?;
            let p = load(&file, kinds)?;
            writeln!(out, "{}", table_path(&p, &target)?.display())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check { file } => {
            let file = pipeline_file(file)?;
            let p = load(&file, kinds)?;
            writeln!(out, "{}: ok, {} stages", file.display(), p.stages.len())?;
            for m in &p.missing {
                writeln!(out, "note: {m}")?;
            }
            for &i in p.dag.topo_order() {
                let s = &p.stages[i];
                writeln!(
                    out,
                    "  {} ({} v{}) → {}",
                    s.name,
                    s.kind.name(),
                    s.kind.version(),
                    s.prepared.outputs.join(", ")
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Kinds { kind, json } => {
            print_kinds(&mut out, kinds, kind.as_deref(), json)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Verify { file, cache, no_repair } => {
            let dir = match file {
                Some(f) => load(&f, kinds)?.cache_dir,
                None => cache,
            };
            let store = Store::new(&dir);
            // Repairing moves entries, so it needs the lock; checking does not (a
            // read-only cache can be checked).
            let read_only = !crate::cache::store::writable(&dir);
            if read_only && !no_repair {
                writeln!(out, "{} is read-only: checking without repair", dir.display())?;
            }
            let lock = if no_repair || read_only {
                None
            } else {
                Some(store.lock(true)?)
            };
            let keys = store.keys();
            let mut bad = 0;
            for k in &keys {
                let problems = store.verify_entry(k);
                if !problems.is_empty() {
                    bad += 1;
                    writeln!(out, "DAMAGED {k}:")?;
                    for pr in problems {
                        writeln!(out, "  {pr}")?;
                    }
                    if lock.is_none() {
                        writeln!(out, "  left in place (not repaired)")?;
                        continue;
                    }
                    match store.quarantine(k) {
                        Ok(dest) => writeln!(out, "  moved to {}; the next run rebuilds it", dest.display())?,
                        Err(e) => writeln!(out, "  NOT moved: {e:#}")?,
                    }
                }
            }
            writeln!(
                out,
                "{} entries checked: {} intact, {} damaged",
                keys.len(),
                keys.len() - bad,
                bad
            )?;
            Ok(if bad > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Cmd::Gc { files, cache, delete } => {
            let files = if files.is_empty() { default_pipelines()? } else { files };
            let mut keep = std::collections::BTreeSet::new();
            let mut keep_all_work = false;
            let mut dir = cache;
            for f in &files {
                let p = match load(f, kinds) {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!(
                            "warning: skipping {} ({})",
                            f.display(),
                            e.to_string().lines().next().unwrap_or("")
                        );
                        continue;
                    }
                };
                let d = dir.get_or_insert_with(|| p.cache_dir.clone()).clone();
                if p.cache_dir != d {
                    continue; // a pipeline with another cache keeps nothing here
                }
                let store = Store::new(&d);
                for (s, pl) in p.stages.iter().zip(plan(&p, &store)?) {
                    // A resumable stage waiting for its inputs may get back the very key
                    // of work in tmp/: keep all resumable work then.
                    keep_all_work |= s.kind.resumable() && pl.key.is_none();
                    keep.extend(pl.key);
                }
            }
            let dir = dir.unwrap_or_else(|| PathBuf::from("cache"));
            let store = Store::new(&dir);
            // A dry run only lists: no lock, so it works on a read-only cache.
            let _lock = if delete { Some(store.lock(true)?) } else { None };
            keep.extend(store.viewed_keys());
            // Resumable work (train's checkpoints) of a stage no pipeline plans any more.
            for (path, resumable) in store.tmp_items() {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if resumable && !keep.contains(&name) && !keep_all_work {
                    writeln!(
                        out,
                        "{} resumable work {} {}",
                        if delete { "removed" } else { "would remove" },
                        path.display(),
                        human(dir_size(&path))
                    )?;
                    if delete {
                        crate::cache::store::remove_any(&path)?;
                    }
                }
            }
            let mut freed = 0u64;
            let mut n = 0;
            for k in store.keys().into_iter().filter(|k| !keep.contains(k)) {
                let size = dir_size(&store.entry_dir(&k));
                freed += size;
                n += 1;
                let what = store
                    .manifest(&k)
                    .map(|m| format!("{} ({})", m.stage, m.parts.kind))
                    .unwrap_or_else(|_| "?".into());
                writeln!(
                    out,
                    "{} {k} {what} {}",
                    if delete { "removed" } else { "would remove" },
                    human(size)
                )?;
                if delete {
                    store.remove_entry(&k)?;
                }
            }
            writeln!(
                out,
                "{n} unreferenced entries, {}{}",
                human(freed),
                if delete || n == 0 {
                    String::new()
                } else {
                    "; run with --delete to remove them".into()
                }
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn default_pipelines() -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("pipelines")
        .context("no pipeline files given and no ./pipelines directory")?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    v.sort();
    Ok(v)
}

/// The committed Parquet file of `STAGE[.TABLE]` for the pipeline's current key.
pub fn table_path(p: &Pipeline, target: &str) -> anyhow::Result<PathBuf> {
    table_paths(p, &[target]).remove(0)
}

/// [`table_path`] of several targets, planning once.
pub fn table_paths(p: &Pipeline, targets: &[&str]) -> Vec<anyhow::Result<PathBuf>> {
    let store = Store::new(&p.cache_dir);
    let plans = match plan(p, &store) {
        Ok(plans) => plans,
        Err(e) => {
            let e = e.to_string();
            return targets.iter().map(|_| Err(anyhow::anyhow!("{e}"))).collect();
        }
    };
    targets
        .iter()
        .map(|target| {
            let (stage, table) = match target.split_once('.') {
                Some((s, t)) => (s, Some(t)),
                None => (*target, None),
            };
            let i = p
                .index(stage)
                .ok_or_else(|| crate::scheduler::unknown_stage(p, stage))?;
            let s = &p.stages[i];
            let table = match table {
                Some(t) if s.prepared.outputs.iter().any(|o| o == t) => t.to_string(),
                Some(t) => bail!(
                    "stage `{stage}` has no table `{t}`; it writes: {}",
                    s.prepared.outputs.join(", ")
                ),
                None if s.prepared.outputs.len() == 1 => s.prepared.outputs[0].clone(),
                None => bail!(
                    "stage `{stage}` writes several tables; name one: {}",
                    s.prepared
                        .outputs
                        .iter()
                        .map(|t| format!("{stage}.{t}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            match (&plans[i].state, &plans[i].key) {
                (State::Fresh, Some(key)) => Ok(store.entry_dir(key).join(format!("{table}.parquet"))),
                _ => bail!(
                    "stage `{stage}` has no current result ({}); run `pipe run {} --until {stage}` first",
                    plans[i].reason(),
                    p.file.display()
                ),
            }
        })
        .collect()
}

fn print_report(
    out: &mut impl Write,
    p: &Pipeline,
    report: &crate::scheduler::RunReport,
    dry_run: bool,
) -> anyhow::Result<()> {
    let w = p.stages.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut fresh = 0;
    let mut considered = 0;
    for &i in p.dag.topo_order() {
        let (name, o) = &report.outcomes[i];
        match o {
            Outcome::NotSelected => continue,
            Outcome::Fresh => {
                fresh += 1;
                writeln!(out, "  · {name:w$}  fresh")?
            }
            Outcome::Ran {
                seconds,
                rows,
                counters,
                device,
            } => {
                let rows: Vec<String> = rows.iter().map(|(t, n)| format!("{t}={n}")).collect();
                let counters: Vec<String> = counters.iter().map(|(t, n)| format!("{t}={n}")).collect();
                let dev = if device == "cpu" {
                    String::new()
                } else {
                    format!(" on {device}")
                };
                writeln!(
                    out,
                    "  ✓ {name:w$}  ran in {seconds:.2}s{dev}  rows: {}{}",
                    rows.join(" "),
                    if counters.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", counters.join(" "))
                    }
                )?
            }
            Outcome::Unchanged(why) => {
                fresh += 1;
                writeln!(out, "  · {name:w$}  fresh ({why})")?
            }
            Outcome::WouldRun(why) => writeln!(out, "  → {name:w$}  would run: {}", why.join("; "))?,
            Outcome::MayRun(why) => writeln!(out, "  ? {name:w$}  may run: {why}")?,
            Outcome::Failed(e) => writeln!(out, "  ✗ {name:w$}  FAILED: {e}")?,
            Outcome::Skipped(why) => writeln!(out, "  - {name:w$}  skipped: {why}")?,
        }
        considered += 1;
    }
    for warning in &report.warnings {
        writeln!(out, "warning: {warning}")?;
    }
    if let Some((jobs, queries, tasks)) = report.slurm {
        let tasks = if tasks > 0 {
            format!("; {tasks} shards ran as array tasks")
        } else {
            String::new()
        };
        writeln!(
            out,
            "slurm: {jobs} job(s) submitted, {queries} controller queries to track them{tasks}"
        )?;
    }
    if fresh == considered && !dry_run {
        writeln!(out, "all {considered} stages are fresh; nothing to run")?;
    }
    Ok(())
}

/// `pipe kinds [KIND] [--json]`.
fn print_kinds(out: &mut impl Write, kinds: &Registry, only: Option<&str>, json: bool) -> anyhow::Result<()> {
    let chosen: Vec<&dyn crate::stage::Kind> = match only {
        None => kinds.iter().collect(),
        Some(name) => vec![kinds.get(name).ok_or_else(|| {
            let names = kinds.names();
            let near = crate::error::closest(name, names.iter().copied())
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            anyhow::anyhow!("no kind `{name}`; {near}kinds: {}", names.join(", "))
        })?],
    };
    if json {
        let rows: Vec<_> = chosen
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kind": k.name(), "version": k.version(), "about": k.about(),
                    "params": crate::registry::params_of(*k),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    if only.is_none() {
        let w = chosen.iter().map(|k| k.name().len()).max().unwrap_or(0);
        for k in &chosen {
            writeln!(out, "  {:w$}  v{}  {}", k.name(), k.version(), k.about())?;
        }
        writeln!(out, "`pipe kinds KIND` lists a kind's params.")?;
        return Ok(());
    }
    for k in chosen {
        writeln!(out, "{} (v{}): {}", k.name(), k.version(), k.about())?;
        writeln!(out, "params:")?;
        for p in crate::registry::params_of(k) {
            let default = match (&p.default, p.required) {
                (_, true) => " (required)".to_string(),
                (Some(d), _) => format!(" = {}", serde_json::to_string(d)?),
                (None, _) => String::new(),
            };
            writeln!(out, "  {}: {}{default}", p.name, p.ty)?;
            for line in wrap(&p.about, 84) {
                writeln!(out, "      {line}")?;
            }
        }
    }
    Ok(())
}

/// Words of `text` in lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 1 + word.chars().count() <= width => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

fn dir_size(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn human(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

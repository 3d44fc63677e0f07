//! Running one stage: check the inputs it will read against their manifests, build its
//! [`Context`], run the kind in process or in the torch worker, then seal the result —
//! only if it is what its key claims (every table written, no referenced file changed
//! or unreadable meanwhile) is it committed to the store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::cache::KeyParts;
use crate::cache::fingerprint::Fingerprinter;
use crate::cache::store::{LOG, Manifest, Store, check_files};
use crate::config::Pipeline;
use crate::plan::StagePlan;
use crate::stage::{Context, Device, Executor, InputTable};
use crate::table::{TableMeta, footer};
use crate::worker::{Job, run_in_worker};

use super::Outcome;

/// What a stage's run needs from the plan, owned (the plan is replaced while it runs).
pub(super) struct Work {
    pub key: String,
    pub parts: KeyParts,
    pub inputs: Vec<Input>,
}

/// One input of a stage: the tables handed to it, and what to check before it reads.
pub(super) struct Input {
    stage: String,
    entry: PathBuf,
    manifest: std::sync::Arc<Manifest>,
    files: Vec<String>,
    tables: Vec<InputTable>,
}

pub(super) fn input_tables(p: &Pipeline, i: usize, plans: &[StagePlan], store: &Store) -> Vec<Input> {
    let s = &p.stages[i];
    s.inputs
        .iter()
        .map(|input| {
            let j = p.index(&input.stage).expect("validated");
            let key = plans[j].key.as_deref().expect("inputs of a keyed stage are fresh");
            let manifest = plans[j].manifest.clone().expect("inputs of a keyed stage are fresh");
            let entry = store.entry_dir(key);
            let tables = match &input.table {
                Some(t) => vec![t.clone()],
                None => p.stages[j].prepared.outputs.clone(),
            };
            Input {
                stage: input.stage.clone(),
                files: manifest.input_files(input.table.as_deref()),
                tables: tables
                    .into_iter()
                    .map(|t| InputTable {
                        stage: input.stage.clone(),
                        path: entry.join(format!("{t}.parquet")),
                        table: t,
                    })
                    .collect(),
                entry,
                manifest,
            }
        })
        .collect()
}

/// Check what a stage is about to read against its manifest: damage found is moved to
/// `quarantine/` (the next run rebuilds it) and fails the stage, instead of being read
/// and sealed into a new entry.
fn check_inputs(store: &Store, inputs: &[Input]) -> anyhow::Result<()> {
    for input in inputs {
        let problems = check_files(&input.entry, &input.manifest, &input.files);
        if !problems.is_empty() {
            let moved = store
                .quarantine(&input.manifest.key)
                .map(|d| format!("moved to {}", d.display()))
                .unwrap_or_else(|e| format!("could not be moved to quarantine: {e:#}"));
            bail!(
                "input `{}` is damaged ({}); its entry {moved}; run again to rebuild it",
                input.stage,
                problems.join("; ")
            );
        }
    }
    Ok(())
}

/// The previous result of an incremental stage, if it is intact: reused work must not
/// carry damage into the new entry. A damaged one goes to `quarantine/`.
fn intact_previous(store: &Store, key: &str, log: &mut Vec<String>) -> Option<PathBuf> {
    let problems = store.verify_entry(key);
    if problems.is_empty() {
        return Some(store.entry_dir(key));
    }
    let moved = store
        .quarantine(key)
        .map(|d| d.display().to_string())
        .unwrap_or_else(|e| format!("nowhere ({e:#})"));
    log.push(format!(
        "previous result {key} is damaged ({}); not reused, moved to {moved}",
        problems.join("; ")
    ));
    None
}

/// Where a stage runs, and as part of which run.
pub(super) struct Place {
    pub backend: crate::config::Backend,
    /// Names the run's Slurm jobs (`pipe-<run>-<stage>`).
    pub run_id: String,
    /// GPUs to ask Slurm for.
    pub gpus: usize,
}

/// Run one stage into a temporary directory and commit it.
#[allow(clippy::too_many_arguments)]
pub(super) fn execute(
    p: &Pipeline,
    i: usize,
    work: &Work,
    store: &Store,
    threads: usize,
    device: Device,
    progress: crate::progress::Progress,
    place: &Place,
) -> anyhow::Result<Outcome> {
    let s = &p.stages[i];
    let start = Instant::now();
    check_inputs(store, &work.inputs).with_context(|| format!("stage `{}`", s.name))?;
    let out_dir = store.begin(&work.key, s.kind.resumable())?;
    let inputs: Vec<InputTable> = work.inputs.iter().flat_map(|i| i.tables.iter().cloned()).collect();
    let mut log = Vec::new();
    // Reused work must come from the same code: a previous result of another kind or
    // kind version (a bug fixed, a format changed) is not reused.
    let previous = store
        .view(&p.name, &s.name)
        .filter(|k| k != &work.key && store.has(k))
        .filter(|k| {
            store
                .manifest(k)
                .is_ok_and(|m| m.parts.kind == work.parts.kind && m.parts.version == work.parts.version)
        })
        .and_then(|k| intact_previous(store, &k, &mut log));
    let params_json = serde_json::to_string(&s.prepared.params)?;
    let meta = TableMeta {
        kind: s.kind.name().into(),
        stage: s.name.clone(),
        key: work.key.clone(),
        params: params_json,
        table: String::new(),
    };
    let ctx = Context {
        stage: s.name.clone(),
        root: p.root.clone(),
        cache_dir: store.dir.clone(),
        out_dir: out_dir.clone(),
        inputs,
        previous,
        shard: None,
        threads,
        device,
        progress,
        meta,
        counters: Mutex::new(BTreeMap::new()),
        log: Mutex::new(log),
        unreadable: Mutex::new(Vec::new()),
    };

    let result = if s.shards > 1 {
        run_shards(p, s, &work.key, &ctx, place)
    } else {
        run_kind(p, s, &work.key, &ctx, place, None)
    };
    let log_lines = std::mem::take(&mut *ctx.log.lock().unwrap());
    let log_text = if log_lines.is_empty() {
        String::new()
    } else {
        log_lines.join("\n") + "\n"
    };
    let device_used = match result {
        Ok(d) => d,
        Err(e) => {
            let log = keep_failure_log(store, p, &s.name, &log_text);
            return Err(e.context(match log {
                Some(l) => format!("stage `{}` (kind `{}`); log: {}", s.name, s.kind.name(), l.display()),
                None => format!("stage `{}` (kind `{}`)", s.name, s.kind.name()),
            }));
        }
    };

    let log_path = ctx.out_dir.join(LOG);
    std::fs::write(&log_path, &log_text).with_context(|| format!("cannot write {}", log_path.display()))?;
    seal(p, s, work, store, &ctx, device_used, start)
}

/// Run a stage of `shards: N`: each shard into its own directory beside the work
/// directory (`tmp/<key>.shards/<i>`: garbage for the next run if this one dies) —
/// on Slurm as one array job, locally one after another —, then the kind's merge into
/// the work directory. Counters add up; log lines say their shard.
fn run_shards(
    p: &Pipeline,
    s: &crate::config::StageSpec,
    key: &str,
    ctx: &Context,
    place: &Place,
) -> anyhow::Result<String> {
    let n = s.shards;
    let dir = ctx.out_dir.with_file_name(format!("{key}.shards"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    let dirs: Vec<PathBuf> = (0..n).map(|i| dir.join(i.to_string())).collect();
    let device = match &place.backend {
        crate::config::Backend::Slurm(_) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            run_kind(p, s, key, ctx, place, Some((n, &dir)))?
        }
        crate::config::Backend::Local => {
            let mut device = ctx.device.to_string();
            for (index, shard_dir) in dirs.iter().enumerate() {
                std::fs::create_dir_all(shard_dir).with_context(|| format!("cannot create {}", shard_dir.display()))?;
                ctx.progress.set_message(format!("shard {} of {n}", index + 1));
                let shard = ctx.for_shard(crate::stage::Shard { index, count: n }, shard_dir.clone());
                let r = run_kind(p, s, key, &shard, place, None);
                for (k, v) in shard.counters.into_inner().unwrap() {
                    ctx.count(&k, v);
                }
                for l in shard.log.into_inner().unwrap() {
                    ctx.log(format!("shard {index}: {l}"));
                }
                for (f, why) in shard.unreadable.into_inner().unwrap() {
                    ctx.unreadable(&f, &why);
                }
                device = r?;
            }
            device
        }
    };
    ctx.progress.set_message(format!("merging {n} shards"));
    let t = std::time::Instant::now();
    s.kind
        .merge(&s.prepared.params, ctx, &dirs)
        .with_context(|| format!("stage `{}`: cannot merge its {n} shards", s.name))?;
    ctx.log(format!(
        "{n} shards merged in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(device)
}

/// Run the kind: on a thread of this process, in the torch worker, or as a Slurm job
/// of either (`array`: all shards as one Slurm array, each into its folder of the
/// given directory). Returns the device it actually ran on.
fn run_kind(
    p: &Pipeline,
    s: &crate::config::StageSpec,
    key: &str,
    ctx: &Context,
    place: &Place,
    array: Option<(usize, &std::path::Path)>,
) -> anyhow::Result<String> {
    let out_dir = array.map_or(ctx.out_dir.as_path(), |(_, d)| d);
    let job = || Job {
        kind: s.kind.name().into(),
        stage: s.name.clone(),
        params: s.prepared.params.clone(),
        root: ctx.root.clone(),
        cache_dir: ctx.cache_dir.clone(),
        out_dir: out_dir.to_path_buf(),
        inputs: ctx.inputs.clone(),
        previous: ctx.previous.clone(),
        threads: ctx.threads,
        device: ctx.device,
        meta: ctx.meta.clone(),
        shards: array.map(|(n, _)| n),
        shard: ctx.shard,
    };
    // Beside the work directory: a file there is garbage for clean_tmp if left behind.
    let job_file = ctx.out_dir.with_file_name(format!("{key}.job.json"));
    let r = match (&place.backend, s.prepared.executor) {
        (crate::config::Backend::Local, Executor::InProcess) => {
            return s.kind.run(&s.prepared.params, ctx).map(|()| ctx.device.to_string());
        }
        (crate::config::Backend::Local, Executor::TorchWorker) => run_in_worker(&job(), &job_file, ctx),
        (crate::config::Backend::Slurm(options), executor) => {
            let (program, command) = match executor {
                Executor::TorchWorker => (crate::worker::worker_path()?, "run"),
                Executor::InProcess => (
                    std::env::current_exe().context("cannot find the running pipe executable")?,
                    "job",
                ),
            };
            crate::slurm::run_job(
                &job(),
                &job_file,
                &crate::slurm::Program {
                    path: program,
                    command: command.into(),
                },
                &crate::slurm::Placement {
                    run_id: place.run_id.clone(),
                    workdir: p.root.clone(),
                    cpus: ctx.threads,
                    gpus: place.gpus,
                    options: options.clone(),
                },
                ctx,
            )
        }
    };
    let _ = std::fs::remove_file(&job_file);
    r
}

/// Commit the stage's work directory, if it is what its key claims: no file of a
/// referenced tree was unreadable or changed while it ran, and every table it declares
/// is there and readable.
fn seal(
    p: &Pipeline,
    s: &crate::config::StageSpec,
    work: &Work,
    store: &Store,
    ctx: &Context,
    device_used: String,
    start: Instant,
) -> anyhow::Result<Outcome> {
    let out_dir = &ctx.out_dir;
    let unreadable = std::mem::take(&mut *ctx.unreadable.lock().unwrap());
    if let Some((first, why)) = unreadable.first() {
        // Next time these are read, not taken from the stat cache: then the key says
        // whether they are readable, and the result is what it says.
        // Whichever stage's tree they are in (parse reads the files collect listed).
        for r in p.stages.iter().flat_map(|s| &s.prepared.references) {
            let root = p.resolve(&r.path);
            let rels: std::collections::HashSet<String> = unreadable
                .iter()
                .filter_map(|(f, _)| Some(f.strip_prefix(&root).ok()?.to_string_lossy().into_owned()))
                .collect();
            if !rels.is_empty() {
                crate::cache::fingerprint::forget(&store.dir, &root, &rels)?;
            }
        }
        bail!(
            "stage `{}`: {} file(s) could not be read while it ran ({}: {why}); their content is unknown, so the result is not cached; run again",
            s.name,
            unreadable.len(),
            first.display()
        );
    }

    // The key was computed from the referenced files as they were before the stage ran;
    // if one changed meanwhile, the result may belong to neither version (cargo checks
    // the same hazard with its build start time). Refuse to cache it.
    let mut fingerprints = Fingerprinter::new(&store.dir);
    let paths: Vec<PathBuf> = work.parts.references.iter().map(|r| p.resolve(&r.path)).collect();
    fingerprints.prefetch(&paths);
    for r in &work.parts.references {
        let now = fingerprints
            .fingerprint(&p.resolve(&r.path))
            .map(|f| f.hash)
            .unwrap_or_default();
        if now != r.hash {
            bail!(
                "stage `{}`: {} ({}) changed while the stage ran, so its result is not cached; run again",
                s.name,
                r.path,
                r.param
            );
        }
    }

    let mut rows = BTreeMap::new();
    for t in &s.prepared.outputs {
        let path = out_dir.join(format!("{t}.parquet"));
        if !path.is_file() {
            bail!(
                "stage `{}` finished without writing its table `{t}` ({})",
                s.name,
                path.display()
            );
        }
        let (n, _) = footer(&path).with_context(|| format!("stage `{}` wrote a broken table `{t}`", s.name))?;
        rows.insert(t.clone(), n);
    }
    let counters = ctx.counters.lock().unwrap().clone();
    let seconds = start.elapsed().as_secs_f64();
    let manifest = Manifest {
        key: work.key.clone(),
        stage: s.name.clone(),
        pipeline: p.name.clone(),
        parts: work.parts.clone(),
        tables: rows.clone(),
        files: BTreeMap::new(),
        counters: counters.clone(),
        wall_seconds: seconds,
        device: device_used.clone(),
        pipe_version: crate::VERSION.into(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
    };
    store.commit(out_dir, manifest)?;
    Ok(Outcome::Ran {
        seconds,
        rows,
        counters,
        device: device_used,
    })
}

fn keep_failure_log(store: &Store, p: &Pipeline, stage: &str, text: &str) -> Option<PathBuf> {
    let dir = store.dir.join("logs").join(&p.name);
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("{stage}.log"));
    std::fs::write(&path, text).ok()?;
    Some(path)
}

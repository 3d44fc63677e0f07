//! Running a plan: pick the stages to run, run ready ones concurrently within the CPU
//! and GPU slots, commit each result, point the views at the current results.
//!
//! Failure policy: a failed stage never takes finished stages with it (each is
//! committed as soon as it succeeds). Its descendants are skipped; without
//! `--keep-going` nothing new starts after a failure, with it every stage that does not
//! depend on the failure still runs.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::cache::store::{Manifest, Store};
use crate::config::Pipeline;
use crate::plan::{StagePlan, State, plan};
use crate::progress::Reporter;
use crate::stage::{Context, Device, Executor, InputTable};
use crate::table::{TableMeta, footer};
use crate::worker::{Job, run_in_worker};

#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Run these stages and what they need, nothing after them.
    pub until: Vec<String>,
    /// Run only these stages; their inputs must already be in the cache.
    pub only: Vec<String>,
    /// Run these stages and everything downstream of them.
    pub from: Vec<String>,
    /// Rebuild these stages even if fresh.
    pub force: Vec<String>,
    pub dry_run: bool,
    /// CPU slots (0 = number of cores).
    pub jobs: usize,
    pub keep_going: bool,
    /// Queue behind another run holding the cache instead of failing.
    pub wait: bool,
    /// GPU slots (None = detect).
    pub gpus: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Fresh,
    Ran {
        seconds: f64,
        rows: BTreeMap<String, u64>,
        counters: BTreeMap<String, u64>,
        device: String,
    },
    WouldRun(Vec<String>),
    Failed(String),
    Skipped(String),
    NotSelected,
}

/// What happened to each stage (indexed like `Pipeline::stages`).
#[derive(Debug)]
pub struct RunReport {
    pub outcomes: Vec<(String, Outcome)>,
    pub warnings: Vec<String>,
}

impl RunReport {
    pub fn ran(&self) -> Vec<&str> {
        self.outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Ran { .. }))
            .map(|(n, _)| n.as_str())
            .collect()
    }
    pub fn failed(&self) -> bool {
        self.outcomes.iter().any(|(_, o)| matches!(o, Outcome::Failed(_)))
    }
}

/// Number of GPUs visible to this process, without loading CUDA: honours
/// `CUDA_VISIBLE_DEVICES` and counts `/dev/nvidiaN`.
pub fn detect_gpus() -> usize {
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        let v = v.trim();
        return if v.is_empty() || v == "-1" {
            0
        } else {
            v.split(',').count()
        };
    }
    std::fs::read_dir("/dev")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.strip_prefix("nvidia")
                        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
                })
                .count()
        })
        .unwrap_or(0)
}

fn select(p: &Pipeline, opts: &RunOptions) -> anyhow::Result<BTreeSet<usize>> {
    let find = |name: &String| {
        p.index(name).with_context(|| {
            format!(
                "no stage `{name}` in {} (stages: {})",
                p.file.display(),
                p.stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            )
        })
    };
    let mut selected: BTreeSet<usize> = (0..p.stages.len()).collect();
    if !opts.until.is_empty() {
        let mut s = BTreeSet::new();
        for n in &opts.until {
            let i = find(n)?;
            s.insert(i);
            s.extend(p.dag.ancestors(i));
        }
        selected = selected.intersection(&s).copied().collect();
    }
    if !opts.from.is_empty() {
        let mut s = BTreeSet::new();
        for n in &opts.from {
            let i = find(n)?;
            s.insert(i);
            s.extend(p.dag.descendants(i));
        }
        selected = selected.intersection(&s).copied().collect();
    }
    if !opts.only.is_empty() {
        let mut s = BTreeSet::new();
        for n in &opts.only {
            s.insert(find(n)?);
        }
        selected = selected.intersection(&s).copied().collect();
    }
    for n in &opts.force {
        find(n)?;
    }
    Ok(selected)
}

/// Plan and run a pipeline.
pub fn run(p: &Pipeline, opts: &RunOptions, reporter: &Reporter) -> anyhow::Result<RunReport> {
    let store = Store::new(&p.cache_dir);
    let _lock = if opts.dry_run {
        None
    } else {
        Some(store.lock(opts.wait)?)
    };
    let plans = plan(p, &store)?;
    let selected = select(p, opts)?;
    let forced: BTreeSet<usize> = opts.force.iter().filter_map(|n| p.index(n)).collect();
    let to_run: BTreeSet<usize> = selected
        .iter()
        .copied()
        .filter(|&i| !plans[i].is_fresh() || forced.contains(&i))
        .collect();

    // Everything a selected stage needs must be fresh or run too.
    for &i in &to_run {
        for j in p.dag.ancestors(i) {
            if !plans[j].is_fresh() && !to_run.contains(&j) {
                bail!(
                    "stage `{}` needs `{}`, which is stale and not selected; run with `--until {}` instead",
                    p.stages[i].name,
                    p.stages[j].name,
                    p.stages[i].name
                );
            }
        }
    }

    let mut outcomes: Vec<Outcome> = (0..p.stages.len())
        .map(|i| {
            if !selected.contains(&i) {
                Outcome::NotSelected
            } else {
                Outcome::Fresh
            }
        })
        .collect();
    let mut warnings = Vec::new();

    if opts.dry_run {
        for &i in &to_run {
            outcomes[i] = Outcome::WouldRun(match &plans[i].state {
                State::Stale(why) => why.clone(),
                State::Fresh => vec!["forced".into()],
            });
        }
        return Ok(report(p, outcomes, warnings));
    }

    let resumable: BTreeSet<String> = to_run
        .iter()
        .filter(|&&i| p.stages[i].kind.resumable())
        .map(|&i| plans[i].key.clone())
        .collect();
    store.clean_tmp(&|name| resumable.iter().any(|k| name.starts_with(k.as_str())))?;

    let jobs = if opts.jobs == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        opts.jobs
    };
    let gpus = opts.gpus.unwrap_or_else(detect_gpus);
    let mut cpu_free = jobs;
    let mut gpu_free: Vec<usize> = (0..gpus).rev().collect();
    let mut pending: BTreeSet<usize> = to_run.clone();
    let mut running: BTreeMap<usize, (usize, Option<usize>)> = BTreeMap::new();
    let mut stop = false;
    let total = to_run.len();
    let mut finished = 0;
    let (tx, rx) = mpsc::channel::<(usize, anyhow::Result<Outcome>)>();

    std::thread::scope(|scope| {
        loop {
            // Start whatever is ready and fits.
            if !stop {
                let ready: Vec<usize> = p
                    .dag
                    .topo_order()
                    .iter()
                    .copied()
                    .filter(|i| pending.contains(i))
                    .filter(|&i| {
                        p.dag
                            .parents(i)
                            .iter()
                            .all(|j| !pending.contains(j) && !running.contains_key(j))
                    })
                    .collect();
                for i in ready {
                    let s = &p.stages[i];
                    let want_cpu = if s.resources.cpu == 0 {
                        jobs
                    } else {
                        s.resources.cpu.min(jobs)
                    };
                    // A stage that needs more than is free waits, unless nothing runs
                    // (then it gets what there is, so it cannot starve).
                    if want_cpu > cpu_free && !running.is_empty() {
                        continue;
                    }
                    let cpu = want_cpu.min(cpu_free.max(1));
                    let gpu = if s.resources.gpu > 0 {
                        match gpu_free.pop() {
                            Some(g) => Some(g),
                            None if gpus > 0 => continue, // wait for a GPU
                            None => {
                                warnings.push(format!(
                                    "stage `{}` asked for a GPU; none is available, it ran on the CPU",
                                    s.name
                                ));
                                None
                            }
                        }
                    } else {
                        None
                    };
                    cpu_free -= cpu.min(cpu_free);
                    pending.remove(&i);
                    running.insert(i, (cpu, gpu));
                    let tx = tx.clone();
                    let plan = &plans[i];
                    let plans = &plans;
                    let store = &store;
                    let progress = reporter.stage(&s.name);
                    reporter.println(&format!("[{}] running ({})", s.name, reason_line(plan)));
                    scope.spawn(move || {
                        let device = gpu.map_or(Device::Cpu, Device::Cuda);
                        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            execute(p, i, plan, plans, store, cpu, device, progress.clone())
                        }))
                        .unwrap_or_else(|panic| {
                            let msg = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            Err(anyhow::anyhow!(
                                "internal error (a bug in pipe, please report it): {msg}"
                            ))
                        });
                        progress.finish();
                        let _ = tx.send((i, r));
                    });
                }
            }
            reporter.overall(
                finished,
                total,
                &running.keys().map(|&i| p.stages[i].name.clone()).collect::<Vec<_>>(),
            );
            if running.is_empty() {
                break;
            }
            let (i, result) = rx.recv().expect("a running stage reports");
            let (cpu, gpu) = running.remove(&i).expect("was running");
            cpu_free += cpu;
            if let Some(g) = gpu {
                gpu_free.push(g);
            }
            finished += 1;
            let name = &p.stages[i].name;
            match result {
                Ok(o) => {
                    if let Outcome::Ran { seconds, .. } = &o {
                        reporter.println(&format!("[{name}] done in {seconds:.1}s"));
                    }
                    outcomes[i] = o;
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    reporter.println(&format!("[{name}] FAILED: {msg}"));
                    outcomes[i] = Outcome::Failed(msg);
                    for d in p.dag.descendants(i) {
                        if pending.remove(&d) {
                            outcomes[d] = Outcome::Skipped(format!("input `{name}` failed"));
                        }
                    }
                    if !opts.keep_going {
                        stop = true;
                    }
                }
            }
        }
    });
    for i in pending {
        outcomes[i] = Outcome::Skipped(
            "not started after an earlier failure (use --keep-going to run independent stages)".into(),
        );
    }
    reporter.finish();

    // Views follow the current results, also of stages that were already fresh.
    for &i in &selected {
        if store.has(&plans[i].key) {
            store.set_view(&p.name, &p.stages[i].name, &plans[i].key)?;
        }
    }
    Ok(report(p, outcomes, warnings))
}

fn report(p: &Pipeline, outcomes: Vec<Outcome>, warnings: Vec<String>) -> RunReport {
    RunReport {
        outcomes: p.stages.iter().map(|s| s.name.clone()).zip(outcomes).collect(),
        warnings,
    }
}

fn reason_line(plan: &StagePlan) -> String {
    match &plan.state {
        State::Fresh => "forced".into(),
        State::Stale(why) => why.join("; "),
    }
}

/// Run one stage into a temporary directory and commit it.
#[allow(clippy::too_many_arguments)]
fn execute(
    p: &Pipeline,
    i: usize,
    plan: &StagePlan,
    plans: &[StagePlan],
    store: &Store,
    threads: usize,
    device: Device,
    progress: crate::progress::Progress,
) -> anyhow::Result<Outcome> {
    let s = &p.stages[i];
    let start = Instant::now();
    let out_dir = store.begin(&plan.key, s.kind.resumable())?;
    let mut inputs = Vec::new();
    for input in &s.inputs {
        let j = p.index(&input.stage).expect("validated");
        let entry = store.entry_dir(&plans[j].key);
        let tables = match &input.table {
            Some(t) => vec![t.clone()],
            None => p.stages[j].prepared.outputs.clone(),
        };
        for t in tables {
            inputs.push(InputTable {
                stage: input.stage.clone(),
                table: t.clone(),
                path: entry.join(format!("{t}.parquet")),
            });
        }
    }
    let previous = store
        .view(&p.name, &s.name)
        .filter(|k| k != &plan.key && store.has(k))
        .map(|k| store.entry_dir(&k));
    let params_json = serde_json::to_string(&s.prepared.params)?;
    let meta = TableMeta {
        kind: s.kind.name().into(),
        stage: s.name.clone(),
        key: plan.key.clone(),
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
        threads,
        device,
        progress,
        meta,
        counters: Mutex::new(BTreeMap::new()),
        log: Mutex::new(Vec::new()),
    };

    let result = match s.prepared.executor {
        Executor::InProcess => s.kind.run(&s.prepared.params, &ctx).map(|()| device.to_string()),
        Executor::TorchWorker => {
            let job = Job {
                kind: s.kind.name().into(),
                stage: s.name.clone(),
                params: s.prepared.params.clone(),
                root: ctx.root.clone(),
                cache_dir: ctx.cache_dir.clone(),
                out_dir: out_dir.clone(),
                inputs: ctx.inputs.clone(),
                previous: ctx.previous.clone(),
                threads,
                device,
                meta: ctx.meta.clone(),
            };
            let job_file = out_dir.with_file_name(format!("{}.job.json", plan.key));
            run_in_worker(&job, &job_file, &ctx)
        }
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

    // The key was computed from the referenced files as they were before the stage ran;
    // if one changed meanwhile, the result may belong to neither version (cargo checks
    // the same hazard with its build start time). Refuse to cache it.
    let mut fingerprints = crate::cache::fingerprint::Fingerprinter::new(&store.dir);
    let paths: Vec<PathBuf> = plan.parts.references.iter().map(|r| p.resolve(&r.path)).collect();
    fingerprints.prefetch(&paths);
    for r in &plan.parts.references {
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
    std::fs::write(out_dir.join("log.txt"), &log_text)?;
    let counters = ctx.counters.lock().unwrap().clone();
    let seconds = start.elapsed().as_secs_f64();
    let manifest = Manifest {
        key: plan.key.clone(),
        stage: s.name.clone(),
        pipeline: p.name.clone(),
        parts: plan.parts.clone(),
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
    store.commit(&out_dir, manifest)?;
    let _ = std::fs::remove_file(out_dir.with_file_name(format!("{}.job.json", plan.key)));
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

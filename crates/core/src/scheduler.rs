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
use std::time::Duration;
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::cache::KeyParts;
use crate::cache::fingerprint::Fingerprinter;
use crate::cache::store::{LOG, Manifest, Store, check_files};
use crate::config::Pipeline;
use crate::plan::{StagePlan, State, plan_with};
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
    /// Fresh once the stages it waited for had run: their output was what it had seen.
    Unchanged(String),
    WouldRun(Vec<String>),
    /// Dry run: it waits for a stage that would run, so it may or may not.
    MayRun(String),
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
    let find = |name: &String| -> anyhow::Result<usize> { p.index(name).ok_or_else(|| unknown_stage(p, name).into()) };
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

/// "no stage `trian`; did you mean `train`?" (a pipeline error: exit code 2).
pub fn unknown_stage(p: &Pipeline, name: &str) -> crate::error::Diagnostics {
    let names = p.stages.iter().map(|s| s.name.as_str());
    let d = match crate::error::closest(name, names.clone()) {
        Some(c) => crate::error::Diagnostic::new(format!(
            "no stage `{name}` in {}; did you mean `{c}`?",
            p.file.display()
        )),
        None => crate::error::Diagnostic::new(format!("no stage `{name}` in {}", p.file.display())),
    };
    crate::error::Diagnostics(vec![
        d.help(format!("stages: {}", names.collect::<Vec<_>>().join(", "))),
    ])
}

/// Plan and run a pipeline.
pub fn run(p: &Pipeline, opts: &RunOptions, reporter: &Reporter) -> anyhow::Result<RunReport> {
    let store = Store::new(&p.cache_dir);
    let selected = select(p, opts)?;
    let forced: BTreeSet<usize> = opts.force.iter().filter_map(|n| p.index(n)).collect();
    let mut fp = Fingerprinter::new(&store.dir);
    let mut plans = plan_with(p, &store, &mut fp)?;
    let mut outcomes: Vec<Outcome> = (0..p.stages.len())
        .map(|i| {
            if selected.contains(&i) {
                Outcome::Fresh
            } else {
                Outcome::NotSelected
            }
        })
        .collect();
    let to_run = |plans: &[StagePlan]| -> BTreeSet<usize> {
        selected
            .iter()
            .copied()
            .filter(|&i| !plans[i].is_fresh() || forced.contains(&i))
            .collect()
    };
    check_runnable(p, &plans, &to_run(&plans), !opts.dry_run)?;

    if opts.dry_run {
        for i in to_run(&plans) {
            outcomes[i] = match &plans[i].state {
                State::Stale(why) => Outcome::WouldRun(why.clone()),
                State::Fresh => Outcome::WouldRun(vec!["forced".into()]),
                _ => Outcome::MayRun(plans[i].reason()),
            };
        }
        return Ok(report(p, outcomes, Vec::new()));
    }
    // A no-op run writes nothing, so it needs no lock (and works on a read-only cache).
    let views_current = |plans: &[StagePlan]| {
        selected.iter().all(|&i| match &plans[i].key {
            Some(k) if plans[i].is_fresh() => store.view(&p.name, &p.stages[i].name).as_deref() == Some(k),
            _ => true,
        })
    };
    if to_run(&plans).is_empty() && views_current(&plans) {
        return Ok(report(p, outcomes, Vec::new()));
    }
    let _lock = store.lock(opts.wait)?;
    // Another run may have committed while we waited for the lock.
    plans = plan_with(p, &store, &mut fp)?;
    check_runnable(p, &plans, &to_run(&plans), true)?;
    store.clean_tmp()?;

    let mut warnings = Vec::new();
    let jobs = if opts.jobs == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        opts.jobs
    };
    let gpus = opts.gpus.unwrap_or_else(detect_gpus);
    let mut cpu_free = jobs;
    let mut gpu_free: Vec<usize> = (0..gpus).rev().collect();
    let mut pending: BTreeSet<usize> = to_run(&plans);
    let mut forced_left: BTreeSet<usize> = forced.intersection(&pending).copied().collect();
    let mut running: BTreeMap<usize, (usize, Option<usize>)> = BTreeMap::new();
    let mut ran: BTreeSet<usize> = BTreeSet::new();
    let mut stop = false;
    let mut total = pending.len();
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
                    let plan = &plans[i];
                    let (Some(key), Some(parts)) = (&plan.key, &plan.parts) else {
                        // Its inputs are done, yet it has no key: one of them left no result.
                        pending.remove(&i);
                        total -= 1;
                        outcomes[i] = Outcome::Skipped(plan.reason());
                        continue;
                    };
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
                            None => None,                 // on the CPU; said if it ran
                        }
                    } else {
                        None
                    };
                    cpu_free -= cpu.min(cpu_free);
                    pending.remove(&i);
                    forced_left.remove(&i);
                    running.insert(i, (cpu, gpu));
                    let work = Work {
                        key: key.clone(),
                        parts: parts.clone(),
                        inputs: input_tables(p, i, &plans, &store),
                    };
                    let tx = tx.clone();
                    let store = &store;
                    let progress = reporter.stage(&s.name);
                    let why = if plan.is_fresh() {
                        "forced".into()
                    } else {
                        plan.reason()
                    };
                    reporter.println(&format!("[{}] running ({why})", s.name));
                    scope.spawn(move || {
                        let device = gpu.map_or(Device::Cpu, Device::Cuda);
                        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            execute(p, i, &work, store, cpu, device, progress.clone())
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
            // Wait for a stage to finish, looking up for Ctrl-C / SIGTERM now and then.
            let (i, result) = loop {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(message) => break message,
                    Err(_) => {
                        if let Some(why) = crate::interrupt::received() {
                            stop_on_signal(p, reporter, why, &ran, running.keys().copied(), &pending);
                        }
                    }
                }
            };
            if let Some(why) = crate::interrupt::received() {
                // A stage that finished as the signal came was committed; one that
                // failed was most likely killed by it (a worker gets the terminal's
                // Ctrl-C too): count it as interrupted.
                if result.is_ok() {
                    ran.insert(i);
                }
                let stopped = running.keys().copied().filter(|&j| j != i || result.is_err());
                stop_on_signal(p, reporter, why, &ran, stopped, &pending);
            }
            let (cpu, gpu) = running.remove(&i).expect("was running");
            cpu_free += cpu;
            if let Some(g) = gpu {
                gpu_free.push(g);
            }
            finished += 1;
            let name = &p.stages[i].name;
            match result {
                Ok(o) => {
                    if let Outcome::Ran { seconds, device, .. } = &o {
                        reporter.println(&format!("[{name}] done in {seconds:.1}s"));
                        // Only a stage that ran can have run on the CPU instead.
                        if p.stages[i].resources.gpu > 0 && device == "cpu" {
                            warnings.push(format!(
                                "stage `{name}` asked for a GPU; none is available, it ran on the CPU"
                            ));
                        }
                    }
                    outcomes[i] = o;
                    ran.insert(i);
                    // Plan again: stages waiting on this one now have keys, and those
                    // whose inputs came out identical are fresh (early cutoff).
                    match plan_with(p, &store, &mut fp) {
                        Ok(new) => plans = new,
                        Err(e) => {
                            warnings.push(format!("cannot plan after `{name}`: {e:#}"));
                            stop = true;
                        }
                    }
                    // Stages not started yet: waiting ones whose inputs came out
                    // identical are fresh (cut off); fresh ones a forced stage changed
                    // the input of are not any more.
                    for &j in &selected {
                        if !matches!(outcomes[j], Outcome::Fresh) || running.contains_key(&j) || ran.contains(&j) {
                            continue;
                        }
                        if !plans[j].is_fresh() || forced_left.contains(&j) {
                            if pending.insert(j) {
                                total += 1;
                            }
                        } else if pending.remove(&j) {
                            finished += 1;
                            outcomes[j] = Outcome::Unchanged(unchanged_inputs(p, j, &ran));
                        } else if p.dag.parents(j).iter().any(|k| ran.contains(k)) {
                            outcomes[j] = Outcome::Unchanged(unchanged_inputs(p, j, &ran));
                        }
                    }
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
        if let (State::Fresh, Some(key)) = (&plans[i].state, &plans[i].key)
            && let Some(note) = store.set_view(&p.name, &p.stages[i].name, key)?
        {
            warnings.push(note);
        }
    }
    Ok(report(p, outcomes, warnings))
}

/// Say what an interrupted run leaves behind, then exit as the signal asks.
fn stop_on_signal(
    p: &Pipeline,
    reporter: &Reporter,
    why: &str,
    ran: &BTreeSet<usize>,
    stopped: impl Iterator<Item = usize>,
    pending: &BTreeSet<usize>,
) -> ! {
    let stopped: Vec<usize> = stopped.collect();
    let names = |set: &mut dyn Iterator<Item = &usize>| {
        set.map(|&i| p.stages[i].name.as_str()).collect::<Vec<_>>().join(", ")
    };
    reporter.finish();
    let mut lines = vec![format!("pipe: {why}")];
    if !ran.is_empty() {
        lines.push(format!("  kept (committed to the cache): {}", names(&mut ran.iter())));
    }
    if !stopped.is_empty() {
        lines.push(format!("  interrupted: {}", names(&mut stopped.iter())));
    }
    if !pending.is_empty() {
        lines.push(format!("  not started: {}", names(&mut pending.iter())));
    }
    let resumable: Vec<usize> = stopped.iter().copied().filter(|&i| p.stages[i].kind.resumable()).collect();
    let again: Vec<usize> = stopped.iter().copied().filter(|&i| !p.stages[i].kind.resumable()).collect();
    let mut next = vec!["kept stages are fresh".to_string()];
    if !resumable.is_empty() {
        next.push(format!("{} resumes from its last checkpoint", names(&mut resumable.iter())));
    }
    if !again.is_empty() {
        next.push(format!("{} runs again", names(&mut again.iter())));
    }
    lines.push(format!("`pipe run {}` resumes: {}", p.file.display(), next.join("; ")));
    for l in lines {
        reporter.println(&l);
    }
    // Exiting ends the stage threads; worker processes die with us (PR_SET_PDEATHSIG).
    std::process::exit(crate::interrupt::exit_code())
}

/// Refuse, before anything runs, a selection that cannot complete: a stage to run whose
/// data does not exist (unless only looking: `--dry-run`), or which needs a stale stage
/// that is not selected.
fn check_runnable(p: &Pipeline, plans: &[StagePlan], to_run: &BTreeSet<usize>, need_data: bool) -> anyhow::Result<()> {
    for &i in to_run {
        if let State::MissingData(why) = &plans[i].state
            && need_data
        {
            bail!(
                "stage `{}` cannot run: {}; point its params at the data (relative paths resolve against {})",
                p.stages[i].name,
                why.join("; "),
                p.root.display()
            );
        }
        for j in p.dag.ancestors(i) {
            if !plans[j].is_fresh() && !to_run.contains(&j) {
                bail!(
                    "stage `{}` needs `{}`, which is not fresh ({}) and not selected; run with `--until {}` instead",
                    p.stages[i].name,
                    p.stages[j].name,
                    plans[j].reason(),
                    p.stages[i].name
                );
            }
        }
    }
    Ok(())
}

/// "input `label.labels` unchanged": the inputs of a cut-off stage that ran this time.
fn unchanged_inputs(p: &Pipeline, i: usize, ran: &BTreeSet<usize>) -> String {
    let names: Vec<String> = p.stages[i]
        .inputs
        .iter()
        .filter(|input| p.index(&input.stage).is_some_and(|j| ran.contains(&j)))
        .map(|input| input.to_string())
        .collect();
    match names.len() {
        0 => "inputs unchanged".into(),
        1 => format!("input {} unchanged", names[0]),
        _ => format!("inputs {} unchanged", names.join(", ")),
    }
}

fn report(p: &Pipeline, outcomes: Vec<Outcome>, warnings: Vec<String>) -> RunReport {
    RunReport {
        outcomes: p.stages.iter().map(|s| s.name.clone()).zip(outcomes).collect(),
        warnings,
    }
}

/// What a stage's run needs from the plan, owned (the plan is replaced while it runs).
struct Work {
    key: String,
    parts: KeyParts,
    inputs: Vec<Input>,
}

/// One input of a stage: the tables handed to it, and what to check before it reads.
struct Input {
    stage: String,
    entry: PathBuf,
    manifest: std::sync::Arc<Manifest>,
    files: Vec<String>,
    tables: Vec<InputTable>,
}

fn input_tables(p: &Pipeline, i: usize, plans: &[StagePlan], store: &Store) -> Vec<Input> {
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

/// Run one stage into a temporary directory and commit it.
fn execute(
    p: &Pipeline,
    i: usize,
    work: &Work,
    store: &Store,
    threads: usize,
    device: Device,
    progress: crate::progress::Progress,
) -> anyhow::Result<Outcome> {
    let s = &p.stages[i];
    let start = Instant::now();
    check_inputs(store, &work.inputs).with_context(|| format!("stage `{}`", s.name))?;
    let out_dir = store.begin(&work.key, s.kind.resumable())?;
    let inputs: Vec<InputTable> = work.inputs.iter().flat_map(|i| i.tables.iter().cloned()).collect();
    let mut log = Vec::new();
    let previous = store
        .view(&p.name, &s.name)
        .filter(|k| k != &work.key && store.has(k))
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
        threads,
        device,
        progress,
        meta,
        counters: Mutex::new(BTreeMap::new()),
        log: Mutex::new(log),
        unreadable: Mutex::new(Vec::new()),
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
            let job_file = out_dir.with_file_name(format!("{}.job.json", work.key));
            let r = run_in_worker(&job, &job_file, &ctx);
            // Whatever the outcome: a job file left behind is garbage for clean_tmp.
            let _ = std::fs::remove_file(&job_file);
            r
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
    let log_path = out_dir.join(LOG);
    std::fs::write(&log_path, &log_text).with_context(|| format!("cannot write {}", log_path.display()))?;
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
    store.commit(&out_dir, manifest)?;
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

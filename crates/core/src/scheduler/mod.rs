//! Running a plan: pick the stages to run, run ready ones concurrently within the CPU
//! and GPU slots, commit each result, plan again, point the views at the current
//! results. [`run`] is the loop; [`execute`] runs and seals one stage.
//!
//! Failure policy: a failed stage never takes finished stages with it (each is
//! committed as soon as it succeeds). Its descendants are skipped; without
//! `--keep-going` nothing new starts after a failure, with it every stage that does not
//! depend on the failure still runs.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::bail;

use crate::cache::fingerprint::Fingerprinter;
use crate::cache::store::Store;
use crate::config::{Backend, Pipeline};
use crate::plan::{StagePlan, State, plan_with};
use crate::progress::Reporter;
use crate::stage::{Device, Resources};

mod execute;
use execute::{Work, execute, input_tables};

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
    /// `--executor`: where stages without their own `executor:` run.
    pub executor: Option<String>,
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
    /// Slurm jobs this run submitted, the controller queries it sent to track them, and
    /// the shards among them that ran as array tasks.
    pub slurm: Option<(u64, u64, u64)>,
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

/// Plan and run a pipeline: the plan → run → re-plan loop.
///
/// 1. Plan every stage (fresh, stale with a key, or waiting for a stale input).
/// 2. Start the selected stale stages whose inputs are fresh, as CPU and GPU slots allow.
/// 3. When one finishes, it is committed (or failed); plan again: stages that waited on
///    it get keys, and those whose inputs came out identical are fresh (early cutoff).
/// 4. Repeat until nothing runs; then point the views at the current results.
pub fn run(p: &Pipeline, opts: &RunOptions, reporter: &Reporter) -> anyhow::Result<RunReport> {
    let store = Store::new(&p.cache_dir);
    let mut fp = Fingerprinter::new(&store.dir);
    let mut state = RunState::new(p, opts, plan_with(p, &store, &mut fp)?)?;
    check_runnable(p, &state.plans, &state.to_run(), !opts.dry_run)?;
    if opts.dry_run {
        return Ok(state.dry_run());
    }
    // A no-op run writes nothing, so it needs no lock (and works on a read-only cache).
    if state.to_run().is_empty() && state.views_current(&store) {
        return Ok(state.report());
    }
    let _lock = store.lock(opts.wait)?;
    // Another run may have committed while we waited for the lock.
    state.plans = plan_with(p, &store, &mut fp)?;
    check_runnable(p, &state.plans, &state.to_run(), true)?;
    store.clean_tmp()?;

    state.pending = state.to_run();
    state.total = state.pending.len();
    let mut slots = Slots::new(opts);
    let (tx, rx) = mpsc::channel::<(usize, anyhow::Result<Outcome>)>();
    std::thread::scope(|scope| {
        loop {
            if !state.stop {
                for start in state.start_ready(&mut slots, &store, reporter) {
                    let (tx, store) = (tx.clone(), &store);
                    scope.spawn(move || {
                        let result = catch_bug(|| {
                            execute(
                                p,
                                start.i,
                                &start.work,
                                store,
                                start.cpu,
                                start.device,
                                start.progress.clone(),
                                &start.place,
                            )
                        });
                        start.progress.finish();
                        let _ = tx.send((start.i, result));
                    });
                }
            }
            reporter.overall(state.finished, state.total, &state.running_names());
            if state.running.is_empty() {
                break;
            }
            let (i, result) = wait_for_a_stage(&rx, &mut state, reporter);
            slots.release(state.running.remove(&i).expect("was running"));
            state.finish(i, result, reporter);
            // Plan again after a commit (a failure changes no plan).
            if matches!(state.outcomes[i], Outcome::Ran { .. }) {
                match plan_with(p, &store, &mut fp) {
                    Ok(plans) => state.replanned(plans),
                    Err(e) => {
                        state
                            .warnings
                            .push(format!("cannot plan after `{}`: {e:#}", p.stages[i].name));
                        state.stop = true;
                    }
                }
            }
        }
    });
    state.skip_unstarted();
    reporter.finish();
    // Views follow the current results, also of stages that were already fresh.
    for &i in &state.selected {
        if let (State::Fresh, Some(key)) = (&state.plans[i].state, &state.plans[i].key)
            && let Some(note) = store.set_view(&p.name, &p.stages[i].name, key)?
        {
            state.warnings.push(note);
        }
    }
    Ok(state.report())
}

/// A stage the loop starts: what it runs on and with.
struct Start {
    i: usize,
    work: Work,
    cpu: usize,
    device: Device,
    progress: crate::progress::Progress,
    place: execute::Place,
}

/// CPU and GPU slots: a stage never runs with more than `--jobs` threads in use in all,
/// nor with a GPU another stage holds.
struct Slots {
    jobs: usize,
    gpus: usize,
    cpu_free: usize,
    gpu_free: Vec<usize>,
}

impl Slots {
    fn new(opts: &RunOptions) -> Slots {
        let jobs = if opts.jobs == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            opts.jobs
        };
        let gpus = opts.gpus.unwrap_or_else(detect_gpus);
        Slots {
            jobs,
            gpus,
            cpu_free: jobs,
            gpu_free: (0..gpus).rev().collect(),
        }
    }

    /// Threads and GPU for a stage asking for `want`, or None while it must wait. A
    /// stage that needs more than is free waits, unless nothing runs (then it gets what
    /// there is, so it cannot starve). Without any GPU, a GPU stage runs on the CPU.
    fn take(&mut self, want: Resources, nothing_runs: bool) -> Option<(usize, Option<usize>)> {
        let want_cpu = if want.cpu == 0 {
            self.jobs
        } else {
            want.cpu.min(self.jobs)
        };
        if want_cpu > self.cpu_free && !nothing_runs {
            return None;
        }
        let gpu = if want.gpu > 0 && self.gpus > 0 {
            Some(self.gpu_free.pop()?)
        } else {
            None
        };
        let cpu = want_cpu.min(self.cpu_free.max(1));
        self.cpu_free -= cpu.min(self.cpu_free);
        Some((cpu, gpu))
    }

    fn release(&mut self, (cpu, gpu): (usize, Option<usize>)) {
        self.cpu_free += cpu;
        self.gpu_free.extend(gpu);
    }
}

/// Where every stage of the run stands.
struct RunState<'p> {
    p: &'p Pipeline,
    keep_going: bool,
    /// `--executor`, and this run's id (in every Slurm job's name).
    executor: Option<String>,
    run_id: String,
    selected: BTreeSet<usize>,
    forced: BTreeSet<usize>,
    plans: Vec<StagePlan>,
    outcomes: Vec<Outcome>,
    /// Selected stages still to run.
    pending: BTreeSet<usize>,
    /// Forced stages not started yet (a cut-off must not skip them).
    forced_left: BTreeSet<usize>,
    /// Running stages and the slots they hold.
    running: BTreeMap<usize, (usize, Option<usize>)>,
    /// Stages committed by this run.
    ran: BTreeSet<usize>,
    /// Nothing new starts (a failure without --keep-going, or a planning error).
    stop: bool,
    total: usize,
    finished: usize,
    warnings: Vec<String>,
}

impl<'p> RunState<'p> {
    fn new(p: &'p Pipeline, opts: &RunOptions, plans: Vec<StagePlan>) -> anyhow::Result<RunState<'p>> {
        let selected = select(p, opts)?;
        let forced: BTreeSet<usize> = opts.force.iter().filter_map(|n| p.index(n)).collect();
        let outcomes = (0..p.stages.len())
            .map(|i| {
                if selected.contains(&i) {
                    Outcome::Fresh
                } else {
                    Outcome::NotSelected
                }
            })
            .collect();
        let run_id = format!(
            "{:x}{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            std::process::id()
        );
        Ok(RunState {
            p,
            keep_going: opts.keep_going,
            executor: opts.executor.clone(),
            run_id,
            forced_left: forced.clone(),
            selected,
            forced,
            plans,
            outcomes,
            pending: BTreeSet::new(),
            running: BTreeMap::new(),
            ran: BTreeSet::new(),
            stop: false,
            total: 0,
            finished: 0,
            warnings: Vec::new(),
        })
    }

    /// Selected stages that are stale or forced.
    fn to_run(&self) -> BTreeSet<usize> {
        self.selected
            .iter()
            .copied()
            .filter(|&i| !self.plans[i].is_fresh() || self.forced.contains(&i))
            .collect()
    }

    fn views_current(&self, store: &Store) -> bool {
        self.selected.iter().all(|&i| match &self.plans[i].key {
            Some(k) if self.plans[i].is_fresh() => {
                store.view(&self.p.name, &self.p.stages[i].name).as_deref() == Some(k)
            }
            _ => true,
        })
    }

    fn dry_run(mut self) -> RunReport {
        for i in self.to_run() {
            self.outcomes[i] = match &self.plans[i].state {
                State::Stale(why) => Outcome::WouldRun(why.clone()),
                State::Fresh => Outcome::WouldRun(vec!["forced".into()]),
                _ => Outcome::MayRun(self.plans[i].reason()),
            };
        }
        self.report()
    }

    fn running_names(&self) -> Vec<String> {
        self.running.keys().map(|&i| self.p.stages[i].name.clone()).collect()
    }

    /// Take the slots of every pending stage whose inputs are done and that fits.
    fn start_ready(&mut self, slots: &mut Slots, store: &Store, reporter: &Reporter) -> Vec<Start> {
        let p = self.p;
        let ready: Vec<usize> = p
            .dag
            .topo_order()
            .iter()
            .copied()
            .filter(|i| self.pending.contains(i))
            .filter(|&i| {
                p.dag
                    .parents(i)
                    .iter()
                    .all(|j| !self.pending.contains(j) && !self.running.contains_key(j))
            })
            .collect();
        let mut starts = Vec::new();
        for i in ready {
            let (s, plan) = (&p.stages[i], &self.plans[i]);
            let (Some(key), Some(parts)) = (&plan.key, &plan.parts) else {
                // Its inputs are done, yet it has no key: one of them left no result.
                self.pending.remove(&i);
                self.total -= 1;
                self.outcomes[i] = Outcome::Skipped(plan.reason());
                continue;
            };
            let backend = p.backend_of(i, self.executor.as_deref());
            // A Slurm job takes no slot here: the cluster has its own.
            let (cpu, gpu) = match &backend {
                Backend::Local => match slots.take(s.resources, self.running.is_empty()) {
                    Some(taken) => taken,
                    None => continue,
                },
                Backend::Slurm(_) => (0, None),
            };
            self.pending.remove(&i);
            self.forced_left.remove(&i);
            self.running.insert(i, (cpu, gpu));
            let why = if plan.is_fresh() {
                "forced".into()
            } else {
                plan.reason()
            };
            reporter.println(&format!("[{}] running ({why})", s.name));
            starts.push(Start {
                i,
                work: Work {
                    key: key.clone(),
                    parts: parts.clone(),
                    inputs: input_tables(p, i, &self.plans, store),
                },
                cpu: match &backend {
                    Backend::Slurm(_) if s.resources.cpu == 0 => slots.jobs,
                    Backend::Slurm(_) => s.resources.cpu,
                    Backend::Local => cpu,
                },
                // Slurm gives the job its GPUs as cuda:0…; the worker falls back to
                // the CPU where there is none.
                device: match &backend {
                    Backend::Slurm(_) if s.resources.gpu > 0 => Device::Cuda(0),
                    Backend::Slurm(_) => Device::Cpu,
                    Backend::Local => gpu.map_or(Device::Cpu, Device::Cuda),
                },
                progress: reporter.stage(&s.name),
                place: execute::Place {
                    backend,
                    run_id: self.run_id.clone(),
                    gpus: s.resources.gpu,
                },
            });
        }
        starts
    }

    /// Record how stage `i` ended.
    fn finish(&mut self, i: usize, result: anyhow::Result<Outcome>, reporter: &Reporter) {
        self.finished += 1;
        let name = &self.p.stages[i].name;
        match result {
            Ok(o) => {
                if let Outcome::Ran {
                    seconds,
                    device,
                    counters,
                    ..
                } = &o
                {
                    reporter.println(&format!("[{name}] done in {seconds:.1}s"));
                    // By convention a `*_unused` counter counts what the user supplied
                    // that matched nothing (an answer for an unknown image): say so.
                    let table = self.p.stages[i]
                        .prepared
                        .outputs
                        .first()
                        .map_or(String::new(), |t| format!(".{t}"));
                    for (counter, n) in counters.iter().filter(|(c, n)| c.ends_with("_unused") && **n > 0) {
                        self.warnings.push(format!(
                            "stage `{name}`: {counter}={n}: given but matching nothing; its log names them: \
                             $(dirname $(pipe path {} {name}{table}))/log.txt",
                            self.p.file.display()
                        ));
                    }
                    // Only a stage that ran can have run on the CPU instead.
                    if self.p.stages[i].resources.gpu > 0 && device == "cpu" {
                        self.warnings.push(format!(
                            "stage `{name}` asked for a GPU; none is available, it ran on the CPU"
                        ));
                    }
                }
                self.outcomes[i] = o;
                self.ran.insert(i);
            }
            Err(e) => {
                let msg = format!("{e:#}");
                reporter.println(&format!("[{name}] FAILED: {msg}"));
                self.outcomes[i] = Outcome::Failed(msg);
                for d in self.p.dag.descendants(i) {
                    if self.pending.remove(&d) {
                        self.outcomes[d] = Outcome::Skipped(format!("input `{name}` failed"));
                    }
                }
                if !self.keep_going {
                    self.stop = true;
                }
            }
        }
    }

    /// A new plan after a commit: stages not started yet whose inputs came out identical
    /// are fresh (cut off); fresh ones a forced stage changed the input of are not any
    /// more.
    fn replanned(&mut self, plans: Vec<StagePlan>) {
        self.plans = plans;
        for &j in &self.selected {
            if !matches!(self.outcomes[j], Outcome::Fresh) || self.running.contains_key(&j) || self.ran.contains(&j) {
                continue;
            }
            if !self.plans[j].is_fresh() || self.forced_left.contains(&j) {
                if self.pending.insert(j) {
                    self.total += 1;
                }
            } else if self.pending.remove(&j) {
                self.finished += 1;
                self.outcomes[j] = Outcome::Unchanged(unchanged_inputs(self.p, j, &self.ran));
            } else if self.p.dag.parents(j).iter().any(|k| self.ran.contains(k)) {
                self.outcomes[j] = Outcome::Unchanged(unchanged_inputs(self.p, j, &self.ran));
            }
        }
    }

    fn skip_unstarted(&mut self) {
        for i in std::mem::take(&mut self.pending) {
            self.outcomes[i] = Outcome::Skipped(
                "not started after an earlier failure (use --keep-going to run independent stages)".into(),
            );
        }
    }

    fn report(self) -> RunReport {
        RunReport {
            outcomes: self
                .p
                .stages
                .iter()
                .map(|s| s.name.clone())
                .zip(self.outcomes)
                .collect(),
            warnings: self.warnings,
            slurm: crate::slurm::submitted_and_queries(),
        }
    }
}

/// Run `f`, turning a panic (a bug in pipe or a kind) into an error of the stage: the
/// other stages and the run go on, and nothing is committed for it.
fn catch_bug(f: impl FnOnce() -> anyhow::Result<Outcome>) -> anyhow::Result<Outcome> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(anyhow::anyhow!(
            "internal error (a bug in pipe, please report it): {msg}"
        ))
    })
}

/// The next stage to finish, looking out for Ctrl-C / SIGTERM now and then.
fn wait_for_a_stage(
    rx: &mpsc::Receiver<(usize, anyhow::Result<Outcome>)>,
    state: &mut RunState,
    reporter: &Reporter,
) -> (usize, anyhow::Result<Outcome>) {
    let (i, result) = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(message) => break message,
            Err(_) => {
                if let Some(why) = crate::interrupt::received() {
                    stop_on_signal(
                        state.p,
                        reporter,
                        why,
                        &state.ran,
                        state.running.keys().copied(),
                        &state.pending,
                    );
                }
            }
        }
    };
    if let Some(why) = crate::interrupt::received() {
        // A stage that finished as the signal came was committed; one that failed was
        // most likely killed by it (a worker gets the terminal's Ctrl-C too): count it
        // as interrupted.
        if result.is_ok() {
            state.ran.insert(i);
        }
        let stopped = state.running.keys().copied().filter(|&j| j != i || result.is_err());
        stop_on_signal(state.p, reporter, why, &state.ran, stopped, &state.pending);
    }
    (i, result)
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
    let names =
        |set: &mut dyn Iterator<Item = &usize>| set.map(|&i| p.stages[i].name.as_str()).collect::<Vec<_>>().join(", ");
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
    let resumable: Vec<usize> = stopped
        .iter()
        .copied()
        .filter(|&i| p.stages[i].kind.resumable())
        .collect();
    let again: Vec<usize> = stopped
        .iter()
        .copied()
        .filter(|&i| !p.stages[i].kind.resumable())
        .collect();
    let mut next = vec!["kept stages are fresh".to_string()];
    if !resumable.is_empty() {
        next.push(format!(
            "{} resumes from its last checkpoint",
            names(&mut resumable.iter())
        ));
    }
    if !again.is_empty() {
        next.push(format!("{} runs again", names(&mut again.iter())));
    }
    lines.push(format!("`pipe run {}` resumes: {}", p.file.display(), next.join("; ")));
    for l in lines {
        reporter.println(&l);
    }
    // Exiting ends the stage threads; worker processes die with us (PR_SET_PDEATHSIG);
    // Slurm jobs do not, so they are cancelled.
    match crate::slurm::cancel_all() {
        Ok(0) => {}
        Ok(n) => reporter.println(&format!("  cancelled {n} Slurm job(s) of this run")),
        Err(e) => reporter.println(&format!("  could not cancel this run's Slurm jobs: {e:#}")),
    }
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

//! Slurm, as `pipe` talks to it: the site's own scheduler through its commands
//! (`sbatch`, `sacct`, `squeue`, `scancel`), never a scheduler of our own.
//!
//! - [`Submit::args`] maps a stage's resources and the pipeline's `slurm:` options to
//!   `sbatch --parsable` arguments; every job of a run carries the run id in its name
//!   and comment, so `squeue --name` finds them and `scancel` can cancel them all.
//! - [`Tracker::poll`] asks for the states of all the run's jobs in one query per round:
//!   `sacct` where accounting is on, `squeue -t all` where it is not (sacct then fails or
//!   knows nothing), so a run of many jobs does not hammer the controller.
//! - [`State::message`] turns a terminal state into what the user reads: OUT_OF_MEMORY,
//!   TIMEOUT, NODE_FAIL, CANCELLED, FAILED with the exit code and the job log's tail.
//!
//! This module only speaks Slurm; which stage runs where is the scheduler's business.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `slurm:` of a pipeline or a stage: where and how its jobs are submitted. None of it
/// enters a cache key (where a result is computed does not change what it is).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// Wall-clock limit as sbatch takes it (`2:00:00`, `1-0`).
    pub time: Option<String>,
    /// Memory per job as sbatch takes it (`16G`); default: the cluster's.
    pub mem: Option<String>,
    /// Ask for GPUs with `--gpus` instead of `--gres=gpu:N`.
    #[serde(default)]
    pub gpus_flag: bool,
    /// Further sbatch arguments, as given.
    #[serde(default)]
    pub extra: Vec<String>,
    /// Submit again after OUT_OF_MEMORY, TIMEOUT or NODE_FAIL, up to this many times.
    pub retries: Option<u32>,
    /// Each retry multiplies `mem` and `time` by this (default 2).
    pub retry_scale: Option<f64>,
}

impl Options {
    /// `over`'s fields where it sets them, else these (a stage's over its pipeline's).
    pub fn merged(&self, over: &Options) -> Options {
        let pick = |a: &Option<String>, b: &Option<String>| b.clone().or_else(|| a.clone());
        Options {
            partition: pick(&self.partition, &over.partition),
            account: pick(&self.account, &over.account),
            qos: pick(&self.qos, &over.qos),
            time: pick(&self.time, &over.time),
            mem: pick(&self.mem, &over.mem),
            gpus_flag: self.gpus_flag || over.gpus_flag,
            extra: self.extra.iter().chain(&over.extra).cloned().collect(),
            retries: over.retries.or(self.retries),
            retry_scale: over.retry_scale.or(self.retry_scale),
        }
    }

    /// The options of the next attempt: `mem` and `time` times `retry_scale`. A value
    /// that cannot be read is kept as it is.
    pub fn scaled_for_retry(&self) -> Options {
        let f = self.retry_scale.filter(|f| f.is_finite() && *f >= 1.0).unwrap_or(2.0);
        Options {
            mem: self
                .mem
                .as_deref()
                .map(|m| scale_mem(m, f).unwrap_or_else(|| m.to_string())),
            time: self
                .time
                .as_deref()
                .map(|t| scale_time(t, f).unwrap_or_else(|| t.to_string())),
            ..self.clone()
        }
    }
}

/// sbatch's `--mem` (`500`, `500M`, `16G`: megabytes without a unit) times `f`, in
/// megabytes rounded up.
pub fn scale_mem(mem: &str, f: f64) -> Option<String> {
    let mem = mem.trim();
    let (num, unit) = mem.split_at(mem.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(mem.len()));
    let n: f64 = num.parse().ok()?;
    let mb = n * match unit.to_ascii_uppercase().as_str() {
        "" | "M" | "MB" => 1.0,
        "K" | "KB" => 1.0 / 1024.0,
        "G" | "GB" => 1024.0,
        "T" | "TB" => 1024.0 * 1024.0,
        _ => return None,
    };
    Some(format!("{}M", (mb * f).ceil() as u64))
}

/// sbatch's `--time` (`minutes`, `minutes:seconds`, `hours:minutes:seconds`,
/// `days-hours[:minutes[:seconds]]`) times `f`, as `days-hours:minutes:seconds`.
pub fn scale_time(time: &str, f: f64) -> Option<String> {
    let time = time.trim();
    let (days, rest) = match time.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().ok()?, r),
        None => (0, time),
    };
    let parts: Vec<u64> = rest.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let seconds = days * 86_400
        + match (time.contains('-'), parts.as_slice()) {
            (true, [h]) => h * 3600,
            (true, [h, m]) => h * 3600 + m * 60,
            (_, [h, m, s]) => h * 3600 + m * 60 + s,
            (false, [m]) => m * 60,
            (false, [m, s]) => m * 60 + s,
            _ => return None,
        };
    let t = (seconds as f64 * f).ceil() as u64;
    Some(format!(
        "{}-{:02}:{:02}:{:02}",
        t / 86_400,
        t % 86_400 / 3600,
        t % 3600 / 60,
        t % 60
    ))
}

/// One job to submit.
#[derive(Debug, Clone)]
pub struct Submit {
    /// `pipe-<run>-<stage>`: squeue shows it, `--name` finds the run's jobs.
    pub name: String,
    /// `pipe-run=<run>`.
    pub comment: String,
    pub script: PathBuf,
    /// The job's stdout and stderr.
    pub output: PathBuf,
    pub error: PathBuf,
    pub workdir: PathBuf,
    pub cpus: usize,
    pub gpus: usize,
    pub options: Options,
}

impl Submit {
    /// The sbatch command line, without the program.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--parsable".to_string(),
            format!("--job-name={}", self.name),
            format!("--comment={}", self.comment),
            format!("--output={}", self.output.display()),
            format!("--error={}", self.error.display()),
            format!("--chdir={}", self.workdir.display()),
            format!("--cpus-per-task={}", self.cpus.max(1)),
        ];
        if self.gpus > 0 {
            a.push(if self.options.gpus_flag {
                format!("--gpus={}", self.gpus)
            } else {
                format!("--gres=gpu:{}", self.gpus)
            });
        }
        for (flag, v) in [
            ("--partition", &self.options.partition),
            ("--account", &self.options.account),
            ("--qos", &self.options.qos),
            ("--time", &self.options.time),
            ("--mem", &self.options.mem),
        ] {
            if let Some(v) = v {
                a.push(format!("{flag}={v}"));
            }
        }
        a.extend(self.options.extra.iter().cloned());
        a.push(self.script.display().to_string());
        a
    }

    /// Submit; returns the job id.
    pub fn submit(&self) -> anyhow::Result<String> {
        let out = Command::new("sbatch")
            .args(self.args())
            .output()
            .context("cannot run sbatch (is Slurm installed and SLURM_CONF set?)")?;
        if !out.status.success() {
            bail!(
                "sbatch refused job {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // `--parsable` prints "id" or "id;cluster".
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
            bail!("sbatch printed no job id for {}: {text:?}", self.name);
        }
        Ok(id)
    }
}

/// Where a job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Pending(String),
    Running,
    /// Finished with exit code 0.
    Completed,
    Failed {
        exit_code: i32,
        signal: i32,
    },
    Cancelled,
    Timeout,
    OutOfMemory,
    NodeFail,
    /// Another terminal state (BOOT_FAIL, DEADLINE, PREEMPTED, …), as Slurm names it.
    Ended(String),
    /// Gone from squeue and unknown to accounting: finished, how is for the job's own
    /// output to say.
    Gone,
}

impl State {
    pub fn is_terminal(&self) -> bool {
        !matches!(self, State::Pending(_) | State::Running)
    }

    /// From a Slurm state name (`CANCELLED by 0` → CANCELLED) and an `exit:signal` code.
    fn parse(name: &str, exit: &str, reason: &str) -> State {
        let name = name.split_whitespace().next().unwrap_or("").trim_end_matches('+');
        let (code, signal) = exit
            .split_once(':')
            .map(|(c, s)| (c.parse().unwrap_or(0), s.parse().unwrap_or(0)))
            .unwrap_or((0, 0));
        match name {
            "PENDING" | "REQUEUED" | "CONFIGURING" | "RESV_DEL_HOLD" | "REQUEUE_HOLD" | "REQUEUE_FED" | "SUSPENDED" => {
                State::Pending(reason.to_string())
            }
            "RUNNING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING" | "RESIZING" => State::Running,
            "COMPLETED" => State::Completed,
            "FAILED" => State::Failed {
                exit_code: code,
                signal,
            },
            "CANCELLED" => State::Cancelled,
            "TIMEOUT" => State::Timeout,
            "OUT_OF_MEMORY" => State::OutOfMemory,
            "NODE_FAIL" => State::NodeFail,
            other => State::Ended(other.to_string()),
        }
    }

    /// What failed, for the user: the state with its cause and the tail of the job's
    /// log. `None` for a job that completed.
    pub fn message(&self, job: &str, stage: &str, log: &Path) -> Option<String> {
        let what = match self {
            State::Completed | State::Pending(_) | State::Running => return None,
            State::Failed { signal, .. } if *signal != 0 => {
                format!("FAILED (killed by signal {signal})")
            }
            State::Failed { exit_code, .. } => format!("FAILED (exit code {exit_code})"),
            State::Cancelled => "was cancelled (CANCELLED: scancel, or an administrator)".to_string(),
            State::Timeout => "ran out of time (TIMEOUT: give it more with slurm.time)".to_string(),
            State::OutOfMemory => "ran out of memory (OUT_OF_MEMORY: give it more with slurm.mem)".to_string(),
            State::NodeFail => "lost its node (NODE_FAIL)".to_string(),
            State::Ended(s) => format!("ended {s}"),
            State::Gone => "ended without saying how (no accounting, and its output has no result)".to_string(),
        };
        let tail = tail(log, 15);
        Some(if tail.is_empty() {
            format!("stage `{stage}`: Slurm job {job} {what}")
        } else {
            format!(
                "stage `{stage}`: Slurm job {job} {what}; the end of its log ({}):\n{tail}",
                log.display()
            )
        })
    }
}

/// The last `n` lines of a file ("" when it cannot be read).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `sacct --parsable2 --noheader -X --format=JobID,State,ExitCode,Reason` output.
pub fn parse_sacct(text: &str) -> BTreeMap<String, State> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() < 3 || f[0].contains('.') {
            continue; // steps (`123.batch`) when -X was not honoured
        }
        let state = State::parse(f[1], f[2], f.get(3).copied().unwrap_or(""));
        for id in array_tasks(f[0]) {
            out.insert(id, state.clone());
        }
    }
    out
}

/// The task ids a line of sacct or squeue stands for: the tasks of an array not
/// started yet share one line (`123_[0-3,7%2]`: tasks 0 to 3 and 7, 2 at a time).
pub fn array_tasks(id: &str) -> Vec<String> {
    let Some((base, rest)) = id.split_once("_[") else {
        return vec![id.to_string()];
    };
    let list = rest.trim_end_matches(']');
    let list = list.split('%').next().unwrap_or("");
    let mut out = Vec::new();
    for part in list.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (Ok(a), Ok(b)) = (a.trim().parse::<u64>(), b.trim().parse::<u64>()) else {
            continue;
        };
        // A range past any array pipe submits is not expanded into a huge list.
        out.extend((a..=b.min(a + 100_000)).map(|i| format!("{base}_{i}")));
    }
    out
}

/// The job ids to ask about: an array task is asked about by its array's id.
fn base_ids(jobs: &[String]) -> String {
    let mut ids: Vec<&str> = jobs.iter().map(|j| j.split('_').next().unwrap_or(j)).collect();
    ids.sort();
    ids.dedup();
    ids.join(",")
}

/// `squeue --noheader -t all -o '%i|%T|%r'` output. squeue has no exit code: a FAILED
/// job reads as exit code 1 here, and the job's own output says more.
pub fn parse_squeue(text: &str) -> BTreeMap<String, State> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.trim().split('|').collect();
        if f.len() < 2 || f[0].is_empty() {
            continue;
        }
        let exit = if f[1] == "FAILED" { "1:0" } else { "0:0" };
        let state = State::parse(f[1], exit, f.get(2).copied().unwrap_or(""));
        for id in array_tasks(f[0]) {
            out.insert(id, state.clone());
        }
    }
    out
}

/// Asks Slurm where a run's jobs stand, one query per round for all of them, and
/// remembers whether accounting answers.
#[derive(Debug, Default)]
pub struct Tracker {
    /// `Some(false)` once sacct has failed or known nothing of a job squeue knew:
    /// accounting is off, squeue is asked from then on.
    accounting: Option<bool>,
    /// Rounds in which sacct answered but knew none of the jobs.
    misses: u32,
    /// Queries sent to the controller so far (the benchmark counts them).
    pub queries: u64,
}

/// Rounds of sacct knowing none of the jobs before it is no longer asked.
const MISSES_BEFORE_SQUEUE_ONLY: u32 = 10;

impl Tracker {
    /// Start with squeue, as on a cluster known to have no accounting.
    pub fn without_accounting() -> Tracker {
        Tracker {
            accounting: Some(false),
            ..Default::default()
        }
    }

    pub fn uses_accounting(&self) -> Option<bool> {
        self.accounting
    }

    /// The states of `jobs`; a job neither command knows is [`State::Gone`].
    pub fn poll(&mut self, jobs: &[String]) -> anyhow::Result<BTreeMap<String, State>> {
        if jobs.is_empty() {
            return Ok(BTreeMap::new());
        }
        let list = base_ids(jobs);
        if self.accounting != Some(false) {
            self.queries += 1;
            let out = Command::new("sacct")
                .args([
                    "--parsable2",
                    "--noheader",
                    "-X",
                    "--format=JobID,State,ExitCode,Reason",
                    "-j",
                    &list,
                ])
                .output();
            match out {
                Ok(out) if out.status.success() => {
                    let states = parse_sacct(&String::from_utf8_lossy(&out.stdout));
                    if jobs.iter().all(|j| states.contains_key(j)) {
                        self.accounting = Some(true);
                        return Ok(states);
                    }
                    // A job just submitted is not in the database yet: squeue fills in.
                    // sacct knowing none of them, round after round, means accounting
                    // keeps no jobs here: squeue alone from then on.
                    if states.is_empty() {
                        self.misses += 1;
                        if self.accounting.is_none() && self.misses >= MISSES_BEFORE_SQUEUE_ONLY {
                            self.accounting = Some(false);
                        }
                    }
                    let mut merged = self.squeue(&list)?;
                    merged.extend(states);
                    return Ok(complete(jobs, merged));
                }
                // "Slurm accounting storage is disabled", or no sacct at all.
                _ => self.accounting = Some(false),
            }
        }
        let states = self.squeue(&list)?;
        Ok(complete(jobs, states))
    }

    fn squeue(&mut self, list: &str) -> anyhow::Result<BTreeMap<String, State>> {
        self.queries += 1;
        let out = Command::new("squeue")
            .args(["--noheader", "-t", "all", "-o", "%i|%T|%r", "-j", list])
            .output()
            .context("cannot run squeue")?;
        // squeue fails when every id it was given has been purged: none is known.
        Ok(parse_squeue(&String::from_utf8_lossy(&out.stdout)))
    }
}

fn complete(jobs: &[String], mut states: BTreeMap<String, State>) -> BTreeMap<String, State> {
    for j in jobs {
        states.entry(j.clone()).or_insert(State::Gone);
    }
    states
}

/// Cancel jobs (Ctrl-C, a failed run); errors are reported, not fatal.
pub fn cancel(jobs: &[String]) -> anyhow::Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let out = Command::new("scancel")
        .args(jobs)
        .output()
        .context("cannot run scancel")?;
    if !out.status.success() {
        bail!("scancel: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Whether `sbatch` and `squeue` answer: the cluster is there.
pub fn available() -> bool {
    Command::new("squeue")
        .args(["--noheader", "-o", "%i", "-j", "0"])
        .output()
        .is_ok_and(|o| o.status.success() || !String::from_utf8_lossy(&o.stderr).contains("Unable to contact"))
        && Command::new("sinfo")
            .arg("--noheader")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// The program a job runs: `pipe job JOB.json` for an in-process kind, `pipe-torch run
/// JOB.json` for a torch kind — the very commands a local run uses.
pub struct Program {
    pub path: PathBuf,
    pub command: String,
}

/// Where and with what a stage's job runs.
pub struct Placement {
    pub run_id: String,
    pub workdir: PathBuf,
    pub cpus: usize,
    pub gpus: usize,
    pub options: Options,
}

/// The run's jobs, polled together: the first stage thread to find the last answer
/// older than the period asks for all of them in one query.
#[derive(Default)]
struct Shared {
    jobs: std::collections::BTreeSet<String>,
    states: BTreeMap<String, State>,
    last: Option<std::time::Instant>,
    tracker: Tracker,
    submitted: u64,
    /// Tasks of the array jobs among them.
    array_tasks: u64,
}

fn shared() -> &'static std::sync::Mutex<Shared> {
    static SHARED: std::sync::OnceLock<std::sync::Mutex<Shared>> = std::sync::OnceLock::new();
    SHARED.get_or_init(Default::default)
}

/// How often the controller is asked (`PIPE_SLURM_POLL_MS`, default 2 s).
fn period() -> std::time::Duration {
    let ms = std::env::var("PIPE_SLURM_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000u64);
    std::time::Duration::from_millis(ms.max(50))
}

/// The state of `job`, from the last round's answer or a new round for all jobs.
fn state_of(job: &str) -> anyhow::Result<State> {
    let mut g = shared().lock().unwrap_or_else(|e| e.into_inner());
    if g.last.is_none_or(|t| t.elapsed() >= period()) {
        let ids: Vec<String> = g.jobs.iter().cloned().collect();
        let states = g.tracker.poll(&ids)?;
        g.states.extend(states);
        g.last = Some(std::time::Instant::now());
    }
    Ok(g.states.get(job).cloned().unwrap_or(State::Pending(String::new())))
}

/// Jobs this process submitted, the controller queries it sent to track them and the
/// tasks of its array jobs; `None` when it submitted none.
pub fn submitted_and_queries() -> Option<(u64, u64, u64)> {
    let g = shared().lock().unwrap_or_else(|e| e.into_inner());
    (g.submitted > 0).then_some((g.submitted, g.tracker.queries, g.array_tasks))
}

/// The Slurm job building the work directory `tmp_dir`, if one does (`pipe status`).
pub fn job_building(tmp_dir: &Path) -> Option<String> {
    let name = format!("{}.slurm.id", tmp_dir.file_name()?.to_string_lossy());
    let id = std::fs::read_to_string(tmp_dir.with_file_name(name)).ok()?;
    Some(id.trim().to_string()).filter(|i| !i.is_empty())
}

/// Cancel every job this process submitted that has not ended (Ctrl-C); how many.
pub fn cancel_all() -> anyhow::Result<usize> {
    let jobs: Vec<String> = shared()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .jobs
        .iter()
        .cloned()
        .collect();
    cancel(&jobs)?;
    Ok(jobs.len())
}

fn forget(job: &str) {
    let mut g = shared().lock().unwrap_or_else(|e| e.into_inner());
    g.jobs.remove(job);
    g.states.remove(job);
}

/// `'…'` for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// One job, or one task of an array, as [`run_job`] follows it.
struct Task {
    /// The shard it runs (`None`: a plain job).
    index: Option<usize>,
    output: PathBuf,
    error: PathBuf,
    /// Slurm's id for it (`123`, or `123_4` for an array task).
    id: String,
    /// Bytes of its output read so far.
    read: usize,
    /// Its progress total, counters, log, device and unreadable files from `Done`.
    total: u64,
    done: Option<Done>,
    state: Option<State>,
    /// When it was first seen running, and seen ended (as the polls saw it).
    started: Option<std::time::Instant>,
    ended: Option<std::time::Instant>,
}

type Done = (BTreeMap<String, u64>, Vec<String>, String, Vec<(PathBuf, String)>);

impl Task {
    /// `123_4 (shard 4 of 8)`, or the job id.
    fn called(&self, shards: Option<usize>) -> String {
        match self.index {
            Some(i) => format!("{} (shard {i} of {})", self.id, shards.unwrap_or(0)),
            None => self.id.clone(),
        }
    }
}

/// Run `job` as a Slurm job and wait for it: its progress events are read from the
/// job's output as it runs, its counters and log from the `Done` event at its end. A
/// job that does not complete is an error with its state, cause and log tail; Ctrl-C
/// cancels it. A job of shards (`job.shards`) is one array job, a task per shard, each
/// with its own output; progress adds up, and a retry resubmits only the tasks that
/// ran out of memory or time. Returns the device the stage ran on.
pub fn run_job(
    job: &crate::worker::Job,
    job_file: &Path,
    program: &Program,
    place: &Placement,
    ctx: &crate::stage::Context,
) -> anyhow::Result<String> {
    use crate::worker::Event;
    std::fs::write(job_file, serde_json::to_vec_pretty(job)?)?;
    let base = job_file.with_extension("");
    let script = base.with_extension("slurm.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# pipe: stage {} of run {}\nexec {} {} {}\n",
            job.stage,
            place.run_id,
            quote(&program.path.display().to_string()),
            program.command,
            quote(&job_file.display().to_string())
        ),
    )?;
    let file = |index: Option<usize>, ext: &str| match index {
        Some(i) => base.with_extension(format!("slurm.{i}.{ext}")),
        None => base.with_extension(format!("slurm.{ext}")),
    };
    let mut tasks: Vec<Task> = match job.shards {
        None => vec![None],
        Some(n) => (0..n).map(Some).collect(),
    }
    .into_iter()
    .map(|index| Task {
        index,
        output: file(index, "out"),
        error: file(index, "err"),
        id: String::new(),
        read: 0,
        total: 0,
        done: None,
        state: None,
        started: None,
        ended: None,
    })
    .collect();
    let array = job.shards.is_some();
    // Whole lines of a task's output not read yet (appended to while it runs; a new
    // attempt starts it again).
    let events = |t: &mut Task, totals: &mut u64| {
        let Ok(bytes) = std::fs::read(&t.output) else { return };
        let start = t.read.min(bytes.len());
        let Some(end) = bytes[start..].iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let new = &bytes[start..start + end + 1];
        t.read = start + end + 1;
        for line in String::from_utf8_lossy(new).lines() {
            match serde_json::from_str::<Event>(line) {
                Ok(Event::Total(n)) => {
                    *totals = *totals - t.total + n;
                    t.total = n;
                    ctx.progress.set_total(*totals);
                }
                Ok(Event::Inc(n)) => ctx.progress.inc(n),
                Ok(Event::Message(m)) if !array => ctx.progress.set_message(m),
                Ok(Event::Message(_)) => {}
                Ok(Event::Done {
                    counters,
                    log,
                    device,
                    unreadable,
                }) => t.done = Some((counters, log, device, unreadable)),
                Err(_) => ctx.log(line.to_string()),
            }
        }
    };
    let retries = place.options.retries.unwrap_or(0);
    let mut options = place.options.clone();
    let mut attempt = 0;
    let mut totals = 0u64;
    // Positions in `tasks` of the ones to submit in this attempt.
    let mut todo: Vec<usize> = (0..tasks.len()).collect();
    let (what, submitted_at) = loop {
        let indices: Vec<String> = todo
            .iter()
            .filter_map(|&k| tasks[k].index)
            .map(|i| i.to_string())
            .collect();
        let mut extra = options.extra.clone();
        if array {
            extra.insert(0, format!("--array={}", indices.join(",")));
        }
        let id = Submit {
            name: format!("pipe-{}-{}", place.run_id, job.stage),
            comment: format!("pipe-run={}", place.run_id),
            script: script.clone(),
            output: if array {
                base.with_extension("slurm.%a.out")
            } else {
                file(None, "out")
            },
            error: if array {
                base.with_extension("slurm.%a.err")
            } else {
                file(None, "err")
            },
            workdir: place.workdir.clone(),
            cpus: place.cpus,
            gpus: place.gpus,
            options: Options {
                extra,
                ..options.clone()
            },
        }
        .submit()
        .with_context(|| format!("stage `{}`", job.stage))?;
        for &k in &todo {
            let t = &mut tasks[k];
            t.id = match t.index {
                Some(i) => format!("{id}_{i}"),
                None => id.clone(),
            };
            t.read = 0;
            t.done = None;
            t.state = None;
            t.started = None;
            t.ended = None;
            totals -= t.total;
            t.total = 0;
        }
        {
            let mut g = shared().lock().unwrap_or_else(|e| e.into_inner());
            g.jobs.extend(todo.iter().map(|&k| tasks[k].id.clone()));
            g.submitted += 1;
            if array {
                g.array_tasks += todo.len() as u64;
            }
        }
        // For `pipe status`: which job builds this work directory.
        let _ = std::fs::write(base.with_extension("slurm.id"), &id);
        let submitted_at = std::time::Instant::now();
        let what = if array {
            format!("Slurm array job {id} ({} shards)", todo.len())
        } else {
            format!("Slurm job {id}")
        };
        ctx.log(what.clone());
        ctx.progress.set_message(format!("{what} submitted"));

        let mut last_shown = String::new();
        loop {
            if let Some(why) = crate::interrupt::received() {
                let ids: Vec<String> = todo.iter().map(|&k| tasks[k].id.clone()).collect();
                let _ = cancel(&ids);
                ids.iter().for_each(|i| forget(i));
                bail!("stage `{}`: {why}; its {what} was cancelled", job.stage);
            }
            let (mut queued, mut running, mut ended) = (0, 0, 0);
            let mut why_queued = String::new();
            for &k in &todo {
                let t = &mut tasks[k];
                if t.state.is_some() {
                    ended += 1;
                    continue;
                }
                events(t, &mut totals);
                let state = match state_of(&t.id) {
                    Ok(s) => s,
                    Err(e) => {
                        todo.iter().for_each(|&k| forget(&tasks[k].id));
                        return Err(e.context(format!("stage `{}`: cannot ask Slurm about {what}", job.stage)));
                    }
                };
                match &state {
                    State::Pending(r) => {
                        queued += 1;
                        if !r.is_empty() && r != "None" {
                            why_queued = format!(" ({r})");
                        }
                    }
                    State::Running => {
                        running += 1;
                        t.started.get_or_insert_with(std::time::Instant::now);
                    }
                    _ => {
                        ended += 1;
                        t.ended = Some(std::time::Instant::now());
                        forget(&t.id);
                        events(t, &mut totals);
                        t.state = Some(state);
                    }
                }
            }
            if ended == todo.len() {
                break;
            }
            let shown = if array {
                format!("{what}: {queued} queued{why_queued}, {running} running, {ended} ended")
            } else if queued > 0 {
                format!("{what} queued{why_queued}")
            } else {
                format!("{what} running")
            };
            if shown != last_shown && (array || tasks[0].done.is_none()) {
                ctx.progress.set_message(shown.clone());
                last_shown = shown;
            }
            std::thread::sleep(period() / 4);
        }

        // Out of memory, out of time, a lost node: worth another try, with more.
        let retry: Vec<usize> = todo
            .iter()
            .copied()
            .filter(|&k| {
                matches!(
                    tasks[k].state,
                    Some(State::OutOfMemory | State::Timeout | State::NodeFail)
                )
            })
            .collect();
        let failed = todo.iter().filter(|&&k| !ended_well(&tasks[k])).count();
        if attempt < retries && !retry.is_empty() && retry.len() == failed {
            attempt += 1;
            options = options.scaled_for_retry();
            let line = format!(
                "{what}: {} ended {:?}; attempt {} of {} with mem {} and time {}",
                retry
                    .iter()
                    .map(|&k| tasks[k].called(job.shards))
                    .collect::<Vec<_>>()
                    .join(", "),
                tasks[retry[0]].state.as_ref().expect("ended"),
                attempt + 1,
                retries + 1,
                options.mem.as_deref().unwrap_or("(the cluster's default)"),
                options.time.as_deref().unwrap_or("(the cluster's default)")
            );
            ctx.log(line.clone());
            ctx.progress.set_message(line);
            todo = retry;
            continue;
        }
        break (what, submitted_at);
    };
    let mut device = None;
    let mut failures = Vec::new();
    for t in &mut tasks {
        let prefix = |l: &str| match t.index {
            Some(i) => format!("shard {i}: {l}"),
            None => l.to_string(),
        };
        for l in std::fs::read_to_string(&t.error).unwrap_or_default().lines() {
            ctx.log(prefix(l));
        }
        let state = t.state.clone().expect("every task ended");
        match (&state, t.done.take()) {
            (State::Completed | State::Gone, Some((counters, log, d, unreadable))) => {
                for (k, v) in counters {
                    ctx.count(&k, v);
                }
                for l in log {
                    ctx.log(prefix(&l));
                }
                for (f, why) in unreadable {
                    ctx.unreadable(&f, &why);
                }
                device.get_or_insert(d);
            }
            // A task cancelled before it started leaves no record in sacct or squeue.
            (State::Gone, None) if t.started.is_none() => failures.push(format!(
                "stage `{}`: Slurm job {} left the queue before it was seen running, and Slurm keeps no record of it (cancelled while pending?)",
                job.stage,
                t.called(job.shards)
            )),
            (State::Completed, None) => failures.push(format!(
                "stage `{}`: Slurm job {} completed without a result in {}",
                job.stage,
                t.id,
                t.output.display()
            )),
            (state, _) => failures.push(
                state
                    .message(&t.called(job.shards), &job.stage, &t.error)
                    .unwrap_or_else(|| format!("stage `{}`: Slurm job {} ended {state:?}", job.stage, t.id)),
            ),
        }
    }
    // Queued: from submission to the first task seen running; ran: from then to the
    // last task seen ended (of the last attempt; as precise as the polls).
    let last = tasks.iter().filter_map(|t| t.ended).max();
    let first = tasks.iter().filter_map(|t| t.started).min().or(last);
    let timing = match (first, last) {
        (Some(a), Some(b)) => format!(
            ": queued {:.1}s, ran {:.1}s",
            a.saturating_duration_since(submitted_at).as_secs_f64(),
            b.saturating_duration_since(a).as_secs_f64()
        ),
        _ => String::new(),
    };
    ctx.log(format!("{what}{timing}"));
    match failures.first() {
        None => Ok(format!(
            "{} ({what}{timing})",
            device.unwrap_or_else(|| job.device.to_string())
        )),
        Some(first) if failures.len() == 1 => bail!("{first}"),
        Some(first) => bail!(
            "{first}\n({} more of its shards failed too; see the stage log)",
            failures.len() - 1
        ),
    }
}

/// Whether a task completed with its result.
fn ended_well(t: &Task) -> bool {
    matches!(t.state, Some(State::Completed | State::Gone)) && t.done.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbatch_arguments_from_resources_and_options() {
        let s = Submit {
            name: "pipe-r1-train".into(),
            comment: "pipe-run=r1".into(),
            script: "/c/tmp/k.slurm.sh".into(),
            output: "/c/tmp/k.out".into(),
            error: "/c/tmp/k.err".into(),
            workdir: "/proj".into(),
            cpus: 4,
            gpus: 1,
            options: Options {
                partition: Some("gpu".into()),
                time: Some("2:00:00".into()),
                mem: Some("16G".into()),
                extra: vec!["--exclusive".into()],
                ..Default::default()
            },
        };
        assert_eq!(
            s.args(),
            [
                "--parsable",
                "--job-name=pipe-r1-train",
                "--comment=pipe-run=r1",
                "--output=/c/tmp/k.out",
                "--error=/c/tmp/k.err",
                "--chdir=/proj",
                "--cpus-per-task=4",
                "--gres=gpu:1",
                "--partition=gpu",
                "--time=2:00:00",
                "--mem=16G",
                "--exclusive",
                "/c/tmp/k.slurm.sh"
            ]
        );
        let mut g = s.clone();
        g.options.gpus_flag = true;
        assert!(g.args().contains(&"--gpus=1".to_string()));
        // A stage's options over its pipeline's.
        let pipeline = Options {
            partition: Some("cpu".into()),
            account: Some("lab".into()),
            extra: vec!["-v".into()],
            ..Default::default()
        };
        let m = pipeline.merged(&s.options);
        assert_eq!(
            (m.partition.as_deref(), m.account.as_deref()),
            (Some("gpu"), Some("lab"))
        );
        assert_eq!(m.extra, ["-v", "--exclusive"]);
    }

    #[test]
    fn retries_ask_for_more_memory_and_time() {
        assert_eq!(scale_mem("100M", 2.0).as_deref(), Some("200M"));
        assert_eq!(scale_mem("16G", 1.5).as_deref(), Some("24576M"));
        assert_eq!(scale_mem("500", 2.0).as_deref(), Some("1000M"));
        assert_eq!(scale_mem("lots", 2.0), None);
        assert_eq!(scale_time("30", 2.0).as_deref(), Some("0-01:00:00"));
        assert_eq!(scale_time("2:00:00", 2.0).as_deref(), Some("0-04:00:00"));
        assert_eq!(scale_time("1-12", 2.0).as_deref(), Some("3-00:00:00"));
        assert_eq!(scale_time("10:30", 2.0).as_deref(), Some("0-00:21:00"));
        assert_eq!(scale_time("soon", 2.0), None);
        let o = Options {
            mem: Some("100M".into()),
            time: Some("soon".into()),
            retries: Some(2),
            ..Default::default()
        };
        let next = o.scaled_for_retry();
        assert_eq!(
            (next.mem.as_deref(), next.time.as_deref()),
            (Some("200M"), Some("soon"))
        );
        assert_eq!(next.retries, Some(2));
    }

    #[test]
    fn states_from_sacct_and_squeue() {
        let sacct = "11|COMPLETED|0:0|None\n12|FAILED|3:0|NonZeroExitCode\n13|CANCELLED by 0|0:15|None\n\
                     14|OUT_OF_MEMORY|0:125|OutOfMemory\n15|TIMEOUT|0:0|TimeLimit\n16|PENDING|0:0|Resources\n\
                     17|RUNNING|0:0|None\n17.batch|RUNNING|0:0|\n18|NODE_FAIL|0:0|None\n19|FAILED|0:9|None\n";
        let s = parse_sacct(sacct);
        assert_eq!(s["11"], State::Completed);
        assert_eq!(
            s["12"],
            State::Failed {
                exit_code: 3,
                signal: 0
            }
        );
        assert_eq!(s["13"], State::Cancelled);
        assert_eq!(s["14"], State::OutOfMemory);
        assert_eq!(s["15"], State::Timeout);
        assert_eq!(s["16"], State::Pending("Resources".into()));
        assert_eq!(s["17"], State::Running);
        assert!(!s.contains_key("17.batch"));
        assert_eq!(s["18"], State::NodeFail);
        assert!(s.values().filter(|v| v.is_terminal()).count() == 7);
        let q = parse_squeue(
            "21|PENDING|Priority\n22|RUNNING|None\n23|COMPLETED|None\n24|CANCELLED|None\n 25|FAILED|NonZeroExitCode\n",
        );
        assert_eq!(q["21"], State::Pending("Priority".into()));
        assert_eq!(
            q["25"],
            State::Failed {
                exit_code: 1,
                signal: 0
            }
        );
        // Array tasks: started ones have their own line, the others share one.
        let a =
            parse_sacct("30_0|COMPLETED|0:0|None\n30_1|RUNNING|0:0|None\n30_[2-3,5%2]|PENDING|0:0|JobArrayTaskLimit\n");
        assert_eq!(a.len(), 5);
        assert_eq!(a["30_0"], State::Completed);
        assert_eq!(a["30_5"], State::Pending("JobArrayTaskLimit".into()));
        assert!(!a.contains_key("30_4"));
        assert_eq!(parse_squeue("31_[0-1]|PENDING|Priority\n").len(), 2);
        assert_eq!(base_ids(&["30_1".into(), "30_0".into(), "29".into()]), "29,30");
        let log = std::env::temp_dir().join("pipe-slurm-test-no-such-log");
        assert_eq!(s["11"].message("11", "train", &log), None);
        let m = s["14"].message("14", "convert", &log).unwrap();
        assert!(
            m.contains("stage `convert`: Slurm job 14") && m.contains("OUT_OF_MEMORY"),
            "{m}"
        );
        assert!(s["12"].message("12", "t", &log).unwrap().contains("exit code 3"));
        assert!(s["19"].message("19", "t", &log).unwrap().contains("signal 9"));
    }
}

//! The torch worker protocol: how `pipe` runs a stage in `pipe-torch`.
//!
//! Architecture invariant: `pipe` never links LibTorch (loading it costs 0.3–0.7 s,
//! which `pipe status` must not pay). A stage whose kind says
//! [`Executor::TorchWorker`](crate::stage::Executor) is run by spawning the
//! `pipe-torch` executable with a [`Job`] file; the worker builds the same
//! [`Context`] the in-process stages get and reports progress as JSON lines on stdout
//! ([`Event`]). Its stderr becomes the stage's log. The Slurm executor will submit the
//! same command.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::progress::{Progress, Update};
use crate::stage::{Context, Device, InputTable};
use crate::table::TableMeta;

/// Everything the worker needs to run one stage.
#[derive(Debug, Serialize, Deserialize)]
pub struct Job {
    pub kind: String,
    pub stage: String,
    pub params: serde_json::Value,
    pub root: PathBuf,
    pub cache_dir: PathBuf,
    pub out_dir: PathBuf,
    pub inputs: Vec<InputTable>,
    pub previous: Option<PathBuf>,
    pub threads: usize,
    pub device: Device,
    pub meta: TableMeta,
    /// A task of a Slurm array over this many shards: it runs shard
    /// `$SLURM_ARRAY_TASK_ID`, into `out_dir/<index>`.
    #[serde(default)]
    pub shards: Option<usize>,
    /// The shard this job runs, given outright (a shard of a local run in the worker).
    #[serde(default)]
    pub shard: Option<crate::stage::Shard>,
}

/// One line of the worker's stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Total(u64),
    Inc(u64),
    Message(String),
    /// Final counters and log lines of the stage.
    Done {
        counters: BTreeMap<String, u64>,
        log: Vec<String>,
        device: String,
        /// Files of a referenced tree it could not read ([`Context::unreadable`]): the
        /// submitting process must not seal the result.
        #[serde(default)]
        unreadable: Vec<(PathBuf, String)>,
    },
}

impl Event {
    pub fn emit(&self) {
        use std::io::Write;
        let line = serde_json::to_string(self).expect("event json");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Where the worker executable is: `$PIPE_TORCH_WORKER`, else `pipe-torch` beside the
/// running `pipe`.
pub fn worker_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PIPE_TORCH_WORKER") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("cannot find the running pipe executable")?;
    let candidate = exe.with_file_name("pipe-torch");
    if candidate.is_file() {
        Ok(candidate)
    } else {
        bail!(
            "this stage runs in the torch worker, but {} does not exist; build it with `make build` (cargo build --features torch) or set PIPE_TORCH_WORKER",
            candidate.display()
        )
    }
}

/// Run `job` in the worker, forwarding its progress to `ctx`. Returns the device it
/// actually used (it may fall back to the CPU).
pub fn run_in_worker(job: &Job, job_file: &Path, ctx: &Context) -> anyhow::Result<String> {
    std::fs::write(job_file, serde_json::to_vec_pretty(job)?)?;
    let worker = worker_path()?;
    let mut cmd = Command::new(&worker);
    cmd.arg("run")
        .arg(job_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = crate::child::spawn_owned(&mut cmd)
        .with_context(|| format!("cannot start the torch worker {}", worker.display()))?;
    let stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    let mut device = job.device.to_string();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        match serde_json::from_str::<Event>(&line) {
            Ok(Event::Total(n)) => ctx.progress.set_total(n),
            Ok(Event::Inc(n)) => ctx.progress.inc(n),
            Ok(Event::Message(m)) => ctx.progress.set_message(m),
            Ok(Event::Done {
                counters,
                log,
                device: d,
                unreadable,
            }) => {
                for (k, v) in counters {
                    ctx.count(&k, v);
                }
                for l in log {
                    ctx.log(l);
                }
                for (f, why) in unreadable {
                    ctx.unreadable(&f, &why);
                }
                device = d;
            }
            Err(_) => ctx.log(line),
        }
    }
    let status = child.wait()?;
    let stderr = err_thread.join().unwrap_or_default();
    for l in stderr.lines() {
        ctx.log(l.to_string());
    }
    if !status.success() {
        // The dynamic loader's own words when LibTorch is gone or moved since the
        // worker was built (its rpath points at the torch it was built against).
        if let Some(line) = stderr
            .lines()
            .find(|l| l.contains("error while loading shared libraries"))
        {
            bail!(
                "the torch worker {} cannot load LibTorch: {}\nfix: rebuild and reinstall pipe against the torch you have (`make install`), or set LD_LIBRARY_PATH to that torch's lib folder: python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), \"lib\"))'",
                worker.display(),
                line.trim()
            );
        }
        let tail: Vec<&str> = stderr
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!("the torch worker failed ({status}):\n{}", tail.join("\n"));
    }
    Ok(device)
}

/// Worker side: run the job in `job_file` with `run` (the kind's code; returns the
/// device it used), reporting progress and, at the end, the counters and log as
/// [`Event`]s on stdout. `pipe-torch run` and `pipe job` (a stage sent to Slurm) are
/// this.
pub fn run_job_file(job_file: &Path, run: impl FnOnce(&Job, &Context) -> anyhow::Result<String>) -> anyhow::Result<()> {
    let text = std::fs::read(job_file).with_context(|| format!("cannot read job {}", job_file.display()))?;
    let job: Job =
        serde_json::from_slice(&text).with_context(|| format!("{} is not a job file", job_file.display()))?;
    let ctx = context_for(&job)?;
    let device = run(&job, &ctx)?;
    Event::Done {
        counters: ctx.counters.lock().unwrap().clone(),
        log: ctx.log.lock().unwrap().clone(),
        device,
        unreadable: ctx.unreadable.lock().unwrap().clone(),
    }
    .emit();
    Ok(())
}

/// Worker side: build the context for a job file (for a task of a sharded stage's
/// array, its shard and that shard's directory).
pub fn context_for(job: &Job) -> anyhow::Result<Context> {
    let (shard, out_dir) = match job.shards {
        None => (job.shard, job.out_dir.clone()),
        Some(count) => {
            let index: usize = std::env::var("SLURM_ARRAY_TASK_ID")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|i| *i < count)
                .with_context(|| {
                    format!(
                        "stage `{}` runs in {count} shards, but SLURM_ARRAY_TASK_ID does not name one",
                        job.stage
                    )
                })?;
            let dir = job.out_dir.join(index.to_string());
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            (Some(crate::stage::Shard { index, count }), dir)
        }
    };
    Ok(Context {
        stage: job.stage.clone(),
        root: job.root.clone(),
        cache_dir: job.cache_dir.clone(),
        out_dir,
        inputs: job.inputs.clone(),
        previous: job.previous.clone(),
        shard,
        threads: job.threads,
        device: job.device,
        progress: Progress::with_sink(&job.stage, |u| {
            match u {
                Update::Total(n) => Event::Total(n),
                Update::Inc(n) => Event::Inc(n),
                Update::Message(m) => Event::Message(m),
            }
            .emit()
        }),
        meta: job.meta.clone(),
        counters: Mutex::new(BTreeMap::new()),
        log: Mutex::new(Vec::new()),
        unreadable: Mutex::new(Vec::new()),
    })
}

//! Stages on a real single-node Slurm (`make slurm-up`, which `scripts/slurm/up.sh`
//! starts from Debian's slurm-wlm): pipe's client (jobs submitted with the arguments
//! pipe builds, all of a run's jobs tracked with one query per round, every way a job
//! ends read back as the message a user gets) and `pipe run --executor slurm` (the same
//! tables as a local run, cancelled and out-of-memory jobs, Ctrl-C). Without a cluster
//! the tests say so and pass, unless PIPE_REQUIRE_SLURM is set.

mod common;
use common::*;

use std::path::Path;
use std::time::{Duration, Instant};

use pipe_core::slurm::{Options, State, Submit, Tracker, cancel};

/// One test at a time on the cluster: its one node has 2 CPUs, and a test waiting for
/// its job to start must not wait behind another test's pipeline.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The cluster to oneself, or `None` (the test passes) when none answers.
fn on_cluster() -> Option<std::sync::MutexGuard<'static, ()>> {
    let one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    cluster().then_some(one)
}

/// A project whose one stage `name` runs `python` on Slurm with these `slurm:` options.
fn python_stage(name: &str, slurm: &str, python: &str) -> Project {
    let p = Project::new();
    p.write(
        "pipelines/m.yaml",
        &format!(
            "root: ..\nstages:\n  {name}:\n    kind: command\n    executor: slurm\n    slurm: {slurm}\n    params:\n      run: [python3, -c, \"{python}\"]\n      outputs: []\n"
        ),
    );
    p
}

/// Whether a cluster answers; `SLURM_CONF` defaults to the one `make slurm-up` writes.
fn cluster() -> bool {
    // SAFETY: set before this test starts any thread or command (each test process
    // sets the same values).
    unsafe {
        if std::env::var_os("SLURM_CONF").is_none() && Path::new("/tmp/pipe-slurm/etc/slurm.conf").is_file() {
            std::env::set_var("SLURM_CONF", "/tmp/pipe-slurm/etc/slurm.conf");
        }
        // Ask the controller often: the jobs here take seconds.
        std::env::set_var("PIPE_SLURM_POLL_MS", "300");
    }
    let up = pipe_core::slurm::available();
    if !up {
        assert!(
            std::env::var_os("PIPE_REQUIRE_SLURM").is_none(),
            "no Slurm cluster answers: start one with `make slurm-up`"
        );
        eprintln!("skipping: no Slurm cluster answers (`make slurm-up` starts one)");
    }
    up
}

fn job(dir: &Path, name: &str, body: &str, mem: &str) -> Submit {
    let script = dir.join(format!("{name}.sh"));
    std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
    Submit {
        name: format!("pipe-test-{name}"),
        comment: "pipe-run=test".into(),
        script,
        output: dir.join(format!("{name}.out")),
        error: dir.join(format!("{name}.err")),
        workdir: dir.to_path_buf(),
        cpus: 1,
        gpus: 0,
        options: Options {
            mem: Some(mem.into()),
            ..Default::default()
        },
    }
}

/// Poll every `period` until all jobs are terminal; returns the states and rounds.
fn track(t: &mut Tracker, jobs: &[String], limit: Duration) -> (std::collections::BTreeMap<String, State>, u64) {
    let start = Instant::now();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let s = t.poll(jobs).unwrap();
        if s.values().all(State::is_terminal) {
            return (s, rounds);
        }
        assert!(start.elapsed() < limit, "jobs not done after {limit:?}: {s:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn jobs_end_as_slurm_says_and_one_query_tracks_them_all() {
    let Some(_one) = on_cluster() else { return };
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let ok = job(dir.path(), "ok", "echo hello from $SLURM_JOB_ID", "100M")
        .submit()
        .unwrap();
    let fail = job(dir.path(), "fail", "echo about to fail >&2; exit 3", "100M")
        .submit()
        .unwrap();
    let oom = job(
        dir.path(),
        "oom",
        "perl -e '$x = \"x\" x (300*1024*1024); sleep 30'",
        "50M",
    )
    .submit()
    .unwrap();
    let long = job(dir.path(), "long", "sleep 300", "100M").submit().unwrap();
    let jobs = vec![ok.clone(), fail.clone(), oom.clone(), long.clone()];
    // Cancel the long one once it is known to Slurm.
    let mut t = Tracker::default();
    let _ = t.poll(&jobs).unwrap();
    cancel(std::slice::from_ref(&long)).unwrap();
    let (states, rounds) = track(&mut t, &jobs, Duration::from_secs(120));
    eprintln!(
        "{states:?} after {rounds} rounds, {} queries, accounting {:?}",
        t.queries,
        t.uses_accounting()
    );
    assert_eq!(states[&ok], State::Completed);
    // `make slurm-up` keeps accounting (sacct answers); PIPE_SLURM_ACCOUNTING=0 turns it
    // off, and then squeue must track the jobs.
    let accounting = std::env::var("PIPE_SLURM_ACCOUNTING").map_or(true, |v| v != "0");
    assert_eq!(t.uses_accounting(), Some(accounting), "{states:?}");
    // sacct gives the exit code; without accounting squeue only says FAILED.
    if t.uses_accounting() == Some(true) {
        assert_eq!(
            states[&fail],
            State::Failed {
                exit_code: 3,
                signal: 0
            }
        );
    } else {
        assert!(matches!(states[&fail], State::Failed { .. }), "{states:?}");
    }
    assert_eq!(states[&long], State::Cancelled);
    assert_eq!(states[&oom], State::OutOfMemory, "{states:?}");
    // One query per round for all four jobs (sacct; squeue too while accounting lags).
    assert!(
        t.queries <= 2 * (rounds + 1),
        "{} queries in {rounds} rounds",
        t.queries
    );
    assert!(
        std::fs::read_to_string(dir.path().join("ok.out"))
            .unwrap()
            .contains(&format!("hello from {ok}"))
    );
    // The messages a user reads.
    let m = states[&fail]
        .message(&fail, "convert", &dir.path().join("fail.err"))
        .unwrap();
    assert!(m.contains("FAILED (exit code") && m.contains("about to fail"), "{m}");
    let m = states[&oom]
        .message(&oom, "convert", &dir.path().join("oom.err"))
        .unwrap();
    assert!(m.contains("stage `convert`") && m.contains("OUT_OF_MEMORY"), "{m}");
    assert!(
        states[&long]
            .message(&long, "train", &dir.path().join("x"))
            .unwrap()
            .contains("cancelled")
    );
}

/// Where accounting is off (sacct knows nothing), squeue tracks the jobs.
#[test]
fn squeue_tracks_jobs_without_accounting() {
    let Some(_one) = on_cluster() else { return };
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let ok = job(dir.path(), "ok", "sleep 1", "100M").submit().unwrap();
    let fail = job(dir.path(), "fail", "exit 2", "100M").submit().unwrap();
    let mut t = Tracker::without_accounting();
    let jobs = vec![ok.clone(), fail.clone()];
    let (states, rounds) = track(&mut t, &jobs, Duration::from_secs(60));
    assert_eq!(t.queries, rounds, "one squeue per round");
    assert_eq!(states[&ok], State::Completed);
    assert!(matches!(states[&fail], State::Failed { .. }), "{states:?}");
}

const TINY: &str = "  train:\n    params: { architecture: tiny, image_size: 32, batch_size: 16, epochs: 1, eval_every: 100 }\n  evaluate:\n    params: { bootstrap: 50, gradcam: 1 }\n";

/// The whole pipeline — in-process stages as `pipe job`, train and evaluate as
/// `pipe-torch run` — on Slurm: every table byte-identical to a local run's, under the
/// same keys; a rerun does nothing; switching back to local changes no key.
#[test]
fn the_pipeline_on_slurm_equals_a_local_run() {
    let Some(_one) = on_cluster() else { return };
    if worker().is_none() {
        return;
    }
    // One project, two caches: params (paths included) are the same, so are the keys.
    let p = Project::new();
    synth(&p.path("hosp"), 80, 32);
    phutho_on_hospital(&p, "d", 32, TINY);
    let yaml = std::fs::read_to_string(p.path("pipelines/d.yaml")).unwrap();
    let on_slurm = yaml.replace("name: d\n", "name: s\n").replace(
        &format!("cache: {}", p.path("cache").display()),
        &format!("cache: {}", p.path("cache_slurm").display()),
    );
    assert_ne!(yaml, on_slurm);
    p.write("pipelines/s.yaml", &on_slurm);
    p.pipe(&["run", "pipelines/d.yaml"]).ok();
    let t = Instant::now();
    let r = p.pipe(&["run", "pipelines/s.yaml", "--executor", "slurm"]).ok();
    eprintln!("on Slurm in {:.1} s\n{}", t.elapsed().as_secs_f64(), r.stdout);
    assert!(r.ran().len() >= 10, "{}", r.stdout);
    let log = std::fs::read_to_string(
        Path::new(p.pipe(&["path", "pipelines/s.yaml", "train"]).ok().stdout.trim()).with_file_name("log.txt"),
    )
    .unwrap();
    assert!(log.contains("Slurm job "), "{log}");
    let (a, b) = (tables(&p.path("cache")), tables(&p.path("cache_slurm")));
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        // evaluate's tables hold only what is seeded, so they must agree too.
        assert_eq!(b.get(k), Some(v), "{k:?} differs between local and Slurm");
    }
    assert!(
        p.pipe(&["run", "pipelines/s.yaml", "--executor", "slurm"])
            .ok()
            .ran()
            .is_empty()
    );
    assert!(
        p.pipe(&["run", "pipelines/s.yaml"]).ok().ran().is_empty(),
        "keys do not depend on the executor"
    );
}

/// The squeue lines (`id name state`) of jobs whose name ends with `suffix`.
fn jobs_named(suffix: &str) -> Vec<String> {
    let out = std::process::Command::new("squeue")
        .args(["--noheader", "-o", "%i %j %T"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|n| n.ends_with(suffix)))
        .map(String::from)
        .collect()
}

/// Exit code and stdout + stderr of a `pipe run` started with piped output.
fn ended(child: std::process::Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A project whose one stage, `stage`, runs on Slurm and stays in its job (emit.py's
/// `--slow-if`) until the file `slow` is removed; `pipe run` started, its job running.
fn slow_run(stage: &str) -> (Project, std::process::Child) {
    let p = Project::new();
    p.write("slow", "");
    p.write(
        "pipelines/c.yaml",
        &format!(
            "root: ..\nexecutor: slurm\nstages:\n{}",
            emit_stage(stage, "x", None, ", --slow-if, slow")
        ),
    );
    let child = p
        .command(&["run", "pipelines/c.yaml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the job starts", Duration::from_secs(60), || {
        p.path("slow.started").exists()
    });
    (p, child)
}

#[test]
fn a_cancelled_job_fails_its_stage_and_the_next_run_completes() {
    let Some(_one) = on_cluster() else { return };
    let (p, child) = slow_run("cancelme");
    let jobs = jobs_named("-cancelme");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let id = jobs[0].split_whitespace().next().unwrap().to_string();
    // pipe status knows where it runs.
    let status = p.pipe(&["status", "pipelines/c.yaml"]).ok().stdout;
    assert!(
        status.contains("running  (pipe pid") && status.contains(&format!("Slurm job {id}")),
        "{status}"
    );
    cancel(std::slice::from_ref(&id)).unwrap();
    let (code, text) = ended(child);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("stage `cancelme`: Slurm job {id} was cancelled")),
        "{text}"
    );
    // Nothing of it was taken as a result: the next run builds it.
    std::fs::remove_file(p.path("slow")).unwrap();
    let r = p.pipe(&["run", "pipelines/c.yaml"]).ok();
    assert_eq!(r.ran(), ["cancelme"], "{}", r.stdout);
}

#[test]
fn a_job_over_its_memory_is_named_out_of_memory() {
    let Some(_one) = on_cluster() else { return };
    let p = python_stage(
        "hog",
        "{ mem: 50M }",
        "import time; x = b'x' * (400 << 20); time.sleep(20)",
    );
    let r = p.pipe(&["run", "pipelines/m.yaml"]);
    let text = format!("{}{}", r.stdout, r.stderr);
    assert_eq!(r.code, 1, "{text}");
    assert!(
        text.contains("stage `hog`: Slurm job") && text.contains("OUT_OF_MEMORY"),
        "{text}"
    );
}

/// `retries:` submits a job that ran out of memory again, with twice the memory.
#[test]
fn a_job_out_of_memory_is_retried_with_more() {
    let Some(_one) = on_cluster() else { return };
    let p = python_stage(
        "grows",
        "{ mem: 100M, retries: 1 }",
        "import time; x = b'x' * (150 << 20); time.sleep(2)",
    );
    let r = p.pipe(&["run", "pipelines/m.yaml"]).ok();
    assert_eq!(r.ran(), ["grows"], "{}", r.stdout);
    // The stage's one entry (it writes no table to `pipe path` to) holds its log.
    let entry = std::fs::read_dir(p.path("cache/entries"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let log = std::fs::read_to_string(entry.join("log.txt")).unwrap();
    assert!(log.contains("OutOfMemory; attempt 2 of 2 with mem 200M"), "{log}");
}

#[test]
fn ctrl_c_cancels_the_runs_jobs() {
    let Some(_one) = on_cluster() else { return };
    let (_project, child) = slow_run("interruptme");
    assert_eq!(jobs_named("-interruptme").len(), 1);
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let (code, text) = ended(child);
    assert_eq!(code, Some(130), "{text}");
    wait_for("the job is cancelled", Duration::from_secs(30), || {
        jobs_named("-interruptme")
            .iter()
            .all(|l| !l.contains("RUNNING") && !l.contains("PENDING"))
    });
}

/// Collect and convert with `shards: 4`, each one Slurm array job: the tables and images
/// of an unsharded local run, and a month of new files is all they read and decode.
#[test]
fn sharded_stages_on_slurm_equal_unsharded() {
    let Some(_one) = on_cluster() else { return };
    let (runs, log) = sharded_equals_unsharded(4, &["--executor", "slurm"]);
    for r in &runs {
        // collect and convert: 4 array tasks each; each stage's line names its array job.
        assert!(r.stdout.contains("; 8 shards ran as array tasks"), "{}", r.stdout);
        let line = r.stdout.lines().find(|l| l.contains("✓ convert")).unwrap();
        assert!(line.contains("(Slurm array job ") && line.contains("queued "), "{line}");
    }
    assert!(log.contains("Slurm array job ") && log.contains("(4 shards)"), "{log}");
    eprintln!("{log}");
}

/// One shard of an array cancelled (the array held until then, so it cannot finish
/// first): the stage fails naming that shard, nothing is committed, and the next run
/// builds the stage whole, equal to an unsharded run.
#[test]
fn a_cancelled_shard_fails_its_stage_and_the_next_run_completes() {
    let Some(_one) = on_cluster() else { return };
    let p = Project::new();
    synth(&p.path("hosp"), 40, 32);
    let yaml = |name: &str, shards: usize, slurm: &str| {
        format!(
            "name: {name}\nroot: ..\ncache: cache_{name}\nstages:\n  collect:\n    kind: collect\n    shards: {shards}\n    executor: slurm\n    slurm: {slurm}\n    params: {{ pacs: hosp/pacs, his: hosp/his }}\n"
        )
    };
    p.write("pipelines/h.yaml", &yaml("h", 3, "{ extra: [--hold] }"));
    let child = p
        .command(&["run", "pipelines/h.yaml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut array = String::new();
    wait_for("the array is queued", Duration::from_secs(60), || {
        array = jobs_named("-collect")
            .first()
            .map(|l| l.split('_').next().unwrap().to_string())
            .unwrap_or_default();
        !array.is_empty()
    });
    cancel(&[format!("{array}_1")]).unwrap();
    let released = std::process::Command::new("scontrol")
        .args(["release", &array])
        .status()
        .unwrap();
    assert!(released.success());
    let (code, text) = ended(child);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        // Cancelled while pending, a task leaves no record: pipe can only say so.
        text.contains(&format!(
            "stage `collect`: Slurm job {array}_1 (shard 1 of 3) left the queue before it was seen running"
        )) && text.contains("cancelled while pending?"),
        "{text}"
    );
    assert!(!p.path("cache_h/entries").exists() || std::fs::read_dir(p.path("cache_h/entries")).unwrap().count() == 0);

    // Without the hold (Slurm options are not in the key), the next run completes.
    p.write("pipelines/h.yaml", &yaml("h", 3, "{}"));
    let r = p.pipe(&["run", "pipelines/h.yaml"]).ok();
    assert_eq!(r.ran(), ["collect"], "{}", r.stdout);
    p.write(
        "pipelines/u.yaml",
        &yaml("u", 1, "{}").replace("    executor: slurm\n", ""),
    );
    p.pipe(&["run", "pipelines/u.yaml"]).ok();
    let strip = |m: std::collections::BTreeMap<(String, String), (String, String)>| m.into_values().collect::<Vec<_>>();
    assert_eq!(strip(tables(&p.path("cache_h"))), strip(tables(&p.path("cache_u"))));
}

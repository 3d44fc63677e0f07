//! LibTorch: the worker links it, `pipe` does not, and a torch stage runs end to end.
//!
//! The worker is its own package (worker/), built by `make test` beside `pipe`. Under
//! `make test` (PIPE_REQUIRE_TORCH=1) a missing worker fails these tests; a plain
//! `cargo test` without LibTorch skips them with a note.

mod common;
use common::*;

fn worker() -> Option<std::path::PathBuf> {
    let w = pipe_bin().with_file_name("pipe-torch");
    if w.is_file() {
        return Some(w);
    }
    assert!(
        std::env::var_os("PIPE_REQUIRE_TORCH").is_none(),
        "{} is missing: build it with `cargo build --workspace` (LIBTORCH_USE_PYTORCH=1)",
        w.display()
    );
    eprintln!("skipping: no torch worker at {}", w.display());
    None
}

#[test]
fn worker_creates_a_tensor() {
    let Some(worker) = worker() else { return };
    let out = std::process::Command::new(worker).arg("smoke").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("tensor [2.0, 4.0, 6.0] sum 12"), "{stdout}");
}

#[test]
fn pipe_does_not_link_libtorch_but_the_worker_does() {
    let Some(worker) = worker() else { return };
    let ldd =
        |bin: &str| String::from_utf8(std::process::Command::new("ldd").arg(bin).output().unwrap().stdout).unwrap();
    let pipe = ldd(env!("CARGO_BIN_EXE_pipe"));
    assert!(
        !pipe.contains("torch") && !pipe.contains("c10"),
        "pipe links LibTorch:\n{pipe}"
    );
    let worker = ldd(worker.to_str().unwrap());
    assert!(worker.contains("libtorch_cpu"), "{worker}");
}

#[test]
fn torch_stage_runs_in_the_worker_and_is_cached() {
    if worker().is_none() {
        return;
    }
    let p = Project::new();
    p.write(
        "pipelines/p.yaml",
        "name: t\nstages:\n  check:\n    kind: torch_check\n    params: { size: 64 }\n",
    );
    let r = p.pipe(&["run", "pipelines/p.yaml"]).ok();
    assert_eq!(r.ran(), ["check"]);
    let show = p.pipe(&["show", "pipelines/p.yaml", "check.devices"]).ok();
    assert!(show.stdout.contains("1 rows · kind torch_check"), "{}", show.stdout);
    // ones(64,64)/64 squared sums to exactly 64.
    assert!(
        show.stdout.contains("| 64.0     |") || show.stdout.contains("64.0"),
        "{}",
        show.stdout
    );
    let log = std::fs::read_to_string(
        std::path::Path::new(&p.pipe(&["path", "pipelines/p.yaml", "check"]).ok().stdout.trim())
            .with_file_name("log.txt"),
    )
    .unwrap();
    assert!(log.contains("64x64 matmul"), "{log}");
    assert!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran().is_empty());
}

//! LibTorch: the worker links it, `pipe` does not, and a torch stage runs end to end.
#![cfg(feature = "torch")]

mod common;
use common::*;

#[test]
fn worker_creates_a_tensor() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipe-torch")).arg("smoke").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("tensor [2.0, 4.0, 6.0] sum 12"), "{stdout}");
}

#[test]
fn pipe_does_not_link_libtorch_but_the_worker_does() {
    let ldd = |bin: &str| String::from_utf8(std::process::Command::new("ldd").arg(bin).output().unwrap().stdout).unwrap();
    let pipe = ldd(env!("CARGO_BIN_EXE_pipe"));
    assert!(!pipe.contains("torch") && !pipe.contains("c10"), "pipe links LibTorch:\n{pipe}");
    let worker = ldd(env!("CARGO_BIN_EXE_pipe-torch"));
    assert!(worker.contains("libtorch_cpu"), "{worker}");
}

#[test]
fn torch_stage_runs_in_the_worker_and_is_cached() {
    let p = Project::new();
    p.write("pipelines/p.yaml", "name: t\nstages:\n  check:\n    kind: torch_check\n    params: { size: 64 }\n");
    let r = p.pipe(&["run", "pipelines/p.yaml"]).ok();
    assert_eq!(r.ran(), ["check"]);
    let show = p.pipe(&["show", "pipelines/p.yaml", "check.devices"]).ok();
    assert!(show.stdout.contains("1 rows · kind torch_check"), "{}", show.stdout);
    // ones(64,64)/64 squared sums to exactly 64.
    assert!(show.stdout.contains("| 64.0     |") || show.stdout.contains("64.0"), "{}", show.stdout);
    let log = std::fs::read_to_string(std::path::Path::new(&p.pipe(&["path", "pipelines/p.yaml", "check"]).ok().stdout.trim()).with_file_name("log.txt")).unwrap();
    assert!(log.contains("64x64 matmul"), "{log}");
    assert!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran().is_empty());
}

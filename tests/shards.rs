//! `shards: N` run locally (one shard after another): collect and convert give the
//! bytes an unsharded run gives, and stay incremental per file. tests/slurm.rs runs the
//! same check with the shards as a Slurm array.

mod common;
use common::*;

#[test]
fn sharded_collect_and_convert_equal_unsharded_and_reuse_per_file() {
    let (runs, log) = sharded_equals_unsharded(3, &[]);
    assert_eq!(runs.len(), 2);
    assert!(!log.contains("Slurm"), "{log}");
}

/// A kind that cannot split its work refuses `shards:` at validation, at the key.
#[test]
fn shards_on_a_kind_that_cannot_is_refused() {
    let p = Project::new();
    p.write(
        "pipelines/x.yaml",
        "root: ..\nstages:\n  split:\n    kind: split\n    shards: 2\n    inputs: [a]\n  a:\n    kind: command\n    params: { run: [true], outputs: [] }\n",
    );
    let r = p.pipe(&["check", "pipelines/x.yaml"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("cannot run in shards")
            && r.stderr.contains("x.yaml:5:13")
            && r.stderr.contains("collect, convert"),
        "{}",
        r.stderr
    );
}

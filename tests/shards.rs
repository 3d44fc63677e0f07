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
        "root: ..\nstages:\n  split:\n    kind: split\n    shards: 2\n    inputs: [a]\n  a:\n    kind: command\n    params: { run: [\"true\"], outputs: [] }\n",
    );
    let r = p.pipe(&["check", "pipelines/x.yaml"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("cannot run in shards")
            && r.stderr.contains("x.yaml:5:13")
            && r.stderr.contains("kinds that can: collect, filter, convert"),
        "{}",
        r.stderr
    );
}

/// kill -9 at several points of a sharded run (inside a shard, between shards, while
/// merging, while committing): the next run completes, its tables are an unsharded
/// run's, no shard directory is left and `pipe verify` finds nothing wrong.
#[test]
fn kill_9_during_a_sharded_run_leaves_the_cache_usable() {
    let p = Project::new();
    synth(&p.path("hosp"), 300, 32);
    phutho_on_hospital(&p, "d", 32, "");
    let yaml = std::fs::read_to_string(p.path("pipelines/d.yaml")).unwrap();
    p.write(
        "pipelines/s.yaml",
        &yaml
            .replace("name: d\n", "name: s\n")
            .replace(
                &format!("cache: {}", p.path("cache").display()),
                &format!("cache: {}", p.path("cache_s").display()),
            )
            .replace("  collect:\n", "  collect:\n    shards: 3\n")
            .replace("  convert:\n", "  convert:\n    shards: 3\n"),
    );
    let until = ["--until", "convert"];
    let started = std::time::Instant::now();
    p.pipe(&[&["run", "pipelines/d.yaml"][..], &until].concat()).ok();
    let whole = started.elapsed();
    let mut amid_shards = 0;
    for round in 0..8u32 {
        // Spread over the time an unsharded run takes; each round starts where the
        // previous kill left the cache.
        let mut child = p
            .command(&[&["run", "pipelines/s.yaml", "-q"][..], &until].concat())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(whole * (round % 4 + 1) / 5);
        let _ = child.kill();
        let _ = child.wait();
        if std::fs::read_dir(p.path("cache_s/tmp")).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".shards"))
        }) {
            amid_shards += 1;
        }
    }
    eprintln!("{amid_shards} of 8 kills left shard directories behind");
    let r = p.pipe(&[&["run", "pipelines/s.yaml"][..], &until].concat()).ok();
    let strip = |m: std::collections::BTreeMap<(String, String), (String, String)>| m.into_iter().collect::<Vec<_>>();
    assert_eq!(
        strip(tables(&p.path("cache"))),
        strip(tables(&p.path("cache_s"))),
        "{}",
        r.stdout
    );
    let left: Vec<_> = std::fs::read_dir(p.path("cache_s/tmp"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    p.pipe(&["verify", "pipelines/s.yaml"]).ok();
}

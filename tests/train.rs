//! `train` end to end: the synthetic hospital through split, then the tiny CNN in the
//! torch worker, which must learn the signs the phantom draws (broken rib or plate,
//! basal fluid, blobs, a big heart).
//!
//! Under `make test` (PIPE_REQUIRE_TORCH=1) a missing worker fails this test; a plain
//! `cargo test` without LibTorch skips it with a note.

mod common;
use common::*;

use std::path::PathBuf;
use std::time::Instant;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use pipe::table::read_batch;

#[test]
fn tiny_cnn_learns_the_synthetic_signs() {
    if worker().is_none() {
        return;
    }
    let p = Project::new();
    let t = Instant::now();
    synth(&p.path("hosp"), 600, 64);
    phutho_on_hospital(
        &p,
        "t",
        64,
        "  train:\n    kind: train\n    inputs: [split.split, label.labels, convert.images]\n    params: { architecture: tiny, image_size: 64, batch_size: 32, epochs: 40, lr: 0.003, warmup_steps: 10, eval_every: 44 }\n",
    );
    let data = t.elapsed().as_secs_f64();
    let t = Instant::now();
    // Kill the run once train has written its first checkpoint: the next run resumes.
    let mut first = p
        .command(&["run", "pipelines/t.yaml"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let progress = || {
        std::fs::read_dir(p.path("cache/tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().join("progress.json").is_file())
    };
    while !progress() {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run ended before a checkpoint"
        );
        assert!(t.elapsed().as_secs() < 120, "no checkpoint after 120 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    // The worker dies with pipe (PR_SET_PDEATHSIG); give it a moment.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = p.pipe(&["run", "pipelines/t.yaml"]).ok();
    let run = t.elapsed().as_secs_f64();
    assert_eq!(r.ran(), ["train"], "{}", r.stdout);

    let entry = PathBuf::from(p.pipe(&["path", "pipelines/t.yaml", "train"]).ok().stdout.trim());
    let dir = entry.parent().unwrap().to_path_buf();
    for f in ["best.safetensors", "last.safetensors", "config.json"] {
        assert!(dir.join(f).is_file(), "{f} missing in {}", dir.display());
    }
    assert!(!dir.join("progress.json").exists());
    let history = read_batch(&dir.join("history.parquet")).unwrap();
    assert!(history.num_rows() >= 2, "{} evaluations", history.num_rows());
    let n = history.num_rows();
    let steps = history.column_by_name("step").unwrap().as_primitive::<Int64Type>();
    assert!((1..n).all(|i| steps.value(i) > steps.value(i - 1)));
    let aucs = history
        .column_by_name("val_macro_auc")
        .unwrap()
        .as_primitive::<Float64Type>();
    let f1s = history
        .column_by_name("val_macro_f1")
        .unwrap()
        .as_primitive::<Float64Type>();
    let per_class = history
        .column_by_name("val_auc")
        .unwrap()
        .as_string::<i32>()
        .value(n - 1);
    let per_class_f1 = history
        .column_by_name("val_f1")
        .unwrap()
        .as_string::<i32>()
        .value(n - 1);
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap_or_default();
    assert!(log.contains("resuming at step"), "{log}");
    assert!(aucs.is_valid(n - 1));
    let (auc, f1) = (aucs.value(n - 1), f1s.value(n - 1));
    eprintln!(
        "synth {data:.1} s, pipeline {run:.1} s; final val macro AUC {auc:.3}, macro F1 {f1:.3}; per class AUC {per_class}, F1 {per_class_f1}\n{log}"
    );
    assert!(
        auc >= 0.8,
        "val macro AUC {auc:.3} (per class {per_class})\n{config}\n{log}"
    );

    // Cached: a second run does nothing.
    assert!(p.pipe(&["run", "pipelines/t.yaml"]).ok().ran().is_empty());

    // Changing the loss reruns train alone; ASL and DBL train too.
    let yaml = std::fs::read_to_string(p.path("pipelines/t.yaml")).unwrap();
    for loss in ["asl", "dbl"] {
        p.write(
            "pipelines/t.yaml",
            &yaml.replace("epochs: 40", &format!("epochs: 12, loss: {loss}")),
        );
        let r = p.pipe(&["run", "pipelines/t.yaml"]).ok();
        assert_eq!(r.ran(), ["train"], "{}", r.stdout);
        let dir = PathBuf::from(p.pipe(&["path", "pipelines/t.yaml", "train"]).ok().stdout.trim());
        let log = std::fs::read_to_string(dir.parent().unwrap().join("log.txt")).unwrap_or_default();
        assert!(log.contains(&format!("loss {loss}")), "{log}");
    }
}

//! `train` and `evaluate` end to end: the synthetic hospital through split, then the
//! tiny CNN in the torch worker, which must learn the signs the phantom draws (broken
//! rib or plate, basal fluid, blobs, a big heart), and the evaluate stage scoring it.
//!
//! Under `make test` (PIPE_REQUIRE_TORCH=1) a missing worker fails these tests; a plain
//! `cargo test` without LibTorch skips them with a note.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use pipe_core::table::read_batch;

const TRAIN: &str = "  train:\n    params: { architecture: tiny, image_size: 64, batch_size: 32, epochs: 40, lr: 0.003, warmup_steps: 10, eval_every: 44 }\n";
const EVALUATE: &str = "  evaluate:\n    params: { bootstrap: 300, gradcam: 4 }\n";

/// The entry directory of the current result of `stage` (or `stage.table`).
fn entry(p: &Project, pipeline: &str, stage: &str) -> PathBuf {
    let table = p.pipe(&["path", pipeline, stage]).ok().stdout;
    Path::new(table.trim()).parent().unwrap().to_path_buf()
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("log.txt")).unwrap_or_default()
}

/// The metrics row of `label`: (auc, f1, threshold).
fn metric(dir: &Path, label: &str) -> (Option<f64>, f64, Option<f64>) {
    let m = read_batch(&dir.join("metrics.parquet")).unwrap();
    let labels = m.column_by_name("label").unwrap().as_string::<i32>();
    let i = (0..m.num_rows())
        .find(|&i| labels.value(i) == label)
        .unwrap_or_else(|| panic!("no metrics row `{label}`"));
    let f = |c: &str| {
        let a = m.column_by_name(c).unwrap().as_primitive::<Float64Type>();
        a.is_valid(i).then(|| a.value(i))
    };
    (f("auc"), f("f1").unwrap(), f("threshold"))
}

/// report.html of a real evaluate run, as a browser sees it: every section there, the
/// page no wider than a 1280-px window, captions with the reports' descriptions, every
/// picture it shows present. The screenshot is left in the target directory to look at.
fn report_renders_in_chromium(ev: &Path, predictions: &arrow::array::RecordBatch) {
    let Some(browser) = chromium() else { return };
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let page = render_in_chromium(&browser, ev, &shot, 2400);
    eprintln!("report.html in Chromium: {page}\nscreenshot: {}", shot.display());
    assert!(page["scrollWidth"].as_u64().unwrap() <= 1280, "{page}");
    for right in page["tables"].as_array().unwrap() {
        assert!(right.as_u64().unwrap() <= 1280, "a table past 1280 px: {page}");
    }
    let sections: Vec<&str> = page["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    // False positives and negatives are shown when there are any.
    let (mut fp, mut fn_) = (false, false);
    for l in ["chest_wall", "pleura", "parenchyma", "cardiac", "abnormal"] {
        let truth = predictions.column_by_name(l).unwrap().as_boolean();
        let pred = predictions.column_by_name(&format!("{l}_pred")).unwrap().as_boolean();
        for i in 0..predictions.num_rows() {
            fp |= pred.value(i) && !truth.value(i);
            fn_ |= !pred.value(i) && truth.value(i);
        }
    }
    let mut want = vec![
        "funnel",
        "split",
        "metrics",
        "confusion",
        "roc",
        "pr",
        "calibration",
        "gradcam",
    ];
    want.extend(fp.then_some("false_positives"));
    want.extend(fn_.then_some("false_negatives"));
    want.extend(["history", "provenance", "notes"]);
    assert_eq!(sections, want, "{page}");
    assert!(
        page["warning"].as_array().unwrap().is_empty(),
        "the test part is held out"
    );
    let captions: Vec<&str> = page["captions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        captions
            .iter()
            .filter(|c| c.contains(": "))
            .all(|c| !c.contains(" p=") || c.contains("“")),
        "a Grad-CAM caption without the report's description: {captions:?}"
    );
    for src in page["images"].as_array().unwrap() {
        assert!(
            ev.join(src.as_str().unwrap()).is_file(),
            "report.html shows a missing {src}"
        );
    }
}

#[test]
fn tiny_cnn_learns_the_synthetic_signs_and_evaluate_scores_it() {
    if worker().is_none() {
        return;
    }
    let p = Project::new();
    let t = Instant::now();
    synth(&p.path("hosp"), 600, 64);
    phutho_on_hospital(&p, "t", 64, &format!("{TRAIN}{EVALUATE}"));
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
        assert!(t.elapsed().as_secs() < 180, "no checkpoint after 180 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    // The worker dies with pipe (PR_SET_PDEATHSIG); give it a moment.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let resumed = Instant::now();
    let r = p.pipe(&["run", "pipelines/t.yaml"]).ok();
    let run = t.elapsed().as_secs_f64();
    assert_eq!(r.ran(), ["evaluate", "train"], "{}", r.stdout);
    // Without a terminal, progress is a few lines per stage, not one per step: start,
    // end, and at most one every 15 s (progress::PLAIN_EVERY).
    let lines = r.stderr.lines().filter(|l| l.starts_with("[train]")).count();
    let bound = 2 + (resumed.elapsed().as_secs_f64() / 15.0).ceil() as usize;
    assert!(
        lines <= bound,
        "{lines} progress lines (at most {bound}):\n{}",
        r.stderr
    );

    let dir = entry(&p, "pipelines/t.yaml", "train");
    for f in ["best.safetensors", "last.safetensors", "config.json"] {
        assert!(dir.join(f).is_file(), "{f} missing in {}", dir.display());
    }
    assert!(!dir.join("progress.json").exists());
    let history = read_batch(&dir.join("history.parquet")).unwrap();
    assert!(history.num_rows() >= 2, "{} evaluations", history.num_rows());
    let n = history.num_rows();
    let steps = history.column_by_name("step").unwrap().as_primitive::<Int64Type>();
    assert!((1..n).all(|i| steps.value(i) > steps.value(i - 1)));
    let log = log_of(&dir);
    assert!(log.contains("resuming at step"), "{log}");
    assert!(log.contains("(weights and Adam's state)"), "{log}");
    assert!(
        !dir.join("optimizer.safetensors").exists(),
        "resume state left in the entry"
    );

    // evaluate: the paper's table on the held-out test part, from the best checkpoint.
    let ev = entry(&p, "pipelines/t.yaml", "evaluate.metrics");
    let (auc, f1, _) = metric(&ev, "macro");
    let auc = auc.expect("macro AUC defined");
    let per_class: Vec<String> = ["chest_wall", "pleura", "parenchyma", "cardiac", "abnormal"]
        .iter()
        .map(|l| format!("{l} {:.3}", metric(&ev, l).0.unwrap_or(f64::NAN)))
        .collect();
    eprintln!(
        "synth {data:.1} s, pipeline {run:.1} s; test macro AUC {auc:.3}, macro F1 {f1:.3}; per class AUC {per_class:?}\n{log}\n{}",
        log_of(&ev)
    );
    assert!(auc >= 0.9, "test macro AUC {auc:.3} ({per_class:?})\n{log}");

    let split = read_batch(&PathBuf::from(
        p.pipe(&["path", "pipelines/t.yaml", "split.split"]).ok().stdout.trim(),
    ))
    .unwrap();
    let parts = split.column_by_name("part").unwrap().as_string::<i32>();
    let test = (0..split.num_rows()).filter(|&i| parts.value(i) == "test").count();
    let predictions = read_batch(&ev.join("predictions.parquet")).unwrap();
    assert_eq!(predictions.num_rows(), test);
    for c in [
        "sop_instance_uid",
        "cardiac",
        "cardiac_prob",
        "cardiac_pred",
        "abnormal_prob",
    ] {
        assert!(predictions.column_by_name(c).is_some(), "predictions lacks {c}");
    }
    // Same key, same bytes: image paths are relative to the cache, wherever it lives.
    let images = pipe_core::table::str_col(&predictions, "image").unwrap();
    for i in 0..predictions.num_rows() {
        let image = images.value(i);
        assert!(image.starts_with("entries/"), "{image}");
        assert!(p.path("cache").join(image).is_file(), "{image}");
    }
    let report = std::fs::read_to_string(ev.join("report.html")).unwrap();
    let gradcams: Vec<_> = std::fs::read_dir(ev.join("gradcam")).unwrap().flatten().collect();
    assert_eq!(gradcams.len(), 4);
    for f in ["roc.png", "history_train.png"] {
        assert!(ev.join(f).is_file(), "{f} missing");
        assert!(report.contains(f), "report.html does not link {f}");
    }
    for g in &gradcams {
        let name = format!("gradcam/{}", g.file_name().to_string_lossy());
        assert!(report.contains(&name), "report.html does not link {name}");
    }
    report_renders_in_chromium(&ev, &predictions);

    // Cached: a second run does nothing.
    assert!(p.pipe(&["run", "pipelines/t.yaml"]).ok().ran().is_empty());

    // Only evaluate's params changed: evaluate reruns, train does not.
    let yaml = std::fs::read_to_string(p.path("pipelines/t.yaml")).unwrap();
    let best_f1 = yaml.replace("gradcam: 4", "gradcam: 2, threshold: best_f1, tta: [shift]");
    p.write("pipelines/t.yaml", &best_f1);
    let r = p.pipe(&["run", "pipelines/t.yaml"]).ok();
    assert_eq!(r.ran(), ["evaluate"], "{}", r.stdout);
    let ev2 = entry(&p, "pipelines/t.yaml", "evaluate.metrics");
    let (_, f1_best, threshold) = metric(&ev2, "cardiac");
    assert!(threshold.unwrap() != 0.5 || f1_best >= metric(&ev, "cardiac").1);
    assert!(log_of(&ev2).contains("view(s)"), "{}", log_of(&ev2));

    // Changing the loss reruns train and evaluate only; ASL and DBL train too.
    for loss in ["asl", "dbl"] {
        p.write(
            "pipelines/t.yaml",
            &best_f1.replace("epochs: 40", &format!("epochs: 6, loss: {loss}")),
        );
        let r = p.pipe(&["run", "pipelines/t.yaml"]).ok();
        assert_eq!(r.ran(), ["evaluate", "train"], "{}", r.stdout);
        let log = log_of(&entry(&p, "pipelines/t.yaml", "train"));
        assert!(log.contains(&format!("loss {loss}")), "{log}");
    }

    // Fine-tuning from the first model's weights with a frozen backbone, and an ensemble
    // of both models in a second evaluate stage.
    std::fs::copy(dir.join("best.safetensors"), p.path("tiny.safetensors")).unwrap();
    let more = format!(
        "  finetune:\n    kind: train\n    inputs: [split.split, label.labels, convert.images]\n    params: {{ architecture: tiny, image_size: 64, batch_size: 32, epochs: 2, eval_every: 20, pretrained: {}, freeze_backbone: true }}\n  ensemble:\n    kind: evaluate\n    inputs: [train, finetune, split.split, label.labels, convert.images]\n    params: {{ bootstrap: 100, gradcam: 1 }}\n",
        p.path("tiny.safetensors").display()
    );
    p.write("pipelines/t.yaml", &format!("{best_f1}{more}"));
    let r = p.pipe(&["run", "pipelines/t.yaml"]).ok();
    // train is back at its first params, which are still cached.
    assert_eq!(r.ran(), ["ensemble", "finetune"], "{}", r.stdout);
    let ft = log_of(&entry(&p, "pipelines/t.yaml", "finetune"));
    assert!(ft.contains("pretrained"), "{ft}");
    assert!(ft.contains("froze"), "{ft}");
    let ens = entry(&p, "pipelines/t.yaml", "ensemble.metrics");
    assert!(log_of(&ens).contains("2 model(s)"), "{}", log_of(&ens));
    let (ens_auc, _, _) = metric(&ens, "macro");
    assert!(ens_auc.unwrap() >= 0.8, "ensemble macro AUC {ens_auc:?}");
}

/// The paper's four architectures through the pipeline at their smallest sizes on the
/// CPU: a few steps of train, then evaluate with Grad-CAM on each (the paper's settings
/// themselves — EfficientNet-B2 at 768 px, 160 epochs — are for a GPU).
#[test]
fn the_paper_architectures_train_and_evaluate_on_the_cpu() {
    if worker().is_none() {
        return;
    }
    let p = Project::new();
    synth(&p.path("hosp"), 80, 96);
    let mut extra = String::from(
        "  train:\n    params: { architecture: tiny, epochs: 1 }\n  evaluate:\n    params: { bootstrap: 50, gradcam: 1 }\n",
    );
    let archs = [
        ("resnet50", 32),
        ("densenet121", 32),
        ("inception_v3", 75),
        ("efficientnet_b2", 32),
    ];
    for (arch, size) in archs {
        extra.push_str(&format!(
            "  {arch}:\n    kind: train\n    inputs: [split.split, label.labels, convert.images]\n    params: {{ architecture: {arch}, image_size: {size}, batch_size: 16, epochs: 1, eval_every: 100, workers: 1 }}\n  eval_{arch}:\n    kind: evaluate\n    inputs: [{arch}, split.split, label.labels, convert.images]\n    params: {{ bootstrap: 50, gradcam: 2, batch_size: 8 }}\n"
        ));
    }
    phutho_on_hospital(&p, "a", 96, &extra);
    let t = Instant::now();
    let r = p.pipe(&["run", "pipelines/a.yaml"]).ok();
    eprintln!("{:.1} s\n{}", t.elapsed().as_secs_f64(), r.stdout);
    for (arch, _) in archs {
        let dir = entry(&p, "pipelines/a.yaml", arch);
        let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
        assert!(config.contains(&format!("\"architecture\": \"{arch}\"")), "{config}");
        let ev = entry(&p, "pipelines/a.yaml", &format!("eval_{arch}.metrics"));
        let (auc, f1, _) = metric(&ev, "macro");
        assert!(f1.is_finite() && auc.is_none_or(f64::is_finite), "{arch}: {auc:?} {f1}");
        let cams = std::fs::read_dir(ev.join("gradcam")).unwrap().count();
        assert_eq!(cams, 2, "{arch}: {cams} Grad-CAM pictures");
    }
}

/// U-Ignore end to end: a labels table whose uncertain labels are flipped (a `sql`
/// stage) trains, under `uncertain: ignore`, to the very same weights as the original
/// — the masked labels have no say — while as labelled the weights differ. Under
/// `ones_lsr` the uncertain labels are counted and drawn, and the run says so.
#[test]
fn uncertain_labels_under_u_ignore_have_no_say() {
    if worker().is_none() {
        return;
    }
    let p = Project::new();
    synth(&p.path("hosp"), 150, 32);
    let labels = ["chest_wall", "pleura", "parenchyma", "cardiac", "abnormal"];
    let flipped: Vec<String> = labels
        .iter()
        .map(|l| format!("CASE WHEN {l}_uncertain THEN NOT {l} ELSE {l} END AS {l}"))
        .chain(labels.iter().map(|l| format!("{l}_uncertain")))
        .collect();
    let train = |name: &str, labels: &str, policy: &str| {
        format!(
            "  {name}:\n    kind: train\n    inputs: [split.split, {labels}, convert.images]\n    params: {{ architecture: tiny, image_size: 32, batch_size: 16, epochs: 2, eval_every: 100, workers: 1, uncertain: {policy} }}\n"
        )
    };
    let extra = format!(
        "  flipped:\n    kind: sql\n    inputs: [label.labels]\n    params:\n      output: labels\n      query: \"SELECT sop_instance_uid, patient_id, {} FROM labels\"\n{}{}{}{}{}",
        flipped.join(", "),
        train("ignore_a", "label.labels", "ignore"),
        train("ignore_b", "flipped.labels", "ignore"),
        train("labelled_a", "label.labels", "as_labelled"),
        train("labelled_b", "flipped.labels", "as_labelled"),
        train("lsr", "label.labels", "ones_lsr"),
    );
    phutho_on_hospital(&p, "u", 32, &extra);
    let mut args = vec!["run", "pipelines/u.yaml"];
    for t in ["ignore_a", "ignore_b", "labelled_a", "labelled_b", "lsr"] {
        args.extend(["--until", t]);
    }
    let r = p.pipe(&args).ok();
    let uncertain = counters(&r, "ignore_a")["uncertain_train_labels"];
    assert!(uncertain > 0, "{}", r.stdout);
    assert_eq!(counters(&r, "lsr")["uncertain_train_labels"], uncertain);
    let weights = |t: &str| std::fs::read(entry(&p, "pipelines/u.yaml", t).join("last.safetensors")).unwrap();
    assert_eq!(
        weights("ignore_a"),
        weights("ignore_b"),
        "U-Ignore: flipped uncertain labels changed the weights"
    );
    assert_ne!(
        weights("labelled_a"),
        weights("labelled_b"),
        "as labelled, the flip must matter"
    );
    assert!(log_of(&entry(&p, "pipelines/u.yaml", "lsr")).contains("policies chest_wall: OnesLsr"));
}

/// Conditional training and unconditional inference (Pham et al.) on the Phu Tho
/// hierarchy (the four regions under `abnormal`): train leaves a region out where the
/// image is not abnormal, and evaluate with the hierarchy scores p(region) =
/// p(region | abnormal) · p(abnormal) — the product of the same model's raw outputs,
/// which an evaluate without it reports.
#[test]
fn hierarchical_training_and_inference() {
    if worker().is_none() {
        return;
    }
    let p = Project::new();
    synth(&p.path("hosp"), 120, 32);
    let h = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("stages/train/phutho_hierarchy.yaml");
    let extra = format!(
        "  train:\n    params: {{ architecture: tiny, image_size: 32, batch_size: 16, epochs: 2, eval_every: 100, workers: 1, hierarchy: {h} }}\n  raw:\n    kind: evaluate\n    inputs: [train, split.split, label.labels, convert.images]\n    params: {{ bootstrap: 20, gradcam: 0 }}\n  unconditional:\n    kind: evaluate\n    inputs: [train, split.split, label.labels, convert.images]\n    params: {{ bootstrap: 20, gradcam: 0, hierarchy: {h} }}\n",
        h = h.display()
    );
    // The second phase: the backbone frozen, the last layer retrained on all data.
    let extra = format!(
        "{extra}  all_data:\n    kind: train\n    inputs: [train, split.split, label.labels, convert.images]\n    params: {{ architecture: tiny, image_size: 32, batch_size: 16, epochs: 1, eval_every: 100, workers: 1, freeze_backbone: true }}\n"
    );
    phutho_on_hospital(&p, "h", 32, &extra);
    let r = p
        .pipe(&[
            "run",
            "pipelines/h.yaml",
            "--until",
            "raw",
            "--until",
            "unconditional",
            "--until",
            "all_data",
        ])
        .ok();
    assert!(counters(&r, "train")["conditioned_out"] > 0, "{}", r.stdout);
    // It started from the first phase's best checkpoint and changed only the head.
    let first = safetensors(&entry(&p, "pipelines/h.yaml", "train").join("best.safetensors"));
    let second = safetensors(&entry(&p, "pipelines/h.yaml", "all_data").join("last.safetensors"));
    assert_eq!(first.keys().collect::<Vec<_>>(), second.keys().collect::<Vec<_>>());
    let changed: Vec<&String> = first.keys().filter(|k| first[*k] != second[*k]).collect();
    assert!(!changed.is_empty(), "the head did not train");
    assert!(
        changed.iter().all(|k| k.starts_with("head.")),
        "frozen backbone changed: {changed:?}"
    );
    assert!(log_of(&entry(&p, "pipelines/h.yaml", "all_data")).contains("froze "));
    let read = |t: &str| {
        pipe_core::table::read_batch(std::path::Path::new(
            p.pipe(&["path", "pipelines/h.yaml", t]).ok().stdout.trim(),
        ))
        .unwrap()
    };
    let (raw, un) = (read("raw.predictions"), read("unconditional.predictions"));
    assert_eq!(raw.num_rows(), un.num_rows());
    assert!(raw.num_rows() > 10);
    let col =
        |b: &arrow::array::RecordBatch, c: &str| pipe_core::table::f64_col(b, &format!("{c}_prob")).unwrap().clone();
    let abnormal = col(&raw, "abnormal");
    for region in ["chest_wall", "pleura", "parenchyma", "cardiac"] {
        let (given, scored) = (col(&raw, region), col(&un, region));
        for i in 0..raw.num_rows() {
            let expect = given.value(i) * abnormal.value(i);
            assert!(
                (scored.value(i) - expect).abs() < 1e-6,
                "{region} row {i}: {} vs {expect}",
                scored.value(i)
            );
            assert!(scored.value(i) <= col(&un, "abnormal").value(i) + 1e-12);
        }
    }
}

/// The tensors of a .safetensors file by name, as bytes (8-byte header length, JSON
/// header with each tensor's data offsets, data).
fn safetensors(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let (a, b) = (
                v["data_offsets"][0].as_u64().unwrap() as usize,
                v["data_offsets"][1].as_u64().unwrap() as usize,
            );
            (k.clone(), data[a..b].to_vec())
        })
        .collect()
}

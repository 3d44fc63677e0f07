//! `matrix:` sweeps end to end on the CPU: a 2×2 train matrix on the synthetic
//! hospital, evaluate fanning out with it, `pipe metrics` printing one line per variant
//! with its intervals, one variant's param changed (rerunning that variant only), and
//! `pipe metrics diff` between two cached results.

mod common;
use common::*;

const SWEEP: &str = "  train:\n    params: { architecture: tiny, batch_size: 32, epochs: 2, lr: 0.003, warmup_steps: 5, eval_every: 20 }\n    matrix:\n      loss: [bce, asl]\n      image_size: [32, 48]\n  evaluate:\n    params: { bootstrap: 100, gradcam: 1 }\n";

const VARIANTS: [&str; 4] = ["bce-32", "bce-48", "asl-32", "asl-48"];

#[test]
fn a_two_by_two_matrix_runs_each_variant_and_metrics_shows_them() {
    if worker().is_none() {
        return;
    }
    let p = Project::new();
    synth(&p.path("hosp"), 120, 64);
    phutho_on_hospital(&p, "m", 64, SWEEP);

    let r = p.pipe(&["run", "pipelines/m.yaml"]).ok();
    let mut want: Vec<String> = VARIANTS
        .iter()
        .flat_map(|v| [format!("train@{v}"), format!("evaluate@{v}")])
        .collect();
    want.sort();
    let mut ran: Vec<String> = r.ran().into_iter().filter(|s| s.contains('@')).collect();
    ran.sort();
    assert_eq!(ran, want, "{}", r.stdout);
    // Each variant trained with its own values.
    for v in VARIANTS {
        let config = std::fs::read_to_string(
            std::path::Path::new(
                p.pipe(&["path", "pipelines/m.yaml", &format!("train@{v}")])
                    .ok()
                    .stdout
                    .trim(),
            )
            .with_file_name("config.json"),
        )
        .unwrap();
        let (loss, size) = v.split_once('-').unwrap();
        assert!(config.contains(&format!("\"loss\": \"{loss}\"")), "{v}: {config}");
        assert!(config.contains(&format!("\"image_size\": {size}")), "{v}: {config}");
    }

    let shown = p.pipe(&["metrics", "pipelines/m.yaml"]).ok().stdout;
    eprintln!("{shown}");
    let rows: Vec<&str> = shown.lines().filter(|l| l.starts_with("evaluate@")).collect();
    assert_eq!(rows.len(), 4, "{shown}");
    for (row, v) in rows.iter().zip(VARIANTS) {
        assert!(row.starts_with(&format!("evaluate@{v} ")), "{shown}");
        // AUC, F1, sensitivity and specificity each with an interval.
        assert!(row.matches(" [").count() >= 3, "no intervals: {row}");
    }
    let cardiac = p
        .pipe(&["metrics", "pipelines/m.yaml", "--label", "cardiac"])
        .ok()
        .stdout;
    assert!(cardiac.starts_with("cardiac, 95%"), "{cardiac}");

    // One variant's param (an include matching it): that variant reruns, no other.
    let before = p
        .pipe(&["path", "pipelines/m.yaml", "evaluate@asl-48.metrics"])
        .ok()
        .stdout;
    let kept = p.path("asl-48-before.parquet");
    std::fs::copy(before.trim(), &kept).unwrap();
    let yaml = std::fs::read_to_string(p.path("pipelines/m.yaml")).unwrap();
    p.write(
        "pipelines/m.yaml",
        &yaml.replace(
            "      image_size: [32, 48]\n",
            "      image_size: [32, 48]\n      include: [{ loss: asl, image_size: 48, lr: 0.01 }]\n",
        ),
    );
    let r = p.pipe(&["run", "pipelines/m.yaml"]).ok();
    assert_eq!(r.ran(), ["evaluate@asl-48", "train@asl-48"], "{}", r.stdout);
    assert!(p.pipe(&["run", "pipelines/m.yaml"]).ok().ran().is_empty());

    // The two cached results of that variant, metric by metric.
    let after = p
        .pipe(&["path", "pipelines/m.yaml", "evaluate@asl-48.metrics"])
        .ok()
        .stdout;
    let d = p
        .pipe(&["metrics", "diff", &kept.to_string_lossy(), after.trim()])
        .ok()
        .stdout;
    assert!(d.contains("b − a"), "{d}");
    let macro_auc = d
        .lines()
        .find(|l| l.starts_with("macro") && l.contains(" auc "))
        .unwrap();
    assert!(
        macro_auc.contains('[') && (macro_auc.contains('+') || macro_auc.contains('-')),
        "{d}"
    );
    // Two pipelines: stages of the same name are paired.
    let d = p
        .pipe(&["metrics", "diff", "pipelines/m.yaml", "pipelines/m.yaml"])
        .ok()
        .stdout;
    assert_eq!(d.matches("(a) vs ").count(), 4, "{d}");
}

/// A variant's param error points at the matrix value that set it.
#[test]
fn a_bad_matrix_value_is_reported_where_it_is_written() {
    let p = Project::new();
    p.write(
        "pipelines/p.yaml",
        "root: ..\nstages:\n  s:\n    kind: command\n    params: { run: [x], outputs: [split, labels, images] }\n  t:\n    kind: train\n    inputs: [s]\n    matrix:\n      loss: [bce, focal]\n",
    );
    let r = p.pipe(&["check", "pipelines/p.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr
            .contains("pipelines/p.yaml:10:13: params of stage `t@focal` (kind `train`): loss:"),
        "{}",
        r.stderr
    );
    p.write(
        "pipelines/p.yaml",
        "root: ..\nstages:\n  t:\n    kind: train\n    matrix:\n      loss: []\n",
    );
    let r = p.pipe(&["check", "pipelines/p.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("pipelines/p.yaml:6:13: stage `t`: matrix.loss: give a non-empty list of values"),
        "{}",
        r.stderr
    );
}

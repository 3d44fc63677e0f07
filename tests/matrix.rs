//! `matrix:` sweeps end to end on the CPU: pipelines/demo-experiments.yaml (a 2×2
//! train matrix) on a small synthetic hospital, evaluate fanning out with it, `pipe
//! metrics` printing one line per variant with its intervals, one variant's param
//! changed (rerunning that variant only), and `pipe metrics diff` between two cached
//! results and between two pipelines.

mod common;
use common::*;

/// Fewer epochs and replicates than the demo's, the demo's matrix as it is.
const SMALLER: &str =
    "  train:\n    params: { epochs: 2, eval_every: 20 }\n  evaluate:\n    params: { bootstrap: 100, gradcam: 1 }\n";

const VARIANTS: [&str; 4] = ["bce-48", "bce-64", "asl-48", "asl-64"];

#[test]
fn a_two_by_two_matrix_runs_each_variant_and_metrics_shows_them() {
    if worker().is_none() {
        return;
    }
    let p = Project::new();
    synth(&p.path("hosp"), 120, 64);
    phutho_on_hospital(&p, "m", 64, SMALLER);
    // The shipped demo sweep, on this hospital: m.yaml extends it instead of phutho.yaml.
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in ["demo.yaml", "demo-experiments.yaml"] {
        p.write(
            &format!("pipelines/{f}"),
            &std::fs::read_to_string(repo.join("pipelines").join(f)).unwrap(),
        );
    }
    let yaml = std::fs::read_to_string(p.path("pipelines/m.yaml")).unwrap();
    p.write(
        "pipelines/m.yaml",
        &yaml.replace("extend: phutho.yaml", "extend: demo-experiments.yaml"),
    );

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
    let metrics_of = |v: &str| {
        p.pipe(&["path", "pipelines/m.yaml", &format!("evaluate@{v}.metrics")])
            .ok()
            .stdout
            .trim()
            .to_string()
    };
    let kept = p.path("asl-64-before.parquet");
    std::fs::copy(metrics_of("asl-64"), &kept).unwrap();
    let yaml = std::fs::read_to_string(p.path("pipelines/m.yaml")).unwrap();
    let train = "  train:\n    params: { epochs: 2, eval_every: 20 }\n";
    assert!(yaml.contains(train), "{yaml}");
    p.write(
        "pipelines/m.yaml",
        &yaml.replace(
            train,
            &format!(
                "{train}    matrix:\n      loss: [bce, asl]\n      image_size: [48, 64]\n      include: [{{ loss: asl, image_size: 64, lr: 0.01 }}]\n"
            ),
        ),
    );
    let r = p.pipe(&["run", "pipelines/m.yaml"]).ok();
    assert_eq!(r.ran(), ["evaluate@asl-64", "train@asl-64"], "{}", r.stdout);
    assert!(p.pipe(&["run", "pipelines/m.yaml"]).ok().ran().is_empty());

    // The two cached results of that variant, metric by metric.
    let after = metrics_of("asl-64");
    let d = p
        .pipe(&["metrics", "diff", &kept.to_string_lossy(), &after])
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

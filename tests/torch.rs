//! LibTorch: the worker links it, `pipe` does not, and a torch stage runs end to end.
//!
//! The worker is its own package (worker/), built by `make test` beside `pipe`. Under
//! `make test` (PIPE_REQUIRE_TORCH=1) a missing worker fails these tests; a plain
//! `cargo test` without LibTorch skips them with a note.

mod common;
use common::*;

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

#[test]
fn filter_runs_a_torchscript_model_on_the_pixels() {
    if worker().is_none() {
        return;
    }
    let p = Project::new();
    synth(&p.path("hosp"), 80, 32);
    // A model whose output is the mean display value: checkable against pydicom.
    let script = format!(
        "import torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n        return x.mean(dim=[1, 2, 3])\ntorch.jit.trace(M(), torch.zeros(2, 1, 32, 32)).save('{}')\n",
        p.path("model.pt").display()
    );
    let out = std::process::Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The same preprocessing computed independently (pydicom + numpy, uncompressed files).
    let files: Vec<String> = walkdir::WalkDir::new(p.path("hosp/pacs"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .collect();
    let out = std::process::Command::new(python())
        .arg(fixture("display_mean.py"))
        .args(&files)
        .output()
        .unwrap();
    // Damaged files make pydicom fail: run it file by file only if the batch fails.
    let stdout = if out.status.success() {
        String::from_utf8(out.stdout).unwrap()
    } else {
        files
            .iter()
            .filter_map(|f| {
                let o = std::process::Command::new(python())
                    .arg(fixture("display_mean.py"))
                    .arg(f)
                    .output()
                    .unwrap();
                o.status.success().then(|| String::from_utf8(o.stdout).unwrap())
            })
            .collect()
    };
    let expected: std::collections::BTreeMap<String, f64> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["path"].as_str().unwrap().to_string(), v["mean"].as_f64().unwrap()))
        .collect();
    assert!(expected.len() > 50, "{} uncompressed files", expected.len());
    let mut means: Vec<f64> = expected.values().copied().collect();
    means.sort_by(f64::total_cmp);
    let threshold = means[means.len() / 2];
    p.write(
        "pipelines/m.yaml",
        &format!("name: m\nroot: ..\nstages:\n  collect:\n    kind: collect\n    params: {{ pacs: hosp/pacs, his: hosp/his }}\n  filter:\n    kind: filter\n    inputs: [collect.dicoms]\n    params: {{ method: model, model: model.pt, input_size: 32, output: probability, threshold: {threshold}, batch_size: 8 }}\n"),
    );
    let r = p.pipe(&["run", "pipelines/m.yaml"]).ok();
    assert_eq!(r.ran(), ["collect", "filter"]);
    let read = |t: &str| {
        pipe_core::table::read_batch(std::path::Path::new(
            p.pipe(&["path", "pipelines/m.yaml", t]).ok().stdout.trim(),
        ))
        .unwrap()
    };
    let (dicoms, kept, dropped) = (read("collect.dicoms"), read("filter.kept"), read("filter.dropped"));
    assert_eq!(kept.num_rows() + dropped.num_rows(), dicoms.num_rows());
    assert!(
        kept.num_rows() > 0 && dropped.num_rows() > 0,
        "threshold splits nothing"
    );
    let mut score = std::collections::BTreeMap::new();
    for (b, keep) in [(&kept, true), (&dropped, false)] {
        let (paths, s) = (
            pipe_core::table::str_col(b, "path").unwrap(),
            pipe_core::table::f64_col(b, "p_pa_chest").unwrap(),
        );
        for i in 0..b.num_rows() {
            assert_eq!(s.value(i) > threshold, keep);
            score.insert(p.path(paths.value(i)).display().to_string(), s.value(i));
        }
        assert!((0..b.num_rows()).all(|i| pipe_core::table::str_col(b, "method").unwrap().value(i) == "model"));
    }
    // Files collect rejected (no PatientID, …) have no score; all others are compared.
    let mut compared = 0;
    for (path, mean) in &expected {
        if let Some(ours) = score.get(path) {
            assert!(
                (ours - mean).abs() < 1e-4,
                "{path}: pipe says {ours}, pydicom + numpy {mean}"
            );
            compared += 1;
        }
    }
    assert!(compared > 50, "{compared} compared");

    // In 3 shards (each scoring whole batches of 8 in the worker): the same tables.
    let yaml = std::fs::read_to_string(p.path("pipelines/m.yaml")).unwrap();
    p.write(
        "pipelines/s.yaml",
        &yaml
            .replace("name: m\n", "name: s\ncache: cache_s\n")
            .replace("    kind: filter\n", "    kind: filter\n    shards: 3\n"),
    );
    let r = p.pipe(&["run", "pipelines/s.yaml"]).ok();
    assert_eq!(r.ran(), ["collect", "filter"]);
    let (a, b) = (tables(&p.path("cache")), tables(&p.path("cache_s")));
    assert_eq!(a.len(), 5);
    assert_eq!(a, b, "filter in shards differs");
}

/// The worker finds LibTorch by itself (an rpath to the torch it was built against):
/// no LD_LIBRARY_PATH in the environment of pipe or of the worker.
#[test]
fn a_torch_stage_runs_without_ld_library_path() {
    if worker().is_none() {
        return;
    }
    let p = Project::new();
    p.write(
        "pipelines/p.yaml",
        "name: t\nstages:\n  check:\n    kind: torch_check\n    params: { size: 32 }\n",
    );
    let out = p
        .command(&["run", "pipelines/p.yaml"])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("✓ check"), "{stdout}");
}

/// When LibTorch cannot be loaded, the stage fails saying so and how to fix it — and
/// the run does not also claim the stage "ran on the CPU". The worker here is a real
/// program whose LibTorch is gone: linked against a libtorch_cpu.so that is then
/// removed, so the message is the dynamic loader's own.
#[test]
fn a_worker_that_cannot_load_libtorch_says_what_to_do() {
    let p = Project::new();
    let dir = p.path("fake");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("t.c"), "int torch_stub(void) { return 0; }\n").unwrap();
    std::fs::write(
        dir.join("m.c"),
        "int torch_stub(void);\nint main(void) { return torch_stub(); }\n",
    )
    .unwrap();
    let cc = |args: &[&str]| {
        let out = std::process::Command::new("cc").args(args).current_dir(&dir).output();
        match out {
            Ok(o) => assert!(o.status.success(), "cc: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => panic!("this test needs a C compiler (cc), as building pipe-torch does: {e}"),
        }
    };
    cc(&["-shared", "-fPIC", "-o", "libtorch_cpu.so", "t.c"]);
    cc(&[
        "-o",
        "pipe-torch",
        "m.c",
        "-L.",
        "-ltorch_cpu",
        "-Wl,-rpath,/nonexistent/torch/lib",
    ]);
    std::fs::remove_file(dir.join("libtorch_cpu.so")).unwrap();
    p.write(
        "pipelines/p.yaml",
        "name: t\nstages:\n  check:\n    kind: torch_check\n    resources: { gpu: 1 }\n    params: { size: 32 }\n",
    );
    let out = p
        .command(&["run", "pipelines/p.yaml", "--gpus", "0"])
        .env("PIPE_TORCH_WORKER", dir.join("pipe-torch"))
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("cannot load LibTorch"), "{text}");
    assert!(text.contains("libtorch_cpu.so"), "{text}");
    assert!(text.contains("make install"), "{text}");
    assert!(!text.contains("ran on the CPU"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

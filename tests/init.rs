//! `pipe init`: a project outside the tool's repository, run to the end.

mod common;
use common::*;

#[test]
fn a_project_made_by_init_runs_to_the_end_with_no_file_named() {
    if worker().is_none() {
        return;
    }
    let p = Project::new();
    let made = p
        .pipe(&["init", "hospital", "--pacs", "exports/pacs", "--his", "exports/his"])
        .ok();
    assert!(made.stdout.contains("cd hospital && pipe run"), "{}", made.stdout);
    for f in [
        "pipe.yaml",
        "pipelines/phutho.yaml",
        "stages/label/lexicon.yaml",
        "stages/parse/chest_services.txt",
        ".gitignore",
    ] {
        assert!(p.path(&format!("hospital/{f}")).is_file(), "{f} missing");
    }
    // A second init does not overwrite the project.
    let again = p.pipe(&["init", "hospital"]);
    assert_ne!(again.code, 0);
    assert!(
        again.stderr.contains("hospital/pipe.yaml already exists"),
        "{}",
        again.stderr
    );

    synth(&p.path("hospital/exports"), 150, 64);
    // CPU-sized training, as the generated file's comment suggests.
    let pipeline = p.path("hospital/pipe.yaml");
    let mut text = std::fs::read_to_string(&pipeline).unwrap();
    text.push_str(
        "  convert:\n    params: { size: 64 }\n  train:\n    params: { architecture: tiny, image_size: 32, batch_size: 16, epochs: 1, eval_every: 5 }\n  evaluate:\n    params: { bootstrap: 50, gradcam: 1 }\n",
    );
    std::fs::write(&pipeline, text).unwrap();

    let in_project = |args: &[&str]| {
        let out = p
            .command(args)
            .current_dir(p.path("hospital"))
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "pipe {args:?}\n{stdout}\n{stderr}");
        stdout
    };
    let run = in_project(&["run"]);
    for stage in [
        "collect", "filter", "parse", "match", "label", "convert", "split", "train", "evaluate",
    ] {
        assert!(run.contains(&format!("✓ {stage} ")), "{stage} did not run:\n{run}");
    }
    // The cache is the project's, not the tool's.
    assert!(p.path("hospital/cache/entries").is_dir());
    let status = in_project(&["status"]);
    assert!(status.contains("hospital (pipe.yaml)"), "{status}");
    assert!(!status.contains("stale"), "{status}");
    let report = in_project(&["path", "evaluate.metrics"]);
    assert!(
        report
            .trim()
            .starts_with(&p.path("hospital/cache").display().to_string()),
        "{report}"
    );
}

#[test]
fn with_no_file_pipe_names_the_candidates() {
    let p = Project::new();
    let none = p.pipe(&["status"]);
    assert_ne!(none.code, 0);
    assert!(
        none.stderr.contains("no pipe.yaml here nor a pipeline in ./pipelines/"),
        "{}",
        none.stderr
    );
    assert!(none.stderr.contains("pipe init DIR"), "{}", none.stderr);
    p.write("pipelines/a.yaml", "name: a\nstages: {}\n");
    p.write("pipelines/b.yaml", "name: b\nstages: {}\n");
    let two = p.pipe(&["check"]);
    assert_ne!(two.code, 0);
    assert!(
        two.stderr
            .contains("pipelines/ has 2: name one (pipelines/a.yaml, pipelines/b.yaml)"),
        "{}",
        two.stderr
    );
    std::fs::remove_file(p.path("pipelines/b.yaml")).unwrap();
    assert!(p.pipe(&["check"]).ok().stdout.contains("pipelines/a.yaml: ok"));
}

/// `pipe kinds` lists every kind; `pipe kinds KIND` every param with type, default and
/// meaning, nested mappings included (parse's `fields:` was documented only in the
/// source). That these are exactly what validation accepts is checked in pipe-cxr.
#[test]
fn kinds_documents_every_param() {
    let p = Project::new();
    let all = p.pipe(&["kinds", "--json"]).ok();
    let kinds: serde_json::Value = serde_json::from_str(&all.stdout).unwrap();
    let names: Vec<&str> = kinds
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    for k in [
        "collect",
        "filter",
        "parse",
        "match",
        "label",
        "convert",
        "split",
        "train",
        "evaluate",
        "torch_check",
        "command",
    ] {
        assert!(names.contains(&k), "{k} missing from {names:?}");
    }
    for k in kinds.as_array().unwrap() {
        for param in k["params"].as_array().unwrap() {
            assert!(
                !param["about"].as_str().unwrap().is_empty(),
                "{}.{} undocumented",
                k["kind"],
                param["name"]
            );
        }
    }
    let parse = p.pipe(&["kinds", "parse"]).ok().stdout;
    assert!(
        parse.contains("  fields.description: string = \"DESCRIPTION\""),
        "{parse}"
    );
    assert!(parse.contains("report's description (what `label` reads)"), "{parse}");
    let train = p.pipe(&["kinds", "train"]).ok().stdout;
    assert!(train.contains("  epochs: integer = 5"), "{train}");
    assert!(train.contains("  loss: string = \"bce\""), "{train}");
    let typo = p.pipe(&["kinds", "trian"]);
    assert_ne!(typo.code, 0);
    assert!(typo.stderr.contains("did you mean `train`?"), "{}", typo.stderr);
}

/// A hospital's pipeline elsewhere that extends the tool's own pipelines/phutho.yaml
/// (which says `root: ..`) keeps its root and cache in its own folder: the tool's
/// repository is not where a project's results go.
#[test]
fn extending_the_tools_pipeline_keeps_root_and_cache_in_the_project() {
    let p = Project::new();
    let tool = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/phutho.yaml");
    p.write(
        "pipe.yaml",
        &format!(
            "name: hosp\nextend: {}\nstages:\n  collect:\n    params: {{ pacs: exports/pacs, his: exports/his }}\n",
            tool.display()
        ),
    );
    let status = p.pipe(&["status", "pipe.yaml"]).ok().stdout;
    let first = status.lines().next().unwrap_or("");
    let project = std::fs::canonicalize(p.dir.path()).unwrap();
    assert!(
        first.contains(&format!("cache {}/cache", project.display()))
            || first.contains(&format!("cache {}/cache", p.dir.path().display())),
        "{first}"
    );
    assert!(status.contains("waits for data: exports/pacs"), "{status}");
}

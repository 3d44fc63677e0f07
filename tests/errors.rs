//! Every class of pipeline mistake gives a short message with file:line:column.

mod common;
use common::*;

fn check(yaml: &str) -> String {
    let p = Project::new();
    p.write("data/x.txt", "x");
    p.write("pipelines/p.yaml", yaml);
    let r = p.pipe(&["check", "pipelines/p.yaml"]);
    assert_eq!(r.code, 2, "expected a config error\n{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.lines().count() <= 20, "more than a screen:\n{}", r.stderr);
    // Run refuses the same file before doing anything.
    let run = p.pipe(&["run", "pipelines/p.yaml"]);
    assert_eq!(run.code, 2);
    assert!(!p.path("cache/entries").exists());
    r.stderr
}

const OK_STAGE: &str = "  a:\n    kind: command\n    params:\n      run: [python3, scripts/emit.py, \"{out:out}\"]\n      outputs: [out]\n";

#[test]
fn unknown_kind_lists_valid_kinds() {
    let e = check(&format!("root: ..\nstages:\n{OK_STAGE}  b:\n    kind: trian\n"));
    assert!(
        e.contains("pipelines/p.yaml:9:11: unknown stage kind `trian` in stage `b`"),
        "{e}"
    );
    assert!(
        e.contains(
            "valid kinds: collect, deidentify, filter, parse, match, label, convert, chexpert, map_labels, vindr, split, qc, sql, train, evaluate, torch_check, command"
        ),
        "{e}"
    );
    assert!(e.contains("9 |     kind: trian"), "{e}");
}

#[test]
fn missing_input_stage_and_table() {
    let e = check(&format!(
        "root: ..\nstages:\n{OK_STAGE}  b:\n    kind: command\n    inputs: [a.nope, zzz]\n    params:\n      run: [x]\n"
    ));
    assert!(
        e.contains("pipelines/p.yaml:10:14: stage `b` takes input `a.nope`, but `a` has no table `nope`"),
        "{e}"
    );
    assert!(e.contains("`a` writes: out"), "{e}");
    assert!(
        e.contains("pipelines/p.yaml:10:22: stage `b` takes input `zzz`, but there is no stage `zzz`"),
        "{e}"
    );
    assert!(e.contains("2 errors"), "{e}");
}

#[test]
fn cycle_is_printed_as_a_path() {
    let stage = |n: &str, i: &str| {
        format!("  {n}:\n    kind: command\n    inputs: [{i}]\n    params:\n      run: [x]\n      outputs: [out]\n")
    };
    let e = check(&format!(
        "root: ..\nstages:\n{}{}{}",
        stage("a", "c"),
        stage("b", "a"),
        stage("c", "b")
    ));
    assert!(e.contains("the stages form a cycle: "), "{e}");
    let cycle = e.lines().find(|l| l.contains("cycle:")).unwrap();
    let path = cycle.split("cycle: ").nth(1).unwrap();
    let names: Vec<&str> = path.split(" -> ").collect();
    assert_eq!(names.len(), 4, "{e}");
    assert_eq!(names[0], names[3]);
    assert!(e.contains("pipelines/p.yaml:"), "{e}");
}

#[test]
fn params_that_do_not_fit_the_kind() {
    let e = check("root: ..\nstages:\n  a:\n    kind: command\n    params:\n      run: [x]\n      outputz: [out]\n");
    assert!(
        e.contains("pipelines/p.yaml:7:7: params of stage `a` (kind `command`): unknown field `outputz`"),
        "{e}"
    );
    let e = check("root: ..\nstages:\n  a:\n    kind: command\n    params:\n      run: [x]\n      threads: many\n");
    assert!(
        e.contains("pipelines/p.yaml:7:16: params of stage `a` (kind `command`): invalid type: string \"many\""),
        "{e}"
    );
    let e = check("root: ..\nstages:\n  a:\n    kind: command\n    params: {}\n");
    assert!(
        e.contains("pipelines/p.yaml:5:13: params of stage `a` (kind `command`): missing field `run`"),
        "{e}"
    );
}

#[test]
fn missing_referenced_file_is_data_to_wait_for_not_an_error() {
    let p = Project::new();
    p.write("data/x", "x");
    p.write(
        "pipelines/p.yaml",
        "root: ..\nstages:\n  a:\n    kind: command\n    params:\n      run: [x]\n      files: [data, scripts/nope.py]\n  b:\n    kind: command\n    inputs: [a]\n    params:\n      run: [x]\n",
    );
    // The graph can be looked at before the data exists.
    let c = p.pipe(&["check", "pipelines/p.yaml"]).ok();
    assert!(
        c.stdout.contains("pipelines/p.yaml:7:21: stage `a`: `files[1]` names"),
        "{}",
        c.stdout
    );
    assert!(
        c.stdout.contains("scripts/nope.py, which does not exist"),
        "{}",
        c.stdout
    );
    p.pipe(&["dag", "pipelines/p.yaml"]).ok();
    let s = p.pipe(&["status", "pipelines/p.yaml"]).ok();
    assert!(
        s.stdout.contains("waits for data: scripts/nope.py does not exist"),
        "{}",
        s.stdout
    );
    assert!(s.stdout.contains("waits for `a`"), "{}", s.stdout);
    p.pipe(&["run", "pipelines/p.yaml", "--dry-run"]).ok();
    // Only running refuses, before anything runs, naming the path.
    let r = p.pipe(&["run", "pipelines/p.yaml"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("stage `a` cannot run: scripts/nope.py does not exist"),
        "{}",
        r.stderr
    );
    assert!(!p.path("cache/entries").exists());
}

#[test]
fn yaml_syntax_and_unknown_keys() {
    let e = check("root: ..\nstages:\n  a:\n    kind: command\n   params: [\n");
    assert!(e.contains("pipelines/p.yaml:5:"), "{e}");
    let e = check("root: ..\nstagez: {}\n");
    assert!(e.contains("pipelines/p.yaml:2:1: unknown field `stagez`"), "{e}");
    let e = check("root: ..\nstages:\n  a:\n    kind: command\n    param: {}\n");
    assert!(
        e.contains("pipelines/p.yaml:5:5: stages.a: unknown field `param`")
            || e.contains("pipelines/p.yaml:5:5: unknown field `param`"),
        "{e}"
    );
}

#[test]
fn extend_of_a_missing_file() {
    let e = check("extend: base.yaml\nstages: {}\n");
    assert!(
        e.contains("pipelines/p.yaml:1:9: cannot read pipeline file pipelines/base.yaml"),
        "{e}"
    );
}

#[test]
fn a_stage_or_key_written_twice_names_both_places() {
    let e = check(&format!(
        "root: ..\nstages:\n{OK_STAGE}{}  b:\n    kind: command\n    params: {{ run: [x], run: [y] }}\n",
        OK_STAGE.replace("emit.py", "other.py")
    ));
    assert!(
        e.contains("pipelines/p.yaml:8:3: `stages.a` is written twice; it was first written at pipelines/p.yaml:3:3"),
        "{e}"
    );
    assert!(
        e.contains("pipelines/p.yaml:15:25: `stages.b.params.run` is written twice; it was first written at pipelines/p.yaml:15:15"),
        "{e}"
    );
    assert!(e.contains("2 errors"), "{e}");
}

#[test]
fn every_params_error_points_at_its_own_key() {
    let e = check(
        "root: ..\nstages:\n  t:\n    kind: train\n    params:\n      architecture: vgg\n      loss: focal\n      lr: 0\n",
    );
    assert!(
        e.contains("pipelines/p.yaml:6:21: params of stage `t` (kind `train`): architecture: `vgg`"),
        "{e}"
    );
    assert!(
        e.contains("pipelines/p.yaml:7:13: params of stage `t` (kind `train`): loss: `focal`"),
        "{e}"
    );
    assert!(
        e.contains("pipelines/p.yaml:8:11: params of stage `t` (kind `train`): lr: must be a number > 0"),
        "{e}"
    );
    assert!(e.contains("3 errors"), "{e}");
}

#[test]
fn values_that_would_fail_later_are_refused_now() {
    // A negative window (match used to panic on it), NaN (null in JSON: a feature off),
    // a name that walks out of the cache.
    let e = check(
        "name: \"../../x\"\nroot: ..\nstages:\n  m:\n    kind: match\n    params:\n      max_delay_hours: -1\n  f:\n    kind: filter\n    params:\n      method: tags\n      threshold: .nan\n",
    );
    assert!(
        e.contains("pipelines/p.yaml:1:7: pipeline name `../../x` may only use"),
        "{e}"
    );
    assert!(e.contains("pipelines/p.yaml:7:24: params of stage `m` (kind `match`): max_delay_hours must be a number of hours > 0, got -1"), "{e}");
    assert!(
        e.contains("pipelines/p.yaml:12:18: params of stage `f` (kind `filter`): .nan is not a number"),
        "{e}"
    );
}

#[test]
fn inputs_a_kind_needs_and_parts_the_split_makes() {
    let e = check(
        "root: ..\nstages:\n  s:\n    kind: split\n    params: { ratios: [0.7, 0.3], parts: [train, validation] }\n  t:\n    kind: train\n    inputs: [s.split]\n    params: { architecture: tiny }\n  e:\n    kind: evaluate\n    inputs: [t, s]\n    params: { part: test }\n",
    );
    assert!(
        e.contains(
            "pipelines/p.yaml:3:3: stage `s` (kind `split`) reads `labels`, `images`, which none of its inputs gives"
        ),
        "{e}"
    );
    assert!(
        e.contains(
            "pipelines/p.yaml:8:13: stage `t` (kind `train`) reads `labels`, `images`, which none of its inputs gives"
        ),
        "{e}"
    );
    assert!(
        e.contains("pipelines/p.yaml:13:21: stage `e` (kind `evaluate`): part: `test` is not a part of `s`, which makes: train, validation"),
        "{e}"
    );
    // The paper's setting scores the part that chose the checkpoint: only when asked.
    let paper = "root: ..\nstages:\n  s:\n    kind: command\n    params: { run: [x], outputs: [split, labels, images] }\n  t:\n    kind: train\n    inputs: [s]\n    params: { architecture: tiny }\n  e:\n    kind: evaluate\n    inputs: [t, s]\n    params: { part: validation, threshold: best_f1 }\n";
    let e = check(paper);
    assert!(
        e.contains("pipelines/p.yaml:13:21: params of stage `e` (kind `evaluate`): part: `validation` chose the best checkpoint (train's validation part) and tuned the best_f1 thresholds, so its scores would be optimistic"),
        "{e}"
    );
    assert!(e.contains("score_tuned_part: true"), "{e}");
    let p = Project::new();
    p.write(
        "pipelines/p.yaml",
        &paper.replace("threshold: best_f1", "threshold: best_f1, score_tuned_part: true"),
    );
    p.pipe(&["check", "pipelines/p.yaml"]).ok();
    let e = check(
        "root: ..\nstages:\n  s:\n    kind: command\n    params: { run: [x], outputs: [split, labels, images] }\n  e:\n    kind: evaluate\n    inputs: [s]\n",
    );
    assert!(
        e.contains("pipelines/p.yaml:8:13: stage `e` (kind `evaluate`): no train stage among the inputs"),
        "{e}"
    );
}

#[test]
fn a_cycle_made_in_an_extending_file_is_reported_there() {
    let p = Project::new();
    p.write(
        "pipelines/base.yaml",
        "root: ..\nstages:\n  a:\n    kind: command\n    params: { run: [x] }\n  b:\n    kind: command\n    inputs: [a]\n    params: { run: [x] }\n",
    );
    p.write(
        "pipelines/p.yaml",
        "extend: base.yaml\nstages:\n  a:\n    inputs: [b]\n",
    );
    let r = p.pipe(&["check", "pipelines/p.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("pipelines/p.yaml:4:14: the stages form a cycle"),
        "{}",
        r.stderr
    );
}

#[test]
fn extend_naming_a_fifo_is_refused_not_waited_on() {
    let p = Project::new();
    let fifo = p.path("pipelines/base.yaml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path of this test's directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    p.write("pipelines/p.yaml", "extend: base.yaml\nstages: {}\n");
    let mut child = p
        .command(&["check", "pipelines/p.yaml"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed().as_secs() > 10 {
            let _ = child.kill();
            panic!("pipe check hangs on a FIFO");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pipelines/base.yaml is not a regular file"));
}

#[test]
fn the_papers_pipeline_can_be_looked_at_before_its_data_exists() {
    let p = Project::new();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        !repo.join("data/hospital/pacs").exists(),
        "this test wants a clone without hospital data"
    );
    p.write(
        "pipelines/phutho.yaml",
        &std::fs::read_to_string(repo.join("pipelines/phutho.yaml"))
            .unwrap()
            .replace(
                "root: ..",
                &format!("root: {}\ncache: {}", repo.display(), p.path("cache").display()),
            ),
    );
    for args in [
        &["dag", "pipelines/phutho.yaml"][..],
        &["status", "pipelines/phutho.yaml"],
        &["check", "pipelines/phutho.yaml"],
        &["run", "pipelines/phutho.yaml", "--dry-run"],
    ] {
        let r = p.pipe(args).ok();
        assert!(r.stdout.contains("evaluate"), "{args:?}: {}", r.stdout);
    }
    let s = p.pipe(&["status", "pipelines/phutho.yaml"]).ok();
    assert!(
        squeeze(&s.stdout).contains("collect waits for data: data/hospital/pacs does not exist"),
        "{}",
        s.stdout
    );
    assert!(squeeze(&s.stdout).contains("train waits for `split`"), "{}", s.stdout);
    let r = p.pipe(&["run", "pipelines/phutho.yaml"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("stage `collect` cannot run: data/hospital/pacs does not exist"),
        "{}",
        r.stderr
    );
    assert!(!p.path("cache/entries").exists(), "something ran");
}

/// Every pipeline shipped in pipelines/ validates (their data may be missing: that is a
/// note, not an error), the paper's 7/3 setting included.
#[test]
fn every_shipped_pipeline_is_valid() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(repo.join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for f in files {
        let out = std::process::Command::new(pipe_bin())
            .arg("check")
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

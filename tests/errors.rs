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
        e.contains("valid kinds: collect, filter, parse, match, label, convert, split, command, torch_check"),
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

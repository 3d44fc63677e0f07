//! Early cutoff (issue 10 §3): a stage reruns only when the content of what it reads
//! changed, not when an upstream stage merely ran again.

mod common;
use common::*;

#[test]
fn readme_scenario_a_keyword_that_changes_no_label_reruns_label_only() {
    let p = Project::new();
    synth(&p.path("hosp"), 150, 32);
    phutho_on_hospital(&p, "d", 32, "");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let lexicon = std::fs::read_to_string(repo.join("stages/label/lexicon.yaml")).unwrap();
    p.write("lexicon.yaml", &lexicon);
    p.edit(
        "pipelines/d.yaml",
        "  label:\n    params: { overrides: ",
        &format!(
            "  label:\n    params: {{ lexicon: {}, overrides: ",
            p.path("lexicon.yaml").display()
        ),
    );
    p.pipe(&["run", "pipelines/d.yaml", "--until", "split"]).ok();

    // A radiologist adds a misspelling no report contains.
    p.edit(
        "lexicon.yaml",
        "  pleura:\n    headers:\n",
        "  pleura:\n    headers:\n      - mang phoii\n",
    );
    let s = p.pipe(&["status", "pipelines/d.yaml"]).ok();
    assert!(
        s.stdout.contains("file") && s.stdout.contains("lexicon.yaml changed"),
        "{}",
        s.stdout
    );
    assert!(squeeze(&s.stdout).contains("split waits for `label`"), "{}", s.stdout);
    let r = p.pipe(&["run", "pipelines/d.yaml", "--until", "split"]).ok();
    assert_eq!(r.ran(), ["label"], "{}", r.stdout);
    assert!(
        squeeze(&r.stdout).contains("split fresh (input label.labels unchanged)"),
        "{}",
        r.stdout
    );

    // A new DICOM without a new report (another study: a file with its SOP Instance UID
    // changed): parse reads only the HIS files, so it stays.
    let dicoms = pipe_core::table::read_batch(std::path::Path::new(
        p.pipe(&["path", "pipelines/d.yaml", "collect.dicoms"])
            .ok()
            .stdout
            .trim(),
    ))
    .unwrap();
    let (path, uid) = (
        pipe_core::table::str_col(&dicoms, "path").unwrap().value(0).to_string(),
        pipe_core::table::str_col(&dicoms, "sop_instance_uid")
            .unwrap()
            .value(0)
            .to_string(),
    );
    let mut other = uid.clone().into_bytes();
    let last = other.len() - 1;
    other[last] = if other[last] == b'9' { b'8' } else { other[last] + 1 };
    let bytes = std::fs::read(&path).unwrap();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(uid.as_bytes()) {
            out.extend_from_slice(&other);
            i += uid.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    std::fs::write(p.path("hosp/pacs/zz_new_study.dcm"), out).unwrap();
    let r = p.pipe(&["run", "pipelines/d.yaml", "--until", "split"]).ok();
    assert!(r.ran().contains(&"collect".to_string()), "{}", r.stdout);
    assert!(!r.ran().contains(&"parse".to_string()), "{}", r.stdout);
    assert!(
        squeeze(&r.stdout).contains("parse fresh (input collect.his_files unchanged)"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_forced_stage_whose_output_differs_makes_its_dependants_stale() {
    let p = Project::new();
    // `train` stands for any stage whose result differs from run to run (a checkpoint
    // trained with another seed); `prepare` always writes the same table.
    p.write(
        "pipelines/p.yaml",
        "name: t\nroot: ..\nstages:\n  prepare:\n    kind: command\n    params:\n      run: [python3, scripts/emit.py, \"{out:out}\"]\n      outputs: [out]\n  train:\n    kind: command\n    inputs: [prepare]\n    params:\n      run: [sh, -c, \"python3 scripts/emit.py {out:out} --value $(date +%s%N)\"]\n      outputs: [out]\n  evaluate:\n    kind: command\n    inputs: [train]\n    params:\n      run: [python3, scripts/emit.py, \"{out:out}\", --input, \"{in:out}\"]\n      outputs: [out]\n",
    );
    p.pipe(&["run", "pipelines/p.yaml"]).ok();
    let r = p.pipe(&["run", "pipelines/p.yaml", "--force", "train"]).ok();
    assert_eq!(r.ran(), ["evaluate", "train"], "{}", r.stdout);
    let s = p.pipe(&["status", "pipelines/p.yaml"]).ok();
    assert!(!s.stdout.contains("stale"), "{}", s.stdout);
    // A forced stage that makes the same output: its dependants stay fresh.
    let r = p.pipe(&["run", "pipelines/p.yaml", "--force", "prepare"]).ok();
    assert_eq!(r.ran(), ["prepare"], "{}", r.stdout);
    assert!(
        squeeze(&r.stdout).contains("train fresh (input prepare unchanged)"),
        "{}",
        r.stdout
    );
    // The dry run says what may happen.
    p.edit(
        "pipelines/p.yaml",
        "[python3, scripts/emit.py, \"{out:out}\"]\n      outputs: [out]\n  train",
        "[python3, scripts/emit.py, \"{out:out}\", --rows, \"4\"]\n      outputs: [out]\n  train",
    );
    let dry = p.pipe(&["run", "pipelines/p.yaml", "--dry-run"]).ok();
    assert!(dry.stdout.contains("→ prepare"), "{}", dry.stdout);
    assert!(
        squeeze(&dry.stdout).contains("? train may run: waits for `prepare`"),
        "{}",
        dry.stdout
    );
}

#[test]
fn until_with_a_misspelled_stage_suggests_the_right_one() {
    let p = Project::new();
    p.write(
        "pipelines/p.yaml",
        &format!("name: t\nroot: ..\nstages:\n{}", emit_stage("train", "A", None, "")),
    );
    let r = p.pipe(&["run", "pipelines/p.yaml", "--until", "trian"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("no stage `trian`"), "{}", r.stderr);
    assert!(r.stderr.contains("did you mean `train`?"), "{}", r.stderr);
}

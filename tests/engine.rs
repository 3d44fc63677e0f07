//! The engine end to end through the `pipe` binary: caching, staleness and its reasons,
//! crash and rerun, verify, concurrent runs, selection flags.

mod common;
use common::*;

fn chain_pipeline(b_value: &str) -> String {
    format!(
        "name: t\nroot: ..\nstages:\n{}{}{}  d:\n    kind: command\n    params:\n      run: [python3, scripts/emit.py, \"{{out:out}}\", --value, d]\n      outputs: [out]\n      files: [scripts/emit.py, data]\n",
        emit_stage("a", "A", None, ""),
        emit_stage("b", b_value, Some("a.out"), ""),
        emit_stage("c", "C", Some("b.out"), ""),
    )
}

fn project() -> Project {
    let p = Project::new();
    p.write("data/x.txt", "x").write("data/sub/y.txt", "y");
    p.write("pipelines/p.yaml", &chain_pipeline("B"));
    p
}

#[test]
fn unchanged_pipeline_runs_nothing_and_params_rerun_descendants_only() {
    let p = project();
    let first = p.pipe(&["run", "pipelines/p.yaml"]).ok();
    assert_eq!(first.ran(), ["a", "b", "c", "d"]);
    let second = p.pipe(&["run", "pipelines/p.yaml"]).ok();
    assert!(second.ran().is_empty(), "{}", second.stdout);
    assert!(
        second.stdout.contains("all 4 stages are fresh; nothing to run"),
        "{}",
        second.stdout
    );

    p.write("pipelines/p.yaml", &chain_pipeline("B2"));
    let status = p.pipe(&["status", "pipelines/p.yaml"]).ok();
    let line = |s: &str| {
        status
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(s))
            .unwrap()
            .to_string()
    };
    assert!(line("b ").contains("param `run` changed from"), "{}", status.stdout);
    assert!(line("b ").contains("\"B2\""), "{}", status.stdout);
    // c reads b's output: it may rerun, which is known once b has run.
    assert!(line("c ").contains("waits for `b`"), "{}", status.stdout);
    assert!(
        line("a ").contains("fresh") && line("d ").contains("fresh"),
        "{}",
        status.stdout
    );
    let json: serde_json::Value =
        serde_json::from_str(&p.pipe(&["status", "pipelines/p.yaml", "--json"]).ok().stdout).unwrap();
    let states: Vec<(&str, &str)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stage"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("a", "fresh"), ("b", "stale"), ("c", "waits"), ("d", "fresh")]);

    let third = p.pipe(&["run", "pipelines/p.yaml"]).ok();
    assert_eq!(third.ran(), ["b", "c"]);
    // Back to the old value: its entries are still cached, nothing runs, views follow.
    p.write("pipelines/p.yaml", &chain_pipeline("B"));
    assert!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran().is_empty());
    let view = p.path("cache/views/t/b/out.parquet");
    assert!(view.exists());
}

#[test]
fn referenced_files_count_by_content_not_mtime() {
    let p = project();
    p.pipe(&["run", "pipelines/p.yaml"]).ok();
    // Same content rewritten (new mtime): nothing reruns.
    p.write("data/x.txt", "x");
    p.write("scripts/emit.py", &std::fs::read_to_string(fixture("emit.py")).unwrap());
    let r = p.pipe(&["run", "pipelines/p.yaml"]).ok();
    assert!(r.ran().is_empty(), "{}", r.stdout);
    // New content in the tree: only d (which names `data`) reruns, with the reason.
    p.write("data/sub/y.txt", "changed");
    let status = p.pipe(&["status", "pipelines/p.yaml"]).ok();
    assert!(status.stdout.contains("directory data changed"), "{}", status.stdout);
    assert_eq!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran(), ["d"]);
    // A new file in the tree counts too.
    p.write("data/new.txt", "");
    assert_eq!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran(), ["d"]);
    // The script everyone names: every stage reruns.
    p.write(
        "scripts/emit.py",
        &(std::fs::read_to_string(fixture("emit.py")).unwrap() + "\n# edited\n"),
    );
    let status = p.pipe(&["status", "pipelines/p.yaml"]).ok();
    assert!(
        status.stdout.contains("file scripts/emit.py changed"),
        "{}",
        status.stdout
    );
    assert_eq!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran(), ["a", "b", "c", "d"]);
}

#[test]
fn killed_run_leaves_no_half_entry_and_verify_detects_flipped_bytes() {
    use std::os::unix::process::CommandExt;
    let p = Project::new();
    p.write("data/x.txt", "x");
    let slow = p.path("slow");
    p.write(
        "pipelines/p.yaml",
        &format!(
            "name: t\nroot: ..\nstages:\n{}{}",
            emit_stage("a", "A", None, ""),
            emit_stage("b", "B", Some("a.out"), &format!(", --slow-if, \"{}\"", slow.display()))
        ),
    );
    std::fs::write(&slow, "").unwrap();
    let mut child = p
        .command(&["run", "pipelines/p.yaml", "-q"])
        .process_group(0)
        .spawn()
        .unwrap();
    let started = p.path("slow.started");
    let t = std::time::Instant::now();
    while !started.exists() {
        assert!(t.elapsed().as_secs() < 60, "stage b never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SIGKILL the whole group: pipe and the stage's process, mid-write.
    unsafe_kill_group(child.id());
    let _ = child.wait();
    std::fs::remove_file(&slow).unwrap();

    let status = p.pipe(&["status", "pipelines/p.yaml"]).ok();
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with("a ") && l.contains("fresh")),
        "{}",
        status.stdout
    );
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with("b ") && l.contains("stale")),
        "{}",
        status.stdout
    );
    let r = p.pipe(&["run", "pipelines/p.yaml"]).ok();
    assert_eq!(r.ran(), ["b"]);
    assert!(
        !p.path("cache/tmp").read_dir().unwrap().any(|_| true),
        "tmp left behind"
    );
    let v = p.pipe(&["verify", "pipelines/p.yaml"]).ok();
    assert!(
        v.stdout.contains("2 entries checked: 2 intact, 0 damaged"),
        "{}",
        v.stdout
    );

    // Flip one byte in b's table.
    let path = p
        .pipe(&["path", "pipelines/p.yaml", "b"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let v = p.pipe(&["verify", "pipelines/p.yaml"]);
    assert_eq!(v.code, 1);
    assert!(v.stdout.contains("out.parquet: content changed"), "{}", v.stdout);
    assert!(v.stdout.contains("1 damaged"), "{}", v.stdout);
    let status = p.pipe(&["status", "pipelines/p.yaml"]).ok();
    assert!(status.stdout.contains("cache entry is gone"), "{}", status.stdout);
    assert_eq!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran(), ["b"]);
    assert!(
        p.pipe(&["verify", "pipelines/p.yaml"])
            .ok()
            .stdout
            .contains("0 damaged")
    );
}

fn unsafe_kill_group(pid: u32) {
    // SAFETY: plain kill(2) on a process group this test created.
    let rc = unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    assert_eq!(rc, 0, "kill failed");
}

#[test]
fn second_concurrent_run_waits_for_the_first() {
    let p = Project::new();
    let slow = p.path("slow");
    std::fs::write(&slow, "").unwrap();
    p.write(
        "pipelines/p.yaml",
        &format!(
            "name: t\nroot: ..\nstages:\n{}",
            emit_stage("a", "A", None, &format!(", --slow-if, \"{}\"", slow.display()))
        ),
    );
    let mut first = p.command(&["run", "pipelines/p.yaml", "-q"]).spawn().unwrap();
    let started = p.path("slow.started");
    while !started.exists() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let refused = p.pipe(&["run", "pipelines/p.yaml", "--no-wait"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("is in use by pipe (pid"), "{}", refused.stderr);
    let second = p
        .command(&["run", "pipelines/p.yaml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::fs::remove_file(&slow).unwrap();
    // The first run's stage would sleep 30 s; kill the run (its stage dies with it) so
    // the lock is released, as a crash would release it.
    first.kill().unwrap();
    first.wait().unwrap();
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("waiting for it to finish"), "{stderr}");
    assert!(stdout.contains("✓ a"), "{stdout}");
    assert!(
        p.pipe(&["verify", "pipelines/p.yaml"])
            .ok()
            .stdout
            .contains("1 intact, 0 damaged")
    );
}

#[test]
fn selection_flags_and_failures() {
    let p = project();
    let dry = p.pipe(&["run", "pipelines/p.yaml", "--dry-run"]).ok();
    assert!(
        dry.stdout.contains("→ a") && dry.stdout.contains("would run: never run"),
        "{}",
        dry.stdout
    );
    assert!(!p.path("cache/entries").exists());
    assert_eq!(
        p.pipe(&["run", "pipelines/p.yaml", "--until", "b"]).ok().ran(),
        ["a", "b"]
    );
    let only = p.pipe(&["run", "pipelines/p.yaml", "--only", "c"]).ok();
    assert_eq!(only.ran(), ["c"]);
    assert_eq!(
        p.pipe(&["run", "pipelines/p.yaml", "--force", "b"]).ok().ran(),
        ["b", "d"]
    );
    assert_eq!(
        p.pipe(&["run", "pipelines/p.yaml", "--from", "a", "--force", "a"])
            .ok()
            .ran(),
        ["a"]
    );

    // A failing stage: finished stages stay cached, descendants are skipped, and
    // --keep-going still runs the independent stage.
    let failing = chain_pipeline("B3")
        .replace("--value, \"B3\"", "--value, \"B3\", --fail")
        .replace("value, d]", "value, d2]");
    p.write("pipelines/p.yaml", &failing);
    let r = p.pipe(&["run", "pipelines/p.yaml", "--keep-going", "-j", "1"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("✗ b") && r.stdout.contains("exited with exit status: 3"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("emit.py: asked to fail"), "{}", r.stdout);
    assert!(
        r.stdout.contains("- c") && r.stdout.contains("input `b` failed"),
        "{}",
        r.stdout
    );
    assert_eq!(r.ran(), ["d"]);
    assert!(p.path("cache/logs/t/b.log").exists());
}

#[test]
fn extend_overrides_params_of_the_base_pipeline() {
    let p = project();
    p.write(
        "pipelines/child.yaml",
        "name: child\nextend: p.yaml\nstages:\n  b:\n    params:\n      env: { X: \"1\" }\n",
    );
    let r = p.pipe(&["run", "pipelines/child.yaml"]).ok();
    assert_eq!(r.ran(), ["a", "b", "c", "d"]);
    p.pipe(&["run", "pipelines/p.yaml"]).ok();
    // The base pipeline shares a, d (same keys) but not b, c.
    let status = p.pipe(&["status", "pipelines/child.yaml", "--json"]).ok();
    assert!(!status.stdout.contains("stale"), "{}", status.stdout);
    assert!(p.path("cache/views/child/b").exists() && p.path("cache/views/t/b").exists());
    let gc = p.pipe(&["gc", "pipelines/p.yaml", "pipelines/child.yaml"]).ok();
    assert!(gc.stdout.contains("0 unreferenced entries"), "{}", gc.stdout);
}

#[test]
fn gc_removes_unreferenced_entries_only_when_asked() {
    let p = project();
    p.pipe(&["run", "pipelines/p.yaml"]).ok();
    p.write("pipelines/p.yaml", &chain_pipeline("B2"));
    p.pipe(&["run", "pipelines/p.yaml"]).ok();
    let dry = p.pipe(&["gc", "pipelines/p.yaml"]).ok();
    assert!(dry.stdout.contains("2 unreferenced entries"), "{}", dry.stdout);
    assert_eq!(std::fs::read_dir(p.path("cache/entries")).unwrap().count(), 6);
    p.pipe(&["gc", "pipelines/p.yaml", "--delete"]).ok();
    assert_eq!(std::fs::read_dir(p.path("cache/entries")).unwrap().count(), 4);
    assert!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran().is_empty());
}

#[test]
fn a_referenced_file_edited_while_the_stage_runs_is_not_cached() {
    let p = Project::new();
    p.write("data/x.txt", "x");
    // The program itself edits the file its stage depends on, as a user saving it mid-run.
    p.write(
        "pipelines/p.yaml",
        "name: t\nroot: ..\nstages:\n  a:\n    kind: command\n    params:\n      run: [sh, -c, \"echo y > data/x.txt; python3 scripts/emit.py $PIPE_OUTPUT_OUT\"]\n      outputs: [out]\n      files: [scripts/emit.py, data/x.txt]\n",
    );
    let r = p.pipe(&["run", "pipelines/p.yaml"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("data/x.txt (files[1]) changed while the stage ran"),
        "{}",
        r.stdout
    );
    assert!(!p.path("cache/entries").exists() || std::fs::read_dir(p.path("cache/entries")).unwrap().count() == 0);
    // The file is stable now: the next run caches.
    p.write(
        "pipelines/p.yaml",
        &std::fs::read_to_string(p.path("pipelines/p.yaml"))
            .unwrap()
            .replace("echo y > data/x.txt; ", ""),
    );
    assert_eq!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran(), ["a"]);
}

/// An incremental stage reuses its previous result only if the same kind version made
/// it: after a version bump (a fixed reader), every file is read again. Simulated by
/// marking the previous entry as made by version 0.
#[test]
fn previous_results_of_another_kind_version_are_not_reused() {
    let p = Project::new();
    synth(&p.path("hosp"), 20, 32);
    p.write(
        "pipelines/c.yaml",
        "name: c\nroot: ..\nstages:\n  collect:\n    kind: collect\n    params: { pacs: hosp/pacs, his: hosp/his }\n",
    );
    p.pipe(&["run", "pipelines/c.yaml"]).ok();
    let table = p.pipe(&["path", "pipelines/c.yaml", "collect.dicoms"]).ok().stdout;
    let manifest = std::path::Path::new(table.trim()).with_file_name("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&text).unwrap();
    m["version"] = 0.into();
    std::fs::write(&manifest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    // A new file makes collect run again, with that entry as its previous result.
    let dicoms = pipe_core::table::read_batch(std::path::Path::new(table.trim())).unwrap();
    let first = pipe_core::table::str_col(&dicoms, "path").unwrap().value(0).to_string();
    std::fs::copy(p.path(&first), p.path("hosp/pacs/copy.dcm")).unwrap();
    let run = p.pipe(&["run", "pipelines/c.yaml"]).ok();
    assert!(run.stdout.contains("files_reused=0"), "{}", run.stdout);
}

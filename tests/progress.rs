//! What a person sees while a run goes on: `pipe status` during a run, Ctrl-C, and
//! progress in a log without a terminal.

mod common;
use common::*;

/// A pipeline of `a` (quick) then `b` (slow while the file `slow` exists).
fn slow_project() -> Project {
    let p = Project::new();
    p.write("scripts/emit.py", &std::fs::read_to_string(fixture("emit.py")).unwrap());
    let slow = p.path("slow");
    std::fs::write(&slow, "").unwrap();
    p.write(
        "pipelines/p.yaml",
        &format!(
            "name: t\nroot: ..\nstages:\n{}{}",
            emit_stage("a", "A", None, ""),
            emit_stage("b", "B", Some("a.out"), &format!(", --slow-if, \"{}\"", slow.display()))
        ),
    );
    p
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed().as_secs() < 60, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `pipe status` during a run says the stage being built is running (not stale, not
/// fresh); Ctrl-C says what was kept and what was interrupted, exits 130, and the next
/// run does only what is left.
#[test]
fn status_shows_a_running_stage_and_ctrl_c_says_what_was_kept() {
    let p = slow_project();
    let run = p
        .command(&["run", "pipelines/p.yaml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("b to start", || p.path("slow.started").exists());

    let status = p.pipe(&["status", "pipelines/p.yaml"]).ok();
    let line = |name: &str| {
        status
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or("")
            .to_string()
    };
    assert!(line("a").contains("fresh"), "{}", status.stdout);
    assert!(line("b").contains("running"), "{}", status.stdout);
    let json = p.pipe(&["status", "pipelines/p.yaml", "--json"]).ok();
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(rows[1]["stage"], "b");
    assert_eq!(rows[1]["state"], "running", "{}", json.stdout);

    // Ctrl-C, as a terminal sends it to pipe.
    assert_eq!(unsafe { libc::kill(run.id() as i32, libc::SIGINT) }, 0);
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("pipe: interrupted (Ctrl-C)"), "{stderr}");
    assert!(stderr.contains("kept (committed to the cache): a"), "{stderr}");
    assert!(stderr.contains("interrupted: b"), "{stderr}");
    assert!(
        stderr.contains("`pipe run pipelines/p.yaml` resumes: kept stages are fresh; b runs again"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // No run any more: b is stale, not running; the next run does b only.
    let status = p.pipe(&["status", "pipelines/p.yaml"]).ok();
    assert!(!status.stdout.contains("running"), "{}", status.stdout);
    std::fs::remove_file(p.path("slow")).unwrap();
    assert_eq!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran(), ["b"]);
    assert!(
        p.pipe(&["verify", "pipelines/p.yaml"])
            .ok()
            .stdout
            .contains("2 intact, 0 damaged")
    );
}

/// SIGTERM (what `kill` and Slurm's `scancel` send) is handled the same way.
#[test]
fn sigterm_is_an_interruption_too() {
    let p = slow_project();
    let run = p
        .command(&["run", "pipelines/p.yaml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("b to start", || p.path("slow.started").exists());
    assert_eq!(unsafe { libc::kill(run.id() as i32, libc::SIGTERM) }, 0);
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("pipe: terminated (SIGTERM)"), "{stderr}");
    assert!(stderr.contains("interrupted: b"), "{stderr}");
}

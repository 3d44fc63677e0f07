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

/// `pipe run` in the background, once `b` has started.
fn run_until_b_started(p: &Project) -> std::process::Child {
    let run = p
        .command(&["run", "pipelines/p.yaml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("b to start", || p.path("slow.started").exists());
    run
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
    let run = run_until_b_started(&p);

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
    let run = run_until_b_started(&p);
    assert_eq!(unsafe { libc::kill(run.id() as i32, libc::SIGTERM) }, 0);
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("pipe: terminated (SIGTERM)"), "{stderr}");
    assert!(stderr.contains("interrupted: b"), "{stderr}");
}

/// On a narrow terminal, a training stage's line keeps what matters — count,
/// percentage, rate and ETA — within the width: the bar narrows and the stage's own
/// message is cut instead.
/// The terminal is a real pseudo-terminal (util-linux `script`) set to 60 columns.
#[test]
fn on_a_terminal_the_train_line_fits_and_keeps_count_and_eta() {
    if worker().is_none() {
        return;
    }
    let p = Project::new();
    synth(&p.path("hosp"), 150, 32);
    phutho_on_hospital(
        &p,
        "t",
        32,
        "  train:\n    params: { architecture: tiny, image_size: 32, batch_size: 4, epochs: 12, eval_every: 1000 }\n",
    );
    let log = p.path("tty.log");
    let out = std::process::Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!(
            "stty cols 60 rows 30; exec {} run pipelines/t.yaml --until train",
            pipe_bin().display()
        ))
        .arg(&log)
        .current_dir(p.dir.path())
        .output()
        .expect("util-linux `script` runs");
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert!(out.status.success(), "{text}");
    // What the terminal shows: escape sequences removed, lines split at \r, \n and
    // cursor movements.
    let mut plain = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                while let Some(&d) = chars.peek() {
                    chars.next();
                    if d.is_ascii_alphabetic() {
                        // Colours stay in the line; cursor moves and clears end it.
                        if d != 'm' {
                            plain.push('\n');
                        }
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(c);
    }
    // indicatif pads each line to the width and lets the terminal wrap: rows are
    // 60-column chunks of what is between cursor moves.
    let rows: Vec<String> = plain
        .split(['\r', '\n'])
        .flat_map(|seg| {
            let chars: Vec<char> = seg.chars().collect();
            chars
                .chunks(60)
                .map(|c| c.iter().collect::<String>())
                .collect::<Vec<_>>()
        })
        .collect();
    let train: Vec<&String> = rows.iter().filter(|l| l.contains(" train ")).collect();
    assert!(!train.is_empty(), "no train progress line drawn:\n{plain}");
    assert!(
        train
            .iter()
            .any(|l| l.contains("%)") && l.contains("/s ETA ") && l.contains("] ")),
        "bar, count, rate and ETA never shown together in 60 columns:\n{}",
        train.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n")
    );
}

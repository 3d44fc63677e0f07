//! The engine after failures, kills and damage (issue 10 §1–2): no failure leaves the
//! cache stuck, and nothing wrong is sealed as intact. Each test reproduces one way the
//! engine failed before; after each, a normal run succeeds and `verify` is clean or
//! names the damage.

mod common;
use common::*;

use std::path::{Path, PathBuf};

use arrow::array::Array;

fn two_stages(p: &Project) {
    p.write("data/x.txt", "x");
    p.write(
        "pipelines/p.yaml",
        &format!(
            "name: t\nroot: ..\nstages:\n{}{}",
            emit_stage("a", "A", None, ""),
            emit_stage("b", "B", Some("a.out"), "")
        ),
    );
}

fn entries(p: &Project) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(p.path("cache/entries"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn assert_verify_clean(p: &Project) {
    let v = p.pipe(&["verify", "pipelines/p.yaml"]);
    assert_eq!(v.code, 0, "{}\n{}", v.stdout, v.stderr);
    assert!(v.stdout.contains(" 0 damaged"), "{}", v.stdout);
}

#[test]
fn a_failed_torch_job_does_not_block_later_runs_and_resumable_work_survives() {
    let p = Project::new();
    two_stages(&p);
    let yaml = std::fs::read_to_string(p.path("pipelines/p.yaml")).unwrap();
    p.write(
        "pipelines/p.yaml",
        &format!("{yaml}  t:\n    kind: torch_check\n    params: {{ size: 8 }}\n"),
    );
    // A worker that cannot start LibTorch: the torch stage fails, its job file stays.
    let failed = p
        .command(&["run", "pipelines/p.yaml", "--keep-going"])
        .env("PIPE_TORCH_WORKER", "/bin/false")
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    // Train's resumable work of some other pipeline, left by a kill.
    let work = p.path("cache/tmp/0123abcd");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join(".pipe-resumable"), "").unwrap();
    std::fs::write(work.join("last.safetensors"), "weights").unwrap();
    // Every later run works, even one whose stages are all fresh.
    let r = p.pipe(&["run", "pipelines/p.yaml", "--until", "b"]).ok();
    assert!(r.ran().is_empty(), "{}", r.stdout);
    p.edit("pipelines/p.yaml", "\"B\"", "\"B2\"");
    assert_eq!(p.pipe(&["run", "pipelines/p.yaml", "--until", "b"]).ok().ran(), ["b"]);
    let left: Vec<String> = std::fs::read_dir(p.path("cache/tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["0123abcd"], "only resumable work stays in tmp/");
    assert!(work.join("last.safetensors").is_file());
    // gc lists it (no pipeline would resume it) and removes it when asked.
    let gc = p.pipe(&["gc", "pipelines/p.yaml"]).ok();
    assert!(gc.stdout.contains("would remove resumable work"), "{}", gc.stdout);
    p.pipe(&["gc", "pipelines/p.yaml", "--delete"]).ok();
    assert!(!work.exists());
    assert_verify_clean(&p);
}

/// A stage writing many files, so that deleting its entry takes a while.
fn big_entry_pipeline(p: &Project, value: &str) {
    p.write(
        "pipelines/p.yaml",
        &format!(
            "name: t\nroot: ..\nstages:\n  a:\n    kind: command\n    params:\n      run: [sh, -c, \"mkdir {{out_dir}}/f && cd {{out_dir}}/f && seq 4000 | xargs touch && cd - >/dev/null && python3 scripts/emit.py {{out:out}} --value {value}\"]\n      outputs: [out]\n      files: [scripts/emit.py]\n"
        ),
    );
}

#[test]
fn kill_during_gc_delete_leaves_whole_entries_or_none() {
    let p = Project::new();
    for round in 0..6u64 {
        big_entry_pipeline(&p, &format!("v{round}"));
        p.pipe(&["run", "pipelines/p.yaml"]).ok();
        // The previous round's entry is now unreferenced: delete it and kill mid-way.
        let mut child = p.command(&["gc", "pipelines/p.yaml", "--delete"]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5 + round * 7));
        let _ = child.kill();
        let _ = child.wait();
        for e in entries(&p) {
            if e.join("manifest.json").is_file() {
                let m: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(e.join("manifest.json")).unwrap()).unwrap();
                for f in m["files"].as_object().unwrap().keys() {
                    assert!(
                        e.join(f).exists(),
                        "round {round}: {} has a manifest but no {f}",
                        e.display()
                    );
                }
            }
        }
        let s = p.pipe(&["status", "pipelines/p.yaml"]).ok();
        assert!(s.stdout.contains("fresh"), "{}", s.stdout);
        assert!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran().is_empty());
    }
    assert_verify_clean(&p);
}

#[test]
fn verify_quarantines_the_same_key_twice_in_one_second() {
    let p = Project::new();
    two_stages(&p);
    p.pipe(&["run", "pipelines/p.yaml"]).ok();
    let path = PathBuf::from(p.pipe(&["path", "pipelines/p.yaml", "b"]).ok().stdout.trim());
    let key = path
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // Quarantine slots of this key for the next seconds are taken (as by an earlier
    // verify in the same second).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for s in now..now + 30 {
        let q = p.path(&format!("cache/quarantine/{key}.{s}"));
        std::fs::create_dir_all(&q).unwrap();
        std::fs::write(q.join("out.parquet"), "old").unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    // A damaged entry of another key too: verify goes on checking after the first.
    let a = PathBuf::from(p.pipe(&["path", "pipelines/p.yaml", "a"]).ok().stdout.trim());
    std::fs::write(&a, "garbage").unwrap();
    let v = p.pipe(&["verify", "pipelines/p.yaml"]);
    assert_eq!(v.code, 1, "{}\n{}", v.stdout, v.stderr);
    assert!(v.stdout.contains("2 damaged"), "{}", v.stdout);
    assert_eq!(v.stdout.matches("moved to").count(), 2, "{}", v.stdout);
    assert_eq!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran(), ["a", "b"]);
    assert_verify_clean(&p);
}

#[test]
fn a_view_replaced_by_a_directory_and_an_entry_replaced_by_a_file_are_repaired() {
    let p = Project::new();
    two_stages(&p);
    p.pipe(&["run", "pipelines/p.yaml"]).ok();
    // Someone put a directory where the view link of `b` belongs.
    let view = p.path("cache/views/t/b");
    std::fs::remove_file(&view).unwrap();
    std::fs::create_dir_all(&view).unwrap();
    std::fs::write(view.join("notes.txt"), "mine").unwrap();
    let r = p.pipe(&["run", "pipelines/p.yaml"]).ok();
    assert!(r.stdout.contains("moved to"), "{}", r.stdout);
    assert!(std::fs::symlink_metadata(&view).unwrap().file_type().is_symlink());
    let kept = std::fs::read_dir(p.path("cache/quarantine"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(std::fs::read_to_string(kept.join("notes.txt")).unwrap(), "mine");
    // An entry replaced by a file: stale, rebuilt, every time after fine.
    let a = PathBuf::from(p.pipe(&["path", "pipelines/p.yaml", "a"]).ok().stdout.trim());
    let entry = a.parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(&entry).unwrap();
    std::fs::write(&entry, "not an entry").unwrap();
    let s = p.pipe(&["status", "pipelines/p.yaml"]).ok();
    assert!(squeeze(&s.stdout).contains("a stale"), "{}", s.stdout);
    let r = p.pipe(&["run", "pipelines/p.yaml"]).ok();
    assert_eq!(r.ran(), ["a"], "{}", r.stdout);
    assert!(entry.join("manifest.json").is_file());
    assert!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran().is_empty());
    assert_verify_clean(&p);
}

#[test]
fn out_of_space_names_the_file() {
    let p = Project::new();
    // The stage leaves its log path pointing at /dev/full, which fails every write
    // with ENOSPC, as a full disk would when pipe writes the log.
    p.write(
        "pipelines/p.yaml",
        "name: t\nroot: ..\nstages:\n  a:\n    kind: command\n    params:\n      run: [sh, -c, \"python3 scripts/emit.py {out:out} && ln -s /dev/full {out_dir}/log.txt\"]\n      outputs: [out]\n",
    );
    let r = p.pipe(&["run", "pipelines/p.yaml"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("No space left on device"), "{}", r.stdout);
    assert!(r.stdout.contains("log.txt"), "the error names no file: {}", r.stdout);
    // The same for a table pipe writes (the command's output, rewritten by pipe).
    p.edit(
        "pipelines/p.yaml",
        "ln -s /dev/full {out_dir}/log.txt",
        "ln -s /dev/full {out_dir}/out.parquet",
    );
    let r = p.pipe(&["run", "pipelines/p.yaml"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("No space left on device"), "{}", r.stdout);
    assert!(
        r.stdout.contains("out.parquet"),
        "the error names no file: {}",
        r.stdout
    );
    // Nothing half-made is left as an entry; the next run (disk freed) works.
    assert!(entries(&p).is_empty());
    p.edit("pipelines/p.yaml", " && ln -s /dev/full {out_dir}/out.parquet", "");
    assert_eq!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran(), ["a"]);
    assert_verify_clean(&p);
}

/// Run `pipe` as an unprivileged user (a user namespace without a root mapping), so
/// that file permissions apply even when the tests run as root.
fn pipe_as_nobody(p: &Project, args: &[&str]) -> Run {
    let bin = p.path("pipe-bin");
    if !bin.exists() {
        std::fs::copy(pipe_bin(), &bin).unwrap();
    }
    let out = std::process::Command::new("unshare")
        .arg("-U")
        .arg(&bin)
        .args(args)
        .current_dir(p.dir.path())
        .output()
        .expect("unshare (util-linux) runs pipe as an unprivileged user");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains("unshare failed"),
        "cannot create a user namespace: {}",
        run.stderr
    );
    run
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chmod_tree(path: &Path, dirs: u32, files: u32) {
    for e in walkdir::WalkDir::new(path).into_iter().flatten() {
        if e.path_is_symlink() {
            continue;
        }
        chmod(e.path(), if e.file_type().is_dir() { dirs } else { files });
    }
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut v: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let m = e.path().symlink_metadata().ok()?;
            Some((e.path().to_path_buf(), m.len(), m.modified().ok()?))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn read_only_commands_work_on_a_read_only_cache() {
    let p = Project::new();
    two_stages(&p);
    p.pipe(&["run", "pipelines/p.yaml"]).ok();
    chmod(p.dir.path(), 0o755);
    chmod_tree(&p.path("cache"), 0o555, 0o444);
    let before = snapshot(&p.path("cache"));
    for args in [
        &["status", "pipelines/p.yaml"][..],
        &["show", "pipelines/p.yaml", "b"],
        &["path", "pipelines/p.yaml", "b"],
        &["dag", "pipelines/p.yaml"],
        &["run", "pipelines/p.yaml"],
        &["verify", "pipelines/p.yaml", "--no-repair"],
        &["verify", "pipelines/p.yaml"],
        &["gc", "pipelines/p.yaml"],
    ] {
        let r = pipe_as_nobody(&p, args);
        assert_eq!(
            r.code, 0,
            "pipe {args:?} on a read-only cache:\n{}\n{}",
            r.stdout, r.stderr
        );
    }
    assert_eq!(
        snapshot(&p.path("cache")),
        before,
        "a read-only command wrote to the cache"
    );
    chmod_tree(&p.path("cache"), 0o755, 0o644);
}

#[test]
fn read_only_commands_do_not_wait_for_a_running_run() {
    let p = Project::new();
    two_stages(&p);
    p.pipe(&["run", "pipelines/p.yaml"]).ok();
    // Another run holds the write lock.
    let lock = std::fs::File::open(p.path("cache/lock")).unwrap();
    lock.lock().unwrap();
    let r = p.pipe(&["run", "pipelines/p.yaml", "--no-wait"]).ok();
    assert!(r.stdout.contains("nothing to run"), "{}", r.stdout);
    p.pipe(&["verify", "pipelines/p.yaml", "--no-repair"]).ok();
    p.pipe(&["gc", "pipelines/p.yaml"]).ok();
    drop(lock);
}

#[test]
fn an_input_that_is_not_what_its_manifest_says_is_not_read() {
    let p = Project::new();
    two_stages(&p);
    p.pipe(&["run", "pipelines/p.yaml"]).ok();
    // a's table replaced by another valid table (damage a reader cannot see).
    let a = PathBuf::from(p.pipe(&["path", "pipelines/p.yaml", "a"]).ok().stdout.trim());
    let b = PathBuf::from(p.pipe(&["path", "pipelines/p.yaml", "b"]).ok().stdout.trim());
    chmod(&a, 0o644);
    std::fs::copy(&b, &a).unwrap();
    // b must run again (new param) and would read it.
    p.edit("pipelines/p.yaml", "\"B\"", "\"B2\"");
    let r = p.pipe(&["run", "pipelines/p.yaml"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("input `a` is damaged (out.parquet: content changed"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("quarantine"), "{}", r.stdout);
    // The next run rebuilds a, then b; everything is intact.
    assert_eq!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran(), ["a", "b"]);
    assert_verify_clean(&p);
}

#[test]
fn a_tampered_stat_cache_line_is_not_trusted() {
    let p = Project::new();
    p.write("data/x.txt", "x").write("data/y.txt", "y");
    p.write(
        "pipelines/p.yaml",
        "name: t\nroot: ..\nstages:\n  a:\n    kind: command\n    params:\n      run: [python3, scripts/emit.py, \"{out:out}\"]\n      outputs: [out]\n      files: [data]\n",
    );
    // Old enough for the stat cache to remember them (racy window).
    for f in ["data/x.txt", "data/y.txt"] {
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(p.path(f))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    p.pipe(&["run", "pipelines/p.yaml"]).ok();
    let stat = std::fs::read_dir(p.path("cache/stat"))
        .unwrap()
        .flatten()
        .find(|e| std::fs::read_to_string(e.path()).unwrap().contains("x.txt"));
    let stat = stat.expect("a stat cache of data/").path();
    let text = std::fs::read_to_string(&stat).unwrap();
    let x_hash = blake3::hash(b"x").to_hex().to_string();
    assert!(text.contains(&x_hash), "{text}");
    // One hex digit of x.txt's hash altered.
    let altered = format!("{}{}", if x_hash.starts_with('0') { '1' } else { '0' }, &x_hash[1..]);
    std::fs::write(&stat, text.replace(&x_hash, &altered)).unwrap();
    let s = p.pipe(&["status", "pipelines/p.yaml"]).ok();
    assert!(s.stdout.contains("fresh"), "a wrong hash was believed: {}", s.stdout);
    assert!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran().is_empty());
    assert!(!std::fs::read_to_string(&stat).unwrap().contains(&altered));
}

#[test]
fn a_file_unreadable_for_a_moment_is_read_again_once_readable() {
    let p = Project::new();
    synth(&p.path("hosp"), 12, 32);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    p.write(
        "services.txt",
        &std::fs::read_to_string(repo.join("stages/parse/chest_services.txt")).unwrap(),
    );
    p.write(
        "pipelines/p.yaml",
        "name: t\nroot: ..\nstages:\n  collect:\n    kind: collect\n    params: { pacs: hosp/pacs, his: hosp/his }\n  parse:\n    kind: parse\n    inputs: [collect.his_files]\n    params: { services: services.txt }\n",
    );
    // Everything readable by the unprivileged user, the project writable for its cache.
    chmod_tree(&p.path("hosp"), 0o755, 0o644);
    chmod(p.dir.path(), 0o777);
    pipe_as_nobody(&p, &["run", "pipelines/p.yaml"]).ok();
    let dicoms = |p: &Project| -> Vec<String> {
        let path = pipe_as_nobody(p, &["path", "pipelines/p.yaml", "collect.dicoms"])
            .ok()
            .stdout;
        let b = pipe_core::table::read_batch(Path::new(path.trim())).unwrap();
        let c = pipe_core::table::str_col(&b, "path").unwrap();
        (0..b.num_rows()).map(|i| c.value(i).to_string()).collect()
    };
    let all = dicoms(&p);
    let x = all[all.len() / 2].clone();
    // x cannot be read for a while (its stat cache line still says what it held), and
    // a new file makes collect run meanwhile.
    chmod(&p.path(&x), 0o000);
    std::fs::copy(p.path(&all[0]), p.path("hosp/pacs/zz_new.dcm")).unwrap();
    chmod(&p.path("hosp/pacs/zz_new.dcm"), 0o644);
    // A HIS file too: parse rejects it (collect could not read it) without failing.
    let xml = walkdir::WalkDir::new(p.path("hosp/his"))
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .find(|e| e.file_type().is_file())
        .unwrap()
        .into_path();
    chmod(&xml, 0o000);
    let r = pipe_as_nobody(&p, &["run", "pipelines/p.yaml"]).ok();
    assert_eq!(r.ran(), ["collect", "parse"]);
    let path = pipe_as_nobody(&p, &["path", "pipelines/p.yaml", "parse.rejects"])
        .ok()
        .stdout;
    let parse_rejects = pipe_core::table::read_batch(Path::new(path.trim())).unwrap();
    let reasons = pipe_core::table::str_col(&parse_rejects, "reason").unwrap();
    assert!(
        (0..parse_rejects.num_rows()).any(|i| reasons.value(i) == "cannot read: collect could not read it"),
        "no reject for the unreadable HIS file"
    );
    let path = pipe_as_nobody(&p, &["path", "pipelines/p.yaml", "collect.rejects"])
        .ok()
        .stdout;
    let rejects = pipe_core::table::read_batch(Path::new(path.trim())).unwrap();
    let paths = pipe_core::table::str_col(&rejects, "path").unwrap();
    let i = (0..rejects.num_rows())
        .find(|&i| paths.value(i) == x)
        .unwrap_or_else(|| panic!("{x} unreadable but not in rejects"));
    let reason = pipe_core::table::str_col(&rejects, "reason")
        .unwrap()
        .value(i)
        .to_string();
    assert!(reason.contains("Permission denied"), "{reason}");
    assert!(
        rejects.column_by_name("file_hash").unwrap().is_null(i),
        "an I/O error claimed a content hash"
    );
    assert!(!dicoms(&p).contains(&x));
    // Readable again: the next run reads it (nothing else changed).
    chmod(&p.path(&x), 0o644);
    chmod(&xml, 0o644);
    let r = pipe_as_nobody(&p, &["run", "pipelines/p.yaml"]).ok();
    assert_eq!(r.ran(), ["collect"], "{}", r.stdout);
    // his_files is as at the first run again: that parse result is current.
    assert!(
        squeeze(&r.stdout).contains("parse fresh (input collect.his_files unchanged)"),
        "{}",
        r.stdout
    );
    assert!(dicoms(&p).contains(&x));
    assert!(pipe_as_nobody(&p, &["run", "pipelines/p.yaml"]).ok().ran().is_empty());
    chmod_tree(&p.path("cache"), 0o777, 0o666);
}

#[test]
fn a_file_unreadable_though_its_stat_did_not_change_is_not_sealed() {
    let p = Project::new();
    synth(&p.path("hosp"), 12, 32);
    p.write(
        "pipelines/p.yaml",
        "name: t\nroot: ..\nstages:\n  collect:\n    kind: collect\n    params: { pacs: hosp/pacs, his: hosp/his }\n",
    );
    chmod_tree(&p.path("hosp"), 0o755, 0o644);
    chmod(p.dir.path(), 0o777);
    // Past the racy window, so the stat cache remembers every file; `status` hashes
    // them all, collect has read none.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    pipe_as_nobody(&p, &["status", "pipelines/p.yaml"]).ok();
    let x = walkdir::WalkDir::new(p.path("hosp/pacs"))
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .nth(3)
        .unwrap()
        .into_path();
    let rel = x
        .strip_prefix(p.path("hosp/pacs"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // x becomes unreadable in a way its stat does not show (an ACL, an NFS server):
    // made here with chmod, and its stat cache line told the new mode.
    chmod(&x, 0o000);
    let mode = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&x).unwrap().mode()
    };
    let stat = std::fs::read_dir(p.path("cache/stat"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|f| std::fs::read_to_string(f).unwrap().contains(&format!("\t{rel}\n")))
        .expect("a stat cache of the PACS tree");
    let text = std::fs::read_to_string(&stat).unwrap();
    let forged: String = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() == 7 && f[6] == rel {
                let rest = format!("{}\t{}\t{}\t{mode}\t{}\t{}", f[1], f[2], f[3], f[5], f[6]);
                format!("{:08x}\t{rest}\n", crc32fast::hash(rest.as_bytes()))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(forged, text);
    std::fs::write(&stat, forged).unwrap();
    // collect cannot open x: nothing is sealed (its key claims x's content).
    let r = pipe_as_nobody(&p, &["run", "pipelines/p.yaml"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("could not be read while it ran"), "{}", r.stdout);
    assert!(r.stdout.contains(&rel), "{}", r.stdout);
    // The next run reads x (no longer trusted from the stat cache): rejected, no hash.
    let r = pipe_as_nobody(&p, &["run", "pipelines/p.yaml"]).ok();
    assert_eq!(r.ran(), ["collect"], "{}", r.stdout);
    let path = pipe_as_nobody(&p, &["path", "pipelines/p.yaml", "collect.rejects"])
        .ok()
        .stdout;
    let rejects = pipe_core::table::read_batch(Path::new(path.trim())).unwrap();
    let paths = pipe_core::table::str_col(&rejects, "path").unwrap();
    let i = (0..rejects.num_rows())
        .find(|&i| paths.value(i).ends_with(&rel))
        .unwrap_or_else(|| panic!("{rel} not in rejects"));
    assert!(rejects.column_by_name("file_hash").unwrap().is_null(i));
    // Readable again: read, and in `dicoms`.
    chmod(&x, 0o644);
    assert_eq!(pipe_as_nobody(&p, &["run", "pipelines/p.yaml"]).ok().ran(), ["collect"]);
    let path = pipe_as_nobody(&p, &["path", "pipelines/p.yaml", "collect.dicoms"])
        .ok()
        .stdout;
    let dicoms = pipe_core::table::read_batch(Path::new(path.trim())).unwrap();
    let paths = pipe_core::table::str_col(&dicoms, "path").unwrap();
    assert!((0..dicoms.num_rows()).any(|i| paths.value(i).ends_with(&rel)));
    chmod_tree(&p.path("cache"), 0o777, 0o666);
}

#[test]
fn parse_checks_it_reads_what_collect_hashed() {
    let p = Project::new();
    synth(&p.path("hosp"), 12, 32);
    let services = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("stages/parse/chest_services.txt");
    p.write(
        "pipelines/p.yaml",
        &format!(
            "name: t\nroot: ..\nstages:\n  collect:\n    kind: collect\n    params: {{ pacs: hosp/pacs, his: hosp/his }}\n  parse:\n    kind: parse\n    inputs: [collect.his_files]\n    params: {{ services: {} }}\n",
            services.display()
        ),
    );
    // Past the racy window, so the stat cache remembers the HIS files.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    p.pipe(&["run", "pipelines/p.yaml"]).ok();
    let xml = walkdir::WalkDir::new(p.path("hosp/his"))
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .find(|e| e.file_type().is_file())
        .unwrap()
        .into_path();
    let original = std::fs::read(&xml).unwrap();
    let mut edited = original.clone();
    let at = edited.iter().rposition(|&b| b.is_ascii_digit()).unwrap();
    edited[at] = if edited[at] == b'9' { b'8' } else { edited[at] + 1 };
    edit_unseen(&xml, &edited);
    let r = p.pipe(&["run", "pipelines/p.yaml", "--force", "parse"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("are not the files collect read"), "{}", r.stdout);
    edit_unseen(&xml, &original);
    assert!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran().is_empty());
    assert_verify_clean(&p);
}

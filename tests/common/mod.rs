//! Shared helpers for the integration tests: a project in a temp dir and the `pipe`
//! binary run on it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `pipe` under test: this build's, or `$PIPE_TEST_BIN` (to check that a new test
/// fails on an older binary).
pub fn pipe_bin() -> PathBuf {
    std::env::var_os("PIPE_TEST_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_pipe")), PathBuf::from)
}

/// The Python with pyarrow, pandas and duckdb (the Makefile puts the venv first on PATH).
pub fn python() -> String {
    std::env::var("PIPE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

pub struct Project {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Names of the stages the run summary says ran.
    pub fn ran(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .stdout
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("✓ "))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect();
        v.sort();
        v
    }

    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "pipe failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Project {
    /// A project with `tests/fixtures/emit.py` copied to `scripts/emit.py`.
    pub fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
        std::fs::copy(fixture("emit.py"), dir.path().join("scripts/emit.py")).unwrap();
        Project { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> &Self {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    /// Replace `from` (which must be there) by `to` in a file of the project.
    pub fn edit(&self, rel: &str, from: &str, to: &str) -> &Self {
        let text = std::fs::read_to_string(self.path(rel)).unwrap();
        assert!(text.contains(from), "{rel} has no {from:?}:\n{text}");
        self.write(rel, &text.replace(from, to))
    }

    pub fn pipe(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().unwrap())
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(pipe_bin());
        c.args(args).current_dir(self.dir.path());
        c
    }
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A `command` stage running emit.py.
pub fn emit_stage(name: &str, value: &str, input: Option<&str>, extra: &str) -> String {
    let (inputs, in_arg) = match input {
        Some(i) => (
            format!("\n    inputs: [{i}]"),
            format!(", --input, \"{{in:{}}}\"", i.split('.').nth(1).unwrap_or("out")),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "  {name}:\n    kind: command{inputs}\n    params:\n      run: [python3, scripts/emit.py, \"{{out:out}}\", --value, \"{value}\"{in_arg}{extra}]\n      outputs: [out]\n      files: [scripts/emit.py]\n"
    )
}

/// Write `bytes` into `file` keeping its size, inode and mtime: an edit the stat cache
/// cannot see, as one made while a stage runs and undone before the run ends.
pub fn edit_unseen(file: &Path, bytes: &[u8]) {
    let mtime = std::fs::metadata(file).unwrap().modified().unwrap();
    std::fs::write(file, bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

/// Write a synthetic hospital with `pipe synth` (seed 11).
pub fn synth(dir: &Path, studies: usize, size: usize) {
    let out = Command::new(pipe_bin())
        .args([
            "synth",
            "--out",
            dir.to_str().unwrap(),
            "--studies",
            &studies.to_string(),
            "--seed",
            "11",
            "--size",
            &size.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The `pipe-torch` worker beside `pipe`. Missing is an error under `make test`
/// (PIPE_REQUIRE_TORCH) and a skip otherwise, so a plain `cargo test` works without LibTorch.
pub fn worker() -> Option<PathBuf> {
    let w = pipe_bin().with_file_name("pipe-torch");
    if w.is_file() {
        return Some(w);
    }
    assert!(
        std::env::var_os("PIPE_REQUIRE_TORCH").is_none(),
        "{} is missing: build it with `cargo build --workspace` (LIBTORCH_USE_PYTORCH=1)",
        w.display()
    );
    eprintln!("skipping: no torch worker at {}", w.display());
    None
}

/// The repository's pipelines/phutho.yaml, pointed at the synthetic hospital in `hosp/`
/// (with its truth's resolutions and overrides) and at `cache/`, as `pipelines/NAME.yaml`
/// with the given extra stage overrides (YAML under `stages:`).
pub fn phutho_on_hospital(p: &Project, name: &str, convert_size: usize, extra: &str) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    p.write(
        "pipelines/phutho.yaml",
        &std::fs::read_to_string(repo.join("pipelines/phutho.yaml"))
            .unwrap()
            .replace("root: ..", &format!("root: {}", repo.display()))
            .replace("name: phutho", "name: phutho\ncache: cache_unused"),
    );
    p.write(
        &format!("pipelines/{name}.yaml"),
        &format!(
            "name: {name}\nextend: phutho.yaml\ncache: {cache}\nstages:\n  collect:\n    params: {{ pacs: {h}/pacs, his: {h}/his }}\n  match:\n    params: {{ resolutions: {h}/truth/resolutions.csv }}\n  label:\n    params: {{ overrides: {h}/truth/overrides.csv }}\n  convert:\n    params: {{ size: {convert_size} }}\n{extra}",
            cache = p.path("cache").display(),
            h = p.path("hosp").display()
        ),
    );
}

/// Run a reference script and read its JSON lines.
pub fn json_lines(cmd: &mut Command) -> Vec<serde_json::Value> {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Bytes written as hex (how the reference scripts hand over pixels).
pub fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The counters of `stage` in a run summary (`(images_decoded=0 images_reused=7)`).
pub fn counters(run: &Run, stage: &str) -> std::collections::BTreeMap<String, u64> {
    let line = run
        .stdout
        .lines()
        .find(|l| {
            l.trim_start()
                .strip_prefix("✓ ")
                .and_then(|l| l.split_whitespace().next())
                == Some(stage)
        })
        .unwrap_or_else(|| panic!("{stage} did not run:\n{}", run.stdout));
    let inside = line
        .rsplit_once('(')
        .map(|(_, c)| c.trim_end_matches(')'))
        .unwrap_or("");
    inside
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

/// Headless Chromium, if installed (`make test` installs Debian's and sets
/// PIPE_REQUIRE_CHROMIUM, so there a missing browser fails the test).
pub fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("sh").args(["-c", &format!("command -v {name}")]).output()
            && out.status.success()
        {
            return Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
    }
    assert!(
        std::env::var_os("PIPE_REQUIRE_CHROMIUM").is_none(),
        "no chromium on PATH: `apt-get install chromium` (make test does)"
    );
    eprintln!("skipping the browser check: no chromium on PATH");
    None
}

/// Loads `dir/report.html` in headless Chromium at 1280 px wide and reports what the
/// browser made of it, as JSON: the document's scrollWidth, the right edge of every
/// table, the ids of the sections (h2), the warning text, the figure captions. The
/// report is copied out first (a cache entry is never written to) and read through a
/// page that frames it and measures it with a script; a screenshot of the first
/// `height` pixels goes to `screenshot`.
pub fn render_in_chromium(browser: &Path, dir: &Path, screenshot: &Path, height: u32) -> serde_json::Value {
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("report");
    let status = Command::new("cp").arg("-r").arg(dir).arg(&copy).status().unwrap();
    assert!(status.success());
    std::fs::write(
        copy.join("measure.html"),
        r#"<!DOCTYPE html><html><body>
<iframe id="f" src="report.html" style="width:1280px;height:1000px;border:0"></iframe>
<pre id="out">pending</pre>
<script>
document.getElementById('f').addEventListener('load', function () {
  var d = this.contentDocument;
  var all = function (q) { return Array.prototype.slice.call(d.querySelectorAll(q)); };
  var out = {
    scrollWidth: d.documentElement.scrollWidth,
    tables: all('table').map(function (t) { return Math.ceil(t.getBoundingClientRect().right); }),
    sections: all('h2').map(function (h) { return h.id; }),
    warning: all('.warning').map(function (w) { return w.textContent; }),
    captions: all('figcaption').map(function (c) { return c.textContent; }),
    images: all('img').map(function (i) { return i.getAttribute('src'); })
  };
  document.getElementById('out').textContent = JSON.stringify(out);
});
</script></body></html>"#,
    )
    .unwrap();
    let chrome = |args: &[&str]| {
        let out = Command::new(browser)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let url = |f: &str| format!("file://{}", copy.join(f).display());
    let dom = chrome(&[
        "--allow-file-access-from-files",
        "--virtual-time-budget=10000",
        "--dump-dom",
        &url("measure.html"),
    ]);
    let start = dom.find("<pre id=\"out\">").expect("no result in the dumped DOM") + 14;
    let json = &dom[start..start + dom[start..].find("</pre>").unwrap()];
    let json = json
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    chrome(&[
        &format!("--window-size=1280,{height}"),
        &format!("--screenshot={}", screenshot.display()),
        &url("report.html"),
    ]);
    assert!(
        std::fs::metadata(screenshot).unwrap().len() > 10_000,
        "empty screenshot"
    );
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// (stage, table) → (entry key, content BLAKE3) of every table in a cache.
pub fn tables(cache: &Path) -> std::collections::BTreeMap<(String, String), (String, String)> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(cache.join("entries")).unwrap() {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.unwrap().path().join("manifest.json")).unwrap()).unwrap();
        for (file, f) in m["files"].as_object().unwrap() {
            if file.ends_with(".parquet") {
                out.insert(
                    (m["stage"].as_str().unwrap().to_string(), file.clone()),
                    (
                        m["key"].as_str().unwrap().to_string(),
                        f["blake3"].as_str().unwrap().to_string(),
                    ),
                );
            }
        }
    }
    out
}

/// Every file of the entry that holds `table` of a pipeline, with its BLAKE3, as the
/// manifest lists them.
pub fn entry_files(p: &Project, pipeline: &str, table: &str) -> std::collections::BTreeMap<String, String> {
    let path = PathBuf::from(p.pipe(&["path", pipeline, table]).ok().stdout.trim());
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path.with_file_name("manifest.json")).unwrap()).unwrap();
    m["files"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["blake3"].as_str().unwrap().to_string()))
        .collect()
}

/// `collect` and `convert` in `shards` shards (with `args` added to `pipe run`, e.g.
/// `--executor slurm`) against the same stages unsharded, on a 120-study hospital with
/// a resent copy of its first DICOM file (last in walk order: its `duplicate_of` crosses
/// shards) and a month of PACS files held back: every table and image byte-identical
/// under the same keys; the held-back month, added, is all that collect reads and that
/// convert decodes; a rerun does nothing. Returns the sharded runs' outputs and the
/// first sharded collect's log.
pub fn sharded_equals_unsharded(shards: usize, args: &[&str]) -> (Vec<Run>, String) {
    let p = Project::new();
    let hosp = p.path("hosp");
    synth(&hosp, 120, 32);
    let mut dicoms: Vec<PathBuf> = walk_files(&hosp.join("pacs"));
    dicoms.sort();
    std::fs::create_dir_all(hosp.join("pacs/zz-resend")).unwrap();
    std::fs::copy(&dicoms[0], hosp.join("pacs/zz-resend/copy.dcm")).unwrap();
    let mut months: Vec<PathBuf> = std::fs::read_dir(hosp.join("pacs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|d| d.file_name().unwrap().to_string_lossy().starts_with("20"))
        .collect();
    months.sort();
    let month = months.last().unwrap().clone();
    let held = walk_files(&month).len();
    std::fs::rename(&month, p.path("held")).unwrap();

    phutho_on_hospital(&p, "d", 32, "");
    let yaml = std::fs::read_to_string(p.path("pipelines/d.yaml")).unwrap();
    let sharded = yaml
        .replace("name: d\n", "name: s\n")
        .replace(
            &format!("cache: {}", p.path("cache").display()),
            &format!("cache: {}", p.path("cache_s").display()),
        )
        .replace("  collect:\n", &format!("  collect:\n    shards: {shards}\n"))
        .replace("  convert:\n", &format!("  convert:\n    shards: {shards}\n"));
    assert_eq!(sharded.matches("shards:").count(), 2);
    p.write("pipelines/s.yaml", &sharded);

    let run = |file: &str, extra: &[&str]| {
        let mut a = vec!["run", file, "--until", "convert"];
        a.extend(extra);
        p.pipe(&a).ok()
    };
    let same = |when: &str| {
        let (a, b) = (tables(&p.path("cache")), tables(&p.path("cache_s")));
        assert!(a.len() >= 8, "{a:?}");
        assert_eq!(a, b, "{when}: sharded tables differ from unsharded ones");
        // Every file but the log (which says how it ran).
        let files = |f: &str| {
            let mut m = entry_files(&p, f, "convert.images");
            m.remove("log.txt");
            m
        };
        let (a, b) = (files("pipelines/d.yaml"), files("pipelines/s.yaml"));
        let differ: Vec<&String> = a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).collect();
        assert!(
            a.len() > 10 && differ.is_empty(),
            "{when}: convert's files differ: {differ:?}"
        );
    };
    let mut out = Vec::new();
    let d = run("pipelines/d.yaml", &[]);
    let s = run("pipelines/s.yaml", args);
    assert!(s.ran().contains(&"collect".to_string()) && s.ran().contains(&"convert".to_string()));
    assert_eq!(counters(&s, "collect")["duplicate_instances"], 1, "{}", s.stdout);
    assert_eq!(counters(&d, "collect")["duplicate_instances"], 1);
    let log = |table: &str| {
        std::fs::read_to_string(
            PathBuf::from(p.pipe(&["path", "pipelines/s.yaml", table]).ok().stdout.trim()).with_file_name("log.txt"),
        )
        .unwrap()
    };
    let collect_log = log("collect.dicoms");
    assert!(
        collect_log.contains(&format!("shard {}: PACS: ", shards - 1)),
        "{collect_log}"
    );
    assert!(log("convert.images").contains(&format!("{shards} shards merged")));
    same("first run");
    out.push(s);

    // The held-back month arrives: only its files are read and decoded.
    std::fs::rename(p.path("held"), &month).unwrap();
    run("pipelines/d.yaml", &[]);
    let s = run("pipelines/s.yaml", args);
    let c = counters(&s, "collect");
    assert_eq!(c["files_read"], held as u64, "{}", s.stdout);
    let images = pipe_core::table::read_batch(&PathBuf::from(
        p.pipe(&["path", "pipelines/s.yaml", "convert.images"])
            .ok()
            .stdout
            .trim(),
    ))
    .unwrap();
    let paths = pipe_core::table::str_col(&images, "dicom_path").unwrap();
    let month_name = format!("/{}/", month.file_name().unwrap().to_string_lossy());
    let new = (0..images.num_rows())
        .filter(|&i| paths.value(i).contains(&month_name))
        .count() as u64;
    let c = counters(&s, "convert");
    assert!(new > 0);
    assert_eq!(
        (c["images_decoded"], c["images_reused"]),
        (new, images.num_rows() as u64 - new),
        "{}",
        s.stdout
    );
    same("after new files");
    out.push(s);
    let again = run("pipelines/s.yaml", args);
    assert!(again.ran().is_empty(), "{}", again.stdout);
    let left: Vec<String> = std::fs::read_dir(p.path("cache_s/tmp"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !left.iter().any(|n| n.ends_with(".shards")),
        "shard directories left: {left:?}"
    );
    (out, collect_log)
}

/// Files under a directory, recursively.
pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk_files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// Text with each run of spaces made one: status and run lines pad stage names to the
/// longest name of the pipeline, which tests should not depend on.
pub fn squeeze(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !(c == ' ' && out.ends_with(' ')) {
            out.push(c);
        }
    }
    out
}

/// Where a pipeline's table is (`pipe path`).
pub fn table_path(p: &Project, pipeline: &str, table: &str) -> String {
    p.pipe(&["path", pipeline, table]).ok().stdout.trim().to_string()
}

/// The rows of a Parquet table as JSON objects, read by pyarrow (not by pipe).
pub fn table_rows(p: &Project, table: &str) -> Vec<serde_json::Value> {
    let script = "import json,sys,pyarrow.parquet as pq\nfor r in pq.read_table(sys.argv[1]).to_pylist(): print(json.dumps(r, default=str))";
    json_lines(
        Command::new(python())
            .args(["-c", script, table])
            .current_dir(p.dir.path()),
    )
}

/// Run `cmd` with at most `bytes` of address space: a damaged length trusted by a
/// parser then fails as "memory allocation … failed" instead of passing unseen.
pub fn limit_address_space(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

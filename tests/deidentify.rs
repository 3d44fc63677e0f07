//! `deidentify` (DICOM PS3.15 basic profile) checked from outside: after it, no file,
//! table or log of the pipeline holds a patient's ID, name or birth date (read from the
//! originals by pydicom); pydicom reads every file it writes; UIDs are consistent in a
//! study and across runs with one secret, and differ with another; match pairs the
//! same images and reports under the pseudonyms; and the attributes it touches on
//! DICOM files nobody here wrote (pydicom's test files) are those dicom-anonymizer
//! touches, but for documented differences.

mod common;
use common::*;

use std::path::Path;

fn checks(args: &[&str]) -> serde_json::Value {
    json_lines(
        std::process::Command::new(python())
            .arg(fixture("deid_checks.py"))
            .args(args),
    )
    .remove(0)
}

/// One column of a table, as strings.
fn column(p: &Project, table: &str, column: &str) -> Vec<String> {
    table_rows(p, table)
        .iter()
        .map(|r| r[column].as_str().unwrap().to_string())
        .collect()
}

/// pydicom's and pydicom-data's test files copied into `public/`, each passed through
/// `change` on the way.
fn public_copies(p: &Project, mut change: impl FnMut(&mut Vec<u8>)) {
    let out = std::process::Command::new(python())
        .arg(fixture("reference_decode.py"))
        .arg("--list")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::create_dir_all(p.path("public")).unwrap();
    for (i, f) in String::from_utf8(out.stdout).unwrap().lines().enumerate() {
        let name = Path::new(f).file_name().unwrap().to_str().unwrap();
        let mut bytes = std::fs::read(f).unwrap();
        change(&mut bytes);
        std::fs::write(p.path(&format!("public/{i:03}_{name}")), bytes).unwrap();
    }
}

/// collect over `public/`, then deidentify with the repository's profile, as
/// `pipelines/NAME.yaml`.
fn public_pipeline(p: &Project, name: &str) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    p.write("secret.txt", "the secret of the public files tests\n");
    p.write(
        &format!("pipelines/{name}.yaml"),
        &format!(
            "name: {name}\nroot: ..\nstages:\n  collect:\n    kind: collect\n    params: {{ pacs: public }}\n  deidentify:\n    kind: deidentify\n    inputs: [collect.dicoms]\n    params: {{ secret_file: secret.txt, map: secret/map.parquet, profile: {} }}\n",
            repo.join("stages/deidentify/basic_profile.csv").display()
        ),
    );
}

/// `pipelines/NAME.yaml`: phutho.yaml (written by `phutho_on_hospital`) on the hospital
/// in `hosp/`, through deidentify with the secret in `secret`, its map in
/// `secret/map_NAME.parquet`, its cache in `cache_dir`.
fn deidentified(p: &Project, name: &str, secret: &str, cache_dir: &str) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    p.write(
        &format!("pipelines/{name}.yaml"),
        &format!(
            "name: {name}\nextend: phutho.yaml\ncache: {cache}\nstages:\n  collect:\n    params: {{ pacs: {h}/pacs, his: {h}/his }}\n  deidentify:\n    kind: deidentify\n    inputs: [collect.dicoms, parse.reports]\n    params: {{ secret_file: {secret}, map: {map}, profile: {profile} }}\n  filter:\n    inputs: [deidentify.dicoms]\n  match:\n    inputs: [filter.kept, deidentify.reports]\n  convert:\n    params: {{ size: 32 }}\n  train:\n    params: {{ architecture: tiny, image_size: 32, batch_size: 16, epochs: 1, eval_every: 100, workers: 1 }}\n  evaluate:\n    inputs: [train, split.split, label.labels, convert.images, deidentify.dicoms, filter.kept, match.pairs]\n    params: {{ bootstrap: 50, gradcam: 2 }}\n",
            cache = p.path(cache_dir).display(),
            h = p.path("hosp").display(),
            secret = p.path(secret).display(),
            map = p.path(&format!("secret/map_{name}.parquet")).display(),
            profile = repo.join("stages/deidentify/basic_profile.csv").display(),
        ),
    );
}

#[test]
fn a_deidentified_pipeline_holds_no_identifier_and_still_matches() {
    if worker().is_none() {
        return;
    }
    let p = Project::new();
    synth(&p.path("hosp"), 80, 32);
    p.write("secret/key.txt", "a secret of at least sixteen bytes, for the test\n");
    p.write("secret/other.txt", "another secret, also long enough to be used\n");
    phutho_on_hospital(
        &p,
        "plain",
        32,
        "  train:\n    params: { architecture: tiny, image_size: 32, epochs: 1 }\n",
    );
    deidentified(&p, "d", "secret/key.txt", "cache");
    let r = p.pipe(&["run", "pipelines/d.yaml"]).ok();
    for stage in ["deidentify", "match", "label", "convert", "train", "evaluate"] {
        assert!(r.ran().contains(&stage.to_string()), "{stage}:\n{}", r.stdout);
    }
    let c = counters(&r, "deidentify");
    assert!(c["files_written"] > 60, "{c:?}");

    // The grep: every file of every entry after collect and parse, and their logs.
    let identifiers = checks(&[
        "identifiers",
        p.path("hosp/pacs").to_str().unwrap(),
        p.path("hosp/his").to_str().unwrap(),
    ]);
    assert!(identifiers["ids"].as_array().unwrap().len() >= 50, "{identifiers}");
    assert!(identifiers["names"].as_array().unwrap().len() >= 50);
    assert!(identifiers["birth_dates"].as_array().unwrap().len() >= 50);
    p.write("identifiers.json", &identifiers.to_string());
    let mut files = Vec::new();
    let mut upstream = Vec::new();
    for e in std::fs::read_dir(p.path("cache/entries")).unwrap() {
        let dir = e.unwrap().path();
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        let stage = m["stage"].as_str().unwrap();
        let files_of = walk_files(&dir).into_iter().map(|f| f.to_str().unwrap().to_string());
        if stage == "collect" || stage == "parse" {
            upstream.extend(files_of);
        } else {
            files.extend(files_of);
        }
    }
    // Logs of failed runs (a stage's log is in its entry when it succeeds).
    let logs = p.path("cache/logs/d");
    for log in if logs.is_dir() { walk_files(&logs) } else { Vec::new() } {
        let name = log.file_name().unwrap().to_str().unwrap();
        if !name.starts_with("collect") && !name.starts_with("parse") {
            files.push(log.to_str().unwrap().to_string());
        }
    }
    assert!(files.iter().any(|f| f.ends_with("report.html")));
    assert!(files.iter().any(|f| f.ends_with(".dcm")));
    let mut args = vec!["grep", "identifiers.json"];
    args.extend(files.iter().map(String::as_str));
    let grep = json_lines(
        std::process::Command::new(python())
            .arg(fixture("deid_checks.py"))
            .args(&args)
            .current_dir(p.dir.path()),
    )
    .remove(0);
    eprintln!("grep after deidentify: {grep}");
    assert_eq!(grep["hit_files"], 0, "{grep}");
    assert!(grep["files"].as_u64().unwrap() > 100, "{grep}");
    // The search finds them where they are (it can fail).
    let mut args = vec!["grep", "identifiers.json"];
    args.extend(upstream.iter().map(String::as_str));
    let control = json_lines(
        std::process::Command::new(python())
            .arg(fixture("deid_checks.py"))
            .args(&args)
            .current_dir(p.dir.path()),
    )
    .remove(0);
    assert!(control["hit_files"].as_u64().unwrap() > 0, "{control}");

    // pydicom reads every de-identified file; one study UID per study.
    let dicoms = table_path(&p, "pipelines/d.yaml", "deidentify.dicoms");
    let read = checks(&[
        "read",
        &dicoms,
        p.dir.path().to_str().unwrap(),
        p.path("secret/map_d.parquet").to_str().unwrap(),
    ]);
    eprintln!("pydicom: {read}");
    assert!(read["studies"].as_u64().unwrap() > 40, "{read}");
    assert!(read["shifted_patients"].as_u64().unwrap() > 40, "{read}");
    assert_eq!(read["problems"], serde_json::json!([]), "{read}");
    assert_eq!(read["files"].as_u64().unwrap(), c["files_written"]);

    // Match pairs the same images and reports as on the original data (those the
    // resolutions file, keyed by original ids, does not decide).
    p.pipe(&["run", "pipelines/plain.yaml", "--until", "match"]).ok();
    let pairs = checks(&[
        "pairs",
        p.path("secret/map_d.parquet").to_str().unwrap(),
        &table_path(&p, "pipelines/plain.yaml", "match.pairs"),
        &table_path(&p, "pipelines/d.yaml", "match.pairs"),
    ]);
    eprintln!("pairs: {pairs}");
    assert_eq!(pairs["only_plain"], serde_json::json!([]), "{pairs}");
    assert_eq!(pairs["only_deid"], serde_json::json!([]), "{pairs}");
    assert!(pairs["deid"].as_u64().unwrap() > 30, "{pairs}");

    // The same secret in another cache: the same UIDs. Another secret: none the same.
    let uids = |pipeline: &str| column(&p, &table_path(&p, pipeline, "deidentify.dicoms"), "study_instance_uid");
    let first = uids("pipelines/d.yaml");
    for (name, secret) in [("again", "secret/key.txt"), ("other", "secret/other.txt")] {
        deidentified(&p, name, secret, &format!("cache_{name}"));
        p.pipe(&["run", &format!("pipelines/{name}.yaml"), "--until", "deidentify"])
            .ok();
    }
    assert_eq!(uids("pipelines/again.yaml"), first);
    let other = uids("pipelines/other.yaml");
    assert_eq!(other.len(), first.len());
    assert!(other.iter().zip(&first).all(|(a, b)| a != b));
    // The secret is in the key only as a hash.
    let secret = "a secret of at least sixteen bytes";
    for f in walk_files(&p.path("cache")).into_iter().filter(|f| f.is_file()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "{} holds the secret",
            f.display()
        );
    }
}

#[test]
fn touched_attributes_equal_dicom_anonymizer_but_for_documented_differences() {
    let p = Project::new();
    public_copies(&p, |_| {});
    // One file says its pixels carry text: reported, not fixed.
    let burned = std::process::Command::new(python())
        .args([
            "-c",
            "import sys,glob,pydicom\nf=sorted(glob.glob(sys.argv[1]+'/*CT_small.dcm'))[0]\nd=pydicom.dcmread(f)\nd.BurnedInAnnotation='YES'\nd.save_as(f)",
            p.path("public").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(burned.status.success(), "{}", String::from_utf8_lossy(&burned.stderr));
    public_pipeline(&p, "pub");
    let r = p.pipe(&["run", "pipelines/pub.yaml"]).ok();
    let c = counters(&r, "deidentify");
    let collected = counters(&r, "collect");
    // Every file collect read as DICOM is de-identified (none rejected).
    assert_eq!(c.get("files_rejected"), Some(&0), "{}", r.stdout);
    assert_eq!(c.get("burned_in_annotation"), Some(&1), "{}", r.stdout);
    assert!(c["files_written"] > 150, "{c:?} {collected:?}");
    let compare = json_lines(
        std::process::Command::new(python())
            .arg(fixture("deid_compare.py"))
            .arg(p.path("secret/map.parquet"))
            .arg(p.dir.path()),
    );
    let summary = compare.last().unwrap();
    eprintln!("against dicom-anonymizer: {summary}");
    assert_eq!(summary["unexplained"], serde_json::json!({}), "{summary}");
    assert_eq!(summary["pydicom_read"].as_u64().unwrap(), c["files_written"]);
    assert!(summary["both"].as_u64().unwrap() > 1000, "{summary}");
    // Private attributes were there, and are gone.
    assert!(summary["originals_with_private"].as_u64().unwrap() > 10, "{summary}");
    assert_eq!(summary["ours_with_private"], 0, "{summary}");
}

/// Failure injection: pydicom's test files with bytes flipped in their headers. No
/// panic, and every file collect lists as DICOM is de-identified or a reject.
#[test]
fn flipped_bytes_end_in_dicoms_or_rejects() {
    let p = Project::new();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    public_copies(&p, |bytes| {
        if bytes.len() > 400 {
            for _ in 0..4 {
                let at = 132 + (next() as usize) % (bytes.len().min(3000) - 132);
                bytes[at] ^= 1 + (next() % 255) as u8;
            }
        }
    });
    public_pipeline(&p, "f");
    // 1.5 GiB of address space: enough for pipe, less than what trusting a damaged
    // length asked for (1.7 and 3.7 GB, before the walk measured unknown VRs and looked
    // inside implicit-VR sequences as the parser does).
    let mut cmd = p.command(&["run", "pipelines/f.yaml", "-j", "2"]);
    limit_address_space(&mut cmd, 3 << 29);
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("panicked") && !text.contains("memory allocation"),
        "{text}"
    );
    let rows = |t: &str, c: &str| column(&p, &table_path(&p, "pipelines/f.yaml", t), c).len();
    let listed = rows("collect.dicoms", "path");
    assert!(listed > 30, "{listed}");
    assert_eq!(
        rows("deidentify.dicoms", "path") + rows("deidentify.rejects", "file"),
        listed,
        "{text}"
    );
}

/// deidentify reads the files collect listed; one changed since (and its stat not
/// showing it) must not be de-identified into a result sealed under collect's hash.
#[test]
fn deidentify_checks_it_reads_what_collect_hashed() {
    let p = Project::new();
    synth(&p.path("hosp"), 12, 32);
    p.write("secret.txt", "the secret of the changed files test\n");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    p.write(
        "pipelines/p.yaml",
        &format!(
            "name: p\nroot: ..\nstages:\n  collect:\n    kind: collect\n    params: {{ pacs: hosp/pacs }}\n  deidentify:\n    kind: deidentify\n    inputs: [collect.dicoms]\n    params: {{ secret_file: secret.txt, profile: {} }}\n",
            repo.join("stages/deidentify/basic_profile.csv").display()
        ),
    );
    // Past the racy window, so the stat cache remembers the files.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    p.pipe(&["run", "pipelines/p.yaml"]).ok();
    let dicom = walkdir::WalkDir::new(p.path("hosp/pacs"))
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .find(|e| e.file_type().is_file())
        .unwrap()
        .into_path();
    let original = std::fs::read(&dicom).unwrap();
    let mut edited = original.clone();
    *edited.last_mut().unwrap() ^= 0x55;
    edit_unseen(&dicom, &edited);
    let r = p.pipe(&["run", "pipelines/p.yaml", "--force", "deidentify"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("is not the file collect read"), "{}", r.stdout);
    edit_unseen(&dicom, &original);
    assert!(p.pipe(&["run", "pipelines/p.yaml"]).ok().ran().is_empty());
    let verify = p.pipe(&["verify", "pipelines/p.yaml"]).ok();
    assert!(verify.stdout.contains(" 0 damaged"), "{}", verify.stdout);
}

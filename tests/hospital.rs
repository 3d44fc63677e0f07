//! The first half of the Phu Tho pipeline on the synthetic hospital: collect, filter,
//! parse and match reproduce the ground truth exactly, every file is accounted for,
//! growing the archive re-reads only new files.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use arrow::array::Array;
use pipe_core::table::{read_batch, str_col};

fn synth(dir: &Path, studies: usize) {
    common::synth(dir, studies, 32);
}

fn pipeline(p: &Project, resolutions: &str) {
    let services = Path::new(env!("CARGO_MANIFEST_DIR")).join("stages/parse/chest_services.txt");
    p.write("resolutions.csv", resolutions);
    p.write(
        "pipelines/h.yaml",
        &format!(
            "name: h\nroot: ..\nstages:\n  collect:\n    kind: collect\n    params: {{ pacs: hosp/pacs, his: hosp/his }}\n  filter:\n    kind: filter\n    inputs: [collect.dicoms]\n    params: {{ method: tags }}\n  parse:\n    kind: parse\n    inputs: [collect.his_files]\n    params: {{ services: {} }}\n  match:\n    kind: match\n    inputs: [filter.kept, parse.reports]\n    params: {{ resolutions: resolutions.csv }}\n",
            services.display()
        ),
    );
}

/// Values of `key` → `value` columns of a table (strings; null as "").
fn table(p: &Project, target: &str, key: &str, value: &str) -> BTreeMap<String, String> {
    let path = p
        .pipe(&["path", "pipelines/h.yaml", target])
        .ok()
        .stdout
        .trim()
        .to_string();
    let b = read_batch(Path::new(&path)).unwrap();
    let (k, v) = (str_col(&b, key).unwrap(), str_col(&b, value).unwrap());
    (0..b.num_rows())
        .map(|i| {
            (
                k.value(i).to_string(),
                if v.is_valid(i) {
                    v.value(i).to_string()
                } else {
                    String::new()
                },
            )
        })
        .collect()
}

fn truth(
    p: &Project,
    file: &str,
    filter: &dyn Fn(&arrow::array::RecordBatch, usize) -> bool,
    key: &str,
    value: &str,
) -> BTreeMap<String, String> {
    let b = read_batch(&p.path(&format!("hosp/truth/{file}.parquet"))).unwrap();
    let (k, v) = (str_col(&b, key).unwrap(), str_col(&b, value).unwrap());
    (0..b.num_rows())
        .filter(|&i| filter(&b, i))
        .map(|i| {
            (
                k.value(i).to_string(),
                if v.is_valid(i) {
                    v.value(i).to_string()
                } else {
                    String::new()
                },
            )
        })
        .collect()
}

fn is(col: &'static str, want: &'static str) -> impl Fn(&arrow::array::RecordBatch, usize) -> bool {
    move |b, i| {
        let c = str_col(b, col).unwrap();
        c.is_valid(i) && c.value(i) == want
    }
}

/// Assert two maps are equal, showing only the first differences.
fn same(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>, what: &str) {
    if got == want {
        return;
    }
    let mut diffs = Vec::new();
    for k in got.keys().chain(want.keys()).collect::<BTreeSet<_>>() {
        if got.get(k) != want.get(k) {
            diffs.push(format!("  {k}: got {:?}, truth {:?}", got.get(k), want.get(k)));
        }
    }
    panic!(
        "{what}: {} differences (got {} rows, truth {})\n{}",
        diffs.len(),
        got.len(),
        want.len(),
        diffs.iter().take(8).cloned().collect::<Vec<_>>().join("\n")
    );
}

fn strip(m: BTreeMap<String, String>, prefix: &str) -> BTreeMap<String, String> {
    m.into_iter()
        .map(|(k, v)| (k.strip_prefix(prefix).unwrap_or(&k).to_string(), v))
        .collect()
}

#[test]
fn synth_is_deterministic_and_pydicom_reads_every_valid_file() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    synth(a.path(), 300);
    synth(b.path(), 300);
    let files = |d: &Path| {
        walkdir::WalkDir::new(d)
            .sort_by_file_name()
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .map(|e| e.path().strip_prefix(d).unwrap().to_path_buf())
            .collect::<Vec<_>>()
    };
    let (fa, fb) = (files(a.path()), files(b.path()));
    assert_eq!(fa, fb);
    assert!(fa.len() > 600, "{} files", fa.len());
    for f in &fa {
        assert!(
            std::fs::read(a.path().join(f)).unwrap() == std::fs::read(b.path().join(f)).unwrap(),
            "{} differs",
            f.display()
        );
    }

    let truth = read_batch(&a.path().join("truth/dicoms.parquet")).unwrap();
    let (paths, collect, sops) = (
        str_col(&truth, "path").unwrap(),
        str_col(&truth, "collect").unwrap(),
        str_col(&truth, "sop_instance_uid").unwrap(),
    );
    let valid: Vec<(String, String)> = (0..truth.num_rows())
        .filter(|&i| collect.value(i) == "dicoms")
        .map(|i| {
            (
                a.path().join(paths.value(i)).display().to_string(),
                sops.value(i).to_string(),
            )
        })
        .collect();
    let out = std::process::Command::new(python())
        .arg(fixture("pydicom_read.py"))
        .args(valid.iter().map(|(p, _)| p))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(seen.len(), valid.len());
    let mut syntaxes = BTreeSet::new();
    for (s, (_, sop)) in seen.iter().zip(&valid) {
        assert_eq!(s["sop"], sop.as_str());
        assert!(s["has_pixels"].as_bool().unwrap());
        assert!(s["patient_name"].as_str().unwrap().contains('^'), "{s}");
        syntaxes.insert(s["transfer_syntax"].as_str().unwrap().to_string());
    }
    // Uncompressed (explicit and implicit), RLE and JPEG lossless all occur.
    assert!(syntaxes.len() >= 4, "{syntaxes:?}");
    // Vietnamese names survive as UTF-8.
    assert!(
        seen.iter()
            .any(|s| s["patient_name"].as_str().unwrap().contains("Nguyễn")),
        "no Vietnamese name seen"
    );
}

#[test]
fn collect_filter_parse_match_reproduce_the_truth_and_account_for_every_file() {
    let p = Project::new();
    synth(&p.path("hosp"), 2000);
    pipeline(&p, "sop_instance_uid,report_id\n");
    let run = p.pipe(&["run", "pipelines/h.yaml"]).ok();
    assert_eq!(run.ran(), ["collect", "filter", "match", "parse"]);

    // collect: every file in dicoms or rejects, as the truth says.
    let dicoms = strip(table(&p, "collect.dicoms", "path", "sop_instance_uid"), "hosp/");
    let rejects = strip(table(&p, "collect.rejects", "path", "reason"), "hosp/");
    let truth_ok = truth(&p, "dicoms", &is("collect", "dicoms"), "path", "sop_instance_uid");
    let truth_rej = truth(&p, "dicoms", &is("collect", "rejects"), "path", "case");
    same(&dicoms, &truth_ok, "collect.dicoms");
    assert_eq!(rejects.keys().collect::<Vec<_>>(), truth_rej.keys().collect::<Vec<_>>());
    for (path, reason) in &rejects {
        let expect = match truth_rej[path].as_str() {
            "truncated_dicom" => "truncated",
            "not_dicom" => "not a DICOM file",
            "missing_tag" => "missing ",
            other => panic!("unexpected reject case {other}"),
        };
        assert!(reason.contains(expect), "{path}: {reason}");
    }
    let on_disk: BTreeSet<String> = walkdir::WalkDir::new(p.path("hosp/pacs"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(p.path("hosp")).unwrap().display().to_string())
        .collect();
    let accounted: BTreeSet<String> = dicoms.keys().chain(rejects.keys()).cloned().collect();
    assert_eq!(
        accounted.len(),
        dicoms.len() + rejects.len(),
        "a file is in both tables"
    );
    assert_eq!(on_disk, accounted);

    // filter: kept = PA chest.
    let kept: BTreeSet<String> = table(&p, "filter.kept", "sop_instance_uid", "path")
        .into_keys()
        .collect();
    let truth_pa: BTreeSet<String> = truth(
        &p,
        "dicoms",
        &|b, i| {
            is("collect", "dicoms")(b, i)
                && arrow::array::AsArray::as_boolean(b.column_by_name("pa_chest").unwrap()).value(i)
        },
        "sop_instance_uid",
        "path",
    )
    .into_keys()
    .collect();
    assert_eq!(kept, truth_pa);
    let dropped = table(&p, "filter.dropped", "sop_instance_uid", "reason");
    assert_eq!(dropped.len() + kept.len(), dicoms.len());

    // parse: reports, file rejects, report rejects; every HIS file accounted for.
    let reports = table(&p, "parse.reports", "report_id", "description");
    same(
        &reports,
        &truth(&p, "reports", &is("parse", "reports"), "report_id", "description"),
        "parse.reports",
    );
    let sessions = strip(table(&p, "parse.sessions", "path", "encoding"), "hosp/");
    let prej = read_batch(Path::new(
        p.pipe(&["path", "pipelines/h.yaml", "parse.rejects"])
            .ok()
            .stdout
            .trim(),
    ))
    .unwrap();
    let (rp, rid) = (str_col(&prej, "path").unwrap(), str_col(&prej, "report_id").unwrap());
    let file_rejects: BTreeSet<String> = (0..prej.num_rows())
        .filter(|&i| rid.is_null(i))
        .map(|i| rp.value(i).strip_prefix("hosp/").unwrap().to_string())
        .collect();
    let report_rejects: BTreeSet<String> = (0..prej.num_rows())
        .filter(|&i| rid.is_valid(i))
        .map(|i| rid.value(i).to_string())
        .collect();
    assert_eq!(
        file_rejects,
        truth(&p, "his_files", &is("parse", "rejects"), "path", "session_id")
            .into_keys()
            .collect()
    );
    assert_eq!(
        report_rejects,
        truth(&p, "reports", &is("parse", "rejects"), "report_id", "session_id")
            .into_keys()
            .collect()
    );
    let his_truth = truth(&p, "his_files", &|_, _| true, "path", "encoding");
    assert_eq!(
        sessions
            .keys()
            .chain(file_rejects.iter())
            .cloned()
            .collect::<BTreeSet<_>>(),
        his_truth.keys().cloned().collect()
    );
    assert!(sessions.values().any(|e| e == "utf-16le"), "no UTF-16 session parsed");

    // match: pairs, review, unmatched, with reasons.
    let pairs = table(&p, "match.pairs", "sop_instance_uid", "report_id");
    same(
        &pairs,
        &truth(&p, "dicoms", &is("match", "pairs"), "sop_instance_uid", "report_id"),
        "match.pairs",
    );
    let mut review: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let rb = read_batch(Path::new(
        p.pipe(&["path", "pipelines/h.yaml", "match.review"]).ok().stdout.trim(),
    ))
    .unwrap();
    for i in 0..rb.num_rows() {
        review
            .entry(str_col(&rb, "sop_instance_uid").unwrap().value(i).to_string())
            .or_default()
            .push(str_col(&rb, "report_id").unwrap().value(i).to_string());
    }
    let review: BTreeMap<String, String> = review
        .into_iter()
        .map(|(k, mut v)| {
            v.sort();
            (k, v.join(","))
        })
        .collect();
    assert!(!review.is_empty());
    same(
        &review,
        &truth(&p, "dicoms", &is("match", "review"), "sop_instance_uid", "candidates"),
        "match.review",
    );
    same(
        &table(&p, "match.unmatched_dicoms", "sop_instance_uid", "reason"),
        &truth(
            &p,
            "dicoms",
            &is("match", "unmatched_dicoms"),
            "sop_instance_uid",
            "reason",
        ),
        "match.unmatched_dicoms",
    );
    same(
        &table(&p, "match.unmatched_reports", "report_id", "reason"),
        &truth(&p, "reports", &is("match", "unmatched_reports"), "report_id", "reason"),
        "match.unmatched_reports",
    );
    assert!(pairs.len() > 1500, "{} pairs", pairs.len());

    // Answering the review queue: match reruns (and only what follows), review empties.
    // An answer for an image that is not in the archive is counted, not ignored.
    let answers = std::fs::read_to_string(p.path("hosp/truth/resolutions.csv")).unwrap();
    p.write("resolutions.csv", &format!("{answers}1.2.826.0.1.999999.1,PT-NONE/0\n"));
    let status = p.pipe(&["status", "pipelines/h.yaml"]).ok();
    assert!(
        status.stdout.contains("file resolutions.csv changed"),
        "{}",
        status.stdout
    );
    let run = p.pipe(&["run", "pipelines/h.yaml"]).ok();
    assert_eq!(run.ran(), ["match"]);
    assert!(table(&p, "match.review", "sop_instance_uid", "report_id").is_empty());
    let resolved = table(&p, "match.pairs", "sop_instance_uid", "report_id");
    let intended = truth(
        &p,
        "dicoms",
        &is("match", "review"),
        "sop_instance_uid",
        "intended_report_id",
    );
    for (sop, report) in &intended {
        assert_eq!(resolved.get(sop), Some(report));
    }
    assert_eq!(resolved.len(), pairs.len() + intended.len());
    let c = counters(&run, "match");
    assert_eq!(
        (
            c["resolutions_applied"],
            c["resolutions_refused"],
            c["resolutions_unused"]
        ),
        (intended.len() as u64, 0, 1),
        "{}",
        run.stdout
    );
}

#[test]
fn growing_the_archive_reads_only_new_files_and_equals_a_fresh_run() {
    let p = Project::new();
    synth(&p.path("hosp"), 2000);
    pipeline(&p, "sop_instance_uid,report_id\n");
    p.pipe(&["run", "pipelines/h.yaml"]).ok();
    let before: BTreeSet<String> = walkdir::WalkDir::new(p.path("hosp/pacs"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .collect();
    synth(&p.path("hosp"), 2100);
    let after: BTreeSet<String> = walkdir::WalkDir::new(p.path("hosp/pacs"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .collect();
    let new = after.difference(&before).count();
    assert!(new > 90, "{new} new files");
    let run = p.pipe(&["run", "pipelines/h.yaml"]).ok();
    assert_eq!(run.ran(), ["collect", "filter", "match", "parse"]);
    assert!(run.stdout.contains(&format!("files_read={new} ")), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("files_reused={}", before.len())),
        "{}",
        run.stdout
    );

    // From scratch in another cache: the same keys, the same tables.
    let h = std::fs::read_to_string(p.path("pipelines/h.yaml")).unwrap();
    p.write(
        "pipelines/fresh.yaml",
        &h.replace("name: h\n", "name: fresh\ncache: cache2\n"),
    );
    let r = p.pipe(&["run", "pipelines/fresh.yaml"]).ok();
    assert!(
        r.stdout.contains(&format!("files_read={} ", after.len())),
        "{}",
        r.stdout
    );
    for t in [
        "collect.dicoms",
        "collect.rejects",
        "collect.his_files",
        "filter.kept",
        "filter.dropped",
        "parse.reports",
        "match.pairs",
        "match.review",
        "match.unmatched_dicoms",
        "match.unmatched_reports",
    ] {
        let a = read_batch(Path::new(p.pipe(&["path", "pipelines/h.yaml", t]).ok().stdout.trim())).unwrap();
        let b = read_batch(Path::new(
            p.pipe(&["path", "pipelines/fresh.yaml", t]).ok().stdout.trim(),
        ))
        .unwrap();
        assert_eq!(a, b, "{t} differs between the incremental and the fresh run");
    }
}

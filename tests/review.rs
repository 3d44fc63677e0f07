//! The human loops end to end on the synthetic hospital: `pipe review` writes the match
//! and label queues (CSV, HTML, thumbnails), answers filled from the hospital's truth are
//! applied and the next run uses them; answers that match nothing are counted and
//! named; the `qc` stage draws a seeded 5% per round, verdicts feed back as overrides,
//! and rounds follow until one finds no error.

mod common;
use common::*;

use std::collections::HashMap;
use std::path::Path;

use pipe_core::table::read_batch;
use pipe_cxr::csv;

/// A project on a hospital whose answers files start empty, so the queues are full.
fn project(studies: usize) -> Project {
    let p = Project::new();
    synth(&p.path("hosp"), studies, 64);
    p.write("answers/resolutions.csv", "sop_instance_uid,report_id\n");
    p.write(
        "answers/overrides.csv",
        "description_hash,chest_wall,pleura,parenchyma,cardiac,abnormal,note\n",
    );
    p.write("answers/verdicts.csv", "round,sop_instance_uid,verdict\n");
    phutho_on_hospital(&p, "r", 64, "");
    // phutho_on_hospital points match and label at the truth's answers: not here.
    let yaml = std::fs::read_to_string(p.path("pipelines/r.yaml")).unwrap();
    let yaml = yaml
        .replace(
            &format!("{}/truth/resolutions.csv", p.path("hosp").display()),
            &p.path("answers/resolutions.csv").display().to_string(),
        )
        .replace(
            &format!("{}/truth/overrides.csv", p.path("hosp").display()),
            &p.path("answers/overrides.csv").display().to_string(),
        );
    // A lexicon without its calcification terms ("vôi hóa"), as a site's list might
    // lack them: descriptions that mention one go to the label queue.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lexicon: String = std::fs::read_to_string(repo.join("stages/label/lexicon.yaml"))
        .unwrap()
        .lines()
        .filter(|l| !(l.trim_start().starts_with("- ") && l.contains("vôi")))
        .map(|l| format!("{l}\n"))
        .collect();
    p.write("answers/lexicon.yaml", &lexicon);
    p.write(
        "pipelines/r.yaml",
        &format!(
            "{}  qc:\n    params: {{ verdicts: {} }}\n",
            yaml.replace(
                "  label:\n    params: {",
                &format!(
                    "  label:\n    params: {{ lexicon: {}, ",
                    p.path("answers/lexicon.yaml").display()
                )
            ),
            p.path("answers/verdicts.csv").display()
        ),
    );
    p
}

fn rows(p: &Project, table: &str) -> usize {
    read_batch(Path::new(
        p.pipe(&["path", "pipelines/r.yaml", table]).ok().stdout.trim(),
    ))
    .unwrap()
    .num_rows()
}

/// The CSV at `path` as (header, records).
fn sheet(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut all = csv::records(&std::fs::read_to_string(path).unwrap());
    let header = all.remove(0);
    (header, all)
}

fn write_sheet(path: &Path, header: &[String], records: &[Vec<String>]) {
    let mut text = csv::line(header);
    for r in records {
        text.push_str(&csv::line(r));
    }
    std::fs::write(path, text).unwrap();
}

/// `key=value` counters of a stage in a run summary.
fn counter(r: &Run, stage: &str, name: &str) -> u64 {
    counters(r, stage).get(name).copied().unwrap_or(0)
}

#[test]
fn review_queues_are_written_answered_and_applied() {
    let p = project(400);
    p.pipe(&["run", "pipelines/r.yaml", "--until", "qc"]).ok();
    let (match_queue, label_queue) = (rows(&p, "match.review"), rows(&p, "label.review"));
    assert!(
        match_queue > 0 && label_queue > 0,
        "queues: match {match_queue}, label {label_queue}"
    );

    // match: one CSV row per candidate, a thumbnail per image, the page shows them.
    // Both queues from this run's results (applying answers makes the stages stale).
    let dir = p.path("review");
    let out = p
        .pipe(&["review", "pipelines/r.yaml", "match", "--out", &dir.to_string_lossy()])
        .ok()
        .stdout;
    let label_out = p
        .pipe(&["review", "pipelines/r.yaml", "label", "--out", &dir.to_string_lossy()])
        .ok()
        .stdout;
    assert!(
        label_out.contains(&format!("{label_queue} descriptions to review")),
        "{label_out}"
    );
    assert!(out.contains("fill"), "{out}");
    let (header, mut records) = sheet(&dir.join("match.csv"));
    assert_eq!(records.len(), match_queue);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (sop, report, thumb) = (col("sop_instance_uid"), col("report_id"), col("thumbnail"));
    let html = std::fs::read_to_string(dir.join("match.html")).unwrap();
    for r in &records {
        assert!(!r[thumb].is_empty(), "no thumbnail for {}", r[sop]);
        let png = pipe_cxr::pixels::load_gray(&dir.join(&r[thumb])).unwrap();
        assert_eq!((png.width, png.height), (256, 256));
        assert!(html.contains(&format!("src=\"{}\"", r[thumb])), "{}", r[thumb]);
        assert!(html.contains(&r[report]));
    }
    // Answer from the hospital's truth: x on the right report of each image.
    let truth: HashMap<String, String> = sheet(&p.path("hosp/truth/resolutions.csv"))
        .1
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    let mut answered = 0;
    for r in records.iter_mut() {
        if truth.get(&r[sop]) == Some(&r[report]) {
            r[col("choose")] = "x".into();
            answered += 1;
        }
    }
    assert!(answered > 0);
    write_sheet(&dir.join("match.csv"), &header, &records);
    let out = p
        .pipe(&[
            "review",
            "pipelines/r.yaml",
            "match",
            "--apply",
            &dir.join("match.csv").to_string_lossy(),
        ])
        .ok()
        .stdout;
    assert!(out.contains(&format!("resolutions: {answered} added")), "{out}");

    // label: the queue with what the labeller could not read and its suggestion.
    let (header, mut records) = sheet(&dir.join("label.csv"));
    assert_eq!(records.len(), label_queue);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert!(
        records
            .iter()
            .all(|r| !r[col("unexplained")].is_empty() && !r[col("description")].is_empty())
    );
    let html = std::fs::read_to_string(dir.join("label.html")).unwrap();
    assert!(
        html.contains("<mark>"),
        "unexplained sections marked: {:?}",
        &records[..2.min(records.len())]
    );
    let truth: HashMap<String, Vec<String>> = sheet(&p.path("hosp/truth/overrides.csv"))
        .1
        .into_iter()
        .map(|r| (r[0].clone(), r[1..6].to_vec()))
        .collect();
    let mut answered_labels = 0;
    for r in records.iter_mut() {
        if let Some(l) = truth.get(&r[0]) {
            for (k, v) in l.iter().enumerate() {
                r[1 + k] = v.clone();
            }
            answered_labels += 1;
        }
    }
    write_sheet(&dir.join("label.csv"), &header, &records);
    let out = p
        .pipe(&[
            "review",
            "pipelines/r.yaml",
            "label",
            "--apply",
            &dir.join("label.csv").to_string_lossy(),
        ])
        .ok()
        .stdout;
    assert!(out.contains(&format!("overrides: {answered_labels} added")), "{out}");

    // An answer that matches nothing: counted and warned about in the run.
    let res = std::fs::read_to_string(p.path("answers/resolutions.csv")).unwrap();
    p.write("answers/resolutions.csv", &format!("{res}9.9.9.9,R-nowhere\n"));
    let r = p.pipe(&["run", "pipelines/r.yaml", "--until", "qc"]).ok();
    assert_eq!(
        counter(&r, "match", "resolutions_applied"),
        answered as u64,
        "{}",
        r.stdout
    );
    assert_eq!(counter(&r, "match", "resolutions_unused"), 1, "{}", r.stdout);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("warning: stage `match`: resolutions_unused=1: given but matching nothing"),
        "{all}"
    );
    assert_eq!(
        counter(&r, "label", "overrides_applied"),
        answered_labels as u64,
        "{}",
        r.stdout
    );
    // The answered items left the queues.
    assert!(rows(&p, "match.review") < match_queue, "match review did not shrink");
    assert_eq!(rows(&p, "label.review"), label_queue - answered_labels);
}

/// The sop_instance_uids of a table.
fn sops(p: &Project, table: &str) -> Vec<String> {
    let b = read_batch(Path::new(
        p.pipe(&["path", "pipelines/r.yaml", table]).ok().stdout.trim(),
    ))
    .unwrap();
    let c = pipe_core::table::str_col(&b, "sop_instance_uid").unwrap();
    (0..b.num_rows()).map(|i| c.value(i).to_string()).collect()
}

/// The rounds table: (round, sampled, ok, wrong, state).
fn rounds(p: &Project) -> Vec<(i64, i64, i64, i64, String)> {
    let b = read_batch(Path::new(
        p.pipe(&["path", "pipelines/r.yaml", "qc.rounds"]).ok().stdout.trim(),
    ))
    .unwrap();
    let i = |c: &str| pipe_core::table::i64_col(&b, c).unwrap().clone();
    let (r, s, o, w) = (i("round"), i("sampled"), i("ok"), i("wrong"));
    let st = pipe_core::table::str_col(&b, "state").unwrap();
    (0..b.num_rows())
        .map(|k| (r.value(k), s.value(k), o.value(k), w.value(k), st.value(k).to_string()))
        .collect()
}

#[test]
fn qc_draws_five_percent_rounds_until_one_finds_no_error() {
    let p = project(300);
    p.pipe(&["run", "pipelines/r.yaml", "--until", "qc"]).ok();
    let images: std::collections::HashSet<String> = sops(&p, "convert.images").into_iter().collect();
    let eligible = sops(&p, "label.labels")
        .into_iter()
        .filter(|s| images.contains(s))
        .count();
    let n = (0.05 * eligible as f64).ceil() as usize;
    let first = sops(&p, "qc.sample");
    assert_eq!(first.len(), n, "5% of {eligible} labelled images");
    assert_eq!(rounds(&p), [(1, n as i64, 0, 0, "open".to_string())]);

    // The sheet and the contact sheet of round 1.
    let dir = p.path("qc");
    let out = p
        .pipe(&["review", "pipelines/r.yaml", "qc", "--out", &dir.to_string_lossy()])
        .ok()
        .stdout;
    assert!(out.starts_with(&format!("{n} images of the current QC round")), "{out}");
    let html = std::fs::read_to_string(dir.join("qc.html")).unwrap();
    assert_eq!(html.matches("<img src=\"thumbs/").count(), n, "a thumbnail per image");
    assert!(html.contains("Quality control, round 1"), "{html}");
    // Each label with what decided it.
    assert!(
        ["template:", "keyword:", "negated:", "none"]
            .iter()
            .any(|by| html.contains(by)),
        "{html}"
    );
    let (header, mut records) = sheet(&dir.join("qc.csv"));
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    // One error: the first image's abnormal label is wrong; the rest are right.
    let wrong_sop = records[0][col("sop_instance_uid")].clone();
    let was = records[0][col("abnormal")].clone();
    let fixed = if was == "1" { "0" } else { "1" };
    for (k, r) in records.iter_mut().enumerate() {
        r[col("verdict")] = if k == 0 { "wrong" } else { "ok" }.into();
    }
    records[0][col("abnormal")] = fixed.into();
    write_sheet(&dir.join("qc.csv"), &header, &records);
    let out = p
        .pipe(&[
            "review",
            "pipelines/r.yaml",
            "qc",
            "--apply",
            &dir.join("qc.csv").to_string_lossy(),
        ])
        .ok()
        .stdout;
    assert!(
        out.contains(&format!("verdicts: {n} added")) && out.contains("overrides: 1 added"),
        "{out}"
    );
    assert!(out.contains("1 judged wrong"), "{out}");

    // Next run: the fix is an override, round 1 has errors, round 2 is a new sample.
    let r = p.pipe(&["run", "pipelines/r.yaml", "--until", "qc"]).ok();
    assert!(counter(&r, "label", "overrides_applied") >= 1, "{}", r.stdout);
    let labels = read_batch(Path::new(
        p.pipe(&["path", "pipelines/r.yaml", "label.labels"]).ok().stdout.trim(),
    ))
    .unwrap();
    let (ls, la) = (
        pipe_core::table::str_col(&labels, "sop_instance_uid").unwrap(),
        pipe_core::table::bool_col(&labels, "abnormal").unwrap(),
    );
    let k = (0..labels.num_rows()).find(|&i| ls.value(i) == wrong_sop).unwrap();
    assert_eq!(la.value(k), fixed == "1", "the corrected label is in labels");
    assert_eq!(
        rounds(&p),
        [
            (1, n as i64, n as i64 - 1, 1, "errors".to_string()),
            (2, n as i64, 0, 0, "open".to_string())
        ]
    );
    let second = sops(&p, "qc.sample");
    assert_eq!(second.len(), n);
    assert!(second.iter().all(|s| !first.contains(s)), "round 2 draws new images");

    // Round 2 all right: QC passes and stays at round 2.
    p.pipe(&["review", "pipelines/r.yaml", "qc", "--out", &dir.to_string_lossy()])
        .ok();
    let (header, mut records) = sheet(&dir.join("qc.csv"));
    let v = header.iter().position(|h| h == "verdict").unwrap();
    for r in records.iter_mut() {
        r[v] = "ok".into();
    }
    write_sheet(&dir.join("qc.csv"), &header, &records);
    p.pipe(&[
        "review",
        "pipelines/r.yaml",
        "qc",
        "--apply",
        &dir.join("qc.csv").to_string_lossy(),
    ])
    .ok();
    let r = p.pipe(&["run", "pipelines/r.yaml", "--until", "qc"]).ok();
    assert_eq!(r.ran(), ["qc"], "only qc reads the verdicts: {}", r.stdout);
    assert_eq!(rounds(&p)[1], (2, n as i64, n as i64, 0, "passed".to_string()));
    assert_eq!(sops(&p, "qc.sample"), second);
    let entry = Path::new(p.pipe(&["path", "pipelines/r.yaml", "qc.sample"]).ok().stdout.trim())
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(
        std::fs::read_to_string(entry.join("qc.html"))
            .unwrap()
            .contains("quality control passed")
    );
}

//! The `sql` kind against DuckDB: the same query over the same tables gives the same
//! rows (DuckDB is the oracle); a result is the same bytes on every run; errors name the
//! query's tables.

mod common;
use common::*;

/// (stage, query) of the test pipeline's sql stages, besides phutho.yaml's `prevalence`.
const QUERIES: &[(&str, &str)] = &[
    (
        "abnormal_only",
        "SELECT sop_instance_uid, patient_id, cardiac FROM labels WHERE abnormal AND NOT chest_wall",
    ),
    (
        "per_patient",
        "SELECT patient_id, COUNT(*) AS images, AVG(CASE WHEN abnormal THEN 1.0 ELSE 0.0 END) AS abnormal_rate, MAX(decided_by) AS decided_by FROM labels GROUP BY patient_id HAVING COUNT(*) > 1",
    ),
    (
        "with_part",
        "SELECT l.sop_instance_uid, l.pleura, s.part FROM labels l LEFT JOIN split s ON l.sop_instance_uid = s.sop_instance_uid WHERE l.pleura OR s.part = 'test'",
    ),
];

fn rows_of(p: &Project, table_path: &str) -> serde_json::Value {
    let script = "import json,sys,pyarrow.parquet as pq\nt=pq.read_table(sys.argv[1])\nrows=[list(r.values()) for r in t.to_pylist()]\nrows.sort(key=lambda r: [(v is not None, str(type(v)), v if v is not None else 0) for v in r])\nprint(json.dumps({'columns': t.column_names, 'rows': rows}))";
    let out = std::process::Command::new(python())
        .args(["-c", script, table_path])
        .current_dir(p.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn same_rows(ours: &serde_json::Value, duck: &serde_json::Value, what: &str) {
    assert_eq!(ours["columns"], duck["columns"], "{what}: columns");
    let (a, b) = (ours["rows"].as_array().unwrap(), duck["rows"].as_array().unwrap());
    assert_eq!(a.len(), b.len(), "{what}: row counts");
    for (x, y) in a.iter().zip(b) {
        for (u, v) in x.as_array().unwrap().iter().zip(y.as_array().unwrap()) {
            match (u.as_f64(), v.as_f64()) {
                (Some(u), Some(v)) => assert!((u - v).abs() <= 1e-12 * v.abs().max(1.0), "{what}: {x} vs {y}"),
                _ => assert_eq!(u, v, "{what}: {x} vs {y}"),
            }
        }
    }
}

#[test]
fn sql_stages_equal_duckdb_on_the_same_query() {
    let p = Project::new();
    synth(&p.path("hosp"), 200, 32);
    let mut extra = String::new();
    for (name, query) in QUERIES {
        extra += &format!(
            "  {name}:\n    kind: sql\n    inputs: [label.labels, split.split]\n    params:\n      query: \"{query}\"\n"
        );
    }
    phutho_on_hospital(&p, "d", 32, &extra);
    let mut targets = vec!["run", "pipelines/d.yaml", "--until", "prevalence"];
    for (name, _) in QUERIES {
        targets.extend(["--until", name]);
    }
    let r = p.pipe(&targets).ok();
    let path = |t: &str| p.pipe(&["path", "pipelines/d.yaml", t]).ok().stdout.trim().to_string();
    let tables = [
        format!("labels={}", path("label.labels")),
        format!("split={}", path("split.split")),
    ];
    let phutho = std::fs::read_to_string(p.path("pipelines/phutho.yaml")).unwrap();
    let prevalence: serde_yaml::Value = serde_yaml::from_str(&phutho).unwrap();
    let prevalence = prevalence["stages"]["prevalence"]["params"]["query"]
        .as_str()
        .unwrap()
        .to_string();
    let mut checked = 0;
    for (name, query) in QUERIES.iter().copied().chain([("prevalence", prevalence.as_str())]) {
        let ours = rows_of(&p, &path(&format!("{name}.result")));
        let duck = json_lines(
            std::process::Command::new(python())
                .arg(fixture("duckdb_query.py"))
                .arg(query)
                .args(&tables),
        );
        assert!(
            !ours["rows"].as_array().unwrap().is_empty(),
            "{name}: no rows\n{}",
            r.stdout
        );
        same_rows(&ours, &duck[0], name);
        checked += 1;
    }
    assert_eq!(checked, 4);

    // Sorted by all its columns: the same bytes again when forced to run again.
    let before = entry_files(&p, "pipelines/d.yaml", "per_patient.result");
    p.pipe(&[
        "run",
        "pipelines/d.yaml",
        "--force",
        "per_patient",
        "--until",
        "per_patient",
    ])
    .ok();
    assert_eq!(
        before["result.parquet"],
        entry_files(&p, "pipelines/d.yaml", "per_patient.result")["result.parquet"]
    );
}

#[test]
fn a_bad_query_names_the_tables_and_an_order_by_asks_for_sort_false() {
    let p = Project::new();
    p.write(
        "pipelines/q.yaml",
        "root: ..\nstages:\n  a:\n    kind: command\n    params:\n      run: [python3, scripts/emit.py, \"{out:out}\"]\n      outputs: [out]\n      files: [scripts/emit.py]\n  q:\n    kind: sql\n    inputs: [a]\n    params:\n      query: SELECT * FROM labels\n",
    );
    let r = p.pipe(&["run", "pipelines/q.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let text = format!("{}{}", r.stdout, r.stderr);
    assert!(
        text.contains("query: ") && text.contains("the query's tables: a_out, out"),
        "{text}"
    );

    p.write(
        "pipelines/q.yaml",
        "root: ..\nstages:\n  q:\n    kind: sql\n    params:\n      query: SELECT 1 AS x ORDER BY x\n",
    );
    let r = p.pipe(&["check", "pipelines/q.yaml"]);
    assert!(
        r.stderr.contains("q.yaml:6:") && r.stderr.contains("set `sort: false`"),
        "{}",
        r.stderr
    );
}

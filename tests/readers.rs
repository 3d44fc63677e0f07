//! Readers other than ours open pipe's Parquet (through `pipe path` and the views) and
//! see the metadata that says where the file came from.

mod common;
use common::*;

#[test]
fn pyarrow_pandas_and_duckdb_read_our_tables_and_metadata() {
    let p = Project::new();
    p.write(
        "pipelines/p.yaml",
        &format!(
            "name: t\nroot: ..\nstages:\n{}",
            emit_stage("a", "héllo", None, ", --rows, \"5\"")
        ),
    );
    p.pipe(&["run", "pipelines/p.yaml"]).ok();
    let path = p
        .pipe(&["path", "pipelines/p.yaml", "a.out"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let out = std::process::Command::new(python())
        .arg(fixture("read_with_others.py"))
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["pyarrow_rows"], 5);
    assert_eq!(seen["pandas_rows"], 5);
    assert_eq!(seen["duckdb_rows"], 5);
    assert_eq!(seen["pandas_values"][0], "héllo");
    assert_eq!(seen["compression"], "ZSTD");
    assert_eq!(
        seen["pyarrow_columns"],
        serde_json::json!(["i", "value", "upstream_rows"])
    );
    let meta = &seen["metadata"];
    assert_eq!(meta["kind"], "command");
    assert_eq!(meta["table"], "out");
    assert_eq!(seen["duckdb_metadata"]["table"], "out");
    // Only what is the same for the same data: a downstream key hashes these bytes.
    for absent in ["key", "stage", "params", "pipe_version"] {
        assert!(meta.get(absent).is_none(), "`{absent}` in the table's metadata: {meta}");
    }
    // Provenance is in the manifest beside the table.
    let entry = std::path::Path::new(&path).parent().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["key"].as_str().unwrap(),
        entry.file_name().unwrap().to_str().unwrap()
    );
    assert_eq!(manifest["stage"], "a");
    assert_eq!(manifest["params"]["outputs"], serde_json::json!(["out"]));

    // The view path a notebook would use points at the same file.
    let view = p.path("cache/views/t/a/out.parquet");
    assert_eq!(std::fs::read(view).unwrap(), std::fs::read(&path).unwrap());
    let show = p.pipe(&["show", "pipelines/p.yaml", "a", "-n", "2"]).ok();
    assert!(show.stdout.contains("5 rows · kind command"), "{}", show.stdout);
    assert!(show.stdout.contains("value: Utf8"), "{}", show.stdout);
    assert!(show.stdout.contains("héllo"), "{}", show.stdout);
}

#[test]
fn declared_schema_is_checked_on_write() {
    let p = Project::new();
    p.write("schemas/out.yaml", "table: out\ncolumns:\n  - {name: i, type: int64}\n  - {name: value, type: utf8}\n  - {name: upstream_rows, type: int64}\n");
    p.write("schemas/wrong.yaml", "table: out\ncolumns:\n  - {name: i, type: int64}\n  - {name: value, type: int64}\n  - {name: upstream_rows, type: int64}\n");
    let stage = |schema: &str| {
        emit_stage("a", "v", None, "").replace(
            "      files: [scripts/emit.py]\n",
            &format!("      files: [scripts/emit.py]\n      schemas: {{ out: schemas/{schema}.yaml }}\n"),
        )
    };
    p.write(
        "pipelines/p.yaml",
        &format!("name: t\nroot: ..\nstages:\n{}", stage("out")),
    );
    p.pipe(&["run", "pipelines/p.yaml"]).ok();
    p.write(
        "pipelines/p.yaml",
        &format!("name: t\nroot: ..\nstages:\n{}", stage("wrong")),
    );
    let r = p.pipe(&["run", "pipelines/p.yaml"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("column `value` cannot be read as Int64"),
        "{}",
        r.stdout
    );
}

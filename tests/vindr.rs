//! The `vindr` import: majority-of-3 and consensus votes and fused boxes against
//! answers computed by hand, the votes on a synthetic VinDr-like dataset against
//! pandas, and the dataset's pipeline (collect → convert, vindr → split → train →
//! evaluate) on the CPU.

mod common;
use common::*;

use std::path::Path;

const THREE_READERS: &str = "image_id,rad_id,class_name,x_min,y_min,x_max,y_max
a,R1,Cardiomegaly,100,100,200,200
a,R1,Nodule/Mass,10,10,20,20
a,R2,cardiomegaly ,110,100,210,200
a,R3,No finding,,,,
b,R4,Pleural effusion,0,0,50,50
b,R5,Pleural effusion,0,0,50,50
b,R6,Pleural effusion,200,200,250,250
b,R6,Aortic enlargement,,,,
c,R1,No finding,,,,
c,R2,No finding,,,,
c,R3,No finding,,,,
d,R1,Lung nodle,1,1,2,2
d,R2,Nodule/Mass,30,10,20,20
";

const CONSENSUS: &str = "image_id,class_name,x_min,y_min,x_max,y_max
e,Pneumothorax,5,5,25,25
e,Rib fracture,1,1,3,3
f,No finding,,,,
";

/// (image, class column) → (positive, uncertain) for the cells that are not (false, false).
fn marked(labels: &[serde_json::Value]) -> Vec<(String, String, bool, bool)> {
    let mut out = Vec::new();
    for r in labels {
        for (k, v) in r.as_object().unwrap() {
            if let Some(class) = k.strip_suffix("_uncertain") {
                let (pos, unc) = (r[class].as_bool().unwrap(), v.as_bool().unwrap());
                if pos || unc {
                    out.push((r["image_id"].as_str().unwrap().to_string(), class.to_string(), pos, unc));
                }
            }
        }
    }
    out.sort();
    out
}

fn fused(boxes: &[serde_json::Value]) -> Vec<(String, String, i64, [f64; 4])> {
    let mut out: Vec<_> = boxes
        .iter()
        .filter(|b| b["source"] == "fused")
        .map(|b| {
            (
                b["image_id"].as_str().unwrap().to_string(),
                b["class_name"].as_str().unwrap().to_string(),
                b["readers"].as_i64().unwrap(),
                ["x_min", "y_min", "x_max", "y_max"].map(|c| b[c].as_f64().unwrap()),
            )
        })
        .collect();
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

fn s(v: &str) -> String {
    v.to_string()
}

#[test]
fn votes_and_fused_boxes_equal_the_hand_computed_answer() {
    let p = Project::new();
    p.write("data/train.csv", THREE_READERS)
        .write("data/test.csv", CONSENSUS);
    p.write(
        "pipelines/v.yaml",
        "name: v\nroot: ..\nstages:\n  majority:\n    kind: vindr\n    params: {annotations: data/train.csv}\n  any:\n    kind: vindr\n    params: {annotations: data/train.csv, vote: any}\n  consensus:\n    kind: vindr\n    params: {annotations: data/test.csv}\n",
    );
    let r = p.pipe(&["run", "pipelines/v.yaml"]).ok();
    assert_eq!(counters(&r, "majority")["rows_rejected"], 2, "{}", r.stdout);
    let t = |stage: &str, table: &str| table_rows(&p, &table_path(&p, "pipelines/v.yaml", &format!("{stage}.{table}")));

    // Majority of 3: a class is positive with 2 or 3 readers, uncertain with 1.
    assert_eq!(
        marked(&t("majority", "labels")),
        vec![
            (s("a"), s("cardiomegaly"), true, false),
            (s("a"), s("no_finding"), false, true),
            (s("a"), s("nodule_mass"), false, true),
            (s("b"), s("aortic_enlargement"), false, true),
            (s("b"), s("pleural_effusion"), true, false),
            (s("c"), s("no_finding"), true, false),
        ]
    );
    let readers: Vec<i64> = t("majority", "labels")
        .iter()
        .map(|r| r["readers"].as_i64().unwrap())
        .collect();
    assert_eq!(readers, [3, 3, 3]);
    // a's two cardiomegaly boxes overlap by IoU 9000/11000: one finding, their mean;
    // b's two identical effusion boxes are one, R6's elsewhere is its own (1 reader:
    // not a majority); a's nodule has 1 reader.
    assert_eq!(
        fused(&t("majority", "boxes")),
        vec![
            (s("a"), s("Cardiomegaly"), 2, [105.0, 100.0, 205.0, 200.0]),
            (s("b"), s("Pleural effusion"), 2, [0.0, 0.0, 50.0, 50.0]),
        ]
    );
    let per_reader = t("majority", "boxes").iter().filter(|b| b["source"] != "fused").count();
    assert_eq!(per_reader, 6);
    let reasons: Vec<String> = t("majority", "rejects")
        .iter()
        .map(|r| format!("{} {}", r["line"], r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            "13 class `Lung nodle` is not in params.classes",
            "14 the box (30, 10, 20, 20) has max < min"
        ]
    );

    // Any reader: every mark is positive, nothing is uncertain.
    let any = marked(&t("any", "labels"));
    assert!(any.iter().all(|(_, _, pos, unc)| *pos && !unc), "{any:?}");
    assert_eq!(any.len(), 6);
    assert_eq!(fused(&t("any", "boxes")).len(), 4);

    // Consensus (no rad_id): one reader, whose every mark is the label.
    assert_eq!(
        marked(&t("consensus", "labels")),
        vec![
            (s("e"), s("pneumothorax"), true, false),
            (s("e"), s("rib_fracture"), true, false),
            (s("f"), s("no_finding"), true, false),
        ]
    );
    assert_eq!(
        fused(&t("consensus", "boxes")),
        vec![
            (s("e"), s("Pneumothorax"), 1, [5.0, 5.0, 25.0, 25.0]),
            (s("e"), s("Rib fracture"), 1, [1.0, 1.0, 3.0, 3.0]),
        ]
    );
    assert!(t("consensus", "findings").iter().all(|f| f["rad_id"] == "consensus"));
}

#[test]
fn synthetic_vindr_votes_equal_pandas_and_the_pipeline_trains() {
    if worker().is_none() {
        return;
    }
    let p = Project::new();
    let out = std::process::Command::new(pipe_bin())
        .args(["synth", "vindr", "--out", p.path("data/vindr").to_str().unwrap()])
        .args(["--studies", "150", "--seed", "3", "--size", "32"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipeline = std::fs::read_to_string(repo.join("pipelines/vindr.yaml"))
        .unwrap()
        .replace("size: 64", "size: 32")
        .replace("epochs: 15", "epochs: 2");
    p.write(
        "pipelines/vindr.yaml",
        &format!(
            "{pipeline}\n  test_consensus:\n    kind: vindr\n    params:\n      annotations: data/vindr/annotations_test.csv\n"
        ),
    );
    let r = p.pipe(&["run", "pipelines/vindr.yaml"]).ok();
    for stage in ["vindr", "convert", "train", "evaluate", "test_consensus"] {
        assert!(r.ran().contains(&stage.to_string()), "{stage}:\n{}", r.stdout);
    }
    assert_eq!(counters(&r, "vindr")["rows_rejected"], 2, "{}", r.stdout);

    // The votes equal a pandas group-by over the same CSV.
    // The default classes, as `pipe kinds` documents them.
    let classes: Vec<String> = {
        let out = p.pipe(&["kinds", "vindr"]).ok().stdout;
        let line = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("classes: list of string = "))
            .unwrap_or_else(|| panic!("no default classes in:\n{out}"));
        serde_json::from_str(line).unwrap()
    };
    assert_eq!(classes.len(), 28, "{classes:?}");
    let labels = table_path(&p, "pipelines/vindr.yaml", "vindr.labels");
    let mut cmd = std::process::Command::new(python());
    cmd.arg(fixture("vindr_votes.py"))
        .arg(p.path("data/vindr/annotations_train.csv"))
        .arg(&labels)
        .args(&classes);
    let oracle = &json_lines(&mut cmd)[0];
    assert_eq!(oracle["differ"], 0, "{oracle}");
    assert!(oracle["images"].as_u64().unwrap() > 50, "{oracle}");

    // The image key is the DICOM's SOP Instance UID, so the labels join convert's images.
    let truth = table_rows(&p, p.path("data/vindr/truth/vindr.parquet").to_str().unwrap());
    let sop_of: std::collections::HashMap<String, String> = truth
        .iter()
        .map(|t| {
            (
                s(t["image_id"].as_str().unwrap()),
                s(t["sop_instance_uid"].as_str().unwrap()),
            )
        })
        .collect();
    for l in table_rows(&p, &labels) {
        assert_eq!(
            l["sop_instance_uid"].as_str().unwrap(),
            sop_of[l["image_id"].as_str().unwrap()]
        );
    }
    // VinDr's protocol as a pipeline: trained on the readers' votes, scored on the
    // consensus of the test set.
    let consensus_pipeline = std::fs::read_to_string(repo.join("pipelines/vindr-consensus-test.yaml"))
        .unwrap()
        .replace("size: 64", "size: 32");
    p.write("pipelines/vindr-consensus-test.yaml", &consensus_pipeline);
    let r = p.pipe(&["run", "pipelines/vindr-consensus-test.yaml"]).ok();
    let tests = truth.iter().filter(|t| t["part"] == "test").count() as u64;
    assert_eq!(counters(&r, "evaluate")["images"], tests, "{}", r.stdout);

    // The consensus of the test images is the truth drawn.
    let consensus = table_rows(&p, &table_path(&p, "pipelines/vindr.yaml", "test_consensus.labels"));
    assert!(!consensus.is_empty());
    for l in &consensus {
        let t = truth.iter().find(|t| t["image_id"] == l["image_id"]).unwrap();
        for c in [
            "rib_fracture",
            "pleural_effusion",
            "nodule_mass",
            "cardiomegaly",
            "other_lesion",
            "no_finding",
        ] {
            assert_eq!(l[c], t[c], "{} {c}", l["image_id"]);
        }
    }
}

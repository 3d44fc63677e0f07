//! The public-dataset path: the `chexpert` import against pandas, Pillow and the
//! synthetic dataset's truth; `map_labels` against the Table 7 resource file as
//! written; the coarse and fine branches of pipelines/chexpert-coarse-vs-fine.yaml
//! training and evaluating on the CPU.

mod common;
use common::*;

use std::path::Path;

fn synth_chexpert(dir: &Path, studies: usize, size: usize) {
    let out = std::process::Command::new(pipe_bin())
        .args(["synth", "chexpert", "--out", dir.to_str().unwrap()])
        .args([
            "--studies",
            &studies.to_string(),
            "--seed",
            "5",
            "--size",
            &size.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn chexpert_import_equals_pandas_pillow_and_the_truth() {
    let p = Project::new();
    synth_chexpert(&p.path("data/chexpert"), 60, 32);
    p.write(
        "pipelines/c.yaml",
        "name: c\nstages:\n  chexpert:\n    kind: chexpert\n    params: {csv: ../data/chexpert/CheXpert-v1.0-small/train.csv, root: ../data/chexpert, size: 32}\n",
    );
    let r = p.pipe(&["run", "pipelines/c.yaml"]).ok();
    let c = counters(&r, "chexpert");
    // 4 broken rows: a missing image, a truncated JPEG, a bad cell, a repeated Path.
    assert_eq!(c["rows_rejected"], 4, "{}", r.stdout);
    let table = |t: &str| table_path(&p, "pipelines/c.yaml", &format!("chexpert.{t}"));
    let out = json_lines(std::process::Command::new(python()).args([
        fixture("chexpert_oracle.py").to_str().unwrap(),
        p.path("data/chexpert/CheXpert-v1.0-small/train.csv").to_str().unwrap(),
        p.path("data/chexpert").to_str().unwrap(),
        &table("images"),
        &table("labels"),
        &table("rejects"),
        p.path("data/chexpert/truth/chexpert.parquet").to_str().unwrap(),
    ]));
    assert_eq!(out[0]["rejects"], 4);
    assert_eq!(out[0]["checked"], c["images_imported"]);
    assert_eq!(out[0]["pixels_compared"], c["images_imported"]);
    assert!(c["images_imported"] > 60, "{c:?}");

    // A changed image reruns the import: the folder is in the key.
    let one = p.path("data/chexpert/CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg");
    std::fs::write(&one, b"not a JPEG any more").unwrap();
    let r = p.pipe(&["run", "pipelines/c.yaml"]).ok();
    assert_eq!(counters(&r, "chexpert")["rows_rejected"], 5, "{}", r.stdout);
    let reasons: Vec<String> = table_rows(&p, &table("rejects"))
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("view1_frontal.jpg: neither a JPEG nor a PNG")),
        "{reasons:?}"
    );

    // A CSV without an observation column is an error naming the file and the column.
    let csv = p.path("data/chexpert/CheXpert-v1.0-small/train.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(&csv, text.replacen("Pleural Other", "Pleural Othr", 1)).unwrap();
    let r = p.pipe(&["run", "pipelines/c.yaml"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("train.csv: no column `Pleural Other`")
            || r.stdout.contains("train.csv: no column `Pleural Other`"),
        "{}{}",
        r.stdout,
        r.stderr
    );
}

/// A 4×4 grey PNG (the import reads PNG as well as JPEG, by content).
fn png(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 4, 4);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(&[128; 16]).unwrap();
}

#[test]
fn map_labels_follows_the_table_7_resource_file_as_written() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let resource = repo.join("stages/map_labels/chexpert_to_phutho.yaml");
    let table: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&resource).unwrap()).unwrap();
    let classes: Vec<String> = serde_yaml::from_value(table["classes"].clone()).unwrap();
    assert_eq!(classes, ["chest_wall", "pleura", "parenchyma", "cardiac", "abnormal"]);
    let observations: Vec<(String, Vec<String>)> = table["observations"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_string(),
                serde_yaml::from_value(v.clone()).unwrap(),
            )
        })
        .collect();
    let header = "No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Devices";
    let names: Vec<String> = header.split(',').map(|h| h.to_lowercase().replace(' ', "_")).collect();
    let mut in_file: Vec<&str> = observations.iter().map(|(o, _)| o.as_str()).collect();
    in_file.sort();
    let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
    all.sort();
    assert_eq!(in_file, all, "the resource maps exactly CheXpert's 14 observations");

    // One image per (observation, value): only that observation 1 (or −1), the others
    // 0; one with all blank; one mixing a positive and an uncertain observation.
    let p = Project::new();
    let mut csv = format!("Path,Frontal/Lateral,{header}\n");
    let mut expected: Vec<(String, Vec<(bool, bool)>)> = Vec::new();
    let cell_of = |o: &str| -> usize { names.iter().position(|n| n == o).unwrap() };
    for (k, (o, cells)) in observations.iter().enumerate() {
        for (value, text) in [(1, "1.0"), (-1, "-1.0")] {
            let path = format!("d/p{k}{}/s1/view1_frontal.png", if value == 1 { "pos" } else { "unc" });
            png(&p.path(&format!("data/{path}")));
            let mut row = vec!["0.0"; 14];
            row[cell_of(o)] = text;
            csv += &format!("{path},Frontal,{}\n", row.join(","));
            let want = cells
                .iter()
                .map(|c| match (c.as_str(), value) {
                    ("P", 1) => (true, false),
                    ("P", _) => (false, true),
                    ("N", _) => (false, false),
                    other => panic!("a cell is P or N: {other:?}"),
                })
                .collect();
            expected.push((path, want));
        }
    }
    png(&p.path("data/d/blank/s1/view1_frontal.png"));
    csv += &format!("d/blank/s1/view1_frontal.png,Frontal{}\n", ",".repeat(14));
    expected.push(("d/blank/s1/view1_frontal.png".into(), vec![(false, false); 5]));
    png(&p.path("data/d/mixed/s1/view1_frontal.png"));
    let mut row = vec![""; 14];
    row[cell_of("fracture")] = "1.0";
    row[cell_of("pneumothorax")] = "-1.0";
    csv += &format!("d/mixed/s1/view1_frontal.png,Frontal,{}\n", row.join(","));
    let class_of = |c: &str| classes.iter().position(|x| x == c).unwrap();
    let mut mixed = vec![(false, false); 5];
    for (k, c) in observations
        .iter()
        .find(|(o, _)| o == "fracture")
        .unwrap()
        .1
        .iter()
        .enumerate()
    {
        if c == "P" {
            mixed[k] = (true, false);
        }
    }
    for (k, c) in observations
        .iter()
        .find(|(o, _)| o == "pneumothorax")
        .unwrap()
        .1
        .iter()
        .enumerate()
    {
        if c == "P" && !mixed[k].0 {
            mixed[k] = (false, true);
        }
    }
    assert_eq!(mixed[class_of("chest_wall")], (true, false));
    assert_eq!(mixed[class_of("pleura")], (false, true));
    expected.push(("d/mixed/s1/view1_frontal.png".into(), mixed));
    p.write("data/labels.csv", &csv);
    std::fs::create_dir_all(p.path("stages/map_labels")).unwrap();
    std::fs::copy(&resource, p.path("stages/map_labels/chexpert_to_phutho.yaml")).unwrap();
    p.write(
        "pipelines/m.yaml",
        "name: m\nroot: ..\nstages:\n  chexpert:\n    kind: chexpert\n    params: {csv: data/labels.csv, root: data, size: 8}\n  map:\n    kind: map_labels\n    inputs: [chexpert.labels]\n    params: {mapping: stages/map_labels/chexpert_to_phutho.yaml}\n",
    );
    let r = p.pipe(&["run", "pipelines/m.yaml"]).ok();
    assert_eq!(counters(&r, "chexpert")["rows_rejected"], 0, "{}", r.stdout);
    let got = table_rows(&p, &table_path(&p, "pipelines/m.yaml", "map.labels"));
    assert_eq!(got.len(), expected.len());
    for (path, want) in &expected {
        let row = got.iter().find(|r| r["sop_instance_uid"] == path.as_str()).unwrap();
        for (c, &(positive, uncertain)) in classes.iter().zip(want) {
            assert_eq!(row[c.as_str()], positive, "{path}: {c}");
            assert_eq!(
                row[format!("{c}_uncertain").as_str()],
                uncertain,
                "{path}: {c}_uncertain"
            );
        }
    }

    // Mutation check: a mapping with one cell changed gives other labels.
    let changed = std::fs::read_to_string(p.path("stages/map_labels/chexpert_to_phutho.yaml"))
        .unwrap()
        .replace(
            "fracture:                   [P, N, N, N, P]",
            "fracture:                   [N, N, N, N, P]",
        );
    p.write("stages/map_labels/chexpert_to_phutho.yaml", &changed);
    p.pipe(&["run", "pipelines/m.yaml"]).ok();
    let got = table_rows(&p, &table_path(&p, "pipelines/m.yaml", "map.labels"));
    let fracture = got
        .iter()
        .find(|r| r["sop_instance_uid"] == "d/p12pos/s1/view1_frontal.png")
        .unwrap();
    assert_eq!(fracture["chest_wall"], false);
}

#[test]
fn coarse_and_fine_branches_train_and_evaluate_on_the_cpu() {
    if worker().is_none() {
        return;
    }
    let p = Project::new();
    synth_chexpert(&p.path("data/chexpert"), 120, 32);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipeline = std::fs::read_to_string(repo.join("pipelines/chexpert-coarse-vs-fine.yaml")).unwrap();
    p.write(
        "pipelines/cf.yaml",
        &pipeline
            .replace("image_size: 64", "image_size: 32")
            .replace("size: 64", "size: 32")
            .replace("epochs: 15", "epochs: 3"),
    );
    std::fs::create_dir_all(p.path("stages/map_labels")).unwrap();
    std::fs::copy(
        repo.join("stages/map_labels/chexpert_to_phutho.yaml"),
        p.path("stages/map_labels/chexpert_to_phutho.yaml"),
    )
    .unwrap();
    let r = p.pipe(&["run", "pipelines/cf.yaml"]).ok();
    for stage in ["coarse", "fine", "evaluate_coarse", "evaluate_fine"] {
        assert!(
            r.ran().contains(&stage.to_string()),
            "{stage} did not run:\n{}",
            r.stdout
        );
    }
    // Both evaluated on the same test images.
    let preds = |s: &str| {
        let mut ids: Vec<String> = table_rows(&p, &table_path(&p, "pipelines/cf.yaml", &format!("{s}.predictions")))
            .iter()
            .map(|r| r["sop_instance_uid"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let (coarse, fine) = (preds("evaluate_coarse"), preds("evaluate_fine"));
    assert!(!coarse.is_empty());
    assert_eq!(coarse, fine);
    // The fine model has the 12 pathologies and abnormal; the coarse one the 5 classes.
    let labels = |s: &str| {
        let mut l: Vec<String> = table_rows(&p, &table_path(&p, "pipelines/cf.yaml", &format!("{s}.metrics")))
            .iter()
            .map(|r| r["label"].as_str().unwrap().to_string())
            .collect();
        l.sort();
        l
    };
    assert!(labels("evaluate_coarse").contains(&"chest_wall".to_string()));
    assert!(labels("evaluate_fine").contains(&"pleural_effusion".to_string()));
    assert!(labels("evaluate_fine").contains(&"abnormal".to_string()));
    let diff = p.pipe(&["metrics", "pipelines/cf.yaml", "--label", "abnormal"]).ok();
    assert!(
        diff.stdout.contains("evaluate_fine") && diff.stdout.contains("evaluate_coarse"),
        "{}",
        diff.stdout
    );
}

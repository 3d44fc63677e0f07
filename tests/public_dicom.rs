//! DICOM files nobody on this project wrote — pydicom's own test files and the
//! `pydicom-data` package — decoded by pipe and by an independent reference (pydicom with
//! pylibjpeg: OpenJPEG for JPEG 2000, libjpeg for JPEG and JPEG-LS).

mod common;
use common::*;

use std::collections::BTreeMap;

struct Reference {
    transfer_syntax: String,
    status: String,
    width: usize,
    height: usize,
    u8: Vec<u8>,
}

fn reference(files: &[String]) -> BTreeMap<String, Reference> {
    json_lines(
        std::process::Command::new(python())
            .arg(fixture("reference_decode.py"))
            .args(files),
    )
    .into_iter()
    .map(|v| {
        (
            v["path"].as_str().unwrap().to_string(),
            Reference {
                transfer_syntax: v["transfer_syntax"].as_str().unwrap_or("?").to_string(),
                status: v["status"].as_str().unwrap().to_string(),
                width: v["width"].as_u64().unwrap_or(0) as usize,
                height: v["height"].as_u64().unwrap_or(0) as usize,
                u8: hex_bytes(v["u8"].as_str().unwrap_or("")),
            },
        )
    })
    .collect()
}

/// Run a fixture script that writes files into `dir`; its standard output.
fn made_by(script: &str, dir: &std::path::Path) -> String {
    let out = std::process::Command::new(python())
        .arg(fixture(script))
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The largest difference, in 8-bit grey levels, between pipe's display values and a
/// reference's.
fn worst_difference(gray: &[f32], reference: &[u8]) -> i32 {
    gray.iter()
        .zip(reference)
        .map(|(v, &w)| ((v * 255.0).round() as i32 - w as i32).abs())
        .max()
        .unwrap_or(0)
}

/// The public test files (pydicom's and pydicom-data's).
pub fn public_files() -> Vec<String> {
    let out = std::process::Command::new(python())
        .arg(fixture("reference_decode.py"))
        .arg("--list")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pydicom and pydicom-data are needed (requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every greyscale file the reference decodes, pipe decodes too, to the same display
/// values within one grey level: JPEG 2000 (lossless and lossy), JPEG-LS (lossless and
/// near-lossless), JPEG lossless (the set's baseline JPEGs are all colour), RLE (8, 16 and 32 bits), 1-bit, 32-bit,
/// deflated, big and little endian. The one exception is 12-bit JPEG Extended, which
/// pipe refuses with a reason that names it.
#[test]
fn pipe_decodes_what_pydicom_decodes_within_one_grey_level() {
    let files = public_files();
    assert!(files.len() > 200, "{} public files", files.len());
    let want = reference(&files);
    // per transfer syntax: (compared, worst difference, pixels, pixels equal)
    let mut by_syntax: BTreeMap<String, (usize, i32, usize, usize)> = BTreeMap::new();
    let mut missed = Vec::new();
    let mut off = Vec::new();
    let mut refused = Vec::new();
    for (path, r) in &want {
        if r.status != "ok" {
            continue;
        }
        let path_ref = std::path::Path::new(path);
        let got = std::panic::catch_unwind(|| pipe_cxr::pixels::load(path_ref));
        let (gray, _) = match got {
            Ok(Ok(g)) => g,
            // 12-bit JPEG Extended has no maintained Rust decoder: refused, by name.
            Ok(Err(e))
                if r.transfer_syntax == "1.2.840.10008.1.2.4.51"
                    && format!("{e:#}")
                        .contains("JPEG Extended (1.2.840.10008.1.2.4.51) with 12 bits stored is not supported") =>
            {
                refused.push(path.clone());
                continue;
            }
            Ok(Err(e)) => {
                missed.push(format!("{path} ({}): {e:#}", r.transfer_syntax));
                continue;
            }
            Err(_) => {
                missed.push(format!("{path} ({}): panicked", r.transfer_syntax));
                continue;
            }
        };
        if (gray.width, gray.height) != (r.width, r.height) {
            off.push(format!(
                "{path}: {}x{} vs {}x{}",
                gray.width, gray.height, r.width, r.height
            ));
            continue;
        }
        let e = by_syntax.entry(r.transfer_syntax.clone()).or_default();
        e.0 += 1;
        let mut worst = 0;
        for (v, &w) in gray.data.iter().zip(&r.u8) {
            let u = (v * 255.0).round().clamp(0.0, 255.0) as i32;
            let d = (u - w as i32).abs();
            worst = worst.max(d);
            e.2 += 1;
            e.3 += (d == 0) as usize;
        }
        e.1 = e.1.max(worst);
        if worst > 1 {
            off.push(format!("{path} ({}): a pixel differs by {worst}", r.transfer_syntax));
        }
    }
    eprintln!("refused by name (12-bit JPEG Extended): {refused:?}");
    eprintln!("transfer syntax: files compared, largest difference, pixels equal");
    for (ts, (n, worst, pixels, equal)) in &by_syntax {
        eprintln!("  {ts}: {n}, {worst}, {equal}/{pixels}");
    }
    assert!(
        missed.is_empty() && off.is_empty(),
        "decoded by pydicom, not by pipe:\n{}\ndifferent from pydicom:\n{}",
        missed.join("\n"),
        off.join("\n")
    );
    let compared: usize = by_syntax.values().map(|v| v.0).sum();
    assert!(compared >= 90, "{compared} files compared");
    assert!(refused.len() <= 1, "{refused:?}");
    for ts in [
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.2",
    ] {
        assert!(
            by_syntax.contains_key(ts),
            "no greyscale {ts} file compared: {by_syntax:?}"
        );
    }
}

/// collect → filter and collect → convert over every public file: each file in exactly
/// one table of each stage (duplicates of a SOP Instance UID are rejects naming the copy converted), the
/// header fields equal pydicom's, every reject has a specific reason, and every
/// greyscale image pydicom decodes is converted.
#[test]
fn every_public_file_is_accounted_for_and_headers_equal_pydicom() {
    let p = Project::new();
    let files = public_files();
    std::fs::create_dir_all(p.path("pacs")).unwrap();
    std::fs::create_dir_all(p.path("his")).unwrap();
    let mut copied = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let name = format!(
            "{i:03}_{}",
            std::path::Path::new(f).file_name().unwrap().to_string_lossy()
        );
        std::fs::copy(f, p.path(&format!("pacs/{name}"))).unwrap();
        copied.push((format!("pacs/{name}"), f.clone()));
    }
    p.write(
        "pairs_from_dicoms.py",
        &std::fs::read_to_string(fixture("pairs_from_dicoms.py")).unwrap(),
    );
    p.write(
        "pipelines/p.yaml",
        "name: pub\nroot: ..\nstages:\n  collect:\n    kind: collect\n    params: { pacs: pacs, his: his }\n  filter:\n    kind: filter\n    inputs: [collect.dicoms]\n    params: { method: tags }\n  pairs:\n    kind: command\n    inputs: [collect.dicoms]\n    params:\n      run: [python3, pairs_from_dicoms.py, \"{in:dicoms}\", \"{out:pairs}\"]\n      outputs: [pairs]\n      files: [pairs_from_dicoms.py]\n  convert:\n    kind: convert\n    inputs: [pairs.pairs]\n    params: { size: 32 }\n",
    );
    let run = p.pipe(&["run", "pipelines/p.yaml"]).ok();
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let read = |t: &str| {
        pipe_core::table::read_batch(std::path::Path::new(
            p.pipe(&["path", "pipelines/p.yaml", t]).ok().stdout.trim(),
        ))
        .unwrap()
    };
    let col = |b: &arrow::array::RecordBatch, c: &str| -> Vec<String> {
        let a = pipe_core::table::str_col(b, c).unwrap();
        (0..b.num_rows()).map(|i| a.value(i).to_string()).collect()
    };
    let (dicoms, collect_rejects) = (read("collect.dicoms"), read("collect.rejects"));
    let (images, convert_rejects) = (read("convert.images"), read("convert.rejects"));

    // collect: every file exactly once.
    let mut seen: Vec<String> = col(&dicoms, "path")
        .into_iter()
        .chain(col(&collect_rejects, "path"))
        .collect();
    seen.sort();
    let mut all: Vec<String> = copied.iter().map(|(c, _)| c.clone()).collect();
    all.sort();
    assert_eq!(seen, all, "collect: every file in dicoms or rejects, once");
    for r in col(&collect_rejects, "reason") {
        assert!(r.len() > 12 && !r.contains("panicked"), "vague reason {r:?}");
    }
    // filter: every file collect kept, in kept or dropped, once (dropped with a reason).
    let (kept_by_filter, dropped) = (read("filter.kept"), read("filter.dropped"));
    let mut filtered: Vec<String> = col(&kept_by_filter, "path")
        .into_iter()
        .chain(col(&dropped, "path"))
        .collect();
    filtered.sort();
    let mut collected = col(&dicoms, "path");
    collected.sort();
    assert_eq!(filtered, collected, "filter: every file in kept or dropped, once");
    assert!(
        col(&dropped, "reason").iter().all(|r| r.len() > 8),
        "a vague filter reason"
    );
    assert!(
        kept_by_filter.num_rows() > 0,
        "no public file is a chest PA/AP radiograph"
    );

    // convert: every file collect kept, exactly once.
    let mut converted: Vec<String> = col(&images, "dicom_path")
        .into_iter()
        .chain(col(&convert_rejects, "dicom_path"))
        .collect();
    converted.sort();
    let mut kept = col(&dicoms, "path");
    kept.sort();
    assert_eq!(converted, kept, "convert: every file in images or rejects, once");
    let reasons = col(&convert_rejects, "reason");
    let duplicates = reasons
        .iter()
        .filter(|r| r.starts_with("duplicate: same SOP Instance UID as pacs/"))
        .count();
    assert!(duplicates > 0, "the public set has resent instances: {reasons:?}");
    // Every other reject is a file the reference cannot decode as one greyscale image
    // (or 12-bit JPEG Extended, refused by name).
    let original: BTreeMap<&str, &str> = copied.iter().map(|(c, f)| (c.as_str(), f.as_str())).collect();
    let decoded = reference(&files);
    for (path, reason) in col(&convert_rejects, "dicom_path").iter().zip(&reasons) {
        if reason.starts_with("duplicate: ") {
            continue;
        }
        let r = &decoded[original[path.as_str()]];
        assert!(
            r.status != "ok" || reason.contains("JPEG Extended (1.2.840.10008.1.2.4.51) with 12 bits"),
            "{path}: pydicom decodes it as greyscale, convert rejected it: {reason}"
        );
    }

    // Collect names the first copy of each resent instance.
    {
        use arrow::array::Array;
        let (uid, dup) = (
            pipe_core::table::str_col(&dicoms, "sop_instance_uid").unwrap(),
            pipe_core::table::str_col(&dicoms, "duplicate_of").unwrap(),
        );
        let paths = col(&dicoms, "path");
        let uid_of: BTreeMap<&str, &str> = (0..dicoms.num_rows())
            .map(|i| (paths[i].as_str(), uid.value(i)))
            .collect();
        let copies: Vec<usize> = (0..dicoms.num_rows()).filter(|&i| dup.is_valid(i)).collect();
        assert!(!copies.is_empty(), "the public set has resent instances");
        for i in copies {
            assert_eq!(
                uid_of[dup.value(i)],
                uid.value(i),
                "{} names {}",
                paths[i],
                dup.value(i)
            );
            assert!(dup.value(i) < paths[i].as_str(), "the first copy comes first");
        }
    }

    // Headers equal pydicom's, field by field.
    let out = std::process::Command::new(python())
        .arg(fixture("reference_decode.py"))
        .arg("--header")
        .args(col(&dicoms, "path").iter().map(|c| original[c.as_str()]))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reference: BTreeMap<String, serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["path"].as_str().unwrap().to_string(), v)
        })
        .collect();
    let strs = |c: &str| pipe_core::table::str_col(&dicoms, c).unwrap();
    let ints = |c: &str| pipe_core::table::i32_col(&dicoms, c).unwrap();
    let mut compared = 0;
    let mut differ = Vec::new();
    for i in 0..dicoms.num_rows() {
        use arrow::array::Array;
        let path = strs("path").value(i).to_string();
        let r = &reference[original[path.as_str()]];
        if r["status"] != "ok" {
            continue;
        }
        compared += 1;
        let opt = |a: &arrow::array::StringArray| a.is_valid(i).then(|| a.value(i).to_string());
        let checks = [
            ("SOPInstanceUID", Some(strs("sop_instance_uid").value(i).to_string())),
            ("PatientID", Some(strs("patient_id").value(i).to_string())),
            ("PatientName", opt(strs("patient_name"))),
            ("Modality", opt(strs("modality"))),
            ("PhotometricInterpretation", opt(strs("photometric"))),
            ("BodyPartExamined", opt(strs("body_part"))),
        ];
        for (k, ours) in checks {
            if r[k].as_str().map(str::to_string) != ours {
                differ.push(format!("{path} {k}: pipe {ours:?}, pydicom {}", r[k]));
            }
        }
        for (k, c) in [
            ("Rows", "rows"),
            ("Columns", "cols"),
            ("BitsAllocated", "bits_allocated"),
        ] {
            let a = ints(c);
            let ours = a.is_valid(i).then(|| a.value(i) as i64);
            if r[k].as_i64() != ours {
                differ.push(format!("{path} {k}: pipe {ours:?}, pydicom {}", r[k]));
            }
        }
        if strs("transfer_syntax").value(i) != r["transfer_syntax"].as_str().unwrap() {
            differ.push(format!("{path} transfer syntax"));
        }
    }
    assert!(compared > 150, "{compared} headers compared");
    assert!(
        differ.is_empty(),
        "{} differences from pydicom:\n{}",
        differ.len(),
        differ.join("\n")
    );
    eprintln!(
        "{} files: collect kept {}, rejected {}; convert made {} images, rejected {} ({duplicates} duplicates); {compared} headers equal pydicom's",
        copied.len(),
        dicoms.num_rows(),
        collect_rejects.num_rows(),
        images.num_rows(),
        convert_rejects.num_rows()
    );
}

/// Modality LUT Sequence and VOI LUT Sequence (PS3.3 C.11) as pydicom's
/// `apply_modality_lut` / `apply_voi_lut` apply them, on files whose LUTs are not
/// linear (made by pydicom from its own LUT test files).
#[test]
fn lut_sequences_are_applied_as_pydicom_applies_them() {
    let dir = tempfile::tempdir().unwrap();
    made_by("make_luts.py", dir.path());
    let files: Vec<String> = ["mlut_sqrt.dcm", "vlut_cube.dcm"]
        .iter()
        .map(|f| dir.path().join(f).display().to_string())
        .collect();
    for (path, r) in reference(&files) {
        assert_eq!(r.status, "ok", "{path}");
        let (gray, voi) = pipe_cxr::pixels::load(std::path::Path::new(&path)).unwrap();
        if path.ends_with("vlut_cube.dcm") {
            assert!(
                matches!(
                    voi,
                    pipe_cxr::pixels::Voi::Lut {
                        entries: 256,
                        bits: 16,
                        ..
                    }
                ),
                "{voi:?}"
            );
        }
        let worst = worst_difference(&gray.data, &r.u8);
        assert!(worst <= 1, "{path}: a pixel differs by {worst} from pydicom");
    }
}

/// Files pydicom reads leniently and names in other character sets (pydicom writes them:
/// `lenient_dicom.py`): collect keeps every file pydicom reads, with pydicom's
/// PatientName (ISO 2022 Japanese and Korean, Greek, Arabic, Hebrew, Cyrillic, Chinese)
/// and a warning for each repair; the one file pydicom cannot read is a reject; and the
/// leniently read radiographs decode to pydicom's pixels.
#[test]
fn lenient_files_and_character_sets_are_read_as_pydicom_reads_them() {
    let p = Project::new();
    std::fs::create_dir_all(p.path("pacs")).unwrap();
    std::fs::create_dir_all(p.path("his")).unwrap();
    let want: BTreeMap<String, serde_json::Value> = json_lines(
        std::process::Command::new(python())
            .arg(fixture("lenient_dicom.py"))
            .arg(p.path("pacs")),
    )
    .into_iter()
    .map(|v| {
        let name = std::path::Path::new(v["path"].as_str().unwrap())
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        (format!("pacs/{name}"), v)
    })
    .collect();
    assert!(want.len() >= 20, "{} files", want.len());
    p.write(
        "pipelines/l.yaml",
        "name: l\nroot: ..\nstages:\n  collect:\n    kind: collect\n    params: { pacs: pacs, his: his }\n",
    );
    p.pipe(&["run", "pipelines/l.yaml"]).ok();
    let read = |t: &str| {
        pipe_core::table::read_batch(std::path::Path::new(
            p.pipe(&["path", "pipelines/l.yaml", t]).ok().stdout.trim(),
        ))
        .unwrap()
    };
    let (dicoms, rejects) = (read("collect.dicoms"), read("collect.rejects"));
    let strs = |b: &arrow::array::RecordBatch, c: &str| -> Vec<Option<String>> {
        use arrow::array::Array;
        let a = pipe_core::table::str_col(b, c).unwrap();
        (0..b.num_rows())
            .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
            .collect()
    };
    let kept: BTreeMap<String, (Option<String>, Option<String>)> = strs(&dicoms, "path")
        .into_iter()
        .map(Option::unwrap)
        .zip(strs(&dicoms, "patient_name").into_iter().zip(strs(&dicoms, "warnings")))
        .collect();
    let rejected: BTreeMap<String, String> = strs(&rejects, "path")
        .into_iter()
        .map(Option::unwrap)
        .zip(strs(&rejects, "reason").into_iter().map(Option::unwrap))
        .collect();
    for (path, r) in &want {
        if r["status"] != "ok" {
            let why = rejected
                .get(path)
                .unwrap_or_else(|| panic!("{path}: pydicom fails, pipe kept it"));
            assert!(why.contains("has no valid VR"), "{path}: {why}");
            continue;
        }
        let Some((name, warnings)) = kept.get(path) else {
            panic!("{path}: pydicom reads it, pipe rejected it: {:?}", rejected.get(path));
        };
        assert_eq!(name.as_deref(), r["PatientName"].as_str(), "{path}");
        let expected = [
            ("no_group_length", "no group length (0002,0000)"),
            ("long_ae", "(0002,0016) in the file meta is 30 bytes"),
            (
                "implicit_under_explicit",
                "implicit VR under the explicit transfer syntax",
            ),
        ]
        .iter()
        .find(|(stem, _)| path.contains(stem));
        match expected {
            Some((_, w)) => assert!(warnings.as_deref().unwrap_or("").contains(w), "{path}: {warnings:?}"),
            None => assert_eq!(warnings, &None, "{path}"),
        }
        // The repaired files decode as pydicom decodes them (min-max display).
        if expected.is_some() {
            let (gray, _) = pipe_cxr::pixels::load(&p.path(path)).unwrap();
            let got: Vec<u8> = gray.data.iter().map(|v| (v * 255.0).round() as u8).collect();
            assert_eq!(got, hex_bytes(r["u8"].as_str().unwrap()), "{path}");
        }
    }
    assert_eq!(kept.len() + rejected.len(), want.len());
    eprintln!(
        "{} files: {} kept with pydicom's names, {} rejected",
        want.len(),
        kept.len(),
        rejected.len()
    );
}

/// High-Throughput JPEG 2000 (…4.201 lossless, …4.203), encoded by OpenJPH (through
/// imagecodecs, `make_htj2k.py`) rather than by the OpenJPEG pipe decodes with: pipe's
/// decode equals pydicom's within one grey level.
#[test]
fn htj2k_files_decode_as_pydicom_decodes_them() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<String> = made_by("make_htj2k.py", dir.path())
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(files.len(), 3);
    let mut syntaxes = std::collections::BTreeSet::new();
    for (path, r) in reference(&files) {
        assert_eq!(r.status, "ok", "{path}");
        let (gray, _) = pipe_cxr::pixels::load(std::path::Path::new(&path)).unwrap_or_else(|e| panic!("{path}: {e:#}"));
        assert_eq!((gray.width, gray.height), (r.width, r.height), "{path}");
        let worst = worst_difference(&gray.data, &r.u8);
        assert!(worst <= 1, "{path}: a pixel differs by {worst} from pydicom");
        syntaxes.insert(r.transfer_syntax);
    }
    assert_eq!(
        syntaxes.into_iter().collect::<Vec<_>>(),
        ["1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.203"]
    );
}

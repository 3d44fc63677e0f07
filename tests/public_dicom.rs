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
    let out = std::process::Command::new(python())
        .arg(fixture("reference_decode.py"))
        .args(files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let hex = v["u8"].as_str().unwrap_or("");
            let u8 = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (
                v["path"].as_str().unwrap().to_string(),
                Reference {
                    transfer_syntax: v["transfer_syntax"].as_str().unwrap_or("?").to_string(),
                    status: v["status"].as_str().unwrap().to_string(),
                    width: v["width"].as_u64().unwrap_or(0) as usize,
                    height: v["height"].as_u64().unwrap_or(0) as usize,
                    u8,
                },
            )
        })
        .collect()
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

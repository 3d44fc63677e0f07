//! The `convert` stage on the synthetic hospital: every matched image is in `images` or
//! `rejects`; the PNG pixels equal an independent pydicom + numpy decode for all four
//! kinds of file (MONOCHROME1/2, with and without a window); JPEG output decodes to
//! nearly the same pixels; a rerun with the same pairs decodes nothing, a changed
//! DICOM is decoded again, a broken one becomes a reject.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use arrow::array::{Array, RecordBatch};
use pipe_core::table::{f64_col, i32_col, read_batch, str_col};

/// Side of the synthetic images and of the converted ones: no resampling, so the
/// pixels can be compared one for one.
const SIZE: usize = 64;

fn pipeline(p: &Project, max_delay: &str, jpeg: bool) {
    let services = Path::new(env!("CARGO_MANIFEST_DIR")).join("stages/parse/chest_services.txt");
    let jpeg_stage = if jpeg {
        format!(
            "  convert_jpeg:\n    kind: convert\n    inputs: [match.pairs]\n    params: {{ size: {SIZE}, format: jpeg }}\n"
        )
    } else {
        String::new()
    };
    p.write("resolutions.csv", "sop_instance_uid,report_id\n");
    p.write(
        "pipelines/c.yaml",
        &format!(
            "name: c\nroot: ..\nstages:\n  collect:\n    kind: collect\n    params: {{ pacs: hosp/pacs, his: hosp/his }}\n  filter:\n    kind: filter\n    inputs: [collect.dicoms]\n    params: {{ method: tags }}\n  parse:\n    kind: parse\n    inputs: [collect.his_files]\n    params: {{ services: {} }}\n  match:\n    kind: match\n    inputs: [filter.kept, parse.reports]\n    params: {{ resolutions: resolutions.csv, max_delay_hours: {max_delay} }}\n  convert:\n    kind: convert\n    inputs: [match.pairs]\n    params: {{ size: {SIZE} }}\n{jpeg_stage}",
            services.display()
        ),
    );
}

fn table_path(p: &Project, target: &str) -> PathBuf {
    PathBuf::from(p.pipe(&["path", "pipelines/c.yaml", target]).ok().stdout.trim())
}

fn read(p: &Project, target: &str) -> RecordBatch {
    read_batch(&table_path(p, target)).unwrap()
}

fn strings(b: &RecordBatch, col: &str) -> Vec<String> {
    let c = str_col(b, col).unwrap();
    (0..b.num_rows()).map(|i| c.value(i).to_string()).collect()
}

/// Width, height and pixels of an 8-bit greyscale PNG.
fn png_pixels(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale, "{}", path.display());
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "{}", path.display());
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// The independent decode: display_mean.py's `display` (pydicom + numpy), mapped to
/// 8 bits as round(y × 255). Compressed files through pydicom's own RLE decoder and
/// pylibjpeg's (libjpeg for JPEG Lossless and JPEG-LS, OpenJPEG for JPEG 2000).
const EXPECTED_U8: &str = r#"
import json, sys
import numpy as np
import pydicom
files = sys.argv[2:]
sys.path.insert(0, sys.argv[1])
sys.argv = sys.argv[:1]
import display_mean
for path in files:
    ds = pydicom.dcmread(path)
    y = display_mean.display(ds)
    u8 = np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)
    print(json.dumps({"path": path, "mean": float(y.mean()), "min": float(y.min()), "max": float(y.max()), "u8": u8.tobytes().hex()}))
"#;

struct Expected {
    mean: f64,
    min: f64,
    max: f64,
    u8: Vec<u8>,
}

fn expected(files: &[String]) -> BTreeMap<String, Expected> {
    let dir = fixture("display_mean.py").parent().unwrap().display().to_string();
    json_lines(
        std::process::Command::new(python())
            .args(["-c", EXPECTED_U8, &dir])
            .args(files),
    )
    .into_iter()
    .map(|v| {
        let u8 = hex_bytes(v["u8"].as_str().unwrap());
        (
            v["path"].as_str().unwrap().to_string(),
            Expected {
                mean: v["mean"].as_f64().unwrap(),
                min: v["min"].as_f64().unwrap(),
                max: v["max"].as_f64().unwrap(),
                u8,
            },
        )
    })
    .collect()
}

#[test]
fn convert_equals_pydicom_for_every_kind_of_file_and_accounts_for_every_pair() {
    let p = Project::new();
    synth(&p.path("hosp"), 150, SIZE);
    pipeline(&p, "24", true);
    let run = p.pipe(&["run", "pipelines/c.yaml"]).ok();
    assert_eq!(
        run.ran(),
        ["collect", "convert", "convert_jpeg", "filter", "match", "parse"]
    );
    let c = counters(&run, "convert");

    let pairs = read(&p, "match.pairs");
    let images = read(&p, "convert.images");
    let rejects = read(&p, "convert.rejects");
    let dicoms = read(&p, "collect.dicoms");
    let entry = table_path(&p, "convert.images").parent().unwrap().to_path_buf();

    // Accounting: every pair's image is in exactly one of images and rejects, once.
    let pair_uids: BTreeSet<String> = strings(&pairs, "sop_instance_uid").into_iter().collect();
    let image_uids = strings(&images, "sop_instance_uid");
    let reject_uids = strings(&rejects, "sop_instance_uid");
    let mut all: Vec<String> = image_uids.iter().chain(&reject_uids).cloned().collect();
    all.sort();
    assert_eq!(all, pair_uids.iter().cloned().collect::<Vec<_>>());
    assert!(pair_uids.len() > 100, "{} images", pair_uids.len());
    // The synthetic hospital's damaged files never reach the pairs: nothing is rejected.
    assert_eq!(rejects.num_rows(), 0, "{:?}", strings(&rejects, "reason"));
    assert_eq!(c["images_decoded"], images.num_rows() as u64);
    assert_eq!((c["images_reused"], c["images_rejected"]), (0, 0));

    // Header facts from collect, by SOP instance.
    let (d_uid, d_photo, d_ts) = (
        str_col(&dicoms, "sop_instance_uid").unwrap(),
        str_col(&dicoms, "photometric").unwrap(),
        str_col(&dicoms, "transfer_syntax").unwrap(),
    );
    let (d_wc, d_ww) = (
        f64_col(&dicoms, "window_center").unwrap(),
        f64_col(&dicoms, "window_width").unwrap(),
    );
    // sop_instance_uid → (photometric, transfer syntax, window)
    type Header<'a> = (&'a str, &'a str, Option<(f64, f64)>);
    let header: BTreeMap<&str, Header> = (0..dicoms.num_rows())
        .map(|i| {
            (
                d_uid.value(i),
                (
                    d_photo.value(i),
                    d_ts.value(i),
                    d_wc.is_valid(i).then(|| (d_wc.value(i), d_ww.value(i))),
                ),
            )
        })
        .collect();

    let files: Vec<String> = strings(&images, "dicom_path")
        .iter()
        .map(|d| p.path(d).display().to_string())
        .collect();
    let want = expected(&files);
    assert_eq!(want.len(), files.len(), "the reference decodes every image");

    let (image, image_hash, voi) = (
        strings(&images, "image"),
        strings(&images, "image_hash"),
        strings(&images, "voi"),
    );
    let (ow, oh, size) = (
        i32_col(&images, "original_width").unwrap(),
        i32_col(&images, "original_height").unwrap(),
        i32_col(&images, "size").unwrap(),
    );
    let (wc, ww) = (
        f64_col(&images, "window_center").unwrap(),
        f64_col(&images, "window_width").unwrap(),
    );
    let mut combos: BTreeMap<(String, bool), usize> = BTreeMap::new();
    let mut codecs: BTreeMap<String, usize> = BTreeMap::new();
    let (mut pixels, mut exact, mut worst, mut compared) = (0usize, 0usize, 0i32, 0usize);
    let mut png_of = BTreeMap::new();
    for i in 0..images.num_rows() {
        let uid = image_uids[i].as_str();
        let (photometric, ts, window) = header[uid];
        *codecs.entry(ts.to_string()).or_default() += 1;
        assert_eq!(
            (ow.value(i), oh.value(i), size.value(i)),
            (SIZE as i32, SIZE as i32, SIZE as i32)
        );
        // The VOI used is the file's window, or min–max when it has none.
        match window {
            Some((center, width)) => {
                assert_eq!(voi[i], "window");
                assert_eq!((wc.value(i), ww.value(i)), (center, width));
            }
            None => {
                assert_eq!(voi[i], "minmax");
                assert!(ww.value(i) > 0.0);
            }
        }
        // Stored by content inside the entry.
        let file = entry.join(&image[i]);
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), image_hash[i]);
        assert_eq!(
            image[i],
            format!("images/{}/{}.png", &image_hash[i][..2], image_hash[i])
        );
        let (w, h, got) = png_pixels(&file);
        assert_eq!((w as usize, h as usize), (SIZE, SIZE));

        let e = &want[&files[i]];
        assert_eq!(e.u8.len(), got.len());
        for (a, b) in got.iter().zip(&e.u8) {
            let d = (*a as i32 - *b as i32).abs();
            worst = worst.max(d);
            exact += (d == 0) as usize;
            pixels += 1;
        }
        let mean = got.iter().map(|&v| v as f64).sum::<f64>() / got.len() as f64 / 255.0;
        let min = *got.iter().min().unwrap() as f64 / 255.0;
        let max = *got.iter().max().unwrap() as f64 / 255.0;
        let tol = 1.0 / 255.0 + 1e-3;
        assert!((mean - e.mean).abs() < tol, "{}: mean {mean} vs {}", files[i], e.mean);
        assert!((min - e.min).abs() < tol, "{}: min {min} vs {}", files[i], e.min);
        assert!((max - e.max).abs() < tol, "{}: max {max} vs {}", files[i], e.max);
        *combos.entry((photometric.to_string(), window.is_some())).or_default() += 1;
        compared += 1;
        png_of.insert(uid.to_string(), got);
    }
    eprintln!(
        "compared {compared} images with pydicom: {exact}/{pixels} pixels equal, largest difference {worst}; by kind {combos:?}; codecs {codecs:?}"
    );
    assert!(worst <= 1, "a pixel differs by {worst} levels from pydicom + numpy");
    assert!(exact as f64 >= 0.999 * pixels as f64, "{exact}/{pixels} pixels equal");
    for photometric in ["MONOCHROME1", "MONOCHROME2"] {
        for windowed in [true, false] {
            assert!(
                combos.get(&(photometric.to_string(), windowed)).copied().unwrap_or(0) > 0,
                "no {photometric} file {} a window was compared: {combos:?}",
                if windowed { "with" } else { "without" }
            );
        }
    }
    // The compressed codecs of the synthetic hospital were decoded too.
    for ts in [
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
    ] {
        assert!(codecs.get(ts).copied().unwrap_or(0) > 0, "no {ts} image: {codecs:?}");
    }

    // JPEG output: same rows, .jpg files that decode to nearly the PNG pixels.
    let jpegs = read(&p, "convert_jpeg.images");
    let jentry = table_path(&p, "convert_jpeg.images").parent().unwrap().to_path_buf();
    assert_eq!(strings(&jpegs, "sop_instance_uid"), image_uids);
    let (mut sum, mut n, mut jworst) = (0f64, 0usize, 0i32);
    for (uid, rel) in strings(&jpegs, "sop_instance_uid").iter().zip(strings(&jpegs, "image")) {
        assert!(rel.ends_with(".jpg"), "{rel}");
        let mut d =
            jpeg_decoder::Decoder::new(std::io::BufReader::new(std::fs::File::open(jentry.join(&rel)).unwrap()));
        let jp = d.decode().unwrap();
        let info = d.info().unwrap();
        assert_eq!((info.width as usize, info.height as usize), (SIZE, SIZE));
        assert_eq!(info.pixel_format, jpeg_decoder::PixelFormat::L8);
        if let Some(png) = png_of.get(uid) {
            for (a, b) in jp.iter().zip(png) {
                let d = (*a as i32 - *b as i32).abs();
                sum += d as f64;
                jworst = jworst.max(d);
                n += 1;
            }
        }
    }
    let mean_diff = sum / n as f64;
    eprintln!("JPEG (quality 95) vs PNG: mean |difference| {mean_diff:.3} levels, largest {jworst}");
    assert!(n > 80 * SIZE * SIZE, "{n} JPEG pixels compared");
    assert!(
        mean_diff < 2.5 && jworst < 64,
        "JPEG differs from PNG by {mean_diff} levels on average, {jworst} at most"
    );
}

/// A convert param that changes no image: convert runs, and may reuse all it made.
fn convert_on_one_thread(p: &Project) {
    p.edit(
        "pipelines/c.yaml",
        &format!("params: {{ size: {SIZE} }}"),
        &format!("params: {{ size: {SIZE}, threads: 1 }}"),
    );
}

/// Replace the first occurrence of `from` in `file` by `to` (same length).
fn patch(file: &Path, from: &[u8], to: &[u8]) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{from:02x?} not in {}", file.display()));
    bytes[at..at + to.len()].copy_from_slice(to);
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn unchanged_dicoms_are_not_decoded_again() {
    use std::os::unix::fs::MetadataExt;
    let p = Project::new();
    synth(&p.path("hosp"), 60, SIZE);
    pipeline(&p, "24", false);
    p.pipe(&["run", "pipelines/c.yaml"]).ok();
    let first = read(&p, "convert.images");
    let first_entry = table_path(&p, "convert.images").parent().unwrap().to_path_buf();
    let n = first.num_rows() as u64;
    assert!(n > 30, "{n} images");

    // Match runs again (new param) and makes the same pairs: convert is fresh, since
    // what it reads did not change (early cutoff).
    pipeline(&p, "24.0000001", false);
    let run = p.pipe(&["run", "pipelines/c.yaml"]).ok();
    assert_eq!(run.ran(), ["match"]);
    assert!(
        run.stdout.contains("convert  fresh (input match.pairs unchanged)"),
        "{}",
        run.stdout
    );
    // A param that does not change the images: convert runs, reuses every image.
    convert_on_one_thread(&p);
    let run = p.pipe(&["run", "pipelines/c.yaml"]).ok();
    assert_eq!(run.ran(), ["convert"]);
    let c = counters(&run, "convert");
    assert_eq!(
        (c["images_decoded"], c["images_reused"], c["images_rejected"]),
        (0, n, 0),
        "{}",
        run.stdout
    );
    let second = read(&p, "convert.images");
    // The same rows (the files' metadata differ: key and params).
    assert_eq!(second.columns(), first.columns());
    let entry = table_path(&p, "convert.images").parent().unwrap().to_path_buf();
    assert_ne!(entry, first_entry);
    let rel = strings(&second, "image")[0].clone();
    let (a, b) = (
        std::fs::metadata(first_entry.join(&rel)).unwrap(),
        std::fs::metadata(entry.join(&rel)).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "{rel} was not hard-linked from the previous entry");
    let verify = p.pipe(&["verify", "pipelines/c.yaml"]).ok();
    assert!(!verify.stdout.contains("DAMAGED"), "{}", verify.stdout);

    // Break one uncompressed file (BitsAllocated 16 → 32, so its pixel data is half
    // what the header promises): it is read again and rejected, the rest reused.
    let dicoms = read(&p, "collect.dicoms");
    let ts: BTreeMap<String, String> = strings(&dicoms, "path")
        .into_iter()
        .zip(strings(&dicoms, "transfer_syntax"))
        .collect();
    let paths = strings(&second, "dicom_path");
    let uids = strings(&second, "sop_instance_uid");
    let hashes = strings(&second, "image_hash");
    let k = paths.iter().position(|d| ts[d] == "1.2.840.10008.1.2.1").unwrap();
    let original = std::fs::read(p.path(&paths[k])).unwrap();
    patch(
        &p.path(&paths[k]),
        &[0x28, 0, 0, 1, b'U', b'S', 2, 0, 16, 0],
        &[0x28, 0, 0, 1, b'U', b'S', 2, 0, 32, 0],
    );
    let run = p.pipe(&["run", "pipelines/c.yaml"]).ok();
    let c = counters(&run, "convert");
    assert_eq!(
        (c["images_decoded"], c["images_reused"], c["images_rejected"]),
        (0, n - 1, 1),
        "{}",
        run.stdout
    );
    let rejects = read(&p, "convert.rejects");
    assert_eq!(strings(&rejects, "sop_instance_uid"), [uids[k].clone()]);
    assert_eq!(strings(&rejects, "dicom_path"), [paths[k].clone()]);
    let reason = &strings(&rejects, "reason")[0];
    eprintln!("reject reason: {reason}");
    assert!(!reason.is_empty());
    assert_eq!(read(&p, "convert.images").num_rows() as u64, n - 1);

    // Repaired, with another implementation version name in its file meta (restored
    // byte for byte, the earlier results would simply be fresh again): decoded again,
    // to the same image as the first time.
    std::fs::write(p.path(&paths[k]), original).unwrap();
    patch(&p.path(&paths[k]), b"PIPE_SYNTH_1", b"PIPE_SYNTH_2");
    let run = p.pipe(&["run", "pipelines/c.yaml"]).ok();
    let c = counters(&run, "convert");
    assert_eq!(
        (c["images_decoded"], c["images_reused"], c["images_rejected"]),
        (1, n - 1, 0),
        "{}",
        run.stdout
    );
    let last = read(&p, "convert.images");
    assert_eq!(strings(&last, "sop_instance_uid"), uids);
    assert_eq!(strings(&last, "image_hash"), hashes);
    assert_ne!(strings(&last, "dicom_hash")[k], strings(&first, "dicom_hash")[k]);
    assert_eq!(read(&p, "convert.rejects").num_rows(), 0);
}

#[test]
fn convert_checks_it_reads_what_collect_hashed_and_reuses_only_intact_images() {
    let p = Project::new();
    synth(&p.path("hosp"), 40, SIZE);
    // Let the racy window pass, so the stat cache remembers the DICOMs.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    pipeline(&p, "24", false);
    p.pipe(&["run", "pipelines/c.yaml"]).ok();
    let images = read(&p, "convert.images");
    let n = images.num_rows() as u64;
    let path = strings(&images, "dicom_path")[0].clone();
    let original = std::fs::read(p.path(&path)).unwrap();

    // The DICOM holds other pixels than collect hashed (same size, inode and mtime).
    let mut edited = original.clone();
    let last = edited.len() - 1;
    edited[last] ^= 0xff;
    edit_unseen(&p.path(&path), &edited);
    let r = p.pipe(&["run", "pipelines/c.yaml", "--force", "convert"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("is not the file collect read"), "{}", r.stdout);
    assert!(r.stdout.contains(&path), "{}", r.stdout);
    // Restored: the cached result is still the right one, and intact.
    edit_unseen(&p.path(&path), &original);
    assert!(p.pipe(&["run", "pipelines/c.yaml"]).ok().ran().is_empty());
    let v = p.pipe(&["verify", "pipelines/c.yaml"]).ok();
    assert!(v.stdout.contains(" 0 damaged"), "{}", v.stdout);

    // One flipped bit in a PNG of the entry an incremental run would reuse.
    let entry = table_path(&p, "convert.images").parent().unwrap().to_path_buf();
    let png = entry.join(&strings(&images, "image")[0]);
    let mut bytes = std::fs::read(&png).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&png, bytes).unwrap();
    convert_on_one_thread(&p);
    let run = p.pipe(&["run", "pipelines/c.yaml"]).ok();
    let c = counters(&run, "convert");
    assert_eq!((c["images_decoded"], c["images_reused"]), (n, 0), "{}", run.stdout);
    let now = read(&p, "convert.images");
    let entry = table_path(&p, "convert.images").parent().unwrap().to_path_buf();
    for (image, hash) in strings(&now, "image").iter().zip(strings(&now, "image_hash")) {
        assert_eq!(
            blake3::hash(&std::fs::read(entry.join(image)).unwrap())
                .to_hex()
                .to_string(),
            hash
        );
    }
    let v = p.pipe(&["verify", "pipelines/c.yaml"]).ok();
    assert!(v.stdout.contains(" 0 damaged"), "{}", v.stdout);
}

//! `convert`: matched DICOM files → 8-bit images for training.
//!
//! Each distinct `sop_instance_uid` of `pairs` is decoded once through [`crate::pixels`]
//! (dicom-pixeldata: uncompressed, RLE Lossless, JPEG baseline and lossless; modality
//! LUT, VOI window or min–max, MONOCHROME1 inverted so that dense is bright),
//! letterboxed to `size`×`size` (aspect kept, centred, black padding), mapped to 8 bits
//! as round(v × 255) and written as PNG (or JPEG) to `images/<hash[0..2]>/<hash>.<ext>`
//! inside the entry, named by the BLAKE3 of the encoded bytes. Every pair ends in
//! `images` or in `rejects` with the decoder's error; bad data never fails the stage.
//!
//! Incremental like `collect`: when the previous result of this stage was made by the
//! same kind version with the same output params (size, format, JPEG quality; not
//! `threads`), an image whose (sop_instance_uid, BLAKE3 of the DICOM) is unchanged is
//! hard-linked from the previous entry instead of decoded, and a reject keeps its row
//! (counters `images_decoded`, `images_reused`, `images_rejected`). Hashing reads each
//! DICOM once per run; only new or changed files are decoded.
//!
//! With `shards: N` each shard converts a contiguous slice of the SOP instances (in
//! UID order) and the merge concatenates them: the same tables and images.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, RecordBatch};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::pixels::{self, Voi};
use pipe_core::stage::{Context, Resources, Stage};
use pipe_core::table::{TableBuilder, TableSchema, f64_col, i32_col, read_batch, str_col};

/// Largest `size` accepted (JPEG allows 65535; this is far above any training input).
pub const MAX_SIZE: usize = 16384;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Side of the square output images, in pixels (the paper trains at 768).
    #[serde(default = "default_size", deserialize_with = "size_in_range")]
    pub size: usize,
    /// `png` (lossless) or `jpeg`.
    #[serde(default)]
    pub format: Format,
    /// JPEG quality, 1 to 100; only used with `format: jpeg`.
    #[serde(default = "default_quality", deserialize_with = "quality_in_range")]
    pub jpeg_quality: u8,
    /// Threads for decoding (0 = the run's `--jobs`).
    #[serde(default)]
    pub threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Png,
    Jpeg,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Jpeg => "jpg",
        }
    }
}

fn default_size() -> usize {
    768
}
fn default_quality() -> u8 {
    95
}

fn size_in_range<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = usize::deserialize(d)?;
    if v == 0 || v > MAX_SIZE {
        return Err(serde::de::Error::custom(format!(
            "size must be 1 to {MAX_SIZE} pixels, got {v}"
        )));
    }
    Ok(v)
}

fn quality_in_range<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let v = u8::deserialize(d)?;
    if !(1..=100).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "jpeg_quality must be 1 to 100, got {v}"
        )));
    }
    Ok(v)
}

/// What the image files depend on besides the DICOM file: a previous result is reused
/// only when it agrees on this (threads do not matter, the JPEG quality only for JPEG).
fn output_identity(p: &Params) -> (usize, Format, Option<u8>) {
    (p.size, p.format, (p.format == Format::Jpeg).then_some(p.jpeg_quality))
}

pub struct Convert;

fn images_schema() -> TableSchema {
    crate::schema!("convert/images")
}
fn rejects_schema() -> TableSchema {
    crate::schema!("convert/rejects")
}

impl Stage for Convert {
    type Params = Params;
    const KIND: &'static str = "convert";
    // 2: JPEG 2000, JPEG-LS, own RLE; accounting by file (duplicates are rejects); 3: files
    // whose file meta dicom_scan repairs (no group length, long AE, implicit data set); 4:
    // dicom_scan's walk as collect 4's
    const VERSION: u32 = 4;
    const ABOUT: &'static str = "decode matched DICOM files into square 8-bit PNG/JPEG images for training";
    // A shard converts a contiguous slice of the SOP instances in UID order, the order
    // of the tables: the default merge concatenates them and moves the images over.
    const SHARDABLE: bool = true;

    fn reads(_: &Params) -> Vec<&'static str> {
        vec!["pairs"]
    }

    fn outputs(_: &Params) -> Vec<String> {
        vec!["images".into(), "rejects".into()]
    }

    fn resources(p: &Params) -> Resources {
        Resources { cpu: p.threads, gpu: 0 }
    }

    fn run(p: &Params, ctx: &Context) -> anyhow::Result<()> {
        let pairs = read_batch(ctx.input("pairs")?)?;
        let (uids, paths) = (str_col(&pairs, "sop_instance_uid")?, str_col(&pairs, "path")?);
        let hashes = pairs
            .column_by_name("file_hash")
            .map(|_| str_col(&pairs, "file_hash"))
            .transpose()?;
        if hashes.is_none() {
            ctx.log("pairs has no file_hash column: DICOM content is not checked against collect's");
        }
        // Accounting is by file: each file of the pairs ends in images or rejects. One
        // image per SOP instance: its files (one, or several copies of a resent
        // instance) are tried in path order until one converts; the other copies are
        // rejects that name the one converted.
        let mut by_uid: BTreeMap<&str, BTreeMap<&str, Option<&str>>> = BTreeMap::new();
        for i in 0..pairs.num_rows() {
            let hash = hashes.and_then(|h| h.is_valid(i).then(|| h.value(i)));
            by_uid
                .entry(uids.value(i))
                .or_default()
                .entry(paths.value(i))
                .or_insert(hash);
        }
        if let Some(shard) = ctx.shard {
            let range = shard.range(by_uid.len());
            by_uid = by_uid.into_iter().skip(range.start).take(range.len()).collect();
        }
        let files: usize = by_uid.values().map(BTreeMap::len).sum();
        ctx.progress.set_total(files as u64);

        let previous = match Previous::load(ctx.previous.as_deref(), p) {
            Ok(prev) => prev,
            Err(why) => {
                if ctx.previous.is_some() {
                    ctx.log(format!("previous result not reused: {why:#}"));
                }
                Previous::default()
            }
        };

        let groups: Vec<(&str, Vec<InstanceFile>)> = by_uid
            .into_iter()
            .map(|(uid, copies)| (uid, copies.into_iter().collect()))
            .collect();
        let outcomes: Vec<Outcome> = ctx
            .pool()?
            .install(|| {
                groups
                    .par_iter()
                    .map(|(uid, copies)| {
                        let mut out = Vec::with_capacity(copies.len());
                        let mut converted: Option<&str> = None;
                        for &(path, expected) in copies {
                            let o = match converted {
                                Some(first) => Outcome::Rejected(RejectRow {
                                    sop_instance_uid: uid.to_string(),
                                    dicom_path: path.to_string(),
                                    dicom_hash: expected.map(str::to_string),
                                    reason: format!("duplicate: same SOP Instance UID as {first}, which was converted"),
                                }),
                                None => convert_one(p, ctx, &previous, uid, path, expected)?,
                            };
                            if matches!(o, Outcome::Image { .. }) {
                                converted = Some(path);
                            }
                            ctx.progress.inc(1);
                            out.push(o);
                        }
                        Ok(out)
                    })
                    .collect::<anyhow::Result<Vec<Vec<Outcome>>>>()
            })?
            .into_iter()
            .flatten()
            .collect();

        let mut images = TableBuilder::new(&images_schema());
        let mut rejects = TableBuilder::new(&rejects_schema());
        let (mut decoded, mut reused, mut rejected) = (0, 0, 0);
        for o in &outcomes {
            match o {
                Outcome::Image { row, reused: r } => {
                    row.push(&mut images);
                    if *r {
                        reused += 1;
                    } else {
                        decoded += 1;
                    }
                }
                Outcome::Rejected(row) => {
                    row.push(&mut rejects);
                    rejected += 1;
                }
            }
        }
        ctx.count("images_decoded", decoded);
        ctx.count("images_reused", reused);
        ctx.count("images_rejected", rejected);
        ctx.write_table("images", &images_schema(), &images.finish()?)?;
        ctx.write_table("rejects", &rejects_schema(), &rejects.finish()?)?;
        Ok(())
    }
}

/// One file of a SOP instance: its path and the hash collect listed.
type InstanceFile<'a> = (&'a str, Option<&'a str>);

/// A row of `images`.
#[derive(Debug, Clone, PartialEq)]
struct ImageRow {
    sop_instance_uid: String,
    dicom_path: String,
    dicom_hash: String,
    image: String,
    image_hash: String,
    original_width: i32,
    original_height: i32,
    size: i32,
    voi: String,
    window_center: Option<f64>,
    window_width: Option<f64>,
}

impl ImageRow {
    fn push(&self, t: &mut TableBuilder) {
        t.str("sop_instance_uid", Some(&self.sop_instance_uid))
            .str("dicom_path", Some(&self.dicom_path))
            .str("dicom_hash", Some(&self.dicom_hash))
            .str("image", Some(&self.image))
            .str("image_hash", Some(&self.image_hash))
            .i32("original_width", Some(self.original_width))
            .i32("original_height", Some(self.original_height))
            .i32("size", Some(self.size))
            .str("voi", Some(&self.voi))
            .f64("window_center", self.window_center)
            .f64("window_width", self.window_width);
    }
}

/// A row of `rejects`.
#[derive(Debug, Clone, PartialEq)]
struct RejectRow {
    sop_instance_uid: String,
    dicom_path: String,
    dicom_hash: Option<String>,
    reason: String,
}

impl RejectRow {
    fn push(&self, t: &mut TableBuilder) {
        t.str("sop_instance_uid", Some(&self.sop_instance_uid))
            .str("dicom_path", Some(&self.dicom_path))
            .str("dicom_hash", self.dicom_hash.as_deref())
            .str("reason", Some(&self.reason));
    }
}

enum Outcome {
    Image { row: ImageRow, reused: bool },
    Rejected(RejectRow),
}

/// `images/<hash[0..2]>/<hash>.<ext>`: where an image lives inside an entry.
pub(crate) fn image_rel(hash: &str, format: Format) -> String {
    format!("images/{}/{hash}.{}", &hash[..2.min(hash.len())], format.extension())
}

/// The VOI as table cells: name, center, width (min–max as its centre and range).
fn voi_cells(voi: Voi) -> (&'static str, f64, f64) {
    match voi {
        Voi::Window { center, width } => ("window", center, width),
        Voi::MinMax { min, max } => ("minmax", (min + max) / 2.0, max - min),
        Voi::Lut { first, entries, .. } => ("lut", first as f64 + (entries as f64 - 1.0) / 2.0, entries as f64),
    }
}

/// Display value in [0, 1] → 8 bits: round(v × 255), clamped (NaN → 0).
pub fn to_u8(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

/// Encode an 8-bit greyscale `size`×`size` image.
fn encode(p: &Params, pixels: &[u8], size: usize) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    match p.format {
        Format::Png => out = pixels::png_gray(pixels, size, size)?,
        Format::Jpeg => {
            let side = u16::try_from(size)?;
            jpeg_encoder::Encoder::new(&mut out, p.jpeg_quality).encode(
                pixels,
                side,
                side,
                jpeg_encoder::ColorType::Luma,
            )?;
        }
    }
    Ok(out)
}

/// Decoded and encoded: the image bytes, the original width and height, the VOI used.
struct Converted {
    encoded: Vec<u8>,
    width: usize,
    height: usize,
    voi: Voi,
}

/// Decode, letterbox and encode one file; `Err` is the reject reason.
fn decode(p: &Params, bytes: &[u8]) -> Result<Converted, String> {
    // dicom-pixeldata's decoders are not written for hostile input: a panic in one of
    // them is a reason for this file, not the end of the stage.
    let (img, voi) = match std::panic::catch_unwind(|| pixels::load_bytes(bytes)) {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(e)) => return Err(format!("{e:#}")),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            return Err(format!("the pixel decoder failed: {msg}"));
        }
    };
    if img.width == 0 || img.height == 0 {
        return Err(format!("empty image ({}×{})", img.width, img.height));
    }
    let square = pixels::letterbox(&img, p.size);
    let bytes: Vec<u8> = square.data.iter().map(|&v| to_u8(v)).collect();
    let encoded = encode(p, &bytes, p.size).map_err(|e| format!("cannot encode the image: {e:#}"))?;
    Ok(Converted {
        encoded,
        width: img.width,
        height: img.height,
        voi,
    })
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Write `bytes` to `dst` (named by their hash: an existing file already holds them).
pub(crate) fn store(dst: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if dst.exists() {
        return Ok(());
    }
    let dir = dst.parent().expect("image paths have a folder");
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    // Through a unique temporary name, so two threads writing the same image never
    // leave a half-written file under the final name.
    let tmp = dir.join(format!(".{}.tmp", TMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&tmp, bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dst).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", dst.display()))?;
    Ok(())
}

/// Put the previous entry's `src` at `dst`: a hard link, or a copy where linking fails
/// (another file system).
pub(crate) fn link_or_copy(src: &Path, dst: &Path) -> std::io::Result<()> {
    if dst.exists() {
        return Ok(());
    }
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::hard_link(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(_) => {
            let tmp = dst.with_file_name(format!(".{}.tmp", TMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
            std::fs::copy(src, &tmp)?;
            std::fs::rename(&tmp, dst)
        }
    }
}

/// One SOP instance: reuse, decode, or reject. `Err` only for problems of the run
/// (cannot write into the entry; the file is not the content collect hashed, which the
/// key was built from), never for problems of the file.
fn convert_one(
    p: &Params,
    ctx: &Context,
    previous: &Previous,
    uid: &str,
    path: &str,
    expected: Option<&str>,
) -> anyhow::Result<Outcome> {
    let file = ctx.resolve(path);
    let reject = |hash: Option<&str>, reason: String| {
        Outcome::Rejected(RejectRow {
            sop_instance_uid: uid.to_string(),
            dicom_path: path.to_string(),
            dicom_hash: hash.map(str::to_string),
            reason,
        })
    };
    // Read once: the bytes hashed are the bytes decoded.
    let (bytes, dicom_hash) = crate::collect::read_as_listed(&file, path, expected)?;
    let key = (uid.to_string(), dicom_hash.clone());
    if let Some(row) = previous.images.get(&key) {
        let src = previous.dir.join(&row.image);
        // A previous image that cannot be linked (the entry was removed meanwhile) is
        // simply decoded again.
        if link_or_copy(&src, &ctx.out_dir.join(&row.image)).is_ok() {
            return Ok(Outcome::Image {
                row: ImageRow {
                    dicom_path: path.to_string(),
                    ..row.clone()
                },
                reused: true,
            });
        }
    }
    if let Some(reason) = previous.rejects.get(&key) {
        return Ok(reject(Some(&dicom_hash), reason.clone()));
    }
    let c = match decode(p, &bytes) {
        Ok(c) => c,
        Err(reason) => return Ok(reject(Some(&dicom_hash), reason)),
    };
    let image_hash = blake3::hash(&c.encoded).to_hex().to_string();
    let image = image_rel(&image_hash, p.format);
    store(&ctx.out_dir.join(&image), &c.encoded)?;
    let (voi, center, width) = voi_cells(c.voi);
    Ok(Outcome::Image {
        row: ImageRow {
            sop_instance_uid: uid.to_string(),
            dicom_path: path.to_string(),
            dicom_hash,
            image,
            image_hash,
            original_width: i32::try_from(c.width)?,
            original_height: i32::try_from(c.height)?,
            size: i32::try_from(p.size)?,
            voi: voi.to_string(),
            window_center: Some(center),
            window_width: Some(width),
        },
        reused: false,
    })
}

/// The previous result's rows, by (sop_instance_uid, dicom_hash).
#[derive(Default)]
struct Previous {
    dir: PathBuf,
    images: HashMap<(String, String), ImageRow>,
    rejects: HashMap<(String, String), String>,
}

impl Previous {
    /// The previous entry, if it was made by this version with the same output params;
    /// `Err` says why it is not reused.
    fn load(entry: Option<&Path>, p: &Params) -> anyhow::Result<Previous> {
        let Some(entry) = entry else {
            return Ok(Previous::default());
        };
        let manifest = pipe_core::cache::store::read_manifest(entry)?;
        anyhow::ensure!(
            manifest.parts.kind == Convert::KIND && manifest.parts.version == Convert::VERSION,
            "made by kind {} version {}, this is {} version {}",
            manifest.parts.kind,
            manifest.parts.version,
            Convert::KIND,
            Convert::VERSION
        );
        let images_path = entry.join("images.parquet");
        let before: Params = serde_json::from_value(manifest.parts.params.clone())
            .map_err(|e| anyhow::anyhow!("its params {} do not parse: {e}", manifest.parts.params))?;
        anyhow::ensure!(
            output_identity(&before) == output_identity(p),
            "made with other output params ({})",
            manifest.parts.params
        );
        let images = read_batch(&images_path)?;
        let rejects = read_batch(&entry.join("rejects.parquet"))?;
        images_schema().check(&images)?;
        rejects_schema().check(&rejects)?;

        let mut prev = Previous {
            dir: entry.to_path_buf(),
            ..Previous::default()
        };
        let s = |b: &RecordBatch, c: &str, i: usize| -> anyhow::Result<Option<String>> {
            let col = str_col(b, c)?;
            Ok(col.is_valid(i).then(|| col.value(i).to_string()))
        };
        let need = |v: Option<String>| v.unwrap_or_default();
        let (widths, heights, sizes) = (
            i32_col(&images, "original_width")?,
            i32_col(&images, "original_height")?,
            i32_col(&images, "size")?,
        );
        let (centers, window_widths) = (f64_col(&images, "window_center")?, f64_col(&images, "window_width")?);
        for i in 0..images.num_rows() {
            let row = ImageRow {
                sop_instance_uid: need(s(&images, "sop_instance_uid", i)?),
                dicom_path: need(s(&images, "dicom_path", i)?),
                dicom_hash: need(s(&images, "dicom_hash", i)?),
                image: need(s(&images, "image", i)?),
                image_hash: need(s(&images, "image_hash", i)?),
                original_width: widths.value(i),
                original_height: heights.value(i),
                size: sizes.value(i),
                voi: need(s(&images, "voi", i)?),
                window_center: centers.is_valid(i).then(|| centers.value(i)),
                window_width: window_widths.is_valid(i).then(|| window_widths.value(i)),
            };
            // Only a path this stage would have written: never follow another one out of
            // the entry.
            let hex = row.image_hash.len() == 64 && row.image_hash.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex || row.image != image_rel(&row.image_hash, p.format) || row.size as usize != p.size {
                continue;
            }
            prev.images
                .insert((row.sop_instance_uid.clone(), row.dicom_hash.clone()), row);
        }
        for i in 0..rejects.num_rows() {
            if let Some(hash) = s(&rejects, "dicom_hash", i)? {
                prev.rejects.insert(
                    (need(s(&rejects, "sop_instance_uid", i)?), hash),
                    need(s(&rejects, "reason", i)?),
                );
            }
        }
        Ok(prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixels::Gray;

    #[test]
    fn eight_bits_are_the_rounded_display_value() {
        assert_eq!(to_u8(0.0), 0);
        assert_eq!(to_u8(1.0), 255);
        assert_eq!(to_u8(0.5), 128); // 127.5 rounds away from zero
        assert_eq!(to_u8(0.499), 127);
        assert_eq!(to_u8(1.0 / 255.0), 1);
        assert_eq!(to_u8(0.4 / 255.0), 0);
        assert_eq!(to_u8(0.6 / 255.0), 1);
        assert_eq!(to_u8(254.49 / 255.0), 254);
        // Out of range and NaN cannot wrap around.
        assert_eq!(to_u8(-0.2), 0);
        assert_eq!(to_u8(1.7), 255);
        assert_eq!(to_u8(f32::NAN), 0);
        // Every level maps back to itself.
        assert!((0..=255u8).all(|l| to_u8(l as f32 / 255.0) == l));
    }

    #[test]
    fn minmax_is_reported_as_centre_and_range() {
        assert_eq!(
            voi_cells(Voi::MinMax { min: 100.0, max: 300.0 }),
            ("minmax", 200.0, 200.0)
        );
        assert_eq!(
            voi_cells(Voi::Window {
                center: 40.0,
                width: 400.0
            }),
            ("window", 40.0, 400.0)
        );
    }

    #[test]
    fn letterboxed_png_has_the_image_centred_on_black() {
        // A white 6×3 image into 12×12: white rows 3..9, black elsewhere.
        let img = Gray {
            width: 6,
            height: 3,
            data: vec![1.0; 18],
        };
        let square = pixels::letterbox(&img, 12);
        let bytes: Vec<u8> = square.data.iter().map(|&v| to_u8(v)).collect();
        let p: Params = serde_json::from_str(r#"{"size": 12}"#).unwrap();
        let png_bytes = encode(&p, &bytes, 12).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(&png_bytes)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (12, 12));
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        for y in 0..12 {
            let want = if (3..9).contains(&y) { 255 } else { 0 };
            assert!(buf[y * 12..(y + 1) * 12].iter().all(|&v| v == want), "row {y}");
        }
        // JPEG of the same image decodes to the same size.
        let p: Params = serde_json::from_str(r#"{"size": 12, "format": "jpeg"}"#).unwrap();
        let jpg = encode(&p, &bytes, 12).unwrap();
        assert_eq!(&jpg[..2], &[0xFF, 0xD8]);
    }

    #[test]
    fn params_are_checked() {
        let p: Params = serde_json::from_str("{}").unwrap();
        assert_eq!((p.size, p.format, p.jpeg_quality, p.threads), (768, Format::Png, 95, 0));
        assert!(serde_json::from_str::<Params>(r#"{"size": 0}"#).is_err());
        assert!(serde_json::from_str::<Params>(r#"{"jpeg_quality": 0}"#).is_err());
        assert!(serde_json::from_str::<Params>(r#"{"format": "gif"}"#).is_err());
        assert!(serde_json::from_str::<Params>(r#"{"sise": 5}"#).is_err());
        // Threads, and the JPEG quality of PNG output, do not change the images.
        let a: Params = serde_json::from_str(r#"{"threads": 2, "jpeg_quality": 50}"#).unwrap();
        assert_eq!(output_identity(&a), output_identity(&p));
        let j: Params = serde_json::from_str(r#"{"format": "jpeg", "jpeg_quality": 50}"#).unwrap();
        let k: Params = serde_json::from_str(r#"{"format": "jpeg"}"#).unwrap();
        assert_ne!(output_identity(&j), output_identity(&k));
    }

    #[test]
    fn an_unreadable_file_is_a_reason_not_a_panic() {
        let p: Params = serde_json::from_str(r#"{"size": 8}"#).unwrap();
        let Err(reason) = decode(&p, b"not a dicom file at all") else {
            panic!("decoded garbage")
        };
        assert!(!reason.is_empty());
    }
}

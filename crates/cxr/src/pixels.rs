//! DICOM pixel data → display values in [0, 1]: the one decode path of pipe (the model
//! filter now, image conversion next).
//!
//! Order of operations (DICOM PS3.3 C.11): stored values → modality LUT (RescaleSlope,
//! RescaleIntercept) → VOI LUT (the first WindowCenter/WindowWidth, linear function
//! of C.11.2.1.2; min–max of the image when there is no window) → MONOCHROME1
//! inverted so that bright is always dense. Codecs: uncompressed (any byte order,
//! deflated), JPEG baseline/lossless (dicom-pixeldata's native decoder), JPEG 2000
//! (OpenJPEG), JPEG-LS (CharLS), RLE Lossless (our own decoder, `rle` below). A file
//! is walked by [`crate::dicom_scan`] before the parser sees it.

use std::path::Path;

use anyhow::{Context as _, bail};
use dicom_dictionary_std::tags;
use dicom_pixeldata::PixelDecoder;

/// A grey image, row-major, values in [0, 1].
#[derive(Debug, Clone)]
pub struct Gray {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

/// The VOI transform applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Voi {
    Window {
        center: f64,
        width: f64,
    },
    MinMax {
        min: f64,
        max: f64,
    },
    /// The file's VOI LUT Sequence: `entries` values from input `first`, `bits` deep.
    Lut {
        first: i64,
        entries: usize,
        bits: u32,
    },
}

/// A lookup table of PS3.3 C.11.1 / C.11.2 (LUT Descriptor: entries, first value mapped,
/// bits; LUT Data).
struct Lut {
    first: i64,
    bits: u32,
    data: Vec<f64>,
}

impl Lut {
    /// The first item of sequence `tag`, if the file has one.
    fn of(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag, signed: bool) -> anyhow::Result<Option<Lut>> {
        let Some(item) = obj
            .element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.items())
            .and_then(|items| items.first())
        else {
            return Ok(None);
        };
        let descriptor: Vec<i64> = item
            .element(tags::LUT_DESCRIPTOR)
            .ok()
            .and_then(|e| e.to_multi_int::<i64>().ok())
            .filter(|d| d.len() == 3)
            .context("a LUT without a three-value LUT Descriptor (0028,3002)")?;
        let entries = if descriptor[0] == 0 {
            65536
        } else {
            descriptor[0] as usize
        };
        // The first value mapped is US or SS as the pixel data is (C.11.1.1).
        let first = if signed && descriptor[1] >= 32768 {
            descriptor[1] - 65536
        } else {
            descriptor[1]
        };
        let bits = descriptor[2].clamp(1, 16) as u32;
        let element = item
            .element(tags::LUT_DATA)
            .map_err(|_| anyhow::anyhow!("a LUT without LUT Data (0028,3006)"))?;
        let data: Vec<f64> = match element.vr() {
            dicom_core::VR::US | dicom_core::VR::SS => element
                .to_multi_int::<i64>()
                .map_err(|e| anyhow::anyhow!("unreadable LUT Data: {e}"))?
                .into_iter()
                .map(|v| v as f64)
                .collect(),
            _ => {
                let bytes = element
                    .to_bytes()
                    .map_err(|e| anyhow::anyhow!("unreadable LUT Data: {e}"))?;
                if bytes.len() >= 2 * entries {
                    bytes
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]) as f64)
                        .collect()
                } else {
                    bytes.iter().map(|&b| b as f64).collect()
                }
            }
        };
        anyhow::ensure!(
            data.len() >= entries,
            "LUT Data has {} values, its descriptor says {entries}",
            data.len()
        );
        Ok(Some(Lut {
            first,
            bits,
            data: data[..entries].to_vec(),
        }))
    }

    /// The output for input `x`: inputs below the first mapped value take the first
    /// entry, above the last the last.
    fn get(&self, x: f64) -> f64 {
        let i = (x.round() as i64 - self.first).clamp(0, self.data.len() as i64 - 1);
        self.data[i as usize]
    }

    /// The largest output the bit depth allows.
    fn top(&self) -> f64 {
        ((1u64 << self.bits) - 1) as f64
    }
}

/// Decode the first frame of a DICOM file into display values.
pub fn load(path: &Path) -> anyhow::Result<(Gray, Voi)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    load_bytes(&bytes).with_context(|| format!("{}", path.display()))
}

/// [`load`] from the bytes of a whole file (with or without its 128-byte preamble), for
/// a caller that must decode exactly the bytes it hashed.
pub fn load_bytes(bytes: &[u8]) -> anyhow::Result<(Gray, Voi)> {
    crate::quietly(|| load_object(open_bytes(bytes)?))
}

/// A whole DICOM file's bytes as an object, read as safely as [`load_bytes`] reads them.
pub fn open_bytes(bytes: &[u8]) -> anyhow::Result<dicom_object::DefaultDicomObject> {
    use dicom_object::file::ReadPreamble;
    // The parser gets only what it can read safely: lengths and nesting checked, UN
    // sequences of undefined length left out, a repaired file meta group, nothing after
    // the pixel data.
    let layout = if bytes.get(128..132) == Some(b"DICM") {
        crate::dicom_scan::scan_bytes(bytes).map_err(|e| anyhow::anyhow!(e))?
    } else {
        crate::dicom_scan::Layout::default()
    };
    let cleaned;
    let bytes = if layout.edits().is_empty() && layout.pixel_data_end.is_none_or(|e| e as usize == bytes.len()) {
        bytes
    } else {
        cleaned = crate::dicom_scan::without(bytes, &layout);
        &cleaned[..]
    };
    let preamble = if bytes.get(128..132) == Some(b"DICM") {
        ReadPreamble::Always
    } else {
        ReadPreamble::Never
    };
    crate::quietly(|| {
        dicom_object::OpenFileOptions::new()
            .read_preamble(preamble)
            .from_reader(bytes)
            .context("cannot read DICOM")
    })
}

/// RLE Lossless: decoded by [`rle`] (dicom-rs's decoder panics on several fragments per
/// frame and on bad segment offsets, and does not do 32-bit samples).
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
/// JPEG Extended (Process 2 & 4): 8-bit is decoded; 12-bit has no maintained Rust
/// decoder, so it is refused with a reason that names it.
const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";
const EXPLICIT_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

fn load_object(obj: dicom_object::DefaultDicomObject) -> anyhow::Result<(Gray, Voi)> {
    let int = |tag| obj.element_opt(tag).ok().flatten().and_then(|e| e.to_int::<i64>().ok());
    if obj.element(tags::PIXEL_DATA).is_err() {
        bail!("no pixel data: not an image");
    }
    let layout = Layout {
        width: int(tags::COLUMNS).context("no Columns")? as usize,
        height: int(tags::ROWS).context("no Rows")? as usize,
        bits_allocated: int(tags::BITS_ALLOCATED).context("no BitsAllocated")? as u32,
        bits_stored: int(tags::BITS_STORED).unwrap_or(0) as u32,
        signed: int(tags::PIXEL_REPRESENTATION) == Some(1),
    };
    let samples_per_pixel = int(tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if samples_per_pixel != 1 {
        bail!("{samples_per_pixel} samples per pixel: only greyscale radiographs are supported");
    }
    let ts = obj.meta().transfer_syntax().trim_end_matches(['\0', ' ']).to_string();
    if ts == JPEG_EXTENDED && layout.bits_stored > 8 {
        bail!(
            "JPEG Extended (1.2.840.10008.1.2.4.51) with {} bits stored is not supported: no maintained Rust decoder reads 12-bit JPEG; convert the file to another transfer syntax first (e.g. `dcmdjpeg`)",
            layout.bits_stored
        );
    }
    let (w, h) = (layout.width, layout.height);
    let stored = if ts == RLE_LOSSLESS {
        let pixel_data = obj
            .element(tags::PIXEL_DATA)
            .map_err(|_| anyhow::anyhow!("no pixel data"))?
            .value();
        let (fragments, offsets) = (
            pixel_data.fragments().context("RLE pixel data is not encapsulated")?,
            pixel_data.offset_table().unwrap_or(&[]),
        );
        let frames = int(tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as usize;
        let frame = rle::first_frame(fragments, offsets, frames)?;
        samples(&rle::decode(&frame, &layout)?, &layout)?
    } else {
        let decoded = obj
            .decode_pixel_data()
            .map_err(|e| anyhow::anyhow!("cannot decode pixel data: {e}"))?;
        let bytes = decoded
            .frame_data(0)
            .map_err(|e| anyhow::anyhow!("cannot read frame 0: {e}"))?;
        if ts == EXPLICIT_BIG_ENDIAN && layout.bits_allocated == 32 {
            // dicom-rs swaps a big-endian file's pixel data as 16-bit words (OW), which
            // leaves the two halves of a 32-bit value in big-endian order.
            let fixed: Vec<u8> = bytes.chunks_exact(4).flat_map(|c| [c[2], c[3], c[0], c[1]]).collect();
            samples(&fixed, &layout)?
        } else {
            samples(bytes, &layout)?
        }
    };
    let num = |tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_multi_float64().ok())
            .and_then(|v| v.first().copied())
    };
    // Modality LUT (C.11.1): the Modality LUT Sequence when there is one, else the
    // rescale.
    let values: Vec<f64> = match Lut::of(&obj, tags::MODALITY_LUT_SEQUENCE, layout.signed)? {
        Some(lut) => stored.iter().map(|&v| lut.get(v)).collect(),
        None => {
            let slope = num(tags::RESCALE_SLOPE).unwrap_or(1.0);
            let intercept = num(tags::RESCALE_INTERCEPT).unwrap_or(0.0);
            stored.iter().map(|v| v * slope + intercept).collect()
        }
    };
    // VOI (C.11.2): the VOI LUT Sequence is preferred to the window, as pydicom's
    // `apply_voi_lut` does; its output is scaled by its bit depth.
    let voi_lut = Lut::of(&obj, tags::VOILUT_SEQUENCE, layout.signed)?;
    let voi = match (&voi_lut, num(tags::WINDOW_CENTER), num(tags::WINDOW_WIDTH)) {
        (Some(lut), ..) => Voi::Lut {
            first: lut.first,
            entries: lut.data.len(),
            bits: lut.bits,
        },
        (None, Some(center), Some(width)) if width >= 1.0 => Voi::Window { center, width },
        _ => {
            let (min, max) = values
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            Voi::MinMax { min, max }
        }
    };
    let monochrome1 = obj
        .element_opt(tags::PHOTOMETRIC_INTERPRETATION)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .is_some_and(|s| s.trim() == "MONOCHROME1");
    let data = values
        .iter()
        .map(|&x| {
            let y = match &voi_lut {
                Some(lut) => lut.get(x) / lut.top(),
                None => apply_voi(voi, x),
            };
            (if monochrome1 { 1.0 - y } else { y }) as f32
        })
        .collect();
    Ok((
        Gray {
            width: w,
            height: h,
            data,
        },
        voi,
    ))
}

/// How stored values are laid out (PS3.3 C.7.6.3).
pub struct Layout {
    pub width: usize,
    pub height: usize,
    pub bits_allocated: u32,
    pub bits_stored: u32,
    pub signed: bool,
}

/// The first `width × height` stored values of little-endian `bytes`: 1-bit (a byte
/// per pixel, or packed least significant bit first), 8-, 16- or 32-bit, masked to BitsStored and sign
/// extended when PixelRepresentation is 1.
fn samples(bytes: &[u8], l: &Layout) -> anyhow::Result<Vec<f64>> {
    let n = l.width * l.height;
    let bits = if l.bits_stored == 0 || l.bits_stored > l.bits_allocated {
        l.bits_allocated
    } else {
        l.bits_stored
    };
    let value = |v: u64| -> f64 {
        let v = if bits < 64 { v & ((1u64 << bits) - 1) } else { v };
        if l.signed && bits > 0 && (v >> (bits - 1)) & 1 == 1 {
            (v as i64 - (1i64 << bits)) as f64
        } else {
            v as f64
        }
    };
    let out: Vec<f64> = match l.bits_allocated {
        // dicom-pixeldata hands 1-bit data over unpacked, a byte per pixel; packed
        // bits (a byte per 8 pixels) are unpacked here.
        1 if bytes.len() >= n => bytes.iter().take(n).map(|&b| (b & 1) as f64).collect(),
        1 => (0..n.min(bytes.len() * 8))
            .map(|i| ((bytes[i / 8] >> (i % 8)) & 1) as f64)
            .collect(),
        8 => bytes.iter().take(n).map(|&b| value(b as u64)).collect(),
        16 => bytes
            .chunks_exact(2)
            .take(n)
            .map(|c| value(u16::from_le_bytes([c[0], c[1]]) as u64))
            .collect(),
        32 => bytes
            .chunks_exact(4)
            .take(n)
            .map(|c| value(u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64))
            .collect(),
        b => bail!("BitsAllocated {b} is not supported (1, 8, 16 and 32 are)"),
    };
    if out.len() != n {
        bail!(
            "pixel data has {} samples, expected {n} ({}×{})",
            out.len(),
            l.width,
            l.height
        );
    }
    Ok(out)
}

/// RLE Lossless (PS3.5 Annex G), greyscale.
mod rle {
    use anyhow::{bail, ensure};

    use super::Layout;

    /// The bytes of frame 0: every fragment of a single-frame image (some writers split a
    /// frame over several), else the fragments before the second frame's offset in the
    /// Basic Offset Table, else the first fragment.
    pub fn first_frame(fragments: &[Vec<u8>], offsets: &[u32], frames: usize) -> anyhow::Result<Vec<u8>> {
        ensure!(!fragments.is_empty(), "RLE pixel data has no fragment");
        if frames <= 1 {
            return Ok(fragments.concat());
        }
        if fragments.len() == frames || offsets.len() < 2 {
            return Ok(fragments[0].clone());
        }
        // Offsets count from the first fragment item, 8 bytes of item header each.
        let (mut at, mut out) = (0u64, Vec::new());
        for f in fragments {
            if at >= offsets[1] as u64 {
                break;
            }
            out.extend_from_slice(f);
            at += 8 + f.len() as u64;
        }
        Ok(out)
    }

    /// One frame → little-endian samples (what [`super::samples`] reads).
    pub fn decode(frame: &[u8], l: &Layout) -> anyhow::Result<Vec<u8>> {
        ensure!(
            frame.len() >= 64,
            "RLE frame of {} bytes has no 64-byte header",
            frame.len()
        );
        let word = |i: usize| u32::from_le_bytes([frame[4 * i], frame[4 * i + 1], frame[4 * i + 2], frame[4 * i + 3]]);
        let count = word(0) as usize;
        let bytes_per = match l.bits_allocated {
            8 => 1,
            16 => 2,
            32 => 4,
            b => bail!("RLE with BitsAllocated {b} is not supported"),
        };
        ensure!(
            count == bytes_per,
            "RLE header has {count} segments; {} bits greyscale needs {bytes_per}",
            l.bits_allocated
        );
        let n = l.width * l.height;
        let mut out = vec![0u8; n * bytes_per];
        for k in 0..count {
            let start = word(1 + k) as usize;
            let end = if k + 1 < count {
                word(2 + k) as usize
            } else {
                frame.len()
            };
            ensure!(
                64 <= start && start <= end && end <= frame.len(),
                "RLE segment {k} has offsets {start}..{end} outside the frame's {} bytes",
                frame.len()
            );
            let plane = packbits(&frame[start..end], n).map_err(|e| anyhow::anyhow!("RLE segment {k}: {e}"))?;
            // Segment 0 holds the most significant bytes.
            let byte = bytes_per - 1 - k;
            for (i, &b) in plane.iter().enumerate() {
                out[i * bytes_per + byte] = b;
            }
        }
        Ok(out)
    }

    /// PackBits: a header byte h then h+1 literal bytes (h ≥ 0), or the next byte
    /// repeated 1−h times (h < 0; −128 is a no-op). Exactly `n` bytes are kept; a
    /// segment that ends short is an error.
    fn packbits(seg: &[u8], n: usize) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(n);
        let mut i = 0;
        while out.len() < n && i < seg.len() {
            let h = seg[i] as i8;
            i += 1;
            match h {
                0..=127 => {
                    let len = h as usize + 1;
                    let Some(lit) = seg.get(i..i + len) else {
                        return Err(format!("a literal run of {len} bytes at {i} passes the segment's end"));
                    };
                    out.extend_from_slice(lit);
                    i += len;
                }
                -128 => {}
                _ => {
                    let Some(&b) = seg.get(i) else {
                        return Err("a repeat run at the segment's end".into());
                    };
                    out.extend(std::iter::repeat_n(b, (1 - h as i32) as usize));
                    i += 1;
                }
            }
        }
        if out.len() < n {
            return Err(format!("decodes to {} bytes, the image needs {n}", out.len()));
        }
        out.truncate(n);
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_decoder_panic_is_an_error() {
            let e = crate::quietly::<()>(|| panic!("bad segment")).unwrap_err().to_string();
            assert_eq!(e, "the decoder failed on this file: bad segment");
        }

        #[test]
        fn packbits_runs_and_literals() {
            // 3 literals, a run of 4, a no-op, one literal.
            let seg = [2, 10, 11, 12, (-3i8) as u8, 7, 0x80, 0, 9];
            assert_eq!(packbits(&seg, 8).unwrap(), vec![10, 11, 12, 7, 7, 7, 7, 9]);
            assert!(packbits(&seg, 9).is_err());
            assert!(packbits(&[5, 1], 6).is_err(), "a literal past the end");
        }

        #[test]
        fn bad_offsets_are_errors_not_panics() {
            let mut frame = vec![0u8; 64];
            frame[0] = 1;
            frame[4..8].copy_from_slice(&1000u32.to_le_bytes());
            let l = Layout {
                width: 2,
                height: 2,
                bits_allocated: 8,
                bits_stored: 8,
                signed: false,
            };
            let e = decode(&frame, &l).unwrap_err().to_string();
            assert!(e.contains("outside the frame"), "{e}");
        }
    }
}

/// The linear VOI function of PS3.3 C.11.2.1.2.1 (output in [0, 1]), or min–max.
pub fn apply_voi(voi: Voi, x: f64) -> f64 {
    match voi {
        Voi::Window { center, width } => {
            let (c, w) = (center - 0.5, width - 1.0);
            if x <= c - w / 2.0 {
                0.0
            } else if x > c + w / 2.0 {
                1.0
            } else {
                (x - c) / w + 0.5
            }
        }
        // Applied with its data in `load_object`; nothing to do with the numbers alone.
        Voi::Lut { .. } => x,
        Voi::MinMax { min, max } => {
            if max > min {
                ((x - min) / (max - min)).clamp(0.0, 1.0)
            } else {
                0.0
            }
        }
    }
}

/// Bilinear resize (pixel centres aligned, as PIL and torch's `align_corners=False`).
pub fn resize(img: &Gray, width: usize, height: usize) -> Gray {
    if img.width == width && img.height == height {
        return img.clone();
    }
    let (sx, sy) = (img.width as f32 / width as f32, img.height as f32 / height as f32);
    let mut data = Vec::with_capacity(width * height);
    for y in 0..height {
        let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (img.height - 1) as f32);
        let (y0, ty) = (fy.floor() as usize, fy - fy.floor());
        let y1 = (y0 + 1).min(img.height - 1);
        for x in 0..width {
            let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (img.width - 1) as f32);
            let (x0, tx) = (fx.floor() as usize, fx - fx.floor());
            let x1 = (x0 + 1).min(img.width - 1);
            let p = |yy: usize, xx: usize| img.data[yy * img.width + xx];
            let top = p(y0, x0) * (1.0 - tx) + p(y0, x1) * tx;
            let bottom = p(y1, x0) * (1.0 - tx) + p(y1, x1) * tx;
            data.push(top * (1.0 - ty) + bottom * ty);
        }
    }
    Gray { width, height, data }
}

/// Aspect-preserving resize into a `size`×`size` square: the longer side becomes `size`,
/// the shorter one is scaled by the same factor (rounded, at least 1 pixel), the image is
/// centred and the rest is black (0). An empty image gives an all-black square.
pub fn letterbox(img: &Gray, size: usize) -> Gray {
    let mut data = vec![0.0f32; size * size];
    if img.width == 0 || img.height == 0 || size == 0 {
        return Gray {
            width: size,
            height: size,
            data,
        };
    }
    let long = img.width.max(img.height);
    let fit = |side: usize| ((side * size + long / 2) / long).clamp(1, size);
    let (w, h) = (fit(img.width), fit(img.height));
    let inner = resize(img, w, h);
    let (x0, y0) = ((size - w) / 2, (size - h) / 2);
    for (y, row) in inner.data.chunks_exact(w).enumerate() {
        let at = (y0 + y) * size + x0;
        data[at..at + w].copy_from_slice(row);
    }
    Gray {
        width: size,
        height: size,
        data,
    }
}

/// An 8-bit greyscale PNG of `pixels` (row-major, `width`×`height`).
pub fn png_gray(pixels: &[u8], width: usize, height: usize) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(
        pixels.len() == width * height,
        "{} pixels for {width}×{height}",
        pixels.len()
    );
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, u32::try_from(width)?, u32::try_from(height)?);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header()?;
    w.write_image_data(pixels)?;
    w.finish()?;
    Ok(out)
}

/// An 8-bit (or 16-bit) PNG as grey values in [0, 1], resized to `size`×`size`
/// (bilinear, [`resize`]) when it has another size.
pub fn load_png(path: &Path, size: usize) -> anyhow::Result<Vec<f32>> {
    let img = load_gray(path)?;
    if img.width == size && img.height == size {
        return Ok(img.data);
    }
    Ok(resize(&img, size, size).data)
}

/// An 8-bit (or 16-bit) PNG as grey values in [0, 1] at its own size; colour is the mean
/// of R, G and B.
pub fn load_gray(path: &Path) -> anyhow::Result<Gray> {
    anyhow::ensure!(
        path.extension().and_then(|e| e.to_str()) == Some("png"),
        "{}: train reads PNG images; give convert `format: png`",
        path.display()
    );
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    png_to_gray(std::io::BufReader::new(file)).with_context(|| format!("{} is not a readable PNG", path.display()))
}

/// Most pixels a picture may have (a 16k × 16k radiograph): larger headers are refused
/// before anything is allocated for them.
pub const MAX_PICTURE_PIXELS: usize = 16384 * 16384;

/// A JPEG or PNG file's bytes (the formats public datasets ship: CheXpert's JPEGs) as
/// grey values in [0, 1]; colour is the mean of R, G and B.
pub fn picture_to_gray(bytes: &[u8]) -> anyhow::Result<Gray> {
    if bytes.starts_with(&[0x89, b'P', b'N', b'G']) {
        return png_to_gray(std::io::Cursor::new(bytes)).context("not a readable PNG");
    }
    anyhow::ensure!(bytes.starts_with(&[0xFF, 0xD8]), "neither a JPEG nor a PNG file");
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().context("not a readable JPEG")?;
    let info = decoder.info().context("not a readable JPEG")?;
    let (w, h) = (info.width as usize, info.height as usize);
    anyhow::ensure!(
        w * h <= MAX_PICTURE_PIXELS,
        "the JPEG says {w}×{h} pixels, more than pipe reads ({MAX_PICTURE_PIXELS})"
    );
    let buf = decoder.decode().context("not a readable JPEG")?;
    let data: Vec<f32> = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => buf.iter().map(|&v| v as f32 / 255.0).collect(),
        jpeg_decoder::PixelFormat::L16 => buf
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]) as f32 / 65535.0)
            .collect(),
        jpeg_decoder::PixelFormat::RGB24 => buf
            .chunks_exact(3)
            .map(|c| (c[0] as f32 + c[1] as f32 + c[2] as f32) / (3.0 * 255.0))
            .collect(),
        jpeg_decoder::PixelFormat::CMYK32 => anyhow::bail!("a CMYK JPEG, not a radiograph"),
    };
    anyhow::ensure!(
        data.len() == w * h,
        "the JPEG decoded to {} pixels, not {w}×{h}",
        data.len()
    );
    Ok(Gray {
        width: w,
        height: h,
        data,
    })
}

fn png_to_gray(input: impl std::io::BufRead + std::io::Seek) -> anyhow::Result<Gray> {
    let mut decoder = png::Decoder::new(input);
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info()?;
    let (w, h) = (reader.info().width as usize, reader.info().height as usize);
    anyhow::ensure!(
        w * h <= MAX_PICTURE_PIXELS,
        "the PNG says {w}×{h} pixels, more than pipe reads ({MAX_PICTURE_PIXELS})"
    );
    let mut buf = vec![0; reader.output_buffer_size().context("PNG too large")?];
    let info = reader.next_frame(&mut buf)?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let (bytes_per, max) = match info.bit_depth {
        png::BitDepth::Sixteen => (2, 65535.0),
        _ => (1, 255.0),
    };
    let sample = |i: usize| -> f32 {
        if bytes_per == 2 {
            u16::from_be_bytes([buf[2 * i], buf[2 * i + 1]]) as f32 / max
        } else {
            buf[i] as f32 / max
        }
    };
    let mut data = Vec::with_capacity(w * h);
    for p in 0..w * h {
        // Grey (+alpha): the first sample; colour: the mean of R, G, B.
        let v = if channels >= 3 {
            (sample(p * channels) + sample(p * channels + 1) + sample(p * channels + 2)) / 3.0
        } else {
            sample(p * channels)
        };
        data.push(v);
    }
    Ok(Gray {
        width: w,
        height: h,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voi_window_follows_the_standard() {
        let w = Voi::Window {
            center: 100.0,
            width: 11.0,
        };
        assert_eq!(apply_voi(w, 94.0), 0.0);
        assert_eq!(apply_voi(w, 106.0), 1.0);
        assert!((apply_voi(w, 99.5) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn resize_keeps_a_constant_image_and_averages_neighbours() {
        let img = Gray {
            width: 2,
            height: 1,
            data: vec![0.0, 1.0],
        };
        let r = resize(&img, 4, 1);
        assert_eq!(r.data, vec![0.0, 0.25, 0.75, 1.0]);
        let c = Gray {
            width: 3,
            height: 3,
            data: vec![0.5; 9],
        };
        assert!(resize(&c, 7, 5).data.iter().all(|&v| (v - 0.5).abs() < 1e-6));
    }

    #[test]
    fn letterbox_keeps_the_aspect_and_centres_on_black() {
        // 4 wide, 2 high, all white → into 8×8: a 8×4 white band in rows 2..6.
        let img = Gray {
            width: 4,
            height: 2,
            data: vec![1.0; 8],
        };
        let l = letterbox(&img, 8);
        assert_eq!((l.width, l.height), (8, 8));
        for y in 0..8 {
            for x in 0..8 {
                let want = if (2..6).contains(&y) { 1.0 } else { 0.0 };
                assert!((l.data[y * 8 + x] - want).abs() < 1e-6, "({x}, {y})");
            }
        }
        // Tall: 1 wide, 3 high into 6×6 → a 2×6 column at x 2..4.
        let tall = Gray {
            width: 1,
            height: 3,
            data: vec![0.5; 3],
        };
        let t = letterbox(&tall, 6);
        let cols: Vec<usize> = (0..6).filter(|&x| t.data[x] > 0.0).collect();
        assert_eq!(cols, [2, 3]);
        assert!((0..6).all(|y| (t.data[y * 6 + 2] - 0.5).abs() < 1e-6));
        // Same size and square: the pixels are unchanged.
        let sq = Gray {
            width: 2,
            height: 2,
            data: vec![0.1, 0.2, 0.3, 0.4],
        };
        assert_eq!(letterbox(&sq, 2).data, sq.data);
        // No side below 1 pixel; odd padding leaves the extra row at the bottom.
        let thin = Gray {
            width: 100,
            height: 1,
            data: vec![1.0; 100],
        };
        let th = letterbox(&thin, 5);
        assert_eq!(th.data.iter().filter(|&&v| v > 0.0).count(), 5);
        assert!((0..5).all(|x| (th.data[2 * 5 + x] - 1.0).abs() < 1e-6));
        let row = letterbox(
            &Gray {
                width: 4,
                height: 1,
                data: vec![1.0; 4],
            },
            4,
        );
        let lit: Vec<usize> = (0..4).filter(|&y| row.data[y * 4] > 0.0).collect();
        assert_eq!(lit, [1]);
        let empty = Gray {
            width: 0,
            height: 0,
            data: vec![],
        };
        assert!(letterbox(&empty, 3).data.iter().all(|&v| v == 0.0));
    }
}

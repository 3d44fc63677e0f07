//! DICOM pixel data → display values in [0, 1]: the one decode path of pipe (the model
//! filter now, image conversion next).
//!
//! Order of operations (DICOM PS3.3 C.11): stored values → modality LUT (RescaleSlope,
//! RescaleIntercept) → VOI LUT (the first WindowCenter/WindowWidth, linear function
//! of C.11.2.1.2; min–max of the image when there is no window) → MONOCHROME1
//! inverted so that bright is always dense. Codecs: uncompressed, RLE Lossless and
//! JPEG (baseline and lossless) through dicom-pixeldata's native decoders.

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
    Window { center: f64, width: f64 },
    MinMax { min: f64, max: f64 },
}

/// Decode the first frame of a DICOM file into display values.
pub fn load(path: &Path) -> anyhow::Result<(Gray, Voi)> {
    let obj = dicom_object::open_file(path).with_context(|| format!("cannot read {}", path.display()))?;
    load_object(obj)
}

/// [`load`] from the bytes of a whole file (with or without its 128-byte preamble), for
/// a caller that must decode exactly the bytes it hashed.
pub fn load_bytes(bytes: &[u8]) -> anyhow::Result<(Gray, Voi)> {
    use dicom_object::file::ReadPreamble;
    let preamble = if bytes.get(128..132) == Some(b"DICM") {
        ReadPreamble::Always
    } else {
        ReadPreamble::Never
    };
    let obj = dicom_object::OpenFileOptions::new()
        .read_preamble(preamble)
        .from_reader(bytes)
        .context("cannot read DICOM")?;
    load_object(obj)
}

fn load_object(obj: dicom_object::DefaultDicomObject) -> anyhow::Result<(Gray, Voi)> {
    let decoded = obj
        .decode_pixel_data()
        .map_err(|e| anyhow::anyhow!("cannot decode pixel data: {e}"))?;
    let (w, h) = (decoded.columns() as usize, decoded.rows() as usize);
    if decoded.samples_per_pixel() != 1 {
        bail!(
            "{} samples per pixel: only greyscale radiographs are supported",
            decoded.samples_per_pixel()
        );
    }
    let bytes = decoded
        .frame_data(0)
        .map_err(|e| anyhow::anyhow!("cannot read frame 0: {e}"))?;
    let signed = matches!(
        decoded.pixel_representation(),
        dicom_pixeldata::PixelRepresentation::Signed
    );
    let n = w * h;
    let stored: Vec<f64> = match decoded.bits_allocated() {
        8 => bytes
            .iter()
            .take(n)
            .map(|&b| if signed { b as i8 as f64 } else { b as f64 })
            .collect(),
        16 => bytes
            .chunks_exact(2)
            .take(n)
            .map(|c| {
                let v = u16::from_le_bytes([c[0], c[1]]);
                let bits = decoded.bits_stored() as u32;
                let v = if bits < 16 { v & ((1u32 << bits) - 1) as u16 } else { v };
                if signed && bits < 16 && v >> (bits - 1) & 1 == 1 {
                    (v as i32 - (1i32 << bits)) as f64
                } else if signed {
                    v as i16 as f64
                } else {
                    v as f64
                }
            })
            .collect(),
        b => bail!("BitsAllocated {b} is not supported"),
    };
    if stored.len() != n {
        bail!("pixel data has {} samples, expected {n} ({w}×{h})", stored.len());
    }
    let num = |tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_multi_float64().ok())
            .and_then(|v| v.first().copied())
    };
    let slope = num(tags::RESCALE_SLOPE).unwrap_or(1.0);
    let intercept = num(tags::RESCALE_INTERCEPT).unwrap_or(0.0);
    let values: Vec<f64> = stored.iter().map(|v| v * slope + intercept).collect();
    let voi = match (num(tags::WINDOW_CENTER), num(tags::WINDOW_WIDTH)) {
        (Some(center), Some(width)) if width >= 1.0 => Voi::Window { center, width },
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
            let y = apply_voi(voi, x);
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
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("{} is not a readable PNG", path.display()))?;
    let mut buf = vec![0; reader.output_buffer_size().context("PNG too large")?];
    let info = reader
        .next_frame(&mut buf)
        .with_context(|| format!("{} is not a readable PNG", path.display()))?;
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

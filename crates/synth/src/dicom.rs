//! Writing the synthetic images as DICOM files with dicom-rs.

use std::path::Path;

use anyhow::Context as _;
use dicom_core::value::{PixelFragmentSequence, Value};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use super::hospital::{Defect, Encoding, Image, Study};
use super::{image, j2k, jpeg_lossless, rle};
use pipe_core::rng::Rng;

const DX_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.1.1";
const CR_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.1";
const CT_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// Compression ratio of lossy JPEG 2000 files. The synthetic images carry sensor noise,
/// which compresses badly: at 4:1 the loss shows in the pixels (unlike lossless) yet the
/// image stays close (the test in this file bounds it).
const LOSSY_RATIO: f32 = 4.0;

fn put_str(obj: &mut InMemDicomObject, tag: dicom_core::Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

fn put_u16(obj: &mut InMemDicomObject, tag: dicom_core::Tag, value: u16) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
}

/// Stored pixel values for an image: the phantom scaled to `bits_stored`, inverted for
/// MONOCHROME1.
pub fn stored_pixels(rng: &mut Rng, img: &Image, size: usize, findings: [bool; 5]) -> Vec<u16> {
    let attenuation = image::chest(rng, size, findings);
    let max = ((1u32 << img.bits_stored) - 1) as f32;
    attenuation
        .iter()
        .map(|&a| {
            let v = (0.05 + 0.9 * a) * max;
            let v = if img.monochrome1 { max - v } else { v };
            v.round().clamp(0.0, max) as u16
        })
        .collect()
}

/// Write one image of a study to `path` (absolute).
pub fn write(path: &Path, study: &Study, img: &Image, k: usize, size: usize, seed: u64) -> anyhow::Result<()> {
    if img.defect == Some(Defect::NotDicom) {
        // A report PDF exported with the wrong extension: no preamble, no DICM.
        let text = format!(
            "%PDF-1.4\n% phieu ket qua {}\n1 0 obj << /Type /Catalog >> endobj\n",
            study.patient_id
        );
        std::fs::write(path, text)?;
        return Ok(());
    }
    let mut rng = Rng::for_item(seed, 7, study.index as u64 * 8 + k as u64);
    let sop_class = match img.modality {
        "CT" => CT_STORAGE,
        "CR" => CR_STORAGE,
        _ => DX_STORAGE,
    };
    let mut obj = InMemDicomObject::new_empty();
    put_str(&mut obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put_str(&mut obj, tags::SOP_CLASS_UID, VR::UI, sop_class);
    put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &img.sop_uid);
    if img.defect != Some(Defect::NoStudyDate) {
        put_str(
            &mut obj,
            tags::STUDY_DATE,
            VR::DA,
            &study.study_time.format("%Y%m%d").to_string(),
        );
    }
    put_str(
        &mut obj,
        tags::STUDY_TIME,
        VR::TM,
        &study.study_time.format("%H%M%S").to_string(),
    );
    put_str(
        &mut obj,
        tags::ACCESSION_NUMBER,
        VR::SH,
        &format!("XQ{:08}", study.index),
    );
    put_str(&mut obj, tags::MODALITY, VR::CS, img.modality);
    put_str(
        &mut obj,
        tags::INSTITUTION_NAME,
        VR::LO,
        "Bệnh viện Đa khoa tỉnh Phú Thọ (mô phỏng)",
    );
    put_str(&mut obj, tags::PATIENT_NAME, VR::PN, &study.patient_name);
    if img.defect != Some(Defect::NoPatientId) {
        put_str(&mut obj, tags::PATIENT_ID, VR::LO, &study.patient_id);
    }
    put_str(
        &mut obj,
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        &study.birth_date.format("%Y%m%d").to_string(),
    );
    put_str(&mut obj, tags::PATIENT_SEX, VR::CS, study.sex);
    put_str(&mut obj, tags::BODY_PART_EXAMINED, VR::CS, img.body_part);
    if !img.view.is_empty() {
        put_str(&mut obj, tags::VIEW_POSITION, VR::CS, img.view);
    }
    put_str(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, &study.study_uid);
    put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &study.series_uid);
    put_str(&mut obj, tags::STUDY_ID, VR::SH, &format!("{}", study.index));
    put_str(&mut obj, tags::SERIES_NUMBER, VR::IS, "1");
    put_str(&mut obj, tags::INSTANCE_NUMBER, VR::IS, &format!("{}", k + 1));
    put_u16(&mut obj, tags::SAMPLES_PER_PIXEL, 1);
    put_str(
        &mut obj,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        if img.monochrome1 { "MONOCHROME1" } else { "MONOCHROME2" },
    );
    put_u16(&mut obj, tags::ROWS, size as u16);
    put_u16(&mut obj, tags::COLUMNS, size as u16);
    put_u16(&mut obj, tags::BITS_ALLOCATED, 16);
    put_u16(&mut obj, tags::BITS_STORED, img.bits_stored);
    put_u16(&mut obj, tags::HIGH_BIT, img.bits_stored - 1);
    put_u16(&mut obj, tags::PIXEL_REPRESENTATION, 0);
    let (slope, intercept) = img.rescale.unwrap_or((1.0, 0.0));
    if img.rescale.is_some() {
        put_str(&mut obj, tags::RESCALE_INTERCEPT, VR::DS, &format!("{intercept}"));
        put_str(&mut obj, tags::RESCALE_SLOPE, VR::DS, &format!("{slope}"));
        put_str(&mut obj, tags::RESCALE_TYPE, VR::LO, "US");
    }
    let max = ((1u32 << img.bits_stored) - 1) as f64;
    if img.window {
        // A window over the body's range, in output (rescaled) units.
        let (lo, hi) = (0.15 * max * slope + intercept, 0.95 * max * slope + intercept);
        put_str(
            &mut obj,
            tags::WINDOW_CENTER,
            VR::DS,
            &format!("{}", ((lo + hi) / 2.0).round()),
        );
        put_str(&mut obj, tags::WINDOW_WIDTH, VR::DS, &format!("{}", (hi - lo).round()));
    }
    let pixels = stored_pixels(&mut rng, img, size, study.findings);
    let pixel_element = match img.encoding {
        // JPEG-LS: written native, then transcoded below.
        Encoding::ExplicitLittle | Encoding::ImplicitLittle | Encoding::JpegLs => {
            DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into()))
        }
        Encoding::Rle => {
            let frame = rle::encode_rle_frame(&pixels, size, size);
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                Value::PixelSequence(PixelFragmentSequence::new(vec![], vec![frame])),
            )
        }
        Encoding::JpegLossless => {
            let frame = jpeg_lossless::encode_jpeg_lossless(&pixels, size, size, img.bits_stored as u8);
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                Value::PixelSequence(PixelFragmentSequence::new(vec![], vec![frame])),
            )
        }
        Encoding::J2kLossless | Encoding::J2kLossy => {
            let quality = match img.encoding {
                Encoding::J2kLossy => j2k::Quality::Ratio(LOSSY_RATIO),
                _ => j2k::Quality::Lossless,
            };
            let mut frame = j2k::encode(&pixels, size, size, img.bits_stored as u8, quality)
                .with_context(|| format!("JPEG 2000 encoding {}", path.display()))?;
            // Fragments have even lengths (PS3.5 A.4); decoders stop at EOC.
            if frame.len() % 2 == 1 {
                frame.push(0);
            }
            if img.encoding == Encoding::J2kLossy {
                // PS3.3 C.7.6.1.1.5: a lossy image says so, how much and how.
                put_str(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "01");
                put_str(
                    &mut obj,
                    tags::LOSSY_IMAGE_COMPRESSION_RATIO,
                    VR::DS,
                    &format!("{LOSSY_RATIO}"),
                );
                put_str(&mut obj, tags::LOSSY_IMAGE_COMPRESSION_METHOD, VR::CS, "ISO_15444_1");
            }
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                Value::PixelSequence(PixelFragmentSequence::new(vec![], vec![frame])),
            )
        }
    };
    obj.put(pixel_element);
    let first_syntax = match img.encoding {
        Encoding::JpegLs => Encoding::ExplicitLittle.uid(),
        e => e.uid(),
    };
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(first_syntax)
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(img.sop_uid.as_str())
        .implementation_class_uid("2.25.270310893049141052066372585813125043953")
        .implementation_version_name("PIPE_SYNTH_1");
    let mut file = obj.with_meta(meta).context("building the file meta group")?;
    if img.encoding == Encoding::JpegLs {
        use dicom_pixeldata::Transcode;
        file.transcode(&dicom_transfer_syntax_registry::entries::JPEG_LS_LOSSLESS_IMAGE_COMPRESSION.erased())
            .with_context(|| format!("JPEG-LS encoding {}", path.display()))?;
    }
    let mut bytes = Vec::new();
    file.write_all(&mut bytes)
        .with_context(|| format!("encoding {}", path.display()))?;
    if img.defect == Some(Defect::Truncated) {
        // Cut inside the pixel data, as an interrupted transfer leaves it.
        let keep = bytes.len() * (55 + rng.range(0, 30) as usize) / 100;
        bytes.truncate(keep);
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hospital::study;

    /// The same study written with every encoding decodes (through dicom-pixeldata) to
    /// the same display image.
    #[test]
    fn every_encoding_decodes_to_the_same_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let s = study(5, 3);
        let mut img = s.images[0].clone();
        img.defect = None;
        let mut decoded = Vec::new();
        for enc in [
            Encoding::ExplicitLittle,
            Encoding::ImplicitLittle,
            Encoding::Rle,
            Encoding::JpegLossless,
            Encoding::JpegLs,
            Encoding::J2kLossless,
            Encoding::J2kLossy,
        ] {
            for bits in [12u16, 16] {
                img.encoding = enc;
                img.bits_stored = bits;
                let path = dir.path().join(format!("{enc:?}-{bits}.dcm"));
                write(&path, &s, &img, 0, 48, 5).unwrap();
                let (g, _) = pipe_cxr::pixels::load(&path).unwrap_or_else(|e| panic!("{enc:?}/{bits}: {e:#}"));
                assert_eq!((g.width, g.height), (48, 48));
                decoded.push(((enc, bits), g.data));
            }
        }
        for ((enc, bits), data) in &decoded {
            let reference = &decoded.iter().find(|((_, b), _)| b == bits).unwrap().1;
            if *enc == Encoding::J2kLossy {
                // Lossy at 4:1: close to the original on average, not equal.
                let mean = data.iter().zip(reference).map(|(a, b)| (a - b).abs()).sum::<f32>() / data.len() as f32;
                assert!(
                    mean > 0.0 && mean < 0.02,
                    "lossy JPEG 2000 at {bits} bits: mean difference {mean}"
                );
            } else {
                assert_eq!(data, reference, "{enc:?} at {bits} bits decodes differently");
            }
        }
    }
}

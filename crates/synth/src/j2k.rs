//! JPEG 2000 encoding of one greyscale frame with OpenJPEG (the library pipe decodes
//! with, built by `openjpeg-sys`): dicom-rs has no JPEG 2000 encoder, and a PACS export
//! without JPEG 2000 would not test what archives mostly hold.
//!
//! The output is a raw J2K codestream, as PS3.5 A.4.4 wants in each fragment (not a JP2
//! file). Lossless is the reversible 5/3 wavelet (1.2.840.10008.1.2.4.90); lossy the
//! irreversible 9/7 at a compression ratio (…4.91), as a modality's lossy setting.

use openjpeg_sys as opj;
use std::ffi::c_void;

/// How a frame is compressed.
#[derive(Clone, Copy, Debug)]
pub enum Quality {
    Lossless,
    /// Irreversible wavelet at this compression ratio (e.g. 10.0 for 10:1).
    Ratio(f32),
}

/// The codestream being written: OpenJPEG writes, skips forward and seeks back.
struct Sink {
    bytes: Vec<u8>,
    at: usize,
}

unsafe extern "C" fn write(buf: *mut c_void, n: usize, user: *mut c_void) -> usize {
    // SAFETY: `user` is the `Sink` of `encode`, alive for the stream's life; `buf` holds
    // `n` bytes (OpenJPEG's contract).
    let sink = unsafe { &mut *(user as *mut Sink) };
    let data = unsafe { std::slice::from_raw_parts(buf as *const u8, n) };
    let end = sink.at + n;
    if sink.bytes.len() < end {
        sink.bytes.resize(end, 0);
    }
    sink.bytes[sink.at..end].copy_from_slice(data);
    sink.at = end;
    n
}

unsafe extern "C" fn skip(n: i64, user: *mut c_void) -> i64 {
    // SAFETY: as in `write`.
    let sink = unsafe { &mut *(user as *mut Sink) };
    match (sink.at as i64).checked_add(n) {
        Some(to) if to >= 0 => {
            sink.at = to as usize;
            n
        }
        _ => -1,
    }
}

unsafe extern "C" fn seek(to: i64, user: *mut c_void) -> i32 {
    // SAFETY: as in `write`.
    let sink = unsafe { &mut *(user as *mut Sink) };
    if to < 0 {
        return 0;
    }
    sink.at = to as usize;
    1
}

/// Encode `pixels` (row-major, `width` × `height`, unsigned, `bits` stored) as one J2K
/// codestream.
pub fn encode(pixels: &[u16], width: usize, height: usize, bits: u8, quality: Quality) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(
        pixels.len() == width * height,
        "{} pixels for {width}x{height}",
        pixels.len()
    );
    let (w, h) = (width as u32, height as u32);
    let mut comp = opj::opj_image_cmptparm_t {
        dx: 1,
        dy: 1,
        w,
        h,
        x0: 0,
        y0: 0,
        prec: bits as u32,
        bpp: bits as u32,
        sgnd: 0,
    };
    // SAFETY: each pointer below is checked for null, used only while alive, and freed
    // exactly once on every path (the guards' drops).
    unsafe {
        let image = Guard(
            opj::opj_image_create(1, &mut comp, opj::COLOR_SPACE::OPJ_CLRSPC_GRAY),
            opj::opj_image_destroy,
        );
        anyhow::ensure!(!image.0.is_null(), "OpenJPEG could not create a {width}x{height} image");
        let img = &mut *image.0;
        (img.x0, img.y0, img.x1, img.y1) = (0, 0, w, h);
        let data = std::slice::from_raw_parts_mut((*img.comps).data, pixels.len());
        for (d, &p) in data.iter_mut().zip(pixels) {
            *d = p as i32;
        }

        let mut params: opj::opj_cparameters_t = std::mem::zeroed();
        opj::opj_set_default_encoder_parameters(&mut params);
        params.tcp_numlayers = 1;
        params.cp_disto_alloc = 1;
        match quality {
            Quality::Lossless => {
                params.irreversible = 0;
                params.tcp_rates[0] = 0.0; // 0: keep everything
            }
            Quality::Ratio(r) => {
                params.irreversible = 1;
                params.tcp_rates[0] = r;
            }
        }
        // Each resolution level halves the image: no more levels than the size allows.
        let smallest = width.min(height).max(1);
        params.numresolution = params.numresolution.min(smallest.ilog2() as i32 + 1).max(1);

        let codec = Guard(
            opj::opj_create_compress(opj::CODEC_FORMAT::OPJ_CODEC_J2K),
            opj::opj_destroy_codec,
        );
        anyhow::ensure!(!codec.0.is_null(), "OpenJPEG could not create an encoder");
        anyhow::ensure!(
            opj::opj_setup_encoder(codec.0, &mut params, image.0) != 0,
            "OpenJPEG refused the encoder parameters"
        );
        let stream = Guard(opj::opj_stream_create(1 << 16, 0), opj::opj_stream_destroy);
        anyhow::ensure!(!stream.0.is_null(), "OpenJPEG could not create a stream");
        let mut sink = Sink {
            bytes: Vec::new(),
            at: 0,
        };
        opj::opj_stream_set_user_data(stream.0, &mut sink as *mut Sink as *mut c_void, None);
        opj::opj_stream_set_write_function(stream.0, Some(write));
        opj::opj_stream_set_skip_function(stream.0, Some(skip));
        opj::opj_stream_set_seek_function(stream.0, Some(seek));
        let ok = opj::opj_start_compress(codec.0, image.0, stream.0) != 0
            && opj::opj_encode(codec.0, stream.0) != 0
            && opj::opj_end_compress(codec.0, stream.0) != 0;
        anyhow::ensure!(ok, "OpenJPEG could not encode the {width}x{height} image");
        // The stream flushes into the sink when destroyed: drop it before taking the bytes.
        drop(stream);
        Ok(sink.bytes)
    }
}

/// Frees an OpenJPEG object when dropped.
struct Guard<T>(*mut T, unsafe extern "C" fn(*mut T));

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by the matching OpenJPEG constructor, freed only here.
            unsafe { (self.1)(self.0) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A codestream OpenJPEG writes starts with SOC and SIZ, and the lossless one decodes
    /// (through dicom-pixeldata, as convert decodes) to exactly the input: tested with
    /// the DICOM files in `dicom.rs`; here, the markers and the size of the two kinds.
    #[test]
    fn lossless_and_lossy_codestreams() {
        let (w, h) = (40, 24);
        let pixels: Vec<u16> = (0..w * h).map(|i| ((i * 37) % 4096) as u16).collect();
        let lossless = encode(&pixels, w, h, 12, Quality::Lossless).unwrap();
        let lossy = encode(&pixels, w, h, 12, Quality::Ratio(20.0)).unwrap();
        for c in [&lossless, &lossy] {
            assert_eq!(&c[..4], &[0xFF, 0x4F, 0xFF, 0x51], "SOC, SIZ");
            assert_eq!(&c[c.len() - 2..], &[0xFF, 0xD9], "EOC");
        }
        assert!(
            lossy.len() < lossless.len() / 3,
            "{} vs {}",
            lossy.len(),
            lossless.len()
        );
        assert!(encode(&pixels, w, h + 1, 12, Quality::Lossless).is_err());
    }
}

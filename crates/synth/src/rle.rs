//! DICOM RLE Lossless (PS3.5 Annex G, transfer syntax 1.2.840.10008.1.2.5) for one
//! frame of 16-bit, single-sample pixels.
//!
//! The frame is split into two byte planes (most significant first, as Annex G.2
//! requires), each PackBits-encoded row by row into its own segment, behind the 64-byte
//! RLE header that gives the segment count and offsets.

/// Size of the RLE header: a segment count and 15 segment offsets, all `u32` LE.
const HEADER_LEN: usize = 64;
/// Most segments a header can describe.
const MAX_SEGMENTS: usize = 15;
/// Segments for one 16-bit sample per pixel: the high byte plane, then the low one.
const SEGMENTS: usize = 2;
/// Longest literal or replicate run a single PackBits header byte can describe.
const MAX_RUN: usize = 128;
/// Shortest run worth a replicate header: a run of two costs as much as a literal.
const MIN_REPLICATE: usize = 3;

/// Encodes one frame (`rows * cols` pixels, row-major) as an RLE Lossless fragment.
///
/// # Panics
/// If `pixels.len() != rows * cols`.
pub fn encode_rle_frame(pixels: &[u16], rows: usize, cols: usize) -> Vec<u8> {
    assert_eq!(pixels.len(), rows * cols, "pixel count must be rows * cols");

    let high: Vec<u8> = pixels.iter().map(|&p| (p >> 8) as u8).collect();
    let low: Vec<u8> = pixels.iter().map(|&p| p as u8).collect();
    let segments = [encode_segment(&high, cols), encode_segment(&low, cols)];

    let mut out = Vec::with_capacity(HEADER_LEN + segments.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(&(SEGMENTS as u32).to_le_bytes());
    let mut offset = HEADER_LEN;
    for slot in 0..MAX_SEGMENTS {
        let value = match segments.get(slot) {
            Some(segment) => {
                let this = offset;
                offset += segment.len();
                this
            }
            None => 0,
        };
        let value = u32::try_from(value).expect("RLE frame larger than 4 GiB");
        out.extend_from_slice(&value.to_le_bytes());
    }
    for segment in &segments {
        out.extend_from_slice(segment);
    }
    out
}

/// PackBits-encodes one byte plane row by row (Annex G.3.1 forbids runs that cross a
/// row) and pads the segment to even length with a zero byte (Annex G.5).
fn encode_segment(plane: &[u8], cols: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(plane.len() + plane.len() / MAX_RUN + 2);
    if cols > 0 {
        for row in plane.chunks(cols) {
            pack_bits_row(row, &mut out);
        }
    }
    if out.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// Appends the PackBits encoding of `row`: runs of [`MIN_REPLICATE`] or more equal bytes
/// become replicate runs, everything between them literal runs.
fn pack_bits_row(row: &[u8], out: &mut Vec<u8>) {
    let mut literal_start = 0;
    let mut i = 0;
    while i < row.len() {
        let byte = row[i];
        let run = row[i..].iter().take(MAX_RUN).take_while(|&&b| b == byte).count();
        if run >= MIN_REPLICATE {
            push_literals(&row[literal_start..i], out);
            // Header n in -1..=-127 means "repeat the next byte 1 - n times".
            out.push((1 - run as i16) as u8);
            out.push(byte);
            literal_start = i + run;
        }
        i += run;
    }
    push_literals(&row[literal_start..], out);
}

/// Appends `bytes` as literal runs; header n in 0..=127 means "copy the next n + 1 bytes".
fn push_literals(bytes: &[u8], out: &mut Vec<u8>) {
    for chunk in bytes.chunks(MAX_RUN) {
        out.push((chunk.len() - 1) as u8);
        out.extend_from_slice(chunk);
    }
}

/// Decodes a fragment written by [`encode_rle_frame`] (two segments, 16-bit samples).
/// Only the tests need it; it rejects anything malformed rather than guessing.
pub fn decode_rle_frame(data: &[u8], rows: usize, cols: usize) -> Result<Vec<u16>, String> {
    if data.len() < HEADER_LEN {
        return Err(format!("RLE data is {} bytes, shorter than its header", data.len()));
    }
    let word = |i: usize| u32::from_le_bytes(data[4 * i..4 * i + 4].try_into().unwrap()) as usize;
    let count = word(0);
    if count != SEGMENTS {
        return Err(format!("expected {SEGMENTS} RLE segments, header says {count}"));
    }
    let offsets: Vec<usize> = (1..=SEGMENTS).map(word).collect();
    let ends: Vec<usize> = offsets[1..]
        .iter()
        .copied()
        .chain(std::iter::once(data.len()))
        .collect();

    let len = rows * cols;
    let mut planes = Vec::with_capacity(SEGMENTS);
    for (index, (&start, &end)) in offsets.iter().zip(&ends).enumerate() {
        if start < HEADER_LEN || start > end || end > data.len() {
            return Err(format!("RLE segment {index} has bad bounds {start}..{end}"));
        }
        let plane = unpack_bits(&data[start..end], len).map_err(|e| format!("RLE segment {index}: {e}"))?;
        planes.push(plane);
    }
    Ok(planes[0]
        .iter()
        .zip(&planes[1])
        .map(|(&high, &low)| u16::from_be_bytes([high, low]))
        .collect())
}

/// Decodes one PackBits segment into exactly `len` bytes; what follows them (the even
/// padding) is ignored.
fn unpack_bits(segment: &[u8], len: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(len);
    let mut pos = 0;
    while out.len() < len {
        let Some(&header) = segment.get(pos) else {
            return Err(format!("ran out of data after {} of {len} bytes", out.len()));
        };
        pos += 1;
        match header as i8 {
            n @ 0..=127 => {
                let count = n as usize + 1;
                let bytes = segment
                    .get(pos..pos + count)
                    .ok_or("literal run past the end of the segment")?;
                out.extend_from_slice(bytes);
                pos += count;
            }
            -128 => {}
            n => {
                let count = (1 - n as isize) as usize;
                let &byte = segment.get(pos).ok_or("replicate run past the end of the segment")?;
                out.extend(std::iter::repeat_n(byte, count));
                pos += 1;
            }
        }
        if out.len() > len {
            return Err(format!("decoded {} bytes, expected {len}", out.len()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Noise with runs mixed in, so both literal and replicate runs (including ones over
    /// 128 bytes) get exercised.
    fn random_image(rows: usize, cols: usize, seed: u64) -> Vec<u16> {
        let mut rng = pipe_core::rng::Rng::for_item(seed, 0, 0);
        let mut pixels = Vec::with_capacity(rows * cols);
        while pixels.len() < rows * cols {
            let r = rng.next_u64();
            let value = (r >> 16) as u16;
            let repeat = match r % 4 {
                0 => 1 + (r >> 40) as usize % 300,
                _ => 1,
            };
            pixels.extend(std::iter::repeat_n(value, repeat));
        }
        pixels.truncate(rows * cols);
        pixels
    }

    fn round_trip(pixels: &[u16], rows: usize, cols: usize) -> Vec<u8> {
        let encoded = encode_rle_frame(pixels, rows, cols);
        let decoded = decode_rle_frame(&encoded, rows, cols).unwrap();
        assert_eq!(decoded, pixels, "{rows}x{cols} round trip");
        encoded
    }

    #[test]
    fn round_trips_random_image() {
        for (rows, cols, seed) in [(64, 64, 1), (37, 301, 2), (5, 1000, 3), (200, 3, 4)] {
            round_trip(&random_image(rows, cols, seed), rows, cols);
        }
    }

    #[test]
    fn round_trips_constant_image_compactly() {
        let (rows, cols) = (100, 300);
        let pixels = vec![0x1234u16; rows * cols];
        let encoded = round_trip(&pixels, rows, cols);
        // Per row and plane: 300 bytes = replicate runs of 128 + 128 + 44, 2 bytes each.
        assert_eq!(encoded.len(), HEADER_LEN + 2 * rows * 6);
    }

    #[test]
    fn round_trips_tiny_and_odd_widths() {
        round_trip(&[0xBEEF], 1, 1);
        round_trip(&[0], 1, 1);
        for cols in [1, 2, 3, 5, 127, 129, 257] {
            for rows in [1, 2, 3] {
                round_trip(&random_image(rows, cols, cols as u64 * 7 + rows as u64), rows, cols);
            }
        }
    }

    #[test]
    fn runs_do_not_cross_rows() {
        // Two rows of 2 equal pixels: 4 equal bytes per plane, but each row stands alone,
        // so each row is one 2-byte literal (header + 2 bytes), never one replicate of 4.
        let encoded = encode_rle_frame(&[7, 7, 7, 7], 2, 2);
        let first = &encoded[HEADER_LEN..];
        assert_eq!(&first[..6], &[1, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn header_offsets_are_right() {
        let (rows, cols) = (3, 5);
        let pixels = random_image(rows, cols, 99);
        let encoded = encode_rle_frame(&pixels, rows, cols);
        let word = |i: usize| u32::from_le_bytes(encoded[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!(word(0), 2);
        assert_eq!(word(1), HEADER_LEN as u32);

        let high: Vec<u8> = pixels.iter().map(|p| (p >> 8) as u8).collect();
        let low: Vec<u8> = pixels.iter().map(|&p| p as u8).collect();
        let high_segment = encode_segment(&high, cols);
        let low_segment = encode_segment(&low, cols);
        assert_eq!(word(2) as usize, HEADER_LEN + high_segment.len());
        for unused in 3..=MAX_SEGMENTS {
            assert_eq!(word(unused), 0, "offset {unused} should be unused");
        }
        assert_eq!(encoded.len(), HEADER_LEN + high_segment.len() + low_segment.len());
        assert_eq!(&encoded[word(1) as usize..word(2) as usize], &high_segment[..]);
        assert_eq!(&encoded[word(2) as usize..], &low_segment[..]);
    }

    #[test]
    fn segments_have_even_length() {
        // 1x1: two 2-byte literals, no padding. 1x3: the high plane is a 2-byte
        // replicate, the low plane a 4-byte literal. 1x2 constant: 3-byte literals,
        // each padded to 4.
        for (pixels, cols) in [(vec![1u16], 1), (vec![1, 2, 3], 3), (vec![5, 5], 2)] {
            let encoded = encode_rle_frame(&pixels, 1, cols);
            let word = |i: usize| u32::from_le_bytes(encoded[4 * i..4 * i + 4].try_into().unwrap());
            assert_eq!(word(2) % 2, 0);
            assert_eq!(encoded.len() % 2, 0);
            assert_eq!(decode_rle_frame(&encoded, 1, cols).unwrap(), pixels);
        }
    }

    #[test]
    fn decoder_rejects_truncated_data() {
        let pixels = random_image(8, 8, 5);
        let encoded = encode_rle_frame(&pixels, 8, 8);
        assert!(decode_rle_frame(&encoded[..encoded.len() - 4], 8, 8).is_err());
        assert!(decode_rle_frame(&encoded[..10], 8, 8).is_err());
    }
}

//! JPEG Lossless, Non-Hierarchical, First-Order Prediction (ITU T.81 Process 14,
//! Selection Value 1; DICOM transfer syntax 1.2.840.10008.1.2.4.70) for one
//! single-component frame.
//!
//! Each sample is predicted from its left neighbour (T.81 H.1.2.1 rules at the image
//! edges), and the differences are Huffman coded with one table built from this image's
//! own difference-category frequencies (T.81 Annex K.2), so no table has to be shipped or
//! tuned.

/// Difference categories SSSS 0..=16 (T.81 Table H.2).
const CATEGORIES: usize = 17;
/// Longest Huffman code JPEG allows.
const MAX_CODE_LEN: usize = 16;

const SOI: u8 = 0xD8;
const SOF3: u8 = 0xC3;
const DHT: u8 = 0xC4;
const SOS: u8 = 0xDA;
const EOI: u8 = 0xD9;

/// Encodes `rows * cols` samples (row-major) of `precision` bits as a complete JPEG
/// Lossless stream, SOI to EOI.
///
/// # Panics
/// If `pixels.len() != rows * cols`, if `rows` or `cols` is not in 1..=65535 (SOF3
/// stores them as `u16`, and 0 would mean "see DNL"), if `precision` is not in 2..=16,
/// or if a sample does not fit in `precision` bits.
pub fn encode_jpeg_lossless(pixels: &[u16], rows: usize, cols: usize, precision: u8) -> Vec<u8> {
    assert_eq!(pixels.len(), rows * cols, "pixel count must be rows * cols");
    let height = u16::try_from(rows).ok().filter(|&h| h > 0);
    let width = u16::try_from(cols).ok().filter(|&w| w > 0);
    let (Some(height), Some(width)) = (height, width) else {
        panic!("JPEG dimensions must be 1..=65535, got {rows}x{cols}");
    };
    assert!(
        (2..=16).contains(&precision),
        "JPEG lossless precision must be 2..=16, got {precision}"
    );
    if precision < 16 {
        let limit = 1u32 << precision;
        assert!(
            pixels.iter().all(|&p| u32::from(p) < limit),
            "sample does not fit in {precision} bits"
        );
    }

    let mut frequencies = [0u64; CATEGORIES];
    for diff in differences(pixels, cols, precision) {
        frequencies[category(diff) as usize] += 1;
    }
    let (bits, values) = build_huffman_table(&frequencies);
    let codes = canonical_codes(&bits, &values);

    let mut out = Vec::with_capacity(pixels.len() + 64);
    out.extend_from_slice(&[0xFF, SOI]);

    // SOF3: Lf, P, Y, X, Nf = 1, then C1 = 1, H1/V1 = 1/1, Tq1 = 0 (unused in lossless).
    out.extend_from_slice(&[0xFF, SOF3, 0, 11, precision]);
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&[1, 1, 0x11, 0]);

    // DHT: Lh, Tc/Th = DC-class table 0, the 16 code-length counts, then the symbols.
    let dht_len = u16::try_from(2 + 1 + MAX_CODE_LEN + values.len()).unwrap();
    out.extend_from_slice(&[0xFF, DHT]);
    out.extend_from_slice(&dht_len.to_be_bytes());
    out.push(0x00);
    out.extend_from_slice(&bits);
    out.extend_from_slice(&values);

    // SOS: Ls, Ns = 1, Cs1 = 1 with table 0, Ss = predictor 1, Se = 0, Ah/Al = 0.
    out.extend_from_slice(&[0xFF, SOS, 0, 8, 1, 1, 0x00, 1, 0, 0x00]);

    let mut writer = BitWriter::new(out);
    for diff in differences(pixels, cols, precision) {
        let ssss = category(diff);
        let (code, len) = codes[ssss as usize];
        writer.put(u32::from(code), len);
        // Categories 1..=15 carry SSSS extra bits: the difference itself if positive,
        // else difference - 1, truncated (T.81 F.1.2.1.1). Category 16 carries none.
        if (1..=15).contains(&ssss) {
            let signed = diff as i16;
            let extra = if signed < 0 { signed.wrapping_sub(1) } else { signed } as u16;
            writer.put(u32::from(extra) & ((1 << ssss) - 1), ssss);
        }
    }
    let mut out = writer.finish();
    // DICOM fragments must have even length (PS3.5 A.4), and dicom-object writes an odd
    // one with an odd item length plus a pad byte, which breaks the item structure. A
    // 0xFF fill byte before EOI (T.81 B.1.1.2), as A.4 Note 1 suggests, evens it.
    if out.len() % 2 == 1 {
        out.push(0xFF);
    }
    out.extend_from_slice(&[0xFF, EOI]);
    out
}

/// The differences to code, in scan order, modulo 2^16. The prediction is the left
/// neighbour (Selection Value 1) except where T.81 H.1.2.1 says otherwise: 2^(P-1) for
/// the first sample, the sample above for the first sample of every later row.
fn differences(pixels: &[u16], cols: usize, precision: u8) -> impl Iterator<Item = u16> + '_ {
    let first = 1u16 << (precision - 1);
    pixels.iter().enumerate().map(move |(i, &sample)| {
        let prediction = if i == 0 {
            first
        } else if i % cols == 0 {
            pixels[i - cols]
        } else {
            pixels[i - 1]
        };
        sample.wrapping_sub(prediction)
    })
}

/// SSSS for a difference modulo 2^16 read as signed (T.81 Table H.2); 0x8000 stands for
/// +32768 and is the only member of category 16.
fn category(diff: u16) -> u8 {
    (16 - (diff as i16).unsigned_abs().leading_zeros()) as u8
}

/// An optimal Huffman table for `frequencies`, limited to 16-bit codes, as the DHT
/// fields BITS (codes per length 1..=16) and HUFFVAL (symbols by increasing code
/// length), following T.81 Annex K.2 (Figures K.1 to K.4).
///
/// K.2 adds a reserved symbol with frequency 1 and drops its code afterwards, so no code
/// is all 1 bits: those could be confused with the 1-bit padding before a marker.
fn build_huffman_table(frequencies: &[u64; CATEGORIES]) -> ([u8; MAX_CODE_LEN], Vec<u8>) {
    const SYMBOLS: usize = CATEGORIES + 1;
    const RESERVED: usize = CATEGORIES;

    let mut freq = [0u64; SYMBOLS];
    freq[..CATEGORIES].copy_from_slice(frequencies);
    freq[RESERVED] = 1;
    let mut code_size = [0usize; SYMBOLS];
    let mut others: [Option<usize>; SYMBOLS] = [None; SYMBOLS];

    // Figure K.1: merge the two least frequent trees until one remains, tracking each
    // symbol's depth. Ties go to the highest symbol, which keeps RESERVED deepest.
    let least = |freq: &[u64; SYMBOLS], skip: Option<usize>| {
        let mut best: Option<usize> = None;
        for (symbol, &f) in freq.iter().enumerate() {
            if f > 0 && Some(symbol) != skip && best.is_none_or(|b| f <= freq[b]) {
                best = Some(symbol);
            }
        }
        best
    };
    while let Some(mut v1) = least(&freq, None) {
        let Some(mut v2) = least(&freq, Some(v1)) else {
            break;
        };
        freq[v1] += freq[v2];
        freq[v2] = 0;
        code_size[v1] += 1;
        while let Some(next) = others[v1] {
            v1 = next;
            code_size[v1] += 1;
        }
        others[v1] = Some(v2);
        code_size[v2] += 1;
        while let Some(next) = others[v2] {
            v2 = next;
            code_size[v2] += 1;
        }
    }

    // Figure K.2: count codes per length (a tree of SYMBOLS leaves is at most
    // SYMBOLS - 1 deep).
    let mut bits = [0usize; SYMBOLS];
    for &size in &code_size {
        if size > 0 {
            bits[size] += 1;
        }
    }

    // Figure K.3: move leaves up until no code is longer than 16 bits, then drop the
    // reserved symbol's code, which is one of the longest.
    let mut i = SYMBOLS - 1;
    while i > MAX_CODE_LEN {
        if bits[i] > 0 {
            let mut j = i - 2;
            while bits[j] == 0 {
                j -= 1;
            }
            bits[i] -= 2;
            bits[i - 1] += 1;
            bits[j + 1] += 2;
            bits[j] -= 1;
        } else {
            i -= 1;
        }
    }
    while bits[i] == 0 {
        i -= 1;
    }
    bits[i] -= 1;

    // Figure K.4: symbols ordered by their unlimited code length, then by value.
    let mut values: Vec<u8> = (0..CATEGORIES)
        .filter(|&symbol| code_size[symbol] > 0)
        .map(|symbol| symbol as u8)
        .collect();
    values.sort_by_key(|&symbol| code_size[symbol as usize]);

    let mut counts = [0u8; MAX_CODE_LEN];
    for (len, count) in counts.iter_mut().enumerate() {
        *count = u8::try_from(bits[len + 1]).unwrap();
    }
    (counts, values)
}

/// (code, length) per category from BITS and HUFFVAL (T.81 Annex C); unused
/// categories get length 0.
fn canonical_codes(bits: &[u8; MAX_CODE_LEN], values: &[u8]) -> [(u16, u8); CATEGORIES] {
    let mut codes = [(0u16, 0u8); CATEGORIES];
    let mut code = 0u32;
    let mut symbols = values.iter();
    for (len, &count) in (1u8..).zip(bits) {
        for _ in 0..count {
            let &symbol = symbols.next().expect("BITS counts more codes than HUFFVAL");
            codes[symbol as usize] = (code as u16, len);
            code += 1;
        }
        code <<= 1;
    }
    codes
}

/// Packs variable-length codes MSB first into bytes, stuffing a 0x00 after every 0xFF so
/// entropy-coded data never looks like a marker (T.81 F.1.2.3).
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    len: u8,
}

impl BitWriter {
    fn new(out: Vec<u8>) -> Self {
        Self { out, acc: 0, len: 0 }
    }

    /// Appends the low `len` (at most 16) bits of `value`.
    fn put(&mut self, value: u32, len: u8) {
        debug_assert!(len <= 16 && u64::from(value) < (1u64 << len));
        self.acc = (self.acc << len) | u64::from(value);
        self.len += len;
        while self.len >= 8 {
            self.len -= 8;
            let byte = (self.acc >> self.len) as u8;
            self.out.push(byte);
            if byte == 0xFF {
                self.out.push(0x00);
            }
        }
        self.acc &= (1 << self.len) - 1;
    }

    /// Pads the last byte with 1 bits (T.81 F.1.2.3) and returns the buffer.
    fn finish(mut self) -> Vec<u8> {
        if self.len > 0 {
            let pad = 8 - self.len;
            self.put((1 << pad) - 1, pad);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth gradient plus noise, like a radiograph: mostly small differences.
    fn smooth_image(rows: usize, cols: usize, precision: u8, seed: u64) -> Vec<u16> {
        let mut rng = pipe_core::rng::Rng::for_item(seed, 0, 0);
        let max = (1u32 << precision) - 1;
        (0..rows * cols)
            .map(|i| {
                let (r, c) = ((i / cols) as u32, (i % cols) as u32);
                let base = (r * 7 + c * 3) % (max + 1);
                let noise = (rng.next_u64() % 9) as u32;
                (base + noise).min(max) as u16
            })
            .collect()
    }

    /// Uniform noise over the whole range: every category up to `precision` occurs.
    fn noise_image(rows: usize, cols: usize, precision: u8, seed: u64) -> Vec<u16> {
        let mut rng = pipe_core::rng::Rng::for_item(seed, 0, 0);
        let mask = ((1u32 << precision) - 1) as u64;
        (0..rows * cols).map(|_| (rng.next_u64() & mask) as u16).collect()
    }

    /// Alternating extremes with noise: jumps of about half the range and more.
    fn jumpy_image(rows: usize, cols: usize, precision: u8, seed: u64) -> Vec<u16> {
        let mut rng = pipe_core::rng::Rng::for_item(seed, 0, 0);
        let max = (1u32 << precision) - 1;
        let half = 1u32 << (precision - 1);
        (0..rows * cols)
            .map(|i| {
                let r = rng.next_u64();
                let value = match (i + i / cols) % 3 {
                    0 => 0,
                    1 => half,
                    _ => max - (r % 4) as u32,
                };
                value as u16
            })
            .collect()
    }

    /// Decodes with the `jpeg-decoder` crate and checks every sample comes back.
    fn assert_round_trip(pixels: &[u16], rows: usize, cols: usize, precision: u8) {
        let encoded = encode_jpeg_lossless(pixels, rows, cols, precision);
        assert_eq!(encoded.len() % 2, 0, "DICOM fragments must have even length");
        let mut decoder = jpeg_decoder::Decoder::new(&encoded[..]);
        let raw = decoder
            .decode()
            .unwrap_or_else(|e| panic!("{rows}x{cols} P={precision}: decode failed: {e}"));
        let info = decoder.info().unwrap();
        assert_eq!((usize::from(info.height), usize::from(info.width)), (rows, cols));
        assert_eq!(info.coding_process, jpeg_decoder::CodingProcess::Lossless);
        let expected_format = if precision <= 8 {
            jpeg_decoder::PixelFormat::L8
        } else {
            jpeg_decoder::PixelFormat::L16
        };
        assert_eq!(info.pixel_format, expected_format);

        // jpeg-decoder 0.3 returns exactly 8-bit precision as one byte per sample and
        // every other precision (including 2..=7, despite reporting L8) as two
        // native-endian bytes per sample.
        let decoded: Vec<u16> = if precision == 8 {
            raw.iter().map(|&b| u16::from(b)).collect()
        } else {
            raw.chunks_exact(2).map(|b| u16::from_ne_bytes([b[0], b[1]])).collect()
        };
        assert_eq!(decoded.len(), pixels.len(), "{rows}x{cols} P={precision}");
        if let Some(i) = (0..pixels.len()).find(|&i| decoded[i] != pixels[i]) {
            panic!(
                "{rows}x{cols} P={precision}: sample {i} decoded as {}, expected {}",
                decoded[i], pixels[i]
            );
        }
    }

    const SIZES: [(usize, usize); 7] = [(1, 1), (1, 37), (41, 1), (2, 2), (17, 23), (64, 64), (3, 300)];

    #[test]
    fn round_trips_12_bit() {
        for (k, &(rows, cols)) in SIZES.iter().enumerate() {
            let seed = 100 + k as u64;
            assert_round_trip(&smooth_image(rows, cols, 12, seed), rows, cols, 12);
            assert_round_trip(&noise_image(rows, cols, 12, seed), rows, cols, 12);
            assert_round_trip(&jumpy_image(rows, cols, 12, seed), rows, cols, 12);
        }
    }

    #[test]
    fn round_trips_16_bit() {
        for (k, &(rows, cols)) in SIZES.iter().enumerate() {
            let seed = 200 + k as u64;
            assert_round_trip(&smooth_image(rows, cols, 16, seed), rows, cols, 16);
            assert_round_trip(&noise_image(rows, cols, 16, seed), rows, cols, 16);
            assert_round_trip(&jumpy_image(rows, cols, 16, seed), rows, cols, 16);
        }
    }

    #[test]
    fn round_trips_8_bit() {
        for (k, &(rows, cols)) in SIZES.iter().enumerate() {
            let seed = 300 + k as u64;
            assert_round_trip(&smooth_image(rows, cols, 8, seed), rows, cols, 8);
            assert_round_trip(&noise_image(rows, cols, 8, seed), rows, cols, 8);
            assert_round_trip(&jumpy_image(rows, cols, 8, seed), rows, cols, 8);
        }
    }

    #[test]
    fn round_trips_every_precision() {
        for precision in 2..=16 {
            let seed = 400 + u64::from(precision);
            assert_round_trip(&noise_image(19, 13, precision, seed), 19, 13, precision);
            assert_round_trip(&jumpy_image(13, 19, precision, seed), 13, 19, precision);
        }
    }

    #[test]
    fn round_trips_category_16() {
        // A 0 / 0x8000 checkerboard makes every difference but the first +-32768, which
        // modulo 2^16 is 0x8000: category 16, which has no extra bits.
        let (rows, cols) = (9, 11);
        let pixels: Vec<u16> = (0..rows * cols)
            .map(|i| if (i / cols + i % cols) % 2 == 0 { 0 } else { 0x8000 })
            .collect();
        let categories: Vec<u8> = differences(&pixels, cols, 16).map(category).collect();
        assert!(categories.iter().skip(1).all(|&c| c == 16));
        assert_round_trip(&pixels, rows, cols, 16);

        // Extremes next to each other wrap modulo 2^16 to small differences.
        let pixels = [0, 0xFFFF, 0, 0x7FFF, 0xFFFF, 0x8000, 0x0001, 0x8001];
        assert_round_trip(&pixels, 2, 4, 16);
    }

    /// Inverts [`differences`]: the image whose differences are `diffs`.
    fn pixels_from_differences(diffs: &[u16], cols: usize, precision: u8) -> Vec<u16> {
        let mut pixels: Vec<u16> = Vec::with_capacity(diffs.len());
        for (i, &diff) in diffs.iter().enumerate() {
            let prediction = if i == 0 {
                1 << (precision - 1)
            } else if i % cols == 0 {
                pixels[i - cols]
            } else {
                pixels[i - 1]
            };
            pixels.push(prediction.wrapping_add(diff));
        }
        pixels
    }

    #[test]
    fn round_trips_with_16_bit_codes() {
        // Category c occurs about 2^(16 - c) times, so the optimal table is a chain that
        // has to be length-limited and the rarest categories get 16-bit codes.
        let (rows, cols) = (256, 512);
        let mut diffs: Vec<u16> = (0..=16u32)
            .flat_map(|c| {
                let diff = if c == 0 { 0 } else { 1u16 << (c - 1) };
                std::iter::repeat_n(diff, 1 << (16 - c))
            })
            .collect();
        diffs.resize(rows * cols, 0);
        let mut rng = pipe_core::rng::Rng::for_item(11, 0, 0);
        for i in (1..diffs.len()).rev() {
            diffs.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let pixels = pixels_from_differences(&diffs, cols, 16);
        assert_eq!(differences(&pixels, cols, 16).collect::<Vec<_>>(), diffs);

        let mut frequencies = [0u64; CATEGORIES];
        for &diff in &diffs {
            frequencies[category(diff) as usize] += 1;
        }
        let (bits, _) = build_huffman_table(&frequencies);
        assert!(bits[MAX_CODE_LEN - 1] > 0, "expected some 16-bit codes");
        assert_round_trip(&pixels, rows, cols, 16);
    }

    #[test]
    fn categories_match_table_h2() {
        assert_eq!(category(0), 0);
        assert_eq!(category(1), 1);
        assert_eq!(category(0xFFFF), 1); // -1
        assert_eq!(category(2), 2);
        assert_eq!(category(0xFFFD), 2); // -3
        assert_eq!(category(255), 8);
        assert_eq!(category(256), 9);
        assert_eq!(category(32767), 15);
        assert_eq!(category(0x8001), 15); // -32767
        assert_eq!(category(0x8000), 16); // 32768
    }

    #[test]
    fn predictions_follow_h121() {
        // 2x3, P = 12: first sample vs 2048, rest of row 1 vs left, row 2 starts vs above.
        let pixels = [2050, 2049, 2060, 2040, 2041, 2000];
        let diffs: Vec<i16> = differences(&pixels, 3, 12).map(|d| d as i16).collect();
        assert_eq!(diffs, [2, -1, 11, -10, 1, -41]);
    }

    /// Checks BITS/HUFFVAL describe a valid prefix code no longer than 16 bits that
    /// leaves the all-ones code unused, and covers exactly the used categories.
    fn assert_valid_table(frequencies: &[u64; CATEGORIES]) {
        let (bits, values) = build_huffman_table(frequencies);
        let used: Vec<u8> = (0..CATEGORIES as u8).filter(|&c| frequencies[c as usize] > 0).collect();
        let mut sorted = values.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, used);
        assert_eq!(bits.iter().map(|&b| usize::from(b)).sum::<usize>(), values.len());
        // Kraft sum strictly below 1: a code point (the all-ones one) is left over.
        let kraft: u64 = (1..=MAX_CODE_LEN)
            .map(|len| u64::from(bits[len - 1]) << (MAX_CODE_LEN - len))
            .sum();
        assert!(kraft < 1 << MAX_CODE_LEN, "Kraft sum {kraft} too large");
        // Every used category gets a code.
        let codes = canonical_codes(&bits, &values);
        assert!(used.iter().all(|&c| codes[c as usize].1 > 0));
    }

    #[test]
    fn huffman_tables_are_valid() {
        let mut single = [0u64; CATEGORIES];
        single[0] = 1000;
        assert_valid_table(&single);
        let (bits, values) = build_huffman_table(&single);
        assert_eq!((bits[0], values), (1, vec![0]));

        assert_valid_table(&[1; CATEGORIES]);

        // Doubling frequencies (with the reserved symbol's 1) make the unlimited tree a
        // chain 17 deep, forcing Figure K.3's length limiting.
        let mut doubling = [0u64; CATEGORIES];
        for (i, f) in doubling.iter_mut().enumerate() {
            *f = 1 << i;
        }
        assert_valid_table(&doubling);
        let (bits, _) = build_huffman_table(&doubling);
        assert!(bits[MAX_CODE_LEN - 1] > 0, "expected some 16-bit codes");

        let mut rng = pipe_core::rng::Rng::for_item(7, 0, 0);
        for _ in 0..200 {
            let mut frequencies = [0u64; CATEGORIES];
            for f in frequencies.iter_mut() {
                let r = rng.next_u64();
                *f = if r.is_multiple_of(3) {
                    0
                } else {
                    (r >> 8) % (1 << (r % 30))
                };
            }
            if frequencies.iter().all(|&f| f == 0) {
                frequencies[5] = 1;
            }
            assert_valid_table(&frequencies);
        }
    }

    #[test]
    fn stream_layout_is_right() {
        let encoded = encode_jpeg_lossless(&noise_image(3, 5, 12, 9), 3, 5, 12);
        assert_eq!(&encoded[..2], &[0xFF, SOI]);
        assert_eq!(&encoded[2..15], &[0xFF, SOF3, 0, 11, 12, 0, 3, 0, 5, 1, 1, 0x11, 0]);
        assert_eq!(&encoded[15..17], &[0xFF, DHT]);
        let dht_len = usize::from(u16::from_be_bytes([encoded[17], encoded[18]]));
        let sos = 17 + dht_len;
        assert_eq!(&encoded[sos..sos + 10], &[0xFF, SOS, 0, 8, 1, 1, 0x00, 1, 0, 0x00][..]);
        assert_eq!(&encoded[encoded.len() - 2..], &[0xFF, EOI]);
        // Entropy-coded data, less any fill byte: every 0xFF is stuffed.
        let mut end = encoded.len() - 2;
        if encoded[end - 1] == 0xFF {
            end -= 1;
        }
        let data = &encoded[sos + 10..end];
        for (i, pair) in data.windows(2).enumerate() {
            if pair[0] == 0xFF {
                assert_eq!(pair[1], 0, "unstuffed 0xFF at entropy byte {i}");
            }
        }
        assert_ne!(data.last(), Some(&0xFF));
    }
}

//! Text values under ISO 2022 code extensions (PS3.5 6.1.2.5), which dicom-rs reads
//! with the first character set only: a Japanese or Korean PatientName came out as its
//! raw escape sequences ("$B;3ED(B").
//!
//! SpecificCharacterSet names the sets a value may switch between; escape sequences in
//! the value designate one into G0 (bytes below 0x80) or G1 (bytes from 0x80). In a
//! person name the sets of value 1 come back at every `^` and `=` (and in any text at
//! a line end or value separator), as PS3.5 6.1.2.5.3 requires of writers. Decoding
//! follows pydicom's `decode_bytes` in what it accepts.

use encoding::types::{DecoderTrap, Encoding};

/// What G0 holds: 94 single-byte characters or 94² double-byte ones.
#[derive(Clone, Copy, PartialEq, Debug)]
enum G0 {
    Ascii,
    /// JIS X 0201 Romaji (ISO 2022 IR 13's G0): ASCII but ¥ and ‾.
    Romaji,
    /// JIS X 0208 (ISO 2022 IR 87).
    Jis0208,
    /// JIS X 0212 (ISO 2022 IR 159).
    Jis0212,
}

/// What G1 holds.
#[derive(Clone, Copy)]
enum G1 {
    None,
    /// An 8-bit single-byte set (ISO 8859 part, TIS 620), by its decoder.
    Single(&'static (dyn Encoding + Send + Sync)),
    /// JIS X 0201 Katakana (ISO 2022 IR 13's G1).
    Katakana,
    /// KS X 1001 (ISO 2022 IR 149), as EUC-KR.
    Ksx1001,
    /// GB 2312 (ISO 2022 IR 58), as EUC-CN.
    Gb2312,
}

/// The single-byte G1 set of a defined term (ISO_IR 100 or ISO 2022 IR 100 alike).
fn single(term: &str) -> Option<G1> {
    use encoding::all::*;
    let number = term.rsplit([' ', '_']).next()?;
    let e: &'static (dyn Encoding + Send + Sync) = match number {
        "100" => ISO_8859_1,
        "101" => ISO_8859_2,
        "109" => ISO_8859_3,
        "110" => ISO_8859_4,
        "144" => ISO_8859_5,
        "127" => ISO_8859_6,
        "126" => ISO_8859_7,
        "138" => ISO_8859_8,
        "148" => WINDOWS_1254, // ISO 8859-9 is its subset for 0xA0–0xFF
        "166" => WINDOWS_874,  // TIS 620 likewise
        _ => return None,
    };
    Some(G1::Single(e))
}

/// The sets active at the start of a value: those of SpecificCharacterSet value 1.
fn initial(first: &str) -> Option<(G0, G1)> {
    match first.trim() {
        "" | "ISO_IR 6" | "ISO 2022 IR 6" => Some((G0::Ascii, G1::None)),
        "ISO_IR 13" | "ISO 2022 IR 13" => Some((G0::Romaji, G1::Katakana)),
        t => single(t).map(|g1| (G0::Ascii, g1)),
    }
}

/// Whether a SpecificCharacterSet needs this module: code extensions (more than one
/// value, or an "ISO 2022" term), or a set dicom-rs does not decode.
pub fn needed(sets: &[&str]) -> bool {
    sets.len() > 1 || sets.iter().any(|s| s.contains("2022") || s.trim() == "ISO_IR 148")
}

/// Decode `bytes`, a value of a text VR under SpecificCharacterSet `sets` (value 1
/// first; empty means the default repertoire). `person_name`: PN, where `^` and `=`
/// return to value 1's sets. `None` when `sets` or an escape sequence is not one of
/// PS3.3 C.12.1.1.2's; bytes a set cannot map become U+FFFD, as in pydicom.
pub fn decode(bytes: &[u8], sets: &[&str], person_name: bool) -> Option<String> {
    let start = initial(sets.first().copied().unwrap_or(""))?;
    let (mut g0, mut g1) = start;
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == 0x1B {
            let (set, len) = escape(&bytes[i + 1..])?;
            match set {
                Designation::G0(s) => g0 = s,
                Designation::G1(s) => g1 = s,
            }
            i += 1 + len;
            continue;
        }
        if b < 0x80 {
            match g0 {
                G0::Jis0208 | G0::Jis0212 => {
                    let Some(&b2) = bytes.get(i + 1) else {
                        out.push('\u{FFFD}');
                        break;
                    };
                    let pair = [b | 0x80, b2 | 0x80];
                    let euc: &[u8] = if g0 == G0::Jis0212 {
                        &[0x8F, pair[0], pair[1]]
                    } else {
                        &pair
                    };
                    push(&mut out, encoding::all::EUC_JP, euc);
                    i += 2;
                    continue;
                }
                G0::Romaji if b == 0x5C => out.push('¥'),
                G0::Romaji if b == 0x7E => out.push('‾'),
                _ => out.push(b as char),
            }
            let delimiter =
                matches!(b, b'\\' | b'\r' | b'\n' | b'\t' | 0x0C) || (person_name && matches!(b, b'^' | b'='));
            if delimiter {
                (g0, g1) = start;
            }
            i += 1;
            continue;
        }
        match g1 {
            G1::Single(e) => push(&mut out, e, &[b]),
            G1::Katakana if (0xA1..=0xDF).contains(&b) => {
                out.push(char::from_u32(0xFF61 + (b - 0xA1) as u32).unwrap_or('\u{FFFD}'))
            }
            G1::Ksx1001 | G1::Gb2312 => {
                let Some(&b2) = bytes.get(i + 1) else {
                    out.push('\u{FFFD}');
                    break;
                };
                let e: &'static (dyn Encoding + Send + Sync) = if matches!(g1, G1::Ksx1001) {
                    encoding::all::WINDOWS_949
                } else {
                    encoding::all::GBK
                };
                push(&mut out, e, &[b, b2]);
                i += 2;
                continue;
            }
            _ => out.push('\u{FFFD}'),
        }
        i += 1;
    }
    Some(out)
}

fn push(out: &mut String, e: &(dyn Encoding + Send + Sync), bytes: &[u8]) {
    match e.decode(bytes, DecoderTrap::Replace) {
        Ok(s) => out.push_str(&s),
        Err(_) => out.push('\u{FFFD}'),
    }
}

enum Designation {
    G0(G0),
    G1(G1),
}

/// The set an escape sequence (after ESC) designates, and its length without ESC
/// (PS3.3 Table C.12-3 and C.12-4).
fn escape(after: &[u8]) -> Option<(Designation, usize)> {
    let s = |t: &str| single(t).map(Designation::G1);
    Some(match after {
        [b'(', b'B', ..] => (Designation::G0(G0::Ascii), 2),
        [b'(', b'J', ..] => (Designation::G0(G0::Romaji), 2),
        [b')', b'I', ..] => (Designation::G1(G1::Katakana), 2),
        [b'$', b'B', ..] | [b'$', b'@', ..] => (Designation::G0(G0::Jis0208), 2),
        [b'$', b'(', b'D', ..] => (Designation::G0(G0::Jis0212), 3),
        [b'$', b')', b'C', ..] => (Designation::G1(G1::Ksx1001), 3),
        [b'$', b')', b'A', ..] => (Designation::G1(G1::Gb2312), 3),
        [b'-', f, ..] => (
            match f {
                b'A' => s("100")?,
                b'B' => s("101")?,
                b'C' => s("109")?,
                b'D' => s("110")?,
                b'L' => s("144")?,
                b'G' => s("127")?,
                b'F' => s("126")?,
                b'H' => s("138")?,
                b'M' => s("148")?,
                b'T' => s("166")?,
                _ => return None,
            },
            2,
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::decode;

    /// PS3.5 Annex H and I's examples, bytes as the standard prints them.
    #[test]
    fn the_standards_examples() {
        // H.3.1: Yamada^Tarou=山田^太郎=やまだ^たろう under ["", "ISO 2022 IR 87"].
        let h31 = b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
        assert_eq!(
            decode(h31, &["", "ISO 2022 IR 87"], true).unwrap(),
            "Yamada^Tarou=山田^太郎=やまだ^たろう"
        );
        // H.3.2: half-width katakana in G1 under ["ISO 2022 IR 13", "ISO 2022 IR 87"].
        let h32 =
            b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J=\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J";
        assert_eq!(
            decode(h32, &["ISO 2022 IR 13", "ISO 2022 IR 87"], true).unwrap(),
            "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"
        );
        // I.2: Korean in G1 under ["", "ISO 2022 IR 149"].
        let i2 = b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf";
        assert_eq!(
            decode(i2, &["", "ISO 2022 IR 149"], true).unwrap(),
            "Hong^Gildong=洪^吉洞=홍^길동"
        );
        // A Latin-1 G1 with no escape at all, and an unknown escape.
        assert_eq!(decode(b"M\xfcller", &["ISO 2022 IR 100"], true).unwrap(), "Müller");
        assert_eq!(decode(b"a\x1b%Gb", &["", "ISO 2022 IR 87"], true), None);
    }
}

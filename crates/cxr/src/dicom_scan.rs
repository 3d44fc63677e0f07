//! A structural walk of a DICOM file before any parser allocates for it.
//!
//! dicom-rs trusts element lengths: a 674-byte file with a UN element of undefined
//! length made it allocate 3.6 GB, and 1,500 nested sequences overflow its stack. This
//! walk reads only tags and lengths (values are skipped by seeking), so it costs a few
//! reads per file, and it answers three questions first:
//! - does every element, item and fragment fit in the file? (a file cut anywhere —
//!   header, pixel data, any byte order — is "truncated", naming where);
//! - are sequences nested at most [`MAX_DEPTH`] deep?
//! - where does the pixel data end? (elements after it — Data Set Trailing Padding,
//!   private groups — are accepted, and a decoder is handed the bytes up to that end).
//!
//! It decides on lengths and depth, and reads the file meta group itself, as leniently
//! as pydicom: a meta group without its group length (or with a wrong one), an AE title
//! longer than 16 bytes, or a data set in implicit VR under an explicit transfer syntax
//! is read, and the parser (dicom-rs, strict on all three) is handed a repaired meta
//! group instead ([`Layout::edits`]); each repair is a warning. What it cannot interpret
//! otherwise (a VR that is not two capital letters further on, a deflated data set) it
//! leaves to the parser.

use std::io::{BufReader, Read, Seek};

/// Deepest nesting of sequences accepted: far beyond any radiograph's header, far below
/// what overflows a parser's stack.
pub const MAX_DEPTH: usize = 64;

const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const UNDEFINED: u32 = u32::MAX;

/// What the walk found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Layout {
    /// Byte just after the top-level PixelData element (its delimiter when
    /// encapsulated); `None` without pixel data (or in a deflated file, not walked).
    pub pixel_data_end: Option<u64>,
    /// Byte ranges of UN elements of undefined length (private sequences a writer did
    /// not know the VR of). dicom-rs reads their length as 4 GiB; pydicom reads them as
    /// sequences. They hold nothing pipe reads, so the parser is handed the file
    /// without them ([`without`]).
    pub unreadable: Vec<(u64, u64)>,
    /// The transfer syntax UID as the file's meta group gives it.
    pub syntax: Option<String>,
    /// A repaired file meta group for the parser: (start, end) of the file's own and
    /// the bytes to read instead.
    pub meta: Option<(u64, u64, Vec<u8>)>,
    /// What was read leniently, one line each.
    pub warnings: Vec<String>,
    /// Raw values of [`TEXTS`] at the top level (decoded by [`crate::charset`], which
    /// needs the bytes that dicom-rs's text decoding loses).
    pub texts: Vec<((u16, u16), Vec<u8>)>,
}

/// Top-level elements whose raw bytes the walk keeps: SpecificCharacterSet, PatientName.
pub const TEXTS: [(u16, u16); 2] = [(0x0008, 0x0005), (0x0010, 0x0010)];

impl Layout {
    /// Byte ranges of the file the parser reads differently, in file order: (start,
    /// end, what to read instead).
    pub fn edits(&self) -> Vec<(u64, u64, &[u8])> {
        let mut edits: Vec<(u64, u64, &[u8])> = self.meta.iter().map(|(a, b, m)| (*a, *b, &m[..])).collect();
        edits.extend(self.unreadable.iter().map(|&(a, b)| (a, b, &[][..])));
        edits.sort_by_key(|e| e.0);
        edits
    }

    /// The raw value of one of [`TEXTS`], if the file has it.
    pub fn text(&self, tag: (u16, u16)) -> Option<&[u8]> {
        self.texts.iter().find(|(t, _)| *t == tag).map(|(_, v)| &v[..])
    }
}

/// Walk `file` (`size` bytes, preamble and `DICM` included). `Err` is a reject reason.
pub fn scan(file: &std::fs::File, size: u64) -> Result<Layout, String> {
    walk(BufReader::with_capacity(16 << 10, file), size)
}

/// [`scan`] of a whole file in memory.
pub fn scan_bytes(bytes: &[u8]) -> Result<Layout, String> {
    walk(std::io::Cursor::new(bytes), bytes.len() as u64)
}

fn walk<R: Read + Seek>(r: R, size: u64) -> Result<Layout, String> {
    let mut w = Walker {
        r,
        pos: 0,
        size,
        little: true,
        explicit: true,
        defined: 0,
        unreadable: Vec::new(),
        syntax: None,
        meta: None,
        warnings: Vec::new(),
        texts: Vec::new(),
    };
    w.walk()
}

/// `bytes` with `layout`'s edits made and nothing after the pixel data: what a parser
/// can be given whole.
pub fn without(bytes: &[u8], layout: &Layout) -> Vec<u8> {
    let end = layout
        .pixel_data_end
        .map_or(bytes.len(), |e| e as usize)
        .min(bytes.len());
    let mut out = Vec::with_capacity(end);
    let mut at = 0;
    for (a, b, with) in layout.edits() {
        let (a, b) = ((a as usize).min(end), (b as usize).min(end));
        out.extend_from_slice(&bytes[at.min(a)..a]);
        out.extend_from_slice(with);
        at = at.max(b);
    }
    out.extend_from_slice(&bytes[at.min(end)..end]);
    out
}

/// A reader of a file with the layout's edits made as it streams ([`Layout::edits`]).
pub struct Skipping<R> {
    inner: R,
    pos: u64,
    edits: std::collections::VecDeque<(u64, u64, Vec<u8>)>,
    /// Bytes read instead of the file's, and how many have been handed out.
    inserting: (Vec<u8>, usize),
    /// The file's bytes up to here are not read.
    skip_to: u64,
}

impl<R: Read> Skipping<R> {
    /// `inner` positioned at byte 0 of the file.
    pub fn new(inner: R, layout: &Layout) -> Skipping<R> {
        Skipping {
            inner,
            pos: 0,
            edits: layout.edits().into_iter().map(|(a, b, w)| (a, b, w.to_vec())).collect(),
            inserting: (Vec::new(), 0),
            skip_to: 0,
        }
    }
}

impl<R: Read> Read for Skipping<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let (with, at) = &mut self.inserting;
            if *at < with.len() {
                let n = buf.len().min(with.len() - *at);
                buf[..n].copy_from_slice(&with[*at..*at + n]);
                *at += n;
                return Ok(n);
            }
            if self.pos < self.skip_to {
                let n = std::io::copy(
                    &mut (&mut self.inner).take(self.skip_to - self.pos),
                    &mut std::io::sink(),
                )?;
                self.pos += n;
                if n == 0 {
                    return Ok(0);
                }
                continue;
            }
            match self.edits.front() {
                Some(&(a, ..)) if self.pos >= a => {
                    let (_, b, with) = self.edits.pop_front().expect("front");
                    self.inserting = (with, 0);
                    self.skip_to = b;
                }
                _ => break,
            }
        }
        let limit = self
            .edits
            .front()
            .map_or(buf.len() as u64, |&(a, ..)| (a - self.pos).min(buf.len() as u64));
        let n = self.inner.read(&mut buf[..limit as usize])?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Value representations of PS3.5 Table 6.2-1.
const VRS: [&[u8; 2]; 34] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF", b"OL",
    b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN", b"UR", b"US",
    b"UT", b"UV",
];

/// VRs whose explicit length is 4 bytes after 2 reserved ones (PS3.5 7.1.2).
fn long_vr(vr: &[u8; 2]) -> bool {
    matches!(
        vr,
        b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"SV" | b"UC" | b"UN" | b"UR" | b"UT" | b"UV"
    )
}

/// One element in explicit VR little endian.
fn explicit_le(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(12 + value.len());
    b.extend_from_slice(&tag.0.to_le_bytes());
    b.extend_from_slice(&tag.1.to_le_bytes());
    b.extend_from_slice(vr);
    if long_vr(vr) {
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        b.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    b.extend_from_slice(value);
    b
}

const IMPLICIT_LITTLE: &str = "1.2.840.10008.1.2";
const EXPLICIT_BIG: &str = "1.2.840.10008.1.2.2";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

/// Tag, VR (none when implicit, and for item tags) and value length of an element.
type Header = ((u16, u16), Option<[u8; 2]>, u32);

struct Walker<R> {
    r: R,
    pos: u64,
    size: u64,
    little: bool,
    explicit: bool,
    /// How many enclosing sequences or items have a defined length (an element inside
    /// one cannot be left out without making its length wrong).
    defined: usize,
    unreadable: Vec<(u64, u64)>,
    syntax: Option<String>,
    meta: Option<(u64, u64, Vec<u8>)>,
    warnings: Vec<String>,
    texts: Vec<((u16, u16), Vec<u8>)>,
}

impl<R: Read + Seek> Walker<R> {
    fn walk(&mut self) -> Result<Layout, String> {
        let size = self.size;
        // Absolute: the caller may have read from the file already.
        self.r
            .seek(std::io::SeekFrom::Start(132))
            .map_err(|e| format!("cannot read: {e}"))?;
        self.pos = 132;
        // File meta: group 0002, explicit VR little endian, read here (lengths checked).
        let mut meta = Vec::new();
        let mut group_length = None;
        while self.pos + 8 <= size && self.peek_group()? == 0x0002 {
            let (tag, vr, len) = self.header_with(true)?;
            let vr = vr.unwrap_or(*b"UN");
            if len == UNDEFINED || len > 1 << 16 {
                return Err(format!(
                    "file meta element ({:04X},{:04X}) at byte {} has length {len}: not a file meta group",
                    tag.0,
                    tag.1,
                    self.pos - 12
                ));
            }
            let end = self.pos + len as u64;
            if end > size {
                return Err(self.truncated(&format!("file meta element ({:04X},{:04X})", tag.0, tag.1), end));
            }
            let mut value = vec![0; len as usize];
            self.read(&mut value)?;
            if tag == (0x0002, 0x0000) && len == 4 {
                group_length = Some(u32::from_le_bytes([value[0], value[1], value[2], value[3]]));
            } else {
                meta.push((tag, vr, value));
            }
        }
        let meta_end = self.pos;
        let syntax = meta
            .iter()
            .find(|(t, ..)| *t == (0x0002, 0x0010))
            .map(|(.., v)| String::from_utf8_lossy(v).trim_end_matches(['\0', ' ']).to_string());
        let mut repairs = Vec::new();
        match group_length {
            None => repairs.push("the file meta group has no group length (0002,0000)".to_string()),
            Some(g) if g as u64 + 144 != meta_end => repairs.push(format!(
                "the file meta group length (0002,0000) says {g} bytes, the group has {}",
                meta_end.saturating_sub(144)
            )),
            Some(_) => {}
        }
        meta.retain(|(tag, vr, value)| {
            let long = vr == b"AE" && value.len() > 16;
            if long {
                repairs.push(format!(
                    "the AE title ({:04X},{:04X}) in the file meta is {} bytes, more than 16: left out",
                    tag.0,
                    tag.1,
                    value.len()
                ));
            }
            !long
        });
        match syntax.as_deref() {
            Some(IMPLICIT_LITTLE) => self.explicit = false,
            Some(EXPLICIT_BIG) => self.little = false,
            // Deflated: the data set is compressed; the parser inflates it.
            Some(DEFLATED) => {
                return Ok(Layout {
                    syntax,
                    ..Layout::default()
                });
            }
            _ => {}
        }
        // An explicit syntax whose data set starts like implicit VR (no VR where one
        // should be, and an implicit length that fits): read it as implicit, as pydicom
        // does, and tell the parser so.
        let mut implicit_data = false;
        if self.explicit && self.little && size - self.pos >= 8 {
            let at = self.pos;
            let mut first = [0u8; 8];
            self.read(&mut first)?;
            self.seek_to(at)?;
            let vr = [first[4], first[5]];
            let len = u32::from_le_bytes([first[4], first[5], first[6], first[7]]);
            if !VRS.contains(&&vr) && (len == UNDEFINED || at + 8 + len as u64 <= size) {
                self.explicit = false;
                implicit_data = true;
                repairs.push(format!(
                    "the data set is in implicit VR under the explicit transfer syntax {}: read as implicit VR little endian",
                    syntax.as_deref().unwrap_or("?")
                ));
            }
        }
        if !repairs.is_empty() {
            let mut body = Vec::new();
            for (tag, vr, value) in &meta {
                if *tag == (0x0002, 0x0010) && implicit_data {
                    body.extend(explicit_le(*tag, vr, b"1.2.840.10008.1.2\0"));
                } else {
                    body.extend(explicit_le(*tag, vr, value));
                }
            }
            let mut group = explicit_le((0x0002, 0x0000), b"UL", &(body.len() as u32).to_le_bytes());
            group.extend(body);
            self.meta = Some((132, meta_end, group));
            self.warnings = repairs;
        }
        self.syntax = syntax;
        let mut pixel_data_end = None;
        // A few stray bytes at the end are nothing a parser would allocate for.
        while size - self.pos >= 8 {
            let (tag, vr, len) = self.header_with(self.explicit)?;
            if TEXTS.contains(&tag) && len <= 4096 && self.pos + len as u64 <= size {
                let mut value = vec![0; len as usize];
                self.read(&mut value)?;
                self.texts.push((tag, value));
                continue;
            }
            self.value(tag, vr, len, 0)?;
            if tag == PIXEL_DATA {
                pixel_data_end = Some(self.pos);
            }
        }
        Ok(Layout {
            pixel_data_end,
            unreadable: std::mem::take(&mut self.unreadable),
            syntax: self.syntax.take(),
            meta: self.meta.take(),
            warnings: std::mem::take(&mut self.warnings),
            texts: std::mem::take(&mut self.texts),
        })
    }

    fn peek_group(&mut self) -> Result<u16, String> {
        let at = self.pos;
        let mut b = [0u8; 2];
        self.read(&mut b)?;
        self.seek_to(at)?;
        Ok(u16::from_le_bytes(b))
    }

    fn truncated(&self, what: &str, end: u64) -> String {
        format!(
            "truncated: {what} at byte {} ends at byte {end}, but the file has only {} bytes",
            self.pos, self.size
        )
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<(), String> {
        let end = self.pos + buf.len() as u64;
        if end > self.size {
            return Err(self.truncated("an element header", end));
        }
        self.r.read_exact(buf).map_err(|e| format!("cannot read: {e}"))?;
        self.pos = end;
        Ok(())
    }

    fn seek_to(&mut self, to: u64) -> Result<(), String> {
        let delta = to as i64 - self.pos as i64;
        self.r.seek_relative(delta).map_err(|e| format!("cannot read: {e}"))?;
        self.pos = to;
        Ok(())
    }

    fn u16(&self, b: [u8; 2]) -> u16 {
        if self.little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    }

    fn u32(&self, b: [u8; 4]) -> u32 {
        if self.little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    }

    fn header_with(&mut self, explicit: bool) -> Result<Header, String> {
        let mut t = [0u8; 4];
        self.read(&mut t)?;
        let tag = (self.u16([t[0], t[1]]), self.u16([t[2], t[3]]));
        if tag.0 == 0xFFFE || !explicit {
            let mut l = [0u8; 4];
            self.read(&mut l)?;
            return Ok((tag, None, self.u32(l)));
        }
        let mut vr = [0u8; 2];
        self.read(&mut vr)?;
        if !vr.iter().all(u8::is_ascii_uppercase) {
            return Err(format!(
                "element ({:04X},{:04X}) at byte {} has no valid VR ({:?}): an implicit-VR data set under an explicit transfer syntax, or a damaged header",
                tag.0,
                tag.1,
                self.pos - 6,
                String::from_utf8_lossy(&vr)
            ));
        }
        // dicom-rs reads a VR it does not know as UN (2 reserved bytes, a 4-byte
        // length): measured the same way here, or the parser would trust a length this
        // walk never checked.
        let vr = if VRS.contains(&&vr) { vr } else { *b"UN" };
        let len = if long_vr(&vr) {
            let mut l = [0u8; 6];
            self.read(&mut l)?;
            self.u32([l[2], l[3], l[4], l[5]])
        } else {
            let mut l = [0u8; 2];
            self.read(&mut l)?;
            self.u16(l) as u32
        };
        Ok((tag, Some(vr), len))
    }

    /// Skip or walk the value of an element whose header was just read.
    fn value(&mut self, tag: (u16, u16), vr: Option<[u8; 2]>, len: u32, depth: usize) -> Result<(), String> {
        // In implicit VR the parser knows a sequence by the dictionary, and reads its
        // items whatever their length: walked here too, so no item length goes unchecked.
        let sequence = match vr {
            Some(vr) => &vr == b"SQ",
            None => crate::collect::dictionary_vr(dicom_core::Tag(tag.0, tag.1)) == Some(dicom_core::VR::SQ),
        };
        if len != UNDEFINED {
            let end = self.pos + len as u64;
            if end > self.size {
                let what = if tag == PIXEL_DATA {
                    "pixel data".to_string()
                } else {
                    format!("element ({:04X},{:04X})", tag.0, tag.1)
                };
                return Err(self.truncated(&what, end));
            }
            if sequence {
                self.defined += 1;
                let r = self.items(Some(end), depth + 1);
                self.defined -= 1;
                return r;
            }
            self.seek_to(end)?;
            return Ok(());
        }
        if tag == PIXEL_DATA {
            return self.fragments();
        }
        // Undefined length: a sequence (SQ, or UN / implicit VR read as one, whose
        // items are implicit VR little endian, PS3.5 6.2.2).
        let (little, explicit) = (self.little, self.explicit);
        let un = vr.as_ref() == Some(b"UN");
        if un {
            if self.defined > 0 {
                return Err(format!(
                    "UN element ({:04X},{:04X}) of undefined length at byte {} inside a sequence of defined length: cannot be read",
                    tag.0,
                    tag.1,
                    self.pos - 12
                ));
            }
            (self.little, self.explicit) = (true, false);
        }
        let start = self.pos - 12;
        let r = self.items(None, depth + 1);
        (self.little, self.explicit) = (little, explicit);
        if un && r.is_ok() {
            self.unreadable.push((start, self.pos));
        }
        r
    }

    /// Items of a sequence, up to `end` or its delimiter.
    fn items(&mut self, end: Option<u64>, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "sequences nested more than {MAX_DEPTH} deep (at byte {}): not a radiograph's header, and deep enough to crash a parser",
                self.pos
            ));
        }
        loop {
            if end.is_some_and(|e| self.pos >= e) {
                return Ok(());
            }
            let (tag, _, len) = self.header_with(false)?;
            match tag {
                SEQUENCE_END => return Ok(()),
                ITEM => {
                    let item_end = (len != UNDEFINED).then(|| self.pos + len as u64);
                    if let Some(e) = item_end
                        && e > self.size
                    {
                        return Err(self.truncated("a sequence item", e));
                    }
                    self.defined += item_end.is_some() as usize;
                    let r = self.elements(item_end, depth);
                    self.defined -= item_end.is_some() as usize;
                    r?;
                }
                (g, e) => {
                    return Err(format!(
                        "({g:04X},{e:04X}) at byte {} inside a sequence, where an item was expected",
                        self.pos - 8
                    ));
                }
            }
        }
    }

    /// Elements of an item, up to `end` or its delimiter.
    fn elements(&mut self, end: Option<u64>, depth: usize) -> Result<(), String> {
        loop {
            if end.is_some_and(|e| self.pos >= e) {
                return Ok(());
            }
            let (tag, vr, len) = self.header_with(self.explicit)?;
            if tag == ITEM_END {
                return Ok(());
            }
            self.value(tag, vr, len, depth)?;
        }
    }

    /// Encapsulated pixel data: the offset table and fragments, up to the delimiter.
    fn fragments(&mut self) -> Result<(), String> {
        loop {
            let (tag, _, len) = self.header_with(false)?;
            match tag {
                SEQUENCE_END => return Ok(()),
                ITEM if len != UNDEFINED => {
                    let end = self.pos + len as u64;
                    if end > self.size {
                        return Err(self.truncated("a pixel data fragment", end));
                    }
                    self.seek_to(end)?;
                }
                (g, e) => {
                    return Err(format!(
                        "({g:04X},{e:04X}) at byte {} inside encapsulated pixel data, where a fragment was expected",
                        self.pos - 8
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(bytes: &[u8]) -> (tempfile::NamedTempFile, u64) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        (f, bytes.len() as u64)
    }

    /// Preamble, `DICM` and a meta group naming `syntax`, with its group length.
    fn head(syntax: &str) -> Vec<u8> {
        let mut uid = syntax.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        let ts = explicit((0x0002, 0x0010), b"UI", &uid);
        let mut b = vec![0u8; 128];
        b.extend_from_slice(b"DICM");
        b.extend(explicit((0x0002, 0x0000), b"UL", &(ts.len() as u32).to_le_bytes()));
        b.extend(ts);
        b
    }

    /// A meta group without its group length, with an AE of 20 bytes, or over an
    /// implicit data set is read as pydicom reads it: the parser gets a repaired group
    /// (and the data set as implicit), the warnings say what was repaired.
    #[test]
    fn lenient_file_meta_is_repaired_for_the_parser() {
        let ts = explicit((0x0002, 0x0010), b"UI", b"1.2.840.10008.1.2.1\0");
        let ae = explicit((0x0002, 0x0016), b"AE", b"AN_AE_TITLE_OF_20_CH");
        let mut b = vec![0u8; 128];
        b.extend_from_slice(b"DICM");
        b.extend(&ts);
        b.extend(&ae);
        let meta_end = b.len() as u64;
        // (0010,0010) PN "A^B" in implicit VR: tag, 4-byte length, value.
        b.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, 4, 0, 0, 0, b'A', b'^', b'B', b' ']);
        let layout = scan_bytes(&b).unwrap();
        assert_eq!(layout.syntax.as_deref(), Some("1.2.840.10008.1.2.1"));
        assert_eq!(layout.text((0x0010, 0x0010)), Some(&b"A^B "[..]));
        let w = layout.warnings.join("\n");
        for want in [
            "no group length (0002,0000)",
            "(0002,0016) in the file meta is 20 bytes, more than 16: left out",
            "implicit VR under the explicit transfer syntax 1.2.840.10008.1.2.1",
        ] {
            assert!(w.contains(want), "{w}");
        }
        let implicit_ts = explicit((0x0002, 0x0010), b"UI", b"1.2.840.10008.1.2\0");
        let mut want = b[..132].to_vec();
        want.extend(explicit(
            (0x0002, 0x0000),
            b"UL",
            &(implicit_ts.len() as u32).to_le_bytes(),
        ));
        want.extend(&implicit_ts);
        want.extend_from_slice(&b[meta_end as usize..]);
        assert_eq!(layout.meta.as_ref().map(|m| (m.0, m.1)), Some((132, meta_end)));
        assert_eq!(without(&b, &layout), want);
        // Streamed in small reads, the same bytes.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = 3.min(buf.len()).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut read = Vec::new();
        let mut r = Skipping::new(Trickle(&b), &layout);
        let mut buf = [0u8; 5];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            read.extend_from_slice(&buf[..n]);
        }
        assert_eq!(read, want);
        // A well-formed file is read as written: no edits, no warnings.
        let mut good = head("1.2.840.10008.1.2.1");
        good.extend(explicit((0x0010, 0x0010), b"PN", b"A^B "));
        let layout = scan_bytes(&good).unwrap();
        assert_eq!((layout.meta, layout.warnings), (None, Vec::<String>::new()));
    }

    fn explicit(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&tag.0.to_le_bytes());
        b.extend_from_slice(&tag.1.to_le_bytes());
        b.extend_from_slice(vr);
        b.extend_from_slice(&(value.len() as u16).to_le_bytes());
        b.extend_from_slice(value);
        b
    }

    /// A VR that is not in the standard (a flipped byte: `PN` → `PY`) is read by
    /// dicom-rs as UN, with 2 reserved bytes and a 4-byte length: the walk must read it
    /// the same way, or the parser trusts a length the walk never saw (found by
    /// flipping bytes in pydicom's test files: a 740-byte file asked for 1.7 GB).
    #[test]
    fn an_unknown_vr_is_measured_as_the_parser_measures_it() {
        let mut b = head("1.2.840.10008.1.2.1");
        // (0010,0010) "PY", then what the parser takes for reserved bytes and a length
        // of 0x69746943 ("Citi").
        b.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'P', b'Y', 0x0C, 0x00]);
        b.extend_from_slice(b"Citizen^Jan ");
        let (f, size) = file(&b);
        let e = scan(f.as_file(), size).unwrap_err();
        assert!(e.contains("(0010,0010)"), "{e}");
        // Measured that way, an unknown VR with a length that fits is read through.
        let mut ok = head("1.2.840.10008.1.2.1");
        ok.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'P', b'Y', 0, 0, 4, 0, 0, 0]);
        ok.extend_from_slice(b"A^B ");
        let (f, size) = file(&ok);
        scan(f.as_file(), size).unwrap();
    }

    /// In implicit VR the parser knows a sequence by the dictionary and reads its items,
    /// even of defined length: the walk must look inside too, or an item's damaged
    /// length goes unchecked (pydicom's rtplan.dcm with four bytes flipped asked for
    /// 3.7 GB).
    #[test]
    fn a_defined_length_sequence_in_implicit_vr_is_walked() {
        let implicit = |tag: (u16, u16), value: &[u8]| {
            let mut b = Vec::new();
            b.extend_from_slice(&tag.0.to_le_bytes());
            b.extend_from_slice(&tag.1.to_le_bytes());
            b.extend_from_slice(&(value.len() as u32).to_le_bytes());
            b.extend_from_slice(value);
            b
        };
        // An element claiming 3.7 GB, in an item of a ReferencedSeriesSequence whose own
        // lengths fit the file.
        let mut inner = Vec::new();
        inner.extend_from_slice(&[0x0A, 0x30, 0x26, 0x00]);
        inner.extend_from_slice(&0xDC00_0010u32.to_le_bytes());
        inner.extend_from_slice(b"12");
        let item = implicit((0xFFFE, 0xE000), &inner);
        let mut b = head("1.2.840.10008.1.2");
        b.extend(implicit((0x0008, 0x1115), &item));
        let (f, size) = file(&b);
        let e = scan(f.as_file(), size).unwrap_err();
        assert!(e.contains("(300A,0026)"), "{e}");
        // Well formed, it is read through.
        let mut b = head("1.2.840.10008.1.2");
        b.extend(implicit(
            (0x0008, 0x1115),
            &implicit((0xFFFE, 0xE000), &implicit((0x0020, 0x000E), b"1.2\0")),
        ));
        let (f, size) = file(&b);
        scan(f.as_file(), size).unwrap();
    }

    #[test]
    fn an_undefined_length_un_is_walked_not_allocated() {
        let mut b = head("1.2.840.10008.1.2.1");
        // (0009,0010) UN, undefined length, one empty item, then nothing: cut short.
        b.extend_from_slice(&[0x09, 0x00, 0x10, 0x00, b'U', b'N', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        let (f, size) = file(&b);
        let e = scan(f.as_file(), size).unwrap_err();
        assert!(e.starts_with("truncated"), "{e}");
        // With its delimiters it is fine.
        b.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let (f, size) = file(&b);
        let layout = scan(f.as_file(), size).unwrap();
        assert_eq!(layout.pixel_data_end, None);
        // The element is left out of what the parser reads.
        let start = head("1.2.840.10008.1.2.1").len() as u64;
        assert_eq!(layout.unreadable, vec![(start, b.len() as u64)]);
        let mut read = Vec::new();
        Skipping::new(&b[..], &layout).read_to_end(&mut read).unwrap();
        assert_eq!(read, &b[..start as usize]);
        assert_eq!(without(&b, &layout), read);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut b = head("1.2.840.10008.1.2.1");
        for _ in 0..(MAX_DEPTH + 5) {
            b.extend_from_slice(&[0x09, 0x00, 0x10, 0x10, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
            b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let (f, size) = file(&b);
        let e = scan(f.as_file(), size).unwrap_err();
        assert!(e.contains("nested more than 64 deep"), "{e}");
    }

    #[test]
    fn pixel_data_then_trailing_padding_is_complete_and_a_cut_is_not() {
        let mut b = head("1.2.840.10008.1.2.1");
        b.extend(explicit((0x0010, 0x0020), b"LO", b"P1"));
        // (7FE0,0010) OB, encapsulated: empty offset table, one 4-byte fragment, delimiter.
        b.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 4, 0, 0, 0, 1, 2, 3, 4]);
        b.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let end = b.len() as u64;
        // Data Set Trailing Padding after the pixel data.
        b.extend_from_slice(&[0xFC, 0xFF, 0xFC, 0xFF, b'O', b'B', 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
        let (f, size) = file(&b);
        assert_eq!(scan(f.as_file(), size).unwrap().pixel_data_end, Some(end));
        // Cut inside the fragment.
        let cut = &b[..(end as usize - 10)];
        let (f, size) = file(cut);
        let e = scan(f.as_file(), size).unwrap_err();
        assert!(e.contains("truncated: a pixel data fragment"), "{e}");
    }

    #[test]
    fn a_big_endian_file_cut_in_its_pixel_data_is_truncated() {
        let mut b = head("1.2.840.10008.1.2.2");
        // (7FE0,0010) OW, 16 bytes, big endian; only 6 present.
        b.extend_from_slice(&[0x7F, 0xE0, 0x00, 0x10, b'O', b'W', 0, 0, 0, 0, 0, 16, 1, 2, 3, 4, 5, 6]);
        let (f, size) = file(&b);
        let e = scan(f.as_file(), size).unwrap_err();
        assert!(e.contains("truncated: pixel data"), "{e}");
    }
}

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
//! It decides only on lengths and depth. What it cannot interpret (a VR that is not
//! two capital letters, a deflated data set) it leaves to the parser.

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
    };
    w.walk()
}

/// `bytes` without `layout`'s unreadable ranges and anything after the pixel data:
/// what a parser can be given whole.
pub fn without(bytes: &[u8], layout: &Layout) -> Vec<u8> {
    let end = layout
        .pixel_data_end
        .map_or(bytes.len(), |e| e as usize)
        .min(bytes.len());
    let mut out = Vec::with_capacity(end);
    let mut at = 0;
    for &(a, b) in &layout.unreadable {
        let (a, b) = ((a as usize).min(end), (b as usize).min(end));
        out.extend_from_slice(&bytes[at.min(a)..a]);
        at = b;
    }
    out.extend_from_slice(&bytes[at.min(end)..end]);
    out
}

/// A reader of a file that leaves out byte ranges (the file's [`Layout::unreadable`]).
pub struct Skipping<R> {
    inner: R,
    pos: u64,
    skip: std::collections::VecDeque<(u64, u64)>,
}

impl<R: Read> Skipping<R> {
    /// `inner` positioned at byte 0 of the file.
    pub fn new(inner: R, skip: &[(u64, u64)]) -> Skipping<R> {
        Skipping {
            inner,
            pos: 0,
            skip: skip.iter().copied().collect(),
        }
    }
}

impl<R: Read> Read for Skipping<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(&(a, b)) = self.skip.front() {
            if self.pos < a {
                break;
            }
            // Inside (or at) a range: consume it.
            if self.pos < b {
                let n = std::io::copy(&mut (&mut self.inner).take(b - self.pos), &mut std::io::sink())?;
                self.pos += n;
                if n == 0 {
                    return Ok(0);
                }
                continue;
            }
            self.skip.pop_front();
        }
        let limit = self
            .skip
            .front()
            .map_or(buf.len() as u64, |&(a, _)| (a - self.pos).min(buf.len() as u64));
        let n = self.inner.read(&mut buf[..limit as usize])?;
        self.pos += n as u64;
        Ok(n)
    }
}

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
}

impl<R: Read + Seek> Walker<R> {
    fn walk(&mut self) -> Result<Layout, String> {
        let size = self.size;
        // Absolute: the caller may have read from the file already.
        self.r
            .seek(std::io::SeekFrom::Start(132))
            .map_err(|e| format!("cannot read: {e}"))?;
        self.pos = 132;
        // File meta: group 0002, explicit VR little endian.
        let mut syntax = None;
        while self.pos + 8 <= size && self.peek_group()? == 0x0002 {
            let (tag, vr, len) = self.header_with(true)?;
            if tag == (0x0002, 0x0010) && len < 256 {
                let mut uid = vec![0; len as usize];
                self.read(&mut uid)?;
                syntax = Some(String::from_utf8_lossy(&uid).trim_end_matches(['\0', ' ']).to_string());
            } else {
                self.value(tag, vr, len, 0)?;
            }
        }
        match syntax.as_deref() {
            Some("1.2.840.10008.1.2") => self.explicit = false,
            Some("1.2.840.10008.1.2.2") => self.little = false,
            // Deflated: the data set is compressed; the parser inflates it.
            Some("1.2.840.10008.1.2.1.99") => return Ok(Layout::default()),
            _ => {}
        }
        let mut pixel_data_end = None;
        // A few stray bytes at the end are nothing a parser would allocate for.
        while size - self.pos >= 8 {
            let (tag, vr, len) = self.header_with(self.explicit)?;
            self.value(tag, vr, len, 0)?;
            if tag == PIXEL_DATA {
                pixel_data_end = Some(self.pos);
            }
        }
        Ok(Layout {
            pixel_data_end,
            unreadable: std::mem::take(&mut self.unreadable),
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
        let long = matches!(
            &vr,
            b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"SV" | b"UC" | b"UN" | b"UR" | b"UT" | b"UV"
        );
        let len = if long {
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
        let sequence = vr.as_ref() == Some(b"SQ");
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

    /// Preamble, `DICM` and a meta group naming `syntax`.
    fn head(syntax: &str) -> Vec<u8> {
        let mut b = vec![0u8; 128];
        b.extend_from_slice(b"DICM");
        let mut uid = syntax.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        b.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        b.extend_from_slice(&(uid.len() as u16).to_le_bytes());
        b.extend_from_slice(&uid);
        b
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
        Skipping::new(&b[..], &layout.unreadable)
            .read_to_end(&mut read)
            .unwrap();
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

//! BLAKE3 helpers: the one way pipe hashes files and builds keys.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::Context as _;

/// Hex BLAKE3 of a file's content, read in 1 MiB chunks.
pub fn file_hex(path: &Path) -> anyhow::Result<String> {
    Ok(file_hash(path)?.to_hex().to_string())
}

/// BLAKE3 of a file's content.
pub fn file_hash(path: &Path) -> anyhow::Result<blake3::Hash> {
    // One buffer per thread, not per file: a fresh 1 MiB buffer for each of 100k small
    // files is an mmap/munmap pair each, or heap that glibc then keeps fragmented.
    thread_local!(static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 1 << 20]));
    let mut f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    BUF.with_borrow_mut(|buf| {
        loop {
            let n = f.read(buf).with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hasher.finalize())
    })
}

/// Builds a hash from labelled fields, length-prefixed so that no two different field
/// sequences can produce the same byte stream.
pub struct KeyHasher(blake3::Hasher);

impl KeyHasher {
    pub fn new(domain: &str) -> Self {
        let mut h = KeyHasher(blake3::Hasher::new());
        h.field("domain", domain.as_bytes());
        h
    }

    pub fn field(&mut self, label: &str, value: &[u8]) -> &mut Self {
        for part in [label.as_bytes(), value] {
            self.0.update(&(part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    pub fn str(&mut self, label: &str, value: &str) -> &mut Self {
        self.field(label, value.as_bytes())
    }

    pub fn hex(&self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

//! Content fingerprints of the files and directory trees that params name.
//!
//! The content hash is what enters the cache key; stat information never does. To
//! avoid re-reading an unchanged 100k-file PACS export on every `pipe status`, each
//! referenced root keeps a *stat cache* in `cache/stat/`: for every file its relative
//! path, size, mtime (ns) and inode, and the BLAKE3 we computed for exactly that stat.
//! A file whose stat matches is not read again; any difference means it is re-hashed.
//!
//! Racy edits: a file written in the same instant we hash it could change later
//! without changing its mtime tick. Entries whose mtime is less than
//! [`RACY_WINDOW`] old are therefore never stored, so they are re-hashed next time
//! (the same rule git uses for its index).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rayon::prelude::*;

use crate::hash::{KeyHasher, file_hex};

const RACY_WINDOW: Duration = Duration::from_secs(2);

/// The fingerprint of one referenced path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// BLAKE3 of the file, or of the sorted (path, size, hash) list of a tree.
    pub hash: String,
    pub is_dir: bool,
    pub files: u64,
    pub bytes: u64,
    /// Files actually read this time (the rest came from the stat cache).
    pub rehashed: u64,
}

/// One file of a scanned tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHash {
    /// Path relative to the tree's root ("" when the root is a file).
    pub rel: String,
    pub size: u64,
    pub hash: String,
}

/// Fingerprints paths, remembering results for the life of one command.
pub struct Fingerprinter {
    stat_dir: PathBuf,
    memo: HashMap<PathBuf, Fingerprint>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stat {
    size: u64,
    mtime_ns: i128,
    ino: u64,
}

fn stat_of(md: &std::fs::Metadata) -> Stat {
    Stat {
        size: md.len(),
        mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
        ino: md.ino(),
    }
}

impl Fingerprinter {
    pub fn new(cache_dir: &Path) -> Fingerprinter {
        Fingerprinter {
            stat_dir: cache_dir.join("stat"),
            memo: HashMap::new(),
        }
    }

    /// Fingerprint a file or a directory tree (absolute path).
    pub fn fingerprint(&mut self, path: &Path) -> anyhow::Result<Fingerprint> {
        if let Some(f) = self.memo.get(path) {
            return Ok(f.clone());
        }
        let (fp, _) = self.scan(path)?;
        release_freed_memory();
        self.memo.insert(path.to_path_buf(), fp.clone());
        Ok(fp)
    }

    /// Every file of a tree with its size and content hash, sorted by relative path;
    /// only files whose stat changed since the last scan are read.
    pub fn files(&mut self, path: &Path) -> anyhow::Result<Vec<FileHash>> {
        let files = self.scan(path)?.1;
        release_freed_memory();
        Ok(files)
    }

    fn scan(&mut self, path: &Path) -> anyhow::Result<(Fingerprint, Vec<FileHash>)> {
        let md = std::fs::metadata(path).with_context(|| format!("{} does not exist", path.display()))?;
        let mut listing = Vec::new();
        if md.is_dir() {
            for entry in walkdir::WalkDir::new(path).follow_links(true).sort_by_file_name() {
                let entry = entry.with_context(|| format!("cannot walk {}", path.display()))?;
                if !entry.file_type().is_file() {
                    continue;
                }
                let rel = entry
                    .path()
                    .strip_prefix(path)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                let md = entry
                    .metadata()
                    .with_context(|| format!("cannot stat {}", entry.path().display()))?;
                listing.push((rel, stat_of(&md)));
            }
        } else {
            listing.push((String::new(), stat_of(&md)));
        }

        let store = self.stat_dir.join(format!(
            "{}.tsv",
            &KeyHasher::new("stat").str("root", &path.to_string_lossy()).hex()[..32]
        ));
        let known = read_stat_cache(&store);
        let hashes: Vec<anyhow::Result<(String, bool)>> = listing
            .par_iter()
            .map(|(rel, stat)| match known.get(rel) {
                Some((s, h)) if s == stat => Ok((h.clone(), false)),
                _ => {
                    let file = if rel.is_empty() {
                        path.to_path_buf()
                    } else {
                        path.join(rel)
                    };
                    Ok((file_hex(&file)?, true))
                }
            })
            .collect();
        let mut hashed = Vec::with_capacity(listing.len());
        let mut rehashed = 0;
        for ((rel, stat), h) in listing.into_iter().zip(hashes) {
            let (hash, fresh) = h?;
            rehashed += fresh as u64;
            hashed.push((rel, stat, hash));
        }

        let fp = if md.is_dir() {
            let mut k = KeyHasher::new("tree");
            for (rel, stat, hash) in &hashed {
                k.str("path", rel)
                    .field("size", &stat.size.to_le_bytes())
                    .str("hash", hash);
            }
            Fingerprint {
                hash: k.hex(),
                is_dir: true,
                files: hashed.len() as u64,
                bytes: hashed.iter().map(|(_, s, _)| s.size).sum(),
                rehashed,
            }
        } else {
            Fingerprint {
                hash: hashed[0].2.clone(),
                is_dir: false,
                files: 1,
                bytes: md.len(),
                rehashed,
            }
        };

        let changed = rehashed > 0 || known.len() != hashed.len();
        if changed {
            // Best effort: a failure to save only costs a re-hash next time.
            let _ = write_stat_cache(&store, path, &hashed);
        }
        let files = hashed
            .into_iter()
            .map(|(rel, s, hash)| FileHash {
                rel,
                size: s.size,
                hash,
            })
            .collect();
        Ok((fp, files))
    }
}

/// Scanning a 100k-file tree allocates and frees tens of MB (stat cache, listing, hex
/// hashes) across the rayon threads' malloc arenas, and glibc keeps them: the stage run
/// after `plan` would otherwise peak on top of ~35 MB it no longer uses.
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free pages to the OS; it touches no live memory.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

fn read_stat_cache(store: &Path) -> HashMap<String, (Stat, String)> {
    let Ok(text) = std::fs::read_to_string(store) else {
        return HashMap::new();
    };
    let mut map = HashMap::new();
    for line in text.lines().skip(1) {
        let mut f = line.splitn(5, '\t');
        let (Some(size), Some(mtime), Some(ino), Some(hash), Some(rel)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let (Ok(size), Ok(mtime_ns), Ok(ino)) = (size.parse(), mtime.parse(), ino.parse()) else {
            continue;
        };
        map.insert(rel.to_string(), (Stat { size, mtime_ns, ino }, hash.to_string()));
    }
    map
}

fn write_stat_cache(store: &Path, root: &Path, entries: &[(String, Stat, String)]) -> anyhow::Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let racy_after = (now.saturating_sub(RACY_WINDOW)).as_nanos() as i128;
    std::fs::create_dir_all(store.parent().expect("stat dir"))?;
    let mut out = Vec::with_capacity(entries.len() * 100);
    writeln!(out, "# pipe stat cache for {}", root.display())?;
    for (rel, s, hash) in entries {
        if s.mtime_ns >= racy_after || rel.contains(['\n', '\t']) {
            continue;
        }
        writeln!(out, "{}\t{}\t{}\t{}\t{}", s.size, s.mtime_ns, s.ino, hash, rel)?;
    }
    crate::cache::store::write_atomic(store, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_hash_follows_content_not_stat() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("a.txt"), "a").unwrap();
        std::fs::write(tree.join("sub/b.txt"), "b").unwrap();
        let cache = dir.path().join("cache");
        let first = Fingerprinter::new(&cache).fingerprint(&tree).unwrap();
        assert_eq!((first.files, first.rehashed), (2, 2));
        // Same content, new mtime: same hash.
        std::fs::write(tree.join("a.txt"), "a").unwrap();
        let again = Fingerprinter::new(&cache).fingerprint(&tree).unwrap();
        assert_eq!(again.hash, first.hash);
        std::fs::write(tree.join("a.txt"), "A").unwrap();
        let changed = Fingerprinter::new(&cache).fingerprint(&tree).unwrap();
        assert_ne!(changed.hash, first.hash);
        std::fs::write(tree.join("c.txt"), "").unwrap();
        assert_ne!(
            Fingerprinter::new(&cache).fingerprint(&tree).unwrap().hash,
            changed.hash
        );
    }
}

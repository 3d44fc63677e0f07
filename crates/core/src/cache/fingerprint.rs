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
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rayon::prelude::*;

use super::walk::{Stat, stat_of, walk};
use crate::hash::{KeyHasher, file_hash};

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
    /// Binary; hex only where it is written out.
    pub hash: blake3::Hash,
    /// Why the file could not be read (then `hash` is not of its content). An I/O error
    /// is not a property of the content: the tree hash records the file as unreadable
    /// and the stat cache does not remember it, so it is read again next time.
    pub unreadable: Option<String>,
}

/// Fingerprints paths, remembering results for the life of one command.
pub struct Fingerprinter {
    stat_dir: PathBuf,
    memo: HashMap<PathBuf, Fingerprint>,
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
        let fp = scan(&self.stat_dir, path, &mut |_, _| Ok(()))?;
        self.memo.insert(path.to_path_buf(), fp.clone());
        Ok(fp)
    }

    /// Fingerprint several paths at once (distinct trees are walked in parallel: a run
    /// over a PACS and an HIS tree waits for the slower, not the sum); the results are
    /// remembered for [`fingerprint`](Self::fingerprint), which reports any error.
    pub fn prefetch(&mut self, paths: &[PathBuf]) {
        let mut todo: Vec<&PathBuf> = paths.iter().filter(|p| !self.memo.contains_key(*p)).collect();
        todo.sort();
        todo.dedup();
        if todo.len() < 2 {
            return;
        }
        let stat_dir = &self.stat_dir;
        let done: Vec<(PathBuf, Fingerprint)> = todo
            .par_iter()
            .filter_map(|p| Some(((*p).clone(), scan(stat_dir, p, &mut |_, _| Ok(())).ok()?)))
            .collect();
        self.memo.extend(done);
    }

    /// Every file of a tree with its size and content hash, in the walk's sorted order,
    /// handed to `each` [`CHUNK`] files at a time with the number of files the tree had
    /// at its last scan (for progress; 0 if unknown). Only files whose stat changed since
    /// the last scan are read. Memory stays that of a chunk, whatever the tree's size.
    pub fn files(
        &mut self,
        path: &Path,
        each: &mut dyn FnMut(&[FileHash], u64) -> anyhow::Result<()>,
    ) -> anyhow::Result<Fingerprint> {
        scan(&self.stat_dir, path, each)
    }
}

/// The stat cache of the tree (or file) at `root`.
fn stat_cache_of(stat_dir: &Path, root: &Path) -> PathBuf {
    stat_dir.join(format!(
        "{}.tsv",
        &KeyHasher::new("stat").str("root", &root.to_string_lossy()).hex()[..32]
    ))
}

/// Drop the stat cache lines of `rels` (paths relative to `root`), so that the next
/// scan reads those files instead of trusting what it remembered of them.
pub fn forget(cache_dir: &Path, root: &Path, rels: &std::collections::HashSet<String>) -> anyhow::Result<()> {
    use std::io::BufRead;
    let path = stat_cache_of(&cache_dir.join("stat"), root);
    let Ok(file) = std::fs::File::open(&path) else {
        return Ok(());
    };
    let mut out = crate::cache::store::AtomicFile::create(&path)?;
    for line in std::io::BufReader::new(file).split(b'\n') {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        // The path is the last field of a file line.
        let rel = line.rsplit(|&b| b == b'\t').next().unwrap_or_default();
        let drop = !line.starts_with(b"#") && std::str::from_utf8(rel).is_ok_and(|r| rels.contains(r));
        if !drop {
            out.write_all(&line)?;
            out.write_all(b"\n")?;
        }
    }
    out.commit()
}

/// Scan a file or tree with the stat caches in `stat_dir` (see [`Fingerprinter::files`]).
fn scan(
    stat_dir: &Path,
    path: &Path,
    each: &mut dyn FnMut(&[FileHash], u64) -> anyhow::Result<()>,
) -> anyhow::Result<Fingerprint> {
    let md = std::fs::metadata(path).with_context(|| format!("{} does not exist", path.display()))?;
    let mut scan = Scan::new(path, stat_cache_of(stat_dir, path));
    if md.is_dir() {
        let mut chunk = Vec::with_capacity(CHUNK);
        walk(path, &mut |rel, stat| {
            chunk.push((rel, stat));
            if chunk.len() == CHUNK {
                scan.chunk(std::mem::take(&mut chunk), each)?;
            }
            Ok(())
        })?;
        scan.chunk(chunk, each)?;
    } else {
        scan.chunk(vec![(String::new(), Ok(stat_of(&md)))], each)?;
    }
    let fp = scan.finish(md.is_dir());
    release_freed_memory();
    fp
}

/// Files hashed and handed on at a time.
pub const CHUNK: usize = 4096;

/// One scan of a tree: the walk's files go through in chunks, merged with the stat cache
/// of the previous scan (same sorted order) and folded into the tree hash as they pass.
struct Scan<'a> {
    root: &'a Path,
    old: OldStatCache,
    new: NewStatCache,
    tree: KeyHasher,
    files: u64,
    bytes: u64,
    rehashed: u64,
    first: Option<blake3::Hash>,
    /// Files modified after this instant (ns) are too recent to trust their stat later.
    racy_after: i64,
}

impl<'a> Scan<'a> {
    fn new(root: &'a Path, store: PathBuf) -> Scan<'a> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Scan {
            root,
            old: OldStatCache::open(&store),
            new: NewStatCache { store, out: None },
            tree: KeyHasher::new("tree"),
            files: 0,
            bytes: 0,
            rehashed: 0,
            first: None,
            racy_after: now.saturating_sub(RACY_WINDOW).as_nanos() as i64,
        }
    }

    fn chunk(
        &mut self,
        listing: Vec<(String, Result<Stat, String>)>,
        each: &mut dyn FnMut(&[FileHash], u64) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        if listing.is_empty() {
            return Ok(());
        }
        // Entries the walk could not take as files are not looked up: the stat cache
        // only holds files that were read.
        let known: Vec<(Option<blake3::Hash>, bool)> = listing
            .iter()
            .map(|(rel, stat)| match stat {
                Ok(stat) => self.old.lookup(rel, stat),
                Err(_) => (None, false),
            })
            .collect();
        let root = self.root;
        let hashes: Vec<Result<blake3::Hash, String>> = listing
            .par_iter()
            .zip(&known)
            .map(|((rel, stat), (hash, _))| match (stat, hash) {
                (Err(why), _) => Err(why.clone()),
                (_, Some(h)) => Ok(*h),
                (_, None) if rel.is_empty() => file_hash(root).map_err(|e| format!("{e:#}")),
                (_, None) => file_hash(&super::walk::disk_path(root, rel)).map_err(|e| format!("{e:#}")),
            })
            .collect();
        let mut files = Vec::with_capacity(listing.len());
        for (((rel, stat), (was_known, unchanged)), hash) in listing.into_iter().zip(known).zip(hashes) {
            let stat = stat.unwrap_or(Stat {
                size: 0,
                mtime_ns: 0,
                ino: 0,
                mode: 0,
            });
            let (hash, unreadable) = match hash {
                Ok(h) => (h, None),
                // A root that is one file must be readable to be a reference at all.
                Err(e) if rel.is_empty() => anyhow::bail!(e),
                Err(e) => (blake3::hash(b"unreadable"), Some(e)),
            };
            self.rehashed += was_known.is_none() as u64;
            self.files += 1;
            self.bytes += stat.size;
            self.first.get_or_insert(hash);
            self.tree.str("path", &rel).field("size", &stat.size.to_le_bytes());
            match &unreadable {
                None => self.tree.str("hash", &hash.to_hex()),
                // Why is part of the key: the reject row a stage writes for it says why.
                Some(why) => self.tree.str("unreadable", why),
            };
            // An unreadable file was not in the cache (lookup deviated there already) and
            // is not written to it.
            if unreadable.is_none() && !unchanged && stat.mtime_ns < self.racy_after && !rel.contains(['\n', '\t']) {
                // Best effort: a failure to save only costs a re-hash next time.
                let _ = self.new.line(&self.old, self.root, &rel, &stat, &hash);
            }
            files.push(FileHash {
                rel,
                size: stat.size,
                hash,
                unreadable,
            });
        }
        each(&files, self.old.files)?;
        // What the chunk freed, on whichever thread's arena, goes back now rather than
        // adding up across a 100k-file walk.
        release_freed_memory();
        Ok(())
    }

    fn finish(mut self, is_dir: bool) -> anyhow::Result<Fingerprint> {
        if self.old.deviated.is_some() || !self.old.at_end() {
            let _ = self.new.commit(&mut self.old, self.root, self.files);
        }
        let hash = match (is_dir, self.first) {
            (false, Some(h)) => h.to_hex().to_string(),
            _ => self.tree.hex(),
        };
        Ok(Fingerprint {
            hash,
            is_dir,
            files: self.files,
            bytes: self.bytes,
            rehashed: self.rehashed,
        })
    }
}

/// Scanning a 100k-file tree allocates and frees MBs across the rayon threads' malloc
/// arenas, and glibc keeps them: return them to the OS before the stage runs.
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free pages to the OS; it touches no live memory.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

// The stat cache: a header line, one line per file (`crc32 size mtime_ns ino mode blake3
// rel`, tab-separated, the CRC over the rest of the line) in the walk's order, and a
// trailer `# files N`. It is read as a stream in step with the walk, and rewritten only
// when something differs: then the unchanged prefix is copied byte for byte and the rest
// written line by line.

/// First words of a stat cache of this format (older ones are rewritten).
const STAT_HEADER: &str = "# pipe stat cache v2";

/// The previous scan's stat cache, read line by line in step with the walk.
struct OldStatCache {
    reader: Option<std::io::BufReader<std::fs::File>>,
    /// The same file, for copying its unchanged prefix: the bytes merged, not whatever
    /// another process may have renamed into place since.
    source: Option<std::fs::File>,
    /// The line under the cursor: (rel, stat, hash, byte length including newline).
    current: Option<(String, Stat, blake3::Hash, u64)>,
    /// Byte offset of the line under the cursor.
    offset: u64,
    /// Where the files stopped matching the cache line for line (the prefix up to here
    /// can be copied as is); `Some(0)`: write a new cache from the start.
    deviated: Option<u64>,
    /// Files at the last scan (from the trailer).
    files: u64,
}

impl OldStatCache {
    fn open(store: &Path) -> OldStatCache {
        let mut old = OldStatCache {
            reader: None,
            source: None,
            current: None,
            offset: 0,
            deviated: Some(0),
            files: 0,
        };
        let Ok(file) = std::fs::File::open(store) else {
            return old;
        };
        let trailer = read_trailer(&file);
        old.source = file.try_clone().ok();
        old.reader = Some(std::io::BufReader::new(file));
        match old.read_line() {
            Some(header) if header.starts_with(STAT_HEADER) => {
                old.offset = header.len() as u64;
                // Without its trailer (an older or cut-off file) it is only read, then
                // written anew.
                if let Some(files) = trailer {
                    old.files = files;
                    old.deviated = None;
                }
                old.advance();
            }
            _ => old.reader = None,
        }
        old
    }

    /// The next line with its newline; `None` at the end or on a read error.
    fn read_line(&mut self) -> Option<String> {
        use std::io::BufRead;
        let mut line = String::new();
        match self.reader.as_mut()?.read_line(&mut line) {
            Ok(n) if n > 0 && line.ends_with('\n') => Some(line),
            _ => {
                self.reader = None;
                None
            }
        }
    }

    /// Move to the next file line; none at the trailer or the end.
    fn advance(&mut self) {
        if let Some((.., len)) = self.current.take() {
            self.offset += len;
        }
        let Some(line) = self.read_line() else { return };
        if line.starts_with('#') {
            self.reader = None;
            return;
        }
        let parsed = (|| {
            // Each line carries a CRC-32 of the rest: one altered digit of a hash must
            // not become a wrong `file_hash` (the line is then ignored: re-hashed).
            let (crc, rest) = line[..line.len() - 1].split_once('\t')?;
            if u32::from_str_radix(crc, 16).ok()? != crc32fast::hash(rest.as_bytes()) {
                return None;
            }
            let mut f = rest.splitn(6, '\t');
            let (size, mtime_ns, ino, mode) = (
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
            );
            let hash = blake3::Hash::from_hex(f.next()?).ok()?;
            Some((
                f.next()?.to_string(),
                Stat {
                    size,
                    mtime_ns,
                    ino,
                    mode,
                },
                hash,
                line.len() as u64,
            ))
        })();
        match parsed {
            Some(entry) => self.current = Some(entry),
            // A damaged line: stop trusting the cache from here.
            None => self.reader = None,
        }
    }

    fn deviate(&mut self) {
        self.deviated.get_or_insert(self.offset);
    }

    /// The remembered hash of `rel` if its stat is unchanged, and whether the cache
    /// still matches the walk line for line up to and including this file.
    fn lookup(&mut self, rel: &str, stat: &Stat) -> (Option<blake3::Hash>, bool) {
        loop {
            let Some((old_rel, old_stat, hash, _)) = &self.current else {
                self.deviate();
                return (None, false);
            };
            match Path::new(old_rel).cmp(Path::new(rel)) {
                std::cmp::Ordering::Less => {
                    // A file that is gone.
                    self.deviate();
                    self.advance();
                }
                std::cmp::Ordering::Greater => {
                    self.deviate();
                    return (None, false);
                }
                std::cmp::Ordering::Equal if old_rel == rel && old_stat == stat => {
                    let hash = *hash;
                    let unchanged = self.deviated.is_none();
                    self.advance();
                    return (Some(hash), unchanged);
                }
                std::cmp::Ordering::Equal => {
                    self.deviate();
                    self.advance();
                    return (None, false);
                }
            }
        }
    }

    fn at_end(&self) -> bool {
        self.current.is_none()
    }
}

/// `# files N`, the last line, read without reading the rest.
fn read_trailer(file: &std::fs::File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let size = file.metadata().ok()?.len();
    let mut tail = [0u8; 64];
    let from = size.saturating_sub(tail.len() as u64);
    let n = file.read_at(&mut tail, from).ok()?;
    let text = std::str::from_utf8(&tail[..n]).ok()?;
    text.trim_end()
        .rsplit('\n')
        .next()?
        .strip_prefix("# files ")?
        .parse()
        .ok()
}

/// The rewritten stat cache, opened at the first difference.
struct NewStatCache {
    store: PathBuf,
    out: Option<crate::cache::store::AtomicFile>,
}

impl NewStatCache {
    fn open(&mut self, old: &OldStatCache, root: &Path) -> anyhow::Result<&mut crate::cache::store::AtomicFile> {
        if self.out.is_none() {
            std::fs::create_dir_all(self.store.parent().expect("stat dir"))?;
            let mut out = crate::cache::store::AtomicFile::create(&self.store)?;
            match (old.deviated, &old.source) {
                (Some(prefix), Some(source)) if prefix > 0 => {
                    use std::os::unix::fs::FileExt;
                    let mut buf = vec![0u8; 1 << 16];
                    let mut at = 0;
                    while at < prefix {
                        let want = buf.len().min((prefix - at) as usize);
                        let n = source.read_at(&mut buf[..want], at)?;
                        anyhow::ensure!(n > 0, "stat cache shorter than its merged prefix");
                        out.write_all(&buf[..n])?;
                        at += n as u64;
                    }
                }
                _ => writeln!(out, "{STAT_HEADER} for {}", root.display())?,
            }
            self.out = Some(out);
        }
        Ok(self.out.as_mut().expect("opened"))
    }

    fn line(
        &mut self,
        old: &OldStatCache,
        root: &Path,
        rel: &str,
        s: &Stat,
        hash: &blake3::Hash,
    ) -> anyhow::Result<()> {
        let out = self.open(old, root)?;
        let rest = format!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            s.size,
            s.mtime_ns,
            s.ino,
            s.mode,
            hash.to_hex(),
            rel
        );
        writeln!(out, "{:08x}\t{rest}", crc32fast::hash(rest.as_bytes()))?;
        Ok(())
    }

    fn commit(&mut self, old: &mut OldStatCache, root: &Path, files: u64) -> anyhow::Result<()> {
        old.deviate();
        let out = self.open(old, root)?;
        writeln!(out, "# files {files}")?;
        self.out.take().expect("opened").commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

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

    /// Files with an mtime an hour back, so the racy window does not keep them out of
    /// the stat cache.
    fn write_old(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(3600)).unwrap();
    }

    fn listing(cache: &Path, tree: &Path) -> (Fingerprint, Vec<FileHash>) {
        let mut files = Vec::new();
        let fp = Fingerprinter::new(cache)
            .files(tree, &mut |chunk, _| {
                files.extend_from_slice(chunk);
                Ok(())
            })
            .unwrap();
        (fp, files)
    }

    #[test]
    fn stat_cache_is_merged_in_walk_order_and_rewritten_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        for name in ["a/1.dcm", "a/2.dcm", "a-c.dcm", "b/x/3.dcm", "b/y.dcm", "c.dcm"] {
            write_old(&tree.join(name), name);
        }
        let cache = dir.path().join("cache");
        let (first, files) = listing(&cache, &tree);
        assert_eq!((first.files, first.rehashed), (6, 6));
        let order: Vec<&str> = files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(
            order,
            ["a/1.dcm", "a/2.dcm", "a-c.dcm", "b/x/3.dcm", "b/y.dcm", "c.dcm"]
        );
        let stat_file = std::fs::read_dir(cache.join("stat"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let text = std::fs::read_to_string(&stat_file).unwrap();
        assert!(text.ends_with("# files 6\n"), "{text}");
        let inode = std::fs::metadata(&stat_file).unwrap().ino();

        // Nothing changed: nothing read, the stat cache not rewritten.
        let again = Fingerprinter::new(&cache).fingerprint(&tree).unwrap();
        assert_eq!((again.hash.as_str(), again.rehashed), (first.hash.as_str(), 0));
        assert_eq!(std::fs::metadata(&stat_file).unwrap().ino(), inode);

        // A file gone, one new, one changed, in the middle of the walk.
        std::fs::remove_file(tree.join("a/2.dcm")).unwrap();
        write_old(&tree.join("b/x/2.dcm"), "new");
        write_old(&tree.join("b/y.dcm"), "changed");
        let (changed, files) = listing(&cache, &tree);
        assert_eq!((changed.files, changed.rehashed), (6, 2));
        let fresh = listing(&dir.path().join("fresh-cache"), &tree);
        assert_eq!((&changed.hash, &files), (&fresh.0.hash, &fresh.1));
        // The rewritten cache equals one written from scratch, and serves the next scan.
        let fresh_stat = std::fs::read_dir(dir.path().join("fresh-cache/stat"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        assert_eq!(std::fs::read(&stat_file).unwrap(), std::fs::read(fresh_stat).unwrap());
        assert_eq!(Fingerprinter::new(&cache).fingerprint(&tree).unwrap().rehashed, 0);
        // The last file gone: the cache is cut there.
        std::fs::remove_file(tree.join("c.dcm")).unwrap();
        assert_eq!(Fingerprinter::new(&cache).fingerprint(&tree).unwrap().files, 5);
        let text = std::fs::read_to_string(&stat_file).unwrap();
        assert!(!text.contains("\tc.dcm\n") && text.ends_with("# files 5\n"), "{text}");

        // A cache without its trailer (older, or cut off) is used, then written anew.
        std::fs::write(&stat_file, text.strip_suffix("# files 5\n").unwrap()).unwrap();
        assert_eq!(Fingerprinter::new(&cache).fingerprint(&tree).unwrap().rehashed, 0);
        assert!(std::fs::read_to_string(&stat_file).unwrap().ends_with("# files 5\n"));
        // A name ending in a carriage return survives the line-based file.
        write_old(&tree.join("d.dcm\r"), "cr");
        assert_eq!(Fingerprinter::new(&cache).fingerprint(&tree).unwrap().rehashed, 1);
        assert_eq!(Fingerprinter::new(&cache).fingerprint(&tree).unwrap().rehashed, 0);
    }
}

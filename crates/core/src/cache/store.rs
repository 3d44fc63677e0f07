//! Cache entries on disk: atomic commit, manifests, views, the run lock, verify, gc.
//!
//! Architecture invariant: an entry under `entries/` is complete and never modified.
//! A stage writes into `tmp/<key>/`; [`Store::commit`] hashes every file, writes
//! `manifest.json` last, fsyncs, and renames the directory into `entries/<key>` in one
//! step. A process killed at any moment leaves either no entry or a whole one; the
//! leftovers in `tmp/` are removed by the next run that takes the lock.
//!
//! Removing is the mirror image: an entry leaves `entries/` by one rename (into `tmp/`
//! for `gc` and a replacing commit, into `quarantine/` for `verify`) before anything
//! inside it is deleted, so no kill ever leaves a manifest beside missing tables.
//! Only three things replace or remove an entry: a commit of the same key (`--force`),
//! `pipe gc --delete` and `pipe verify` (damage). All hold the run lock.
//!
//! Anything in `tmp/` that is not a work directory marked resumable (train's
//! checkpoints) is garbage from a killed or failed run; resumable work stays until it is
//! committed or `pipe gc --delete` finds no pipeline that would resume it.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::KeyParts;
use crate::hash::file_hex;

/// One file of an entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub blake3: String,
    pub size: u64,
}

/// `manifest.json`: what an entry is, how it was made, and what it holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub key: String,
    /// Stage and pipeline that built it (informational: not part of the key).
    pub stage: String,
    pub pipeline: String,
    #[serde(flatten)]
    pub parts: KeyParts,
    /// Row count per output table.
    pub tables: BTreeMap<String, u64>,
    /// Every file of the entry but the manifest, by relative path.
    pub files: BTreeMap<String, FileEntry>,
    pub counters: BTreeMap<String, u64>,
    pub wall_seconds: f64,
    pub device: String,
    pub pipe_version: String,
    pub created_unix: u64,
}

pub const MANIFEST: &str = "manifest.json";

/// The stage's log: kept in the entry, but not part of its content (it holds timings).
pub const LOG: &str = "log.txt";

impl Manifest {
    /// Content hash of what an input selects from this entry: `table.parquet`'s BLAKE3,
    /// or for the whole entry a hash of every file but the log (see [`super`]).
    pub fn content(&self, table: Option<&str>) -> Option<String> {
        match table {
            Some(t) => self.files.get(&format!("{t}.parquet")).map(|f| f.blake3.clone()),
            None => {
                let mut h = crate::hash::KeyHasher::new("entry-content");
                for (path, f) in self.files.iter().filter(|(p, _)| p.as_str() != LOG) {
                    h.str("path", path).str("blake3", &f.blake3);
                }
                Some(h.hex())
            }
        }
    }

    /// The files an input may read: its table, or every file of the entry but the log
    /// (a whole-stage input such as `train` hands over checkpoints too).
    pub fn input_files(&self, table: Option<&str>) -> Vec<String> {
        match table {
            Some(t) => vec![format!("{t}.parquet")],
            None => self.files.keys().filter(|p| p.as_str() != LOG).cloned().collect(),
        }
    }
}

/// Check that `files` of the entry at `dir` still have the content its manifest lists;
/// the problems found (empty = intact).
pub fn check_files(dir: &Path, manifest: &Manifest, files: &[String]) -> Vec<String> {
    use rayon::prelude::*;
    files
        .par_iter()
        .filter_map(|f| {
            let Some(want) = manifest.files.get(f) else {
                return Some(format!("{f}: not listed in the manifest"));
            };
            let path = dir.join(f);
            if fs::symlink_metadata(&path).is_err() {
                return Some(format!("{f}: missing"));
            }
            match file_hex(&path) {
                Err(e) => Some(format!("{f}: {e:#}")),
                Ok(h) if h != want.blake3 => Some(format!("{f}: content changed (blake3 differs)")),
                Ok(_) => None,
            }
        })
        .collect()
}

/// Marks a work directory in `tmp/` that the next attempt may resume from.
pub const RESUMABLE_MARK: &str = ".pipe-resumable";

/// A cache directory.
#[derive(Debug, Clone)]
pub struct Store {
    pub dir: PathBuf,
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store { dir: dir.to_path_buf() }
    }

    pub fn entry_dir(&self, key: &str) -> PathBuf {
        self.dir.join("entries").join(key)
    }

    /// An entry counts only once its manifest is there, which is the last thing the
    /// rename makes visible.
    pub fn has(&self, key: &str) -> bool {
        self.entry_dir(key).join(MANIFEST).is_file()
    }

    pub fn manifest(&self, key: &str) -> anyhow::Result<Manifest> {
        read_manifest(&self.entry_dir(key))
    }

    pub fn tmp_dir(&self, key: &str) -> PathBuf {
        self.dir.join("tmp").join(key)
    }

    /// An empty work directory for `key` (or the previous attempt's, when `resume`).
    pub fn begin(&self, key: &str, resume: bool) -> anyhow::Result<PathBuf> {
        let tmp = self.tmp_dir(key);
        match fs::symlink_metadata(&tmp) {
            Ok(m) if m.is_dir() && resume => {}
            Ok(_) => remove_any(&tmp)?,
            Err(_) => {}
        }
        fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        if resume {
            let mark = tmp.join(RESUMABLE_MARK);
            File::create(&mark).with_context(|| format!("cannot write {}", mark.display()))?;
        }
        Ok(tmp)
    }

    /// Seal `tmp` as the entry of `manifest.key`: hash its files, write the manifest,
    /// fsync and rename. Replaces an existing entry of the same key (`--force`).
    pub fn commit(&self, tmp: &Path, mut manifest: Manifest) -> anyhow::Result<()> {
        let mark = tmp.join(RESUMABLE_MARK);
        if mark.exists() {
            fs::remove_file(&mark).with_context(|| format!("cannot remove {}", mark.display()))?;
        }
        manifest.files = hash_tree(tmp)?;
        let json = serde_json::to_vec_pretty(&manifest)?;
        let path = tmp.join(MANIFEST);
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&path)?;
            f.write_all(&json)?;
            f.sync_all()?;
            File::open(tmp)?.sync_all()
        };
        write().with_context(|| format!("cannot write {}", path.display()))?;
        let entries = self.dir.join("entries");
        fs::create_dir_all(&entries).with_context(|| format!("cannot create {}", entries.display()))?;
        let target = entries.join(&manifest.key);
        if fs::symlink_metadata(&target).is_ok() {
            // Replacing (`--force`, or whatever sits where the entry should be): the old
            // one leaves by a rename, so a kill in between leaves no entry, not a mix.
            let old = self.unique_tmp(&format!("{}.replaced", manifest.key));
            fs::rename(&target, &old).with_context(|| format!("cannot move {} aside", target.display()))?;
            fs::rename(tmp, &target).with_context(|| format!("cannot commit {}", target.display()))?;
            remove_any(&old)?;
        } else {
            fs::rename(tmp, &target).with_context(|| format!("cannot commit {}", target.display()))?;
        }
        File::open(&entries)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", entries.display()))?;
        Ok(())
    }

    /// Remove an entry (`pipe gc --delete`): renamed out of `entries/` first, so a kill
    /// leaves it either whole or gone (the rest is cleared from `tmp/` later).
    pub fn remove_entry(&self, key: &str) -> anyhow::Result<()> {
        let dir = self.entry_dir(key);
        let away = self.unique_tmp(&format!("{key}.removed"));
        fs::rename(&dir, &away).with_context(|| format!("cannot move {} out of the cache", dir.display()))?;
        remove_any(&away)
    }

    /// A path in `tmp/` named after `stem` that does not exist yet.
    fn unique_tmp(&self, stem: &str) -> PathBuf {
        let tmp = self.dir.join("tmp");
        let _ = fs::create_dir_all(&tmp);
        unique_path(&tmp, stem)
    }

    /// Remove what killed or failed runs left in `tmp/` (work directories, job files,
    /// entries moved aside); call with the lock held. Resumable work directories stay.
    pub fn clean_tmp(&self) -> anyhow::Result<usize> {
        let mut n = 0;
        for (path, resumable) in self.tmp_items() {
            if !resumable {
                remove_any(&path)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Everything in `tmp/`, with whether it is resumable work.
    pub fn tmp_items(&self) -> Vec<(PathBuf, bool)> {
        let Ok(rd) = fs::read_dir(self.dir.join("tmp")) else {
            return Vec::new();
        };
        let mut items: Vec<(PathBuf, bool)> = rd
            .flatten()
            .map(|e| {
                let resumable = e.file_type().is_ok_and(|t| t.is_dir()) && e.path().join(RESUMABLE_MARK).is_file();
                (e.path(), resumable)
            })
            .collect();
        items.sort();
        items
    }

    fn view_link(&self, pipeline: &str, stage: &str) -> PathBuf {
        self.dir.join("views").join(pipeline).join(stage)
    }

    /// Point `views/<pipeline>/<stage>` at the entry of `key` (atomically). Something
    /// else where the link belongs (a directory, a file) is moved to `quarantine/`, not
    /// deleted: the returned note says where.
    pub fn set_view(&self, pipeline: &str, stage: &str, key: &str) -> anyhow::Result<Option<String>> {
        let link = self.view_link(pipeline, stage);
        if self.view(pipeline, stage).as_deref() == Some(key) {
            return Ok(None);
        }
        let parent = link.parent().expect("view parent");
        if fs::symlink_metadata(parent).is_ok_and(|m| !m.is_dir()) {
            return Err(anyhow::anyhow!(
                "{} is not a directory; views of pipeline `{pipeline}` go there: move it away and run again",
                parent.display()
            ));
        }
        fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        let mut note = None;
        if let Ok(m) = fs::symlink_metadata(&link)
            && !m.file_type().is_symlink()
        {
            let dest = self.quarantine_path(&format!("view-{pipeline}-{stage}"))?;
            fs::rename(&link, &dest).with_context(|| format!("cannot move {} aside", link.display()))?;
            note = Some(format!(
                "{} was not a link made by pipe; moved to {} and replaced by the view",
                link.display(),
                dest.display()
            ));
        }
        let tmp = parent.join(format!(".{stage}.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("../../entries").join(key), &tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &link).with_context(|| format!("cannot update view {}", link.display()))?;
        Ok(note)
    }

    /// The key the view of a stage points at (its last result in this pipeline).
    pub fn view(&self, pipeline: &str, stage: &str) -> Option<String> {
        let target = fs::read_link(self.view_link(pipeline, stage)).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    /// All committed entry keys.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = fs::read_dir(self.dir.join("entries"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    }

    /// Keys pointed at by any pipeline's views.
    pub fn viewed_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in fs::read_dir(self.dir.join("views")).into_iter().flatten().flatten() {
            for s in fs::read_dir(p.path()).into_iter().flatten().flatten() {
                if let Ok(t) = fs::read_link(s.path())
                    && let Some(k) = t.file_name()
                {
                    out.push(k.to_string_lossy().into_owned());
                }
            }
        }
        out
    }

    /// Re-hash one entry; `Ok(problems)` lists what is wrong (empty = intact).
    pub fn verify_entry(&self, key: &str) -> Vec<String> {
        let dir = self.entry_dir(key);
        let manifest = match read_manifest(&dir) {
            Ok(m) => m,
            Err(e) => return vec![format!("{e:#}")],
        };
        let mut problems = Vec::new();
        if manifest.key != key {
            problems.push(format!("manifest says key {} but the entry is {key}", manifest.key));
        }
        let listed: Vec<String> = manifest.files.keys().cloned().collect();
        problems.extend(check_files(&dir, &manifest, &listed));
        match list_files(&dir) {
            Ok(on_disk) => problems.extend(
                on_disk
                    .into_iter()
                    .filter(|(rel, _)| !manifest.files.contains_key(rel))
                    .map(|(rel, _)| format!("{rel}: not listed in the manifest")),
            ),
            Err(e) => problems.push(format!("{e:#}")),
        }
        problems
    }

    /// Move a damaged entry out of `entries/` so the next run rebuilds it.
    pub fn quarantine(&self, key: &str) -> anyhow::Result<PathBuf> {
        let dest = self.quarantine_path(key)?;
        let dir = self.entry_dir(key);
        fs::rename(&dir, &dest).with_context(|| format!("cannot move {} to {}", dir.display(), dest.display()))?;
        Ok(dest)
    }

    /// A new path in `quarantine/` for `stem` (stamped; never one that exists, however
    /// often the same key is quarantined).
    fn quarantine_path(&self, stem: &str) -> anyhow::Result<PathBuf> {
        let q = self.dir.join("quarantine");
        fs::create_dir_all(&q).with_context(|| format!("cannot create {}", q.display()))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Ok(unique_path(&q, &format!("{stem}.{stamp}")))
    }

    /// Take the cache's write lock. When another run holds it: wait (printing who holds
    /// it) or, with `wait == false`, fail with the same message.
    /// The pid of a live `pipe` holding this cache's run lock, read without taking
    /// the lock (status must not disturb a run, and works on a read-only cache): the
    /// pid the lock file names, if that process is alive and is a `pipe`.
    pub fn running_pid(&self) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.dir.join("lock")).ok()?.trim().parse().ok()?;
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "pipe").then_some(pid)
    }

    pub fn lock(&self, wait: bool) -> anyhow::Result<RunLock> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create cache directory {}", self.dir.display()))?;
        let path = self.dir.join("lock");
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another pipe process".to_string()
                } else {
                    format!("pipe (pid {holder})")
                };
                if !wait {
                    bail!(
                        "the cache {} is in use by {who}; wait for it to finish, or run again without --no-wait to queue behind it",
                        self.dir.display()
                    );
                }
                eprintln!(
                    "pipe: the cache {} is in use by {who}; waiting for it to finish…",
                    self.dir.display()
                );
                file.lock().with_context(|| format!("cannot lock {}", path.display()))?;
                eprintln!("pipe: lock acquired, continuing");
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0)?;
        (&file).write_all(std::process::id().to_string().as_bytes())?;
        Ok(RunLock { _file: file })
    }
}

/// `dir/stem`, or `dir/stem.N` for the first N that is free.
fn unique_path(dir: &Path, stem: &str) -> PathBuf {
    let mut path = dir.join(stem);
    let mut n = 1;
    while fs::symlink_metadata(&path).is_ok() {
        path = dir.join(format!("{stem}.{n}"));
        n += 1;
    }
    path
}

/// Whether this process may write in `dir` (permissions and read-only mounts).
pub fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) only reads the NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Remove a file, link or directory tree, naming it on failure.
pub fn remove_any(path: &Path) -> anyhow::Result<()> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => return Ok(()),
    };
    r.with_context(|| format!("cannot remove {}", path.display()))
}

/// Held while a run may write to the cache; released when dropped or when the process
/// dies (it is an OS file lock, so a killed run never leaves it stuck).
pub struct RunLock {
    _file: File,
}

pub fn read_manifest(entry: &Path) -> anyhow::Result<Manifest> {
    let path = entry.join(MANIFEST);
    let text = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not a valid manifest", path.display()))
}

/// Every file of an entry (but its manifest) with size and BLAKE3, for its manifest.
fn hash_tree(dir: &Path) -> anyhow::Result<BTreeMap<String, FileEntry>> {
    use rayon::prelude::*;
    list_files(dir)?
        .par_iter()
        .map(|(rel, path)| {
            let size = fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .len();
            Ok((
                rel.clone(),
                FileEntry {
                    blake3: file_hex(path)?,
                    size,
                },
            ))
        })
        .collect()
}

/// The files of an entry but its manifest: (path relative to it, path).
fn list_files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.with_context(|| format!("cannot walk {}", dir.display()))?;
        if e.file_type().is_file() {
            let rel = e
                .path()
                .strip_prefix(dir)
                .expect("under dir")
                .to_string_lossy()
                .into_owned();
            if rel != MANIFEST {
                files.push((rel, e.path().to_path_buf()));
            }
        }
    }
    Ok(files)
}

/// Write a small file atomically (temp + fsync + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes)?;
    f.commit()
}

/// A file written through a temporary beside it and renamed into place on `commit`
/// (after fsync); dropped uncommitted, the temporary is removed and `path` untouched.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<std::io::BufWriter<File>>,
}

impl AtomicFile {
    pub fn create(path: &Path) -> anyhow::Result<AtomicFile> {
        // Unique across processes of several hosts sharing the cache (Slurm jobs), whose
        // process ids may be the same.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{nanos}-{n}", std::process::id()));
        let f = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp,
            out: Some(std::io::BufWriter::new(f)),
        })
    }

    pub fn commit(mut self) -> anyhow::Result<()> {
        let f = self
            .out
            .take()
            .expect("open until commit")
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", self.tmp.display()))?;
        f.sync_all()?;
        fs::rename(&self.tmp, &self.path).with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.as_mut().expect("open until commit").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.as_mut().expect("open until commit").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

//! The tree walk behind every fingerprint and collect's listing.
//!
//! Files come out depth first with the entries of each directory sorted by name: the
//! order of `Path` comparison, which the stat cache and collect's previous result are
//! merged in. Symbolic links are followed. What cannot be walked or read as a file — a
//! dangling link, a link back to a directory above it, a directory that cannot be
//! listed, a FIFO or device — comes out as a problem under its own name rather than
//! stopping the walk or being left out: one bad entry of a PACS tree is one reject row.
//!
//! A PACS export is mostly directories of one or two files (one per patient or study),
//! so a walk is dominated by opening and reading directories, one after the other.
//! Directories that the walk will reach later are therefore listed ahead of time on
//! the thread pool, up to [`AHEAD`] at once; the order files come out in does not
//! change. Listing ahead only pays for small directories and would hold big ones in
//! memory (twelve month folders of 8,000 patients each), so the window doubles while
//! directories are small and falls back to one at the first big one.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rayon::prelude::*;

/// Directories listed ahead of the walk at once, at most.
const AHEAD: usize = 64;

/// A directory with more entries than this is "big": listing stops looking ahead.
const SMALL: usize = 32;

/// A file's stat as the stat cache compares it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stat {
    pub size: u64,
    /// Nanoseconds since the epoch (an i64 lasts until 2262).
    pub mtime_ns: i64,
    pub ino: u64,
    /// Permission bits: a chmod changes whether the file can be read, not its mtime.
    pub mode: u32,
}

pub fn stat_of(md: &std::fs::Metadata) -> Stat {
    Stat {
        size: md.len(),
        mtime_ns: md.mtime().saturating_mul(1_000_000_000).saturating_add(md.mtime_nsec()),
        ino: md.ino(),
        mode: md.mode(),
    }
}

/// The targets of the links followed from the root down to here, by (device, inode).
/// A loop needs a link, so meeting one of these again is a loop: real directories need
/// no id (and so no stat).
struct Ancestors {
    id: (u64, u64),
    parent: Option<Arc<Ancestors>>,
}

impl Ancestors {
    fn contains(&self, id: (u64, u64)) -> bool {
        let mut at = Some(self);
        while let Some(a) = at {
            if a.id == id {
                return true;
            }
            at = a.parent.as_deref();
        }
        false
    }
}

/// One entry of a listed directory (kept small: a month folder can hold 18,000).
struct Entry {
    name: Box<str>,
    kind: Kind,
}

enum Kind {
    File(Stat),
    /// Why this entry is not a file that can be read (never opened: a FIFO would block).
    Problem(Box<str>),
    Dir {
        /// For a directory reached through a link: the target's (device, inode).
        link: Option<(u64, u64)>,
        /// Listed ahead of the walk, waiting to be walked.
        listing: Option<Listing>,
    },
}

/// A directory's entries, or why it could not be listed (reported when the walk gets there).
type Listing = Box<anyhow::Result<Vec<Entry>>>;

/// A directory being walked: its entries and how far the walk is through them.
struct Listed {
    rel: String,
    ancestors: Arc<Ancestors>,
    entries: Vec<Entry>,
    next: usize,
}

/// List a directory: names sorted, files statted as they are read (through the
/// directory's handle), links followed, anything else (sockets, devices, dangling
/// links) a [`Kind::Problem`]. Only names and stats are kept, not the OS's entries.
fn list(dir: &Path) -> anyhow::Result<Vec<Entry>> {
    let cannot = || format!("cannot list {}", dir.display());
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(cannot)? {
        let e = e.with_context(cannot)?;
        let kind = match e.file_type() {
            Err(err) => Kind::Problem(format!("cannot stat: {err}").into()),
            Ok(t) if t.is_dir() => Kind::Dir {
                link: None,
                listing: None,
            },
            Ok(t) if t.is_file() => match e.metadata() {
                Ok(md) => Kind::File(stat_of(&md)),
                Err(err) => Kind::Problem(format!("cannot stat: {err}").into()),
            },
            Ok(t) if t.is_symlink() => match std::fs::metadata(e.path()) {
                Ok(md) if md.is_file() => Kind::File(stat_of(&md)),
                Ok(md) if md.is_dir() => Kind::Dir {
                    link: Some((md.dev(), md.ino())),
                    listing: None,
                },
                Ok(md) => Kind::Problem(not_a_file(md.file_type()).into()),
                Err(err) => {
                    let target = std::fs::read_link(e.path()).map(|t| name_text(t.as_os_str()));
                    Kind::Problem(
                        format!(
                            "a symbolic link to {} that cannot be followed: {err}",
                            target.as_deref().unwrap_or("?")
                        )
                        .into(),
                    )
                }
            },
            Ok(t) => Kind::Problem(not_a_file(t).into()),
        };
        out.push(Entry {
            name: name_text(&e.file_name()).into(),
            kind,
        });
    }
    out.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(out)
}

fn not_a_file(t: std::fs::FileType) -> String {
    use std::os::unix::fs::FileTypeExt;
    let what = if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "of an unknown type"
    };
    format!("not a regular file or directory: {what}")
}

/// A file name as text: UTF-8 as is, a backslash doubled, and each byte that is not
/// UTF-8 as `\xNN` (a Latin-1 `café` is `caf\xE9`). Reversed by [`text_path`], so
/// every name a filesystem can hold is read, listed and shown.
pub fn name_text(name: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for chunk in name.as_bytes().utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

/// The path a text written by [`name_text`] stands for.
pub fn text_path(text: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    if !text.contains('\\') {
        return PathBuf::from(text);
    }
    let (b, mut out, mut i) = (text.as_bytes(), Vec::with_capacity(text.len()), 0);
    while i < b.len() {
        match (b[i], b.get(i + 1)) {
            (b'\\', Some(b'\\')) => {
                out.push(b'\\');
                i += 2;
            }
            (b'\\', Some(b'x')) if i + 4 <= b.len() => {
                let digit = |c: u8| (c as char).to_digit(16);
                match (digit(b[i + 2]), digit(b[i + 3])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 4;
                    }
                    _ => {
                        out.push(b[i]);
                        i += 1;
                    }
                }
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// `root` joined with a relative path written as text.
pub fn disk_path(root: &Path, rel: &str) -> PathBuf {
    root.join(text_path(rel))
}

/// Whether the link at `rel` leads to the directory it sits in or one above it. The
/// ancestor chain only knows link targets (real directories go unstatted), so without
/// this a link back up would be walked through once before it is seen again.
fn links_up(root: &Path, dir_rel: &str, rel: &str) -> bool {
    match (
        std::fs::canonicalize(disk_path(root, rel)),
        std::fs::canonicalize(disk_path(root, dir_rel)),
    ) {
        (Ok(target), Ok(here)) => here.starts_with(target),
        _ => false,
    }
}

fn child_rel(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

/// Walk the tree under `root` (a directory), handing each file's path relative to the
/// root and its stat — or why it is not a file that can be read — to `found`, in walk
/// order. Only the root itself must be listable.
pub fn walk(
    root: &Path,
    found: &mut dyn FnMut(String, Result<Stat, String>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let md = std::fs::metadata(root).with_context(|| format!("{} does not exist", root.display()))?;
    let mut stack = vec![Listed {
        rel: String::new(),
        ancestors: Arc::new(Ancestors {
            id: (md.dev(), md.ino()),
            parent: None,
        }),
        entries: list(root)?,
        next: 0,
    }];
    let mut ahead = 1;
    while let Some(top) = stack.last_mut() {
        let Some(entry) = top.entries.get_mut(top.next) else {
            stack.pop();
            continue;
        };
        top.next += 1;
        let rel = child_rel(&top.rel, &entry.name);
        let (link, listing) = match &mut entry.kind {
            Kind::File(stat) => {
                found(rel, Ok(*stat))?;
                continue;
            }
            Kind::Problem(why) => {
                found(rel, Err(why.to_string()))?;
                continue;
            }
            Kind::Dir { link, listing } => (*link, listing.take()),
        };
        let ancestors = match link {
            Some(id) if top.ancestors.contains(id) || links_up(root, &top.rel, &rel) => {
                found(rel, Err("a symbolic link back to a directory above it (a loop)".into()))?;
                continue;
            }
            Some(id) => Arc::new(Ancestors {
                id,
                parent: Some(top.ancestors.clone()),
            }),
            None => top.ancestors.clone(),
        };
        let listed = match listing {
            Some(listing) => *listing,
            None => {
                // List this directory and, meanwhile, its next sibling directories, which
                // the walk reaches after it.
                let mut next: Vec<(PathBuf, &mut Option<Listing>)> = top.entries[top.next..]
                    .iter_mut()
                    .filter_map(|e| match &mut e.kind {
                        Kind::Dir { listing, .. } if listing.is_none() => {
                            Some((disk_path(root, &child_rel(&top.rel, &e.name)), listing))
                        }
                        _ => None,
                    })
                    .take(ahead - 1)
                    .collect();
                let (this, biggest) = rayon::join(
                    || list(&disk_path(root, &rel)),
                    || {
                        next.par_iter_mut()
                            .map(|(path, listing)| {
                                let l = list(path);
                                let n = l.as_ref().map_or(0, Vec::len);
                                **listing = Some(Box::new(l));
                                n
                            })
                            .max()
                            .unwrap_or(0)
                    },
                );
                let biggest = biggest.max(this.as_ref().map_or(0, Vec::len));
                ahead = if biggest <= SMALL { (ahead * 2).min(AHEAD) } else { 1 };
                this
            }
        };
        let entries = match listed {
            Ok(entries) => entries,
            Err(e) => {
                // The directory is one problem row; the walk goes on past it.
                found(rel, Err(format!("cannot list this directory: {}", e.root_cause())))?;
                continue;
            }
        };
        stack.push(Listed {
            rel,
            ancestors,
            entries,
            next: 0,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_file_name_round_trips_through_text() {
        use std::os::unix::ffi::OsStrExt;
        for name in [
            &b"plain.dcm"[..],
            b"caf\xe9.dcm",
            b"a\\b",
            b"\\x41",
            b"\xff\xfe",
            "Nguyễn.dcm".as_bytes(),
        ] {
            let os = std::ffi::OsStr::from_bytes(name);
            let text = name_text(os);
            assert_eq!(text_path(&text).as_os_str(), os, "{text}");
        }
        assert_eq!(name_text(std::ffi::OsStr::from_bytes(b"caf\xe9.dcm")), "caf\\xE9.dcm");
        // Text that is not an escape stays as written.
        assert_eq!(text_path("\\xZZ"), PathBuf::from("\\xZZ"));
    }

    use super::*;

    /// The walk's files, and its problems as `rel: why`.
    fn files(root: &Path) -> (Vec<String>, Vec<String>) {
        let (mut out, mut problems) = (Vec::new(), Vec::new());
        walk(root, &mut |rel, stat| {
            match stat {
                Ok(_) => out.push(rel),
                Err(why) => problems.push(format!("{rel}: {why}")),
            }
            Ok(())
        })
        .unwrap();
        (out, problems)
    }

    #[test]
    fn walk_order_links_and_loops() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        // Many small directories, so listing ahead has work to do.
        let mut want = Vec::new();
        for p in 0..200 {
            for f in 0..(p % 3) {
                want.push(format!("m/p{p:03}/{f}.dcm"));
            }
            std::fs::create_dir_all(root.join(format!("m/p{p:03}"))).unwrap();
        }
        for name in ["a/1", "a-c", "b/x/3", "b/y", "z"] {
            want.push(name.to_string());
        }
        for f in &want {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), f).unwrap();
        }
        // Links are followed: to a file, to a directory.
        std::os::unix::fs::symlink(root.join("z"), root.join("b/link")).unwrap();
        std::os::unix::fs::symlink(root.join("b/x"), root.join("c")).unwrap();
        want.extend(["b/link".to_string(), "c/3".to_string()]);
        // Walk order: `Path` order.
        want.sort_by(|a, b| Path::new(a).cmp(Path::new(b)));
        assert_eq!(files(&root), (want.clone(), vec![]));

        // What cannot be read as a file is a problem under its name, and the walk goes on:
        // a dangling link, two links to each other, a link back up, a FIFO.
        std::os::unix::fs::symlink(root.join("gone"), root.join("d")).unwrap();
        std::os::unix::fs::symlink(root.join("e2"), root.join("e1")).unwrap();
        std::os::unix::fs::symlink(root.join("e1"), root.join("e2")).unwrap();
        std::os::unix::fs::symlink(root.join("b"), root.join("b/x/up")).unwrap();
        let fifo = std::ffi::CString::new(root.join("f").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let (got, problems) = files(&root);
        assert_eq!(got, want);
        let gone = root.join("gone").display().to_string();
        let loop_up = "a symbolic link back to a directory above it (a loop)";
        let link_loop = "that cannot be followed: Too many levels of symbolic links (os error 40)";
        let want = [
            ("b/x/up: ", loop_up),
            ("c/up: ", loop_up), // c is b/x, so c/up is b again
            (
                "d: a symbolic link to ",
                &*format!("{gone} that cannot be followed: No such file or directory (os error 2)"),
            ),
            ("e1: a symbolic link to ", link_loop),
            ("e2: a symbolic link to ", link_loop),
            ("f: ", "not a regular file or directory: a FIFO"),
        ];
        assert_eq!(problems.len(), want.len(), "{problems:?}");
        for (got, (start, end)) in problems.iter().zip(want) {
            assert!(got.starts_with(start) && got.ends_with(end), "{got}");
        }
    }
}

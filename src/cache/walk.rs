//! The tree walk behind every fingerprint and collect's listing.
//!
//! Files come out depth first with the entries of each directory sorted by name: the
//! order of `Path` comparison, which the stat cache and collect's previous result are
//! merged in. Symbolic links are followed; a link back to a directory above it is an
//! error rather than an endless walk.
//!
//! A PACS export is mostly directories of one or two files (one per patient or study),
//! so a walk is dominated by opening and reading directories, one after the other.
//! Directories that the walk will reach later are therefore listed ahead of time on
//! the thread pool, up to [`AHEAD`] at once; the order files come out in does not
//! change, and memory holds at most those listings.

use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rayon::prelude::*;

/// Directories listed ahead of the walk at once.
const AHEAD: usize = 64;

/// How far down the stack of pending work to look for directories to list ahead.
const LOOK: usize = 1024;

/// A file's stat as the stat cache compares it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i128,
    pub ino: u64,
}

pub fn stat_of(md: &std::fs::Metadata) -> Stat {
    Stat {
        size: md.len(),
        mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
        ino: md.ino(),
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

/// What is left to do, as a stack: the top is next in walk order.
enum Pending {
    File(String, Stat),
    Dir {
        path: PathBuf,
        rel: String,
        ancestors: Arc<Ancestors>,
        listing: Option<anyhow::Result<Vec<Entry>>>,
    },
}

/// One entry of a listed directory.
struct Entry {
    name: String,
    /// `Some` for a file; `None` for a directory.
    stat: Option<Stat>,
    /// For a directory reached through a link: the target's (device, inode).
    link: Option<(u64, u64)>,
}

/// List a directory: names sorted, files statted (through the directory's handle),
/// links followed, anything else (sockets, devices, dangling links) left out.
fn list(dir: &Path) -> anyhow::Result<Vec<Entry>> {
    let cannot = || format!("cannot walk {}", dir.display());
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).with_context(cannot)? {
        let e = e.with_context(cannot)?;
        let kind = e.file_type().with_context(cannot)?;
        found.push((e, kind));
    }
    let entry = |(e, kind): &(std::fs::DirEntry, std::fs::FileType)| -> anyhow::Result<Option<Entry>> {
        let name = e.file_name().to_string_lossy().into_owned();
        let stat = |md: &std::fs::Metadata| Some(stat_of(md));
        Ok(Some(if kind.is_dir() {
            Entry {
                name,
                stat: None,
                link: None,
            }
        } else if kind.is_file() {
            let md = e
                .metadata()
                .with_context(|| format!("cannot stat {}", e.path().display()))?;
            Entry {
                name,
                stat: stat(&md),
                link: None,
            }
        } else if kind.is_symlink() {
            let Ok(md) = std::fs::metadata(e.path()) else {
                return Ok(None); // dangling
            };
            match (md.is_file(), md.is_dir()) {
                (true, _) => Entry {
                    name,
                    stat: stat(&md),
                    link: None,
                },
                (_, true) => Entry {
                    name,
                    stat: None,
                    link: Some((md.dev(), md.ino())),
                },
                _ => return Ok(None),
            }
        } else {
            return Ok(None);
        }))
    };
    // The files of a big directory (an HIS export is often one) are statted in parallel.
    let entries: Vec<anyhow::Result<Option<Entry>>> = if found.len() >= 64 {
        found.par_iter().map(entry).collect()
    } else {
        found.iter().map(entry).collect()
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        out.extend(e?);
    }
    out.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(out)
}

/// Walk the tree under `root` (a directory), handing each file's path relative to the
/// root and its stat to `found`, in walk order.
pub fn walk(root: &Path, found: &mut dyn FnMut(String, Stat) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let md = std::fs::metadata(root).with_context(|| format!("{} does not exist", root.display()))?;
    let mut stack = vec![Pending::Dir {
        path: root.to_path_buf(),
        rel: String::new(),
        ancestors: Arc::new(Ancestors {
            id: (md.dev(), md.ino()),
            parent: None,
        }),
        listing: None,
    }];
    while let Some(top) = stack.pop() {
        let (path, rel, ancestors, listing) = match top {
            Pending::File(rel, stat) => {
                found(rel, stat)?;
                continue;
            }
            Pending::Dir {
                path,
                rel,
                ancestors,
                listing,
            } => (path, rel, ancestors, listing),
        };
        let listing = match listing {
            Some(l) => l,
            None => {
                // List this directory and, meanwhile, the next ones the walk will reach.
                let mut ahead: Vec<&mut Pending> = stack
                    .iter_mut()
                    .rev()
                    .take(LOOK)
                    .filter(|p| matches!(p, Pending::Dir { listing: None, .. }))
                    .take(AHEAD - 1)
                    .collect();
                let (this, _) = rayon::join(
                    || list(&path),
                    || {
                        ahead.par_iter_mut().for_each(|p| {
                            if let Pending::Dir { path, listing, .. } = &mut **p {
                                *listing = Some(list(path));
                            }
                        })
                    },
                );
                this
            }
        };
        // Pushed in reverse, so the first entry is on top.
        let mut children = VecDeque::new();
        for e in listing? {
            let child = if rel.is_empty() {
                e.name
            } else {
                format!("{rel}/{}", e.name)
            };
            match e.stat {
                Some(stat) => children.push_front(Pending::File(child, stat)),
                None => {
                    let ancestors = match e.link {
                        Some(id) if ancestors.contains(id) => anyhow::bail!(
                            "{}: a symbolic link loops back to a directory above it",
                            root.join(&child).display()
                        ),
                        Some(id) => Arc::new(Ancestors {
                            id,
                            parent: Some(ancestors.clone()),
                        }),
                        None => ancestors.clone(),
                    };
                    children.push_front(Pending::Dir {
                        path: root.join(&child),
                        rel: child,
                        ancestors,
                        listing: None,
                    })
                }
            }
        }
        stack.extend(children);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(root: &Path) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        walk(root, &mut |rel, _| {
            out.push(rel);
            Ok(())
        })?;
        Ok(out)
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
        // Links are followed: to a file, to a directory; a dangling one is left out.
        std::os::unix::fs::symlink(root.join("z"), root.join("b/link")).unwrap();
        std::os::unix::fs::symlink(root.join("b/x"), root.join("c")).unwrap();
        std::os::unix::fs::symlink(root.join("gone"), root.join("d")).unwrap();
        want.extend(["b/link".to_string(), "c/3".to_string()]);
        // Walk order: `Path` order.
        want.sort_by(|a, b| Path::new(a).cmp(Path::new(b)));
        assert_eq!(files(&root).unwrap(), want);

        std::os::unix::fs::symlink(root.join("b"), root.join("b/x/up")).unwrap();
        let err = files(&root).unwrap_err().to_string();
        assert!(err.contains("loops back to a directory above it"), "{err}");
    }
}

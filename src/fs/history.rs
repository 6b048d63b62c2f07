//! Old states in the mount, read-only: `MOUNT/.snapshots/NAME/…`, one
//! directory per index snapshot generation the retention policy keeps,
//! named by its UTC time (issue 14).
//!
//! `.snapshots` answers `lookup` in the root but is never listed by
//! `readdir` (as ZFS's `snapdir=hidden`), so `find`, `du` and
//! `rsync -a --delete SRC/ MOUNT/` neither see nor touch it; a real entry
//! of that name in the root wins. A generation's directory opens that
//! generation's index read-only ([`GenerationSource::open`]: the sync
//! engine assembles it once, downloading only the blocks no local index
//! file holds) and its files are read through the mount's own
//! pack store: the same local packs and caches, and ranged reads from a
//! backend for packs no longer local (gc keeps every pack a kept
//! generation references on the backends). Everything that would change it
//! is EROFS. Undelete is `cp -a MOUNT/.snapshots/NAME/path MOUNT/path`.
//!
//! Inode numbers: a view inode is `VIEW_BIT | generation << 40 | inode in
//! that generation`; `.snapshots` itself is `VIEW_BIT`. Live inode numbers
//! never reach bit 62.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::*;

/// The hidden directory's name in the mount root.
pub const SNAPDIR_NAME: &[u8] = b".snapshots";
const VIEW_BIT: u64 = 1 << 62;
const GEN_SHIFT: u32 = 40;
const INNER_MASK: u64 = (1 << GEN_SHIFT) - 1;
/// `.snapshots`.
pub const SNAPDIR_INO: u64 = VIEW_BIT;

/// Where old generations come from (the sync engine, set at mount).
pub trait GenerationSource: Send + Sync {
    /// The kept generations and their directory names (unique, by UTC time).
    fn generations(&self) -> Vec<(u64, String)>;
    /// Generation `generation`'s index, opened read-only.
    fn open(&self, generation: u64) -> Result<Index, String>;
}

#[derive(Default)]
pub(super) struct History {
    source: OnceLock<Arc<dyn GenerationSource>>,
    open: Mutex<HashMap<u64, Arc<Mutex<Index>>>>,
}

/// Whether `ino` belongs to the history view.
pub fn is_view(ino: u64) -> bool {
    ino & VIEW_BIT != 0
}

fn split(ino: u64) -> (u64, u64) {
    ((ino & !VIEW_BIT) >> GEN_SHIFT, ino & INNER_MASK)
}

fn join(generation: u64, inner: u64) -> FsResult<u64> {
    if inner > INNER_MASK || generation >= (1 << (62 - GEN_SHIFT)) {
        return Err(FsError::NotSupported);
    }
    Ok(VIEW_BIT | generation << GEN_SHIFT | inner)
}

/// Refuses a change to a view inode.
pub(super) fn refuse(ino: u64) -> FsResult<()> {
    if is_view(ino) {
        return Err(FsError::ReadOnly);
    }
    Ok(())
}

impl FsCore {
    /// Turns the `.snapshots` view on (the daemon, when the vault keeps
    /// index snapshots on backends).
    pub fn set_history(&self, source: Arc<dyn GenerationSource>) {
        let _ = self.history.source.set(source);
    }

    /// `.snapshots` in the root when no real entry has that name.
    pub(super) fn history_root_lookup(&self, parent: u64, name: &[u8]) -> Option<FsResult<Attr>> {
        (parent == ROOT_INO && name == SNAPDIR_NAME && self.history.source.get().is_some())
            .then(|| self.view_getattr(SNAPDIR_INO))
    }

    fn generation_index(&self, generation: u64) -> FsResult<Arc<Mutex<Index>>> {
        if let Some(i) = self.history.open.lock().get(&generation) {
            return Ok(i.clone());
        }
        let source = self.history.source.get().ok_or(FsError::NotFound)?;
        let idx = source.open(generation).map_err(|e| {
            log::error!("cannot open snapshot generation {generation}: {e}");
            FsError::Inconsistent {
                path: format!("/.snapshots (generation {generation})"),
                detail: e,
            }
        })?;
        let idx = Arc::new(Mutex::new(idx));
        self.history
            .open
            .lock()
            .entry(generation)
            .or_insert(idx.clone());
        Ok(idx)
    }

    fn mapped(generation: u64, mut a: Attr) -> FsResult<Attr> {
        a.ino = join(generation, a.ino)?;
        Ok(a)
    }

    pub(super) fn view_getattr(&self, ino: u64) -> FsResult<Attr> {
        if ino == SNAPDIR_INO {
            let mut a = self.getattr(ROOT_INO)?;
            a.ino = SNAPDIR_INO;
            a.perm = 0o555;
            a.nlink = 2;
            a.size = 0;
            a.blocks = 0;
            return Ok(a);
        }
        let (g, inner) = split(ino);
        let idx = self.generation_index(g)?;
        let idx = idx.lock();
        let mut a = idx.attr(inner)?.ok_or(FsError::NotFound)?;
        if a.kind == FileKind::Regular {
            a.blocks = Self::data_blocks(&idx, inner, None)?;
        }
        Self::mapped(g, a)
    }

    pub(super) fn view_lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        if name == b"." {
            return self.view_getattr(parent);
        }
        if parent == SNAPDIR_INO {
            if name == b".." {
                return self.getattr(ROOT_INO);
            }
            let source = self.history.source.get().ok_or(FsError::NotFound)?;
            let g = source
                .generations()
                .into_iter()
                .find(|(_, n)| n.as_bytes() == name)
                .map(|(g, _)| g)
                .ok_or(FsError::NotFound)?;
            return self.view_getattr(join(g, ROOT_INO)?);
        }
        let (g, inner) = split(parent);
        let up = {
            let idx = self.generation_index(g)?;
            let idx = idx.lock();
            let p = idx.attr(inner)?.ok_or(FsError::NotFound)?;
            if p.kind != FileKind::Directory {
                return Err(FsError::NotDir);
            }
            if name == b".." {
                match inner {
                    ROOT_INO => SNAPDIR_INO,
                    _ => join(g, idx.parent_of(inner)?.ok_or(FsError::NotFound)?)?,
                }
            } else {
                join(g, idx.lookup(inner, name)?.ok_or(FsError::NotFound)?)?
            }
        };
        self.view_getattr(up)
    }

    pub(super) fn view_readdir(
        &self,
        ino: u64,
        after: u64,
        limit: usize,
    ) -> FsResult<Vec<DirEntry>> {
        let dot = |cursor, name: &[u8], ino| DirEntry {
            cursor,
            name: name.to_vec(),
            ino,
            kind: FileKind::Directory,
        };
        let mut out = Vec::new();
        if ino == SNAPDIR_INO {
            if after < 1 {
                out.push(dot(1, b".", SNAPDIR_INO));
            }
            if after < 2 {
                out.push(dot(2, b"..", ROOT_INO));
            }
            let source = self.history.source.get().ok_or(FsError::NotFound)?;
            let mut gens = source.generations();
            gens.sort();
            for (g, name) in gens {
                if g + 2 > after && out.len() < limit {
                    out.push(dot(g + 2, name.as_bytes(), join(g, ROOT_INO)?));
                }
            }
            return Ok(out);
        }
        let (g, inner) = split(ino);
        let idx = self.generation_index(g)?;
        let idx = idx.lock();
        let a = idx.attr(inner)?.ok_or(FsError::NotFound)?;
        if a.kind != FileKind::Directory {
            return Err(FsError::NotDir);
        }
        if after < 1 {
            out.push(dot(1, b".", ino));
        }
        if after < 2 {
            let parent = match inner {
                ROOT_INO => SNAPDIR_INO,
                _ => join(g, idx.parent_of(inner)?.unwrap_or(ROOT_INO))?,
            };
            out.push(dot(2, b"..", parent));
        }
        for mut e in idx.read_dir(inner, after.saturating_sub(2), limit)? {
            e.cursor += 2;
            e.ino = join(g, e.ino)?;
            out.push(e);
        }
        Ok(out)
    }

    pub(super) fn view_readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let (g, inner) = split(ino);
        let idx = self.generation_index(g)?;
        let target = idx.lock().symlink(inner)?;
        target.ok_or(FsError::Invalid)
    }

    pub(super) fn view_getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        if ino == SNAPDIR_INO {
            return Err(FsError::NoAttr);
        }
        let (g, inner) = split(ino);
        let idx = self.generation_index(g)?;
        let v = idx.lock().xattr(inner, name)?;
        v.ok_or(FsError::NoAttr)
    }

    pub(super) fn view_xattr_names(&self, ino: u64) -> FsResult<Vec<Vec<u8>>> {
        if ino == SNAPDIR_INO {
            return Ok(Vec::new());
        }
        let (g, inner) = split(ino);
        let idx = self.generation_index(g)?;
        let names = idx.lock().xattr_names(inner)?;
        Ok(names)
    }

    /// Reads a file of an old generation through the mount's pack store.
    pub(super) fn view_read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        // As for live reads: no pack file goes while this read is planned.
        let _gc_gate = self.data.packs.read_guard();
        let (g, inner) = split(ino);
        let idx = self.generation_index(g)?;
        let (end, plan) = {
            let idx = idx.lock();
            let a = idx.attr(inner)?.ok_or(FsError::NotFound)?;
            if a.kind == FileKind::Directory {
                return Err(FsError::IsDir);
            }
            if offset >= a.size {
                return Ok(Vec::new());
            }
            let end = (offset + size as u64).min(a.size);
            let mut plan = Vec::new();
            for e in idx.extents_in(inner, offset, end)? {
                let loc = idx.chunk_location(&e.chunk)?;
                let name = match &loc {
                    Some(l) => idx.pack_name(l.pack)?,
                    None => None,
                };
                plan.push((e, loc, name));
            }
            (end, plan)
        };
        let mut buf = vec![0u8; (end - offset) as usize];
        for (e, loc, name) in plan {
            let (Some(loc), Some(name)) = (loc, name) else {
                return Err(FsError::Inconsistent {
                    path: format!("/.snapshots (generation {g}, inode {inner})"),
                    detail: format!("chunk {:?} is missing from that index", e.chunk),
                });
            };
            let plain = self
                .data
                .packs
                .read_chunk(&e.chunk, &loc, &name)
                .map_err(|source| FsError::Data {
                    path: format!("/.snapshots (generation {g}, inode {inner})"),
                    source: Box::new(source),
                })?;
            let s = e.offset.max(offset);
            let t = (e.offset + e.length).min(end);
            let from = (e.chunk_offset + (s - e.offset)) as usize;
            let to = from + (t - s) as usize;
            if to > plain.len() {
                return Err(FsError::Inconsistent {
                    path: format!("/.snapshots (generation {g}, inode {inner})"),
                    detail: "extent is longer than its chunk".into(),
                });
            }
            buf[(s - offset) as usize..(t - offset) as usize].copy_from_slice(&plain[from..to]);
        }
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_inodes_round_trip_and_never_meet_live_ones() {
        let ino = join(12, 345).unwrap();
        assert!(is_view(ino));
        assert_eq!(split(ino), (12, 345));
        assert!(!is_view(INNER_MASK));
        assert!(is_view(SNAPDIR_INO));
        assert_eq!(split(SNAPDIR_INO), (0, 0));
        assert!(join(1, INNER_MASK + 1).is_err());
        assert!(refuse(ino).is_err() && refuse(ROOT_INO).is_ok());
    }
}

//! The checks: [`load`] reads the tables and lists the store, [`analyse`]
//! runs one check per finding class (or small group of related classes) in
//! a fixed order, each adding findings to the [`Report`] and the concrete
//! fixes to [`Fixes`]. Nothing here writes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};

use super::{Class, Report};
use crate::chunk::pack::PackId;
use crate::index::fsck::{FsckDirent, FsckTables};
use crate::index::{FileKind, Index, PACK_STORED, ROOT_INO};

/// Every table fsck looks at, plus the pack files of the local store.
pub(super) struct Snapshot {
    db: FsckTables,
    /// `packs/ab/<hex>.pack` (and anything else under `packs/`) → size.
    files: BTreeMap<String, u64>,
}

/// Reads the index tables and lists the pack files under `store_root`.
pub(super) fn load(index: &Index, store_root: &Path) -> Result<Snapshot> {
    let db = index.fsck_tables()?;
    let mut files = BTreeMap::new();
    list_files(&store_root.join("packs"), "packs", &mut files)?;
    Ok(Snapshot { db, files })
}

/// Files under `dir` (recursive) as store paths `prefix/...` → size.
fn list_files(dir: &Path, prefix: &str, out: &mut BTreeMap<String, u64>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for e in entries {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let md = e
            .metadata()
            .with_context(|| format!("cannot stat {}", e.path().display()))?;
        let rel = format!("{prefix}/{name}");
        if md.is_dir() {
            list_files(&e.path(), &rel, out)?;
        } else {
            out.insert(rel, md.len());
        }
    }
    Ok(())
}

/// The store path of a pack row's name (`None` if it is not 16 bytes).
pub(super) fn pack_path(name: &[u8]) -> Option<String> {
    let arr: [u8; 16] = name.try_into().ok()?;
    Some(PackId(arr).object_path())
}

// ---------------------------------------------------------------------------
// Analysis: findings plus the concrete fixes for each

/// What a pack row's files and rows say about the pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PackVerdict {
    Ok,
    /// Its chunks are lost (referenced) or it is unused and gone (drop rows).
    Gone,
    WrongSizeRemoteOk,
    MarkStored(u64),
    DropUnstored,
    MarkEvicted,
    Unevict,
}

/// What `repair` should do, as found by one analysis.
#[derive(Default)]
pub(super) struct Fixes {
    pub(super) drop_dirents: Vec<i64>,
    pub(super) drop_symlink_rows: Vec<u64>,
    pub(super) drop_xattr_rows: Vec<u64>,
    pub(super) drop_extent_rows: Vec<u64>,
    pub(super) drop_orphan_rows: Vec<u64>,
    pub(super) drop_placements: Vec<i64>,
    pub(super) drop_evicted: Vec<i64>,
    pub(super) remove_symlink_inodes: Vec<u64>,
    pub(super) pending_orphans: Vec<u64>,
    pub(super) unreachable: Vec<u64>,
    pub(super) detached_dirs: Vec<u64>,
    pub(super) trim_extents: Vec<(u64, u64)>,
    pub(super) packs: Vec<(i64, PackVerdict)>,
    pub(super) drop_chunk_rows: Vec<Vec<u8>>,
    pub(super) leftover_files: Vec<String>,
    pub(super) refcounts: bool,
    pub(super) nlinks: bool,
}

pub(super) struct Analysis {
    pub(super) report: Report,
    pub(super) fixes: Fixes,
}

fn hex_short(id: &[u8]) -> String {
    hex::encode(&id[..id.len().min(8)])
}

/// What every check reads: the snapshot, paths for examples, the inodes in order.
struct View<'a> {
    index: &'a Index,
    db: &'a FsckTables,
    files: &'a BTreeMap<String, u64>,
    /// Every inode number, ascending.
    inos: Vec<u64>,
}

impl View<'_> {
    /// The path of `ino` for an example (a placeholder if it has none).
    fn path(&self, ino: u64) -> String {
        match self.index.path_of(ino) {
            Ok(p) => String::from_utf8_lossy(&p).into_owned(),
            Err(_) => format!("<inode {ino}>"),
        }
    }

    fn is_dir(&self, ino: u64) -> bool {
        self.db.inodes.get(&ino).map(|i| i.kind) == Some(FileKind::Directory)
    }
}

/// The valid names of each inode: directory entries that survived [`dirents`].
type Names<'a> = HashMap<u64, Vec<&'a FsckDirent>>;

/// Chunks whose bytes are lost and files that lost data, across checks.
#[derive(Default)]
struct Lost<'a> {
    chunks: HashSet<&'a [u8]>,
    inodes: BTreeSet<u64>,
}

/// What the chunk check tells the pack check.
struct ChunkUse<'a> {
    /// Packs holding a chunk some extent references.
    live_packs: HashSet<i64>,
    /// Pack id → its chunk ids.
    chunks_of_pack: HashMap<i64, Vec<&'a [u8]>>,
}

/// Runs every check on `s`, in order.
pub(super) fn analyse(index: &Index, s: &Snapshot) -> Result<Analysis> {
    let db = &s.db;
    let mut inos: Vec<u64> = db.inodes.keys().copied().collect();
    inos.sort_unstable();
    let v = View {
        index,
        db,
        files: &s.files,
        inos,
    };
    let mut a = Analysis {
        report: Report {
            inodes: db.inodes.len() as u64,
            extents: db.extents.len() as u64,
            chunks: db.chunks.len() as u64,
            packs: db.packs.len() as u64,
            pack_files: s.files.len() as u64,
            ..Report::default()
        },
        fixes: Fixes::default(),
    };
    let mut lost = Lost::default();

    let names = dirents(&v, &mut a);
    directory_hard_links(&v, &names, &mut a);
    reachability(&v, &names, &mut a);
    orphan_rows(&v, &names, &mut a);
    link_counts(&v, &names, &mut a);
    symlinks(&v, &mut a);
    xattr_rows(&v, &mut a);
    let refs = extents(&v, &mut a, &mut lost);
    let used = chunks(&v, &refs, &mut a, &mut lost);
    let placed = placement_rows(&v, &mut a);
    evicted_rows(&v, &mut a);
    let named = packs(&v, &used, &placed, &mut a, &mut lost);
    leftover_files(&v, &named, &mut a);
    damaged_files(&v, lost, &mut a.report);
    Ok(a)
}

/// Entries naming a missing inode or sitting in a non-directory
/// (`dirent_missing_inode`, `dirent_bad_parent`); returns the valid names.
fn dirents<'a>(v: &View<'a>, a: &mut Analysis) -> Names<'a> {
    let Analysis {
        report: r,
        fixes: fx,
    } = a;
    let mut names: Names<'a> = HashMap::new();
    for d in &v.db.dirents {
        if !v.db.inodes.contains_key(&d.ino) {
            r.add(Class::DirentMissingInode, || {
                format!(
                    "{}/{} -> inode {}",
                    v.path(d.parent).trim_end_matches('/'),
                    String::from_utf8_lossy(&d.name),
                    d.ino
                )
            });
            fx.drop_dirents.push(d.id);
        } else if !v.is_dir(d.parent) {
            r.add(Class::DirentBadParent, || {
                format!(
                    "entry {:?} (inode {}) in inode {}",
                    String::from_utf8_lossy(&d.name),
                    d.ino,
                    d.parent
                )
            });
            fx.drop_dirents.push(d.id);
        } else {
            names.entry(d.ino).or_default().push(d);
        }
    }
    names
}

/// Directories with more than one name (`directory_hard_link`).
fn directory_hard_links(v: &View, names: &Names, a: &mut Analysis) {
    let Analysis {
        report: r,
        fixes: fx,
    } = a;
    for (ino, ds) in names {
        if v.is_dir(*ino) && ds.len() > 1 {
            r.add(Class::DirectoryHardLink, || {
                format!("{} has {} names", v.path(*ino), ds.len())
            });
            let keep = ds.iter().map(|d| d.id).min().unwrap_or(0);
            fx.drop_dirents
                .extend(ds.iter().map(|d| d.id).filter(|&id| id != keep));
        }
    }
}

/// Inodes the walk from the root never reaches (`unreachable_inode`,
/// `detached_directory`), and pending orphans (not findings).
fn reachability(v: &View, names: &Names, a: &mut Analysis) {
    let Analysis {
        report: r,
        fixes: fx,
    } = a;
    let mut children: HashMap<u64, Vec<u64>> = HashMap::new();
    for ds in names.values() {
        for d in ds {
            children.entry(d.parent).or_default().push(d.ino);
        }
    }
    let mut reached: HashSet<u64> = HashSet::new();
    reached.insert(ROOT_INO);
    let mut stack = vec![ROOT_INO];
    while let Some(dir) = stack.pop() {
        for &c in children.get(&dir).map(Vec::as_slice).unwrap_or(&[]) {
            if reached.insert(c) && v.is_dir(c) {
                stack.push(c);
            }
        }
    }
    for &ino in &v.inos {
        if reached.contains(&ino) {
            continue;
        }
        let i = &v.db.inodes[&ino];
        if !names.contains_key(&ino) {
            if v.db.orphans.contains(&ino) {
                r.pending_orphans += 1;
                fx.pending_orphans.push(ino);
            } else {
                r.add(Class::UnreachableInode, || {
                    format!(
                        "inode {ino} ({:?}, {} bytes, nlink {})",
                        i.kind, i.size, i.nlink
                    )
                });
                fx.unreachable.push(ino);
            }
        } else if i.kind == FileKind::Directory {
            r.add(Class::DetachedDirectory, || {
                format!("directory inode {ino} (last known as {})", v.path(ino))
            });
            fx.detached_dirs.push(ino);
        }
    }
}

/// Orphan rows for a missing inode or one that has names (`dangling_orphan_row`).
fn orphan_rows(v: &View, names: &Names, a: &mut Analysis) {
    let Analysis {
        report: r,
        fixes: fx,
    } = a;
    for &o in &v.db.orphans {
        if !v.db.inodes.contains_key(&o) || names.contains_key(&o) {
            r.add(Class::DanglingOrphanRow, || match v.db.inodes.get(&o) {
                None => format!("orphan row for missing inode {o}"),
                Some(_) => format!("orphan row for linked {}", v.path(o)),
            });
            fx.drop_orphan_rows.push(o);
        }
    }
}

/// Link counts that differ from the directory entries (`nlink_mismatch`).
fn link_counts(v: &View, names: &Names, a: &mut Analysis) {
    let Analysis {
        report: r,
        fixes: fx,
    } = a;
    let mut subdirs: HashMap<u64, u64> = HashMap::new();
    for ds in names.values() {
        for d in ds {
            if v.is_dir(d.ino) {
                *subdirs.entry(d.parent).or_default() += 1;
            }
        }
    }
    for &ino in &v.inos {
        let i = &v.db.inodes[&ino];
        let n = names.get(&ino).map_or(0, |v| v.len() as u64);
        if n == 0 && ino != ROOT_INO {
            continue; // unreachable or pending orphan: counted above
        }
        let want = if i.kind == FileKind::Directory {
            2 + subdirs.get(&ino).copied().unwrap_or(0)
        } else {
            n
        };
        if i.nlink != want {
            r.add(Class::NlinkMismatch, || {
                format!("{}: nlink {} but {want} expected", v.path(ino), i.nlink)
            });
            fx.nlinks = true;
        }
    }
}

/// Target rows without a symlink and symlinks without a target
/// (`dangling_symlink_row`, `symlink_without_target`).
fn symlinks(v: &View, a: &mut Analysis) {
    let Analysis {
        report: r,
        fixes: fx,
    } = a;
    let symlink_rows: HashSet<u64> = v.db.symlinks.iter().copied().collect();
    for &ino in &v.db.symlinks {
        if v.db.inodes.get(&ino).map(|i| i.kind) != Some(FileKind::Symlink) {
            r.add(Class::DanglingSymlinkRow, || {
                format!("symlink row for inode {ino}")
            });
            fx.drop_symlink_rows.push(ino);
        }
    }
    for &ino in &v.inos {
        if v.db.inodes[&ino].kind == FileKind::Symlink && !symlink_rows.contains(&ino) {
            r.add(Class::SymlinkWithoutTarget, || v.path(ino));
            fx.remove_symlink_inodes.push(ino);
        }
    }
}

/// Xattr rows of a missing inode (`dangling_xattr_row`).
fn xattr_rows(v: &View, a: &mut Analysis) {
    let Analysis {
        report: r,
        fixes: fx,
    } = a;
    for &ino in &v.db.xattr_inodes {
        if !v.db.inodes.contains_key(&ino) {
            r.add(Class::DanglingXattrRow, || format!("xattrs of inode {ino}"));
            fx.drop_xattr_rows.push(ino);
        }
    }
}

/// Extents of a missing or non-regular inode, overlapping, past the file's
/// size, without a chunk or past their chunk (`dangling_extent_row`,
/// `extent_overlap`, `extent_beyond_size`, `extent_without_chunk`,
/// `extent_beyond_chunk`); returns how many extents reference each chunk.
fn extents<'a>(v: &View<'a>, a: &mut Analysis, lost: &mut Lost) -> HashMap<&'a [u8], i64> {
    let Analysis {
        report: r,
        fixes: fx,
    } = a;
    let mut refs: HashMap<&[u8], i64> = HashMap::new();
    let mut prev: Option<(u64, u64)> = None; // (ino, end of previous extent)
    let mut dangling_extent_inodes: BTreeSet<u64> = BTreeSet::new();
    let mut trimmed: BTreeSet<u64> = BTreeSet::new();
    for e in &v.db.extents {
        *refs.entry(e.chunk.as_slice()).or_default() += 1;
        let Some(i) =
            v.db.inodes
                .get(&e.ino)
                .filter(|i| i.kind == FileKind::Regular)
        else {
            if dangling_extent_inodes.insert(e.ino) {
                fx.drop_extent_rows.push(e.ino);
            }
            r.add(Class::DanglingExtentRow, || {
                format!("extent at {} of inode {}", e.offset, e.ino)
            });
            continue;
        };
        let end = e.offset + e.length;
        if let Some((pino, pend)) = prev {
            if pino == e.ino && e.offset < pend {
                r.add(Class::ExtentOverlap, || {
                    format!("{} at offset {}", v.path(e.ino), e.offset)
                });
                lost.inodes.insert(e.ino);
            }
        }
        prev = Some((
            e.ino,
            prev.filter(|p| p.0 == e.ino).map_or(end, |p| p.1.max(end)),
        ));
        if end > i.size {
            r.add(Class::ExtentBeyondSize, || {
                format!(
                    "{}: extent {}..{end} but size {}",
                    v.path(e.ino),
                    e.offset,
                    i.size
                )
            });
            if trimmed.insert(e.ino) {
                fx.trim_extents.push((e.ino, i.size));
            }
        }
        match v.db.chunks.get(&e.chunk) {
            None => {
                r.add(Class::ExtentWithoutChunk, || {
                    format!(
                        "{} at offset {} (chunk {})",
                        v.path(e.ino),
                        e.offset,
                        hex_short(&e.chunk)
                    )
                });
                lost.inodes.insert(e.ino);
            }
            Some(c) => {
                if e.chunk_offset + e.length > c.plain_len {
                    r.add(Class::ExtentBeyondChunk, || {
                        format!(
                            "{} at offset {}: chunk bytes {}..{} of {}",
                            v.path(e.ino),
                            e.offset,
                            e.chunk_offset,
                            e.chunk_offset + e.length,
                            c.plain_len
                        )
                    });
                    lost.inodes.insert(e.ino);
                }
            }
        }
    }
    refs
}

/// Refcounts that differ from the extents and chunks whose pack row is
/// missing (`refcount_mismatch`, `chunk_pack_row_missing`,
/// `dangling_chunk_row`); returns which packs are used and what they hold.
fn chunks<'a>(
    v: &View<'a>,
    refs: &HashMap<&[u8], i64>,
    a: &mut Analysis,
    lost: &mut Lost<'a>,
) -> ChunkUse<'a> {
    let Analysis {
        report: r,
        fixes: fx,
    } = a;
    let mut chunk_ids: Vec<&Vec<u8>> = v.db.chunks.keys().collect();
    chunk_ids.sort();
    let mut live_packs: HashSet<i64> = HashSet::new();
    for id in &chunk_ids {
        let c = &v.db.chunks[*id];
        let n = refs.get(id.as_slice()).copied().unwrap_or(0);
        if c.refcount != n {
            r.add(Class::RefcountMismatch, || {
                format!(
                    "chunk {}: refcount {} but {n} extents",
                    hex_short(id),
                    c.refcount
                )
            });
            fx.refcounts = true;
        }
        if !v.db.packs.contains_key(&c.pack) {
            if n > 0 {
                r.add(Class::ChunkPackRowMissing, || {
                    format!("chunk {} in pack #{}", hex_short(id), c.pack)
                });
                lost.chunks.insert(id.as_slice());
            } else {
                r.add(Class::DanglingChunkRow, || {
                    format!("chunk {} in pack #{}", hex_short(id), c.pack)
                });
                fx.drop_chunk_rows.push((*id).clone());
            }
        } else if n > 0 {
            live_packs.insert(c.pack);
        }
    }
    let mut chunks_of_pack: HashMap<i64, Vec<&[u8]>> = HashMap::new();
    for (id, c) in &v.db.chunks {
        chunks_of_pack
            .entry(c.pack)
            .or_default()
            .push(id.as_slice());
    }
    ChunkUse {
        live_packs,
        chunks_of_pack,
    }
}

/// Placement rows of a missing pack (`dangling_placement_row`); returns the
/// number of placements of each existing pack.
fn placement_rows(v: &View, a: &mut Analysis) -> HashMap<i64, usize> {
    let Analysis {
        report: r,
        fixes: fx,
    } = a;
    let mut placed: HashMap<i64, usize> = HashMap::new();
    for (p, b) in &v.db.placements {
        if v.db.packs.contains_key(p) {
            *placed.entry(*p).or_default() += 1;
        } else {
            r.add(Class::DanglingPlacementRow, || {
                format!("pack #{p} on backend {b}")
            });
            fx.drop_placements.push(*p);
        }
    }
    placed
}

/// Evicted rows of a missing pack (`dangling_evicted_row`).
fn evicted_rows(v: &View, a: &mut Analysis) {
    let Analysis {
        report: r,
        fixes: fx,
    } = a;
    let mut evicted: Vec<i64> = v.db.evicted.iter().copied().collect();
    evicted.sort_unstable();
    for p in evicted {
        if !v.db.packs.contains_key(&p) {
            r.add(Class::DanglingEvictedRow, || format!("pack #{p}"));
            fx.drop_evicted.push(p);
        }
    }
}

/// Pack rows against the pack files in the store (`pack_missing`,
/// `unused_pack_missing`, `pack_wrong_size`, `pack_wrong_size_remote_ok`,
/// `pack_not_marked_stored`, `unstored_pack_row`, `pack_evicted_unmarked`,
/// `evicted_but_local`); returns the store paths the rows name.
fn packs<'a>(
    v: &View<'a>,
    used: &ChunkUse<'a>,
    placed: &HashMap<i64, usize>,
    a: &mut Analysis,
    lost: &mut Lost<'a>,
) -> HashSet<String> {
    let Analysis {
        report: r,
        fixes: fx,
    } = a;
    let chunks_of_pack = &used.chunks_of_pack;
    let mut named: HashSet<String> = HashSet::new();
    for (&id, p) in &v.db.packs {
        let Some(file) = pack_path(&p.name) else {
            // A name that is not 16 bytes cannot be written by tresor.
            r.add(Class::UnusedPackMissing, || {
                format!("pack #{id} has a malformed name")
            });
            continue;
        };
        named.insert(file.clone());
        let on_disk = v.files.get(&file).copied();
        let is_placed = placed.get(&id).copied().unwrap_or(0) > 0;
        let is_evicted = v.db.evicted.contains(&id);
        let live = used.live_packs.contains(&id);
        let has_chunks = chunks_of_pack.contains_key(&id);
        let verdict = if p.state != PACK_STORED {
            match (has_chunks, on_disk) {
                (false, _) => PackVerdict::DropUnstored,
                (true, Some(sz)) if sz > 0 => PackVerdict::MarkStored(sz),
                _ => PackVerdict::Gone,
            }
        } else {
            match on_disk {
                None if is_placed && is_evicted => PackVerdict::Ok,
                None if is_placed => PackVerdict::MarkEvicted,
                None => PackVerdict::Gone,
                Some(sz) if sz != p.size && is_placed => PackVerdict::WrongSizeRemoteOk,
                Some(sz) if sz != p.size => {
                    if live {
                        r.add(Class::PackWrongSize, || {
                            format!("{file}: {sz} bytes, index says {}", p.size)
                        });
                        lost.chunks
                            .extend(chunks_of_pack.get(&id).into_iter().flatten().copied());
                        PackVerdict::Ok
                    } else {
                        PackVerdict::Gone
                    }
                }
                Some(_) if is_evicted => PackVerdict::Unevict,
                Some(_) => PackVerdict::Ok,
            }
        };
        match verdict {
            PackVerdict::Ok => continue,
            PackVerdict::Gone if live => {
                r.add(Class::PackMissing, || {
                    format!("{file} (pack #{id}, {} bytes)", p.size)
                });
                lost.chunks
                    .extend(chunks_of_pack.get(&id).into_iter().flatten().copied());
                continue;
            }
            PackVerdict::Gone => r.add(Class::UnusedPackMissing, || format!("{file} (pack #{id})")),
            PackVerdict::WrongSizeRemoteOk => r.add(Class::PackWrongSizeRemoteOk, || {
                format!(
                    "{file}: {} bytes, index says {}",
                    on_disk.unwrap_or(0),
                    p.size
                )
            }),
            PackVerdict::MarkStored(sz) => r.add(Class::PackNotMarkedStored, || {
                format!("{file} ({sz} bytes)")
            }),
            PackVerdict::DropUnstored => r.add(Class::UnstoredPackRow, || format!("pack #{id}")),
            PackVerdict::MarkEvicted => r.add(Class::PackEvictedUnmarked, || {
                format!("{file} (pack #{id})")
            }),
            PackVerdict::Unevict => r.add(Class::EvictedButLocal, || file.clone()),
        }
        fx.packs.push((id, verdict));
    }
    named
}

/// Files in the store that no pack row names (`leftover_pack_file`).
fn leftover_files(v: &View, named: &HashSet<String>, a: &mut Analysis) {
    let Analysis {
        report: r,
        fixes: fx,
    } = a;
    for f in v.files.keys() {
        if !named.contains(f) {
            r.add(Class::LeftoverPackFile, || f.clone());
            fx.leftover_files.push(f.clone());
        }
    }
}

/// Names the files that lost data: damaged extents and users of lost chunks.
fn damaged_files(v: &View, lost: Lost, r: &mut Report) {
    let Lost {
        chunks: lost_chunks,
        inodes: mut damaged_inodes,
    } = lost;
    if !lost_chunks.is_empty() {
        for e in &v.db.extents {
            if lost_chunks.contains(e.chunk.as_slice()) {
                damaged_inodes.insert(e.ino);
            }
        }
    }
    for ino in damaged_inodes {
        r.damaged_files.insert(v.path(ino));
    }
}

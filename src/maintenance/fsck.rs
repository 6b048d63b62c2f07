//! `tresor fsck`: finds every inconsistency a crash or a bug could leave in
//! the index and the local store, and with `--repair` fixes what is safe.
//!
//! The checks read whole tables into memory (an fsck of a vault with a
//! million extents holds ~100 MB) and compare what the rows say with what
//! they must say: chunk refcounts with the extents that reference them,
//! link counts with the directory entries, the tree with a walk from the
//! root, pack rows with the pack files in `VAULT/store/packs`. Nothing is
//! decrypted: whether pack *contents* are intact is `verify`'s job.
//!
//! Each finding has a [`Class`] (a stable name, also in `--json`), a count
//! and a few examples. Classes come in three severities:
//! - *reclaimable*: harmless leftovers (pack files no row names, written
//!   before a crash and never committed); reported, but the vault counts as
//!   clean (exit 0) — every crash may leave one; `--repair` deletes them;
//! - *repairable*: the index contradicts itself; `--repair` rewrites the
//!   derived value (refcount, nlink), drops the dangling row, or moves
//!   unreachable inodes into `/lost+found` (as e2fsck does: data is never
//!   deleted to make the tree consistent);
//! - *damage*: bytes are gone (a chunk whose pack exists nowhere, an extent
//!   without a chunk); `--repair` cannot bring them back, so fsck names the
//!   affected files and leaves their rows alone (reads keep failing with
//!   EIO rather than returning zeros).
//!
//! Repair is a sequence of phases, each re-reading the tables, fixing one
//! kind of problem and committing, so an interrupted repair leaves a
//! consistent-enough index that the next `fsck --repair` finishes. Pack
//! files are deleted only after the commit that stops naming them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rusqlite::params;
use serde_json::{json, Value};

use crate::chunk::pack::PackId;
use crate::index::{Attr, FileKind, Index, IndexError, Timestamp, PACK_STORED, ROOT_INO};

/// Examples kept per finding.
const EXAMPLES: usize = 5;
/// Name of the directory unreachable inodes are moved into.
pub const LOST_FOUND: &[u8] = b"lost+found";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Reclaimable,
    Repairable,
    Damage,
}

impl Severity {
    fn name(self) -> &'static str {
        match self {
            Severity::Reclaimable => "reclaimable",
            Severity::Repairable => "repairable",
            Severity::Damage => "damage",
        }
    }
}

/// What kind of inconsistency a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    RefcountMismatch,
    ExtentWithoutChunk,
    ExtentOverlap,
    ExtentBeyondSize,
    ExtentBeyondChunk,
    ChunkPackRowMissing,
    DanglingChunkRow,
    PackMissing,
    UnusedPackMissing,
    PackWrongSize,
    PackWrongSizeRemoteOk,
    PackNotMarkedStored,
    UnstoredPackRow,
    PackEvictedUnmarked,
    EvictedButLocal,
    LeftoverPackFile,
    DanglingPlacementRow,
    DanglingEvictedRow,
    NlinkMismatch,
    DirentMissingInode,
    DirentBadParent,
    DirectoryHardLink,
    UnreachableInode,
    DetachedDirectory,
    SymlinkWithoutTarget,
    DanglingSymlinkRow,
    DanglingXattrRow,
    DanglingExtentRow,
    DanglingOrphanRow,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::RefcountMismatch => "refcount_mismatch",
            Class::ExtentWithoutChunk => "extent_without_chunk",
            Class::ExtentOverlap => "extent_overlap",
            Class::ExtentBeyondSize => "extent_beyond_size",
            Class::ExtentBeyondChunk => "extent_beyond_chunk",
            Class::ChunkPackRowMissing => "chunk_pack_row_missing",
            Class::DanglingChunkRow => "dangling_chunk_row",
            Class::PackMissing => "pack_missing",
            Class::UnusedPackMissing => "unused_pack_missing",
            Class::PackWrongSize => "pack_wrong_size",
            Class::PackWrongSizeRemoteOk => "pack_wrong_size_remote_ok",
            Class::PackNotMarkedStored => "pack_not_marked_stored",
            Class::UnstoredPackRow => "unstored_pack_row",
            Class::PackEvictedUnmarked => "pack_evicted_unmarked",
            Class::EvictedButLocal => "evicted_but_local",
            Class::LeftoverPackFile => "leftover_pack_file",
            Class::DanglingPlacementRow => "dangling_placement_row",
            Class::DanglingEvictedRow => "dangling_evicted_row",
            Class::NlinkMismatch => "nlink_mismatch",
            Class::DirentMissingInode => "dirent_missing_inode",
            Class::DirentBadParent => "dirent_bad_parent",
            Class::DirectoryHardLink => "directory_hard_link",
            Class::UnreachableInode => "unreachable_inode",
            Class::DetachedDirectory => "detached_directory",
            Class::SymlinkWithoutTarget => "symlink_without_target",
            Class::DanglingSymlinkRow => "dangling_symlink_row",
            Class::DanglingXattrRow => "dangling_xattr_row",
            Class::DanglingExtentRow => "dangling_extent_row",
            Class::DanglingOrphanRow => "dangling_orphan_row",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Class::ExtentWithoutChunk
            | Class::ExtentOverlap
            | Class::ExtentBeyondChunk
            | Class::ChunkPackRowMissing
            | Class::PackMissing
            | Class::PackWrongSize => Severity::Damage,
            Class::LeftoverPackFile => Severity::Reclaimable,
            _ => Severity::Repairable,
        }
    }

    /// What the finding means and what `--repair` does about it.
    pub fn description(self) -> &'static str {
        match self {
            Class::RefcountMismatch => "chunk refcount differs from the number of extents referencing the chunk (repair: recompute)",
            Class::ExtentWithoutChunk => "extent names a chunk that has no chunk row: those bytes are lost",
            Class::ExtentOverlap => "extents of one file overlap (tresor never writes that): the file's content is ambiguous",
            Class::ExtentBeyondSize => "extent reaches past the end of its file (repair: trim to the file size)",
            Class::ExtentBeyondChunk => "extent reaches past the end of its chunk: those bytes are lost",
            Class::ChunkPackRowMissing => "a referenced chunk names a pack that has no pack row: its bytes are lost",
            Class::DanglingChunkRow => "unreferenced chunk row names a pack that has no pack row (repair: drop the row)",
            Class::PackMissing => "a referenced pack is neither in the local store nor (evicted and) placed on a backend: its chunks are lost",
            Class::UnusedPackMissing => "pack with no referenced chunk is missing everywhere (repair: drop its rows)",
            Class::PackWrongSize => "a referenced pack file has the wrong size and no backend holds a copy: its chunks are unreadable",
            Class::PackWrongSizeRemoteOk => "pack file has the wrong size but a backend holds the pack (repair: delete the local copy, read it remotely)",
            Class::PackNotMarkedStored => "pack file is complete in the store but its row is not marked stored (repair: mark it)",
            Class::UnstoredPackRow => "pack row never stored and not used by any chunk (repair: drop the row)",
            Class::PackEvictedUnmarked => "pack is missing locally but placed on a backend, without an evicted row (repair: mark it evicted)",
            Class::EvictedButLocal => "pack is marked evicted but is in the local store (repair: unmark it)",
            Class::LeftoverPackFile => "file in the store that no pack row names, left by a crash before a commit (repair: delete it)",
            Class::DanglingPlacementRow => "placement row for a pack that does not exist (repair: drop it)",
            Class::DanglingEvictedRow => "evicted row for a pack that does not exist (repair: drop it)",
            Class::NlinkMismatch => "inode link count differs from its directory entries (repair: recompute)",
            Class::DirentMissingInode => "directory entry names an inode that does not exist (repair: drop the entry)",
            Class::DirentBadParent => "directory entry sits in a parent that does not exist or is not a directory (repair: drop the entry)",
            Class::DirectoryHardLink => "directory has more than one name (repair: keep the oldest)",
            Class::UnreachableInode => "inode has no name and is not an open-unlinked orphan (repair: move into /lost+found)",
            Class::DetachedDirectory => "directory whose parent chain never reaches the root (repair: move into /lost+found)",
            Class::SymlinkWithoutTarget => "symlink inode without a target row (repair: remove it; it holds no data)",
            Class::DanglingSymlinkRow => "symlink target row for a missing or non-symlink inode (repair: drop it)",
            Class::DanglingXattrRow => "xattr row for a missing inode (repair: drop it)",
            Class::DanglingExtentRow => "extent row for a missing or non-regular inode (repair: drop it)",
            Class::DanglingOrphanRow => "orphan row for a missing inode or one that still has names: mount would delete a linked file (repair: drop the row)",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Finding {
    pub class: Class,
    pub count: u64,
    pub examples: Vec<String>,
}

/// What a check found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub findings: BTreeMap<Class, Finding>,
    /// Paths of files whose bytes are (partly) lost.
    pub damaged_files: BTreeSet<String>,
    /// Inodes unlinked while open before a crash: removed at the next mount
    /// (or by `--repair`); not an inconsistency.
    pub pending_orphans: u64,
    pub inodes: u64,
    pub extents: u64,
    pub chunks: u64,
    pub packs: u64,
    pub pack_files: u64,
}

impl Report {
    /// No inconsistency: at most reclaimable leftovers, which every crash
    /// may leave (a pack written but never committed) and which harm nothing.
    pub fn is_clean(&self) -> bool {
        self.findings
            .keys()
            .all(|c| c.severity() == Severity::Reclaimable)
    }

    /// Nothing at all to do, not even reclaiming space.
    pub fn is_empty(&self) -> bool {
        self.findings.is_empty() && self.pending_orphans == 0
    }

    pub fn has_damage(&self) -> bool {
        self.findings
            .keys()
            .any(|c| c.severity() == Severity::Damage)
    }

    fn add(&mut self, class: Class, example: impl FnOnce() -> String) {
        let f = self.findings.entry(class).or_insert(Finding {
            class,
            count: 0,
            examples: Vec::new(),
        });
        f.count += 1;
        if f.examples.len() < EXAMPLES {
            f.examples.push(example());
        }
    }

    pub fn to_json(&self) -> Value {
        let findings: Vec<Value> = self
            .findings
            .values()
            .map(|f| {
                json!({
                    "class": f.class.name(),
                    "severity": f.class.severity().name(),
                    "count": f.count,
                    "description": f.class.description(),
                    "examples": f.examples,
                })
            })
            .collect();
        json!({
            "clean": self.is_clean(),
            "damage": self.has_damage(),
            "findings": findings,
            "damaged_files": self.damaged_files,
            "pending_orphans": self.pending_orphans,
            "checked": {
                "inodes": self.inodes,
                "extents": self.extents,
                "chunks": self.chunks,
                "packs": self.packs,
                "pack_files": self.pack_files,
            },
        })
    }

    pub fn print_text(&self) {
        println!(
            "checked {} inodes, {} extents, {} chunks, {} packs, {} pack files",
            self.inodes, self.extents, self.chunks, self.packs, self.pack_files
        );
        if self.pending_orphans > 0 {
            println!(
                "{} inode(s) unlinked while open before a crash: removed at the next mount",
                self.pending_orphans
            );
        }
        for f in self.findings.values() {
            println!(
                "{} [{}] x{}: {}",
                f.class.name(),
                f.class.severity().name(),
                f.count,
                f.class.description()
            );
            for e in &f.examples {
                println!("    e.g. {e}");
            }
        }
        if !self.damaged_files.is_empty() {
            println!(
                "{} file(s) have lost data (reads of the lost ranges fail with EIO):",
                self.damaged_files.len()
            );
            for p in &self.damaged_files {
                println!("    {p}");
            }
        }
        if self.is_clean() {
            println!("clean: no inconsistencies");
        }
    }
}

// ---------------------------------------------------------------------------
// Loading

struct InodeRow {
    kind: FileKind,
    size: u64,
    nlink: u64,
}

struct DirentRow {
    id: i64,
    parent: u64,
    name: Vec<u8>,
    ino: u64,
}

struct ExtentRow {
    ino: u64,
    offset: u64,
    length: u64,
    chunk: Vec<u8>,
    chunk_offset: u64,
}

struct ChunkRow {
    pack: i64,
    plain_len: u64,
    refcount: i64,
}

struct PackRow {
    name: Vec<u8>,
    size: u64,
    state: i64,
}

/// Every table fsck looks at, plus the pack files of the local store.
struct Snapshot {
    inodes: HashMap<u64, InodeRow>,
    dirents: Vec<DirentRow>,
    orphans: HashSet<u64>,
    symlinks: Vec<u64>,
    xattr_inodes: Vec<u64>,
    extents: Vec<ExtentRow>,
    chunks: HashMap<Vec<u8>, ChunkRow>,
    packs: BTreeMap<i64, PackRow>,
    placements: Vec<(i64, String)>,
    evicted: HashSet<i64>,
    /// `packs/ab/<hex>.pack` (and anything else under `packs/`) → size.
    files: BTreeMap<String, u64>,
}

fn load(index: &Index, store_root: &Path) -> Result<Snapshot> {
    let c = index.conn();
    let q = |e: rusqlite::Error| anyhow::Error::from(IndexError::from(e));
    let mut inodes = HashMap::new();
    let mut st = c
        .prepare("SELECT ino, mode, size, nlink FROM inodes")
        .map_err(q)?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, u32>(1)?,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
            ))
        })
        .map_err(q)?;
    for row in rows {
        let (ino, mode, size, nlink) = row.map_err(q)?;
        let kind = FileKind::from_mode(mode).unwrap_or(FileKind::Regular);
        inodes.insert(ino, InodeRow { kind, size, nlink });
    }
    let mut dirents = Vec::new();
    let mut st = c
        .prepare("SELECT id, parent, name, ino FROM dirents ORDER BY id")
        .map_err(q)?;
    for row in st
        .query_map([], |r| {
            Ok(DirentRow {
                id: r.get(0)?,
                parent: r.get::<_, i64>(1)? as u64,
                name: r.get(2)?,
                ino: r.get::<_, i64>(3)? as u64,
            })
        })
        .map_err(q)?
    {
        dirents.push(row.map_err(q)?);
    }
    let ids = |sql: &str| -> Result<Vec<u64>> {
        let mut st = c.prepare(sql).map_err(q)?;
        let v = st
            .query_map([], |r| r.get::<_, i64>(0))
            .map_err(q)?
            .collect::<Result<Vec<i64>, _>>()
            .map_err(q)?;
        Ok(v.into_iter().map(|i| i as u64).collect())
    };
    let orphans = ids("SELECT ino FROM orphans")?.into_iter().collect();
    let symlinks = ids("SELECT ino FROM symlinks")?;
    let xattr_inodes = ids("SELECT DISTINCT ino FROM xattrs")?;
    let mut extents = Vec::new();
    let mut st = c
        .prepare(
            "SELECT ino, offset, length, chunk, chunk_offset FROM extents ORDER BY ino, offset",
        )
        .map_err(q)?;
    for row in st
        .query_map([], |r| {
            Ok(ExtentRow {
                ino: r.get::<_, i64>(0)? as u64,
                offset: r.get::<_, i64>(1)? as u64,
                length: r.get::<_, i64>(2)? as u64,
                chunk: r.get(3)?,
                chunk_offset: r.get::<_, i64>(4)? as u64,
            })
        })
        .map_err(q)?
    {
        extents.push(row.map_err(q)?);
    }
    let mut chunks = HashMap::new();
    let mut st = c
        .prepare("SELECT id, pack, plain_len, refcount FROM chunks")
        .map_err(q)?;
    for row in st
        .query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                ChunkRow {
                    pack: r.get(1)?,
                    plain_len: r.get::<_, i64>(2)? as u64,
                    refcount: r.get(3)?,
                },
            ))
        })
        .map_err(q)?
    {
        let (id, row) = row.map_err(q)?;
        chunks.insert(id, row);
    }
    let mut packs = BTreeMap::new();
    let mut st = c
        .prepare("SELECT id, name, size, state FROM packs")
        .map_err(q)?;
    for row in st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                PackRow {
                    name: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    state: r.get(3)?,
                },
            ))
        })
        .map_err(q)?
    {
        let (id, row) = row.map_err(q)?;
        packs.insert(id, row);
    }
    let mut placements = Vec::new();
    let mut st = c
        .prepare("SELECT pack, backend FROM placements")
        .map_err(q)?;
    for row in st
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .map_err(q)?
    {
        placements.push(row.map_err(q)?);
    }
    let evicted = ids("SELECT pack FROM evicted")?
        .into_iter()
        .map(|p| p as i64)
        .collect();
    let mut files = BTreeMap::new();
    list_files(&store_root.join("packs"), "packs", &mut files)?;
    Ok(Snapshot {
        inodes,
        dirents,
        orphans,
        symlinks,
        xattr_inodes,
        extents,
        chunks,
        packs,
        placements,
        evicted,
        files,
    })
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

fn pack_path(name: &[u8]) -> Option<String> {
    let arr: [u8; 16] = name.try_into().ok()?;
    Some(PackId(arr).object_path())
}

// ---------------------------------------------------------------------------
// Analysis: findings plus the concrete fixes for each

/// What a pack row's files and rows say about the pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PackVerdict {
    Ok,
    /// Its chunks are lost (referenced) or it is unused and gone (drop rows).
    Gone,
    WrongSizeRemoteOk,
    MarkStored(u64),
    DropUnstored,
    MarkEvicted,
    Unevict,
}

#[derive(Default)]
struct Fixes {
    drop_dirents: Vec<i64>,
    drop_symlink_rows: Vec<u64>,
    drop_xattr_rows: Vec<u64>,
    drop_extent_rows: Vec<u64>,
    drop_orphan_rows: Vec<u64>,
    drop_placements: Vec<i64>,
    drop_evicted: Vec<i64>,
    remove_symlink_inodes: Vec<u64>,
    pending_orphans: Vec<u64>,
    unreachable: Vec<u64>,
    detached_dirs: Vec<u64>,
    trim_extents: Vec<(u64, u64)>,
    packs: Vec<(i64, PackVerdict)>,
    drop_chunk_rows: Vec<Vec<u8>>,
    leftover_files: Vec<String>,
    refcounts: bool,
    nlinks: bool,
}

struct Analysis {
    report: Report,
    fixes: Fixes,
}

fn hex_short(id: &[u8]) -> String {
    hex::encode(&id[..id.len().min(8)])
}

fn analyse(index: &Index, s: &Snapshot) -> Result<Analysis> {
    let mut r = Report {
        inodes: s.inodes.len() as u64,
        extents: s.extents.len() as u64,
        chunks: s.chunks.len() as u64,
        packs: s.packs.len() as u64,
        pack_files: s.files.len() as u64,
        ..Report::default()
    };
    let mut fx = Fixes::default();
    let path = |ino: u64| -> String {
        match index.path_of(ino) {
            Ok(p) => String::from_utf8_lossy(&p).into_owned(),
            Err(_) => format!("<inode {ino}>"),
        }
    };
    let is_dir = |ino: u64| s.inodes.get(&ino).map(|i| i.kind) == Some(FileKind::Directory);

    // --- directory entries ---
    let mut names: HashMap<u64, Vec<&DirentRow>> = HashMap::new();
    for d in &s.dirents {
        if !s.inodes.contains_key(&d.ino) {
            r.add(Class::DirentMissingInode, || {
                format!(
                    "{}/{} -> inode {}",
                    path(d.parent).trim_end_matches('/'),
                    String::from_utf8_lossy(&d.name),
                    d.ino
                )
            });
            fx.drop_dirents.push(d.id);
        } else if !is_dir(d.parent) {
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
    for (ino, ds) in &names {
        if is_dir(*ino) && ds.len() > 1 {
            r.add(Class::DirectoryHardLink, || {
                format!("{} has {} names", path(*ino), ds.len())
            });
            let keep = ds.iter().map(|d| d.id).min().unwrap_or(0);
            fx.drop_dirents
                .extend(ds.iter().map(|d| d.id).filter(|&id| id != keep));
        }
    }

    // --- reachability from the root ---
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
            if reached.insert(c) && is_dir(c) {
                stack.push(c);
            }
        }
    }
    let mut inos: Vec<u64> = s.inodes.keys().copied().collect();
    inos.sort_unstable();
    for &ino in &inos {
        if reached.contains(&ino) {
            continue;
        }
        let i = &s.inodes[&ino];
        if !names.contains_key(&ino) {
            if s.orphans.contains(&ino) {
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
                format!("directory inode {ino} (last known as {})", path(ino))
            });
            fx.detached_dirs.push(ino);
        }
    }
    for &o in &s.orphans {
        if !s.inodes.contains_key(&o) || names.contains_key(&o) {
            r.add(Class::DanglingOrphanRow, || match s.inodes.get(&o) {
                None => format!("orphan row for missing inode {o}"),
                Some(_) => format!("orphan row for linked {}", path(o)),
            });
            fx.drop_orphan_rows.push(o);
        }
    }

    // --- link counts ---
    let mut subdirs: HashMap<u64, u64> = HashMap::new();
    for ds in names.values() {
        for d in ds {
            if is_dir(d.ino) {
                *subdirs.entry(d.parent).or_default() += 1;
            }
        }
    }
    for &ino in &inos {
        let i = &s.inodes[&ino];
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
                format!("{}: nlink {} but {want} expected", path(ino), i.nlink)
            });
            fx.nlinks = true;
        }
    }

    // --- symlinks and xattrs ---
    let symlink_rows: HashSet<u64> = s.symlinks.iter().copied().collect();
    for &ino in &s.symlinks {
        if s.inodes.get(&ino).map(|i| i.kind) != Some(FileKind::Symlink) {
            r.add(Class::DanglingSymlinkRow, || {
                format!("symlink row for inode {ino}")
            });
            fx.drop_symlink_rows.push(ino);
        }
    }
    for &ino in &inos {
        if s.inodes[&ino].kind == FileKind::Symlink && !symlink_rows.contains(&ino) {
            r.add(Class::SymlinkWithoutTarget, || path(ino));
            fx.remove_symlink_inodes.push(ino);
        }
    }
    for &ino in &s.xattr_inodes {
        if !s.inodes.contains_key(&ino) {
            r.add(Class::DanglingXattrRow, || format!("xattrs of inode {ino}"));
            fx.drop_xattr_rows.push(ino);
        }
    }

    // --- extents ---
    let mut refs: HashMap<&[u8], i64> = HashMap::new();
    let mut damaged_inodes: BTreeSet<u64> = BTreeSet::new();
    let mut prev: Option<(u64, u64)> = None; // (ino, end of previous extent)
    let mut dangling_extent_inodes: BTreeSet<u64> = BTreeSet::new();
    let mut trimmed: BTreeSet<u64> = BTreeSet::new();
    for e in &s.extents {
        *refs.entry(e.chunk.as_slice()).or_default() += 1;
        let Some(i) = s.inodes.get(&e.ino).filter(|i| i.kind == FileKind::Regular) else {
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
                    format!("{} at offset {}", path(e.ino), e.offset)
                });
                damaged_inodes.insert(e.ino);
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
                    path(e.ino),
                    e.offset,
                    i.size
                )
            });
            if trimmed.insert(e.ino) {
                fx.trim_extents.push((e.ino, i.size));
            }
        }
        match s.chunks.get(&e.chunk) {
            None => {
                r.add(Class::ExtentWithoutChunk, || {
                    format!(
                        "{} at offset {} (chunk {})",
                        path(e.ino),
                        e.offset,
                        hex_short(&e.chunk)
                    )
                });
                damaged_inodes.insert(e.ino);
            }
            Some(c) => {
                if e.chunk_offset + e.length > c.plain_len {
                    r.add(Class::ExtentBeyondChunk, || {
                        format!(
                            "{} at offset {}: chunk bytes {}..{} of {}",
                            path(e.ino),
                            e.offset,
                            e.chunk_offset,
                            e.chunk_offset + e.length,
                            c.plain_len
                        )
                    });
                    damaged_inodes.insert(e.ino);
                }
            }
        }
    }

    // --- chunks ---
    let mut chunk_ids: Vec<&Vec<u8>> = s.chunks.keys().collect();
    chunk_ids.sort();
    let mut live_packs: HashSet<i64> = HashSet::new();
    let mut lost_chunks: HashSet<&[u8]> = HashSet::new();
    for id in &chunk_ids {
        let c = &s.chunks[*id];
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
        if !s.packs.contains_key(&c.pack) {
            if n > 0 {
                r.add(Class::ChunkPackRowMissing, || {
                    format!("chunk {} in pack #{}", hex_short(id), c.pack)
                });
                lost_chunks.insert(id.as_slice());
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
    for (id, c) in &s.chunks {
        chunks_of_pack
            .entry(c.pack)
            .or_default()
            .push(id.as_slice());
    }

    // --- packs and the store ---
    let mut placed: HashMap<i64, usize> = HashMap::new();
    for (p, b) in &s.placements {
        if s.packs.contains_key(p) {
            *placed.entry(*p).or_default() += 1;
        } else {
            r.add(Class::DanglingPlacementRow, || {
                format!("pack #{p} on backend {b}")
            });
            fx.drop_placements.push(*p);
        }
    }
    let mut evicted: Vec<i64> = s.evicted.iter().copied().collect();
    evicted.sort_unstable();
    for p in evicted {
        if !s.packs.contains_key(&p) {
            r.add(Class::DanglingEvictedRow, || format!("pack #{p}"));
            fx.drop_evicted.push(p);
        }
    }
    let mut named: HashSet<String> = HashSet::new();
    for (&id, p) in &s.packs {
        let Some(file) = pack_path(&p.name) else {
            // A name that is not 16 bytes cannot be written by tresor.
            r.add(Class::UnusedPackMissing, || {
                format!("pack #{id} has a malformed name")
            });
            continue;
        };
        named.insert(file.clone());
        let on_disk = s.files.get(&file).copied();
        let is_placed = placed.get(&id).copied().unwrap_or(0) > 0;
        let is_evicted = s.evicted.contains(&id);
        let live = live_packs.contains(&id);
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
                        lost_chunks.extend(chunks_of_pack.get(&id).into_iter().flatten().copied());
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
                lost_chunks.extend(chunks_of_pack.get(&id).into_iter().flatten().copied());
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
    for f in s.files.keys() {
        if !named.contains(f) {
            r.add(Class::LeftoverPackFile, || f.clone());
            fx.leftover_files.push(f.clone());
        }
    }

    // --- files that lost data ---
    if !lost_chunks.is_empty() {
        for e in &s.extents {
            if lost_chunks.contains(e.chunk.as_slice()) {
                damaged_inodes.insert(e.ino);
            }
        }
    }
    for ino in damaged_inodes {
        r.damaged_files.insert(path(ino));
    }
    Ok(Analysis {
        report: r,
        fixes: fx,
    })
}

/// Checks the index against itself and the local store at `store_root`.
pub fn check(index: &Index, store_root: &Path) -> Result<Report> {
    let s = load(index, store_root)?;
    Ok(analyse(index, &s)?.report)
}

// ---------------------------------------------------------------------------
// Repair

fn sql(index: &Index, stmt: &str, p: impl rusqlite::Params) -> Result<usize> {
    index
        .conn()
        .execute(stmt, p)
        .map_err(|e| IndexError::from(e).into())
}

fn commit(index: &Index) -> Result<()> {
    index
        .commit(true)
        .context("committing the repair to the index failed")
}

/// Fixes everything safe, phase by phase (each phase commits); returns one
/// line per action taken. Run [`check`] afterwards for what is left.
pub fn repair(index: &Index, store_root: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();

    // Phase 1: dangling rows and impossible names.
    let a = analyse(index, &load(index, store_root)?)?.fixes;
    let mut n = 0;
    for id in &a.drop_dirents {
        n += sql(index, "DELETE FROM dirents WHERE id = ?1", params![id])?;
    }
    if n > 0 {
        done.push(format!(
            "dropped {n} directory entries naming missing inodes, sitting in non-directories, or extra names of directories"
        ));
    }
    let mut rows = 0;
    for ino in &a.drop_symlink_rows {
        rows += sql(
            index,
            "DELETE FROM symlinks WHERE ino = ?1",
            params![*ino as i64],
        )?;
    }
    for ino in &a.drop_xattr_rows {
        rows += sql(
            index,
            "DELETE FROM xattrs WHERE ino = ?1",
            params![*ino as i64],
        )?;
    }
    for ino in &a.drop_extent_rows {
        rows += sql(
            index,
            "DELETE FROM extents WHERE ino = ?1",
            params![*ino as i64],
        )?;
    }
    for ino in &a.drop_orphan_rows {
        rows += sql(
            index,
            "DELETE FROM orphans WHERE ino = ?1",
            params![*ino as i64],
        )?;
    }
    for p in &a.drop_placements {
        rows += sql(index, "DELETE FROM placements WHERE pack = ?1", params![p])?;
    }
    for p in &a.drop_evicted {
        rows += sql(index, "DELETE FROM evicted WHERE pack = ?1", params![p])?;
    }
    if rows > 0 {
        done.push(format!(
            "dropped {rows} dangling symlink/xattr/extent/orphan/placement/evicted rows"
        ));
    }
    for &ino in &a.remove_symlink_inodes {
        let p = String::from_utf8_lossy(&index.path_of(ino)?).into_owned();
        sql(
            index,
            "DELETE FROM dirents WHERE ino = ?1",
            params![ino as i64],
        )?;
        index.delete_inode(ino)?;
        done.push(format!(
            "removed symlink {p} (inode {ino}): its target was lost"
        ));
    }
    commit(index)?;

    // Phase 2: inodes unlinked while open before a crash (as mount does).
    let a = analyse(index, &load(index, store_root)?)?.fixes;
    for &ino in &a.pending_orphans {
        index.delete_inode(ino)?;
    }
    if !a.pending_orphans.is_empty() {
        done.push(format!(
            "removed {} inode(s) unlinked while open before a crash",
            a.pending_orphans.len()
        ));
        commit(index)?;
    }

    // Phase 3: unreachable inodes and detached directories → /lost+found.
    // One detached directory at a time: moving it may reattach others.
    let mut moved = Vec::new();
    let mut lost_found: Option<u64> = None;
    for _ in 0..=index.inode_count()? {
        let a = analyse(index, &load(index, store_root)?)?.fixes;
        let batch: Vec<u64> = if !a.unreachable.is_empty() {
            a.unreachable
        } else if let Some(&d) = a.detached_dirs.first() {
            vec![d]
        } else {
            break;
        };
        let lf = match lost_found {
            Some(lf) => lf,
            None => {
                let lf = lost_and_found(index)?;
                lost_found = Some(lf);
                lf
            }
        };
        for ino in batch {
            sql(
                index,
                "DELETE FROM dirents WHERE ino = ?1",
                params![ino as i64],
            )?;
            let mut name = format!("#{ino}").into_bytes();
            let mut k = 1;
            while index.lookup(lf, &name)?.is_some() {
                name = format!("#{ino}.{k}").into_bytes();
                k += 1;
            }
            index.insert_dirent(lf, &name, ino)?;
            sql(
                index,
                "DELETE FROM orphans WHERE ino = ?1",
                params![ino as i64],
            )?;
            moved.push(format!("/lost+found/{}", String::from_utf8_lossy(&name)));
        }
        // nlink of the moved inodes and of lost+found are fixed in phase 6;
        // until then the tree is reachable, which is what matters.
        commit(index)?;
    }
    if !moved.is_empty() {
        let shown: Vec<&str> = moved.iter().take(20).map(String::as_str).collect();
        done.push(format!(
            "moved {} unreachable inode(s) into /lost+found: {}{}",
            moved.len(),
            shown.join(", "),
            if moved.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        ));
    }

    // Phase 4: extents past the end of their file (invisible bytes).
    let a = analyse(index, &load(index, store_root)?)?.fixes;
    for &(ino, size) in &a.trim_extents {
        index.remove_extents(ino, size, u64::MAX)?;
    }
    if !a.trim_extents.is_empty() {
        done.push(format!(
            "trimmed the extents of {} file(s) to their size",
            a.trim_extents.len()
        ));
        commit(index)?;
    }

    // Phase 5: pack rows against the store.
    let a = analyse(index, &load(index, store_root)?)?.fixes;
    let mut delete_after_commit = Vec::new();
    for (id, verdict) in &a.packs {
        let id = *id;
        let name: Option<Vec<u8>> = index
            .conn()
            .query_row("SELECT name FROM packs WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .map_err(IndexError::from)?;
        let file = name.as_deref().and_then(pack_path).unwrap_or_default();
        match verdict {
            PackVerdict::Ok => {}
            PackVerdict::Gone | PackVerdict::DropUnstored => {
                // Only reached for packs no extent uses (else: damage).
                let chunks = sql(index, "DELETE FROM chunks WHERE pack = ?1", params![id])?;
                sql(index, "DELETE FROM placements WHERE pack = ?1", params![id])?;
                sql(index, "DELETE FROM evicted WHERE pack = ?1", params![id])?;
                sql(index, "DELETE FROM packs WHERE id = ?1", params![id])?;
                if !file.is_empty() && store_root.join(&file).exists() {
                    delete_after_commit.push(file.clone());
                }
                done.push(format!(
                    "dropped pack #{id} {file} and its {chunks} unused chunk row(s): no extent uses it"
                ));
            }
            PackVerdict::WrongSizeRemoteOk => {
                let full = store_root.join(&file);
                std::fs::remove_file(&full)
                    .with_context(|| format!("cannot delete {}", full.display()))?;
                index.mark_evicted(id as u64)?;
                done.push(format!(
                    "deleted the local copy of {file} (wrong size); it is read from a backend that holds it"
                ));
            }
            PackVerdict::MarkStored(sz) => {
                index.mark_pack_stored(id as u64, *sz)?;
                done.push(format!("marked {file} stored ({sz} bytes)"));
            }
            PackVerdict::MarkEvicted => {
                index.mark_evicted(id as u64)?;
                done.push(format!(
                    "marked {file} evicted: it is on a backend, not in the local store"
                ));
            }
            PackVerdict::Unevict => {
                sql(index, "DELETE FROM evicted WHERE pack = ?1", params![id])?;
                done.push(format!(
                    "unmarked {file} as evicted: it is in the local store"
                ));
            }
        }
    }
    let mut dropped = 0;
    for id in &a.drop_chunk_rows {
        dropped += sql(index, "DELETE FROM chunks WHERE id = ?1", params![id])?;
    }
    if dropped > 0 {
        done.push(format!(
            "dropped {dropped} unused chunk row(s) naming packs that do not exist"
        ));
    }
    commit(index)?;
    for f in delete_after_commit {
        remove_store_file(store_root, &f)?;
    }

    // Phase 6: derived counts.
    let a = analyse(index, &load(index, store_root)?)?.fixes;
    if a.refcounts {
        let n = sql(
            index,
            "UPDATE chunks SET refcount = (SELECT count(*) FROM extents e WHERE e.chunk = chunks.id) \
             WHERE refcount != (SELECT count(*) FROM extents e WHERE e.chunk = chunks.id)",
            [],
        )?;
        done.push(format!("recomputed the refcount of {n} chunk(s)"));
    }
    if a.nlinks {
        let n = sql(
            index,
            "UPDATE inodes SET nlink = (SELECT count(*) FROM dirents d WHERE d.ino = inodes.ino) \
             WHERE (mode & 61440) != 16384 AND EXISTS (SELECT 1 FROM dirents d WHERE d.ino = inodes.ino) \
             AND nlink != (SELECT count(*) FROM dirents d WHERE d.ino = inodes.ino)",
            [],
        )? + sql(
            index,
            "UPDATE inodes SET nlink = 2 + (SELECT count(*) FROM dirents d JOIN inodes c ON c.ino = d.ino \
               WHERE d.parent = inodes.ino AND (c.mode & 61440) = 16384) \
             WHERE (mode & 61440) = 16384 \
             AND nlink != 2 + (SELECT count(*) FROM dirents d JOIN inodes c ON c.ino = d.ino \
               WHERE d.parent = inodes.ino AND (c.mode & 61440) = 16384)",
            [],
        )?;
        done.push(format!("recomputed the link count of {n} inode(s)"));
    }
    commit(index)?;

    // Phase 7: files no row names (after the commits above).
    let a = analyse(index, &load(index, store_root)?)?.fixes;
    for f in &a.leftover_files {
        remove_store_file(store_root, f)?;
    }
    if !a.leftover_files.is_empty() {
        done.push(format!(
            "deleted {} leftover file(s) from the store that no pack row names",
            a.leftover_files.len()
        ));
    }
    Ok(done)
}

fn remove_store_file(store_root: &Path, rel: &str) -> Result<()> {
    let full: PathBuf = store_root.join(rel);
    match std::fs::remove_file(&full) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot delete {}", full.display()))
        }
        _ => Ok(()),
    }
}

/// `/lost+found`, created (0700, owned like the root) if missing.
fn lost_and_found(index: &Index) -> Result<u64> {
    if let Some(ino) = index.lookup(ROOT_INO, LOST_FOUND)? {
        match index.attr(ino)? {
            Some(a) if a.kind == FileKind::Directory => return Ok(ino),
            _ => anyhow::bail!(
                "/lost+found exists and is not a directory; rename it (mount the vault) and run `tresor fsck --repair` again"
            ),
        }
    }
    let root = index
        .attr(ROOT_INO)?
        .context("the root directory's inode is missing; the index cannot be repaired")?;
    let now = Timestamp::now();
    let ino = index.create_inode(&Attr {
        ino: 0,
        kind: FileKind::Directory,
        perm: 0o700,
        uid: root.uid,
        gid: root.gid,
        size: 0,
        nlink: 2,
        rdev: 0,
        atime: now,
        mtime: now,
        ctime: now,
    })?;
    index.insert_dirent(ROOT_INO, LOST_FOUND, ino)?;
    Ok(ino)
}

// ---------------------------------------------------------------------------
// CLI

#[cfg(test)]
mod tests;

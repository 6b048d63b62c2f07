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
//!
//! Layout: this file holds the report types and the two entry points;
//! `analyse.rs` loads the tables (`Index::fsck_tables`, `src/index/fsck.rs`)
//! and runs one check per finding class; `repair.rs` runs the phases, one
//! function per kind of fix.

mod analyse;
mod repair;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value};

use crate::index::Index;

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

/// Checks the index against itself and the local store at `store_root`.
pub fn check(index: &Index, store_root: &Path) -> Result<Report> {
    let s = analyse::load(index, store_root)?;
    Ok(analyse::analyse(index, &s)?.report)
}

/// Fixes everything safe, phase by phase (each phase commits); returns one
/// line per action taken. Run [`check`] afterwards for what is left.
pub fn repair(index: &Index, store_root: &Path) -> Result<Vec<String>> {
    repair::repair(index, store_root)
}

#[cfg(test)]
mod tests;

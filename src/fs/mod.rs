//! The filesystem core: inodes, directories, open files and the data path.
//!
//! Nothing here knows about FUSE: every operation takes plain values and
//! returns an [`FsResult`], so the core is driven by the FUSE adapter
//! (`src/mount/fuse.rs`) and, in tests, directly by a reference-model property test.
//!
//! Data path. A write lands in the inode's [`FileState`] dirty map (memory).
//! When a file holds `FLUSH_BYTES` of dirty data, or on release/fsync, the
//! dirty runs are cut by the keyed chunker, hashed and sealed in parallel
//! (rayon, off the index lock), deduplicated against the index, appended to the
//! open pack and recorded as extents — one index transaction per batch. During
//! a sequential write the last (still growing) chunk stays in memory so chunk
//! boundaries are the same as if the file had been written in one go, which is
//! what makes copies of a file deduplicate.
//!
//! Lock order: `files` map → one `FileState` → `index` → pack store. The index
//! lock is never held across sealing or store reads. One exception:
//! deleting a file's last link takes the `files` map under the index lock
//! (to drop the deleted file's state), so whoever holds the map only
//! *try-locks* a `FileState` and never waits while holding it; waiting
//! there deadlocked unlink, release and open under fsstress
//! (xfstests generic/013).
//!
//! Durability: `fsync` flushes the file, finishes the open pack, waits until
//! every pack is durable in the store and then commits the index with
//! `synchronous=FULL`. A timer commits (not durably) every few seconds so a
//! crash loses at most that window of un-fsynced work and the tree stays
//! consistent (SQLite's WAL guarantees atomic commits).
//!
//! Files: `namespace.rs` (lookups, create, link, rename, attributes,
//! readdir, xattrs), `file_state.rs` (open files and their dirty bytes),
//! `write.rs` (flushes, chunking, sealing, extents, fallocate incl. punching
//! holes), `read.rs` (reads and read-ahead), `sparse.rs` (`st_blocks` from
//! the stored extents, SEEK_DATA/SEEK_HOLE); this file holds the core's state and the one commit sequence.

pub mod acl;
pub mod error;
mod file_state;
/// `.snapshots`: kept generations, read-only (`src/fs/history.rs`).
pub mod history;
mod namespace;
mod read;
mod sparse;
#[cfg(test)]
mod tests;
mod write;

use parking_lot::{Mutex, MutexGuard};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use rayon::prelude::*;

use crate::chunk::chunker::Chunker;
use crate::chunk::seal::{ChunkId, ChunkSealer};
use crate::index::{Attr, ChunkLocation, DirEntry, Extent, FileKind, Index, Timestamp, ROOT_INO};
use crate::store::packstore::{PackStore, PackStoreError};
use crate::store::reserve::SpaceReserve;
pub use error::{FsError, FsResult};
use file_state::{insert_dirty, insert_dirty_under, FileSlot, FileState, Run, StateGuard};

/// Dirty bytes of one file that trigger a partial flush (measured: 8 MiB keeps
/// both cores busy sealing while the kernel refills the buffer).
const FLUSH_BYTES: usize = 8 * 1024 * 1024;
/// Capacity of a growing dirty run: one allocation holds a whole flush
/// buffer plus one FUSE write, instead of a chain of doubling reallocations.
const DIRTY_RUN_CAPACITY: usize = FLUSH_BYTES + 1024 * 1024;
/// Dirty bytes across all files that trigger a full flush of the writing file.
const GLOBAL_DIRTY_LIMIT: usize = 128 * 1024 * 1024;
pub const NAME_MAX: usize = 255;
/// How far ahead of a read chunks are decrypted in the background.
const READ_AHEAD: u64 = 4 * 1024 * 1024;
const SYMLINK_MAX: usize = 4095;
/// Largest file size (as ext4): offsets beyond give EFBIG.
pub const MAX_FILE_SIZE: u64 = 1 << 44;

/// Who is asking (from the FUSE request).
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The calling thread (0: none, e.g. in tests): its supplementary
    /// groups are read from /proc when a setgid rule needs them.
    pub pid: u32,
    /// The caller's umask, applied at create unless the directory has a
    /// default ACL (0 where the mode arrives masked already).
    pub umask: u32,
}

impl Caller {
    /// Root stands for the capabilities (CAP_FSETID) the kernel would ask.
    pub fn privileged(&self) -> bool {
        self.uid == 0
    }

    /// Is the caller in group `gid` (its own group or a supplementary one),
    /// or privileged? The kernel's `in_group_or_capable`, which decides
    /// whether a change by a non-member clears a setgid bit.
    pub fn in_group(&self, gid: u32) -> bool {
        if self.privileged() || self.gid == gid {
            return true;
        }
        if self.pid == 0 {
            return false;
        }
        // "Groups:\t100 101 \n" in /proc/PID/status (PID is the calling
        // thread, which /proc names too).
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Groups:"))
                    .map(|g| g.split_whitespace().any(|g| g.parse() == Ok(gid)))
            })
            .unwrap_or(false)
    }
}

#[derive(Clone, Copy, Debug)]
pub enum TimeSet {
    Now,
    At(Timestamp),
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    pub ctime: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameMode {
    Replace,
    NoReplace,
    Exchange,
}

/// Filesystem totals for statfs.
#[derive(Clone, Copy, Debug)]
pub struct FsStats {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
}

/// What background flush jobs share with the core.
struct DataPath {
    index: Mutex<Index>,
    packs: Arc<PackStore>,
    chunker: Chunker,
    sealer: Arc<ChunkSealer>,
    dirty_total: AtomicUsize,
    /// Set while the index holds uncommitted changes.
    uncommitted: std::sync::atomic::AtomicBool,
}

pub struct FsCore {
    data: Arc<DataPath>,
    files: Mutex<HashMap<u64, Arc<FileSlot>>>,
    /// Open handle count per inode; a leaf lock (never held while taking
    /// another), so unlink can ask it while holding the index lock.
    open_handles: Mutex<HashMap<u64, u32>>,
    next_fh: AtomicU64,
    /// Where the vault's store lives (statfs reports that filesystem).
    statfs_path: std::path::PathBuf,
    /// The sync engine, when the vault has remote backends.
    hooks: std::sync::OnceLock<Arc<dyn SyncHooks>>,
    /// Where each inode's last read ended and whether it went on from the
    /// read before: read-ahead only for readers that go on from there
    /// (`fs/read.rs`). A leaf lock.
    last_read_end: Mutex<HashMap<u64, (u64, bool)>>,
    /// (inode, error) pairs already logged at error level: a damaged file
    /// read again and again logs one line, not one per read (later ones go
    /// to debug). Bounded; a leaf lock.
    logged_read_errors: Mutex<std::collections::HashSet<(u64, String)>>,
    /// Why the final flush at unmount failed, if it did: the daemon reports
    /// it to `tresor unmount`, which then exits non-zero.
    shutdown_error: Mutex<Option<String>>,
    /// Disk held back for a full disk (set by the daemon, see
    /// `store/reserve.rs`).
    reserve: std::sync::OnceLock<SpaceReserve>,
    /// Set when a commit met a full disk: garbage collection then deletes
    /// dead packs at once instead of waiting for its interval.
    space_pressure: std::sync::atomic::AtomicBool,
    /// The `.snapshots` view of kept generations.
    history: history::History,
}

/// What the sync engine plugs into the core (set once, at mount).
pub trait SyncHooks: Send + Sync {
    /// Called before a write is accepted and without any lock held: blocks
    /// while more not-yet-uploaded data waits than the cache budget allows
    /// (back-pressure instead of an error). `unindexed` tells how many bytes
    /// of packs exist that the index does not count yet (sealed since the
    /// last commit), so the budget holds between commits too.
    fn throttle_writes(&self, unindexed: &dyn Fn() -> u64);
    /// Called after every index commit, under the index lock: placements
    /// recorded before it are now durable.
    fn committed(&self, index: &Index);
}

/// The index of an open vault as gc, sync, index snapshots and remote
/// deletion reach it: the mounted [`FsCore`] or, for a command run without
/// a mount, `maintenance::offline::OfflineVault`. One trait, so those run
/// the same code either way.
pub trait IndexAccess: Send + Sync {
    /// Runs `f` under the index lock; changes join the open batch.
    fn with_index(&self, f: &mut dyn FnMut(&Index));
    /// Runs `f` under the index lock and commits durably before releasing
    /// it (packs the batch references are made durable first).
    fn locked_commit(&self, f: &mut dyn FnMut(&Index)) -> FsResult<()>;
    /// Makes every sealed pack durable, commits, checkpoints the WAL into
    /// the main database file and runs `f` while the file is the complete
    /// index and nobody can change it (index snapshots read it then); `f`
    /// may read the index, which is then exactly that file.
    fn with_checkpoint(&self, f: &mut dyn FnMut(&Index)) -> FsResult<()>;
    /// The pack store (gc reads and deletes packs through it).
    fn pack_store(&self) -> &PackStore;
}

/// [`IndexAccess::with_index`] for a closure that returns a value (the
/// trait method takes `&mut dyn FnMut`, so that the trait stays usable as
/// `dyn IndexAccess`).
pub fn read_index<R>(access: &dyn IndexAccess, f: impl FnOnce(&Index) -> R) -> R {
    let mut f = Some(f);
    let mut out = None;
    access.with_index(&mut |idx| {
        if let Some(f) = f.take() {
            out = Some(f(idx));
        }
    });
    out.expect("with_index runs the closure")
}

impl IndexAccess for FsCore {
    fn with_index(&self, f: &mut dyn FnMut(&Index)) {
        let idx = self.index();
        f(&idx)
    }

    fn locked_commit(&self, f: &mut dyn FnMut(&Index)) -> FsResult<()> {
        self.commit_with(|idx| f(idx))
    }

    fn with_checkpoint(&self, f: &mut dyn FnMut(&Index)) -> FsResult<()> {
        let idx = self.data.index.lock();
        self.commit_locked(&idx, |idx| Ok(idx.checkpointed(|| f(idx))?))
    }

    fn pack_store(&self) -> &PackStore {
        self.packs()
    }
}

fn check_name(name: &[u8]) -> FsResult<()> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(FsError::Invalid);
    }
    Ok(())
}

impl FsCore {
    /// Opens the core over an index; removes inodes orphaned by a crash while
    /// they were unlinked but open.
    pub fn new(
        index: Index,
        packs: PackStore,
        chunker: Chunker,
        sealer: Arc<ChunkSealer>,
        statfs_path: std::path::PathBuf,
    ) -> FsResult<FsCore> {
        for ino in index.orphans()? {
            log::info!("removing inode {ino}: unlinked while open before the last unmount");
            index.delete_inode(ino)?;
        }
        index.commit(true)?;
        Ok(FsCore {
            data: Arc::new(DataPath {
                index: Mutex::new(index),
                packs: Arc::new(packs),
                chunker,
                sealer,
                dirty_total: AtomicUsize::new(0),
                uncommitted: std::sync::atomic::AtomicBool::new(false),
            }),
            files: Mutex::new(HashMap::new()),
            open_handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            statfs_path,
            hooks: std::sync::OnceLock::new(),
            last_read_end: Mutex::new(HashMap::new()),
            logged_read_errors: Mutex::new(std::collections::HashSet::new()),
            shutdown_error: Mutex::new(None),
            reserve: std::sync::OnceLock::new(),
            space_pressure: std::sync::atomic::AtomicBool::new(false),
            history: Default::default(),
        })
    }

    pub fn set_sync_hooks(&self, hooks: Arc<dyn SyncHooks>) {
        let _ = self.hooks.set(hooks);
    }

    /// The pack store (the sync engine reads missing packs through it).
    pub fn packs(&self) -> &Arc<PackStore> {
        &self.data.packs
    }

    /// The index, marked as changed (the commit timer will commit it).
    fn index(&self) -> MutexGuard<'_, Index> {
        self.data.mark_changed()
    }

    /// Commits the index batch after making every referenced pack durable.
    pub fn commit(&self, durable: bool) -> FsResult<()> {
        let idx = self.data.index.lock();
        self.commit_locked(&idx, |idx| Ok(idx.commit(durable)?))
    }

    /// Runs `f` under the index lock, then commits durably as [`FsCore::commit`]
    /// does, without releasing the lock in between (garbage collection's
    /// decisions are committed before any writer sees the index again).
    pub fn commit_with<R>(&self, f: impl FnOnce(&Index) -> R) -> FsResult<R> {
        let idx = self.data.mark_changed();
        let r = f(&idx);
        self.commit_locked(&idx, |idx| Ok(idx.commit(true)?))?;
        Ok(r)
    }

    /// The one commit sequence, under the index lock: every pack the batch
    /// references becomes durable first, then `commit` ends the batch
    /// (a plain or durable commit, or a WAL checkpoint), then the sync
    /// engine learns that the placements recorded so far are durable.
    fn commit_locked(
        &self,
        idx: &Index,
        commit: impl FnOnce(&Index) -> FsResult<()>,
    ) -> FsResult<()> {
        self.seal_for_commit(idx)?;
        commit(idx)?;
        if let Some(r) = self.reserve.get() {
            r.ensure();
        }
        self.data.uncommitted.store(false, Ordering::Relaxed);
        if let Some(h) = self.hooks.get() {
            h.committed(idx);
        }
        Ok(())
    }

    /// Timer commit: only when something changed.
    pub fn commit_if_changed(&self) -> FsResult<()> {
        if self.data.uncommitted.load(Ordering::Relaxed) {
            self.commit(false)?;
        }
        Ok(())
    }

    /// Final flush and durable commit at unmount; stops the pack writers.
    pub fn shutdown(&self) -> FsResult<()> {
        let r = self.flush_all().and_then(|_| self.commit(true));
        self.data.packs.shutdown();
        if let Err(e) = &r {
            *self.shutdown_error.lock() = Some(e.to_string());
        }
        r
    }

    /// Makes every pack the batch references durable. On a full disk it
    /// drops the queued packs whose data was deleted meanwhile and releases
    /// the space reserve, so the commit that records the deletion fits,
    /// then tries once more; what is still refused stays queued and the
    /// writers get ENOSPC until space returns.
    fn seal_for_commit(&self, idx: &Index) -> FsResult<()> {
        match self.data.packs.seal_and_wait(idx) {
            Err(PackStoreError::Store(f)) if f.no_space => {
                self.space_pressure.store(true, Ordering::SeqCst);
                let dropped = self.data.packs.drop_dead_queued(idx)?;
                if dropped > 0 {
                    log::warn!(
                        "the disk is full: dropped {dropped} bytes of queued packs whose data was deleted before it reached the disk"
                    );
                }
                if let Some(r) = self.reserve.get() {
                    r.release();
                }
                Ok(self.data.packs.seal_and_wait(idx)?)
            }
            r => Ok(r?),
        }
    }

    /// Keeps a space reserve at `path` (the daemon, at mount).
    pub fn keep_space_reserve(&self, path: std::path::PathBuf) {
        let r = self.reserve.get_or_init(|| SpaceReserve::new(path));
        r.ensure();
    }

    /// True once after a commit met a full disk (garbage collection asks).
    pub fn take_space_pressure(&self) -> bool {
        self.space_pressure.swap(false, Ordering::SeqCst)
    }

    /// The error of the final flush ([`FsCore::shutdown`]), if it failed.
    pub fn shutdown_error(&self) -> Option<String> {
        self.shutdown_error.lock().clone()
    }
}

impl DataPath {
    /// The index, marked as changed (the commit timer will commit it).
    fn mark_changed(&self) -> MutexGuard<'_, Index> {
        self.uncommitted.store(true, Ordering::Relaxed);
        self.index.lock()
    }
}

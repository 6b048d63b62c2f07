//! The filesystem core: inodes, directories, open files and the data path.
//!
//! Nothing here knows about FUSE: every operation takes plain values and
//! returns an [`FsResult`], so the core is driven by the FUSE adapter
//! (`src/fuse.rs`) and, in tests, directly by a reference-model property test.
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
//! lock is never held across sealing or store reads.
//!
//! Durability: `fsync` flushes the file, finishes the open pack, waits until
//! every pack is durable in the store and then commits the index with
//! `synchronous=FULL`. A timer commits (not durably) every few seconds so a
//! crash loses at most that window of un-fsynced work and the tree stays
//! consistent (SQLite's WAL guarantees atomic commits).

pub mod acl;
pub mod error;
#[cfg(test)]
mod tests;

use parking_lot::{Mutex, MutexGuard};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use rayon::prelude::*;

use crate::chunk::chunker::Chunker;
use crate::chunk::seal::{ChunkId, ChunkSealer};
use crate::index::{Attr, ChunkLocation, DirEntry, Extent, FileKind, Index, Timestamp, ROOT_INO};
use crate::store::packstore::PackStore;
pub use error::{FsError, FsResult};

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

/// In-memory state of an open or dirty regular file.
#[derive(Default)]
struct FileState {
    open_count: u32,
    /// Non-overlapping, non-adjacent dirty runs: offset → bytes.
    dirty: BTreeMap<u64, Vec<u8>>,
    dirty_bytes: usize,
    /// Runs handed to the background flush job, readable until their
    /// extents are in the index. Newer `dirty` bytes take precedence.
    sealing: Vec<(u64, Arc<Vec<u8>>)>,
    /// A background flush job owns `sealing` (at most one per file, which
    /// keeps flushes of a file in order).
    job_running: bool,
    /// The last background flush failed; reported to the next caller.
    /// A failed background flush: its message and errno (ENOSPC stays
    /// ENOSPC for the writer that meets it).
    job_error: Option<(String, i32)>,
    /// Authoritative size while `size_dirty` (persisted at flush).
    size: u64,
    size_dirty: bool,
}

/// A run of file bytes on its way to the store: offset, bytes, and its chunk
/// cut points if they are already known.
type Run = (u64, Arc<Vec<u8>>, Option<Vec<usize>>);

/// A file's state and the condition its flush job signals when done.
#[derive(Default)]
struct FileSlot {
    state: parking_lot::Mutex<FileState>,
    job_done: parking_lot::Condvar,
}

type StateGuard<'a> = parking_lot::MutexGuard<'a, FileState>;

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
    /// Where each inode's last read ended: read-ahead only for readers that
    /// go on from there. A leaf lock.
    last_read_end: Mutex<HashMap<u64, u64>>,
    /// (inode, error) pairs already logged at error level: a damaged file
    /// read again and again logs one line, not one per read (later ones go
    /// to debug). Bounded; a leaf lock.
    logged_read_errors: Mutex<std::collections::HashSet<(u64, String)>>,
}

/// A read starting within this distance of the previous read's end counts
/// as sequential (the kernel's parallel readahead requests arrive slightly
/// out of order).
const SEQUENTIAL_SLACK: u64 = 2 * 1024 * 1024;

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

/// Access to an index from outside the core: the mounted core or, for
/// commands run without a mount, a plain mutex.
pub trait IndexAccess: Send + Sync {
    /// Runs `f` under the index lock; changes join the open batch.
    fn with_index(&self, f: &mut dyn FnMut(&Index));
    /// Makes every sealed pack durable, commits, checkpoints the WAL into
    /// the main database file and runs `f` while the file is the complete
    /// index and nobody can change it (index snapshots read it then).
    fn with_checkpoint(&self, f: &mut dyn FnMut()) -> FsResult<()>;
}

impl IndexAccess for FsCore {
    fn with_index(&self, f: &mut dyn FnMut(&Index)) {
        let idx = self.index();
        f(&idx)
    }

    fn with_checkpoint(&self, f: &mut dyn FnMut()) -> FsResult<()> {
        let idx = self.data.index.lock();
        self.data.packs.seal_and_wait(&idx)?;
        idx.checkpointed(f)?;
        self.data.uncommitted.store(false, Ordering::Relaxed);
        if let Some(h) = self.hooks.get() {
            h.committed(&idx);
        }
        Ok(())
    }
}

impl IndexAccess for Mutex<Index> {
    fn with_index(&self, f: &mut dyn FnMut(&Index)) {
        let idx = self.lock();
        f(&idx)
    }

    fn with_checkpoint(&self, f: &mut dyn FnMut()) -> FsResult<()> {
        let idx = self.lock();
        idx.checkpointed(f)?;
        Ok(())
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

/// A chunk cut from dirty data, on its way into the index.
struct CutChunk {
    file_offset: u64,
    len: usize,
    /// `None`: all zeros, stored as a hole.
    id: Option<ChunkId>,
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

    fn file_state(&self, ino: u64) -> Option<Arc<FileSlot>> {
        self.files.lock().get(&ino).cloned()
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        // Take the file state first (lock order), then the index.
        let fs = self.file_state(ino);
        let guard = fs.as_ref().map(|f| f.state.lock());
        let idx = self.data.index.lock();
        let mut a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        if let Some(st) = guard {
            if st.size_dirty {
                a.size = st.size;
            }
        }
        Ok(a)
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let ino = {
            let idx = self.data.index.lock();
            let p = idx.attr(parent)?.ok_or(FsError::NotFound)?;
            if p.kind != FileKind::Directory {
                return Err(FsError::NotDir);
            }
            idx.lookup(parent, name)?.ok_or(FsError::NotFound)?
        };
        self.getattr(ino)
    }

    fn new_inode_attr(
        &self,
        idx: &Index,
        caller: Caller,
        parent: &Attr,
        kind: FileKind,
        perm: u32,
    ) -> Attr {
        let now = Timestamp::now();
        let mut perm = perm & 0o7777;
        let mut gid = caller.gid;
        // BSD group semantics of a setgid directory.
        if parent.perm & libc::S_ISGID != 0 {
            gid = parent.gid;
            if kind == FileKind::Directory {
                perm |= libc::S_ISGID;
            }
        }
        let _ = idx;
        Attr {
            ino: 0,
            kind,
            perm,
            uid: caller.uid,
            gid,
            size: 0,
            nlink: if kind == FileKind::Directory { 2 } else { 1 },
            rdev: 0,
            atime: now,
            mtime: now,
            ctime: now,
        }
    }

    fn touch_dir(idx: &Index, dir: &mut Attr, nlink_delta: i32) -> FsResult<()> {
        let now = Timestamp::now();
        dir.mtime = now;
        dir.ctime = now;
        dir.nlink = (dir.nlink as i64 + nlink_delta as i64).max(0) as u32;
        idx.set_attr(dir)?;
        Ok(())
    }

    fn parent_dir(idx: &Index, parent: u64) -> FsResult<Attr> {
        let p = idx.attr(parent)?.ok_or(FsError::NotFound)?;
        if p.kind != FileKind::Directory {
            return Err(FsError::NotDir);
        }
        Ok(p)
    }

    /// Creates a node of any kind; `mode` carries the type bits.
    pub fn mknod(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
    ) -> FsResult<Attr> {
        let kind = FileKind::from_mode(mode).ok_or(FsError::Invalid)?;
        if kind == FileKind::Directory || kind == FileKind::Symlink {
            return Err(FsError::Invalid);
        }
        self.create_node(caller, parent, name, kind, mode, rdev, None)
    }

    pub fn mkdir(&self, caller: Caller, parent: u64, name: &[u8], perm: u32) -> FsResult<Attr> {
        self.create_node(caller, parent, name, FileKind::Directory, perm, 0, None)
    }

    pub fn symlink(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        target: &[u8],
    ) -> FsResult<Attr> {
        if target.len() > SYMLINK_MAX {
            return Err(FsError::NameTooLong);
        }
        self.create_node(
            caller,
            parent,
            name,
            FileKind::Symlink,
            0o777,
            0,
            Some(target),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn create_node(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        kind: FileKind,
        perm: u32,
        rdev: u32,
        target: Option<&[u8]>,
    ) -> FsResult<Attr> {
        check_name(name)?;
        let idx = self.index();
        let mut p = Self::parent_dir(&idx, parent)?;
        if idx.lookup(parent, name)?.is_some() {
            return Err(FsError::Exists);
        }
        let mut a = self.new_inode_attr(&idx, caller, &p, kind, perm);
        a.rdev = rdev;
        if let Some(t) = target {
            a.size = t.len() as u64;
        }
        a.ino = idx.create_inode(&a)?;
        if let Some(t) = target {
            idx.set_symlink(a.ino, t)?;
        }
        idx.insert_dirent(parent, name, a.ino)?;
        Self::touch_dir(
            &idx,
            &mut p,
            if kind == FileKind::Directory { 1 } else { 0 },
        )?;
        Ok(a)
    }

    /// Creates and opens a regular file.
    pub fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        perm: u32,
    ) -> FsResult<(Attr, u64)> {
        let a = self.create_node(caller, parent, name, FileKind::Regular, perm, 0, None)?;
        let fh = self.open_inode(a.ino);
        Ok((a, fh))
    }

    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let idx = self.data.index.lock();
        idx.symlink(ino)?.ok_or(FsError::Invalid)
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> FsResult<Attr> {
        check_name(newname)?;
        let idx = self.index();
        let mut p = Self::parent_dir(&idx, newparent)?;
        let mut a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        if a.kind == FileKind::Directory {
            return Err(FsError::NotPermitted);
        }
        if idx.lookup(newparent, newname)?.is_some() {
            return Err(FsError::Exists);
        }
        idx.insert_dirent(newparent, newname, ino)?;
        a.nlink += 1;
        a.ctime = Timestamp::now();
        idx.set_attr(&a)?;
        Self::touch_dir(&idx, &mut p, 0)?;
        drop(idx);
        self.getattr(ino)
    }

    /// Drops one link of `ino`; deletes it when no link and no open handle remain.
    fn drop_link(&self, idx: &Index, mut a: Attr) -> FsResult<()> {
        a.nlink = a.nlink.saturating_sub(if a.kind == FileKind::Directory {
            a.nlink
        } else {
            1
        });
        a.ctime = Timestamp::now();
        if a.nlink > 0 {
            idx.set_attr(&a)?;
            return Ok(());
        }
        // Not the FileState lock: the index lock is held here (lock order).
        let open = self.open_handles.lock().contains_key(&a.ino);
        if open {
            idx.set_attr(&a)?;
            idx.add_orphan(a.ino)?;
        } else {
            self.discard_file_state(a.ino);
            idx.delete_inode(a.ino)?;
        }
        Ok(())
    }

    /// Forgets a deleted file's state. Called under the index lock, so the
    /// state is only try-locked (a flusher holding it finds the inode gone).
    fn discard_file_state(&self, ino: u64) {
        if let Some(fs) = self.files.lock().remove(&ino) {
            if let Some(mut st) = fs.state.try_lock() {
                self.data
                    .dirty_total
                    .fetch_sub(st.dirty_bytes, Ordering::Relaxed);
                st.dirty_bytes = 0;
                st.dirty.clear();
            }
        }
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        let idx = self.index();
        let mut p = Self::parent_dir(&idx, parent)?;
        let ino = idx.lookup(parent, name)?.ok_or(FsError::NotFound)?;
        let a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        if a.kind == FileKind::Directory {
            return Err(FsError::IsDir);
        }
        idx.remove_dirent(parent, name)?;
        Self::touch_dir(&idx, &mut p, 0)?;
        self.drop_link(&idx, a)
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        if name == b"." {
            return Err(FsError::Invalid);
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        let idx = self.index();
        let mut p = Self::parent_dir(&idx, parent)?;
        let ino = idx.lookup(parent, name)?.ok_or(FsError::NotFound)?;
        let a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        if a.kind != FileKind::Directory {
            return Err(FsError::NotDir);
        }
        if !idx.dir_is_empty(ino)? {
            return Err(FsError::NotEmpty);
        }
        idx.remove_dirent(parent, name)?;
        Self::touch_dir(&idx, &mut p, -1)?;
        self.drop_link(&idx, a)
    }

    /// Is `dir` equal to `ancestor` or below it?
    fn is_within(idx: &Index, mut dir: u64, ancestor: u64) -> FsResult<bool> {
        for _ in 0..100_000 {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == ROOT_INO {
                return Ok(false);
            }
            match idx.parent_of(dir)? {
                Some(p) => dir = p,
                None => return Ok(false),
            }
        }
        Ok(false)
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        mode: RenameMode,
    ) -> FsResult<()> {
        check_name(newname)?;
        let idx = self.index();
        Self::parent_dir(&idx, parent)?;
        Self::parent_dir(&idx, newparent)?;
        let src_ino = idx.lookup(parent, name)?.ok_or(FsError::NotFound)?;
        let mut src = idx.attr(src_ino)?.ok_or(FsError::NotFound)?;
        let dst_ino = idx.lookup(newparent, newname)?;
        let now = Timestamp::now();

        if src.kind == FileKind::Directory
            && parent != newparent
            && Self::is_within(&idx, newparent, src_ino)?
        {
            return Err(FsError::Invalid);
        }

        match (mode, dst_ino) {
            (RenameMode::Exchange, None) => return Err(FsError::NotFound),
            (RenameMode::NoReplace, Some(_)) => return Err(FsError::Exists),
            (RenameMode::Exchange, Some(dst_ino)) => {
                let mut dst = idx.attr(dst_ino)?.ok_or(FsError::NotFound)?;
                if dst.kind == FileKind::Directory
                    && parent != newparent
                    && Self::is_within(&idx, parent, dst_ino)?
                {
                    return Err(FsError::Invalid);
                }
                idx.retarget_dirent(parent, name, dst_ino)?;
                idx.retarget_dirent(newparent, newname, src_ino)?;
                if parent != newparent {
                    let src_dir = (src.kind == FileKind::Directory) as i32;
                    let dst_dir = (dst.kind == FileKind::Directory) as i32;
                    let mut p = idx.attr(parent)?.ok_or(FsError::NotFound)?;
                    Self::touch_dir(&idx, &mut p, dst_dir - src_dir)?;
                    let mut np = idx.attr(newparent)?.ok_or(FsError::NotFound)?;
                    Self::touch_dir(&idx, &mut np, src_dir - dst_dir)?;
                } else {
                    let mut p = idx.attr(parent)?.ok_or(FsError::NotFound)?;
                    Self::touch_dir(&idx, &mut p, 0)?;
                }
                src.ctime = now;
                dst.ctime = now;
                idx.set_attr(&src)?;
                idx.set_attr(&dst)?;
                return Ok(());
            }
            _ => {}
        }

        if let Some(dst_ino) = dst_ino {
            if dst_ino == src_ino {
                return Ok(()); // two links to one inode: POSIX says do nothing
            }
            let dst = idx.attr(dst_ino)?.ok_or(FsError::NotFound)?;
            match (
                src.kind == FileKind::Directory,
                dst.kind == FileKind::Directory,
            ) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) => {
                    if !idx.dir_is_empty(dst_ino)? {
                        return Err(FsError::NotEmpty);
                    }
                }
                (false, false) => {}
            }
            idx.remove_dirent(newparent, newname)?;
            if dst.kind == FileKind::Directory {
                let mut np = idx.attr(newparent)?.ok_or(FsError::NotFound)?;
                Self::touch_dir(&idx, &mut np, -1)?;
            }
            self.drop_link(&idx, dst)?;
        }
        idx.remove_dirent(parent, name)?;
        idx.insert_dirent(newparent, newname, src_ino)?;
        let is_dir = (src.kind == FileKind::Directory) as i32;
        if parent != newparent {
            let mut p = idx.attr(parent)?.ok_or(FsError::NotFound)?;
            Self::touch_dir(&idx, &mut p, -is_dir)?;
            let mut np = idx.attr(newparent)?.ok_or(FsError::NotFound)?;
            Self::touch_dir(&idx, &mut np, is_dir)?;
        } else {
            let mut p = idx.attr(parent)?.ok_or(FsError::NotFound)?;
            Self::touch_dir(&idx, &mut p, 0)?;
        }
        src.ctime = now;
        idx.set_attr(&src)?;
        Ok(())
    }

    pub fn setattr(&self, ino: u64, s: SetAttr) -> FsResult<Attr> {
        if let Some(size) = s.size {
            if size > MAX_FILE_SIZE {
                return Err(FsError::TooBig);
            }
            self.truncate(ino, size)?;
        }
        let fs = self.file_state(ino);
        let guard = fs.as_ref().map(|f| f.state.lock());
        let idx = self.index();
        let mut a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        if let Some(st) = guard.as_ref() {
            if st.size_dirty {
                a.size = st.size;
            }
        }
        let now = Timestamp::now();
        if s.size.is_some() && a.kind == FileKind::Directory {
            return Err(FsError::IsDir);
        }
        if let Some(mode) = s.mode {
            a.perm = mode & 0o7777;
            if let Some(old) = idx.xattr(ino, acl::ACCESS_ACL)? {
                if let Some(new) = acl::with_mode(&old, a.perm) {
                    idx.set_xattr(ino, acl::ACCESS_ACL, &new)?;
                }
            }
        }
        if let Some(uid) = s.uid {
            a.uid = uid;
        }
        if let Some(gid) = s.gid {
            a.gid = gid;
        }
        let resolve = |t: TimeSet| match t {
            TimeSet::Now => now,
            TimeSet::At(ts) => ts,
        };
        if let Some(t) = s.atime {
            a.atime = resolve(t);
        }
        if let Some(t) = s.mtime {
            a.mtime = resolve(t);
        } else if s.size.is_some() {
            a.mtime = now;
        }
        a.ctime = s.ctime.unwrap_or(now);
        idx.set_attr(&a)?;
        Ok(a)
    }

    /// Sets a regular file's size: shrinking drops data past the end (dirty
    /// and stored), growing leaves a hole.
    fn truncate(&self, ino: u64, size: u64) -> FsResult<()> {
        let fs = self.file_state_or_new(ino);
        let mut st = fs.state.lock();
        // A running flush job would store bytes past the new end afterwards.
        Self::wait_job(&fs, &mut st)?;
        let idx = self.index();
        let a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        match a.kind {
            FileKind::Regular => {}
            FileKind::Directory => return Err(FsError::IsDir),
            _ => return Err(FsError::Invalid),
        }
        let cur = if st.size_dirty { st.size } else { a.size };
        if size < cur {
            // Drop dirty bytes past the new end.
            let keys: Vec<u64> = st.dirty.range(..).map(|(k, _)| *k).collect();
            for k in keys {
                let len = st.dirty[&k].len() as u64;
                if k >= size {
                    let v = st.dirty.remove(&k).expect("dirty run");
                    st.dirty_bytes -= v.len();
                    self.data.dirty_total.fetch_sub(v.len(), Ordering::Relaxed);
                } else if k + len > size {
                    let cut = (k + len - size) as usize;
                    let v = st.dirty.get_mut(&k).expect("dirty run");
                    v.truncate(v.len() - cut);
                    st.dirty_bytes -= cut;
                    self.data.dirty_total.fetch_sub(cut, Ordering::Relaxed);
                }
            }
            idx.remove_extents(ino, size, u64::MAX)?;
        }
        st.size = size;
        st.size_dirty = true;
        if st.dirty.is_empty() {
            let mut a = a;
            a.size = size;
            idx.set_attr(&a)?;
            st.size_dirty = false;
        }
        drop(idx);
        drop(st);
        self.forget_if_idle(ino);
        Ok(())
    }

    /// Drops a file's in-memory state once nothing is open, dirty or being
    /// flushed. Takes the map lock first (lock order), then re-checks.
    fn forget_if_idle(&self, ino: u64) {
        let mut files = self.files.lock();
        let idle = match files.get(&ino) {
            Some(slot) => {
                let st = slot.state.lock();
                st.open_count == 0
                    && st.dirty.is_empty()
                    && !st.size_dirty
                    && !st.job_running
                    && st.job_error.is_none()
            }
            None => false,
        };
        if idle {
            files.remove(&ino);
        }
    }

    fn file_state_or_new(&self, ino: u64) -> Arc<FileSlot> {
        let mut files = self.files.lock();
        files.entry(ino).or_default().clone()
    }

    fn open_inode(&self, ino: u64) -> u64 {
        // Under the map lock, so `forget_if_idle` cannot drop the slot
        // between lookup and count.
        let mut files = self.files.lock();
        let slot = files.entry(ino).or_default().clone();
        slot.state.lock().open_count += 1;
        drop(files);
        *self.open_handles.lock().entry(ino).or_default() += 1;
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// Opens a regular file; returns a handle number.
    pub fn open(&self, ino: u64) -> FsResult<u64> {
        let a = self.getattr(ino)?;
        if a.kind == FileKind::Directory {
            return Err(FsError::IsDir);
        }
        Ok(self.open_inode(ino))
    }

    /// Closes a handle: flushes the file's dirty data into the index and
    /// deletes the inode if it was unlinked while open.
    pub fn release(&self, ino: u64) -> FsResult<()> {
        let Some(fs) = self.file_state(ino) else {
            return Ok(());
        };
        let mut st = fs.state.lock();
        st.open_count = st.open_count.saturating_sub(1);
        {
            let mut handles = self.open_handles.lock();
            if st.open_count == 0 {
                handles.remove(&ino);
            } else {
                handles.insert(ino, st.open_count);
            }
        }
        let unlinked = st.open_count == 0
            && self
                .data
                .index
                .lock()
                .attr(ino)?
                .is_none_or(|a| a.nlink == 0);
        if unlinked {
            // Last handle of an unlinked file: its data will never be read.
            self.data
                .dirty_total
                .fetch_sub(st.dirty_bytes, Ordering::Relaxed);
            st.dirty.clear();
            st.dirty_bytes = 0;
            st.size_dirty = false;
        }
        let res = self.flush_file(ino, &fs, &mut st);
        if st.open_count == 0 {
            let idx = self.index();
            let gone = match idx.attr(ino)? {
                Some(a) => a.nlink == 0,
                None => true,
            };
            if gone {
                idx.delete_inode(ino)?;
            }
            drop(idx);
            drop(st);
            self.forget_if_idle(ino);
        }
        res
    }

    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> FsResult<usize> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(FsError::TooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        if let Some(h) = self.hooks.get() {
            h.throttle_writes(&|| self.data.packs.unindexed_bytes());
        }
        let fs = self.file_state_or_new(ino);
        let mut st = fs.state.lock();
        if !st.size_dirty {
            let idx = self.data.index.lock();
            st.size = idx.attr(ino)?.ok_or(FsError::NotFound)?.size;
        }
        let before = st.dirty_bytes;
        insert_dirty(&mut st, offset, data);
        self.data
            .dirty_total
            .fetch_add(st.dirty_bytes - before, Ordering::Relaxed);
        if end > st.size {
            st.size = end;
        }
        st.size_dirty = true;
        {
            let idx = self.index();
            let mut a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
            let now = Timestamp::now();
            a.mtime = now;
            a.ctime = now;
            idx.set_attr(&a)?;
        }
        if self.data.dirty_total.load(Ordering::Relaxed) > GLOBAL_DIRTY_LIMIT {
            self.flush_file(ino, &fs, &mut st)?;
        } else if st.dirty_bytes >= FLUSH_BYTES {
            self.flush_in_background(ino, &fs, &mut st)?;
        }
        Ok(data.len())
    }

    pub fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        // Snapshot extents, locations and dirty overlay under the file lock;
        // decrypt without it (chunks are immutable, content-addressed).
        // Garbage collection deletes no pack file while this guard is held,
        // so the locations planned here stay readable until the read is done.
        let _gc_gate = self.data.packs.read_guard();
        let fs = self.file_state(ino);
        let guard = fs.as_ref().map(|f| f.state.lock());
        let (file_size, plan, overlay) = {
            let idx = self.data.index.lock();
            let a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
            let file_size = match guard.as_ref() {
                Some(st) if st.size_dirty => st.size,
                _ => a.size,
            };
            if offset >= file_size {
                return Ok(Vec::new());
            }
            let end = (offset + size as u64).min(file_size);
            let mut plan = Vec::new();
            for e in idx.extents_in(ino, offset, end)? {
                let loc = idx.chunk_location(&e.chunk)?;
                let name = match loc {
                    Some(l) => idx.pack_name(l.pack)?,
                    None => None,
                };
                plan.push((e, loc, name));
            }
            // Bytes still in memory, oldest first: runs being sealed, then
            // dirty runs (newer, so they are copied last and win).
            let mut overlay: Vec<(u64, Vec<u8>)> = Vec::new();
            if let Some(st) = guard.as_ref() {
                let sealing = st.sealing.iter().map(|(k, v)| (*k, v.as_slice()));
                let dirty = st.dirty.range(..end).map(|(k, v)| (*k, v.as_slice()));
                for (k, v) in sealing.chain(dirty) {
                    let vend = k + v.len() as u64;
                    if vend <= offset || k >= end {
                        continue;
                    }
                    let s = k.max(offset);
                    let e2 = vend.min(end);
                    overlay.push((s, v[(s - k) as usize..(e2 - k) as usize].to_vec()));
                }
            }
            (file_size, plan, overlay)
        };
        drop(guard);
        let end = (offset + size as u64).min(file_size);
        // Random readers (thumbnailers, databases) get no read-ahead: it
        // would decrypt 4 MiB they never read (scripts/bench-random-read.sh,
        // 4 KiB random reads of a 1 GiB file: ~150 → ~290 IOPS without it;
        // each still decrypts its whole ~1 MiB chunk).
        let sequential = {
            let mut m = self.last_read_end.lock();
            if m.len() > 4096 {
                m.clear();
            }
            let prev = m.insert(ino, end);
            offset == 0 || prev.is_some_and(|p| offset.abs_diff(p) <= SEQUENTIAL_SLACK)
        };
        if sequential {
            self.read_ahead(ino, end, file_size);
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        // Most reads touch one chunk: no thread hop then. Plaintexts are
        // shared (Arc) and copied once, into the reply buffer.
        let fetch = |(e, loc, name): &(Extent, Option<ChunkLocation>, Option<[u8; 16]>)| {
            let (Some(loc), Some(name)) = (loc, name) else {
                return Err(self.data_error(
                    ino,
                    format!("chunk {:?} is missing from the index", e.chunk),
                ));
            };
            let plain = self
                .data
                .packs
                .read_chunk(&e.chunk, loc, name)
                .map_err(|source| self.read_failed(ino, source))?;
            let s = e.offset.max(offset);
            let t = (e.offset + e.length).min(end);
            let from = (e.chunk_offset + (s - e.offset)) as usize;
            let to = from + (t - s) as usize;
            if to > plain.len() {
                return Err(self.data_error(ino, "extent is longer than its chunk".into()));
            }
            Ok(((s - offset) as usize, plain, from..to))
        };
        type Piece = (usize, Arc<Vec<u8>>, std::ops::Range<usize>);
        let pieces: Vec<FsResult<Piece>> = if plan.len() <= 1 {
            plan.iter().map(fetch).collect()
        } else {
            plan.par_iter().map(fetch).collect()
        };
        for p in pieces {
            let (dst, plain, range) = p?;
            buf[dst..dst + range.len()].copy_from_slice(&plain[range]);
        }
        for (s, bytes) in overlay {
            let dst = (s - offset) as usize;
            buf[dst..dst + bytes.len()].copy_from_slice(&bytes);
        }
        Ok(buf)
    }

    /// Starts decrypting the chunks after `from` in the background so a
    /// sequential reader finds them in the cache (both cores work while the
    /// kernel copies the previous chunk out).
    fn read_ahead(&self, ino: u64, from: u64, file_size: u64) {
        if from >= file_size {
            return;
        }
        let plan: Vec<(ChunkId, ChunkLocation, [u8; 16])> = {
            let idx = self.data.index.lock();
            let Ok(extents) = idx.extents_in(ino, from, (from + READ_AHEAD).min(file_size)) else {
                return;
            };
            let mut plan = Vec::new();
            for e in extents {
                if self.data.packs.is_cached(&e.chunk) {
                    continue;
                }
                if let Ok(Some(loc)) = idx.chunk_location(&e.chunk) {
                    if let Ok(Some(name)) = idx.pack_name(loc.pack) {
                        plan.push((e.chunk, loc, name));
                    }
                }
            }
            plan
        };
        for (id, loc, name) in plan {
            if !self.data.packs.begin_prefetch(id) {
                continue;
            }
            let packs = self.data.packs.clone();
            rayon::spawn(move || {
                // Errors surface (and are logged) when the reader gets there.
                let _ = packs.read_chunk(&id, &loc, &name);
                packs.end_prefetch(&id);
            });
        }
    }

    fn path_for_log(&self, ino: u64) -> String {
        let idx = self.data.index.lock();
        match idx.path_of(ino) {
            Ok(p) => String::from_utf8_lossy(&p).into_owned(),
            Err(_) => format!("<inode {ino}>"),
        }
    }

    fn read_failed(&self, ino: u64, source: crate::store::packstore::ChunkReadError) -> FsError {
        let path = self.path_for_log(ino);
        let first = {
            let mut seen = self.logged_read_errors.lock();
            if seen.len() > 4096 {
                seen.clear();
            }
            seen.insert((ino, source.to_string()))
        };
        if first {
            log::error!("{path}: {source}");
        } else {
            log::debug!("{path}: {source}");
        }
        FsError::Data {
            path,
            source: Box::new(source),
        }
    }

    fn data_error(&self, ino: u64, msg: String) -> FsError {
        let path = self.path_for_log(ino);
        log::error!("{path}: {msg}");
        FsError::Inconsistent { path, detail: msg }
    }

    /// Waits until the file's background flush job is done; returns its error.
    fn wait_job(slot: &FileSlot, st: &mut StateGuard<'_>) -> FsResult<()> {
        while st.job_running {
            slot.job_done.wait(st);
        }
        match st.job_error.take() {
            Some((message, errno)) => Err(FsError::Flush { message, errno }),
            None => Ok(()),
        }
    }

    /// Moves all of a file's dirty data into chunks, packs and extents and
    /// persists its size (release, fsync, truncate, unmount).
    fn flush_file(&self, ino: u64, slot: &FileSlot, st: &mut StateGuard<'_>) -> FsResult<()> {
        Self::wait_job(slot, st)?;
        if !st.dirty.is_empty() {
            let runs: Vec<Run> = self
                .data
                .take_dirty(st)
                .into_iter()
                .map(|(o, b)| (o, Arc::new(b), None))
                .collect();
            if let Err(e) = self.data.store_runs(ino, &runs) {
                // Keep the bytes: a later flush may succeed.
                for (off, run, _) in &runs {
                    self.data.put_back(st, *off, run);
                }
                return Err(e);
            }
        }
        if st.size_dirty {
            let idx = self.index();
            if let Some(mut a) = idx.attr(ino)? {
                a.size = st.size;
                idx.set_attr(&a)?;
            }
            st.size_dirty = false;
        }
        Ok(())
    }

    /// Hands a growing file's dirty data to a background job, so the writer
    /// fills the next buffer while this one is hashed and sealed. At most one
    /// job runs per file (this waits for the previous one), which keeps the
    /// file's flushes in order and bounds its memory to two buffers.
    fn flush_in_background(
        &self,
        ino: u64,
        slot: &Arc<FileSlot>,
        st: &mut StateGuard<'_>,
    ) -> FsResult<()> {
        Self::wait_job(slot, st)?;
        if st.dirty.is_empty() {
            return Ok(());
        }
        // The run that ends at EOF is still growing: cut it here and keep
        // its last (incomplete) chunk as the dirty run the writer appends
        // to, so a file written in pieces is cut exactly like the same file
        // written at once (that is what makes copies deduplicate).
        let eof = st.size;
        let mut runs: Vec<Run> = Vec::new();
        for (off, mut bytes) in self.data.take_dirty(st) {
            if off + bytes.len() as u64 != eof {
                runs.push((off, Arc::new(bytes), None));
                continue;
            }
            let mut points = self.data.chunker.cut_points(&bytes);
            if points.len() < 2 {
                self.data.put_back_owned(st, off, bytes);
                continue;
            }
            points.pop();
            let keep_from = *points.last().expect("cut point");
            let mut tail = Vec::with_capacity(DIRTY_RUN_CAPACITY.max(bytes.len() - keep_from));
            tail.extend_from_slice(&bytes[keep_from..]);
            bytes.truncate(keep_from);
            self.data.put_back_owned(st, off + keep_from as u64, tail);
            runs.push((off, Arc::new(bytes), Some(points)));
        }
        if runs.is_empty() {
            return Ok(());
        }
        st.sealing = runs.iter().map(|(o, b, _)| (*o, b.clone())).collect();
        st.job_running = true;
        let data = self.data.clone();
        let slot = slot.clone();
        rayon::spawn(move || {
            let result = data.store_runs(ino, &runs);
            let mut st = slot.state.lock();
            st.sealing.clear();
            match result {
                Ok(()) => {}
                Err(e) => {
                    log::error!("background flush of inode {ino} failed: {e}");
                    for (off, run, _) in &runs {
                        data.put_back(&mut st, *off, run);
                    }
                    st.job_error = Some((e.to_string(), e.errno()));
                }
            }
            st.job_running = false;
            slot.job_done.notify_all();
        });
        Ok(())
    }

    /// Makes a file's data and the whole index durable.
    pub fn fsync(&self, ino: u64) -> FsResult<()> {
        if let Some(fs) = self.file_state(ino) {
            let mut st = fs.state.lock();
            self.flush_file(ino, &fs, &mut st)?;
        }
        self.commit(true)
    }

    /// Commits the index batch after making every referenced pack durable.
    pub fn commit(&self, durable: bool) -> FsResult<()> {
        let idx = self.data.index.lock();
        self.data.packs.seal_and_wait(&idx)?;
        idx.commit(durable)?;
        self.data.uncommitted.store(false, Ordering::Relaxed);
        if let Some(h) = self.hooks.get() {
            h.committed(&idx);
        }
        Ok(())
    }

    /// Runs `f` under the index lock, then commits durably as [`FsCore::commit`]
    /// does, without releasing the lock in between (garbage collection's
    /// decisions are committed before any writer sees the index again).
    pub fn commit_with<R>(&self, f: impl FnOnce(&Index) -> R) -> FsResult<R> {
        let idx = self.data.mark_changed();
        let r = f(&idx);
        self.data.packs.seal_and_wait(&idx)?;
        idx.commit(true)?;
        self.data.uncommitted.store(false, Ordering::Relaxed);
        if let Some(h) = self.hooks.get() {
            h.committed(&idx);
        }
        Ok(r)
    }

    /// Timer commit: only when something changed.
    pub fn commit_if_changed(&self) -> FsResult<()> {
        if self.data.uncommitted.load(Ordering::Relaxed) {
            self.commit(false)?;
        }
        Ok(())
    }

    /// Flushes every file's dirty data (unmount, memory pressure).
    pub fn flush_all(&self) -> FsResult<()> {
        let all: Vec<(u64, Arc<FileSlot>)> = self
            .files
            .lock()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let mut first_err = None;
        for (ino, fs) in all {
            let mut st = fs.state.lock();
            if let Err(e) = self.flush_file(ino, &fs, &mut st) {
                log::error!("flushing inode {ino} failed: {e}");
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Final flush and durable commit at unmount; stops the pack writers.
    pub fn shutdown(&self) -> FsResult<()> {
        let r = self.flush_all().and_then(|_| self.commit(true));
        self.data.packs.shutdown();
        r
    }

    /// Entries after cursor `after` (0 = from the start), including `.` and
    /// `..` at cursors 1 and 2; stored entries use cursor id + 2.
    pub fn readdir(&self, ino: u64, after: u64, limit: usize) -> FsResult<Vec<DirEntry>> {
        let idx = self.data.index.lock();
        let a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        if a.kind != FileKind::Directory {
            return Err(FsError::NotDir);
        }
        let mut out = Vec::new();
        if after < 1 {
            out.push(DirEntry {
                cursor: 1,
                name: b".".to_vec(),
                ino,
                kind: FileKind::Directory,
            });
        }
        if after < 2 {
            let parent = if ino == ROOT_INO {
                ROOT_INO
            } else {
                idx.parent_of(ino)?.unwrap_or(ROOT_INO)
            };
            out.push(DirEntry {
                cursor: 2,
                name: b"..".to_vec(),
                ino: parent,
                kind: FileKind::Directory,
            });
        }
        let rest = idx.read_dir(ino, after.saturating_sub(2), limit)?;
        out.extend(rest.into_iter().map(|mut e| {
            e.cursor += 2;
            e
        }));
        Ok(out)
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        let idx = self.data.index.lock();
        idx.attr(ino)?.ok_or(FsError::NotFound)?;
        idx.xattr(ino, name)?.ok_or(FsError::NoAttr)
    }

    /// `flags`: XATTR_CREATE / XATTR_REPLACE semantics.
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        if name.is_empty() || name.len() > 255 {
            return Err(if name.is_empty() {
                FsError::Invalid
            } else {
                FsError::Range
            });
        }
        if value.len() > 65536 {
            return Err(FsError::TooBig);
        }
        let idx = self.index();
        let mut a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        let exists = idx.xattr(ino, name)?.is_some();
        if flags & libc::XATTR_CREATE != 0 && exists {
            return Err(FsError::Exists);
        }
        if flags & libc::XATTR_REPLACE != 0 && !exists {
            return Err(FsError::NoAttr);
        }
        if name == acl::ACCESS_ACL {
            let bits = acl::mode_bits(value).ok_or(FsError::Invalid)?;
            a.perm = (a.perm & !0o777) | bits;
            if acl::is_minimal(value) {
                // Equivalent to the mode: nothing to store (as ext4 does).
                idx.remove_xattr(ino, name)?;
            } else {
                idx.set_xattr(ino, name, value)?;
            }
        } else {
            idx.set_xattr(ino, name, value)?;
        }
        a.ctime = Timestamp::now();
        idx.set_attr(&a)?;
        Ok(())
    }

    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let idx = self.data.index.lock();
        idx.attr(ino)?.ok_or(FsError::NotFound)?;
        let mut out = Vec::new();
        for n in idx.xattr_names(ino)? {
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        let idx = self.index();
        let mut a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        if !idx.remove_xattr(ino, name)? {
            return Err(FsError::NoAttr);
        }
        a.ctime = Timestamp::now();
        idx.set_attr(&a)?;
        Ok(())
    }

    /// fallocate mode 0: reserve by extending the size (tresor allocates
    /// nothing ahead: a hole reads as zeros and costs no storage).
    pub fn fallocate(&self, ino: u64, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        if mode != 0 {
            return Err(FsError::NotSupported);
        }
        let end = offset.checked_add(length).ok_or(FsError::TooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        let a = self.getattr(ino)?;
        if a.kind != FileKind::Regular {
            return Err(FsError::NotSupported);
        }
        if end > a.size {
            self.truncate(ino, end)?;
            let idx = self.index();
            let mut a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
            a.ctime = Timestamp::now();
            idx.set_attr(&a)?;
        }
        Ok(())
    }

    pub fn statfs(&self) -> FsResult<FsStats> {
        let files = self.data.index.lock().inode_count()?;
        let (blocks, bfree, bavail, bsize) = match nix::sys::statvfs::statvfs(&self.statfs_path) {
            Ok(s) => (
                s.blocks() * s.fragment_size() / 4096,
                s.blocks_free() * s.fragment_size() / 4096,
                s.blocks_available() * s.fragment_size() / 4096,
                4096,
            ),
            Err(_) => (0, 0, 0, 4096),
        };
        Ok(FsStats {
            blocks,
            bfree,
            bavail,
            files: files + 1_000_000,
            ffree: 1_000_000,
            bsize,
        })
    }
}

impl DataPath {
    /// The index, marked as changed (the commit timer will commit it).
    fn mark_changed(&self) -> MutexGuard<'_, Index> {
        self.uncommitted.store(true, Ordering::Relaxed);
        self.index.lock()
    }

    /// Takes every dirty run out of a file's state.
    fn take_dirty(&self, st: &mut FileState) -> Vec<(u64, Vec<u8>)> {
        let runs = std::mem::take(&mut st.dirty);
        let taken: usize = runs.values().map(|v| v.len()).sum();
        st.dirty_bytes -= taken;
        self.dirty_total.fetch_sub(taken, Ordering::Relaxed);
        runs.into_iter().collect()
    }

    /// Returns a run taken by `take_dirty` (no other run overlaps it).
    fn put_back_owned(&self, st: &mut FileState, offset: u64, bytes: Vec<u8>) {
        st.dirty_bytes += bytes.len();
        self.dirty_total.fetch_add(bytes.len(), Ordering::Relaxed);
        st.dirty.insert(offset, bytes);
    }

    /// Returns bytes to the dirty map beneath any newer dirty bytes.
    fn put_back(&self, st: &mut FileState, offset: u64, bytes: &[u8]) {
        let before = st.dirty_bytes;
        insert_dirty_under(st, offset, bytes);
        self.dirty_total
            .fetch_add(st.dirty_bytes - before, Ordering::Relaxed);
    }

    /// Cuts runs into chunks (unless the cut points come with the run),
    /// dedups and seals the chunks, appends new ones to the open pack and
    /// records the extents, in one index batch.
    fn store_runs(&self, ino: u64, runs: &[Run]) -> FsResult<()> {
        let cuts: Vec<(u64, &[u8], Vec<usize>)> = runs
            .iter()
            .map(|(off, bytes, points)| {
                let points = match points {
                    Some(p) => p.clone(),
                    None => self.chunker.cut_points(bytes),
                };
                (*off, bytes.as_slice(), points)
            })
            .collect();

        // Hash every chunk in parallel; all-zero chunks become holes.
        let mut pieces: Vec<(CutChunk, &[u8])> = Vec::new();
        for (off, data, points) in &cuts {
            let mut start = 0usize;
            for &p in points {
                pieces.push((
                    CutChunk {
                        file_offset: off + start as u64,
                        len: p - start,
                        id: None,
                    },
                    &data[start..p],
                ));
                start = p;
            }
        }
        pieces.par_iter_mut().for_each(|(c, bytes)| {
            if !bytes.iter().all(|&b| b == 0) {
                c.id = Some(self.sealer.chunk_id(bytes));
            }
        });

        // Which chunks are new? (One index lookup each, under the lock.)
        let known: Vec<bool> = {
            let idx = self.index.lock();
            let mut v = Vec::with_capacity(pieces.len());
            for (c, _) in &pieces {
                v.push(match &c.id {
                    Some(id) => idx.chunk_location(id)?.is_some(),
                    None => true,
                });
            }
            v
        };
        let mut seen = std::collections::HashSet::new();
        let to_seal: Vec<usize> = (0..pieces.len())
            .filter(|&i| !known[i] && seen.insert(pieces[i].0.id.expect("id")))
            .collect();
        let sealed: Vec<(usize, Vec<u8>)> = to_seal
            .par_iter()
            .map(|&i| {
                let (c, bytes) = &pieces[i];
                (i, self.sealer.seal(c.id.as_ref().expect("id"), bytes))
            })
            .collect();

        let idx = self.mark_changed();
        let Some(mut attr) = idx.attr(ino)? else {
            // Deleted while we sealed: nothing may reference the inode.
            return Ok(());
        };
        // A chunk found above may have been unreferenced and collected by
        // garbage collection since (it runs under this lock): store it again.
        for (i, (c, bytes)) in pieces.iter().enumerate() {
            if let (true, Some(id)) = (known[i], c.id) {
                if idx.chunk_location(&id)?.is_none() {
                    let s = self.sealer.seal(&id, bytes);
                    let loc = self.packs.append(&idx, &id, &s, bytes.len() as u32)?;
                    idx.insert_chunk(&id, &loc)?;
                }
            }
        }
        for (i, s) in &sealed {
            let (c, bytes) = &pieces[*i];
            let id = c.id.expect("id");
            if idx.chunk_location(&id)?.is_none() {
                let loc: ChunkLocation = self.packs.append(&idx, &id, s, bytes.len() as u32)?;
                idx.insert_chunk(&id, &loc)?;
            }
        }
        let mut flushed_end = 0;
        for (c, _) in &pieces {
            let end = c.file_offset + c.len as u64;
            flushed_end = flushed_end.max(end);
            idx.remove_extents(ino, c.file_offset, end)?;
            if let Some(id) = c.id {
                idx.insert_extent(
                    ino,
                    &Extent {
                        offset: c.file_offset,
                        length: c.len as u64,
                        chunk: id,
                        chunk_offset: 0,
                    },
                )?;
            }
        }
        // The stored size covers what is stored; the caller persists the
        // final size once nothing is left in memory.
        if flushed_end > attr.size {
            attr.size = flushed_end;
            idx.set_attr(&attr)?;
        }
        Ok(())
    }
}

/// Inserts `data` at `offset` into the dirty map, merging with overlapping
/// and adjacent runs so the map stays non-overlapping.
fn insert_dirty(st: &mut FileState, offset: u64, data: &[u8]) {
    merge_dirty(st, offset, data, true)
}

/// Like [`insert_dirty`], but bytes already dirty win over `data` (used to
/// return older bytes from a flush job under newer writes).
fn insert_dirty_under(st: &mut FileState, offset: u64, data: &[u8]) {
    merge_dirty(st, offset, data, false)
}

fn merge_dirty(st: &mut FileState, offset: u64, data: &[u8], data_wins: bool) {
    let end = offset + data.len() as u64;
    // Fast path: append to the run that ends exactly at `offset`.
    if let Some((&k, v)) = st.dirty.range_mut(..=offset).next_back() {
        let vend = k + v.len() as u64;
        if vend == offset && st.dirty.range(offset + 1..=end).next().is_none() {
            let v = st.dirty.get_mut(&k).expect("run");
            if v.capacity() - v.len() < data.len() {
                v.reserve(data.len().max(DIRTY_RUN_CAPACITY.saturating_sub(v.len())));
            }
            v.extend_from_slice(data);
            st.dirty_bytes += data.len();
            return;
        }
    }
    // General case: collect every run touching [offset, end].
    let mut start = offset;
    let mut stop = end;
    let touching: Vec<u64> = st
        .dirty
        .range(..=end)
        .filter(|(k, v)| **k + v.len() as u64 >= offset)
        .map(|(k, _)| *k)
        .collect();
    for k in &touching {
        let len = st.dirty[k].len() as u64;
        start = start.min(*k);
        stop = stop.max(k + len);
    }
    let mut merged = vec![0u8; (stop - start) as usize];
    let at = (offset - start) as usize;
    if !data_wins {
        merged[at..at + data.len()].copy_from_slice(data);
    }
    let mut old_bytes = 0;
    for k in touching {
        let v = st.dirty.remove(&k).expect("run");
        old_bytes += v.len();
        let at = (k - start) as usize;
        merged[at..at + v.len()].copy_from_slice(&v);
    }
    if data_wins {
        merged[at..at + data.len()].copy_from_slice(data);
    }
    st.dirty_bytes = st.dirty_bytes - old_bytes + merged.len();
    st.dirty.insert(start, merged);
}

//! The FUSE adapter: no logic. Each callback converts fuser's types, calls
//! the [`FsCore`], and turns its `Result` into a reply; errno values come only
//! from [`FsError::errno`](crate::fs::FsError::errno).
//!
//! Kernel settings and why: 1 MiB `max_write` (8× fewer requests than the
//! 128 KiB default for streaming writes), `st_blksize` 1 MiB so `cp` writes in
//! 1 MiB blocks, readdirplus (one round trip for `ls -l`), several request
//! threads (`n_threads`, `clone_fd`) so reads of different chunks decrypt in
//! parallel. Attribute and entry TTLs are an hour ([`TTL`]), negative
//! lookups are cached as long, and directories are opened with
//! `FOPEN_CACHE_DIR`: while mounted, every change to the namespace and to
//! attributes goes through the kernel, which updates or drops what it
//! cached for the inodes concerned (a hard link is the same kernel inode
//! under every name; link, unlink and rename invalidate the parents, the
//! inode's nlink and ctime; setattr replies carry the new attributes;
//! writes, xattr and ACL changes invalidate the inode). A change tresor
//! makes by itself must tell the kernel through the notifier, as
//! [`TresorFuse::clear_setgid`] does. So `ls -l` of a listed directory, a
//! stat and a lookup of a missing name are answered by the kernel alone.
//! `st_blocks` comes from the core (data extents, not the size), and
//! `lseek` (SEEK_DATA/SEEK_HOLE) and every fallocate mode go to the core.
//! `FUSE_POSIX_ACL` with `FUSE_DONT_MASK`: the kernel enforces and caches
//! ACLs, the core inherits default ACLs and applies the umask otherwise
//! (`fs/acl.rs`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, KernelConfig,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
};

use crate::fs::{Caller, FsCore, FsError, RenameMode, SetAttr, TimeSet};
use crate::index::{Attr, FileKind, Timestamp};

/// How long the kernel may use attributes, entries and negative entries
/// without asking (see the module documentation for why that is safe).
const TTL: Duration = Duration::from_secs(3600);
const BLKSIZE: u32 = 1024 * 1024;
pub const MAX_WRITE: u32 = 1024 * 1024;

pub struct TresorFuse {
    core: Arc<FsCore>,
    /// The session's notifier, set once the session exists (see
    /// [`TresorFuse::notifier_slot`]).
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    /// fuser's mount handle, taken in `destroy` (see there).
    unmounter: Arc<parking_lot::Mutex<Option<fuser::SessionUnmounter>>>,
}

impl TresorFuse {
    pub fn new(core: Arc<FsCore>) -> TresorFuse {
        TresorFuse {
            core,
            notifier: Arc::default(),
            unmounter: Arc::default(),
        }
    }

    /// Where the daemon puts `session.unmount_callable()`.
    pub fn unmounter_slot(&self) -> Arc<parking_lot::Mutex<Option<fuser::SessionUnmounter>>> {
        self.unmounter.clone()
    }

    /// Where the daemon puts `session.notifier()` once it has the session.
    pub fn notifier_slot(&self) -> Arc<std::sync::OnceLock<fuser::Notifier>> {
        self.notifier.clone()
    }

    /// Before a write, truncate or fallocate: the core clears a setgid bit
    /// the kernel leaves set; the kernel's cached attributes are then
    /// dropped so the next stat shows it (a fallocate or write reply
    /// carries no attributes).
    fn clear_setgid(&self, req: &Request, ino: u64) -> Result<(), FsError> {
        if self.core.clear_setgid_for(caller(req), ino)? {
            if let Some(n) = self.notifier.get() {
                // offset -1: attributes only, no page cache (no lock the
                // request in progress holds).
                if let Err(e) = n.inval_inode(INodeNo(ino), -1, 0) {
                    log::debug!("invalidating inode {ino}'s attributes: {e}");
                }
            }
        }
        Ok(())
    }
}

/// The errno for `e`, from the one table ([`FsError::errno`]). An error
/// that becomes EIO says nothing to the application, so it is logged here,
/// once per operation, kind and inode (read errors are logged by the core,
/// which knows the file's path, and are not repeated here). A failing SQLite
/// statement is never a silent EIO.
fn errno(op: &'static str, ino: u64, e: &FsError) -> Errno {
    let errno = e.errno();
    if errno == libc::EIO && !matches!(e, FsError::Data { .. }) {
        if EIO_LOG.first(op, e.kind(), ino) {
            log::error!("{op} on inode {ino} failed with EIO: {e}");
        } else {
            log::debug!("{op} on inode {ino} failed with EIO again: {e}");
        }
    }
    Errno::from_i32(errno)
}

/// (operation, error kind, inode) triples already logged. Bounded: past
/// `LIMIT` entries every EIO is logged at debug level only, so a damaged
/// vault cannot grow the daemon's memory or its log without bound.
struct OnceLog {
    seen: parking_lot::Mutex<std::collections::HashSet<(&'static str, &'static str, u64)>>,
}

impl OnceLog {
    const LIMIT: usize = 10_000;

    fn first(&self, op: &'static str, kind: &'static str, ino: u64) -> bool {
        let mut seen = self.seen.lock();
        seen.len() < Self::LIMIT && seen.insert((op, kind, ino))
    }
}

static EIO_LOG: std::sync::LazyLock<OnceLog> = std::sync::LazyLock::new(|| OnceLog {
    seen: parking_lot::Mutex::new(std::collections::HashSet::new()),
});

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

fn to_fuse_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime.to_system(),
        mtime: a.mtime.to_system(),
        ctime: a.ctime.to_system(),
        crtime: a.ctime.to_system(),
        kind: file_type(a.kind),
        perm: a.perm as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// The attributes of a negative entry: node id 0 (the rest is unread).
fn negative_entry() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        umask: 0,
    }
}

/// The caller of a create, with its umask: the kernel does not apply it
/// (`FUSE_DONT_MASK`), the core does unless a default ACL applies.
fn creator(req: &Request, umask: u32) -> Caller {
    Caller {
        umask,
        ..caller(req)
    }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(s) => TimeSet::At(kernel_time(s)),
    }
}

/// A time the kernel sent in a setattr request, as fuser hands it over.
///
/// The kernel sends `(sec, nsec)` with `nsec` in `0..1e9` counted forward
/// from `sec`, so 1960-06-01 12:00:00.5 is `sec = -302_356_800, nsec =
/// 500_000_000`. fuser 0.18 (`src/time.rs`, `system_time_from_time`, marked
/// TODO there) builds `UNIX_EPOCH - Duration::new(-sec, nsec)` for negative
/// `sec`: it subtracts the fraction instead of adding it, so every pre-1970
/// time with a fraction arrived one second early, and each copy shifted it
/// again. That mapping is one-to-one, so it is undone exactly here: the
/// duration before the epoch holds `-sec` in its seconds and `nsec` in its
/// nanoseconds. Times at or after 1970 pass unchanged. fuser is pinned to
/// `=0.18.0` in Cargo.toml because a fixed fuser would make this wrong; the
/// mounted test `tests/posix.rs::pre_1970_times_with_fractions_are_exact`
/// fails if either side changes.
fn kernel_time(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(_) => Timestamp::from_system(t),
        Err(before) => {
            let d = before.duration();
            Timestamp {
                sec: -(d.as_secs() as i64),
                nsec: d.subsec_nanos(),
            }
        }
    }
}

fn reply_entry(reply: ReplyEntry, op: &'static str, ino: u64, r: Result<Attr, FsError>) {
    match r {
        Ok(a) => reply.entry(&TTL, &to_fuse_attr(&a), Generation(0)),
        Err(e) => reply.error(errno(op, ino, &e)),
    }
}

fn reply_empty(reply: ReplyEmpty, op: &'static str, ino: u64, r: Result<(), FsError>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(op, ino, &e)),
    }
}

fn reply_xattr(
    reply: ReplyXattr,
    op: &'static str,
    ino: u64,
    size: u32,
    r: Result<Vec<u8>, FsError>,
) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(errno(op, ino, &FsError::Range)),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno(op, ino, &e)),
    }
}

impl fuser::Filesystem for TresorFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        let _ = config.add_capabilities(
            fuser::InitFlags::FUSE_DO_READDIRPLUS
                | fuser::InitFlags::FUSE_READDIRPLUS_AUTO
                | fuser::InitFlags::FUSE_PARALLEL_DIROPS
                | fuser::InitFlags::FUSE_CACHE_SYMLINKS
                // open_by_handle_at and NFS export: inode numbers are never
                // reused (generation 0 stays right) and the core answers
                // lookups of `.` and `..` (see FsCore::lookup).
                | fuser::InitFlags::FUSE_EXPORT_SUPPORT,
        );
        // POSIX ACLs: the kernel checks permissions against them and caches
        // them; the core keeps them in step with the mode and inherits
        // default ACLs, for which it needs the create mode before the umask.
        if config
            .add_capabilities(fuser::InitFlags::FUSE_POSIX_ACL | fuser::InitFlags::FUSE_DONT_MASK)
            .is_err()
        {
            log::warn!("the kernel offers no FUSE_POSIX_ACL: default ACLs are not inherited");
        }
        Ok(())
    }

    // Operations tresor does not offer, answered with their proper errno
    // and without fuser's default "[Not Implemented]" warning: Python's
    // isatty() alone sends one ioctl per open(), which logged 100,000
    // multi-line warnings for 100,000 files. ENOSYS for copy_file_range,
    // bmap and poll makes the kernel stop asking for the rest of the mount.

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn bmap(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _blocksize: u32,
        _idx: u64,
        reply: fuser::ReplyBmap,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn destroy(&mut self) {
        if let Err(e) = self.core.shutdown() {
            log::error!("final flush at unmount failed: {e}");
        } else {
            log::info!("unmounted; everything flushed and committed");
        }
        // The session ends because the kernel mount is gone. fuser 0.18
        // drops its mount handle at the end of `Session::run`, and that
        // unmounts the path again: its `is_mounted` reads POLLERR on
        // /dev/fuse (the connection is over) as "still mounted", so it calls
        // umount2() on a path that is no longer a mount point and warns
        // "Failed to umount filesystem: Invalid argument" after every clean
        // unmount. Taking the handle here makes the same call, but its
        // expected EINVAL is ours to judge, and the drop finds nothing left.
        if let Some(mut u) = self.unmounter.lock().take() {
            match u.unmount() {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    log::debug!("the mount point was already unmounted ({e})")
                }
                Err(e) => log::warn!("unmounting after the session ended: {e}"),
            }
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.as_bytes();
        match self.core.lookup(parent.0, name) {
            // A missing name: node id 0 with a TTL is a negative entry the
            // kernel keeps (ENOENT would make it ask again on every stat).
            // Not for `.` and `..`: the kernel's file-handle decoding reads
            // node id 0 there as a stale handle, as it does ENOENT.
            Err(FsError::NotFound) if name != b"." && name != b".." => {
                reply.entry(&TTL, &negative_entry(), Generation(0))
            }
            r => reply_entry(reply, "lookup", parent.0, r),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.core.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &to_fuse_attr(&a)),
            Err(e) => reply.error(errno("getattr", ino.0, &e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let s = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
            ctime: ctime.map(kernel_time),
        };
        // A truncate by an outsider clears a lone setgid bit (the core says
        // when); a chmod's mode comes from the kernel with that done.
        let r = match size {
            Some(_) => self.clear_setgid(req, ino.0),
            None => Ok(()),
        };
        match r.and_then(|()| self.core.setattr(ino.0, s)) {
            Ok(a) => reply.attr(&TTL, &to_fuse_attr(&a)),
            Err(e) => reply.error(errno("setattr", ino.0, &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.core.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno("readlink", ino.0, &e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(
            reply,
            "mknod",
            parent.0,
            self.core.mknod(
                creator(req, umask),
                parent.0,
                name.as_bytes(),
                mode & (libc::S_IFMT | 0o7777),
                rdev,
            ),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(
            reply,
            "mkdir",
            parent.0,
            self.core.mkdir(
                creator(req, umask),
                parent.0,
                name.as_bytes(),
                mode & 0o7777,
            ),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            "unlink",
            parent.0,
            self.core.unlink(parent.0, name.as_bytes()),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            "rmdir",
            parent.0,
            self.core.rmdir(parent.0, name.as_bytes()),
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply_entry(
            reply,
            "symlink",
            parent.0,
            self.core.symlink(
                caller(req),
                parent.0,
                link_name.as_bytes(),
                target.as_os_str().as_bytes(),
            ),
        );
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let whiteout = flags.contains(fuser::RenameFlags::RENAME_WHITEOUT);
        let flags = flags - fuser::RenameFlags::RENAME_WHITEOUT;
        let mode = if flags.contains(fuser::RenameFlags::RENAME_EXCHANGE) {
            RenameMode::Exchange
        } else if flags.contains(fuser::RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else if flags.is_empty() {
            RenameMode::Replace
        } else {
            reply.error(errno("rename", parent.0, &FsError::Invalid));
            return;
        };
        if whiteout {
            let result = self.core.rename_whiteout(
                creator(req, 0),
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                mode,
            );
            reply_empty(reply, "rename", parent.0, result.map(|_| ()));
            return;
        }
        reply_empty(
            reply,
            "rename",
            parent.0,
            self.core.rename(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                mode,
            ),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply_entry(
            reply,
            "link",
            ino.0,
            self.core.link(ino.0, newparent.0, newname.as_bytes()),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: fuser::OpenFlags, reply: ReplyOpen) {
        match self.core.open_flags(ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(errno("open", ino.0, &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        match self.core.read(ino.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno("read", ino.0, &e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self
            .clear_setgid(req, ino.0)
            .and_then(|()| self.core.write(ino.0, offset, data));
        match r {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno("write", ino.0, &e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, "release", ino.0, self.core.release(ino.0));
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, "fsync", ino.0, self.core.fsync(ino.0));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: fuser::OpenFlags, reply: ReplyOpen) {
        match self.core.opendir(ino.0) {
            // The kernel keeps the listing (and drops it when a change
            // through it touches the directory): a second `ls` reads none.
            Ok(fh) => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(errno("opendir", ino.0, &e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, "releasedir", ino.0, self.core.release(ino.0));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.core.readdir(ino.0, offset, 512) {
            Ok(entries) => {
                for e in entries {
                    if reply.add(
                        INodeNo(e.ino),
                        e.cursor,
                        file_type(e.kind),
                        OsStr::from_bytes(&e.name),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno("readdir", ino.0, &e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        match self.core.readdir_plus(ino.0, offset, 256) {
            Ok(entries) => {
                for (e, attr) in entries {
                    if reply.add(
                        INodeNo(e.ino),
                        e.cursor,
                        OsStr::from_bytes(&e.name),
                        &TTL,
                        &to_fuse_attr(&attr),
                        Generation(0),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno("readdirplus", ino.0, &e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, "fsyncdir", ino.0, self.core.commit(true));
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.core.statfs() {
            Ok(s) => reply.statfs(
                s.blocks,
                s.bfree,
                s.bavail,
                s.files,
                s.ffree,
                s.bsize,
                crate::fs::NAME_MAX as u32,
                s.bsize,
            ),
            Err(e) => reply.error(errno("statfs", ino.0, &e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            "setxattr",
            ino.0,
            self.core
                .setxattr(caller(req), ino.0, name.as_bytes(), value, flags),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(
            reply,
            "getxattr",
            ino.0,
            size,
            self.core.getxattr(ino.0, name.as_bytes()),
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, "listxattr", ino.0, size, self.core.listxattr(ino.0));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            "removexattr",
            ino.0,
            self.core.removexattr(ino.0, name.as_bytes()),
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permission checks are the kernel's (`default_permissions`).
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.core.create(
            creator(req, umask),
            parent.0,
            name.as_bytes(),
            mode & 0o7777,
        ) {
            Ok((a, fh)) => reply.created(
                &TTL,
                &to_fuse_attr(&a),
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(errno("create", parent.0, &e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            "fallocate",
            ino.0,
            self.clear_setgid(req, ino.0)
                .and_then(|()| self.core.fallocate(ino.0, offset, length, mode)),
        );
    }

    /// SEEK_DATA/SEEK_HOLE (the kernel answers SEEK_SET/CUR/END itself).
    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let r = u64::try_from(offset)
            .map_err(|_| FsError::NoSuchOffset)
            .and_then(|o| self.core.seek_data_hole(ino.0, o, whence));
        match r {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(errno("lseek", ino.0, &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What fuser 0.18 makes of the kernel's `(sec, nsec)` (its
    /// `system_time_from_time`, copied here to pin the behaviour undone).
    fn as_fuser_delivers(sec: i64, nsec: u32) -> SystemTime {
        if sec >= 0 {
            UNIX_EPOCH + Duration::new(sec as u64, nsec)
        } else {
            UNIX_EPOCH - Duration::new((-sec) as u64, nsec)
        }
    }

    #[test]
    fn kernel_times_round_trip_before_and_after_1970() {
        for (sec, nsec) in [
            (-302_356_800, 500_000_000), // 1960-06-01 12:00:00.5 UTC
            (-2, 999_999_999),           // os.utime(ns=-1_000_000_001)
            (-1, 999_999_999),           // os.utime(ns=-1)
            (-1, 0),
            (-1, 1),
            (0, 0),
            (0, 1),
            (1_700_000_000, 123_456_789),
            (i64::MIN / 2, 7),
        ] {
            let t = kernel_time(as_fuser_delivers(sec, nsec));
            assert_eq!((t.sec, t.nsec), (sec, nsec), "kernel time ({sec}, {nsec})");
        }
    }
}

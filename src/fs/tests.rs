//! Reference-model property test of the filesystem core (after
//! mountpoint-s3's `reftests`).
//!
//! [`FsCore`] is driven directly (no FUSE) by random sequences of operations:
//! create/mknod/mkdir/symlink, link, unlink, rmdir, rename in all three modes,
//! writes (tiny to several MiB, into holes far past EOF, sequential streams
//! that cross the 8 MiB partial-flush threshold), truncate, fallocate (mode
//! 0, keep-size, punch-hole, zero-range with and without keep-size),
//! SEEK_DATA/SEEK_HOLE, reads,
//! open/release of handles, fsync, chmod/mtime, xattrs and remounts. The same
//! operation is applied to [`Model`], a plain in-memory tree keyed by inode
//! number (so hard links share content and xattrs), and
//!
//! - after every operation its outcome must match the model's: success vs.
//!   the exact errno, and the bytes returned by read/readlink/getxattr/
//!   listxattr;
//! - after every operation the whole tree must match: every directory's
//!   entries (paged `readdir`, `.`/`..`, `lookup`), every inode's kind, size,
//!   nlink, permissions, explicitly set mtime, symlink target and xattrs,
//!   `st_blocks` of files (never more than the size; with content checks,
//!   never less than the file's non-zero bytes), and
//!   inodes the model has forgotten must be gone (`getattr` → ENOENT);
//! - often (always after fsync and remount) the full content of every file,
//!   including unlinked-but-open ones, must match byte for byte.
//!
//! A remount shuts the core down and opens a fresh one over the same vault
//! directory; the model is not touched, so any state that was not persisted
//! shows up as a difference. Remounting with handles still open also checks
//! that files unlinked while open are removed at the next mount.
//!
//! Where POSIX leaves the choice of error to the filesystem (or the kernel
//! checks before FUSE ever asks), the model follows the core's order of
//! checks; the point is consistency of the tree and the data, not a second
//! opinion on errno precedence.
//!
//! Minimal failing sequences found by proptest are kept below as
//! `regression_*` tests; the `failure_persistence` file is off on purpose so
//! the regressions live here, named, instead of in an opaque seed file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::{Caller, FsCore, FsError, FsResult, RenameMode, SetAttr, TimeSet, MAX_FILE_SIZE};
use crate::chunk::chunker::Chunker;
use crate::chunk::seal::ChunkSealer;
use crate::index::{FileKind, Index, IndexStats, Timestamp, ROOT_INO};
use crate::store::packstore::PackStore;
use crate::store::Store;
use crate::vault::keys::MasterKey;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 0,
    umask: 0,
};
/// Files in the model stay below this size (offsets are clamped), so a case
/// never holds more than a few tens of MiB in memory.
const MODEL_FILE_MAX: usize = 48 * MIB;
/// Largest single `read` while comparing whole files.
const READ_PIECE: usize = 4 * MIB;
/// Piece size of [`Op::Stream`]: what the kernel sends with big writes.
const STREAM_PIECE: usize = 128 * KIB;

// ---------------------------------------------------------------------------
// A vault in a temp dir, and how to (re)mount the core over it.

struct Vault {
    dir: tempfile::TempDir,
    master: MasterKey,
    core: Option<FsCore>,
}

fn open_core(dir: &Path, master: &MasterKey, create: bool) -> FsCore {
    let sk = master.subkeys();
    let index = Index::open(&dir.join("index.sqlite"), &sk.index, create).expect("open index");
    let store = Arc::new(Store::open_local(&dir.join("store")).expect("open store"));
    let sealer = Arc::new(ChunkSealer::new(&sk));
    let chunker = Chunker::new(&sk.chunker);
    let packs = PackStore::new(store, sealer.clone(), sk.pack.clone());
    FsCore::new(index, packs, chunker, sealer, dir.join("store")).expect("open core")
}

impl Vault {
    fn new() -> Vault {
        let dir = tempfile::tempdir().expect("temp dir");
        // A fixed key: chunk boundaries, and so any failure, are reproducible.
        let master = MasterKey::for_tests(0x5a);
        let core = open_core(dir.path(), &master, true);
        Vault {
            dir,
            master,
            core: Some(core),
        }
    }

    fn core(&self) -> &FsCore {
        self.core.as_ref().expect("core is mounted")
    }

    /// Shuts the core down (final flush, durable commit) and opens a new one
    /// over the same directory, as an unmount + mount would.
    fn remount(&mut self) -> Result<(), String> {
        let core = self.core.take().expect("core is mounted");
        let r = core.shutdown();
        drop(core);
        self.core = Some(open_core(self.dir.path(), &self.master, false));
        r.map_err(|e| format!("shutdown before remount failed: {e}"))
    }

    /// Index totals as committed (a second, read-only connection).
    fn committed_stats(&self) -> IndexStats {
        let sk = self.master.subkeys();
        Index::open_read_only(&self.dir.path().join("index.sqlite"), &sk.index)
            .expect("open index read-only")
            .stats()
            .expect("index stats")
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        // Stop the pack writer threads; skipped while unwinding, where a
        // poisoned lock would turn the panic into an abort.
        if let Some(core) = self.core.take() {
            if !std::thread::panicking() {
                let _ = core.shutdown();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The reference model.

#[derive(Clone, Debug)]
enum Body {
    File(Vec<u8>),
    Dir {
        entries: BTreeMap<Vec<u8>, u64>,
        parent: u64,
    },
    Symlink(Vec<u8>),
    Fifo,
}

#[derive(Clone, Debug)]
struct Node {
    body: Body,
    /// Links of a non-directory (a directory's count is derived from its
    /// subdirectories).
    links: u32,
    perm: u32,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Set by an explicit setattr; forgotten when the data changes (the core
    /// then stamps "now", which the model cannot know).
    mtime: Option<Timestamp>,
}

impl Node {
    fn new(body: Body, perm: u32) -> Node {
        Node {
            body,
            links: 1,
            perm,
            xattrs: BTreeMap::new(),
            mtime: None,
        }
    }

    fn kind(&self) -> FileKind {
        match self.body {
            Body::File(_) => FileKind::Regular,
            Body::Dir { .. } => FileKind::Directory,
            Body::Symlink(_) => FileKind::Symlink,
            Body::Fifo => FileKind::Fifo,
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir { .. })
    }
}

struct Model {
    nodes: BTreeMap<u64, Node>,
    /// Inodes the core must have forgotten.
    dead: BTreeSet<u64>,
    /// One entry per open handle: the inode it is open on.
    handles: Vec<u64>,
}

type Expect = Result<(), i32>;

fn check_name(name: &[u8]) -> Expect {
    if name.len() > 255 {
        return Err(libc::ENAMETOOLONG);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(libc::EINVAL);
    }
    Ok(())
}

impl Model {
    fn new() -> Model {
        let root = Node::new(
            Body::Dir {
                entries: BTreeMap::new(),
                parent: ROOT_INO,
            },
            0o755,
        );
        Model {
            nodes: BTreeMap::from([(ROOT_INO, root)]),
            dead: BTreeSet::new(),
            handles: Vec::new(),
        }
    }

    fn node(&self, ino: u64) -> &Node {
        &self.nodes[&ino]
    }

    fn node_mut(&mut self, ino: u64) -> &mut Node {
        self.nodes.get_mut(&ino).expect("model node")
    }

    fn nlink(&self, ino: u64) -> u32 {
        match &self.node(ino).body {
            Body::Dir { entries, .. } => {
                2 + entries.values().filter(|i| self.node(**i).is_dir()).count() as u32
            }
            _ => self.node(ino).links,
        }
    }

    fn size(&self, ino: u64) -> u64 {
        match &self.node(ino).body {
            Body::File(c) => c.len() as u64,
            Body::Symlink(t) => t.len() as u64,
            _ => 0,
        }
    }

    fn content_mut(&mut self, ino: u64) -> &mut Vec<u8> {
        match &mut self.node_mut(ino).body {
            Body::File(c) => c,
            _ => panic!("inode {ino} is not a file in the model"),
        }
    }

    fn open_count(&self, ino: u64) -> usize {
        self.handles.iter().filter(|h| **h == ino).count()
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<Vec<u8>, u64>, i32> {
        match self.nodes.get(&dir).map(|n| &n.body) {
            None => Err(libc::ENOENT),
            Some(Body::Dir { entries, .. }) => Ok(entries),
            Some(_) => Err(libc::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> &mut BTreeMap<Vec<u8>, u64> {
        match &mut self.node_mut(dir).body {
            Body::Dir { entries, .. } => entries,
            _ => panic!("inode {dir} is not a directory in the model"),
        }
    }

    fn parent_of(&self, dir: u64) -> u64 {
        match self.node(dir).body {
            Body::Dir { parent, .. } => parent,
            _ => panic!("inode {dir} is not a directory in the model"),
        }
    }

    fn set_parent(&mut self, ino: u64, new_parent: u64) {
        if let Body::Dir { parent, .. } = &mut self.node_mut(ino).body {
            *parent = new_parent;
        }
    }

    /// Is `dir` equal to `ancestor` or below it?
    fn is_within(&self, mut dir: u64, ancestor: u64) -> bool {
        loop {
            if dir == ancestor {
                return true;
            }
            if dir == ROOT_INO {
                return false;
            }
            dir = self.parent_of(dir);
        }
    }

    fn lookup(&self, dir: u64, name: &[u8]) -> Result<u64, i32> {
        self.entries(dir)?.get(name).copied().ok_or(libc::ENOENT)
    }

    // ----- what the candidates of a selector are -----

    fn dirs(&self) -> Vec<u64> {
        self.filter(|n| n.is_dir())
    }
    /// Nodes reachable by a path.
    fn linked(&self) -> Vec<u64> {
        self.filter(|n| n.is_dir() || n.links > 0)
    }
    /// Every live inode, unlinked-but-open ones included (reachable through
    /// their handle).
    fn all(&self) -> Vec<u64> {
        self.filter(|_| true)
    }
    fn files(&self) -> Vec<u64> {
        self.filter(|n| matches!(n.body, Body::File(_)))
    }
    fn openable(&self) -> Vec<u64> {
        self.filter(|n| matches!(n.body, Body::File(_) | Body::Fifo))
    }
    fn with_xattrs(&self) -> Vec<u64> {
        self.filter(|n| !n.xattrs.is_empty())
    }
    /// Every directory entry as (parent, name, inode), in a stable order.
    fn all_entries(&self) -> Vec<(u64, Vec<u8>, u64)> {
        let mut out = Vec::new();
        for dir in self.dirs() {
            for (name, ino) in self.entries(dir).expect("dir") {
                out.push((dir, name.clone(), *ino));
            }
        }
        out
    }
    fn filter(&self, f: impl Fn(&Node) -> bool) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| f(n))
            .map(|(i, _)| *i)
            .collect()
    }

    // ----- transitions -----

    /// Expected outcome of creating `name` in `parent` (`create_node`).
    fn can_create(&self, parent: u64, name: &[u8]) -> Expect {
        check_name(name)?;
        if self.entries(parent)?.contains_key(name) {
            return Err(libc::EEXIST);
        }
        Ok(())
    }

    /// Permission bits of a new node (BSD group semantics of setgid dirs).
    fn new_perm(&self, parent: u64, dir: bool, perm: u32) -> u32 {
        let mut perm = perm & 0o7777;
        if dir && self.node(parent).perm & libc::S_ISGID != 0 {
            perm |= libc::S_ISGID;
        }
        perm
    }

    fn add(&mut self, parent: u64, name: &[u8], ino: u64, node: Node) -> Result<(), String> {
        if self.nodes.contains_key(&ino) || self.dead.contains(&ino) {
            return Err(format!("core reused inode number {ino} for a new node"));
        }
        self.nodes.insert(ino, node);
        self.entries_mut(parent).insert(name.to_vec(), ino);
        Ok(())
    }

    /// The inode lost one link; forget it when nothing references it.
    fn drop_link(&mut self, ino: u64) {
        let forget = {
            let open = self.open_count(ino) > 0;
            let n = self.node_mut(ino);
            if n.is_dir() {
                true
            } else {
                n.links -= 1;
                n.links == 0 && !open
            }
        };
        if forget {
            self.nodes.remove(&ino);
            self.dead.insert(ino);
        }
    }

    fn release(&mut self, handle: usize) {
        let ino = self.handles.remove(handle);
        if self.open_count(ino) == 0 && self.node(ino).links == 0 {
            self.nodes.remove(&ino);
            self.dead.insert(ino);
        }
    }

    /// What a mount does with handles the previous mount left open.
    fn drop_all_handles(&mut self) {
        self.handles.clear();
        let orphans = self.filter(|n| !n.is_dir() && n.links == 0);
        for ino in orphans {
            self.nodes.remove(&ino);
            self.dead.insert(ino);
        }
    }

    fn link(&mut self, ino: u64, parent: u64, name: &[u8]) -> Expect {
        check_name(name)?;
        self.entries(parent)?;
        if self.node(ino).is_dir() {
            return Err(libc::EPERM);
        }
        if self.entries(parent)?.contains_key(name) {
            return Err(libc::EEXIST);
        }
        self.entries_mut(parent).insert(name.to_vec(), ino);
        self.node_mut(ino).links += 1;
        Ok(())
    }

    fn unlink(&mut self, parent: u64, name: &[u8]) -> Expect {
        let ino = self.lookup(parent, name)?;
        if self.node(ino).is_dir() {
            return Err(libc::EISDIR);
        }
        self.entries_mut(parent).remove(name);
        self.drop_link(ino);
        Ok(())
    }

    fn rmdir(&mut self, parent: u64, name: &[u8]) -> Expect {
        if name == b"." {
            return Err(libc::EINVAL);
        }
        if name == b".." {
            return Err(libc::ENOTEMPTY);
        }
        let ino = self.lookup(parent, name)?;
        match &self.node(ino).body {
            Body::Dir { entries, .. } if !entries.is_empty() => return Err(libc::ENOTEMPTY),
            Body::Dir { .. } => {}
            _ => return Err(libc::ENOTDIR),
        }
        self.entries_mut(parent).remove(name);
        self.drop_link(ino);
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        mode: RenameMode,
    ) -> Expect {
        check_name(newname)?;
        self.entries(parent)?;
        self.entries(newparent)?;
        let src = self.lookup(parent, name)?;
        let dst = self.entries(newparent)?.get(newname).copied();
        let src_dir = self.node(src).is_dir();
        // A directory cannot move below itself.
        if src_dir && parent != newparent && self.is_within(newparent, src) {
            return Err(libc::EINVAL);
        }
        match (mode, dst) {
            (RenameMode::Exchange, None) => return Err(libc::ENOENT),
            (RenameMode::NoReplace, Some(_)) => return Err(libc::EEXIST),
            (RenameMode::Exchange, Some(dst)) => {
                if self.node(dst).is_dir() && parent != newparent && self.is_within(parent, dst) {
                    return Err(libc::EINVAL);
                }
                self.entries_mut(parent).insert(name.to_vec(), dst);
                self.entries_mut(newparent).insert(newname.to_vec(), src);
                self.set_parent(src, newparent);
                self.set_parent(dst, parent);
                return Ok(());
            }
            _ => {}
        }
        if let Some(dst) = dst {
            if dst == src {
                return Ok(()); // two links to one inode: nothing happens
            }
            match (src_dir, &self.node(dst).body) {
                (true, Body::Dir { entries, .. }) if !entries.is_empty() => {
                    return Err(libc::ENOTEMPTY)
                }
                (true, Body::Dir { .. }) => {}
                (true, _) => return Err(libc::ENOTDIR),
                (false, Body::Dir { .. }) => return Err(libc::EISDIR),
                (false, _) => {}
            }
            self.entries_mut(newparent).remove(newname);
            self.drop_link(dst);
        }
        self.entries_mut(parent).remove(name);
        self.entries_mut(newparent).insert(newname.to_vec(), src);
        self.set_parent(src, newparent);
        Ok(())
    }

    fn write(&mut self, ino: u64, offset: usize, data: &[u8]) {
        let c = self.content_mut(ino);
        if c.len() < offset + data.len() {
            c.resize(offset + data.len(), 0);
        }
        c[offset..offset + data.len()].copy_from_slice(data);
        self.node_mut(ino).mtime = None;
    }

    fn truncate(&mut self, ino: u64, size: u64) -> Expect {
        if size > MAX_FILE_SIZE {
            return Err(libc::EFBIG);
        }
        match self.node(ino).body {
            Body::File(_) => {}
            Body::Dir { .. } => return Err(libc::EISDIR),
            _ => return Err(libc::EINVAL),
        }
        self.content_mut(ino).resize(size as usize, 0);
        self.node_mut(ino).mtime = None;
        Ok(())
    }

    /// The tree for messages: one line per entry, then unlinked open inodes.
    fn tree(&self) -> String {
        let mut out = String::new();
        let paths = self.paths();
        for (ino, path) in &paths {
            let n = self.node(*ino);
            out += &format!(
                "    {path}  inode {ino} {:?} size {} nlink {}\n",
                n.kind(),
                self.size(*ino),
                self.nlink(*ino)
            );
        }
        for (ino, n) in &self.nodes {
            if !paths.contains_key(ino) {
                out += &format!(
                    "    <unlinked> inode {ino} {:?} size {}\n",
                    n.kind(),
                    self.size(*ino)
                );
            }
        }
        out += &format!("    open handles on inodes {:?}\n", self.handles);
        out
    }

    /// Paths for messages: the first path found to each linked inode.
    fn paths(&self) -> BTreeMap<u64, String> {
        let mut out = BTreeMap::from([(ROOT_INO, "/".to_string())]);
        let mut todo = vec![(ROOT_INO, String::new())];
        while let Some((dir, prefix)) = todo.pop() {
            for (name, ino) in self.entries(dir).expect("dir") {
                let p = format!("{prefix}/{}", String::from_utf8_lossy(name));
                out.entry(*ino).or_insert_with(|| p.clone());
                if self.node(*ino).is_dir() {
                    todo.push((*ino, p));
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Operations.

/// Picks from whatever candidate list an operation needs (modulo its length),
/// so a generated operation stays meaningful however the tree has changed,
/// and shrinks towards the first candidate.
#[derive(Clone, Copy, Debug)]
struct Sel(u8);

impl Sel {
    fn pick(self, from: &[u64]) -> Option<u64> {
        (!from.is_empty()).then(|| from[self.0 as usize % from.len()])
    }
}

/// A parent directory: usually a directory, sometimes any node (→ ENOTDIR).
#[derive(Clone, Copy, Debug)]
struct Parent {
    sel: Sel,
    any_node: bool,
}

/// A node for an operation: usually one it makes sense for (a symlink for
/// readlink, a file for truncate, ...), with `wide` any node (→ errors).
#[derive(Clone, Copy, Debug)]
struct Target {
    sel: Sel,
    wide: bool,
}

/// A directory entry: an existing one (of the kind the operation wants, when
/// there is one), or a name in some directory that may not exist.
#[derive(Clone, Debug)]
enum Entry {
    Existing(Sel),
    Named(Parent, String),
}

#[derive(Clone, Copy, Debug)]
enum Fill {
    /// A pseudo-random stream; few seeds, so equal data (dedup) is common.
    Random(u64),
    Zeros,
    Byte(u8),
}

impl Fill {
    fn bytes(self, len: usize) -> Vec<u8> {
        match self {
            Fill::Random(seed) => pseudo_random(len, seed),
            Fill::Zeros => vec![0; len],
            Fill::Byte(b) => vec![b; len],
        }
    }
}

/// xorshift64*: fast enough for tens of MiB per case in a debug build.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[derive(Clone, Copy, Debug)]
enum WriteAt {
    Start,
    Append,
    /// At this fraction (/65536) of the current size.
    Inside(u16),
    /// This many bytes past EOF (a hole).
    PastEof(u32),
    /// Ending beyond the largest file size: EFBIG.
    TooFar,
}

/// fallocate modes.
#[derive(Clone, Copy, Debug)]
enum Falloc {
    /// Mode 0: extends the size.
    Alloc,
    KeepSize,
    /// PUNCH_HOLE | KEEP_SIZE.
    Punch,
    /// ZERO_RANGE, extending the size.
    Zero,
    /// ZERO_RANGE | KEEP_SIZE.
    ZeroKeep,
    /// COLLAPSE_RANGE: EOPNOTSUPP.
    Collapse,
}

#[derive(Clone, Copy, Debug)]
enum NewSize {
    Zero,
    Fraction(u16),
    Grow(u32),
    TooBig,
}

#[derive(Clone, Debug)]
enum Op {
    Create {
        dir: Parent,
        name: String,
        keep_open: bool,
    },
    Mknod {
        dir: Parent,
        name: String,
        fifo: bool,
    },
    Mkdir {
        dir: Parent,
        name: String,
    },
    Symlink {
        dir: Parent,
        name: String,
        target: String,
    },
    Lookup {
        entry: Entry,
    },
    Readlink {
        node: Target,
    },
    Link {
        node: Target,
        dir: Parent,
        name: String,
    },
    Unlink {
        entry: Entry,
    },
    Rmdir {
        entry: Entry,
    },
    Rename {
        from: Entry,
        to: Entry,
        mode: RenameMode,
    },
    Write {
        file: Sel,
        at: WriteAt,
        len: usize,
        fill: Fill,
    },
    /// Appends `len` bytes in kernel-sized pieces through one handle:
    /// crosses the partial-flush threshold, keeps the growing tail chunk.
    Stream {
        file: Sel,
        len: usize,
        fill: Fill,
    },
    Truncate {
        node: Target,
        to: NewSize,
    },
    Fallocate {
        file: Sel,
        at: u16,
        len: u32,
        mode: Falloc,
    },
    /// SEEK_DATA (`data`) or SEEK_HOLE from a fraction of the size.
    Seek {
        file: Sel,
        at: u16,
        past_eof: bool,
        data: bool,
    },
    Read {
        file: Sel,
        at: u16,
        past_eof: bool,
        len: u32,
    },
    Open {
        node: Target,
    },
    Release {
        handle: Sel,
    },
    Fsync {
        file: Sel,
    },
    Chmod {
        node: Sel,
        mode: u32,
    },
    SetMtime {
        node: Sel,
        sec: i64,
        nsec: u32,
    },
    SetXattr {
        node: Sel,
        name: String,
        value: Vec<u8>,
        flags: i32,
    },
    RemoveXattr {
        node: Target,
        name: String,
    },
    GetXattr {
        node: Target,
        name: String,
    },
    ListXattr {
        node: Target,
    },
    Remount {
        release_first: bool,
    },
}

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::EINVAL => "EINVAL",
        libc::EPERM => "EPERM",
        libc::ENODATA => "ENODATA",
        libc::ERANGE => "ERANGE",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EFBIG => "EFBIG",
        libc::EIO => "EIO",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// Compares the core's outcome with the model's expectation; `Some(value)`
/// when both succeeded.
fn outcome<T>(what: &str, got: FsResult<T>, want: Expect) -> Result<Option<T>, String> {
    match (got, want) {
        (Ok(v), Ok(())) => Ok(Some(v)),
        (Err(e), Err(w)) if e.errno() == w => Ok(None),
        (Ok(_), Err(w)) => Err(format!(
            "{what}: core succeeded, model expected {}",
            errno_name(w)
        )),
        (Err(e), Ok(())) => Err(format!(
            "{what}: core failed with {} ({e}), model expected success",
            errno_name(e.errno())
        )),
        (Err(e), Err(w)) => Err(format!(
            "{what}: core failed with {} ({e}), model expected {}",
            errno_name(e.errno()),
            errno_name(w)
        )),
    }
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Where two byte strings first differ, with a few bytes of each from there.
fn first_difference(got: &[u8], want: &[u8]) -> Option<String> {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .or((got.len() != want.len()).then(|| got.len().min(want.len())))?;
    let near = |v: &[u8]| format!("{:02x?}", &v[at.min(v.len())..(at + 12).min(v.len())]);
    Some(format!(
        "first difference at byte {at} (core has {} bytes, model {}): core {} model {}",
        got.len(),
        want.len(),
        near(got),
        near(want)
    ))
}

// ---------------------------------------------------------------------------
// The harness: applies an operation to both sides and compares.

struct Harness {
    vault: Vault,
    model: Model,
    /// The current operation with its selectors resolved, for messages.
    note: String,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            vault: Vault::new(),
            model: Model::new(),
            note: String::new(),
        }
    }

    fn core(&self) -> &FsCore {
        self.vault.core()
    }

    fn parent(&self, p: Parent) -> u64 {
        let from = if p.any_node {
            self.model.linked()
        } else {
            self.model.dirs()
        };
        p.sel.pick(&from).expect("the root is always there")
    }

    /// `relevant` unless `t.wide` or there is none, then `wide`.
    fn target(&self, t: Target, relevant: Vec<u64>, wide: Vec<u64>) -> Option<u64> {
        if t.wide || relevant.is_empty() {
            t.sel.pick(&wide)
        } else {
            t.sel.pick(&relevant)
        }
    }

    /// Resolves an entry; `fits` says which existing entries to prefer.
    fn entry(&self, e: &Entry, fits: impl Fn(&Node) -> bool) -> (u64, Vec<u8>) {
        match e {
            Entry::Named(p, name) => (self.parent(*p), name.clone().into_bytes()),
            Entry::Existing(sel) => {
                let all = self.model.all_entries();
                let fit: Vec<_> = all
                    .iter()
                    .filter(|(_, _, i)| fits(self.model.node(*i)))
                    .cloned()
                    .collect();
                let from = if fit.is_empty() { &all } else { &fit };
                match from.get(sel.0 as usize % from.len().max(1)) {
                    Some((parent, name, _)) => (*parent, name.clone()),
                    None => (ROOT_INO, b"a".to_vec()),
                }
            }
        }
    }

    fn path(&self, ino: u64) -> String {
        match self.model.paths().remove(&ino) {
            Some(p) => format!("{p} (inode {ino})"),
            None => format!("<unlinked inode {ino}>"),
        }
    }

    fn entry_path(&self, parent: u64, name: &[u8]) -> String {
        let p = self.model.paths().remove(&parent).unwrap_or_default();
        format!("{}/{}", p.trim_end_matches('/'), show(name))
    }

    fn expect_ok<T>(what: &str, r: FsResult<T>) -> Result<T, String> {
        r.map_err(|e| format!("{what}: core failed with {} ({e})", errno_name(e.errno())))
    }

    /// Applies one operation; returns whether file contents should be
    /// compared now (data may have moved between memory and packs).
    fn apply(&mut self, op: &Op) -> Result<bool, String> {
        let mut content_check = false;
        self.note.clear();
        match op.clone() {
            Op::Create {
                dir,
                name,
                keep_open,
            } => {
                let parent = self.parent(dir);
                let want = self.model.can_create(parent, name.as_bytes());
                let got = self.core().create(ROOT, parent, name.as_bytes(), 0o644);
                if let Some((attr, _fh)) = outcome("create", got, want)? {
                    let perm = self.model.new_perm(parent, false, 0o644);
                    let node = Node::new(Body::File(Vec::new()), perm);
                    self.model.add(parent, name.as_bytes(), attr.ino, node)?;
                    self.model.handles.push(attr.ino);
                    if !keep_open {
                        Self::expect_ok("release after create", self.core().release(attr.ino))?;
                        self.model.release(self.model.handles.len() - 1);
                    }
                }
            }
            Op::Mknod { dir, name, fifo } => {
                let parent = self.parent(dir);
                let want = self.model.can_create(parent, name.as_bytes());
                let (mode, body) = if fifo {
                    (libc::S_IFIFO | 0o640, Body::Fifo)
                } else {
                    (libc::S_IFREG | 0o600, Body::File(Vec::new()))
                };
                let got = self.core().mknod(ROOT, parent, name.as_bytes(), mode, 0);
                if let Some(attr) = outcome("mknod", got, want)? {
                    let perm = self.model.new_perm(parent, false, mode);
                    self.model
                        .add(parent, name.as_bytes(), attr.ino, Node::new(body, perm))?;
                }
            }
            Op::Mkdir { dir, name } => {
                let parent = self.parent(dir);
                let want = self.model.can_create(parent, name.as_bytes());
                let got = self.core().mkdir(ROOT, parent, name.as_bytes(), 0o755);
                if let Some(attr) = outcome("mkdir", got, want)? {
                    let perm = self.model.new_perm(parent, true, 0o755);
                    let body = Body::Dir {
                        entries: BTreeMap::new(),
                        parent,
                    };
                    self.model
                        .add(parent, name.as_bytes(), attr.ino, Node::new(body, perm))?;
                }
            }
            Op::Symlink { dir, name, target } => {
                let parent = self.parent(dir);
                let want = if target.len() > 4095 {
                    Err(libc::ENAMETOOLONG)
                } else {
                    self.model.can_create(parent, name.as_bytes())
                };
                let got = self
                    .core()
                    .symlink(ROOT, parent, name.as_bytes(), target.as_bytes());
                if let Some(attr) = outcome("symlink", got, want)? {
                    let body = Body::Symlink(target.into_bytes());
                    self.model
                        .add(parent, name.as_bytes(), attr.ino, Node::new(body, 0o777))?;
                }
            }
            Op::Lookup { entry } => {
                let (parent, name) = self.entry(&entry, |_| true);
                self.note = format!("lookup {}", self.entry_path(parent, &name));
                let is_dir = self.model.node(parent).is_dir();
                let want = if name.len() > 255 {
                    Err(libc::ENAMETOOLONG)
                } else if is_dir && name == b"." {
                    // NFS export: the kernel looks up "." and ".." by inode.
                    Ok(parent)
                } else if is_dir && name == b".." {
                    Ok(if parent == ROOT_INO {
                        ROOT_INO
                    } else {
                        self.model.parent_of(parent)
                    })
                } else {
                    self.model.lookup(parent, &name)
                };
                let got = self.core().lookup(parent, &name);
                if let (Ok(a), Ok(ino)) = (&got, want) {
                    if a.ino != ino {
                        return Err(format!("lookup gives inode {}, model {ino}", a.ino));
                    }
                }
                outcome("lookup", got, want.map(|_| ()))?;
            }
            Op::Readlink { node } => {
                let symlinks = self.model.filter(|n| matches!(n.body, Body::Symlink(_)));
                let Some(ino) = self.target(node, symlinks, self.model.linked()) else {
                    return Ok(false);
                };
                self.note = format!("readlink {}", self.path(ino));
                let (want, target) = match &self.model.node(ino).body {
                    Body::Symlink(t) => (Ok(()), t.clone()),
                    _ => (Err(libc::EINVAL), Vec::new()),
                };
                if let Some(got) = outcome("readlink", self.core().readlink(ino), want)? {
                    if got != target {
                        return Err(format!(
                            "readlink: core {:?}, model {:?}",
                            show(&got),
                            show(&target)
                        ));
                    }
                }
            }
            Op::Link { node, dir, name } => {
                let non_dirs = self.model.filter(|n| !n.is_dir() && n.links > 0);
                let Some(ino) = self.target(node, non_dirs, self.model.linked()) else {
                    return Ok(false);
                };
                let parent = self.parent(dir);
                self.note = format!(
                    "link {} to {}",
                    self.path(ino),
                    self.entry_path(parent, name.as_bytes())
                );
                let want = self.model.link(ino, parent, name.as_bytes());
                let got = self.core().link(ino, parent, name.as_bytes());
                if let Some(attr) = outcome("link", got, want)? {
                    if attr.nlink != self.model.nlink(ino) {
                        return Err(format!(
                            "link returned nlink {}, model has {}",
                            attr.nlink,
                            self.model.nlink(ino)
                        ));
                    }
                }
            }
            Op::Unlink { entry } => {
                let (parent, name) = self.entry(&entry, |n| !n.is_dir());
                self.note = format!("unlink {}", self.entry_path(parent, &name));
                let want = self.model.unlink(parent, &name);
                outcome("unlink", self.core().unlink(parent, &name), want)?;
            }
            Op::Rmdir { entry } => {
                let (parent, name) = self.entry(&entry, |n| n.is_dir());
                self.note = format!("rmdir {}", self.entry_path(parent, &name));
                let want = self.model.rmdir(parent, &name);
                outcome("rmdir", self.core().rmdir(parent, &name), want)?;
            }
            Op::Rename { from, to, mode } => {
                let (parent, name) = self.entry(&from, |_| true);
                let (newparent, newname) = self.entry(&to, |_| true);
                self.note = format!(
                    "rename {} to {} ({mode:?})",
                    self.entry_path(parent, &name),
                    self.entry_path(newparent, &newname)
                );
                let (n, nn) = (&name[..], &newname[..]);
                let want = self.model.rename(parent, n, newparent, nn, mode);
                let got = self.core().rename(parent, n, newparent, nn, mode);
                outcome("rename", got, want)?;
            }
            Op::Write {
                file,
                at,
                len,
                fill,
            } => {
                let Some(ino) = file.pick(&self.model.files()) else {
                    return Ok(false);
                };
                let size = self.model.size(ino) as usize;
                let mut offset = match at {
                    WriteAt::Start => 0,
                    WriteAt::Append => size,
                    WriteAt::Inside(f) => size * f as usize / 65536,
                    WriteAt::PastEof(gap) => size + gap as usize,
                    WriteAt::TooFar => {
                        let got = self.core().write(ino, MAX_FILE_SIZE - 1, b"xy");
                        outcome("write past the largest file size", got, Err(libc::EFBIG))?;
                        return Ok(false);
                    }
                };
                offset = offset.min(MODEL_FILE_MAX - len);
                let data = fill.bytes(len);
                self.with_handle(ino, |core| {
                    let n = Self::expect_ok("write", core.write(ino, offset as u64, &data))?;
                    if n != len {
                        return Err(format!("write returned {n}, wrote {len}"));
                    }
                    Ok(())
                })?;
                self.model.write(ino, offset, &data);
            }
            Op::Stream { file, len, fill } => {
                let Some(ino) = file.pick(&self.model.files()) else {
                    return Ok(false);
                };
                let start = (self.model.size(ino) as usize).min(MODEL_FILE_MAX - len);
                let data = fill.bytes(len);
                self.with_handle(ino, |core| {
                    for (i, piece) in data.chunks(STREAM_PIECE).enumerate() {
                        let off = (start + i * STREAM_PIECE) as u64;
                        Self::expect_ok("stream write", core.write(ino, off, piece))?;
                    }
                    Ok(())
                })?;
                self.model.write(ino, start, &data);
                content_check = true;
            }
            Op::Truncate { node, to } => {
                let Some(ino) = self.target(node, self.model.files(), self.model.all()) else {
                    return Ok(false);
                };
                let cur = self.model.size(ino);
                let size = match to {
                    NewSize::Zero => 0,
                    NewSize::Fraction(f) => cur * f as u64 / 65536,
                    NewSize::Grow(n) => (cur + n as u64).min(MODEL_FILE_MAX as u64),
                    NewSize::TooBig => MAX_FILE_SIZE + 1,
                };
                let want = self.model.truncate(ino, size);
                let set = SetAttr {
                    size: Some(size),
                    ..SetAttr::default()
                };
                if let Some(attr) = outcome("truncate", self.core().setattr(ino, set), want)? {
                    if attr.size != size {
                        return Err(format!("truncate to {size} returned size {}", attr.size));
                    }
                }
            }
            Op::Fallocate {
                file,
                at,
                len,
                mode,
            } => {
                let Some(ino) = file.pick(&self.model.files()) else {
                    return Ok(false);
                };
                let size = self.model.size(ino);
                let offset = (size * at as u64 / 65536).min((MODEL_FILE_MAX as u64) - len as u64);
                let end = offset + len as u64;
                let (flags, want) = match mode {
                    Falloc::Alloc => (0, Ok(())),
                    Falloc::KeepSize => (libc::FALLOC_FL_KEEP_SIZE, Ok(())),
                    Falloc::Punch => (
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        Ok(()),
                    ),
                    Falloc::Zero => (libc::FALLOC_FL_ZERO_RANGE, Ok(())),
                    Falloc::ZeroKeep => (
                        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                        Ok(()),
                    ),
                    Falloc::Collapse => (libc::FALLOC_FL_COLLAPSE_RANGE, Err(libc::EOPNOTSUPP)),
                };
                let got = self.core().fallocate(ino, offset, len as u64, flags);
                if outcome("fallocate", got, want)?.is_some() {
                    let grow = matches!(mode, Falloc::Alloc | Falloc::Zero);
                    let clear = matches!(mode, Falloc::Punch | Falloc::Zero | Falloc::ZeroKeep);
                    let c = self.model.content_mut(ino);
                    if clear {
                        let stop = (end as usize).min(c.len());
                        if (offset as usize) < stop {
                            c[offset as usize..stop].fill(0);
                        }
                    }
                    if grow && end > size {
                        c.resize(end as usize, 0);
                    }
                    if clear || (grow && end > size) {
                        self.model.node_mut(ino).mtime = None;
                    }
                    content_check |= clear;
                }
            }
            Op::Seek {
                file,
                at,
                past_eof,
                data,
            } => {
                let Some(ino) = file.pick(&self.model.files()) else {
                    return Ok(false);
                };
                let size = self.model.size(ino) as usize;
                let offset = size * at as usize / 65536 + if past_eof { size } else { 0 };
                let whence = if data {
                    libc::SEEK_DATA
                } else {
                    libc::SEEK_HOLE
                };
                let what = if data { "SEEK_DATA" } else { "SEEK_HOLE" };
                let got = self.core().seek_data_hole(ino, offset as u64, whence);
                let Body::File(c) = &self.model.node(ino).body else {
                    unreachable!("files() holds files");
                };
                let nonzero = |from: usize, to: usize| c[from..to].iter().position(|&b| b != 0);
                let bad =
                    |why: String| Err(format!("{what} from {offset} in a {size}-byte file: {why}"));
                match got {
                    _ if offset >= size => outcome(what, got, Err(libc::ENXIO)).map(|_| ())?,
                    Ok(r) => {
                        let r = r as usize;
                        if r < offset || r > size || (data && r == size) {
                            return bad(format!("returned {r}"));
                        }
                        if data {
                            if let Some(i) = nonzero(offset, r) {
                                return bad(format!(
                                    "returned {r}, skipping data at {}",
                                    offset + i
                                ));
                            }
                        } else if r < size && c[r] != 0 {
                            return bad(format!("returned {r}, where byte is {}", c[r]));
                        }
                    }
                    Err(e) if data && e.errno() == libc::ENXIO => {
                        if let Some(i) = nonzero(offset, size) {
                            return bad(format!("ENXIO, but data at {}", offset + i));
                        }
                    }
                    Err(e) => return bad(format!("failed: {e}")),
                }
            }
            Op::Read {
                file,
                at,
                past_eof,
                len,
            } => {
                let Some(ino) = file.pick(&self.model.files()) else {
                    return Ok(false);
                };
                let size = self.model.size(ino) as usize;
                let offset = size * at as usize / 65536 + if past_eof { size + 1 } else { 0 };
                let got = Self::expect_ok("read", self.core().read(ino, offset as u64, len))?;
                let Body::File(c) = &self.model.node(ino).body else {
                    unreachable!("files() holds files");
                };
                let want = &c[offset.min(size)..(offset + len as usize).min(size)];
                if let Some(d) = first_difference(&got, want) {
                    return Err(format!(
                        "read({ino}, offset {offset}, len {len}) of a {size}-byte file: {d}"
                    ));
                }
            }
            Op::Open { node } => {
                let Some(ino) = self.target(node, self.model.openable(), self.model.all()) else {
                    return Ok(false);
                };
                if matches!(self.model.node(ino).body, Body::Symlink(_)) {
                    return Ok(false); // the kernel follows symlinks before open
                }
                let want = if self.model.node(ino).is_dir() {
                    Err(libc::EISDIR)
                } else {
                    Ok(())
                };
                if outcome("open", self.core().open(ino), want)?.is_some() {
                    self.model.handles.push(ino);
                }
            }
            Op::Release { handle } => {
                let len = self.model.handles.len();
                if len == 0 {
                    return Ok(false);
                }
                let h = handle.0 as usize % len;
                let ino = self.model.handles[h];
                Self::expect_ok("release", self.core().release(ino))?;
                self.model.release(h);
            }
            Op::Fsync { file } => {
                let Some(ino) = file.pick(&self.model.files()) else {
                    return Ok(false);
                };
                Self::expect_ok("fsync", self.core().fsync(ino))?;
                content_check = true;
            }
            Op::Chmod { node, mode } => {
                let Some(ino) = node.pick(&self.model.all()) else {
                    return Ok(false);
                };
                let set = SetAttr {
                    mode: Some(mode),
                    ..SetAttr::default()
                };
                let attr = Self::expect_ok("chmod", self.core().setattr(ino, set))?;
                self.model.node_mut(ino).perm = mode & 0o7777;
                if attr.perm != mode & 0o7777 {
                    return Err(format!(
                        "chmod {mode:o} returned perm {:o}, expected {:o}",
                        attr.perm,
                        mode & 0o7777
                    ));
                }
            }
            Op::SetMtime { node, sec, nsec } => {
                let Some(ino) = node.pick(&self.model.all()) else {
                    return Ok(false);
                };
                let ts = Timestamp { sec, nsec };
                let set = SetAttr {
                    mtime: Some(TimeSet::At(ts)),
                    ..SetAttr::default()
                };
                Self::expect_ok("set mtime", self.core().setattr(ino, set))?;
                // A directory's mtime moves with its entries; only files keep it.
                if !self.model.node(ino).is_dir() {
                    self.model.node_mut(ino).mtime = Some(ts);
                }
            }
            Op::SetXattr {
                node,
                name,
                value,
                flags,
            } => {
                let Some(ino) = node.pick(&self.model.all()) else {
                    return Ok(false);
                };
                let n = name.as_bytes();
                let exists = self.model.node(ino).xattrs.contains_key(n);
                let want = if n.is_empty() {
                    Err(libc::EINVAL)
                } else if n.len() > 255 {
                    Err(libc::ERANGE)
                } else if flags & libc::XATTR_CREATE != 0 && exists {
                    Err(libc::EEXIST)
                } else if flags & libc::XATTR_REPLACE != 0 && !exists {
                    Err(libc::ENODATA)
                } else {
                    Ok(())
                };
                let got = self.core().setxattr(ROOT, ino, n, &value, flags);
                if outcome("setxattr", got, want)?.is_some() {
                    self.model.node_mut(ino).xattrs.insert(n.to_vec(), value);
                }
            }
            Op::RemoveXattr { node, name } => {
                let Some(ino) = self.target(node, self.model.with_xattrs(), self.model.all())
                else {
                    return Ok(false);
                };
                let removed = self.model.node_mut(ino).xattrs.remove(name.as_bytes());
                let want = removed.map(|_| ()).ok_or(libc::ENODATA);
                let got = self.core().removexattr(ino, name.as_bytes());
                outcome("removexattr", got, want)?;
            }
            Op::GetXattr { node, name } => {
                let Some(ino) = self.target(node, self.model.with_xattrs(), self.model.all())
                else {
                    return Ok(false);
                };
                let value = self.model.node(ino).xattrs.get(name.as_bytes()).cloned();
                let want = value.as_ref().map(|_| ()).ok_or(libc::ENODATA);
                let got = self.core().getxattr(ino, name.as_bytes());
                if let Some(got) = outcome("getxattr", got, want)? {
                    if Some(&got) != value.as_ref() {
                        return Err(format!("getxattr {name}: core {got:?}, model {value:?}"));
                    }
                }
            }
            Op::ListXattr { node } => {
                let Some(ino) = self.target(node, self.model.with_xattrs(), self.model.all())
                else {
                    return Ok(false);
                };
                self.check_xattrs(ino, "")?;
            }
            Op::Remount { release_first } => {
                if release_first {
                    while !self.model.handles.is_empty() {
                        let ino = self.model.handles[0];
                        Self::expect_ok("release before remount", self.core().release(ino))?;
                        self.model.release(0);
                    }
                }
                self.vault.remount()?;
                self.model.drop_all_handles();
                content_check = true;
            }
        }
        Ok(content_check)
    }

    /// Runs `f` with the file open: through an existing handle if there is
    /// one (data stays dirty), else open → f → release (flushes).
    fn with_handle(
        &self,
        ino: u64,
        f: impl FnOnce(&FsCore) -> Result<(), String>,
    ) -> Result<(), String> {
        let core = self.core();
        if self.model.open_count(ino) > 0 {
            return f(core);
        }
        Self::expect_ok("open", core.open(ino))?;
        f(core)?;
        Self::expect_ok("release", core.release(ino))
    }

    fn check_xattrs(&self, ino: u64, path: &str) -> Result<(), String> {
        let node = self.model.node(ino);
        let got = Self::expect_ok("listxattr", self.core().listxattr(ino))?;
        let mut want = Vec::new();
        for name in node.xattrs.keys() {
            want.extend_from_slice(name);
            want.push(0);
        }
        if got != want {
            return Err(format!(
                "{path} (inode {ino}): listxattr: core {:?}, model {:?}",
                show(&got),
                show(&want)
            ));
        }
        for (name, value) in &node.xattrs {
            let got = Self::expect_ok("getxattr", self.core().getxattr(ino, name))?;
            if &got != value {
                return Err(format!(
                    "{path} (inode {ino}): xattr {}: core {got:?}, model {value:?}",
                    show(name)
                ));
            }
        }
        Ok(())
    }

    fn check_dir(&self, ino: u64, path: &str) -> Result<(), String> {
        let core = self.core();
        let want: BTreeMap<Vec<u8>, (u64, FileKind)> = self
            .model
            .entries(ino)
            .expect("dir")
            .iter()
            .map(|(n, i)| (n.clone(), (*i, self.model.node(*i).kind())))
            .collect();
        // Page through with a small limit so the cursors are exercised.
        let mut got = BTreeMap::new();
        let mut dots = BTreeMap::new();
        let mut after = 0;
        let mut listed = Vec::new();
        loop {
            let page = Self::expect_ok("readdir", core.readdir(ino, after, 3))?;
            if page.is_empty() {
                break;
            }
            listed.extend(page.iter().cloned());
            for e in page {
                if e.cursor <= after {
                    return Err(format!(
                        "{path}: readdir cursor went from {after} to {}",
                        e.cursor
                    ));
                }
                after = e.cursor;
                let into = if e.name == b"." || e.name == b".." {
                    &mut dots
                } else {
                    &mut got
                };
                if into.insert(e.name.clone(), (e.ino, e.kind)).is_some() {
                    return Err(format!("{path}: readdir lists {:?} twice", show(&e.name)));
                }
            }
        }
        // readdirplus: the same entries, paged the same way, each with the
        // attributes getattr gives.
        let mut plus = Vec::new();
        let mut after = 0;
        loop {
            let page = Self::expect_ok("readdir_plus", core.readdir_plus(ino, after, 3))?;
            let Some(last) = page.last() else { break };
            after = last.0.cursor;
            for (e, a) in page {
                let want_a = Self::expect_ok("getattr", core.getattr(e.ino))?;
                if a != want_a {
                    return Err(format!(
                        "{path}: readdir_plus attributes of {:?} differ from getattr:\n  {a:?}\n  {want_a:?}",
                        show(&e.name)
                    ));
                }
                plus.push(e);
            }
        }
        if plus != listed {
            return Err(format!(
                "{path}: readdir_plus lists other entries than readdir:\n  {plus:?}\n  {listed:?}"
            ));
        }
        let parent = self.model.parent_of(ino);
        let want_dots = BTreeMap::from([
            (b".".to_vec(), (ino, FileKind::Directory)),
            (b"..".to_vec(), (parent, FileKind::Directory)),
        ]);
        let fmt = |m: &BTreeMap<Vec<u8>, (u64, FileKind)>| {
            m.iter()
                .map(|(n, (i, k))| format!("{}={i}:{k:?}", show(n)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        if got != want || dots != want_dots {
            return Err(format!(
                "{path} (inode {ino}): readdir differs\n  core:  {} {}\n  model: {} {}",
                fmt(&dots),
                fmt(&got),
                fmt(&want_dots),
                fmt(&want)
            ));
        }
        for (name, (i, _)) in &want {
            let a = Self::expect_ok("lookup", core.lookup(ino, name))?;
            if a.ino != *i {
                return Err(format!(
                    "{path}/{}: lookup gives inode {}, model {i}",
                    show(name),
                    a.ino
                ));
            }
        }
        Ok(())
    }

    fn check_content(&self, ino: u64, want: &[u8], path: &str) -> Result<(), String> {
        let core = self.core();
        let mut got = Vec::with_capacity(want.len());
        while got.len() < want.len() {
            let n = (want.len() - got.len()).min(READ_PIECE);
            let piece = Self::expect_ok("read", core.read(ino, got.len() as u64, n as u32))?;
            if piece.len() != n {
                return Err(format!(
                    "{path} (inode {ino}): read of {n} bytes at {} returned {}",
                    got.len(),
                    piece.len()
                ));
            }
            got.extend_from_slice(&piece);
        }
        let tail = Self::expect_ok("read at EOF", core.read(ino, want.len() as u64, 4096))?;
        got.extend_from_slice(&tail);
        if let Some(d) = first_difference(&got, want) {
            return Err(format!("{path} (inode {ino}): content differs: {d}"));
        }
        Ok(())
    }

    /// Compares the whole tree; with `content`, every file's bytes too.
    fn check(&self, content: bool) -> Result<(), String> {
        let core = self.core();
        let paths = self.model.paths();
        for (&ino, node) in &self.model.nodes {
            let path = paths
                .get(&ino)
                .cloned()
                .unwrap_or_else(|| format!("<unlinked inode {ino}>"));
            let a = core
                .getattr(ino)
                .map_err(|e| format!("{path}: getattr({ino}) failed: {e}"))?;
            let want_size = self.model.size(ino);
            let differs = a.kind != node.kind()
                || a.nlink != self.model.nlink(ino)
                || a.perm != node.perm
                || (!node.is_dir() && a.size != want_size)
                || node.mtime.is_some_and(|m| m != a.mtime);
            if differs {
                return Err(format!(
                    "{path} (inode {ino}): attributes differ\n  core:  {:?} size {} nlink {} perm {:o} mtime {:?}\n  model: {:?} size {} nlink {} perm {:o} mtime {:?}",
                    a.kind, a.size, a.nlink, a.perm, a.mtime,
                    node.kind(), want_size, self.model.nlink(ino), node.perm, node.mtime
                ));
            }
            if let Body::File(c) = &node.body {
                if a.blocks > want_size.div_ceil(512) {
                    return Err(format!(
                        "{path} (inode {ino}): {} blocks for a {want_size}-byte file",
                        a.blocks
                    ));
                }
                let data = if content {
                    c.iter().filter(|&&b| b != 0).count() as u64
                } else {
                    0
                };
                if a.blocks * 512 < data {
                    return Err(format!(
                        "{path} (inode {ino}): {} blocks, but {data} non-zero bytes",
                        a.blocks
                    ));
                }
            }
            match &node.body {
                Body::Dir { .. } => self.check_dir(ino, &path)?,
                Body::Symlink(t) => {
                    let got = Self::expect_ok("readlink", core.readlink(ino))?;
                    if &got != t {
                        return Err(format!(
                            "{path}: symlink target: core {:?}, model {:?}",
                            show(&got),
                            show(t)
                        ));
                    }
                }
                Body::File(c) if content => self.check_content(ino, c, &path)?,
                _ => {}
            }
            self.check_xattrs(ino, &path)?;
        }
        for &ino in &self.model.dead {
            if let Ok(a) = core.getattr(ino) {
                return Err(format!(
                    "inode {ino} should be gone but getattr gives {:?} nlink {} size {}",
                    a.kind, a.nlink, a.size
                ));
            }
        }
        Ok(())
    }

    fn total_file_bytes(&self) -> usize {
        self.model
            .nodes
            .values()
            .map(|n| match &n.body {
                Body::File(c) => c.len(),
                _ => 0,
            })
            .sum()
    }
}

/// Runs `ops` against a fresh vault and the model; the first difference is
/// the error. A final remount checks that everything persisted.
fn run(ops: &[Op]) -> Result<(), String> {
    let mut h = Harness::new();
    for (step, op) in ops.iter().enumerate() {
        let tree_before = h.model.tree();
        let at = |h: &Harness, e: String| {
            format!(
                "step {step} {op:?}\n  resolved: {}\n  {e}\n  model tree before the step:\n{tree_before}",
                h.note
            )
        };
        let content = h.apply(op).map_err(|e| at(&h, e))?;
        // Whole-file comparison costs a read of every file: always when data
        // moved, otherwise while the tree is small or every fourth step.
        let content = content || h.total_file_bytes() <= 8 * MIB || step % 4 == 3;
        h.check(content).map_err(|e| at(&h, e))?;
    }
    let end = |e: String| format!("after the final remount:\n  {e}");
    h.apply(&Op::Remount {
        release_first: true,
    })
    .map_err(end)?;
    h.check(true).map_err(end)
}

// ---------------------------------------------------------------------------
// Strategies.

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        40 => prop::sample::select(vec!["a", "b", "c", "d", "e"]).prop_map(String::from),
        1 => prop::sample::select(vec!["", ".", "..", "a/b"]).prop_map(String::from),
        1 => Just("n".repeat(256)),
    ]
}

fn sel() -> impl Strategy<Value = Sel> {
    any::<u8>().prop_map(Sel)
}

fn parent() -> impl Strategy<Value = Parent> {
    (sel(), prop::bool::weighted(0.08)).prop_map(|(sel, any_node)| Parent { sel, any_node })
}

fn target() -> impl Strategy<Value = Target> {
    (sel(), prop::bool::weighted(0.1)).prop_map(|(sel, wide)| Target { sel, wide })
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        3 => sel().prop_map(Entry::Existing),
        1 => (parent(), name()).prop_map(|(p, n)| Entry::Named(p, n)),
    ]
}

fn fill() -> impl Strategy<Value = Fill> {
    prop_oneof![
        6 => (0u64..4).prop_map(Fill::Random),
        1 => Just(Fill::Zeros),
        1 => any::<u8>().prop_map(Fill::Byte),
    ]
}

fn write_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 1..=4 * KIB,
        4 => 4 * KIB..=256 * KIB,
        2 => 256 * KIB..=2 * MIB,
        1 => 2 * MIB..=6 * MIB,
    ]
}

fn write_at() -> impl Strategy<Value = WriteAt> {
    prop_oneof![
        2 => Just(WriteAt::Start),
        4 => Just(WriteAt::Append),
        4 => any::<u16>().prop_map(WriteAt::Inside),
        2 => (1..=12 * MIB as u32).prop_map(WriteAt::PastEof),
        1 => Just(WriteAt::TooFar),
    ]
}

fn xattr_name() -> impl Strategy<Value = String> {
    prop_oneof![
        20 => prop::sample::select(vec!["user.a", "user.b", "user.c"]).prop_map(String::from),
        1 => Just(String::new()),
        1 => Just("u".repeat(256)),
    ]
}

fn rename_mode() -> impl Strategy<Value = RenameMode> {
    prop_oneof![
        4 => Just(RenameMode::Replace),
        1 => Just(RenameMode::NoReplace),
        1 => Just(RenameMode::Exchange),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (parent(), name(), prop::bool::weighted(0.3))
            .prop_map(|(dir, name, keep_open)| Op::Create { dir, name, keep_open }),
        2 => (parent(), name(), any::<bool>())
            .prop_map(|(dir, name, fifo)| Op::Mknod { dir, name, fifo }),
        6 => (parent(), name()).prop_map(|(dir, name)| Op::Mkdir { dir, name }),
        3 => (
            parent(),
            name(),
            prop_oneof![
                8 => prop::sample::select(vec!["a", "../b", "/etc/passwd", "c/d/e"])
                    .prop_map(String::from),
                1 => Just("t".repeat(4096)),
            ]
        )
            .prop_map(|(dir, name, target)| Op::Symlink { dir, name, target }),
        3 => entry().prop_map(|entry| Op::Lookup { entry }),
        2 => target().prop_map(|node| Op::Readlink { node }),
        4 => (target(), parent(), name())
            .prop_map(|(node, dir, name)| Op::Link { node, dir, name }),
        5 => entry().prop_map(|entry| Op::Unlink { entry }),
        4 => entry().prop_map(|entry| Op::Rmdir { entry }),
        10 => (entry(), entry(), rename_mode())
            .prop_map(|(from, to, mode)| Op::Rename { from, to, mode }),
        14 => (sel(), write_at(), write_len(), fill())
            .prop_map(|(file, at, len, fill)| Op::Write { file, at, len, fill }),
        2 => (sel(), 8 * MIB..=14 * MIB, fill())
            .prop_map(|(file, len, fill)| Op::Stream { file, len, fill }),
        5 => (
            target(),
            prop_oneof![
                1 => Just(NewSize::Zero),
                4 => any::<u16>().prop_map(NewSize::Fraction),
                3 => (0..8 * MIB as u32).prop_map(NewSize::Grow),
                1 => Just(NewSize::TooBig),
            ]
        )
            .prop_map(|(node, to)| Op::Truncate { node, to }),
        5 => (
            sel(),
            any::<u16>(),
            prop_oneof![4 => 1..4 * MIB as u32, 1 => 1..8 * KIB as u32],
            prop_oneof![
                2 => Just(Falloc::Alloc),
                1 => Just(Falloc::KeepSize),
                4 => Just(Falloc::Punch),
                2 => Just(Falloc::Zero),
                2 => Just(Falloc::ZeroKeep),
                1 => Just(Falloc::Collapse),
            ]
        )
            .prop_map(|(file, at, len, mode)| Op::Fallocate { file, at, len, mode }),
        3 => (sel(), any::<u16>(), prop::bool::weighted(0.1), any::<bool>()).prop_map(
            |(file, at, past_eof, data)| Op::Seek { file, at, past_eof, data }
        ),
        6 => (sel(), any::<u16>(), prop::bool::weighted(0.1), 1..3 * MIB as u32).prop_map(
            |(file, at, past_eof, len)| Op::Read { file, at, past_eof, len }
        ),
        4 => target().prop_map(|node| Op::Open { node }),
        4 => sel().prop_map(|handle| Op::Release { handle }),
        2 => sel().prop_map(|file| Op::Fsync { file }),
        2 => (sel(), prop_oneof![
                Just(0o644u32), Just(0o2755), Just(0o7777), Just(0), any::<u32>()
            ])
            .prop_map(|(node, mode)| Op::Chmod { node, mode }),
        2 => (sel(), prop_oneof![
                (-1_000_000_000i64..4_000_000_000, 0u32..1_000_000_000),
                // Edges: just before the epoch, with and without a fraction.
                Just((-1i64, 999_999_999u32)),
                Just((-1, 0)),
                Just((-302_356_800, 500_000_000)),
                Just((0, 0)),
            ])
            .prop_map(|(node, (sec, nsec))| Op::SetMtime { node, sec, nsec }),
        4 => (
            sel(),
            xattr_name(),
            prop::collection::vec(any::<u8>(), 0..24),
            prop::sample::select(vec![0, libc::XATTR_CREATE, libc::XATTR_REPLACE]),
        )
            .prop_map(|(node, name, value, flags)| Op::SetXattr { node, name, value, flags }),
        2 => (target(), xattr_name()).prop_map(|(node, name)| Op::RemoveXattr { node, name }),
        2 => (target(), xattr_name()).prop_map(|(node, name)| Op::GetXattr { node, name }),
        1 => target().prop_map(|node| Op::ListXattr { node }),
        1 => any::<bool>().prop_map(|release_first| Op::Remount { release_first }),
    ]
}

/// Cases per run: `PROPTEST_CASES` overrides (for a longer soak).
fn cases() -> u32 {
    let default = if cfg!(debug_assertions) { 10 } else { 64 };
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        max_shrink_time: 10 * 60 * 1000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn core_matches_reference_model(ops in prop::collection::vec(op(), 1..96)) {
        run(&ops).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------
// Specific behaviours.

fn new_file(core: &FsCore, name: &str) -> u64 {
    let (attr, _fh) = core
        .create(ROOT, ROOT_INO, name.as_bytes(), 0o644)
        .expect("create");
    attr.ino
}

fn read_all(core: &FsCore, ino: u64) -> Vec<u8> {
    let size = core.getattr(ino).expect("getattr").size as usize;
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let n = (size - out.len()).min(READ_PIECE) as u32;
        let piece = core.read(ino, out.len() as u64, n).expect("read");
        assert!(!piece.is_empty(), "read returned nothing at {}", out.len());
        out.extend_from_slice(&piece);
    }
    out
}

fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    if let Some(d) = first_difference(got, want) {
        panic!("{what}: {d}");
    }
}

#[test]
fn sparse_file_reads_zeros_in_the_hole() {
    let mut v = Vault::new();
    let ino = new_file(v.core(), "sparse");
    v.core().write(ino, 0, b"head").unwrap();
    v.core().write(ino, 10 * MIB as u64, b"tail").unwrap();
    v.core().release(ino).unwrap();
    let mut want = vec![0u8; 10 * MIB + 4];
    want[..4].copy_from_slice(b"head");
    want[10 * MIB..].copy_from_slice(b"tail");
    assert_same("sparse file", &read_all(v.core(), ino), &want);
    assert_same(
        "middle of the hole",
        &v.core().read(ino, 5 * MIB as u64, 4096).unwrap(),
        &[0; 4096],
    );
    v.core().fsync(ino).unwrap();
    let stored = v.committed_stats().referenced_plain_bytes;
    assert!(
        stored < MIB as u64,
        "the 10 MiB hole is stored as data: {stored} bytes of extents"
    );
    v.remount().unwrap();
    assert_same("sparse file after remount", &read_all(v.core(), ino), &want);
}

/// st_blocks counts data, not holes; SEEK_DATA/SEEK_HOLE find the data
/// both while it is dirty and once it is stored.
#[test]
fn sparse_file_blocks_and_seek() {
    let mut v = Vault::new();
    let ino = new_file(v.core(), "sparse");
    let at = 64 * MIB as u64;
    let data = pseudo_random(2 * MIB, 41);
    v.core().write(ino, at, &data).unwrap();
    let blocks = |v: &Vault| v.core().getattr(ino).unwrap().blocks;
    let seek = |v: &Vault, off: u64, whence: i32| {
        v.core()
            .seek_data_hole(ino, off, whence)
            .map_err(|e| e.errno())
    };
    for round in ["dirty", "stored", "remounted"] {
        match round {
            "stored" => v.core().release(ino).unwrap(),
            "remounted" => v.remount().unwrap(),
            _ => {}
        }
        assert_eq!(blocks(&v), 2 * MIB as u64 / 512, "{round}: st_blocks");
        assert_eq!(seek(&v, 0, libc::SEEK_DATA), Ok(at), "{round}");
        assert_eq!(seek(&v, 0, libc::SEEK_HOLE), Ok(0), "{round}");
        assert_eq!(seek(&v, at + 5, libc::SEEK_DATA), Ok(at + 5), "{round}");
        assert_eq!(
            seek(&v, at, libc::SEEK_HOLE),
            Ok(at + 2 * MIB as u64),
            "{round}"
        );
        assert_eq!(
            seek(&v, at + 2 * MIB as u64, libc::SEEK_DATA),
            Err(libc::ENXIO),
            "{round}: SEEK_DATA at EOF"
        );
        assert_eq!(seek(&v, at - 1, libc::SEEK_HOLE), Ok(at - 1), "{round}");
    }
    // Grow with a hole after the data: SEEK_HOLE stops there, SEEK_DATA
    // past the data finds nothing.
    let size = at + 10 * MIB as u64;
    v.core()
        .setattr(
            ino,
            SetAttr {
                size: Some(size),
                ..SetAttr::default()
            },
        )
        .unwrap();
    assert_eq!(
        seek(&v, at + 3 * MIB as u64, libc::SEEK_DATA),
        Err(libc::ENXIO)
    );
    assert_eq!(seek(&v, at, libc::SEEK_HOLE), Ok(at + 2 * MIB as u64));
    assert_eq!(seek(&v, size, libc::SEEK_HOLE), Err(libc::ENXIO));
    assert_eq!(seek(&v, 0, 99), Err(libc::EINVAL));
}

/// SEEK_DATA/SEEK_HOLE answer in 4 KiB blocks: a block with any data byte
/// is data, both dirty and stored (a 1-byte write at offset 2 is not a
/// 2-byte hole; generic/490 probes the allocation unit that way).
#[test]
fn seek_answers_in_whole_blocks() {
    let v = Vault::new();
    let ino = new_file(v.core(), "blocks");
    v.core().write(ino, 2, b"a").unwrap();
    v.core().write(ino, 5000, b"b").unwrap();
    v.core()
        .setattr(
            ino,
            SetAttr {
                size: Some(20_000),
                ..SetAttr::default()
            },
        )
        .unwrap();
    let seek = |v: &Vault, off: u64, whence: i32| {
        v.core()
            .seek_data_hole(ino, off, whence)
            .map_err(|e| e.errno())
    };
    for round in ["dirty", "stored"] {
        if round == "stored" {
            v.core().release(ino).unwrap();
        }
        assert_eq!(seek(&v, 0, libc::SEEK_DATA), Ok(0), "{round}");
        assert_eq!(seek(&v, 3, libc::SEEK_DATA), Ok(3), "{round}");
        assert_eq!(seek(&v, 0, libc::SEEK_HOLE), Ok(8192), "{round}");
        assert_eq!(seek(&v, 4096, libc::SEEK_DATA), Ok(4096), "{round}");
        assert_eq!(seek(&v, 8192, libc::SEEK_HOLE), Ok(8192), "{round}");
        assert_eq!(seek(&v, 8192, libc::SEEK_DATA), Err(libc::ENXIO), "{round}");
    }
}

/// Punching a hole frees its blocks (extents removed, edge extents trimmed),
/// reads zeros, keeps the size, and drops dirty bytes in the range.
#[test]
fn punch_hole_and_zero_range() {
    let mut v = Vault::new();
    let ino = new_file(v.core(), "punch");
    let mut want = pseudo_random(6 * MIB, 43);
    v.core().write(ino, 0, &want).unwrap();
    v.core().release(ino).unwrap();
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // Not chunk-aligned on either side.
    let (s, len) = (MIB + 123, 3 * MIB + 7);
    v.core()
        .fallocate(ino, s as u64, len as u64, punch)
        .unwrap();
    want[s..s + len].fill(0);
    let a = v.core().getattr(ino).unwrap();
    assert_eq!(a.size, 6 * MIB as u64, "punch changed the size");
    assert_eq!(
        a.blocks,
        ((6 * MIB - len) as u64).div_ceil(512),
        "blocks after punch"
    );
    assert_same("after punch", &read_all(v.core(), ino), &want);
    assert_eq!(
        v.core()
            .seek_data_hole(ino, MIB as u64, libc::SEEK_HOLE)
            .unwrap(),
        (s as u64).next_multiple_of(4096),
        "the hole starts at the first whole 4 KiB block"
    );
    assert_eq!(
        v.core()
            .seek_data_hole(ino, s as u64, libc::SEEK_DATA)
            .unwrap(),
        s as u64,
        "the block holding the hole's first byte holds data too"
    );
    assert_eq!(
        v.core()
            .seek_data_hole(ino, (s as u64).next_multiple_of(4096), libc::SEEK_DATA)
            .unwrap(),
        (s + len) as u64 / 4096 * 4096,
        "the data starts at the block holding its first byte"
    );
    // Dirty bytes in the range are dropped, not flushed later.
    v.core().open(ino).unwrap();
    v.core().write(ino, 100, &[7u8; 5000]).unwrap();
    v.core().fallocate(ino, 1000, 2000, punch).unwrap();
    want[100..5100].fill(7);
    want[1000..3000].fill(0);
    assert_same("dirty punch", &read_all(v.core(), ino), &want);
    v.core().release(ino).unwrap();
    assert_same("dirty punch, flushed", &read_all(v.core(), ino), &want);
    // Zero range past the end grows the file; with KEEP_SIZE it does not.
    let zr = libc::FALLOC_FL_ZERO_RANGE;
    v.core()
        .fallocate(
            ino,
            5 * MIB as u64,
            2 * MIB as u64,
            zr | libc::FALLOC_FL_KEEP_SIZE,
        )
        .unwrap();
    want[5 * MIB..].fill(0);
    assert_eq!(v.core().getattr(ino).unwrap().size, 6 * MIB as u64);
    v.core()
        .fallocate(ino, 5 * MIB as u64, 2 * MIB as u64, zr)
        .unwrap();
    want.resize(7 * MIB, 0);
    assert_eq!(v.core().getattr(ino).unwrap().size, 7 * MIB as u64);
    assert_same("after zero range", &read_all(v.core(), ino), &want);
    // Punch without KEEP_SIZE and other modes are not supported.
    for mode in [libc::FALLOC_FL_PUNCH_HOLE, libc::FALLOC_FL_COLLAPSE_RANGE] {
        let e = v.core().fallocate(ino, 0, 10, mode).unwrap_err();
        assert_eq!(e.errno(), libc::EOPNOTSUPP, "mode {mode:#x}");
    }
    v.remount().unwrap();
    assert_same("after remount", &read_all(v.core(), ino), &want);
}

#[test]
fn overwrite_across_a_chunk_boundary_reads_back() {
    let mut v = Vault::new();
    let ino = new_file(v.core(), "big");
    let mut want = pseudo_random(9 * MIB, 11);
    v.core().write(ino, 0, &want).unwrap();
    v.core().release(ino).unwrap();
    // Find the first boundary the core cut at and overwrite across it.
    let sk = v.master.subkeys();
    let cut = Chunker::new(&sk.chunker).cut_points(&want)[0];
    assert!(cut < want.len(), "9 MiB must span several chunks");
    let patch = pseudo_random(300, 12);
    let at = cut - 100;
    v.core().open(ino).unwrap();
    v.core().write(ino, at as u64, &patch).unwrap();
    want[at..at + patch.len()].copy_from_slice(&patch);
    assert_same(
        "across the boundary while dirty",
        &v.core().read(ino, (at - 1000) as u64, 3000).unwrap(),
        &want[at - 1000..at + 2000],
    );
    v.core().release(ino).unwrap();
    assert_same("after flush", &read_all(v.core(), ino), &want);
    v.remount().unwrap();
    assert_same("after remount", &read_all(v.core(), ino), &want);
}

/// Writes, reads and truncates that land while a background flush of the
/// same file is sealing the first 8 MiB.
#[test]
fn changes_during_a_background_flush_are_kept() {
    let mut v = Vault::new();
    let ino = new_file(v.core(), "busy");
    let mut want = pseudo_random(9 * MIB, 31);
    for (i, piece) in want.chunks(STREAM_PIECE).enumerate() {
        v.core()
            .write(ino, (i * STREAM_PIECE) as u64, piece)
            .unwrap();
    }
    let patch = pseudo_random(64 * KIB, 32);
    let at = 3 * MIB + 5;
    v.core().write(ino, at as u64, &patch).unwrap();
    want[at..at + patch.len()].copy_from_slice(&patch);
    assert_same("while sealing", &read_all(v.core(), ino), &want);
    v.core()
        .setattr(
            ino,
            SetAttr {
                size: Some(5 * MIB as u64),
                ..SetAttr::default()
            },
        )
        .unwrap();
    want.truncate(5 * MIB);
    v.core().write(ino, 7 * MIB as u64, b"end").unwrap();
    want.resize(7 * MIB, 0);
    want.extend_from_slice(b"end");
    assert_same("after truncate", &read_all(v.core(), ino), &want);
    v.core().release(ino).unwrap();
    assert_same("after release", &read_all(v.core(), ino), &want);
    v.remount().unwrap();
    assert_same("after remount", &read_all(v.core(), ino), &want);
}

#[test]
fn data_is_identical_after_remount() {
    let mut v = Vault::new();
    let files: Vec<(u64, Vec<u8>)> = [
        ("empty", Vec::new()),
        ("small", b"hello, tresor".to_vec()),
        ("zeros", vec![0u8; 3 * MIB]),
        ("random", pseudo_random(5 * MIB + 17, 3)),
    ]
    .into_iter()
    .map(|(name, data)| {
        let ino = new_file(v.core(), name);
        for (i, piece) in data.chunks(STREAM_PIECE).enumerate() {
            v.core()
                .write(ino, (i * STREAM_PIECE) as u64, piece)
                .unwrap();
        }
        v.core().release(ino).unwrap();
        (ino, data)
    })
    .collect();
    for round in 0..2 {
        v.remount().unwrap();
        for (ino, data) in &files {
            assert_same(
                &format!("inode {ino} after remount {round}"),
                &read_all(v.core(), *ino),
                data,
            );
        }
    }
}

#[test]
fn same_content_twice_is_stored_once() {
    let v = Vault::new();
    let data = pseudo_random(8 * MIB, 21);
    let write = |name: &str| {
        let ino = new_file(v.core(), name);
        // As the kernel sends it: 128 KiB pieces through one handle.
        for (i, piece) in data.chunks(STREAM_PIECE).enumerate() {
            v.core()
                .write(ino, (i * STREAM_PIECE) as u64, piece)
                .unwrap();
        }
        v.core().release(ino).unwrap();
        v.core().fsync(ino).unwrap();
        ino
    };
    let first = write("first");
    let before = v.committed_stats();
    let second = write("second");
    let after = v.committed_stats();
    assert!(
        before.pack_bytes >= data.len() as u64,
        "8 MiB of random data stored in only {} pack bytes",
        before.pack_bytes
    );
    assert!(
        after.pack_bytes - before.pack_bytes <= 4 * KIB as u64,
        "a copy of an 8 MiB file added {} pack bytes ({} → {}); chunks were not deduplicated",
        after.pack_bytes - before.pack_bytes,
        before.pack_bytes,
        after.pack_bytes
    );
    assert_eq!(after.unique_plain_bytes, before.unique_plain_bytes);
    assert_same("first copy", &read_all(v.core(), first), &data);
    assert_same("second copy", &read_all(v.core(), second), &data);
}

#[test]
fn unlinked_open_file_stays_readable_until_release() {
    let mut v = Vault::new();
    let ino = new_file(v.core(), "doomed");
    let data = pseudo_random(2 * MIB, 5);
    v.core().write(ino, 0, &data).unwrap();
    v.core().unlink(ROOT_INO, b"doomed").unwrap();
    assert_eq!(v.core().getattr(ino).unwrap().nlink, 0);
    assert_same("unlinked, still open", &read_all(v.core(), ino), &data);
    v.core().release(ino).unwrap();
    assert!(
        v.core().getattr(ino).is_err(),
        "inode outlived its last handle"
    );

    // Left open across an unmount: gone at the next mount.
    let ino = new_file(v.core(), "orphan");
    v.core().write(ino, 0, b"x").unwrap();
    v.core().unlink(ROOT_INO, b"orphan").unwrap();
    v.remount().unwrap();
    assert!(v.core().getattr(ino).is_err(), "orphan survived a remount");
}

/// The model must be able to catch a wrong core: a file whose content the
/// model misremembers fails the comparison.
#[test]
fn model_detects_a_content_difference() {
    let mut h = Harness::new();
    h.apply(&Op::Create {
        dir: Parent {
            sel: Sel(0),
            any_node: false,
        },
        name: "a".into(),
        keep_open: false,
    })
    .unwrap();
    h.apply(&Op::Write {
        file: Sel(0),
        at: WriteAt::Start,
        len: 10,
        fill: Fill::Byte(1),
    })
    .unwrap();
    h.check(true).unwrap();
    let ino = h.model.files()[0];
    h.model.content_mut(ino)[3] = 2;
    let err = h.check(true).expect_err("a wrong byte went unnoticed");
    assert!(err.contains("first difference at byte 3"), "{err}");
}

/// `ls -l` stops asking for SELinux labels once one is "not supported";
/// a label that was set is still there, and other names stay ENODATA.
#[test]
fn an_absent_selinux_label_is_not_supported_a_set_one_is_returned() {
    let v = Vault::new();
    let ino = new_file(v.core(), "labelled");
    let label = b"security.selinux".as_slice();
    assert!(matches!(
        v.core().getxattr(ino, label),
        Err(FsError::NotSupported)
    ));
    assert!(matches!(
        v.core().getxattr(ino, b"security.capability"),
        Err(FsError::NoAttr)
    ));
    assert!(matches!(
        v.core().getxattr(ino, b"user.x"),
        Err(FsError::NoAttr)
    ));
    v.core()
        .setxattr(ROOT, ino, label, b"system_u:object_r:fusefs_t:s0", 0)
        .expect("setxattr");
    assert_eq!(
        v.core().getxattr(ino, label).expect("getxattr"),
        b"system_u:object_r:fusefs_t:s0"
    );
}

/// An open file's cached read plan (`fs/read.rs`, `PlanCache`) follows
/// every change that reaches the index: rewritten ranges, a truncate, an
/// extension, and a dedup copy that points the extents at other chunks.
#[test]
fn cached_read_plan_follows_rewrites_and_truncates() {
    let v = Vault::new();
    let core = v.core();
    let ino = new_file(core, "planned");
    let data = pseudo_random(3 * MIB, 11);
    core.write(ino, 0, &data).unwrap();
    core.fsync(ino).unwrap();
    // Random-sized reads fill the plan cache from the index.
    let piece = |off: usize, len: usize| core.read(ino, off as u64, len as u32).unwrap();
    assert_same(
        "first read",
        &piece(MIB + 5, 4096),
        &data[MIB + 5..MIB + 5 + 4096],
    );
    assert_same("whole file", &read_all(core, ino), &data);

    // Rewrite the middle: new chunks, flushed into the index.
    let fresh = pseudo_random(MIB, 12);
    core.write(ino, MIB as u64, &fresh).unwrap();
    core.fsync(ino).unwrap();
    let mut want = data.clone();
    want[MIB..2 * MIB].copy_from_slice(&fresh);
    assert_same(
        "after a rewrite",
        &piece(MIB + 5, 4096),
        &want[MIB + 5..MIB + 5 + 4096],
    );
    assert_same("whole file after a rewrite", &read_all(core, ino), &want);

    // Truncate (index size and extents change under the open handle).
    let set = SetAttr {
        size: Some(MIB as u64 + 100),
        ..Default::default()
    };
    core.setattr(ino, set).unwrap();
    core.fsync(ino).unwrap();
    want.truncate(MIB + 100);
    assert_eq!(piece(MIB + 50, 4096), want[MIB + 50..]);
    assert!(piece(2 * MIB, 4096).is_empty(), "read past the new end");

    // Extend with a hole, then data past it.
    core.write(ino, 2 * MIB as u64, b"tail").unwrap();
    core.fsync(ino).unwrap();
    want.resize(2 * MIB, 0);
    want.extend_from_slice(b"tail");
    assert_same("after extending", &read_all(core, ino), &want);
    core.release(ino).unwrap();
}

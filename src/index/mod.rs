//! The index: every name, size, attribute, extent and chunk location of the
//! vault, in one SQLCipher database (`index.sqlite`).
//!
//! Why SQLCipher: names, sizes and the tree structure live only here, so the
//! index must be encrypted at rest with a key from the master key (subkey
//! `index`). SQLCipher encrypts every page (AES-256 + HMAC per page), so a thief
//! of the unmounted disk sees random pages; the WAL is encrypted the same way.
//!
//! Transactions are batched: the connection always has one write transaction
//! open ([`Index::commit`] closes it and opens the next). The filesystem commits
//! on `fsync()`, on a timer and at unmount, never per write — a commit per
//! created file would cost more than the file itself on an untar. Ordering rule
//! (kept by the caller): pack objects referenced by a transaction are durable in
//! the store before that transaction commits.
//!
//! Inode numbers come from `AUTOINCREMENT`, so they are never reused and stay
//! stable across remounts. Directory entries carry a monotonically increasing
//! `id` that doubles as the readdir cursor, so cursors stay valid while a
//! directory changes under an open handle.
//!
//! Files, one per table group: `schema.rs` (the DDL and its migrations),
//! `inodes.rs` (inodes, dirents, symlinks, xattrs, orphans), `extents.rs`
//! (extents, chunks, reference counts), `packs.rs` (packs, placements,
//! eviction), `gc.rs` (garbage collection's queries) and `fsck.rs` (fsck's
//! whole-table reads and repairs); this file opens,
//! keys, commits and checkpoints the database.

use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::chunk::seal::ChunkId;
use crate::vault::keys::SecretKey;

/// Garbage collection's queries (`src/index/gc.rs`).
mod gc;
pub use gc::{GcDeadPack, PackChunk, PackLiveness, SnapshotMark};
mod digest;
mod extents;
/// fsck's whole-table reads and its repair statements.
pub mod fsck;
mod inodes;
mod lineage;
mod packs;
mod schema;
use schema::{INDEXES, SCHEMA, SCHEMA_2, SCHEMA_3};

/// Schema version stored in `meta.schema`; bump on incompatible changes.
pub const SCHEMA_VERSION: i64 = 3;
pub const ROOT_INO: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the index could not be opened: wrong key or not a tresor index ({0})")]
    NotAnIndex(String),
    #[error(
        "index schema version {found} is not supported by this tresor (expects {SCHEMA_VERSION})"
    )]
    Schema { found: i64 },
    #[error("index database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the index is busy (another process is reading it); try again")]
    Busy,
}

/// Nanosecond timestamp (seconds may be negative: pre-1970 mtimes exist).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::from_system(SystemTime::now())
    }
    pub fn from_system(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                sec: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let mut sec = -(d.as_secs() as i64);
                let mut nsec = d.subsec_nanos();
                if nsec > 0 {
                    sec -= 1;
                    nsec = 1_000_000_000 - nsec;
                }
                Timestamp { sec, nsec }
            }
        }
    }
    pub fn to_system(self) -> SystemTime {
        if self.sec >= 0 {
            UNIX_EPOCH + std::time::Duration::new(self.sec as u64, self.nsec)
        } else {
            UNIX_EPOCH - std::time::Duration::from_secs(self.sec.unsigned_abs())
                + std::time::Duration::from_nanos(self.nsec as u64)
        }
    }
}

/// File type, stored as the `S_IFMT` bits of `mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::Regular,
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            _ => return None,
        })
    }
    pub fn type_bits(self) -> u32 {
        match self {
            FileKind::Regular => libc::S_IFREG,
            FileKind::Directory => libc::S_IFDIR,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::Fifo => libc::S_IFIFO,
            FileKind::Socket => libc::S_IFSOCK,
            FileKind::CharDevice => libc::S_IFCHR,
            FileKind::BlockDevice => libc::S_IFBLK,
        }
    }
}

/// One inode's attributes, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    /// Permission bits incl. setuid/setgid/sticky (no type bits).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte blocks the inode occupies (`st_blocks`). Derived, never
    /// stored: the index gives `size` in blocks (an upper bound), and
    /// `FsCore::getattr` counts a regular file's data extents and unflushed
    /// bytes, so holes cost no blocks.
    pub blocks: u64,
    pub nlink: u32,
    pub rdev: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
}

/// A run of a file's bytes backed by (part of) one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    pub chunk: ChunkId,
    pub chunk_offset: u64,
}

/// Where a chunk's sealed bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLocation {
    pub pack: u64,
    pub offset: u64,
    pub sealed_len: u32,
    pub plain_len: u32,
    /// Size of the whole pack object once it is stored (0 before).
    pub pack_size: u64,
}

/// A chunk's location and the name of its pack (`None` if the pack row is
/// missing).
pub type NamedLocation = (ChunkLocation, Option<[u8; 16]>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub cursor: u64,
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: FileKind,
}

/// Stored packs and how many of them one backend holds.
#[derive(Clone, Debug, Default)]
pub struct PlacementTotals {
    pub packs: u64,
    pub bytes: u64,
    pub placed_packs: u64,
    pub placed_bytes: u64,
}

/// Totals for `tresor status`.
#[derive(Clone, Debug, Default)]
pub struct IndexStats {
    pub inodes: u64,
    pub logical_bytes: u64,
    pub referenced_plain_bytes: u64,
    pub unique_plain_bytes: u64,
    pub chunks: u64,
    pub live_chunks: u64,
    pub packs: u64,
    pub pack_bytes: u64,
}

impl IndexStats {
    /// The index part of `status --json`.
    pub fn to_json(&self) -> serde_json::Value {
        let s = self;
        serde_json::json!({
            "logical_bytes": s.logical_bytes,
            "referenced_bytes": s.referenced_plain_bytes,
            "unique_bytes": s.unique_plain_bytes,
            "dedup_saved_bytes": s.referenced_plain_bytes.saturating_sub(s.unique_plain_bytes),
            "chunks": s.chunks,
            "live_chunks": s.live_chunks,
            "packs": s.packs,
            "pack_bytes": s.pack_bytes,
            "inodes": s.inodes,
        })
    }

    /// The inverse of [`IndexStats::to_json`] (the daemon's status reply).
    pub fn from_json(v: &serde_json::Value) -> IndexStats {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        IndexStats {
            inodes: n("inodes"),
            logical_bytes: n("logical_bytes"),
            referenced_plain_bytes: n("referenced_bytes"),
            unique_plain_bytes: n("unique_bytes"),
            chunks: n("chunks"),
            live_chunks: n("live_chunks"),
            packs: n("packs"),
            pack_bytes: n("pack_bytes"),
        }
    }
}

/// The longest extent (an extent is part of one chunk); bounds the range
/// scan in [`Index::extents_in`], which runs on every read.
pub const MAX_EXTENT_LEN: u64 = crate::chunk::chunker::MAX_CHUNK as u64;

pub struct Index {
    conn: Connection,
    /// Set when a chunk lost a reference (garbage collection asks, see
    /// [`Index::take_released`]).
    released: std::sync::atomic::AtomicBool,
    /// Savepoints and batches rolled back (see [`Index::change_count`]).
    rollbacks: std::sync::atomic::AtomicU64,
}

/// `packs.state`: the pack object is complete in the store.
pub const PACK_STORED: i64 = 1;

fn row_to_attr(r: &rusqlite::Row) -> rusqlite::Result<Attr> {
    row_to_attr_at(r, 0)
}

/// [`row_to_attr`] for a row whose [`ATTR_COLUMNS`] start at column `at`.
fn row_to_attr_at(r: &rusqlite::Row, at: usize) -> rusqlite::Result<Attr> {
    let mode: u32 = r.get(at + 1)?;
    Ok(Attr {
        ino: r.get(at)?,
        kind: FileKind::from_mode(mode).unwrap_or(FileKind::Regular),
        perm: mode & 0o7777,
        uid: r.get(at + 2)?,
        gid: r.get(at + 3)?,
        size: r.get::<_, i64>(at + 4)? as u64,
        blocks: (r.get::<_, i64>(at + 4)? as u64).div_ceil(512),
        nlink: r.get(at + 5)?,
        rdev: r.get(at + 6)?,
        atime: Timestamp {
            sec: r.get(at + 7)?,
            nsec: r.get(at + 8)?,
        },
        mtime: Timestamp {
            sec: r.get(at + 9)?,
            nsec: r.get(at + 10)?,
        },
        ctime: Timestamp {
            sec: r.get(at + 11)?,
            nsec: r.get(at + 12)?,
        },
    })
}

const ATTR_COLUMNS: &str =
    "ino, mode, uid, gid, size, nlink, rdev, atime_s, atime_ns, mtime_s, mtime_ns, ctime_s, ctime_ns";

/// `(id, name, size)` of a `SELECT id, name, size FROM packs …` row.
fn pack_row(r: &rusqlite::Row) -> rusqlite::Result<(u64, Vec<u8>, u64)> {
    Ok((
        r.get::<_, i64>(0)? as u64,
        r.get(1)?,
        r.get::<_, i64>(2)? as u64,
    ))
}

/// Pack rows with their 16-byte names (rows with a malformed name are skipped).
fn collect_packs(
    rows: impl Iterator<Item = rusqlite::Result<(u64, Vec<u8>, u64)>>,
) -> Result<Vec<(u64, [u8; 16], u64)>, IndexError> {
    let mut out = Vec::new();
    for row in rows {
        let (id, name, size) = row?;
        if let Ok(name) = name.try_into() {
            out.push((id, name, size));
        }
    }
    Ok(out)
}

fn chunk_from_blob(b: Vec<u8>) -> rusqlite::Result<ChunkId> {
    let arr: [u8; 32] = b.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            32,
            rusqlite::types::Type::Blob,
            "chunk id is not 32 bytes".into(),
        )
    })?;
    Ok(ChunkId(arr))
}

impl Index {
    /// Opens (or with `create`, creates) the encrypted index at `path`.
    pub fn open(path: &Path, key: &SecretKey, create: bool) -> Result<Index, IndexError> {
        let flags = if create {
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
        } else {
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
        };
        let conn = Connection::open_with_flags(path, flags)?;
        make_private(path);
        // Raw key: SQLCipher skips its own PBKDF2 for an `x'..'` key; ours is
        // already a uniformly random subkey.
        apply_key(&conn, key)?;
        digest::register(&conn)?;
        // The first real read fails if the key is wrong.
        let probe: Result<i64, _> =
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0));
        if let Err(e) = probe {
            return Err(IndexError::NotAnIndex(e.to_string()));
        }
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
             PRAGMA foreign_keys = OFF; PRAGMA recursive_triggers = ON; PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;",
        )?;
        let fresh: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'meta'",
            [],
            |r| r.get(0),
        )?;
        if fresh == 0 {
            if !create {
                return Err(IndexError::NotAnIndex("no tresor schema".into()));
            }
            conn.execute_batch("BEGIN")?;
            conn.execute_batch(SCHEMA)?;
            conn.execute_batch(SCHEMA_2)?;
            conn.execute_batch(SCHEMA_3)?;
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                params![SCHEMA_VERSION],
            )?;
            let now = Timestamp::now();
            let (uid, gid) = (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            );
            conn.execute(
                "INSERT INTO inodes (ino, mode, uid, gid, size, nlink, rdev, atime_s, atime_ns, mtime_s, mtime_ns, ctime_s, ctime_ns) \
                 VALUES (?1, ?2, ?3, ?4, 0, 2, 0, ?5, ?6, ?5, ?6, ?5, ?6)",
                params![ROOT_INO, libc::S_IFDIR | 0o755, uid, gid, now.sec, now.nsec],
            )?;
            conn.execute_batch("COMMIT")?;
        } else {
            let found: i64 =
                conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                    r.get(0)
                })?;
            if (1..SCHEMA_VERSION).contains(&found) {
                conn.execute_batch("BEGIN")?;
                conn.execute_batch(SCHEMA_2)?;
                conn.execute_batch(SCHEMA_3)?;
                conn.execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'schema'",
                    params![SCHEMA_VERSION],
                )?;
                conn.execute_batch("COMMIT")?;
                log::info!(
                    "index upgraded from schema {found} to {SCHEMA_VERSION} (placements, gc_dead)"
                );
            } else if found != SCHEMA_VERSION {
                return Err(IndexError::Schema { found });
            }
        }
        conn.execute_batch(INDEXES)?;
        let idx = Index {
            conn,
            released: Default::default(),
            rollbacks: Default::default(),
        };
        idx.ensure_index_state()?;
        idx.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(idx)
    }

    /// Opens the index for reading while a daemon may hold the write batch
    /// (WAL readers never block the writer).
    pub fn open_read_only(path: &Path, key: &SecretKey) -> Result<Index, IndexError> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        apply_key(&conn, key)?;
        digest::register(&conn)?;
        if let Err(e) = conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get::<_, i64>(0)
        }) {
            return Err(IndexError::NotAnIndex(e.to_string()));
        }
        Ok(Index {
            conn,
            released: Default::default(),
            rollbacks: Default::default(),
        })
    }

    /// True once after some chunk lost a reference (a file was deleted,
    /// truncated or overwritten): its pack may now be wholly dead.
    pub fn take_released(&self) -> bool {
        self.released
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// SQLite's `quick_check`: every page and index b-tree is well formed.
    pub fn quick_check(&self) -> Result<bool, IndexError> {
        let r: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| IndexError::NotAnIndex(e.to_string()))?;
        Ok(r == "ok")
    }

    /// Commits the open batch and starts the next. With `durable`, the commit
    /// is fsynced before this returns (every commit is, see below).
    pub fn commit(&self, durable: bool) -> Result<(), IndexError> {
        // synchronous=FULL always: a commit fsyncs the WAL once. Commits are
        // batched (timer, fsync(), unmount), so this costs one fsync per batch.
        let _ = durable;
        let r = self
            .conn
            .execute_batch("COMMIT")
            .and_then(|()| self.conn.execute_batch("BEGIN IMMEDIATE"));
        if r.is_err() {
            // SQLite may have rolled the batch back: answers cached from it
            // are stale.
            self.note_rollback();
        }
        Ok(r?)
    }

    /// A number that grows with every change made to the index through
    /// this connection: rows inserted, updated or deleted (SQLite's
    /// `total_changes`, triggers included) and rollbacks (which undo rows
    /// without counting). While it stands still, every answer read from
    /// the index is still true: the read path caches a file's attributes
    /// and extents against it (`fs/read.rs`). The daemon's connection is
    /// the only writer of its index.
    pub fn change_count(&self) -> u64 {
        self.conn.total_changes() + self.rollbacks.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn note_rollback(&self) {
        self.rollbacks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Commits and closes the batch (at unmount); checkpoints the WAL so the
    /// main database file is complete on its own.
    pub fn close(self) -> Result<(), IndexError> {
        self.conn.execute_batch("COMMIT")?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    // ----- meta -----

    /// An integer meta value (`None` if absent).
    pub fn meta_u64(&self, key: &str) -> Result<Option<u64>, IndexError> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row(params![key], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|v| v as u64))
    }

    /// Sets an integer meta value (joins the open batch).
    pub fn set_meta_u64(&self, key: &str, value: u64) -> Result<(), IndexError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
            .execute(params![key, value as i64])?;
        Ok(())
    }

    /// Commits the batch, checkpoints the WAL into the main database file
    /// and runs `f` while no transaction is open, so the file on disk is the
    /// complete, consistent index (snapshots read it); then opens the next
    /// batch. Fails with `Busy` if a reader (another process) kept the
    /// checkpoint from finishing.
    pub fn checkpointed<R>(&self, f: impl FnOnce() -> R) -> Result<R, IndexError> {
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            self.note_rollback();
            return Err(e.into());
        }
        let r = (|| {
            self.conn.busy_timeout(std::time::Duration::from_secs(5))?;
            let busy: i64 = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
            if busy != 0 {
                return Err(IndexError::Busy);
            }
            Ok(f())
        })();
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        r
    }

    // ----- inodes -----

    pub fn stats(&self) -> Result<IndexStats, IndexError> {
        let mut s = IndexStats::default();
        let c = &self.conn;
        s.inodes = c.query_row("SELECT count(*) FROM inodes", [], |r| r.get::<_, i64>(0))? as u64;
        s.logical_bytes = c.query_row(
            "SELECT coalesce(sum(size), 0) FROM inodes WHERE (mode & 61440) = 32768",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64;
        s.referenced_plain_bytes =
            c.query_row("SELECT coalesce(sum(length), 0) FROM extents", [], |r| {
                r.get::<_, i64>(0)
            })? as u64;
        let (chunks, live, unique): (i64, i64, i64) = c.query_row(
            "SELECT count(*), coalesce(sum(refcount > 0), 0), coalesce(sum(CASE WHEN refcount > 0 THEN plain_len ELSE 0 END), 0) FROM chunks",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        s.chunks = chunks as u64;
        s.live_chunks = live as u64;
        s.unique_plain_bytes = unique as u64;
        let (packs, bytes): (i64, i64) = c.query_row(
            "SELECT count(*), coalesce(sum(size), 0) FROM packs WHERE state = ?1",
            params![PACK_STORED],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        s.packs = packs as u64;
        s.pack_bytes = bytes as u64;
        Ok(s)
    }

    /// Starts a read transaction on a read-only connection, so every later
    /// query sees one consistent snapshot while a daemon keeps committing.
    pub fn begin_snapshot(&self) -> Result<(), IndexError> {
        self.conn.execute_batch("BEGIN DEFERRED")?;
        self.conn
            .query_row("SELECT count(*) FROM packs", [], |_| Ok(()))?;
        Ok(())
    }

    /// The connection, for the child modules' queries (`fsck.rs` runs
    /// whole-table reads and repairs inside the open batch; the caller commits).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }
}

/// The index (and so its WAL and shared-memory files, which SQLite creates
/// with the main file's mode) readable by the owner only: it is encrypted,
/// but its size and timing still say how much the vault holds.
fn make_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
    }
}

/// Keys the connection. The raw key skips SQLCipher's own PBKDF2: the
/// subkey is already uniformly random. The pragma text is zeroized.
fn apply_key(conn: &Connection, key: &SecretKey) -> Result<(), IndexError> {
    let hex = key.to_hex();
    let pragma = zeroize::Zeroizing::new(format!("PRAGMA key = \"x'{}'\"", hex.as_str()));
    conn.execute_batch(&pragma)?;
    Ok(())
}

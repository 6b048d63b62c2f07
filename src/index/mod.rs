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

use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::chunk::seal::ChunkId;
use crate::vault::keys::SecretKey;

/// Garbage collection's queries (`src/index/gc.rs`).
mod gc;
pub use gc::{PackChunk, PackLiveness};
pub mod fsck;

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
}

/// The longest extent (an extent is part of one chunk); bounds the range
/// scan in [`Index::extents_in`], which runs on every read.
pub const MAX_EXTENT_LEN: u64 = crate::chunk::chunker::MAX_CHUNK as u64;

pub struct Index {
    conn: Connection,
}

const SCHEMA: &str = r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE inodes (
    ino INTEGER PRIMARY KEY AUTOINCREMENT,
    mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
    size INTEGER NOT NULL, nlink INTEGER NOT NULL, rdev INTEGER NOT NULL,
    atime_s INTEGER NOT NULL, atime_ns INTEGER NOT NULL,
    mtime_s INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ctime_s INTEGER NOT NULL, ctime_ns INTEGER NOT NULL
);
CREATE TABLE dirents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER NOT NULL, name BLOB NOT NULL, ino INTEGER NOT NULL,
    UNIQUE (parent, name)
);
CREATE INDEX dirents_by_ino ON dirents (ino);
CREATE TABLE symlinks (ino INTEGER PRIMARY KEY, target BLOB NOT NULL);
CREATE TABLE xattrs (ino INTEGER NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (ino, name)) WITHOUT ROWID;
CREATE TABLE extents (
    ino INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
    chunk BLOB NOT NULL, chunk_offset INTEGER NOT NULL,
    PRIMARY KEY (ino, offset)
) WITHOUT ROWID;
CREATE TABLE chunks (
    id BLOB PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL,
    sealed_len INTEGER NOT NULL, plain_len INTEGER NOT NULL, refcount INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX chunks_by_pack ON chunks (pack);
CREATE TABLE packs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL, state INTEGER NOT NULL
);
CREATE TABLE orphans (ino INTEGER PRIMARY KEY);
"#;

/// Added in schema 2 (also applied to a schema-1 index on open): which
/// remote backend holds which pack. A stored pack without a row for a
/// configured backend is that backend's upload queue, so the queue is
/// exactly as durable as the index and survives crashes and restarts.
const SCHEMA_2: &str = r#"
CREATE TABLE IF NOT EXISTS placements (
    pack INTEGER NOT NULL, backend TEXT NOT NULL, uploaded_s INTEGER NOT NULL,
    PRIMARY KEY (pack, backend)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evicted (pack INTEGER PRIMARY KEY);
"#;

/// Added in schema 3 (also applied to older indexes on open): packs garbage
/// collection removed from the index whose remote objects may still exist.
/// A snapshot with generation ≥ `after_generation` no longer references
/// the pack, so its objects may go once such a snapshot is durable on every
/// backend. `size` is the pack's size, for reports.
const SCHEMA_3: &str = r#"
CREATE TABLE IF NOT EXISTS gc_dead (
    pack INTEGER PRIMARY KEY, name BLOB NOT NULL, after_generation INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0
);
"#;

/// `packs.state`: the pack object is complete in the store.
pub const PACK_STORED: i64 = 1;

fn row_to_attr(r: &rusqlite::Row) -> rusqlite::Result<Attr> {
    let mode: u32 = r.get(1)?;
    Ok(Attr {
        ino: r.get(0)?,
        kind: FileKind::from_mode(mode).unwrap_or(FileKind::Regular),
        perm: mode & 0o7777,
        uid: r.get(2)?,
        gid: r.get(3)?,
        size: r.get::<_, i64>(4)? as u64,
        nlink: r.get(5)?,
        rdev: r.get(6)?,
        atime: Timestamp {
            sec: r.get(7)?,
            nsec: r.get(8)?,
        },
        mtime: Timestamp {
            sec: r.get(9)?,
            nsec: r.get(10)?,
        },
        ctime: Timestamp {
            sec: r.get(11)?,
            nsec: r.get(12)?,
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
        // Raw key: SQLCipher skips its own PBKDF2 for an `x'..'` key; ours is
        // already a uniformly random subkey.
        apply_key(&conn, key)?;
        // The first real read fails if the key is wrong.
        let probe: Result<i64, _> =
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0));
        if let Err(e) = probe {
            return Err(IndexError::NotAnIndex(e.to_string()));
        }
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
             PRAGMA foreign_keys = OFF; PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;",
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
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(Index { conn })
    }

    /// Opens the index for reading while a daemon may hold the write batch
    /// (WAL readers never block the writer).
    pub fn open_read_only(path: &Path, key: &SecretKey) -> Result<Index, IndexError> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        apply_key(&conn, key)?;
        if let Err(e) = conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get::<_, i64>(0)
        }) {
            return Err(IndexError::NotAnIndex(e.to_string()));
        }
        Ok(Index { conn })
    }

    /// Commits the open batch and starts the next. With `durable`, the commit
    /// is fsynced before this returns (every commit is, see below).
    pub fn commit(&self, durable: bool) -> Result<(), IndexError> {
        // synchronous=FULL always: a commit fsyncs the WAL once. Commits are
        // batched (timer, fsync(), unmount), so this costs one fsync per batch.
        let _ = durable;
        self.conn.execute_batch("COMMIT")?;
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
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
        self.conn.execute_batch("COMMIT")?;
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

    pub fn attr(&self, ino: u64) -> Result<Option<Attr>, IndexError> {
        Ok(self
            .conn
            .prepare_cached(&format!("SELECT {ATTR_COLUMNS} FROM inodes WHERE ino = ?1"))?
            .query_row(params![ino], row_to_attr)
            .optional()?)
    }

    /// Inserts a new inode (its `ino` field is ignored) and returns its number.
    pub fn create_inode(&self, a: &Attr) -> Result<u64, IndexError> {
        self.conn
            .prepare_cached(
                "INSERT INTO inodes (mode, uid, gid, size, nlink, rdev, atime_s, atime_ns, mtime_s, mtime_ns, ctime_s, ctime_ns) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                a.kind.type_bits() | (a.perm & 0o7777),
                a.uid,
                a.gid,
                a.size as i64,
                a.nlink,
                a.rdev,
                a.atime.sec,
                a.atime.nsec,
                a.mtime.sec,
                a.mtime.nsec,
                a.ctime.sec,
                a.ctime.nsec
            ])?;
        Ok(self.conn.last_insert_rowid() as u64)
    }

    pub fn set_attr(&self, a: &Attr) -> Result<(), IndexError> {
        self.conn
            .prepare_cached(
                "UPDATE inodes SET mode = ?2, uid = ?3, gid = ?4, size = ?5, nlink = ?6, rdev = ?7, \
                 atime_s = ?8, atime_ns = ?9, mtime_s = ?10, mtime_ns = ?11, ctime_s = ?12, ctime_ns = ?13 WHERE ino = ?1",
            )?
            .execute(params![
                a.ino,
                a.kind.type_bits() | (a.perm & 0o7777),
                a.uid,
                a.gid,
                a.size as i64,
                a.nlink,
                a.rdev,
                a.atime.sec,
                a.atime.nsec,
                a.mtime.sec,
                a.mtime.nsec,
                a.ctime.sec,
                a.ctime.nsec
            ])?;
        Ok(())
    }

    /// Removes an inode and everything hanging off it (extents drop their
    /// chunk references).
    pub fn delete_inode(&self, ino: u64) -> Result<(), IndexError> {
        self.remove_extents(ino, 0, u64::MAX)?;
        self.conn
            .prepare_cached("DELETE FROM inodes WHERE ino = ?1")?
            .execute(params![ino])?;
        self.conn
            .prepare_cached("DELETE FROM symlinks WHERE ino = ?1")?
            .execute(params![ino])?;
        self.conn
            .prepare_cached("DELETE FROM xattrs WHERE ino = ?1")?
            .execute(params![ino])?;
        self.conn
            .prepare_cached("DELETE FROM orphans WHERE ino = ?1")?
            .execute(params![ino])?;
        Ok(())
    }

    pub fn add_orphan(&self, ino: u64) -> Result<(), IndexError> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO orphans (ino) VALUES (?1)")?
            .execute(params![ino])?;
        Ok(())
    }

    pub fn orphans(&self) -> Result<Vec<u64>, IndexError> {
        let mut st = self.conn.prepare_cached("SELECT ino FROM orphans")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ----- directories -----

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<u64>, IndexError> {
        Ok(self
            .conn
            .prepare_cached("SELECT ino FROM dirents WHERE parent = ?1 AND name = ?2")?
            .query_row(params![parent, name], |r| r.get(0))
            .optional()?)
    }

    pub fn insert_dirent(&self, parent: u64, name: &[u8], ino: u64) -> Result<(), IndexError> {
        self.conn
            .prepare_cached("INSERT INTO dirents (parent, name, ino) VALUES (?1, ?2, ?3)")?
            .execute(params![parent, name, ino])?;
        Ok(())
    }

    pub fn remove_dirent(&self, parent: u64, name: &[u8]) -> Result<(), IndexError> {
        self.conn
            .prepare_cached("DELETE FROM dirents WHERE parent = ?1 AND name = ?2")?
            .execute(params![parent, name])?;
        Ok(())
    }

    /// Points an existing entry at another inode (RENAME_EXCHANGE, rename over).
    pub fn retarget_dirent(&self, parent: u64, name: &[u8], ino: u64) -> Result<(), IndexError> {
        self.conn
            .prepare_cached("UPDATE dirents SET ino = ?3 WHERE parent = ?1 AND name = ?2")?
            .execute(params![parent, name, ino])?;
        Ok(())
    }

    pub fn dir_is_empty(&self, dir: u64) -> Result<bool, IndexError> {
        let n: Option<i64> = self
            .conn
            .prepare_cached("SELECT 1 FROM dirents WHERE parent = ?1 LIMIT 1")?
            .query_row(params![dir], |r| r.get(0))
            .optional()?;
        Ok(n.is_none())
    }

    /// The parent of a directory (directories have exactly one entry).
    pub fn parent_of(&self, dir: u64) -> Result<Option<u64>, IndexError> {
        Ok(self
            .conn
            .prepare_cached("SELECT parent FROM dirents WHERE ino = ?1 LIMIT 1")?
            .query_row(params![dir], |r| r.get(0))
            .optional()?)
    }

    /// Entries with cursor > `after`, in cursor order, at most `limit`.
    pub fn read_dir(
        &self,
        dir: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DirEntry>, IndexError> {
        let mut st = self.conn.prepare_cached(
            "SELECT d.id, d.name, d.ino, i.mode FROM dirents d JOIN inodes i ON i.ino = d.ino \
             WHERE d.parent = ?1 AND d.id > ?2 ORDER BY d.id LIMIT ?3",
        )?;
        let rows = st.query_map(params![dir, after as i64, limit as i64], |r| {
            let mode: u32 = r.get(3)?;
            Ok(DirEntry {
                cursor: r.get::<_, i64>(0)? as u64,
                name: r.get(1)?,
                ino: r.get(2)?,
                kind: FileKind::from_mode(mode).unwrap_or(FileKind::Regular),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ----- symlinks and xattrs -----

    pub fn set_symlink(&self, ino: u64, target: &[u8]) -> Result<(), IndexError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO symlinks (ino, target) VALUES (?1, ?2)")?
            .execute(params![ino, target])?;
        Ok(())
    }

    pub fn symlink(&self, ino: u64) -> Result<Option<Vec<u8>>, IndexError> {
        Ok(self
            .conn
            .prepare_cached("SELECT target FROM symlinks WHERE ino = ?1")?
            .query_row(params![ino], |r| r.get(0))
            .optional()?)
    }

    pub fn xattr(&self, ino: u64, name: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM xattrs WHERE ino = ?1 AND name = ?2")?
            .query_row(params![ino, name], |r| r.get(0))
            .optional()?)
    }

    pub fn set_xattr(&self, ino: u64, name: &[u8], value: &[u8]) -> Result<(), IndexError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO xattrs (ino, name, value) VALUES (?1, ?2, ?3)")?
            .execute(params![ino, name, value])?;
        Ok(())
    }

    /// Returns whether an attribute was removed.
    pub fn remove_xattr(&self, ino: u64, name: &[u8]) -> Result<bool, IndexError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM xattrs WHERE ino = ?1 AND name = ?2")?
            .execute(params![ino, name])?;
        Ok(n > 0)
    }

    pub fn xattr_names(&self, ino: u64) -> Result<Vec<Vec<u8>>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT name FROM xattrs WHERE ino = ?1 ORDER BY name")?;
        let rows = st.query_map(params![ino], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ----- extents -----

    /// Extents overlapping `[start, end)`, in file order.
    pub fn extents_in(&self, ino: u64, start: u64, end: u64) -> Result<Vec<Extent>, IndexError> {
        let lower = start.saturating_sub(MAX_EXTENT_LEN) as i64;
        let mut st = self.conn.prepare_cached(
            "SELECT offset, length, chunk, chunk_offset FROM extents \
             WHERE ino = ?1 AND offset >= ?2 AND offset < ?3 ORDER BY offset",
        )?;
        let end_i = end.min(i64::MAX as u64) as i64;
        let rows = st.query_map(params![ino, lower, end_i], |r| {
            Ok(Extent {
                offset: r.get::<_, i64>(0)? as u64,
                length: r.get::<_, i64>(1)? as u64,
                chunk: chunk_from_blob(r.get(2)?)?,
                chunk_offset: r.get::<_, i64>(3)? as u64,
            })
        })?;
        let mut out = Vec::new();
        for e in rows {
            let e = e?;
            if e.offset + e.length > start {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn adjust_refcount(&self, chunk: &ChunkId, delta: i64) -> Result<(), IndexError> {
        self.conn
            .prepare_cached("UPDATE chunks SET refcount = refcount + ?2 WHERE id = ?1")?
            .execute(params![&chunk.0[..], delta])?;
        Ok(())
    }

    fn insert_extent_row(&self, ino: u64, e: &Extent) -> Result<(), IndexError> {
        self.conn
            .prepare_cached(
                "INSERT INTO extents (ino, offset, length, chunk, chunk_offset) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                ino,
                e.offset as i64,
                e.length as i64,
                &e.chunk.0[..],
                e.chunk_offset as i64
            ])?;
        Ok(())
    }

    fn delete_extent_row(&self, ino: u64, offset: u64) -> Result<(), IndexError> {
        self.conn
            .prepare_cached("DELETE FROM extents WHERE ino = ?1 AND offset = ?2")?
            .execute(params![ino, offset as i64])?;
        Ok(())
    }

    /// Punches `[start, end)` out of a file's extents (a hole afterwards),
    /// trimming or splitting extents at the edges and keeping chunk refcounts
    /// equal to the number of extents that reference each chunk.
    pub fn remove_extents(&self, ino: u64, start: u64, end: u64) -> Result<(), IndexError> {
        if start >= end {
            return Ok(());
        }
        for e in self.extents_in(ino, start, end)? {
            let e_end = e.offset + e.length;
            self.delete_extent_row(ino, e.offset)?;
            self.adjust_refcount(&e.chunk, -1)?;
            if e.offset < start {
                let left = Extent {
                    length: start - e.offset,
                    ..e
                };
                self.insert_extent_row(ino, &left)?;
                self.adjust_refcount(&e.chunk, 1)?;
            }
            if e_end > end {
                let right = Extent {
                    offset: end,
                    length: e_end - end,
                    chunk: e.chunk,
                    chunk_offset: e.chunk_offset + (end - e.offset),
                };
                self.insert_extent_row(ino, &right)?;
                self.adjust_refcount(&e.chunk, 1)?;
            }
        }
        Ok(())
    }

    /// Adds an extent over a range that [`Index::remove_extents`] cleared.
    pub fn insert_extent(&self, ino: u64, e: &Extent) -> Result<(), IndexError> {
        self.insert_extent_row(ino, e)?;
        self.adjust_refcount(&e.chunk, 1)
    }

    // ----- chunks and packs -----

    pub fn chunk_location(&self, id: &ChunkId) -> Result<Option<ChunkLocation>, IndexError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT c.pack, c.offset, c.sealed_len, c.plain_len, coalesce(p.size, 0) \
                 FROM chunks c LEFT JOIN packs p ON p.id = c.pack WHERE c.id = ?1",
            )?
            .query_row(params![&id.0[..]], |r| {
                Ok(ChunkLocation {
                    pack: r.get::<_, i64>(0)? as u64,
                    offset: r.get::<_, i64>(1)? as u64,
                    sealed_len: r.get(2)?,
                    plain_len: r.get(3)?,
                    pack_size: r.get::<_, i64>(4)? as u64,
                })
            })
            .optional()?)
    }

    /// Records a new chunk with refcount 0 (extents add the references).
    pub fn insert_chunk(&self, id: &ChunkId, loc: &ChunkLocation) -> Result<(), IndexError> {
        self.conn
            .prepare_cached(
                "INSERT INTO chunks (id, pack, offset, sealed_len, plain_len, refcount) VALUES (?1, ?2, ?3, ?4, ?5, 0)",
            )?
            .execute(params![
                &id.0[..],
                loc.pack as i64,
                loc.offset as i64,
                loc.sealed_len,
                loc.plain_len
            ])?;
        Ok(())
    }

    /// Registers a pack name and returns its local number.
    pub fn create_pack(&self, name: &[u8; 16]) -> Result<u64, IndexError> {
        self.conn
            .prepare_cached("INSERT INTO packs (name, size, state) VALUES (?1, 0, 0)")?
            .execute(params![&name[..]])?;
        Ok(self.conn.last_insert_rowid() as u64)
    }

    pub fn mark_pack_stored(&self, pack: u64, size: u64) -> Result<(), IndexError> {
        self.conn
            .prepare_cached("UPDATE packs SET size = ?2, state = ?3 WHERE id = ?1")?
            .execute(params![pack as i64, size as i64, PACK_STORED])?;
        Ok(())
    }

    pub fn pack_name(&self, pack: u64) -> Result<Option<[u8; 16]>, IndexError> {
        let b: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT name FROM packs WHERE id = ?1")?
            .query_row(params![pack as i64], |r| r.get(0))
            .optional()?;
        Ok(b.and_then(|b| b.try_into().ok()))
    }

    /// Which paths (one per inode, best effort) use chunks of a pack; for log lines.
    pub fn path_of(&self, mut ino: u64) -> Result<Vec<u8>, IndexError> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        for _ in 0..4096 {
            if ino == ROOT_INO {
                break;
            }
            let row: Option<(u64, Vec<u8>)> = self
                .conn
                .prepare_cached("SELECT parent, name FROM dirents WHERE ino = ?1 LIMIT 1")?
                .query_row(params![ino], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            match row {
                Some((p, n)) => {
                    parts.push(n);
                    ino = p;
                }
                None => {
                    parts.push(format!("<unlinked inode {ino}>").into_bytes());
                    break;
                }
            }
        }
        let mut out = Vec::new();
        for p in parts.iter().rev() {
            out.push(b'/');
            out.extend_from_slice(p);
        }
        if out.is_empty() {
            out.push(b'/');
        }
        Ok(out)
    }

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

    /// Up to `limit` stored packs not yet placed on `backend`, oldest first:
    /// (pack number, name, size).
    pub fn unplaced_packs(
        &self,
        backend: &str,
        limit: usize,
    ) -> Result<Vec<(u64, [u8; 16], u64)>, IndexError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, name, size FROM packs WHERE state = ?1 AND NOT EXISTS \
             (SELECT 1 FROM placements p WHERE p.pack = packs.id AND p.backend = ?2) \
             ORDER BY id LIMIT ?3",
        )?;
        let rows = st.query_map(params![PACK_STORED, backend, limit as i64], pack_row)?;
        collect_packs(rows)
    }

    pub fn add_placement(&self, pack: u64, backend: &str) -> Result<(), IndexError> {
        let now = Timestamp::now().sec;
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO placements (pack, backend, uploaded_s) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![pack as i64, backend, now])?;
        Ok(())
    }

    /// (packs, bytes) stored and (packs, bytes) placed on `backend`.
    pub fn placement_totals(&self, backend: &str) -> Result<PlacementTotals, IndexError> {
        let (packs, bytes): (i64, i64) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(size), 0) FROM packs WHERE state = ?1",
            params![PACK_STORED],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (placed, placed_bytes): (i64, i64) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(k.size), 0) FROM placements p JOIN packs k ON k.id = p.pack \
             WHERE p.backend = ?1 AND k.state = ?2",
            params![backend, PACK_STORED],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(PlacementTotals {
            packs: packs as u64,
            bytes: bytes as u64,
            placed_packs: placed as u64,
            placed_bytes: placed_bytes as u64,
        })
    }

    /// Which backends hold the data of inode `ino` (recursively for a
    /// directory): plaintext bytes referenced per pack.
    pub fn bytes_per_pack_under(&self, ino: u64) -> Result<Vec<(u64, u64)>, IndexError> {
        self.conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS where_inodes (ino INTEGER PRIMARY KEY); \
             DELETE FROM where_inodes;",
        )?;
        self.conn.execute(
            "WITH RECURSIVE sub(ino) AS (SELECT ?1 UNION SELECT d.ino FROM dirents d JOIN sub ON d.parent = sub.ino) \
             INSERT OR IGNORE INTO where_inodes SELECT ino FROM sub",
            params![ino as i64],
        )?;
        let mut st = self.conn.prepare_cached(
            "SELECT c.pack, sum(e.length) FROM extents e JOIN where_inodes w ON w.ino = e.ino \
             JOIN chunks c ON c.id = e.chunk GROUP BY c.pack",
        )?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r?);
        }
        Ok(out)
    }

    /// Records that a pack left the local store (it is on every backend).
    pub fn mark_evicted(&self, pack: u64) -> Result<(), IndexError> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO evicted (pack) VALUES (?1)")?
            .execute(params![pack as i64])?;
        Ok(())
    }

    /// Records that a pack is back in the local store (fetched on a read).
    pub fn mark_cached(&self, name: &[u8; 16]) -> Result<(), IndexError> {
        self.conn
            .prepare_cached(
                "DELETE FROM evicted WHERE pack = (SELECT id FROM packs WHERE name = ?1)",
            )?
            .execute(params![&name[..]])?;
        Ok(())
    }

    /// Bytes of stored packs that are in the local store (not evicted).
    pub fn local_pack_bytes(&self) -> Result<u64, IndexError> {
        let n: i64 = self.conn.query_row(
            "SELECT coalesce(sum(size), 0) FROM packs WHERE state = ?1 \
             AND id NOT IN (SELECT pack FROM evicted)",
            params![PACK_STORED],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Packs on every one of `backends`, still in the local store, oldest
    /// first: eviction candidates. One query, run only when the local
    /// store is over its budget.
    pub fn evictable_packs(
        &self,
        backends: &[String],
        limit: usize,
    ) -> Result<Vec<(u64, [u8; 16], u64)>, IndexError> {
        if backends.is_empty() {
            return Ok(Vec::new());
        }
        let list = vec!["?"; backends.len()].join(", ");
        let sql = format!(
            "SELECT k.id, k.name, k.size FROM packs k WHERE k.state = {PACK_STORED} \
             AND k.id NOT IN (SELECT pack FROM evicted) \
             AND (SELECT count(*) FROM placements p WHERE p.pack = k.id AND p.backend IN ({list})) = {} \
             ORDER BY k.id LIMIT {limit}",
            backends.len()
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(backends), pack_row)?;
        collect_packs(rows)
    }

    /// Stored bytes not yet on every one of `backends` (the upload backlog).
    pub fn unplaced_bytes(&self, backends: &[String]) -> Result<u64, IndexError> {
        let mut worst = 0;
        for b in backends {
            let t = self.placement_totals(b)?;
            worst = worst.max(t.bytes.saturating_sub(t.placed_bytes));
        }
        Ok(worst)
    }

    pub fn is_evicted(&self, pack: u64) -> Result<bool, IndexError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM evicted WHERE pack = ?1")?
            .query_row(params![pack as i64], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Packs evicted from the local store that are placed on `backend` and
    /// on none of `others`: what removing `backend` would lose.
    pub fn packs_only_on(&self, backend: &str, others: &[String]) -> Result<u64, IndexError> {
        let mut st = self.conn.prepare_cached(
            "SELECT p.pack FROM placements p JOIN evicted e ON e.pack = p.pack WHERE p.backend = ?1",
        )?;
        let packs: Vec<i64> = st
            .query_map(params![backend], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut n = 0;
        'packs: for pack in packs {
            for o in others {
                if self.is_placed(pack as u64, o)? {
                    continue 'packs;
                }
            }
            n += 1;
        }
        Ok(n)
    }

    /// The backend ids that hold any pack (a restore matches backends by them).
    pub fn placement_backends(&self) -> Result<Vec<String>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT DISTINCT backend FROM placements ORDER BY backend")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks every stored pack as not in the local cache (a restored vault
    /// starts with an empty store); returns how many.
    pub fn mark_all_evicted(&self) -> Result<u64, IndexError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO evicted (pack) SELECT id FROM packs WHERE state = ?1",
            params![PACK_STORED],
        )?;
        Ok(self.conn.query_row(
            "SELECT count(*) FROM packs WHERE state = ?1",
            params![PACK_STORED],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Whether `pack` still exists, is stored and `backend` lacks it.
    pub fn pack_needs_upload(&self, pack: u64, backend: &str) -> Result<bool, IndexError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM packs WHERE id = ?1 AND state = ?2 AND NOT EXISTS \
                 (SELECT 1 FROM placements p WHERE p.pack = packs.id AND p.backend = ?3)",
            )?
            .query_row(params![pack as i64, PACK_STORED, backend], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Is `pack` placed on `backend`?
    pub fn is_placed(&self, pack: u64, backend: &str) -> Result<bool, IndexError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM placements WHERE pack = ?1 AND backend = ?2")?
            .query_row(params![pack as i64, backend], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Resolves a slash-separated path from the root to an inode.
    pub fn resolve(&self, path: &[u8]) -> Result<Option<u64>, IndexError> {
        let mut ino = ROOT_INO;
        for part in path
            .split(|b| *b == b'/')
            .filter(|p| !p.is_empty() && *p != b".")
        {
            match self.lookup(ino, part)? {
                Some(i) => ino = i,
                None => return Ok(None),
            }
        }
        Ok(Some(ino))
    }

    pub fn inode_count(&self) -> Result<u64, IndexError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM inodes")?
            .query_row([], |r| r.get(0))?;
        Ok(n as u64)
    }

    // ----- verify (src/verify.rs) -----

    /// Starts a read transaction on a read-only connection, so every later
    /// query sees one consistent snapshot while a daemon keeps committing.
    pub fn begin_snapshot(&self) -> Result<(), IndexError> {
        self.conn.execute_batch("BEGIN DEFERRED")?;
        self.conn
            .query_row("SELECT count(*) FROM packs", [], |_| Ok(()))?;
        Ok(())
    }

    /// Every stored pack: (pack number, name, size).
    pub fn stored_packs(&self) -> Result<Vec<(u64, [u8; 16], u64)>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, name, size FROM packs WHERE state = ?1 ORDER BY id")?;
        let rows = st.query_map(params![PACK_STORED], pack_row)?;
        collect_packs(rows)
    }

    /// Pack numbers with a row in `evicted`.
    pub fn evicted_packs(&self) -> Result<std::collections::HashSet<u64>, IndexError> {
        let mut st = self.conn.prepare_cached("SELECT pack FROM evicted")?;
        let rows = st.query_map([], |r| r.get::<_, i64>(0))?;
        let mut out = std::collections::HashSet::new();
        for r in rows {
            out.insert(r? as u64);
        }
        Ok(out)
    }

    /// Pack numbers placed on `backend`.
    pub fn placed_packs(
        &self,
        backend: &str,
    ) -> Result<std::collections::HashSet<u64>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT pack FROM placements WHERE backend = ?1")?;
        let rows = st.query_map(params![backend], |r| r.get::<_, i64>(0))?;
        let mut out = std::collections::HashSet::new();
        for r in rows {
            out.insert(r? as u64);
        }
        Ok(out)
    }

    /// Every chunk row in `pack` (refcount 0 included), by offset.
    pub fn chunks_in_pack(&self, pack: u64) -> Result<Vec<(ChunkId, ChunkLocation)>, IndexError> {
        let mut st = self.conn.prepare_cached(
            "SELECT c.id, c.offset, c.sealed_len, c.plain_len, coalesce(p.size, 0) \
             FROM chunks c LEFT JOIN packs p ON p.id = c.pack WHERE c.pack = ?1 ORDER BY c.offset",
        )?;
        let rows = st.query_map(params![pack as i64], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                ChunkLocation {
                    pack,
                    offset: r.get::<_, i64>(1)? as u64,
                    sealed_len: r.get(2)?,
                    plain_len: r.get(3)?,
                    pack_size: r.get::<_, i64>(4)? as u64,
                },
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, loc) = row?;
            out.push((chunk_from_blob(id)?, loc));
        }
        Ok(out)
    }

    /// Inodes with an extent referencing one of `chunks` (all in `pack`).
    pub fn inodes_using(
        &self,
        pack: u64,
        chunks: &std::collections::HashSet<ChunkId>,
    ) -> Result<Vec<u64>, IndexError> {
        let mut st = self.conn.prepare_cached(
            "SELECT DISTINCT e.ino, e.chunk FROM extents e JOIN chunks c ON c.id = e.chunk \
             WHERE c.pack = ?1",
        )?;
        let rows = st.query_map(params![pack as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (ino, id) = row?;
            if chunks.contains(&chunk_from_blob(id)?) {
                out.push(ino);
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The connection, for `fsck`'s whole-table checks and repairs: raw SQL
    /// inside the open batch (the caller commits).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
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

//! The schema, version by version: `SCHEMA` creates a new index, and
//! `SCHEMA_2`, `SCHEMA_3` migrate older ones in `Index::open`. FORMAT.md
//! documents each table. `INDEXES` holds secondary indexes that change no
//! table: created at every open when missing, so they need no schema
//! version (an older tresor reads such an index unchanged).

pub(super) const SCHEMA: &str = r#"
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
pub(super) const SCHEMA_2: &str = r#"
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
pub(super) const SCHEMA_3: &str = r#"
CREATE TABLE IF NOT EXISTS gc_dead (
    pack INTEGER PRIMARY KEY, name BLOB NOT NULL, after_generation INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0
);
"#;

/// Secondary indexes added after schema 3, created at every read-write open
/// (`IF NOT EXISTS`: a no-op once they exist). `dirents_by_parent` serves
/// readdir (`parent = ? AND id > ? ORDER BY id`): with only the
/// `(parent, name)` index, every batch read and sorted the whole directory,
/// so listing a directory of n entries cost O(n²) (57 s for `ls -l` of
/// 100,000 entries). `chunks_by_pack_live` covers gc's liveness query
/// (`sum(refcount > 0)`, `sealed_len` per pack) so it reads the index in
/// pack order only: with `chunks_by_pack` (pack → chunk id) every chunk row
/// was a random look-up in the chunks table by id, which fits the page
/// cache at 100,000 files and not at a million (gc 0.95 s → 36 s); it
/// replaces that index, whose look-ups (`pack = ?`) it serves as well.
pub(super) const INDEXES: &str = r#"
CREATE INDEX IF NOT EXISTS dirents_by_parent ON dirents (parent, id);
CREATE INDEX IF NOT EXISTS chunks_by_pack_live ON chunks (pack, refcount, sealed_len);
DROP INDEX IF EXISTS chunks_by_pack;
"#;

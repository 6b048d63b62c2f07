//! What an index snapshot needs to know without reading the whole index:
//! the content digest and a change counter, both kept up to date by
//! triggers on every write (one row, `index_state`), so a capture costs the
//! same at ten thousand files as at ten million.
//!
//! - **Content digest.** The sum (4 × u64 lanes, wrapping) of a hash of
//!   every user-visible row — the rows and columns the whole-table digest
//!   of `lineage.rs` reads — finalised with BLAKE3. Inserting a row adds its
//!   hash, deleting subtracts it, an update does both, so equal contents
//!   give equal sums whatever the order of writes (an additive multiset
//!   hash; nobody but the index key holder writes these rows).
//! - **Change counter.** Raised by every row written to a table a snapshot
//!   must carry. `placements` and `evicted` (what this machine uploaded or
//!   dropped from its cache: a restore sets both anew), `meta` (the
//!   capture's own bookkeeping) and an inode update that changes only its
//!   atime (reading a file) do not count, so a capture followed only by
//!   uploads, and a mount that changes nothing, publish no new generation.
//!
//! An index made before this gets the table and triggers at its first
//! read-write open (one pass over the rows). Its snapshot lineage holds
//! whole-table digests, so the whole-table digest of that moment is kept
//! with the sum it had (`meta.content_v1`): while the sum is unchanged,
//! that is the content digest, and hand-over still recognises the state.

use super::*;
use rusqlite::functions::FunctionFlags;

const ROW_CONTEXT: &str = "tresor v2 index content row";
const SUM_CONTEXT: &str = "tresor v2 index content digest";
/// `whole-table digest (32) ‖ sum (32)` at the upgrade (see the module doc).
const META_V1: &str = "content_v1";
/// `remote::snapshot::META_LINEAGE` (the index layer is below it).
const LINEAGE_KEY: &str = "snapshot_lineage";

/// Digest tag, table, columns; the same tags and columns as `lineage.rs`.
const TABLES: [(u8, &str, &[&str]); 5] = [
    (
        1,
        "inodes",
        &[
            "ino", "mode", "uid", "gid", "size", "nlink", "rdev", "mtime_s", "mtime_ns", "ctime_s",
            "ctime_ns",
        ],
    ),
    (2, "dirents", &["parent", "name", "ino"]),
    (3, "symlinks", &["ino", "target"]),
    (4, "xattrs", &["ino", "name", "value"]),
    (
        5,
        "extents",
        &["ino", "offset", "length", "chunk", "chunk_offset"],
    ),
];

/// Tables whose writes count as changes but are not content.
const COUNTED: [&str; 4] = ["chunks", "packs", "gc_dead", "orphans"];

fn add_value(h: &mut blake3::Hasher, v: rusqlite::types::ValueRef) {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Integer(v) => {
            h.update(&[1]);
            h.update(&v.to_le_bytes());
        }
        ValueRef::Blob(b) | ValueRef::Text(b) => {
            h.update(&[2]);
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        }
        ValueRef::Null => {
            h.update(&[0]);
        }
        ValueRef::Real(f) => {
            h.update(&[3]);
            h.update(&f.to_le_bytes());
        }
    }
}

fn lanes(b: &[u8]) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (i, l) in out.iter_mut().enumerate() {
        if let Some(s) = b.get(i * 8..i * 8 + 8) {
            *l = u64::from_le_bytes(s.try_into().expect("8 bytes"));
        }
    }
    out
}

fn to_bytes(l: [u64; 4]) -> Vec<u8> {
    l.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `tresor_row(tag, values…)`: a row's 32-byte hash.
/// `tresor_sum(sum, add, sub)`: `sum + add − sub` lane-wise (NULL = 0).
pub(super) fn register(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("tresor_row", -1, flags, |ctx| {
        let mut h = blake3::Hasher::new_derive_key(ROW_CONTEXT);
        for i in 0..ctx.len() {
            add_value(&mut h, ctx.get_raw(i));
        }
        Ok(h.finalize().as_bytes().to_vec())
    })?;
    conn.create_scalar_function("tresor_sum", 3, flags, |ctx| {
        let get = |i| match ctx.get_raw(i) {
            rusqlite::types::ValueRef::Blob(b) => lanes(b),
            _ => [0; 4],
        };
        let (mut s, a, d) = (get(0), get(1), get(2));
        for ((s, a), d) in s.iter_mut().zip(a).zip(d) {
            *s = s.wrapping_add(a).wrapping_sub(d);
        }
        Ok(to_bytes(s))
    })?;
    Ok(())
}

fn row_expr(tag: u8, side: &str, cols: &[&str]) -> String {
    let vals: Vec<String> = cols.iter().map(|c| format!("{side}.{c}")).collect();
    format!("tresor_row({tag}, {})", vals.join(", "))
}

/// The table and its triggers (`IF NOT EXISTS` throughout).
fn triggers_sql() -> String {
    let mut s = String::new();
    for (tag, table, cols) in TABLES {
        let new = row_expr(tag, "NEW", cols);
        let old = row_expr(tag, "OLD", cols);
        let olds: Vec<String> = cols.iter().map(|c| format!("OLD.{c}")).collect();
        let news: Vec<String> = cols.iter().map(|c| format!("NEW.{c}")).collect();
        s += &format!(
            "CREATE TRIGGER IF NOT EXISTS content_{table}_ins AFTER INSERT ON {table} BEGIN \
             UPDATE index_state SET sum = tresor_sum(sum, {new}, NULL), changes = changes + 1; END;\n\
             CREATE TRIGGER IF NOT EXISTS content_{table}_del AFTER DELETE ON {table} BEGIN \
             UPDATE index_state SET sum = tresor_sum(sum, NULL, {old}), changes = changes + 1; END;\n\
             CREATE TRIGGER IF NOT EXISTS content_{table}_upd AFTER UPDATE ON {table} \
             WHEN ({o}) IS NOT ({n}) BEGIN \
             UPDATE index_state SET sum = tresor_sum(sum, {new}, {old}), changes = changes + 1; END;\n",
            o = olds.join(", "),
            n = news.join(", "),
        );
    }
    for table in COUNTED {
        for ev in ["INSERT", "UPDATE", "DELETE"] {
            s += &format!(
                "CREATE TRIGGER IF NOT EXISTS changes_{table}_{e} AFTER {ev} ON {table} BEGIN \
                 UPDATE index_state SET changes = changes + 1; END;\n",
                e = ev.to_ascii_lowercase()
            );
        }
    }
    s
}

/// The whole-table sum, for an index that has no `index_state` yet.
fn full_sum(conn: &Connection) -> Result<[u64; 4], IndexError> {
    let mut sum = [0u64; 4];
    for (tag, table, cols) in TABLES {
        let sql = format!("SELECT {} FROM {table}", cols.join(", "));
        let mut st = conn.prepare(&sql)?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let mut h = blake3::Hasher::new_derive_key(ROW_CONTEXT);
            add_value(&mut h, rusqlite::types::ValueRef::Integer(tag as i64));
            for i in 0..cols.len() {
                add_value(&mut h, r.get_ref(i)?);
            }
            let l = lanes(h.finalize().as_bytes());
            for (s, l) in sum.iter_mut().zip(l) {
                *s = s.wrapping_add(l);
            }
        }
    }
    Ok(sum)
}

impl Index {
    /// Creates `index_state` and its triggers in an index that lacks them
    /// (a new one, or one made before them); called by `open` outside a
    /// transaction.
    pub(super) fn ensure_index_state(&self) -> Result<(), IndexError> {
        let have: i64 = self.conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'index_state'",
            [],
            |r| r.get(0),
        )?;
        if have == 0 {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            let r = (|| -> Result<(), IndexError> {
                self.conn.execute_batch(
                    "CREATE TABLE index_state (id INTEGER PRIMARY KEY CHECK (id = 0), \
                     sum BLOB NOT NULL, changes INTEGER NOT NULL)",
                )?;
                let sum = to_bytes(full_sum(&self.conn)?);
                self.conn.execute(
                    "INSERT INTO index_state (id, sum, changes) VALUES (0, ?1, 0)",
                    params![sum],
                )?;
                if self.meta_bytes(LINEAGE_KEY)?.is_some() {
                    let mut v1 = self.content_digest_v1()?.to_vec();
                    v1.extend_from_slice(&sum);
                    self.set_meta_bytes(META_V1, &v1)?;
                }
                self.conn.execute_batch(&triggers_sql())?;
                Ok(())
            })();
            match r {
                Ok(()) => self.conn.execute_batch("COMMIT")?,
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
        } else {
            // Triggers added later are created here (a no-op otherwise).
            self.conn.execute_batch(&triggers_sql())?;
        }
        Ok(())
    }

    /// The content digest (see the module doc): O(1). An index without
    /// `index_state` (opened read-only before its first read-write open)
    /// gets the whole-table digest.
    pub fn content_digest(&self) -> Result<[u8; 32], IndexError> {
        let sum: Option<Vec<u8>> = match self
            .conn
            .prepare_cached("SELECT sum FROM index_state WHERE id = 0")
        {
            Ok(mut st) => st.query_row([], |r| r.get(0)).optional()?,
            Err(_) => None,
        };
        let Some(sum) = sum else {
            return self.content_digest_v1();
        };
        if let Some(v1) = self.meta_bytes(META_V1)? {
            if v1.len() == 64 && v1[32..] == sum[..] {
                return Ok(v1[..32].try_into().expect("32 bytes"));
            }
        }
        let mut h = blake3::Hasher::new_derive_key(SUM_CONTEXT);
        h.update(&sum);
        Ok(*h.finalize().as_bytes())
    }

    /// Rows written to the tables a snapshot carries (see the module doc),
    /// ever; 0 for an index without `index_state`.
    pub fn content_change_count(&self) -> Result<u64, IndexError> {
        match self
            .conn
            .prepare_cached("SELECT changes FROM index_state WHERE id = 0")
        {
            Ok(mut st) => Ok(st
                .query_row([], |r| r.get::<_, i64>(0))
                .optional()?
                .unwrap_or(0) as u64),
            Err(_) => Ok(0),
        }
    }

    /// Runs `f` in its own transaction (none may be open: call it inside
    /// [`Index::checkpointed`]), commits, and checkpoints the WAL into the
    /// main file again, so the file then includes what `f` wrote.
    pub fn write_checkpointed<R>(
        &self,
        f: impl FnOnce(&Index) -> Result<R, IndexError>,
    ) -> Result<R, IndexError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let r = match f(self) {
            Ok(r) => r,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        self.conn.execute_batch("COMMIT")?;
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            return Err(IndexError::Busy);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &tempfile::TempDir) -> Index {
        let key = crate::vault::keys::MasterKey::for_tests(1).subkeys().index;
        Index::open(&dir.path().join("i.sqlite"), &key, true).unwrap()
    }

    #[test]
    fn the_maintained_digest_equals_a_fresh_sum_and_follows_content() {
        let dir = tempfile::tempdir().unwrap();
        let idx = open(&dir);
        let d0 = idx.content_digest().unwrap();
        let c0 = idx.content_change_count().unwrap();
        idx.conn
            .execute(
                "INSERT INTO inodes (ino, mode, uid, gid, size, nlink, rdev, atime_s, atime_ns, mtime_s, mtime_ns, ctime_s, ctime_ns) \
                 VALUES (7, 33188, 0, 0, 5, 1, 0, 1, 1, 2, 2, 3, 3)",
                [],
            )
            .unwrap();
        idx.conn
            .execute(
                "INSERT INTO dirents (parent, name, ino) VALUES (1, x'61', 7)",
                [],
            )
            .unwrap();
        idx.conn
            .execute(
                "INSERT OR REPLACE INTO xattrs (ino, name, value) VALUES (7, x'6e', x'01')",
                [],
            )
            .unwrap();
        // REPLACE deletes the old row: its hash must leave the sum.
        idx.conn
            .execute(
                "INSERT OR REPLACE INTO xattrs (ino, name, value) VALUES (7, x'6e', x'02')",
                [],
            )
            .unwrap();
        let d1 = idx.content_digest().unwrap();
        assert_ne!(d1, d0);
        assert!(idx.content_change_count().unwrap() > c0);
        let stored: Vec<u8> = idx
            .conn
            .query_row("SELECT sum FROM index_state", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, to_bytes(full_sum(&idx.conn).unwrap()));
        // An atime is neither content nor a change; an mtime is both.
        let c1 = idx.content_change_count().unwrap();
        idx.conn
            .execute("UPDATE inodes SET atime_s = 99 WHERE ino = 7", [])
            .unwrap();
        assert_eq!(idx.content_digest().unwrap(), d1);
        assert_eq!(idx.content_change_count().unwrap(), c1);
        idx.conn
            .execute("UPDATE inodes SET mtime_s = 99 WHERE ino = 7", [])
            .unwrap();
        assert_ne!(idx.content_digest().unwrap(), d1);
        assert!(idx.content_change_count().unwrap() > c1);
        idx.conn
            .execute("UPDATE inodes SET mtime_s = 2 WHERE ino = 7", [])
            .unwrap();
        assert_eq!(idx.content_digest().unwrap(), d1);
        // Placements and meta are neither.
        let c2 = idx.content_change_count().unwrap();
        let p = idx.create_pack(&[1; 16]).unwrap();
        let c3 = idx.content_change_count().unwrap();
        assert!(c3 > c2, "a pack row is a change");
        idx.add_placement(p, "b").unwrap();
        idx.set_meta_u64("x", 1).unwrap();
        assert_eq!(idx.content_change_count().unwrap(), c3);
        // Undoing the writes gives the first digest back.
        idx.conn
            .execute("DELETE FROM xattrs WHERE ino = 7", [])
            .unwrap();
        idx.conn
            .execute("DELETE FROM dirents WHERE ino = 7", [])
            .unwrap();
        idx.conn
            .execute("DELETE FROM inodes WHERE ino = 7", [])
            .unwrap();
        assert_eq!(idx.content_digest().unwrap(), d0);
    }

    #[test]
    fn an_index_from_before_keeps_its_whole_table_digest_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let idx = open(&dir);
        idx.set_meta_bytes(LINEAGE_KEY, &[0; 40]).unwrap();
        // As an older tresor left it: no table, no triggers.
        idx.conn
            .execute_batch(
                "SELECT 1; DROP TABLE index_state; \
                 DROP TRIGGER content_inodes_ins; DROP TRIGGER content_inodes_del; DROP TRIGGER content_inodes_upd;",
            )
            .unwrap();
        let v1 = idx.content_digest_v1().unwrap();
        assert_eq!(idx.content_digest().unwrap(), v1);
        idx.commit(true).unwrap();
        drop(idx);
        let idx = open(&dir);
        assert_eq!(idx.content_digest().unwrap(), v1, "the upgrade changed it");
        idx.conn
            .execute("UPDATE inodes SET mtime_s = mtime_s + 1", [])
            .unwrap();
        let d = idx.content_digest().unwrap();
        assert_ne!(d, v1);
        idx.conn
            .execute("UPDATE inodes SET mtime_s = mtime_s - 1", [])
            .unwrap();
        assert_eq!(idx.content_digest().unwrap(), v1);
    }
}

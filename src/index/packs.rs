//! The pack tables: `packs` (one row per pack object and its state),
//! `placements` (which backend holds a durable copy) and the eviction flags
//! of the local cache.

use super::*;

impl Index {
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

    /// The recorded size of the stored pack named `name` (what a download
    /// of it may be at most).
    pub fn pack_size_by_name(&self, name: &[u8; 16]) -> Result<Option<u64>, IndexError> {
        let size: Option<i64> = self
            .conn
            .prepare_cached("SELECT size FROM packs WHERE name = ?1 AND size > 0")?
            .query_row(params![&name[..]], |r| r.get(0))
            .optional()?;
        Ok(size.map(|s| s as u64))
    }

    /// Up to `limit` stored packs ready for `backend` and not yet placed
    /// there, oldest first: (pack number, name, size). Ready: the pack is a
    /// size class (FORMAT.md §6), or another backend already holds it (a
    /// pack written before size classes, or a backend added later). The
    /// others are [`held_back_packs`](Self::held_back_packs).
    pub fn unplaced_packs(
        &self,
        backend: &str,
        limit: usize,
    ) -> Result<Vec<(u64, [u8; 16], u64)>, IndexError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT id, name, size FROM packs WHERE state = ?1 AND NOT EXISTS \
             (SELECT 1 FROM placements p WHERE p.pack = packs.id AND p.backend = ?2) \
             AND (size IN ({}) OR EXISTS (SELECT 1 FROM placements q WHERE q.pack = packs.id)) \
             ORDER BY id LIMIT ?3",
            size_class_list()
        ))?;
        let rows = st.query_map(params![PACK_STORED, backend, limit as i64], pack_row)?;
        collect_packs(rows)
    }

    /// Stored packs no backend holds whose size is not a size class (closed
    /// small by an fsync or the commit timer): they stay local until the
    /// sync engine coalesces them into size-class packs. Oldest first:
    /// (pack number, name, size).
    pub fn held_back_packs(&self) -> Result<Vec<(u64, [u8; 16], u64)>, IndexError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT id, name, size FROM packs WHERE state = ?1 AND size NOT IN ({}) \
             AND NOT EXISTS (SELECT 1 FROM placements p WHERE p.pack = packs.id) \
             AND NOT EXISTS (SELECT 1 FROM evicted e WHERE e.pack = packs.id) \
             ORDER BY id",
            size_class_list()
        ))?;
        let rows = st.query_map(params![PACK_STORED], pack_row)?;
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

    /// Records every stored pack as on `backend` (a restored or pulled
    /// index: a snapshot's manifest reaches a backend only after its packs).
    /// Returns the rows added.
    pub fn place_all_stored(&self, backend: &str) -> Result<u64, IndexError> {
        let now = Timestamp::now().sec;
        Ok(self.conn.execute(
            "INSERT OR IGNORE INTO placements (pack, backend, uploaded_s) \
             SELECT id, ?2, ?3 FROM packs WHERE state = ?1",
            params![PACK_STORED, backend, now],
        )? as u64)
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

    /// Whether any chunk of `pack` is still referenced by an extent.
    pub fn pack_has_live_chunks(&self, pack: u64) -> Result<bool, IndexError> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM chunks WHERE pack = ?1 AND refcount > 0)",
            params![pack as i64],
            |r| r.get(0),
        )?)
    }

    /// Forgets a pack that never reached the store, with its chunk rows
    /// (none of them referenced): the disk was full and its data was
    /// deleted before it could be written.
    pub fn forget_unstored_pack(&self, pack: u64) -> Result<(), IndexError> {
        self.conn
            .execute("DELETE FROM chunks WHERE pack = ?1", params![pack as i64])?;
        self.conn.execute(
            "DELETE FROM packs WHERE id = ?1 AND state != ?2",
            params![pack as i64, PACK_STORED],
        )?;
        Ok(())
    }
}

/// `1048576, 2097152, …`: the size classes as an SQL list.
fn size_class_list() -> String {
    crate::chunk::pack::SIZE_CLASSES
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

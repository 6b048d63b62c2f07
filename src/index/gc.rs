//! The index queries of garbage collection (`src/gc.rs` decides, these
//! read and write the rows). A child module of `index` so the SQL stays
//! next to the schema it depends on.

use rusqlite::{params, OptionalExtension};

use super::{chunk_from_blob, Index, IndexError, PACK_STORED};
use crate::chunk::seal::ChunkId;

/// How much of a stored pack is still referenced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackLiveness {
    pub pack: u64,
    pub name: [u8; 16],
    /// Size of the pack object.
    pub size: u64,
    /// Sum of `sealed_len` of chunks with refcount > 0.
    pub live_bytes: u64,
    pub live_chunks: u64,
    pub dead_chunks: u64,
}

/// One chunk row of a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackChunk {
    pub id: ChunkId,
    pub offset: u64,
    pub sealed_len: u32,
    pub plain_len: u32,
    pub refcount: i64,
}

/// A `gc_dead` row: a pack gone from the index whose objects may remain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcDeadPack {
    pub pack: u64,
    pub name: [u8; 16],
    pub after_generation: u64,
    pub size: u64,
}

/// What one kept state of the index (a remote snapshot generation or a
/// local index copy) can reference, told apart without opening it.
///
/// A pack row lives from its creation to `gc_mark_dead`, and pack numbers
/// only grow (`AUTOINCREMENT`), so a state references a collected pack
/// exactly when the pack was created before the state was taken
/// (`pack ≤ max_pack`) and collected after it (`generation < after_generation`;
/// every collecting step moves `meta.snapshot_generation` on first, see
/// [`Index::gc_next_generation`]). An unknown value is the conservative one:
/// a state with neither needs every collected pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotMark {
    /// `meta.snapshot_generation` of the state.
    pub generation: Option<u64>,
    /// The highest pack number allocated when it was taken.
    pub max_pack: Option<u64>,
}

impl SnapshotMark {
    /// Whether this state references the collected pack `dead`.
    pub fn needs(&self, dead: &GcDeadPack) -> bool {
        self.generation.is_none_or(|g| g < dead.after_generation)
            && self.max_pack.is_none_or(|m| m >= dead.pack)
    }
}

fn name_from_blob(b: Vec<u8>) -> rusqlite::Result<[u8; 16]> {
    b.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            16,
            rusqlite::types::Type::Blob,
            "pack name is not 16 bytes".into(),
        )
    })
}

const LIVENESS: &str = "SELECT p.id, p.name, p.size, \
     coalesce(sum(CASE WHEN c.refcount > 0 THEN c.sealed_len ELSE 0 END), 0), \
     coalesce(sum(c.refcount > 0), 0), coalesce(sum(c.refcount <= 0), 0) \
     FROM packs p LEFT JOIN chunks c ON c.pack = p.id WHERE p.state = ?1";

fn row_to_liveness(r: &rusqlite::Row) -> rusqlite::Result<PackLiveness> {
    Ok(PackLiveness {
        pack: r.get::<_, i64>(0)? as u64,
        name: name_from_blob(r.get(1)?)?,
        size: r.get::<_, i64>(2)? as u64,
        live_bytes: r.get::<_, i64>(3)? as u64,
        live_chunks: r.get::<_, i64>(4)? as u64,
        dead_chunks: r.get::<_, i64>(5)? as u64,
    })
}

impl Index {
    /// Liveness of every stored pack (packs still being assembled or
    /// written, `state` 0, are never candidates), oldest first.
    pub fn gc_liveness(&self) -> Result<Vec<PackLiveness>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached(&format!("{LIVENESS} GROUP BY p.id ORDER BY p.id"))?;
        let rows = st.query_map(params![PACK_STORED], row_to_liveness)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Liveness of one stored pack, `None` if it is not (or no longer) stored.
    pub fn gc_pack_liveness(&self, pack: u64) -> Result<Option<PackLiveness>, IndexError> {
        Ok(self
            .conn
            .prepare_cached(&format!("{LIVENESS} AND p.id = ?2 GROUP BY p.id"))?
            .query_row(params![PACK_STORED, pack as i64], row_to_liveness)
            .optional()?)
    }

    /// Every chunk row of a pack, in pack order.
    pub fn gc_pack_chunks(&self, pack: u64) -> Result<Vec<PackChunk>, IndexError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, offset, sealed_len, plain_len, refcount FROM chunks WHERE pack = ?1 ORDER BY offset",
        )?;
        let rows = st.query_map(params![pack as i64], |r| {
            Ok(PackChunk {
                id: chunk_from_blob(r.get(0)?)?,
                offset: r.get::<_, i64>(1)? as u64,
                sealed_len: r.get(2)?,
                plain_len: r.get(3)?,
                refcount: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Points a chunk row at a re-sealed copy in another pack (repack
    /// seals every chunk it moves afresh, so its sealed length changes).
    pub fn gc_move_resealed_chunk(
        &self,
        id: &ChunkId,
        pack: u64,
        offset: u64,
        sealed_len: u32,
    ) -> Result<(), IndexError> {
        self.conn
            .prepare_cached(
                "UPDATE chunks SET pack = ?2, offset = ?3, sealed_len = ?4 WHERE id = ?1",
            )?
            .execute(params![
                &id.0[..],
                pack as i64,
                offset as i64,
                sealed_len as i64
            ])?;
        Ok(())
    }

    /// Removes a pack none of whose chunks is referenced: its (dead) chunk
    /// rows, the pack row, its placements and eviction mark, and records it
    /// in `gc_dead`. Refuses (and changes nothing) if a chunk of the pack is
    /// referenced. The caller runs this inside [`Index::gc_atomically`].
    pub fn gc_mark_dead(&self, pack: u64, after_generation: u64) -> Result<bool, IndexError> {
        let row: Option<(Vec<u8>, i64)> = self
            .conn
            .prepare_cached("SELECT name, size FROM packs WHERE id = ?1")?
            .query_row(params![pack as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((name, size)) = row else {
            return Ok(false);
        };
        let live: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM chunks WHERE pack = ?1 AND refcount > 0")?
            .query_row(params![pack as i64], |r| r.get(0))?;
        if live > 0 {
            return Ok(false);
        }
        let c = &self.conn;
        c.prepare_cached("DELETE FROM chunks WHERE pack = ?1")?
            .execute(params![pack as i64])?;
        c.prepare_cached("DELETE FROM packs WHERE id = ?1")?
            .execute(params![pack as i64])?;
        c.prepare_cached("DELETE FROM placements WHERE pack = ?1")?
            .execute(params![pack as i64])?;
        c.prepare_cached("DELETE FROM evicted WHERE pack = ?1")?
            .execute(params![pack as i64])?;
        c.prepare_cached(
            "INSERT OR REPLACE INTO gc_dead (pack, name, after_generation, size) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![pack as i64, name, after_generation as i64, size])?;
        Ok(true)
    }

    /// Registers a pack that is already complete and durable in the store.
    pub fn gc_insert_stored_pack(&self, name: &[u8; 16], size: u64) -> Result<u64, IndexError> {
        let pack = self.create_pack(name)?;
        self.mark_pack_stored(pack, size)?;
        Ok(pack)
    }

    /// `meta.snapshot_generation` (written by the snapshot code; 0 if absent).
    pub fn snapshot_generation(&self) -> Result<u64, IndexError> {
        let v: Option<i64> = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = 'snapshot_generation'")?
            .query_row([], |r| r.get(0))
            .optional()?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    /// Moves `meta.snapshot_generation` on by one and returns the new value:
    /// the `after_generation` of the packs a collecting step marks dead. A
    /// state taken before the step has a lower generation, one taken after
    /// it this one or higher, so [`SnapshotMark::needs`] tells them apart
    /// even without remote snapshots (local index copies).
    pub fn gc_next_generation(&self) -> Result<u64, IndexError> {
        let g = self.snapshot_generation()? + 1;
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('snapshot_generation', ?1)",
            )?
            .execute(params![g as i64])?;
        Ok(g)
    }

    /// The highest pack number ever allocated (0 before the first pack).
    pub fn max_pack_number(&self) -> Result<u64, IndexError> {
        let v: Option<i64> = self
            .conn
            .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'packs'")?
            .query_row([], |r| r.get(0))
            .optional()?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    /// This index's own mark: what a copy of it taken now references.
    pub fn snapshot_mark(&self) -> Result<SnapshotMark, IndexError> {
        Ok(SnapshotMark {
            generation: Some(self.snapshot_generation()?),
            max_pack: Some(self.max_pack_number()?),
        })
    }

    /// `gc_dead` rows with `after_generation ≤ max_generation` (all rows
    /// with `u64::MAX`).
    pub fn gc_dead(&self, max_generation: u64) -> Result<Vec<GcDeadPack>, IndexError> {
        let max = i64::try_from(max_generation).unwrap_or(i64::MAX);
        let mut st = self.conn.prepare_cached(
            "SELECT pack, name, after_generation, size FROM gc_dead WHERE after_generation <= ?1 ORDER BY pack",
        )?;
        let rows = st.query_map(params![max], |r| {
            Ok(GcDeadPack {
                pack: r.get::<_, i64>(0)? as u64,
                name: name_from_blob(r.get(1)?)?,
                after_generation: r.get::<_, i64>(2)? as u64,
                size: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets a `gc_dead` row (its objects are gone everywhere).
    pub fn gc_drop_dead(&self, pack: u64) -> Result<(), IndexError> {
        self.conn
            .prepare_cached("DELETE FROM gc_dead WHERE pack = ?1")?
            .execute(params![pack as i64])?;
        Ok(())
    }

    /// Names of every pack the index knows (any state, and collected packs
    /// a kept state may still need): a file in the store with another name
    /// is a leftover.
    pub fn gc_known_pack_names(&self) -> Result<std::collections::HashSet<[u8; 16]>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT name FROM packs UNION SELECT name FROM gc_dead")?;
        let rows = st.query_map([], |r| name_from_blob(r.get(0)?))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Drops placements of packs that no longer exist (an upload that
    /// finished after its pack was collected).
    pub fn gc_drop_stale_placements(&self) -> Result<u64, IndexError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM placements WHERE pack NOT IN (SELECT id FROM packs)")?
            .execute([])?;
        Ok(n as u64)
    }

    /// Runs `f` as one all-or-nothing step inside the open batch (a
    /// savepoint): on error nothing `f` changed remains.
    pub fn gc_atomically<R, E: From<IndexError>>(
        &self,
        f: impl FnOnce(&Index) -> Result<R, E>,
    ) -> Result<R, E> {
        self.conn
            .execute_batch("SAVEPOINT gc_step")
            .map_err(|e| E::from(e.into()))?;
        match f(self) {
            Ok(r) => {
                self.conn
                    .execute_batch("RELEASE gc_step")
                    .map_err(|e| E::from(e.into()))?;
                Ok(r)
            }
            Err(e) => {
                let _ = self
                    .conn
                    .execute_batch("ROLLBACK TO gc_step; RELEASE gc_step");
                self.note_rollback();
                Err(e)
            }
        }
    }

    /// Sets `meta.snapshot_generation` (tests; the snapshot code owns it).
    #[cfg(test)]
    pub fn set_snapshot_generation(&self, generation: u64) -> Result<(), IndexError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('snapshot_generation', ?1)",
            params![generation as i64],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Index, SCHEMA_VERSION};
    use crate::vault::keys::MasterKey;

    /// gc's liveness scan must read only the covering index, in pack
    /// order: a look-up of each chunk row by id is what made gc take 36 s
    /// at a million files (0.95 s at 100,000).
    #[test]
    fn liveness_reads_only_the_covering_index() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::for_tests(0x12).subkeys().index;
        let idx = Index::open(&dir.path().join("index.sqlite"), &key, true).unwrap();
        let sql = format!(
            "EXPLAIN QUERY PLAN {} GROUP BY p.id ORDER BY p.id",
            super::LIVENESS
        );
        let mut st = idx.conn.prepare(&sql).unwrap();
        let plan: Vec<String> = st
            .query_map([1], |r| r.get::<_, String>(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert!(
            plan.iter()
                .any(|l| l.contains("USING COVERING INDEX chunks_by_pack_live")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|l| l.contains("TEMP B-TREE")), "{plan:?}");
    }

    #[test]
    fn schema_2_index_gains_gc_dead_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let key = MasterKey::for_tests(0x11).subkeys().index;
        let idx = Index::open(&path, &key, true).unwrap();
        // Make it a schema-2 index, as an older tresor left it.
        idx.conn
            .execute_batch("DROP TABLE gc_dead; UPDATE meta SET value = 2 WHERE key = 'schema';")
            .unwrap();
        idx.close().unwrap();
        let idx = Index::open(&path, &key, false).unwrap();
        let schema: i64 = idx
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(schema, SCHEMA_VERSION);
        assert_eq!(SCHEMA_VERSION, 3);
        assert!(idx.gc_dead(u64::MAX).unwrap().is_empty());
        assert_eq!(idx.snapshot_generation().unwrap(), 0, "absent = 0");
        idx.set_snapshot_generation(4).unwrap();
        assert_eq!(idx.snapshot_generation().unwrap(), 4);
    }

    #[test]
    fn a_mark_needs_exactly_the_packs_it_saw_alive() {
        use super::{GcDeadPack, SnapshotMark};
        let dead = |pack, after| GcDeadPack {
            pack,
            name: [0; 16],
            after_generation: after,
            size: 1,
        };
        let m = SnapshotMark {
            generation: Some(5),
            max_pack: Some(10),
        };
        assert!(m.needs(&dead(10, 6)), "created before, collected after");
        assert!(!m.needs(&dead(11, 6)), "created after the state");
        assert!(!m.needs(&dead(3, 5)), "collected before the state");
        let unknown = SnapshotMark {
            generation: None,
            max_pack: None,
        };
        assert!(unknown.needs(&dead(99, 1)), "unknown keeps everything");
    }
}

//! The data tables: `extents` (file ranges → chunks) and `chunks` (where a
//! sealed chunk lives, and its reference count, which extents keep exact).

use super::*;

impl Index {
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

    /// Bytes of a file backed by chunks (holes are not stored, so they
    /// count nothing): one range scan of the extents primary key.
    pub fn data_bytes(&self, ino: u64) -> Result<u64, IndexError> {
        Ok(self
            .conn
            .prepare_cached("SELECT coalesce(sum(length), 0) FROM extents WHERE ino = ?1")?
            .query_row(params![ino], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Calls `f` with a file's extents that end after `start`, in file
    /// order, until it returns false (one statement, rows read lazily: a
    /// seek in a huge file reads only the extents it passes).
    pub fn scan_extents_from(
        &self,
        ino: u64,
        start: u64,
        mut f: impl FnMut(&Extent) -> bool,
    ) -> Result<(), IndexError> {
        let lower = start.saturating_sub(MAX_EXTENT_LEN).min(i64::MAX as u64) as i64;
        let mut st = self.conn.prepare_cached(
            "SELECT offset, length, chunk, chunk_offset FROM extents \
             WHERE ino = ?1 AND offset >= ?2 ORDER BY offset",
        )?;
        let mut rows = st.query(params![ino, lower])?;
        while let Some(r) = rows.next()? {
            let e = Extent {
                offset: r.get::<_, i64>(0)? as u64,
                length: r.get::<_, i64>(1)? as u64,
                chunk: chunk_from_blob(r.get(2)?)?,
                chunk_offset: r.get::<_, i64>(3)? as u64,
            };
            if e.offset + e.length > start && !f(&e) {
                break;
            }
        }
        Ok(())
    }

    pub(super) fn adjust_refcount(&self, chunk: &ChunkId, delta: i64) -> Result<(), IndexError> {
        if delta < 0 {
            self.released
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.conn
            .prepare_cached("UPDATE chunks SET refcount = refcount + ?2 WHERE id = ?1")?
            .execute(params![&chunk.0[..], delta])?;
        Ok(())
    }

    pub(super) fn insert_extent_row(&self, ino: u64, e: &Extent) -> Result<(), IndexError> {
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

    pub(super) fn delete_extent_row(&self, ino: u64, offset: u64) -> Result<(), IndexError> {
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

    /// [`Self::chunk_location`] and the name of the pack it is in, in one
    /// query (the read path asks for both on every read).
    pub fn chunk_location_named(&self, id: &ChunkId) -> Result<Option<NamedLocation>, IndexError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT c.pack, c.offset, c.sealed_len, c.plain_len, coalesce(p.size, 0), p.name \
                 FROM chunks c LEFT JOIN packs p ON p.id = c.pack WHERE c.id = ?1",
            )?
            .query_row(params![&id.0[..]], |r| {
                let name: Option<Vec<u8>> = r.get(5)?;
                Ok((
                    ChunkLocation {
                        pack: r.get::<_, i64>(0)? as u64,
                        offset: r.get::<_, i64>(1)? as u64,
                        sealed_len: r.get(2)?,
                        plain_len: r.get(3)?,
                        pack_size: r.get::<_, i64>(4)? as u64,
                    },
                    name.and_then(|b| b.try_into().ok()),
                ))
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
}

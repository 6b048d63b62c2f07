//! The index queries of `fsck` (`src/maintenance/fsck/` decides, these read
//! and write the rows): whole-table reads for the checks and one statement
//! per repair. A child module of `index` so the SQL stays next to the schema
//! it depends on. Repairs run inside the open batch; the caller commits.

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::params;

use super::{FileKind, Index, IndexError};

/// An `inodes` row.
pub struct FsckInode {
    pub kind: FileKind,
    pub size: u64,
    pub nlink: u64,
}

/// A `dirents` row.
pub struct FsckDirent {
    pub id: i64,
    pub parent: u64,
    pub name: Vec<u8>,
    pub ino: u64,
}

/// An `extents` row.
pub struct FsckExtent {
    pub ino: u64,
    pub offset: u64,
    pub length: u64,
    pub chunk: Vec<u8>,
    pub chunk_offset: u64,
}

/// A `chunks` row (its id is the key of [`FsckTables::chunks`]).
pub struct FsckChunk {
    pub pack: i64,
    pub plain_len: u64,
    pub refcount: i64,
}

/// A `packs` row (its id is the key of [`FsckTables::packs`]).
pub struct FsckPack {
    pub name: Vec<u8>,
    pub size: u64,
    pub state: i64,
}

/// Every table fsck looks at, whole.
pub struct FsckTables {
    /// `ino` → row.
    pub inodes: HashMap<u64, FsckInode>,
    /// In `id` order.
    pub dirents: Vec<FsckDirent>,
    /// Inodes with an `orphans` row.
    pub orphans: HashSet<u64>,
    /// Inodes with a `symlinks` row.
    pub symlinks: Vec<u64>,
    /// Inodes with at least one `xattrs` row.
    pub xattr_inodes: Vec<u64>,
    /// In `(ino, offset)` order.
    pub extents: Vec<FsckExtent>,
    /// Chunk id → row.
    pub chunks: HashMap<Vec<u8>, FsckChunk>,
    /// Pack id → row.
    pub packs: BTreeMap<i64, FsckPack>,
    /// `(pack, backend)` of every `placements` row.
    pub placements: Vec<(i64, String)>,
    /// Packs with an `evicted` row.
    pub evicted: HashSet<i64>,
}

impl Index {
    /// Reads every table fsck checks into memory.
    pub fn fsck_tables(&self) -> Result<FsckTables, IndexError> {
        let c = self.conn();
        let mut inodes = HashMap::new();
        let mut st = c.prepare("SELECT ino, mode, size, nlink FROM inodes")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, u32>(1)?,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
            ))
        })?;
        for row in rows {
            let (ino, mode, size, nlink) = row?;
            let kind = FileKind::from_mode(mode).unwrap_or(FileKind::Regular);
            inodes.insert(ino, FsckInode { kind, size, nlink });
        }
        let mut dirents = Vec::new();
        let mut st = c.prepare("SELECT id, parent, name, ino FROM dirents ORDER BY id")?;
        for row in st.query_map([], |r| {
            Ok(FsckDirent {
                id: r.get(0)?,
                parent: r.get::<_, i64>(1)? as u64,
                name: r.get(2)?,
                ino: r.get::<_, i64>(3)? as u64,
            })
        })? {
            dirents.push(row?);
        }
        let ids = |sql: &str| -> Result<Vec<u64>, IndexError> {
            let mut st = c.prepare(sql)?;
            let v = st
                .query_map([], |r| r.get::<_, i64>(0))?
                .collect::<Result<Vec<i64>, _>>()?;
            Ok(v.into_iter().map(|i| i as u64).collect())
        };
        let orphans = ids("SELECT ino FROM orphans")?.into_iter().collect();
        let symlinks = ids("SELECT ino FROM symlinks")?;
        let xattr_inodes = ids("SELECT DISTINCT ino FROM xattrs")?;
        let mut extents = Vec::new();
        let mut st = c.prepare(
            "SELECT ino, offset, length, chunk, chunk_offset FROM extents ORDER BY ino, offset",
        )?;
        for row in st.query_map([], |r| {
            Ok(FsckExtent {
                ino: r.get::<_, i64>(0)? as u64,
                offset: r.get::<_, i64>(1)? as u64,
                length: r.get::<_, i64>(2)? as u64,
                chunk: r.get(3)?,
                chunk_offset: r.get::<_, i64>(4)? as u64,
            })
        })? {
            extents.push(row?);
        }
        let mut chunks = HashMap::new();
        let mut st = c.prepare("SELECT id, pack, plain_len, refcount FROM chunks")?;
        for row in st.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                FsckChunk {
                    pack: r.get(1)?,
                    plain_len: r.get::<_, i64>(2)? as u64,
                    refcount: r.get(3)?,
                },
            ))
        })? {
            let (id, row) = row?;
            chunks.insert(id, row);
        }
        let mut packs = BTreeMap::new();
        let mut st = c.prepare("SELECT id, name, size, state FROM packs")?;
        for row in st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                FsckPack {
                    name: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    state: r.get(3)?,
                },
            ))
        })? {
            let (id, row) = row?;
            packs.insert(id, row);
        }
        let mut placements = Vec::new();
        let mut st = c.prepare("SELECT pack, backend FROM placements")?;
        for row in st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))? {
            placements.push(row?);
        }
        let evicted = ids("SELECT pack FROM evicted")?
            .into_iter()
            .map(|p| p as i64)
            .collect();
        Ok(FsckTables {
            inodes,
            dirents,
            orphans,
            symlinks,
            xattr_inodes,
            extents,
            chunks,
            packs,
            placements,
            evicted,
        })
    }

    /// Runs one repair statement; returns the number of rows it changed.
    fn fsck_exec(&self, sql: &str, p: impl rusqlite::Params) -> Result<usize, IndexError> {
        Ok(self.conn().execute(sql, p)?)
    }

    /// Deletes the directory entry `id`.
    pub fn fsck_delete_dirent(&self, id: i64) -> Result<usize, IndexError> {
        self.fsck_exec("DELETE FROM dirents WHERE id = ?1", params![id])
    }

    /// Deletes every directory entry naming `ino`.
    pub fn fsck_delete_dirents_of(&self, ino: u64) -> Result<usize, IndexError> {
        self.fsck_exec("DELETE FROM dirents WHERE ino = ?1", params![ino as i64])
    }

    /// Deletes the symlink target row of `ino`.
    pub fn fsck_delete_symlink_row(&self, ino: u64) -> Result<usize, IndexError> {
        self.fsck_exec("DELETE FROM symlinks WHERE ino = ?1", params![ino as i64])
    }

    /// Deletes the xattr rows of `ino`.
    pub fn fsck_delete_xattr_rows(&self, ino: u64) -> Result<usize, IndexError> {
        self.fsck_exec("DELETE FROM xattrs WHERE ino = ?1", params![ino as i64])
    }

    /// Deletes the extent rows of `ino`.
    pub fn fsck_delete_extent_rows(&self, ino: u64) -> Result<usize, IndexError> {
        self.fsck_exec("DELETE FROM extents WHERE ino = ?1", params![ino as i64])
    }

    /// Deletes the orphan row of `ino`.
    pub fn fsck_delete_orphan_row(&self, ino: u64) -> Result<usize, IndexError> {
        self.fsck_exec("DELETE FROM orphans WHERE ino = ?1", params![ino as i64])
    }

    /// Deletes the placement rows of pack `pack`.
    pub fn fsck_delete_placements(&self, pack: i64) -> Result<usize, IndexError> {
        self.fsck_exec("DELETE FROM placements WHERE pack = ?1", params![pack])
    }

    /// Deletes the evicted row of pack `pack`.
    pub fn fsck_delete_evicted(&self, pack: i64) -> Result<usize, IndexError> {
        self.fsck_exec("DELETE FROM evicted WHERE pack = ?1", params![pack])
    }

    /// Deletes the chunk rows of pack `pack`.
    pub fn fsck_delete_chunks_of_pack(&self, pack: i64) -> Result<usize, IndexError> {
        self.fsck_exec("DELETE FROM chunks WHERE pack = ?1", params![pack])
    }

    /// Deletes the chunk row `id`.
    pub fn fsck_delete_chunk(&self, id: &[u8]) -> Result<usize, IndexError> {
        self.fsck_exec("DELETE FROM chunks WHERE id = ?1", params![id])
    }

    /// Deletes the pack row `id`.
    pub fn fsck_delete_pack(&self, id: i64) -> Result<usize, IndexError> {
        self.fsck_exec("DELETE FROM packs WHERE id = ?1", params![id])
    }

    /// The name of pack row `id` (an error if there is no such row).
    pub fn fsck_pack_name(&self, id: i64) -> Result<Option<Vec<u8>>, IndexError> {
        Ok(self
            .conn()
            .query_row("SELECT name FROM packs WHERE id = ?1", params![id], |r| {
                r.get(0)
            })?)
    }

    /// Sets every chunk's refcount to the number of extents referencing it;
    /// returns how many changed.
    pub fn fsck_recompute_refcounts(&self) -> Result<usize, IndexError> {
        self.fsck_exec(
            "UPDATE chunks SET refcount = (SELECT count(*) FROM extents e WHERE e.chunk = chunks.id) \
             WHERE refcount != (SELECT count(*) FROM extents e WHERE e.chunk = chunks.id)",
            [],
        )
    }

    /// Sets the link count of every named non-directory to its number of
    /// directory entries; returns how many changed.
    pub fn fsck_recompute_file_nlinks(&self) -> Result<usize, IndexError> {
        self.fsck_exec(
            "UPDATE inodes SET nlink = (SELECT count(*) FROM dirents d WHERE d.ino = inodes.ino) \
             WHERE (mode & 61440) != 16384 AND EXISTS (SELECT 1 FROM dirents d WHERE d.ino = inodes.ino) \
             AND nlink != (SELECT count(*) FROM dirents d WHERE d.ino = inodes.ino)",
            [],
        )
    }

    /// Sets the link count of every directory to 2 + its subdirectories;
    /// returns how many changed.
    pub fn fsck_recompute_dir_nlinks(&self) -> Result<usize, IndexError> {
        self.fsck_exec(
            "UPDATE inodes SET nlink = 2 + (SELECT count(*) FROM dirents d JOIN inodes c ON c.ino = d.ino \
               WHERE d.parent = inodes.ino AND (c.mode & 61440) = 16384) \
             WHERE (mode & 61440) = 16384 \
             AND nlink != 2 + (SELECT count(*) FROM dirents d JOIN inodes c ON c.ino = d.ino \
               WHERE d.parent = inodes.ino AND (c.mode & 61440) = 16384)",
            [],
        )
    }
}

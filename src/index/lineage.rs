//! What hand-over between machines needs from the index: a digest of the
//! user-visible state (files, directories, links, xattrs, data extents) and
//! byte values in the meta table (the snapshot lineage).
//!
//! The digest leaves out everything a machine changes on its own after a
//! snapshot without the user writing anything — atimes, placements,
//! evictions, pack and gc bookkeeping, the meta table — so "the same digest
//! as the snapshot this index was captured as" means "nothing written here
//! since". Hashing a 100,000-file index takes a few hundred milliseconds
//! (see the hand-over numbers in docs/ARCHITECTURE.md).

use super::*;

const CONTEXT: &str = "tresor v1 index content digest";

impl Index {
    /// BLAKE3 over the user-visible tables in a fixed order: the content
    /// digest of indexes made before `digest.rs` (see there).
    pub(crate) fn content_digest_v1(&self) -> Result<[u8; 32], IndexError> {
        let mut h = blake3::Hasher::new_derive_key(CONTEXT);
        let mut feed = |sql: &str, cols: usize, tag: u8| -> Result<(), IndexError> {
            h.update(&[tag]);
            let mut st = self.conn.prepare_cached(sql)?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                for i in 0..cols {
                    match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Integer(v) => {
                            h.update(&[1]);
                            h.update(&v.to_le_bytes());
                        }
                        rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => {
                            h.update(&[2]);
                            h.update(&(b.len() as u64).to_le_bytes());
                            h.update(b);
                        }
                        rusqlite::types::ValueRef::Null => {
                            h.update(&[0]);
                        }
                        rusqlite::types::ValueRef::Real(f) => {
                            h.update(&[3]);
                            h.update(&f.to_le_bytes());
                        }
                    }
                }
            }
            Ok(())
        };
        feed(
            "SELECT ino, mode, uid, gid, size, nlink, rdev, mtime_s, mtime_ns, ctime_s, ctime_ns \
             FROM inodes ORDER BY ino",
            11,
            1,
        )?;
        feed(
            "SELECT parent, name, ino FROM dirents ORDER BY parent, name",
            3,
            2,
        )?;
        feed("SELECT ino, target FROM symlinks ORDER BY ino", 2, 3)?;
        feed(
            "SELECT ino, name, value FROM xattrs ORDER BY ino, name",
            3,
            4,
        )?;
        feed(
            "SELECT ino, offset, length, chunk, chunk_offset FROM extents ORDER BY ino, offset",
            5,
            5,
        )?;
        Ok(*h.finalize().as_bytes())
    }

    /// A byte meta value (`None` if absent).
    pub fn meta_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, IndexError> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row(params![key], |r| r.get::<_, Vec<u8>>(0))
            .optional()?)
    }

    /// Sets a byte meta value (joins the open batch).
    pub fn set_meta_bytes(&self, key: &str, value: &[u8]) -> Result<(), IndexError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
            .execute(params![key, value])?;
        Ok(())
    }

    /// Every stored pack's number and name.
    pub fn stored_pack_names(&self) -> Result<Vec<(u64, [u8; 16])>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, name FROM packs WHERE state = ?1")?;
        let rows = st.query_map(params![PACK_STORED], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (id, name) = r?;
            if let Ok(name) = name.try_into() {
                out.push((id, name));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_follows_content_not_bookkeeping() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::vault::keys::MasterKey::for_tests(1).subkeys().index;
        let idx = Index::open(&dir.path().join("i.sqlite"), &key, true).unwrap();
        let d0 = idx.content_digest().unwrap();
        idx.set_meta_u64("snapshot_generation", 7).unwrap();
        let p = idx.create_pack(&[1; 16]).unwrap();
        idx.mark_pack_stored(p, 100).unwrap();
        idx.add_placement(p, "b").unwrap();
        assert_eq!(idx.content_digest().unwrap(), d0, "bookkeeping changed it");
        idx.conn
            .execute("UPDATE inodes SET atime_s = atime_s + 5", [])
            .unwrap();
        assert_eq!(idx.content_digest().unwrap(), d0, "an atime changed it");
        idx.conn
            .execute("UPDATE inodes SET mtime_s = mtime_s + 5", [])
            .unwrap();
        assert_ne!(idx.content_digest().unwrap(), d0, "an mtime did not");
        assert_eq!(idx.meta_bytes("x").unwrap(), None);
        idx.set_meta_bytes("x", &[1, 2]).unwrap();
        assert_eq!(idx.meta_bytes("x").unwrap(), Some(vec![1, 2]));
        assert_eq!(idx.stored_pack_names().unwrap(), vec![(p, [1; 16])]);
    }
}

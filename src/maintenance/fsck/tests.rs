//! fsck against a real vault written through the filesystem core: each kind
//! of damage is injected with raw SQL (or by touching the store), then the
//! check must name it, `repair` must fix what is repairable, a second check
//! must be clean, and the files must still read back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::params;

use super::analyse::pack_path;
use super::*;
use crate::chunk::chunker::Chunker;
use crate::chunk::seal::ChunkSealer;
use crate::fs::{Caller, FsCore};
use crate::index::ROOT_INO;
use crate::store::packstore::PackStore;
use crate::store::Store;
use crate::vault::keys::MasterKey;

const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 0,
    umask: 0,
};

fn open_core(dir: &Path, master: &MasterKey, create: bool) -> FsCore {
    let sk = master.subkeys();
    let index = Index::open(&dir.join("index.sqlite"), &sk.index, create).expect("open index");
    let store = Arc::new(Store::open_local(&dir.join("store")).expect("open store"));
    let sealer = Arc::new(ChunkSealer::new(&sk));
    let chunker = Chunker::new(&sk.chunker);
    let packs = PackStore::new(store, sealer.clone(), sk.pack.clone());
    FsCore::new(index, packs, chunker, sealer, dir.join("store")).expect("open core")
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    let mut x = seed as u32 | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A vault with: /a (3 MiB), /d/b and its hard link /d/c (100 KiB),
/// /d/sub/e (1 KiB), /s -> a, an xattr on /a.
struct Fixture {
    dir: tempfile::TempDir,
    master: MasterKey,
    files: Vec<(&'static str, Vec<u8>)>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::for_tests(0x33);
        let core = open_core(dir.path(), &master, true);
        let write = |parent: u64, name: &str, bytes: &[u8]| -> u64 {
            let (a, _fh) = core.create(ROOT, parent, name.as_bytes(), 0o644).unwrap();
            core.write(a.ino, 0, bytes).unwrap();
            core.release(a.ino).unwrap();
            a.ino
        };
        let a = write(ROOT_INO, "a", &data(1, 3 << 20));
        let d = core.mkdir(ROOT, ROOT_INO, b"d", 0o755).unwrap().ino;
        let b = write(d, "b", &data(2, 100 << 10));
        core.link(b, d, b"c").unwrap();
        let sub = core.mkdir(ROOT, d, b"sub", 0o755).unwrap().ino;
        write(sub, "e", &data(3, 1024));
        core.symlink(ROOT, ROOT_INO, b"s", b"a").unwrap();
        core.setxattr(ROOT, a, b"user.k", b"v", 0).unwrap();
        core.shutdown().unwrap();
        drop(core);
        Fixture {
            dir,
            master,
            files: vec![
                ("a", data(1, 3 << 20)),
                ("d/b", data(2, 100 << 10)),
                ("d/c", data(2, 100 << 10)),
                ("d/sub/e", data(3, 1024)),
            ],
        }
    }

    fn index(&self) -> Index {
        Index::open(
            &self.dir.path().join("index.sqlite"),
            &self.master.subkeys().index,
            false,
        )
        .unwrap()
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn check(&self, idx: &Index) -> Report {
        check(idx, &self.store()).unwrap()
    }

    /// Repairs, then asserts a second check is clean and every file reads
    /// back (through a fresh core, as a mount would) unless it was moved.
    fn repair_and_verify(&self, idx: Index, moved: &[&str]) -> Vec<String> {
        let done = repair(&idx, &self.store()).unwrap();
        let after = self.check(&idx);
        assert!(
            after.is_clean(),
            "not clean after repair ({done:?}): {:#?}",
            after.findings
        );
        idx.close().unwrap();
        let core = open_core(self.dir.path(), &self.master, false);
        for (path, want) in &self.files {
            if moved.contains(path) {
                continue;
            }
            let ino = {
                let mut ino = ROOT_INO;
                for part in path.split('/') {
                    ino = core.lookup(ino, part.as_bytes()).unwrap().ino;
                }
                ino
            };
            let got = core.read(ino, 0, want.len() as u32 + 10).unwrap();
            assert!(got == *want, "{path}: content differs after repair");
        }
        core.shutdown().unwrap();
        done
    }
}

fn ino_of(idx: &Index, path: &str) -> u64 {
    idx.resolve(path.as_bytes()).unwrap().unwrap()
}

fn exec(idx: &Index, sql: &str, p: impl rusqlite::Params) {
    idx.conn().execute(sql, p).unwrap();
}

fn classes(r: &Report) -> Vec<Class> {
    r.findings.keys().copied().collect()
}

/// One chunk of /a (a 3 MiB file has several).
fn a_chunk(idx: &Index) -> Vec<u8> {
    let a = ino_of(idx, "a");
    idx.conn()
        .query_row(
            "SELECT chunk FROM extents WHERE ino = ?1 ORDER BY offset LIMIT 1",
            params![a as i64],
            |r| r.get(0),
        )
        .unwrap()
}

fn pack_file_of(idx: &Index, chunk: &[u8]) -> (i64, String) {
    let (pack, name): (i64, Vec<u8>) = idx
        .conn()
        .query_row(
            "SELECT p.id, p.name FROM chunks c JOIN packs p ON p.id = c.pack WHERE c.id = ?1",
            params![chunk],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    (pack, pack_path(&name).unwrap())
}

#[test]
fn a_fresh_vault_is_clean() {
    let f = Fixture::new();
    let idx = f.index();
    let r = f.check(&idx);
    assert!(r.is_clean(), "{:#?}", r.findings);
    assert!(r.inodes >= 7 && r.extents > 0 && r.packs > 0 && r.pack_files > 0);
    assert_eq!(r.pending_orphans, 0);
}

#[test]
fn counts_are_detected_and_recomputed() {
    let f = Fixture::new();
    let idx = f.index();
    let chunk = a_chunk(&idx);
    exec(
        &idx,
        "UPDATE chunks SET refcount = refcount + 5 WHERE id = ?1",
        params![chunk],
    );
    exec(
        &idx,
        "UPDATE inodes SET nlink = 7 WHERE ino = ?1",
        params![ino_of(&idx, "d/b") as i64],
    );
    exec(
        &idx,
        "UPDATE inodes SET nlink = 9 WHERE ino = ?1",
        params![ino_of(&idx, "d") as i64],
    );
    let r = f.check(&idx);
    assert_eq!(
        classes(&r),
        vec![Class::RefcountMismatch, Class::NlinkMismatch],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.findings[&Class::NlinkMismatch].count, 2);
    assert!(r.findings[&Class::NlinkMismatch].examples[0].contains("/d"));
    assert!(!r.has_damage());
    let done = f.repair_and_verify(idx, &[]);
    assert!(
        done.iter().any(|d| d.contains("refcount of 1 chunk")),
        "{done:?}"
    );
    assert!(
        done.iter().any(|d| d.contains("link count of 2 inode")),
        "{done:?}"
    );
    let idx = f.index();
    let nlink: i64 = idx
        .conn()
        .query_row(
            "SELECT nlink FROM inodes WHERE ino = ?1",
            params![ino_of(&idx, "d/b") as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(nlink, 2);
}

#[test]
fn dangling_rows_are_detected_and_dropped() {
    let f = Fixture::new();
    let idx = f.index();
    let a = ino_of(&idx, "a");
    let chunk = a_chunk(&idx);
    exec(
        &idx,
        "INSERT INTO dirents (parent, name, ino) VALUES (1, x'67686f7374', 9999)",
        [],
    );
    exec(
        &idx,
        "INSERT INTO dirents (parent, name, ino) VALUES (?1, x'78', ?2)",
        params![a as i64, ino_of(&idx, "d/sub/e") as i64],
    );
    exec(
        &idx,
        "INSERT INTO symlinks (ino, target) VALUES (9998, x'78')",
        [],
    );
    exec(
        &idx,
        "INSERT INTO xattrs (ino, name, value) VALUES (9997, x'78', x'78')",
        [],
    );
    exec(
        &idx,
        "INSERT INTO extents (ino, offset, length, chunk, chunk_offset) VALUES (9996, 0, 10, ?1, 0)",
        params![chunk],
    );
    exec(
        &idx,
        "INSERT INTO orphans (ino) VALUES (?1)",
        params![a as i64],
    );
    exec(&idx, "INSERT INTO orphans (ino) VALUES (9995)", []);
    exec(
        &idx,
        "INSERT INTO placements (pack, backend, uploaded_s) VALUES (999, 'x', 0)",
        [],
    );
    exec(&idx, "INSERT INTO evicted (pack) VALUES (999)", []);
    exec(
        &idx,
        "INSERT INTO chunks (id, pack, offset, sealed_len, plain_len, refcount) VALUES (randomblob(32), 999, 0, 10, 10, 0)",
        [],
    );
    exec(
        &idx,
        "INSERT INTO packs (name, size, state) VALUES (randomblob(16), 0, 0)",
        [],
    );
    let r = f.check(&idx);
    for c in [
        Class::DirentMissingInode,
        Class::DirentBadParent,
        Class::DanglingSymlinkRow,
        Class::DanglingXattrRow,
        Class::DanglingExtentRow,
        Class::DanglingOrphanRow,
        Class::DanglingPlacementRow,
        Class::DanglingEvictedRow,
        Class::DanglingChunkRow,
        Class::UnstoredPackRow,
        // the extent row for inode 9996 references a chunk of /a
        Class::RefcountMismatch,
    ] {
        assert!(
            r.findings.contains_key(&c),
            "{c:?} not found: {:#?}",
            r.findings
        );
    }
    assert_eq!(r.findings[&Class::DanglingOrphanRow].count, 2);
    assert!(!r.has_damage(), "{:#?}", r.findings);
    f.repair_and_verify(idx, &[]);
    // the linked file in `orphans` must survive the next mount: checked by
    // repair_and_verify's reads through a fresh core
}

#[test]
fn unreachable_inodes_and_cycles_go_to_lost_and_found() {
    let f = Fixture::new();
    let idx = f.index();
    let a = ino_of(&idx, "a");
    let d = ino_of(&idx, "d");
    let sub = ino_of(&idx, "d/sub");
    // /a loses its name (nlink stays 1): unreachable
    exec(
        &idx,
        "DELETE FROM dirents WHERE ino = ?1",
        params![a as i64],
    );
    // /d becomes a child of its own child: a cycle cut off from the root
    exec(
        &idx,
        "UPDATE dirents SET parent = ?1 WHERE ino = ?2",
        params![sub as i64, d as i64],
    );
    let r = f.check(&idx);
    assert!(
        r.findings.contains_key(&Class::UnreachableInode),
        "{:#?}",
        r.findings
    );
    assert!(
        r.findings.contains_key(&Class::DetachedDirectory),
        "{:#?}",
        r.findings
    );
    assert_eq!(r.findings[&Class::UnreachableInode].count, 1);
    assert!(!r.has_damage());
    let done = f.repair_and_verify(idx, &["a", "d/b", "d/c", "d/sub/e"]);
    assert!(done.iter().any(|d| d.contains("/lost+found/#")), "{done:?}");
    let idx = f.index();
    let lf = ino_of(&idx, "lost+found");
    let moved_a = idx.lookup(lf, format!("#{a}").as_bytes()).unwrap();
    assert_eq!(moved_a, Some(a), "/a is not in /lost+found");
    // the cycle was cut at the lower-numbered directory; the rest hangs off it
    let e = ino_of(&idx, &format!("lost+found/#{d}/sub/e"));
    assert_eq!(
        String::from_utf8_lossy(&idx.path_of(e).unwrap()),
        format!("/lost+found/#{d}/sub/e")
    );
    let core_check = f.check(&idx);
    assert!(core_check.is_clean());
    let mode: u32 = idx.attr(lf).unwrap().unwrap().perm;
    assert_eq!(mode, 0o700);
}

#[test]
fn pending_orphans_are_not_inconsistencies() {
    let f = Fixture::new();
    let idx = f.index();
    let a = ino_of(&idx, "a");
    exec(
        &idx,
        "DELETE FROM dirents WHERE ino = ?1",
        params![a as i64],
    );
    exec(
        &idx,
        "UPDATE inodes SET nlink = 0 WHERE ino = ?1",
        params![a as i64],
    );
    exec(
        &idx,
        "INSERT INTO orphans (ino) VALUES (?1)",
        params![a as i64],
    );
    let r = f.check(&idx);
    assert!(r.is_clean(), "{:#?}", r.findings);
    assert_eq!(r.pending_orphans, 1);
    let done = f.repair_and_verify(idx, &["a"]);
    assert!(
        done.iter().any(|d| d.contains("unlinked while open")),
        "{done:?}"
    );
    let idx = f.index();
    assert!(idx.attr(a).unwrap().is_none());
}

#[test]
fn symlink_without_target_is_removed() {
    let f = Fixture::new();
    let idx = f.index();
    exec(&idx, "DELETE FROM symlinks", []);
    let r = f.check(&idx);
    assert_eq!(classes(&r), vec![Class::SymlinkWithoutTarget]);
    assert_eq!(
        r.findings[&Class::SymlinkWithoutTarget].examples,
        vec!["/s"]
    );
    f.repair_and_verify(idx, &[]);
    assert!(f.index().resolve(b"s").unwrap().is_none());
}

#[test]
fn extents_past_the_size_are_trimmed() {
    let f = Fixture::new();
    let idx = f.index();
    let a = ino_of(&idx, "a");
    exec(
        &idx,
        "UPDATE inodes SET size = 1000 WHERE ino = ?1",
        params![a as i64],
    );
    let r = f.check(&idx);
    assert_eq!(
        classes(&r),
        vec![Class::ExtentBeyondSize],
        "{:#?}",
        r.findings
    );
    let done = repair(&idx, &f.store()).unwrap();
    assert!(done.iter().any(|d| d.contains("trimmed")), "{done:?}");
    let r = f.check(&idx);
    assert!(r.is_clean(), "{:#?}", r.findings);
    let total: i64 = idx
        .conn()
        .query_row(
            "SELECT sum(offset + length) - min(offset) FROM extents WHERE ino = ?1",
            params![a as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(total, 1000);
}

#[test]
fn leftover_pack_files_are_deleted() {
    let f = Fixture::new();
    let left = f
        .store()
        .join("packs/ff/ff00112233445566778899aabbccddee.pack");
    std::fs::create_dir_all(left.parent().unwrap()).unwrap();
    std::fs::write(&left, b"half a pack").unwrap();
    let tmp = f.store().join("packs/ff/.x.pack.1.2.tmp");
    std::fs::write(&tmp, b"temp").unwrap();
    let idx = f.index();
    let r = f.check(&idx);
    assert_eq!(classes(&r), vec![Class::LeftoverPackFile]);
    assert_eq!(r.findings[&Class::LeftoverPackFile].count, 2);
    assert!(
        r.is_clean() && !r.is_empty(),
        "leftovers are not inconsistencies"
    );
    f.repair_and_verify(idx, &[]);
    assert!(f.check(&f.index()).is_empty());
    assert!(!left.exists() && !tmp.exists());
}

#[test]
fn missing_pack_is_damage_and_names_the_files() {
    let f = Fixture::new();
    let idx = f.index();
    let (_, file) = pack_file_of(&idx, &a_chunk(&idx));
    std::fs::remove_file(f.store().join(&file)).unwrap();
    let r = f.check(&idx);
    assert!(
        r.findings.contains_key(&Class::PackMissing),
        "{:#?}",
        r.findings
    );
    assert!(r.has_damage());
    assert!(r.damaged_files.contains("/a"), "{:?}", r.damaged_files);
    // repair leaves the damage (and the rows: reads fail, never zeros)
    repair(&idx, &f.store()).unwrap();
    let r = f.check(&idx);
    assert!(r.has_damage());
    assert!(r.damaged_files.contains("/a"));
    assert!(idx.resolve(b"a").unwrap().is_some());
}

#[test]
fn missing_pack_placed_remotely_is_marked_evicted() {
    let f = Fixture::new();
    let idx = f.index();
    let (pack, file) = pack_file_of(&idx, &a_chunk(&idx));
    std::fs::remove_file(f.store().join(&file)).unwrap();
    idx.add_placement(pack as u64, "s3").unwrap();
    let r = f.check(&idx);
    assert_eq!(
        classes(&r),
        vec![Class::PackEvictedUnmarked],
        "{:#?}",
        r.findings
    );
    repair(&idx, &f.store()).unwrap();
    assert!(idx.is_evicted(pack as u64).unwrap());
    assert!(f.check(&idx).is_clean());
    // evicted and placed: fine. Evicted but back in the store: unmark.
    std::fs::write(f.store().join(&file), b"x").unwrap();
    let size: i64 = idx
        .conn()
        .query_row("SELECT size FROM packs WHERE id = ?1", params![pack], |r| {
            r.get(0)
        })
        .unwrap();
    std::fs::write(f.store().join(&file), vec![0u8; size as usize]).unwrap();
    let r = f.check(&idx);
    assert_eq!(
        classes(&r),
        vec![Class::EvictedButLocal],
        "{:#?}",
        r.findings
    );
    repair(&idx, &f.store()).unwrap();
    assert!(!idx.is_evicted(pack as u64).unwrap());
    assert!(f.check(&idx).is_clean());
}

#[test]
fn wrong_size_pack_is_damage_unless_a_backend_has_it() {
    let f = Fixture::new();
    let idx = f.index();
    let (pack, file) = pack_file_of(&idx, &a_chunk(&idx));
    let full = f.store().join(&file);
    let len = std::fs::metadata(&full).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&full)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let r = f.check(&idx);
    assert_eq!(classes(&r), vec![Class::PackWrongSize], "{:#?}", r.findings);
    assert!(r.damaged_files.contains("/a"));
    idx.add_placement(pack as u64, "s3").unwrap();
    let r = f.check(&idx);
    assert_eq!(
        classes(&r),
        vec![Class::PackWrongSizeRemoteOk],
        "{:#?}",
        r.findings
    );
    let done = repair(&idx, &f.store()).unwrap();
    assert!(done.iter().any(|d| d.contains("wrong size")), "{done:?}");
    assert!(!full.exists());
    assert!(idx.is_evicted(pack as u64).unwrap());
    assert!(f.check(&idx).is_clean());
}

#[test]
fn unmarked_stored_pack_is_marked() {
    let f = Fixture::new();
    let idx = f.index();
    let (pack, file) = pack_file_of(&idx, &a_chunk(&idx));
    exec(
        &idx,
        "UPDATE packs SET state = 0, size = 0 WHERE id = ?1",
        params![pack],
    );
    let r = f.check(&idx);
    assert_eq!(
        classes(&r),
        vec![Class::PackNotMarkedStored],
        "{:#?}",
        r.findings
    );
    f.repair_and_verify(idx, &[]);
    let idx = f.index();
    let size: i64 = idx
        .conn()
        .query_row("SELECT size FROM packs WHERE id = ?1", params![pack], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        size as u64,
        std::fs::metadata(f.store().join(file)).unwrap().len()
    );
}

#[test]
fn extent_damage_is_reported_with_paths() {
    let f = Fixture::new();
    let idx = f.index();
    let chunk = a_chunk(&idx);
    let b = ino_of(&idx, "d/b");
    // an extent of /d/b reaching past its chunk; one of /a without a chunk
    exec(
        &idx,
        "UPDATE extents SET chunk_offset = 1 << 30 WHERE ino = ?1",
        params![b as i64],
    );
    exec(&idx, "DELETE FROM chunks WHERE id = ?1", params![chunk]);
    // and two overlapping extents in /d/sub/e
    let e = ino_of(&idx, "d/sub/e");
    exec(
        &idx,
        "INSERT INTO extents (ino, offset, length, chunk, chunk_offset) \
         SELECT ino, 512, 10, chunk, 0 FROM extents WHERE ino = ?1",
        params![e as i64],
    );
    let r = f.check(&idx);
    for c in [
        Class::ExtentBeyondChunk,
        Class::ExtentWithoutChunk,
        Class::ExtentOverlap,
    ] {
        assert!(r.findings.contains_key(&c), "{c:?}: {:#?}", r.findings);
    }
    let files: Vec<&str> = r.damaged_files.iter().map(String::as_str).collect();
    assert_eq!(files, vec!["/a", "/d/b", "/d/sub/e"]);
    assert!(r.to_json()["damage"].as_bool().unwrap());
}

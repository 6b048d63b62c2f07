//! Garbage collection against a real core over a temp dir (no mount).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;
use crate::chunk::chunker::Chunker;
use crate::chunk::seal::ChunkSealer;
use crate::fs::{Caller, FsResult};
use crate::index::ROOT_INO;
use crate::store::packstore::PackStore;
use crate::store::Store;
use crate::vault::keys::MasterKey;

const MIB: usize = 1024 * 1024;
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

/// Deterministic incompressible bytes.
fn random_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

struct Vault {
    dir: tempfile::TempDir,
    master: MasterKey,
    core: Option<FsCore>,
}

impl Vault {
    fn new() -> Vault {
        let dir = tempfile::tempdir().expect("temp dir");
        let master = MasterKey::for_tests(0x6b);
        let core = open_core(dir.path(), &master, true);
        Vault {
            dir,
            master,
            core: Some(core),
        }
    }

    fn core(&self) -> &FsCore {
        self.core.as_ref().expect("core is open")
    }

    fn write_file(&self, name: &str, data: &[u8]) {
        let core = self.core();
        let (a, _fh) = core
            .create(ROOT, ROOT_INO, name.as_bytes(), 0o644)
            .expect("create");
        for (i, piece) in data.chunks(MIB).enumerate() {
            core.write(a.ino, (i * MIB) as u64, piece).expect("write");
        }
        core.release(a.ino).expect("release");
    }

    fn read_file(&self, name: &str) -> Vec<u8> {
        let core = self.core();
        let a = core.lookup(ROOT_INO, name.as_bytes()).expect("lookup");
        let mut out = Vec::new();
        while (out.len() as u64) < a.size {
            let got = core
                .read(a.ino, out.len() as u64, 4 * MIB as u32)
                .expect("read");
            assert!(!got.is_empty(), "{name}: short read at {}", out.len());
            out.extend_from_slice(&got);
        }
        out
    }

    fn delete(&self, name: &str) {
        self.core()
            .unlink(ROOT_INO, name.as_bytes())
            .expect("unlink");
    }

    fn commit(&self) {
        self.core().commit(true).expect("commit");
    }

    /// As an unmount and a new mount (or a restart after a crash: every
    /// step of GC is committed, so the open batch holds nothing of it).
    fn remount(&mut self) {
        let core = self.core.take().expect("core is open");
        core.shutdown().expect("shutdown");
        drop(core);
        self.core = Some(open_core(self.dir.path(), &self.master, false));
    }

    fn liveness(&self) -> Vec<PackLiveness> {
        read_index(self.core(), |idx| idx.gc_liveness()).expect("liveness")
    }

    fn pack_files(&self) -> Vec<[u8; 16]> {
        let mut v: Vec<[u8; 16]> = self
            .core()
            .packs()
            .local_pack_files()
            .expect("list")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        v.sort();
        v
    }

    /// Packs with a `packs` row (collected packs excluded).
    fn known_packs(&self) -> Vec<[u8; 16]> {
        let dead: Vec<[u8; 16]> = read_index(self.core(), |idx| idx.gc_dead(u64::MAX))
            .expect("gc_dead")
            .into_iter()
            .map(|r| r.name)
            .collect();
        let mut v: Vec<[u8; 16]> = read_index(self.core(), |idx| idx.gc_known_pack_names())
            .expect("names")
            .into_iter()
            .filter(|n| !dead.contains(n))
            .collect();
        v.sort();
        v
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        if let Some(core) = self.core.take() {
            if !std::thread::panicking() {
                let _ = core.shutdown();
            }
        }
    }
}

fn local_opts() -> GcOptions {
    GcOptions::from_config(&GcConfig::default(), false)
}

fn pass(v: &dyn IndexAccess, opts: &GcOptions) -> GcReport {
    run_pass(v, opts, &mut |_, _| {}).expect("gc pass")
}

#[test]
fn liveness_counts_live_sealed_bytes_per_pack() {
    let v = Vault::new();
    let a = random_bytes("a", 6 * MIB);
    let b = random_bytes("b", 3 * MIB);
    v.write_file("a", &a);
    v.write_file("b", &b);
    v.commit();
    let before = v.liveness();
    assert_eq!(before.len(), 1, "one pack: {before:?}");
    let p = &before[0];
    assert_eq!(p.dead_chunks, 0);
    assert!(p.live_bytes > 9 * MIB as u64 && p.live_bytes < p.size);

    v.delete("a");
    let after = v.liveness();
    let q = &after[0];
    assert_eq!(q.pack, p.pack);
    assert!(q.dead_chunks > 0, "a's chunks are dead: {q:?}");
    assert!(
        q.live_bytes >= 3 * MIB as u64 && q.live_bytes < 4 * MIB as u64,
        "only b is live: {q:?}"
    );
    let (dead, stored) = dead_bytes(v.core()).expect("dead bytes");
    assert_eq!(stored, p.size);
    assert_eq!(dead, p.size - q.live_bytes);
}

#[test]
fn dead_pack_is_marked_and_deleted_in_one_step() {
    let v = Vault::new();
    v.write_file("keep", &random_bytes("keep", 2 * MIB));
    v.commit();
    v.write_file("gone", &random_bytes("gone", 5 * MIB));
    v.commit();
    let packs = v.liveness();
    assert_eq!(packs.len(), 2);
    let dead_pack = packs[1].clone();
    read_index(v.core(), |idx| idx.set_snapshot_generation(7)).expect("generation");
    v.delete("gone");
    v.commit();

    let dry = pass(
        v.core(),
        &GcOptions {
            dry_run: true,
            ..local_opts()
        },
    );
    assert_eq!(
        (dry.dead_packs, dry.bytes_reclaimed_local),
        (1, dead_pack.size)
    );
    assert_eq!(v.pack_files().len(), 2, "a dry run changes nothing");

    // With backends: the gc_dead row stays for the remote deletion.
    let r = pass(
        v.core(),
        &GcOptions {
            has_backends: true,
            ..local_opts()
        },
    );
    assert_eq!(r.dead_packs, 1);
    assert_eq!(r.bytes_reclaimed_local, dead_pack.size);
    assert_eq!(r.packs_awaiting_remote_deletion, 1);
    assert_eq!(r.bytes_awaiting_remote_deletion, dead_pack.size);
    let rows = read_index(v.core(), |idx| idx.gc_dead(u64::MAX)).expect("gc_dead");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].name, dead_pack.name);
    assert_eq!(rows[0].after_generation, 8, "snapshot_generation + 1");
    assert_eq!(
        v.pack_files(),
        v.known_packs(),
        "the dead pack's file is gone"
    );
    assert_eq!(v.liveness().len(), 1);
    let stats = read_index(v.core(), |idx| idx.stats()).expect("stats");
    assert_eq!(stats.chunks, stats.live_chunks, "dead chunk rows deleted");

    // Local-only: the rows go right after the local delete.
    pass(v.core(), &local_opts());
    assert!(read_index(v.core(), |idx| idx.gc_dead(u64::MAX))
        .expect("gc_dead")
        .is_empty());
    assert_eq!(v.read_file("keep"), random_bytes("keep", 2 * MIB));
}

#[test]
fn repack_moves_live_chunks_and_content_reads_back() {
    let mut v = Vault::new();
    let small = random_bytes("small", 3 * MIB);
    v.write_file("big", &random_bytes("big", 11 * MIB));
    v.write_file("small", &small);
    v.commit();
    let old = v.liveness();
    assert_eq!(old.len(), 1);
    v.delete("big");
    v.commit();

    let r = pass(v.core(), &local_opts());
    assert_eq!((r.repacked_packs, r.new_packs, r.dead_packs), (1, 1, 0));
    assert!(r.moved_chunks >= 1);
    let now = v.liveness();
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].name, old[0].name, "a new pack");
    assert_eq!(now[0].dead_chunks, 0);
    assert!(now[0].size < old[0].size / 2);
    assert_eq!(r.bytes_reclaimed_local, old[0].size - now[0].size);
    assert_eq!(v.pack_files(), v.known_packs());
    assert_eq!(v.read_file("small"), small);
    v.remount();
    assert_eq!(v.read_file("small"), small, "after a remount (cold cache)");
    // Nothing left to do.
    let again = pass(v.core(), &local_opts());
    assert_eq!(again.repacked_packs + again.dead_packs, 0);
}

/// Repack seals every chunk it moves afresh: no sealed byte of the new
/// pack's chunks appears in the old pack (a byte-for-byte copy would show
/// the provider exact chunk boundaries), and the chunk rows record the new
/// sealed lengths (the content reads back through them).
#[test]
fn repack_reseals_every_moved_chunk() {
    let mut v = Vault::new();
    let keep = random_bytes("keep", 3 * MIB);
    v.write_file("gone", &random_bytes("gone", 6 * MIB));
    v.write_file("keep", &keep);
    v.commit();
    let old = v.liveness();
    assert_eq!(old.len(), 1);
    let pack_path = |name: [u8; 16]| {
        v.dir
            .path()
            .join("store")
            .join(crate::chunk::pack::PackId(name).object_path())
    };
    let old_bytes = std::fs::read(pack_path(old[0].name)).unwrap();
    v.delete("gone");
    v.commit();
    let r = pass(v.core(), &local_opts());
    assert_eq!(r.repacked_packs, 1, "{r:?}");
    let now = v.liveness();
    let new_bytes = std::fs::read(pack_path(now[0].name)).unwrap();
    let moved = read_index(v.core(), |idx| idx.gc_pack_chunks(now[0].pack)).unwrap();
    assert!(moved.len() >= 2, "{} chunks moved", moved.len());
    for c in &moved {
        let sealed = &new_bytes[c.offset as usize..][..c.sealed_len as usize];
        assert_eq!(sealed[0], crate::chunk::segmented::VERSION_3);
        // Header nonce and the first segment's ciphertext.
        for probe in [&sealed[1..25], &sealed[400..464]] {
            assert!(
                !old_bytes.windows(probe.len()).any(|w| w == probe),
                "chunk {:?} was copied, not re-sealed",
                c.id
            );
        }
    }
    v.remount();
    assert_eq!(v.read_file("keep"), keep);
}

/// A vault wrapper that runs `before` just before the `n`-th committed
/// step, and can fail (a "crash") instead of or right after committing.
struct Injecting<'a> {
    core: &'a FsCore,
    step: AtomicUsize,
    at: usize,
    before: Box<dyn Fn(&FsCore) + Send + Sync + 'a>,
    crash: Crash,
}

#[derive(Clone, Copy, PartialEq)]
enum Crash {
    No,
    BeforeCommit,
    AfterCommit,
}

fn simulated_crash() -> FsError {
    FsError::from(IndexError::NotAnIndex("simulated crash".into()))
}

impl IndexAccess for Injecting<'_> {
    fn with_index(&self, f: &mut dyn FnMut(&Index)) {
        self.core.with_index(f)
    }
    fn with_checkpoint(&self, f: &mut dyn FnMut(&Index)) -> FsResult<()> {
        self.core.with_checkpoint(f)
    }
    fn locked_commit(&self, f: &mut dyn FnMut(&Index)) -> FsResult<()> {
        let n = self.step.fetch_add(1, Ordering::SeqCst);
        if n != self.at {
            return self.core.locked_commit(f);
        }
        (self.before)(self.core);
        match self.crash {
            Crash::No => self.core.locked_commit(f),
            Crash::BeforeCommit => Err(simulated_crash()),
            Crash::AfterCommit => {
                self.core.locked_commit(f)?;
                Err(simulated_crash())
            }
        }
    }
    fn pack_store(&self) -> &PackStore {
        self.core.packs()
    }
}

#[test]
fn chunk_revived_by_dedup_before_the_commit_is_not_deleted() {
    // Dead pack: its only file is deleted, then the same content is written
    // again after GC read the liveness but before it commits.
    let v = Vault::new();
    let data = random_bytes("phoenix", 4 * MIB);
    v.write_file("keep", &random_bytes("keep", MIB));
    v.commit();
    v.write_file("phoenix", &data);
    v.commit();
    v.delete("phoenix");
    v.commit();
    let before = v.liveness();
    assert_eq!(before[1].live_chunks, 0, "{before:?}");
    let inj = Injecting {
        core: v.core(),
        step: AtomicUsize::new(0),
        at: 0,
        before: Box::new(|core: &FsCore| {
            let (a, _) = core
                .create(ROOT, ROOT_INO, b"again", 0o644)
                .expect("create");
            let d = random_bytes("phoenix", 4 * MIB);
            for (i, p) in d.chunks(MIB).enumerate() {
                core.write(a.ino, (i * MIB) as u64, p).expect("write");
            }
            core.release(a.ino).expect("release");
        }),
        crash: Crash::No,
    };
    let r = pass(&inj, &local_opts());
    assert_eq!(r.dead_packs, 0, "the revived pack stays: {r:?}");
    let after = v.liveness();
    assert!(
        after
            .iter()
            .any(|p| p.name == before[1].name && p.live_chunks > 0),
        "{after:?}"
    );
    assert_eq!(v.read_file("again"), data);
    let stats = read_index(v.core(), |idx| idx.stats()).expect("stats");
    assert_eq!(stats.chunks, stats.live_chunks);
}

#[test]
fn chunk_revived_during_a_repack_keeps_the_old_pack() {
    let v = Vault::new();
    let small = random_bytes("small2", 2 * MIB);
    let big = random_bytes("big2", 11 * MIB);
    v.write_file("big", &big);
    v.write_file("small", &small);
    v.commit();
    v.delete("big");
    v.commit();
    let before = v.liveness();
    let inj = Injecting {
        core: v.core(),
        step: AtomicUsize::new(0),
        at: 0,
        before: Box::new(|core: &FsCore| {
            let (a, _) = core.create(ROOT, ROOT_INO, b"big", 0o644).expect("create");
            let d = random_bytes("big2", 11 * MIB);
            for (i, p) in d.chunks(MIB).enumerate() {
                core.write(a.ino, (i * MIB) as u64, p).expect("write");
            }
            core.release(a.ino).expect("release");
        }),
        crash: Crash::No,
    };
    let r = pass(&inj, &local_opts());
    assert_eq!(r.repacked_packs, 0, "{r:?}");
    assert!(v.liveness().iter().any(|p| p.name == before[0].name));
    assert_eq!(
        v.pack_files(),
        v.known_packs(),
        "the unused copy was deleted"
    );
    assert_eq!(v.read_file("big"), big);
    assert_eq!(v.read_file("small"), small);
}

#[test]
fn interrupted_repack_loses_nothing_and_resumes() {
    for crash in [Crash::BeforeCommit, Crash::AfterCommit] {
        let mut v = Vault::new();
        let small = random_bytes("small3", 3 * MIB);
        v.write_file("big", &random_bytes("big3", 10 * MIB));
        v.write_file("small", &small);
        v.commit();
        v.delete("big");
        v.commit();
        let inj = Injecting {
            core: v.core(),
            step: AtomicUsize::new(0),
            at: 0,
            before: Box::new(|_: &FsCore| {}),
            crash,
        };
        assert!(run_pass(&inj, &local_opts(), &mut |_, _| {}).is_err());
        drop(inj);
        // Either the new pack or the old one is a file without a row now.
        assert_eq!(v.pack_files().len(), 2);
        assert_eq!(v.known_packs().len(), 1);
        v.remount();
        assert_eq!(v.read_file("small"), small);
        let r = pass(v.core(), &local_opts());
        if crash == Crash::BeforeCommit {
            // The new pack has no row: a leftover.
            assert_eq!(r.leftover_files, 1, "{r:?}");
            assert_eq!(r.repacked_packs, 1, "the repack resumes: {r:?}");
        } else {
            // The old pack is collected (a `gc_dead` row): released as such.
            assert_eq!(r.leftover_files, 0, "{r:?}");
            assert!(r.bytes_reclaimed_local > 0, "{r:?}");
        }
        assert_eq!(v.pack_files(), v.known_packs());
        assert_eq!(v.pack_files().len(), 1);
        assert_eq!(v.read_file("small"), small);
        v.remount();
        assert_eq!(v.read_file("small"), small);
    }
}

#[test]
fn corrupt_chunk_is_reported_and_its_pack_left_alone() {
    let v = Vault::new();
    let small = random_bytes("small4", 2 * MIB);
    v.write_file("big", &random_bytes("big4", 11 * MIB));
    v.write_file("small", &small);
    v.commit();
    v.delete("big");
    v.commit();
    let p = v.liveness()[0].clone();
    let chunks = read_index(v.core(), |idx| idx.gc_pack_chunks(p.pack)).expect("chunks");
    let live = chunks
        .iter()
        .find(|c| c.refcount > 0)
        .expect("a live chunk");
    // Flip one byte of a live chunk in the pack file.
    let path = v
        .dir
        .path()
        .join("store")
        .join(PackId(p.name).object_path());
    let mut bytes = std::fs::read(&path).expect("read pack");
    bytes[(live.offset + 40) as usize] ^= 1;
    std::fs::write(&path, &bytes).expect("write pack");
    let r = pass(v.core(), &local_opts());
    assert_eq!(r.repacked_packs, 0);
    assert_eq!(r.corrupt.len(), 1, "{r:?}");
    assert!(r.corrupt[0].contains(&live.id.to_hex()), "{r:?}");
    assert_eq!(v.liveness()[0].name, p.name, "pack left alone");
    assert_eq!(
        v.pack_files(),
        v.known_packs(),
        "the new pack was never written"
    );
}

#[test]
fn remote_objects_go_only_after_a_durable_snapshot() {
    let v = Vault::new();
    v.write_file("keep", &random_bytes("keep5", MIB));
    v.commit();
    v.write_file("gone", &random_bytes("gone5", 2 * MIB));
    v.commit();
    let dead = v.liveness()[1].clone();
    let path = PackId(dead.name).object_path();
    // Two "backends": fs operators in temp dirs holding the pack.
    let runtime = Arc::new(crate::store::new_runtime("gc-test").expect("runtime"));
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let stores: Vec<Store> = dirs
        .iter()
        .map(|d| {
            let op = opendal::Operator::new(
                opendal::services::Fs::default().root(&d.path().to_string_lossy()),
            )
            .expect("fs operator");
            Store::remote(op, runtime.clone())
        })
        .collect();
    let local = std::fs::read(v.dir.path().join("store").join(&path)).expect("pack");
    for s in &stores {
        s.write(&path, local.clone().into()).expect("upload");
    }
    read_index(v.core(), |idx| idx.set_snapshot_generation(3)).expect("generation");
    // Snapshot 3 is taken now: it references both packs.
    let snap3 = read_index(v.core(), |idx| idx.snapshot_mark()).expect("mark");
    // A state taken before "gone" was written does not reference its pack.
    let older = crate::index::SnapshotMark {
        generation: Some(2),
        max_pack: Some(dead.pack - 1),
    };
    v.delete("gone");
    v.commit();
    let r = pass(
        v.core(),
        &GcOptions {
            has_backends: true,
            ..local_opts()
        },
    );
    assert_eq!(r.dead_packs, 1);
    let backends: Vec<(String, &Store)> = stores
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("b{i}"), s))
        .collect();
    // Snapshot 3 (taken before the pack died) still needs it; unknown
    // kept states (a backend not listed) keep everything.
    for kept in [Some(&[older, snap3][..]), None] {
        let d =
            crate::remote::deletion::delete_collected(v.core(), &backends, kept).expect("delete");
        assert_eq!(d, crate::remote::deletion::RemoteDeletion::default());
    }
    for s in &stores {
        assert!(s.size_of(&path).unwrap().is_some(), "kept for snapshot 3");
    }
    // One backend already lost it (an interrupted earlier run): still fine.
    // Snapshot 3 is forgotten; the older state never saw the pack, and a
    // state taken after the collection does not reference it.
    stores[0].delete(&path).expect("delete one");
    let now = read_index(v.core(), |idx| idx.snapshot_mark()).expect("mark");
    let d = crate::remote::deletion::delete_collected(v.core(), &backends, Some(&[older, now]))
        .expect("delete");
    assert_eq!(
        d,
        crate::remote::deletion::RemoteDeletion {
            packs: 1,
            bytes: dead.size,
            protected: Vec::new(),
        }
    );
    for s in &stores {
        assert!(s.size_of(&path).unwrap().is_none(), "deleted everywhere");
    }
    assert!(read_index(v.core(), |idx| idx.gc_dead(u64::MAX))
        .expect("rows")
        .is_empty());
    // Idempotent.
    let d = crate::remote::deletion::delete_collected(v.core(), &backends, Some(&[]))
        .expect("delete again");
    assert_eq!(d.packs, 0);
    assert_eq!(v.read_file("keep"), random_bytes("keep5", MIB));
}

#[test]
fn content_written_again_after_its_pack_was_collected_is_stored_again() {
    let v = Vault::new();
    let data = random_bytes("lazarus", 3 * MIB);
    v.write_file("a", &data);
    v.commit();
    v.delete("a");
    v.commit();
    let r = pass(v.core(), &local_opts());
    assert_eq!(r.dead_packs, 1);
    v.write_file("b", &data);
    v.commit();
    assert_eq!(v.read_file("b"), data);
    let stats = read_index(v.core(), |idx| idx.stats()).expect("stats");
    assert_eq!(stats.chunks, stats.live_chunks);
    assert!(stats.live_chunks > 0);
}

//! Tampering with pack objects, in the local store and on an S3 backend
//! (moto): a flipped byte, a truncated object, two objects swapped, a
//! deleted object. Each gives EIO for exactly the files whose data is in
//! the damaged pack (never wrong bytes, never a panic), the log names those
//! files, every other file reads back identical, and `tresor verify --data`
//! names exactly the affected files with exit status 4 (`verify` without
//! `--data` catches the truncated and the deleted pack).
//!
//! Ground truth: each file is written and fsynced on its own; an fsync
//! commits and closes the open pack, so the packs that appear during one
//! file's write hold that file's data and no other's.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::servers::S3Server;
use common::*;

/// Exit status of `verify` when something is damaged (src/exit.rs).
const DAMAGED: i32 = 4;
const BLOCK: usize = 256 * 1024;

/// The test files: (name, seed, length). Each gets its own pack(s).
const FILES: &[(&str, u64, u64)] = &[
    ("flip.bin", 1, 3 * MIB),
    ("cut.bin", 2, 3 * MIB),
    ("swap-a.bin", 3, 2 * MIB + 4321),
    ("swap-b.bin", 4, 3 * MIB + 17),
    ("gone.bin", 5, 2 * MIB),
    ("docs/intact.bin", 6, 3 * MIB),
    ("docs/small.txt", 7, 9000),
    ("docs/tiny.txt", 8, 700),
];

/// Which tamper hits which file.
const FLIP: &str = "flip.bin";
const CUT: &str = "cut.bin";
const SWAP: [&str; 2] = ["swap-a.bin", "swap-b.bin"];
const GONE: &str = "gone.bin";

fn affected() -> BTreeSet<String> {
    [FLIP, CUT, SWAP[0], SWAP[1], GONE]
        .iter()
        .map(|f| format!("/{f}"))
        .collect()
}

/// Writes every file (fsync after each) and returns file → its pack
/// objects' paths relative to the store (`packs/ab/<hex>.pack`). With
/// `sync_each` (a vault with a backend), `tresor sync` after each file: an
/// fsync'd pack is held back and coalesced with others before upload, and
/// a sync after each file gives each file its own uploaded object.
fn write_files(v: &TestVault, sync_each: bool) -> BTreeMap<String, Vec<String>> {
    std::fs::create_dir_all(v.path("docs")).unwrap();
    let store = v.vault.join("store");
    let rel = |p: &Path| {
        p.strip_prefix(&store)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let mut map = BTreeMap::new();
    for &(name, seed, len) in FILES {
        let before: BTreeSet<PathBuf> = v.pack_files().into_iter().collect();
        let path = v.path(name);
        write_random_file(&path, seed, len);
        std::fs::File::open(&path).unwrap().sync_all().unwrap();
        if sync_each {
            with_vault(v, &["sync", "--timeout", "120"]).ok();
        }
        let new: Vec<String> = v
            .pack_files()
            .into_iter()
            .filter(|p| !before.contains(p))
            .map(|p| rel(&p))
            .collect();
        assert!(!new.is_empty(), "no new pack after writing {name}");
        map.insert(name.to_string(), new);
    }
    map
}

/// A pack object store the test can tamper with.
trait Objects {
    fn get(&self, path: &str) -> Vec<u8>;
    fn put(&self, path: &str, bytes: &[u8]);
    fn delete(&self, path: &str);
}

struct LocalStore(PathBuf);

impl Objects for LocalStore {
    fn get(&self, path: &str) -> Vec<u8> {
        std::fs::read(self.0.join(path)).unwrap()
    }
    fn put(&self, path: &str, bytes: &[u8]) {
        std::fs::write(self.0.join(path), bytes).unwrap()
    }
    fn delete(&self, path: &str) {
        std::fs::remove_file(self.0.join(path)).unwrap()
    }
}

struct S3Objects<'a> {
    s3: &'a S3Server,
    /// Key prefix of the vault's root (`tresor/<vault id>/`).
    root: String,
}

impl Objects for S3Objects<'_> {
    fn get(&self, path: &str) -> Vec<u8> {
        let key = format!("{}{path}", self.root);
        self.s3
            .get_object(&key)
            .unwrap_or_else(|| panic!("no object {key} on S3"))
    }
    fn put(&self, path: &str, bytes: &[u8]) {
        self.s3.put_object(&format!("{}{path}", self.root), bytes)
    }
    fn delete(&self, path: &str) {
        self.s3.delete_object(&format!("{}{path}", self.root))
    }
}

/// The four tampers, each on the packs of its own file(s).
fn tamper(objects: &dyn Objects, packs: &BTreeMap<String, Vec<String>>) {
    let first = |f: &str| packs[f][0].clone();
    // A flipped byte in the middle of the chunk region.
    let p = first(FLIP);
    let mut b = objects.get(&p);
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    objects.put(&p, &b);
    // Truncated to half its length.
    let p = first(CUT);
    let b = objects.get(&p);
    objects.put(&p, &b[..b.len() / 2]);
    // Two objects swapped (renamed A ↔ B).
    let (a, b) = (first(SWAP[0]), first(SWAP[1]));
    let (ba, bb) = (objects.get(&a), objects.get(&b));
    objects.put(&a, &bb);
    objects.put(&b, &ba);
    // Deleted.
    objects.delete(&first(GONE));
}

/// Reads every file in 256 KiB blocks: each block must be either the right
/// bytes or EIO. Returns the files with at least one EIO.
fn read_all_files(v: &TestVault) -> BTreeSet<String> {
    let mut failed = BTreeSet::new();
    for &(name, seed, len) in FILES {
        let expected = random_bytes(seed, len as usize);
        let f = std::fs::File::open(v.path(name)).unwrap_or_else(|e| panic!("open {name}: {e}"));
        let mut off = 0usize;
        while off < expected.len() {
            let n = BLOCK.min(expected.len() - off);
            let mut buf = vec![0u8; n];
            match f.read_exact_at(&mut buf, off as u64) {
                Ok(()) => assert!(
                    buf == expected[off..off + n],
                    "{name}: WRONG BYTES at {off}..{} (must be EIO or the right bytes)",
                    off + n
                ),
                Err(e) => {
                    assert_eq!(
                        e.raw_os_error(),
                        Some(libc::EIO),
                        "{name} at {off}: expected EIO, got {e}"
                    );
                    failed.insert(format!("/{name}"));
                }
            }
            off += n;
        }
    }
    failed
}

/// `tresor CMD... --vault V --passphrase-file P`.
fn with_vault(v: &TestVault, cmd: &[&str]) -> Run {
    let mut a: Vec<&OsStr> = cmd.iter().map(OsStr::new).collect();
    a.extend([
        "--vault".as_ref(),
        v.vault.as_os_str(),
        "--passphrase-file".as_ref(),
        v.passfile.as_os_str(),
    ]);
    v.tresor(&a)
}

fn verify(v: &TestVault, extra: &[&str]) -> Run {
    let mut a: Vec<&OsStr> = vec![
        "verify".as_ref(),
        "--vault".as_ref(),
        v.vault.as_os_str(),
        "--passphrase-file".as_ref(),
        v.passfile.as_os_str(),
    ];
    a.extend(extra.iter().map(|s| OsStr::new(*s)));
    v.tresor(&a)
}

/// `verify --json EXTRA`: (exit code, damaged files, report).
fn verify_json(v: &TestVault, extra: &[&str]) -> (i32, BTreeSet<String>, serde_json::Value) {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let run = verify(v, &args);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("verify --json printed no JSON ({e}): {run}"));
    let files = report["damaged_files"]
        .as_array()
        .unwrap_or_else(|| panic!("no damaged_files: {report}"))
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    (run.status.code().unwrap_or(-1), files, report)
}

fn log_text(v: &TestVault) -> String {
    String::from_utf8_lossy(&std::fs::read(v.log_path()).unwrap_or_default()).into_owned()
}

/// Every affected file is named by an error line that also names a pack;
/// no line names an intact file as failing; nothing panicked.
fn check_log(v: &TestVault) {
    let log = log_text(v);
    assert!(!log.contains("panicked"), "a thread panicked:\n{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    for f in affected() {
        assert!(
            errors
                .iter()
                .any(|l| l.contains(&format!("{f}:")) && l.contains("packs/")),
            "no log line names {f} and its pack:\n{}",
            errors.join("\n")
        );
    }
    for &(name, _, _) in FILES {
        let f = format!("/{name}");
        if !affected().contains(&f) {
            assert!(
                !errors.iter().any(|l| l.contains(&format!("{f}:"))),
                "an intact file is logged as failing: {f}\n{}",
                errors.join("\n")
            );
        }
    }
}

/// `verify` without --data: the truncated and the deleted pack, exit 4.
fn check_quick_verify(v: &TestVault, location: &str) {
    let (code, files, report) = verify_json(v, &["--backend", location]);
    assert_eq!(code, DAMAGED, "verify (no --data) must fail: {report}");
    for f in [format!("/{CUT}"), format!("/{GONE}")] {
        assert!(files.contains(&f), "verify missed {f}: {report}");
    }
    let loc = report["locations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == location)
        .unwrap_or_else(|| panic!("no location {location}: {report}"));
    assert!(loc["missing"].as_u64().unwrap() >= 1, "{report}");
    assert!(loc["size_differs"].as_u64().unwrap() >= 1, "{report}");
    assert!(
        files.is_subset(&affected()),
        "verify names an intact file: {files:?}"
    );
}

/// `verify --data`: exactly the affected files, exit 4, and the human form
/// names them too.
fn check_data_verify(v: &TestVault, location: &str) {
    let (code, files, report) = verify_json(v, &["--data", "--backend", location]);
    assert_eq!(code, DAMAGED, "verify --data must fail: {report}");
    assert_eq!(files, affected(), "verify --data: {report}");
    let damaged = report["locations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == location)
        .unwrap()["damaged"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(damaged, 5, "five damaged packs expected: {report}");
    let run = verify(v, &["--data"]);
    assert_eq!(run.status.code(), Some(DAMAGED), "{run}");
    for f in affected() {
        assert!(
            run.stdout.contains(&format!("affects {f}")),
            "{f} not named: {run}"
        );
    }
    assert!(run.stderr.contains("damaged pack"), "{run}");
}

#[test]
fn tampered_local_packs_fail_exactly_their_files() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    v.mount();
    let packs = write_files(&v, false);
    v.unmount();
    let all: BTreeSet<&String> = packs.values().flatten().collect();
    assert!(
        all.len() >= 3,
        "files must spread over ≥ 3 packs: {packs:?}"
    );
    // Intact: verify --data passes.
    let run = verify(&v, &["--data"]);
    assert!(run.success(), "verify --data of an intact vault: {run}");

    tamper(&LocalStore(v.vault.join("store")), &packs);
    check_quick_verify(&v, "local");
    v.mount();
    let failed = read_all_files(&v);
    assert_eq!(failed, affected(), "files that gave EIO");
    // A second pass: nothing got worse (no poisoned cache), nothing healed
    // into wrong bytes.
    assert_eq!(read_all_files(&v), affected(), "second pass");
    // verify works next to the running daemon.
    check_data_verify(&v, "local");
    v.unmount();
    check_log(&v);
}

#[test]
fn tampered_s3_packs_fail_exactly_their_files() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let s3 = S3Server::start("tamper");
    v.add_s3(&s3, "s3", "DE", "DE").ok();
    v.mount();
    let packs = write_files(&v, true);
    with_vault(&v, &["sync", "--timeout", "120"]).ok();
    with_vault(&v, &["cache", "clear"]).ok();
    v.unmount();
    assert!(
        v.pack_files().is_empty(),
        "cache clear left packs: {:?}",
        v.pack_files()
    );
    let keys = s3.list_keys();
    let some_pack = &packs[FLIP][0];
    let key = keys
        .iter()
        .find(|k| k.ends_with(some_pack.as_str()))
        .unwrap_or_else(|| panic!("{some_pack} not on S3: {keys:?}"));
    let root = key[..key.len() - some_pack.len()].to_string();
    let run = verify(&v, &["--data", "--backend", "s3"]);
    assert!(run.success(), "verify --data of an intact backend: {run}");

    tamper(&S3Objects { s3: &s3, root }, &packs);
    check_quick_verify(&v, "s3");
    v.mount();
    assert_eq!(read_all_files(&v), affected(), "files that gave EIO");
    assert_eq!(read_all_files(&v), affected(), "second pass");
    v.unmount();
    // Refills of intact packs came back; no damaged pack entered the cache.
    let local: BTreeSet<String> = v
        .pack_files()
        .iter()
        .map(|p| {
            p.strip_prefix(v.vault.join("store"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for f in affected() {
        for p in &packs[&f[1..]] {
            assert!(
                !local.contains(p),
                "damaged pack {p} of {f} was put into the local cache"
            );
        }
    }
    let run = verify(&v, &["--data", "--backend", "local"]);
    assert!(
        run.success(),
        "the local cache holds only authentic packs: {run}"
    );
    check_data_verify(&v, "s3");
    check_log(&v);
}

/// The same four tampers on the local copies of packs that S3 also holds
/// (not evicted): every read is served from the authentic remote copy —
/// right bytes, no EIO — and S3 stays intact.
#[test]
fn damaged_local_copies_are_read_from_the_backend() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let s3 = S3Server::start("fallback");
    v.add_s3(&s3, "s3", "DE", "DE").ok();
    v.mount();
    let packs = write_files(&v, true);
    with_vault(&v, &["sync", "--timeout", "120"]).ok();
    v.unmount();
    tamper(&LocalStore(v.vault.join("store")), &packs);
    v.mount();
    assert_eq!(read_all_files(&v), BTreeSet::new(), "files that gave EIO");
    v.unmount();
    let run = verify(&v, &["--data", "--backend", "s3"]);
    assert!(run.success(), "S3 is intact: {run}");
    let log = log_text(&v);
    assert!(!log.contains("panicked"), "a thread panicked:\n{log}");
    assert!(
        log.contains("a remote backend had an authentic one"),
        "the fallback is logged:\n{log}"
    );
}

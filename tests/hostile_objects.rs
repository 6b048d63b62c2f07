//! Objects from a provider are read with a size cap (issue 11, "Objects
//! from providers"): before, packs, snapshot blocks, manifests, the lease
//! and the key file were read whole, so one oversized body could make the
//! daemon, `restore` or `verify` allocate whatever the provider sent.
//!
//! Here a directory backend's objects are replaced by 1 GiB sparse files
//! (no disk space, but a reader that reads them whole needs 1 GiB of
//! memory): every command must say which object is too large and stay far
//! below that in memory (the largest resident size of any child process).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

const HUGE: u64 = 1024 * 1024 * 1024;

fn add_dir(v: &TestVault, dir: &Path) -> Run {
    v.tresor_cmd(
        &["backend", "add", "disk"],
        &[
            "--dir",
            dir.to_str().unwrap(),
            "--root",
            "r",
            "--location",
            "DE",
            "--operator",
            "Own disk",
            "--operator-country",
            "DE",
        ],
        true,
    )
}

/// Makes `path` a sparse file of `HUGE` bytes, keeping its first bytes.
fn inflate(path: &Path) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(HUGE).unwrap();
}

/// The largest resident set (KiB) of any child this test waited for.
fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct we pass; nothing else is touched.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) }, 0);
    u.ru_maxrss
}

fn assert_small_rss(what: &str) {
    let kib = children_max_rss_kib();
    assert!(
        kib < 512 * 1024,
        "{what}: a child used {} MiB of memory: the oversized object was read",
        kib / 1024
    );
}

fn files_with(dir: &Path, pred: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    files_under(dir).into_iter().filter(|p| pred(p)).collect()
}

#[test]
fn oversized_objects_from_a_backend_are_refused_without_reading_them() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::write(v.path("a.bin"), random_bytes(7, 3 * MIB as usize)).unwrap();
    v.unmount();
    let disk = v.scratch.join("disk");
    fs::create_dir_all(&disk).unwrap();
    add_dir(&v, &disk).ok();
    v.tresor_cmd(&["sync"], &["--timeout", "120"], true).ok();
    let export = v.scratch.join("restore.toml");
    v.tresor_cmd(
        &["backend", "export"],
        &["-o", export.to_str().unwrap()],
        true,
    )
    .ok();
    let root = disk.join("r");
    let packs = files_with(&root, |p| p.extension().is_some_and(|e| e == "pack"));
    let manifests = files_with(&root, |p| p.extension().is_some_and(|e| e == "snap"));
    let blocks = files_with(&root.join("index/blocks"), |_| true);
    let key = root.join("keys/tresor.key");
    assert!(!packs.is_empty() && !manifests.is_empty() && !blocks.is_empty() && key.exists());

    // 1. A pack larger than the index says: `verify --data` names it and
    // does not read it.
    let pack = &packs[0];
    let kept = fs::read(pack).unwrap();
    inflate(pack);
    let run = v.tresor_cmd(&["verify"], &["--data"], true);
    assert!(
        !run.success(),
        "verify --data passed an inflated pack: {run}"
    );
    assert!(
        run.stdout.contains("longer than") || run.stderr.contains("longer than"),
        "verify --data does not say the pack is too long: {run}"
    );
    assert_small_rss("verify --data");
    fs::write(pack, &kept).unwrap();

    // 2. A snapshot block, 3. the newest manifest, 4. the key file: a
    // restore on a new machine refuses each with a clear error.
    let restore = |what: &str| -> Run {
        let w = TestVault::uninitialised();
        fs::copy(&v.passfile, &w.passfile).unwrap();
        let run = w.tresor_cmd(
            &["restore"],
            &["--backend-config", export.to_str().unwrap()],
            true,
        );
        assert!(
            !run.success(),
            "restore with an inflated {what} succeeded: {run}"
        );
        assert!(
            run.stderr.contains("larger than") || run.stdout.contains("larger than"),
            "restore does not say the {what} is too large: {run}"
        );
        assert_small_rss(&format!("restore with an inflated {what}"));
        run
    };
    for (what, target) in [
        ("snapshot block", &blocks[0]),
        ("manifest", manifests.last().unwrap()),
        ("key file", &key),
    ] {
        let kept = fs::read(target).unwrap();
        inflate(target);
        restore(what);
        fs::write(target, &kept).unwrap();
    }

    // Put back, everything opens again: the caps are not too tight.
    let w = TestVault::uninitialised();
    fs::copy(&v.passfile, &w.passfile).unwrap();
    w.tresor_cmd(
        &["restore"],
        &["--backend-config", export.to_str().unwrap()],
        true,
    )
    .ok();
    v.tresor_cmd(&["verify"], &["--data"], true).ok();
}

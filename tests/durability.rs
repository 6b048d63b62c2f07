//! What survives the end of a daemon: `kill -9` (only fsynced data is
//! promised), a plain `fusermount3 -u` and `tresor unmount` (everything
//! written before is promised).

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;

/// A small tree of files of varied sizes (0 B .. 9 MiB), nested directories,
/// a symlink and a hard link; returns relative path -> content.
fn write_tree(root: &Path, seed: u64, fsync: bool) -> BTreeMap<PathBuf, Vec<u8>> {
    let sizes = [
        0usize,
        1,
        4095,
        4096,
        65_537,
        MIB as usize + 1,
        3 * MIB as usize,
        9 * MIB as usize,
    ];
    let mut want = BTreeMap::new();
    for (i, &size) in sizes.iter().enumerate() {
        let rel = PathBuf::from(format!("d{}/sub{}/file{i}.bin", i % 3, i % 2));
        let p = root.join(&rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let data = random_bytes(seed * 100 + i as u64, size);
        let mut f = File::create(&p).unwrap();
        f.write_all(&data).unwrap();
        if fsync {
            f.sync_all().unwrap();
        }
        want.insert(rel, data);
    }
    // overwrite part of an existing file and append to another
    let rel = PathBuf::from("d1/sub1/file1.bin");
    if let Some(data) = want.get_mut(&rel) {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(root.join(&rel))
            .unwrap();
        f.write_all(b"appended").unwrap();
        if fsync {
            f.sync_all().unwrap();
        }
        data.extend_from_slice(b"appended");
    }
    std::os::unix::fs::symlink("sub0/file0.bin", root.join("d0/link")).unwrap();
    fs::hard_link(root.join("d2/sub0/file2.bin"), root.join("d2/hardlink")).unwrap();
    want.insert(
        PathBuf::from("d2/hardlink"),
        want[Path::new("d2/sub0/file2.bin")].clone(),
    );
    if fsync {
        // make the names durable too: fsync every directory, bottom up
        for d in [
            "d0/sub0", "d0/sub1", "d1/sub0", "d1/sub1", "d2/sub0", "d2/sub1", "d0", "d1", "d2", "",
        ] {
            let p = root.join(d);
            if p.is_dir() {
                File::open(&p).unwrap().sync_all().unwrap();
            }
        }
    }
    want
}

fn verify_tree(root: &Path, want: &BTreeMap<PathBuf, Vec<u8>>, what: &str) {
    for (rel, data) in want {
        let p = root.join(rel);
        let got = fs::read(&p).unwrap_or_else(|e| panic!("{what}: read {}: {e}", rel.display()));
        assert_bytes_eq(&got, data, &format!("{what}: {}", rel.display()));
    }
    assert_eq!(
        fs::read_link(root.join("d0/link"))
            .unwrap_or_else(|e| panic!("{what}: readlink d0/link: {e}")),
        Path::new("sub0/file0.bin")
    );
    assert_eq!(
        fs::metadata(root.join("d2/hardlink")).unwrap().ino(),
        fs::metadata(root.join("d2/sub0/file2.bin")).unwrap().ino(),
        "{what}: hard link lost"
    );
    assert_eq!(
        fs::metadata(root.join("d2/hardlink")).unwrap().nlink(),
        2,
        "{what}: nlink of the hard link"
    );
}

#[test]
fn kill9_keeps_every_fsynced_byte() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::create_dir(v.path("synced")).unwrap();
    let want = write_tree(&v.path("synced"), 1, true);
    // data that was never fsynced: may be lost, but must not corrupt anything
    fs::create_dir(v.path("unsynced")).unwrap();
    let _ = write_tree(&v.path("unsynced"), 2, false);
    assert!(v.daemon_alive(), "daemon died before kill -9");
    v.kill9();
    v.mount();
    verify_tree(&v.path("synced"), &want, "after kill -9");
    let n = assert_tree_consistent(&v.mnt, "after kill -9");
    eprintln!("after kill -9: {n} entries, all consistent");
    // the vault keeps working: write, unmount, remount
    fs::write(v.path("after-crash"), b"still works").unwrap();
    v.remount();
    assert_content(&v.path("after-crash"), b"still works");
    verify_tree(
        &v.path("synced"),
        &want,
        "after kill -9 and a clean remount",
    );
    assert_tree_consistent(&v.mnt, "after kill -9 and a clean remount");
}

#[test]
fn kill9_during_writes_leaves_consistent_tree() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::create_dir(v.path("synced")).unwrap();
    let want = write_tree(&v.path("synced"), 3, true);
    // a writer keeps writing while the daemon is killed; its errors are expected
    let dir = v.path("busy");
    fs::create_dir(&dir).unwrap();
    let writer = std::thread::spawn(move || {
        for i in 0..10_000u64 {
            let r = File::create(dir.join(format!("f{i}")))
                .and_then(|mut f| f.write_all(&random_bytes(i, 200_000)));
            if r.is_err() {
                return i;
            }
        }
        10_000
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    v.kill9();
    let written = writer.join().unwrap();
    eprintln!("writer had created {written} files when the daemon died");
    v.mount();
    verify_tree(&v.path("synced"), &want, "after kill -9 during writes");
    assert_tree_consistent(&v.mnt, "after kill -9 during writes");
}

#[test]
fn plain_fusermount_unmount_loses_nothing() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let want = write_tree(&v.mnt, 4, false);
    v.fusermount_unmount();
    v.mount();
    verify_tree(&v.mnt, &want, "after fusermount3 -u");
    assert_tree_consistent(&v.mnt, "after fusermount3 -u");
}

#[test]
fn tresor_unmount_loses_nothing() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let want = write_tree(&v.mnt, 5, false);
    // big enough that a lazy flush would show
    let big = random_bytes(55, 40 * MIB as usize);
    fs::write(v.path("big"), &big).unwrap();
    v.unmount();
    v.mount();
    verify_tree(&v.mnt, &want, "after tresor unmount");
    assert_content(&v.path("big"), &big);
    assert_tree_consistent(&v.mnt, "after tresor unmount");
}

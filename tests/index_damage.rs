//! The index is no longer a single point of failure: the daemon keeps local
//! copies (`VAULT/index-copies/`), a mount of a vault whose index is
//! truncated or deleted fails naming `tresor fsck --repair`, and that puts
//! back the newest intact copy.
//!
//! Before: `truncate -s 40000 index.sqlite` made mount, fsck and
//! fsck --repair all fail with "database disk image is malformed", and a
//! deleted index printed "Unable to open the database file" twice, with no
//! next step; without a backend the vault was lost.

mod common;

use std::fs;
use std::time::Duration;

use common::*;

fn damaged_mount_names_the_repair(v: &TestVault) {
    let run = v.try_mount_at(&v.mnt);
    assert!(
        !run.success(),
        "mounted a vault with a damaged index: {run}"
    );
    assert_eq!(run.status.code(), Some(4), "exit code: {run}");
    assert!(
        run.stderr.contains("tresor fsck --repair"),
        "the mount error does not name the repair: {run}"
    );
    assert!(!is_fuse_mounted(&v.mnt));
}

#[test]
fn a_truncated_or_deleted_index_is_restored_from_a_local_copy() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::create_dir_all(v.path("docs/deep")).unwrap();
    for i in 0..50u64 {
        let data = random_bytes(i, (i as usize + 1) * 3000);
        fs::write(v.path(format!("docs/deep/f{i}")), &data).unwrap();
    }
    fs::write(v.path("top"), random_bytes(99, 2 * MIB as usize)).unwrap();
    std::os::unix::fs::symlink("docs/deep/f1", v.path("link")).unwrap();
    let before = tree_hashes(&v.mnt);
    v.unmount();
    let copies: Vec<_> = fs::read_dir(v.vault.join("index-copies"))
        .expect("no index-copies directory after an unmount")
        .filter_map(|e| e.ok())
        .collect();
    assert!(!copies.is_empty(), "no index copy after an unmount");

    // 1. Truncated, as by a bad sector or a full disk.
    let index = v.vault.join("index.sqlite");
    fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap()
        .set_len(40_000)
        .unwrap();
    damaged_mount_names_the_repair(&v);
    let plain = v.tresor_cmd(&["fsck"], &[], true);
    assert!(
        !plain.success(),
        "fsck without --repair called a truncated index fine: {plain}"
    );
    let run = v.tresor_cmd(&["fsck"], &["--repair"], true).ok();
    assert!(
        run.stdout
            .contains("restored the index from the local copy"),
        "{run}"
    );
    v.mount();
    assert_eq!(
        tree_hashes(&v.mnt),
        before,
        "tree after restoring a truncated index"
    );
    v.unmount();

    // 2. Deleted, with its WAL.
    for f in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = fs::remove_file(v.vault.join(f));
    }
    damaged_mount_names_the_repair(&v);
    v.tresor_cmd(&["fsck"], &["--repair"], true).ok();
    v.mount();
    assert_eq!(
        tree_hashes(&v.mnt),
        before,
        "tree after restoring a deleted index"
    );
    v.unmount();
    let clean = v.tresor_cmd(&["fsck"], &[], true);
    assert!(clean.success(), "fsck after the restores: {clean}");
}

/// Issue 11, "Done when" 2: with no intact local copy, `fsck --repair`
/// puts back the newest index snapshot from the vault's backend (a
/// directory backend here), through restore's own download, and the tree
/// is the same afterwards.
#[test]
fn a_deleted_index_without_local_copies_is_restored_from_a_backend_snapshot() {
    let Some(mut v) = TestVault::new() else {
        return;
    };
    let disk = v.scratch.join("disk");
    v.tresor_cmd(
        &["backend", "add", "disk"],
        &[
            "--dir",
            disk.to_str().unwrap(),
            "--location",
            "DE",
            "--operator",
            "Own disk",
            "--operator-country",
            "DE",
        ],
        true,
    )
    .ok();
    v.mount();
    fs::create_dir_all(v.path("docs")).unwrap();
    for i in 0..20u64 {
        fs::write(
            v.path(format!("docs/f{i}")),
            random_bytes(i, 5000 + i as usize),
        )
        .unwrap();
    }
    fs::write(v.path("big"), random_bytes(77, 3 * MIB as usize)).unwrap();
    v.tresor_cmd(&["sync"], &["--timeout", "120"], true).ok();
    let before = tree_hashes(&v.mnt);
    v.unmount();

    fs::remove_dir_all(v.vault.join("index-copies")).unwrap();
    for f in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = fs::remove_file(v.vault.join(f));
    }
    damaged_mount_names_the_repair(&v);
    let run = v.tresor_cmd(&["fsck"], &["--repair"], true).ok();
    assert!(
        run.stdout.contains("restored the index from the snapshot"),
        "{run}"
    );
    assert!(run.stdout.contains("backend disk"), "{run}");
    v.mount();
    assert_eq!(
        tree_hashes(&v.mnt),
        before,
        "tree after restoring the index from the backend"
    );
    v.unmount();
    v.tresor_cmd(&["fsck"], &[], true).ok();
}

/// Issues 14/15: a local index copy is a recovery point, not history, so gc
/// does not keep the packs of files deleted after it. Put back after such a
/// deletion, the copy names the file; fsck reports exactly that file as
/// lost (exit 4), the rest reads back, and once the file is deleted
/// `fsck --repair` drops the missing pack's rows and the vault is clean.
#[test]
fn a_copy_put_back_after_a_deletion_names_the_file_whose_data_is_gone() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let keep = random_bytes(5, 3 * MIB as usize);
    fs::write(v.path("keep"), &keep).unwrap();
    // fsync seals the open pack: "gone" gets packs of its own.
    fs::File::open(v.path("keep")).unwrap().sync_all().unwrap();
    write_random_file(&v.path("gone"), 6, 40 * MIB);
    v.unmount();
    let copies = |v: &TestVault| -> Vec<std::path::PathBuf> {
        let mut c: Vec<_> = fs::read_dir(v.vault.join("index-copies"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sqlite"))
            .collect();
        c.sort();
        c
    };
    let with_gone = copies(&v);
    assert!(!with_gone.is_empty(), "no index copy after the unmount");

    v.mount();
    let store = v.vault.join("store");
    let full = dir_bytes(&store);
    fs::remove_file(v.path("gone")).unwrap();
    wait_until(
        "the prompt collection after rm",
        Duration::from_secs(60),
        || dir_bytes(&store) + 30 * MIB < full,
    );
    assert_content(&v.path("keep"), &keep);
    v.unmount();
    // Only the copies from before the rm remain, as if the newer ones
    // were lost too.
    for c in copies(&v) {
        if !with_gone.contains(&c) {
            fs::remove_file(c).unwrap();
        }
    }
    for f in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = fs::remove_file(v.vault.join(f));
    }
    let run = v.tresor_cmd(&["fsck"], &["--repair"], true);
    assert_eq!(run.status.code(), Some(4), "{run}");
    assert!(
        run.stdout
            .contains("restored the index from the local copy"),
        "{run}"
    );
    assert!(run.stdout.contains("pack_missing"), "{run}");
    assert!(run.stdout.contains("/gone"), "{run}");
    assert!(!run.stdout.contains("/keep"), "{run}");

    v.mount();
    assert_content(&v.path("keep"), &keep);
    fs::remove_file(v.path("gone")).unwrap();
    v.unmount();
    v.tresor_cmd(&["fsck"], &["--repair"], true);
    assert_fsck_clean(&v, "after deleting the file whose data was gone");
}

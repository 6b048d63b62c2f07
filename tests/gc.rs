//! Garbage collection through a real mount: `tresor gc` mounted (control
//! socket) and unmounted, repack after a partial overwrite, and `kill -9`
//! of the daemon in the middle of a background collection.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use common::*;

fn gc(v: &TestVault, extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<&OsStr> = vec![
        "gc".as_ref(),
        "--vault".as_ref(),
        v.vault.as_os_str(),
        "--passphrase-file".as_ref(),
        v.passfile.as_os_str(),
        "--json".as_ref(),
    ];
    args.extend(extra.iter().map(|a| OsStr::new(*a)));
    let run = v.tresor(&args).ok();
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("gc --json did not print one JSON object ({e}): {run}"))
}

fn set_gc_config(v: &TestVault, toml: &str) {
    let path = v.vault.join("config.toml");
    let mut text = fs::read_to_string(&path).unwrap_or_default();
    text.push_str("\n[gc]\n");
    text.push_str(toml);
    fs::write(&path, text).expect("write config.toml");
}

fn within_5_percent(after: u64, before: u64) -> bool {
    after.abs_diff(before) as f64 <= 0.05 * before as f64
}

#[test]
fn deleting_1gib_and_gc_returns_stored_bytes_to_before() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let base = random_bytes(1, 24 * MIB as usize);
    fs::write(v.path("base"), &base).unwrap();
    v.unmount();
    // No prompt collection after the rm: the dry run below must see the 1 GiB.
    set_gc_config(&v, "prompt = false\n");
    let before = v.stored_bytes();
    let store_before = dir_bytes(&v.vault.join("store"));

    v.mount();
    fs::create_dir(v.path("big")).unwrap();
    for i in 0..4u64 {
        write_random_file(&v.path(format!("big/f{i}")), 100 + i, 256 * MIB);
    }
    // The unmount takes a local index copy that references the 1 GiB: a
    // recovery point, which keeps no local pack file (ARCHITECTURE.md,
    // "Garbage collection", 5).
    v.unmount();
    let written = v.stored_bytes();
    assert!(
        written >= before + GIB,
        "stored bytes after writing 1 GiB: {written} (before {before})"
    );

    v.mount();
    for i in 0..4u64 {
        fs::remove_file(v.path(format!("big/f{i}"))).unwrap();
    }
    let dry = gc(&v, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert!(
        dry["bytes_reclaimed_local"].as_u64().unwrap() >= GIB,
        "dry run: {dry}"
    );
    // Mounted: the daemon collects (control socket).
    let r = gc(&v, &[]);
    v.unmount();
    let after = v.stored_bytes();
    let store_after = dir_bytes(&v.vault.join("store"));
    eprintln!(
        "gc after deleting 1 GiB: stored before {before} B, after writing {written} B, after gc {after} B \
         ({:+.2} %); store dir {store_before} → {store_after} B; report {r}",
        100.0 * (after as f64 - before as f64) / before as f64
    );
    assert!(
        r["dead_packs"].as_u64().unwrap() >= 60,
        "1 GiB is ≥ 60 dead packs: {r}"
    );
    assert_eq!(r["bytes_awaiting_remote_deletion"], 0, "local vault: {r}");
    assert!(
        within_5_percent(after, before),
        "stored bytes after gc {after} not within 5 % of before {before}"
    );
    assert!(
        within_5_percent(store_after, store_before),
        "store directory after gc {store_after} B not within 5 % of before {store_before} B"
    );
    v.mount();
    assert_content(&v.path("base"), &base);
}

#[test]
fn partial_overwrite_is_repacked_and_reads_back() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let mut expected = random_bytes(7, 64 * MIB as usize);
    fs::write(v.path("file"), &expected).unwrap();
    v.unmount();
    let before = v.stored_bytes();
    // Repack anything that is not at least 90 % live.
    set_gc_config(&v, "repack_threshold = 90\n");

    v.mount();
    let middle = random_bytes(8, 24 * MIB as usize);
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(v.path("file"))
            .unwrap();
        f.seek(SeekFrom::Start(20 * MIB)).unwrap();
        f.write_all(&middle).unwrap();
        f.sync_all().unwrap();
    }
    expected[20 * MIB as usize..44 * MIB as usize].copy_from_slice(&middle);
    v.unmount();
    let overwritten = v.stored_bytes();

    // Unmounted: gc opens the vault itself.
    let r = gc(&v, &[]);
    let after = v.stored_bytes();
    eprintln!(
        "partial overwrite: stored {before} → {overwritten} → after gc {after} B; report {r}"
    );
    assert!(r["repacked_packs"].as_u64().unwrap() >= 1, "{r}");
    assert!(after < overwritten, "gc reclaimed nothing: {r}");
    // Packs at least 90 % live stay as they are, so up to 10 % of what is
    // stored may still be dead; where the chunk and pack boundaries fall
    // depends on the vault's keyed chunker, so a fixed slack (2 MiB, as
    // this test had) failed for some vaults (CI, 2026-12-03).
    // No class padding: a vault without a backend pads no pack (FORMAT.md
    // §6), so what gc writes is the live data and the packs' framing.
    assert!(
        after as f64 <= before as f64 / 0.9 + MIB as f64,
        "after gc {after} B is more than the live data's {before} B / 0.9 + 1 MiB"
    );
    let again = gc(&v, &[]);
    assert_eq!(again["repacked_packs"], 0, "second pass: {again}");
    assert_eq!(again["dead_packs"], 0, "second pass: {again}");
    v.mount();
    assert_content(&v.path("file"), &expected);
}

#[test]
fn kill9_during_background_gc_loses_nothing() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let keep = random_bytes(20, 40 * MIB as usize);
    fs::write(v.path("keep"), &keep).unwrap();
    let mut partly = random_bytes(21, 48 * MIB as usize);
    fs::write(v.path("partly"), &partly).unwrap();
    write_random_file(&v.path("dead"), 22, 320 * MIB);
    v.unmount();
    // A pass every second, at most 48 MiB of packs each: many small passes.
    set_gc_config(
        &v,
        "interval = 1\nmin_dead_bytes = 1\nmax_pass_bytes = 50331648\nrepack_threshold = 90\n",
    );
    v.mount();
    let packs_before = v.pack_files().len();
    fs::remove_file(v.path("dead")).unwrap();
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(v.path("partly"))
            .unwrap();
        let fresh = random_bytes(23, 8 * MIB as usize);
        f.seek(SeekFrom::Start(8 * MIB)).unwrap();
        f.write_all(&fresh).unwrap();
        f.sync_all().unwrap();
        partly[8 * MIB as usize..16 * MIB as usize].copy_from_slice(&fresh);
    }
    // Wait until the collector has deleted some packs, then kill it.
    wait_until(
        "background gc to delete packs",
        Duration::from_secs(120),
        || v.pack_files().len() + 4 <= packs_before,
    );
    let packs_at_kill = v.pack_files().len();
    v.kill9();
    eprintln!("kill -9 during background gc: {packs_before} pack files before, {packs_at_kill} at the kill");
    assert_fsck_clean(&v, "after kill -9 during background gc");
    v.mount();
    assert_content(&v.path("keep"), &keep);
    assert_content(&v.path("partly"), &partly);
    v.unmount();
    // Finish the collection unmounted; every file is still intact and the
    // index and the store agree (stored_bytes checks the files on disk).
    gc(&v, &[]);
    let after = v.stored_bytes();
    // No class padding in a vault without a backend (FORMAT.md §6).
    assert!(
        after <= (88 + 8 + 4) * MIB,
        "after finishing gc: {after} B stored for 88 MiB of live data"
    );
    v.mount();
    assert_content(&v.path("keep"), &keep);
    assert_content(&v.path("partly"), &partly);
}

/// Issue 15 ("deleted space comes back late"): packs whose every chunk is
/// dead are deleted by the daemon within seconds of the `rm`, without
/// `tresor gc`, although the local index copy taken at the remount
/// references them.
#[test]
fn a_deleted_file_that_no_snapshot_saw_frees_its_space_promptly() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let keep = random_bytes(7, 4 * MIB as usize);
    fs::write(v.path("keep"), &keep).unwrap();
    // fsync seals the open pack: "keep" has packs of its own.
    fs::File::open(v.path("keep")).unwrap().sync_all().unwrap();
    let store = v.vault.join("store");
    let before = dir_bytes(&store);
    write_random_file(&v.path("big"), 8, 256 * MIB);
    fs::File::open(v.path("big")).unwrap().sync_all().unwrap();
    let written = dir_bytes(&store);
    assert!(
        written >= before + 256 * MIB,
        "{written} after, {before} before"
    );
    // Unmount and mount: the unmount copies the index, which then
    // references "big".
    v.unmount();
    v.mount();
    assert!(
        fs::read_dir(v.vault.join("index-copies"))
            .map(|d| d.count())
            .unwrap_or(0)
            > 0,
        "no local index copy"
    );
    let started = std::time::Instant::now();
    fs::remove_file(v.path("big")).unwrap();
    let mut now = written;
    wait_until(
        "the store to shrink after rm",
        Duration::from_secs(60),
        || {
            now = dir_bytes(&store);
            now < before + 16 * MIB
        },
    );
    eprintln!(
        "rm of 256 MiB: store {before} B before, {written} B written, {} B {:.1} s after rm",
        dir_bytes(&store),
        started.elapsed().as_secs_f64()
    );
    assert_content(&v.path("keep"), &keep);
}

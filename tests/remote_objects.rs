//! What a provider sees of saved files (issue 12, "remote objects that do
//! not follow files"), against a real S3 server (moto) on loopback: files
//! saved one by one with fsync become a few pack objects of fixed size
//! classes, not one object per file; a restore reads everything back; and a
//! cold 4 KiB read transfers one segment, not the pack.

mod common;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::servers::S3Server;
use common::*;

/// FORMAT.md §6: the sizes a pack object on a backend can have.
const CLASSES: [u64; 5] = [MIB, 2 * MIB, 4 * MIB, 8 * MIB, 16 * MIB];

/// (key, size) of every pack object on the server (read past the relay,
/// so it does not count as traffic).
fn pack_objects(s3: &S3Server) -> Vec<(String, u64)> {
    s3.list_keys()
        .into_iter()
        .filter(|k| k.contains("/packs/"))
        .map(|k| {
            let len = s3.get_object(&k).map_or(0, |b| b.len() as u64);
            (k, len)
        })
        .collect()
}

fn export(v: &TestVault, dir: &Path) -> PathBuf {
    let f = dir.join("restore.toml");
    v.tresor_cmd(&["backend", "export"], &["-o", f.to_str().unwrap()], false)
        .ok();
    f
}

/// 40 files saved with fsync 0.3 s apart (the way editors and office
/// suites save): before `tresor sync` only full 16 MiB objects are on S3,
/// after it at most ceil(bytes / 16 MiB) + 3 objects, every one of a size
/// class; a restore on a new machine reads every file back, and its first,
/// cold 4 KiB read transfers at most 128 KiB from S3 (now and afterwards:
/// no whole-pack download behind it).
#[test]
fn saved_files_become_few_size_class_objects_and_a_cold_read_fetches_one_segment() {
    let s3 = S3Server::start("classes");
    let machine_a = tempfile::tempdir().unwrap();
    let Some(mut v) = TestVault::new() else {
        return;
    };
    v.env.push((
        "TRESOR_STATE_DIR".into(),
        machine_a.path().display().to_string(),
    ));
    v.add_s3(&s3, "s3", "DE", "DE").ok();
    // A delay longer than the test: small packs go only as full objects
    // or when `tresor sync` asks.
    let config = v.vault.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[upload]\ndelay = 600\n");
    std::fs::write(&config, text).unwrap();
    v.mount();

    let mut files = Vec::new();
    let mut total = 0u64;
    for i in 0..40u64 {
        let len = 200 * KIB + ((i * 37) % 40) * 38 * KIB;
        let name = format!("brief-{i:02}.odt");
        let data = random_bytes(7000 + i, len as usize);
        let mut f = std::fs::File::create(v.path(&name)).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        drop(f);
        total += len;
        files.push((name, data));
        std::thread::sleep(Duration::from_millis(300));
    }
    let full_expected = (total / (16 * MIB)) as usize;
    wait_until(
        "the full 16 MiB objects to reach S3",
        Duration::from_secs(120),
        || pack_objects(&s3).len() >= full_expected,
    );
    let early = pack_objects(&s3);
    eprintln!("before sync: {early:?}");
    assert!(
        early.iter().all(|(_, len)| *len == 16 * MIB),
        "only full objects go up before the delay: {early:?}"
    );
    v.tresor_cmd(&["sync"], &["--timeout", "300"], true).ok();
    let objects = pack_objects(&s3);
    let bound = total.div_ceil(16 * MIB) as usize + 3;
    eprintln!(
        "{} files, {total} bytes saved with fsync → {} pack objects (bound {bound}): {:?}",
        files.len(),
        objects.len(),
        objects.iter().map(|o| o.1).collect::<Vec<_>>()
    );
    assert!(objects.len() <= bound, "{objects:?}");
    assert!(
        objects.iter().all(|(_, len)| CLASSES.contains(len)),
        "an object is not of a size class: {objects:?}"
    );
    let distinct: std::collections::BTreeSet<u64> = objects.iter().map(|o| o.1).collect();
    assert!(
        distinct.len() <= 2,
        "full objects and at most one smaller class: {objects:?}"
    );
    let st = v.tresor_cmd(&["status"], &["--json"], true).ok();
    let st: serde_json::Value = serde_json::from_str(st.stdout.trim()).unwrap();
    assert_eq!(st["sync"]["backends"][0]["bytes_pending"], 0, "{st}");
    let file = export(&v, &v.scratch);
    v.unmount();

    // A new machine: restore from S3 alone, cold cache.
    std::fs::remove_dir_all(&v.vault).unwrap();
    let machine_b = tempfile::tempdir().unwrap();
    let mut w = TestVault::uninitialised();
    w.env.push((
        "TRESOR_STATE_DIR".into(),
        machine_b.path().display().to_string(),
    ));
    std::fs::copy(&v.passfile, &w.passfile).unwrap();
    let r = w
        .tresor_cmd(
            &["restore"],
            &["--backend-config", file.to_str().unwrap()],
            true,
        )
        .ok();
    assert!(r.stdout.contains("restored vault"), "{r}");
    w.mount();
    // Let the mount's own requests (lease, snapshot listing) finish.
    std::thread::sleep(Duration::from_secs(3));
    let (name, data) = &files[7];
    let f = std::fs::File::open(w.path(name)).unwrap();
    // What fio's random jobs do (fadvise_hint): no kernel read-ahead.
    // SAFETY: posix_fadvise only reads its arguments; the fd is open for
    // the whole call (`f` lives past it).
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    assert_eq!(rc, 0);
    let at = 160 * KIB as usize;
    let before = s3.bytes_served();
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, at as u64).unwrap();
    let read = s3.bytes_served() - before;
    assert_bytes_eq(&buf, &data[at..at + 4096], "cold 4 KiB read");
    std::thread::sleep(Duration::from_secs(3));
    let settled = s3.bytes_served() - before;
    eprintln!(
        "cold 4 KiB read: {read} bytes from S3 (HTTP headers included); {settled} bytes 3 s later"
    );
    assert!(read <= 128 * KIB, "{read} bytes for a cold 4 KiB read");
    assert!(
        settled <= 128 * KIB,
        "{settled} bytes after a cold 4 KiB read: its pack was fetched behind it"
    );
    drop(f);
    for (name, data) in &files {
        assert_content(&w.path(name), data);
    }
    w.unmount();
}

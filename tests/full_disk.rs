//! A full disk under the vault: the vault lives on a 64 MiB tmpfs and the
//! tests write far past its end.
//!
//! Before this test (reported in the issue "Nothing lost, nobody in"): the
//! writer got EIO or even success, `rm` freed nothing and the daemon retried
//! the same pack forever, `tresor unmount` exited 0 after a failed final
//! flush, and gc deleted pack files on the strength of an index change
//! whose commit had failed.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A tmpfs of `mib` MiB, unmounted (lazily) when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, mib: u64) -> SmallDisk {
        fs::create_dir_all(path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={mib}m,mode=0700"))
            .arg("tmpfs")
            .arg(path)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs on {}", path.display());
        SmallDisk {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes `data` `times` times into `path` and fsyncs; the first error.
fn write_fsynced(path: &Path, data: &[u8], times: usize) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    for _ in 0..times {
        f.write_all(data)?;
    }
    f.sync_all()
}

/// Writes `mib` MiB of fresh random data (nothing to deduplicate) into
/// `path` and fsyncs; the first error.
fn write_random_fsynced(path: &Path, seed: u64, mib: u64) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    for i in 0..mib {
        f.write_all(&random_bytes(seed * 1000 + i, MIB as usize))?;
    }
    f.sync_all()
}

fn fsck_json(v: &TestVault) -> serde_json::Value {
    let run = v.tresor_cmd(&["fsck"], &["--json"], true);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("fsck --json: {e}\n{run}"))
}

fn severities(report: &serde_json::Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| format!("{} {}", f["severity"], f["class"]))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_full_disk_gives_enospc_recovers_after_rm_and_loses_no_fsynced_byte() {
    if skip_mount_tests() {
        return;
    }
    let mut v = TestVault::uninitialised();
    let disk = SmallDisk::mount(&v.root_path.join("disk"), 64);
    v.vault = disk.path.join("vault");
    v.init_output = v.init().ok().stdout;
    v.mount();

    let keep = random_bytes(2, 3 * MIB as usize);
    write_fsynced(&v.path("keep"), &keep, 1).unwrap();

    // Far past the end: the writer must see ENOSPC, never success.
    let overflow = write_random_fsynced(&v.path("big"), 1, 200);
    let e = overflow.expect_err("200 MiB into a 64 MiB disk succeeded");
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ENOSPC),
        "the overflowing writer got {e}, not ENOSPC\n{}",
        v.log_tail()
    );

    // Deleting the file lets fsynced writes continue, without a remount.
    fs::remove_file(v.path("big")).unwrap();
    let after = random_bytes(3, 5 * MIB as usize);
    let started = Instant::now();
    loop {
        match write_fsynced(&v.path("after"), &after, 1) {
            Ok(()) => break,
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("write after rm: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!(
                "fsynced writes still fail 60 s after rm: {e}\n{}",
                v.log_tail()
            ),
        }
    }
    eprintln!(
        "fsynced writes work again {:.1} s after rm",
        started.elapsed().as_secs_f64()
    );
    for i in 0..4 {
        write_fsynced(&v.path(format!("more{i}")), &keep, 1)
            .unwrap_or_else(|e| panic!("fsynced write of more{i}: {e}\n{}", v.log_tail()));
    }
    v.unmount();
    v.mount();
    assert_content(&v.path("keep"), &keep);
    assert_content(&v.path("after"), &after);
    for i in 0..4 {
        assert_content(&v.path(format!("more{i}")), &keep);
    }
    assert!(!v.path("big").exists(), "the deleted file came back");

    // Full again, with live data this time: the final flush cannot succeed,
    // and `tresor unmount` must say so instead of exiting 0.
    let _ = write_random_fsynced(&v.path("huge"), 4, 200);
    let run = v.tresor(&["unmount".as_ref(), v.mnt.as_os_str()]);
    assert!(
        !run.success(),
        "tresor unmount exited 0 although the final flush failed\n{}",
        v.log_tail()
    );
    assert!(
        run.stderr.contains("final flush failed"),
        "unmount does not say what failed: {run}"
    );
    wait_until("the daemon to exit", Duration::from_secs(30), || {
        find_daemon(&v.mnt).is_none()
    });

    // What was fsynced before is all there; fsck finds no damage (only
    // pack files the failed session wrote without committing them).
    v.mount();
    assert_content(&v.path("keep"), &keep);
    assert_content(&v.path("after"), &after);
    for i in 0..4 {
        assert_content(&v.path(format!("more{i}")), &keep);
    }
    v.unmount();
    let report = fsck_json(&v);
    let found = severities(&report);
    assert!(
        found.iter().all(|f| f.contains("reclaimable")),
        "fsck after a full disk: {found:?}\n{report}"
    );
    v.tresor_cmd(&["fsck"], &["--repair"], true).ok();
    let report = fsck_json(&v);
    assert!(
        severities(&report).is_empty(),
        "fsck after repair: {report}"
    );
    drop(v);
    drop(disk);
}

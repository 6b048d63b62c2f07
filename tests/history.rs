//! Issue 14, "Time travel": the hidden `MOUNT/.snapshots/` view of every
//! kept generation, read-only, against a real S3 server (moto) and a real
//! FUSE mount.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::servers::S3Server;
use common::*;

fn s3_vault(s3: &S3Server, machine: &Path) -> Option<TestVault> {
    let mut v = TestVault::new()?;
    v.env
        .push(("TRESOR_STATE_DIR".into(), machine.display().to_string()));
    v.add_s3(s3, "s3", "DE", "DE").ok();
    Some(v)
}

fn sync(v: &TestVault) {
    v.tresor_cmd(&["sync"], &["--timeout", "120"], true).ok();
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

/// After `rm` and `gc`, every kept generation reads byte-identically in
/// `.snapshots` with its metadata; `cp -a` from there undeletes; the view
/// is read-only; and neither `find` nor `rsync -a --delete SRC/ MOUNT/`
/// sees it or fails because of it.
#[test]
fn every_kept_generation_is_browsable_and_rsync_does_not_see_it() {
    let s3 = S3Server::start("history");
    let machine = tempfile::tempdir().unwrap();
    let Some(mut v) = s3_vault(&s3, machine.path()) else {
        return;
    };
    v.mount();
    // Generation 1: f1 with its metadata.
    let f1 = random_bytes(41, 5 * MIB as usize);
    std::fs::create_dir(v.path("dir")).unwrap();
    std::fs::write(v.path("dir/f1"), &f1).unwrap();
    std::fs::set_permissions(v.path("dir/f1"), std::fs::Permissions::from_mode(0o640)).unwrap();
    setxattr(&v.path("dir/f1"), "user.note", b"old", 0).unwrap();
    utimensat(&v.path("dir/f1"), (1_600_000_000, 0), (1_600_000_000, 0), 0).unwrap();
    sync(&v);
    // Generation 2: f1 deleted and collected, f2 written.
    std::fs::remove_file(v.path("dir/f1")).unwrap();
    let f2 = random_bytes(42, 3 * MIB as usize);
    std::fs::write(v.path("dir/f2"), &f2).unwrap();
    v.tresor_cmd(&["gc"], &["--json"], true).ok();
    sync(&v);

    assert!(
        !names(&v.mnt).contains(&".snapshots".to_string()),
        "readdir of the root lists .snapshots"
    );
    let snaps = v.mnt.join(".snapshots");
    let gens = names(&snaps);
    assert!(gens.len() >= 2, "kept generations in the view: {gens:?}");
    // Names are UTC times, oldest first.
    assert!(
        gens.iter()
            .all(|g| g.len() >= 18 && g.as_bytes()[10] == b'T'),
        "{gens:?}"
    );
    let with_f1: Vec<&String> = gens
        .iter()
        .filter(|g| snaps.join(g).join("dir/f1").exists())
        .collect();
    let with_f2: Vec<&String> = gens
        .iter()
        .filter(|g| snaps.join(g).join("dir/f2").exists())
        .collect();
    assert!(!with_f1.is_empty(), "no generation holds f1: {gens:?}");
    assert!(!with_f2.is_empty(), "no generation holds f2: {gens:?}");
    // Every kept generation reads byte-identically, although gc collected
    // f1's pack (its local file is gone; the backend keeps it).
    for g in &with_f1 {
        let p = snaps.join(g).join("dir/f1");
        assert_content(&p, &f1);
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o640, "{g}");
        assert_eq!(m.mtime(), 1_600_000_000, "{g}");
        assert_eq!(getxattr(&p, "user.note").unwrap(), b"old", "{g}");
    }
    for g in &with_f2 {
        assert_content(&snaps.join(g).join("dir/f2"), &f2);
    }

    // Read-only.
    let old = snaps.join(with_f1[0]).join("dir/f1");
    assert_eq!(
        errno(std::fs::OpenOptions::new().write(true).open(&old)),
        libc::EROFS
    );
    assert_eq!(errno(std::fs::remove_file(&old)), libc::EROFS);
    assert_eq!(
        errno(std::fs::write(snaps.join(with_f1[0]).join("new"), b"x")),
        libc::EROFS
    );

    // Undelete with cp -a: content and metadata come back.
    let run = run_tool(
        "cp",
        &["-a".as_ref(), old.as_os_str(), v.path("dir/f1").as_os_str()],
    );
    assert!(run.success(), "cp -a: {run}");
    assert_content(&v.path("dir/f1"), &f1);
    let m = std::fs::metadata(v.path("dir/f1")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!(m.mtime(), 1_600_000_000);
    assert_eq!(getxattr(&v.path("dir/f1"), "user.note").unwrap(), b"old");

    // find does not descend into it.
    let run = run_tool("find", &[v.mnt.as_os_str()]);
    assert!(run.success() && !run.stdout.contains(".snapshots"), "{run}");
    let found: Vec<PathBuf> = files_under(&v.mnt);
    assert!(
        found
            .iter()
            .all(|p| !p.to_string_lossy().contains(".snapshots")),
        "{found:?}"
    );
    // rsync -a --delete of another tree over the mount: succeeds, deletes
    // the live files it should, and leaves the history alone.
    let src = v.scratch.join("src");
    std::fs::create_dir_all(src.join("other")).unwrap();
    std::fs::write(src.join("other/new"), b"new").unwrap();
    let run = run_bounded(
        std::process::Command::new("rsync").args([
            "-a".as_ref(),
            "--delete".as_ref(),
            format!("{}/", src.display()).as_ref() as &std::ffi::OsStr,
            format!("{}/", v.mnt.display()).as_ref(),
        ]),
        std::time::Duration::from_secs(120),
    );
    assert!(run.success(), "rsync -a --delete: {run}");
    assert_eq!(names(&v.mnt), vec!["other".to_string()]);
    assert_eq!(names(&snaps), gens, "rsync changed the history");
    assert_content(&snaps.join(with_f1[0]).join("dir/f1"), &f1);
    v.unmount();
}

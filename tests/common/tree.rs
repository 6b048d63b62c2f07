//! A source tree with every kind of metadata rsync can carry (`-aHAX
//! --sparse`): hard links, symlinks, xattrs and ACLs, odd modes, owners,
//! nanosecond mtimes, sparse files over 4 GiB, non-ASCII and non-UTF-8
//! names. Used by the rsync round trip and the restore test.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

use super::*;

pub fn build_source(src: &Path) {
    fs::create_dir_all(src.join("dir/nested/deeper")).unwrap();
    fs::write(src.join("dir/plain.txt"), b"plain text\n").unwrap();
    write_random_file(&src.join("dir/nested/random.bin"), 21, 5 * MIB + 333);
    // empty files and an empty directory
    File::create(src.join("empty")).unwrap();
    File::create(src.join("dir/nested/deeper/empty2")).unwrap();
    fs::create_dir(src.join("emptydir")).unwrap();
    // hard links (one across directories)
    fs::write(src.join("dir/hl-a"), b"hard linked").unwrap();
    fs::hard_link(src.join("dir/hl-a"), src.join("dir/hl-b")).unwrap();
    fs::hard_link(src.join("dir/hl-a"), src.join("dir/nested/hl-c")).unwrap();
    // symlinks: relative, absolute, dangling, to a directory
    std::os::unix::fs::symlink("plain.txt", src.join("dir/sl-rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src.join("dir/sl-abs")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", src.join("dir/sl-dangling")).unwrap();
    std::os::unix::fs::symlink("nested", src.join("dir/sl-dir")).unwrap();
    // non-ASCII and non-UTF-8 names
    fs::write(src.join("Grüße 世界 🦀.txt"), "unicode name").unwrap();
    fs::create_dir(src.join("répertoire")).unwrap();
    fs::write(
        src.join(OsStr::from_bytes(b"latin1-caf\xe9")),
        b"latin-1 name",
    )
    .unwrap();
    // xattrs and an ACL
    setxattr(
        &src.join("dir/plain.txt"),
        "user.comment",
        b"an xattr value",
        0,
    )
    .unwrap();
    setxattr(
        &src.join("dir/plain.txt"),
        "user.binary",
        &[0, 1, 2, 255],
        0,
    )
    .unwrap();
    setxattr(
        &src.join("répertoire"),
        "user.dirattr",
        b"on a directory",
        0,
    )
    .unwrap();
    fs::write(src.join("acl-file"), b"acl").unwrap();
    run_tool(
        "setfacl",
        &[
            "-m".as_ref(),
            "u:nobody:r-x,g:nogroup:rw-".as_ref(),
            src.join("acl-file").as_os_str(),
        ],
    )
    .ok();
    run_tool(
        "setfacl",
        &[
            "-d".as_ref(),
            "-m".as_ref(),
            "u:nobody:rwx".as_ref(),
            src.join("répertoire").as_os_str(),
        ],
    )
    .ok();
    // sparse files: 1 GiB hole + data, and > 4 GiB with data past 4 GiB
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(src.join("sparse-1g"))
        .unwrap();
    f.write_all_at(&random_bytes(22, 70_000), GIB).unwrap();
    drop(f);
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(src.join("sparse-5g"))
        .unwrap();
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(&random_bytes(23, 1_000_000), 4 * GIB + 4096)
        .unwrap();
    f.set_len(5 * GIB).unwrap();
    drop(f);
    // odd modes (set after content, before times)
    for (p, mode) in [
        ("dir/nested", 0o1751),
        ("dir/plain.txt", 0o4755),
        ("dir/nested/random.bin", 0o600),
        ("empty", 0o2750),
        ("emptydir", 0o700),
    ] {
        fs::set_permissions(src.join(p), fs::Permissions::from_mode(mode)).unwrap();
    }
    if is_root() {
        std::os::unix::fs::lchown(src.join("dir/nested/deeper/empty2"), Some(1234), Some(4321))
            .unwrap();
    }
    // nanosecond mtimes on files, symlinks and (last) directories
    let mut ns = 1;
    for p in files_and_links(src) {
        utimensat(
            &p,
            (1_600_000_000, 0),
            (1_500_000_000 + ns, 123_456_000 + ns),
            libc::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        ns += 7;
    }
    for d in [
        "dir/nested/deeper",
        "dir/nested",
        "dir",
        "répertoire",
        "emptydir",
        "",
    ] {
        utimensat(
            &src.join(d),
            (1_600_000_000, 0),
            (1_400_000_000 + ns, 987_654_321 - ns),
            0,
        )
        .unwrap();
        ns += 11;
    }
}

fn files_and_links(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(files_and_links(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

pub fn rsync_dry_run_is_empty(src: &Path, dst: &Path, when: &str) {
    let run = run_tool(
        "rsync",
        &[
            "-aHAXc".as_ref(),
            "--dry-run".as_ref(),
            "--itemize-changes".as_ref(),
            format!("{}/", src.display()).as_ref(),
            format!("{}/", dst.display()).as_ref(),
        ],
    )
    .ok();
    assert!(
        run.stdout.trim().is_empty(),
        "rsync -aHAXc --dry-run --itemize-changes {when} found differences:\n{}",
        run.stdout
    );
}

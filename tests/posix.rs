//! POSIX behaviour of a real tresor mount. Each test gets its own vault and
//! checks its result twice: on the live mount and again after a remount (so
//! the metadata really went through the index, not only the kernel's caches).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use common::*;

/// Runs `check` on the live mount, then again after a remount.
fn check_twice(v: &mut TestVault, check: impl Fn(&TestVault)) {
    check(v);
    v.remount();
    check(v);
}

#[test]
fn symlinks() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::write(v.path("target.txt"), b"through the link").unwrap();
    std::os::unix::fs::symlink("target.txt", v.path("rel")).unwrap();
    std::os::unix::fs::symlink("does/not/../exist", v.path("dangling")).unwrap();
    let long_target = "x/".repeat(1000) + "end";
    std::os::unix::fs::symlink(&long_target, v.path("long")).unwrap();
    check_twice(&mut v, |v| {
        assert_eq!(
            fs::read_link(v.path("rel")).unwrap(),
            Path::new("target.txt")
        );
        assert_eq!(
            fs::read_link(v.path("dangling")).unwrap(),
            Path::new("does/not/../exist")
        );
        assert_eq!(
            fs::read_link(v.path("long")).unwrap(),
            Path::new(&long_target)
        );
        assert!(fs::symlink_metadata(v.path("rel"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::symlink_metadata(v.path("long")).unwrap().len(),
            long_target.len() as u64,
            "lstat size of a symlink must be its target length"
        );
        assert_content(&v.path("rel"), b"through the link");
        assert_eq!(
            errno(fs::metadata(v.path("dangling"))),
            libc::ENOENT,
            "stat through a dangling link"
        );
    });
}

#[test]
fn hard_links() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::write(v.path("a"), b"shared").unwrap();
    fs::create_dir(v.path("d")).unwrap();
    fs::hard_link(v.path("a"), v.path("d/b")).unwrap();
    fs::hard_link(v.path("a"), v.path("c")).unwrap();
    let ma = fs::metadata(v.path("a")).unwrap();
    assert_eq!(ma.nlink(), 3, "nlink after two links");
    assert_eq!(ma.ino(), fs::metadata(v.path("d/b")).unwrap().ino());
    OpenOptions::new()
        .append(true)
        .open(v.path("d/b"))
        .unwrap()
        .write_all(b"+more")
        .unwrap();
    assert_content(&v.path("a"), b"shared+more");
    fs::remove_file(v.path("c")).unwrap();
    assert_eq!(
        errno(fs::hard_link(v.path("d"), v.path("dirlink"))),
        libc::EPERM,
        "link(2) of a directory"
    );
    check_twice(&mut v, |v| {
        let a = fs::metadata(v.path("a")).unwrap();
        let b = fs::metadata(v.path("d/b")).unwrap();
        assert_eq!(
            (a.nlink(), b.nlink()),
            (2, 2),
            "nlink of a and d/b after unlinking c"
        );
        assert_eq!(a.ino(), b.ino(), "hard links must share the inode number");
        assert_content(&v.path("d/b"), b"shared+more");
    });
    fs::remove_file(v.path("a")).unwrap();
    check_twice(&mut v, |v| {
        assert_eq!(fs::metadata(v.path("d/b")).unwrap().nlink(), 1);
        assert_content(&v.path("d/b"), b"shared+more");
    });
}

#[test]
fn special_files_fifo_socket_chardev() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    mknod(&v.path("fifo"), libc::S_IFIFO | 0o640, 0).unwrap();
    mknod(&v.path("sock"), libc::S_IFSOCK | 0o600, 0).unwrap();
    let dev = libc::makedev(1, 3);
    let can_mknod_chr = is_root();
    if can_mknod_chr {
        mknod(&v.path("null"), libc::S_IFCHR | 0o666, dev).unwrap();
    } else {
        eprintln!("not root: skipping the char device part");
    }
    // A socket bound by a real server, too.
    let listener = std::os::unix::net::UnixListener::bind(v.path("bound.sock")).unwrap();
    drop(listener);
    check_twice(&mut v, |v| {
        let ft = |n: &str| fs::symlink_metadata(v.path(n)).unwrap();
        assert!(
            ft("fifo").file_type().is_fifo(),
            "fifo type: {:?}",
            ft("fifo").file_type()
        );
        assert_eq!(ft("fifo").mode() & 0o7777, 0o640);
        assert!(ft("sock").file_type().is_socket(), "sock type");
        assert!(ft("bound.sock").file_type().is_socket(), "bound.sock type");
        if can_mknod_chr {
            let m = ft("null");
            assert!(m.file_type().is_char_device(), "char device type");
            assert_eq!(m.rdev(), dev, "rdev of the char device");
        }
    });
    // The FIFO works as a FIFO through the mount.
    let p = v.path("fifo");
    let writer = std::thread::spawn(move || {
        let mut w = OpenOptions::new().write(true).open(p).unwrap();
        w.write_all(b"through the pipe").unwrap();
    });
    let mut got = String::new();
    File::open(v.path("fifo"))
        .unwrap()
        .read_to_string(&mut got)
        .unwrap();
    writer.join().unwrap();
    assert_eq!(got, "through the pipe");
}

#[test]
fn chmod_chown() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::write(v.path("f"), b"x").unwrap();
    fs::create_dir(v.path("d")).unwrap();
    fs::set_permissions(v.path("f"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(v.path("d"), fs::Permissions::from_mode(0o1751)).unwrap();
    let owner = if is_root() {
        std::os::unix::fs::chown(v.path("f"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(v.path("d"), Some(4321), None).unwrap();
        Some(())
    } else {
        eprintln!("not root: skipping chown");
        None
    };
    // chown by root clears set-user-ID on a regular file.
    let f_mode = if owner.is_some() { 0o755 } else { 0o4755 };
    check_twice(&mut v, |v| {
        let f = fs::metadata(v.path("f")).unwrap();
        let d = fs::metadata(v.path("d")).unwrap();
        assert_eq!(f.mode() & 0o7777, f_mode, "mode of f: {:o}", f.mode());
        assert_eq!(d.mode() & 0o7777, 0o1751, "mode of d: {:o}", d.mode());
        if owner.is_some() {
            assert_eq!((f.uid(), f.gid()), (1234, 5678), "owner of f");
            assert_eq!(d.uid(), 4321, "owner of d");
        }
    });
    fs::set_permissions(v.path("f"), fs::Permissions::from_mode(0o600)).unwrap();
    check_twice(&mut v, |v| {
        assert_eq!(fs::metadata(v.path("f")).unwrap().mode() & 0o7777, 0o600);
    });
}

#[test]
fn truncate_grow_and_shrink() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let data = random_bytes(1, (3 * MIB + 12345) as usize);
    fs::write(v.path("f"), &data).unwrap();
    let f = OpenOptions::new().write(true).open(v.path("f")).unwrap();
    f.set_len(MIB + 777).unwrap(); // shrink into the middle of a chunk
    f.set_len(5 * MIB).unwrap(); // grow: the tail must read as zeros
    drop(f);
    // truncate(2) by path as well
    fs::write(v.path("g"), b"0123456789").unwrap();
    check(
        // SAFETY: valid path.
        unsafe { libc::truncate(cpath(&v.path("g")).as_ptr(), 4) },
        "truncate",
    )
    .unwrap();
    let mut expected = data[..(MIB + 777) as usize].to_vec();
    expected.resize(5 * MIB as usize, 0);
    check_twice(&mut v, |v| {
        assert_content(&v.path("f"), &expected);
        assert_content(&v.path("g"), b"0123");
    });
    // shrink to zero, then grow a little
    let f = OpenOptions::new().write(true).open(v.path("f")).unwrap();
    f.set_len(0).unwrap();
    f.set_len(10).unwrap();
    drop(f);
    check_twice(&mut v, |v| assert_content(&v.path("f"), &[0u8; 10]));
}

#[test]
fn utimensat_nanoseconds_now_omit() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let p = v.path("f");
    fs::write(&p, b"x").unwrap();
    let times = |p: &Path| {
        let m = fs::symlink_metadata(p).unwrap();
        ((m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()))
    };
    utimensat(
        &p,
        (1_000_000_000, 123_456_789),
        (1_500_000_000, 987_654_321),
        0,
    )
    .unwrap();
    assert_eq!(
        times(&p),
        ((1_000_000_000, 123_456_789), (1_500_000_000, 987_654_321))
    );
    // UTIME_OMIT on atime, new mtime
    utimensat(&p, (0, libc::UTIME_OMIT), (1_600_000_000, 1), 0).unwrap();
    assert_eq!(
        times(&p),
        ((1_000_000_000, 123_456_789), (1_600_000_000, 1)),
        "after UTIME_OMIT atime"
    );
    // UTIME_NOW on mtime, atime omitted
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    utimensat(&p, (0, libc::UTIME_OMIT), (0, libc::UTIME_NOW), 0).unwrap();
    let after = before + 5;
    let ((asec, ansec), (msec, _)) = times(&p);
    assert_eq!(
        (asec, ansec),
        (1_000_000_000, 123_456_789),
        "atime changed by UTIME_OMIT"
    );
    assert!(
        (before - 1..=after).contains(&msec),
        "UTIME_NOW mtime {msec} not within [{}, {after}]",
        before - 1
    );
    // on a symlink itself (AT_SYMLINK_NOFOLLOW) and on a directory
    std::os::unix::fs::symlink("f", v.path("l")).unwrap();
    fs::create_dir(v.path("d")).unwrap();
    utimensat(
        &v.path("l"),
        (2_000_000_000, 5),
        (2_000_000_001, 6),
        libc::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
    utimensat(
        &v.path("d"),
        (1_234_567_890, 999_999_999),
        (1_234_567_891, 1),
        0,
    )
    .unwrap();
    check_twice(&mut v, |v| {
        let ((_, _), (m, mn)) = times(&v.path("f"));
        assert_eq!(
            times(&v.path("f")).0,
            (1_000_000_000, 123_456_789),
            "atime of f after remount"
        );
        assert!(
            (before - 1..=after).contains(&m),
            "mtime of f {m}.{mn} after remount"
        );
        assert_eq!(
            times(&v.path("l")).1,
            (2_000_000_001, 6),
            "mtime of the symlink"
        );
        assert_eq!(
            times(&v.path("d")).1,
            (1_234_567_891, 1),
            "mtime of the directory"
        );
    });
}

/// Regression: fuser 0.18 turned the kernel's pre-1970 `(sec, nsec)` into a
/// time one second early whenever nsec > 0 (1960-06-01 12:00:00.5 read back
/// as 11:59:59.5, `os.utime(ns=-1)` as -1999999999), and every copy shifted
/// it again. Exact now, also across a remount and a copy within the mount.
#[test]
fn pre_1970_times_with_fractions_are_exact() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let cases: [(i64, i64); 5] = [
        (-302_356_800, 500_000_000), // 1960-06-01 12:00:00.5 UTC
        (-1, 999_999_999),           // os.utime(ns=-1)
        (-1, 0),
        (-2_000_000_000, 1),
        (1_500_000_000, 5),
    ];
    let mtime = |p: &Path| {
        let m = fs::symlink_metadata(p).unwrap();
        (m.mtime(), m.mtime_nsec())
    };
    for (i, &(sec, nsec)) in cases.iter().enumerate() {
        let p = v.path(format!("t{i}"));
        fs::write(&p, b"x").unwrap();
        utimensat(&p, (sec, nsec), (sec, nsec), 0).unwrap();
        assert_eq!(mtime(&p), (sec, nsec), "mtime of t{i} as set");
        let copy = v.path(format!("t{i}.copy"));
        let st = std::process::Command::new("cp")
            .arg("-p")
            .arg(&p)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(st.success(), "cp -p");
        assert_eq!(mtime(&copy), (sec, nsec), "mtime of t{i} after cp -p");
    }
    v.unmount();
    v.mount();
    for (i, &(sec, nsec)) in cases.iter().enumerate() {
        assert_eq!(
            mtime(&v.path(format!("t{i}"))),
            (sec, nsec),
            "t{i} after remount"
        );
    }
}

#[test]
fn rename_over_existing_and_dirs() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::write(v.path("a"), b"AAAA").unwrap();
    fs::write(v.path("b"), b"BB").unwrap();
    let mut old_b = File::open(v.path("b")).unwrap();
    fs::rename(v.path("a"), v.path("b")).unwrap();
    let mut s = String::new();
    old_b.read_to_string(&mut s).unwrap();
    assert_eq!(
        s, "BB",
        "an fd open on the replaced file still reads its old content"
    );
    drop(old_b);
    fs::create_dir_all(v.path("d1/sub")).unwrap();
    fs::write(v.path("d1/sub/f"), b"deep").unwrap();
    fs::create_dir(v.path("empty")).unwrap();
    fs::create_dir_all(v.path("full/x")).unwrap();
    assert_eq!(
        errno(fs::rename(v.path("d1"), v.path("full"))),
        libc::ENOTEMPTY,
        "rename dir over non-empty dir"
    );
    fs::rename(v.path("d1"), v.path("empty")).unwrap();
    assert_eq!(
        errno(fs::rename(v.path("b"), v.path("full"))),
        libc::EISDIR,
        "rename file over dir"
    );
    check_twice(&mut v, |v| {
        assert!(!v.path("a").exists(), "a still exists after rename");
        assert_content(&v.path("b"), b"AAAA");
        assert!(!v.path("d1").exists());
        assert_content(&v.path("empty/sub/f"), b"deep");
        let names: BTreeSet<_> = fs::read_dir(&v.mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let want: BTreeSet<_> = ["b", "empty", "full"]
            .iter()
            .map(|s| OsStr::new(s).to_owned())
            .collect();
        assert_eq!(names, want, "root directory listing");
    });
}

#[test]
fn renameat2_noreplace_and_exchange() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::write(v.path("a"), b"A").unwrap();
    fs::write(v.path("b"), b"B").unwrap();
    fs::create_dir(v.path("d")).unwrap();
    fs::write(v.path("d/inner"), b"I").unwrap();
    assert_eq!(
        errno(renameat2(
            &v.path("a"),
            &v.path("b"),
            libc::RENAME_NOREPLACE
        )),
        libc::EEXIST,
        "RENAME_NOREPLACE onto an existing name"
    );
    assert_content(&v.path("a"), b"A");
    assert_content(&v.path("b"), b"B");
    renameat2(&v.path("a"), &v.path("c"), libc::RENAME_NOREPLACE).unwrap();
    renameat2(&v.path("b"), &v.path("c"), libc::RENAME_EXCHANGE).unwrap();
    // exchange a file with a directory
    renameat2(&v.path("b"), &v.path("d"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(
        errno(renameat2(
            &v.path("c"),
            &v.path("missing"),
            libc::RENAME_EXCHANGE
        )),
        libc::ENOENT,
        "RENAME_EXCHANGE with a missing target"
    );
    check_twice(&mut v, |v| {
        assert!(!v.path("a").exists());
        assert_content(&v.path("c"), b"B");
        assert!(v.path("b").is_dir(), "b should now be the directory");
        assert_content(&v.path("b/inner"), b"I");
        assert_content(&v.path("d"), b"A");
    });
}

/// overlayfs's upper layer: RENAME_WHITEOUT leaves a character device 0/0
/// of mode 0 at the old name (xfstests generic/078).
#[test]
fn renameat2_whiteout_leaves_a_whiteout_device() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::write(v.path("lower"), b"L").unwrap();
    fs::write(v.path("taken"), b"T").unwrap();
    renameat2(&v.path("lower"), &v.path("moved"), libc::RENAME_WHITEOUT).unwrap();
    assert_eq!(
        errno(renameat2(
            &v.path("moved"),
            &v.path("taken"),
            libc::RENAME_WHITEOUT | libc::RENAME_EXCHANGE
        )),
        libc::EINVAL,
        "RENAME_WHITEOUT with RENAME_EXCHANGE"
    );
    assert_content(&v.path("taken"), b"T");
    check_twice(&mut v, |v| {
        assert_content(&v.path("moved"), b"L");
        let md = fs::symlink_metadata(v.path("lower")).expect("the whiteout");
        assert!(md.file_type().is_char_device(), "whiteout is a char device");
        assert_eq!(md.rdev(), 0, "whiteout device number");
        assert_eq!(md.mode() & 0o7777, 0, "whiteout mode");
    });
}

#[test]
fn unlinked_open_file_stays_readable() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let data = random_bytes(2, (2 * MIB + 3) as usize);
    fs::write(v.path("f"), &data).unwrap();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(v.path("f"))
        .unwrap();
    fs::remove_file(v.path("f")).unwrap();
    assert!(!v.path("f").exists(), "unlinked name still visible");
    assert!(
        fs::read_dir(&v.mnt).unwrap().next().is_none(),
        "directory not empty after unlink"
    );
    let mut got = Vec::new();
    f.read_to_end(&mut got).unwrap();
    assert_bytes_eq(&got, &data, "read of the unlinked file");
    f.write_all(b"tail").unwrap();
    f.seek(SeekFrom::Start(data.len() as u64)).unwrap();
    let mut tail = [0u8; 4];
    f.read_exact(&mut tail).unwrap();
    assert_eq!(&tail, b"tail");
    assert_eq!(
        f.metadata().unwrap().nlink(),
        0,
        "fstat nlink of an unlinked file"
    );
    // a new file with the same name is a different file
    fs::write(v.path("f"), b"new").unwrap();
    let mut again = vec![0u8; 16];
    let n = f.read_at(&mut again, 0).unwrap();
    assert_bytes_eq(&again[..n], &data[..16], "old fd after the name was reused");
    drop(f);
    check_twice(&mut v, |v| {
        assert_content(&v.path("f"), b"new");
        let names: Vec<_> = fs::read_dir(&v.mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsStr::new("f").to_owned()]);
    });
}

#[test]
fn open_flags_append_excl_trunc() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::write(v.path("log"), b"start;").unwrap();
    let mut a1 = OpenOptions::new().append(true).open(v.path("log")).unwrap();
    let mut a2 = OpenOptions::new().append(true).open(v.path("log")).unwrap();
    a1.write_all(b"one;").unwrap();
    a2.write_all(b"two;").unwrap();
    a1.write_all(b"three;").unwrap();
    drop((a1, a2));
    assert_content(&v.path("log"), b"start;one;two;three;");

    let excl = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(v.path("log"));
    assert_eq!(
        errno(excl),
        libc::EEXIST,
        "O_CREAT|O_EXCL on an existing file"
    );
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(v.path("fresh"))
        .unwrap();

    fs::write(v.path("t"), random_bytes(3, 3 * MIB as usize)).unwrap();
    let mut t = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(v.path("t"))
        .unwrap();
    assert_eq!(t.metadata().unwrap().len(), 0, "size right after O_TRUNC");
    t.write_all(b"short").unwrap();
    drop(t);
    check_twice(&mut v, |v| {
        assert_content(&v.path("log"), b"start;one;two;three;");
        assert_content(&v.path("fresh"), b"");
        assert_content(&v.path("t"), b"short");
    });
}

fn assert_zeros(f: &File, offset: u64, len: usize, what: &str) {
    let buf =
        pread_exact(f, offset, len).unwrap_or_else(|e| panic!("{what}: pread at {offset}: {e}"));
    if let Some(i) = buf.iter().position(|&b| b != 0) {
        panic!(
            "{what}: byte at offset {} is {:#04x}, expected 0 (hole)",
            offset + i as u64,
            buf[i]
        );
    }
}

#[test]
fn sparse_file_1gib_hole() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let data = random_bytes(4, 100_000);
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(v.path("sparse"))
        .unwrap();
    f.write_all_at(&data, GIB).unwrap();
    drop(f);
    check_twice(&mut v, |v| {
        let f = File::open(v.path("sparse")).unwrap();
        assert_eq!(f.metadata().unwrap().len(), GIB + data.len() as u64);
        assert_zeros(&f, 0, MIB as usize, "start of the hole");
        assert_zeros(&f, 512 * MIB - 10, MIB as usize, "middle of the hole");
        assert_zeros(&f, GIB - MIB, MIB as usize, "end of the hole");
        assert_bytes_eq(
            &pread_exact(&f, GIB, data.len()).unwrap(),
            &data,
            "data after the hole",
        );
    });
    v.unmount();
    let stored = v.stored_bytes();
    eprintln!("sparse 1 GiB file with 100 kB of data: stored bytes = {stored}");
    assert!(
        stored < 4 * MIB,
        "a 1 GiB hole must not be stored: stored_bytes = {stored}"
    );
}

#[test]
fn sparse_file_over_4gib() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let data = random_bytes(5, (MIB + 17) as usize);
    let off = 4 * GIB + 12345; // past the 32-bit boundary
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(v.path("big"))
        .unwrap();
    f.write_all_at(&data, off).unwrap();
    f.write_all_at(b"head", 0).unwrap();
    drop(f);
    check_twice(&mut v, |v| {
        let f = File::open(v.path("big")).unwrap();
        assert_eq!(f.metadata().unwrap().len(), off + data.len() as u64, "size");
        assert_bytes_eq(&pread_exact(&f, 0, 4).unwrap(), b"head", "head");
        assert_zeros(&f, 4, MIB as usize, "hole after head");
        assert_zeros(&f, 4 * GIB - MIB, MIB as usize + 12345, "hole around 4 GiB");
        assert_bytes_eq(
            &pread_exact(&f, off, data.len()).unwrap(),
            &data,
            "data past 4 GiB",
        );
    });
    v.unmount();
    let stored = v.stored_bytes();
    eprintln!("sparse 4 GiB file with 1 MiB of data: stored bytes = {stored}");
    assert!(
        stored < 8 * MIB,
        "stored_bytes = {stored} for 1 MiB of data in a sparse file"
    );
}

#[test]
fn long_and_odd_names() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let n255 = "n".repeat(255);
    let n256 = "n".repeat(256);
    // 255 bytes of UTF-8 with multibyte characters: 127 × "é" (2 bytes) + "a"
    let utf8_255 = "é".repeat(127) + "a";
    assert_eq!(utf8_255.len(), 255);
    let utf8 = "Grüße, 世界 🦀 ½";
    // every byte except NUL and '/': 254 bytes, mostly invalid UTF-8
    let all_bytes: Vec<u8> = (1u8..=255).filter(|&b| b != b'/').collect();
    let latin1 = b"caf\xe9 \xff\xfe\x80".to_vec();
    let names: Vec<Vec<u8>> = vec![
        n255.clone().into_bytes(),
        utf8_255.into_bytes(),
        utf8.as_bytes().to_vec(),
        all_bytes,
        latin1,
    ];
    for n in &names {
        let p = v.mnt.join(OsStr::from_bytes(n));
        fs::write(&p, n).unwrap_or_else(|e| panic!("create {:?}: {e}", OsStr::from_bytes(n)));
    }
    fs::create_dir(v.mnt.join(OsStr::from_bytes(b"dir\xc3\x28"))).unwrap();
    assert_eq!(
        errno(File::create(v.path(&n256))),
        libc::ENAMETOOLONG,
        "creating a 256-byte name"
    );
    assert_eq!(
        errno(fs::create_dir(v.path(&n256))),
        libc::ENAMETOOLONG,
        "mkdir with a 256-byte name"
    );
    assert_eq!(
        errno(fs::rename(v.path(&n255), v.path(&n256))),
        libc::ENAMETOOLONG,
        "rename to a 256-byte name"
    );
    check_twice(&mut v, |v| {
        let listed: BTreeSet<Vec<u8>> = fs::read_dir(&v.mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        let mut want: BTreeSet<Vec<u8>> = names.iter().cloned().collect();
        want.insert(b"dir\xc3\x28".to_vec());
        assert_eq!(listed, want, "readdir must return the exact name bytes");
        for n in &names {
            assert_content(&v.mnt.join(OsStr::from_bytes(n)), n);
        }
    });
}

#[test]
fn xattrs_user_namespace() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let f = v.path("f");
    fs::write(&f, b"x").unwrap();
    fs::create_dir(v.path("d")).unwrap();
    let binary: Vec<u8> = vec![0, 1, 2, 0, 255, b'v'];
    let big = random_bytes(6, 4000);
    setxattr(&f, "user.binary", &binary, 0).unwrap();
    setxattr(&f, "user.big", &big, 0).unwrap();
    setxattr(&f, "user.empty", b"", 0).unwrap();
    setxattr(&f, "user.gone", b"soon", 0).unwrap();
    setxattr(&v.path("d"), "user.on-dir", b"dir value", 0).unwrap();
    assert_eq!(
        errno(setxattr(&f, "user.binary", b"x", libc::XATTR_CREATE)),
        libc::EEXIST,
        "XATTR_CREATE on existing"
    );
    assert_eq!(
        errno(setxattr(&f, "user.none", b"x", libc::XATTR_REPLACE)),
        libc::ENODATA,
        "XATTR_REPLACE on missing"
    );
    setxattr(&f, "user.gone", b"replaced", libc::XATTR_REPLACE).unwrap();
    assert_eq!(getxattr(&f, "user.gone").unwrap(), b"replaced");
    removexattr(&f, "user.gone").unwrap();
    assert_eq!(
        errno(getxattr(&f, "user.gone")),
        libc::ENODATA,
        "getxattr after removexattr"
    );
    assert_eq!(
        errno(removexattr(&f, "user.gone")),
        libc::ENODATA,
        "removexattr of a missing name"
    );
    check_twice(&mut v, |v| {
        let f = v.path("f");
        assert_eq!(getxattr(&f, "user.binary").unwrap(), binary);
        assert_eq!(getxattr(&f, "user.big").unwrap(), big);
        assert_eq!(getxattr(&f, "user.empty").unwrap(), b"");
        let mut names = listxattr(&f).unwrap();
        names.retain(|n| n.starts_with("user."));
        names.sort();
        assert_eq!(
            names,
            vec!["user.big", "user.binary", "user.empty"],
            "listxattr"
        );
        assert_eq!(getxattr(&v.path("d"), "user.on-dir").unwrap(), b"dir value");
        assert_eq!(errno(getxattr(&f, "user.gone")), libc::ENODATA);
    });
}

#[test]
fn posix_acl_access() {
    require_tool("setfacl", "acl");
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let f = v.path("f");
    fs::write(&f, b"x").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    run_tool(
        "setfacl",
        &[
            "-m".as_ref(),
            "u:nobody:r-x,g:nogroup:rw-,m::rwx".as_ref(),
            f.as_os_str(),
        ],
    )
    .ok();
    check_twice(&mut v, |v| {
        let f = v.path("f");
        let out = run_tool(
            "getfacl",
            &[
                "--omit-header".as_ref(),
                "--numeric".as_ref(),
                f.as_os_str(),
            ],
        )
        .ok()
        .stdout;
        let nobody = 65534;
        let nogroup = 65534;
        for want in [
            "user::rw-".to_string(),
            format!("user:{nobody}:r-x"),
            "group::r--".to_string(),
            format!("group:{nogroup}:rw-"),
            "mask::rwx".to_string(),
            "other::---".to_string(),
        ] {
            assert!(
                out.lines().any(|l| l.trim() == want),
                "getfacl lacks `{want}`:\n{out}"
            );
        }
        assert!(
            getxattr(&f, "system.posix_acl_access").is_ok(),
            "system.posix_acl_access is not readable as an xattr"
        );
        // the group bits of the mode show the ACL mask
        let mode = fs::metadata(&f).unwrap().mode() & 0o7777;
        assert_eq!(
            mode & 0o070,
            0o070,
            "the mode's group bits must show the ACL mask (rwx); mode is {mode:o}"
        );
    });
    run_tool("setfacl", &["-b".as_ref(), f.as_os_str()]).ok();
    check_twice(&mut v, |v| {
        assert_eq!(
            errno(getxattr(&v.path("f"), "system.posix_acl_access")),
            libc::ENODATA,
            "after setfacl -b"
        );
    });
}

/// A vault mounted with allow_other whose paths user `nobody` can reach, for
/// checks that run a command as another user; `None` if mounted tests are
/// skipped or this is not root.
fn mounted_for_other_users() -> Option<TestVault> {
    require_tool("setpriv", "util-linux");
    let mut v = TestVault::new()?;
    if !is_root() {
        eprintln!("skipped: needs root (runs commands as user nobody)");
        return None;
    }
    fs::set_permissions(&v.root_path, fs::Permissions::from_mode(0o755)).unwrap();
    v.mount_opts.push("allow_other".into());
    v.mount();
    Some(v)
}

const NOBODY: u32 = 65534;

/// Runs `script` with /bin/sh in `dir` as uid/gid 65534 (nobody/nogroup),
/// no supplementary groups.
fn sh_as_nobody(dir: &Path, script: &str) -> Run {
    run_bounded(
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "/bin/sh",
                "-c",
                script,
            ])
            .current_dir(dir),
        std::time::Duration::from_secs(60),
    )
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

/// Default ACLs (generic/099, 319, 444): a new file or directory gets the
/// mode its create asked for masked by the directory's default ACL, not by
/// the umask; an access ACL when the default ACL names a user or group; a new
/// directory also gets the default ACL itself. The kernel enforces the
/// inherited entries (FUSE_POSIX_ACL): `nobody` may append to a file whose
/// "other" class is read-only because an ACL entry names it.
#[test]
fn default_acl_inherited_and_enforced() {
    require_tool("setfacl", "acl");
    let Some(mut v) = mounted_for_other_users() else {
        return;
    };
    let (d, e) = (v.path("d"), v.path("e"));
    fs::create_dir(&d).unwrap();
    fs::create_dir(&e).unwrap();
    fs::set_permissions(&e, fs::Permissions::from_mode(0o755)).unwrap();
    let setfacl = |args: &[&str], p: &Path| {
        let mut a: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        a.push(p.as_os_str());
        run_tool("setfacl", &a).ok();
    };
    setfacl(&["-d", "--set", "u::rwx,g::rwx,o::-"], &d);
    setfacl(&["-d", "-m", "u:nobody:rw"], &e);
    let r = run_bounded(
        std::process::Command::new("sh")
            .args(["-c", "umask 022 && mkdir d/sub && : > d/f && echo x > e/g"])
            .current_dir(&v.mnt),
        std::time::Duration::from_secs(60),
    );
    r.ok();
    check_twice(&mut v, |v| {
        let getfacl = |p: &Path| {
            run_tool(
                "getfacl",
                &[
                    "--omit-header".as_ref(),
                    "--numeric".as_ref(),
                    p.as_os_str(),
                ],
            )
            .ok()
            .stdout
        };
        assert_eq!(
            mode_of(&v.path("d/sub")),
            0o770,
            "mkdir 0777 under the default ACL u::rwx,g::rwx,o::- (umask 022 not applied)"
        );
        assert_eq!(mode_of(&v.path("d/f")), 0o660, "create 0666, same ACL");
        let sub = getfacl(&v.path("d/sub"));
        for want in [
            "default:user::rwx",
            "default:group::rwx",
            "default:other::---",
        ] {
            assert!(sub.lines().any(|l| l == want), "d/sub lacks {want}:\n{sub}");
        }
        let g = getfacl(&v.path("e/g"));
        assert!(
            g.lines().any(|l| l == format!("user:{NOBODY}:rw-")),
            "e/g did not inherit the named entry:\n{g}"
        );
        assert_eq!(
            mode_of(&v.path("e/g")),
            0o664,
            "e/g: 0666 masked by u::rwx,m::rwx,o::r-x"
        );
        assert_eq!(
            errno(getxattr(&v.path("d/f"), "system.posix_acl_access")),
            libc::ENODATA,
            "an inherited ACL equal to the mode is not stored"
        );
    });
    // The ACL entry, not the mode, lets nobody write; d/f has no entry.
    sh_as_nobody(&v.mnt, "echo y >> e/g").ok();
    let r = sh_as_nobody(&v.mnt, "echo y >> d/f").failed();
    assert!(r.stderr.contains("Permission denied"), "{r}");
    assert_eq!(fs::read(v.path("e/g")).unwrap(), b"x\ny\n");
}

/// setgid rules (generic/375, 444, 683-685): a write, truncate, fallocate or
/// setfacl by a user neither in the file's group nor root clears the file's
/// setgid bit, even without group-execute; root's do not. A directory made
/// in a setgid directory, by anyone, gets its group and setgid bit.
#[test]
fn setgid_cleared_by_outsiders_kept_by_root() {
    require_tool("setfacl", "acl");
    require_tool("fallocate", "util-linux");
    let Some(mut v) = mounted_for_other_users() else {
        return;
    };
    let set = |name: &str, mode: u32| {
        let p = v.path(name);
        fs::write(&p, b"data").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    for f in ["w", "t", "fa", "acl", "root"] {
        set(f, 0o2666);
    }
    sh_as_nobody(&v.mnt, "echo y >> w").ok();
    sh_as_nobody(&v.mnt, "truncate -s 1 t").ok();
    sh_as_nobody(&v.mnt, "fallocate -l 65536 fa").ok();
    fs::OpenOptions::new()
        .append(true)
        .open(v.path("root"))
        .unwrap()
        .write_all(b"y")
        .unwrap();
    // setfacl needs the owner: give "acl" to nobody, group stays root's.
    std::os::unix::fs::chown(v.path("acl"), Some(NOBODY), None).unwrap();
    fs::set_permissions(v.path("acl"), fs::Permissions::from_mode(0o2755)).unwrap();
    sh_as_nobody(&v.mnt, "setfacl -m u::rwx,g::rwx,o::rwx acl").ok();
    // a setgid directory: nobody's mkdir inherits group 4242 and setgid
    let g = v.path("g");
    fs::create_dir(&g).unwrap();
    std::os::unix::fs::chown(&g, None, Some(4242)).unwrap();
    fs::set_permissions(&g, fs::Permissions::from_mode(0o2777)).unwrap();
    sh_as_nobody(&v.mnt, "mkdir g/sub && : > g/file").ok();
    // A write's new mode reaches the kernel's cache after the attribute
    // timeout (1 s); the remount shows what is stored.
    v.remount();
    assert_eq!(mode_of(&v.path("w")), 0o666, "write by an outsider");
    assert_eq!(mode_of(&v.path("t")), 0o666, "truncate by an outsider");
    assert_eq!(mode_of(&v.path("fa")), 0o666, "fallocate by an outsider");
    assert_eq!(mode_of(&v.path("acl")), 0o777, "setfacl by an outsider");
    assert_eq!(
        mode_of(&v.path("root")),
        0o2666,
        "root's write keeps setgid"
    );
    let sub = fs::metadata(v.path("g/sub")).unwrap();
    assert_eq!((sub.gid(), sub.mode() & 0o2000), (4242, 0o2000), "g/sub");
    let file = fs::metadata(v.path("g/file")).unwrap();
    assert_eq!((file.gid(), file.mode() & 0o2000), (4242, 0), "g/file");
}

#[test]
fn statfs_numbers() {
    let Some(v) = TestVault::mounted() else {
        return;
    };
    fs::write(v.path("f"), random_bytes(7, MIB as usize)).unwrap();
    let c = cpath(&v.mnt);
    // SAFETY: zeroed statvfs is a valid out-buffer; c is a valid path.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: s is a valid out-buffer that lives for the call; c is a valid path.
    check(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, "statvfs").unwrap();
    let shown = format!(
        "bsize={} frsize={} blocks={} bfree={} bavail={} files={} ffree={} namemax={}",
        s.f_bsize, s.f_frsize, s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree, s.f_namemax
    );
    eprintln!("statvfs: {shown}");
    assert!(s.f_bsize > 0 && s.f_frsize > 0, "zero block size: {shown}");
    assert!(s.f_blocks > 0, "zero total blocks: {shown}");
    assert!(s.f_bfree <= s.f_blocks, "bfree > blocks: {shown}");
    assert!(s.f_bavail <= s.f_bfree, "bavail > bfree: {shown}");
    assert!(s.f_bavail > 0, "no space available: {shown}");
    assert!(s.f_ffree <= s.f_files, "ffree > files: {shown}");
    assert!(s.f_namemax >= 255, "namemax < 255: {shown}");
    assert!(
        s.f_blocks.saturating_mul(s.f_frsize) >= 64 * MIB,
        "capacity under 64 MiB: {shown}"
    );
}

#[test]
fn fallocate_extends_size() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(v.path("f"))
        .unwrap();
    f.write_all_at(b"abc", 0).unwrap();
    check(
        // SAFETY: valid fd owned by `f`.
        unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 10 * MIB as libc::off_t) },
        "fallocate",
    )
    .unwrap();
    assert_eq!(
        f.metadata().unwrap().len(),
        10 * MIB,
        "size after fallocate mode 0"
    );
    drop(f);
    check_twice(&mut v, |v| {
        let f = File::open(v.path("f")).unwrap();
        assert_eq!(
            f.metadata().unwrap().len(),
            10 * MIB,
            "size after fallocate"
        );
        assert_bytes_eq(
            &pread_exact(&f, 0, 3).unwrap(),
            b"abc",
            "data before fallocate",
        );
        assert_zeros(&f, 3, (10 * MIB - 3) as usize, "fallocated range");
    });
}

fn lseek(f: &File, offset: u64, whence: libc::c_int) -> Result<u64, i32> {
    // SAFETY: valid fd owned by `f`.
    let r = unsafe { libc::lseek(f.as_raw_fd(), offset as libc::off_t, whence) };
    if r < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r as u64)
    }
}

fn fallocate(f: &File, mode: libc::c_int, offset: u64, len: u64) -> Result<(), i32> {
    // SAFETY: valid fd owned by `f`.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    check(r, "fallocate")
        .map(|_| ())
        .map_err(|e| e.raw_os_error().unwrap_or(0))
}

/// `du --block-size=1` of one file: what st_blocks says it occupies.
fn du_bytes(path: &Path) -> u64 {
    let out = run_tool("du", &[OsStr::new("--block-size=1"), path.as_os_str()]).ok();
    out.stdout
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("du output: {out}"))
}

/// Regression (bug report "du of a sparse file"): a 5 GiB file holding
/// 2 MiB of data reported 5.0G in `du`; holes now cost no blocks, and
/// `cp --sparse=always` (SEEK_DATA/SEEK_HOLE) keeps the copy sparse.
#[test]
fn sparse_file_occupies_only_its_data() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let at = 5 * GIB;
    let data = random_bytes(51, 2 * MIB as usize);
    let size = at + data.len() as u64;
    {
        let f = File::create(v.path("sparse")).unwrap();
        f.write_all_at(&data, at).unwrap();
        let m = f.metadata().unwrap();
        assert_eq!(m.len(), size);
        assert!(
            m.blocks() * 512 <= 3 * MIB,
            "while dirty: {} blocks for 2 MiB of data",
            m.blocks()
        );
    }
    let started = std::time::Instant::now();
    run_tool(
        "cp",
        &[
            OsStr::new("--sparse=always"),
            v.path("sparse").as_os_str(),
            v.path("copy").as_os_str(),
        ],
    )
    .ok();
    eprintln!("cp --sparse=always took {:?}", started.elapsed());
    check_twice(&mut v, |v| {
        for name in ["sparse", "copy"] {
            let path = v.path(name);
            let m = fs::metadata(&path).unwrap();
            let du = du_bytes(&path);
            eprintln!(
                "{name}: size {} bytes, st_blocks {}, du {du} bytes",
                m.len(),
                m.blocks()
            );
            assert_eq!(m.len(), size, "{name}: size");
            assert!(
                (2 * MIB..=3 * MIB).contains(&du),
                "{name}: du says {du} bytes for 2 MiB of data in a {size}-byte file"
            );
            let f = File::open(&path).unwrap();
            assert_eq!(lseek(&f, 0, libc::SEEK_DATA), Ok(at), "{name}: SEEK_DATA");
            assert_eq!(lseek(&f, 0, libc::SEEK_HOLE), Ok(0), "{name}: SEEK_HOLE");
            assert_eq!(
                lseek(&f, at, libc::SEEK_HOLE),
                Ok(size),
                "{name}: SEEK_HOLE"
            );
            assert_bytes_eq(
                &pread_exact(&f, at, data.len()).unwrap(),
                &data,
                &format!("{name}: data"),
            );
            assert_zeros(&f, at - MIB, MIB as usize, &format!("{name}: hole"));
        }
    });
}

#[test]
fn seek_data_and_seek_hole() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(v.path("f"))
        .unwrap();
    f.write_all_at(&random_bytes(52, MIB as usize), 0).unwrap();
    f.write_all_at(&random_bytes(53, MIB as usize), 8 * MIB)
        .unwrap();
    f.set_len(16 * MIB).unwrap();
    let expect = |f: &File, when: &str| {
        let cases = [
            (0, libc::SEEK_DATA, Ok(0)),
            (0, libc::SEEK_HOLE, Ok(MIB)),
            (MIB - 1, libc::SEEK_HOLE, Ok(MIB)),
            (MIB, libc::SEEK_DATA, Ok(8 * MIB)),
            (3 * MIB, libc::SEEK_HOLE, Ok(3 * MIB)),
            (8 * MIB, libc::SEEK_HOLE, Ok(9 * MIB)),
            (8 * MIB + 7, libc::SEEK_DATA, Ok(8 * MIB + 7)),
            (9 * MIB, libc::SEEK_DATA, Err(libc::ENXIO)),
            (9 * MIB, libc::SEEK_HOLE, Ok(9 * MIB)),
            (16 * MIB, libc::SEEK_HOLE, Err(libc::ENXIO)),
            (16 * MIB + 5, libc::SEEK_DATA, Err(libc::ENXIO)),
        ];
        for (off, whence, want) in cases {
            let name = if whence == libc::SEEK_DATA {
                "SEEK_DATA"
            } else {
                "SEEK_HOLE"
            };
            assert_eq!(lseek(f, off, whence), want, "{when}: {name} from {off}");
        }
    };
    expect(&f, "dirty");
    drop(f);
    check_twice(&mut v, |v| {
        expect(&File::open(v.path("f")).unwrap(), "stored");
    });
}

/// fallocate keep-size (a no-op), punch-hole (zeros, blocks freed, size
/// kept) and zero-range (zeros; grows the file without keep-size), through
/// libc and fallocate(1).
#[test]
fn fallocate_keep_size_punch_hole_zero_range() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    require_tool("fallocate", "util-linux");
    let mut want = random_bytes(54, 8 * MIB as usize);
    fs::write(v.path("f"), &want).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(v.path("f"))
        .unwrap();
    let blocks = |f: &File| f.metadata().unwrap().blocks();
    assert_eq!(blocks(&f), 8 * MIB / 512, "blocks of 8 MiB of data");

    fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 4 * MIB, 8 * MIB).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 8 * MIB, "size after keep-size");
    assert_eq!(blocks(&f), 8 * MIB / 512, "blocks after keep-size");

    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    let (off, len) = (MIB + 100, 2 * MIB - 100);
    fallocate(&f, punch, off, len).unwrap();
    want[off as usize..(off + len) as usize].fill(0);
    assert_eq!(f.metadata().unwrap().len(), 8 * MIB, "size after punch");
    assert_eq!(
        blocks(&f),
        (8 * MIB - len).div_ceil(512),
        "blocks after punch"
    );
    // SEEK_HOLE answers in whole 4 KiB blocks, as ext4 does (generic/490):
    // the hole starts at the first block boundary inside the punched range.
    assert_eq!(
        lseek(&f, 0, libc::SEEK_HOLE),
        Ok(off.next_multiple_of(4096)),
        "hole after punch"
    );
    assert_eq!(
        fallocate(&f, libc::FALLOC_FL_COLLAPSE_RANGE, 0, MIB),
        Err(libc::EOPNOTSUPP),
        "collapse range"
    );

    // fallocate(1): punch the last MiB but one.
    run_tool(
        "fallocate",
        &[
            OsStr::new("--punch-hole"),
            OsStr::new("--offset"),
            OsStr::new(&(6 * MIB).to_string()),
            OsStr::new("--length"),
            OsStr::new(&MIB.to_string()),
            v.path("f").as_os_str(),
        ],
    )
    .ok();
    want[6 * MIB as usize..7 * MIB as usize].fill(0);
    assert_eq!(
        fs::metadata(v.path("f")).unwrap().blocks(),
        (7 * MIB - len).div_ceil(512),
        "blocks after fallocate --punch-hole"
    );

    let zero_keep = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
    fallocate(&f, zero_keep, 4 * MIB, MIB / 2).unwrap();
    want[4 * MIB as usize..(4 * MIB + MIB / 2) as usize].fill(0);
    assert_eq!(
        f.metadata().unwrap().len(),
        8 * MIB,
        "size after zero-range keep-size"
    );
    fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 7 * MIB + 3, 3 * MIB).unwrap();
    want.truncate((7 * MIB + 3) as usize);
    want.resize((10 * MIB + 3) as usize, 0);
    assert_eq!(
        f.metadata().unwrap().len(),
        10 * MIB + 3,
        "size after zero-range"
    );
    assert_bytes_eq(
        &pread_exact(&f, 0, want.len()).unwrap(),
        &want,
        "content (live)",
    );
    drop(f);
    check_twice(&mut v, |v| {
        let f = File::open(v.path("f")).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 10 * MIB + 3);
        let data = want.iter().filter(|&&b| b != 0).count() as u64;
        let b = f.metadata().unwrap().blocks();
        assert!(
            b * 512 >= data && b * 512 <= 8 * MIB - len - MIB - MIB / 2 - MIB + 3 + 512,
            "{b} blocks for {data} non-zero bytes"
        );
        assert_bytes_eq(&pread_exact(&f, 0, want.len()).unwrap(), &want, "content");
    });
}

#[test]
fn shared_mmap_writes_persist() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let len = 3 * 4096 + 100;
    let data = random_bytes(8, len);
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(v.path("m"))
        .unwrap();
    f.set_len(len as u64).unwrap();
    // SAFETY: mapping `len` bytes of a file we just sized to `len`; the slice
    // is only used while the mapping is alive and nothing else maps the file.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        drop(f);
        std::slice::from_raw_parts_mut(p.cast::<u8>(), len).copy_from_slice(&data);
        check(libc::munmap(p, len), "munmap").unwrap();
    }
    v.remount();
    assert_content(&v.path("m"), &data);
}

#[test]
fn fsync_and_fdatasync() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let data = random_bytes(9, (MIB + 5) as usize);
    let mut f = File::create(v.path("f")).unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    f.write_all(b"more").unwrap();
    f.sync_data().unwrap();
    drop(f);
    fs::create_dir(v.path("d")).unwrap();
    File::open(v.path("d")).unwrap().sync_all().unwrap();
    File::open(&v.mnt).unwrap().sync_all().unwrap();
    let mut expected = data.clone();
    expected.extend_from_slice(b"more");
    check_twice(&mut v, |v| assert_content(&v.path("f"), &expected));
}

#[test]
fn inode_numbers_stable_across_remount() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::create_dir_all(v.path("a/b/c")).unwrap();
    for i in 0..20 {
        fs::write(v.path(format!("a/b/f{i}")), format!("{i}")).unwrap();
    }
    fs::hard_link(v.path("a/b/f0"), v.path("a/hl")).unwrap();
    std::os::unix::fs::symlink("b", v.path("a/sl")).unwrap();
    mknod(&v.path("a/fifo"), libc::S_IFIFO | 0o600, 0).unwrap();
    let inodes = |v: &TestVault| -> BTreeMap<PathBuf, u64> {
        let mut m = BTreeMap::new();
        let mut stack = vec![v.mnt.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let md = fs::symlink_metadata(e.path()).unwrap();
                assert_eq!(
                    e.ino(),
                    md.ino(),
                    "readdir d_ino != stat st_ino for {:?}",
                    e.path()
                );
                if md.is_dir() {
                    stack.push(e.path());
                }
                m.insert(
                    e.path().strip_prefix(&v.mnt).unwrap().to_path_buf(),
                    md.ino(),
                );
            }
        }
        m
    };
    let before = inodes(&v);
    assert_eq!(before[Path::new("a/hl")], before[Path::new("a/b/f0")]);
    let distinct: BTreeSet<_> = before.values().collect();
    assert_eq!(
        distinct.len(),
        before.len() - 1,
        "inode numbers must be unique except for hard links"
    );
    let root_ino = fs::metadata(&v.mnt).unwrap().ino();
    v.remount();
    assert_eq!(inodes(&v), before, "inode numbers changed across remount");
    assert_eq!(
        fs::metadata(&v.mnt).unwrap().ino(),
        root_ino,
        "root inode changed"
    );
}

/// generic/736: renaming every entry of a directory (to a temporary name and
/// back, as the xfstests program does) while reading that directory must let
/// the listing end: a renamed entry keeps its readdir cursor, so it is not
/// listed again behind the reader's position. Each name may show up at most
/// twice (POSIX leaves renamed entries' visibility open); before the fix every
/// rename gave the entry a new, larger cursor and the listing never ended.
#[test]
fn readdir_while_renaming_every_entry_ends() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    const N: usize = 2000;
    let dir = v.path("spin");
    fs::create_dir(&dir).unwrap();
    for i in 1..=N {
        File::create(dir.join(i.to_string())).unwrap();
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    for e in fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        total += 1;
        assert!(
            total <= 3 * N,
            "readdir while renaming does not end: {total} entries for {N} files"
        );
        *seen.entry(name.clone()).or_default() += 1;
        fs::rename(dir.join(&name), dir.join("TEMPFILE")).unwrap();
        fs::rename(dir.join("TEMPFILE"), dir.join(&name)).unwrap();
    }
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 2).take(5).collect();
    assert!(twice.is_empty(), "listed more than twice: {twice:?}");
    assert_eq!(seen.len(), N, "every entry must be listed");
    check_twice(&mut v, |v| {
        let names: BTreeSet<String> = fs::read_dir(v.path("spin"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), N);
        assert!(names.contains("1") && names.contains(&N.to_string()));
    });
}

/// generic/035: a file or directory renamed over while open stays alive
/// until closed: fstat on the open descriptor answers with nlink 0 (not
/// ENOENT), and the directory handle can still be read (empty).
#[test]
fn fstat_after_rename_over_an_open_file_or_dir() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    fs::write(v.path("file1"), b"new").unwrap();
    fs::write(v.path("file2"), b"old contents").unwrap();
    let mut f = File::open(v.path("file2")).unwrap();
    fs::rename(v.path("file1"), v.path("file2")).unwrap();
    let m = f.metadata().expect("fstat on a file renamed over");
    assert_eq!(m.nlink(), 0, "nlink of a file renamed over");
    let mut old = String::new();
    f.read_to_string(&mut old).unwrap();
    assert_eq!(old, "old contents");
    drop(f);

    fs::create_dir(v.path("dir1")).unwrap();
    fs::create_dir(v.path("dir2")).unwrap();
    let d = File::open(v.path("dir2")).unwrap();
    fs::rename(v.path("dir1"), v.path("dir2")).unwrap();
    let m = d.metadata().expect("fstat on a directory renamed over");
    assert_eq!(m.nlink(), 0, "nlink of a directory renamed over");
    assert!(m.is_dir());
    drop(d);

    // rmdir while open: the same
    fs::create_dir(v.path("dir3")).unwrap();
    let d = File::open(v.path("dir3")).unwrap();
    fs::remove_dir(v.path("dir3")).unwrap();
    assert_eq!(
        d.metadata().expect("fstat on a removed directory").nlink(),
        0
    );
    drop(d);
    check_twice(&mut v, |v| {
        let names: BTreeSet<String> = fs::read_dir(&v.mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names,
            ["dir2", "file2"].iter().map(|s| s.to_string()).collect()
        );
        assert_content(&v.path("file2"), b"new");
    });
}

#[test]
fn readdir_5000_entries() {
    let Some(mut v) = TestVault::mounted() else {
        return;
    };
    let dir = v.path("big");
    fs::create_dir(&dir).unwrap();
    let want: BTreeSet<String> = (0..5000)
        .map(|i| format!("entry-{i:05}-{}", "p".repeat(i % 40)))
        .collect();
    for n in &want {
        File::create(dir.join(n)).unwrap();
    }
    check_twice(&mut v, |v| {
        let got: Vec<String> = fs::read_dir(v.path("big"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let set: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(got.len(), set.len(), "readdir returned duplicates");
        let missing: Vec<_> = want.difference(&set).take(5).collect();
        let extra: Vec<_> = set.difference(&want).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "readdir: {} entries, want 5000; missing e.g. {missing:?}; extra e.g. {extra:?}",
            got.len()
        );
        assert_eq!(
            fs::metadata(v.path("big")).unwrap().nlink(),
            2,
            "nlink of a dir without subdirs"
        );
    });
}

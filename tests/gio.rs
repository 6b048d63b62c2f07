//! GIO (GLib's file layer, used by GNOME, Xfce, LXDE file managers and most
//! GTK programs) against a real tresor mount, through the `gio` tool of
//! Debian's libglib2.0-bin: copy / move / rename / remove, the trash (into
//! the mount's own `.Trash-0`, restore, empty), filesystem info, setting
//! times and mode, a 1 GiB copy with progress, and random range reads like a
//! thumbnailer's.
//!
//! Every `gio` runs under its own `dbus-run-session` with HOME, XDG dirs and
//! XDG_RUNTIME_DIR inside the test's temp dir (tests/desktop): the trash:///
//! backend (gvfsd-trash, package gvfs) is a D-Bus service, and the real
//! user's home trash is never used. The commands that go through
//! gvfsd-trash (`gio trash --list/--restore/--empty`) run in a private mount
//! namespace where every other FUSE mount, and every mount with a `.Trash`
//! or `.Trash-0` at its root, is detached: gvfsd-trash watches the trash of
//! every mount it sees, and `--empty` would otherwise empty theirs too.
//!
//! Skip rule: see tests/desktop (only if `gio` is missing and
//! TRESOR_REQUIRE_DESKTOP_TESTS is not 1).

mod common;
mod desktop;

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use desktop::*;

/// Skips (returns None) per the desktop skip rule; otherwise checks every
/// other tool these tests need and returns a mounted vault and its
/// desktop environment.
fn setup() -> Option<(TestVault, DesktopEnv)> {
    if skip_desktop_test("gio", "libglib2.0-bin") {
        return None;
    }
    require_tool("dbus-run-session", "dbus");
    require_tool("unshare", "util-linux");
    require_file("/usr/libexec/gvfsd-trash", "gvfs");
    let v = TestVault::mounted()?;
    let env = DesktopEnv::new(&v.root_path);
    Some((v, env))
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// `gio ARGS` (in its own D-Bus session); panics with the output unless it succeeded.
fn gio_ok(env: &DesktopEnv, args: &[&OsStr]) -> Run {
    env.gio(args).ok()
}

fn meta(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// copy, move, rename, remove

#[test]
fn copy_move_rename_remove() {
    let Some((mut v, env)) = setup() else { return };
    let src = v.scratch.join("photo.jpg");
    let data = random_bytes(1, 3 * MIB as usize + 12345);
    fs::write(&src, &data).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o640)).unwrap();
    utimensat(&src, (1_500_000_000, 0), (1_400_000_000, 123_456_000), 0).unwrap();

    // into the mount (across filesystems), plain and --preserve
    gio_ok(
        &env,
        &[os("copy"), src.as_os_str(), v.path("a.jpg").as_os_str()],
    );
    assert_content(&v.path("a.jpg"), &data);
    gio_ok(
        &env,
        &[
            os("copy"),
            os("--preserve"),
            src.as_os_str(),
            v.path("kept.jpg").as_os_str(),
        ],
    );
    assert_content(&v.path("kept.jpg"), &data);
    let m = meta(&v.path("kept.jpg"));
    assert_eq!(
        (m.mtime(), m.mtime_nsec()),
        (1_400_000_000, 123_456_000),
        "gio copy --preserve keeps the modification time"
    );
    assert_eq!(
        m.mode() & 0o7777,
        0o640,
        "gio copy --preserve keeps the mode"
    );

    // within the mount, and over an existing file (gio copy overwrites by default)
    fs::create_dir(v.path("album")).unwrap();
    gio_ok(
        &env,
        &[
            os("copy"),
            v.path("a.jpg").as_os_str(),
            v.path("album/b.jpg").as_os_str(),
        ],
    );
    assert_content(&v.path("album/b.jpg"), &data);
    fs::write(v.path("old.txt"), b"old content").unwrap();
    fs::write(v.scratch.join("new.txt"), b"new").unwrap();
    gio_ok(
        &env,
        &[
            os("copy"),
            v.scratch.join("new.txt").as_os_str(),
            v.path("old.txt").as_os_str(),
        ],
    );
    assert_content(&v.path("old.txt"), b"new");

    // move within the mount is a rename: same inode
    let ino = meta(&v.path("a.jpg")).ino();
    gio_ok(
        &env,
        &[
            os("move"),
            v.path("a.jpg").as_os_str(),
            v.path("album/moved.jpg").as_os_str(),
        ],
    );
    assert!(!v.path("a.jpg").exists(), "gio move left the source behind");
    assert_eq!(
        meta(&v.path("album/moved.jpg")).ino(),
        ino,
        "gio move within the mount must rename, not copy"
    );
    assert_content(&v.path("album/moved.jpg"), &data);

    // move of a directory within the mount
    let dino = meta(&v.path("album")).ino();
    gio_ok(
        &env,
        &[
            os("move"),
            v.path("album").as_os_str(),
            v.path("Album 2024").as_os_str(),
        ],
    );
    assert_eq!(meta(&v.path("Album 2024")).ino(), dino);
    assert_eq!(names(&v.path("Album 2024")), ["b.jpg", "moved.jpg"]);

    // move from outside into the mount (copy + delete)
    let outside = v.scratch.join("outside.bin");
    let odata = random_bytes(2, 200_000);
    fs::write(&outside, &odata).unwrap();
    gio_ok(
        &env,
        &[
            os("move"),
            outside.as_os_str(),
            v.path("Album 2024/outside.bin").as_os_str(),
        ],
    );
    assert!(
        !outside.exists(),
        "gio move across filesystems left the source"
    );
    assert_content(&v.path("Album 2024/outside.bin"), &odata);

    // move out of the mount
    gio_ok(
        &env,
        &[
            os("move"),
            v.path("Album 2024/outside.bin").as_os_str(),
            v.scratch.join("back.bin").as_os_str(),
        ],
    );
    assert!(!v.path("Album 2024/outside.bin").exists());
    assert_content(&v.scratch.join("back.bin"), &odata);

    // rename (in place, new base name)
    gio_ok(
        &env,
        &[
            os("rename"),
            v.path("Album 2024/moved.jpg").as_os_str(),
            os("renamed.jpg"),
        ],
    );
    assert_eq!(meta(&v.path("Album 2024/renamed.jpg")).ino(), ino);
    assert_eq!(names(&v.path("Album 2024")), ["b.jpg", "renamed.jpg"]);

    // remove: a file, a non-empty directory (refused), then the emptied one
    gio_ok(
        &env,
        &[os("remove"), v.path("Album 2024/b.jpg").as_os_str()],
    );
    assert!(!v.path("Album 2024/b.jpg").exists());
    let r = env
        .gio(&[os("remove"), v.path("Album 2024").as_os_str()])
        .failed();
    assert!(
        r.stderr.contains("not empty"),
        "gio remove of a non-empty directory should say so: {r}"
    );
    gio_ok(
        &env,
        &[os("remove"), v.path("Album 2024/renamed.jpg").as_os_str()],
    );
    gio_ok(&env, &[os("remove"), v.path("Album 2024").as_os_str()]);
    assert!(!v.path("Album 2024").exists());

    // the final state survives a remount
    v.remount();
    assert_eq!(names(&v.mnt), ["kept.jpg", "old.txt"]);
    assert_content(&v.path("kept.jpg"), &data);
    assert_content(&v.path("old.txt"), b"new");
    let m = meta(&v.path("kept.jpg"));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_400_000_000, 123_456_000));
}

// ---------------------------------------------------------------------------
// trash

/// Decodes the octal escapes of /proc/self/mountinfo.
fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Mounts other than `ours` whose trash gvfsd-trash could see: every other
/// FUSE mount (not stat'ed: it may be dead) and every mount with `.Trash` or
/// `.Trash-0` at its root; never `ours`, its ancestors or /proc, /sys, /dev.
fn foreign_trash_mounts(ours: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let mut v = Vec::new();
    for line in info.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mp) = pre.split(' ').nth(4).map(unescape_mountinfo) else {
            continue;
        };
        let fstype = post.split(' ').next().unwrap_or("");
        if mp == ours
            || ours.starts_with(&mp)
            || ["/proc", "/sys", "/dev"].iter().any(|p| mp.starts_with(p))
        {
            continue;
        }
        let candidate = fstype.starts_with("fuse")
            || mp.join(".Trash").symlink_metadata().is_ok()
            || mp.join(".Trash-0").symlink_metadata().is_ok();
        if candidate && !v.contains(&mp) {
            v.push(mp);
        }
    }
    v
}

/// `gio ARGS` through gvfsd-trash, in a private mount namespace that sees no
/// other trash than the one on `v`'s mount (see the module comment). With
/// `wait_expunged`, the D-Bus session (and so gvfsd-trash) stays up until
/// `.Trash-0/expunged` is empty: gvfsd-trash deletes emptied items in a
/// background thread, which a session ending at once would cut short.
fn gio_trash_isolated(
    v: &TestVault,
    env: &DesktopEnv,
    args: &[&OsStr],
    wait_expunged: bool,
) -> Run {
    assert!(
        is_root(),
        "the trash tests need root (a private mount namespace isolates other mounts' trash)"
    );
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "--", "sh", "-c"]);
    // detach "$@" up to "--" (errors ignored: a submount of an already
    // detached mount is gone with it), then run the rest
    c.arg(r#"while [ "$1" != -- ]; do umount -l "$1" 2>/dev/null; shift; done; shift; exec "$@""#)
        .arg("sh");
    c.args(foreign_trash_mounts(&v.mnt));
    c.arg("--").arg("dbus-run-session").arg("--");
    if wait_expunged {
        let expunged = v.path(".Trash-0/expunged");
        c.args(["sh", "-c"])
            .arg(
                r#"gio "$@" || exit; d=$EXPUNGED; i=0
                   while [ -d "$d" ] && [ -n "$(ls -A "$d")" ]; do
                       i=$((i + 1)); [ $i -le 600 ] || { echo "$d still not empty after 60 s" >&2; exit 3; }
                       sleep 0.1
                   done"#,
            )
            .arg("sh")
            .env("EXPUNGED", expunged);
    } else {
        c.arg("gio");
    }
    c.args(args);
    env.apply(&mut c);
    run_bounded(&mut c, GIO_TIMEOUT)
}

/// `gio trash --list` entries on `v`'s mount: (trash URI, original path).
fn trash_list(v: &TestVault, env: &DesktopEnv) -> Vec<(String, PathBuf)> {
    let r = gio_trash_isolated(v, env, &[os("trash"), os("--list")], false).ok();
    let mut out: Vec<(String, PathBuf)> = r
        .stdout
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(uri, orig)| (uri.to_owned(), PathBuf::from(orig)))
        .collect();
    for (_, orig) in &out {
        assert!(
            orig.starts_with(&v.mnt),
            "gio trash --list shows an item from outside the test mount \
             (isolation failed?): {}\n{r}",
            orig.display()
        );
    }
    out.sort();
    out
}

#[test]
fn trash_restore_empty() {
    let Some((mut v, env)) = setup() else { return };
    let mnt_dev = meta(&v.mnt).dev();
    let data = random_bytes(3, 5 * MIB as usize);
    fs::write(v.path("report.odt"), &data).unwrap();
    fs::create_dir(v.path("docs")).unwrap();
    fs::write(v.path("docs/note.txt"), b"a note").unwrap();
    let ino = meta(&v.path("report.odt")).ino();

    // gio trash moves the file into the mount's own .Trash-0 (a rename: same
    // device, same inode; nothing copied across filesystems)
    gio_ok(&env, &[os("trash"), v.path("report.odt").as_os_str()]);
    assert!(!v.path("report.odt").exists(), "gio trash left the file");
    let trash = v.path(".Trash-0");
    let tm = meta(&trash);
    assert!(tm.is_dir());
    assert_eq!(tm.mode() & 0o7777, 0o700, ".Trash-0 must be private (0700)");
    assert_eq!(tm.uid(), 0);
    let trashed = trash.join("files/report.odt");
    let m = meta(&trashed);
    assert_eq!(
        m.dev(),
        mnt_dev,
        "trashed file is not on the mount's device"
    );
    assert_eq!(m.ino(), ino, "trashed file was copied, not renamed");
    assert_content(&trashed, &data);
    let info = fs::read_to_string(trash.join("info/report.odt.trashinfo"))
        .expect(".Trash-0/info/report.odt.trashinfo");
    assert!(info.starts_with("[Trash Info]\n"), "trashinfo: {info:?}");
    assert!(
        info.lines().any(|l| l == "Path=report.odt"),
        "trashinfo of a top-dir trash holds the path relative to the mount: {info:?}"
    );
    assert!(
        info.lines().any(|l| l.starts_with("DeletionDate=")),
        "{info:?}"
    );
    assert!(
        !env.home_trash().exists(),
        "GIO used the home trash {}",
        env.home_trash().display()
    );

    // a file in a subdirectory, and a whole directory
    gio_ok(&env, &[os("trash"), v.path("docs/note.txt").as_os_str()]);
    let info = fs::read_to_string(trash.join("info/note.txt.trashinfo")).unwrap();
    assert!(info.lines().any(|l| l == "Path=docs/note.txt"), "{info:?}");
    fs::write(v.path("docs/keep.txt"), b"kept").unwrap();
    let dino = meta(&v.path("docs")).ino();
    gio_ok(&env, &[os("trash"), v.path("docs").as_os_str()]);
    assert_eq!(meta(&trash.join("files/docs")).ino(), dino);
    assert_content(&trash.join("files/docs/keep.txt"), b"kept");
    assert_eq!(
        names(&trash.join("files")),
        ["docs", "note.txt", "report.odt"]
    );

    // gio trash --list (gvfsd-trash) sees the items with their original paths
    let list = trash_list(&v, &env);
    let origs: Vec<&Path> = list.iter().map(|(_, p)| p.as_path()).collect();
    assert_eq!(
        origs,
        [
            v.path("docs").as_path(),
            v.path("docs/note.txt").as_path(),
            v.path("report.odt").as_path()
        ],
        "gio trash --list: {list:?}"
    );

    // --restore puts the file back where it was: same inode, same content
    let uri = &list
        .iter()
        .find(|(_, p)| *p == v.path("report.odt"))
        .unwrap()
        .0;
    gio_trash_isolated(&v, &env, &[os("trash"), os("--restore"), os(uri)], false).ok();
    assert_eq!(meta(&v.path("report.odt")).ino(), ino);
    assert_content(&v.path("report.odt"), &data);
    assert!(!trashed.exists());
    assert!(!trash.join("info/report.odt.trashinfo").exists());
    // restoring a file whose directory is in the trash recreates the directory
    let uri = &list
        .iter()
        .find(|(_, p)| *p == v.path("docs/note.txt"))
        .unwrap()
        .0;
    gio_trash_isolated(&v, &env, &[os("trash"), os("--restore"), os(uri)], false).ok();
    assert_content(&v.path("docs/note.txt"), b"a note");

    // --empty deletes everything in this mount's trash
    gio_ok(&env, &[os("trash"), v.path("report.odt").as_os_str()]);
    assert_eq!(
        trash_list(&v, &env).len(),
        2,
        "docs/ and report.odt in the trash"
    );
    gio_trash_isolated(&v, &env, &[os("trash"), os("--empty")], true).ok();
    assert_eq!(names(&trash.join("files")), Vec::<String>::new());
    assert_eq!(names(&trash.join("info")), Vec::<String>::new());
    assert_eq!(trash_list(&v, &env), vec![]);
    assert!(!env.home_trash().exists());

    // and the result is what the index holds
    v.remount();
    assert_eq!(names(&v.mnt), [".Trash-0", "docs"]);
    assert_eq!(names(&v.path("docs")), ["note.txt"]);
    assert_eq!(names(&v.path(".Trash-0/files")), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// filesystem info

/// `gio info -f PATH` as attribute -> value.
fn fs_info(env: &DesktopEnv, p: &Path) -> std::collections::BTreeMap<String, String> {
    let r = gio_ok(env, &[os("info"), os("-f"), p.as_os_str()]);
    r.stdout
        .lines()
        .filter_map(|l| l.trim().split_once(": "))
        .filter(|(k, _)| k.starts_with("filesystem::"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn num(info: &std::collections::BTreeMap<String, String>, key: &str) -> u64 {
    info.get(key)
        .unwrap_or_else(|| panic!("gio info -f has no {key}: {info:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{key} is not a number ({e}): {info:?}"))
}

#[test]
fn filesystem_info() {
    let Some((mut v, env)) = setup() else { return };
    fs::write(v.path("f"), b"x").unwrap();
    let info = fs_info(&env, &v.mnt);
    eprintln!("gio info -f on the rw mount: {info:?}");
    assert_eq!(
        info.get("filesystem::type").map(String::as_str),
        Some("fuse")
    );
    let (size, free, used) = (
        num(&info, "filesystem::size"),
        num(&info, "filesystem::free"),
        num(&info, "filesystem::used"),
    );
    assert!(free > 0, "filesystem::free is 0: {info:?}");
    assert!(size >= free, "size < free: {info:?}");
    assert!(used <= size, "used > size: {info:?}");
    // tresor reports the space of the filesystem that holds the store
    let st = nix::sys::statvfs::statvfs(&v.vault).unwrap();
    assert_eq!(
        size,
        st.blocks() * st.fragment_size(),
        "size = store's filesystem size"
    );
    assert_eq!(
        info.get("filesystem::remote").map(String::as_str),
        Some("FALSE")
    );
    // GIO sets filesystem::readonly only when it is TRUE
    assert!(
        matches!(
            info.get("filesystem::readonly").map(String::as_str),
            None | Some("FALSE")
        ),
        "the rw mount reports readonly: {info:?}"
    );
    // a file on it says the same
    let finfo = fs_info(&env, &v.path("f"));
    assert_eq!(num(&finfo, "filesystem::size"), size);

    // a read-only mount
    v.unmount();
    v.mount_opts = vec!["ro".into()];
    v.mount();
    let info = fs_info(&env, &v.mnt);
    eprintln!("gio info -f on the ro mount: {info:?}");
    assert_eq!(
        info.get("filesystem::readonly").map(String::as_str),
        Some("TRUE"),
        "-o ro mount: {info:?}"
    );
    assert!(num(&info, "filesystem::free") > 0);
    let r = env
        .gio(&[os("copy"), v.path("f").as_os_str(), v.path("g").as_os_str()])
        .failed();
    assert!(r.stderr.contains("Read-only file system"), "{r}");
    assert!(!v.path("g").exists());
}

// ---------------------------------------------------------------------------
// gio set

#[test]
fn set_times_and_mode() {
    let Some((mut v, env)) = setup() else { return };
    let f = v.path("song.flac");
    fs::write(&f, b"music").unwrap();
    let set = |ty: &str, attr: &str, val: &str| {
        gio_ok(
            &env,
            &[
                os("set"),
                os("-t"),
                os(ty),
                f.as_os_str(),
                os(attr),
                os(val),
            ],
        );
    };
    set("uint64", "time::modified", "1234567890");
    let m = meta(&f);
    assert_eq!(m.mtime(), 1_234_567_890, "gio set time::modified");
    set("uint32", "time::modified-nsec", "250000000");
    assert_eq!(
        (meta(&f).mtime(), meta(&f).mtime_nsec()),
        (1_234_567_890, 250_000_000),
        "gio set time::modified-nsec"
    );
    set("uint64", "time::access", "1000000000");
    assert_eq!(meta(&f).atime(), 1_000_000_000, "gio set time::access");
    set("uint32", "unix::mode", &(libc::S_IFREG | 0o600).to_string());
    assert_eq!(meta(&f).mode() & 0o7777, 0o600, "gio set unix::mode");
    // gio info reads the same back
    let r = gio_ok(
        &env,
        &[os("info"), os("-a"), os("time::modified"), f.as_os_str()],
    );
    assert!(r.stdout.contains("time::modified: 1234567890"), "{r}");

    v.remount();
    let m = meta(&f);
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_234_567_890, 250_000_000));
    assert_eq!(m.atime(), 1_000_000_000);
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_content(&f, b"music");
}

// ---------------------------------------------------------------------------
// 1 GiB copy with progress; thumbnailer-style random reads

/// A size as g_format_size prints it ("1.0 MB", "1.1 GB", "512 bytes"; the
/// separator is a no-break space, which the C locale prints as '?'), in bytes.
fn parse_size(s: &str) -> f64 {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or_else(|| panic!("no unit in size {s:?}"));
    let n: f64 = s[..split]
        .parse()
        .unwrap_or_else(|_| panic!("unparsable size {s:?}"));
    let unit = s[split..].trim_start_matches(|c: char| !c.is_ascii_alphabetic());
    let mult = match unit {
        "byte" | "bytes" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => panic!("unknown unit in {s:?}"),
    };
    n * mult
}

/// One progress line of `gio copy -p`: "Transferred X out of Y (Z/s)" -> (X, Y).
fn parse_progress(line: &str) -> Option<(String, String)> {
    let rest = line.split("Transferred ").nth(1)?;
    let (done, rest) = rest.split_once(" out of ")?;
    let (total, _) = rest.split_once(" (")?;
    Some((done.to_owned(), total.to_owned()))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn copy_1gib_with_progress_then_random_reads() {
    let Some((mut v, env)) = setup() else { return };
    let src = v.scratch.join("movie.mkv");
    write_random_file(&src, 42, GIB);
    let dst = v.path("movie.mkv");

    // gio copy -p, its progress read as it is printed (gio flushes each line)
    let mut c = env.session_cmd(
        "gio",
        &[os("copy"), os("-p"), src.as_os_str(), dst.as_os_str()],
    );
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut guard = GroupGuard(Some(c.spawn().expect("spawn dbus-run-session gio copy -p")));
    let mut stdout = guard.child().stdout.take().unwrap();
    let mut stderr = guard.child().stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<(Duration, String)>();
    let reader = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut pending = String::new();
        loop {
            let n = match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let at = t0.elapsed();
            pending.push_str(&String::from_utf8_lossy(&buf[..n]));
            // updates are separated by '\r' (and an ANSI erase-line)
            while let Some(i) = pending.find(['\r', '\n']) {
                let line: String = pending.drain(..=i).collect();
                if line.contains("Transferred") {
                    let _ = tx.send((at, line.trim().replace("\x1b[K", "")));
                }
            }
        }
        if pending.contains("Transferred") {
            let _ = tx.send((t0.elapsed(), pending.trim().replace("\x1b[K", "")));
        }
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(st) = guard.child().try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            guard.end();
            panic!("gio copy -p of 1 GiB did not finish within 900 s");
        }
        thread::sleep(Duration::from_millis(50));
    };
    guard.0 = None;
    let took = t0.elapsed();
    reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    let updates: Vec<(Duration, String)> = rx.try_iter().collect();
    assert!(status.success(), "gio copy -p failed ({status}): {stderr}");

    // progress: many updates, never decreasing, ending at the total, no long stall
    let parsed: Vec<(Duration, f64, String, String)> = updates
        .iter()
        .map(|(t, l)| {
            let (done, total) =
                parse_progress(l).unwrap_or_else(|| panic!("unparsable progress line {l:?}"));
            (*t, parse_size(&done), done, total)
        })
        .collect();
    let n = parsed.len();
    let max_gap = parsed
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .chain(parsed.first().map(|p| p.0))
        .max()
        .unwrap_or(took);
    eprintln!(
        "gio copy -p of 1 GiB into the mount: {took:.1?}, {n} progress updates, \
         longest gap between updates {max_gap:.2?}; first {:?}, last {:?}",
        updates.first().map(|u| &u.1),
        updates.last().map(|u| &u.1)
    );
    // gio reports every ~200 ms: a copy of a few seconds gives ≥ 10 (a run
    // here took 3.4 s and printed 19; the steadiness checks are the gaps
    // and monotonicity below).
    assert!(n >= 8, "only {n} progress updates: {updates:?}");
    for w in parsed.windows(2) {
        assert!(
            w[1].1 >= w[0].1,
            "progress went backwards: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    let distinct = {
        let mut d: Vec<u64> = parsed.iter().map(|p| p.1 as u64).collect();
        d.dedup();
        d.len()
    };
    assert!(
        distinct >= 8,
        "progress took only {distinct} distinct values: {updates:?}"
    );
    let (_, _, last_done, last_total) = parsed.last().unwrap();
    assert!(
        (parse_size(last_total) - 1.1e9).abs() < 1e6,
        "total shown by gio: {last_total}"
    );
    assert_eq!(last_done, last_total, "the last update is the full size");
    assert!(
        parsed[0].1 < 0.1 * parse_size(last_total),
        "the first update already showed {}",
        parsed[0].2
    );
    assert!(
        max_gap <= Duration::from_secs(15),
        "progress stalled for {max_gap:?} (took {took:?})"
    );
    assert_same_content(&src, &dst);

    // A thumbnailer reads a few ranges anywhere in the file: after a remount
    // with cold caches, random 4 KiB reads must return the right bytes quickly.
    v.remount();
    sync_all();
    if is_root() {
        let _ = fs::write("/proc/sys/vm/drop_caches", "3");
    }
    let f = File::open(&dst).unwrap();
    let s = File::open(&src).unwrap();
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    let mut lat = Vec::new();
    for _ in 0..200 {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let off = (rng_state % (GIB / 4096)) * 4096;
        let t = Instant::now();
        let got = pread_exact(&f, off, 4096).unwrap_or_else(|e| panic!("pread at {off}: {e}"));
        lat.push(t.elapsed());
        let mut want = vec![0u8; 4096];
        s.read_exact_at(&mut want, off).unwrap();
        assert_bytes_eq(&got, &want, &format!("4 KiB at offset {off}"));
    }
    lat.sort();
    let (p50, p99, max) = (
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        *lat.last().unwrap(),
    );
    eprintln!(
        "200 random 4 KiB reads of the 1 GiB file, cold: median {p50:.2?}, p99 {p99:.2?}, max {max:.2?}"
    );
    // generous bounds: they catch a read path that scans the file, not noise
    assert!(
        p50 <= Duration::from_millis(100),
        "median random read {p50:?}"
    );
    assert!(max <= Duration::from_secs(3), "slowest random read {max:?}");
}

#[test]
fn helpers_parse() {
    let close = |s: &str, want: f64| assert!((parse_size(s) - want).abs() < 1.0, "{s}");
    close("1.0 MB", 1e6);
    close("1.1\u{a0}GB", 1.1e9);
    close("1.1?GB", 1.1e9);
    close("512 bytes", 512.0);
    assert_eq!(
        parse_progress("Transferred 1.0 MB out of 1.1 GB (1.0 MB/s)"),
        Some(("1.0 MB".into(), "1.1 GB".into()))
    );
    assert_eq!(
        unescape_mountinfo(r"/tmp/a\040b\134c"),
        PathBuf::from("/tmp/a b\\c")
    );
    assert_eq!(unescape_mountinfo(r"/x\040"), PathBuf::from("/x "));
}

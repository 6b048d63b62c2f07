//! mount(8), /etc/fstab and umount(8): `mount -t fuse.tresor`, an fstab line
//! with `noauto,user` mounted by root and by an ordinary user, and the
//! `umount.fuse.tresor` helper.
//!
//! mount(8) resets PATH to /usr/local/sbin:/usr/local/bin:/usr/sbin:... before
//! it runs mount.fuse3, which runs `tresor`; and a user mount reads the real
//! /etc/fstab. So each test works in its own mount namespace (`unshare -m`,
//! private propagation) where the built binary is bind-mounted into
//! /usr/local/sbin, /run/mount (libmount's utab) is a fresh tmpfs and,
//! where needed, /etc/fstab is a test file and /usr/sbin has the umount
//! helper (overlayfs). Nothing of it, not even the FUSE mount, is visible
//! outside the namespace, and the namespace dies with its last process:
//! `Drop` unmounts, kills the daemon if it lingers, then the namespace's
//! holder process. Needs root.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const STEP: Duration = Duration::from_secs(120);
const TEST_USER: &str = "tresor-fstab-test";

/// The README's fstab line with this test's paths.
fn fstab_line(vault: &Path, mnt: &Path, passfile: &Path) -> String {
    format!(
        "{}  {}  fuse.tresor  noauto,user,nodev,nosuid,passphrase_file={}  0  0\n",
        vault.display(),
        mnt.display(),
        passfile.display()
    )
}

fn require_root() -> bool {
    if skip_mount_tests() {
        return false;
    }
    assert!(
        is_root(),
        "the fstab tests need root (mount namespaces, mount(8)); \
         set TRESOR_SKIP_MOUNT_TESTS=1 to skip mounted tests"
    );
    for (tool, pkg) in [
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("setpriv", "util-linux"),
        ("mount", "mount"),
        ("mount.fuse3", "fuse3"),
    ] {
        if which(tool).is_none() && !Path::new("/usr/sbin").join(tool).exists() {
            panic!("`{tool}` not found; install the Debian package `{pkg}`");
        }
    }
    true
}

/// A private mount namespace held open by a `sleep` process.
struct Ns {
    holder: Child,
    /// Temp dir: vault/, mnt/, passphrase, bin/ (tresor link), helper/ ...
    dir: tempfile::TempDir,
    root: PathBuf,
    vault: PathBuf,
    mnt: PathBuf,
    passfile: PathBuf,
}

impl Ns {
    /// A namespace with `tresor` on mount(8)'s PATH and an initialised
    /// vault whose passphrase file is mode 0600.
    fn new() -> Ns {
        let parent = std::env::var_os("TRESOR_TEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        fs::create_dir_all(&parent).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("tresor-fstab.")
            .tempdir_in(&parent)
            .unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let (vault, mnt, passfile) = (
            root.join("vault"),
            root.join("mnt"),
            root.join("passphrase"),
        );
        fs::create_dir(&mnt).unwrap();
        fs::create_dir(root.join("bin")).unwrap();
        std::os::unix::fs::symlink(tresor_bin(), root.join("bin/tresor")).unwrap();
        fs::write(&passfile, format!("{PASSPHRASE}\n")).unwrap();
        fs::set_permissions(&passfile, fs::Permissions::from_mode(0o600)).unwrap();
        run_bounded(
            Command::new(tresor_bin())
                .args(["init", "--vault"])
                .arg(&vault)
                .arg("--passphrase-file")
                .arg(&passfile)
                .env_remove("TRESOR_PASSPHRASE"),
            STEP,
        )
        .ok();
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start unshare --mount sleep");
        let ns = Ns {
            holder,
            dir,
            root,
            vault,
            mnt,
            passfile,
        };
        // unshare execs sleep once the namespace exists: wait for that.
        let pid = ns.holder.id();
        wait_until("unshare to enter its namespace", STEP, || {
            let mine = fs::read_link("/proc/self/ns/mnt").ok();
            let theirs = fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
            let exe = fs::read_link(format!("/proc/{pid}/exe")).ok();
            theirs.is_some()
                && theirs != mine
                && exe.is_some_and(|e| e.file_name().is_some_and(|n| n == "sleep"))
        });
        ns.sh(&format!(
            "mount --bind {bin} /usr/local/sbin && mkdir -p /run/mount && mount -t tmpfs tmpfs /run/mount",
            bin = ns.root.join("bin").display()
        ))
        .ok();
        ns
    }

    /// Runs `script` with /bin/sh inside the namespace (bounded).
    fn sh(&self, script: &str) -> Run {
        run_bounded(
            Command::new("nsenter")
                .arg("--target")
                .arg(self.holder.id().to_string())
                .args(["--mount", "--", "/bin/sh", "-c", script])
                .env_remove("TRESOR_PASSPHRASE"),
            STEP,
        )
    }

    /// Runs `script` as TEST_USER inside the namespace.
    fn sh_as_user(&self, script: &str) -> Run {
        let (uid, gid) = test_user();
        self.sh(&format!(
            "exec setpriv --reuid={uid} --regid={gid} --clear-groups -- /bin/sh -c '{}'",
            script.replace('\'', "'\\''")
        ))
    }

    /// Bind-mounts a file with `content` over /etc/fstab in the namespace.
    fn use_fstab(&self, content: &str) {
        let f = self.root.join("fstab");
        fs::write(&f, content).unwrap();
        self.sh(&format!("mount --bind {} /etc/fstab", f.display()))
            .ok();
    }

    /// Adds /sbin/umount.fuse.tresor (a link to tresor) in the namespace.
    fn install_umount_helper(&self) {
        let helper = self.root.join("helper");
        fs::create_dir(&helper).unwrap();
        std::os::unix::fs::symlink(tresor_bin(), helper.join("umount.fuse.tresor")).unwrap();
        self.sh(&format!(
            "mount -t overlay overlay -o lowerdir={}:/usr/sbin /usr/sbin && test -x /sbin/umount.fuse.tresor",
            helper.display()
        ))
        .ok();
    }

    /// "FSTYPE SOURCE" of the mount at `mnt` inside the namespace, or "".
    fn mount_info(&self) -> String {
        self.sh(&format!(
            "findmnt -n -o FSTYPE,SOURCE --mountpoint {} || true",
            self.mnt.display()
        ))
        .ok()
        .stdout
        .trim()
        .to_string()
    }

    fn daemon(&self) -> Option<u32> {
        find_daemon(&self.mnt)
    }

    fn wait_daemon_gone(&self, after: &str) {
        wait_until(
            &format!("the tresor daemon to exit after {after}"),
            Duration::from_secs(60),
            || self.daemon().is_none(),
        );
    }

    fn log(&self) -> String {
        fs::read_to_string(self.vault.join("tresor.log")).unwrap_or_default()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("nsenter")
            .arg("--target")
            .arg(self.holder.id().to_string())
            .args(["--mount", "--", "umount", "-l"])
            .arg(&self.mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(pid) = find_daemon(&self.mnt) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while pid_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if pid_alive(pid) {
                eprintln!("cleanup: daemon {pid} still alive; SIGKILL");
                // SAFETY: kill(2) on the daemon serving our own temp mountpoint.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        if std::env::var_os("TRESOR_KEEP_TEST_DIRS").is_some() {
            eprintln!("keeping {}", self.dir.path().display());
        }
    }
}

/// uid and gid of TEST_USER, created (system user, no home) if missing.
fn test_user() -> (u32, u32) {
    let lookup = || {
        let r = run_tool("getent", &["passwd".as_ref(), TEST_USER.as_ref()]);
        r.success().then(|| {
            let f: Vec<&str> = r.stdout.trim().split(':').collect();
            (f[2].parse().unwrap(), f[3].parse().unwrap())
        })
    };
    if let Some(ids) = lookup() {
        return ids;
    }
    // Another test may create it at the same moment: ignore "exists".
    let _ = run_tool(
        "useradd",
        &[
            "--system".as_ref(),
            "--user-group".as_ref(),
            "--no-create-home".as_ref(),
            "--shell".as_ref(),
            "/usr/sbin/nologin".as_ref(),
            TEST_USER.as_ref(),
        ],
    );
    lookup().unwrap_or_else(|| {
        panic!("cannot create the test user {TEST_USER} (useradd, package passwd)")
    })
}

fn chown_r(path: &Path, uid: u32, gid: u32) {
    run_tool(
        "chown",
        &[
            "-R".as_ref(),
            format!("{uid}:{gid}").as_ref(),
            path.as_os_str(),
        ],
    )
    .ok();
}

/// Writes a small and an 8 MiB file via `sh`; returns the sha256sum listing.
fn write_files(run: impl Fn(&str) -> Run, mnt: &Path) -> String {
    let m = mnt.display();
    run(&format!(
        "set -e; printf 'written through fstab\\n' > {m}/small; \
         head -c 8388608 /dev/urandom > {m}/big; cd {m} && sha256sum small big"
    ))
    .ok()
    .stdout
}

fn sums(run: impl Fn(&str) -> Run, mnt: &Path) -> String {
    run(&format!("cd {} && sha256sum small big", mnt.display()))
        .ok()
        .stdout
}

#[test]
fn mount_t_fuse_tresor_then_umount_keeps_everything() {
    if !require_root() {
        return;
    }
    let ns = Ns::new();
    let (v, m, p) = (ns.vault.display(), ns.mnt.display(), ns.passfile.display());
    ns.sh(&format!(
        "mount -t fuse.tresor {v} {m} -o passphrase_file={p},allow_other"
    ))
    .ok();
    assert_eq!(
        ns.mount_info(),
        format!("fuse.tresor tresor:{v}"),
        "mount -t fuse.tresor must leave a fuse.tresor mount of the vault"
    );
    assert!(ns.daemon().is_some(), "no daemon serving {m}");
    let before = write_files(|s| ns.sh(s), &ns.mnt);
    ns.sh(&format!("umount {m}")).ok();
    assert_eq!(ns.mount_info(), "", "still mounted after umount");
    ns.wait_daemon_gone("umount");
    assert!(
        ns.log().contains("everything flushed and committed"),
        "the daemon did not report its final flush:\n{}",
        ns.log()
    );
    // Again with the `tresor#VAULT` source form of type `fuse`.
    ns.sh(&format!(
        "mount -t fuse 'tresor#{v}' {m} -o passphrase_file={p}"
    ))
    .ok();
    assert_eq!(ns.mount_info(), format!("fuse.tresor tresor:{v}"));
    assert_eq!(
        sums(|s| ns.sh(s), &ns.mnt),
        before,
        "data after umount and remount"
    );
    ns.sh(&format!("umount {m}")).ok();
    // Mounting again at once, while the last daemon may still be finishing
    // its unmount (xfstests' generic/604 races the two): the mount waits
    // for it and, like mount(8), prints nothing.
    let again = ns
        .sh(&format!(
            "mount -t fuse.tresor {v} {m} -o passphrase_file={p},allow_other"
        ))
        .ok();
    assert_eq!(
        (again.stdout.as_str(), again.stderr.as_str()),
        ("", ""),
        "a mount right after an umount must be silent"
    );
    assert_eq!(
        sums(|s| ns.sh(s), &ns.mnt),
        before,
        "data after the racing mount"
    );
    ns.sh(&format!("umount {m}")).ok();
    ns.wait_daemon_gone("the third umount");
}

#[test]
fn fstab_line_mounts_by_mountpoint() {
    if !require_root() {
        return;
    }
    let ns = Ns::new();
    let fstab = ns.root.join("fstab.alt");
    fs::write(&fstab, fstab_line(&ns.vault, &ns.mnt, &ns.passfile)).unwrap();
    let m = ns.mnt.display();
    // `mount --fstab FILE MOUNTPOINT` as root: the entry's options, incl. `user`.
    ns.sh(&format!("mount --fstab {} {m}", fstab.display()))
        .ok();
    assert!(
        ns.mount_info().starts_with("fuse.tresor "),
        "{}",
        ns.mount_info()
    );
    let opts = ns
        .sh(&format!("findmnt -n -o OPTIONS --mountpoint {m}"))
        .ok()
        .stdout;
    for o in ["nosuid", "nodev", "noexec"] {
        assert!(
            opts.contains(o),
            "`user` implies {o}; mount options: {opts}"
        );
    }
    let before = write_files(|s| ns.sh(s), &ns.mnt);
    ns.sh(&format!("umount {m}")).ok();
    ns.wait_daemon_gone("umount");
    ns.sh(&format!("mount --fstab {} {m}", fstab.display()))
        .ok();
    assert_eq!(sums(|s| ns.sh(s), &ns.mnt), before);
    ns.sh(&format!("umount {m}")).ok();
    ns.wait_daemon_gone("umount");
}

/// `noauto,user`: an ordinary user mounts and unmounts with plain
/// `mount MOUNTPOINT` / `umount MOUNTPOINT` (setuid mount(8) checks the fstab
/// entry, mount.fuse3 and tresor run as the user, fusermount3 mounts).
#[test]
fn fstab_user_mount_by_ordinary_user() {
    if !require_root() {
        return;
    }
    let ns = Ns::new();
    let (uid, gid) = test_user();
    // The user's own vault: its root directory belongs to whoever ran init.
    fs::remove_dir_all(&ns.vault).unwrap();
    chown_r(&ns.mnt, uid, gid);
    chown_r(&ns.passfile, uid, gid);
    fs::set_permissions(&ns.root, fs::Permissions::from_mode(0o777)).unwrap();
    ns.sh_as_user(&format!(
        "{} init --vault {} --passphrase-file {}",
        tresor_bin().display(),
        ns.vault.display(),
        ns.passfile.display()
    ))
    .ok();
    fs::set_permissions(&ns.root, fs::Permissions::from_mode(0o755)).unwrap();
    ns.use_fstab(&fstab_line(&ns.vault, &ns.mnt, &ns.passfile));
    // umount.fuse.tresor makes the user's `umount` wait for the flush too
    ns.install_umount_helper();
    let m = ns.mnt.display();
    let mount = ns.sh_as_user(&format!("mount {m}"));
    assert!(mount.success(), "user mount failed: {mount}\n{}", ns.log());
    assert!(
        ns.mount_info().starts_with("fuse.tresor "),
        "{}",
        ns.mount_info()
    );
    let daemon = ns.daemon().expect("daemon of the user mount");
    let status = fs::read_to_string(format!("/proc/{daemon}/status")).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some(&uid.to_string())),
        "the daemon of a user mount must run as the user:\n{status}"
    );
    let before = write_files(|s| ns.sh_as_user(s), &ns.mnt);
    ns.sh_as_user(&format!("umount {m}")).ok();
    assert_eq!(ns.mount_info(), "", "still mounted after the user's umount");
    assert!(
        !pid_alive(daemon),
        "the user's umount returned while the daemon (pid {daemon}) was still flushing"
    );
    ns.sh_as_user(&format!("mount {m}")).ok();
    assert_eq!(sums(|s| ns.sh_as_user(s), &ns.mnt), before);
    ns.sh_as_user(&format!("umount {m}")).ok();
    ns.wait_daemon_gone("the user's second umount");

    // Root mounting the user's vault for them (e.g. at boot): mount.fuse3's
    // setuid=USER runs tresor as the user.
    let (v, p) = (ns.vault.display(), ns.passfile.display());
    ns.sh(&format!(
        "mount -t fuse.tresor {v} {m} -o setuid={TEST_USER},passphrase_file={p}"
    ))
    .ok();
    let daemon = ns.daemon().expect("daemon of the setuid= mount");
    let status = fs::read_to_string(format!("/proc/{daemon}/status")).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some(&uid.to_string())),
        "setuid={TEST_USER}: the daemon must run as the user:\n{status}"
    );
    assert_eq!(sums(|s| ns.sh_as_user(s), &ns.mnt), before);
    ns.sh_as_user(&format!("umount {m}")).ok();
    assert!(
        !pid_alive(daemon),
        "umount returned before the daemon exited"
    );
}

/// With tresor linked as /sbin/umount.fuse.tresor, `umount` returns only
/// after the daemon has flushed, committed and exited. (As root, umount(8)
/// looks for helpers only when the mount has an entry in utab, which the
/// fstab line's `user` gives it; users' umounts always look.)
#[test]
fn umount_helper_returns_after_the_flush() {
    if !require_root() {
        return;
    }
    let ns = Ns::new();
    ns.install_umount_helper();
    ns.use_fstab(&fstab_line(&ns.vault, &ns.mnt, &ns.passfile));
    let m = ns.mnt.display();
    ns.sh(&format!("mount {m}")).ok();
    let daemon = ns.daemon().expect("daemon");
    let before = write_files(|s| ns.sh(s), &ns.mnt);
    ns.sh(&format!("umount {m}")).ok();
    assert!(
        !pid_alive(daemon),
        "umount returned while the daemon (pid {daemon}) was still running"
    );
    assert!(ns.log().contains("everything flushed and committed"));
    ns.sh(&format!("mount {m}")).ok();
    assert_eq!(sums(|s| ns.sh(s), &ns.mnt), before);
    // -l (lazy) goes through the helper too and detaches at once.
    ns.sh(&format!("umount -l {m}")).ok();
    assert_eq!(ns.mount_info(), "");
    ns.wait_daemon_gone("umount -l");
}

/// `mount -o remount,ro` makes the mount read-only in place (same daemon,
/// writes fail with EROFS, reads work) and `remount,rw` makes it writable
/// again; mount(8) runs the helper form (through mount.fuse3) with
/// `remount` among the mount's options.
#[test]
fn remount_ro_and_back_to_rw() {
    if !require_root() {
        return;
    }
    let ns = Ns::new();
    let (v, m, p) = (ns.vault.display(), ns.mnt.display(), ns.passfile.display());
    ns.sh(&format!(
        "mount -t fuse.tresor {v} {m} -o passphrase_file={p},nosuid,nodev"
    ))
    .ok();
    let daemon = ns.daemon().expect("daemon");
    let before = write_files(|s| ns.sh(s), &ns.mnt);
    let options = || {
        ns.sh(&format!("findmnt -n -o OPTIONS --mountpoint {m}"))
            .ok()
            .stdout
            .trim()
            .to_string()
    };
    ns.sh(&format!("mount -o remount,ro {m}")).ok();
    let ro = options();
    assert!(ro.starts_with("ro,"), "after remount,ro: {ro}");
    assert!(
        ro.contains("nosuid") && ro.contains("nodev"),
        "remount dropped the mount's flags: {ro}"
    );
    let r = ns.sh(&format!("touch {m}/new")).failed();
    assert!(r.stderr.contains("Read-only file system"), "{r}");
    let r = ns.sh(&format!("echo more >> {m}/small")).failed();
    assert!(r.stderr.contains("Read-only file system"), "{r}");
    assert_eq!(sums(|s| ns.sh(s), &ns.mnt), before, "reads while ro");
    assert_eq!(ns.daemon(), Some(daemon), "a remount must keep the daemon");

    ns.sh(&format!("mount -o remount,rw {m}")).ok();
    assert!(
        options().starts_with("rw,"),
        "after remount,rw: {}",
        options()
    );
    ns.sh(&format!("touch {m}/new && echo more >> {m}/small"))
        .ok();
    ns.sh(&format!("umount {m}")).ok();
    ns.wait_daemon_gone("umount");
    ns.sh(&format!(
        "mount -t fuse.tresor {v} {m} -o passphrase_file={p} && test -e {m}/new"
    ))
    .ok();
    ns.sh(&format!("umount {m}")).ok();
    ns.wait_daemon_gone("the second umount");
}

/// The mount-helper form's errors: each says what is wrong and what to do,
/// with the documented exit code. No mount needed.
#[test]
fn mount_helper_form_errors() {
    let v = TestVault::new_unchecked();
    let run = |args: &[&str]| {
        run_bounded(
            v.cmd()
                .arg(&v.vault)
                .arg(&v.mnt)
                .args(args)
                .stdin(Stdio::null()),
            STEP,
        )
    };
    // fs::write made the passphrase file 0644
    let r = run(&["-o", &format!("passphrase_file={}", v.passfile.display())]).failed();
    assert_eq!(r.status.code(), Some(1), "{r}");
    assert!(r.stderr.contains("chmod 600"), "{r}");
    fs::set_permissions(&v.passfile, fs::Permissions::from_mode(0o600)).unwrap();

    let r = run(&["-o", "rw,bogus"]).failed();
    assert_eq!(r.status.code(), Some(2), "{r}");
    assert!(r.stderr.contains("unknown mount option `bogus`"), "{r}");

    let r = run(&["-o", "passphrase=hunter2"]).failed();
    assert_eq!(r.status.code(), Some(2), "{r}");
    assert!(r.stderr.contains("passphrase_file=FILE"), "{r}");

    let r = run(&[]).failed();
    assert!(
        r.stderr.contains("add passphrase_file="),
        "no passphrase source: {r}"
    );

    let wrong = v.root_path.join("wrong");
    fs::write(&wrong, "not the passphrase\n").unwrap();
    fs::set_permissions(&wrong, fs::Permissions::from_mode(0o600)).unwrap();
    let r = run(&["-o", &format!("passphrase_file={}", wrong.display())]).failed();
    assert_eq!(r.status.code(), Some(3), "wrong passphrase: {r}");

    let r = run_bounded(
        v.cmd()
            .arg(&v.vault)
            .arg("/dev/fd/7")
            .args(["-o", "rw"])
            .stdin(Stdio::null()),
        STEP,
    )
    .failed();
    assert!(r.stderr.contains("drop_privileges"), "{r}");

    // a mistyped subcommand is still clap's usage error, not a mount attempt
    let r = v.tresor(&["mout".as_ref(), "x".as_ref()]).failed();
    assert_eq!(r.status.code(), Some(2), "{r}");
    assert!(r.stderr.contains("unrecognized subcommand"), "{r}");
}

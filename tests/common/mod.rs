//! Test fixture for the mounted integration tests: a throw-away vault in a
//! temp dir, mounted through the real `tresor` binary on a real FUSE mount.
//!
//! Rules every test built on this follows:
//! - A mounted test fails (never silently skips) when FUSE is unusable; the
//!   only way to skip is `TRESOR_SKIP_MOUNT_TESTS=1`, which prints a notice.
//! - Every wait is bounded and panics with what it waited for.
//! - A test that panics still leaves no mount behind: `Drop` runs
//!   `tresor unmount`, then `fusermount3 -u -z`, then SIGKILLs the daemon.
//! - A watchdog SIGKILLs the daemon and lazily unmounts once a vault has
//!   lived longer than `TRESOR_TEST_TIMEOUT` seconds (default 900), so a
//!   hung daemon turns blocked syscalls into errors instead of a hung run.
//!
//! Environment knobs: `TRESOR_BIN` (binary under test, default the one cargo
//! built), `TRESOR_TEST_DIR` (parent of the temp dirs, default the system
//! temp dir), `TRESOR_SKIP_MOUNT_TESTS`, `TRESOR_TEST_TIMEOUT`,
//! `TRESOR_KEEP_TEST_DIRS` (keep each test's temp dir for inspection).
#![allow(dead_code)]

pub mod servers;
pub mod tree;

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

pub const PASSPHRASE: &str = "tresor-test correct horse battery staple";
pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * 1024 * 1024;

/// How long a `tresor` CLI command (init, mount, unmount, status) may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a mount may take to appear / disappear, or a daemon to exit.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);

pub fn tresor_bin() -> PathBuf {
    std::env::var_os("TRESOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tresor")))
}

/// Returns true if mounted tests must be skipped (`TRESOR_SKIP_MOUNT_TESTS=1`);
/// otherwise panics unless `/dev/fuse` can be opened and `fusermount3` exists.
pub fn skip_mount_tests() -> bool {
    if std::env::var("TRESOR_SKIP_MOUNT_TESTS").as_deref() == Ok("1") {
        eprintln!("TRESOR_SKIP_MOUNT_TESTS=1: skipping a mounted test");
        return true;
    }
    let usable = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .and_then(|f| f.metadata())
        .map_err(|e| e.to_string())
        .and_then(|m| {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            // the FUSE device is char 10:229; anything else is a stand-in
            if m.file_type().is_char_device() && m.rdev() == libc::makedev(10, 229) {
                Ok(())
            } else {
                Err(format!("it is not the FUSE device (rdev {:#x})", m.rdev()))
            }
        });
    if let Err(e) = usable {
        panic!(
            "/dev/fuse is unusable ({e}); mounted tests need FUSE \
             (set TRESOR_SKIP_MOUNT_TESTS=1 to skip them explicitly)"
        );
    }
    if which("fusermount3").is_none() {
        panic!("fusermount3 not found in PATH (Debian package fuse3)");
    }
    false
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Panics with a helpful message if an external tool a test needs is missing.
pub fn require_tool(tool: &str, package: &str) {
    if which(tool).is_none() {
        panic!("`{tool}` not found in PATH; install the Debian package `{package}`");
    }
}

// ---------------------------------------------------------------------------
// Running commands with a bound

/// Output of a finished command.
#[derive(Debug)]
pub struct Run {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status.success()
    }
    /// Panics with the command, its exit status and both outputs unless it succeeded.
    pub fn ok(self) -> Self {
        assert!(self.success(), "command failed: {self}");
        self
    }
    /// Panics unless the command failed.
    pub fn failed(self) -> Self {
        assert!(!self.success(), "command unexpectedly succeeded: {self}");
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` -> {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` with stdin closed and stdout/stderr captured in temp files (not
/// pipes: a daemonising child may keep inherited pipes open forever). Kills it
/// and panics after `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Run {
    let what = format!("{cmd:?}");
    let mut out = tempfile::tempfile().expect("tempfile for stdout");
    let mut err = tempfile::tempfile().expect("tempfile for stderr");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup stdout file"))
        .stderr(err.try_clone().expect("dup stderr file"));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("timed out after {timeout:?} waiting for {what} to exit");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let read_all = |f: &mut File| {
        use std::io::Seek;
        let mut s = Vec::new();
        f.seek(io::SeekFrom::Start(0)).expect("seek");
        f.read_to_end(&mut s).expect("read captured output");
        String::from_utf8_lossy(&s).into_owned()
    };
    Run {
        what,
        status,
        stdout: read_all(&mut out),
        stderr: read_all(&mut err),
    }
}

/// Runs an external tool (rsync, setfacl, ...) with a 10-minute bound.
pub fn run_tool(program: &str, args: &[&OsStr]) -> Run {
    run_bounded(Command::new(program).args(args), Duration::from_secs(600))
}

/// Polls `cond` every 20 ms until it is true; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Mount table and processes

/// Filesystem type of the mount at exactly `path` in /proc/self/mountinfo
/// (the last one, if stacked), or None.
pub fn mount_type(path: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let want = path.as_os_str().as_bytes();
    let mut found = None;
    for line in info.lines() {
        let (pre, post) = match line.split_once(" - ") {
            Some(x) => x,
            None => continue,
        };
        let mountpoint = match pre.split(' ').nth(4) {
            Some(m) => unescape_mountinfo(m),
            None => continue,
        };
        if mountpoint == want {
            found = post.split(' ').next().map(str::to_owned);
        }
    }
    found
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

pub fn is_fuse_mounted(path: &Path) -> bool {
    matches!(mount_type(path), Some(t) if t == "fuse" || t.starts_with("fuse."))
}

fn cmdline(pid: u32) -> Option<Vec<OsString>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| OsStr::from_bytes(a).to_owned())
            .collect(),
    )
}

fn holds_dev_fuse(pid: u32) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t == Path::new("/dev/fuse")))
}

/// True if `pid` exists and is not a zombie.
/// Whether nobody holds `daemon.lock` (a shared, non-blocking flock works).
pub fn vault_lock_free(lock: &Path) -> bool {
    let Ok(f) = File::open(lock) else {
        return true;
    };
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor this function owns; released when
    // `f` is dropped.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) == 0 }
}

pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => !s.lines().any(|l| {
            l.starts_with("State:") && (l.contains("Z (zombie)") || l.contains("X (dead)"))
        }),
        Err(_) => false,
    }
}

/// The daemon serving `mnt`: a process (not us) whose command line has an
/// argument equal to `mnt` and which holds /dev/fuse open. The mountpoint is a
/// unique temp path, so this finds only the daemon this fixture started.
pub fn find_daemon(mnt: &Path) -> Option<u32> {
    let me = std::process::id();
    let mut candidates = Vec::new();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || !pid_alive(pid) {
            continue;
        }
        let Some(args) = cmdline(pid) else { continue };
        if args.iter().any(|a| Path::new(a) == mnt) {
            candidates.push(pid);
        }
    }
    // A lingering `fusermount3` helper (auto_unmount) names the mountpoint
    // too: prefer the process that is not one.
    let is_helper = |pid: u32| {
        cmdline(pid)
            .and_then(|a| a.first().cloned())
            .is_some_and(|a0| {
                Path::new(&a0)
                    .file_name()
                    .is_some_and(|n| n.as_bytes().starts_with(b"fusermount"))
            })
    };
    candidates.sort_by_key(|&p| is_helper(p));
    candidates.iter().copied().find(|&p| holds_dev_fuse(p))
}

// ---------------------------------------------------------------------------
// The vault fixture

pub struct TestVault {
    /// Root temp dir: holds `vault/`, `mnt/`, `passphrase`, `scratch/`.
    root: Option<tempfile::TempDir>,
    pub root_path: PathBuf,
    pub vault: PathBuf,
    pub mnt: PathBuf,
    pub passfile: PathBuf,
    /// Outside the mount, same disk: for source trees and reference files.
    pub scratch: PathBuf,
    /// stdout of `tresor init` (holds the recovery key).
    pub init_output: String,
    /// Extra `-o` options passed on every mount.
    pub mount_opts: Vec<String>,
    /// Extra environment for every `tresor` command (and so the daemon).
    pub env: Vec<(String, String)>,
    daemon: Option<u32>,
    watchdog_stop: Arc<AtomicBool>,
}

impl TestVault {
    /// A new, initialised but unmounted vault; `None` if mounted tests are skipped.
    pub fn new() -> Option<Self> {
        if skip_mount_tests() {
            return None;
        }
        Some(Self::new_unchecked())
    }

    /// A new, initialised and mounted vault; `None` if mounted tests are skipped.
    pub fn mounted() -> Option<Self> {
        let mut v = Self::new()?;
        v.mount();
        Some(v)
    }

    /// Creates and initialises a vault without checking FUSE (for CLI-only tests).
    pub fn new_unchecked() -> Self {
        let mut v = Self::uninitialised();
        let run = v.init();
        let run = run.ok();
        v.init_output = run.stdout;
        v
    }

    /// Temp dirs and passphrase file, but no `tresor init` yet.
    pub fn uninitialised() -> Self {
        let parent = std::env::var_os("TRESOR_TEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        fs::create_dir_all(&parent).expect("create TRESOR_TEST_DIR");
        let root = tempfile::Builder::new()
            .prefix("tresor-test.")
            .tempdir_in(&parent)
            .expect("create temp dir");
        // Canonical, so it matches /proc/self/mountinfo and the daemon's argv.
        let root_path = root.path().canonicalize().expect("canonicalize temp dir");
        let mnt = root_path.join("mnt");
        let scratch = root_path.join("scratch");
        fs::create_dir(&mnt).expect("create mountpoint");
        fs::create_dir(&scratch).expect("create scratch dir");
        let passfile = root_path.join("passphrase");
        fs::write(&passfile, format!("{PASSPHRASE}\n")).expect("write passphrase file");
        let stop = Arc::new(AtomicBool::new(false));
        let v = TestVault {
            vault: root_path.join("vault"),
            root: Some(root),
            root_path,
            mnt,
            passfile,
            scratch,
            init_output: String::new(),
            mount_opts: Vec::new(),
            env: Vec::new(),
            daemon: None,
            watchdog_stop: stop.clone(),
        };
        v.start_watchdog(stop);
        v
    }

    fn start_watchdog(&self, stop: Arc<AtomicBool>) {
        let secs: u64 = std::env::var("TRESOR_TEST_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(900);
        let mnt = self.mnt.clone();
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < deadline {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                thread::sleep(Duration::from_millis(200));
            }
            eprintln!(
                "WATCHDOG: test vault at {} alive for more than {secs}s \
                 (TRESOR_TEST_TIMEOUT); killing its daemon and unmounting",
                mnt.display()
            );
            if let Some(pid) = find_daemon(&mnt) {
                // SAFETY: plain kill(2) on a pid we found serving our mountpoint.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&mnt)
                .stdin(Stdio::null())
                .status();
        });
    }

    /// A `tresor` command with a clean environment: no `TRESOR_PASSPHRASE`,
    /// `XDG_DATA_HOME` inside the temp dir so nothing outside it is touched.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(tresor_bin());
        c.env_remove("TRESOR_PASSPHRASE")
            .env("XDG_DATA_HOME", self.root_path.join("xdg"));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs `tresor ARGS` (bounded), without checking the result.
    pub fn tresor(&self, args: &[&OsStr]) -> Run {
        run_bounded(self.cmd().args(args), CLI_TIMEOUT)
    }

    /// `tresor CMD... --vault V [--passphrase-file P] EXTRA...`, unchecked.
    pub fn tresor_cmd(&self, cmd: &[&str], extra: &[&str], with_pass: bool) -> Run {
        let mut a: Vec<&OsStr> = cmd.iter().map(OsStr::new).collect();
        a.push("--vault".as_ref());
        a.push(self.vault.as_os_str());
        if with_pass {
            a.push("--passphrase-file".as_ref());
            a.push(self.passfile.as_os_str());
        }
        a.extend(extra.iter().map(OsStr::new));
        self.tresor(&a)
    }

    /// `tresor init --vault V --passphrase-file P`, unchecked.
    pub fn init(&self) -> Run {
        self.tresor(&[
            "init".as_ref(),
            "--vault".as_ref(),
            self.vault.as_os_str(),
            "--passphrase-file".as_ref(),
            self.passfile.as_os_str(),
        ])
    }

    /// `tresor mount` of this vault on `mountpoint` with this vault's options, unchecked.
    pub fn try_mount_at(&self, mountpoint: &Path) -> Run {
        let mut c = self.cmd();
        c.arg("mount")
            .arg("--vault")
            .arg(&self.vault)
            .arg("--passphrase-file")
            .arg(&self.passfile);
        if !self.mount_opts.is_empty() {
            c.arg("-o").arg(self.mount_opts.join(","));
        }
        c.arg(mountpoint);
        run_bounded(&mut c, CLI_TIMEOUT)
    }

    /// Mounts the vault on `self.mnt`; panics unless it is a FUSE mount served
    /// by a live daemon when `tresor mount` returns.
    pub fn mount(&mut self) {
        self.mount_saying();
    }

    /// [`TestVault::mount`], returning what `tresor mount` printed.
    pub fn mount_saying(&mut self) -> Run {
        assert!(
            !is_fuse_mounted(&self.mnt),
            "mount(): {} is already mounted",
            self.mnt.display()
        );
        let run = self.try_mount_at(&self.mnt);
        assert!(
            run.success(),
            "tresor mount failed: {run}\n{}",
            self.log_tail()
        );
        // The contract says mount returns once the mount is ready: no waiting here.
        assert!(
            is_fuse_mounted(&self.mnt),
            "tresor mount returned 0 but {} is not a FUSE mount (type {:?})",
            self.mnt.display(),
            mount_type(&self.mnt)
        );
        let mut pid = None;
        wait_until(
            "the tresor daemon to show up in /proc",
            Duration::from_secs(10),
            || {
                pid = find_daemon(&self.mnt);
                pid.is_some()
            },
        );
        self.daemon = pid;
        run
    }

    /// Pid of the daemon serving the current mount (found at mount time).
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.expect("daemon_pid(): vault is not mounted")
    }

    pub fn daemon_alive(&self) -> bool {
        self.daemon.is_some_and(pid_alive)
    }

    fn wait_daemon_exit(&mut self, how: &str) {
        if let Some(pid) = self.daemon.take() {
            wait_until(
                &format!("daemon {pid} to exit after {how}"),
                MOUNT_TIMEOUT,
                || !pid_alive(pid),
            );
            // A killed daemon's leader can be a zombie while another of its
            // threads still finishes an fsync; the vault lock (and so the
            // vault) is free only once the last thread is gone.
            let lock = self.vault.join("daemon.lock");
            wait_until(
                &format!("the vault lock to be free after {how}"),
                MOUNT_TIMEOUT,
                || vault_lock_free(&lock),
            );
        }
    }

    /// `tresor unmount MNT`; panics unless it succeeds, the mount is gone and
    /// the daemon has exited.
    pub fn unmount(&mut self) {
        let run = self.tresor(&["unmount".as_ref(), self.mnt.as_os_str()]);
        assert!(
            run.success(),
            "tresor unmount failed: {run}\n{}",
            self.log_tail()
        );
        assert!(
            !is_fuse_mounted(&self.mnt),
            "tresor unmount returned 0 but {} is still mounted",
            self.mnt.display()
        );
        // The contract says unmount returns after the daemon has exited; allow
        // a short grace for /proc to reflect a reaped process.
        if let Some(pid) = self.daemon.take() {
            wait_until(
                &format!("daemon {pid} to be gone after `tresor unmount` returned"),
                Duration::from_secs(5),
                || !pid_alive(pid),
            );
        }
    }

    /// Plain `fusermount3 -u` (no tresor involvement), then waits for the daemon to exit.
    pub fn fusermount_unmount(&mut self) {
        let run = run_tool("fusermount3", &["-u".as_ref(), self.mnt.as_os_str()]);
        assert!(run.success(), "fusermount3 -u failed: {run}");
        wait_until(
            "mount to disappear after fusermount3 -u",
            MOUNT_TIMEOUT,
            || !is_fuse_mounted(&self.mnt),
        );
        self.wait_daemon_exit("fusermount3 -u");
    }

    pub fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    /// SIGKILLs the daemon, waits for it to die, then `fusermount3 -u -z` the dead mount.
    pub fn kill9(&mut self) {
        let pid = self.daemon_pid();
        eprintln!("kill -9 {pid} (daemon of {})", self.mnt.display());
        // SAFETY: kill(2) on the daemon pid this fixture found serving its mountpoint.
        let rc = unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill -9 {pid}: {}", io::Error::last_os_error());
        self.wait_daemon_exit("kill -9");
        // (an auto_unmount helper may have unmounted it already)
        if is_fuse_mounted(&self.mnt) {
            let run = run_tool(
                "fusermount3",
                &["-u".as_ref(), "-z".as_ref(), self.mnt.as_os_str()],
            );
            if !run.success() && is_fuse_mounted(&self.mnt) {
                panic!("fusermount3 -u -z of the dead mount failed: {run}");
            }
        }
        wait_until(
            "dead mount to disappear after fusermount3 -u -z",
            MOUNT_TIMEOUT,
            || !is_fuse_mounted(&self.mnt),
        );
    }

    /// `tresor status --json` (vault must not be mounted, to keep the contract
    /// question of concurrent access out of the tests).
    pub fn status_json(&self) -> serde_json::Value {
        let run = self
            .tresor(&[
                "status".as_ref(),
                "--vault".as_ref(),
                self.vault.as_os_str(),
                "--passphrase-file".as_ref(),
                self.passfile.as_os_str(),
                "--json".as_ref(),
            ])
            .ok();
        serde_json::from_str(run.stdout.trim())
            .unwrap_or_else(|e| panic!("status --json did not print one JSON object ({e}): {run}"))
    }

    /// `stored_bytes` from `status --json`, cross-checked against the sum of
    /// the pack objects under `DIR/store/packs`.
    pub fn stored_bytes(&self) -> u64 {
        let json = self.status_json();
        let stored = json["stored_bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("status --json has no integer stored_bytes: {json}"));
        let on_disk = dir_bytes(&self.vault.join("store").join("packs"));
        assert_eq!(
            stored, on_disk,
            "status stored_bytes ({stored}) != sum of pack object sizes under store/packs ({on_disk})"
        );
        stored
    }

    /// Pack object files under `DIR/store/packs`, sorted.
    pub fn pack_files(&self) -> Vec<PathBuf> {
        let mut v = files_under(&self.vault.join("store").join("packs"));
        v.sort();
        v
    }

    pub fn log_path(&self) -> PathBuf {
        self.vault.join("tresor.log")
    }

    pub fn log_tail(&self) -> String {
        match fs::read(self.log_path()) {
            Ok(b) => {
                let s = String::from_utf8_lossy(&b);
                let lines: Vec<&str> = s.lines().collect();
                let start = lines.len().saturating_sub(30);
                format!(
                    "--- tail of {} ---\n{}",
                    self.log_path().display(),
                    lines[start..].join("\n")
                )
            }
            Err(e) => format!("(no {}: {e})", self.log_path().display()),
        }
    }

    /// Path inside the mount.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(rel)
    }
}

impl Drop for TestVault {
    fn drop(&mut self) {
        self.watchdog_stop.store(true, Ordering::Relaxed);
        if is_fuse_mounted(&self.mnt) {
            let mut c = self.cmd();
            c.arg("unmount")
                .arg(&self.mnt)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Ok(mut child) = c.spawn() {
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if is_fuse_mounted(&self.mnt) {
            eprintln!("cleanup: lazy unmount of {}", self.mnt.display());
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.mnt)
                .stdin(Stdio::null())
                .status();
        }
        let pid = self.daemon.or_else(|| find_daemon(&self.mnt));
        if let Some(pid) = pid {
            let deadline = Instant::now() + Duration::from_secs(10);
            while pid_alive(pid) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            if pid_alive(pid) {
                eprintln!("cleanup: daemon {pid} still alive; SIGKILL");
                // SAFETY: kill(2) on the daemon serving our own temp mountpoint.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        if let Some(root) = self.root.take() {
            if mount_type(&self.mnt).is_some()
                || std::env::var_os("TRESOR_KEEP_TEST_DIRS").is_some()
            {
                eprintln!("cleanup: keeping {}", root.path().display());
                let _ = root.keep();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Data helpers

/// `len` deterministic pseudo-random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Writes `len` pseudo-random bytes from `seed` to `path` in 1 MiB blocks.
pub fn write_random_file(path: &Path, seed: u64, len: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        left -= n as u64;
    }
}

/// Copies `src` to `dst` in 1 MiB blocks (like `cp`, but with a clear panic).
pub fn copy_file(src: &Path, dst: &Path) {
    let mut r = File::open(src).unwrap_or_else(|e| panic!("open {}: {e}", src.display()));
    let mut w = File::create(dst).unwrap_or_else(|e| panic!("create {}: {e}", dst.display()));
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = r
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("write {}: {e}", dst.display()));
    }
}

/// blake3 of a file's content, streamed.
pub fn file_hash(path: &Path) -> blake3::Hash {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize()
}

/// Panics with the first differing offset unless both files have equal content.
pub fn assert_same_content(expected: &Path, actual: &Path) {
    let mut a = File::open(expected).unwrap_or_else(|e| panic!("open {}: {e}", expected.display()));
    let mut b = File::open(actual).unwrap_or_else(|e| panic!("open {}: {e}", actual.display()));
    let (la, lb) = (a.metadata().unwrap().len(), b.metadata().unwrap().len());
    assert_eq!(
        la,
        lb,
        "size of {} ({lb}) != size of {} ({la})",
        actual.display(),
        expected.display()
    );
    let mut ba = vec![0u8; MIB as usize];
    let mut bb = vec![0u8; MIB as usize];
    let mut off = 0u64;
    loop {
        let n = read_full(&mut a, &mut ba).unwrap();
        let m = read_full(&mut b, &mut bb)
            .unwrap_or_else(|e| panic!("read {} at {off}: {e}", actual.display()));
        assert_eq!(n, m, "short read of {} at offset {off}", actual.display());
        if n == 0 {
            return;
        }
        if ba[..n] != bb[..n] {
            let i = (0..n).find(|&i| ba[i] != bb[i]).unwrap();
            panic!(
                "{} differs from {} at offset {}: expected {:#04x}, got {:#04x}",
                actual.display(),
                expected.display(),
                off + i as u64,
                ba[i],
                bb[i]
            );
        }
        off += n as u64;
    }
}

/// Asserts that a file's content equals `expected`, printing the first difference.
pub fn assert_content(path: &Path, expected: &[u8]) {
    let got = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_bytes_eq(&got, expected, &path.display().to_string());
}

pub fn assert_bytes_eq(got: &[u8], expected: &[u8], what: &str) {
    if got == expected {
        return;
    }
    let first = got.iter().zip(expected).position(|(a, b)| a != b);
    match first {
        Some(i) => panic!(
            "{what}: content differs at offset {i} (expected {:#04x}, got {:#04x}; len expected {}, got {})",
            expected[i],
            got[i],
            expected.len(),
            got.len()
        ),
        None => panic!(
            "{what}: length differs: expected {} bytes, got {} (common prefix equal)",
            expected.len(),
            got.len()
        ),
    }
}

/// Reads until `buf` is full or EOF; returns the bytes read.
pub fn read_full(f: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads `len` bytes at `offset` with pread.
pub fn pread_exact(f: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Regular files below `dir`, recursively (symlinks not followed); empty if `dir` is missing.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// Sum of the sizes of the regular files below `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Hashes of every regular file below `dir` (relative path -> blake3).
pub fn tree_hashes(dir: &Path) -> std::collections::BTreeMap<PathBuf, blake3::Hash> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let h = file_hash(&p);
            (p.strip_prefix(dir).unwrap().to_path_buf(), h)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// libc glue

pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path contains NUL")
}

/// Turns a libc return value into io::Result (-1 -> last OS error).
/// The error is the plain OS error, so tests can compare its raw errno;
/// `what` names the call for readers of the test.
pub fn check(rc: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    let _ = what;
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// errno of an io::Result error, for assertions.
pub fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("expected an OS error, got {e}")),
    }
}

pub fn lstat(p: &Path) -> io::Result<libc::stat> {
    let c = cpath(p);
    // SAFETY: zeroed stat is a valid out-buffer; c is a valid NUL-terminated path.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; st lives for the call.
    check(unsafe { libc::lstat(c.as_ptr(), &mut st) }, "lstat")?;
    Ok(st)
}

pub fn setxattr(p: &Path, name: &str, value: &[u8], flags: libc::c_int) -> io::Result<()> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    check(
        // SAFETY: valid C strings and a value buffer of the given length.
        unsafe {
            libc::setxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        },
        "setxattr",
    )?;
    Ok(())
}

pub fn getxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    // SAFETY: size query with a null buffer, then a read into a buffer of that size.
    let size = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize];
    // SAFETY: buf is writable for buf.len() bytes.
    let got = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    Ok(buf)
}

pub fn listxattr(p: &Path) -> io::Result<Vec<String>> {
    let c = cpath(p);
    // SAFETY: size query with a null buffer, then a read into a buffer of that size.
    let size = unsafe { libc::listxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize];
    // SAFETY: buf is writable for buf.len() bytes.
    let got = unsafe { libc::listxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    Ok(buf
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

pub fn removexattr(p: &Path, name: &str) -> io::Result<()> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    check(
        // SAFETY: valid C strings.
        unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) },
        "removexattr",
    )?;
    Ok(())
}

/// Sets atime and mtime (seconds, nanoseconds; nanoseconds may be UTIME_NOW/UTIME_OMIT).
pub fn utimensat(
    p: &Path,
    atime: (i64, i64),
    mtime: (i64, i64),
    flags: libc::c_int,
) -> io::Result<()> {
    let c = cpath(p);
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    check(
        // SAFETY: valid path and a two-element timespec array.
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), flags) },
        "utimensat",
    )?;
    Ok(())
}

pub fn mknod(p: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: valid path.
    check(unsafe { libc::mknod(c.as_ptr(), mode, dev) }, "mknod")?;
    Ok(())
}

pub fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (a, b) = (cpath(from), cpath(to));
    check(
        // SAFETY: valid paths relative to the cwd fd (they are absolute anyway).
        unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                flags,
            )
        },
        "renameat2",
    )?;
    Ok(())
}

/// Runs `sync` (all filesystems) bounded.
pub fn sync_all() {
    run_tool("sync", &[]).ok();
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `tresor fsck --json` on the unmounted vault: must exit 0 and be clean.
pub fn assert_fsck_clean(v: &TestVault, what: &str) -> serde_json::Value {
    let run = v.tresor(&[
        "fsck".as_ref(),
        "--vault".as_ref(),
        v.vault.as_os_str(),
        "--passphrase-file".as_ref(),
        v.passfile.as_os_str(),
        "--json".as_ref(),
    ]);
    let json: serde_json::Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("{what}: fsck --json printed no JSON ({e}): {run}"));
    assert!(
        run.success() && json["clean"] == true,
        "{what}: fsck is not clean: {run}"
    );
    json
}

/// Every entry of the tree can be stat'ed and every regular file read to its
/// stat size without error; directory nlink matches the subdirectory count.
pub fn assert_tree_consistent(root: &Path, what: &str) -> usize {
    let mut stack = vec![root.to_path_buf()];
    let mut n = 0;
    while let Some(d) = stack.pop() {
        let mut subdirs = 0;
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("{what}: readdir {}: {e}", d.display()))
        {
            let e = e.unwrap_or_else(|e| panic!("{what}: readdir entry in {}: {e}", d.display()));
            let p = e.path();
            let md = fs::symlink_metadata(&p)
                .unwrap_or_else(|e| panic!("{what}: listed but lstat fails: {}: {e}", p.display()));
            n += 1;
            if md.is_dir() {
                subdirs += 1;
                stack.push(p);
            } else if md.is_file() {
                let mut buf = Vec::new();
                File::open(&p)
                    .and_then(|mut f| f.read_to_end(&mut buf))
                    .unwrap_or_else(|e| {
                        panic!("{what}: listed file unreadable: {}: {e}", p.display())
                    });
                assert_eq!(
                    buf.len() as u64,
                    md.len(),
                    "{what}: {} reads {} bytes but stat says {}",
                    p.display(),
                    buf.len(),
                    md.len()
                );
            } else if md.file_type().is_symlink() {
                fs::read_link(&p)
                    .unwrap_or_else(|e| panic!("{what}: readlink {}: {e}", p.display()));
            }
        }
        let nlink = std::os::unix::fs::MetadataExt::nlink(&fs::metadata(&d).unwrap());
        assert_eq!(
            nlink,
            2 + subdirs,
            "{what}: nlink of directory {} vs its {subdirs} subdirectories",
            d.display()
        );
    }
    n
}

/// A `secret-tool` stand-in storing secrets in files; logs its argv.
pub fn fake_secret_tool(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("fakebin");
    fs::create_dir_all(bin.join("secrets")).unwrap();
    let script = format!(
        r#"#!/bin/sh
echo "$@" >> {log}
cmd=$1; shift
[ "$cmd" = store ] && shift   # --label=...
key=$(echo "$@" | tr ' /' '__')
case $cmd in
  store) cat > {db}/"$key" ;;
  lookup) [ -f {db}/"$key" ] && exec cat {db}/"$key"; exit 1 ;;
  *) echo "fake secret-tool: $cmd unsupported" >&2; exit 2 ;;
esac
"#,
        log = bin.join("argv.log").display(),
        db = bin.join("secrets").display()
    );
    let tool = bin.join("secret-tool");
    fs::write(&tool, script).unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

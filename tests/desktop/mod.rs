//! Helpers for the desktop tests (tests/gio.rs, tests/file_manager.rs): the
//! skip rule, a sandboxed GIO environment, and process-group cleanup.
//! Uses `crate::common`, so a test file declares `mod common; mod desktop;`.
//!
//! Skip rule: a desktop test skips (printing why) only when its main tool
//! (`gio`, `pcmanfm`) is missing and `TRESOR_REQUIRE_DESKTOP_TESTS` is not
//! `1`. Any other missing piece fails the test with the package to install
//! (`scripts/ci-desktop-deps.sh` installs them all).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// How long one GIO command may take (the 1 GiB copy has its own bound).
pub const GIO_TIMEOUT: Duration = Duration::from_secs(120);

/// True if the test must skip: `tool` is missing and desktop tests are not
/// required. Panics if they are required (`TRESOR_REQUIRE_DESKTOP_TESTS=1`)
/// and `tool` is missing.
pub fn skip_desktop_test(tool: &str, package: &str) -> bool {
    if which(tool).is_some() {
        return false;
    }
    let required = std::env::var("TRESOR_REQUIRE_DESKTOP_TESTS").as_deref() == Ok("1");
    if required {
        panic!(
            "`{tool}` not found and TRESOR_REQUIRE_DESKTOP_TESTS=1: install the Debian \
             package `{package}` (scripts/ci-desktop-deps.sh installs everything)"
        );
    }
    eprintln!(
        "SKIPPED: `{tool}` not found (Debian package `{package}`; \
         scripts/ci-desktop-deps.sh installs it). Set TRESOR_REQUIRE_DESKTOP_TESTS=1 \
         to make this a failure."
    );
    true
}

/// Panics unless `path` exists (for helpers that are not in PATH).
pub fn require_file(path: &str, package: &str) {
    if !Path::new(path).exists() {
        panic!("{path} not found; install the Debian package `{package}`");
    }
}

/// A private desktop-ish environment under `base`: HOME, XDG dirs and a 0700
/// XDG_RUNTIME_DIR, so nothing ever touches the real user's home trash,
/// config or session bus. Every command runs under its own `dbus-run-session`
/// (GIO's trash:/// backend, gvfsd-trash, is a D-Bus service).
pub struct DesktopEnv {
    pub home: PathBuf,
    pub data_home: PathBuf,
    pub config_home: PathBuf,
    pub runtime_dir: PathBuf,
}

impl DesktopEnv {
    pub fn new(base: &Path) -> Self {
        let home = base.join("desktop-home");
        let env = DesktopEnv {
            data_home: home.join(".local/share"),
            config_home: home.join(".config"),
            runtime_dir: base.join("desktop-run"),
            home,
        };
        for d in [&env.data_home, &env.config_home, &env.runtime_dir] {
            fs::create_dir_all(d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        }
        fs::set_permissions(&env.runtime_dir, fs::Permissions::from_mode(0o700)).unwrap();
        env
    }

    /// Applies the environment to `cmd`, in its own process group (so the
    /// whole session can be ended by group id).
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("HOME", &self.home)
            .env("XDG_DATA_HOME", &self.data_home)
            .env("XDG_CONFIG_HOME", &self.config_home)
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            // English messages, UTF-8 output (C.UTF-8 is built into glibc)
            .env("LC_ALL", "C.UTF-8")
            .env("LANG", "C.UTF-8")
            // gvfsd would otherwise try to start gvfsd-fuse in XDG_RUNTIME_DIR
            .env("GVFS_DISABLE_FUSE", "1")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("GIO_USE_VFS")
            .process_group(0);
    }

    /// `dbus-run-session -- PROGRAM ARGS` in this environment.
    pub fn session_cmd(&self, program: &str, args: &[&OsStr]) -> Command {
        let mut c = Command::new("dbus-run-session");
        c.arg("--").arg(program).args(args);
        self.apply(&mut c);
        c
    }

    /// `dbus-run-session -- gio ARGS`, bounded, unchecked.
    pub fn gio(&self, args: &[&OsStr]) -> Run {
        run_bounded(&mut self.session_cmd("gio", args), GIO_TIMEOUT)
    }

    /// The home trash GIO would use for files on the home's filesystem.
    pub fn home_trash(&self) -> PathBuf {
        self.data_home.join("Trash")
    }
}

/// Ends a process group we started: SIGTERM, up to 5 s grace, then SIGKILL;
/// reaps `child` (the group leader).
pub fn end_process_group(child: &mut Child) {
    let pgid = child.id() as i32;
    // SAFETY: kill(2) on the process group of a child this test spawned with
    // process_group(0), so the group id is the child's pid.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above; the group may already be gone (ESRCH is fine).
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
}

/// A child process whose whole process group is ended on drop.
pub struct GroupGuard(pub Option<Child>);

impl GroupGuard {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("process already ended")
    }
    pub fn end(&mut self) {
        if let Some(mut c) = self.0.take() {
            end_process_group(&mut c);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.end();
    }
}

//! Mounting, daemonising and unmounting.
//!
//! `tresor mount` checks everything a user can get wrong (vault, passphrase,
//! mountpoint) in the foreground, then re-executes itself as the daemon with
//! `--foreground --secret-stdin`, handing the secret over a pipe as raw bytes (never
//! argv or the environment) and waiting for one line on the child's stdout:
//! `ready` once the kernel mount exists, or the error. Re-exec instead of
//! fork(): the daemon starts tokio and rayon threads, and forking a threaded
//! process is unsound.
//!
//! Unmounting: the daemon flushes everything in FUSE `destroy`, which runs
//! after the kernel mount is gone whether `tresor unmount`, `fusermount3 -u`,
//! `umount` or SIGTERM/SIGINT started it. `tresor unmount` additionally waits
//! for the daemon to exit, so when it returns every byte is durable.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Kind;
use crate::fs::IndexAccess;
use crate::vault::index_copies;
use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

use crate::chunk::chunker::Chunker;
use crate::chunk::seal::ChunkSealer;
use crate::fs::FsCore;
use crate::mount::control;
use crate::mount::fuse::TresorFuse;
use crate::remote::backend::VaultConfig;
use crate::remote::sync::SyncEngine;
use crate::store::packstore::PackStore;
use crate::store::Store;
use crate::vault::{self, VaultPaths};

/// How often the index is committed (not durably) while mounted.
const COMMIT_INTERVAL: Duration = Duration::from_secs(2);
const MOUNT_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// FUSE request threads. A request thread blocks while a write waits for
/// back-pressure (uploads behind the cache budget) or a read waits for a
/// remote backend; with 4 threads, 4 such writers left none for `ls` or
/// `stat`. 16 keeps requests answered under that many blocked writers
/// (`tests/cloud.rs`, `ls_answers_while_writers_wait_for_back_pressure`);
/// an idle thread costs a stack and one blocked read on /dev/fuse.
const FUSE_THREADS: usize = 16;
/// After unmount, pending uploads get this long before the daemon exits.
const UPLOAD_GRACE_SECS: u64 = 30;

/// Copies the index into `VAULT/index-copies/` under a checkpoint, if it
/// changed since the newest copy (`vault::index_copies`).
fn copy_index(core: &FsCore, paths: &VaultPaths) {
    let newest = index_copies::list(paths).first().map(|c| c.taken_ms);
    if newest.is_some_and(|ms| !index_changed_since(paths, ms)) {
        return;
    }
    let mut result = None;
    let r = core.with_checkpoint(&mut |idx| {
        result = Some(
            idx.snapshot_mark()
                .map_err(anyhow::Error::from)
                .and_then(|mark| index_copies::take(paths, mark)),
        )
    });
    match (r, result) {
        (Ok(()), Some(Ok(c))) => log::info!("index copied to {}", c.path.display()),
        (Ok(()), Some(Err(e))) => log::warn!("cannot copy the index: {e:#}"),
        (Err(e), _) => log::warn!("cannot checkpoint the index for a copy: {e}"),
        (Ok(()), None) => {}
    }
}

/// Whether the index or its WAL was written after `ms` (ms since the epoch).
fn index_changed_since(paths: &VaultPaths, ms: u64) -> bool {
    paths.index_files().iter().any(|f| {
        std::fs::metadata(f)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .is_some_and(|d| d.as_millis() as u64 > ms)
    })
}

fn commit_quietly(core: &FsCore) {
    if let Err(e) = core.commit(true) {
        log::error!("index commit failed: {e}");
    }
}

pub struct MountRequest {
    pub vault: VaultPaths,
    pub mountpoint: PathBuf,
    pub options: Vec<String>,
    pub foreground: bool,
}

/// Unescapes the octal escapes of /proc/self/mountinfo (`\040` = space).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (mountpoint, fstype, source) of every mount.
/// Where the vault is mounted, from the mount table (its source is
/// `tresor:VAULT`).
pub fn mountpoint_of(paths: &VaultPaths) -> Option<PathBuf> {
    let want = format!("tresor:{}", paths.root.display());
    mounts()
        .into_iter()
        .find(|(_, _, source)| *source == want)
        .map(|(m, _, _)| m)
}

fn mounts() -> Vec<(PathBuf, String, String)> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            Some((
                PathBuf::from(unescape_mountinfo(f.get(4)?)),
                f.get(dash + 1)?.to_string(),
                unescape_mountinfo(f.get(dash + 2)?),
            ))
        })
        .collect()
}

/// The tresor mountpoint that contains `path`, if any (deepest first).
pub fn mountpoint_containing(path: &Path) -> Option<PathBuf> {
    mounts()
        .into_iter()
        .filter(|(m, fstype, source)| {
            (fstype == "fuse.tresor" || fstype == "fuse" && source.starts_with("tresor:"))
                && path.starts_with(m)
        })
        .map(|(m, _, _)| m)
        .max_by_key(|m| m.as_os_str().len())
}

fn is_mounted(p: &Path) -> bool {
    mounts().iter().any(|(m, _, _)| m == p)
}

/// Checks the mountpoint; cleans up the dead mount a killed daemon left.
/// The mountpoint exists, is a directory and is not mounted yet (a dead
/// mount left by a killed daemon is cleaned up); its canonical path.
pub fn check_mountpoint(mp: &Path) -> Result<PathBuf> {
    match std::fs::metadata(mp) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            log::warn!(
                "{} is a dead tresor mount (daemon killed?); unmounting it",
                mp.display()
            );
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(mp)
                .status();
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "mountpoint {} does not exist; create it with `mkdir -p {}`",
                mp.display(),
                mp.display()
            )
        }
        Err(e) => bail!("cannot use mountpoint {}: {e}", mp.display()),
        Ok(m) if !m.is_dir() => bail!("mountpoint {} is not a directory", mp.display()),
        Ok(_) => {}
    }
    let canon = std::fs::canonicalize(mp)
        .with_context(|| format!("cannot resolve mountpoint {}", mp.display()))?;
    if is_mounted(&canon) {
        bail!(
            "{} is already a mountpoint; unmount it first (`tresor unmount {}`)",
            canon.display(),
            canon.display()
        );
    }
    Ok(canon)
}

/// `tresor mount` (foreground part).
/// The mount refuses a configuration that breaks the placement policy.
/// FUSE mount options are comma-separated and the vault path goes into one
/// (`fsname=tresor:PATH`): a comma there would inject options.
fn check_vault_path(paths: &VaultPaths) -> Result<()> {
    let text = paths.root.to_string_lossy();
    if text.contains(',') || text.contains('\\') {
        return Err(crate::error::usage(format!(
            "cannot mount the vault at {}: its path contains a comma or backslash, \
             which FUSE mount options cannot carry; move or rename the vault directory",
            paths.root.display()
        )));
    }
    Ok(())
}

/// The daemon keeps its files private whatever the caller's umask, cannot
/// be ptrace'd or core-dumped by other processes of the same user (the
/// keys are in its memory), drops `TRESOR_PASSPHRASE` from its environment,
/// and makes the vault directory owner-only.
/// Overwrites the stack below the caller's frame, where unlocking left
/// copies of the secret that no type owned (Argon2's BLAKE2b state, which
/// `argon2` does not wipe, and other temporaries).
#[inline(never)]
fn scrub_stack() {
    let mut area = [0u8; 256 * 1024];
    zeroize::Zeroize::zeroize(&mut area[..]);
    std::hint::black_box(&area);
}

fn harden_daemon(paths: &VaultPaths) {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // SAFETY: PR_SET_DUMPABLE takes an integer argument and touches only
    // this process's dumpable flag.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    // Edition 2021: safe; called before the daemon starts its threads.
    std::env::remove_var("TRESOR_PASSPHRASE");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if let Ok(m) = std::fs::metadata(&paths.root) {
        if m.mode() & 0o077 != 0 {
            if m.uid() == nix::unistd::geteuid().as_raw() {
                match std::fs::set_permissions(&paths.root, std::fs::Permissions::from_mode(0o700))
                {
                    Ok(()) => log::info!(
                        "made the vault directory {} private (mode 0700; it was {:o})",
                        paths.root.display(),
                        m.mode() & 0o777
                    ),
                    Err(e) => log::warn!("cannot make {} private: {e}", paths.root.display()),
                }
            } else {
                log::warn!(
                    "the vault directory {} is mode {:o} and owned by someone else",
                    paths.root.display(),
                    m.mode() & 0o777
                );
            }
        }
    }
    if let Ok(log) = std::fs::metadata(paths.log()) {
        if log.mode() & 0o077 != 0 {
            let _ = std::fs::set_permissions(paths.log(), std::fs::Permissions::from_mode(0o600));
        }
    }
}

fn check_policy(config: &VaultConfig) -> Result<()> {
    let broken = config.policy.violations(&config.backends);
    if !broken.is_empty() {
        bail!(
            "refusing to mount: the configuration breaks the placement policy: {} \
             (fix it with `tresor backend add/remove` or `tresor policy set`)",
            broken.join("; ")
        );
    }
    Ok(())
}

/// How long `mount` waits for a daemon that is finishing an unmount: the
/// upload grace period, the last snapshot (at least 5 s) and the index copy.
const UNMOUNTING_WAIT: Duration = Duration::from_secs(UPLOAD_GRACE_SECS + 30);

/// The part of [`UNMOUNTING_WAIT`] that passes without a note.
const UNMOUNTING_QUIET_WAIT: Duration = Duration::from_secs(10);

/// The vault's lock is held but it is mounted nowhere (in this mount
/// namespace): its daemon is finishing an unmount (uploads in their grace
/// period, the last snapshot, the index copy) and lets go of the lock when
/// it exits. `umount DIR; mount DIR` waits for that, bounded, instead of
/// answering "already mounted"; a blocking shared lock in a thread does the
/// waiting, so no polling.
fn wait_for_unmounting_daemon(vault: &VaultPaths) {
    let Ok(lock) = std::fs::File::open(vault.lock()) else {
        return;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // The shared lock is dropped at once: only its being granted counts.
        let granted = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockShared).is_ok();
        let _ = tx.send(granted);
    });
    // Silent at first: `mount` prints nothing on success (xfstests'
    // generic/604 races a mount with an unmount and compares the output
    // with a golden file). Only a wait a person would notice gets a note.
    if rx.recv_timeout(UNMOUNTING_QUIET_WAIT).is_ok() {
        return;
    }
    eprintln!(
        "note: waiting up to {} s for the previous daemon of {} to finish its unmount",
        (UNMOUNTING_WAIT - UNMOUNTING_QUIET_WAIT).as_secs(),
        vault.root.display()
    );
    let _ = rx.recv_timeout(UNMOUNTING_WAIT - UNMOUNTING_QUIET_WAIT);
}

/// `secret` is taken by value: it is handed to the daemon (or, with
/// `--foreground`, used to unlock) and then wiped; nothing keeps it for
/// the life of the mount.
pub fn mount(req: MountRequest, secret: Zeroizing<Vec<u8>>) -> Result<()> {
    let mountpoint = check_mountpoint(&req.mountpoint)?;
    check_vault_path(&req.vault)?;
    // The passphrase is checked once, by the daemon (`run_daemon`), which
    // reports a typo back over the ready pipe as a typed error (so this
    // command still exits 3). Unlocking here as well cost a second Argon2id
    // run on every mount: at load 10, 1.51-1.65 s per mount before, 0.77-0.84 s
    // after (interleaved), which is what xfstests' mount-heavy tests spend
    // (generic/366 mounts 64 times).
    check_policy(&VaultConfig::load(&req.vault.root)?)?;
    if vault::is_mounted(&req.vault) && mountpoint_of(&req.vault).is_none() {
        wait_for_unmounting_daemon(&req.vault);
    }
    if vault::is_mounted(&req.vault) {
        bail!(
            "the vault {} is already mounted (daemon {})",
            req.vault.root.display(),
            vault::daemon_pid(&req.vault)
                .map(|p| format!("pid {p}"))
                .unwrap_or_else(|| "pid unknown".into())
        );
    }
    if req.foreground {
        return run_daemon(&req.vault, &mountpoint, &req.options, secret, None);
    }
    let exe = std::env::current_exe().context("cannot find the tresor executable")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(req.vault.log())
        .with_context(|| format!("cannot open log {}", req.vault.log().display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount")
        .arg("--vault")
        .arg(&req.vault.root)
        .arg("--foreground")
        .arg("--secret-stdin")
        .arg("--ready-stdout");
    if !req.options.is_empty() {
        cmd.arg("-o").arg(req.options.join(","));
    }
    cmd.arg(&mountpoint)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .env_remove("TRESOR_PASSPHRASE")
        .env_remove("NOTIFY_SOCKET");
    // SAFETY: setsid() is async-signal-safe; it detaches the daemon from the
    // terminal's session so closing the shell does not kill it.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the tresor daemon")?;
    {
        // The secret as raw bytes up to EOF: a key file is arbitrary
        // binary, not a line of UTF-8 (dropping `stdin` closes the pipe).
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(&secret)?;
    }
    drop(secret);
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            let last = !line.starts_with("note: ");
            let _ = tx.send(line);
            if last {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + MOUNT_READY_TIMEOUT;
    // "note: …" lines (what a hand-over pulled) come before the verdict.
    let verdict = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("note: ") => println!("{}", line.trim_end()),
            other => break other,
        }
    };
    match verdict {
        Ok(line) if line.trim() == "ready" => Ok(()),
        Ok(line) if !line.trim().is_empty() => {
            let line = line.trim();
            // "error KIND: message" keeps the error's class (and so its
            // exit code) across the fork.
            let typed = line.strip_prefix("error ").and_then(|rest| {
                let (kind, msg) = rest.split_once(": ")?;
                let kind: Kind = serde_json::from_value(serde_json::Value::from(kind)).ok()?;
                Some((kind, msg))
            });
            match typed {
                Some((kind, msg)) => Err(crate::error::Error::new(kind, msg.to_string()).into()),
                None => bail!("{line}"),
            }
        }
        Ok(_) => {
            let status = child.wait().ok();
            bail!(
                "the tresor daemon exited before the mount was ready ({}); see {}",
                status.map(|s| s.to_string()).unwrap_or_default(),
                req.vault.log().display()
            )
        }
        Err(_) => bail!(
            "the mount did not become ready within {} s; see {}",
            MOUNT_READY_TIMEOUT.as_secs(),
            req.vault.log().display()
        ),
    }
}

fn fuse_config(vault: &VaultPaths, options: &[String]) -> fuser::Config {
    let mut config = fuser::Config::default();
    let mut opts = vec![
        fuser::MountOption::FSName(format!("tresor:{}", vault.root.display())),
        fuser::MountOption::Subtype("tresor".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    for o in options {
        match o.as_str() {
            // `follow` is tresor's own (see `run_daemon`), not the kernel's.
            "" | "default_permissions" | "rw" | "follow" => {}
            "allow_other" => config.acl = fuser::SessionACL::All,
            "allow_root" => config.acl = fuser::SessionACL::RootAndOwner,
            "ro" => opts.push(fuser::MountOption::RO),
            "auto_unmount" => opts.push(fuser::MountOption::AutoUnmount),
            "dev" | "allow_dev" => opts.push(fuser::MountOption::Dev),
            "nodev" => opts.push(fuser::MountOption::NoDev),
            "suid" | "allow_suid" => opts.push(fuser::MountOption::Suid),
            "nosuid" => opts.push(fuser::MountOption::NoSuid),
            "exec" => opts.push(fuser::MountOption::Exec),
            "noexec" => opts.push(fuser::MountOption::NoExec),
            "noatime" => opts.push(fuser::MountOption::NoAtime),
            "atime" => opts.push(fuser::MountOption::Atime),
            "sync" => opts.push(fuser::MountOption::Sync),
            "async" => opts.push(fuser::MountOption::Async),
            "dirsync" => opts.push(fuser::MountOption::DirSync),
            other => opts.push(fuser::MountOption::CUSTOM(other.to_string())),
        }
    }
    // A vault written on another machine may hold setuid binaries and
    // device nodes; they take no effect here unless asked for with
    // `dev`/`suid` (command line) or `allow_dev`/`allow_suid` (fstab, where
    // mount(8) drops the plain names). fusermount3 forces this for users;
    // root mounts need it said.
    if !options.iter().any(|o| o == "suid" || o == "allow_suid") {
        opts.push(fuser::MountOption::NoSuid);
    }
    if !options.iter().any(|o| o == "dev" || o == "allow_dev") {
        opts.push(fuser::MountOption::NoDev);
    }
    if nix::unistd::geteuid().is_root() {
        // As root fuser calls mount(2) itself, with type "fuse"; the subtype
        // makes it "fuse.tresor" like fusermount3's mounts, which is what
        // umount(8) looks up its helper by (umount.fuse.tresor, see fstab.rs).
        opts.push(fuser::MountOption::CUSTOM("subtype=tresor".into()));
    }
    config.mount_options = opts;
    config.n_threads = Some(FUSE_THREADS);
    config.clone_fd = true;
    config
}

/// The daemon proper: opens the vault, mounts, serves until unmounted.
/// `ready`: where to print `ready` (the parent's pipe) once mounted.
pub fn run_daemon(
    paths: &VaultPaths,
    mountpoint: &Path,
    options: &[String],
    secret: Zeroizing<Vec<u8>>,
    ready: Option<std::io::Stdout>,
) -> Result<()> {
    harden_daemon(paths);
    // Unlock, then wipe the secret: the daemon keeps only the subkeys
    // (zeroized on drop), never the passphrase or key-file bytes.
    let unlocked = vault::unlock(paths, &secret);
    drop(secret);
    scrub_stack();
    let report = |msg: &str| {
        if let Some(out) = &ready {
            let mut l = out.lock();
            // One line: the parent reads exactly one.
            let _ = writeln!(l, "{}", msg.replace('\n', "; "));
            let _ = l.flush();
        }
    };
    type Opened = (
        fuser::Session<TresorFuse>,
        Arc<FsCore>,
        vault::VaultLock,
        Arc<SyncEngine>,
    );
    let result = (|| -> Result<Opened> {
        // Dropped when this closure returns: the master key and the key
        // file go with it; what serves the mount holds subkeys only.
        let unlocked = unlocked?;
        let lock = vault::lock_vault(paths)?;
        // A status left by an earlier daemon does not describe this mount.
        let _ = std::fs::remove_file(paths.unmount_status());
        let config = VaultConfig::load(&paths.root)?;
        check_policy(&config)?;
        let read_only = options.iter().any(|o| o == "ro");
        // `-o ro,follow`: a read-only follower. Plain `-o ro` keeps the
        // directory's own state, which is how an older generation put back
        // with `restore --generation N` is looked at.
        let follower = read_only && options.iter().any(|o| o == "follow");
        if !config.backends.is_empty() && (!read_only || follower) {
            // Another machine's newer state that descends from ours
            // (issue 13); a fork is refused by `acquire` below. A
            // follower pulls even while the writer holds the lease (a
            // forked state is never pulled over).
            match crate::maintenance::handover::pull_if_newer(
                paths,
                &unlocked.subkeys,
                unlocked.key_file.vault_id(),
                follower,
            ) {
                Ok(Some(p)) => report(&format!("note: {}", p.line())),
                Ok(None) => {}
                Err(e) => log::warn!("hand-over: {e:#}"),
            }
        }
        let index = vault::open_index(paths, &unlocked.subkeys.index)?;
        let store = Arc::new(Store::open_local(&paths.store())?);
        let sealer = Arc::new(ChunkSealer::new(&unlocked.subkeys));
        let chunker = Chunker::new(&unlocked.subkeys.chunker);
        let packs = PackStore::new(store.clone(), sealer.clone(), unlocked.subkeys.pack.clone());
        let core = Arc::new(FsCore::new(index, packs, chunker, sealer, paths.store())?);
        let engine = SyncEngine::open(paths, &config, store, &unlocked, read_only)?;
        engine.attach(&core);
        // `.snapshots`: the kept generations, read-only (fs/history.rs).
        if let Some(views) = engine.generation_views(unlocked.subkeys.index.clone()) {
            core.set_history(Arc::new(views));
        }
        if !read_only {
            core.keep_space_reserve(paths.store().join("space-reserve"));
        }
        if let Err(e) = engine.acquire() {
            engine.stop();
            return Err(e);
        }
        control::serve(&paths.root, core.clone(), engine.clone())?;
        let config = fuse_config(paths, options);
        let fuse = TresorFuse::new(core.clone());
        let notifier = fuse.notifier_slot();
        let ended = fuse.unmounter_slot();
        let mut session = fuser::Session::new(fuse, mountpoint, &config)
            .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
        let _ = notifier.set(session.notifier());
        *ended.lock() = Some(session.unmount_callable());
        Ok((session, core, lock, engine))
    })();
    let (mut session, core, _lock, engine) = match result {
        Ok(v) => v,
        Err(e) => {
            // "error KIND: message": the parent raises the same class of
            // error (and so exits with the same code).
            match crate::error::kind_of(&e) {
                Some(kind) => {
                    let kind = serde_json::to_value(kind).expect("a unit variant serialises");
                    report(&format!(
                        "error {}: {e:#}",
                        kind.as_str().unwrap_or("other")
                    ));
                }
                None => report(&format!("error other: {e:#}")),
            }
            return Err(e);
        }
    };
    log::info!(
        "mounted vault {} on {}",
        paths.root.display(),
        mountpoint.display()
    );
    report("ready");
    // Type=notify units (`tresor systemd install`) start once this arrives.
    crate::mount::notify::notify(&format!(
        "READY=1\nSTATUS=mounted on {}",
        mountpoint.display()
    ));

    // Signals: unmount cleanly (destroy flushes) on SIGTERM/SIGINT/SIGHUP.
    // If the mount is busy (a file still open, e.g. at logout), flush and
    // commit everything now, then detach lazily: the daemon serves the open
    // files until they are closed and flushes again in destroy.
    let unmounter = parking_lot::Mutex::new(session.unmount_callable());
    let mp = mountpoint.to_path_buf();
    let core_for_signals = core.clone();
    std::thread::Builder::new()
        .name("tresor-signals".into())
        .spawn(move || {
            let mut set = nix::sys::signal::SigSet::empty();
            set.add(nix::sys::signal::Signal::SIGTERM);
            set.add(nix::sys::signal::Signal::SIGINT);
            set.add(nix::sys::signal::Signal::SIGHUP);
            if let Ok(sig) = set.wait() {
                log::info!("{sig:?}: unmounting {}", mp.display());
                crate::mount::notify::notify("STOPPING=1");
                // (As non-root, fuser's unmount runs `fusermount -u` and
                // reports success even when that failed: check the table.)
                let result = unmounter.lock().unmount();
                if result.is_err() || is_mounted(&mp) {
                    log::warn!(
                        "unmount after {sig:?} failed ({}); flushing everything and detaching lazily",
                        result.err().map_or("mount busy".into(), |e| e.to_string())
                    );
                    if let Err(e) = core_for_signals
                        .flush_all()
                        .and_then(|_| core_for_signals.commit(true))
                    {
                        log::error!("flush after {sig:?} failed: {e}");
                    }
                    let _ = Command::new("fusermount3")
                        .arg("-u")
                        .arg("-z")
                        .arg(&mp)
                        .status();
                }
            }
        })?;

    let stop = Arc::new(AtomicBool::new(false));
    let keeps_copies = !options.iter().any(|o| o == "ro");
    let timer = {
        let core = core.clone();
        let stop = stop.clone();
        let paths = VaultPaths::new(paths.root.clone());
        std::thread::Builder::new()
            .name("tresor-commit".into())
            .spawn(move || {
                let mut last = Instant::now();
                // None: copy at once (if the index changed since the newest
                // copy, e.g. by an offline gc), then every interval.
                let mut last_copy: Option<Instant> = None;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if last.elapsed() >= COMMIT_INTERVAL && !stop.load(Ordering::Relaxed) {
                        if let Err(e) = core.commit_if_changed() {
                            log::error!("periodic index commit failed: {e}");
                        }
                        last = Instant::now();
                    }
                    let copy_due = last_copy.is_none_or(|t| {
                        t.elapsed() >= Duration::from_secs(index_copies::COPY_INTERVAL_SECS)
                    });
                    if keeps_copies && copy_due && !stop.load(Ordering::Relaxed) {
                        copy_index(&core, &paths);
                        last_copy = Some(Instant::now());
                    }
                }
            })?
    };
    let collector =
        crate::maintenance::gc::spawn_background(core.clone(), paths.root.clone(), stop.clone())?;
    let run = match session.run() {
        // After a lazy detach the kernel may abort the connection instead of
        // ending it cleanly (seen after SIGTERM with a busy mount); destroy
        // has flushed and committed by then, so this is a normal end.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ECONNABORTED) | Some(libc::ENODEV)
            ) =>
        {
            log::info!("the kernel closed the FUSE connection ({e})");
            Ok(())
        }
        r => r,
    };
    stop.store(true, Ordering::Relaxed);
    let _ = timer.join();
    let _ = collector.join();
    // Unmounted and flushed (destroy). Give uploads a bounded grace period
    // so a short session still reaches the clouds; whatever is left is in
    // the index's queue for the next mount or `tresor sync`.
    if !engine.remotes().is_empty() {
        let grace = Duration::from_secs(UPLOAD_GRACE_SECS);
        let started = Instant::now();
        match engine.wait_synced(Some(grace), &|| commit_quietly(&core), &mut |_, _| {}) {
            Ok(()) => log::info!("every pack is on every backend"),
            Err(e) => log::warn!("unmounted with uploads pending: {e:#}"),
        }
        let left = grace
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(5));
        match engine.snapshot_and_wait(Some(left)) {
            Ok(g) => log::info!("index snapshot generation {g} is on every backend"),
            Err(e) => {
                log::warn!("unmounted before the last index snapshot reached every backend: {e:#}")
            }
        }
        engine.release();
    }
    engine.stop();
    let final_commit = core.commit(true);
    if keeps_copies && final_commit.is_ok() && core.shutdown_error().is_none() {
        copy_index(&core, paths);
    }
    let _ = std::fs::remove_file(control::socket_path(&paths.root));
    // What was not saved, for `tresor unmount` (it waits for this process
    // and then reads the file) and for this process's exit code.
    let unsaved = match (core.shutdown_error(), final_commit) {
        (Some(e), _) => Some(e),
        (None, Err(e)) => Some(e.to_string()),
        (None, Ok(())) => None,
    };
    let status = match &unsaved {
        Some(e) => format!("failed: {e}\n"),
        None => "ok\n".to_string(),
    };
    if let Err(e) = vault::write_private(&paths.unmount_status(), status.as_bytes()) {
        log::warn!("cannot record the unmount status: {e}");
    }
    run.context("the FUSE session ended with an error")?;
    if let Some(e) = unsaved {
        log::error!("unmounted, but not everything was saved: {e}");
        bail!(
            "unmounted, but not everything written since the last commit was saved: {e} \
             (the vault holds the state of the last commit; see tresor.log)"
        );
    }
    Ok(())
}

/// Blocks SIGTERM/SIGINT/SIGHUP in this thread (and every thread started
/// after), so the signal thread receives them with sigwait.
pub fn block_signals() {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGTERM);
    set.add(nix::sys::signal::Signal::SIGINT);
    set.add(nix::sys::signal::Signal::SIGHUP);
    let _ = set.thread_block();
}

/// `tresor unmount`: unmounts and waits until the daemon has flushed and exited.
pub fn unmount(mountpoint: &Path) -> Result<()> {
    let canon = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let Some((_, fstype, source)) = mounts().into_iter().find(|(m, _, _)| *m == canon) else {
        bail!("{} is not mounted", canon.display());
    };
    // As root the kernel mount has type "fuse" (fusermount3 adds the subtype).
    if !(fstype == "fuse.tresor" || fstype == "fuse" && source.starts_with("tresor:")) {
        bail!(
            "{} is a {fstype} mount, not a tresor mount; use umount",
            canon.display()
        );
    }
    let vault_dir = source.strip_prefix("tresor:").unwrap_or(&source);
    let pid = vault::daemon_pid(&VaultPaths::new(PathBuf::from(vault_dir)));
    let status = Command::new("fusermount3")
        .arg("-u")
        .arg(&canon)
        .status()
        .context("cannot run fusermount3 (install the fuse3 package)")?;
    if !status.success() {
        bail!(
            "fusermount3 -u {} failed (is a program still using the mount? `fuser -vm {}` shows which)",
            canon.display(),
            canon.display()
        );
    }
    // A bind mount of (part of) a tresor mount has the same source: while
    // another mount of the vault remains, its daemon keeps serving it and
    // there is no final flush to wait for (xfstests generic/306 unmounts
    // a file bind-mounted from one tresor mount onto another).
    if mounts().iter().any(|(_, _, s)| *s == source) {
        return Ok(());
    }
    let status_file = VaultPaths::new(PathBuf::from(vault_dir)).unmount_status();
    if let Some(pid) = pid {
        let start = Instant::now();
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let mut warned = false;
        while proc_dir.exists() {
            // A zombie child of ours does not count; daemons are setsid'd.
            if let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) {
                if stat.contains(") Z ") {
                    break;
                }
            }
            if start.elapsed() > Duration::from_secs(10) && !warned {
                eprintln!("waiting for the tresor daemon (pid {pid}) to finish writing…");
                warned = true;
            }
            if start.elapsed() > Duration::from_secs(3600) {
                bail!("the tresor daemon (pid {pid}) did not exit within an hour");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The daemon records whether its final flush and commit succeeded.
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            if let Some(e) = status.trim_end().strip_prefix("failed: ") {
                bail!(
                    "{} is unmounted, but the final flush failed: {e}; \
                     what was written since the last commit is not saved (see tresor.log)",
                    canon.display()
                );
            }
        }
    }
    Ok(())
}

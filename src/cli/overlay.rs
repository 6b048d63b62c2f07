//! `tresor overlay FOLDER`: encrypts a folder in place.
//!
//! The contents are copied into a vault (mounted on a temporary mountpoint
//! next to the vault directory), verified byte for byte, uploaded when the
//! vault has remote backends, and then the vault is mounted over FOLDER
//! itself. The originals are renamed aside (`FOLDER.tresor-originals-TS`, a
//! rename in the same directory) before the mount, verified once more
//! against the mounted vault, and only then deleted.
//!
//! Every step is recorded in a journal, `VAULT/overlay.json`, written
//! atomically before the step's effects become visible. Until the originals
//! are deleted they exist either at FOLDER or at the renamed directory, so a
//! crash at any point loses nothing: `--resume` continues from the journal,
//! `--rollback` puts the folder back (from the renamed originals, or copied
//! back out of the vault if they were already deleted).
//!
//! `TRESOR_OVERLAY_STOP_AFTER=copy|verified|synced|moving|originals-moved|mounted`
//! exits (status 75) right after that step, as a crash would: for tests.

use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::VaultArgs;
use crate::remote::backend::VaultConfig;
use crate::vault::{self, VaultPaths};

const BUF: usize = 1 << 20;
/// How many differences a failed verification lists.
const MAX_DIFFS: usize = 20;

pub struct OverlayOpts {
    pub vault: VaultArgs,
    pub folder: PathBuf,
    pub quiet: bool,
    pub json: bool,
    pub resume: bool,
    pub rollback: bool,
    pub keep_originals: bool,
}

#[derive(Serialize, Deserialize, Clone)]
struct Journal {
    folder: PathBuf,
    vault: PathBuf,
    /// copying → verified → synced → moving → originals-moved → mounted → done
    state: String,
    /// Unix seconds.
    started: u64,
    /// Where the originals are (or go) once moved aside.
    originals: Option<PathBuf>,
    files: u64,
    bytes: u64,
    keep_originals: bool,
}

fn journal_path(vault: &Path) -> PathBuf {
    vault.join("overlay.json")
}

fn load_journal(vault: &Path) -> Result<Option<Journal>> {
    let p = journal_path(vault);
    match std::fs::read(&p) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
            format!("cannot parse the overlay journal {}", p.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

/// Writes the journal atomically and durably (temp file, fsync, rename, fsync dir).
fn save_journal(j: &Journal) -> Result<()> {
    let p = journal_path(&j.vault);
    let tmp = p.with_extension("json.tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(j)?.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &p)?;
    sync_dir(&j.vault);
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

fn set_state(j: &mut Journal, state: &str) -> Result<()> {
    j.state = state.to_string();
    save_journal(j)
}

/// The test hook: exits as if killed once `point` is reached.
fn stop_point(point: &str) {
    if std::env::var("TRESOR_OVERLAY_STOP_AFTER").as_deref() == Ok(point) {
        eprintln!("tresor: overlay stopped after {point} (TRESOR_OVERLAY_STOP_AFTER)");
        std::process::exit(75);
    }
}

/// `/home/u/Dokumente` → `home-u-Dokumente` (`-` and `\` escaped as in systemd).
fn escape_path(p: &Path) -> String {
    let mut out = String::new();
    for &b in p
        .as_os_str()
        .as_bytes()
        .strip_prefix(b"/")
        .unwrap_or_default()
    {
        match b {
            b'/' => out.push('-'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

/// Absolute path with the parent resolved (FOLDER itself is not followed:
/// it may be a mount or missing during a resume).
fn resolve_folder(folder: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(folder).context("invalid folder path")?;
    let name = abs
        .file_name()
        .with_context(|| format!("{} has no name to overlay", abs.display()))?
        .to_owned();
    let parent = abs.parent().context("cannot overlay /")?;
    let parent = std::fs::canonicalize(parent)
        .with_context(|| format!("cannot resolve {}", parent.display()))?;
    Ok(parent.join(name))
}

fn tmp_mountpoint(vault: &Path) -> PathBuf {
    let mut s = vault.as_os_str().to_owned();
    s.push(".overlay-mnt");
    PathBuf::from(s)
}

fn is_tresor_mount(p: &Path) -> bool {
    crate::mount::daemon::mountpoint_containing(p).as_deref() == Some(p)
}

fn mount_on(paths: &VaultPaths, mp: &Path, pass: &[u8]) -> Result<()> {
    if is_tresor_mount(mp) {
        return Ok(());
    }
    std::fs::create_dir_all(mp).with_context(|| format!("cannot create {}", mp.display()))?;
    crate::mount::daemon::mount(
        crate::mount::daemon::MountRequest {
            vault: VaultPaths::new(paths.root.clone()),
            mountpoint: mp.to_path_buf(),
            options: Vec::new(),
            foreground: false,
        },
        pass,
    )
}

fn unmount_if_mounted(mp: &Path) -> Result<()> {
    if is_tresor_mount(mp) {
        crate::mount::daemon::unmount(mp)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Progress

struct Progress {
    bar: Option<indicatif::ProgressBar>,
    plain: bool,
    what: String,
    files_total: u64,
    bytes_total: u64,
    state: Mutex<(u64, u64, Option<Instant>)>,
    started: Instant,
}

impl Progress {
    fn new(quiet: bool, what: &str, files_total: u64, bytes_total: u64) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = (!quiet && tty).then(|| {
            let b = indicatif::ProgressBar::new(bytes_total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} {bar:30} {bytes}/{total_bytes} {msg} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.set_prefix(what.to_string());
            b
        });
        Progress {
            bar,
            plain: !quiet && !tty,
            what: what.to_string(),
            files_total,
            bytes_total,
            state: Mutex::new((0, 0, None)),
            started: Instant::now(),
        }
    }

    fn add(&self, files: u64, bytes: u64) {
        let mut s = self.state.lock();
        s.0 += files;
        s.1 += bytes;
        if let Some(b) = &self.bar {
            b.set_position(s.1);
            if files > 0 {
                b.set_message(format!("{}/{} files", s.0, self.files_total));
            }
        } else if self.plain && s.2.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            self.line(s.0, s.1);
            s.2 = Some(Instant::now());
        }
    }

    fn line(&self, files: u64, bytes: u64) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = bytes as f64 / secs;
        let eta = if rate > 0.0 {
            format!(
                "{:.0} s",
                self.bytes_total.saturating_sub(bytes) as f64 / rate
            )
        } else {
            "?".into()
        };
        eprintln!(
            "overlay: {} {files}/{} files, {bytes}/{} bytes, {:.1} MiB/s, ETA {eta}",
            self.what,
            self.files_total,
            self.bytes_total,
            rate / 1048576.0
        );
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        } else if self.plain {
            let s = self.state.lock();
            self.line(s.0, s.1);
        }
    }
}

// ---------------------------------------------------------------------------
// Tree walking, copying, verifying

/// Counts files and bytes; refuses device nodes, FIFOs and sockets.
fn scan(dir: &Path) -> Result<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let e = e?;
            let m = e.metadata()?;
            let ft = m.file_type();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                files += 1;
                bytes += m.len();
            } else if ft.is_symlink() {
                files += 1;
            } else {
                bail!(
                    "{} is a device node, FIFO or socket; tresor cannot store it (move it out of the folder first)",
                    e.path().display()
                );
            }
        }
    }
    Ok((files, bytes))
}

/// Sets atime and mtime (nanoseconds) without following symlinks.
fn set_times(p: &Path, m: &std::fs::Metadata) -> Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let atime = TimeSpec::new(m.atime(), m.atime_nsec());
    let mtime = TimeSpec::new(m.mtime(), m.mtime_nsec());
    utimensat(None, p, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(std::io::Error::from)
        .with_context(|| format!("cannot set the times of {}", p.display()))
}

fn same_file_meta(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.file_type() == b.file_type()
        && a.len() == b.len()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && a.mode() & 0o7777 == b.mode() & 0o7777
}

fn remove_any(p: &Path) -> Result<()> {
    let m = std::fs::symlink_metadata(p)?;
    if m.is_dir() {
        remove_tree(p)
    } else {
        Ok(std::fs::remove_file(p)?)
    }
}

/// rm -rf that also handles read-only directories.
fn remove_tree(p: &Path) -> Result<()> {
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            }
        }
    }
    std::fs::remove_dir_all(p).with_context(|| format!("cannot remove {}", p.display()))
}

/// Copies the tree below `src` into `dst` (an existing directory): modes,
/// times (ns), symlinks, hard links. Entries already present with the same
/// type, size, mode and mtime are kept (resume); others are replaced, and
/// entries `src` does not have are removed.
fn copy_tree(src: &Path, dst: &Path, progress: &Progress) -> Result<()> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    copy_dir(src, dst, progress, &mut links)
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    progress: &Progress,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let mut names = BTreeSet::new();
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .with_context(|| format!("cannot read {}", src.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        names.insert(name.clone());
        let s = e.path();
        let d = dst.join(&name);
        let m = std::fs::symlink_metadata(&s)?;
        let existing = std::fs::symlink_metadata(&d).ok();
        let ft = m.file_type();
        if let Some(x) = &existing {
            let keep = if ft.is_dir() {
                x.is_dir()
            } else if ft.is_symlink() {
                x.file_type().is_symlink() && std::fs::read_link(&s)? == std::fs::read_link(&d)?
            } else {
                same_file_meta(&m, x)
            };
            if !keep {
                remove_any(&d)?;
            } else if !ft.is_dir() {
                if m.nlink() > 1 {
                    links.insert((m.dev(), m.ino()), d.clone());
                }
                progress.add(1, if ft.is_file() { m.len() } else { 0 });
                continue;
            }
        }
        if ft.is_dir() {
            if !d.is_dir() {
                std::fs::create_dir(&d)
                    .with_context(|| format!("cannot create {}", d.display()))?;
            }
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
            copy_dir(&s, &d, progress, links)?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
            set_times(&d, &m)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&s)?, &d)
                .with_context(|| format!("cannot create the symlink {}", d.display()))?;
            // Symlink times are best effort (not every filesystem keeps them).
            let _ = set_times(&d, &m);
            progress.add(1, 0);
        } else {
            if m.nlink() > 1 {
                if let Some(first) = links.get(&(m.dev(), m.ino())) {
                    std::fs::hard_link(first, &d)
                        .with_context(|| format!("cannot create the hard link {}", d.display()))?;
                    progress.add(1, m.len());
                    continue;
                }
                links.insert((m.dev(), m.ino()), d.clone());
            }
            copy_file(&s, &d, progress)?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
            set_times(&d, &m)?;
            progress.add(1, 0);
        }
    }
    // Entries left over from an earlier attempt that the source no longer has.
    for e in std::fs::read_dir(dst)? {
        let e = e?;
        if !names.contains(&e.file_name()) {
            remove_any(&e.path())?;
        }
    }
    Ok(())
}

fn copy_file(s: &Path, d: &Path, progress: &Progress) -> Result<()> {
    let mut input =
        std::fs::File::open(s).with_context(|| format!("cannot read {}", s.display()))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(d)
        .with_context(|| format!("cannot create {}", d.display()))?;
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", s.display())),
        };
        out.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", d.display()))?;
        progress.add(0, n as u64);
    }
    out.sync_all()
        .with_context(|| format!("cannot write {}", d.display()))?;
    Ok(())
}

/// Compares the trees below `a` (the originals) and `b`: entry names,
/// types, sizes, modes, symlink targets and file contents byte for byte.
fn verify_tree(a: &Path, b: &Path, progress: &Progress) -> Result<()> {
    let mut diffs = Vec::new();
    verify_dir(a, b, Path::new(""), progress, &mut diffs)?;
    if !diffs.is_empty() {
        bail!(
            "verification failed; the originals are untouched. Differences:\n  {}",
            diffs.join("\n  ")
        );
    }
    Ok(())
}

fn verify_dir(
    a: &Path,
    b: &Path,
    rel: &Path,
    progress: &Progress,
    diffs: &mut Vec<String>,
) -> Result<()> {
    let list = |d: &Path| -> Result<BTreeSet<std::ffi::OsString>> {
        std::fs::read_dir(d)
            .with_context(|| format!("cannot read {}", d.display()))?
            .map(|e| e.map(|e| e.file_name()).map_err(Into::into))
            .collect()
    };
    let (na, nb) = (list(a)?, list(b)?);
    for missing in na.difference(&nb) {
        diffs.push(format!("{}: missing", rel.join(missing).display()));
    }
    for extra in nb.difference(&na) {
        diffs.push(format!("{}: unexpected", rel.join(extra).display()));
    }
    for name in na.intersection(&nb) {
        if diffs.len() >= MAX_DIFFS {
            return Ok(());
        }
        let (pa, pb, r) = (a.join(name), b.join(name), rel.join(name));
        let (ma, mb) = (
            std::fs::symlink_metadata(&pa)?,
            std::fs::symlink_metadata(&pb)?,
        );
        let (ta, tb) = (ma.file_type(), mb.file_type());
        if ta.is_dir() != tb.is_dir() || ta.is_symlink() != tb.is_symlink() {
            diffs.push(format!("{}: different type", r.display()));
            continue;
        }
        if !ta.is_symlink() && ma.mode() & 0o7777 != mb.mode() & 0o7777 {
            diffs.push(format!(
                "{}: mode {:o} instead of {:o}",
                r.display(),
                mb.mode() & 0o7777,
                ma.mode() & 0o7777
            ));
        }
        if ta.is_dir() {
            verify_dir(&pa, &pb, &r, progress, diffs)?;
        } else if ta.is_symlink() {
            if std::fs::read_link(&pa)? != std::fs::read_link(&pb)? {
                diffs.push(format!("{}: different symlink target", r.display()));
            }
            progress.add(1, 0);
        } else if ma.len() != mb.len() {
            diffs.push(format!(
                "{}: {} bytes instead of {}",
                r.display(),
                mb.len(),
                ma.len()
            ));
        } else {
            if !same_contents(&pa, &pb, progress)? {
                diffs.push(format!("{}: different contents", r.display()));
            }
            progress.add(1, 0);
        }
    }
    Ok(())
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn same_contents(a: &Path, b: &Path, progress: &Progress) -> Result<bool> {
    let mut fa = std::fs::File::open(a).with_context(|| format!("cannot read {}", a.display()))?;
    let mut fb = std::fs::File::open(b).with_context(|| format!("cannot read {}", b.display()))?;
    let (mut ba, mut bb) = (vec![0u8; BUF], vec![0u8; BUF]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
        progress.add(0, na as u64);
    }
}

// ---------------------------------------------------------------------------
// The command

struct Ctx {
    paths: VaultPaths,
    pass: zeroize::Zeroizing<Vec<u8>>,
    tmp: PathBuf,
    quiet: bool,
    json: bool,
    vault_args: VaultArgs,
}

impl Ctx {
    fn say(&self, msg: &str) {
        if !self.quiet && !self.json {
            eprintln!("overlay: {msg}");
        }
    }
    fn progress(&self, what: &str, j: &Journal) -> Progress {
        Progress::new(self.quiet || self.json, what, j.files, j.bytes)
    }
}

pub fn run(o: OverlayOpts) -> Result<()> {
    let started = Instant::now();
    let folder = resolve_folder(&o.folder)?;
    let root = match &o.vault.vault {
        Some(v) => std::path::absolute(v).context("invalid --vault path")?,
        None => {
            let d = vault::default_vault_dir()?;
            d.parent()
                .context("no data directory")?
                .join(escape_path(&folder))
        }
    };
    // Canonical, like the mount table and the daemon's FSName.
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    if root.starts_with(&folder) || folder.starts_with(&root) {
        bail!(
            "the vault {} and the folder {} must not contain each other",
            root.display(),
            folder.display()
        );
    }
    let paths = VaultPaths::new(root.clone());
    let mut vault_args = o.vault.clone();
    vault_args.vault = Some(root.clone());
    let journal = load_journal(&root)?;
    if o.rollback || o.resume {
        let Some(j) = journal else {
            bail!(
                "no overlay in progress for the vault {} (no {})",
                root.display(),
                journal_path(&root).display()
            );
        };
        if j.folder != folder {
            bail!(
                "the overlay in progress in {} is of {}, not {}",
                root.display(),
                j.folder.display(),
                folder.display()
            );
        }
        vault::require_exists(&paths)?;
        let pass = vault_args.secret(false)?;
        let ctx = Ctx {
            tmp: tmp_mountpoint(&root),
            paths,
            pass,
            quiet: o.quiet,
            json: o.json,
            vault_args,
        };
        return if o.rollback {
            rollback(&ctx, j, started)
        } else {
            advance(&ctx, j, started)
        };
    }
    if let Some(j) = journal {
        bail!(
            "an overlay of {} into this vault is already recorded (state {}); \
             continue it with `tresor overlay --resume` or undo it with `tresor overlay --rollback`",
            j.folder.display(),
            j.state
        );
    }
    let meta = std::fs::symlink_metadata(&folder)
        .with_context(|| format!("cannot overlay {}", folder.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", folder.display());
    }
    if is_tresor_mount(&folder) {
        bail!("{} is already a tresor mount", folder.display());
    }
    let (files, bytes) = scan(&folder)?;
    let creating = !paths.key_file().exists();
    let pass = vault_args.secret(creating)?;
    if creating {
        let recovery = vault::init(&paths, &pass)?;
        let text = format!(
            "Created vault {}\n\nRecovery key (shown once; it opens the vault if the passphrase is lost):\n\n    {}\n",
            root.display(),
            recovery.to_display_string()
        );
        // With --json, stdout carries exactly one JSON line.
        if o.json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
    let ctx = Ctx {
        tmp: tmp_mountpoint(&root),
        paths,
        pass,
        quiet: o.quiet,
        json: o.json,
        vault_args,
    };
    // A crash before the journal was written may have left the mount.
    unmount_if_mounted(&ctx.tmp)?;
    mount_on(&ctx.paths, &ctx.tmp, &ctx.pass)?;
    if std::fs::read_dir(&ctx.tmp)?.next().is_some() {
        let _ = crate::mount::daemon::unmount(&ctx.tmp);
        let _ = std::fs::remove_dir(&ctx.tmp);
        bail!(
            "the vault {} already holds files; overlay needs a new or empty vault",
            root.display()
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let j = Journal {
        folder,
        vault: root,
        state: "copying".into(),
        started: now,
        originals: None,
        files,
        bytes,
        keep_originals: o.keep_originals,
    };
    save_journal(&j)?;
    advance(&ctx, j, started)
}

/// Runs the remaining steps from the journal's state.
fn advance(ctx: &Ctx, mut j: Journal, started: Instant) -> Result<()> {
    loop {
        match j.state.as_str() {
            "copying" => {
                mount_on(&ctx.paths, &ctx.tmp, &ctx.pass)?;
                let (files, bytes) = scan(&j.folder)?;
                j.files = files;
                j.bytes = bytes;
                ctx.say(&format!(
                    "copying {files} files ({}) into the vault",
                    crate::progress::human(bytes)
                ));
                let p = ctx.progress("copying", &j);
                let r = copy_tree(&j.folder, &ctx.tmp, &p);
                p.finish();
                r?;
                // The vault's root takes the folder's mode (best effort).
                if let Ok(m) = std::fs::metadata(&j.folder) {
                    let _ = std::fs::set_permissions(
                        &ctx.tmp,
                        std::fs::Permissions::from_mode(m.mode() & 0o7777),
                    );
                }
                stop_point("copy");
                ctx.say("verifying the copy byte for byte");
                let p = ctx.progress("verifying", &j);
                let r = verify_tree(&j.folder, &ctx.tmp, &p);
                p.finish();
                r?;
                set_state(&mut j, "verified")?;
                stop_point("verified");
            }
            "verified" => {
                if !VaultConfig::load(&ctx.paths.root)?.backends.is_empty() {
                    mount_on(&ctx.paths, &ctx.tmp, &ctx.pass)?;
                    ctx.say("uploading to the vault's backends");
                    crate::cli::sync::sync_cmd(&ctx.vault_args, None, ctx.quiet || ctx.json, false)
                        .context("upload to the backends failed; the originals are untouched (retry with --resume)")?;
                }
                set_state(&mut j, "synced")?;
                stop_point("synced");
            }
            "synced" => {
                unmount_if_mounted(&ctx.tmp)?;
                let _ = std::fs::remove_dir(&ctx.tmp);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let mut name = j.folder.as_os_str().to_owned();
                name.push(format!(".tresor-originals-{now}"));
                j.originals = Some(PathBuf::from(name));
                set_state(&mut j, "moving")?;
                stop_point("moving");
            }
            "moving" => {
                let orig = j.originals.clone().context("journal without originals")?;
                if !orig.exists() {
                    let m = std::fs::metadata(&j.folder)?;
                    std::fs::rename(&j.folder, &orig).with_context(|| {
                        format!(
                            "cannot move {} aside to {}",
                            j.folder.display(),
                            orig.display()
                        )
                    })?;
                    sync_dir(orig.parent().unwrap_or(Path::new("/")));
                    std::fs::create_dir(&j.folder)?;
                    let _ = std::fs::set_permissions(
                        &j.folder,
                        std::fs::Permissions::from_mode(m.mode() & 0o7777),
                    );
                } else if !j.folder.exists() {
                    std::fs::create_dir(&j.folder)?;
                }
                sync_dir(orig.parent().unwrap_or(Path::new("/")));
                set_state(&mut j, "originals-moved")?;
                stop_point("originals-moved");
            }
            "originals-moved" => {
                unmount_if_mounted(&ctx.tmp)?;
                if !j.folder.exists() {
                    std::fs::create_dir(&j.folder)?;
                }
                mount_on(&ctx.paths, &j.folder, &ctx.pass)?;
                set_state(&mut j, "mounted")?;
                stop_point("mounted");
            }
            "mounted" => {
                mount_on(&ctx.paths, &j.folder, &ctx.pass)?;
                let orig = j.originals.clone().context("journal without originals")?;
                if orig.exists() {
                    ctx.say("verifying the mounted folder against the originals");
                    let p = ctx.progress("re-verifying", &j);
                    let r = verify_tree(&orig, &j.folder, &p);
                    p.finish();
                    r.with_context(|| {
                        format!(
                            "the originals are kept in {}; `tresor overlay --rollback {}` restores them",
                            orig.display(),
                            j.folder.display()
                        )
                    })?;
                    if !j.keep_originals {
                        remove_tree(&orig)?;
                        sync_dir(orig.parent().unwrap_or(Path::new("/")));
                    }
                }
                set_state(&mut j, "done")?;
            }
            "done" => {
                summary(ctx, &j, started);
                return Ok(());
            }
            other => bail!("unknown overlay state {other:?} in the journal"),
        }
    }
}

fn summary(ctx: &Ctx, j: &Journal, started: Instant) {
    let kept = j
        .originals
        .as_ref()
        .filter(|o| o.exists())
        .map(|o| o.display().to_string());
    if ctx.json {
        println!(
            "{}",
            json!({
                "folder": j.folder,
                "vault": j.vault,
                "files": j.files,
                "bytes": j.bytes,
                "seconds": started.elapsed().as_secs_f64(),
                "originals_kept": kept,
                "state": "done",
            })
        );
        return;
    }
    if ctx.quiet {
        return;
    }
    let f = j.folder.display();
    println!(
        "{f} is now encrypted: {} files, {} in the vault {} ({:.1} s).",
        j.files,
        crate::progress::human(j.bytes),
        j.vault.display(),
        started.elapsed().as_secs_f64()
    );
    match &kept {
        Some(k) => println!("The unencrypted originals are kept in {k} (delete them yourself)."),
        None => println!("The unencrypted originals were verified against the vault and deleted."),
    }
    println!("Unmount:     tresor unmount {f}   (the folder is then empty)");
    println!(
        "Mount again: tresor mount --vault {} {f}",
        j.vault.display()
    );
    println!(
        "Undo:        tresor overlay --vault {} --rollback {f}   (copies the files back)",
        j.vault.display()
    );
}

/// Puts FOLDER back as it was and empties the vault again.
fn rollback(ctx: &Ctx, j: Journal, started: Instant) -> Result<()> {
    let folder = &j.folder;
    unmount_if_mounted(&ctx.tmp)?;
    unmount_if_mounted(folder)?;
    let orig = j.originals.clone().filter(|o| o.exists());
    let how;
    if let Some(orig) = orig {
        if folder.exists() {
            std::fs::remove_dir(folder).with_context(|| {
                format!(
                    "cannot put the originals back: {} is not empty (the originals are safe in {})",
                    folder.display(),
                    orig.display()
                )
            })?;
        }
        std::fs::rename(&orig, folder)?;
        sync_dir(folder.parent().unwrap_or(Path::new("/")));
        how = "moved the originals back";
    } else if matches!(j.state.as_str(), "mounted" | "done") {
        // The originals were deleted: copy everything back out of the vault.
        if !folder.exists() {
            std::fs::create_dir(folder)?;
        }
        if std::fs::read_dir(folder)?.next().is_some() {
            bail!(
                "{} is not empty; cannot copy the files back into it",
                folder.display()
            );
        }
        mount_on(&ctx.paths, &ctx.tmp, &ctx.pass)?;
        ctx.say("copying the files back out of the vault");
        let p = ctx.progress("restoring", &j);
        let r = copy_tree(&ctx.tmp, folder, &p);
        p.finish();
        r?;
        if let Ok(m) = std::fs::metadata(&ctx.tmp) {
            let _ = std::fs::set_permissions(
                folder,
                std::fs::Permissions::from_mode(m.mode() & 0o7777),
            );
        }
        let p = ctx.progress("verifying", &j);
        let r = verify_tree(&ctx.tmp, folder, &p);
        p.finish();
        r?;
        how = "copied the files back out of the vault";
    } else {
        how = "the originals were never moved";
    }
    // The folder is whole again: empty the vault (it was empty before).
    mount_on(&ctx.paths, &ctx.tmp, &ctx.pass)?;
    for e in std::fs::read_dir(&ctx.tmp)? {
        remove_any(&e?.path())?;
    }
    crate::mount::daemon::unmount(&ctx.tmp)?;
    let _ = std::fs::remove_dir(&ctx.tmp);
    std::fs::remove_file(journal_path(&j.vault))?;
    if ctx.json {
        println!(
            "{}",
            json!({"folder": folder, "vault": j.vault, "rolled_back": true, "how": how,
                   "seconds": started.elapsed().as_secs_f64()})
        );
    } else if !ctx.quiet {
        println!(
            "Rolled back: {} is as before ({how}); the vault {} is empty again.",
            folder.display(),
            j.vault.display()
        );
    }
    Ok(())
}

//! The filesystem work of `tresor overlay FOLDER` (encrypt a folder in
//! place); `cli/overlay.rs` runs the steps, mounts and prints.
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
//! Here: the journal, the folder and vault names (`escape_path` names the
//! default vault after the folder, as systemd escapes paths), and the tree
//! walks: counting, copying with modes, times (ns), symlinks and hard links,
//! and byte-for-byte verification. Nothing here mounts (that is `mount/`,
//! above this layer) or prints: the walks report files and bytes done
//! through a callback, which the command turns into a progress display.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Files and bytes done, reported by the tree walks as they go: `(files, bytes)`.
pub type Tally<'a> = &'a dyn Fn(u64, u64);

const BUF: usize = 1 << 20;
/// How many differences a failed verification lists.
const MAX_DIFFS: usize = 20;

#[derive(Serialize, Deserialize, Clone)]
pub struct Journal {
    pub folder: PathBuf,
    pub vault: PathBuf,
    /// copying → verified → synced → moving → originals-moved → mounted → done
    pub state: String,
    /// Unix seconds.
    pub started: u64,
    /// Where the originals are (or go) once moved aside.
    pub originals: Option<PathBuf>,
    pub files: u64,
    pub bytes: u64,
    pub keep_originals: bool,
}

pub fn journal_path(vault: &Path) -> PathBuf {
    vault.join("overlay.json")
}

pub fn load_journal(vault: &Path) -> Result<Option<Journal>> {
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
pub fn save_journal(j: &Journal) -> Result<()> {
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

pub fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

pub fn set_state(j: &mut Journal, state: &str) -> Result<()> {
    j.state = state.to_string();
    save_journal(j)
}

/// `/home/u/Dokumente` → `home-u-Dokumente` (`-` and `\` escaped as in systemd).
pub fn escape_path(p: &Path) -> String {
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
pub fn resolve_folder(folder: &Path) -> Result<PathBuf> {
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

pub fn tmp_mountpoint(vault: &Path) -> PathBuf {
    let mut s = vault.as_os_str().to_owned();
    s.push(".overlay-mnt");
    PathBuf::from(s)
}

// ---------------------------------------------------------------------------
// Tree walking, copying, verifying

/// Counts files and bytes; refuses device nodes, FIFOs and sockets.
pub fn scan(dir: &Path) -> Result<(u64, u64)> {
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

pub fn remove_any(p: &Path) -> Result<()> {
    let m = std::fs::symlink_metadata(p)?;
    if m.is_dir() {
        remove_tree(p)
    } else {
        Ok(std::fs::remove_file(p)?)
    }
}

/// rm -rf that also handles read-only directories.
pub fn remove_tree(p: &Path) -> Result<()> {
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
pub fn copy_tree(src: &Path, dst: &Path, progress: Tally) -> Result<()> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    copy_dir(src, dst, progress, &mut links)
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    progress: Tally,
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
                progress(1, if ft.is_file() { m.len() } else { 0 });
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
            progress(1, 0);
        } else {
            if m.nlink() > 1 {
                if let Some(first) = links.get(&(m.dev(), m.ino())) {
                    std::fs::hard_link(first, &d)
                        .with_context(|| format!("cannot create the hard link {}", d.display()))?;
                    progress(1, m.len());
                    continue;
                }
                links.insert((m.dev(), m.ino()), d.clone());
            }
            copy_file(&s, &d, progress)?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
            set_times(&d, &m)?;
            progress(1, 0);
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

fn copy_file(s: &Path, d: &Path, progress: Tally) -> Result<()> {
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
        progress(0, n as u64);
    }
    out.sync_all()
        .with_context(|| format!("cannot write {}", d.display()))?;
    Ok(())
}

/// Compares the trees below `a` (the originals) and `b`: entry names,
/// types, sizes, modes, symlink targets and file contents byte for byte.
pub fn verify_tree(a: &Path, b: &Path, progress: Tally) -> Result<()> {
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
    progress: Tally,
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
            progress(1, 0);
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
            progress(1, 0);
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

fn same_contents(a: &Path, b: &Path, progress: Tally) -> Result<bool> {
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
        progress(0, na as u64);
    }
}

/// The name the originals are moved aside to: `FOLDER.tresor-originals-TS`.
pub fn originals_path(folder: &Path, now: u64) -> PathBuf {
    let mut name = folder.as_os_str().to_owned();
    name.push(format!(".tresor-originals-{now}"));
    PathBuf::from(name)
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Gives `to` the permission bits of `from` (best effort).
pub fn copy_mode(from: &Path, to: &Path) {
    if let Ok(m) = std::fs::metadata(from) {
        let _ = std::fs::set_permissions(to, std::fs::Permissions::from_mode(m.mode() & 0o7777));
    }
}

/// Renames `folder` to `orig` (unless that was done before a crash) and
/// puts an empty directory with the folder's mode in its place.
pub fn move_originals_aside(folder: &Path, orig: &Path) -> Result<()> {
    if !orig.exists() {
        let m = std::fs::metadata(folder)?;
        std::fs::rename(folder, orig).with_context(|| {
            format!(
                "cannot move {} aside to {}",
                folder.display(),
                orig.display()
            )
        })?;
        sync_dir(orig.parent().unwrap_or(Path::new("/")));
        std::fs::create_dir(folder)?;
        let _ =
            std::fs::set_permissions(folder, std::fs::Permissions::from_mode(m.mode() & 0o7777));
    } else if !folder.exists() {
        std::fs::create_dir(folder)?;
    }
    sync_dir(orig.parent().unwrap_or(Path::new("/")));
    Ok(())
}

/// Renames the originals back to `folder`, which must be missing or empty.
pub fn move_originals_back(orig: &Path, folder: &Path) -> Result<()> {
    if folder.exists() {
        std::fs::remove_dir(folder).with_context(|| {
            format!(
                "cannot put the originals back: {} is not empty (the originals are safe in {})",
                folder.display(),
                orig.display()
            )
        })?;
    }
    std::fs::rename(orig, folder)?;
    sync_dir(folder.parent().unwrap_or(Path::new("/")));
    Ok(())
}

/// Removes everything below `dir`, keeping `dir`.
pub fn empty_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        remove_any(&e?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_path_names_the_vault_like_systemd() {
        assert_eq!(
            escape_path(Path::new("/home/u/Dokumente")),
            "home-u-Dokumente"
        );
        assert_eq!(escape_path(Path::new("/a-b/c d")), "a\\x2db-c\\x20d");
        assert_eq!(escape_path(Path::new("/")), "-");
    }
}

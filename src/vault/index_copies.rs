//! Local copies of the index, so one bad sector or one mistaken `rm` in the
//! vault directory does not lose the vault.
//!
//! The index is the only place that knows names, sizes and which chunks make
//! up which file; the packs alone are opaque. Remote backends hold index
//! snapshots (`remote::snapshot`), but a vault without backends had nothing.
//! So the daemon copies the index into `VAULT/index-copies/` while it is
//! checkpointed (every [`COPY_INTERVAL_SECS`] when it changed, and at
//! unmount) — the same checkpoint the remote snapshots read, so a copy is
//! always a complete, committed index. A copy is the SQLCipher file itself:
//! sealed by the index key like the index, useless without the passphrase.
//! The newest [`KEEP_COPIES`] are kept (a copy of a 100,000-file index is
//! about 17 MB). `tresor fsck --repair` puts the newest copy that opens and
//! passes SQLite's `quick_check` back when the index is missing or damaged.
//!
//! A copy is a recovery point for a damaged index, not kept history. Its
//! name carries its [`SnapshotMark`] (`index-MS-gGEN-pPACK.sqlite`), the
//! same mark a remote snapshot generation has: in a vault with backends it
//! keeps the *remote* objects of the collected packs it references
//! (`remote::deletion`), so an index put back from it reads them from a
//! backend (`fsck --repair` marks them evicted). It never keeps a pack's
//! *local* file: deleted data leaves the host's disk at once (issue 15), and
//! in a local-only vault `fsck` names the files whose data the copy
//! references but the store no longer holds. Names without a mark (older
//! tresor) keep every collected pack's remote objects until they age out.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::index::{Index, SnapshotMark};
use crate::vault::keys::SecretKey;
use crate::vault::VaultPaths;

/// Copies kept, newest first.
pub const KEEP_COPIES: usize = 3;
/// How often a changed index is copied while mounted.
pub const COPY_INTERVAL_SECS: u64 = 300;

/// One copy: when it was taken (ms since the epoch) and where it is.
#[derive(Clone, Debug)]
pub struct IndexCopy {
    pub taken_ms: u64,
    pub path: PathBuf,
    /// What the copy can reference (unknown for copies of older tresors).
    pub mark: SnapshotMark,
}

/// Copies the index file. The caller holds the index checkpointed and
/// locked (`IndexAccess::with_checkpoint`), so the file is complete and
/// `mark` is its own ([`Index::snapshot_mark`] read under that lock).
pub fn take(paths: &VaultPaths, mark: SnapshotMark) -> Result<IndexCopy> {
    let dir = paths.index_copies();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let taken_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut src = std::fs::File::open(paths.index()).context("cannot open the index to copy it")?;
    let path = dir.join(format!(
        "index-{taken_ms}-g{}-p{}.sqlite",
        mark.generation.unwrap_or(0),
        mark.max_pack.unwrap_or(0)
    ));
    let tmp = dir.join(format!(
        ".index-{taken_ms}.{:016x}.tmp",
        rand::random::<u64>()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // File to file: copy_file_range(2), so the kernel copies (a reflink
        // where the filesystem shares extents) and the daemon never holds
        // the whole index in memory (280 MB at a million files).
        std::io::copy(&mut src, &mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).context("cannot write an index copy");
    }
    for old in list(paths).into_iter().skip(KEEP_COPIES) {
        let _ = std::fs::remove_file(&old.path);
    }
    Ok(IndexCopy {
        taken_ms,
        path,
        mark,
    })
}

/// Parses `index-MS.sqlite` (no mark) or `index-MS-gGEN-pPACK.sqlite`.
fn parse_name(name: &str) -> Option<(u64, SnapshotMark)> {
    let stem = name.strip_prefix("index-")?.strip_suffix(".sqlite")?;
    let mut parts = stem.split('-');
    let ms = parts.next()?.parse().ok()?;
    let mut mark = SnapshotMark {
        generation: None,
        max_pack: None,
    };
    match (parts.next(), parts.next(), parts.next()) {
        (None, None, None) => {}
        (Some(g), Some(p), None) => {
            mark.generation = Some(g.strip_prefix('g')?.parse().ok()?);
            mark.max_pack = Some(p.strip_prefix('p')?.parse().ok()?);
        }
        _ => return None,
    }
    Some((ms, mark))
}

/// The marks of the kept copies (what garbage collection must keep for them).
pub fn marks(paths: &VaultPaths) -> Vec<SnapshotMark> {
    list(paths).into_iter().map(|c| c.mark).collect()
}

/// The copies, newest first.
pub fn list(paths: &VaultPaths) -> Vec<IndexCopy> {
    let mut out: Vec<IndexCopy> = std::fs::read_dir(paths.index_copies())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (taken_ms, mark) = parse_name(&name)?;
            Some(IndexCopy {
                taken_ms,
                path: e.path(),
                mark,
            })
        })
        .collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.taken_ms));
    out
}

/// Whether the index at `path` opens with `key` and passes `quick_check`.
pub fn is_intact(path: &Path, key: &SecretKey) -> bool {
    Index::open_read_only(path, key)
        .and_then(|i| i.quick_check())
        .unwrap_or(false)
}

/// Puts the newest intact copy in place of a missing or damaged index. The
/// damaged files are kept beside it (`index.sqlite.damaged-MS`, with their
/// WAL), never deleted. `None` when no copy is intact.
pub fn restore_newest(paths: &VaultPaths, key: &SecretKey) -> Result<Option<IndexCopy>> {
    let Some(copy) = list(paths).into_iter().find(|c| is_intact(&c.path, key)) else {
        return Ok(None);
    };
    move_damaged_aside(paths)?;
    let bytes = std::fs::read(&copy.path)
        .with_context(|| format!("cannot read {}", copy.path.display()))?;
    crate::vault::write_private(&paths.index(), &bytes)?;
    Ok(Some(copy))
}

/// Renames the index files (with WAL) to `index.sqlite.damaged-MS` etc.
pub fn move_damaged_aside(paths: &VaultPaths) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    for f in paths.index_files() {
        if f.exists() {
            let mut aside = f.clone().into_os_string();
            aside.push(format!(".damaged-{now}"));
            std::fs::rename(&f, &aside)
                .with_context(|| format!("cannot move {} aside", f.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_names_carry_their_mark() {
        assert_eq!(
            parse_name("index-1700-g7-p42.sqlite"),
            Some((
                1700,
                SnapshotMark {
                    generation: Some(7),
                    max_pack: Some(42)
                }
            ))
        );
        let old = parse_name("index-1700.sqlite").unwrap();
        assert_eq!(old.1.generation, None, "an unmarked copy needs everything");
        assert_eq!(parse_name("index-1700-g7.sqlite"), None);
        assert_eq!(parse_name(".index-1700.0123.tmp"), None);
    }
}

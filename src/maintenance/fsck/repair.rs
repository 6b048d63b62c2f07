//! The repair phases. Each phase re-reads the tables (a fresh [`analyse`]),
//! applies one kind of fix per function below and commits, so an
//! interrupted repair leaves an index the next `fsck --repair` finishes.
//! Pack files are deleted only after the commit that stops naming them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::analyse::{analyse, load, pack_path, Fixes, PackVerdict};
use super::LOST_FOUND;
use crate::index::{Attr, FileKind, Index, Timestamp, ROOT_INO};

fn commit(index: &Index) -> Result<()> {
    index
        .commit(true)
        .context("committing the repair to the index failed")
}

/// Runs the phases in order; returns one line per action taken.
pub(super) fn repair(index: &Index, store_root: &Path) -> Result<Vec<String>> {
    let fresh = || -> Result<Fixes> { Ok(analyse(index, &load(index, store_root)?)?.fixes) };
    let mut done = Vec::new();

    // Phase 1: dangling rows and impossible names.
    let a = fresh()?;
    drop_bad_dirents(index, &a, &mut done)?;
    drop_dangling_rows(index, &a, &mut done)?;
    remove_symlinks_without_target(index, &a, &mut done)?;
    commit(index)?;

    // Phase 2: inodes unlinked while open before a crash (as mount does).
    if remove_pending_orphans(index, &fresh()?, &mut done)? {
        commit(index)?;
    }

    // Phase 3: unreachable inodes and detached directories → /lost+found.
    move_to_lost_found(index, &fresh, &mut done)?;

    // Phase 4: extents past the end of their file (invisible bytes).
    if trim_extents(index, &fresh()?, &mut done)? {
        commit(index)?;
    }

    // Phase 5: pack rows against the store.
    let a = fresh()?;
    let delete_after_commit = reconcile_packs(index, store_root, &a, &mut done)?;
    drop_dangling_chunk_rows(index, &a, &mut done)?;
    commit(index)?;
    for f in delete_after_commit {
        remove_store_file(store_root, &f)?;
    }

    // Phase 6: derived counts.
    let a = fresh()?;
    recompute_refcounts(index, &a, &mut done)?;
    recompute_nlinks(index, &a, &mut done)?;
    commit(index)?;

    // Phase 7: files no row names (after the commits above).
    delete_leftover_files(store_root, &fresh()?, &mut done)?;
    Ok(done)
}

/// Drops entries naming missing inodes, in non-directories, or extra names of directories.
fn drop_bad_dirents(index: &Index, a: &Fixes, done: &mut Vec<String>) -> Result<()> {
    let mut n = 0;
    for &id in &a.drop_dirents {
        n += index.fsck_delete_dirent(id)?;
    }
    if n > 0 {
        done.push(format!(
            "dropped {n} directory entries naming missing inodes, sitting in non-directories, or extra names of directories"
        ));
    }
    Ok(())
}

/// Drops symlink, xattr, extent, orphan, placement and evicted rows that name nothing.
fn drop_dangling_rows(index: &Index, a: &Fixes, done: &mut Vec<String>) -> Result<()> {
    let mut rows = 0;
    for &ino in &a.drop_symlink_rows {
        rows += index.fsck_delete_symlink_row(ino)?;
    }
    for &ino in &a.drop_xattr_rows {
        rows += index.fsck_delete_xattr_rows(ino)?;
    }
    for &ino in &a.drop_extent_rows {
        rows += index.fsck_delete_extent_rows(ino)?;
    }
    for &ino in &a.drop_orphan_rows {
        rows += index.fsck_delete_orphan_row(ino)?;
    }
    for &p in &a.drop_placements {
        rows += index.fsck_delete_placements(p)?;
    }
    for &p in &a.drop_evicted {
        rows += index.fsck_delete_evicted(p)?;
    }
    if rows > 0 {
        done.push(format!(
            "dropped {rows} dangling symlink/xattr/extent/orphan/placement/evicted rows"
        ));
    }
    Ok(())
}

/// Removes symlink inodes whose target row is lost (they hold no data).
fn remove_symlinks_without_target(index: &Index, a: &Fixes, done: &mut Vec<String>) -> Result<()> {
    for &ino in &a.remove_symlink_inodes {
        let p = String::from_utf8_lossy(&index.path_of(ino)?).into_owned();
        index.fsck_delete_dirents_of(ino)?;
        index.delete_inode(ino)?;
        done.push(format!(
            "removed symlink {p} (inode {ino}): its target was lost"
        ));
    }
    Ok(())
}

/// Deletes inodes unlinked while open before a crash; returns whether any were.
fn remove_pending_orphans(index: &Index, a: &Fixes, done: &mut Vec<String>) -> Result<bool> {
    for &ino in &a.pending_orphans {
        index.delete_inode(ino)?;
    }
    if a.pending_orphans.is_empty() {
        return Ok(false);
    }
    done.push(format!(
        "removed {} inode(s) unlinked while open before a crash",
        a.pending_orphans.len()
    ));
    Ok(true)
}

/// Moves unreachable inodes and detached directories into `/lost+found`,
/// re-analysing and committing after each batch: all unreachable inodes at
/// once, detached directories one at a time (moving one may reattach others).
fn move_to_lost_found(
    index: &Index,
    fresh: &dyn Fn() -> Result<Fixes>,
    done: &mut Vec<String>,
) -> Result<()> {
    let mut moved = Vec::new();
    let mut lost_found: Option<u64> = None;
    for _ in 0..=index.inode_count()? {
        let a = fresh()?;
        let batch: Vec<u64> = if !a.unreachable.is_empty() {
            a.unreachable
        } else if let Some(&d) = a.detached_dirs.first() {
            vec![d]
        } else {
            break;
        };
        let lf = match lost_found {
            Some(lf) => lf,
            None => {
                let lf = lost_and_found(index)?;
                lost_found = Some(lf);
                lf
            }
        };
        for ino in batch {
            index.fsck_delete_dirents_of(ino)?;
            let mut name = format!("#{ino}").into_bytes();
            let mut k = 1;
            while index.lookup(lf, &name)?.is_some() {
                name = format!("#{ino}.{k}").into_bytes();
                k += 1;
            }
            index.insert_dirent(lf, &name, ino)?;
            index.fsck_delete_orphan_row(ino)?;
            moved.push(format!("/lost+found/{}", String::from_utf8_lossy(&name)));
        }
        // nlink of the moved inodes and of lost+found are fixed in phase 6;
        // until then the tree is reachable, which is what matters.
        commit(index)?;
    }
    if !moved.is_empty() {
        let shown: Vec<&str> = moved.iter().take(20).map(String::as_str).collect();
        done.push(format!(
            "moved {} unreachable inode(s) into /lost+found: {}{}",
            moved.len(),
            shown.join(", "),
            if moved.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        ));
    }
    Ok(())
}

/// Trims extents past the end of their file; returns whether any were.
fn trim_extents(index: &Index, a: &Fixes, done: &mut Vec<String>) -> Result<bool> {
    for &(ino, size) in &a.trim_extents {
        index.remove_extents(ino, size, u64::MAX)?;
    }
    if a.trim_extents.is_empty() {
        return Ok(false);
    }
    done.push(format!(
        "trimmed the extents of {} file(s) to their size",
        a.trim_extents.len()
    ));
    Ok(true)
}

/// Applies each pack's verdict (drop unused or unstored packs, mark stored
/// or evicted, unmark evicted, delete a wrong-size local copy a backend
/// holds); returns the store files to delete after the commit.
fn reconcile_packs(
    index: &Index,
    store_root: &Path,
    a: &Fixes,
    done: &mut Vec<String>,
) -> Result<Vec<String>> {
    let mut delete_after_commit = Vec::new();
    for &(id, verdict) in &a.packs {
        let name = index.fsck_pack_name(id)?;
        let file = name.as_deref().and_then(pack_path).unwrap_or_default();
        match verdict {
            PackVerdict::Ok => {}
            PackVerdict::Gone | PackVerdict::DropUnstored => {
                // Only reached for packs no extent uses (else: damage).
                let chunks = index.fsck_delete_chunks_of_pack(id)?;
                index.fsck_delete_placements(id)?;
                index.fsck_delete_evicted(id)?;
                index.fsck_delete_pack(id)?;
                if !file.is_empty() && store_root.join(&file).exists() {
                    delete_after_commit.push(file.clone());
                }
                done.push(format!(
                    "dropped pack #{id} {file} and its {chunks} unused chunk row(s): no extent uses it"
                ));
            }
            PackVerdict::WrongSizeRemoteOk => {
                let full = store_root.join(&file);
                std::fs::remove_file(&full)
                    .with_context(|| format!("cannot delete {}", full.display()))?;
                index.mark_evicted(id as u64)?;
                done.push(format!(
                    "deleted the local copy of {file} (wrong size); it is read from a backend that holds it"
                ));
            }
            PackVerdict::MarkStored(sz) => {
                index.mark_pack_stored(id as u64, sz)?;
                done.push(format!("marked {file} stored ({sz} bytes)"));
            }
            PackVerdict::MarkEvicted => {
                index.mark_evicted(id as u64)?;
                done.push(format!(
                    "marked {file} evicted: it is on a backend, not in the local store"
                ));
            }
            PackVerdict::Unevict => {
                index.fsck_delete_evicted(id)?;
                done.push(format!(
                    "unmarked {file} as evicted: it is in the local store"
                ));
            }
        }
    }
    Ok(delete_after_commit)
}

/// Drops unused chunk rows that name a pack that does not exist.
fn drop_dangling_chunk_rows(index: &Index, a: &Fixes, done: &mut Vec<String>) -> Result<()> {
    let mut dropped = 0;
    for id in &a.drop_chunk_rows {
        dropped += index.fsck_delete_chunk(id)?;
    }
    if dropped > 0 {
        done.push(format!(
            "dropped {dropped} unused chunk row(s) naming packs that do not exist"
        ));
    }
    Ok(())
}

/// Recomputes chunk refcounts from the extents.
fn recompute_refcounts(index: &Index, a: &Fixes, done: &mut Vec<String>) -> Result<()> {
    if a.refcounts {
        let n = index.fsck_recompute_refcounts()?;
        done.push(format!("recomputed the refcount of {n} chunk(s)"));
    }
    Ok(())
}

/// Recomputes link counts from the directory entries.
fn recompute_nlinks(index: &Index, a: &Fixes, done: &mut Vec<String>) -> Result<()> {
    if a.nlinks {
        let n = index.fsck_recompute_file_nlinks()? + index.fsck_recompute_dir_nlinks()?;
        done.push(format!("recomputed the link count of {n} inode(s)"));
    }
    Ok(())
}

/// Deletes files in the store that no pack row names.
fn delete_leftover_files(store_root: &Path, a: &Fixes, done: &mut Vec<String>) -> Result<()> {
    for f in &a.leftover_files {
        remove_store_file(store_root, f)?;
    }
    if !a.leftover_files.is_empty() {
        done.push(format!(
            "deleted {} leftover file(s) from the store that no pack row names",
            a.leftover_files.len()
        ));
    }
    Ok(())
}

fn remove_store_file(store_root: &Path, rel: &str) -> Result<()> {
    let full: PathBuf = store_root.join(rel);
    match std::fs::remove_file(&full) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot delete {}", full.display()))
        }
        _ => Ok(()),
    }
}

/// `/lost+found`, created (0700, owned like the root) if missing.
fn lost_and_found(index: &Index) -> Result<u64> {
    if let Some(ino) = index.lookup(ROOT_INO, LOST_FOUND)? {
        match index.attr(ino)? {
            Some(a) if a.kind == FileKind::Directory => return Ok(ino),
            _ => anyhow::bail!(
                "/lost+found exists and is not a directory; rename it (mount the vault) and run `tresor fsck --repair` again"
            ),
        }
    }
    let root = index
        .attr(ROOT_INO)?
        .context("the root directory's inode is missing; the index cannot be repaired")?;
    let now = Timestamp::now();
    let ino = index.create_inode(&Attr {
        ino: 0,
        kind: FileKind::Directory,
        perm: 0o700,
        uid: root.uid,
        gid: root.gid,
        size: 0,
        blocks: 0,
        nlink: 2,
        rdev: 0,
        atime: now,
        mtime: now,
        ctime: now,
    })?;
    index.insert_dirent(ROOT_INO, LOST_FOUND, ino)?;
    Ok(ino)
}

//! Disk space held back for the moment the disk fills up.
//!
//! When the vault's disk is full, the packs waiting for the store cannot be
//! written, and the index commit that would record a deletion needs disk
//! space itself (SQLite appends to its WAL before it can checkpoint). A
//! full disk would then lock the vault: nothing can be saved, and nothing
//! can be deleted to make room. So the daemon keeps a file of a few MiB
//! (`store/space-reserve`, 1/16 of the filesystem, between 1 and 16 MiB).
//! The first commit that meets ENOSPC deletes it, so that commit, and the
//! deletions it records, fit; it is recreated once the disk has room again
//! (four times its size free). Like ext4's reserved blocks, but for the
//! vault's own bookkeeping.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

const MIN_RESERVE: u64 = 1024 * 1024;
const MAX_RESERVE: u64 = 16 * 1024 * 1024;

pub struct SpaceReserve {
    path: PathBuf,
    size: u64,
    held: AtomicBool,
}

impl SpaceReserve {
    /// A reserve at `path`, sized from its filesystem; it exists on disk
    /// only after [`SpaceReserve::ensure`].
    pub fn new(path: PathBuf) -> SpaceReserve {
        let dir = path.parent().map(PathBuf::from).unwrap_or_default();
        let total = nix::sys::statvfs::statvfs(&dir)
            .map(|s| s.blocks() * s.fragment_size())
            .unwrap_or(0);
        let size = (total / 16).clamp(MIN_RESERVE, MAX_RESERVE);
        let held = path.metadata().is_ok_and(|m| m.len() >= size);
        SpaceReserve {
            path,
            size,
            held: AtomicBool::new(held),
        }
    }

    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    /// Creates the reserve file if it is missing and the disk has four
    /// times its size free. Failures are logged, never fatal.
    pub fn ensure(&self) {
        if self.is_held() {
            return;
        }
        let dir = self.path.parent().map(PathBuf::from).unwrap_or_default();
        let free = nix::sys::statvfs::statvfs(&dir)
            .map(|s| s.blocks_available() * s.fragment_size())
            .unwrap_or(0);
        if free < 4 * self.size {
            return;
        }
        let written = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&self.path)?;
            // Real blocks, not a sparse file: zeros written out.
            let zeros = vec![0u8; 1024 * 1024];
            let mut left = self.size;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                f.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        })();
        match written {
            Ok(()) => {
                if !self.held.swap(true, Ordering::SeqCst) {
                    log::info!(
                        "holding {} MiB of disk in {} for a full disk",
                        self.size / (1024 * 1024),
                        self.path.display()
                    );
                }
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                log::warn!(
                    "cannot create the space reserve {}: {e}",
                    self.path.display()
                );
            }
        }
    }

    /// Deletes the reserve (the disk is full): true if it was held.
    pub fn release(&self) -> bool {
        if !self.held.swap(false, Ordering::SeqCst) {
            return false;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                log::warn!(
                    "the disk is full: released the {} MiB space reserve so the index can commit",
                    self.size / (1024 * 1024)
                );
                true
            }
            Err(e) => {
                log::warn!(
                    "cannot release the space reserve {}: {e}",
                    self.path.display()
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_holds_real_blocks_and_release_frees_them() {
        let dir = tempfile::tempdir().unwrap();
        let r = SpaceReserve::new(dir.path().join("space-reserve"));
        assert!(!r.is_held());
        r.ensure();
        assert!(r.is_held());
        let m = std::fs::metadata(dir.path().join("space-reserve")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(m.len(), r.size);
        assert!(m.blocks() * 512 >= r.size, "the reserve is sparse");
        assert!(r.release());
        assert!(!dir.path().join("space-reserve").exists());
        assert!(!r.release(), "released twice");
    }
}

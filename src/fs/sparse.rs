//! Sparse files: `st_blocks` from the stored extents, SEEK_DATA/SEEK_HOLE.
//!
//! A file's data is its extents (all-zero chunks are never stored, they are
//! holes) plus the bytes still in memory (dirty runs and runs a background
//! flush is sealing). Everything else below the size is a hole.
//!
//! SEEK_DATA/SEEK_HOLE answer in 4 KiB blocks, as ext4 and xfs do: a block
//! holding any data byte counts as data, so a hole is reported only where
//! it covers whole blocks. Extents are byte-exact, and without that rounding
//! a 1-byte write at offset 2 made tools that probe the allocation unit from
//! SEEK_DATA (xfstests' seek_sanity_test, generic/490) conclude it is 2 bytes
//! and then seek past the end of their own test files.

/// The block size SEEK_DATA/SEEK_HOLE round to.
const SEEK_BLOCK: u64 = 4096;

use super::*;

/// A file's in-memory runs as sorted, merged `[start, end)` intervals.
fn memory_runs(st: &FileState) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = st
        .dirty
        .iter()
        .map(|(k, v)| (*k, *k + v.len() as u64))
        .chain(st.sealing.iter().map(|(k, v)| (*k, *k + v.len() as u64)))
        .filter(|(s, e)| s < e)
        .collect();
    runs.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
    for (s, e) in runs {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

impl FsCore {
    /// 512-byte blocks of a regular file: its data extents plus in-memory
    /// bytes not yet covered by one (rounded up once). A hole that was never
    /// written counts nothing. One indexed sum per call, plus one range
    /// lookup per in-memory run.
    pub(super) fn data_blocks(idx: &Index, ino: u64, st: Option<&FileState>) -> FsResult<u64> {
        let mut bytes = idx.data_bytes(ino)?;
        if let Some(st) = st {
            for (s, e) in memory_runs(st) {
                let stored: u64 = idx
                    .extents_in(ino, s, e)?
                    .iter()
                    .map(|x| (x.offset + x.length).min(e) - x.offset.max(s))
                    .sum();
                bytes += (e - s) - stored;
            }
        }
        Ok(bytes.div_ceil(512))
    }

    /// `lseek` with SEEK_DATA or SEEK_HOLE: the first data byte (or hole
    /// byte) at or after `offset`, in [`SEEK_BLOCK`] blocks (a data run
    /// covers the blocks it touches). The end of the file counts as a hole;
    /// ENXIO at or past the end, and for SEEK_DATA when only holes follow
    /// (as Linux does).
    pub fn seek_data_hole(&self, ino: u64, offset: u64, whence: i32) -> FsResult<u64> {
        let want_data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            _ => return Err(FsError::Invalid),
        };
        if history::is_view(ino) {
            // Old generations: one data run up to the end (holes read as
            // zeros either way).
            let a = self.view_getattr(ino)?;
            if a.kind != FileKind::Regular {
                return Err(FsError::Invalid);
            }
            return match (want_data, offset < a.size) {
                (_, false) => Err(FsError::NoSuchOffset),
                (true, true) => Ok(offset),
                (false, true) => Ok(a.size),
            };
        }
        // File state first (lock order), then the index.
        let fs = self.file_state(ino);
        let guard = fs.as_ref().map(|f| f.state.lock());
        let idx = self.data.index.lock();
        let a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        match a.kind {
            FileKind::Regular => {}
            FileKind::Directory => return Err(FsError::IsDir),
            _ => return Err(FsError::Invalid),
        }
        let size = match guard.as_ref() {
            Some(st) if st.size_dirty => st.size,
            _ => a.size,
        };
        if offset >= size {
            return Err(FsError::NoSuchOffset);
        }
        let mem = guard.as_deref().map(memory_runs).unwrap_or_default();
        drop(guard);

        // Data intervals in order of their start (extents and memory runs
        // merged; they may overlap). SEEK_DATA: the first one ending after
        // `offset`. SEEK_HOLE: walk while they touch the position.
        let mut pos = offset;
        let mut found: Option<u64> = None;
        let mut mem_i = 0;
        // Returns false once the answer is known.
        let feed = |s: u64, e: u64, found: &mut Option<u64>, pos: &mut u64| -> bool {
            // Whole blocks (rounding keeps the runs in order of their start).
            let (s, e) = (
                s & !(SEEK_BLOCK - 1),
                e.saturating_add(SEEK_BLOCK - 1) & !(SEEK_BLOCK - 1),
            );
            if e <= *pos {
                return true;
            }
            if want_data {
                *found = Some(s.max(*pos));
                return false;
            }
            if s > *pos {
                *found = Some(*pos);
                return false;
            }
            *pos = e;
            true
        };
        let mut done = false;
        // From the start of `offset`'s block: an extent ending inside that
        // block before `offset` still makes it a data block.
        idx.scan_extents_from(ino, offset & !(SEEK_BLOCK - 1), |x| {
            while mem_i < mem.len() && mem[mem_i].0 <= x.offset {
                let (s, e) = mem[mem_i];
                mem_i += 1;
                if !feed(s, e, &mut found, &mut pos) {
                    done = true;
                    return false;
                }
            }
            if !feed(x.offset, x.offset + x.length, &mut found, &mut pos) {
                done = true;
                return false;
            }
            true
        })?;
        if !done {
            for &(s, e) in &mem[mem_i..] {
                if !feed(s, e, &mut found, &mut pos) {
                    break;
                }
            }
        }
        if want_data {
            match found {
                Some(p) if p < size => Ok(p),
                _ => Err(FsError::NoSuchOffset),
            }
        } else {
            Ok(found.unwrap_or(pos).min(size))
        }
    }
}

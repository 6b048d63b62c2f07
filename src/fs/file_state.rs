//! Open files: their dirty bytes, the runs a background flush is sealing,
//! and the open-handle counts that decide when a file's state is dropped.

use super::*;

/// In-memory state of an open or dirty regular file.
#[derive(Default)]
pub(super) struct FileState {
    pub(super) open_count: u32,
    /// Non-overlapping, non-adjacent dirty runs: offset → bytes.
    pub(super) dirty: BTreeMap<u64, Vec<u8>>,
    pub(super) dirty_bytes: usize,
    /// Runs handed to the background flush job, readable until their
    /// extents are in the index. Newer `dirty` bytes take precedence.
    pub(super) sealing: Vec<(u64, Arc<Vec<u8>>)>,
    /// A background flush job owns `sealing` (at most one per file, which
    /// keeps flushes of a file in order).
    pub(super) job_running: bool,
    /// The last background flush failed; reported to the next caller.
    /// A failed background flush: its message and errno (ENOSPC stays
    /// ENOSPC for the writer that meets it).
    pub(super) job_error: Option<(String, i32)>,
    /// Authoritative size while `size_dirty` (persisted at flush).
    pub(super) size: u64,
    pub(super) size_dirty: bool,
}

/// A run of file bytes on its way to the store: offset, bytes, and its chunk
/// cut points if they are already known.
pub(super) type Run = (u64, Arc<Vec<u8>>, Option<Vec<usize>>);

/// A file's state and the condition its flush job signals when done.
#[derive(Default)]
pub(super) struct FileSlot {
    pub(super) state: parking_lot::Mutex<FileState>,
    pub(super) job_done: parking_lot::Condvar,
    /// What reads of the open file learnt from the index (`fs/read.rs`).
    /// A leaf lock, taken under the index lock.
    pub(super) plan: parking_lot::Mutex<super::read::PlanCache>,
}

pub(super) type StateGuard<'a> = parking_lot::MutexGuard<'a, FileState>;

impl FsCore {
    pub(super) fn file_state(&self, ino: u64) -> Option<Arc<FileSlot>> {
        self.files.lock().get(&ino).cloned()
    }

    /// Forgets a deleted file's state. Called under the index lock, so the
    /// state is only try-locked (a flusher holding it finds the inode gone).
    pub(super) fn discard_file_state(&self, ino: u64) {
        if let Some(fs) = self.files.lock().remove(&ino) {
            if let Some(mut st) = fs.state.try_lock() {
                self.data
                    .dirty_total
                    .fetch_sub(st.dirty_bytes, Ordering::Relaxed);
                st.dirty_bytes = 0;
                st.dirty.clear();
            }
        }
    }

    /// Drops a file's in-memory state once nothing is open, dirty or being
    /// flushed. Takes the map lock first (lock order), then re-checks.
    ///
    /// The state is only try-locked: whoever holds the map lock must never
    /// wait, because `drop_link` takes the map under the index lock, and a
    /// state holder may be waiting for the index (getattr under the state
    /// lock). Waiting here closed that cycle under fsstress (generic/013).
    /// A state someone holds is in use, so not idle: nothing is forgotten.
    pub(super) fn forget_if_idle(&self, ino: u64) {
        let mut files = self.files.lock();
        let idle = match files.get(&ino) {
            Some(slot) => match slot.state.try_lock() {
                Some(st) => {
                    st.open_count == 0
                        && st.dirty.is_empty()
                        && !st.size_dirty
                        && !st.job_running
                        && st.job_error.is_none()
                }
                None => false,
            },
            None => false,
        };
        if idle {
            files.remove(&ino);
        }
    }

    pub(super) fn file_state_or_new(&self, ino: u64) -> Arc<FileSlot> {
        let mut files = self.files.lock();
        files.entry(ino).or_default().clone()
    }

    pub(super) fn open_inode(&self, ino: u64) -> u64 {
        // Under the map lock, so `forget_if_idle` cannot drop the slot
        // between lookup and count.
        // Never wait for the state while holding the map (see
        // `forget_if_idle`): if the state is busy, wait for it without the
        // map, then look the slot up again (it may have been forgotten).
        loop {
            let mut files = self.files.lock();
            let slot = files.entry(ino).or_default().clone();
            let counted = slot.state.try_lock().map(|mut st| st.open_count += 1);
            drop(files);
            if counted.is_some() {
                break;
            }
            drop(slot.state.lock());
        }
        *self.open_handles.lock().entry(ino).or_default() += 1;
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// [`Self::open`] with the open(2) flags: opening an old generation's
    /// file for writing is EROFS.
    pub fn open_flags(&self, ino: u64, flags: i32) -> FsResult<u64> {
        if history::is_view(ino)
            && (flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0)
        {
            return Err(FsError::ReadOnly);
        }
        self.open(ino)
    }

    /// Opens a regular file; returns a handle number.
    pub fn open(&self, ino: u64) -> FsResult<u64> {
        let a = self.getattr(ino)?;
        if a.kind == FileKind::Directory {
            return Err(FsError::IsDir);
        }
        if history::is_view(ino) {
            // Old generations have no file state (nothing to flush).
            return Ok(self.next_fh.fetch_add(1, Ordering::Relaxed));
        }
        Ok(self.open_inode(ino))
    }

    /// Opens a directory; returns a handle number. Counted like a file's
    /// handle, so a directory removed (rmdir, renamed over) while open stays
    /// an orphan until `release`: fstat on the open handle still answers,
    /// with nlink 0 (generic/035).
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let a = self.getattr(ino)?;
        if a.kind != FileKind::Directory {
            return Err(FsError::NotDir);
        }
        if history::is_view(ino) {
            return Ok(self.next_fh.fetch_add(1, Ordering::Relaxed));
        }
        Ok(self.open_inode(ino))
    }

    /// Closes a handle: flushes the file's dirty data into the index and
    /// deletes the inode if it was unlinked while open.
    pub fn release(&self, ino: u64) -> FsResult<()> {
        if history::is_view(ino) {
            return Ok(());
        }
        let Some(fs) = self.file_state(ino) else {
            return Ok(());
        };
        let mut st = fs.state.lock();
        st.open_count = st.open_count.saturating_sub(1);
        {
            let mut handles = self.open_handles.lock();
            if st.open_count == 0 {
                handles.remove(&ino);
            } else {
                handles.insert(ino, st.open_count);
            }
        }
        let unlinked = st.open_count == 0
            && self
                .data
                .index
                .lock()
                .attr(ino)?
                .is_none_or(|a| a.nlink == 0);
        if unlinked {
            // Last handle of an unlinked file: its data will never be read.
            self.data
                .dirty_total
                .fetch_sub(st.dirty_bytes, Ordering::Relaxed);
            st.dirty.clear();
            st.dirty_bytes = 0;
            st.size_dirty = false;
        }
        let res = self.flush_file(ino, &fs, &mut st);
        if st.open_count == 0 {
            let idx = self.index();
            let gone = match idx.attr(ino)? {
                Some(a) => a.nlink == 0,
                None => true,
            };
            if gone {
                idx.delete_inode(ino)?;
            }
            drop(idx);
            drop(st);
            self.forget_if_idle(ino);
        }
        res
    }
}

/// Inserts `data` at `offset` into the dirty map, merging with overlapping
/// and adjacent runs so the map stays non-overlapping.
pub(super) fn insert_dirty(st: &mut FileState, offset: u64, data: &[u8]) {
    merge_dirty(st, offset, data, true)
}

/// Like [`insert_dirty`], but bytes already dirty win over `data` (used to
/// return older bytes from a flush job under newer writes).
pub(super) fn insert_dirty_under(st: &mut FileState, offset: u64, data: &[u8]) {
    merge_dirty(st, offset, data, false)
}

pub(super) fn merge_dirty(st: &mut FileState, offset: u64, data: &[u8], data_wins: bool) {
    let end = offset + data.len() as u64;
    // Fast path: append to the run that ends exactly at `offset`.
    if let Some((&k, v)) = st.dirty.range_mut(..=offset).next_back() {
        let vend = k + v.len() as u64;
        if vend == offset && st.dirty.range(offset + 1..=end).next().is_none() {
            let v = st.dirty.get_mut(&k).expect("run");
            if v.capacity() - v.len() < data.len() {
                v.reserve(data.len().max(DIRTY_RUN_CAPACITY.saturating_sub(v.len())));
            }
            v.extend_from_slice(data);
            st.dirty_bytes += data.len();
            return;
        }
    }
    // General case: collect every run touching [offset, end].
    let mut start = offset;
    let mut stop = end;
    let touching: Vec<u64> = st
        .dirty
        .range(..=end)
        .filter(|(k, v)| **k + v.len() as u64 >= offset)
        .map(|(k, _)| *k)
        .collect();
    for k in &touching {
        let len = st.dirty[k].len() as u64;
        start = start.min(*k);
        stop = stop.max(k + len);
    }
    let mut merged = vec![0u8; (stop - start) as usize];
    let at = (offset - start) as usize;
    if !data_wins {
        merged[at..at + data.len()].copy_from_slice(data);
    }
    let mut old_bytes = 0;
    for k in touching {
        let v = st.dirty.remove(&k).expect("run");
        old_bytes += v.len();
        let at = (k - start) as usize;
        merged[at..at + v.len()].copy_from_slice(&v);
    }
    if data_wins {
        merged[at..at + data.len()].copy_from_slice(data);
    }
    st.dirty_bytes = st.dirty_bytes - old_bytes + merged.len();
    st.dirty.insert(start, merged);
}

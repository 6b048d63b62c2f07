//! The write path: dirty runs, flushes (in the background while a file
//! grows), chunking, sealing and the index transaction that records extents.

use super::*;

/// A chunk cut from dirty data, on its way into the index.
pub(super) struct CutChunk {
    pub(super) file_offset: u64,
    pub(super) len: usize,
    /// `None`: all zeros, stored as a hole.
    pub(super) id: Option<ChunkId>,
}

impl FsCore {
    /// Sets a regular file's size: shrinking drops data past the end (dirty
    /// and stored), growing leaves a hole.
    pub(super) fn truncate(&self, ino: u64, size: u64) -> FsResult<()> {
        let fs = self.file_state_or_new(ino);
        let mut st = fs.state.lock();
        // A running flush job would store bytes past the new end afterwards.
        Self::wait_job(&fs, &mut st)?;
        let idx = self.index();
        let a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        match a.kind {
            FileKind::Regular => {}
            FileKind::Directory => return Err(FsError::IsDir),
            _ => return Err(FsError::Invalid),
        }
        let cur = if st.size_dirty { st.size } else { a.size };
        if size < cur {
            // Drop dirty bytes past the new end.
            let keys: Vec<u64> = st.dirty.range(..).map(|(k, _)| *k).collect();
            for k in keys {
                let len = st.dirty[&k].len() as u64;
                if k >= size {
                    let v = st.dirty.remove(&k).expect("dirty run");
                    st.dirty_bytes -= v.len();
                    self.data.dirty_total.fetch_sub(v.len(), Ordering::Relaxed);
                } else if k + len > size {
                    let cut = (k + len - size) as usize;
                    let v = st.dirty.get_mut(&k).expect("dirty run");
                    v.truncate(v.len() - cut);
                    st.dirty_bytes -= cut;
                    self.data.dirty_total.fetch_sub(cut, Ordering::Relaxed);
                }
            }
            idx.remove_extents(ino, size, u64::MAX)?;
        }
        st.size = size;
        st.size_dirty = true;
        if st.dirty.is_empty() {
            let mut a = a;
            a.size = size;
            idx.set_attr(&a)?;
            st.size_dirty = false;
        }
        drop(idx);
        drop(st);
        self.forget_if_idle(ino);
        Ok(())
    }

    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> FsResult<usize> {
        history::refuse(ino)?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(FsError::TooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        if let Some(h) = self.hooks.get() {
            h.throttle_writes(&|| self.data.packs.unindexed_bytes());
        }
        let fs = self.file_state_or_new(ino);
        let mut st = fs.state.lock();
        if !st.size_dirty {
            let idx = self.data.index.lock();
            st.size = idx.attr(ino)?.ok_or(FsError::NotFound)?.size;
        }
        let before = st.dirty_bytes;
        insert_dirty(&mut st, offset, data);
        self.data
            .dirty_total
            .fetch_add(st.dirty_bytes - before, Ordering::Relaxed);
        if end > st.size {
            st.size = end;
        }
        st.size_dirty = true;
        {
            let idx = self.index();
            let mut a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
            let now = Timestamp::now();
            a.mtime = now;
            a.ctime = now;
            idx.set_attr(&a)?;
        }
        if self.data.dirty_total.load(Ordering::Relaxed) > GLOBAL_DIRTY_LIMIT {
            self.flush_file(ino, &fs, &mut st)?;
        } else if st.dirty_bytes >= FLUSH_BYTES {
            self.flush_in_background(ino, &fs, &mut st)?;
        }
        Ok(data.len())
    }

    /// Waits until the file's background flush job is done; returns its error.
    pub(super) fn wait_job(slot: &FileSlot, st: &mut StateGuard<'_>) -> FsResult<()> {
        while st.job_running {
            slot.job_done.wait(st);
        }
        match st.job_error.take() {
            Some((message, errno)) => Err(FsError::Flush { message, errno }),
            None => Ok(()),
        }
    }

    /// Moves all of a file's dirty data into chunks, packs and extents and
    /// persists its size (release, fsync, truncate, unmount).
    pub(super) fn flush_file(
        &self,
        ino: u64,
        slot: &FileSlot,
        st: &mut StateGuard<'_>,
    ) -> FsResult<()> {
        Self::wait_job(slot, st)?;
        if !st.dirty.is_empty() {
            let runs: Vec<Run> = self
                .data
                .take_dirty(st)
                .into_iter()
                .map(|(o, b)| (o, Arc::new(b), None))
                .collect();
            if let Err(e) = self.data.store_runs(ino, &runs) {
                // Keep the bytes: a later flush may succeed.
                for (off, run, _) in &runs {
                    self.data.put_back(st, *off, run);
                }
                return Err(e);
            }
        }
        if st.size_dirty {
            let idx = self.index();
            if let Some(mut a) = idx.attr(ino)? {
                a.size = st.size;
                idx.set_attr(&a)?;
            }
            st.size_dirty = false;
        }
        Ok(())
    }

    /// Hands a growing file's dirty data to a background job, so the writer
    /// fills the next buffer while this one is hashed and sealed. At most one
    /// job runs per file (this waits for the previous one), which keeps the
    /// file's flushes in order and bounds its memory to two buffers.
    pub(super) fn flush_in_background(
        &self,
        ino: u64,
        slot: &Arc<FileSlot>,
        st: &mut StateGuard<'_>,
    ) -> FsResult<()> {
        Self::wait_job(slot, st)?;
        if st.dirty.is_empty() {
            return Ok(());
        }
        // The run that ends at EOF is still growing: cut it here and keep
        // its last (incomplete) chunk as the dirty run the writer appends
        // to, so a file written in pieces is cut exactly like the same file
        // written at once (that is what makes copies deduplicate).
        let eof = st.size;
        let mut runs: Vec<Run> = Vec::new();
        for (off, mut bytes) in self.data.take_dirty(st) {
            if off + bytes.len() as u64 != eof {
                runs.push((off, Arc::new(bytes), None));
                continue;
            }
            let mut points = self.data.chunker.cut_points(&bytes);
            if points.len() < 2 {
                self.data.put_back_owned(st, off, bytes);
                continue;
            }
            points.pop();
            let keep_from = *points.last().expect("cut point");
            let mut tail = Vec::with_capacity(DIRTY_RUN_CAPACITY.max(bytes.len() - keep_from));
            tail.extend_from_slice(&bytes[keep_from..]);
            bytes.truncate(keep_from);
            self.data.put_back_owned(st, off + keep_from as u64, tail);
            runs.push((off, Arc::new(bytes), Some(points)));
        }
        if runs.is_empty() {
            return Ok(());
        }
        st.sealing = runs.iter().map(|(o, b, _)| (*o, b.clone())).collect();
        st.job_running = true;
        let data = self.data.clone();
        let slot = slot.clone();
        rayon::spawn(move || {
            let result = data.store_runs(ino, &runs);
            let mut st = slot.state.lock();
            st.sealing.clear();
            match result {
                Ok(()) => {}
                Err(e) => {
                    log::error!("background flush of inode {ino} failed: {e}");
                    for (off, run, _) in &runs {
                        data.put_back(&mut st, *off, run);
                    }
                    st.job_error = Some((e.to_string(), e.errno()));
                }
            }
            st.job_running = false;
            slot.job_done.notify_all();
        });
        Ok(())
    }

    /// Makes a file's data and the whole index durable.
    pub fn fsync(&self, ino: u64) -> FsResult<()> {
        if let Some(fs) = self.file_state(ino) {
            let mut st = fs.state.lock();
            self.flush_file(ino, &fs, &mut st)?;
        }
        self.commit(true)
    }

    /// Flushes every file's dirty data (unmount, memory pressure).
    pub fn flush_all(&self) -> FsResult<()> {
        let all: Vec<(u64, Arc<FileSlot>)> = self
            .files
            .lock()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let mut first_err = None;
        for (ino, fs) in all {
            let mut st = fs.state.lock();
            if let Err(e) = self.flush_file(ino, &fs, &mut st) {
                log::error!("flushing inode {ino} failed: {e}");
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// fallocate. Mode 0 reserves by extending the size and
    /// `FALLOC_FL_KEEP_SIZE` alone does nothing: tresor allocates nothing
    /// ahead (a hole reads as zeros and costs no storage; chunks are
    /// deduplicated, so there is nothing to reserve). `FALLOC_FL_PUNCH_HOLE`
    /// (with KEEP_SIZE, as Linux requires) and `FALLOC_FL_ZERO_RANGE` turn
    /// the range into a hole: see [`FsCore::clear_range`]. Other modes
    /// (collapse, insert, unshare) are EOPNOTSUPP.
    pub fn fallocate(&self, ino: u64, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        history::refuse(ino)?;
        const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE;
        const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;
        let keep = mode & KEEP != 0;
        let punch = mode & PUNCH != 0;
        let zero = mode & ZERO != 0;
        if mode & !(KEEP | PUNCH | ZERO) != 0 || (punch && zero) || (punch && !keep) {
            return Err(FsError::NotSupported);
        }
        if length == 0 {
            return Err(FsError::Invalid);
        }
        let end = offset.checked_add(length).ok_or(FsError::TooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        let a = self.getattr(ino)?;
        if a.kind != FileKind::Regular {
            return Err(FsError::NotSupported);
        }
        if punch || zero {
            return self.clear_range(ino, offset, end, zero && !keep);
        }
        if !keep && end > a.size {
            self.truncate(ino, end)?;
            let idx = self.index();
            let mut a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
            a.ctime = Timestamp::now();
            idx.set_attr(&a)?;
        }
        Ok(())
    }

    /// Punch hole / zero range: `[start, end)` (within the size) reads as
    /// zeros afterwards and costs no blocks. Dirty bytes there are dropped
    /// and the extents removed; extents that straddle an edge are trimmed
    /// (they keep referencing their chunk, from the right offset), so no
    /// data is rewritten. With `extend`, a range past the end grows the
    /// file (zero range without KEEP_SIZE).
    pub(super) fn clear_range(&self, ino: u64, start: u64, end: u64, extend: bool) -> FsResult<()> {
        let fs = self.file_state_or_new(ino);
        let mut st = fs.state.lock();
        // A running flush job would store the range's old bytes afterwards.
        Self::wait_job(&fs, &mut st)?;
        let idx = self.index();
        let mut a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        let cur = if st.size_dirty { st.size } else { a.size };
        let stop = end.min(cur);
        if start < stop {
            self.data.drop_dirty(&mut st, start, stop);
            idx.remove_extents(ino, start, stop)?;
        }
        if extend && end > cur {
            st.size = end;
            st.size_dirty = true;
        }
        if st.size_dirty && st.dirty.is_empty() {
            a.size = st.size;
            st.size_dirty = false;
        }
        let now = Timestamp::now();
        a.mtime = now;
        a.ctime = now;
        idx.set_attr(&a)?;
        drop(idx);
        drop(st);
        self.forget_if_idle(ino);
        Ok(())
    }
}

impl DataPath {
    /// Takes every dirty run out of a file's state.
    pub(super) fn take_dirty(&self, st: &mut FileState) -> Vec<(u64, Vec<u8>)> {
        let runs = std::mem::take(&mut st.dirty);
        let taken: usize = runs.values().map(|v| v.len()).sum();
        st.dirty_bytes -= taken;
        self.dirty_total.fetch_sub(taken, Ordering::Relaxed);
        runs.into_iter().collect()
    }

    /// Drops the dirty bytes in `[start, end)`, splitting runs that cross
    /// an edge (a punched hole must not be refilled by a later flush).
    pub(super) fn drop_dirty(&self, st: &mut FileState, start: u64, end: u64) {
        let touching: Vec<u64> = st
            .dirty
            .range(..end)
            .filter(|(k, v)| **k + v.len() as u64 > start)
            .map(|(k, _)| *k)
            .collect();
        let mut dropped = 0;
        for k in touching {
            let mut v = st.dirty.remove(&k).expect("dirty run");
            let vend = k + v.len() as u64;
            dropped += (vend.min(end) - k.max(start)) as usize;
            if vend > end {
                let right = v[(end - k) as usize..].to_vec();
                st.dirty.insert(end, right);
            }
            if k < start {
                v.truncate((start - k) as usize);
                st.dirty.insert(k, v);
            }
        }
        st.dirty_bytes -= dropped;
        self.dirty_total.fetch_sub(dropped, Ordering::Relaxed);
    }

    /// Returns a run taken by `take_dirty` (no other run overlaps it).
    pub(super) fn put_back_owned(&self, st: &mut FileState, offset: u64, bytes: Vec<u8>) {
        st.dirty_bytes += bytes.len();
        self.dirty_total.fetch_add(bytes.len(), Ordering::Relaxed);
        st.dirty.insert(offset, bytes);
    }

    /// Returns bytes to the dirty map beneath any newer dirty bytes.
    pub(super) fn put_back(&self, st: &mut FileState, offset: u64, bytes: &[u8]) {
        let before = st.dirty_bytes;
        insert_dirty_under(st, offset, bytes);
        self.dirty_total
            .fetch_add(st.dirty_bytes - before, Ordering::Relaxed);
    }

    /// Cuts runs into chunks (unless the cut points come with the run),
    /// dedups and seals the chunks, appends new ones to the open pack and
    /// records the extents, in one index batch.
    pub(super) fn store_runs(&self, ino: u64, runs: &[Run]) -> FsResult<()> {
        let cuts: Vec<(u64, &[u8], Vec<usize>)> = runs
            .iter()
            .map(|(off, bytes, points)| {
                let points = match points {
                    Some(p) => p.clone(),
                    None => self.chunker.cut_points(bytes),
                };
                (*off, bytes.as_slice(), points)
            })
            .collect();

        // Hash every chunk in parallel; all-zero chunks become holes.
        let mut pieces: Vec<(CutChunk, &[u8])> = Vec::new();
        for (off, data, points) in &cuts {
            let mut start = 0usize;
            for &p in points {
                pieces.push((
                    CutChunk {
                        file_offset: off + start as u64,
                        len: p - start,
                        id: None,
                    },
                    &data[start..p],
                ));
                start = p;
            }
        }
        pieces.par_iter_mut().for_each(|(c, bytes)| {
            if !bytes.iter().all(|&b| b == 0) {
                c.id = Some(self.sealer.chunk_id(bytes));
            }
        });

        // Which chunks are new? (One index lookup each, under the lock.)
        let known: Vec<bool> = {
            let idx = self.index.lock();
            let mut v = Vec::with_capacity(pieces.len());
            for (c, _) in &pieces {
                v.push(match &c.id {
                    Some(id) => idx.chunk_location(id)?.is_some(),
                    None => true,
                });
            }
            v
        };
        let mut seen = std::collections::HashSet::new();
        let to_seal: Vec<usize> = (0..pieces.len())
            .filter(|&i| !known[i] && seen.insert(pieces[i].0.id.expect("id")))
            .collect();
        let sealed: Vec<(usize, Vec<u8>)> = to_seal
            .par_iter()
            .map(|&i| {
                let (c, bytes) = &pieces[i];
                (i, self.sealer.seal(c.id.as_ref().expect("id"), bytes))
            })
            .collect();

        let idx = self.mark_changed();
        let Some(mut attr) = idx.attr(ino)? else {
            // Deleted while we sealed: nothing may reference the inode.
            return Ok(());
        };
        // A chunk found above may have been unreferenced and collected by
        // garbage collection since (it runs under this lock): store it again.
        for (i, (c, bytes)) in pieces.iter().enumerate() {
            if let (true, Some(id)) = (known[i], c.id) {
                if idx.chunk_location(&id)?.is_none() {
                    let s = self.sealer.seal(&id, bytes);
                    let loc = self.packs.append(&idx, &id, &s, bytes.len() as u32)?;
                    idx.insert_chunk(&id, &loc)?;
                }
            }
        }
        for (i, s) in &sealed {
            let (c, bytes) = &pieces[*i];
            let id = c.id.expect("id");
            if idx.chunk_location(&id)?.is_none() {
                let loc: ChunkLocation = self.packs.append(&idx, &id, s, bytes.len() as u32)?;
                idx.insert_chunk(&id, &loc)?;
            }
        }
        let mut flushed_end = 0;
        for (c, _) in &pieces {
            let end = c.file_offset + c.len as u64;
            flushed_end = flushed_end.max(end);
            idx.remove_extents(ino, c.file_offset, end)?;
            if let Some(id) = c.id {
                idx.insert_extent(
                    ino,
                    &Extent {
                        offset: c.file_offset,
                        length: c.len as u64,
                        chunk: id,
                        chunk_offset: 0,
                    },
                )?;
            }
        }
        // The stored size covers what is stored; the caller persists the
        // final size once nothing is left in memory.
        if flushed_end > attr.size {
            attr.size = flushed_end;
            idx.set_attr(&attr)?;
        }
        Ok(())
    }
}

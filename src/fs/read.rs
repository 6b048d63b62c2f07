//! The read path: dirty and sealing bytes first, then extents through the
//! pack store's chunk cache, with read-ahead for sequential readers only.

use super::*;

/// A read starting within this distance of the previous read's end counts
/// as sequential (the kernel's parallel readahead requests arrive slightly
/// out of order).
const SEQUENTIAL_SLACK: u64 = 2 * 1024 * 1024;

/// One extent of a read and where its chunk is (location and pack name;
/// `None` if the index lacks them).
pub(super) type PlanItem = (Extent, Option<ChunkLocation>, Option<[u8; 16]>);

/// The file is planned in windows of this many bytes (a window's extents
/// are one index query, then cached).
const PLAN_WINDOW: u64 = 1024 * 1024;
/// Windows cached per open file (4 GiB of file; a few hundred bytes each).
/// Past it the cache starts over.
const PLAN_WINDOWS: usize = 4096;

/// What the reads of an open file learnt from the index: its size and, per
/// [`PLAN_WINDOW`], its extents with their chunks' locations. Every answer
/// is tied to [`Index::change_count`] at the time it was read and the whole
/// cache is dropped once that number moves, so any change to the index
/// (a write's flush, a truncate, a repack moving chunks, a pack being
/// stored) invalidates it, and a read sees exactly what the three index
/// queries it replaces would have returned. Under fio randread these
/// queries were 8 % of the daemon's CPU (perf).
#[derive(Default)]
pub(super) struct PlanCache {
    version: u64,
    size: Option<u64>,
    windows: HashMap<u64, Arc<[PlanItem]>>,
}

impl PlanCache {
    /// Forgets everything unless the index is still at `version`.
    fn check(&mut self, version: u64) {
        if self.version != version {
            self.version = version;
            self.size = None;
            self.windows.clear();
        }
    }

    /// The file's size in the index (`NotFound` if the inode is gone).
    fn size(&mut self, idx: &Index, ino: u64) -> FsResult<u64> {
        if let Some(s) = self.size {
            return Ok(s);
        }
        let a = idx.attr(ino)?.ok_or(FsError::NotFound)?;
        self.size = Some(a.size);
        Ok(a.size)
    }

    /// The extents overlapping `[start, end)`, in file order.
    fn plan(&mut self, idx: &Index, ino: u64, start: u64, end: u64) -> FsResult<Vec<PlanItem>> {
        let mut out: Vec<PlanItem> = Vec::new();
        for w in start / PLAN_WINDOW..=(end - 1) / PLAN_WINDOW {
            let items = match self.windows.get(&w) {
                Some(items) => items.clone(),
                None => {
                    let items: Arc<[PlanItem]> =
                        plan_extents(idx, ino, w * PLAN_WINDOW, (w + 1) * PLAN_WINDOW)?.into();
                    if self.windows.len() >= PLAN_WINDOWS {
                        self.windows.clear();
                    }
                    self.windows.insert(w, items.clone());
                    items
                }
            };
            // An extent across a window boundary is in both windows.
            let last = out.last().map(|(e, _, _)| e.offset);
            out.extend(items.iter().copied().filter(|(e, _, _)| {
                e.offset < end && e.offset + e.length > start && last.is_none_or(|l| e.offset > l)
            }));
        }
        Ok(out)
    }
}

/// The extents of `ino` overlapping `[start, end)` and their chunks'
/// locations, from the index.
fn plan_extents(idx: &Index, ino: u64, start: u64, end: u64) -> FsResult<Vec<PlanItem>> {
    let mut plan = Vec::new();
    for e in idx.extents_in(ino, start, end)? {
        let (loc, name) = match idx.chunk_location_named(&e.chunk)? {
            Some((l, name)) => (Some(l), name),
            None => (None, None),
        };
        plan.push((e, loc, name));
    }
    Ok(plan)
}

impl FsCore {
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        if history::is_view(ino) {
            return self.view_read(ino, offset, size);
        }
        // Snapshot extents, locations and dirty overlay under the file lock;
        // decrypt without it (chunks are immutable, content-addressed).
        // Garbage collection deletes no pack file while this guard is held,
        // so the locations planned here stay readable until the read is done.
        let _gc_gate = self.data.packs.read_guard();
        let fs = self.file_state(ino);
        let guard = fs.as_ref().map(|f| f.state.lock());
        let (file_size, plan, overlay) = {
            let idx = self.data.index.lock();
            // An open file's plan comes from its cache while the index
            // stands still (see `PlanCache`).
            let mut cache = fs.as_ref().map(|f| f.plan.lock());
            if let Some(c) = cache.as_mut() {
                c.check(idx.change_count());
            }
            let index_size = match cache.as_mut() {
                Some(c) => c.size(&idx, ino)?,
                None => idx.attr(ino)?.ok_or(FsError::NotFound)?.size,
            };
            let file_size = match guard.as_ref() {
                Some(st) if st.size_dirty => st.size,
                _ => index_size,
            };
            if offset >= file_size || size == 0 {
                return Ok(Vec::new());
            }
            let end = (offset + size as u64).min(file_size);
            let plan = match cache.as_mut() {
                Some(c) => c.plan(&idx, ino, offset, end)?,
                None => plan_extents(&idx, ino, offset, end)?,
            };
            drop(cache);
            // Bytes still in memory, oldest first: runs being sealed, then
            // dirty runs (newer, so they are copied last and win).
            let mut overlay: Vec<(u64, Vec<u8>)> = Vec::new();
            if let Some(st) = guard.as_ref() {
                let sealing = st.sealing.iter().map(|(k, v)| (*k, v.as_slice()));
                let dirty = st.dirty.range(..end).map(|(k, v)| (*k, v.as_slice()));
                for (k, v) in sealing.chain(dirty) {
                    let vend = k + v.len() as u64;
                    if vend <= offset || k >= end {
                        continue;
                    }
                    let s = k.max(offset);
                    let e2 = vend.min(end);
                    overlay.push((s, v[(s - k) as usize..(e2 - k) as usize].to_vec()));
                }
            }
            (file_size, plan, overlay)
        };
        drop(guard);
        let end = (offset + size as u64).min(file_size);
        // Random readers (thumbnailers, databases) get no read-ahead: it
        // would decrypt 4 MiB they never read (scripts/bench-random-read.sh,
        // 4 KiB random reads of a 1 GiB file: ~150 → ~290 IOPS without it),
        // and open only the 64 KiB segments they touch (format v2).
        // Sequential means: at the start of the file, or the second read in
        // a row that starts near where the one before it ended. One near
        // read is not enough: a random reader of a 1 GiB file lands within
        // the slack of its previous read once in ~250 reads, and each such
        // false start decrypted 4 MiB of read-ahead (13 % of the daemon's
        // CPU under fio randread, perf).
        let sequential = {
            let mut m = self.last_read_end.lock();
            if m.len() > 4096 {
                m.clear();
            }
            let near = |p: u64| offset.abs_diff(p) <= SEQUENTIAL_SLACK;
            let (was_near, now_near) = match m.get(&ino) {
                Some(&(p, was)) => (was, near(p)),
                None => (false, false),
            };
            m.insert(ino, (end, now_near || offset == 0));
            offset == 0 || (now_near && was_near)
        };
        if sequential {
            self.read_ahead(ino, end, file_size);
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        // Most reads touch one chunk: no thread hop then. Plaintexts are
        // shared (Arc) and copied once, into the reply buffer.
        let fetch = |(e, loc, name): &PlanItem| {
            let (Some(loc), Some(name)) = (loc, name) else {
                return Err(self.data_error(
                    ino,
                    format!("chunk {:?} is missing from the index", e.chunk),
                ));
            };
            let s = e.offset.max(offset);
            let t = (e.offset + e.length).min(end);
            let from = (e.chunk_offset + (s - e.offset)) as usize;
            let to = from + (t - s) as usize;
            // Sequential readers decrypt whole chunks (read-ahead fills the
            // cache); random readers open only the segments they touch.
            let (plain, base) = if sequential {
                self.data
                    .packs
                    .read_chunk(&e.chunk, loc, name)
                    .map(|p| (p, 0))
            } else {
                self.data
                    .packs
                    .read_chunk_part(&e.chunk, loc, name, from..to)
            }
            .map_err(|source| self.read_failed(ino, source))?;
            if from < base || to - base > plain.len() {
                return Err(self.data_error(ino, "extent is longer than its chunk".into()));
            }
            Ok(((s - offset) as usize, plain, from - base..to - base))
        };
        type Piece = (usize, Arc<Vec<u8>>, std::ops::Range<usize>);
        let pieces: Vec<FsResult<Piece>> = if plan.len() <= 1 {
            plan.iter().map(fetch).collect()
        } else {
            plan.par_iter().map(fetch).collect()
        };
        for p in pieces {
            let (dst, plain, range) = p?;
            buf[dst..dst + range.len()].copy_from_slice(&plain[range]);
        }
        for (s, bytes) in overlay {
            let dst = (s - offset) as usize;
            buf[dst..dst + bytes.len()].copy_from_slice(&bytes);
        }
        Ok(buf)
    }

    /// Starts decrypting the chunks after `from` in the background so a
    /// sequential reader finds them in the cache (both cores work while the
    /// kernel copies the previous chunk out).
    pub(super) fn read_ahead(&self, ino: u64, from: u64, file_size: u64) {
        if from >= file_size {
            return;
        }
        let plan: Vec<(ChunkId, ChunkLocation, [u8; 16])> = {
            let idx = self.data.index.lock();
            let Ok(extents) = idx.extents_in(ino, from, (from + READ_AHEAD).min(file_size)) else {
                return;
            };
            let mut plan = Vec::new();
            for e in extents {
                if self.data.packs.is_cached(&e.chunk) {
                    continue;
                }
                if let Ok(Some((loc, Some(name)))) = idx.chunk_location_named(&e.chunk) {
                    plan.push((e.chunk, loc, name));
                }
            }
            plan
        };
        for (id, loc, name) in plan {
            if !self.data.packs.begin_prefetch(id) {
                continue;
            }
            let packs = self.data.packs.clone();
            rayon::spawn(move || {
                // Errors surface (and are logged) when the reader gets there.
                let _ = packs.read_chunk(&id, &loc, &name);
                packs.end_prefetch(&id);
            });
        }
    }

    pub(super) fn path_for_log(&self, ino: u64) -> String {
        let idx = self.data.index.lock();
        match idx.path_of(ino) {
            Ok(p) => String::from_utf8_lossy(&p).into_owned(),
            Err(_) => format!("<inode {ino}>"),
        }
    }

    pub(super) fn read_failed(
        &self,
        ino: u64,
        source: crate::store::packstore::ChunkReadError,
    ) -> FsError {
        let path = self.path_for_log(ino);
        let first = {
            let mut seen = self.logged_read_errors.lock();
            if seen.len() > 4096 {
                seen.clear();
            }
            seen.insert((ino, source.to_string()))
        };
        if first {
            log::error!("{path}: {source}");
        } else {
            log::debug!("{path}: {source}");
        }
        FsError::Data {
            path,
            source: Box::new(source),
        }
    }

    pub(super) fn data_error(&self, ino: u64, msg: String) -> FsError {
        let path = self.path_for_log(ino);
        log::error!("{path}: {msg}");
        FsError::Inconsistent { path, detail: msg }
    }
}

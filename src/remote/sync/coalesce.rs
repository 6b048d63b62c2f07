//! Remote objects that do not follow files (FORMAT.md §6, SECURITY.md §2).
//!
//! An fsync or the 2 s commit timer closes the open pack, so the local
//! store gets packs as small as one saved file. Those are **held back**:
//! the upload queue takes only packs whose size is one of the size classes
//! (1, 2, 4, 8, 16 MiB; [`crate::chunk::pack::SIZE_CLASSES`]). This module
//! coalesces held-back packs into class-sized ones:
//!
//! - as soon as their live chunks fill a 16 MiB pack: full packs are written
//!   (padded to exactly 16 MiB) and the rest goes into one unpadded pack,
//!   which is held back again;
//! - once the oldest held-back data waited `[upload] delay` seconds
//!   (default 60), when held-back packs take half the cache budget or
//!   writers wait for the upload backlog, or when forced (`tresor sync`,
//!   unmount, before an index snapshot is captured): everything is written,
//!   the last pack padded to the smallest class it fits.
//!
//! The sealed chunks are copied as they are: no backend ever saw a held-back
//! pack, so there is nothing to line the copy up with. Chunks no file
//! references any more are dropped, so a file saved and deleted within the
//! delay never leaves the machine. The moves are committed as garbage
//! collection's repack is (new packs durable first; one step points the
//! chunk rows at them and drops the old packs, re-checked under the index
//! lock); the old packs get no `gc_dead` row, because no backend holds them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::SyncEngine;
use crate::chunk::pack::{object_len, PACK_TARGET};
use crate::chunk::seal::ChunkId;
use crate::fs::{read_index, IndexAccess};
use crate::index::IndexError;

/// Source data read into memory per coalescing step at most.
const STEP_BYTES: usize = 64 * 1024 * 1024;

/// When each held-back pack was first seen (pack number → instant).
#[derive(Default)]
pub(super) struct CoalesceState {
    first_seen: HashMap<u64, Instant>,
}

/// One held-back pack and its live chunks: (id, offset, sealed_len, plain_len).
struct Source {
    pack: u64,
    name: [u8; 16],
    chunks: Vec<(ChunkId, u64, u32, u32)>,
}

/// A new pack being planned: the chunks it takes, as (source, chunk) indices.
#[derive(Default)]
struct Output {
    members: Vec<(usize, usize)>,
    data_len: usize,
}

impl Output {
    fn fits(&self, sealed_len: usize) -> bool {
        self.members.is_empty()
            || object_len(self.data_len + sealed_len, self.members.len() + 1) <= PACK_TARGET
    }
}

/// A committed coalescing step: the new packs' numbers, the sources dropped.
type Moved = (Vec<u64>, Vec<usize>);

impl SyncEngine {
    /// Coalesces held-back packs when a full pack is ready, when the delay
    /// passed, or (with `force`) now. Returns the packs written.
    pub fn coalesce(&self, force: bool) -> Result<usize> {
        let mut st = self.coalescing.lock();
        self.coalesce_locked(&mut st, force)
    }

    pub(super) fn coalesce_locked(&self, st: &mut CoalesceState, force: bool) -> Result<usize> {
        if self.remotes().is_empty() {
            return Ok(0);
        }
        let Some(access) = self.index_access() else {
            return Ok(0);
        };
        let delay =
            Duration::from_secs(self.upload_delay.load(std::sync::atomic::Ordering::Relaxed));
        let mut written = 0;
        // Bounded: every step retires sources or stops.
        for _ in 0..64 {
            let held = read_index(access.as_ref(), |idx| idx.held_back_packs())?;
            let now = Instant::now();
            st.first_seen
                .retain(|p, _| held.iter().any(|(n, _, _)| n == p));
            for (n, _, _) in &held {
                st.first_seen.entry(*n).or_insert(now);
            }
            if held.is_empty() {
                return Ok(written);
            }
            let oldest = held
                .iter()
                .filter_map(|(n, _, _)| st.first_seen.get(n))
                .min()
                .copied()
                .unwrap_or(now);
            // Writers waiting for the backlog (held-back bytes count in it)
            // must not wait for the delay too.
            let held_bytes: u64 = held.iter().map(|(_, _, size)| size).sum();
            let due = force
                || oldest.elapsed() >= delay
                || self.throttling.load(std::sync::atomic::Ordering::Relaxed)
                || held_bytes.saturating_mul(2) > self.cache_budget();
            // Sources for this step, oldest first, up to STEP_BYTES of live data.
            let mut sources = Vec::new();
            let mut step_bytes = 0usize;
            for (pack, name, _) in &held {
                if step_bytes >= STEP_BYTES {
                    break;
                }
                let chunks: Vec<(ChunkId, u64, u32, u32)> =
                    read_index(access.as_ref(), |idx| idx.gc_pack_chunks(*pack))?
                        .into_iter()
                        .filter(|c| c.refcount > 0)
                        .map(|c| (c.id, c.offset, c.sealed_len, c.plain_len))
                        .collect();
                step_bytes += chunks.iter().map(|c| c.2 as usize).sum::<usize>();
                sources.push(Source {
                    pack: *pack,
                    name: *name,
                    chunks,
                });
            }
            let mut outputs = vec![Output::default()];
            for (si, s) in sources.iter().enumerate() {
                for (ci, c) in s.chunks.iter().enumerate() {
                    let sealed = c.2 as usize;
                    if !outputs.last().expect("one output").fits(sealed) {
                        outputs.push(Output::default());
                    }
                    let o = outputs.last_mut().expect("one output");
                    o.members.push((si, ci));
                    o.data_len += sealed;
                }
            }
            let full = outputs.len() - 1;
            if !due && full == 0 {
                return Ok(written);
            }
            let written_now = self.coalesce_step(access.as_ref(), &sources, &outputs, due)?;
            written += written_now.len();
            // The unpadded rest (not due yet) keeps the age of what it holds.
            for n in written_now {
                st.first_seen.insert(n, oldest);
            }
            if !due && step_bytes < STEP_BYTES {
                return Ok(written);
            }
        }
        Ok(written)
    }

    /// Writes `outputs` (all but the last padded to 16 MiB; the last padded
    /// to its class if `pad_last`), then commits the moves and drops the
    /// sources. Returns the numbers of the packs written.
    fn coalesce_step(
        &self,
        access: &dyn IndexAccess,
        sources: &[Source],
        outputs: &[Output],
        pad_last: bool,
    ) -> Result<Vec<u64>> {
        let ps = access.pack_store();
        // chunk id → (source, old offset, output, new offset, sealed_len)
        let mut moved: Vec<HashMap<ChunkId, (u64, usize, u64, u32)>> =
            vec![HashMap::new(); sources.len()];
        let mut written: Vec<([u8; 16], u64)> = Vec::new();
        for (oi, o) in outputs.iter().enumerate() {
            if o.members.is_empty() {
                continue;
            }
            let mut chunks = Vec::with_capacity(o.members.len());
            for &(si, ci) in &o.members {
                let (id, offset, sealed_len, plain_len) = sources[si].chunks[ci];
                let sealed = ps.read_sealed(&sources[si].name, offset, sealed_len)?;
                chunks.push((id, sealed, plain_len));
            }
            let last = oi + 1 == outputs.len();
            let (name, size, offsets) = ps.write_pack(&chunks, !last || pad_last)?;
            for (k, &(si, ci)) in o.members.iter().enumerate() {
                let (id, offset, sealed_len, _) = sources[si].chunks[ci];
                moved[si].insert(id, (offset, written.len(), offsets[k], sealed_len));
            }
            written.push((name, size));
        }
        let mut outcome: Option<Result<Moved, IndexError>> = None;
        access.locked_commit(&mut |idx| {
            outcome = Some(idx.gc_atomically(|idx| {
                let numbers = written
                    .iter()
                    .map(|(name, size)| idx.gc_insert_stored_pack(name, *size))
                    .collect::<Result<Vec<u64>, IndexError>>()?;
                let mut retired = Vec::new();
                for (si, s) in sources.iter().enumerate() {
                    for r in idx.gc_pack_chunks(s.pack)? {
                        if let Some(&(old, out, offset, len)) = moved[si].get(&r.id) {
                            if r.offset == old {
                                idx.gc_move_resealed_chunk(&r.id, numbers[out], offset, len)?;
                            }
                        }
                    }
                    // No backend holds it: no gc_dead row, no remote delete.
                    if idx.gc_mark_dead(s.pack, 0)? {
                        idx.gc_drop_dead(s.pack)?;
                        retired.push(si);
                    }
                }
                Ok((numbers, retired))
            }));
        })?;
        let (numbers, retired) = match outcome.expect("locked_commit runs the closure") {
            Ok(r) => r,
            Err(e) => {
                let names: Vec<[u8; 16]> = written.iter().map(|w| w.0).collect();
                ps.delete_local_packs(&names)?;
                return Err(e.into());
            }
        };
        let names: Vec<[u8; 16]> = retired.iter().map(|&i| sources[i].name).collect();
        ps.delete_local_packs(&names)?;
        log::debug!(
            "upload: {} small pack(s) coalesced into {} pack(s) of {:?} bytes",
            retired.len(),
            written.len(),
            written.iter().map(|w| w.1).collect::<Vec<_>>()
        );
        self.kick();
        Ok(numbers)
    }
}

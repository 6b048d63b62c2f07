//! Pack assembly, the store queue and the chunk read path.
//!
//! Sealed chunks are appended to one open [`PackBuilder`]; when the next
//! chunk would take it past `PACK_TARGET` (then it is padded to exactly
//! that size class) or when the index commits (then it stays as small as
//! it is) the pack is finished and handed to the
//! store writers, which write it as one object. Writers never wait for the
//! store except through back-pressure: at most `MAX_QUEUED` finished packs wait
//! in memory (64 MiB). Readers find a chunk in, in order: the plaintext cache,
//! the open pack, the queued packs, the store.
//!
//! Invariant kept with the index: a pack's object is durable in the store
//! before any index transaction that references its chunks commits
//! ([`PackStore::seal_and_wait`] is called under the index lock before every
//! commit).

use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::Arc;

use crate::chunk::pack::{PackBuilder, PackId, PACK_TARGET};
use crate::chunk::seal::{ChunkId, ChunkSealer, SealError};
use crate::chunk::segmented::{SegmentTable, MAX_HEADER_LEN, VERSION_2, VERSION_3};
use crate::index::{ChunkLocation, Index, IndexError};
use crate::store::{Access, Store, StoreError};
use crate::vault::keys::SecretKey;

/// Finished packs waiting for the store (each ≤ ~16 MiB).
const MAX_QUEUED: usize = 4;
/// Plaintext chunk cache budget.
const CHUNK_CACHE_BYTES: usize = 64 * 1024 * 1024;
const STORE_WRITERS: usize = 2;
/// Chunks up to this sealed size are read through [`READ_WINDOW`]s.
const SMALL_CHUNK: u64 = 256 * 1024;
const READ_WINDOW: u64 = 1024 * 1024;
/// Pack windows kept in memory (× 1 MiB).
const WINDOW_CACHE: usize = 32;
/// Segment tables of segmented chunks kept in memory (≈ 300 bytes each
/// for a 1 MiB chunk).
const HEADER_CACHE: usize = 16 * 1024;
/// Opened segments kept in memory for random readers.
const SEGMENT_CACHE_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ChunkReadError {
    #[error("chunk authentication failed in pack {pack}: {source}")]
    Auth {
        pack: String,
        #[source]
        source: SealError,
    },
    #[error("pack {pack} could not be read: {source}")]
    Store {
        pack: String,
        #[source]
        source: Box<StoreError>,
    },
}

/// Opened plaintext segments: (chunk, segment index) → bytes, at most
/// [`SEGMENT_CACHE_BYTES`] of them (v2 segments are 4× as long as v3's).
struct SegmentCache {
    lru: lru::LruCache<(ChunkId, u32), Arc<Vec<u8>>>,
    bytes: usize,
}

impl SegmentCache {
    fn get(&mut self, key: &(ChunkId, u32)) -> Option<Arc<Vec<u8>>> {
        self.lru.get(key).cloned()
    }

    fn put(&mut self, key: (ChunkId, u32), plain: Arc<Vec<u8>>) {
        self.bytes += plain.len();
        if let Some(old) = self.lru.put(key, plain) {
            self.bytes -= old.len();
        }
        while self.bytes > SEGMENT_CACHE_BYTES {
            match self.lru.pop_lru() {
                Some((_, v)) => self.bytes -= v.len(),
                None => break,
            }
        }
    }
}

struct OpenPack {
    number: u64,
    builder: PackBuilder,
}

struct QueuedPack {
    number: u64,
    path: String,
    bytes: bytes::Bytes,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<QueuedPack>,
    /// Being written: readable from memory until stored.
    in_flight: HashMap<u64, bytes::Bytes>,
    /// Stored, not yet marked in the index: (pack number, size).
    stored: Vec<(u64, u64)>,
    /// Set while the store refuses writes (cleared by the next success).
    /// Failed packs stay queued and are retried; nothing is dropped.
    last_error: Option<StoreFailure>,
    shutdown: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
    store: Arc<Store>,
}

pub struct PackStore {
    shared: Arc<Shared>,
    open: Mutex<Option<OpenPack>>,
    sealer: Arc<ChunkSealer>,
    pack_key: SecretKey,
    cache: Mutex<lru::LruCache<ChunkId, Arc<Vec<u8>>>>,
    /// Chunks being fetched and opened right now: concurrent readers of the
    /// same chunk (kernel readahead sends several) wait for one decryption
    /// instead of each doing it.
    loading: Mutex<HashMap<ChunkId, Arc<Mutex<()>>>>,
    prefetching: Mutex<std::collections::HashSet<ChunkId>>,
    /// Recently read pack windows: (pack number, window index) → sealed bytes.
    windows: Mutex<lru::LruCache<(u64, u64), bytes::Bytes>>,
    /// Authenticated segment tables of chunks read segment by segment,
    /// keyed by where the chunk is (pack number, offset): a repack re-seals
    /// a chunk, so its table changes with its place (pack numbers are never
    /// reused).
    headers: Mutex<lru::LruCache<(u64, u64), Arc<SegmentTable>>>,
    /// Plaintext segments opened for random readers: (chunk, index).
    segments: Mutex<SegmentCache>,
    cache_bytes: Mutex<usize>,
    writers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Where packs missing from the local store come from (remote backends).
    remote: std::sync::OnceLock<Arc<dyn RemoteFetch>>,
    /// Readers hold it shared from planning a read (chunk locations from
    /// the index) until the read is done; garbage collection takes it
    /// exclusively before deleting pack files, so a read planned before a
    /// collection commit never finds its pack gone.
    gc_gate: parking_lot::RwLock<()>,
}

/// Reads from a pack that is not in the local store (evicted from the
/// cache, or a vault restored with a cold cache): a ranged GET of just the
/// bytes needed from a remote backend, which also refills the local cache
/// with the whole pack in the background.
pub trait RemoteFetch: Send + Sync {
    fn fetch_range(&self, path: &str, offset: u64, len: u64) -> Result<bytes::Bytes, StoreError>;

    /// Whether packs will go to a backend (one is configured now): only
    /// then are they padded to a size class (FORMAT.md §6). The default
    /// is a fetcher that is a backend.
    fn uploads(&self) -> bool {
        true
    }

    /// After a copy failed authentication: the same range from each remote
    /// backend in turn (never the local cache) until `accept` takes the
    /// bytes. True if one did. The default has no other copy to offer.
    fn fetch_authentic(
        &self,
        path: &str,
        offset: u64,
        len: u64,
        accept: &mut dyn FnMut(&[u8]) -> bool,
    ) -> bool {
        let _ = (path, offset, len, accept);
        false
    }
}

impl PackStore {
    pub fn new(store: Arc<Store>, sealer: Arc<ChunkSealer>, pack_key: SecretKey) -> PackStore {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
            store,
        });
        let mut writers = Vec::new();
        for i in 0..STORE_WRITERS {
            let s = shared.clone();
            writers.push(
                std::thread::Builder::new()
                    .name(format!("tresor-pack-writer-{i}"))
                    .spawn(move || store_writer(s))
                    .expect("spawn pack writer thread"),
            );
        }
        PackStore {
            shared,
            open: Mutex::new(None),
            sealer,
            pack_key,
            cache: Mutex::new(lru::LruCache::unbounded()),
            loading: Mutex::new(HashMap::new()),
            prefetching: Mutex::new(std::collections::HashSet::new()),
            windows: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(WINDOW_CACHE).expect("non-zero"),
            )),
            headers: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(HEADER_CACHE).expect("non-zero"),
            )),
            segments: Mutex::new(SegmentCache {
                lru: lru::LruCache::unbounded(),
                bytes: 0,
            }),
            cache_bytes: Mutex::new(0),
            writers: Mutex::new(writers),
            remote: std::sync::OnceLock::new(),
            gc_gate: parking_lot::RwLock::new(()),
        }
    }

    /// Bytes of packs not yet recorded as stored in the index: the open
    /// pack, queued and in-flight packs, and stored ones awaiting the commit.
    pub fn unindexed_bytes(&self) -> u64 {
        let open = self
            .open
            .lock()
            .as_ref()
            .map(|p| p.builder.len() as u64)
            .unwrap_or(0);
        let q = self.shared.queue.lock();
        let in_memory: u64 = q.in_flight.values().map(|b| b.len() as u64).sum();
        let stored: u64 = q.stored.iter().map(|(_, size)| *size).sum();
        open + in_memory + stored
    }

    /// Sets where missing packs are fetched from (once, at mount).
    pub fn set_remote(&self, remote: Arc<dyn RemoteFetch>) {
        let _ = self.remote.set(remote);
    }

    /// Whether new packs are padded to a size class: only in a vault whose
    /// packs go to a backend. Padding hides sizes from a provider; on the
    /// local disk it would cost space and hide nothing. A local-only vault
    /// that later gets a backend uploads nothing unpadded: the sync engine
    /// holds back every pack that is not class-sized and coalesces it
    /// (`remote/sync/coalesce.rs`).
    pub fn pads_to_classes(&self) -> bool {
        self.remote.get().is_some_and(|r| r.uploads())
    }

    /// A ranged read of a pack: the local store, else the remote backends.
    fn store_read(&self, path: &str, offset: u64, len: u64) -> Result<bytes::Bytes, StoreError> {
        self.store_read_as(path, offset, len, Access::Sequential)
    }

    /// [`Self::store_read`] saying how the local store is read (segments
    /// and headers: [`Access::Random`], no disk read-ahead).
    fn store_read_as(
        &self,
        path: &str,
        offset: u64,
        len: u64,
        access: Access,
    ) -> Result<bytes::Bytes, StoreError> {
        match self.shared.store.read_range_as(path, offset, len, access) {
            Err(e) if e.is_not_found() => {
                let Some(remote) = self.remote.get() else {
                    return Err(e);
                };
                let got = remote.fetch_range(path, offset, len)?;
                if (got.len() as u64) < len {
                    return Err(StoreError::Short {
                        path: path.to_string(),
                        got: got.len(),
                        want: len as usize,
                    });
                }
                Ok(got)
            }
            r => r,
        }
    }

    /// Appends a sealed chunk to the open pack (the caller holds the index
    /// lock and records the returned location in the same transaction).
    pub fn append(
        &self,
        index: &Index,
        id: &ChunkId,
        sealed: &[u8],
        plain_len: u32,
    ) -> Result<ChunkLocation, PackStoreError> {
        {
            // Store refusing writes and the queue full: fail this write
            // (its bytes stay dirty in memory) instead of blocking every
            // thread behind the index lock.
            let q = self.shared.queue.lock();
            if let (Some(f), true) = (&q.last_error, q.waiting.len() >= MAX_QUEUED) {
                return Err(PackStoreError::Store(f.clone()));
            }
        }
        let mut open = self.open.lock();
        // A chunk that would take the pack past the largest size class
        // closes it first (padded to exactly that class if packs go to a
        // backend, FORMAT.md §6).
        if open.as_ref().is_some_and(|op| {
            !op.builder.is_empty() && op.builder.len_with(sealed.len()) > PACK_TARGET
        }) {
            let full = open.take().expect("open pack");
            drop(open);
            self.enqueue(full, true);
            open = self.open.lock();
        }
        if open.is_none() {
            let pack_id = PackId::random();
            let number = index.create_pack(&pack_id.0)?;
            *open = Some(OpenPack {
                number,
                builder: PackBuilder::new(pack_id),
            });
        }
        let op = open.as_mut().expect("open pack");
        let entry = op.builder.push(*id, sealed, plain_len);
        let loc = ChunkLocation {
            pack: op.number,
            offset: entry.offset,
            sealed_len: entry.sealed_len,
            plain_len,
            pack_size: 0,
        };
        Ok(loc)
    }

    /// Finishes `pack` (padded to the largest size class if `full` and
    /// packs go to a backend) and queues it for the store writers.
    fn enqueue(&self, pack: OpenPack, full: bool) {
        let path = pack.builder.pack_id().object_path();
        let object = if full && pack.builder.object_len() <= PACK_TARGET && self.pads_to_classes() {
            pack.builder.finish_to(&self.pack_key, PACK_TARGET)
        } else {
            pack.builder.finish(&self.pack_key)
        };
        let bytes = bytes::Bytes::from(object);
        let mut q = self.shared.queue.lock();
        // Back-pressure: writers wait here while the store is behind.
        while q.waiting.len() >= MAX_QUEUED && q.last_error.is_none() {
            self.shared.changed.wait(&mut q);
        }
        q.in_flight.insert(pack.number, bytes.clone());
        q.waiting.push(QueuedPack {
            number: pack.number,
            path,
            bytes,
        });
        self.shared.changed.notify_all();
    }

    /// Finishes the open pack, waits until every queued pack is durable in the
    /// store, and records them in the index. Called before every commit.
    pub fn seal_and_wait(&self, index: &Index) -> Result<(), PackStoreError> {
        if let Some(p) = self.open.lock().take() {
            self.enqueue(p, false);
        }
        let stored = {
            let mut q = self.shared.queue.lock();
            while (!q.waiting.is_empty() || !q.in_flight.is_empty()) && q.last_error.is_none() {
                self.shared.changed.wait(&mut q);
            }
            // An error matters only while packs still wait: once every pack
            // is stored or dropped (`drop_dead_queued`), the commit may go on.
            if !q.waiting.is_empty() || !q.in_flight.is_empty() {
                if let Some(f) = &q.last_error {
                    return Err(PackStoreError::Store(f.clone()));
                }
            }
            std::mem::take(&mut q.stored)
        };
        for (number, size) in stored {
            index.mark_pack_stored(number, size)?;
        }
        Ok(())
    }

    /// After the store refused packs for lack of space, under the index
    /// lock: drops the queued packs none of whose chunks is referenced any
    /// more (their file was deleted or overwritten before the pack reached
    /// the disk), with their index rows, so the commit that records the
    /// deletion no longer waits for bytes nobody needs. A pack being written
    /// right now is left to its writer. Returns the bytes dropped.
    pub fn drop_dead_queued(&self, index: &Index) -> Result<u64, PackStoreError> {
        let mut q = self.shared.queue.lock();
        let waiting: Vec<u64> = q.waiting.iter().map(|p| p.number).collect();
        let mut dropped = 0u64;
        for number in waiting {
            if index.pack_has_live_chunks(number)? {
                continue;
            }
            index.forget_unstored_pack(number)?;
            if let Some(at) = q.waiting.iter().position(|p| p.number == number) {
                dropped += q.waiting.remove(at).bytes.len() as u64;
            }
            q.in_flight.remove(&number);
        }
        self.shared.changed.notify_all();
        Ok(dropped)
    }

    /// The plaintext of a chunk, authenticated against its id.
    pub fn read_chunk(
        &self,
        id: &ChunkId,
        loc: &ChunkLocation,
        pack_name: &[u8; 16],
    ) -> Result<Arc<Vec<u8>>, ChunkReadError> {
        if let Some(c) = self.cache.lock().get(id) {
            return Ok(c.clone());
        }
        let slot = self.loading.lock().entry(*id).or_default().clone();
        let _loading = slot.lock();
        if let Some(c) = self.cache.lock().get(id) {
            return Ok(c.clone());
        }
        let result = self.load_chunk(id, loc, pack_name);
        self.loading.lock().remove(id);
        result
    }

    fn load_chunk(
        &self,
        id: &ChunkId,
        loc: &ChunkLocation,
        pack_name: &[u8; 16],
    ) -> Result<Arc<Vec<u8>>, ChunkReadError> {
        let pack_path = PackId(*pack_name).object_path();
        let sealed = match self.sealed_from_memory(loc) {
            Some(s) => s,
            None => match self.read_from_store(&pack_path, loc) {
                Ok(b) => b,
                // A truncated local copy: another copy may be whole.
                Err(source) => {
                    if let Some(p) = self.open_other_copy(id, loc, &pack_path) {
                        let p = Arc::new(p);
                        self.cache_insert(*id, p.clone());
                        return Ok(p);
                    }
                    return Err(ChunkReadError::Store {
                        pack: pack_path.clone(),
                        source: Box::new(source),
                    });
                }
            },
        };
        let plain = match self.sealer.open(id, &sealed) {
            Ok(p) => p,
            Err(source) => {
                self.open_other_copy(id, loc, &pack_path)
                    .ok_or_else(|| ChunkReadError::Auth {
                        pack: pack_path.clone(),
                        source,
                    })?
            }
        };
        let plain = Arc::new(plain);
        self.cache_insert(*id, plain.clone());
        Ok(plain)
    }

    /// The sealed bytes of a chunk whose pack is still in memory (open,
    /// queued or being written).
    fn sealed_from_memory(&self, loc: &ChunkLocation) -> Option<bytes::Bytes> {
        let start = loc.offset as usize;
        let end = start + loc.sealed_len as usize;
        {
            let open = self.open.lock();
            match open.as_ref() {
                Some(op) if op.number == loc.pack && op.builder.bytes().len() >= end => Some(
                    bytes::Bytes::copy_from_slice(&op.builder.bytes()[start..end]),
                ),
                _ => None,
            }
        }
        .or_else(|| {
            let q = self.shared.queue.lock();
            q.in_flight
                .get(&loc.pack)
                .filter(|b| b.len() >= end)
                .map(|b| b.slice(start..end))
        })
    }

    /// Plaintext bytes `want` of a chunk for a random reader: only the
    /// segments that hold them are read (a ranged read of the chunk's
    /// header, cached, and of the segments) and authenticated. Returns
    /// bytes and the chunk offset of their first byte; they cover `want`.
    /// A v1 chunk, a chunk still in memory or already cached whole, and
    /// any segment that fails to read or authenticate go through
    /// [`Self::read_chunk`] (which also tries the other copies).
    pub fn read_chunk_part(
        &self,
        id: &ChunkId,
        loc: &ChunkLocation,
        pack_name: &[u8; 16],
        want: std::ops::Range<usize>,
    ) -> Result<(Arc<Vec<u8>>, usize), ChunkReadError> {
        if let Some(c) = self.cache.lock().get(id) {
            return Ok((c.clone(), 0));
        }
        match self.read_segments(id, loc, pack_name, want) {
            Some(part) => Ok(part),
            None => Ok((self.read_chunk(id, loc, pack_name)?, 0)),
        }
    }

    /// `None`: read the whole chunk instead (see `read_chunk_part`).
    fn read_segments(
        &self,
        id: &ChunkId,
        loc: &ChunkLocation,
        pack_name: &[u8; 16],
        want: std::ops::Range<usize>,
    ) -> Option<(Arc<Vec<u8>>, usize)> {
        if want.is_empty() || (loc.sealed_len as usize) < MAX_HEADER_LEN {
            return None;
        }
        let path = PackId(*pack_name).object_path();
        let cached = self.headers.lock().get(&(loc.pack, loc.offset)).cloned();
        let table = match cached {
            Some(t) => t,
            None => {
                if self.sealed_from_memory(loc).is_some() {
                    return None;
                }
                // Long enough for the header of either segmented version
                // (every sealed chunk is at least that long).
                let head = self
                    .store_read_as(&path, loc.offset, MAX_HEADER_LEN as u64, Access::Random)
                    .ok()?;
                if !matches!(head.first(), Some(&VERSION_2 | &VERSION_3)) {
                    return None;
                }
                let t = Arc::new(self.sealer.open_header(id, &head).ok()?);
                self.headers.lock().put((loc.pack, loc.offset), t.clone());
                t
            }
        };
        if want.end > table.plain_len() {
            return None;
        }
        let (first, last) = (table.segment_of(want.start), table.segment_of(want.end - 1));
        if first == last {
            if let Some(seg) = self.segments.lock().get(&(*id, first as u32)) {
                return Some((seg, table.plain_range(first).start));
            }
        }
        let span = table.sealed_range(first).start..table.sealed_range(last).end;
        let sealed = self
            .store_read_as(
                &path,
                loc.offset + span.start as u64,
                span.len() as u64,
                Access::Random,
            )
            .ok()?;
        let mut out = Vec::with_capacity((last - first + 1) * table.segment_len());
        for i in first..=last {
            let r = table.sealed_range(i);
            let bytes = &sealed[r.start - span.start..r.end - span.start];
            let plain = self.sealer.open_segment(id, &table, i, bytes).ok()?;
            if first == last {
                let plain = Arc::new(plain);
                self.segments.lock().put((*id, i as u32), plain.clone());
                return Some((plain, table.plain_range(i).start));
            }
            out.extend_from_slice(&plain);
        }
        Some((Arc::new(out), table.plain_range(first).start))
    }

    /// The chunk's bytes failed authentication: forgets the pack window
    /// they came from (a retry reads the store again instead of the same
    /// bad bytes) and asks the remote backends for an authentic copy. A
    /// backend that has one also repairs the local cache (the refill
    /// replaces the pack only with a copy that authenticates in full).
    fn open_other_copy(
        &self,
        id: &ChunkId,
        loc: &ChunkLocation,
        pack_path: &str,
    ) -> Option<Vec<u8>> {
        let window = loc.offset / READ_WINDOW;
        self.windows.lock().pop(&(loc.pack, window));
        self.shared.store.forget_open(pack_path);
        let remote = self.remote.get()?;
        let mut plain = None;
        let found = remote.fetch_authentic(
            pack_path,
            loc.offset,
            loc.sealed_len as u64,
            &mut |b: &[u8]| match self.sealer.open(id, b) {
                Ok(p) => {
                    plain = Some(p);
                    true
                }
                Err(_) => false,
            },
        );
        if found {
            log::warn!(
                "{pack_path}: a damaged copy of a chunk was read; a remote backend had an authentic one"
            );
        }
        plain
    }

    /// A small chunk is read as part of its aligned 1 MiB window of the pack,
    /// which is kept for the chunks next to it: files written together sit
    /// together in a pack and are usually read together, so `cat` of a
    /// tree of small files does one store read per window instead of one per
    /// file. Aligned windows also blur small files' sizes for a provider
    /// watching ranged reads.
    fn read_from_store(
        &self,
        pack_path: &str,
        loc: &ChunkLocation,
    ) -> Result<bytes::Bytes, StoreError> {
        let start = loc.offset;
        let end = start + loc.sealed_len as u64;
        let window = start / READ_WINDOW;
        let window_start = window * READ_WINDOW;
        let window_end = (window_start + READ_WINDOW).min(loc.pack_size);
        if loc.sealed_len as u64 > SMALL_CHUNK || end > window_end {
            return self.store_read(pack_path, start, loc.sealed_len as u64);
        }
        let key = (loc.pack, window);
        let cached = self.windows.lock().get(&key).cloned();
        let bytes = match cached {
            Some(b) => b,
            None => match self.store_read(pack_path, window_start, window_end - window_start) {
                Ok(b) => {
                    self.windows.lock().put(key, b.clone());
                    b
                }
                // A truncated object (or a backend refusing the range):
                // the chunk itself may still be whole, so a damaged tail
                // does not take intact neighbours down with it.
                Err(e) if !e.is_not_found() => {
                    return self.store_read(pack_path, start, loc.sealed_len as u64)
                }
                Err(e) => return Err(e),
            },
        };
        Ok(bytes.slice((start - window_start) as usize..(end - window_start) as usize))
    }

    pub fn is_cached(&self, id: &ChunkId) -> bool {
        self.cache.lock().contains(id)
    }

    /// Claims a chunk for background prefetch; false if one is running.
    pub fn begin_prefetch(&self, id: ChunkId) -> bool {
        self.prefetching.lock().insert(id)
    }

    pub fn end_prefetch(&self, id: &ChunkId) {
        self.prefetching.lock().remove(id);
    }

    /// Keeps a freshly written chunk's plaintext hot (reads right after writes).
    pub fn cache_insert(&self, id: ChunkId, plain: Arc<Vec<u8>>) {
        let mut cache = self.cache.lock();
        let mut bytes = self.cache_bytes.lock();
        *bytes += plain.len();
        if let Some(old) = cache.put(id, plain) {
            *bytes -= old.len();
        }
        while *bytes > CHUNK_CACHE_BYTES {
            match cache.pop_lru() {
                Some((_, v)) => *bytes -= v.len(),
                None => break,
            }
        }
    }

    /// Held by a reader from planning to the end of its read (see `gc_gate`).
    pub fn read_guard(&self) -> parking_lot::RwLockReadGuard<'_, ()> {
        self.gc_gate.read()
    }

    /// The sealed bytes of one chunk from a stored pack (local store, else a
    /// remote backend), not yet authenticated.
    pub fn read_sealed(
        &self,
        pack_name: &[u8; 16],
        offset: u64,
        len: u32,
    ) -> Result<bytes::Bytes, StoreError> {
        let path = PackId(*pack_name).object_path();
        let got = self.store_read(&path, offset, len as u64)?;
        if got.len() != len as usize {
            return Err(StoreError::Short {
                path,
                got: got.len(),
                want: len as usize,
            });
        }
        Ok(got)
    }

    /// Authenticates sealed chunk bytes against their id.
    pub fn open_sealed(&self, id: &ChunkId, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        self.sealer.open(id, sealed)
    }

    /// Seals a chunk afresh (current format, new random nonce).
    pub fn seal_chunk(&self, id: &ChunkId, plain: &[u8]) -> Vec<u8> {
        self.sealer.seal(id, plain)
    }

    /// Writes a pack of already sealed chunks straight to the store (not
    /// through the queue); durable when this returns. Returns the pack's
    /// name, its size and each chunk's offset in it.
    /// If packs go to a backend ([`Self::pads_to_classes`]), the pack is
    /// padded to the smallest size class it fits (FORMAT.md §6), so it can
    /// go to a backend as it is; one larger than every class stays
    /// unpadded (the sync engine splits it before upload).
    pub fn write_pack_now(
        &self,
        chunks: &[(ChunkId, bytes::Bytes, u32)],
    ) -> Result<([u8; 16], u64, Vec<u64>), StoreError> {
        self.write_pack(chunks, self.pads_to_classes())
    }

    /// [`write_pack_now`](Self::write_pack_now), padded to a size class
    /// only if `pad`.
    pub fn write_pack(
        &self,
        chunks: &[(ChunkId, bytes::Bytes, u32)],
        pad: bool,
    ) -> Result<([u8; 16], u64, Vec<u64>), StoreError> {
        let pack_id = PackId::random();
        let mut builder = PackBuilder::new(pack_id);
        let offsets = chunks
            .iter()
            .map(|(id, sealed, plain_len)| builder.push(*id, sealed, *plain_len).offset)
            .collect();
        let class = crate::chunk::pack::size_class_for(builder.object_len() as u64);
        let object = match class {
            Some(c) if pad => builder.finish_to(&self.pack_key, c as usize),
            _ => builder.finish(&self.pack_key),
        };
        let bytes = bytes::Bytes::from(object);
        let size = bytes.len() as u64;
        self.shared.store.write(&pack_id.object_path(), bytes)?;
        Ok((pack_id.0, size, offsets))
    }

    /// Names and sizes of the pack files in the local store.
    pub fn local_pack_files(&self) -> Result<Vec<([u8; 16], u64)>, StoreError> {
        let mut out = Vec::new();
        for path in self.shared.store.list("packs/")? {
            let Some(file) = path.rsplit('/').next() else {
                continue;
            };
            let Some(hex) = file.strip_suffix(".pack") else {
                continue;
            };
            if let Some(id) = PackId::from_hex(hex) {
                let size = self.shared.store.size_of(&path)?.unwrap_or(0);
                out.push((id.0, size));
            }
        }
        Ok(out)
    }

    /// Deletes pack files from the local store (absent ones are fine), after
    /// every read planned with their old locations has finished.
    pub fn delete_local_packs(&self, names: &[[u8; 16]]) -> Result<(), StoreError> {
        if names.is_empty() {
            return Ok(());
        }
        let _exclusive = self.gc_gate.write();
        for name in names {
            match self.shared.store.delete(&PackId(*name).object_path()) {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Stops the writer threads (after a final `seal_and_wait`).
    pub fn shutdown(&self) {
        {
            let mut q = self.shared.queue.lock();
            q.shutdown = true;
            self.shared.changed.notify_all();
        }
        for h in self.writers.lock().drain(..) {
            let _ = h.join();
        }
    }
}

/// Why the store refused a pack.
#[derive(Clone, Debug)]
pub struct StoreFailure {
    pub message: String,
    /// The store's disk is full (ENOSPC): reported as such to writers.
    pub no_space: bool,
}

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn is_no_space(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(libc::ENOSPC) {
                return true;
            }
        }
        cur = err.source();
    }
    e.to_string().contains("No space left on device")
}

#[derive(Debug, thiserror::Error)]
pub enum PackStoreError {
    #[error("writing a pack to the store failed: {0} (the data is kept in memory and retried)")]
    Store(StoreFailure),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Writes queued packs to the store. A failed write goes back to the head
/// of the queue and is retried after an exponential backoff with jitter
/// (`backon`), so an outage or a full disk delays packs but never drops one.
fn store_writer(shared: Arc<Shared>) {
    use backon::BackoffBuilder;
    let new_backoff = || {
        backon::ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(100))
            .with_max_delay(std::time::Duration::from_secs(10))
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut backoff = new_backoff();
    loop {
        let job = {
            let mut q = shared.queue.lock();
            loop {
                if !q.waiting.is_empty() {
                    break Some(q.waiting.remove(0));
                }
                if q.shutdown {
                    break None;
                }
                shared.changed.wait(&mut q);
            }
        };
        let Some(job) = job else { return };
        shared.changed.notify_all();
        let size = job.bytes.len() as u64;
        let result = shared.store.write(&job.path, job.bytes.clone());
        let mut q = shared.queue.lock();
        match result {
            Ok(()) => {
                if q.last_error.take().is_some() {
                    log::info!("the store accepts writes again");
                }
                backoff = new_backoff();
                q.in_flight.remove(&job.number);
                q.stored.push((job.number, size));
                shared.changed.notify_all();
            }
            Err(e) => {
                let failure = StoreFailure {
                    message: format!("{}: {e}", job.path),
                    no_space: is_no_space(&e),
                };
                log::error!("writing pack failed, will retry: {failure}");
                q.last_error = Some(failure);
                q.waiting.insert(0, job);
                shared.changed.notify_all();
                if q.shutdown {
                    return;
                }
                drop(q);
                let delay = backoff.next().unwrap_or(std::time::Duration::from_secs(10));
                std::thread::sleep(delay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::segmented::{SEGMENT_LEN, SEGMENT_LEN_V2};
    use crate::vault::keys::MasterKey;
    use rand::{RngCore, SeedableRng};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A second store on the local disk acting as the remote backend,
    /// counting the bytes each ranged read returns.
    struct CountingRemote {
        store: Store,
        bytes: AtomicU64,
        reads: AtomicU64,
    }

    impl RemoteFetch for CountingRemote {
        fn fetch_range(
            &self,
            path: &str,
            offset: u64,
            len: u64,
        ) -> Result<bytes::Bytes, StoreError> {
            let b = self.store.read_range(path, offset, len)?;
            self.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
            self.reads.fetch_add(1, Ordering::Relaxed);
            Ok(b)
        }
    }

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; len];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        packs: PackStore,
        sealer: Arc<ChunkSealer>,
        plains: Vec<Vec<u8>>,
        chunks: Vec<(ChunkId, ChunkLocation)>,
        name: [u8; 16],
        store_dir: std::path::PathBuf,
    }

    /// One pack holding a v3, a v1 and a v2 chunk of 1 MiB each, written
    /// to `VAULT/store`.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let sk = MasterKey::for_tests(31).subkeys();
        let sealer = Arc::new(ChunkSealer::new(&sk));
        let store_dir = dir.path().join("store");
        let store = Arc::new(Store::open_local(&store_dir).unwrap());
        let packs = PackStore::new(store, sealer.clone(), sk.pack.clone());
        let plains = vec![random(1 << 20, 1), random(1 << 20, 2), random(1 << 20, 3)];
        let ids: Vec<ChunkId> = plains.iter().map(|p| sealer.chunk_id(p)).collect();
        let sealed = [
            sealer.seal(&ids[0], &plains[0]),
            sealer.seal_v1(&ids[1], &plains[1]),
            sealer.seal_v2(&ids[2], &plains[2]),
        ];
        let input: Vec<(ChunkId, bytes::Bytes, u32)> = (0..3)
            .map(|i| (ids[i], bytes::Bytes::from(sealed[i].clone()), 1 << 20))
            .collect();
        let (name, size, offsets) = packs.write_pack_now(&input).unwrap();
        let chunks = (0..3)
            .map(|i| {
                let loc = ChunkLocation {
                    pack: 1,
                    offset: offsets[i],
                    sealed_len: sealed[i].len() as u32,
                    plain_len: 1 << 20,
                    pack_size: size,
                };
                (ids[i], loc)
            })
            .collect();
        Fixture {
            _dir: dir,
            packs,
            sealer,
            plains,
            chunks,
            name,
            store_dir,
        }
    }

    #[test]
    fn random_read_opens_one_segment_of_a_segmented_chunk() {
        let f = fixture();
        let (id, loc) = &f.chunks[0];
        for at in [0usize, 5 << 16, (1 << 20) - 4096, 100_000] {
            let want = at..at + 4096;
            let (bytes, base) = f
                .packs
                .read_chunk_part(id, loc, &f.name, want.clone())
                .unwrap();
            assert!(bytes.len() <= SEGMENT_LEN, "{} bytes opened", bytes.len());
            assert!(bytes[want.start - base..want.end - base] == f.plains[0][want]);
        }
        // Across a segment boundary: both segments, nothing more.
        let want = SEGMENT_LEN - 100..SEGMENT_LEN + 100;
        let (bytes, base) = f
            .packs
            .read_chunk_part(id, loc, &f.name, want.clone())
            .unwrap();
        assert_eq!((bytes.len(), base), (2 * SEGMENT_LEN, 0));
        assert!(bytes[want.clone()] == f.plains[0][want]);
        assert!(!f.packs.is_cached(id), "the whole chunk was decrypted");
        // A v1 chunk is read whole.
        let (id1, loc1) = &f.chunks[1];
        let (bytes, base) = f
            .packs
            .read_chunk_part(id1, loc1, &f.name, 0..4096)
            .unwrap();
        assert_eq!((bytes.len(), base), (1 << 20, 0));
        assert!(*bytes == f.plains[1]);
        // A v2 chunk (64 KiB segments) is read by segment too.
        let (id2, loc2) = &f.chunks[2];
        let want = 300_000..304_096;
        let (bytes, base) = f
            .packs
            .read_chunk_part(id2, loc2, &f.name, want.clone())
            .unwrap();
        assert_eq!((bytes.len(), base), (SEGMENT_LEN_V2, 4 * SEGMENT_LEN_V2));
        assert!(bytes[want.start - base..want.end - base] == f.plains[2][want]);
        assert!(!f.packs.is_cached(id2), "the whole v2 chunk was decrypted");
    }

    #[test]
    fn tampered_segment_fails_the_random_read() {
        let f = fixture();
        let (id, loc) = &f.chunks[0];
        let path = f.store_dir.join(PackId(f.name).object_path());
        let mut pack = std::fs::read(&path).unwrap();
        let table = f
            .sealer
            .open_header(id, &pack[loc.offset as usize..])
            .unwrap();
        let pos = loc.offset as usize + table.sealed_range(3).start + 10;
        pack[pos] ^= 1;
        std::fs::write(&path, &pack).unwrap();
        // Segment 2 is intact and reads; segment 3 does not.
        let r2 = 2 * SEGMENT_LEN..2 * SEGMENT_LEN + 4096;
        let (b, base) = f
            .packs
            .read_chunk_part(id, loc, &f.name, r2.clone())
            .unwrap();
        assert!(b[r2.start - base..r2.end - base] == f.plains[0][r2]);
        let r3 = 3 * SEGMENT_LEN..3 * SEGMENT_LEN + 4096;
        assert!(matches!(
            f.packs.read_chunk_part(id, loc, &f.name, r3),
            Err(ChunkReadError::Auth { .. })
        ));
    }

    #[test]
    fn cold_4k_read_from_a_backend_transfers_at_most_128_kib() {
        let f = fixture();
        // The pack lives only on the "backend": move the store aside.
        let remote_dir = f.store_dir.with_file_name("remote");
        std::fs::rename(&f.store_dir, &remote_dir).unwrap();
        std::fs::create_dir_all(&f.store_dir).unwrap();
        let remote = Arc::new(CountingRemote {
            store: Store::open_local(&remote_dir).unwrap(),
            bytes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        });
        f.packs.set_remote(remote.clone());
        let (id, loc) = &f.chunks[0];
        let want = 700_000..704_096;
        let (b, base) = f
            .packs
            .read_chunk_part(id, loc, &f.name, want.clone())
            .unwrap();
        assert!(b[want.start - base..want.end - base] == f.plains[0][want]);
        let (bytes, reads) = (
            remote.bytes.load(Ordering::Relaxed),
            remote.reads.load(Ordering::Relaxed),
        );
        assert_eq!(reads, 2, "header and one segment");
        assert!(bytes <= 128 * 1024, "{bytes} bytes transferred");
        assert!(bytes >= SEGMENT_LEN as u64);
        // A second read in the same chunk needs the segment only.
        let want = 100_000..104_096;
        f.packs.read_chunk_part(id, loc, &f.name, want).unwrap();
        assert_eq!(remote.reads.load(Ordering::Relaxed), 3);
    }
}

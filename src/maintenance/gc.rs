//! Garbage collection: reclaims the space of deleted and overwritten data.
//!
//! **Liveness.** A chunk is live while an extent references it
//! (`chunks.refcount > 0`); a pack's live bytes are the `sealed_len` of its
//! live chunks. Only stored packs (`packs.state = 1`) are candidates: the
//! open pack and packs queued for the store are never touched.
//!
//! **Fully dead packs** (no live chunk) lose their chunk rows, pack row,
//! placements and eviction mark, and gain a `gc_dead` row, in one step of
//! one committed transaction; then the local file is deleted.
//! **Mostly dead packs** (live < `repack_threshold` % of the size, default
//! 50 %) are repacked: their live chunks' sealed bytes are read, authenticated
//! (a chunk that fails is reported and its pack left alone), written verbatim
//! into a new pack (the sealed format binds chunk id and version, not the
//! pack) that is durable before the index commits; then one transaction
//! points the chunk rows at the new pack and marks the old packs dead.
//!
//! **Kept states.** A dead pack may still be referenced by a kept state of
//! the index: a snapshot generation the retention policy keeps on a
//! backend, or a local index copy (`vault/index_copies.rs`). Every
//! collecting step first moves `meta.snapshot_generation` on by one
//! ([`Index::gc_next_generation`]) and records the new value as
//! `gc_dead.after_generation`; with pack numbers only growing, a state
//! references the pack exactly when its generation is below that and its
//! highest pack number is at least the pack's
//! ([`crate::index::SnapshotMark::needs`]). Kept states pin the pack's
//! *remote* objects: [`crate::remote::deletion::delete_collected`] removes
//! them once no kept state needs them. They never pin its *local* file:
//! that goes in the step that collects the pack, so deleted data leaves the
//! host's disk at once (in a vault with backends the local file is cache;
//! in a local-only vault there are no kept generations, and a local index
//! copy is a recovery point for a damaged index, not history: `fsck` names
//! the files whose data a restored copy lacks). A vault without backends
//! drops the row with the file. Which snapshots are kept is the retention
//! policy's business (`remote/retention.rs`); gc follows it.
//!
//! **Why this is safe with the filesystem running.**
//! - Every decision is made and committed under the index lock (through
//!   [`GcVault`], i.e. `FsCore::commit_with` when mounted), so it is
//!   serialized with writers. A refcount-0 chunk revived by dedup before
//!   GC takes the lock makes its pack live again, and GC re-checks every
//!   pack under the lock before marking it; rows are deleted in the same
//!   step that marks the pack dead.
//! - Writers look up known chunk ids before taking the index lock (to seal
//!   new chunks off the lock). `DataPath::store_runs` checks those ids again
//!   under the lock and seals a chunk again if GC collected it in between.
//! - Readers plan chunk locations under the index lock and read after
//!   releasing it; they hold `PackStore::read_guard` from planning to the
//!   end of the read, and GC deletes pack files only through
//!   `PackStore::delete_local_packs`, which takes that gate exclusively, so a
//!   read planned before a commit finishes before its pack file goes.
//! - The plaintext chunk cache is keyed by chunk id: its entries are the
//!   chunk's content wherever the chunk lives. Pack window caches are keyed
//!   by pack number, and pack numbers are never reused (`AUTOINCREMENT`).
//! - The sync engine's upload queue is a query over `packs`: a collected
//!   pack leaves it. An upload that finishes afterwards leaves a stale
//!   placement row, which the next pass drops.
//!
//! **Crash safety.** Each step is one committed transaction: before it the
//! old pack is still referenced, after it the new pack (already durable) is.
//! A new pack written before a crash has no index rows, and a dead pack's
//! file may survive a crash after the commit: both are files no `packs` row
//! names, which every pass deletes ("leftovers"). `gc_dead` rows persist, so
//! remote deletion resumes too.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::chunk::pack::{size_class_for, PackId, PACK_TARGET};
use crate::chunk::seal::ChunkId;
use crate::fs::{read_index, FsCore, FsError, IndexAccess};
use crate::index::{Index, IndexError, PackChunk, PackLiveness};
use crate::store::packstore::PackStoreError;
use crate::store::StoreError;

pub use crate::vault::config::REPACK_THRESHOLD_PERCENT;
/// Dead packs marked per committed step.
const DEAD_BATCH: usize = 32;
/// Shortest spacing of the passes that follow a deletion (see
/// [`spawn_background`]).
const PROMPT_MIN_GAP: Duration = Duration::from_secs(1);

pub use crate::vault::config::GcConfig;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("garbage collection could not commit: {0}")]
    Fs(#[from] FsError),
    #[error("garbage collection could not write to the store: {0} (nothing was lost; run `tresor gc` again once the store works)")]
    Store(#[from] StoreError),
    #[error("garbage collection could not commit: {0}")]
    PackStore(#[from] PackStoreError),
    /// Internal: a repack step found nothing it could commit.
    #[error("nothing to commit")]
    Abandoned,
}

fn commit<R>(
    v: &dyn IndexAccess,
    f: impl FnOnce(&Index) -> Result<R, GcError>,
) -> Result<R, GcError> {
    let mut f = Some(f);
    let mut out = None;
    v.locked_commit(&mut |idx| {
        if let Some(f) = f.take() {
            out = Some(f(idx));
        }
    })?;
    out.expect("locked_commit runs the closure")
}

/// How one pass behaves.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Change nothing; report what would be reclaimed.
    pub dry_run: bool,
    pub repack_threshold: u8,
    /// Pack bytes deleted or rewritten at most (background passes).
    pub max_pass_bytes: Option<u64>,
    /// The vault has remote backends: `gc_dead` rows stay until
    /// [`crate::remote::deletion::delete_collected`] removed the remote objects.
    pub has_backends: bool,
}

impl GcOptions {
    pub fn from_config(cfg: &GcConfig, has_backends: bool) -> GcOptions {
        GcOptions {
            dry_run: false,
            repack_threshold: cfg.repack_threshold.min(100),
            max_pass_bytes: None,
            has_backends,
        }
    }
}

/// What a pass did (or, dry, would do).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcReport {
    pub dry_run: bool,
    pub packs_examined: u64,
    pub dead_packs: u64,
    pub repacked_packs: u64,
    pub new_packs: u64,
    pub moved_chunks: u64,
    /// Pack files without an index row (a crash mid-collection) deleted.
    pub leftover_files: u64,
    pub bytes_reclaimed_local: u64,
    /// Collected packs whose remote objects wait for a durable snapshot.
    pub bytes_awaiting_remote_deletion: u64,
    pub packs_awaiting_remote_deletion: u64,
    /// Chunks that failed authentication (their packs were left alone).
    pub corrupt: Vec<String>,
    /// Packs that could not be read (left alone; retried next pass).
    pub unreadable: Vec<String>,
}

/// Whether copying a pack's live chunks into a new pack can take less
/// space than the pack: new packs are padded to a size class (FORMAT.md
/// §6), so a pack whose live bytes already need its own class (the padding
/// of a class-sized pack looks dead) would be rewritten into a pack of the
/// same size on every pass. 64 KiB covers the header and trailer. Without
/// padding (a vault with no backend, `PackStore::pads_to_classes`) the
/// live bytes alone count.
fn repack_can_shrink(live_bytes: u64, pack_size: u64, pads: bool) -> bool {
    let needed = live_bytes + 64 * 1024;
    if !pads {
        return needed < pack_size;
    }
    size_class_for(needed).is_none_or(|class| class < pack_size)
}

/// Dead bytes (pack size minus live bytes) and stored bytes of the vault.
pub fn dead_bytes(v: &dyn IndexAccess) -> Result<(u64, u64), GcError> {
    let packs = read_index(v, |idx| idx.gc_liveness())?;
    let stored: u64 = packs.iter().map(|p| p.size).sum();
    let dead: u64 = packs
        .iter()
        .map(|p| p.size.saturating_sub(p.live_bytes))
        .sum();
    Ok((dead, stored))
}

/// One process runs one pass at a time (the CLI's request and the
/// background thread share a daemon).
static PASS: Mutex<()> = Mutex::new(());

/// One garbage collection pass. `progress(done, total)` counts packs.
pub fn run_pass(
    v: &dyn IndexAccess,
    opts: &GcOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<GcReport, GcError> {
    let _one = PASS.lock();
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..GcReport::default()
    };
    let liveness = read_index(v, |idx| idx.gc_liveness())?;
    report.packs_examined = liveness.len() as u64;
    let threshold = opts.repack_threshold.min(100) as u64;
    let pads = v.pack_store().pads_to_classes();
    let mut budget = opts.max_pass_bytes.unwrap_or(u64::MAX);
    let mut dead = Vec::new();
    let mut repack = Vec::new();
    for p in liveness {
        if budget == 0 {
            break;
        }
        if p.live_chunks == 0 {
            budget = budget.saturating_sub(p.size);
            dead.push(p);
        } else if (p.live_bytes as u128) * 100 < (threshold as u128) * (p.size as u128)
            && repack_can_shrink(p.live_bytes, p.size, pads)
        {
            budget = budget.saturating_sub(p.size);
            repack.push(p);
        }
    }
    let total = (dead.len() + repack.len()) as u64;
    let mut done = 0;
    progress(done, total);

    if opts.dry_run {
        report.dead_packs = dead.len() as u64;
        report.repacked_packs = repack.len() as u64;
        let dead_sizes: u64 = dead.iter().map(|p| p.size).sum();
        let repack_gain: u64 = repack
            .iter()
            .map(|p| p.size.saturating_sub(p.live_bytes))
            .sum();
        let leftovers = leftover_files(v)?;
        report.leftover_files = leftovers.len() as u64;
        report.bytes_reclaimed_local =
            dead_sizes + repack_gain + leftovers.iter().map(|(_, s)| s).sum::<u64>();
        if opts.has_backends {
            let pending = read_index(v, |idx| idx.gc_dead(u64::MAX))?;
            report.packs_awaiting_remote_deletion =
                pending.len() as u64 + dead.len() as u64 + repack.len() as u64;
            report.bytes_awaiting_remote_deletion = pending.iter().map(|p| p.size).sum::<u64>()
                + dead_sizes
                + repack.iter().map(|p| p.size).sum::<u64>();
        }
        return Ok(report);
    }

    for batch in dead.chunks(DEAD_BATCH) {
        let marked = commit(v, |idx| {
            idx.gc_atomically(|idx| -> Result<Vec<&PackLiveness>, GcError> {
                // Under the same lock as the marking: a state taken before
                // this commit has a generation below after_generation.
                let after = idx.gc_next_generation()?;
                let mut marked = Vec::new();
                for p in batch {
                    if idx.gc_mark_dead(p.pack, after)? {
                        marked.push(p);
                    }
                }
                idx.gc_drop_stale_placements()?;
                Ok(marked)
            })
        })?;
        report.dead_packs += marked.len() as u64;
        report.bytes_reclaimed_local += release_local(v, opts)?;
        done += batch.len() as u64;
        progress(done, total);
    }

    // Group mostly dead packs so their live chunks fill one new pack that
    // stays within the largest size class (re-sealing and the trailer add
    // a little, hence the 1/16 margin).
    let mut group: Vec<PackLiveness> = Vec::new();
    let mut group_live = 0u64;
    let mut groups = Vec::new();
    let fill = (PACK_TARGET - PACK_TARGET / 16) as u64;
    for p in repack {
        if !group.is_empty() && group_live + p.live_bytes > fill {
            groups.push(std::mem::take(&mut group));
            group_live = 0;
        }
        group_live += p.live_bytes;
        group.push(p);
    }
    if !group.is_empty() {
        groups.push(group);
    }
    for g in groups {
        repack_group(v, &g, opts, &mut report)?;
        done += g.len() as u64;
        progress(done, total);
    }

    for (name, size) in leftover_files(v)? {
        v.pack_store().delete_local_packs(&[name])?;
        log::info!(
            "gc: deleted leftover pack file {} (no index row)",
            PackId(name).to_hex()
        );
        report.leftover_files += 1;
        report.bytes_reclaimed_local += size;
    }

    // Files a crash left between a collecting commit and their deletion.
    report.bytes_reclaimed_local += release_local(v, opts)?;
    let pending = read_index(v, |idx| idx.gc_dead(u64::MAX))?;
    if opts.has_backends {
        report.packs_awaiting_remote_deletion = pending.len() as u64;
        report.bytes_awaiting_remote_deletion = pending.iter().map(|p| p.size).sum();
    }
    if report.dead_packs + report.repacked_packs + report.leftover_files > 0 {
        log::info!(
            "gc: {} dead packs deleted, {} repacked, {} leftovers; {} bytes reclaimed locally",
            report.dead_packs,
            report.repacked_packs,
            report.leftover_files,
            report.bytes_reclaimed_local
        );
    }
    Ok(report)
}

/// Deletes the local files of collected packs (they may already be gone;
/// kept states pin remote objects only, see the module doc), and, without
/// backends, forgets those packs: the local file was the only copy. Returns
/// the bytes freed (sizes of the files found and deleted).
fn release_local(v: &dyn IndexAccess, opts: &GcOptions) -> Result<u64, GcError> {
    let release = read_index(v, |idx| idx.gc_dead(u64::MAX))?;
    let store = v.pack_store();
    if release.is_empty() {
        return Ok(0);
    }
    let present: HashMap<[u8; 16], u64> = store.local_pack_files()?.into_iter().collect();
    let freed = release
        .iter()
        .filter_map(|r| present.get(&r.name))
        .sum::<u64>();
    let names: Vec<[u8; 16]> = release.iter().map(|r| r.name).collect();
    store.delete_local_packs(&names)?;
    if !opts.has_backends {
        commit(v, |idx| {
            for r in &release {
                idx.gc_drop_dead(r.pack)?;
            }
            Ok(())
        })?;
    }
    Ok(freed)
}

/// Pack files in the local store that no `packs` row names. The listing
/// comes first: a pack gets its row before its file is written.
/// Pack files no index row names. Listed under the index lock and
/// committed durably before the lock is released: a row that only an
/// uncommitted batch removed (say, one whose commit failed on a full disk)
/// would come back with a crash, so its file must not count as a leftover
/// unless that removal is durable. If the commit fails, nothing is listed.
fn leftover_files(v: &dyn IndexAccess) -> Result<Vec<([u8; 16], u64)>, GcError> {
    let store = v.pack_store();
    commit(v, |idx| {
        let files = store.local_pack_files()?;
        let known = idx.gc_known_pack_names()?;
        Ok(files
            .into_iter()
            .filter(|(name, _)| !known.contains(name))
            .collect())
    })
}

/// A source pack of a repack and the live chunks copied from it.
struct Source {
    pack: PackLiveness,
    /// chunk id → (offset in the old pack, index into the new pack's chunks)
    copied: HashMap<ChunkId, (u64, usize)>,
}

/// Copies the live chunks of `group` into one new pack and retires the old
/// packs, in one committed step.
fn repack_group(
    v: &dyn IndexAccess,
    group: &[PackLiveness],
    opts: &GcOptions,
    report: &mut GcReport,
) -> Result<(), GcError> {
    let ps = v.pack_store();
    let plans: Vec<(PackLiveness, Vec<PackChunk>)> = read_index(v, |idx| -> Result<_, GcError> {
        let mut out = Vec::new();
        for p in group {
            let live = idx
                .gc_pack_chunks(p.pack)?
                .into_iter()
                .filter(|c| c.refcount > 0)
                .collect();
            out.push((p.clone(), live));
        }
        Ok(out)
    })?;
    let mut chunks: Vec<(ChunkId, bytes::Bytes, u32)> = Vec::new();
    let mut sources = Vec::new();
    'packs: for (pack, live) in plans {
        let hex = PackId(pack.name).to_hex();
        let mut copied = HashMap::new();
        let mut mine = Vec::new();
        for c in live {
            let sealed = match ps.read_sealed(&pack.name, c.offset, c.sealed_len) {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("gc: cannot read pack {hex}, leaving it alone: {e}");
                    report.unreadable.push(format!("pack {hex}: {e}"));
                    continue 'packs;
                }
            };
            // Re-sealed with a fresh nonce (and in the current format): a
            // byte-for-byte copy would show the provider, with old and new
            // pack side by side, exact chunk boundaries and which chunks died.
            let plain = match ps.open_sealed(&c.id, &sealed) {
                Ok(p) => p,
                Err(e) => {
                    log::error!(
                        "gc: chunk {} in pack {hex} at offset {} fails authentication ({e}); \
                     the pack is left alone — run `tresor fsck`",
                        c.id.to_hex(),
                        c.offset
                    );
                    report.corrupt.push(format!(
                        "chunk {} in pack {hex} at offset {}: {e}",
                        c.id.to_hex(),
                        c.offset
                    ));
                    continue 'packs;
                }
            };
            let resealed = bytes::Bytes::from(ps.seal_chunk(&c.id, &plain));
            copied.insert(c.id, (c.offset, chunks.len() + mine.len()));
            mine.push((c.id, resealed, c.plain_len));
        }
        chunks.extend(mine);
        sources.push(Source { pack, copied });
    }
    if sources.is_empty() {
        return Ok(());
    }
    let (name, size, offsets) = ps.write_pack_now(&chunks)?;
    let outcome = commit(v, |idx| {
        idx.gc_atomically(|idx| -> Result<Vec<usize>, GcError> {
            let after = idx.gc_next_generation()?;
            let new_pack = idx.gc_insert_stored_pack(&name, size)?;
            let mut retired = Vec::new();
            for (i, src) in sources.iter().enumerate() {
                if idx.gc_pack_liveness(src.pack.pack)?.is_none() {
                    continue;
                }
                let rows = idx.gc_pack_chunks(src.pack.pack)?;
                // Revived by dedup after we listed the live chunks: the
                // pack is needed as it is; try again next pass.
                if rows
                    .iter()
                    .any(|r| r.refcount > 0 && !src.copied.contains_key(&r.id))
                {
                    continue;
                }
                for r in &rows {
                    if let Some(&(old_offset, k)) = src.copied.get(&r.id) {
                        if r.offset == old_offset {
                            let sealed_len = chunks[k].1.len() as u32;
                            idx.gc_move_resealed_chunk(&r.id, new_pack, offsets[k], sealed_len)?;
                        }
                    }
                }
                if idx.gc_mark_dead(src.pack.pack, after)? {
                    retired.push(i);
                }
            }
            if retired.is_empty() {
                return Err(GcError::Abandoned);
            }
            Ok(retired)
        })
    });
    let retired = match outcome {
        Ok(r) => r,
        Err(GcError::Abandoned) => {
            ps.delete_local_packs(&[name])?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let freed = release_local(v, opts)?;
    report.repacked_packs += retired.len() as u64;
    report.new_packs += 1;
    report.moved_chunks += retired
        .iter()
        .map(|&i| sources[i].copied.len() as u64)
        .sum::<u64>();
    report.bytes_reclaimed_local += freed.saturating_sub(size);
    Ok(())
}

/// The daemon's background collector: every `gc.interval` seconds, a
/// bounded pass when enough is dead. Runs at the lowest CPU priority.
pub fn spawn_background(
    core: Arc<FsCore>,
    vault: PathBuf,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tresor-gc".into())
        .spawn(move || {
            // SAFETY: gettid has no preconditions; setpriority on our own
            // thread id only changes this thread's nice value.
            unsafe {
                let tid = libc::gettid();
                libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
            }
            let load = || match crate::remote::backend::VaultConfig::load(&vault) {
                Ok(c) => (c.gc.clone(), !c.backends.is_empty()),
                Err(_) => (GcConfig::default(), true),
            };
            let (mut cfg, mut has_backends) = load();
            let mut last = Instant::now();
            let mut loaded = Instant::now();
            let mut last_prompt = Instant::now();
            let mut prompt_gap = PROMPT_MIN_GAP;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                // Picks up `[gc]` edits without a remount (once a second).
                if loaded.elapsed() >= Duration::from_secs(1) {
                    (cfg, has_backends) = load();
                    loaded = Instant::now();
                }
                if core.take_space_pressure() {
                    // The disk is full: delete dead packs now, and rewrite
                    // nothing (a repack needs space before it frees any).
                    let opts = GcOptions {
                        repack_threshold: 0,
                        ..GcOptions::from_config(&cfg, has_backends)
                    };
                    match run_pass(core.as_ref(), &opts, &mut |_, _| {}) {
                        Ok(r) => log::info!(
                            "the disk was full: deleted {} dead packs ({} bytes)",
                            r.dead_packs,
                            r.bytes_reclaimed_local
                        ),
                        Err(e) => log::warn!("garbage collection on a full disk failed: {e}"),
                    }
                    continue;
                }
                if cfg.prompt
                    && last_prompt.elapsed() >= prompt_gap
                    && read_index(core.as_ref(), |idx| idx.take_released())
                {
                    // Something lost a reference: delete the packs that are
                    // wholly dead now (no repacking), so `rm` frees disk
                    // within seconds. Each pass scans the chunk table, so
                    // passes are spaced to ≥ 10× their duration.
                    let started = Instant::now();
                    let opts = GcOptions {
                        repack_threshold: 0,
                        ..GcOptions::from_config(&cfg, has_backends)
                    };
                    match run_pass(core.as_ref(), &opts, &mut |_, _| {}) {
                        Ok(r) if r.dead_packs > 0 => log::info!(
                            "deleted {} dead packs ({} bytes) after a deletion",
                            r.dead_packs,
                            r.bytes_reclaimed_local
                        ),
                        Ok(_) => {}
                        Err(e) => log::warn!("garbage collection after a deletion failed: {e}"),
                    }
                    prompt_gap = (started.elapsed() * 10).max(PROMPT_MIN_GAP);
                    last_prompt = Instant::now();
                    continue;
                }
                if cfg.interval == 0 || last.elapsed() < Duration::from_secs(cfg.interval) {
                    continue;
                }
                last = Instant::now();
                if let Err(e) = background_pass(&core, &cfg, has_backends) {
                    log::warn!("background garbage collection failed: {e}");
                }
            }
        })
}

fn background_pass(core: &FsCore, cfg: &GcConfig, has_backends: bool) -> Result<(), GcError> {
    let (dead, stored) = dead_bytes(core)?;
    let share = (dead as u128) * 100 >= (cfg.min_dead_percent as u128) * (stored as u128);
    if dead == 0 || (dead < cfg.min_dead_bytes && !share) {
        return Ok(());
    }
    let opts = GcOptions {
        max_pass_bytes: Some(cfg.max_pass_bytes.max(1)),
        ..GcOptions::from_config(cfg, has_backends)
    };
    run_pass(core, &opts, &mut |_, _| {})?;
    Ok(())
}

/// The answer to the control socket's `gc` request.
pub fn control_gc(
    core: &FsCore,
    vault: &Path,
    dry_run: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<serde_json::Value> {
    let config = crate::remote::backend::VaultConfig::load(vault)?;
    core.flush_all()?;
    let opts = GcOptions {
        dry_run,
        ..GcOptions::from_config(&config.gc, !config.backends.is_empty())
    };
    let report = run_pass(core, &opts, progress)?;
    Ok(serde_json::to_value(report)?)
}

#[cfg(test)]
mod tests;
